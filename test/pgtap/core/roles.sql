-- roles.sql — least privilege in the database (docs/install.md, "Roles";
-- issue 12, §3).  Each service's schema and objects belong to its own role
-- isa_svc_<service>, never a superuser: its SECURITY DEFINER functions and
-- its handlers run as it, and only it publishes its source.  Applications get
-- a role per service (isa_app_<service>, isa_app being their union for
-- isa-httpd) that executes that service's API and reads no table; the
-- administration functions are isa_app_admin's alone.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(30);

-- The built services: those with functions of their own in their schema.
CREATE TEMP TABLE built ON COMMIT DROP AS
SELECT s.name, s.schema_name, s.source, isa.service_role(s.name) AS svc, isa.service_app_role(s.name) AS app
  FROM isa.services s
 WHERE s.schema_name IS NOT NULL
   AND EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = to_regnamespace(s.schema_name));
GRANT SELECT ON built TO PUBLIC;
-- Every application role: isa_app, isa_app_admin and one per built service.
CREATE TEMP TABLE app_roles ON COMMIT DROP AS
SELECT r.rolname FROM pg_roles r
 WHERE r.rolname IN ('isa_app', 'isa_app_admin') OR r.rolname IN (SELECT app FROM built);

-- ---------------------------------------------------------------- the roles
SELECT is((SELECT count(*) FROM built), 15::bigint, 'fifteen services are built');
SELECT is(isa.service_role('wallet'), 'isa_svc_wallet'::name, 'a service''s own role is isa_svc_<service>');
SELECT is(isa.service_app_role('wallet'), 'isa_app_wallet'::name, 'its applications'' role is isa_app_<service>');
SELECT is((SELECT array_agg(b.svc ORDER BY b.svc) FROM built b
            WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = b.svc AND NOT r.rolcanlogin AND NOT r.rolsuper
                                                         AND pg_has_role(r.oid, 'isa_service', 'MEMBER'))),
          NULL, 'every built service has its role: NOLOGIN, no superuser, a member of isa_service');
SELECT is((SELECT array_agg(b.app ORDER BY b.app) FROM built b
            WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = b.app AND NOT r.rolcanlogin AND NOT r.rolsuper)
               OR NOT pg_has_role('isa_app', b.app, 'MEMBER')),
          NULL, 'every built service has its applications'' role (NOLOGIN), and isa_app is their union');
SELECT ok(NOT pg_has_role('isa_app', 'isa_app_admin', 'MEMBER'), 'isa_app is no member of isa_app_admin');
SELECT ok(pg_has_role('isa_admin', 'isa_app_admin', 'MEMBER'), 'isa_admin, the operators, may administer (isa_app_admin)');
SELECT is((SELECT array_agg(r.rolname ORDER BY r.rolname) FROM pg_roles r
            WHERE r.rolname LIKE 'isa\_%' AND (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb)),
          NULL, 'no isa role is a superuser or may bypass row security, create roles or databases');

-- ---------------------------------------------------------------- who owns what
SELECT is((SELECT array_agg(b.schema_name ORDER BY 1) FROM built b
            WHERE (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = b.schema_name) <> b.svc::regrole),
          NULL, 'every service schema belongs to its service''s role');
SELECT is((SELECT array_agg(x.what ORDER BY 1) FROM (
             SELECT c.oid::regclass::text AS what, c.relowner AS owner, b.svc FROM pg_class c JOIN built b
                 ON c.relnamespace = to_regnamespace(b.schema_name)
              WHERE c.relname NOT IN ('outbox', 'inbox') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c', 'f', 'i')
                AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indexrelid = c.oid
                                   AND i.indrelid::regclass::text IN (b.schema_name || '.outbox', b.schema_name || '.inbox'))
             UNION ALL
             SELECT p.oid::regprocedure::text, p.proowner, b.svc FROM pg_proc p JOIN built b
                 ON p.pronamespace = to_regnamespace(b.schema_name)
             UNION ALL
             SELECT t.oid::regtype::text, t.typowner, b.svc FROM pg_type t JOIN built b
                 ON t.typnamespace = to_regnamespace(b.schema_name)
              WHERE t.typtype <> 'b' AND t.typname NOT IN ('outbox', 'inbox', '_outbox', '_inbox')) x
            WHERE x.owner <> x.svc::regrole),
          NULL, 'every table, view, sequence, index, type and function of a service belongs to its service''s role');
