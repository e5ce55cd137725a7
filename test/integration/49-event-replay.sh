# Replay (docs/services/event.md, "Replay"): a projection of wallet events
# (tokens added and deducted per user, a handler of this test subscribed as
# the event service) is wiped and rebuilt by event.replay_to_subscription to
# the identical state, which matches the wallets' balances; a replay without
# force applies nothing (the inbox remembers); an outside NATS client (the
# read-only subscriber credential) receives event.replay_to_subject's replay on
# replay.<request id>.<original subject> (stream ISA_REPLAY) with the original
# ids, in order, a second replay of the same events too, and nothing is
# published on the original subjects.
#
# The store's handler (event.on_events) is not in this branch: the test puts
# its wallet events into event.events itself, from the outbox rows
# (ON CONFLICT DO NOTHING: where the store runs, it stored them already).
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
S=it_replay68
TAG="it68-$$-$(date +%s)"
USERS=4
nats() { timeout 60 node "$here/../natsclient/isa-nats.mjs" "$@"; }

sql "SET client_min_messages = warning;
     DROP SCHEMA IF EXISTS $S CASCADE;
     CREATE SCHEMA $S;
     CREATE TABLE $S.users (n int PRIMARY KEY, user_id uuid NOT NULL);
     CREATE TABLE $S.tokens (user_id uuid PRIMARY KEY, events int NOT NULL, added bigint NOT NULL,
                             deducted bigint NOT NULL, last_balance bigint NOT NULL, last_event uuid NOT NULL);
     CREATE FUNCTION $S.on_tokens(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     DECLARE
       amount bigint := (e.data->>'amount')::bigint;
       added bigint := CASE WHEN e.event_type = 'wallet.tokens.added' THEN amount ELSE 0 END;
       deducted bigint := CASE WHEN e.event_type = 'wallet.tokens.deducted' THEN amount ELSE 0 END;
     BEGIN
       INSERT INTO $S.tokens AS t VALUES ((e.data->>'user_id')::uuid, 1, added, deducted,
                                          (e.data->>'balance_after')::bigint, e.id)
       ON CONFLICT (user_id) DO UPDATE
         SET events = t.events + 1, added = t.added + excluded.added, deducted = t.deducted + excluded.deducted,
             last_balance = excluded.last_balance, last_event = excluded.last_event;
     END \$\$;
     GRANT USAGE ON SCHEMA $S TO isa_svc_event;
     GRANT SELECT, INSERT, UPDATE ON $S.tokens TO isa_svc_event;
     GRANT EXECUTE ON FUNCTION $S.on_tokens(isa.event) TO isa_svc_event;" >/dev/null
sub=$(sql "SELECT isa.subscribe_to_events('event', 'wallet_service.wallet.tokens.*', '$S.on_tokens(isa.event)',
                                          '{\"deliver_policy\": \"new\"}')")
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the projection's subscription runs"
sleep 0.5

# ---------------------------------------------------------------- the projection, live
t0=$(sql "SELECT now()")
sql "INSERT INTO $S.users SELECT g, (account.create_user('$TAG-' || g || '@example.com', 'Replay ' || g)).user_id
       FROM generate_series(1, $USERS) g" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.wallets w JOIN $S.users u USING (user_id)" $USERS 20)" $USERS \
   "$USERS users with their wallets"
sql "SELECT wallet.add(u.user_id, 1000 * u.n, '$TAG-add-' || u.n) FROM $S.users u" >/dev/null
sql "SELECT wallet.deduct(u.user_id, 7 * u.n + k, '$TAG-deduct-' || u.n || '-' || k)
       FROM $S.users u, generate_series(1, 5) k" >/dev/null
sql "SELECT wallet.add(u.user_id, 50, '$TAG-add2-' || u.n) FROM $S.users u WHERE u.n % 2 = 0" >/dev/null
N=$((USERS + USERS * 5 + USERS / 2))
is "$(wait_for "SELECT coalesce(sum(events), 0) FROM $S.tokens JOIN $S.users USING (user_id)" $N 30)" $N \
   "the projection applied the $N wallet.tokens events live"
