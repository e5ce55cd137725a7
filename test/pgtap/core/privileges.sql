-- privileges.sql — the roles of docs/architecture.md, "Security".  isa_app (applications) may
-- execute the API and read the catalogue but never touch an outbox, an inbox,
-- the subscriptions or the dead letters, nor publish as a service: events enter
-- an outbox only through isa.publish_event (which writes as its owner), and
-- only for the source of the caller's service role (isa_svc_<service>, as whom
-- the service's own functions run).  isa_bridge reads and marks the outbox and
-- publishes dead-letter events.  isa_admin operates everything.  (roles.sql:
-- the per-service roles.)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(51);

SELECT has_role('isa_admin',  'role isa_admin exists');
SELECT has_role('isa_app',    'role isa_app exists');
SELECT has_role('isa_bridge', 'role isa_bridge exists');

-- ---------------------------------------------------------------- function privileges (catalogue view)
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text)
             FROM pg_proc p
            WHERE p.pronamespace = 'isa'::regnamespace
              AND (p.proacl IS NULL
                   OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))),
          NULL,
          'no function of schema isa is executable by PUBLIC');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'isa'::regnamespace
                   AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['isa.uuid_v7()', 'isa.uuid_v7_time(uuid)',
                    'isa.publish_event(text,text,jsonb,jsonb)',
                    'isa.event_to_json(isa.event)', 'isa.event_from_json(jsonb)', 'isa._check_envelope(isa.event)',
                    'isa.is_valid_event_type(text)', 'isa.is_valid_version(text)',
                    'isa.is_valid_subject_filter(text)', 'isa.event_catalogue_markdown()',
                    'isa.current_event()',
                    'isa.hmac_sha256(bytea,bytea)', 'isa.secure_equals(bytea,bytea)', 'isa.random_bytes(integer)',
                    'isa.base64url_encode(bytea)', 'isa.base64url_decode(text)', 'isa.not_null(text,"any")',
                    'isa.iso_time(timestamp with time zone)', 'isa.is_uuid(text)',
                    'isa.http_route_catalogue()', 'isa.http_begin(jsonb,text,text,text,text,jsonb,boolean,integer)',
                    'isa.http_claims()', 'isa.http_routes_markdown()', 'isa.http_ready()', 'isa.http_metrics()'],
              'isa_app may execute exactly the envelope, id, publish, current-event, crypto, argument-check and isa-httpd functions');
SELECT ok(has_function_privilege('isa_admin', 'isa.subscribe_to_events(text,text,regprocedure,jsonb)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'isa.register_event_type(text,text,text,text,jsonb)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'isa.purge_retention()', 'EXECUTE'),
          'isa_admin may subscribe, register event types and purge');
SELECT is((SELECT proowner::regrole::text FROM pg_proc WHERE oid = 'isa.publish_event(text,text,jsonb,jsonb)'::regprocedure),
          (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'isa'),
          'isa.publish_event belongs to the extension owner, as whom it writes the outbox');
SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0', 'Tokens left a wallet.');

-- ---------------------------------------------------------------- as a service's role
-- publish_event runs as its owner (a superuser).  Whatever names its caller
-- can shadow in its session must not reach it: here a temporary type named
-- "text" with a cast from name, whose function would then run as the owner.
-- The caller is wallet's role, which may publish wallet_service events.
-- This must be the session's first publish (publish_event saves its plans).
SET LOCAL ROLE isa_svc_wallet;
CREATE TYPE pg_temp.text AS (x int);
CREATE FUNCTION pg_temp.hijack(n name) RETURNS pg_temp.text LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'hijack cast ran as %', current_user; END$$;
CREATE CAST (name AS pg_temp.text) WITH FUNCTION pg_temp.hijack(name);
DO $$
BEGIN
    PERFORM isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"marker": "hijack probe"}');
EXCEPTION WHEN OTHERS THEN
    PERFORM pg_catalog.set_config('isa_test.hijack_probe', SQLERRM, true);
END
$$;
DROP CAST (name AS pg_temp.text);
DROP FUNCTION pg_temp.hijack(name);
DROP TYPE pg_temp.text;
SELECT is(coalesce(current_setting('isa_test.hijack_probe', true), ''), '',
          'isa.publish_event does not run code its caller attached to its own temporary types (pinned search_path)');
