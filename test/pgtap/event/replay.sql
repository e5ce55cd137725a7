-- Replay (docs/services/event.md, "Replay"): isa.apply_event applies one
-- event through a subscription's inbox (skipped when applied already, unless
-- forced); event.replay_to_subscription re-delivers stored events to one
-- handler in their original order (occurred_at, id); event.replay_to_subject
-- writes them to the event service's outbox for replay.<request>.<subject>
-- with their original envelope; only isa_admin and isa_compliance may
-- replay.  The events are put into event.events directly, in 2001-03/04:
-- every replay is bounded to [2001-01-01, 2001-06-01), which holds no other.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(49);

-- ---------------------------------------------------------------- a projection
-- A test projection of the event service's: the handler records what it got,
-- as whom, and which event isa.current_event() named meanwhile.
CREATE SCHEMA pgtap_replay;
CREATE TABLE pgtap_replay.applied (
    n          bigint GENERATED ALWAYS AS IDENTITY,
    handler    text,
    event_id   uuid,
    amount     int,
    run_as     name,
    current_id uuid
);
CREATE FUNCTION pgtap_replay.on_event(e isa.event) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'fail' THEN
        RAISE EXCEPTION 'the handler fails on %', e.id USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO pgtap_replay.applied (handler, event_id, amount, run_as, current_id)
    VALUES ('one', e.id, (e.data->>'amount')::int, current_user, (isa.current_event()).id);
END
$$;
CREATE FUNCTION pgtap_replay.on_batch(es isa.event[]) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO pgtap_replay.applied (handler, event_id, amount, run_as)
    SELECT 'batch', e.id, (e.data->>'amount')::int, current_user FROM unnest(es) e;
$$;
GRANT USAGE ON SCHEMA pgtap_replay TO isa_svc_event;
GRANT INSERT ON pgtap_replay.applied TO isa_svc_event;
GRANT EXECUTE ON FUNCTION pgtap_replay.on_event(isa.event), pgtap_replay.on_batch(isa.event[]) TO isa_svc_event;

CREATE TEMP TABLE subs AS
SELECT isa.subscribe_to_events('event', 'wallet_service.tokens.*', 'pgtap_replay.on_event(isa.event)'::regprocedure) AS one,
       isa.subscribe_to_events('event', 'wallet_service.>', 'pgtap_replay.on_batch(isa.event[])'::regprocedure,
                               '{"versions": [1]}') AS batch;
GRANT SELECT ON subs TO PUBLIC;

-- Stored events: ids out of time order on purpose (the original order is
-- occurred_at, then id), one of another subject, one of major version 2.
CREATE TEMP TABLE stored (label text, id uuid, occurred_at timestamptz, event_type text, source text,
                          version text, data jsonb);
INSERT INTO stored VALUES
    ('a', 'f0000000-0000-7000-8000-00000000000a', '2001-03-01 10:00Z', 'tokens.deducted', 'wallet_service', '1.0.0', '{"amount": 1}'),
    ('b', '00000000-0000-7000-8000-00000000000b', '2001-03-01 11:00Z', 'tokens.credited', 'wallet_service', '1.0.0', '{"amount": 2}'),
    ('c', '50000000-0000-7000-8000-00000000000c', '2001-03-01 11:00Z', 'tokens.deducted', 'wallet_service', '1.2.0', '{"amount": 3}'),
    ('d', '10000000-0000-7000-8000-00000000000d', '2001-03-02 09:00Z', 'user.created', 'account_service', '1.0.0', '{"amount": 4}'),
    ('e', '20000000-0000-7000-8000-00000000000e', '2001-03-03 09:00Z', 'tokens.deducted', 'wallet_service', '2.0.0', '{"amount": 5}'),
    ('f', '30000000-0000-7000-8000-00000000000f', '2001-04-01 09:00Z', 'tokens.deducted', 'wallet_service', '1.0.0', '{"amount": 6}');
-- 2001: no other event is stored then.  The store makes monthly partitions
-- from the current month on; the stand-in's one partition covers 2001.
DO $$
BEGIN
    CREATE TABLE pgtap_replay.events_2001 PARTITION OF event.events
        FOR VALUES FROM ('2001-01-01 00:00Z') TO ('2002-01-01 00:00Z');
EXCEPTION WHEN invalid_object_definition THEN   -- overlaps a partition that holds 2001
    NULL;
END
$$;
INSERT INTO event.events (id, occurred_at, event_type, source, subject, version, data, metadata)
SELECT id, occurred_at, event_type, source, source || '.' || event_type, version, data,
       jsonb_build_object('correlation_id', id)
  FROM stored;