t1=$(sql "SELECT now()")
snapshot="SELECT string_agg(format('%s %s %s %s %s %s', u.n, t.events, t.added, t.deducted, t.last_balance, t.last_event), ' | ' ORDER BY u.n)
            FROM $S.tokens t JOIN $S.users u USING (user_id)"
before=$(sql "$snapshot")
is "$(sql "SELECT count(*) FROM $S.tokens t JOIN wallet.wallets w USING (user_id)
            WHERE t.added - t.deducted = w.balance AND t.last_balance = w.balance")" $USERS \
   "it agrees with the wallets' balances"

# The stored events (see the header): the store would have written them.
sql "INSERT INTO event.events (id, occurred_at, event_type, source, subject, version, user_id,
                               correlation_id, causation_id, data, metadata)
     SELECT o.id, o.occurred_at, o.event_type, o.source, o.source || '.' || o.event_type, o.version,
            (o.data->>'user_id')::uuid, (o.metadata->>'correlation_id')::uuid,
            (o.metadata->>'causation_id')::uuid, o.data, o.metadata
       FROM isa.outbox o
      WHERE o.source = 'wallet_service' AND o.subject IS NULL AND o.occurred_at >= '$t0' AND o.occurred_at < '$t1'
     ON CONFLICT DO NOTHING" >/dev/null
in_range="occurred_at >= '$t0' AND occurred_at < '$t1' AND source = 'wallet_service' AND event_type LIKE 'wallet.tokens.%'"
M=$(sql "SELECT count(*) FROM event.events WHERE $in_range")
ok "the store holds the range's wallet.tokens events (ours: $N, any other wallet's: $((M - N)))" test "$M" -ge "$N"

# ---------------------------------------------------------------- wipe and rebuild
sql "DELETE FROM $S.tokens" >/dev/null
is "$(sql "SELECT (seen, applied, skipped) FROM event.replay_to_subscription($sub, '$t0', '$t1')")" "($M,0,$M)" \
   "a replay without force applies nothing: the inbox remembers every event"
is "$(sql "SELECT count(*) FROM $S.tokens")" 0 "the projection stays empty"
is "$(sql "SELECT (seen, applied, skipped) FROM event.replay_to_subscription($sub, '$t0', '$t1', force => true)")" "($M,$M,0)" \
   "forced, the replay applies each stored event of the range again"
is "$(sql "$snapshot")" "$before" "the rebuilt projection is identical to the live one (counts, sums, last balance and event)"
is "$(sql "SELECT count(*) FROM $S.tokens t JOIN wallet.wallets w USING (user_id)
            WHERE t.added - t.deducted = w.balance AND t.last_balance = w.balance")" $USERS \
   "and agrees with the wallets' balances"

# ---------------------------------------------------------------- an outside consumer
original_before=$(nats count 'wallet_service.wallet.tokens.>' --timeout-ms 2000 | cut -d' ' -f1)
req=$(sql "SELECT event.replay_to_subject('$t0', '$t1', 'wallet.tokens.*', 'wallet_service')")
ok "replay_to_subject returns a request id ($req)" test -n "$req"
is "$(sql "SELECT events FROM event.replays WHERE request_id = '$req'")" "$M" "event.replays says how many events it has"
is "$(wait_for "SELECT count(*) FILTER (WHERE published_at IS NOT NULL) || '/' || count(*) FROM event.outbox
                 WHERE subject LIKE 'replay.$req.%'" "$M/$M" 20)" "$M/$M" "the bridge publishes its $M outbox rows"
out=$(ISA_NATS_CREDS=$ISA_NATS_SUBSCRIBER_CREDS nats sub "replay.$req.>" --stream ISA_REPLAY --consumer watch \
        --count "$M" --timeout-ms 20000); rc=$?
is "$rc" 0 "the read-only subscriber reads the $M replayed events from stream ISA_REPLAY"
is "$(printf '%s\n' "$out" | jq -r '.subject' | sed "s/^replay\.$req\.//" | sort -u | tr '\n' ' ')" \
   "wallet_service.wallet.tokens.added wallet_service.wallet.tokens.deducted " \
   "each on replay.<request id>.<its original subject>"
