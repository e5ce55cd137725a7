# The bridge when NATS refuses its credential: nats.c closes such a
# connection for good, so the bridge makes a new one every 5 seconds, reading
# its creds file again; once the file is right it is connected and events
# flow, none lost.  (A crash restart that read a creds file half rewritten
# left the bridge disconnected until PostgreSQL restarted; so did a connection
# nats.c never began, until the bridge retried those too.)
source "$(dirname "$0")/lib.sh"
creds=$(sql "SHOW isa.nats_creds_file")
keep=$(mktemp); cp "$creds" "$keep"
trap 'cat "$keep" > "$creds"; rm -f "$keep"' EXIT
ET="it.refused$$"
sql "SELECT isa.register_event_type('$ET', 'audit_service', '1.0.0', 'integration test event')" >/dev/null

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected"
echo "not a creds file" > "$creds"
sql "SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity WHERE backend_type LIKE 'isa bridge%'" >/dev/null
is "$(wait_for "SELECT connected IS FALSE AND last_error LIKE 'not connected to NATS%' FROM isa.bridge_status()" t 20)" t \
   "restarted with a credential NATS refuses, it is not connected and says so"
id=$(sql "SELECT isa.publish_event('$ET', 'audit_service', '{\"n\": 1}')")
is "$(sql "SELECT count(*) FROM isa.outbox WHERE id = '$id' AND published_at IS NULL")" 1 "an event published meanwhile waits in the outbox"
cat "$keep" > "$creds"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the creds file put right, the bridge connects again by itself"
is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE id = '$id' AND published_at IS NOT NULL" 1 20)" 1 "and the waiting event is published"

# A creds file that is not there: nats.c gives up before its own retries
# begin (no connection at all, not a closed one); the bridge tries again
# every 5 seconds all the same.
rm -f "$creds"
sql "SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity WHERE backend_type LIKE 'isa bridge%'" >/dev/null
is "$(wait_for "SELECT connected IS FALSE FROM isa.bridge_status()" t 20)" t "restarted without its creds file, it is not connected"
id=$(sql "SELECT isa.publish_event('$ET', 'audit_service', '{\"n\": 2}')")
sleep 1
cat "$keep" > "$creds"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the file back, the bridge connects again by itself"
is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE id = '$id' AND published_at IS NOT NULL" 1 20)" 1 "and the event published meanwhile goes out"
done_testing