CREATE FUNCTION pg_temp.ev(l text) RETURNS isa.event LANGUAGE sql AS $$
    SELECT ROW(id, event_type, source, version, occurred_at, data, jsonb_build_object('correlation_id', id))::isa.event
      FROM stored WHERE label = l
$$;

-- ---------------------------------------------------------------- isa.apply_event
SELECT is(isa.apply_event((SELECT one FROM subs), pg_temp.ev('a')), true,
          'apply_event applies an event the subscription has not seen: true');
SELECT is((SELECT count(*) FROM event.inbox i, isa.subscriptions s
            WHERE s.id = (SELECT one FROM subs) AND i.consumer = s.durable_name
              AND i.event_id = (SELECT id FROM stored WHERE label = 'a')), 1::bigint,
          'through the subscription''s inbox');
SELECT is((SELECT run_as FROM pgtap_replay.applied), 'isa_svc_event'::name,
          'the handler ran as the subscription''s owner role');
SELECT is((SELECT current_id FROM pgtap_replay.applied), (SELECT id FROM stored WHERE label = 'a'),
          'with isa.current_event() set to the event');
SELECT is(isa.apply_event((SELECT one FROM subs), pg_temp.ev('a')), false,
          'the same event again is skipped: false');
SELECT is((SELECT count(*) FROM pgtap_replay.applied), 1::bigint, 'and the handler was not called');
SELECT is(isa.apply_event((SELECT one FROM subs), pg_temp.ev('a'), true), true,
          'force applies it again although the inbox had it');
SELECT is((SELECT count(*) FROM pgtap_replay.applied), 2::bigint, 'the handler was called a second time');
SELECT is(isa.apply_event((SELECT batch FROM subs), pg_temp.ev('a')), true,
          'a batch handler gets the event as a one-element batch');
SELECT is((SELECT count(*) FROM pgtap_replay.applied WHERE handler = 'batch'), 1::bigint, 'once');

SELECT throws_ok('SELECT isa.apply_event(-42, pg_temp.ev(''a''))', 'P0002', 'subscription -42 does not exist',
                 'an unknown subscription: P0002');
SELECT throws_ok(format('SELECT isa.apply_event(%s, pg_temp.ev(''d''))', (SELECT one FROM subs)), '22023', NULL,
                 'an event outside the subscription''s filter: 22023');
SELECT throws_ok(format('SELECT isa.apply_event(%s, pg_temp.ev(''e''))', (SELECT batch FROM subs)), '22023', NULL,
                 'a major version the subscription does not take: 22023');
SELECT throws_ok(format('SELECT isa.apply_event(%s, NULL)', (SELECT one FROM subs)), '22004', 'event must not be null',
                 'a NULL event: 22004');
SELECT throws_ok(format('SELECT isa.apply_event(%s, ROW(NULL, ''tokens.deducted'', ''wallet_service'', ''1.0.0'', now(), ''{}'', ''{}'')::isa.event)',
                        (SELECT one FROM subs)), '22023', 'event id must not be null', 'an event without id: 22023');

-- ---------------------------------------------------------------- replay_to_subscription
DELETE FROM pgtap_replay.applied;
SELECT is((SELECT (seen, applied, skipped)::text FROM event.replay_to_subscription((SELECT one FROM subs), '2001-01-01', '2001-06-01')),
          '(5,4,1)',
          'replay_to_subscription: the 5 stored events the filter takes, 4 applied, the one applied before skipped');
SELECT results_eq('SELECT event_id FROM pgtap_replay.applied ORDER BY n',
                  $$SELECT id FROM stored WHERE label IN ('b', 'c', 'e', 'f') ORDER BY occurred_at, id$$,
                  'in their original order (occurred_at, id), not in id order');
SELECT is((SELECT (seen, applied, skipped)::text FROM event.replay_to_subscription((SELECT one FROM subs), '2001-01-01', '2001-06-01')),
          '(5,0,5)', 'a second replay applies nothing: all skipped');
DELETE FROM pgtap_replay.applied;
SELECT is((SELECT (seen, applied, skipped)::text
             FROM event.replay_to_subscription((SELECT one FROM subs), '2001-01-01', '2001-06-01', force => true)),
          '(5,5,0)', 'force applies all again');
SELECT results_eq('SELECT event_id FROM pgtap_replay.applied ORDER BY n',
                  $$SELECT id FROM stored WHERE label IN ('a', 'b', 'c', 'e', 'f') AND source = 'wallet_service'
                     ORDER BY occurred_at, id$$,
                  'in the original order');
