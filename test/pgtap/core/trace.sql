-- trace.sql — tracing (docs/tracing.md): an event published inside a handler
-- inherits the handled event's correlation id and W3C trace id with a span of
-- its own; an HTTP request's UUID id and traceparent (request.correlation_id,
-- request.traceparent, set by isa.http_begin) do the same for the events the
-- request publishes; isa.trace(correlation_id) returns the causation tree.
-- Handlers run through isa.replay_dead_letter, the bridge's own apply path
-- (bridge/handler.c), which sets isa.current_event().
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(34);

SELECT isa.register_event_type('it.trace.root', 'billing_service', '1.0.0', 'trace test: a root');
SELECT isa.register_event_type('it.trace.child', 'wallet_service', '1.0.0', 'trace test: a child');
SELECT isa.register_event_type('it.trace.outside', 'external', '1.0.0', 'trace test: an outside root');

-- wallet's handler publishes one child per handled event
CREATE FUNCTION public.trace_child(e isa.event) RETURNS void LANGUAGE sql
    AS $$ SELECT isa.publish_event('it.trace.child', 'wallet_service', jsonb_build_object('of', e.id)) $$;
GRANT EXECUTE ON FUNCTION public.trace_child(isa.event) TO isa_svc_wallet;
DO $$
BEGIN
    PERFORM isa.subscribe_to_events('wallet', 'billing_service.it.trace.root', 'public.trace_child(isa.event)',
                                    '{"deliver_policy": "new"}');
    PERFORM isa.subscribe_to_events('wallet', 'external.it.trace.outside', 'public.trace_child(isa.event)',
                                    '{"deliver_policy": "new"}');
END
$$;

-- apply(envelope): the envelope as a dead letter of the subscription of its subject, replayed
CREATE FUNCTION pg_temp.apply(j jsonb) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO isa.dead_letters (subscription_id, service, consumer, subject, event_id, event, reason, error_message, attempts)
    SELECT s.id, 'wallet', s.durable_name, (j ->> 'source') || '.' || (j ->> 'event_type'), (j ->> 'id')::uuid, j,
           'handler_error', 'trace test', 1
      FROM isa.subscriptions s
     WHERE s.handler = 'public.trace_child(isa.event)'::regprocedure
       AND s.subject_filter = (j ->> 'source') || '.' || (j ->> 'event_type');
    SELECT isa.replay_dead_letter(currval(pg_get_serial_sequence('isa.dead_letters', 'id')));
$$;
-- the envelope of an outbox row
CREATE FUNCTION pg_temp.envelope(event_id uuid) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', o.id, 'event_type', o.event_type, 'source', o.source, 'version', o.version,
                              'timestamp', o.occurred_at, 'data', o.data, 'metadata', o.metadata)
      FROM isa.outbox o WHERE o.id = event_id
$$;
CREATE FUNCTION pg_temp.child_of(parent uuid) RETURNS jsonb LANGUAGE sql AS $$
    SELECT o.metadata || jsonb_build_object('id', o.id) FROM wallet.outbox o
     WHERE o.event_type = 'it.trace.child' AND o.data ->> 'of' = parent::text
$$;
CREATE FUNCTION pg_temp.hex(id uuid) RETURNS text LANGUAGE sql AS $$ SELECT replace(id::text, '-', '') $$;

