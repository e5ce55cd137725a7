# The audit trail through real NATS (docs/services/audit.md): the events the
# services publish (a user's creation and deletion and what the other
# services do about them) and an external producer's usage events reach
# audit.entries once each, through the batch handler subscribed to '>';
# the deletion is marked; audit.verify passes; a checkpoint leaves the
# database on NATS (audit.checkpoint.created), is recorded in the trail
# once without making another, and verify_checkpoint matches the copy read
# from NATS; a superuser edits one entry (triggers off) and audit.verify
# names it, then passes again once it is put back.
source "$(dirname "$0")/lib.sh"
: "${ISA_NATS_URL:?run me in a stack environment (tools/stack.sh NAME env)}"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
run="$$$(date +%s)"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription (audit's on '>' among them) has its consumer"
is "$(sql "SELECT subject_filter FROM isa.subscriptions WHERE service = 'audit'")" ">" "audit reads every subject"

t0=$(sql "SELECT now()")
# ---------------------------------------------------------------- events of the services and of a producer
user=$(sql "SELECT (account.create_user('it68-$run@example.com', 'IT68 $run')).user_id")
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$user'" 1 20)" 1 \
   "user.created reached wallet through NATS (a chain of events across services)"
sql "SELECT wallet.add('$user', 25, 'it68-add-$run', 'manual')" >/dev/null
$NATS --creds "$ISA_NATS_MODEL_CREDS" pub-events usage.recorded.model --count 3 --ids-file "$TMP/ids" \
  --data-template "{\"usage_id\": \"it68-{{i}}-$run\", \"user_id\": \"$user\", \"model\": \"it68-model-$run\", \"input_tokens\": 1, \"output_tokens\": 1}" >/dev/null
is "$(wc -l < "$TMP/ids" | tr -d ' ')" 3 "the producer published 3 usage events on external.usage.recorded.model"
sql "SELECT account.delete_user('$user')" >/dev/null

# every event published since t0, by every service, is in the trail
missing="SELECT count(*) FROM isa.outbox o WHERE o.occurred_at >= '$t0'
           AND (o.published_at IS NULL OR NOT EXISTS (SELECT FROM audit.entries e WHERE e.event_id = o.id))"
is "$(wait_for "$missing" 0 30)" 0 "every event the services published reaches the trail"
n_out=$(sql "SELECT count(*) FROM isa.outbox WHERE occurred_at >= '$t0'")
n_src=$(sql "SELECT count(DISTINCT source) FROM isa.outbox WHERE occurred_at >= '$t0'")
ok "from several services ($n_out events of $n_src sources)" test "$n_src" -ge 3
ids=$(sed "s/.*/'&'/" "$TMP/ids" | paste -sd, -)
is "$(wait_for "SELECT count(*) FROM audit.entries WHERE event_id IN ($ids)" 3 20)" 3 "the producer's 3 external events are in the trail"
is "$(sql "SELECT DISTINCT subject FROM audit.entries WHERE event_id IN ($ids)")" "external.usage.recorded.model" "on their subject"
is "$(sql "SELECT count(*) FROM (SELECT event_id FROM audit.entries WHERE recorded_at >= '$t0'
                                  GROUP BY event_id HAVING count(*) > 1) d")" 0 "each event once"
is "$(sql "SELECT security || ' ' || resource FROM audit.entries WHERE event_type = 'user.deleted' AND data ->> 'user_id' = '$user'")" \
   "deletion user:$user" "the user's deletion is marked (security deletion, resource user:<id>)"
is "$(sql "SELECT count(*) FROM audit.entries WHERE actor = '$user' AND event_type = 'user.created'")" 1 "found by its actor"
is "$(sql "SELECT ok FROM audit.verify()")" t "audit.verify: the trail is sound"

# ---------------------------------------------------------------- a checkpoint leaves the database
cps=$(sql "SELECT count(*) FROM audit.checkpoints")
cp=$(sql "SELECT checkpoint_id FROM audit.checkpoint()")
cp_event=$(sql "SELECT event_id FROM audit.checkpoints WHERE checkpoint_id = '$cp'")
is "$(wait_for "SELECT count(*) FROM audit.entries WHERE event_id = '$cp_event'" 1 20)" 1 \
   "audit.checkpoint.created went round NATS into the trail, once"
total=$($NATS count 'audit_service.audit.checkpoint.created' | cut -d' ' -f1)
$NATS sub 'audit_service.audit.checkpoint.created' --count "$total" --timeout-ms 20000 > "$TMP/cps" || true
kept=$(jq -c --arg cp "$cp" 'select(.data.data.checkpoint_id == $cp) | .data.data' "$TMP/cps")
is "$(jq -r '.seq > 0 and (.entry_hash | length) == 64' <<<"$kept")" true \
   "an outside subscriber reads the checkpoint from NATS (head seq and hash)"
is "$(sql "SELECT count(*) FROM audit.checkpoints")" "$((cps + 1))" "recording it made no further checkpoint"
is "$(sql "SELECT ok || ' ' || reason FROM audit.verify_checkpoint('$kept')")" "true match" \
   "verify_checkpoint: the trail matches the copy kept outside"

# ---------------------------------------------------------------- a superuser edits one entry
target=$(sql "SELECT event_id FROM audit.entries WHERE event_type = 'user.created' AND data ->> 'user_id' = '$user'")
seq=$(sql "SELECT seq FROM audit.entries WHERE event_id = '$target'")
orig=$(sql "SELECT data FROM audit.entries WHERE event_id = '$target'")
sql "SET session_replication_role = replica;
     UPDATE audit.entries SET data = data || '{\"name\": \"Mallory\"}' WHERE event_id = '$target'" >/dev/null
is "$(sql "SELECT concat_ws(' ', ok, first_bad_seq, first_bad_event_id, reason) FROM audit.verify()")" \
   "f $seq $target altered" "audit.verify names the edited entry: its seq, its event id, altered"
is "$(sql "SELECT ok || ' ' || reason FROM audit.verify_checkpoint('$kept')")" "false chain_altered" \
   "and the checkpoint no longer verifies"
sql "SET session_replication_role = replica;
     UPDATE audit.entries SET data = '$orig' WHERE event_id = '$target'" >/dev/null
is "$(sql "SELECT ok FROM audit.verify()")" t "put back, the trail verifies again"
is "$(sqlstate "UPDATE audit.entries SET data = '{}' WHERE event_id = '$target'")" 42501 \
   "with its triggers on, the trail refuses the same edit (42501)"

done_testing