SELECT is((SELECT (seen, applied, skipped)::text
             FROM event.replay_to_subscription((SELECT one FROM subs), '2001-03-01 10:30Z', '2001-04-01', 'tokens.deducted', true)),
          '(2,2,0)', 'only [from_time, to_time) and the event types of the filter');
DELETE FROM pgtap_replay.applied;
SELECT is((SELECT (seen, applied, skipped)::text FROM event.replay_to_subscription((SELECT batch FROM subs), '2001-01-01', '2001-06-01')),
          '(4,3,1)', 'a batch subscription: its major versions only (not e, 2.0.0), a applied before');
SELECT results_eq('SELECT event_id FROM pgtap_replay.applied ORDER BY n',
                  $$SELECT id FROM stored WHERE label IN ('b', 'c', 'f') ORDER BY occurred_at, id$$,
                  'in the original order too');

UPDATE event.events SET data = '{"fail": true}' WHERE id = (SELECT id FROM stored WHERE label = 'c');
SELECT throws_ok(format('SELECT event.replay_to_subscription(%s, ''2001-01-01'', ''2001-06-01'', NULL, true)', (SELECT one FROM subs)),
                 'P0001', NULL, 'a handler''s error is the replay''s error');
UPDATE event.events SET data = '{"amount": 3}' WHERE id = (SELECT id FROM stored WHERE label = 'c');

SELECT is((SELECT (kind, events, applied, force, requested_by = session_user)::text FROM event.replays
            WHERE subscription_id = (SELECT one FROM subs) ORDER BY request_id DESC LIMIT 1),
          '(subscription,2,2,t,t)', 'event.replays records each replay: what, how many, who');
SELECT throws_ok('SELECT event.replay_to_subscription(-42, ''2001-01-01'', ''2001-06-01'')', 'P0002', 'subscription -42 does not exist',
                 'replay to an unknown subscription: P0002');
SELECT throws_ok(format('SELECT event.replay_to_subscription(%s, ''2001-05-01'', ''2001-04-01'')', (SELECT one FROM subs)),
                 '22023', 'from_time must be before to_time', 'an empty range: 22023');
SELECT throws_ok(format('SELECT event.replay_to_subscription(%s, NULL, ''2001-04-01'')', (SELECT one FROM subs)),
                 '22004', 'from_time must not be null', 'no from_time: 22004');
SELECT throws_ok(format('SELECT event.replay_to_subscription(%s, ''2001-01-01'', ''2001-06-01'', ''tokens.>.x'')', (SELECT one FROM subs)),
                 '22023', NULL, 'a bad event type filter: 22023');

-- ---------------------------------------------------------------- replay_to_subject
CREATE TEMP TABLE req AS
SELECT event.replay_to_subject('2001-01-01', '2001-06-01', 'tokens.*') AS id, 0 AS k;
GRANT SELECT ON req TO PUBLIC;
SELECT is((SELECT count(*) FROM event.outbox WHERE subject LIKE 'replay.' || (SELECT id FROM req) || '.%'), 5::bigint,
          'replay_to_subject writes one outbox row per stored event the filter takes');
SELECT is((SELECT count(*) FROM event.outbox o JOIN stored s ON s.id = o.envelope_id
            WHERE o.subject = 'replay.' || (SELECT id FROM req) || '.' || s.source || '.' || s.event_type
              AND o.envelope_source = s.source AND o.source = 'event_service'
              AND o.event_type = s.event_type AND o.version = s.version AND o.occurred_at = s.occurred_at
              AND o.data = s.data AND o.metadata = jsonb_build_object('correlation_id', s.id)
              AND o.published_at IS NULL),
          5::bigint,
          'on replay.<request id>.<original subject>, with the original envelope: id, source, type, version, time, data, metadata');
SELECT results_eq($$SELECT envelope_id FROM event.outbox WHERE subject LIKE 'replay.' || (SELECT id FROM req) || '.%' ORDER BY id$$,
                  $$SELECT id FROM stored WHERE event_type LIKE 'tokens.%' ORDER BY occurred_at, id$$,
                  'the rows'' own ids (the publishing order) follow the original order (occurred_at, id)');
SELECT is((SELECT (kind, events, event_type, requested_by = session_user)::text FROM event.replays
            WHERE request_id = (SELECT id FROM req)),
          '(subject,5,tokens.*,t)', 'event.replays records the request and its number of events');
