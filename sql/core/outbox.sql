-- outbox.sql — where events wait to leave (outbox) and where handled events
-- are remembered (inbox).  Each service schema owns one partition of each, so
-- a service's events stay in its schema while the bridge reads every outbox in
-- one ordered query on the parent.

CREATE TABLE isa.outbox (
    id           uuid NOT NULL,              -- UUIDv7; Nats-Msg-Id on the wire
    source       text NOT NULL,              -- partition key: the publishing service
    event_type   text NOT NULL,
    version      text NOT NULL,
    occurred_at  timestamptz NOT NULL,       -- the envelope's timestamp
    data         jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    published_at timestamptz                 -- NULL until JetStream acknowledged it
) PARTITION BY LIST (source);
COMMENT ON TABLE isa.outbox IS
    'Events committed with their domain write, waiting for (or kept after) publication; one partition per service (<schema>.outbox).';

-- The only index: the publisher's "unpublished, in id order" scan.  Published
-- rows leave it, so it stays as small as the backlog.
CREATE INDEX outbox_unpublished ON isa.outbox (id) WHERE published_at IS NULL;

CREATE TABLE isa.inbox (
    service      text NOT NULL,              -- partition key: the consuming service
    consumer     text NOT NULL,              -- the subscription's durable name
    event_id     uuid NOT NULL,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),   -- the applying transaction's start (retention)
    applied_at   timestamptz DEFAULT clock_timestamp(),  -- the moment of the inbox insert, just before the
                                                         -- handler (isa.trace; NULL in rows of 0.1.0)
    PRIMARY KEY (service, consumer, event_id)
) PARTITION BY LIST (service);
COMMENT ON TABLE isa.inbox IS
    'Events a subscription has already applied: the dedupe record that makes redelivery harmless; one partition per service (<schema>.inbox).';

CREATE FUNCTION isa.publish_event(
    event_type text,
    source     text,
    data       jsonb,
    metadata   jsonb DEFAULT '{}')
RETURNS uuid
    AS 'MODULE_PATHNAME', 'isa_publish_event'
    -- Writes as its owner and with pg_catalog as the only search path, both
    -- set in C (extension/publish.c): a SECURITY DEFINER ... SET search_path
    -- declaration costs about 13 % more per call (bench/publish_cost).
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.publish_event(text, text, jsonb, jsonb) IS
    'Writes an event to the outbox of its source service in the caller''s transaction and returns its id (UUIDv7). metadata.correlation_id defaults to the event id.';