SELECT lives_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"marker": "by isa_svc_wallet"}')$$,
                'wallet''s role (isa_svc_wallet) publishes wallet_service events through isa.publish_event');
RESET ROLE;

-- ---------------------------------------------------------------- as isa_app
SET LOCAL ROLE isa_app;
SELECT is(current_user, 'isa_app', 'the following statements run as isa_app');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{"marker": "by isa_app"}')$$,
                 '42501', 'role "isa_app" may not publish events of source "wallet_service"',
                 'isa_app may not publish as a service (it may call the service''s API, which does)');
SELECT throws_ok($$SELECT isa.publish_event('payment.completed', 'payment_service',
                                            '{"payment_id": "00000000-0000-7000-8000-000000000000", "amount": 777777}')$$,
                 '42501', NULL,
                 'the attack of issue 12: isa_app may not publish payment_service''s payment.completed');
SELECT is((SELECT count(*) FROM isa.event_types WHERE event_type = 'wallet.tokens.deducted'), 1::bigint,
          'isa_app can read the event catalogue (isa.event_types)');
SELECT is((SELECT count(*) FROM isa.services), 18::bigint,
          'isa_app can read the service registry (isa.services)');
SELECT lives_ok($$SELECT isa.event_from_json(isa.event_to_json(ROW(isa.uuid_v7(), 'a.b', 'x', '1.0.0', now(), '{}', '{}')::isa.event))$$,
                'isa_app can build and parse envelopes');

SELECT throws_ok($$SELECT 1 FROM isa.outbox$$,              '42501', NULL, 'isa_app cannot SELECT isa.outbox');
SELECT throws_ok($$INSERT INTO isa.outbox DEFAULT VALUES$$, '42501', NULL, 'isa_app cannot INSERT into isa.outbox');
SELECT throws_ok($$UPDATE isa.outbox SET published_at = now()$$, '42501', NULL, 'isa_app cannot UPDATE isa.outbox');
SELECT throws_ok($$DELETE FROM isa.outbox$$,                '42501', NULL, 'isa_app cannot DELETE from isa.outbox');

SELECT throws_ok($$SELECT 1 FROM wallet.outbox$$,              '42501', NULL, 'isa_app cannot SELECT a service outbox partition (wallet.outbox)');
SELECT throws_ok($$INSERT INTO wallet.outbox DEFAULT VALUES$$, '42501', NULL, 'isa_app cannot INSERT into wallet.outbox');
SELECT throws_ok($$UPDATE wallet.outbox SET published_at = now()$$, '42501', NULL, 'isa_app cannot UPDATE wallet.outbox');
SELECT throws_ok($$DELETE FROM wallet.outbox$$,                '42501', NULL, 'isa_app cannot DELETE from wallet.outbox');

SELECT throws_ok($$SELECT 1 FROM isa.inbox$$,              '42501', NULL, 'isa_app cannot SELECT isa.inbox');
SELECT throws_ok($$INSERT INTO isa.inbox DEFAULT VALUES$$, '42501', NULL, 'isa_app cannot INSERT into isa.inbox');
SELECT throws_ok($$UPDATE isa.inbox SET processed_at = now()$$, '42501', NULL, 'isa_app cannot UPDATE isa.inbox');
SELECT throws_ok($$DELETE FROM isa.inbox$$,                '42501', NULL, 'isa_app cannot DELETE from isa.inbox');

SELECT throws_ok($$SELECT 1 FROM isa.subscriptions$$,              '42501', NULL, 'isa_app cannot SELECT isa.subscriptions');
SELECT throws_ok($$INSERT INTO isa.subscriptions DEFAULT VALUES$$, '42501', NULL, 'isa_app cannot INSERT into isa.subscriptions');
SELECT throws_ok($$UPDATE isa.subscriptions SET options = '{}'$$,  '42501', NULL, 'isa_app cannot UPDATE isa.subscriptions');
SELECT throws_ok($$DELETE FROM isa.subscriptions$$,                '42501', NULL, 'isa_app cannot DELETE from isa.subscriptions');

