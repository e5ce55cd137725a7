-- grants.sql — privileges (docs/architecture.md, "Security"; docs/install.md,
-- "Roles"), last so that they cover every object above.  isa_app may execute
-- the API (as the union of the isa_app_<service> roles) and read the
-- catalogue, never touch an outbox or inbox; isa_app_admin executes the
-- administration functions; each service's role isa_svc_<service> owns its
-- schema and uses what isa_service may; isa_bridge moves events; isa_admin
-- owns the operations.

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA isa FROM PUBLIC;
GRANT USAGE ON SCHEMA isa TO isa_app, isa_bridge, isa_admin, isa_service;

GRANT EXECUTE ON FUNCTION
    isa.uuid_v7(), isa.uuid_v7_time(uuid),
    isa.publish_event(text, text, jsonb, jsonb),
    isa.event_to_json(isa.event), isa.event_from_json(jsonb), isa._check_envelope(isa.event),
    isa.is_valid_event_type(text), isa.is_valid_version(text), isa.is_valid_subject_filter(text),
    isa.event_catalogue_markdown(), isa.http_routes_markdown(), isa.current_event(),
    isa.hmac_sha256(bytea, bytea), isa.secure_equals(bytea, bytea), isa.random_bytes(int),
    isa.base64url_encode(bytea), isa.base64url_decode(text), isa.not_null(text, "any"),
    isa.iso_time(timestamptz), isa.is_uuid(text)
TO isa_app, isa_bridge;
GRANT SELECT ON isa.services, isa.event_types TO isa_app, isa_bridge;
-- isa-httpd connects as a member of isa_app: the routes, the first call of
-- every request, and what /ready and /metrics show (counts, never payloads).
GRANT EXECUTE ON FUNCTION
    isa.http_ready(), isa.http_metrics(),
    isa.http_route_catalogue(),
    isa.http_begin(jsonb, text, text, text, text, jsonb, boolean, integer),
    isa.http_claims()
TO isa_app;

GRANT SELECT, UPDATE, DELETE ON isa.outbox TO isa_bridge;
GRANT SELECT, DELETE ON isa.direct_messages TO isa_bridge;
GRANT SELECT, INSERT, DELETE ON isa.inbox TO isa_bridge;
GRANT SELECT ON isa.subscriptions TO isa_bridge;
GRANT SELECT, INSERT, UPDATE ON isa.dead_letters TO isa_bridge;
GRANT EXECUTE ON FUNCTION isa.wakeup_state(), isa._render_table_events(text, boolean) TO isa_bridge;

GRANT ALL ON ALL TABLES IN SCHEMA isa TO isa_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA isa TO isa_admin;

-- isa_compliance reads whole chains (docs/tracing.md): the causation tree.
GRANT USAGE ON SCHEMA isa TO isa_compliance;
GRANT EXECUTE ON FUNCTION isa.trace(uuid) TO isa_compliance;

-- What the services' own code calls of isa, as its service's role (member
-- of isa_service); isa.publish_event lets a role publish only its own
-- service's source (extension/publish.c).  After isa_admin's grants: an
-- upgraded database's functions had those already, and pg_dump shows grants
-- in the order they were made (test/integration/90-upgrade.sh compares).
GRANT EXECUTE ON FUNCTION
    isa.uuid_v7(), isa.publish_event(text, text, jsonb, jsonb), isa.current_event(),
    isa.not_null(text, "any"), isa.check_page_size(text, integer),
    isa.check_text(text, text, integer), isa.check_idempotency_key(text),
    isa.iso_time(timestamptz), isa.is_uuid(text),
    isa.hmac_sha256(bytea, bytea), isa.secure_equals(bytea, bytea), isa.random_bytes(int),
    isa.base64url_encode(bytea), isa.is_valid_subject_filter(text), isa.subject_filter_regex(text),
    isa.subject_matches(text, text)
TO isa_service;

-- The operators may do what the administration routes do.
DO $admin$
BEGIN
    IF NOT pg_catalog.pg_has_role('isa_admin', 'isa_app_admin', 'MEMBER') THEN
        GRANT isa_app_admin TO isa_admin;
    END IF;