-- ---------------------------------------------------------------- a root
CREATE TEMP TABLE ids (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
INSERT INTO ids SELECT 'root', isa.publish_event('it.trace.root', 'billing_service', '{}');
SELECT is((SELECT o.metadata ->> 'traceparent' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'root'),
          (SELECT '00-' || pg_temp.hex(id) || '-' || right(pg_temp.hex(id), 16) || '-01' FROM ids WHERE label = 'root'),
          'an event without parent gets a fresh traceparent: its own id as trace id, its id''s last 16 hex digits as span id, sampled');
SELECT is((SELECT o.metadata ->> 'correlation_id' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'root'),
          (SELECT id::text FROM ids WHERE label = 'root'),
          '... and its own id as correlation id');
SELECT is(isa.current_event(), NULL, 'outside a handler there is no handled event');

INSERT INTO ids SELECT 'given', isa.publish_event('it.trace.root', 'billing_service', '{}',
                                                 '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}');
SELECT is((SELECT o.metadata ->> 'traceparent' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'given'),
          '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00', 'a given traceparent is kept as it is');
SELECT throws_ok($$SELECT isa.publish_event('it.trace.root', 'billing_service', '{}', '{"traceparent": "00-ab-cd-01"}')$$,
                 '22023', 'event metadata.traceparent is not a W3C traceparent', 'a malformed traceparent raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('it.trace.root', 'billing_service', '{}',
                   '{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}')$$,
                 '22023', 'event metadata.traceparent is not a W3C traceparent', 'an all-zero trace id raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('it.trace.root', 'billing_service', '{}',
                   '{"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}')$$,
                 '22023', 'event metadata.traceparent is not a W3C traceparent', 'upper-case hex raises 22023');
SELECT throws_ok($$SELECT isa.publish_event('it.trace.root', 'billing_service', '{}',
                   '{"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}')$$,
                 '22023', 'event metadata.traceparent is not a W3C traceparent', 'version ff raises 22023');

-- ---------------------------------------------------------------- inheritance in a handler
SELECT is(pg_temp.apply(pg_temp.envelope(id)), true, 'the root is applied by wallet''s handler') FROM ids WHERE label = 'root';
SELECT is(pg_temp.child_of(id) ->> 'correlation_id', id::text, 'the child inherits the correlation id')
  FROM ids WHERE label = 'root';
SELECT is(pg_temp.child_of(id) ->> 'causation_id', id::text, 'the child names the handled event as its cause')
  FROM ids WHERE label = 'root';
SELECT is(substr(pg_temp.child_of(id) ->> 'traceparent', 1, 36), '00-' || pg_temp.hex(id) || '-',
          'the child inherits the handled event''s trace id') FROM ids WHERE label = 'root';
SELECT is(substr(pg_temp.child_of(id) ->> 'traceparent', 37), right(pg_temp.hex((pg_temp.child_of(id) ->> 'id')::uuid), 16) || '-01',
          'with a span id of its own (its id''s last 16 hex digits) and the parent''s flags') FROM ids WHERE label = 'root';

SELECT is(pg_temp.apply(pg_temp.envelope(id)), true, 'an event with a given traceparent is applied') FROM ids WHERE label = 'given';
SELECT is(pg_temp.child_of(id) ->> 'traceparent',
          '00-4bf92f3577b34da6a3ce929d0e0e4736-' || right(pg_temp.hex((pg_temp.child_of(id) ->> 'id')::uuid), 16) || '-00',
          'its child keeps that trace id and its flags (00: not sampled)') FROM ids WHERE label = 'given';

