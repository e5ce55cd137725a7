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
    processed_at timestamptz NOT NULL DEFAULT now(),
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

-- Builds a service's home: its schema and its outbox and inbox partitions.
-- Service SQL files and sql/core/services.sql call it; idempotent.
CREATE FUNCTION isa.register_service(name text, schema_name name, source text, description text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
END
$$;
COMMENT ON FUNCTION isa.register_service(text, name, text, text) IS
    'Registers a service: its schema, its event source and its outbox and inbox partitions (schema_name NULL for an external source).';

CREATE FUNCTION isa.wakeup_state(
    OUT preloaded boolean, OUT outbox_pending boolean, OUT subscriptions_changed boolean,
    OUT wakeups_signalled bigint, OUT bridge_pid integer)
    AS 'MODULE_PATHNAME', 'isa_wakeup_state' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.wakeup_state() IS
    'Commit-time wake-up state: whether isa is preloaded, the pending flags, how many commits signalled the bridge, and the bridge''s pid (NULL if none).';