is "$(printf '%s\n' "$out" | jq -r '.data.id' | tr '\n' ' ')" \
   "$(sql "SELECT string_agg(id::text, ' ' ORDER BY occurred_at, id) || ' ' FROM event.events WHERE $in_range")" \
   "with the original ids, in the original order (occurred_at, id)"
is "$(printf '%s\n' "$out" | jq -r 'select(.data.source == "wallet_service" and .data.data.amount != null) | .data.id' | wc -l)" "$M" \
   "and the original envelopes (source, data)"
is "$(printf '%s\n' "$out" | jq -r 'select(.headers["Nats-Msg-Id"] != .data.id) | .headers["Nats-Msg-Id"]' | sort -u | wc -l)" "$M" \
   "under Nats-Msg-Ids of their own, not the event ids"
req2=$(sql "SELECT event.replay_to_subject('$t0', '$t1', 'wallet.tokens.*', 'wallet_service')")
is "$(wait_for "SELECT count(*) FILTER (WHERE published_at IS NOT NULL) FROM event.outbox WHERE subject LIKE 'replay.$req2.%'" "$M" 20)" "$M" \
   "a second replay of the same events is published"
is "$(nats count "replay.$req2.>" --stream ISA_REPLAY --timeout-ms 2000 | cut -d' ' -f1)" "$M" \
   "and stored by the stream too (its duplicate window does not drop it)"
is "$(nats count 'wallet_service.wallet.tokens.>' --timeout-ms 2000 | cut -d' ' -f1)" "$original_before" \
   "nothing was published on the original subjects"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE consumer = (SELECT durable_name FROM isa.subscriptions WHERE id = $sub)")" 0 \
   "and the projection's subscription got nothing twice (no dead letter)"

# ---------------------------------------------------------------- without ISA_REPLAY
# A replay that cannot be published (its stream is gone) waits in the outbox
# and holds back nothing of the event service's own events.
is "$(nats stream-delete ISA_REPLAY | jq -r .deleted)" true "(an operator deletes stream ISA_REPLAY)"
req3=$(sql "SELECT event.replay_to_subject('$t0', '$t1', 'wallet.tokens.*', 'wallet_service')")
own=$(sql "SELECT isa.publish_event('event.dead_lettered', 'event_service',
             '{\"dead_letter_id\": 0, \"service\": \"event\", \"consumer\": \"it68\", \"subject\": \"x\",
               \"reason\": \"handler_error\", \"error\": \"test 68\", \"sqlstate\": \"XX000\", \"attempts\": 1}')")
is "$(wait_for "SELECT published_at IS NOT NULL FROM event.outbox WHERE id = '$own'" t 20)" t \
   "an event of the event service published after the replay goes out"
is "$(sql "SELECT count(*) FROM event.outbox WHERE subject LIKE 'replay.$req3.%' AND published_at IS NULL")" "$M" \
   "while the replay's rows wait in the outbox"
like "$(sql "SELECT last_error FROM isa.bridge_status()")" "not acknowledged" "and the bridge says why"
# a change of subscriptions makes the bridge set up its streams again
sql "SELECT isa.unsubscribe_from_events('event', 'wallet_service.wallet.tokens.*', '$S.on_tokens(isa.event)')" >/dev/null
is "$(wait_for "SELECT count(*) FROM event.outbox WHERE subject LIKE 'replay.$req3.%' AND published_at IS NULL" 0 30)" 0 \
   "once the bridge made ISA_REPLAY again, the replay is published"
is "$(nats count "replay.$req3.>" --stream ISA_REPLAY --timeout-ms 2000 | cut -d' ' -f1)" "$M" "all of it"

ISA_NATS_CREDS=$ISA_NATS_SUBSCRIBER_CREDS nats consumer-delete ISA_REPLAY watch >/dev/null 2>&1
# the replays' published rows would wait for the outbox retention: later
# files count the event service's outbox
sql "DELETE FROM event.outbox WHERE (split_part(subject, '.', 2) IN ('$req', '$req2', '$req3') AND published_at IS NOT NULL)
        OR id = '$own'" >/dev/null
sql "SET client_min_messages = warning; DROP SCHEMA $S CASCADE" >/dev/null
done_testing