-- an outside event with neither traceparent nor correlation id (a NATS client's)
INSERT INTO ids VALUES ('outside', isa.uuid_v7());
SELECT is(pg_temp.apply(jsonb_build_object('id', id, 'event_type', 'it.trace.outside', 'source', 'external',
                                           'version', '1.0.0', 'timestamp', now(), 'data', '{}'::jsonb,
                                           'metadata', '{}'::jsonb)), true,
          'an outside event without metadata is applied') FROM ids WHERE label = 'outside';
SELECT is(pg_temp.child_of(id) ->> 'traceparent',
          '00-' || pg_temp.hex(id) || '-' || right(pg_temp.hex((pg_temp.child_of(id) ->> 'id')::uuid), 16) || '-01',
          'a handled event without a traceparent counts as the root: its id is the trace id')
  FROM ids WHERE label = 'outside';
SELECT is(pg_temp.child_of(id) ->> 'correlation_id', id::text, '... and the correlation id') FROM ids WHERE label = 'outside';

-- ---------------------------------------------------------------- an HTTP request
INSERT INTO ids VALUES ('request', gen_random_uuid());
SELECT isa.http_begin(NULL, 'POST', '/v1/auth/signup', NULL, NULL,
                      jsonb_build_object('method', 'POST', 'path', '/v1/auth/signup', 'id', upper(id::text),
                                         'headers', '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'::jsonb),
                      false, 0)
  FROM ids WHERE label = 'request';
SELECT is(current_setting('request.correlation_id'), id::text, 'http_begin: a UUID request id is the request''s correlation id (lower case)')
  FROM ids WHERE label = 'request';
SELECT is(current_setting('request.traceparent'), '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          'http_begin: the traceparent header is the request''s traceparent');
INSERT INTO ids SELECT 'in request', isa.publish_event('it.trace.root', 'billing_service', '{}');
SELECT is((SELECT o.metadata ->> 'correlation_id' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'in request'),
          (SELECT id::text FROM ids WHERE label = 'request'),
          'an event the request publishes carries the request id as correlation id');
SELECT is((SELECT o.metadata ->> 'traceparent' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'in request'),
          (SELECT '00-0af7651916cd43dd8448eb211c80319c-' || right(pg_temp.hex(id), 16) || '-01' FROM ids WHERE label = 'in request'),
          '... and the request''s trace id, its parent span being the caller''s');
SELECT isa.http_begin(NULL, 'POST', '/v1/auth/signup', NULL, NULL,
                      '{"method": "POST", "path": "/v1/auth/signup", "id": "req-7", "headers": {"traceparent": "00-xyz"}}',
                      false, 0);
SELECT is(current_setting('request.correlation_id') || '|' || current_setting('request.traceparent'), '|',
          'a request id that is not a UUID and a malformed traceparent are ignored');
INSERT INTO ids SELECT 'in request 2', isa.publish_event('it.trace.root', 'billing_service', '{}');
SELECT is((SELECT o.metadata ->> 'correlation_id' FROM isa.outbox o JOIN ids USING (id) WHERE label = 'in request 2'),
          (SELECT id::text FROM ids WHERE label = 'in request 2'),
          '... its events correlate by their own id, as outside a request');
-- set by hand (any session may): only a UUID is taken, only a valid traceparent
SELECT set_config('request.correlation_id', repeat('x', 200), true),
       set_config('request.traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331', true);
INSERT INTO ids SELECT 'set by hand', isa.publish_event('it.trace.root', 'billing_service', '{}');
SELECT is((SELECT o.metadata FROM isa.outbox o JOIN ids USING (id) WHERE label = 'set by hand'),
          (SELECT jsonb_build_object('correlation_id', id::text,
                                     'traceparent', '00-' || pg_temp.hex(id) || '-' || right(pg_temp.hex(id), 16) || '-01')
             FROM ids WHERE label = 'set by hand'),
          'a request.correlation_id that is not a UUID and a malformed request.traceparent are ignored by publish_event');
SELECT set_config('request.correlation_id', '', true), set_config('request.traceparent', '', true),
       set_config('statement_timeout', '0', true);

-- ---------------------------------------------------------------- isa.trace
SELECT is((SELECT array_agg(t.depth || ' ' || coalesce(t.service, '-') || ' ' || t.event_type || ' ' ||
                            (t.parent IS NOT DISTINCT FROM r.id)::text ORDER BY t.depth)
             FROM isa.trace(r.id) t),
          ARRAY['0 billing_service it.trace.root false', '1 wallet_service it.trace.child true'],
          'isa.trace: the root, then the child one level deeper, its parent the root')
  FROM ids r WHERE r.label = 'root';
SELECT is((SELECT count(DISTINCT t.trace_id) || ' ' || min(t.trace_id) FROM isa.trace(r.id) t),
          '1 ' || pg_temp.hex(r.id), 'one trace id throughout the chain')
  FROM ids r WHERE r.label = 'root';
SELECT is((SELECT jsonb_array_length(t.consumers) || ' ' || (t.consumers -> 0 ->> 'service')
             FROM isa.trace(r.id) t WHERE t.depth = 0),
          '1 wallet', 'the root was consumed by one subscription, wallet''s')
  FROM ids r WHERE r.label = 'root';
SELECT ok((SELECT (t.consumers -> 0 ->> 'latency_ms')::numeric >= 0 AND (t.consumers -> 0 ->> 'consumed_at')::timestamptz >= t.occurred_at
             FROM isa.trace(r.id) t WHERE t.depth = 0),
          'its hop latency (consumed - occurred) is not negative')
  FROM ids r WHERE r.label = 'root';
SELECT is((SELECT array_agg(t.depth || ' ' || coalesce(t.service, '-') || ' ' || t.event_type || ' ' || t.trace_id ORDER BY t.depth)
             FROM isa.trace(r.id) t),
          ARRAY['0 - it.trace.outside ' || pg_temp.hex(r.id), '1 wallet_service it.trace.child ' || pg_temp.hex(r.id)],
          'an outside root, known only from the inbox, heads its tree (no service, its id as trace id)')
  FROM ids r WHERE r.label = 'outside';
-- the event store, when installed, adds what it kept (here a stand-in with
-- the columns isa.trace reads, when the event service is not built in)
INSERT INTO ids VALUES ('stored', isa.uuid_v7()), ('stored child', isa.uuid_v7()), ('stored chain', gen_random_uuid());
CREATE TEMP TABLE stand_in ON COMMIT DROP AS SELECT to_regclass('event.events') IS NULL AS made;
DO $$
BEGIN
    IF (SELECT made FROM stand_in) THEN
        CREATE SCHEMA IF NOT EXISTS event;
        CREATE TABLE event.events (id uuid, occurred_at timestamptz, event_type text, source text,
                                   causation_id uuid, correlation_id uuid);
        INSERT INTO event.events
        SELECT s.id, timestamptz '2026-01-02 03:04:05+00', 'usage.recorded.model', 'external', NULL, c.id FROM ids s, ids c
         WHERE s.label = 'stored' AND c.label = 'stored chain'
        UNION ALL
        SELECT k.id, timestamptz '2026-01-02 03:04:06+00', 'billing.calculated', 'billing_service', s.id, c.id FROM ids s, ids k, ids c
         WHERE s.label = 'stored' AND k.label = 'stored child' AND c.label = 'stored chain';
    END IF;
END
$$;
SET LOCAL timezone = 'UTC';
SELECT CASE WHEN NOT (SELECT made FROM stand_in)
            THEN skip('the event service is installed: its own tests cover what isa.trace reads of it')
            ELSE is((SELECT array_agg(t.depth || ' ' || t.service || ' ' || t.event_type || ' ' || t.occurred_at ORDER BY t.depth)
                       FROM ids c, isa.trace(c.id) t WHERE c.label = 'stored chain'),
                    ARRAY['0 external usage.recorded.model 2026-01-02 03:04:05+00',
                          '1 billing_service billing.calculated 2026-01-02 03:04:06+00'],
                    'events only the event store kept (an outside one among them) make a tree too, with their source and time')
       END;
SELECT is((SELECT count(*) FROM isa.trace(gen_random_uuid())), 0::bigint, 'an unknown correlation id has an empty tree');
SELECT throws_ok('SELECT * FROM isa.trace(NULL)', '22023', 'correlation_id must not be null', 'a NULL correlation id raises 22023');
SELECT ok(has_function_privilege('isa_compliance', 'isa.trace(uuid)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'isa.trace(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'isa.trace(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('isa_service', 'isa.trace(uuid)', 'EXECUTE'),
          'isa.trace is for isa_admin and isa_compliance only');

SELECT * FROM finish();
ROLLBACK;
