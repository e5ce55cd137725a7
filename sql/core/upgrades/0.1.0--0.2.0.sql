-- 0.1.0 → 0.2.0, core: a service is named after its schema ('authorization'
-- is now 'authz', 'order' is 'orders'), in isa.services, subscriptions, dead
-- letters and inbox rows.  The NATS sources (authorization_service,
-- order_service) are a published contract and do not change.
--
-- A subscription keeps its durable_name: it names the JetStream consumer and
-- keys the inbox rows of the events it applied, so renaming it would start a
-- new consumer at the beginning of the stream and apply again whatever the
-- inbox retention has already forgotten.  A fresh install derives the name
-- from the new service name; only the name differs (the upgrade test leaves
-- durable_name out of the comparison for that reason).
ALTER TABLE isa.subscriptions DROP CONSTRAINT subscriptions_service_fkey;
ALTER TABLE isa.dead_letters DROP CONSTRAINT dead_letters_service_fkey;
ALTER TABLE isa.inbox DETACH PARTITION authz.inbox;
ALTER TABLE isa.inbox DETACH PARTITION orders.inbox;

UPDATE isa.services s SET name = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE s.name = r.old;
UPDATE isa.subscriptions s SET service = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE s.service = r.old;
UPDATE isa.dead_letters d SET service = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE d.service = r.old;
UPDATE authz.inbox SET service = 'authz';
UPDATE orders.inbox SET service = 'orders';

ALTER TABLE isa.inbox ATTACH PARTITION authz.inbox FOR VALUES IN ('authz');
ALTER TABLE isa.inbox ATTACH PARTITION orders.inbox FOR VALUES IN ('orders');
ALTER TABLE isa.subscriptions ADD CONSTRAINT subscriptions_service_fkey
    FOREIGN KEY (service) REFERENCES isa.services (name);
ALTER TABLE isa.dead_letters ADD CONSTRAINT dead_letters_service_fkey
    FOREIGN KEY (service) REFERENCES isa.services (name);


-- A consumer applies an event only on its own subject, <source>.<event_type>;
-- any other is dead-lettered with reason subject_mismatch.
ALTER TABLE isa.dead_letters DROP CONSTRAINT dead_letters_reason_check;
ALTER TABLE isa.dead_letters ADD CONSTRAINT dead_letters_reason_check
    CHECK (reason IN ('handler_error', 'invalid_envelope', 'unsupported_version', 'subject_mismatch'));
UPDATE isa.event_types
   SET data_fields = jsonb_set(data_fields, '{reason,description}',
                               '"handler_error, invalid_envelope, subject_mismatch or unsupported_version"')
 WHERE event_type = 'event.dead_lettered';


-- Least privilege (docs/install.md, "Roles"): each service's schema and
-- objects belong to its own role isa_svc_<service>, which runs its handlers
-- and alone publishes its source; isa_app_<service> executes its API (isa_app
-- is their union) and isa_app_admin the administration functions.  The roles
-- must exist before the replayed GRANTs name them; sql/core/grants.sql
-- (isa._service_privileges) then hands the objects over and takes isa_app's
-- direct grants back.  The naming functions are made here for that (the
-- replay makes them again, unchanged).
CREATE FUNCTION isa.service_role(service text) RETURNS name
    AS 'MODULE_PATHNAME', 'isa_service_role_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION isa.service_app_role(service text) RETURNS name
    AS 'MODULE_PATHNAME', 'isa_service_app_role_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
DO $roles$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT unnest(ARRAY['isa_app_admin', 'isa_service']::name[])
             UNION ALL SELECT isa.service_role(s.name) FROM isa.services s WHERE s.schema_name IS NOT NULL
             UNION ALL SELECT isa.service_app_role(s.name) FROM isa.services s WHERE s.schema_name IS NOT NULL LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

-- Handlers ran as whoever subscribed them (the superuser who installed isa);
-- they run as their service's role now, and the column has no default.
ALTER TABLE isa.subscriptions ALTER COLUMN owner_role DROP DEFAULT;
UPDATE isa.subscriptions SET owner_role = isa.service_role(service)
 WHERE owner_role <> isa.service_role(service);
-- The services' fragments below subscribe handlers before the replay makes
-- 0.2.0's isa.subscribe_to_events: 0.1.0's leaves owner_role to the default
-- just dropped, so it is made here first (the replay makes it again,
-- unchanged; sql/core/subscriptions.sql is its source).
CREATE OR REPLACE FUNCTION isa.subscribe_to_events(
    service        text,
    subject_filter text,
    handler        regprocedure,
    options        jsonb DEFAULT '{}')
RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn      pg_proc;
    durable text;
    sub_id  bigint;
    owner   name;
BEGIN
    IF service IS NULL OR NOT EXISTS (SELECT 1 FROM isa.services s
                                       WHERE s.name = subscribe_to_events.service
                                         AND s.schema_name IS NOT NULL) THEN
        RAISE EXCEPTION 'unknown service "%"', service USING ERRCODE = '22023',
            HINT = 'Services are listed in isa.services.';
    END IF;
    IF subject_filter IS NULL OR NOT isa.is_valid_subject_filter(subject_filter) THEN
        RAISE EXCEPTION 'invalid subject filter "%"', subject_filter USING ERRCODE = '22023',
            HINT = 'Dot-separated tokens; * matches one token, > the rest, e.g. payment_service.> or external.usage.recorded.*';
    END IF;
    IF split_part(subject_filter, '.', 1) NOT IN ('*', '>')
       AND NOT EXISTS (SELECT 1 FROM isa.services s WHERE s.source = split_part(subject_filter, '.', 1)) THEN
        RAISE EXCEPTION 'subject filter "%" matches no isa subject', subject_filter USING ERRCODE = '22023',
            HINT = 'A subject starts with a source of isa.services, e.g. payment_service. or external.';
    END IF;

    SELECT * INTO fn FROM pg_proc p WHERE p.oid = handler;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'handler function with OID % does not exist', handler::oid USING ERRCODE = '42883';
    END IF;
    IF fn.prokind <> 'f' OR fn.proretset OR fn.pronargs <> 1 OR fn.proargtypes[0] <> 'isa.event'::regtype THEN
        RAISE EXCEPTION 'handler % must be a function taking one isa.event', handler USING ERRCODE = '22023',
            HINT = 'Declare it as CREATE FUNCTION ...(e isa.event) RETURNS void; its result is ignored.';
    END IF;
    options := isa._check_subscription_options(coalesce(options, '{}'));

    -- The handler runs as the service's role (never as whoever subscribed it,
    -- a superuser at install): that role must be allowed to execute it.  A
    -- handler of the service's own schema is, or becomes, that role's
    -- (isa._service_privileges).
    owner := isa.service_role(service);
    IF NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = owner) THEN
        RAISE EXCEPTION 'role "%" of service "%" does not exist', owner, service USING ERRCODE = '42704',
            HINT = 'isa.register_service creates it.';
    END IF;
    IF fn.pronamespace IS DISTINCT FROM (SELECT to_regnamespace(s.schema_name)::oid FROM isa.services s
                                          WHERE s.name = subscribe_to_events.service)
       AND NOT has_function_privilege(owner, handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'role "%" of service "%" may not execute handler %', owner, service, handler
            USING ERRCODE = '42501',
            HINT = format('Handlers run as the service''s role: GRANT EXECUTE ON FUNCTION %s TO %I.', handler, owner);
    END IF;

    SELECT s.id INTO sub_id FROM isa.subscriptions s
     WHERE s.service = subscribe_to_events.service AND s.handler = subscribe_to_events.handler
       AND s.subject_filter = subscribe_to_events.subject_filter;
    IF FOUND THEN
        UPDATE isa.subscriptions s SET options = subscribe_to_events.options, owner_role = owner, updated_at = now()
         WHERE s.id = sub_id
           AND (s.options IS DISTINCT FROM subscribe_to_events.options OR s.owner_role <> owner);
        RETURN sub_id;
    END IF;

    -- Durable name: readable service and handler, plus a digest of (qualified
    -- handler, filter), so the same subscription always gets the same
    -- consumer (and inbox key), whatever was subscribed before.
    durable := regexp_replace(service || '_' || fn.proname, '[^A-Za-z0-9_-]', '_', 'g')
               || '_' || left(md5(handler::text || ' ' || subject_filter), 8);
    INSERT INTO isa.subscriptions (service, subject_filter, handler, durable_name, options, owner_role)
    VALUES (service, subject_filter, handler, durable, options, owner)
    RETURNING id INTO sub_id;
    RETURN sub_id;
END
$$;

-- auth.jwks() was isa_app's and isa_admin's; it is isa_app_auth's, then
-- isa_admin's, in the order auth.sql grants them (a fresh install's order).
DO $jwks$
BEGIN
    IF to_regprocedure('auth.jwks()') IS NOT NULL THEN
        REVOKE EXECUTE ON FUNCTION auth.jwks() FROM isa_admin;
    END IF;
END
$jwks$;