SELECT throws_ok($$SELECT 1 FROM isa.dead_letters$$,              '42501', NULL, 'isa_app cannot SELECT isa.dead_letters');
SELECT throws_ok($$INSERT INTO isa.dead_letters DEFAULT VALUES$$, '42501', NULL, 'isa_app cannot INSERT into isa.dead_letters');
SELECT throws_ok($$UPDATE isa.dead_letters SET replay_count = 1$$, '42501', NULL, 'isa_app cannot UPDATE isa.dead_letters');
SELECT throws_ok($$DELETE FROM isa.dead_letters$$,                '42501', NULL, 'isa_app cannot DELETE from isa.dead_letters');

SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'isa.event_to_json(isa.event)')$$,
                 '42501', 'permission denied for function subscribe_to_events',
                 'isa_app cannot execute isa.subscribe_to_events');
SELECT throws_ok($$SELECT isa.register_event_type('wallet.tokens.minted', 'wallet_service', '1.0.0', 'x')$$,
                 '42501', 'permission denied for function register_event_type',
                 'isa_app cannot execute isa.register_event_type');
SELECT throws_ok($$SELECT * FROM isa.purge_retention()$$,
                 '42501', 'permission denied for function purge_retention',
                 'isa_app cannot execute isa.purge_retention');
SELECT throws_ok($$SELECT isa.register_service('rogue', 'rogue', 'rogue_service', 'x')$$,
                 '42501', 'permission denied for function register_service',
                 'isa_app cannot register a service');
SELECT throws_ok($$INSERT INTO isa.event_types (source, event_type, description) VALUES ('wallet_service', 'wallet.x.y', 'x')$$,
                 '42501', NULL,
                 'isa_app cannot write the event catalogue directly');
RESET ROLE;

SELECT is((SELECT array_agg(data ->> 'marker') FROM wallet.outbox WHERE data ->> 'marker' LIKE 'by %'), ARRAY['by isa_svc_wallet'],
          'the event isa_svc_wallet published is in wallet.outbox, isa_app''s is not');
SELECT is((SELECT metadata ? 'correlation_id' FROM wallet.outbox WHERE data ->> 'marker' = 'by isa_svc_wallet'), true,
          'the event isa_svc_wallet published got its default correlation_id');

-- ---------------------------------------------------------------- as isa_bridge
SET LOCAL ROLE isa_bridge;
SELECT is(current_user, 'isa_bridge', 'the following statements run as isa_bridge');
SELECT is((SELECT count(*) FROM isa.outbox WHERE published_at IS NULL AND data ->> 'marker' = 'by isa_svc_wallet'), 1::bigint,
          'isa_bridge can SELECT isa.outbox and sees the unpublished event');
SELECT lives_ok($$UPDATE isa.outbox SET published_at = now() WHERE published_at IS NULL AND data ->> 'marker' = 'by isa_svc_wallet'$$,
                'isa_bridge can mark outbox rows published');
SELECT lives_ok($$SELECT isa.publish_event('event.dead_lettered', 'wallet_service',
                    '{"dead_letter_id": 0, "service": "wallet", "consumer": "c", "subject": "s", "reason": "handler_error",
                      "error": "e", "sqlstate": "XX000", "attempts": 1}')$$,
                'isa_bridge may publish a consuming service''s event.dead_lettered');
SELECT throws_ok($$SELECT isa.publish_event('wallet.tokens.deducted', 'wallet_service', '{}')$$,
                 '42501', 'role "isa_bridge" may not publish events of source "wallet_service"',
                 'but no other event of that service');
SELECT throws_ok($$INSERT INTO isa.outbox (id, source, event_type, version, occurred_at, data, metadata)
                   VALUES (isa.uuid_v7(), 'wallet_service', 'wallet.tokens.deducted', '1.0.0', now(), '{}', '{}')$$,
                 '42501', NULL,
                 'isa_bridge cannot insert outbox rows behind isa.publish_event');
SELECT lives_ok($$SELECT count(*) FROM isa.subscriptions$$,
                'isa_bridge can read isa.subscriptions');
SELECT throws_ok($$DELETE FROM isa.subscriptions$$, '42501', NULL,
                 'isa_bridge cannot change isa.subscriptions');
RESET ROLE;

SELECT isnt((SELECT published_at FROM wallet.outbox WHERE data ->> 'marker' = 'by isa_svc_wallet'), NULL,
            'the row isa_bridge marked is published');

SELECT * FROM finish();
ROLLBACK;
