# SIGTERM (pg_terminate_backend) while events flow: the bridge finishes its
# batch, hands back what it had queued, exits and is started again by the
# postmaster; an external producer's events (external.usage.recorded.model,
# published by an independent NATS client) and outbox events are each
# applied exactly once.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
N=20000

sql "SET client_min_messages = warning;
     CREATE SCHEMA it_term;
     CREATE TABLE it_term.applied (event_id uuid, source text);
     GRANT USAGE ON SCHEMA it_term TO isa_svc_storage;     -- the handler runs as storage's role
     GRANT INSERT ON it_term.applied TO isa_svc_storage;
     CREATE FUNCTION it_term.handle(e isa.event) RETURNS void LANGUAGE plpgsql AS
       \$\$ BEGIN INSERT INTO it_term.applied VALUES (e.id, e.source); END \$\$;
     SELECT isa.register_event_type('it.term', 'storage_service', '1.0.0', 'integration test event');
     SELECT isa.subscribe_to_events('storage', 'storage_service.it.term', 'it_term.handle(isa.event)', '{\"deliver_policy\": \"new\"}');
     SELECT isa.subscribe_to_events('storage', 'external.usage.recorded.>', 'it_term.handle(isa.event)', '{\"deliver_policy\": \"new\"}');" >/dev/null
is "$(subs_running "" 15)" "$(subs_want)/$(subs_want)" "both subscriptions run"
sleep 0.5

sql "SELECT count(isa.publish_event('it.term', 'storage_service', jsonb_build_object('i', g))) FROM generate_series(1, $N) g" >/dev/null &
producer=$!
ext=$($NATS pub-events usage.recorded.model --count 500 --data-template '{"user_id": "u{{i}}", "model": "gpt-4o", "input_tokens": 10}')
is "$ext" 500 "an independent client published 500 external.usage.recorded.model events"
wait $producer

shutdowns() { grep -c 'isa bridge shutting down' "$ISA_STACK_DIR/pg/postgresql.log"; }
s0=$(shutdowns)
for round in 1 2; do
  old=$(sql "SELECT pid FROM isa.bridge_status()")
  sql "SELECT pg_terminate_backend($old)" >/dev/null
  new=$(wait_for "SELECT coalesce(pid, 0) <> $old AND connected FROM isa.bridge_status()" t 15)
  is "$new" t "after SIGTERM $round the postmaster started a new bridge, connected"
  sleep 1
done
is "$(($(shutdowns) - s0))" 2 "each time the bridge logged its orderly shutdown"

is "$(wait_for "SELECT count(*) FROM it_term.applied WHERE source = 'storage_service'" "$N" 120)" "$N" "all $N outbox events were applied"
is "$(wait_for "SELECT count(*) FROM it_term.applied WHERE source = 'external'" 500 60)" 500 "all 500 external events were applied"
sleep 4   # anything applied twice would show up by now (ack_wait aside, naks redeliver at once)
is "$(sql "SELECT count(*) - count(DISTINCT event_id) FROM it_term.applied")" 0 "none of them twice"
is "$(sql "SELECT count(*) FROM isa.outbox WHERE event_type = 'it.term' AND published_at IS NULL")" 0 "the outbox is drained"

sql "SELECT isa.unsubscribe_from_events('storage', 'storage_service.it.term', 'it_term.handle(isa.event)');
     SELECT isa.unsubscribe_from_events('storage', 'external.usage.recorded.>', 'it_term.handle(isa.event)');
     DELETE FROM isa.outbox WHERE event_type = 'it.term';
     DELETE FROM isa.event_types WHERE event_type = 'it.term';
     SET client_min_messages = warning; DROP SCHEMA it_term CASCADE" >/dev/null
done_testing