END
$admin$;


-- pg_dump keeps the rows of these tables (extension tables are otherwise
-- skipped): pending events, what was handled, subscriptions, dead letters, and
-- the identity sequences of the last two (a restored row must not meet its id
-- again).  The subscriptions the extension itself makes (handlers that are
-- members of the extension) are left out: CREATE EXTENSION makes them again
-- at restore.  One call per statement: each updates the pg_extension row.
DO $dump$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT format('%I.%I', s.schema_name, n.name)::regclass
               FROM isa.services s, (VALUES ('outbox'), ('inbox')) AS n (name)
              WHERE s.schema_name IS NOT NULL
             UNION ALL VALUES ('isa.dead_letters'::regclass), ('isa.direct_messages'::regclass),
                              (pg_catalog.pg_get_serial_sequence('isa.direct_messages', 'id')::regclass),
                              (pg_catalog.pg_get_serial_sequence('isa.dead_letters', 'id')::regclass),
                              (pg_catalog.pg_get_serial_sequence('isa.subscriptions', 'id')::regclass) LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t, '');
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump('isa.subscriptions',
        'WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                            WHERE d.classid = ''pg_catalog.pg_proc''::pg_catalog.regclass
                              AND d.objid = handler::pg_catalog.oid AND d.deptype = ''e'')');
END
$dump$;

-- The services' own tables and sequences hold the platform's data (users,
-- ledgers, payments): pg_dump must keep their rows too.  Outbox and inbox
-- partitions are already marked above.
DO $dump_services$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                                           AND d.deptype = 'e'
               JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid AND x.extname = 'isa'
              WHERE n.nspname IN (SELECT schema_name FROM isa.services WHERE schema_name IS NOT NULL)
                AND c.relkind IN ('r', 'S')
                AND NOT c.relispartition
              ORDER BY c.oid LOOP
        PERFORM pg_catalog.pg_extension_config_dump(t, '');
    END LOOP;
END
$dump_services$;

-- Each service's schema and objects belong to its role (isa._service_privileges:
-- at install now that they exist, at an upgrade for what the upgrade made).
-- Functions of the service schemas are not for PUBLIC, nor for isa_app
-- directly: it executes a service's API as a member of isa_app_<service>
-- (0.1.0 granted it directly).  isa_admin, the operators' role, may read and
-- repair the services' data.
DO $revoke$
DECLARE
    s isa.services;
BEGIN
    FOR s IN SELECT * FROM isa.services WHERE schema_name IS NOT NULL ORDER BY name LOOP
        PERFORM isa._service_privileges(s.name);
        EXECUTE format('REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC, isa_app', s.schema_name);
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO isa_admin', s.schema_name);
    END LOOP;
END
$revoke$;

-- Except secrets: isa_admin sees the public half of the JWT signing keys,
-- never the private keys, password hashes or refresh-token digests.
-- (A build without the auth service, ISA_SERVICES, has no such tables.)
DO $secrets$
BEGIN
    IF to_regclass('auth.signing_keys') IS NOT NULL THEN
        REVOKE ALL ON auth.signing_keys, auth.passwords, auth.refresh_tokens FROM isa_admin;
        GRANT SELECT (kid, algorithm, public_key, created_at, retired_at) ON auth.signing_keys TO isa_admin;
    END IF;
    -- nor the secrets webhook deliveries are signed with
    IF to_regclass('notification.webhooks') IS NOT NULL THEN
        REVOKE ALL ON notification.webhooks FROM isa_admin;
        GRANT SELECT (webhook_id, user_id, org_id, url, created_by, created_at, updated_at) ON notification.webhooks TO isa_admin;
        GRANT DELETE ON notification.webhooks TO isa_admin;
    END IF;
    -- nor write the audit trail: its handler alone appends (sql/audit/audit.sql)
    IF to_regclass('audit.entries') IS NOT NULL THEN
        REVOKE ALL ON audit.entries, audit.chains, audit.head, audit.checkpoints FROM isa_admin;
        GRANT SELECT ON audit.entries, audit.chains, audit.head, audit.checkpoints TO isa_admin;
    END IF;
END
$secrets$;
