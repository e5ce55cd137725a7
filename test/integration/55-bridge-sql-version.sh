# The upgrade window: between installing a new isa.so and running
# ALTER EXTENSION isa UPDATE, a database may hold isa SQL of a version the
# library does not serve.  The bridge then does nothing at all (publishes
# nothing, applies nothing), says in bridge_status().last_error which update
# to run, and resumes by itself, losing and doubling nothing, once the
# version is one it serves.  The older database is simulated by editing
# pg_extension.extversion as superuser.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
# The stream outlives databases: a type of this run's own keeps old messages out.
ET="it.upgrade$$"
orig=$(sql "SELECT extversion FROM pg_extension WHERE extname = 'isa'")
restore() { sql "UPDATE pg_extension SET extversion = '$orig' WHERE extname = 'isa'" >/dev/null 2>&1; }
trap restore EXIT

sql "CREATE SCHEMA it_upgrade;
     CREATE TABLE it_upgrade.got (event_id uuid, n int);
     GRANT USAGE ON SCHEMA it_upgrade TO isa_svc_billing;     -- the handler runs as billing's role
     GRANT INSERT ON it_upgrade.got TO isa_svc_billing;
     CREATE FUNCTION it_upgrade.on_event(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN INSERT INTO it_upgrade.got VALUES (e.id, (e.data->>'n')::int); END \$\$;
     SELECT isa.register_event_type('$ET', 'order_service', '1.0.0', 'integration test event');
     SELECT isa.subscribe_to_events('billing', 'order_service.$ET', 'it_upgrade.on_event(isa.event)', '{\"deliver_policy\": \"new\"}')" >/dev/null

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the subscription runs"
id1=$(sql "SELECT isa.publish_event('$ET', 'order_service', '{\"n\": 1}')")
is "$(wait_for "SELECT count(*) FROM it_upgrade.got WHERE event_id = '$id1'" 1 15)" 1 \
   "with the SQL of its own version the bridge publishes and applies"

# --- a database older than the library
sql "UPDATE pg_extension SET extversion = '0.0.9' WHERE extname = 'isa'" >/dev/null
err="SELECT last_error FROM isa.bridge_status()"
is "$(wait_for "SELECT last_error LIKE '%this database has isa 0.0.9: run ALTER EXTENSION isa UPDATE' FROM isa.bridge_status()" t 5)" t \
   "within a few seconds last_error says to run ALTER EXTENSION isa UPDATE"
like "$(sql "$err")" "^isa's library serves SQL versions 0\.1\.0 and 0\.2\.0 but this database has isa 0\.0\.9" \
   "and names the versions the library serves and the one the database has"

t0=$(sql "SELECT clock_timestamp()")
id2=$(sql "SELECT isa.publish_event('$ET', 'order_service', '{\"n\": 2}')")
# an event that reaches the stream from elsewhere, for the subscription
id3=$(sql "SELECT isa.uuid_v7()")
env="{\"id\":\"$id3\",\"event_type\":\"$ET\",\"source\":\"order_service\",\"version\":\"1.0.0\",\"timestamp\":\"2026-12-01T10:00:00.000000Z\",\"data\":{\"n\":3},\"metadata\":{}}"
$NATS pub "order_service.$ET" --id "$id3" --data "$env" >/dev/null
# The bridge notes the mismatch again about once a second: two notes after the
# publish mean it had turns (the commit woke it) and chose to do nothing.
is "$(wait_for "SELECT last_error_at > '$t0'::timestamptz + interval '1 second' FROM isa.bridge_status()" t 10)" t \
   "the bridge keeps checking the version while it idles"
is "$(sql "SELECT published_at IS NULL FROM isa.outbox WHERE id = '$id2'")" t \
   "an event published meanwhile stays unpublished in the outbox"
is "$($NATS count "order_service.$ET" --timeout-ms 1000)" "2 2" \
   "nothing new reached the stream from the bridge (the first event and the one sent from elsewhere)"
is "$(sql "SELECT count(*) FROM it_upgrade.got WHERE event_id IN ('$id2', '$id3')")" 0 \
   "no subscribed message was applied meanwhile"
is "$(sql "SELECT count(*) FROM isa.inbox WHERE event_id = '$id3'")" 0 "and none reached the inbox"
is "$(sql "SELECT running FROM isa.bridge_status()")" t "the bridge did not crash"

# --- the update (simulated): the version is one the library serves again
restore
is "$(wait_for "SELECT last_error IS NULL FROM isa.bridge_status()" t 5)" t "the error is cleared"
is "$(wait_for "SELECT published_at IS NOT NULL FROM isa.outbox WHERE id = '$id2'" t 10)" t \
   "the bridge resumes: the waiting event is published"
is "$(wait_for "SELECT count(*) FROM it_upgrade.got WHERE event_id IN ('$id2', '$id3')" 2 15)" 2 \
   "both waiting events are applied"
is "$($NATS count "order_service.$ET" --timeout-ms 1000)" "3 3" "each event is on the stream exactly once"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT event_id) FROM it_upgrade.got")" "3 3" \
   "and each was applied exactly once"

sql "SELECT isa.unsubscribe_from_events('billing', 'order_service.$ET', 'it_upgrade.on_event(isa.event)');
     DELETE FROM isa.outbox WHERE event_type = '$ET';
     DELETE FROM isa.event_types WHERE event_type = '$ET';
     SET client_min_messages = warning; DROP SCHEMA it_upgrade CASCADE" >/dev/null
done_testing