-- A service's roles and who owns what (docs/install.md, "Roles"); idempotent,
-- run by isa.register_service and, for every service, by sql/core/grants.sql
-- (at install, once the services' objects exist, and at every upgrade):
--   isa_svc_<service> (NOLOGIN, member of isa_service) owns the schema and
--     every object of the extension in it but the outbox and inbox
--     partitions, which stay the extension owner's: its SECURITY DEFINER
--     functions and handlers run as it, and isa.publish_event lets only it
--     publish the service's source;
--   isa_app_<service> (NOLOGIN, granted to isa_app) may use the schema; the
--     service's file grants it EXECUTE on the API.
CREATE FUNCTION isa._service_privileges(service text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp   name;
    svc   name := isa.service_role(service);
    app   name := isa.service_app_role(service);
    r     name;
    alter_owner text;
BEGIN
    SELECT s.schema_name INTO nsp FROM isa.services s WHERE s.name = _service_privileges.service;
    IF nsp IS NULL THEN
        RETURN;                    -- an external source: no schema
    END IF;
    FOREACH r IN ARRAY ARRAY[svc, app] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    IF NOT pg_has_role(svc, 'isa_service', 'MEMBER') THEN
        EXECUTE format('GRANT isa_service TO %I', svc);
    END IF;
    IF NOT pg_has_role('isa_app', app, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO isa_app', app);
    END IF;

    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', nsp, svc);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, isa_app_admin, isa_service', nsp, app);
    FOR alter_owner IN
        SELECT format('ALTER %s %s OWNER TO %I', o.kind, o.name, svc)
          FROM (SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                       c.oid::regclass::text, c.relowner, d.classid, d.objid
                  FROM pg_class c, pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND c.relnamespace = nsp::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                   -- the outbox and inbox partitions, and sequences that go with their table
                   AND NOT EXISTS (SELECT FROM pg_inherits i
                                    WHERE i.inhrelid = c.oid
                                      AND i.inhparent IN ('isa.outbox'::regclass, 'isa.inbox'::regclass))
                   -- (objsubid 0: a partitioned table's key columns depend on it internally)
                   AND NOT EXISTS (SELECT FROM pg_depend a
                                    WHERE a.classid = 'pg_class'::regclass AND a.objid = c.oid
                                      AND a.objsubid = 0 AND a.deptype IN ('a', 'i'))
                UNION ALL
                SELECT 'TYPE', t.oid::regtype::text, t.typowner, d.classid, d.objid
                  FROM pg_type t, pg_depend d
                 WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                   AND t.typnamespace = nsp::regnamespace
                UNION ALL
                SELECT 'ROUTINE', p.oid::regprocedure::text, p.proowner, d.classid, d.objid
                  FROM pg_proc p, pg_depend d
                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                   AND p.pronamespace = nsp::regnamespace) AS o (kind, name, current_owner, classid, objid)
         WHERE o.current_owner <> svc::regrole
           AND EXISTS (SELECT FROM pg_depend e
                        WHERE e.classid = o.classid AND e.objid = o.objid AND e.deptype = 'e'
                          AND e.refclassid = 'pg_extension'::regclass
                          AND e.refobjid = (SELECT x.oid FROM pg_extension x WHERE x.extname = 'isa'))
         GROUP BY o.kind, o.name ORDER BY o.kind, o.name
    LOOP
        EXECUTE alter_owner;
    END LOOP;
END
$$;

-- Builds a service's home: its schema, its roles and its outbox and inbox
-- partitions.  Service SQL files and sql/core/services.sql call it; idempotent.
CREATE FUNCTION isa.register_service(name text, schema_name name, source text, description text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- device: the source of the envelopes the bridge makes of device messages;
    -- isa: the prefix of their subjects (docs/bridge.md, "Device messages").
    IF source IN ('device', 'isa') THEN
        RAISE EXCEPTION 'source "%" is reserved', source USING ERRCODE = '22023',
            HINT = 'The bridge makes the envelopes of device messages (isa.devices.<id>.acks, .heartbeat) with source device.';
    END IF;
    INSERT INTO isa.services AS s (name, schema_name, source, description)
    VALUES (name, schema_name, source, description)
    ON CONFLICT ON CONSTRAINT services_pkey DO UPDATE SET description = excluded.description
    WHERE s.schema_name IS NOT DISTINCT FROM excluded.schema_name AND s.source = excluded.source;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service "%" is already registered with another schema or source', name
            USING ERRCODE = '23505';
    END IF;
    IF schema_name IS NULL THEN
        RETURN;                    -- an external source: no outbox, no inbox
    END IF;

    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', schema_name);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO isa_app, isa_bridge, isa_admin', schema_name);
    IF to_regclass(format('%I.outbox', schema_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.outbox PARTITION OF isa.outbox FOR VALUES IN (%L)',
                       schema_name, source);
        EXECUTE format('CREATE TABLE %I.inbox PARTITION OF isa.inbox FOR VALUES IN (%L)',
                       schema_name, name);
    END IF;
    EXECUTE format('GRANT ALL ON %I.outbox, %I.inbox TO isa_admin', schema_name, schema_name);
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON %I.outbox TO isa_bridge', schema_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.inbox TO isa_bridge', schema_name);
    PERFORM isa._service_privileges(name);
END
$$;
COMMENT ON FUNCTION isa.register_service(text, name, text, text) IS
    'Registers a service: its schema, its event source, its roles (isa_svc_<name> owns the schema, isa_app_<name> may use it) and its outbox and inbox partitions (schema_name NULL for an external source).';

CREATE FUNCTION isa.wakeup_state(
    OUT preloaded boolean, OUT outbox_pending boolean, OUT subscriptions_changed boolean,
    OUT wakeups_signalled bigint, OUT bridge_pid integer)
    AS 'MODULE_PATHNAME', 'isa_wakeup_state' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.wakeup_state() IS
    'Commit-time wake-up state: whether isa is preloaded, the pending flags, how many commits signalled the bridge, and the bridge''s pid (NULL if none).';

-- Direct messages: plain NATS messages (core NATS, not JetStream, not an
-- envelope) that a service hands to the bridge in its own transaction, on a
-- subject of the isa. namespace, which no event source uses.  The bridge
-- publishes them in id order and deletes them in the same transaction
-- (bridge/direct.c): at most once, so a sender that needs delivery re-sends
-- until the receiver answers (the device service's commands do).  Docs:
-- docs/bridge.md, "Direct messages".
CREATE TABLE isa.direct_messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject    text NOT NULL CHECK (subject ~ '^isa(\.[A-Za-z0-9_:-]+)+$' AND length(subject) <= 255),
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE isa.direct_messages IS
    'Plain NATS messages on isa.* subjects waiting for the bridge, which publishes and deletes them (at most once).';

-- A commit that wrote one wakes the bridge, as an outbox row does.
CREATE FUNCTION isa._direct_message_written() RETURNS trigger
    AS 'MODULE_PATHNAME', 'isa_outbox_written_trigger' LANGUAGE C;
CREATE TRIGGER direct_message_written
    AFTER INSERT ON isa.direct_messages
    FOR EACH STATEMENT EXECUTE FUNCTION isa._direct_message_written();

CREATE FUNCTION isa.send_direct_message(subject text, payload jsonb) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM isa.not_null('subject, payload', subject, payload);
    IF subject !~ '^isa(\.[A-Za-z0-9_:-]+)+$' OR length(subject) > 255 THEN
        RAISE EXCEPTION 'invalid direct message subject "%"', left(subject, 300) USING ERRCODE = '22023',
            HINT = 'A direct message goes to a literal subject of the isa. namespace: isa.<token>[.<token>]..., no wildcards.';
    END IF;
    IF octet_length(payload::text) > 65536 THEN
        RAISE EXCEPTION 'a direct message has at most 64 KiB of payload' USING ERRCODE = '22023';
    END IF;
    INSERT INTO isa.direct_messages (subject, payload) VALUES (subject, payload) RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION isa.send_direct_message(text, jsonb) IS
    'Hands the bridge a plain NATS message (JSON payload, no envelope) for a literal isa.* subject, published after this transaction commits, at most once. Granted to the services that need it (the device service''s commands). 22023 bad subject or payload over 64 KiB.';