SELECT is((SELECT array_agg(c.oid::regclass::text ORDER BY 1) FROM pg_class c JOIN built b
               ON c.relnamespace = to_regnamespace(b.schema_name)
            WHERE c.relname IN ('outbox', 'inbox')
              AND c.relowner <> (SELECT extowner FROM pg_extension WHERE extname = 'isa')),
          NULL, 'the outbox and inbox partitions stay the extension owner''s (a service''s role cannot forge or drop its own events)');
SELECT is((SELECT array_agg(s.durable_name ORDER BY 1) FROM isa.subscriptions s
            WHERE s.owner_role <> isa.service_role(s.service)
               OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = s.owner_role) IS DISTINCT FROM false),
          NULL, 'every subscription''s handler runs as its service''s role, none as a superuser');

-- ---------------------------------------------------------------- what the application roles may not do
CREATE FUNCTION pg_temp.refusals(role name) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    s record;
    refused text[] := '{}';
BEGIN
    -- isa.publish_event for each internal source, as role: each must be 42501
    FOR s IN SELECT t.source, min(t.event_type) AS event_type FROM isa.event_types t
               JOIN isa.services v ON v.source = t.source AND v.schema_name IS NOT NULL
              GROUP BY t.source LOOP
        BEGIN
            EXECUTE format('SET LOCAL ROLE %I', role);
            PERFORM isa.publish_event(s.event_type, s.source, '{}');
            refused := refused || (s.source || ' published');
        EXCEPTION WHEN insufficient_privilege THEN
            refused := refused || (s.source || ' 42501');
        END;
        RESET ROLE;
    END LOOP;
    RETURN refused;
END
$$;
SELECT is((SELECT array_agg(r.rolname || ': ' || x ORDER BY 1) FROM app_roles r, unnest(pg_temp.refusals(r.rolname)) x
            WHERE x NOT LIKE '% 42501'),
          NULL, 'no application role (isa_app, isa_app_admin, isa_app_<service>) may publish for any internal source: 42501');
SELECT is((SELECT count(*) FROM app_roles r, unnest(pg_temp.refusals(r.rolname)) x),
          (SELECT count(*) FROM app_roles) * (SELECT count(*) FROM isa.services WHERE schema_name IS NOT NULL),
          '(every application role, every internal source tried)');
