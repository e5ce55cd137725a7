# Fault: a poison event (its handler raises).  It is retried with growing
# delays, dead-lettered after max_deliver with its error and SQLSTATE, a
# <service>.event.dead_lettered event says so, the events behind it keep
# flowing, and a replay after the handler is fixed applies it exactly once.
source "$(dirname "$0")/lib.sh"

sql "ALTER SYSTEM SET isa.retry_base = '200ms'" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
sql "CREATE SCHEMA it_poison;
     CREATE TABLE it_poison.applied (event_id uuid, n int);
     CREATE TABLE it_poison.broken (yes boolean);
     INSERT INTO it_poison.broken VALUES (true);
     GRANT USAGE ON SCHEMA it_poison TO isa_svc_session;     -- the handler runs as session's role
     GRANT SELECT, INSERT ON it_poison.applied, it_poison.broken TO isa_svc_session;
     CREATE FUNCTION it_poison.handle(e isa.event) RETURNS void LANGUAGE plpgsql AS \$\$
     BEGIN
       INSERT INTO it_poison.applied VALUES (e.id, (e.data->>'n')::int);
       IF (e.data->>'poison')::boolean AND (SELECT yes FROM it_poison.broken) THEN
         RAISE EXCEPTION 'cannot handle event %', e.data->>'n' USING ERRCODE = '22012';
       END IF;
     END \$\$;
     SELECT isa.register_event_type('it.poisoned', 'device_service', '1.0.0', 'integration test event');
     SELECT isa.subscribe_to_events('session', 'device_service.it.poisoned', 'it_poison.handle(isa.event)',
                                    '{\"max_deliver\": 4, \"deliver_policy\": \"new\"}');" >/dev/null
is "$(subs_running)" "$(subs_want)/$(subs_want)" "the subscription runs"
sleep 0.5

poison=$(sql "SELECT isa.publish_event('it.poisoned', 'device_service', '{\"n\": 0, \"poison\": true}')")
sql "SELECT isa.publish_event('it.poisoned', 'device_service', jsonb_build_object('n', g)) FROM generate_series(1, 100) g" >/dev/null

is "$(wait_for "SELECT count(*) FROM it_poison.applied WHERE n > 0" 100 15)" 100 "the 100 events behind the poison are applied"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$poison'")" 0 "while the poison is still being retried"
is "$(wait_for "SELECT count(*) FROM isa.dead_letters WHERE event_id = '$poison'" 1 15)" 1 "after max_deliver the poison is dead-lettered"
is "$(sql "SELECT reason || ' ' || error_sqlstate || ' ' || attempts || ' ' || error_message FROM isa.dead_letters WHERE event_id = '$poison'")" \
   "handler_error 22012 4 cannot handle event 0" "with its reason, SQLSTATE, attempts and error"
# retries after 200, 400 and 800 ms: at least 1.4 s between publish and dead letter
is "$(sql "SELECT d.dead_at - o.occurred_at >= interval '1.4 s' FROM isa.dead_letters d JOIN isa.outbox o ON o.id = d.event_id WHERE d.event_id = '$poison'")" t \
   "retries waited isa.retry_base x 2^(n-1): 0.2 + 0.4 + 0.8 s at least"
is "$(sql "SELECT count(*) FROM it_poison.applied WHERE n = 0")" 0 "no attempt of the poison left an effect"
is "$(sql "SELECT value FROM isa.metrics() WHERE metric = 'event_processed_total' AND labels->>'service' = 'session' AND labels->>'status' = 'retry'")" 3 \
   "event_processed_total{status=retry} counts the three retries"
dl=$(sql "SELECT id FROM isa.dead_letters WHERE event_id = '$poison'")
is "$(wait_for "SELECT count(*) FROM isa.outbox WHERE source = 'session_service' AND event_type = 'event.dead_lettered' AND data->>'dead_letter_id' = '$dl' AND metadata->>'causation_id' = '$poison'" 1 5)" 1 \
   "session_service.event.dead_lettered was published, caused by the poison"

is "$(sqlstate "SELECT isa.replay_dead_letter($dl)")" 22012 "replaying while the handler is still broken raises its error"
is "$(sql "SELECT replay_count FROM isa.dead_letters WHERE id = $dl")" 0 "and leaves the dead letter as it was"
sql "UPDATE it_poison.broken SET yes = false" >/dev/null
is "$(sql "SELECT isa.replay_dead_letter($dl)")" t "after the fix, replay applies it"
is "$(sql "SELECT count(*) FROM it_poison.applied WHERE n = 0")" 1 "exactly once"
is "$(sql "SELECT isa.replay_dead_letter($dl)")" f "a second replay finds it in the inbox and applies nothing"
is "$(sql "SELECT count(*) FROM it_poison.applied WHERE n = 0")" 1 "still once"
is "$(sql "SELECT replay_count || ' ' || (replayed_at IS NOT NULL) FROM isa.dead_letters WHERE id = $dl")" "2 true" "the dead letter records its replays"
is "$(sqlstate "SELECT isa.replay_dead_letter(-1)")" P0002 "replaying an unknown dead letter: P0002"
is "$(sql "SELECT count(*) FROM it_poison.applied")" 101 "in all: 101 effects for 101 events"

sql "SELECT isa.unsubscribe_from_events('session', 'device_service.it.poisoned', 'it_poison.handle(isa.event)');
     DELETE FROM isa.dead_letters WHERE service = 'session';
     DELETE FROM isa.outbox WHERE event_type IN ('it.poisoned') OR source = 'session_service';
     DELETE FROM isa.event_types WHERE event_type = 'it.poisoned';
     SET client_min_messages = warning; DROP SCHEMA it_poison CASCADE" >/dev/null
sql "ALTER SYSTEM RESET isa.retry_base" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
done_testing
