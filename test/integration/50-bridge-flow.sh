# The bridge end to end with real NATS: what a committed publish puts on the
# wire (checked by an independent client, test/natsclient), what a subscribed
# handler receives, dedupe by the inbox, correlation/causation, and
# subscriptions that come and go without a restart.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
# The stream outlives databases: a type of this run's own keeps old messages out.
ET="it.placed$$"
dups() { sql "SELECT coalesce(sum(value), 0) FROM isa.metrics() WHERE metric = 'event_processed_total' AND labels->>'service' = 'billing' AND labels->>'status' = 'duplicate'"; }

sql "CREATE SCHEMA it_flow;
     CREATE TABLE it_flow.got (event_id uuid, event_type text, n int, correlation text, causation text,
                               handled_by text, current_id uuid);
     -- handlers run as their service's role (billing's and audit's)
     GRANT USAGE ON SCHEMA it_flow TO isa_svc_billing, isa_svc_audit;
     GRANT INSERT ON it_flow.got TO isa_svc_billing, isa_svc_audit;
     CREATE FUNCTION it_flow.on_order(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       INSERT INTO it_flow.got VALUES (e.id, e.event_type, (e.data->>'n')::int,
              e.metadata->>'correlation_id', e.metadata->>'causation_id', current_user, (isa.current_event()).id);
       -- a reaction: published inside the handler, it inherits the chain
       PERFORM isa.publish_event('it.reacted', 'billing_service', jsonb_build_object('n', e.data->'n'));
     END \$\$;
     CREATE FUNCTION it_flow.on_reaction(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       INSERT INTO it_flow.got VALUES (e.id, e.event_type, (e.data->>'n')::int,
              e.metadata->>'correlation_id', e.metadata->>'causation_id', current_user, NULL);
     END \$\$;
     SELECT isa.register_event_type('$ET', 'order_service', '1.0.0', 'integration test event');
     SELECT isa.register_event_type('it.reacted', 'billing_service', '1.0.0', 'integration test reaction');" >/dev/null

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
info=$($NATS stream-info)
is "$(jq -c '[.config.subjects | sort | .[]]' <<<"$info")" \
   "$(sql "SELECT json_agg(s ORDER BY s COLLATE \"C\") FROM (SELECT source || '.>' FROM isa.services
             UNION ALL VALUES ('isa.devices.*.acks'), ('isa.devices.*.heartbeat')) AS x (s)" | jq -c .)" \
   "the stream it made carries <source>.> for every source of isa.services, and the devices' acks and heartbeats"
is "$(jq -r '[.config.storage, .config.num_replicas, .config.duplicate_window / 1e9, .config.max_age / 1e9] | join(" ")' <<<"$info")" \
   "file 1 120 604800" "file storage, 1 replica, 2 min duplicate window, 7 days max age (the defaults)"

# --- the wire: subject, headers, envelope
id=$(sql "SELECT isa.publish_event('$ET', 'order_service', '{\"n\": 1, \"note\": \"é\\\"x\"}', '{\"traceparent\": \"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}')")
msg=$($NATS sub "order_service.$ET" --count 1 --timeout-ms 10000)
is "$(jq -r .subject <<<"$msg")" "order_service.$ET" "the event is on subject <source>.<event_type>"
is "$(jq -r '.headers["Nats-Msg-Id"]' <<<"$msg")" "$id" "its Nats-Msg-Id header is the event id"
is "$(jq -r '.headers.traceparent' <<<"$msg")" "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" "the traceparent of its metadata travels as a header"
is "$(jq -r '[.data.id, .data.event_type, .data.source, .data.version] | join(" ")' <<<"$msg")" \
   "$id $ET order_service 1.0.0" "the body is the envelope: id, event_type, source, version"
like "$(jq -r .data.timestamp <<<"$msg")" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$' "timestamp is RFC 3339 UTC with microseconds"
is "$(jq -c .data.data <<<"$msg")" '{"n":1,"note":"é\"x"}' "data arrives intact (unicode and quotes)"
is "$(jq -r .data.metadata.correlation_id <<<"$msg")" "$id" "a first event is its own correlation"
is "$(sql "SELECT count(*) FROM isa.outbox WHERE id = '$id' AND published_at IS NOT NULL")" 1 "the outbox row is marked published"
is "$(sql "SELECT value FROM isa.metrics() WHERE metric = 'event_published_total' AND labels = '{\"service\": \"orders\", \"event_type\": \"$ET\"}'")" 1 \
   "event_published_total{service=orders,event_type=$ET} counts it"

# --- consuming, with a subscription added at runtime
sql "SELECT isa.subscribe_to_events('billing', 'order_service.$ET', 'it_flow.on_order(isa.event)', '{\"deliver_policy\": \"new\"}');
     SELECT isa.subscribe_to_events('audit', 'billing_service.it.reacted', 'it_flow.on_reaction(isa.event)', '{\"deliver_policy\": \"new\"}')" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "both subscriptions are running, without a restart"
sleep 0.5
id1=$(sql "SELECT isa.publish_event('$ET', 'order_service', '{\"n\": 2}')")
is "$(wait_for "SELECT count(*) FROM it_flow.got WHERE event_type = 'it.reacted'" 1 15)" 1 "the handler ran and its reaction was handled in turn"
is "$(sql "SELECT handled_by || ' ' || current_id FROM it_flow.got WHERE event_id = '$id1'")" "isa_svc_billing $id1" \
   "the handler ran as the subscription's owner (billing's role) and isa.current_event() was the event"
is "$(sql "SELECT correlation || ' ' || causation FROM it_flow.got WHERE event_type = 'it.reacted'")" "$id1 $id1" \
   "the reaction inherited the correlation_id and names the event as its causation_id"
is "$(sql "SELECT count(*) FROM it_flow.got WHERE n = 1")" 0 "deliver_policy new: the event published before subscribing is not delivered"

# --- the same event twice on the wire (two Nats-Msg-Ids, one envelope id): applied once
ext=$(sql "SELECT isa.uuid_v7()")
d0=$(dups)
env="{\"id\":\"$ext\",\"event_type\":\"$ET\",\"source\":\"order_service\",\"version\":\"1.0.0\",\"timestamp\":\"2026-11-27T10:00:00.000000Z\",\"data\":{\"n\":3},\"metadata\":{}}"
$NATS pub order_service.$ET --id "dup-a-$ext" --data "$env" >/dev/null
$NATS pub order_service.$ET --id "dup-b-$ext" --data "$env" >/dev/null
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE event_id = '$ext' AND service NOT IN ('event', 'audit')" 1 10)" 1 \
   "the inbox has the event once (the event store's and the audit trail's aside)"
sleep 1
is "$(sql "SELECT count(*) FROM it_flow.got WHERE event_id = '$ext'")" 1 "a redelivered event (same id, new message) is applied once"
is "$(dups)" "$((d0 + 1))" \
   "event_processed_total{status=duplicate} counts the skipped copy"
like "$(sql "SELECT string_agg(metric, ' ') FROM (SELECT DISTINCT metric FROM isa.metrics() ORDER BY 1) m")" \
   "event_processing_duration_seconds_bucket.*nats_connected.*outbox_backlog.*outbox_oldest_unpublished_age_seconds" \
   "isa.metrics() has the duration histogram, NATS state and outbox gauges"

# --- a row whose id was made long before its commit is published all the same.
# A round woken by a commit reads only the ids of the last 10 s (the partial
# index keeps published rows' entries at its left until vacuum); a round that
# reads every row runs at least once per isa.bridge_idle_interval (1 s here).
old=$(sql "SELECT overlay(isa.uuid_v7()::text PLACING '01900000-0000' FROM 1 FOR 13)")   # made in 2024
new=$(sql "INSERT INTO orders.outbox (id, source, event_type, version, occurred_at, data, metadata)
           VALUES ('$old', 'order_service', '$ET', '1.0.0', now(), '{\"n\": 90}', '{}');
           SELECT isa.publish_event('$ET', 'order_service', '{\"n\": 91}')" | tail -1)
is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE id IN ('$old', '$new') AND published_at IS NOT NULL" 2 10)" 2 \
   "an event whose id is older than the recent rounds' window is published by the next full round, beside the one its commit woke"

# --- isa.services limits which services' subscriptions this database runs
sql "ALTER SYSTEM SET isa.services = 'audit'" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
is "$(subs_running "service = 'audit'")" "2/2" "with isa.services = audit only the audit subscriptions run (this test's and the trail's)"
durable=$(sql "SELECT durable_name FROM isa.subscriptions WHERE handler = 'it_flow.on_order(isa.event)'::regprocedure")
is "$($NATS consumer-info ISA_EVENTS "$durable" | jq -r .config.durable_name)" "$durable" \
   "the excluded service's consumer stays on the stream (another database may run it)"
sql "ALTER SYSTEM RESET isa.services" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "reset to all, both run again"

# --- unsubscribing drops the consumer
sql "SELECT isa.unsubscribe_from_events('billing', 'order_service.$ET', 'it_flow.on_order(isa.event)')" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "an unsubscribed handler stops, without a restart"
sleep 0.5
ok "and its durable consumer is deleted from the stream" bash -c "! $NATS consumer-info ISA_EVENTS $durable >/dev/null 2>&1"

# --- credentials in the URL never show (the test server takes any user)
url=$(sql "SHOW isa.nats_url")
sql "ALTER SYSTEM SET isa.nats_url = '${url/nats:\/\//nats://itu:s3cr3t-pw@}'" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 10)" t "the bridge reconnects when isa.nats_url changes"
is "$(sql "SELECT server FROM isa.bridge_status()")" "$url" "bridge_status().server shows the URL without user and password"
sql "ALTER SYSTEM RESET isa.nats_url" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 10)" t "and back to the stack's URL"

sql "SELECT isa.unsubscribe_from_events('audit', 'billing_service.it.reacted', 'it_flow.on_reaction(isa.event)');
     DELETE FROM isa.outbox WHERE event_type IN ('$ET', 'it.reacted');
     DELETE FROM isa.event_types WHERE event_type IN ('$ET', 'it.reacted');
     SET client_min_messages = warning; DROP SCHEMA it_flow CASCADE" >/dev/null
done_testing