SELECT is((SELECT count(*) FROM event.outbox WHERE envelope_id = id), 0::bigint,
          'and differ from the event ids: the Nats-Msg-Id is distinct per replay');
INSERT INTO req SELECT event.replay_to_subject('2001-03-01 10:30Z', '2001-04-01', source => 'wallet_service'), 1;
SELECT is((SELECT count(*) FROM event.outbox WHERE subject LIKE 'replay.' || (SELECT id FROM req WHERE k = 1) || '.%'), 3::bigint,
          'a second request: its own id, the range and the source given');
SELECT is((SELECT count(DISTINCT id) FROM event.outbox WHERE split_part(subject, '.', 2)::uuid IN (SELECT id FROM req)), 8::bigint,
          'every replayed row has an id of its own');
SELECT is((SELECT count(*) FROM isa.outbox
            WHERE (id IN (SELECT id FROM stored) OR envelope_id IN (SELECT id FROM stored))
              AND (subject IS NULL OR subject NOT LIKE 'replay.%')), 0::bigint,
          'nothing is written for the original subjects');
SELECT throws_ok($$INSERT INTO event.outbox (id, source, event_type, version, occurred_at, data, metadata, subject, envelope_id, envelope_source)
                   VALUES (isa.uuid_v7(), 'event_service', 'tokens.deducted', '1.0.0', now(), '{}', '{}',
                           'wallet_service.tokens.deducted', isa.uuid_v7(), 'wallet_service')$$,
                 '23514', NULL, 'an outbox row may not be overridden to any subject but replay.>');
SELECT has_trigger('event', 'outbox', 'outbox_replay_written', 'a replay''s commit wakes the bridge');
SELECT throws_ok($$SELECT event.replay_to_subject('2001-05-01', '2001-04-01')$$, '22023', 'from_time must be before to_time',
                 'replay_to_subject: an empty range: 22023');

-- ---------------------------------------------------------------- who may replay
SELECT ok(has_function_privilege('isa_admin', 'event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'event.replay_to_subject(timestamptz, timestamptz, text, text)', 'EXECUTE')
          AND has_function_privilege('isa_compliance', 'event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean)', 'EXECUTE')
          AND has_function_privilege('isa_compliance', 'event.replay_to_subject(timestamptz, timestamptz, text, text)', 'EXECUTE'),
          'isa_admin and isa_compliance may replay');
SELECT is((SELECT count(*) FROM unnest(ARRAY['isa_app', 'isa_app_event', 'isa_app_admin', 'isa_service', 'isa_bridge', 'isa_svc_wallet']) r
            WHERE has_function_privilege(r, 'event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean)', 'EXECUTE')
               OR has_function_privilege(r, 'event.replay_to_subject(timestamptz, timestamptz, text, text)', 'EXECUTE')
               OR has_function_privilege(r, 'isa.apply_event(bigint, isa.event, boolean)', 'EXECUTE')),
          0::bigint, 'no other role may replay, nor apply an event');
-- as a login of the role would: session_user is who forces
SET LOCAL SESSION AUTHORIZATION isa_compliance;
SELECT lives_ok('SELECT event.replay_to_subject(''2001-03-01'', ''2001-03-02'')', 'isa_compliance starts a replay');
SELECT is((SELECT count(*) FROM event.replays WHERE request_id IN (SELECT id FROM req)), 2::bigint,
          'and reads event.replays');
SELECT is((SELECT (seen, applied)::text FROM event.replay_to_subscription((SELECT one FROM subs), '2001-01-01', '2001-06-01')),
          '(5,0)', 'and replays to a subscription what it has not applied');
SELECT throws_ok(format('SELECT event.replay_to_subscription(%s, ''2001-01-01'', ''2001-06-01'', force => true)', (SELECT one FROM subs)),
                 '42501', 'only isa_admin may force a replay', 'but may not force one: 42501');
SELECT throws_ok(format('SELECT isa.apply_event(%s, NULL)', (SELECT one FROM subs)), '42501', NULL,
                 'nor apply an event itself');
RESET SESSION AUTHORIZATION;
SET LOCAL ROLE isa_admin;
SELECT is((SELECT applied FROM event.replay_to_subscription((SELECT one FROM subs), '2001-01-01', '2001-06-01', force => true)),
          5::bigint, 'isa_admin replays to a subscription');
RESET ROLE;
SET LOCAL ROLE isa_app;
SELECT throws_ok('SELECT event.replay_to_subject(''2001-03-01'', ''2001-03-02'')', '42501', NULL, 'isa_app may not: 42501');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
