# Fault: garbage on a subscribed subject.  Messages that are not valid
# envelopes (not JSON, wrong types, missing fields, bad UTF-8, 1 MB of junk)
# or carry an unsupported major version are dead-lettered at once with their
# reason; the worker stays up and valid events behind them are applied.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

sql "CREATE SCHEMA it_garbage;
     CREATE TABLE it_garbage.applied (event_id uuid);
     GRANT USAGE ON SCHEMA it_garbage TO isa_svc_notification;   -- the handler runs as notification's role
     GRANT INSERT ON it_garbage.applied TO isa_svc_notification;
     CREATE FUNCTION it_garbage.handle(e isa.event) RETURNS void LANGUAGE sql AS
       \$\$ INSERT INTO it_garbage.applied VALUES (e.id) \$\$;
     SELECT isa.subscribe_to_events('notification', 'external.it.>', 'it_garbage.handle(isa.event)',
                                    '{\"versions\": [1], \"deliver_policy\": \"new\"}');" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the subscription runs"
sleep 0.5
pid=$(sql "SELECT pid FROM isa.bridge_status()")

ts=2026-11-27T10:00:00.000000Z
good() { printf '{"id":"%s","event_type":"it.garbage","source":"external","version":"%s","timestamp":"%s","data":{},"metadata":{}}' "$1" "$2" "$ts"; }
g1=$(sql "SELECT isa.uuid_v7()"); g2=$(sql "SELECT isa.uuid_v7()"); v2=$(sql "SELECT isa.uuid_v7()")

printf 'this is not json' > "$tmp/notjson"
printf '{"id": 42, "event_type": "it.garbage", "source": "external", "data": {}}' > "$tmp/wrongtype"
printf '{"event_type": "it.garbage", "source": "external", "data": {}}' > "$tmp/noid"
printf '{"id":"%s","event_type":"it.garbage","source":"external","data":"a string"}' "$(sql "SELECT isa.uuid_v7()")" > "$tmp/datastring"
printf '{"id":"\xff\xfe","event_type":"x"}' > "$tmp/badutf8"
head -c 1000000 /dev/urandom > "$tmp/big"
good "$v2" 2.0.0 > "$tmp/v2"
good "$g1" 1.0.0 > "$tmp/good1"
good "$g2" 1.4.2 > "$tmp/good2"

$NATS pub-raw external.it.garbage --file "$tmp/good1" >/dev/null
for f in notjson wrongtype noid datastring badutf8 big v2; do
  $NATS pub-raw external.it.garbage --file "$tmp/$f" >/dev/null || echo "# could not publish $f"
done
$NATS pub-raw external.it.garbage --file "$tmp/good2" >/dev/null

is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE service = 'notification'" 7 20)" 7 "all seven bad messages are dead-lettered"
is "$(wait_for "SELECT count(*) FROM it_garbage.applied WHERE event_id IN ('$g1', '$g2')" 2 10)" 2 "the valid events before and after them are applied (a 1.x minor version too)"
is "$(sql "SELECT pid FROM isa.bridge_status()")" "$pid" "the bridge worker stayed up (same pid)"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service = 'notification' AND reason = 'invalid_envelope'")" 6 "six are invalid envelopes"
is "$(sql "SELECT reason || ' ' || event_id FROM isa.dead_letters WHERE service = 'notification' AND event IS NOT NULL AND reason <> 'invalid_envelope'")" \
   "unsupported_version $v2" "the 2.0.0 event is dead-lettered as unsupported_version, with its id"
is "$(sql "SELECT attempts FROM isa.dead_letters WHERE service = 'notification' AND reason = 'unsupported_version'")" 1 "bad data is not retried: one attempt"
like "$(sql "SELECT error_message FROM isa.dead_letters WHERE service = 'notification' AND payload = convert_to('this is not json', 'UTF8')")" \
   "invalid input syntax for type json" "not JSON: the parser's error is kept, and the raw payload"
like "$(sql "SELECT error_message FROM isa.dead_letters WHERE service = 'notification' AND payload = convert_to('{\"event_type\": \"it.garbage\", \"source\": \"external\", \"data\": {}}', 'UTF8')")" \
   "id" "missing id: the error names the field"
like "$(sql "SELECT error_message FROM isa.dead_letters WHERE service = 'notification' AND payload = convert_to('{\"id\": 42, \"event_type\": \"it.garbage\", \"source\": \"external\", \"data\": {}}', 'UTF8')")" \
   '"id" must be a string' "a number as id: the error says it must be a string"
is "$(sql "SELECT length(payload) || ' ' || error_sqlstate FROM isa.dead_letters WHERE service = 'notification' AND length(payload) = 1000000")" \
   "1000000 22021" "1 MB of random bytes: kept whole, rejected as not UTF-8 (22021)"
is "$(sql "SELECT count(*) FROM it_garbage.applied")" 2 "nothing but the two valid events had an effect"
is "$(sqlstate "SELECT isa.replay_dead_letter((SELECT id FROM isa.dead_letters WHERE service = 'notification' AND payload = convert_to('this is not json', 'UTF8')))")" \
   55000 "an invalid envelope cannot be replayed: 55000"

sql "SELECT isa.unsubscribe_from_events('notification', 'external.it.>', 'it_garbage.handle(isa.event)');
     DELETE FROM isa.dead_letters WHERE service = 'notification';
     DELETE FROM isa.outbox WHERE source = 'notification_service';
     SET client_min_messages = warning; DROP SCHEMA it_garbage CASCADE" >/dev/null
done_testing