SELECT is((SELECT array_agg(r.rolname || ' ' || c.oid::regclass::text ORDER BY 1) FROM app_roles r, pg_class c
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND (c.relnamespace IN (SELECT to_regnamespace(schema_name) FROM isa.services WHERE schema_name IS NOT NULL)
                   OR c.oid IN ('isa.outbox'::regclass, 'isa.inbox'::regclass, 'isa.subscriptions'::regclass,
                                'isa.dead_letters'::regclass))
              AND (has_table_privilege(r.rolname, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
                   OR (c.relkind = 'S' AND has_sequence_privilege(r.rolname, c.oid, 'USAGE, SELECT, UPDATE')))),
          NULL, 'no application role may read or write any table of a service, nor isa''s outbox, inbox, subscriptions or dead letters');
SELECT is((SELECT array_agg(DISTINCT p.pronamespace::regnamespace::text) FROM pg_proc p
            WHERE p.pronamespace IN (SELECT to_regnamespace(schema_name) FROM built WHERE name <> 'wallet')
              AND has_function_privilege('isa_app_wallet', p.oid, 'EXECUTE')),
          NULL, 'isa_app_wallet executes no function of another service');
SELECT ok(has_function_privilege('isa_app_wallet', 'wallet.deduct(uuid,bigint,text,text,text,text)', 'EXECUTE')
          AND NOT has_function_privilege('isa_app_wallet', 'wallet.add(uuid,bigint,text,text,text,text)', 'EXECUTE'),
          'isa_app_wallet executes wallet''s API but wallet.add');

CREATE TEMP TABLE u ON COMMIT DROP AS
SELECT (account.create_user('roles-' || isa.uuid_v7() || '@example.com', 'Roles')).user_id AS id;
GRANT SELECT ON u TO PUBLIC;
DO $$ BEGIN PERFORM wallet.open_wallet(id), wallet.add(id, 100, 'roles-seed', 'manual') FROM u; END $$;

SET LOCAL ROLE isa_app_wallet;
SELECT throws_ok($$SELECT account.get_user((SELECT id FROM u))$$, '42501', 'permission denied for schema account',
                 'isa_app_wallet may not call account''s API (nor even look into its schema)');
SELECT lives_ok($$SELECT wallet.deduct((SELECT id FROM u), 10, 'roles-deduct', 'manual')$$,
                'isa_app_wallet deducts through wallet.deduct ...');
RESET ROLE;
SELECT is((SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.deducted'
              AND data ->> 'user_id' = (SELECT id::text FROM u)), 1::bigint,
          '... which, running as isa_svc_wallet, published its wallet_service event');

SET LOCAL ROLE isa_app;
SELECT throws_ok($$SELECT auth.set_password((SELECT id FROM u), 'a new password of enough length', NULL)$$,
                 '42501', 'permission denied for function set_password', 'isa_app may not set a password without the old one');
SELECT throws_ok($$SELECT wallet.add((SELECT id FROM u), 777777, 'roles-steal', 'manual')$$,
                 '42501', 'permission denied for function add', 'isa_app may not add tokens');
SELECT throws_ok($$SELECT authz.create_role('roles-admins', 'x', ARRAY['isa:admin'])$$,
                 '42501', 'permission denied for function create_role', 'isa_app may not define a role (isa:admin)');
SELECT throws_ok($$SELECT authz.bind_role((SELECT id FROM u), 'admin', NULL)$$,
                 '42501', 'permission denied for function bind_role', 'isa_app may not bind a role');
RESET ROLE;
SELECT ok(has_function_privilege('isa_app_admin', 'auth.set_password(uuid,text,uuid)', 'EXECUTE')
          AND has_function_privilege('isa_app_admin', 'wallet.add(uuid,bigint,text,text,text,text)', 'EXECUTE')
          AND has_function_privilege('isa_app_admin', 'authz.bind_role(uuid,text,uuid)', 'EXECUTE'),
          'isa_app_admin may (isa-httpd holds it for its admin routes)');

-- ---------------------------------------------------------------- secrets
SET LOCAL isa.stripe_webhook_secret = 'whsec_roles_test';
SET LOCAL ROLE isa_svc_payment;
SELECT throws_ok($$SELECT current_setting('isa.stripe_webhook_secret')$$, '42501', NULL,
                 'payment''s role may not read the superuser-only setting with current_setting ...');
SELECT is(payment._webhook_secret(), 'whsec_roles_test', '... but through payment._webhook_secret(), its own C reader');
RESET ROLE;
SELECT ok(NOT has_function_privilege('isa_app', 'payment._webhook_secret()', 'EXECUTE')
          AND NOT has_function_privilege('isa_admin', 'payment._webhook_secret()', 'EXECUTE')
          AND NOT has_function_privilege('isa_svc_wallet', 'payment._webhook_secret()', 'EXECUTE')
          AND NOT has_function_privilege('isa_app', 'storage._url_secret_setting()', 'EXECUTE')
          AND NOT has_function_privilege('isa_svc_payment', 'storage._url_secret_setting()', 'EXECUTE'),
          'nobody else executes the secret readers: not isa_app, isa_admin, nor another service''s role');

-- ---------------------------------------------------------------- a handler runs as its service's role
-- Replayed dead letters go through the bridge's own apply path (bridge/handler.c).
CREATE TABLE public.roles_seen (who name, event_id uuid);
CREATE FUNCTION public.roles_record(e isa.event) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.roles_seen VALUES (current_user, e.id) $$;
GRANT INSERT ON public.roles_seen TO isa_svc_wallet;
DO $$
BEGIN
    PERFORM isa.register_event_type('it.roles', 'billing_service', '1.0.0', 'roles test event');
    PERFORM isa.subscribe_to_events('wallet', 'billing_service.it.roles', 'public.roles_record(isa.event)',
                                    '{"deliver_policy": "new"}');
END
$$;
INSERT INTO isa.dead_letters (subscription_id, service, consumer, subject, event_id, event, reason, error_message, attempts)
SELECT s.id, 'wallet', s.durable_name, 'billing_service.it.roles', (x.j ->> 'id')::uuid, x.j, 'handler_error', 'test', 1
  FROM isa.subscriptions s,
       (SELECT jsonb_build_object('id', isa.uuid_v7(), 'event_type', 'it.roles', 'source', 'billing_service',
                                  'version', '1.0.0', 'timestamp', now(), 'data', '{}'::jsonb, 'metadata', '{}'::jsonb) AS j) x
 WHERE s.handler = 'public.roles_record(isa.event)'::regprocedure;
SELECT is(isa.replay_dead_letter((SELECT max(id) FROM isa.dead_letters WHERE subject = 'billing_service.it.roles')), true,
          'a dead letter of a wallet subscription is replayed');
SELECT is((SELECT array_agg(who) FROM public.roles_seen), ARRAY['isa_svc_wallet'::name],
          'its handler ran as isa_svc_wallet, not as the superuser who replayed it');

SELECT * FROM finish();
ROLLBACK;
