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
    FOR r IN SELECT unnest(ARRAY['isa_app_admin', 'isa_service', 'isa_compliance']::name[])
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

-- Direct messages (plain NATS messages the bridge publishes: the device
-- service's commands), as sql/core/outbox.sql makes them.
CREATE TABLE isa.direct_messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject    text NOT NULL CHECK (subject ~ '^isa(\.[A-Za-z0-9_:-]+)+$' AND length(subject) <= 255),
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION isa._direct_message_written() RETURNS trigger
    AS 'MODULE_PATHNAME', 'isa_outbox_written_trigger' LANGUAGE C;
CREATE TRIGGER direct_message_written
    AFTER INSERT ON isa.direct_messages
    FOR EACH STATEMENT EXECUTE FUNCTION isa._direct_message_written();

-- Events from any table (sql/core/table_events.sql, docs/table-events.md):
-- the service table_events and its source table, the tracking table and
-- the sequence of its shadows, the DDL event triggers and the view.  The
-- event triggers' functions and the view's isa._table_pending are made empty
-- here; the replay that follows makes them as sql/core/table_events.sql says.
SELECT isa.register_service('table_events', 'table_events', 'table',
    'Events from any table: the changes of the tables a DBA tracks (isa.track_table), as table.<name>.<operation>.');
CREATE TABLE isa.table_tracking (
    event_name      text PRIMARY KEY CHECK (isa.is_valid_event_type(event_name || '.inserted')),
    schema_name     name NOT NULL,
    table_name      name NOT NULL,
    operations      text[] NOT NULL CHECK (operations <@ ARRAY['insert', 'update', 'delete', 'truncate']
                                           AND cardinality(operations) > 0),
    key_columns     text[] NOT NULL CHECK (cardinality(key_columns) > 0),
    when_columns    text[],
    exclude_columns text[] NOT NULL DEFAULT '{}',
    columns         text[] NOT NULL,
    shadow          int,
    tracked_at      timestamptz NOT NULL DEFAULT now(),
    tracked_by      name NOT NULL,
    UNIQUE (schema_name, table_name)
);
SELECT pg_catalog.pg_extension_config_dump('isa.table_tracking', '');
CREATE SEQUENCE isa.table_shadow_seq AS int;
SELECT pg_catalog.pg_extension_config_dump('isa.table_shadow_seq', '');
-- A tracked table's event types are the installation's data, not the
-- extension's: pg_dump keeps them (CREATE EXTENSION makes the others,
-- event.dead_lettered of source table included).
SELECT pg_catalog.pg_extension_config_dump('isa.event_types',
    'WHERE source = ''table'' AND event_type <> ''event.dead_lettered''');
CREATE FUNCTION isa._tracked_table_altered() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
CREATE EVENT TRIGGER isa_tracked_table_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION isa._tracked_table_altered();
CREATE FUNCTION isa._tracked_table_dropped() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
CREATE EVENT TRIGGER isa_tracked_table_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION isa._tracked_table_dropped();
CREATE FUNCTION isa._table_pending(shadow int) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE VIEW isa.tracked_tables AS
SELECT to_regclass(format('%I.%I', k.schema_name, k.table_name)) AS relation,
       k.event_name,
       'table.' || k.event_name || '.>' AS subjects,
       k.operations, k.key_columns, k.when_columns, k.exclude_columns,
       (SELECT count(*) FROM pg_trigger t
         WHERE t.tgrelid = to_regclass(format('%I.%I', k.schema_name, k.table_name))
           AND t.tgname LIKE 'isa\_track\_%')::int AS triggers,
       isa._table_pending(k.shadow) AS pending_statements,
       k.tracked_at, k.tracked_by
  FROM isa.table_tracking k;

-- isa.trace (sql/core/trace.sql) reads when each subscription applied an
-- event: the inbox keeps the moment of its insert (processed_at is the
-- applying transaction's start, the same for a whole fetched batch).  Rows
-- of 0.1.0 keep NULL (isa.trace falls back to processed_at): no rewrite.
ALTER TABLE isa.inbox ADD COLUMN applied_at timestamptz;
ALTER TABLE isa.inbox ALTER COLUMN applied_at SET DEFAULT clock_timestamp();

-- A replay (docs/bridge.md, "Subject override"): an outbox row may go out on a
-- replay.> subject of its own with the original envelope's id and source.
ALTER TABLE isa.outbox ADD COLUMN subject text, ADD COLUMN envelope_id uuid, ADD COLUMN envelope_source text;
ALTER TABLE isa.outbox ADD CONSTRAINT outbox_subject_override
    CHECK ((subject IS NULL AND envelope_id IS NULL AND envelope_source IS NULL)
           OR (subject ~ '^replay\.[^.*>[:space:]]+(\.[^.*>[:space:]]+)+$' AND length(subject) <= 255
               AND envelope_id IS NOT NULL AND envelope_source IS NOT NULL));
