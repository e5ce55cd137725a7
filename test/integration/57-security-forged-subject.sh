# Security: the consumer believes only what the subject says.  NATS
# permissions vouch for who may publish on a subject, not for what a message's
# body claims, so an envelope that arrived on a subject other than its own
# <source>.<event_type> is dead-lettered (reason subject_mismatch), counted,
# never applied and never replayable.  The forgeries are the attacker's of
# issue 12: "source": "external" on payment_service.payment.completed, and a
# payment.completed envelope on a subject an external producer may use.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription (wallet's payment.completed among them) runs"

uid=$(sql "SELECT user_id FROM account.create_user('forged-$$@example.com', 'Victim')")
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "the victim has a wallet"
dead_before=$(sql "SELECT count(*) FROM isa.dead_letters WHERE reason = 'subject_mismatch'")
metric() { sql "SELECT coalesce(sum(value), 0) FROM isa.metrics() WHERE metric = 'dead_letters' AND labels->>'reason' = 'subject_mismatch'"; }
metric_before=$(metric)

envelope() { # ID SOURCE EVENT_TYPE
  printf '{"id":"%s","event_type":"%s","source":"%s","version":"1.0.0","timestamp":"2026-12-07T10:00:00.000000Z","data":{"payment_id":"%s","user_id":"%s","order_id":null,"amount":424242,"currency":"usd","tokens":424242,"stripe_payment_intent_id":"pi_forged_%s"},"metadata":{}}' \
    "$1" "$3" "$2" "$(sql "SELECT gen_random_uuid()")" "$uid" "$$"
}
id1=$(sql "SELECT isa.uuid_v7()")
id2=$(sql "SELECT isa.uuid_v7()")

# 1: "source": "external" on payment_service.payment.completed
envelope "$id1" external payment.completed > "$TMP/e1"
$NATS pub payment_service.payment.completed --id "forged-$id1" --file "$TMP/e1" >/dev/null
# every subscription to the subject (wallet's, orders' the event store's and the audit trail's) dead-letters it
n1=$(sql "SELECT count(*) FROM isa.subscriptions WHERE isa.subject_matches('payment_service.payment.completed', subject_filter)")
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$id1'" "$n1" 15)" "$n1" \
   "an envelope of source external on payment_service.payment.completed is dead-lettered by each of its $n1 subscriptions"
is "$(sql "SELECT string_agg(DISTINCT reason, ',') FROM isa.dead_letters WHERE event_id = '$id1'")" subject_mismatch \
   "with reason subject_mismatch"
like "$(sql "SELECT error_message || ' ' || error_sqlstate FROM isa.dead_letters WHERE event_id = '$id1' LIMIT 1")" \
   "^event external.payment.completed arrived on subject payment_service.payment.completed: .* 42501$" \
   "the error names what the envelope claims and where it arrived (42501)"

# 2: a payment_service envelope on a subject an external producer may use
envelope "$id2" payment_service payment.completed > "$TMP/e2"
$NATS pub external.usage.recorded.model --id "forged-$id2" --file "$TMP/e2" >/dev/null
n2=$(sql "SELECT count(*) FROM isa.subscriptions WHERE isa.subject_matches('external.usage.recorded.model', subject_filter)")
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$id2' AND reason = 'subject_mismatch'" "$n2" 15)" "$n2" \
   "a payment_service envelope on external.usage.recorded.model is dead-lettered too, by each of its $n2 subscriptions"

# 3: the same bytes on their own subject and on another, in one round of the
# apply path (the event store and the audit trail paused while both are
# published, so that they arrive together): the envelope is parsed once for
# every consumer, and still checked against each message's subject
id3=$(sql "SELECT isa.uuid_v7()")
printf '{"id":"%s","event_type":"it57.same","source":"external","version":"1.0.0","timestamp":"2026-12-07T10:00:00.000000Z","data":{"n":1},"metadata":{}}' "$id3" > "$TMP/e3"
sql "ALTER SYSTEM SET isa.services = '$(sql "SELECT string_agg(name, ',') FROM isa.services WHERE schema_name IS NOT NULL AND name NOT IN ('event', 'audit')")'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT subscriptions FROM isa.bridge_status()" "$(subs_want "service NOT IN ('event', 'audit')")" 20 >/dev/null
$NATS pub external.it57.same --id "same-$id3" --file "$TMP/e3" >/dev/null
$NATS pub external.it57.other --id "other-$id3" --file "$TMP/e3" >/dev/null
resume_services
n3=$(sql "SELECT count(*) FROM isa.subscriptions WHERE isa.subject_matches('external.it57.other', subject_filter)")
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$id3' AND reason = 'subject_mismatch'" "$n3" 15)" "$n3" \
   "the same bytes on a subject not their own are dead-lettered by each of its $n3 subscriptions"
is "$(wait_for "SELECT (SELECT count(*) FROM event.events WHERE id = '$id3') || ' ' || (SELECT count(*) FROM audit.entries WHERE event_id = '$id3')" "1 1" 15)" "1 1" \
   "and on their own subject they are in the event store and the audit trail, once each"
is "$(sql "SELECT string_agg(DISTINCT subject, ',') FROM event.events WHERE id = '$id3'")" external.it57.same \
   "the event store has them as they came on their own subject"

is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'")" 0 "the victim's wallet was credited nothing"
is "$(sql "SELECT count(*) FROM isa.inbox WHERE event_id IN ('$id1', '$id2')")" 0 "no inbox holds either forgery: nothing was applied"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE reason = 'subject_mismatch'")" \
   "$((dead_before + $(sql "SELECT count(*) FROM isa.dead_letters WHERE event_id IN ('$id1', '$id2', '$id3')")))" \
   "every dead letter of subject_mismatch is one of the three forgeries"
is "$(metric)" "$((metric_before + $(sql "SELECT count(*) FROM isa.dead_letters WHERE event_id IN ('$id1', '$id2', '$id3')")))" \
   "isa.metrics() counts them: dead_letters{reason=subject_mismatch}"

dl=$(sql "SELECT min(id) FROM isa.dead_letters WHERE event_id = '$id1'")
is "$(sqlstate "SELECT isa.replay_dead_letter($dl)")" 42501 "a forged dead letter cannot be replayed (42501)"
is "$(sql "SELECT balance || ' ' || (SELECT replay_count FROM isa.dead_letters WHERE id = $dl) FROM wallet.wallets WHERE user_id = '$uid'")" "0 0" \
   "and the attempt changed nothing"

done_testing
