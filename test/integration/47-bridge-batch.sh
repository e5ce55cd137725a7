# Batch handlers: a handler f(isa.event[]) gets the events of a fetched batch
# in one call, in stream order, each applied once (the inbox rows of the batch
# in one statement); a poison event in a batch makes the bridge apply that
# batch one event at a time, so the others apply and the poison alone is
# retried and dead-lettered; a dead letter of a batch subscription replays as
# a one-event batch.  (docs/bridge.md, "Batch handlers")
source "$(dirname "$0")/lib.sh"

sql "ALTER SYSTEM SET isa.retry_base = '100ms'" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
sql "CREATE SCHEMA it_batch;
     CREATE TABLE it_batch.calls (call_id bigint GENERATED ALWAYS AS IDENTITY, n_events int, ns int[], current_event_null boolean);
     CREATE TABLE it_batch.applied (event_id uuid, n int);
     CREATE TABLE it_batch.broken (yes boolean);
     INSERT INTO it_batch.broken VALUES (true);
     GRANT USAGE ON SCHEMA it_batch TO isa_svc_ota;
     GRANT SELECT, INSERT ON it_batch.calls, it_batch.applied, it_batch.broken TO isa_svc_ota;
     CREATE FUNCTION it_batch.handle(events isa.event[]) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       INSERT INTO it_batch.calls (n_events, ns, current_event_null)
       SELECT cardinality(events), array_agg((u.data->>'n')::int ORDER BY u.ordinality), isa.current_event() IS NULL
         FROM unnest(events) WITH ORDINALITY AS u;
       INSERT INTO it_batch.applied SELECT u.id, (u.data->>'n')::int FROM unnest(events) u;
       IF EXISTS (SELECT FROM unnest(events) u WHERE (u.data->>'poison')::boolean)
          AND (SELECT yes FROM it_batch.broken) THEN
         RAISE EXCEPTION 'cannot handle a poisoned batch' USING ERRCODE = '22012';
       END IF;
     END \$\$;
     SELECT isa.register_event_type('it.batched', 'device_service', '1.0.0', 'integration test event');
     SELECT isa.subscribe_to_events('ota', 'device_service.it.batched', 'it_batch.handle(isa.event[])',
                                    '{\"max_deliver\": 3, \"deliver_policy\": \"new\", \"batch_size\": 100}');" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the batch subscription runs"
sleep 0.5

ok_before=$(sql "SELECT coalesce(sum(value), 0) FROM isa.metrics() WHERE metric = 'event_processed_total' AND labels->>'service' = 'ota' AND labels->>'event_type' = 'it.batched' AND labels->>'status' = 'ok'")
# 300 events in one transaction: they reach the stream together
sql "SELECT isa.publish_event('it.batched', 'device_service', jsonb_build_object('n', g)) FROM generate_series(1, 300) g" >/dev/null
is "$(wait_for "SELECT count(*) FROM it_batch.applied" 300 20)" 300 "300 events applied"
is "$(sql "SELECT count(DISTINCT event_id) || ' ' || count(DISTINCT n) FROM it_batch.applied")" "300 300" "each once"
is "$(sql "SELECT sum(n_events) FROM it_batch.calls")" 300 "the calls' arrays hold the 300 events"
is "$(sql "SELECT max(n_events) > 1 AND count(*) < 300 FROM it_batch.calls")" t \
   "in fewer calls than events: batches ($(sql "SELECT count(*) || ' calls, up to ' || max(n_events) || ' events' FROM it_batch.calls"))"
is "$(sql "SELECT max(n_events) <= 100 FROM it_batch.calls")" t "no call holds more than the subscription's batch_size"
is "$(sql "SELECT bool_and(ns = (SELECT array_agg(x ORDER BY x) FROM unnest(ns) x)) FROM it_batch.calls")" t \
   "each call's events are in stream order"
is "$(sql "SELECT bool_and(current_event_null) FROM it_batch.calls")" t "isa.current_event() is NULL during a batch call"
is "$(sql "SELECT count(*) FROM isa.inbox WHERE service = 'ota' AND event_id IN (SELECT event_id FROM it_batch.applied)")" 300 "one inbox row per event"
ok_sum=$(sql "SELECT coalesce(sum(value), 0) - $ok_before FROM isa.metrics() WHERE metric = 'event_processed_total' AND labels->>'service' = 'ota' AND labels->>'event_type' = 'it.batched' AND labels->>'status' = 'ok'")
is "$ok_sum" 300 "event_processed_total{status=ok} counts each event of a batch"

# a poison among 50: the batch fails, the bridge applies them one by one
sql "TRUNCATE it_batch.calls, it_batch.applied" >/dev/null
poison=$(sql "WITH p AS MATERIALIZED (SELECT isa.publish_event('it.batched', 'device_service',
                                                   jsonb_build_object('n', g, 'poison', g = 1025)) AS id, g
                                         FROM generate_series(1001, 1050) g)
              SELECT id FROM p WHERE g = 1025")
is "$(wait_for "SELECT count(DISTINCT n) FROM it_batch.applied WHERE n <> 1025" 49 20)" 49 "the 49 good events of the poisoned batch are applied"
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$poison'" 1 20)" 1 "the poison alone is dead-lettered"
is "$(sql "SELECT reason || ' ' || error_sqlstate || ' ' || attempts FROM isa.dead_letters WHERE event_id = '$poison'")" \
   "handler_error 22012 3" "after max_deliver attempts, with the handler's SQLSTATE"
is "$(sql "SELECT count(*) FROM it_batch.applied WHERE n = 1025")" 0 "no attempt of the poison left an effect"
is "$(sql "SELECT count(*) FROM (SELECT n FROM it_batch.applied GROUP BY n HAVING count(*) > 1) d")" 0 "no good event applied twice"

dl=$(sql "SELECT id FROM isa.dead_letters WHERE event_id = '$poison'")
sql "UPDATE it_batch.broken SET yes = false" >/dev/null
is "$(sql "SELECT isa.replay_dead_letter($dl)")" t "after the fix, the dead letter replays (a one-event batch)"
is "$(sql "SELECT count(*) || ' ' || max(c.n_events) FROM it_batch.applied a, LATERAL (SELECT n_events FROM it_batch.calls ORDER BY call_id DESC LIMIT 1) c WHERE a.n = 1025")" \
   "1 1" "applied once, in a call of one event"
is "$(sql "SELECT isa.replay_dead_letter($dl)")" f "a second replay finds it in the inbox"

sql "SELECT isa.unsubscribe_from_events('ota', 'device_service.it.batched', 'it_batch.handle(isa.event[])');
     DELETE FROM isa.dead_letters WHERE service = 'ota';
     DELETE FROM isa.inbox WHERE service = 'ota' AND event_type = 'it.batched';
     DELETE FROM isa.outbox WHERE event_type IN ('it.batched') OR source = 'ota_service' AND event_type = 'event.dead_lettered';
     DELETE FROM isa.event_types WHERE event_type = 'it.batched';
     SET client_min_messages = warning; DROP SCHEMA it_batch CASCADE" >/dev/null
sql "ALTER SYSTEM RESET isa.retry_base" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
done_testing
