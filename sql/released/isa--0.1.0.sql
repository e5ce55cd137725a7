-- isa 0.1.0, as released: the full install script that databases of 0.1.0 were
-- created with.  Kept unchanged: newer versions are reached from it by the
-- upgrade scripts (docs/architecture.md, "Versions and upgrades").
\echo Use "CREATE EXTENSION isa" to load this file. \quit

-- ==== sql/core.sql
-- core.sql — schema isa: roles, the service registry, the event envelope and
-- the event type catalogue.  Schema isa itself is created by CREATE EXTENSION
-- (isa.control: schema = isa).

-- Roles (DESIGN.md §8).  Roles are cluster-wide, so they are created only when
-- absent and survive DROP EXTENSION.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['isa_admin', 'isa_app', 'isa_bridge'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

-- ---------------------------------------------------------------- services
CREATE TABLE isa.services (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    schema_name name UNIQUE,          -- NULL: no outbox (events come from NATS clients)
    source      text NOT NULL UNIQUE CHECK (source ~ '^[a-z][a-z0-9_]*$'),
    description text NOT NULL
);
COMMENT ON TABLE isa.services IS
    'The services of this isa installation: name, owning schema and the event source (subject prefix) it publishes as.';

-- ---------------------------------------------------------------- identifiers
CREATE FUNCTION isa.uuid_v7() RETURNS uuid
    AS 'MODULE_PATHNAME', 'isa_uuid_v7' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.uuid_v7() IS
    'A new time-ordered UUID (RFC 9562 version 7), monotonic within a session.';

-- The page size of the services' list functions: 22004 when NULL, 22023
-- outside 1 … 1000, the message naming the argument (row_limit, limit).
CREATE FUNCTION isa.check_page_size(name text, value integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', name USING ERRCODE = '22004';
    ELSIF value NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION '% must be from 1 to 1000, not %', name, value USING ERRCODE = '22023';
    END IF;
END
$$;
COMMENT ON FUNCTION isa.check_page_size(text, integer) IS
    'Raises 22004 when a list function''s page size is NULL and 22023 when it is not from 1 to 1000, naming the argument.';

CREATE FUNCTION isa.uuid_v7_time(id uuid) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'isa_uuid_v7_time' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.uuid_v7_time(uuid) IS
    'The millisecond timestamp carried by a version 7 UUID; 22023 for other UUIDs.';

-- ---------------------------------------------------------------- the envelope
CREATE TYPE isa.event AS (
    id          uuid,
    event_type  text,
    source      text,
    version     text,
    "timestamp" timestamptz,
    data        jsonb,
    metadata    jsonb
);
COMMENT ON TYPE isa.event IS
    'The event envelope (DESIGN.md §3); its JSON form is isa.event_to_json / isa.event_from_json.';

-- The envelope rules and the wire parser are C (extension/envelope.c): the
-- bridge parses every message it receives with isa.event_from_json.
CREATE FUNCTION isa.is_valid_event_type(event_type text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_is_valid_event_type' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.is_valid_event_type(text) IS
    'Whether a text is a dotted lower-case event type such as wallet.tokens.deducted.';

CREATE FUNCTION isa.is_valid_version(version text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_is_valid_version' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.is_valid_version(text) IS
    'Whether a text is an event schema version MAJOR.MINOR.PATCH.';

-- Raises 22023 naming the first field that is missing or malformed; returns
-- the event with a NULL metadata made {}.
CREATE FUNCTION isa._check_envelope(e isa.event) RETURNS isa.event
    AS 'MODULE_PATHNAME', 'isa_check_envelope' LANGUAGE C IMMUTABLE;

CREATE FUNCTION isa.event_to_json(e isa.event) RETURNS jsonb
    LANGUAGE plpgsql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v isa.event := isa._check_envelope(e);
BEGIN
    RETURN jsonb_build_object(
        'id', v.id,
        'event_type', v.event_type,
        'source', v.source,
        'version', v.version,
        'timestamp', to_char(v."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', v.data,
        'metadata', v.metadata);
END
$$;
COMMENT ON FUNCTION isa.event_to_json(isa.event) IS
    'The wire (JSON) form of an event; 22023 naming the field if the event is incomplete or malformed.';

CREATE FUNCTION isa.event_from_json(j jsonb) RETURNS isa.event
    AS 'MODULE_PATHNAME', 'isa_event_from_json' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION isa.event_from_json(jsonb) IS
    'Parses and validates a wire event: 22023 naming the field that is missing or malformed. version defaults to 1.0.0, metadata to {}.';

-- ---------------------------------------------------------------- catalogue
CREATE TABLE isa.event_types (
    source      text NOT NULL REFERENCES isa.services (source),
    event_type  text NOT NULL CHECK (isa.is_valid_event_type(event_type)),
    version     text NOT NULL DEFAULT '1.0.0' CHECK (isa.is_valid_version(version)),
    version_key int[] GENERATED ALWAYS AS (string_to_array(version, '.')::int[]) STORED,
    description text NOT NULL CHECK (description <> ''),
    data_fields jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data_fields) = 'object'),
    PRIMARY KEY (source, event_type, version)
);
COMMENT ON TABLE isa.event_types IS
    'Every event type a source publishes, per schema version, with its data fields. isa.publish_event publishes the newest version.';

-- publish_event caches the catalogue per backend; a change to it (or to
-- isa.services) invalidates every backend's cache at commit.
CREATE FUNCTION isa._catalogue_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'isa_catalogue_changed_trigger' LANGUAGE C;
CREATE TRIGGER event_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON isa.event_types
    FOR EACH STATEMENT EXECUTE FUNCTION isa._catalogue_changed();
CREATE TRIGGER services_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON isa.services
    FOR EACH STATEMENT EXECUTE FUNCTION isa._catalogue_changed();

CREATE FUNCTION isa.register_event_type(
    event_type  text,
    source      text,
    version     text DEFAULT '1.0.0',
    description text DEFAULT NULL,
    data_fields jsonb DEFAULT '{}')
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    field text;
    spec  jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM isa.services s WHERE s.source = register_event_type.source) THEN
        RAISE EXCEPTION 'unknown event source "%"', source USING ERRCODE = '22023',
            HINT = 'Sources are listed in isa.services.';
    END IF;
    IF event_type IS NULL OR NOT isa.is_valid_event_type(event_type) THEN
        RAISE EXCEPTION 'malformed event type "%"', event_type USING ERRCODE = '22023',
            HINT = 'An event type is dotted lower-case tokens, e.g. wallet.tokens.deducted.';
    END IF;
    IF version IS NULL OR NOT isa.is_valid_version(version) THEN
        RAISE EXCEPTION 'malformed version "%"', version USING ERRCODE = '22023',
            HINT = 'A version is MAJOR.MINOR.PATCH, e.g. 1.0.0.';
    END IF;
    IF coalesce(description, '') = '' THEN
        RAISE EXCEPTION 'event type "%" needs a description', event_type USING ERRCODE = '22023';
    END IF;
    IF data_fields IS NULL OR jsonb_typeof(data_fields) <> 'object' THEN
        RAISE EXCEPTION 'data_fields must be a JSON object of field name -> {type, description, required}'
            USING ERRCODE = '22023';
    END IF;
    FOR field, spec IN SELECT * FROM jsonb_each(data_fields) LOOP
        IF jsonb_typeof(spec) <> 'object'
           OR NOT coalesce(spec ->> 'type', '') = ANY (ARRAY['string', 'integer', 'number', 'boolean', 'object',
                                                  'array', 'uuid', 'timestamp', 'decimal'])
           OR (spec ? 'required' AND jsonb_typeof(spec -> 'required') <> 'boolean') THEN
            RAISE EXCEPTION 'data field "%" of event type "%" is malformed: %', field, event_type, spec
                USING ERRCODE = '22023',
                HINT = 'Each field is {"type": string|integer|number|decimal|boolean|object|array|uuid|timestamp, "required": bool, "description": text}.';
        END IF;
    END LOOP;

    INSERT INTO isa.event_types AS t (source, event_type, version, description, data_fields)
    VALUES (source, event_type, version, description, data_fields)
    ON CONFLICT ON CONSTRAINT event_types_pkey
    DO UPDATE SET description = excluded.description, data_fields = excluded.data_fields;
END
$$;
COMMENT ON FUNCTION isa.register_event_type(text, text, text, text, jsonb) IS
    'Registers (or updates) an event type of a source at a schema version, with its data fields.';

-- The catalogue as Markdown: docs/events.md is checked against this by the tests.
CREATE FUNCTION isa.event_catalogue_markdown() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(section, E'\n' ORDER BY source, event_type, version_key), '')
      FROM (SELECT t.source, t.event_type, t.version_key,
                   format(E'### `%s.%s` (%s)\n\n%s\n\n', t.source, t.event_type, t.version, t.description)
                   || CASE WHEN t.data_fields = '{}' THEN E'No data fields.\n'
                      ELSE E'| field | type | required | description |\n|---|---|---|---|\n'
                           || (SELECT string_agg(format(E'| `%s` | %s | %s | %s |', f.key,
                                                        f.value ->> 'type',
                                                        CASE WHEN coalesce((f.value ->> 'required')::boolean, true)
                                                             THEN 'yes' ELSE 'no' END,
                                                        coalesce(f.value ->> 'description', '')),
                                                 E'\n' ORDER BY f.key)
                                 FROM jsonb_each(t.data_fields) f) || E'\n'
                      END AS section
              FROM isa.event_types t) s;
END;
COMMENT ON FUNCTION isa.event_catalogue_markdown() IS
    'The event catalogue (isa.event_types) as the Markdown of docs/events.md.';

-- ==== sql/crypto.sql
-- crypto.sql — the cryptographic primitives services build on
-- (extension/crypto.c, libsodium).  SHA-256 itself is PostgreSQL's sha256().

CREATE FUNCTION isa.hmac_sha256(key bytea, message bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_hmac_sha256' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.hmac_sha256(bytea, bytea) IS
    'HMAC-SHA256 of message under key (32 bytes).';

CREATE FUNCTION isa.secure_equals(a bytea, b bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_secure_equals' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.secure_equals(bytea, bytea) IS
    'Whether a = b, in time that depends only on the length (for comparing MACs and token hashes).';

CREATE FUNCTION isa.random_bytes(n int) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_random_bytes' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.random_bytes(int) IS
    'n (1..1024) bytes from the operating system''s cryptographic random generator.';

CREATE FUNCTION isa.base64url_encode(data bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_base64url_encode' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.base64url_encode(bytea) IS
    'base64url (RFC 4648 §5) without padding, as in JWTs.';

CREATE FUNCTION isa.base64url_decode(data text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_base64url_decode' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.base64url_decode(text) IS
    'The bytes of base64url text without padding; 22023 on anything else.';

-- ==== sql/outbox.sql
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
-- Service SQL files and sql/services.sql call it; idempotent.
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

-- ==== sql/subscriptions.sql
-- subscriptions.sql — which handler functions consume which subjects, and the
-- dead letters of those that could not.  The bridge runs one durable JetStream
-- consumer per subscription row.

CREATE FUNCTION isa.is_valid_subject_filter(filter text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    -- Tokens separated by dots; a token is '*' or text without whitespace,
    -- dots, '*' or '>'; '>' only as the whole last token.
    RETURN length(filter) <= 255
       AND filter ~ '^(>|(\*|[^.*>[:space:]]+)(\.(\*|[^.*>[:space:]]+))*(\.>)?)$';
COMMENT ON FUNCTION isa.is_valid_subject_filter(text) IS
    'Whether a text is a valid NATS subject filter (* one token, > the rest).';

CREATE TABLE isa.subscriptions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service        text NOT NULL REFERENCES isa.services (name),
    subject_filter text NOT NULL CHECK (isa.is_valid_subject_filter(subject_filter)),
    handler        regprocedure NOT NULL,
    durable_name   text NOT NULL UNIQUE CHECK (durable_name ~ '^[A-Za-z0-9_-]+$'),
    options        jsonb NOT NULL DEFAULT '{}',
    owner_role     name NOT NULL DEFAULT current_user,   -- handlers run as this role
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (service, handler, subject_filter)
);
COMMENT ON TABLE isa.subscriptions IS
    'Handlers registered with isa.subscribe_to_events; the bridge keeps one durable JetStream consumer per row.';

-- Any change reaches the bridge at commit (as pg_cron's cron.job trigger does),
-- so subscriptions come and go without a restart.
CREATE FUNCTION isa._subscriptions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'isa_subscriptions_changed_trigger' LANGUAGE C;
CREATE TRIGGER subscriptions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON isa.subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION isa._subscriptions_changed();

-- 22023 unless options holds only known keys with sane values.
CREATE FUNCTION isa._check_subscription_options(options jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'subscription options must be a JSON object' USING ERRCODE = '22023';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        CASE k
        WHEN 'max_deliver', 'batch_size' THEN
            IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]+$' OR v::text::numeric NOT BETWEEN 1 AND 10000 THEN
                RAISE EXCEPTION 'subscription option "%" must be an integer from 1 to 10000, not %', k, v
                    USING ERRCODE = '22023';
            END IF;
        WHEN 'versions' THEN
            IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) = 0
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v) e
                           WHERE jsonb_typeof(e) <> 'number' OR e::text !~ '^(0|[1-9][0-9]{0,5})$') THEN
                RAISE EXCEPTION 'subscription option "versions" must be a non-empty array of major versions, not %', v
                    USING ERRCODE = '22023', HINT = 'For example {"versions": [1, 2]}.';
            END IF;
        WHEN 'deliver_policy' THEN
            IF v NOT IN ('"all"', '"new"') THEN
                RAISE EXCEPTION 'subscription option "deliver_policy" must be "all" or "new", not %', v
                    USING ERRCODE = '22023';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown subscription option "%"', k USING ERRCODE = '22023',
                HINT = 'Known options: max_deliver, batch_size, versions, deliver_policy.';
        END CASE;
    END LOOP;
    RETURN options;
END
$$;

CREATE FUNCTION isa.subscribe_to_events(
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

    SELECT s.id INTO sub_id FROM isa.subscriptions s
     WHERE s.service = subscribe_to_events.service AND s.handler = subscribe_to_events.handler
       AND s.subject_filter = subscribe_to_events.subject_filter;
    IF FOUND THEN
        UPDATE isa.subscriptions s SET options = subscribe_to_events.options, updated_at = now()
         WHERE s.id = sub_id AND s.options IS DISTINCT FROM subscribe_to_events.options;
        RETURN sub_id;
    END IF;

    -- Durable name: readable service and handler, plus a digest of (qualified
    -- handler, filter), so the same subscription always gets the same
    -- consumer (and inbox key), whatever was subscribed before.
    durable := regexp_replace(service || '_' || fn.proname, '[^A-Za-z0-9_-]', '_', 'g')
               || '_' || left(md5(handler::text || ' ' || subject_filter), 8);
    INSERT INTO isa.subscriptions (service, subject_filter, handler, durable_name, options)
    VALUES (service, subject_filter, handler, durable, options)
    RETURNING id INTO sub_id;
    RETURN sub_id;
END
$$;
COMMENT ON FUNCTION isa.subscribe_to_events(text, text, regprocedure, jsonb) IS
    'Registers handler(isa.event) of a service for the events whose subject matches subject_filter; idempotent; returns the subscription id. Options: max_deliver, batch_size, versions, deliver_policy.';

CREATE FUNCTION isa.unsubscribe_from_events(service text, subject_filter text, handler regprocedure)
RETURNS boolean
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        DELETE FROM isa.subscriptions s
         WHERE s.service = unsubscribe_from_events.service
           AND s.subject_filter = unsubscribe_from_events.subject_filter
           AND s.handler = unsubscribe_from_events.handler
        RETURNING 1)
    SELECT count(*) > 0 FROM gone;
END;
COMMENT ON FUNCTION isa.unsubscribe_from_events(text, text, regprocedure) IS
    'Removes a subscription; true if it existed. The bridge drops its consumer.';

CREATE TABLE isa.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint REFERENCES isa.subscriptions (id) ON DELETE SET NULL,
    service         text NOT NULL REFERENCES isa.services (name),
    consumer        text NOT NULL,
    subject         text NOT NULL,
    event_id        uuid,              -- NULL when the message carried no valid id
    event           jsonb,             -- the message as JSON, when it parsed as JSON
    payload         bytea,             -- the raw message, when it was not a valid envelope
    reason          text NOT NULL CHECK (reason IN ('handler_error', 'invalid_envelope', 'unsupported_version')),
    error_message   text NOT NULL,
    error_sqlstate  text CHECK (error_sqlstate ~ '^[0-9A-Z]{5}$'),
    attempts        int NOT NULL CHECK (attempts >= 0),
    dead_at         timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_count    int NOT NULL DEFAULT 0,
    CHECK (event IS NOT NULL OR payload IS NOT NULL)
);
COMMENT ON TABLE isa.dead_letters IS
    'Messages a subscription gave up on: the event or raw payload, why, the last error and its SQLSTATE, and the attempts made.';

-- ==== sql/jobs.sql
-- jobs.sql — scheduled work (pg_cron): retention now, reconciliation as the
-- services land.  Services add rows to isa.scheduled_jobs; isa.schedule_jobs()
-- hands them all to pg_cron, idempotently by job name.

CREATE FUNCTION isa.retention(target text) RETURNS interval
    AS 'MODULE_PATHNAME', 'isa_retention' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION isa.retention(text) IS
    'The retention period in force for outbox, inbox or cron_history (GUCs isa.outbox_retention, isa.inbox_retention, isa.cron_history_retention).';

CREATE FUNCTION isa.purge_retention() RETURNS TABLE (target text, deleted bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM isa.outbox o WHERE o.published_at < now() - isa.retention('outbox');
    GET DIAGNOSTICS n = ROW_COUNT;
    target := 'isa.outbox'; deleted := n; RETURN NEXT;

    DELETE FROM isa.inbox i WHERE i.processed_at < now() - isa.retention('inbox');
    GET DIAGNOSTICS n = ROW_COUNT;
    target := 'isa.inbox'; deleted := n; RETURN NEXT;

    IF to_regclass('cron.job_run_details') IS NOT NULL THEN
        EXECUTE 'DELETE FROM cron.job_run_details WHERE end_time < now() - $1'
            USING isa.retention('cron_history');
        GET DIAGNOSTICS n = ROW_COUNT;
        target := 'cron.job_run_details'; deleted := n; RETURN NEXT;
    END IF;
END
$$;
COMMENT ON FUNCTION isa.purge_retention() IS
    'Deletes published outbox rows, inbox rows and cron.job_run_details older than their retention; returns what it deleted.';

CREATE TABLE isa.scheduled_jobs (
    jobname     text PRIMARY KEY CHECK (jobname ~ '^isa-[a-z0-9-]+$'),
    schedule    text NOT NULL,
    command     text NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE isa.scheduled_jobs IS
    'The pg_cron jobs isa wants; isa.schedule_jobs() registers them.';

INSERT INTO isa.scheduled_jobs VALUES
    ('isa-retention', '17 * * * *', 'SELECT isa.purge_retention()',
     'Hourly: delete published outbox rows, inbox rows and cron.job_run_details past their retention.');

CREATE FUNCTION isa.schedule_jobs() RETURNS TABLE (jobname text, schedule text, jobid bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j isa.scheduled_jobs;
BEGIN
    IF to_regprocedure('cron.schedule(text,text,text)') IS NULL THEN
        RAISE NOTICE 'pg_cron is not installed in database "%": isa''s jobs are not scheduled', current_database()
            USING HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, '
                         'run CREATE EXTENSION pg_cron, then SELECT isa.schedule_jobs() again.';
        RETURN;
    END IF;
    FOR j IN SELECT * FROM isa.scheduled_jobs sj ORDER BY sj.jobname LOOP
        -- cron.schedule with a job name updates the job of that name: idempotent.
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid USING j.jobname, j.schedule, j.command;
        jobname := j.jobname; schedule := j.schedule;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION isa.schedule_jobs() IS
    'Registers every job of isa.scheduled_jobs with pg_cron (idempotent, by job name); a notice and no rows when pg_cron is absent.';

CREATE FUNCTION isa._jobs() RETURNS TABLE (
    jobname text, schedule text, command text, description text,
    jobid bigint, active boolean, last_status text, last_start timestamptz, last_end timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RETURN QUERY SELECT sj.jobname, sj.schedule, sj.command, sj.description,
                            NULL::bigint, NULL::boolean, NULL::text, NULL::timestamptz, NULL::timestamptz
                       FROM isa.scheduled_jobs sj ORDER BY sj.jobname;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT sj.jobname, coalesce(j.schedule, sj.schedule), coalesce(j.command, sj.command), sj.description,
               j.jobid, j.active, r.status, r.start_time, r.end_time
          FROM isa.scheduled_jobs sj
          LEFT JOIN cron.job j ON j.jobname = sj.jobname
          LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid ORDER BY d.runid DESC LIMIT 1) r ON true
         ORDER BY sj.jobname $q$;
END
$$;

CREATE VIEW isa.jobs AS SELECT * FROM isa._jobs();
COMMENT ON VIEW isa.jobs IS
    'isa''s scheduled jobs: what isa.scheduled_jobs wants, the pg_cron job (jobid NULL if not scheduled) and its last run.';

-- ==== sql/services.sql
-- services.sql — the platform's services (SEED.md's service map): each gets
-- its schema, its event source and its outbox/inbox partitions here.  A
-- service's own SQL file (sql/<service>.sql) adds its tables, API, event
-- types and subscriptions.
SELECT isa.register_service(name, schema_name, source, description)
  FROM (VALUES
    ('account',       'account',       'account_service',       'User accounts: profiles, lookup by email, notification preferences.'),
    ('auth',          'auth',          'auth_service',          'Authentication: passwords, JWT access and refresh tokens, device authentication.'),
    ('authorization', 'authz',         'authorization_service', 'Authorization: roles, permissions and grants (RBAC), deny by default.'),
    ('device',        'device',        'device_service',        'Devices (smart frames): registration, status, commands.'),
    ('payment',       'payment',       'payment_service',       'Payments through Stripe: payment intents, webhooks, subscriptions, refunds.'),
    ('wallet',        'wallet',        'wallet_service',        'Token wallets: a ledger of credits and deductions with balance checks.'),
    ('billing',       'billing',       'billing_service',       'Usage billing: prices usage events and records what is owed.'),
    ('order',         'orders',        'order_service',         'Orders: creation, fulfilment and cancellation.'),
    ('organization',  'organization',  'organization_service',  'Organizations and family sharing: members and shared resources.'),
    ('storage',       'storage',       'storage_service',       'File and media storage: uploads, sharing, deletion.'),
    ('notification',  'notification',  'notification_service',  'Notifications by email, push and MQTT.'),
    ('session',       'session',       'session_service',       'AI chat sessions and their messages.'),
    ('event',         'event',         'event_service',         'Event storage and query for audit and replay.'),
    ('audit',         'audit',         'audit_service',         'The audit trail of every event.'),
    ('ota',           'ota',           'ota_service',           'Firmware over-the-air updates: releases, rollouts, device progress.'),
    ('product',       'product',       'product_service',       'Products and prices for usage types.'),
    ('external',      NULL,            'external',              'Producers outside isa (isA_Model, isA_Agent, isA_MCP) publishing on external.>.')
  ) AS s (name, schema_name, source, description);

-- ==== sql/bridge.sql
-- bridge.sql — what the bridge worker (bridge/) shows and offers in SQL:
-- its state, its metrics, the handled event, dead-letter replay, and the
-- event it publishes when it gives up on a message.

CREATE FUNCTION isa._bridge_state(
    OUT running boolean, OUT pid int, OUT connected boolean, OUT server text,
    OUT reconnects bigint, OUT subscriptions int, OUT started_at timestamptz,
    OUT last_publish_at timestamptz, OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
    AS 'MODULE_PATHNAME', 'isa_bridge_state' LANGUAGE C VOLATILE;

CREATE FUNCTION isa.bridge_status(
    OUT running boolean, OUT pid int, OUT connected boolean, OUT server text,
    OUT reconnects bigint, OUT subscriptions int, OUT outbox_backlog bigint,
    OUT lag interval, OUT started_at timestamptz, OUT last_publish_at timestamptz,
    OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT b.running, b.pid, b.connected, b.server, b.reconnects, b.subscriptions,
           o.backlog, o.lag, b.started_at, b.last_publish_at, b.last_error, b.last_error_at
      FROM isa._bridge_state() b,
           (SELECT count(*) AS backlog,
                   coalesce(clock_timestamp() - min(occurred_at), '0'::interval) AS lag
              FROM isa.outbox WHERE published_at IS NULL) o;
END;
COMMENT ON FUNCTION isa.bridge_status() IS
    'One row about the bridge worker: running, connected to which NATS server, subscriptions, outbox backlog and lag (age of the oldest unpublished event), last error.';

CREATE FUNCTION isa._bridge_metrics(OUT metric text, OUT labels jsonb, OUT value float8)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'isa_bridge_metrics' LANGUAGE C VOLATILE;

CREATE FUNCTION isa.metrics(OUT metric text, OUT labels jsonb, OUT value float8)
RETURNS SETOF record
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT m.metric, m.labels, m.value FROM isa._bridge_metrics() m
    UNION ALL
    SELECT 'outbox_backlog', jsonb_build_object('service', s.name), count(o.id)::float8
      FROM isa.services s LEFT JOIN isa.outbox o ON o.source = s.source AND o.published_at IS NULL
     WHERE s.schema_name IS NOT NULL
     GROUP BY s.name
    UNION ALL
    SELECT 'outbox_oldest_unpublished_age_seconds', '{}'::jsonb,
           coalesce(extract(epoch FROM clock_timestamp() - min(occurred_at)), 0)::float8
      FROM isa.outbox WHERE published_at IS NULL
    UNION ALL
    SELECT 'dead_letters', jsonb_build_object('service', d.service, 'reason', d.reason), count(*)::float8
      FROM isa.dead_letters d WHERE d.replayed_at IS NULL
     GROUP BY d.service, d.reason;
END;
COMMENT ON FUNCTION isa.metrics() IS
    'isa''s metrics as (metric, labels, value) rows in Prometheus form: event_published_total, event_processed_total, event_processing_duration_seconds, outbox backlog and age, NATS connection, dead letters.';

CREATE FUNCTION isa.current_event() RETURNS isa.event
    AS 'MODULE_PATHNAME', 'isa_current_event' LANGUAGE C STABLE;
COMMENT ON FUNCTION isa.current_event() IS
    'The event whose handler is running (NULL elsewhere); events published meanwhile carry its correlation_id and its id as causation_id.';

CREATE FUNCTION isa.replay_dead_letter(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_replay_dead_letter' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.replay_dead_letter(bigint) IS
    'Applies a dead letter to its subscription''s handler now, in this transaction: true if applied, false if its inbox shows it was applied already. The handler''s error, if it fails again, is raised.';

-- Every service announces the messages its subscriptions gave up on.
SELECT isa.register_event_type('event.dead_lettered', s.source, '1.0.0',
         'A subscription of this service gave up on a message and wrote it to isa.dead_letters.',
         '{"dead_letter_id": {"type": "integer", "required": true, "description": "id in isa.dead_letters"},
           "service":        {"type": "string",  "required": true, "description": "the consuming service"},
           "consumer":       {"type": "string",  "required": true, "description": "durable consumer name"},
           "subject":        {"type": "string",  "required": true, "description": "NATS subject of the message"},
           "event_id":       {"type": "uuid",    "required": false, "description": "id of the event; absent if the message was not an envelope"},
           "reason":         {"type": "string",  "required": true, "description": "handler_error, invalid_envelope or unsupported_version"},
           "error":          {"type": "string",  "required": true, "description": "the last error message"},
           "sqlstate":       {"type": "string",  "required": true, "description": "its SQLSTATE"},
           "attempts":       {"type": "integer", "required": true, "description": "deliveries made"}}')
  FROM isa.services s WHERE s.schema_name IS NOT NULL ORDER BY s.name;

-- A service registered later gets the same, and the bridge re-reads the
-- catalogue (stream subjects) at commit as it does for subscriptions.
CREATE FUNCTION isa._register_dead_lettered() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.schema_name IS NOT NULL THEN
        PERFORM isa.register_event_type('event.dead_lettered', NEW.source, t.version, t.description, t.data_fields)
           FROM isa.event_types t
          WHERE t.event_type = 'event.dead_lettered' AND t.source = 'account_service';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER services_dead_lettered
    AFTER INSERT ON isa.services
    FOR EACH ROW EXECUTE FUNCTION isa._register_dead_lettered();
CREATE TRIGGER services_changed_bridge
    AFTER INSERT OR UPDATE OR DELETE ON isa.services
    FOR EACH STATEMENT EXECUTE FUNCTION isa._subscriptions_changed();

-- ==== sql/http.sql
-- http.sql — the routes isa-httpd serves (httpd/), as data: a service adds an
-- endpoint in its own sql/ file with isa.http_route(), never in C.  isa-httpd
-- reads isa.http_route_catalogue() at start (and on SIGHUP) and, for every
-- request, runs isa.http_begin() and then the route's function in one
-- transaction (docs/http.md).

CREATE TABLE isa.http_routes (
    method         text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    path           text NOT NULL CHECK (path ~ '^(/([A-Za-z0-9._-]+|\{[a-z_][a-z0-9_]*\}))+$'),
    function       regprocedure NOT NULL,
    auth           text NOT NULL CHECK (auth IN ('public', 'user', 'device', 'admin')),
    summary        text NOT NULL,
    permission     text CHECK (permission ~ '^[a-z][a-z0-9_]*:[a-z*][a-z0-9_*]*$'),
    resource_param text,            -- the argument whose value is the resource of the permission check
    self_param     text,            -- the argument that, equal to the caller's subject, needs no permission
    subject_param  text,            -- the argument the caller's subject (claim sub) fills; not from the request
    status         integer NOT NULL DEFAULT 200 CHECK (status IN (200, 201, 202, 204)),
    rate_limited   boolean NOT NULL DEFAULT false,  -- per client address (isa-httpd's rate_limit settings)
    raw_body_param text,            -- the argument that receives the request body unparsed
    header_params  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(header_params) = 'object'),
    stream         text CHECK (stream IN ('upload', 'download')),  -- files: see isa.http_route()
    PRIMARY KEY (method, path)
);
COMMENT ON TABLE isa.http_routes IS
    'The HTTP routes of isa-httpd: method and path template ({name} segments) to a service function, with the authentication it needs (public, user, device, admin), an optional authz permission and where arguments come from. Added by isa.http_route().';

-- The arguments of a function: name, type, and whether it has a default.
CREATE FUNCTION isa._http_function_args(f regprocedure)
RETURNS TABLE (name text, type oid, has_default boolean, pos integer)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.name, a.type, a.pos > p.pronargs - p.pronargdefaults, a.pos::integer
      FROM pg_proc p,
           unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) WITH ORDINALITY AS a (name, type, pos)
     WHERE p.oid = f
     ORDER BY a.pos;
END;

CREATE FUNCTION isa.http_route(
    method text, path text, function regprocedure, auth text, summary text,
    permission text DEFAULT NULL, resource_param text DEFAULT NULL, self_param text DEFAULT NULL,
    subject_param text DEFAULT NULL, status integer DEFAULT 200, rate_limited boolean DEFAULT false,
    raw_body_param text DEFAULT NULL, header_params jsonb DEFAULT '{}', stream text DEFAULT NULL)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_schema name;
    v_args   text[];
    v_param  text;
    v_nargs  integer;
BEGIN
    SELECT n.nspname, p.pronargs INTO v_schema, v_nargs
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = function;
    IF NOT EXISTS (SELECT FROM isa.services s WHERE s.schema_name = v_schema) THEN
        RAISE EXCEPTION 'route % %: % is not in a service''s schema', method, path, function
            USING ERRCODE = '22023';
    END IF;
    SELECT coalesce(array_agg(a.name ORDER BY a.pos), '{}') INTO v_args FROM isa._http_function_args(function) a;
    -- (a function with no named argument has no proargnames: its names are NULL)
    IF array_length(v_args, 1) IS DISTINCT FROM nullif(v_nargs, 0) OR '' = ANY (v_args)
       OR array_position(v_args, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'route % %: every argument of % needs a name', method, path, function
            USING ERRCODE = '22023';
    END IF;
    FOR v_param IN
        SELECT m[1] FROM regexp_matches(path, '\{([a-z_][a-z0-9_]*)\}', 'g') AS m
        UNION ALL SELECT resource_param UNION ALL SELECT self_param
        UNION ALL SELECT subject_param UNION ALL SELECT raw_body_param
        UNION ALL SELECT k FROM jsonb_object_keys(header_params) AS k
    LOOP
        IF v_param IS NOT NULL AND NOT v_param = ANY (v_args) THEN
            RAISE EXCEPTION 'route % %: % has no argument %', method, path, function, v_param
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF (auth IN ('user', 'device', 'admin')) IS DISTINCT FROM true AND (subject_param IS NOT NULL OR self_param IS NOT NULL) THEN
        RAISE EXCEPTION 'route % %: a public route has no caller to fill % from', method, path,
            coalesce(subject_param, self_param) USING ERRCODE = '22023';
    END IF;
    IF (resource_param IS NOT NULL) AND permission IS NULL THEN
        RAISE EXCEPTION 'route % %: resource_param needs a permission', method, path USING ERRCODE = '22023';
    END IF;
    IF stream = 'upload' AND (method NOT IN ('POST', 'PUT')
            OR to_regprocedure(format('%I.put_chunk(uuid, integer, bytea)', v_schema)) IS NULL
            OR to_regprocedure(format('%I.finish_upload(uuid, text)', v_schema)) IS NULL
            OR to_regprocedure(format('%I.abort_upload(uuid)', v_schema)) IS NULL) THEN
        RAISE EXCEPTION 'route % %: an upload is a POST or PUT to a schema with put_chunk(uuid, integer, bytea), finish_upload(uuid, text) and abort_upload(uuid)',
            method, path USING ERRCODE = '22023';
    END IF;
    IF stream = 'download' AND (method <> 'GET'
            OR to_regprocedure(format('%I.read_file(uuid, bigint, integer)', v_schema)) IS NULL) THEN
        RAISE EXCEPTION 'route % %: a download is a GET to a schema with read_file(uuid, bigint, integer)',
            method, path USING ERRCODE = '22023';
    END IF;
    IF method IN ('GET', 'DELETE') AND raw_body_param IS NOT NULL THEN
        RAISE EXCEPTION 'route % %: a % request has no body', method, path, method USING ERRCODE = '22023';
    END IF;
    INSERT INTO isa.http_routes AS r (method, path, function, auth, summary, permission, resource_param, self_param,
                                      subject_param, status, rate_limited, raw_body_param, header_params, stream)
    VALUES (method, path, function, auth, summary, permission, resource_param, self_param,
            subject_param, status, rate_limited, raw_body_param, header_params, stream)
    ON CONFLICT ON CONSTRAINT http_routes_pkey DO UPDATE
       SET function = EXCLUDED.function, auth = EXCLUDED.auth, summary = EXCLUDED.summary,
           permission = EXCLUDED.permission, resource_param = EXCLUDED.resource_param,
           self_param = EXCLUDED.self_param, subject_param = EXCLUDED.subject_param,
           status = EXCLUDED.status, rate_limited = EXCLUDED.rate_limited,
           raw_body_param = EXCLUDED.raw_body_param, header_params = EXCLUDED.header_params,
           stream = EXCLUDED.stream;
END
$$;
COMMENT ON FUNCTION isa.http_route(text, text, regprocedure, text, text, text, text, text, text, integer, boolean, text, jsonb, text) IS
    'Adds (or replaces) an isa-httpd route: METHOD /path/{arg} to a service function. Path, query and JSON body fields become the named arguments; subject_param is filled from the caller''s token; permission is checked with authz.check (resource: resource_param) unless self_param equals the caller. stream upload: the function begins an upload (returns its id) and the body goes to the schema''s put_chunk and finish_upload; stream download: the function returns a file''s info and the bytes come from the schema''s read_file, with Range. 22023 when an argument named does not exist.';

-- What isa-httpd loads: every route with its function's arguments and result
-- shape, as one JSON array (the order of the routes does not matter: a path
-- matches literal segments before parameters).
CREATE FUNCTION isa.http_route_catalogue() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'method', r.method, 'path', r.path, 'auth', r.auth, 'summary', r.summary,
               'service', s.name,
               'function', format('%I.%I', n.nspname, p.proname),
               'permission', r.permission, 'resource_param', r.resource_param,
               'self_param', r.self_param, 'subject_param', r.subject_param,
               'status', r.status, 'rate_limited', r.rate_limited,
               'raw_body_param', r.raw_body_param, 'header_params', r.header_params,
               'stream', r.stream,
               'returns', CASE WHEN p.proretset THEN 'set'
                               WHEN p.prorettype = 'void'::regtype THEN 'void'
                               ELSE 'one' END,
               'return_type', format_type(p.prorettype, NULL),
               'args', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                   'name', a.name, 'type', format_type(a.type, NULL), 'optional', a.has_default,
                                   'array', t.typcategory = 'A')
                                   ORDER BY a.pos), '[]')
                          FROM isa._http_function_args(r.function) a
                          JOIN pg_type t ON t.oid = a.type))
               ORDER BY r.path, r.method), '[]')
      FROM isa.http_routes r
      JOIN pg_proc p ON p.oid = r.function
      JOIN pg_namespace n ON n.oid = p.pronamespace
      LEFT JOIN isa.services s ON s.schema_name = n.nspname;
END;
COMMENT ON FUNCTION isa.http_route_catalogue() IS
    'The routes of isa-httpd as a JSON array: method, path, auth, function, its named arguments (type, optional) and result shape (one, set, void).';

-- The first statement of every isa-httpd request, in the request's
-- transaction: the request and the verified claims as settings (PostgREST's
-- names: request.jwt.claims, request.method, request.path, request.headers;
-- plus request.id), read-only for GET and HEAD, the statement timeout, and
-- the route's access rule.  isa-httpd has verified the token's signature and
-- times; this checks what only the database knows: that the session is live
-- and that authz grants the permission.  28000 (HTTP 401) for a dead session,
-- 42501 (HTTP 403) for a missing permission.
CREATE FUNCTION isa.http_begin(
    claims jsonb, route_method text, route_path text, self_value text, resource_value text,
    request jsonb, read_only boolean, timeout_ms integer)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_http_begin'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION isa.http_begin(jsonb, text, text, text, text, jsonb, boolean, integer) IS
    'Called by isa-httpd first in every request''s statement: sets request.jwt.claims, request.method, request.path, request.headers, request.id, statement_timeout (for the statements after it) and read-only mode, then applies the route''s access rule (live session, isa:admin, owner or authz permission). Returns true; 28000 / 42501 otherwise.';

CREATE FUNCTION isa.http_claims() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}');
END;
COMMENT ON FUNCTION isa.http_claims() IS
    'The verified JWT claims of the HTTP request being served (request.jwt.claims), NULL outside a request or for an anonymous one.';

-- The routes as the Markdown of docs/http.md (between its routes markers),
-- one table per service: docs/http.md is checked against this by the tests.
-- The access column says who passes isa.http_begin; the function column names
-- the arguments a request fills ([optional]; ← where they come from when not
-- from the path, the query or the JSON body).
CREATE FUNCTION isa.http_routes_markdown() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(x.section, E'\n' ORDER BY x.service COLLATE "C"), '')
      FROM (SELECT s.name AS service,
                   format(E'### %s\n\n| method | path | auth | access | function | summary |\n|---|---|---|---|---|---|\n', s.name)
                   || string_agg(format('| `%s`%s | `%s` | %s | %s | `%s.%s(%s)` | %s |',
                          r.method,
                          CASE WHEN p.prorettype = 'void'::regtype THEN ' (204)'
                               WHEN r.status <> 200 THEN format(' (%s)', r.status) ELSE '' END,
                          r.path,
                          r.auth || CASE WHEN r.rate_limited THEN ', rate-limited' ELSE '' END,
                          coalesce(nullif(concat_ws(' and ',
                              CASE WHEN r.auth = 'admin' THEN '`isa:admin`' END,
                              CASE WHEN r.subject_param IS NOT NULL THEN 'the caller' END,
                              CASE WHEN r.self_param IS NOT NULL AND r.permission IS NOT NULL
                                   THEN format('owner (`%s`) or `%s`%s', r.self_param, r.permission,
                                               CASE WHEN r.resource_param IS NOT NULL
                                                    THEN format(' on `%s`', r.resource_param) ELSE '' END)
                                   WHEN r.self_param IS NOT NULL THEN format('owner (`%s`)', r.self_param)
                                   WHEN r.permission IS NOT NULL
                                   THEN format('`%s`%s', r.permission,
                                               CASE WHEN r.resource_param IS NOT NULL
                                                    THEN format(' on `%s`', r.resource_param) ELSE '' END)
                              END), ''),
                              CASE r.auth WHEN 'public' THEN 'anyone' WHEN 'user' THEN 'any user' ELSE 'any device' END),
                          n.nspname, p.proname,
                          (SELECT coalesce(string_agg(
                                      CASE WHEN a.name = r.subject_param THEN a.name || ' ← token'
                                           WHEN a.name = r.raw_body_param THEN a.name || ' ← body'
                                           WHEN r.header_params ? a.name
                                           THEN format('%s ← %s', a.name, r.header_params ->> a.name)
                                           WHEN a.has_default THEN '[' || a.name || ']'
                                           ELSE a.name END, ', ' ORDER BY a.pos), '')
                             FROM isa._http_function_args(r.function) a),
                          replace(r.summary, '|', '\|')),
                      E'\n' ORDER BY r.path COLLATE "C", array_position(ARRAY['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], r.method))
                   || E'\n' AS section
              FROM isa.http_routes r
              JOIN pg_proc p ON p.oid = r.function
              JOIN pg_namespace n ON n.oid = p.pronamespace
              JOIN isa.services s ON s.schema_name = n.nspname
             GROUP BY s.name) x;
END;
COMMENT ON FUNCTION isa.http_routes_markdown() IS
    'The routes of isa-httpd (isa.http_routes) as the Markdown of docs/http.md: a table per service of method, path, auth, access rule, function with its arguments, and summary.';

-- /ready and /metrics of isa-httpd: what isa_app may see of the bridge (its
-- role reads no outbox itself).
CREATE FUNCTION isa.http_ready() RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce((SELECT b.connected FROM isa.bridge_status() b), false);
END;
COMMENT ON FUNCTION isa.http_ready() IS
    'Whether the bridge is running and connected to NATS: isa-httpd''s /ready.';

CREATE FUNCTION isa.http_metrics() RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(jsonb_agg(jsonb_build_object('metric', m.metric, 'labels', m.labels, 'value', m.value)
                              ORDER BY m.metric), '[]')
      FROM isa.metrics() m;
END;
COMMENT ON FUNCTION isa.http_metrics() IS
    'isa.metrics() as a JSON array, for isa-httpd''s /metrics.';

-- ==== sql/account.sql
-- account.sql — the account service (schema account, source account_service):
-- users (unique email among live users, soft delete), their notification
-- preferences, and the events user.created / user.updated / user.deleted.
-- Schema, outbox and inbox come from sql/services.sql.  account subscribes to
-- nothing.  docs/services/account.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE account.users (
    user_id     uuid PRIMARY KEY,                     -- UUIDv7
    email       text NOT NULL,                        -- as given (trimmed); unique case-insensitively among live users
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    notification_preferences jsonb NOT NULL DEFAULT '{"email": true, "push": true, "mqtt": false}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
COMMENT ON TABLE account.users IS
    'Users: email (unique case-insensitively among active users), name, status active/deleted (soft delete), notification preferences.';

-- One live user per email, whatever its case; a deleted user's email is free.
CREATE UNIQUE INDEX users_email_active ON account.users (lower(email)) WHERE status = 'active';

-- create_user's idempotency keys: the arguments of the first call and the
-- user it created.
CREATE TABLE account.create_requests (
    idempotency_key text PRIMARY KEY,
    email           text NOT NULL,        -- lower-cased, as compared
    name            text NOT NULL,
    user_id         uuid NOT NULL REFERENCES account.users DEFERRABLE INITIALLY DEFERRED,  -- the key is claimed before the user row exists
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account.create_requests IS
    'Idempotency keys of account.create_user: the first call''s arguments and the user it created.';

-- ---------------------------------------------------------------- types
CREATE TYPE account.user_profile AS (
    user_id    uuid,
    email      text,
    name       text,
    status     text,
    created_at timestamptz,
    updated_at timestamptz
);
COMMENT ON TYPE account.user_profile IS
    'A user as the account API returns it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('user.created', 'account_service', '1.0.0',
    'A user account was created (account.create_user).',
    '{"user_id":    {"type": "uuid",      "required": true, "description": "the new user"},
      "email":      {"type": "string",    "required": true, "description": "the email address as stored"},
      "name":       {"type": "string",    "required": true, "description": "display name"},
      "created_at": {"type": "timestamp", "required": true, "description": "when the account was created"}}');
SELECT isa.register_event_type('user.updated', 'account_service', '1.0.0',
    'A user''s email, name or notification preferences changed (account.update_user, account.set_notification_preferences).',
    '{"user_id": {"type": "uuid",   "required": true, "description": "the user"},
      "email":   {"type": "string", "required": true, "description": "the email address after the change"},
      "name":    {"type": "string", "required": true, "description": "the name after the change"},
      "changed": {"type": "array",  "required": true, "description": "names of the fields that changed: email, name, notification_preferences"}}');
SELECT isa.register_event_type('user.deleted', 'account_service', '1.0.0',
    'A user account was deleted (soft delete, account.delete_user); its email may be reused.',
    '{"user_id":    {"type": "uuid",      "required": true, "description": "the deleted user"},
      "deleted_at": {"type": "timestamp", "required": true, "description": "when it was deleted"}}');

-- ---------------------------------------------------------------- internal helpers
-- RFC 3339 UTC with microseconds, as in the envelope.
CREATE FUNCTION account._iso(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- The email trimmed, or 22004/22023.  The form checked: local@domain, at most
-- 254 characters, a local part of at most 64 characters from the RFC 5322
-- dot-atom set (no leading, trailing or double dot), a domain of at least two
-- dot-separated labels of letters, digits and inner hyphens (each at most 63),
-- the last label 2 to 63 letters or a punycode label (xn--...).
CREATE FUNCTION account._check_email(email text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e text := btrim(email, E' \t\r\n');
BEGIN
    IF email IS NULL THEN
        RAISE EXCEPTION 'email must not be null' USING ERRCODE = '22004';
    END IF;
    IF length(e) > 254
       OR length(split_part(e, '@', 1)) > 64
       OR e !~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{1,59})$' THEN
        RAISE EXCEPTION 'invalid email address "%"', left(e, 300) USING ERRCODE = '22023',
            HINT = 'An email address is local@domain.tld, at most 254 characters, without spaces.';
    END IF;
    RETURN e;
END
$$;

-- The name trimmed, or 22004/22023: 1 to 200 characters, no control characters.
CREATE FUNCTION account._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n text := btrim(name, E' \t\r\n');
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = '22004';
    END IF;
    IF n = '' THEN
        RAISE EXCEPTION 'name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF length(n) > 200 THEN
        RAISE EXCEPTION 'name is too long (% characters; at most 200)', length(n) USING ERRCODE = '22023';
    END IF;
    IF n ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    RETURN n;
END
$$;

CREATE FUNCTION account._profile(u account.users) RETURNS account.user_profile
    LANGUAGE sql IMMUTABLE
    RETURN ROW(u.user_id, u.email, u.name, u.status, u.created_at, u.updated_at)::account.user_profile;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION account.user_exists(user_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM account.users u
                    WHERE u.user_id = user_exists.user_id AND u.status = 'active');
END
$$;
COMMENT ON FUNCTION account.user_exists(uuid) IS
    'Whether a user exists and is not deleted (false for unknown, deleted or NULL).';

-- The check every service's API makes on a user id it is given.
CREATE FUNCTION account.require_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM account.users u WHERE u.user_id = require_user.user_id AND u.status = 'active') THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
END
$$;
COMMENT ON FUNCTION account.require_user(uuid) IS
    'Raises 22004 for a NULL user id and P0002 (user <id> not found) for an unknown or deleted user; the user check of the services'' APIs.';

CREATE FUNCTION account.get_user(user_id uuid) RETURNS account.user_profile
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u account.users;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO u FROM account.users x WHERE x.user_id = get_user.user_id AND x.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.get_user(uuid) IS
    'A user''s profile; P0002 if the user is unknown or deleted.';

CREATE FUNCTION account.find_user_by_email(email text) RETURNS account.user_profile
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e text := account._check_email(email);
    u account.users;
BEGIN
    SELECT * INTO u FROM account.users x WHERE lower(x.email) = lower(e) AND x.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no user with email "%"', e USING ERRCODE = 'P0002';
    END IF;
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.find_user_by_email(text) IS
    'The active user with this email, compared case-insensitively; P0002 if none, 22023 if the email is malformed.';

-- ---------------------------------------------------------------- API: writes
CREATE FUNCTION account.create_user(email text, name text, idempotency_key text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    e   text := account._check_email(email);
    n   text := account._check_name(name);
    req account.create_requests;
    u   account.users;
BEGIN
    IF idempotency_key IS NOT NULL THEN
        IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
            RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023';
        END IF;
        -- Claim the key; a concurrent call with the same key waits here for
        -- the first to commit, then finds its row.
        INSERT INTO account.create_requests (idempotency_key, email, name, user_id)
        VALUES (idempotency_key, lower(e), n, isa.uuid_v7())
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING * INTO req;
        IF NOT FOUND THEN
            SELECT * INTO req FROM account.create_requests r WHERE r.idempotency_key = create_user.idempotency_key;
            IF req.email <> lower(e) OR req.name <> n THEN
                RAISE EXCEPTION 'idempotency key "%" was already used to create another user', idempotency_key
                    USING ERRCODE = '23505',
                    HINT = 'Use a new idempotency key for a new user.';
            END IF;
            SELECT * INTO u FROM account.users x WHERE x.user_id = req.user_id;
            RETURN account._profile(u);       -- the first call's user, as it is now
        END IF;
    END IF;

    INSERT INTO account.users AS x (user_id, email, name)
    VALUES (coalesce(req.user_id, isa.uuid_v7()), e, n)
    ON CONFLICT (lower(email)) WHERE status = 'active' DO NOTHING
    RETURNING * INTO u;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
    END IF;

    PERFORM isa.publish_event('user.created', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'created_at', account._iso(u.created_at)));
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.create_user(text, text, text) IS
    'Creates a user and publishes user.created. 23505 if the email is taken or the idempotency key was used with other arguments; the same key with the same arguments returns the first call''s user.';

CREATE FUNCTION account.update_user(user_id uuid, email text DEFAULT NULL, name text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e       text := CASE WHEN email IS NOT NULL THEN account._check_email(email) END;
    n       text := CASE WHEN name IS NOT NULL THEN account._check_name(name) END;
    u       account.users;
    changed text[] := '{}';
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO u FROM account.users x
     WHERE x.user_id = update_user.user_id AND x.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;

    IF e IS NOT NULL AND e <> u.email THEN
        IF lower(e) <> lower(u.email) AND EXISTS (
               SELECT 1 FROM account.users x
                WHERE lower(x.email) = lower(e) AND x.status = 'active' AND x.user_id <> u.user_id) THEN
            RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
        END IF;
        changed := changed || 'email'::text;
        u.email := e;
    END IF;
    IF n IS NOT NULL AND n <> u.name THEN
        changed := changed || 'name'::text;
        u.name := n;
    END IF;
    IF cardinality(changed) = 0 THEN
        RETURN account._profile(u);
    END IF;

    BEGIN
        UPDATE account.users x SET email = u.email, name = u.name, updated_at = now()
         WHERE x.user_id = u.user_id
        RETURNING * INTO u;
    EXCEPTION WHEN unique_violation THEN      -- another transaction took the email meanwhile
        RAISE EXCEPTION 'email "%" is already taken', e USING ERRCODE = '23505';
    END;
    PERFORM isa.publish_event('user.updated', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'changed', to_jsonb(changed)));
    RETURN account._profile(u);
END
$$;
COMMENT ON FUNCTION account.update_user(uuid, text, text) IS
    'Changes a user''s email and/or name (NULL: unchanged); publishes user.updated with the changed fields if anything changed. P0002 unknown or deleted user, 23505 email taken.';

CREATE FUNCTION account.delete_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u account.users;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO u FROM account.users x WHERE x.user_id = delete_user.user_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    IF u.status = 'deleted' THEN
        RETURN;                                  -- a retried delete: done already, no second event
    END IF;
    UPDATE account.users x SET status = 'deleted', deleted_at = now(), updated_at = now()
     WHERE x.user_id = u.user_id
    RETURNING * INTO u;
    PERFORM isa.publish_event('user.deleted', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'deleted_at', account._iso(u.deleted_at)));
END
$$;
COMMENT ON FUNCTION account.delete_user(uuid) IS
    'Soft-deletes a user and publishes user.deleted; the email becomes free. P0002 if unknown; deleting a deleted user again does nothing.';

-- ---------------------------------------------------------------- notification preferences
CREATE FUNCTION account.get_notification_preferences(user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prefs jsonb;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT u.notification_preferences INTO prefs FROM account.users u
     WHERE u.user_id = get_notification_preferences.user_id AND u.status = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN prefs;
END
$$;
COMMENT ON FUNCTION account.get_notification_preferences(uuid) IS
    'A user''s notification preferences: {"email": bool, "push": bool, "mqtt": bool}. P0002 unknown or deleted user.';

CREATE FUNCTION account.set_notification_preferences(user_id uuid, prefs jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      text;
    v      jsonb;
    u      account.users;
    merged jsonb;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF prefs IS NULL THEN
        RAISE EXCEPTION 'prefs must not be null' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(prefs) <> 'object' THEN
        RAISE EXCEPTION 'notification preferences must be a JSON object, not %', jsonb_typeof(prefs)
            USING ERRCODE = '22023', HINT = 'For example {"email": true, "push": false, "mqtt": true}.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(prefs) LOOP
        IF k NOT IN ('email', 'push', 'mqtt') THEN
            RAISE EXCEPTION 'unknown notification channel "%"', k USING ERRCODE = '22023',
                HINT = 'Known channels: email, push, mqtt.';
        END IF;
        IF jsonb_typeof(v) <> 'boolean' THEN
            RAISE EXCEPTION 'notification channel "%" must be true or false, not %', k, v USING ERRCODE = '22023';
        END IF;
    END LOOP;

    SELECT * INTO u FROM account.users x
     WHERE x.user_id = set_notification_preferences.user_id AND x.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002';
    END IF;
    merged := u.notification_preferences || prefs;
    IF merged = u.notification_preferences THEN
        RETURN merged;
    END IF;
    UPDATE account.users x SET notification_preferences = merged, updated_at = now()
     WHERE x.user_id = u.user_id;
    PERFORM isa.publish_event('user.updated', 'account_service',
        jsonb_build_object('user_id', u.user_id, 'email', u.email, 'name', u.name,
                           'changed', jsonb_build_array('notification_preferences')));
    RETURN merged;
END
$$;
COMMENT ON FUNCTION account.set_notification_preferences(uuid, jsonb) IS
    'Merges the given channels (email, push, mqtt: booleans) into a user''s notification preferences and returns the result; publishes user.updated if anything changed. 22023 unknown channel or non-boolean value, P0002 unknown or deleted user.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA account FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    account.user_exists(uuid),
    account.require_user(uuid),
    account.get_user(uuid),
    account.find_user_by_email(text),
    account.create_user(text, text, text),
    account.update_user(uuid, text, text),
    account.delete_user(uuid),
    account.get_notification_preferences(uuid),
    account.set_notification_preferences(uuid, jsonb)
TO isa_app;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user's own account needs no permission (self_param); anyone else's needs
-- account:read / account:write / account:delete on it.  Sign-up is
-- auth.sign_up (POST /v1/auth/signup): an account is made with its password.
SELECT isa.http_route('GET', '/v1/me', 'account.get_user(uuid)', 'user',
    'The caller''s profile.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}', 'account.get_user(uuid)', 'user',
    'A user''s profile.',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}/exists', 'account.user_exists(uuid)', 'user',
    'Whether a user exists and is not deleted.',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/by-email', 'account.find_user_by_email(text)', 'user',
    'The active user with an email address, compared case-insensitively.',
    permission => 'account:read');
SELECT isa.http_route('PATCH', '/v1/accounts/{user_id}', 'account.update_user(uuid, text, text)', 'user',
    'Changes a user''s email and/or name.',
    permission => 'account:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/accounts/{user_id}', 'account.delete_user(uuid)', 'user',
    'Deletes a user (soft delete); the email becomes free.',
    permission => 'account:delete', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/accounts/{user_id}/notification-preferences',
    'account.get_notification_preferences(uuid)', 'user',
    'A user''s notification preferences: {"email": bool, "push": bool, "mqtt": bool}.',
    permission => 'account:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PATCH', '/v1/accounts/{user_id}/notification-preferences',
    'account.set_notification_preferences(uuid, jsonb)', 'user',
    'Merges the channels of prefs into a user''s notification preferences.',
    permission => 'account:write', resource_param => 'user_id', self_param => 'user_id');

-- ==== sql/authz.sql
-- authz.sql — the authorization service (schema authz, source
-- authorization_service): roles holding 'resource:action' permissions, role
-- bindings (global or in one organization), per-resource grants, and
-- authz.check, deny by default.  Every change of what a user may do publishes
-- permission.granted / permission.revoked; user.deleted removes the user's
-- bindings and grants.  docs/services/authz.md documents the API.
--
-- Built for authz.check: a binding row carries a copy of its role's
-- permissions (role_bindings.permissions, kept by the functions that change a
-- role), so the role path of a check is one probe of the (user_id, ...) index
-- of role_bindings, read index-only; the grant path is one probe of the
-- (user_id, resource_id, ...) index of grants.  Nothing else is read.

-- ---------------------------------------------------------------- permissions
-- 'resource:action': lower-case tokens (a letter, then letters, digits, _ ; at
-- most 63 characters each); the action may be '*' (every action on that
-- resource type).
CREATE FUNCTION authz._is_permission(permission text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN permission ~ '^[a-z][a-z0-9_]{0,62}:([a-z][a-z0-9_]{0,62}|\*)$';

-- The permission, or 22004 (NULL) / 22023 (malformed).
CREATE FUNCTION authz._check_permission(permission text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF permission IS NULL THEN
        RAISE EXCEPTION 'permission must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT authz._is_permission(permission) THEN
        RAISE EXCEPTION 'malformed permission "%"', left(permission, 200) USING ERRCODE = '22023',
            HINT = 'A permission is resource:action in lower-case letters, digits and _, e.g. wallet:read; the action may be * for every action.';
    END IF;
    RETURN permission;
END
$$;

-- ---------------------------------------------------------------- tables
CREATE TABLE authz.roles (
    role_id     int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description text NOT NULL CHECK (length(description) <= 1000),
    -- sorted, distinct, each a valid permission
    permissions text[] NOT NULL DEFAULT '{}' CHECK (array_position(permissions, NULL) IS NULL),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE authz.roles IS
    'Roles: a name, a description and the permissions (resource:action) the role gives.';

CREATE TABLE authz.role_bindings (
    user_id     uuid NOT NULL,
    role_id     int NOT NULL REFERENCES authz.roles,
    org_id      uuid,                              -- NULL: everywhere; else only in that organization
    permissions text[] NOT NULL,                   -- = roles.permissions of role_id, kept by the write functions
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- check's index: the user's bindings with everything it tests, read index-only.
    CONSTRAINT role_bindings_key UNIQUE NULLS NOT DISTINCT (user_id, role_id, org_id) INCLUDE (permissions)
);
CREATE INDEX role_bindings_role ON authz.role_bindings (role_id);
COMMENT ON TABLE authz.role_bindings IS
    'Which user holds which role, everywhere (org_id NULL) or in one organization; permissions copies the role''s for authz.check.';

CREATE TABLE authz.grants (
    user_id     uuid NOT NULL,
    permission  text NOT NULL CHECK (authz._is_permission(permission)),
    resource_id text NOT NULL CHECK (resource_id <> '' AND length(resource_id) <= 255),
    org_id      uuid,                              -- NULL: everywhere; else only in that organization
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- check's index: probed on (user_id, resource_id).
    CONSTRAINT grants_key UNIQUE NULLS NOT DISTINCT (user_id, resource_id, permission, org_id)
);
COMMENT ON TABLE authz.grants IS
    'Per-resource grants: a user may do permission on one resource (resource_id), everywhere or in one organization.';

-- ---------------------------------------------------------------- types
CREATE TYPE authz.role_info AS (
    name        text,
    description text,
    permissions text[],
    created_at  timestamptz,
    updated_at  timestamptz
);
COMMENT ON TYPE authz.role_info IS 'A role as the authz API returns it.';

CREATE TYPE authz.user_permission AS (
    permission    text,
    resource_type text,
    resource_id   text,      -- NULL: every resource of the type (a role's permission)
    org_id        uuid,      -- NULL: everywhere
    via           text,      -- 'role' or 'grant'
    role          text       -- the role's name when via = 'role'
);
COMMENT ON TYPE authz.user_permission IS
    'One source of a user''s permission: a role binding or a grant (authz.list_user_permissions).';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type(t.event_type, 'authorization_service', '1.0.0', t.description,
    '{"user_id":       {"type": "uuid",   "required": true,  "description": "the user"},
      "permission":    {"type": "string", "required": true,  "description": "resource:action (action may be *)"},
      "resource_type": {"type": "string", "required": true,  "description": "the resource part of the permission"},
      "resource_id":   {"type": "string", "required": false, "description": "the resource of a grant; null for a role''s permission (every resource)"},
      "org_id":        {"type": "uuid",   "required": false, "description": "the organization it is limited to; null: everywhere"},
      "via":           {"type": "string", "required": true,  "description": "role or grant"},
      "role":          {"type": "string", "required": false, "description": "the role''s name when via is role, else null"}}')
  FROM (VALUES
    ('permission.granted', 'A user gained a permission through a role binding, a permission added to a bound role, or a grant; one event per binding and permission, or per grant.'),
    ('permission.revoked', 'A user lost a permission of a role binding (unbound, role changed or deleted, user deleted) or a grant; one event per binding and permission, or per grant.')
  ) AS t (event_type, description);

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION authz._publish(event_type text, user_id uuid, permission text, resource_id text,
                               org_id uuid, via text, role text) RETURNS uuid
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    RETURN isa.publish_event(event_type, 'authorization_service',
        jsonb_build_object('user_id', user_id, 'permission', permission,
                           'resource_type', split_part(permission, ':', 1),
                           'resource_id', resource_id, 'org_id', org_id, 'via', via, 'role', role));

-- The role row, locked (FOR SHARE to bind, FOR UPDATE to change it), or 22004/P0002.
CREATE FUNCTION authz._role(name text, for_update boolean) RETURNS authz.roles
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    IF for_update THEN
        SELECT * INTO r FROM authz.roles x WHERE x.name = _role.name FOR UPDATE;
    ELSE
        SELECT * INTO r FROM authz.roles x WHERE x.name = _role.name FOR SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" not found', left(name, 200) USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;

-- The resource id, or 22004/22023.
CREATE FUNCTION authz._check_resource_id(resource_id text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF resource_id IS NULL THEN
        RAISE EXCEPTION 'resource_id must not be null' USING ERRCODE = '22004',
            HINT = 'A grant is for one resource; for every resource of a type, bind a role.';
    END IF;
    IF resource_id = '' OR length(resource_id) > 255 THEN
        RAISE EXCEPTION 'resource_id must be 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    RETURN resource_id;
END
$$;

CREATE FUNCTION authz._role_info(r authz.roles) RETURNS authz.role_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(r.name, r.description, r.permissions, r.created_at, r.updated_at)::authz.role_info;

-- ---------------------------------------------------------------- the check
CREATE FUNCTION authz.check(user_id uuid, permission text, resource_id text DEFAULT NULL, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the permission asked for and its resource's wildcard, e.g. {wallet:read, wallet:*}
    wanted text[];
BEGIN
    IF authz._is_permission($2) IS NOT TRUE THEN
        PERFORM authz._check_permission($2);        -- raises 22004 or 22023
    END IF;
    wanted := ARRAY[$2, split_part($2, ':', 1) || ':*'];
    -- "check" is a reserved word, so the arguments are $1..$4 here.
    RETURN EXISTS (SELECT 1 FROM authz.role_bindings b
                    WHERE b.user_id = $1 AND (b.org_id IS NULL OR b.org_id = $4)
                      AND b.permissions && wanted)
        OR EXISTS (SELECT 1 FROM authz.grants g
                    WHERE g.user_id = $1 AND g.resource_id = $3
                      AND g.permission = ANY (wanted)
                      AND (g.org_id IS NULL OR g.org_id = $4));
END
$$;
COMMENT ON FUNCTION authz.check(uuid, text, text, uuid) IS
    'Whether a user may do permission (resource:action) on resource_id in org_id: through a role bound everywhere or in that organization, or a grant on that resource. Deny by default: unknown users, roles and permissions give false. 22023 malformed permission.';

-- ---------------------------------------------------------------- roles
CREATE FUNCTION authz.create_role(name text, description text, permissions text[] DEFAULT '{}')
RETURNS authz.role_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    perms text[];
    r     authz.roles;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'role name must not be null' USING ERRCODE = '22004';
    END IF;
    IF name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'malformed role name "%"', left(name, 200) USING ERRCODE = '22023',
            HINT = 'A role name is 1 to 63 lower-case letters, digits, _ and -, starting with a letter.';
    END IF;
    IF description IS NULL THEN
        RAISE EXCEPTION 'description must not be null' USING ERRCODE = '22004';
    END IF;
    IF length(description) > 1000 THEN
        RAISE EXCEPTION 'description is too long (% characters; at most 1000)', length(description)
            USING ERRCODE = '22023';
    END IF;
    IF permissions IS NULL THEN
        RAISE EXCEPTION 'permissions must not be null' USING ERRCODE = '22004',
            HINT = 'Give an empty array for a role without permissions.';
    END IF;
    PERFORM authz._check_permission(p) FROM unnest(create_role.permissions) p;
    perms := ARRAY(SELECT DISTINCT p FROM unnest(create_role.permissions) p ORDER BY p);

    INSERT INTO authz.roles (name, description, permissions)
    VALUES (create_role.name, create_role.description, perms)
    ON CONFLICT (name) DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        SELECT * INTO r FROM authz.roles x WHERE x.name = create_role.name;
        IF r.description IS DISTINCT FROM create_role.description OR r.permissions <> perms THEN
            RAISE EXCEPTION 'role "%" already exists', r.name USING ERRCODE = '23505',
                HINT = 'Change a role with authz.add_role_permission and authz.remove_role_permission.';
        END IF;
    END IF;
    RETURN authz._role_info(r);          -- new, or the same role created before (a retry)
END
$$;
COMMENT ON FUNCTION authz.create_role(text, text, text[]) IS
    'Creates a role with its permissions; the same call again returns the role. 23505 if the name exists with another description or permissions; 22023 malformed name or permission.';

CREATE FUNCTION authz.get_role(name text) RETURNS authz.role_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO r FROM authz.roles x WHERE x.name = get_role.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" not found', left(name, 200) USING ERRCODE = 'P0002';
    END IF;
    RETURN authz._role_info(r);
END
$$;
COMMENT ON FUNCTION authz.get_role(text) IS 'A role with its permissions; P0002 if unknown.';

CREATE FUNCTION authz.list_roles() RETURNS SETOF authz.role_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT r.name, r.description, r.permissions, r.created_at, r.updated_at
                   FROM authz.roles r ORDER BY r.name;
END
$$;
COMMENT ON FUNCTION authz.list_roles() IS 'Every role with its permissions, by name.';

CREATE FUNCTION authz.add_role_permission(role text, permission text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := authz._check_permission(permission);
    r authz.roles := authz._role(role, true);
BEGIN
    IF p = ANY (r.permissions) THEN
        RETURN false;                                  -- already there: nothing changes
    END IF;
    r.permissions := ARRAY(SELECT x FROM unnest(r.permissions || p) x ORDER BY x);
    UPDATE authz.roles x SET permissions = r.permissions, updated_at = now() WHERE x.role_id = r.role_id;
    UPDATE authz.role_bindings b SET permissions = r.permissions WHERE b.role_id = r.role_id;
    PERFORM authz._publish('permission.granted', b.user_id, p, NULL, b.org_id, 'role', r.name)
       FROM authz.role_bindings b WHERE b.role_id = r.role_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.add_role_permission(text, text) IS
    'Adds a permission to a role: true if added, false if the role had it. Publishes permission.granted for every binding of the role. P0002 unknown role, 22023 malformed permission.';

CREATE FUNCTION authz.remove_role_permission(role text, permission text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := authz._check_permission(permission);
    r authz.roles := authz._role(role, true);
BEGIN
    IF NOT p = ANY (r.permissions) THEN
        RETURN false;                                  -- not there: nothing changes
    END IF;
    r.permissions := array_remove(r.permissions, p);
    UPDATE authz.roles x SET permissions = r.permissions, updated_at = now() WHERE x.role_id = r.role_id;
    UPDATE authz.role_bindings b SET permissions = r.permissions WHERE b.role_id = r.role_id;
    PERFORM authz._publish('permission.revoked', b.user_id, p, NULL, b.org_id, 'role', r.name)
       FROM authz.role_bindings b WHERE b.role_id = r.role_id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.remove_role_permission(text, text) IS
    'Removes a permission from a role: true if removed, false if the role did not have it. Publishes permission.revoked for every binding of the role. P0002 unknown role, 22023 malformed permission.';

CREATE FUNCTION authz.delete_role(role text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles := authz._role(role, true);
    n bigint;
BEGIN
    WITH gone AS (DELETE FROM authz.role_bindings b WHERE b.role_id = r.role_id RETURNING b.user_id, b.org_id)
    SELECT count(authz._publish('permission.revoked', g.user_id, p, NULL, g.org_id, 'role', r.name)) INTO n
      FROM gone g, unnest(r.permissions) p;
    DELETE FROM authz.roles x WHERE x.role_id = r.role_id;
END
$$;
COMMENT ON FUNCTION authz.delete_role(text) IS
    'Deletes a role and its bindings, publishing permission.revoked for every binding and permission. P0002 unknown role.';

-- ---------------------------------------------------------------- bindings
CREATE FUNCTION authz.bind_role(user_id uuid, role text, org_id uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r authz.roles;
BEGIN
    PERFORM account.require_user(user_id);
    r := authz._role(role, false);      -- FOR SHARE: the role's permissions cannot change until commit
    INSERT INTO authz.role_bindings AS b (user_id, role_id, org_id, permissions)
    VALUES (bind_role.user_id, r.role_id, bind_role.org_id, r.permissions)
    ON CONFLICT ON CONSTRAINT role_bindings_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                   -- bound already: nothing changes
    END IF;
    PERFORM authz._publish('permission.granted', bind_role.user_id, p, NULL, bind_role.org_id, 'role', r.name)
       FROM unnest(r.permissions) p;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.bind_role(uuid, text, uuid) IS
    'Gives a user a role, everywhere (org_id NULL) or in one organization: true if bound, false if it was. Publishes permission.granted per permission of the role. P0002 unknown or deleted user, unknown role.';

CREATE FUNCTION authz.unbind_role(user_id uuid, role text, org_id uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     authz.roles;
    perms text[];
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    r := authz._role(role, false);
    DELETE FROM authz.role_bindings b
     WHERE b.user_id = unbind_role.user_id AND b.role_id = r.role_id
       AND b.org_id IS NOT DISTINCT FROM unbind_role.org_id
    RETURNING b.permissions INTO perms;
    IF NOT FOUND THEN
        RETURN false;                   -- not bound: nothing changes
    END IF;
    PERFORM authz._publish('permission.revoked', unbind_role.user_id, p, NULL, unbind_role.org_id, 'role', r.name)
       FROM unnest(perms) p;
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.unbind_role(uuid, text, uuid) IS
    'Takes a role binding away (the one with exactly this org_id): true if removed, false if there was none. Publishes permission.revoked per permission of the role. P0002 unknown role.';

-- ---------------------------------------------------------------- grants
CREATE FUNCTION authz.grant_permission(user_id uuid, permission text, resource_id text, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p   text := authz._check_permission(permission);
    res text := authz._check_resource_id(resource_id);
BEGIN
    PERFORM account.require_user(user_id);
    INSERT INTO authz.grants AS g (user_id, permission, resource_id, org_id)
    VALUES (grant_permission.user_id, p, res, grant_permission.org_id)
    ON CONFLICT ON CONSTRAINT grants_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                   -- granted already: nothing changes
    END IF;
    PERFORM authz._publish('permission.granted', grant_permission.user_id, p, res, grant_permission.org_id, 'grant', NULL);
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.grant_permission(uuid, text, text, uuid) IS
    'Lets a user do permission on one resource, everywhere (org_id NULL) or in one organization: true if granted, false if it was. Publishes permission.granted. P0002 unknown or deleted user, 22023 malformed permission or resource id.';

CREATE FUNCTION authz.revoke_permission(user_id uuid, permission text, resource_id text, org_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p   text := authz._check_permission(permission);
    res text := authz._check_resource_id(resource_id);
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM authz.grants g
     WHERE g.user_id = revoke_permission.user_id AND g.resource_id = res AND g.permission = p
       AND g.org_id IS NOT DISTINCT FROM revoke_permission.org_id;
    IF NOT FOUND THEN
        RETURN false;                   -- no such grant: nothing changes
    END IF;
    PERFORM authz._publish('permission.revoked', revoke_permission.user_id, p, res, revoke_permission.org_id, 'grant', NULL);
    RETURN true;
END
$$;
COMMENT ON FUNCTION authz.revoke_permission(uuid, text, text, uuid) IS
    'Takes a grant away (the one with exactly this org_id): true if removed, false if there was none. Publishes permission.revoked. 22023 malformed permission or resource id.';

-- ---------------------------------------------------------------- listing
CREATE FUNCTION authz.list_user_permissions(user_id uuid, org_id uuid DEFAULT NULL)
RETURNS SETOF authz.user_permission
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    RETURN QUERY
    SELECT s.permission, split_part(s.permission, ':', 1), s.resource_id, s.org_id, s.via, s.role
      FROM (SELECT p AS permission, NULL::text AS resource_id, b.org_id, 'role'::text AS via, r.name AS role
              FROM authz.role_bindings b
              JOIN authz.roles r ON r.role_id = b.role_id
             CROSS JOIN unnest(b.permissions) p
             WHERE b.user_id = list_user_permissions.user_id
               AND (b.org_id IS NULL OR b.org_id = list_user_permissions.org_id)
            UNION ALL
            SELECT g.permission, g.resource_id, g.org_id, 'grant', NULL
              FROM authz.grants g
             WHERE g.user_id = list_user_permissions.user_id
               AND (g.org_id IS NULL OR g.org_id = list_user_permissions.org_id)) s
     ORDER BY s.permission, s.resource_id NULLS FIRST, s.org_id NULLS FIRST, s.via, s.role;
END
$$;
COMMENT ON FUNCTION authz.list_user_permissions(uuid, uuid) IS
    'What a user may do in org_id (NULL: outside any organization): one row per role binding and permission, and per grant, that authz.check would count there.';

-- ---------------------------------------------------------------- subscriptions
-- account_service.user.deleted: the user's bindings and grants go, each
-- published as permission.revoked.  Idempotent: a second delivery finds nothing.
CREATE FUNCTION authz.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid_text text := e.data ->> 'user_id';
    uid      uuid;
    n        bigint;
BEGIN
    IF uid_text IS NULL OR uid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        -- Bad data, not a transient failure: retrying would not help.
        RAISE WARNING 'authz.on_user_deleted: event % has no valid data.user_id (%), ignored', e.id, uid_text;
        RETURN;
    END IF;
    uid := uid_text::uuid;
    WITH gone AS (DELETE FROM authz.role_bindings b WHERE b.user_id = uid
                  RETURNING b.role_id, b.org_id, b.permissions)
    SELECT count(authz._publish('permission.revoked', uid, p, NULL, g.org_id, 'role', r.name)) INTO n
      FROM gone g JOIN authz.roles r ON r.role_id = g.role_id, unnest(g.permissions) p;
    WITH gone AS (DELETE FROM authz.grants g WHERE g.user_id = uid
                  RETURNING g.permission, g.resource_id, g.org_id)
    SELECT count(authz._publish('permission.revoked', uid, g.permission, g.resource_id, g.org_id, 'grant', NULL)) INTO n
      FROM gone g;
END
$$;
COMMENT ON FUNCTION authz.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: removes the user''s role bindings and grants, publishing permission.revoked for each.';

SELECT isa.subscribe_to_events('authorization', 'account_service.user.deleted',
                               'authz.on_user_deleted(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- privileges
-- Every API function is for isa_app; the HTTP front decides which callers may
-- reach the role-changing ones (docs/services/authz.md, "Who may call what").
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA authz FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    authz.check(uuid, text, text, uuid),
    authz.create_role(text, text, text[]),
    authz.get_role(text),
    authz.list_roles(),
    authz.add_role_permission(text, text),
    authz.remove_role_permission(text, text),
    authz.delete_role(text),
    authz.bind_role(uuid, text, uuid),
    authz.unbind_role(uuid, text, uuid),
    authz.grant_permission(uuid, text, text, uuid),
    authz.revoke_permission(uuid, text, text, uuid),
    authz.list_user_permissions(uuid, uuid)
TO isa_app;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Anyone may ask about their own permissions (self_param); asking about
-- another user, or reading roles, needs authz:read.  Changing roles, bindings
-- and grants is for administrators (isa:admin).
SELECT isa.http_route('GET', '/v1/authz/check', 'authz.check(uuid, text, text, uuid)', 'user',
    'Whether a user may do permission on resource_id in org_id.',
    permission => 'authz:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/authz/users/{user_id}/permissions', 'authz.list_user_permissions(uuid, uuid)', 'user',
    'What a user may do in org_id: one row per role binding and permission, and per grant.',
    permission => 'authz:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/authz/roles', 'authz.list_roles()', 'user',
    'Every role with its permissions.', permission => 'authz:read');
SELECT isa.http_route('GET', '/v1/authz/roles/{name}', 'authz.get_role(text)', 'user',
    'A role with its permissions.', permission => 'authz:read');
SELECT isa.http_route('POST', '/v1/authz/roles', 'authz.create_role(text, text, text[])', 'admin',
    'Creates a role with its permissions.', status => 201);
SELECT isa.http_route('DELETE', '/v1/authz/roles/{role}', 'authz.delete_role(text)', 'admin',
    'Deletes a role and its bindings.');
SELECT isa.http_route('POST', '/v1/authz/roles/{role}/permissions', 'authz.add_role_permission(text, text)', 'admin',
    'Adds a permission to a role: true if added, false if the role had it.');
SELECT isa.http_route('DELETE', '/v1/authz/roles/{role}/permissions/{permission}',
    'authz.remove_role_permission(text, text)', 'admin',
    'Removes a permission from a role: true if removed, false if the role did not have it.');
SELECT isa.http_route('POST', '/v1/authz/users/{user_id}/roles', 'authz.bind_role(uuid, text, uuid)', 'admin',
    'Gives a user a role, everywhere or in one organization: true if bound, false if it was.');
SELECT isa.http_route('DELETE', '/v1/authz/users/{user_id}/roles/{role}', 'authz.unbind_role(uuid, text, uuid)', 'admin',
    'Takes a role binding away (the one with exactly this org_id): true if removed.');
SELECT isa.http_route('POST', '/v1/authz/users/{user_id}/grants', 'authz.grant_permission(uuid, text, text, uuid)', 'admin',
    'Lets a user do permission on one resource: true if granted, false if it was.');
SELECT isa.http_route('DELETE', '/v1/authz/users/{user_id}/grants', 'authz.revoke_permission(uuid, text, text, uuid)', 'admin',
    'Takes a grant away (the one with exactly this org_id): true if removed.');

-- ==== sql/auth.sql
-- auth.sql — the auth service (schema auth, source auth_service): passwords
-- (argon2id), login with a throttle, JWT access tokens (EdDSA or HS256, kid
-- rotation), rotating refresh tokens whose reuse revokes the session, device
-- challenge/response authentication, and the handlers that end sessions when
-- a user is deleted or loses a permission.  docs/services/auth.md describes it;
-- the C is extension/auth.c (settings, passwords, Ed25519), extension/jwt.c
-- (tokens) and extension/auth_shmem.c (the tables in shared memory).

-- ---------------------------------------------------------------- tables
CREATE TABLE auth.passwords (
    user_id    uuid PRIMARY KEY,                     -- account's user (no FK across schemas)
    hash       text NOT NULL CHECK (hash LIKE '$argon2id$%'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE auth.passwords IS
    'Password hashes (argon2id, libsodium crypto_pwhash_str) per user.';

CREATE TABLE auth.signing_keys (
    kid         text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    algorithm   text NOT NULL DEFAULT 'EdDSA' CHECK (algorithm = 'EdDSA'),
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    private_key bytea NOT NULL CHECK (length(private_key) = 64),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at  timestamptz
);
COMMENT ON TABLE auth.signing_keys IS
    'Ed25519 JWT signing keys: the newest unretired key signs, every unretired key verifies. kid is the RFC 7638 thumbprint of the public key. Only the owner may read private_key.';

CREATE TABLE auth.sessions (
    session_id    uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    kind          text NOT NULL CHECK (kind IN ('user', 'device')),
    user_id       uuid,                              -- NULL for a device without an owner
    device_id     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,              -- the end of its last refresh token (user) or token (device)
    revoked_at    timestamptz,
    revoke_reason text CHECK (revoke_reason IN ('logout', 'user_deleted', 'permission_revoked', 'refresh_reuse',
                                                'password_changed')),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK (kind = 'user' AND user_id IS NOT NULL AND device_id IS NULL
        OR kind = 'device' AND device_id IS NOT NULL)
);
CREATE INDEX sessions_user_active ON auth.sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires ON auth.sessions (expires_at);
COMMENT ON TABLE auth.sessions IS
    'Logins (kind user) and device authentications (kind device); a session is the family of its refresh tokens. Revoked sessions stay until they expire.';

CREATE TABLE auth.refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),   -- sha256 of the token text
    session_id uuid NOT NULL REFERENCES auth.sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz                                          -- rotated: presenting it again is reuse
);
CREATE INDEX refresh_tokens_session ON auth.refresh_tokens (session_id);
COMMENT ON TABLE auth.refresh_tokens IS
    'Refresh tokens, stored only as their SHA-256; each refresh marks the token used and issues the next one of its session.';

CREATE TABLE auth.devices (
    device_id     text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),
    user_id       uuid,                              -- owner, if any
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_authenticated_at timestamptz
);
COMMENT ON TABLE auth.devices IS
    'Device credentials: the Ed25519 public key each device proves possession of.';

CREATE TABLE auth.device_challenges (
    nonce      text PRIMARY KEY,
    device_id  text NOT NULL REFERENCES auth.devices ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX device_challenges_device ON auth.device_challenges (device_id);
CREATE INDEX device_challenges_expires ON auth.device_challenges (expires_at);
COMMENT ON TABLE auth.device_challenges IS
    'Outstanding device challenges (nonces), valid 60 seconds and consumed by a successful authentication.';

-- ---------------------------------------------------------------- result types
CREATE TYPE auth.tokens AS (
    access_token  text,
    refresh_token text,
    token_type    text,
    expires_in    integer,
    user_id       uuid,
    session_id    uuid
);
COMMENT ON TYPE auth.tokens IS 'What auth.login and auth.refresh return.';

CREATE TYPE auth.challenge AS (
    nonce      text,
    expires_at timestamptz
);
COMMENT ON TYPE auth.challenge IS 'What auth.device_challenge returns: the nonce to sign and when it expires.';

CREATE TYPE auth.device_token AS (
    access_token text,
    token_type   text,
    expires_in   integer,
    device_id    text,
    session_id   uuid
);
COMMENT ON TYPE auth.device_token IS 'What auth.device_authenticate returns.';

-- ---------------------------------------------------------------- C (extension/auth.c, jwt.c, auth_shmem.c)
CREATE FUNCTION auth._shmem_available() RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_shmem_available' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._throttle_attempt(email text) RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_attempt' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._throttle_reset(email text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_reset' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._throttle_state(email text, OUT failures integer, OUT locked_until timestamptz)
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_state' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._flag_session(session_id uuid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_flag_session' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._session_flagged(session_id uuid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_session_flagged' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._flagged_sessions() RETURNS uuid[]
    AS 'MODULE_PATHNAME', 'isa_auth_flagged_sessions' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._unflag_at_commit(session_ids uuid[]) RETURNS void
    AS 'MODULE_PATHNAME', 'isa_auth_unflag_at_commit' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._jwt_algorithm() RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_algorithm' LANGUAGE C STABLE;
CREATE FUNCTION auth._lifetime(what text) RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_auth_lifetime' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._hash_password(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_hash_password' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._verify_password(hash text, password text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_verify_password' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._password_needs_rehash(hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_password_needs_rehash' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._ed25519_keypair(OUT public_key bytea, OUT secret_key bytea)
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_keypair' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._ed25519_sign(secret_key bytea, message bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_sign' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION auth._ed25519_verify(public_key bytea, message bytea, signature bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_verify' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION auth._jwt_kid(token text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_kid' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._jwt_verify(token text, public_key bytea) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_verify' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._jwt_encode(claims jsonb, kid text, secret_key bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_encode' LANGUAGE C VOLATILE;

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('user.logged_in', 'auth_service', '1.0.0',
    'A user logged in with a password: a new session began.',
    '{"user_id":    {"type": "uuid",   "required": true, "description": "The user."},
      "session_id": {"type": "uuid",   "required": true, "description": "The new session (the sid claim of its tokens)."},
      "method":     {"type": "string", "required": true, "description": "How the user authenticated: password."}}');
SELECT isa.register_event_type('user.logged_out', 'auth_service', '1.0.0',
    'A session ended: its refresh tokens and access tokens are refused from now on.',
    '{"user_id":    {"type": "uuid",   "required": true, "description": "The user of the session."},
      "session_id": {"type": "uuid",   "required": true, "description": "The session that ended."},
      "reason":     {"type": "string", "required": true, "description": "logout, user_deleted, permission_revoked, refresh_reuse or password_changed."}}');
SELECT isa.register_event_type('device.authenticated', 'auth_service', '1.0.0',
    'A device proved possession of its key (challenge/response) and received a device token.',
    '{"device_id":  {"type": "string", "required": true,  "description": "The device."},
      "session_id": {"type": "uuid",   "required": true,  "description": "The device session (the sid claim of its token)."},
      "user_id":    {"type": "uuid",   "required": false, "description": "The device''s owner; null when it has none."}}');

-- ---------------------------------------------------------------- internals
CREATE FUNCTION auth._refuse(message text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = '28000';
END
$$;

-- Signs claims with the configured algorithm: the newest unretired Ed25519
-- key (EdDSA) or isa.jwt_secret (HS256).  Not granted: tests use it to build
-- tokens with any claims.
CREATE FUNCTION auth._sign_jwt(claims jsonb) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k auth.signing_keys;
BEGIN
    IF auth._jwt_algorithm() = 'HS256' THEN
        RETURN auth._jwt_encode(claims, NULL, NULL);
    END IF;
    SELECT * INTO k FROM auth.signing_keys s WHERE s.retired_at IS NULL
     ORDER BY s.created_at DESC, s.kid LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'there is no signing key' USING ERRCODE = '55000',
            HINT = 'Create one with SELECT auth.rotate_signing_key().';
    END IF;
    RETURN auth._jwt_encode(claims, k.kid, k.private_key);
END
$$;

-- The claims of a token whose header, signature (by an unretired key) and
-- exp/nbf/iat/iss/aud are valid; 28000 naming the reason.  Says nothing of
-- the session: auth.verify_token does.
CREATE FUNCTION auth._verify_jwt(token text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kid text := auth._jwt_kid(token);
    k     auth.signing_keys;
BEGIN
    IF auth._jwt_algorithm() = 'HS256' THEN
        RETURN auth._jwt_verify(token, NULL);
    END IF;
    SELECT * INTO k FROM auth.signing_keys s WHERE s.kid = v_kid;
    IF NOT FOUND THEN
        PERFORM auth._refuse('invalid token: unknown signing key');
    ELSIF k.retired_at IS NOT NULL THEN
        PERFORM auth._refuse('invalid token: signing key retired');
    END IF;
    RETURN auth._jwt_verify(token, k.public_key);
END
$$;

-- An access token (typ access, sub = user id) or device token (typ device,
-- sub = device id) for a session.
CREATE FUNCTION auth._access_token(sub text, sid uuid, typ text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_s bigint := floor(extract(epoch FROM clock_timestamp()))::bigint;
BEGIN
    RETURN auth._sign_jwt(jsonb_build_object(
        'iss', current_setting('isa.jwt_issuer'),
        'aud', current_setting('isa.jwt_audience'),
        'sub', sub,
        'sid', sid,
        'iat', now_s,
        'nbf', now_s,
        'exp', now_s + auth._lifetime('access'),
        'jti', gen_random_uuid(),
        'typ', typ));
END
$$;

-- A new refresh token of a session: 32 random bytes, base64url; only its
-- SHA-256 is stored.
CREATE FUNCTION auth._issue_refresh_token(sid uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token   text := isa.base64url_encode(isa.random_bytes(32));
    expires timestamptz := now() + make_interval(secs => auth._lifetime('refresh'));
BEGIN
    INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
    VALUES (sha256(convert_to(token, 'UTF8')), sid, expires);
    UPDATE auth.sessions s SET expires_at = expires WHERE s.session_id = sid;
    RETURN token;
END
$$;

-- Ends every active session of a user but `keep`; one user.logged_out per session.
CREATE FUNCTION auth._revoke_user_sessions(uid uuid, reason text, keep uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    WITH r AS (
        UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = reason
         WHERE s.user_id = uid AND s.revoked_at IS NULL AND s.session_id IS DISTINCT FROM keep
        RETURNING s.session_id, s.user_id)
    SELECT count(isa.publish_event('user.logged_out', 'auth_service',
                 jsonb_build_object('user_id', r.user_id, 'session_id', r.session_id, 'reason', reason)))
      INTO n FROM r;
    RETURN n;
END
$$;

-- Ends one session if it is active; true if it did.  A device session
-- without an owner ends without an event (user.logged_out names a user).
CREATE FUNCTION auth._revoke_session(sid uuid, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid;
BEGIN
    UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = reason
     WHERE s.session_id = sid AND s.revoked_at IS NULL
    RETURNING s.user_id INTO uid;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF uid IS NOT NULL THEN
        PERFORM isa.publish_event('user.logged_out', 'auth_service',
            jsonb_build_object('user_id', uid, 'session_id', sid, 'reason', reason));
    END IF;
    RETURN true;
END
$$;

-- Writes the revocations that refresh-token reuse flagged in shared memory
-- (auth.refresh raises, so it cannot write them itself).  The flags go when
-- this transaction commits.  Called by login, refresh, logout and
-- auth.housekeeping(); a read-only transaction leaves them for later.
CREATE FUNCTION auth._persist_flagged_sessions() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids uuid[] := auth._flagged_sessions();
    n   integer;
BEGIN
    IF ids IS NULL OR current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    WITH r AS (
        UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = 'refresh_reuse'
         WHERE s.session_id = ANY (ids) AND s.revoked_at IS NULL
        RETURNING s.session_id, s.user_id)
    SELECT count(isa.publish_event('user.logged_out', 'auth_service',
                 jsonb_build_object('user_id', r.user_id, 'session_id', r.session_id, 'reason', 'refresh_reuse')))
      INTO n FROM r;
    -- now revoked (pending this commit), revoked before, or gone: all done
    PERFORM auth._unflag_at_commit(ids);
    RETURN n;
END
$$;

-- ---------------------------------------------------------------- API: passwords and login
CREATE FUNCTION auth.set_password(user_id uuid, password text, keep_session uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF password IS NULL THEN
        RAISE EXCEPTION 'password must not be null' USING ERRCODE = '22004';
    END IF;
    IF length(password) NOT BETWEEN 8 AND 1024 THEN
        RAISE EXCEPTION 'a password has 8 to 1024 characters, not %', length(password) USING ERRCODE = '22023';
    END IF;
    PERFORM account.require_user(user_id);
    INSERT INTO auth.passwords AS p (user_id, hash)
    VALUES (set_password.user_id, auth._hash_password(password))
    ON CONFLICT ON CONSTRAINT passwords_pkey
    DO UPDATE SET hash = excluded.hash, updated_at = now();
    -- whoever knew the old password must not stay logged in with it
    PERFORM auth._revoke_user_sessions(set_password.user_id, 'password_changed', keep_session);
END
$$;
COMMENT ON FUNCTION auth.set_password(uuid, text, uuid) IS
    'Sets (or replaces) a user''s password, hashed with argon2id, and ends the user''s sessions except keep_session (user.logged_out reason password_changed). 22023 unless 8 to 1024 characters, P0002 unknown or deleted user.';

-- Sign-up over HTTP: the account (account.create_user) and its password in
-- one transaction, so that a new user can log in.  A retry with the same
-- idempotency key and arguments (the password too) returns the first call's
-- user and changes nothing.
CREATE FUNCTION auth.sign_up(email text, name text, password text, idempotency_key text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    profile account.user_profile;
    pw_hash text;
BEGIN
    IF password IS NULL THEN
        RAISE EXCEPTION 'password must not be null' USING ERRCODE = '22004';
    END IF;
    profile := account.create_user(email, name, idempotency_key);
    SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = profile.user_id;
    IF NOT FOUND THEN
        PERFORM auth.set_password(profile.user_id, password);
    ELSIF octet_length(password) > 4096 OR NOT auth._verify_password(pw_hash, password) THEN
        RAISE EXCEPTION 'idempotency key "%" was already used to sign up with another password', idempotency_key
            USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new sign-up.';
    END IF;
    RETURN profile;
END
$$;
COMMENT ON FUNCTION auth.sign_up(text, text, text, text) IS
    'Creates a user (account.create_user, user.created) with a password (auth.set_password) in one transaction. The same idempotency key with the same arguments returns the first call''s user; 23505 email taken or key used with other arguments, 22023 malformed email, name or password.';

-- A user's own password change: the current password proves it is the user,
-- not someone holding a stolen access token.
CREATE FUNCTION auth.change_password(user_id uuid, current_password text, new_password text,
                                     keep_session uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pw_hash text;
BEGIN
    IF user_id IS NULL OR current_password IS NULL OR new_password IS NULL THEN
        RAISE EXCEPTION '% must not be null',
            CASE WHEN user_id IS NULL THEN 'user_id' WHEN current_password IS NULL THEN 'current_password'
                 ELSE 'new_password' END USING ERRCODE = '22004';
    END IF;
    PERFORM account.require_user(user_id);
    SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = change_password.user_id;
    -- no password yet: a dummy verification costs the same time
    IF octet_length(current_password) > 4096 OR NOT auth._verify_password(pw_hash, current_password) THEN
        RAISE EXCEPTION 'the current password is wrong' USING ERRCODE = '28000';
    END IF;
    PERFORM auth.set_password(user_id, new_password, keep_session);
END
$$;
COMMENT ON FUNCTION auth.change_password(uuid, text, text, uuid) IS
    'Changes a user''s password after checking the current one, then ends the user''s sessions except keep_session (auth.set_password). 28000 wrong current password, 22023 new password not 8 to 1024 characters, P0002 unknown or deleted user.';

CREATE FUNCTION auth.login(email text, password text) RETURNS auth.tokens
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    norm    text;
    wait    integer;
    profile account.user_profile;
    pw_hash text;
    result  auth.tokens;
BEGIN
    IF email IS NULL OR password IS NULL THEN
        RAISE EXCEPTION 'email and password must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION 'login is unavailable: isa is not in shared_preload_libraries' USING ERRCODE = '55000',
            HINT = 'The login throttle lives in shared memory: add isa to shared_preload_libraries and restart PostgreSQL.';
    END IF;

    norm := lower(btrim(email, E' \t\r\n'));
    wait := auth._throttle_attempt(norm);       -- counts this attempt until a success resets it
    IF wait > 0 THEN
        RAISE EXCEPTION 'too many failed logins for this email: try again in % seconds', wait
            USING ERRCODE = '28P01',
            DETAIL = format('Locked until %s.', to_char((clock_timestamp() + make_interval(secs => wait)) AT TIME ZONE 'UTC',
                                                        'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            HINT = 'Wait, or ask an administrator to run auth.reset_login_throttle(email).';
    END IF;

    IF octet_length(password) <= 4096 THEN
        BEGIN
            profile := account.find_user_by_email(email);
        EXCEPTION WHEN no_data_found OR invalid_parameter_value THEN
            profile := NULL;
        END;
        IF profile.user_id IS NOT NULL THEN
            SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = profile.user_id;
        END IF;
        -- unknown email or no password: a dummy verification costs the same time
        IF auth._verify_password(pw_hash, password) THEN
            result.user_id := profile.user_id;
        END IF;
    END IF;
    IF result.user_id IS NULL THEN
        RAISE EXCEPTION 'invalid email or password' USING ERRCODE = '28000';
    END IF;

    PERFORM auth._throttle_reset(norm);
    IF auth._password_needs_rehash(pw_hash) THEN
        UPDATE auth.passwords p SET hash = auth._hash_password(password), updated_at = now()
         WHERE p.user_id = result.user_id;
    END IF;

    INSERT INTO auth.sessions (kind, user_id, expires_at)
    VALUES ('user', result.user_id, now())
    RETURNING session_id INTO result.session_id;
    result.refresh_token := auth._issue_refresh_token(result.session_id);
    result.access_token := auth._access_token(result.user_id::text, result.session_id, 'access');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    PERFORM isa.publish_event('user.logged_in', 'auth_service',
        jsonb_build_object('user_id', result.user_id, 'session_id', result.session_id, 'method', 'password'));
    PERFORM auth._persist_flagged_sessions();
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.login(text, text) IS
    'Email + password -> access token, refresh token and a new session; publishes user.logged_in. 28000 invalid email or password (the same for both), 28P01 throttled, 55000 isa not preloaded.';

CREATE FUNCTION auth.refresh(refresh_token text) RETURNS auth.tokens
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t      auth.refresh_tokens;
    s      auth.sessions;
    result auth.tokens;
BEGIN
    IF refresh_token IS NULL THEN
        RAISE EXCEPTION 'refresh_token must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION 'refresh is unavailable: isa is not in shared_preload_libraries' USING ERRCODE = '55000',
            HINT = 'Refresh-token reuse is recorded in shared memory: add isa to shared_preload_libraries and restart PostgreSQL.';
    END IF;
    IF refresh_token !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;

    -- The row lock serialises two refreshes with one token: the second sees it used.
    SELECT * INTO t FROM auth.refresh_tokens r
     WHERE r.token_hash = sha256(convert_to(refresh_token, 'UTF8')) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.session_id = t.session_id;
    IF s.revoked_at IS NOT NULL OR auth._session_flagged(s.session_id) THEN
        RAISE EXCEPTION 'invalid refresh token: the session was revoked' USING ERRCODE = '28000';
    END IF;
    IF t.used_at IS NOT NULL THEN
        -- Reuse of a rotated token: someone else holds the family.  The error
        -- below rolls back what this call writes, so the revocation goes to
        -- shared memory; the next committing auth call writes it.
        IF NOT auth._flag_session(s.session_id) THEN
            RAISE WARNING 'auth: the table of sessions revoked for refresh-token reuse is full; session % is not revoked',
                s.session_id;
        END IF;
        RAISE EXCEPTION 'invalid refresh token: reuse detected, the session is revoked' USING ERRCODE = '28000',
            HINT = 'Log in again.';
    END IF;
    IF t.expires_at <= now() THEN
        RAISE EXCEPTION 'invalid refresh token: expired' USING ERRCODE = '28000';
    END IF;
    IF NOT account.user_exists(s.user_id) THEN
        RAISE EXCEPTION 'invalid refresh token: the user no longer exists' USING ERRCODE = '28000';
    END IF;

    UPDATE auth.refresh_tokens r SET used_at = now() WHERE r.token_hash = t.token_hash;
    result.refresh_token := auth._issue_refresh_token(s.session_id);
    result.access_token := auth._access_token(s.user_id::text, s.session_id, 'access');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    result.user_id := s.user_id;
    result.session_id := s.session_id;
    PERFORM auth._persist_flagged_sessions();
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.refresh(text) IS
    'Rotates a refresh token: marks it used, returns a new access token and refresh token of the same session. 28000 unknown, expired, revoked or reused token (reuse revokes the session and publishes user.logged_out reason refresh_reuse).';

CREATE FUNCTION auth.logout(refresh_token text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid uuid;
    done boolean;
BEGIN
    IF refresh_token IS NULL THEN
        RAISE EXCEPTION 'refresh_token must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT r.session_id INTO sid FROM auth.refresh_tokens r
     WHERE r.token_hash = sha256(convert_to(refresh_token, 'UTF8'));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;
    done := auth._revoke_session(sid, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN done;
END
$$;
COMMENT ON FUNCTION auth.logout(text) IS
    'Ends the session of a refresh token (any token of the session); publishes user.logged_out reason logout. true if it ended the session, false if it had ended already. 28000 unknown token.';

CREATE FUNCTION auth.logout(session_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean;
BEGIN
    IF session_id IS NULL THEN
        RAISE EXCEPTION 'session_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM auth.sessions s WHERE s.session_id = logout.session_id) THEN
        RAISE EXCEPTION 'session % not found', session_id USING ERRCODE = 'P0002';
    END IF;
    done := auth._revoke_session(session_id, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN done;
END
$$;
COMMENT ON FUNCTION auth.logout(uuid) IS
    'Ends a session (the sid claim of its tokens); publishes user.logged_out reason logout. true if it ended the session, false if it had ended already. P0002 unknown session.';

CREATE FUNCTION auth.logout_all(user_id uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM account.require_user(user_id);
    n := auth._revoke_user_sessions(user_id, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN n;
END
$$;
COMMENT ON FUNCTION auth.logout_all(uuid) IS
    'Ends every active session of a user (log out everywhere); one user.logged_out reason logout per session. Returns how many. P0002 unknown or deleted user.';

-- The live sessions, as a token sees them: not revoked (nor flagged in shared
-- memory), their user still active (read from account.users directly), with
-- the subject and token type a token of theirs carries.  The one statement of
-- the rule: auth._session_live and isa.http_begin (every HTTP request, where
-- a view is planned into its query and a function call would not be) read it.
CREATE VIEW auth.live_sessions AS
SELECT s.session_id,
       coalesce(s.device_id, s.user_id::text) AS subject,
       CASE s.kind WHEN 'user' THEN 'access' ELSE 'device' END AS token_type
  FROM auth.sessions s
 WHERE s.revoked_at IS NULL
   AND NOT auth._session_flagged(s.session_id)
   AND (s.kind <> 'user'
        OR EXISTS (SELECT FROM account.users u WHERE u.user_id = s.user_id AND u.status = 'active'));
COMMENT ON VIEW auth.live_sessions IS
    'Sessions a token may still use: not ended, user active; subject and token_type (access, device) are what the token must carry.';

-- Whether a session is live for a token's sid, sub and typ.  The signature
-- and times are checked by the caller (auth.verify_token, isa-httpd).
CREATE FUNCTION auth._session_live(sid uuid, sub text, typ text) RETURNS boolean
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    RETURN EXISTS (SELECT FROM auth.live_sessions l
                    WHERE l.session_id = sid AND l.subject = sub AND l.token_type = typ);

CREATE FUNCTION auth.session_is_live(claims jsonb) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid text := claims ->> 'sid';
BEGIN
    IF sid IS NULL OR sid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RETURN false;
    END IF;
    RETURN auth._session_live(sid::uuid, claims ->> 'sub', claims ->> 'typ');
END
$$;
COMMENT ON FUNCTION auth.session_is_live(jsonb) IS
    'Whether the session named by verified token claims (sid, sub, typ) is live: not ended, matching its subject, its user not deleted. Does not check the signature: auth.verify_token does.';

CREATE FUNCTION auth.verify_token(token text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims jsonb;
    sid    text;
    s      auth.sessions;
BEGIN
    IF token IS NULL THEN
        RAISE EXCEPTION 'token must not be null' USING ERRCODE = '22004';
    END IF;
    claims := auth._verify_jwt(token);
    IF NOT coalesce(claims ->> 'typ' IN ('access', 'device'), false) THEN
        RAISE EXCEPTION 'invalid token: not an access or device token' USING ERRCODE = '28000';
    END IF;
    sid := claims ->> 'sid';
    IF sid IS NULL OR sid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE EXCEPTION 'invalid token: no session' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.session_id = sid::uuid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid token: unknown session' USING ERRCODE = '28000';
    END IF;
    IF s.revoked_at IS NOT NULL OR auth._session_flagged(s.session_id) THEN
        RAISE EXCEPTION 'invalid token: session revoked' USING ERRCODE = '28000';
    END IF;
    IF (claims ->> 'typ' = 'access') <> (s.kind = 'user')
       OR claims ->> 'sub' IS DISTINCT FROM coalesce(s.device_id, s.user_id::text) THEN
        RAISE EXCEPTION 'invalid token: subject does not match its session' USING ERRCODE = '28000';
    END IF;
    IF s.kind = 'user' AND NOT account.user_exists(s.user_id) THEN
        RAISE EXCEPTION 'invalid token: the user no longer exists' USING ERRCODE = '28000';
    END IF;
    RETURN claims;
END
$$;
COMMENT ON FUNCTION auth.verify_token(text) IS
    'The claims of a valid access or device token: signature with the configured algorithm and an unretired key, exp/nbf/iat with clock skew, iss, aud, and a live session. 28000 naming the reason otherwise.';

-- ---------------------------------------------------------------- API: signing keys
CREATE FUNCTION auth.rotate_signing_key() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kp    record;
    v_kid text;
BEGIN
    SELECT * INTO kp FROM auth._ed25519_keypair();
    -- RFC 7638 thumbprint: SHA-256 of the canonical JWK {crv, kty, x}
    v_kid := isa.base64url_encode(sha256(convert_to(
        format('{"crv":"Ed25519","kty":"OKP","x":"%s"}', isa.base64url_encode(kp.public_key)), 'UTF8')));
    INSERT INTO auth.signing_keys (kid, public_key, private_key) VALUES (v_kid, kp.public_key, kp.secret_key);
    RETURN v_kid;
END
$$;
COMMENT ON FUNCTION auth.rotate_signing_key() IS
    'Makes a new Ed25519 signing key (generated in the database) the current one and returns its kid; older unretired keys keep verifying.';

CREATE FUNCTION auth.retire_signing_key(kid text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k auth.signing_keys;
BEGIN
    IF kid IS NULL THEN
        RAISE EXCEPTION 'kid must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO k FROM auth.signing_keys s WHERE s.kid = retire_signing_key.kid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'signing key "%" not found', left(kid, 100) USING ERRCODE = 'P0002';
    END IF;
    IF k.retired_at IS NOT NULL THEN
        RETURN;                                        -- retired already
    END IF;
    IF NOT EXISTS (SELECT 1 FROM auth.signing_keys s
                    WHERE s.retired_at IS NULL AND (s.created_at, s.kid) > (k.created_at, k.kid)) THEN
        RAISE EXCEPTION 'signing key "%" is the current one', kid USING ERRCODE = '23514',
            HINT = 'Make a new key with auth.rotate_signing_key() first.';
    END IF;
    UPDATE auth.signing_keys s SET retired_at = now() WHERE s.kid = k.kid;
END
$$;
COMMENT ON FUNCTION auth.retire_signing_key(text) IS
    'Retires a signing key: tokens signed with it are refused from now on. P0002 unknown kid, 23514 the current key; retiring a retired key does nothing.';

CREATE FUNCTION auth.jwks() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF auth._jwt_algorithm() <> 'EdDSA' THEN
        RETURN '{"keys": []}';
    END IF;
    RETURN jsonb_build_object('keys', coalesce(
        (SELECT jsonb_agg(jsonb_build_object('kty', 'OKP', 'crv', 'Ed25519', 'alg', 'EdDSA', 'use', 'sig',
                                             'kid', s.kid, 'x', isa.base64url_encode(s.public_key))
                          ORDER BY s.created_at DESC, s.kid DESC)
           FROM auth.signing_keys s WHERE s.retired_at IS NULL), '[]'));
END
$$;
COMMENT ON FUNCTION auth.jwks() IS
    'The public keys that verify tokens, as a JSON Web Key Set (RFC 7517), newest first; empty with HS256.';

-- ---------------------------------------------------------------- API: devices
CREATE FUNCTION auth.register_device(device_id text, public_key bytea, user_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d auth.devices;
BEGIN
    IF device_id IS NULL OR public_key IS NULL THEN
        RAISE EXCEPTION 'device_id and public_key must not be null' USING ERRCODE = '22004';
    END IF;
    IF device_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid device id "%"', left(device_id, 140) USING ERRCODE = '22023',
            HINT = 'A device id is 1 to 128 characters of A-Z a-z 0-9 . _ : -';
    END IF;
    IF length(public_key) <> 32 THEN
        RAISE EXCEPTION 'an Ed25519 public key has 32 bytes, not %', length(public_key) USING ERRCODE = '22023';
    END IF;
    IF user_id IS NOT NULL THEN
        PERFORM account.require_user(user_id);
    END IF;
    INSERT INTO auth.devices AS x (device_id, public_key, user_id)
    VALUES (register_device.device_id, register_device.public_key, register_device.user_id)
    ON CONFLICT ON CONSTRAINT devices_pkey DO NOTHING;
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT * INTO d FROM auth.devices x WHERE x.device_id = register_device.device_id;
    IF d.public_key <> public_key OR d.user_id IS DISTINCT FROM user_id THEN
        RAISE EXCEPTION 'device "%" is already registered with another key or owner', device_id
            USING ERRCODE = '23505';
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION auth.register_device(text, bytea, uuid) IS
    'Registers a device''s Ed25519 public key (32 bytes), optionally with its owner. true if new, false if registered already with the same key and owner; 23505 with another; 22023 bad id or key; P0002 unknown owner.';

CREATE FUNCTION auth.device_challenge(device_id text) RETURNS auth.challenge
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result auth.challenge;
BEGIN
    IF device_id IS NULL THEN
        RAISE EXCEPTION 'device_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF device_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid device id "%"', left(device_id, 140) USING ERRCODE = '22023',
            HINT = 'A device id is 1 to 128 characters of A-Z a-z 0-9 . _ : -';
    END IF;
    result.nonce := isa.base64url_encode(isa.random_bytes(32));
    result.expires_at := clock_timestamp() + interval '60 seconds';
    -- An unknown device gets a nonce too (stored nowhere): the answer does
    -- not tell which devices exist.  A device keeps at most 5 open challenges.
    IF EXISTS (SELECT 1 FROM auth.devices d WHERE d.device_id = device_challenge.device_id) THEN
        DELETE FROM auth.device_challenges c
         WHERE c.device_id = device_challenge.device_id
           AND (c.expires_at <= now()
                OR c.nonce NOT IN (SELECT c2.nonce FROM auth.device_challenges c2
                                    WHERE c2.device_id = device_challenge.device_id
                                    ORDER BY c2.created_at DESC LIMIT 4));
        INSERT INTO auth.device_challenges (nonce, device_id, expires_at)
        VALUES (result.nonce, device_id, result.expires_at);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.device_challenge(text) IS
    'A random nonce (base64url text) for a device to sign with its key, valid 60 seconds. 22023 malformed device id.';

CREATE FUNCTION auth.device_authenticate(device_id text, nonce text, signature bytea) RETURNS auth.device_token
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      auth.devices;
    c      auth.device_challenges;
    ok     boolean;
    result auth.device_token;
BEGIN
    IF device_id IS NULL OR nonce IS NULL OR signature IS NULL THEN
        RAISE EXCEPTION 'device_id, nonce and signature must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO d FROM auth.devices x WHERE x.device_id = device_authenticate.device_id;
    SELECT * INTO c FROM auth.device_challenges x
     WHERE x.nonce = device_authenticate.nonce AND x.device_id = device_authenticate.device_id
       AND x.expires_at > clock_timestamp()
       FOR UPDATE;
    -- Verify even when the device or challenge is unknown (against a key that
    -- matches nothing), so that every failure takes the same time.
    ok := auth._ed25519_verify(coalesce(d.public_key, '\xfad2ebde3c007760e42fa3868d6deecf43e81fcdc96c2a5eb761851fdbcdbc59'::bytea),
                               convert_to(nonce, 'UTF8'), signature);
    IF NOT ok OR d.device_id IS NULL OR c.nonce IS NULL THEN
        RAISE EXCEPTION 'device authentication failed' USING ERRCODE = '28000';
    END IF;
    DELETE FROM auth.device_challenges x WHERE x.nonce = c.nonce;   -- single use
    UPDATE auth.devices x SET last_authenticated_at = now() WHERE x.device_id = d.device_id;

    INSERT INTO auth.sessions (kind, user_id, device_id, expires_at)
    VALUES ('device', d.user_id, d.device_id, now() + make_interval(secs => auth._lifetime('access')))
    RETURNING session_id INTO result.session_id;
    result.access_token := auth._access_token(d.device_id, result.session_id, 'device');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    result.device_id := d.device_id;
    PERFORM isa.publish_event('device.authenticated', 'auth_service',
        jsonb_build_object('device_id', d.device_id, 'session_id', result.session_id, 'user_id', d.user_id));
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.device_authenticate(text, text, bytea) IS
    'A device token for a device that signed (Ed25519) an open challenge nonce of its own; the nonce is consumed; publishes device.authenticated. 28000 device authentication failed (unknown device, unknown or expired nonce, bad signature: one message).';

-- ---------------------------------------------------------------- administration
CREATE FUNCTION auth.reset_login_throttle(email text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF email IS NULL THEN
        RAISE EXCEPTION 'email must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION 'there is no login throttle: isa is not in shared_preload_libraries' USING ERRCODE = '55000';
    END IF;
    RETURN auth._throttle_reset(lower(btrim(email, E' \t\r\n')));
END
$$;
COMMENT ON FUNCTION auth.reset_login_throttle(text) IS
    'Forgets the failed logins of an email and unlocks it; true if it had any.';

CREATE FUNCTION auth.housekeeping() RETURNS TABLE (action text, n bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bigint;
BEGIN
    action := 'sessions revoked for refresh-token reuse';
    n := auth._persist_flagged_sessions();
    RETURN NEXT;

    DELETE FROM auth.device_challenges c WHERE c.expires_at <= now();
    GET DIAGNOSTICS k = ROW_COUNT;
    action := 'expired device challenges deleted'; n := k;
    RETURN NEXT;

    -- An expired session can do nothing any more; a day of grace keeps it
    -- visible a little while.  Its refresh tokens go with it (cascade).
    DELETE FROM auth.sessions s WHERE s.expires_at < now() - interval '1 day';
    GET DIAGNOSTICS k = ROW_COUNT;
    action := 'expired sessions deleted'; n := k;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION auth.housekeeping() IS
    'Writes pending refresh-reuse revocations, deletes expired device challenges and sessions expired for over a day. pg_cron runs it every minute (isa-auth-housekeeping).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-auth-housekeeping', '* * * * *', 'SELECT auth.housekeeping()',
        'Every minute: write pending refresh-reuse revocations, delete expired device challenges and sessions.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
CREATE FUNCTION auth.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'auth.on_user_deleted: event % has no valid user_id; ignored', e.id;
        RETURN;
    END IF;
    DELETE FROM auth.passwords p WHERE p.user_id = uid::uuid;
    PERFORM auth._revoke_user_sessions(uid::uuid, 'user_deleted');
END
$$;
COMMENT ON FUNCTION auth.on_user_deleted(isa.event) IS
    'account_service.user.deleted: drops the user''s password and ends the user''s sessions (user.logged_out reason user_deleted per session).';

CREATE FUNCTION auth.on_permission_revoked(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'auth.on_permission_revoked: event % has no valid user_id; ignored', e.id;
        RETURN;
    END IF;
    PERFORM auth._revoke_user_sessions(uid::uuid, 'permission_revoked');
END
$$;
COMMENT ON FUNCTION auth.on_permission_revoked(isa.event) IS
    'authorization_service.permission.revoked: ends the user''s sessions (force logout; user.logged_out reason permission_revoked per session), so new tokens carry the new permissions.';

SELECT isa.subscribe_to_events('auth', 'account_service.user.deleted',
                               'auth.on_user_deleted(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('auth', 'authorization_service.permission.revoked',
                               'auth.on_permission_revoked(isa.event)'::regprocedure);

-- The first signing key, made in the database.
SELECT auth.rotate_signing_key();

-- ---------------------------------------------------------------- privileges
-- (sql/grants.sql, loaded last, marks every table for pg_dump.)
REVOKE ALL ON ALL TABLES IN SCHEMA auth FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA auth FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    auth.set_password(uuid, text, uuid),
    auth.sign_up(text, text, text, text),
    auth.change_password(uuid, text, text, uuid),
    auth.login(text, text),
    auth.refresh(text),
    auth.logout(text),
    auth.logout(uuid),
    auth.logout_all(uuid),
    auth.verify_token(text),
    auth.session_is_live(jsonb),
    auth.jwks(),
    auth.register_device(text, bytea, uuid),
    auth.device_challenge(text),
    auth.device_authenticate(text, text, bytea)
TO isa_app;
GRANT EXECUTE ON FUNCTION
    auth.rotate_signing_key(),
    auth.retire_signing_key(text),
    auth.reset_login_throttle(text),
    auth.housekeeping(),
    auth.jwks()
TO isa_admin;
-- isa_admin may look at sessions and devices and at the public half of the
-- signing keys; private_key is readable by the owner only (sql/grants.sql's
-- GRANT ALL ON ALL TABLES IN SCHEMA auth TO isa_admin must leave it out).
GRANT SELECT ON auth.sessions, auth.devices TO isa_admin;
GRANT SELECT (kid, algorithm, public_key, created_at, retired_at) ON auth.signing_keys TO isa_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Sign-up, login, refresh and the device handshake are public and limited per
-- client address; a refresh token is its own proof for logout.  Setting
-- another user's password, ending a session by id and registering a device
-- are for administrators (isa:admin).
SELECT isa.http_route('POST', '/v1/auth/signup', 'auth.sign_up(text, text, text, text)', 'public',
    'Creates an account with its password (sign-up).', status => 201, rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/login', 'auth.login(text, text)', 'public',
    'Email and password to an access token, a refresh token and a new session.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/refresh', 'auth.refresh(text)', 'public',
    'Rotates a refresh token: a new access token and refresh token of the same session.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/logout', 'auth.logout(text)', 'public',
    'Ends the session of a refresh token: true if it ended it, false if it had ended already.');
SELECT isa.http_route('POST', '/v1/auth/verify', 'auth.verify_token(text)', 'public',
    'The claims of a valid access or device token with a live session; 401 otherwise.');
SELECT isa.http_route('GET', '/v1/auth/jwks', 'auth.jwks()', 'public',
    'The public keys that verify tokens (JSON Web Key Set).');
SELECT isa.http_route('PUT', '/v1/auth/password', 'auth.change_password(uuid, text, text, uuid)', 'user',
    'Changes the caller''s password (the current one must be given) and ends the other sessions but keep_session.',
    subject_param => 'user_id', rate_limited => true);
SELECT isa.http_route('PUT', '/v1/auth/users/{user_id}/password', 'auth.set_password(uuid, text, uuid)', 'admin',
    'Sets a user''s password and ends the user''s sessions but keep_session.');
SELECT isa.http_route('POST', '/v1/auth/users/{user_id}/logout-all', 'auth.logout_all(uuid)', 'user',
    'Ends every session of a user (log out everywhere); returns how many.',
    permission => 'auth:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/auth/sessions/{session_id}', 'auth.logout(uuid)', 'admin',
    'Ends a session by its id (the sid claim): true if it ended it.');
SELECT isa.http_route('PUT', '/v1/devices/{device_id}', 'auth.register_device(text, bytea, uuid)', 'admin',
    'Registers a device''s Ed25519 public key, optionally with its owner: true if new, false if registered already.');
SELECT isa.http_route('POST', '/v1/devices/{device_id}/challenge', 'auth.device_challenge(text)', 'public',
    'A nonce for the device to sign with its key, valid 60 seconds.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/devices/{device_id}/token', 'auth.device_authenticate(text, text, bytea)', 'public',
    'A device token for a device that signed an open challenge nonce.', rate_limited => true);

-- ==== sql/product.sql
-- product.sql — the product service (schema product, source product_service):
-- products for the usage types that billing prices (model input/output tokens
-- per model, agent runs, MCP tool calls) and their prices over time (per unit,
-- graduated tiers, packages), with price_quote, the exact cost of a quantity.
-- Prices are numeric tokens per unit, never float.  Schema, outbox and inbox
-- come from sql/services.sql.  product subscribes to nothing.
-- docs/services/product.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE product.products (
    product_id  uuid PRIMARY KEY,                  -- UUIDv7
    usage_type  text COLLATE "C" NOT NULL
                CHECK (usage_type IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call')),
    model       text COLLATE "C" CHECK (model <> '' AND length(model) <= 200 AND model = btrim(model)),
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- model types name their model; agent/mcp name an agent/tool or NULL (any)
    CHECK (model IS NOT NULL OR usage_type IN ('agent_run', 'mcp_call')),
    -- One product per usage type and model (one "any" product per agent/mcp
    -- type); also price_quote's index: usage type, then model.
    CONSTRAINT products_usage_type_model_key UNIQUE NULLS NOT DISTINCT (usage_type, model)
);
COMMENT ON TABLE product.products IS
    'What can be priced: a usage type and the model (model tokens), agent or MCP tool it applies to (NULL: any agent/tool).';

CREATE TABLE product.prices (
    price_id       uuid PRIMARY KEY,               -- UUIDv7
    product_id     uuid NOT NULL REFERENCES product.products,
    usage_type     text COLLATE "C" NOT NULL,      -- the product's (products never change): price_quote
    model          text COLLATE "C",               -- finds the price in force with one index probe
    pricing_model  text NOT NULL CHECK (pricing_model IN ('per_unit', 'graduated', 'package')),
    unit_price     numeric CHECK (unit_price >= 0 AND unit_price <= 1000000000),
    tiers          jsonb CHECK (jsonb_typeof(tiers) = 'array'),
    package_size   bigint CHECK (package_size > 0),
    package_price  numeric CHECK (package_price >= 0 AND package_price <= 1000000000),
    effective_from timestamptz NOT NULL CHECK (isfinite(effective_from)),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE pricing_model
           WHEN 'per_unit'  THEN unit_price IS NOT NULL AND tiers IS NULL AND package_size IS NULL AND package_price IS NULL
           WHEN 'graduated' THEN unit_price IS NULL AND tiers IS NOT NULL AND package_size IS NULL AND package_price IS NULL
           WHEN 'package'   THEN unit_price IS NULL AND tiers IS NULL AND package_size IS NOT NULL AND package_price IS NOT NULL
           END),
    -- The price in force at t is the one with the latest effective_from <= t:
    -- price_quote reads this index backwards from t.
    CONSTRAINT prices_product_effective_key UNIQUE (product_id, effective_from)
);
COMMENT ON TABLE product.prices IS
    'The prices of a product over time (append-only): each is in force from effective_from until the next one''s effective_from. Amounts are tokens.';
-- price_quote's common case: the latest price of (usage type, model) from
-- before `at`, one backward probe.
CREATE INDEX prices_quote ON product.prices (usage_type, model, effective_from);

-- ---------------------------------------------------------------- types
-- The result of product.try_price_quote.
CREATE TYPE product.quote AS (
    product_id    uuid,
    price_id      uuid,
    pricing_model text,
    cost          numeric,
    lines         jsonb
);
COMMENT ON TYPE product.quote IS
    'A price quote: the product and price applied, the pricing model, the exact cost in tokens and the lines explaining it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('product.price_changed', 'product_service', '1.0.0',
    'A new price was set for a product (product.set_price); it is in force from effective_from.',
    '{"product_id":     {"type": "uuid",      "required": true,  "description": "the product"},
      "price_id":       {"type": "uuid",      "required": true,  "description": "the new price"},
      "usage_type":     {"type": "string",    "required": true,  "description": "model_input_tokens, model_output_tokens, agent_run or mcp_call"},
      "model":          {"type": "string",    "required": false, "description": "the model, agent or tool the product is for; null: any agent/tool"},
      "pricing_model":  {"type": "string",    "required": true,  "description": "per_unit, graduated or package"},
      "effective_from": {"type": "timestamp", "required": true,  "description": "when the price comes into force"}}');

-- ---------------------------------------------------------------- internal helpers
-- RFC 3339 UTC with microseconds, as in the envelope.
CREATE FUNCTION product._iso(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- 22004/22023 unless usage_type is one of the four.
CREATE FUNCTION product._check_usage_type(usage_type text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF usage_type IS NULL THEN
        RAISE EXCEPTION 'usage_type must not be null' USING ERRCODE = '22004';
    END IF;
    IF usage_type NOT IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call') THEN
        RAISE EXCEPTION 'unknown usage type "%"', usage_type USING ERRCODE = '22023',
            HINT = 'Usage types: model_input_tokens, model_output_tokens, agent_run, mcp_call.';
    END IF;
    RETURN usage_type;
END
$$;

-- A price or tier unit price: 0 to 1e9 tokens, at most 12 decimal places;
-- returned without trailing zeros.  22023 naming `what` otherwise.
CREATE FUNCTION product._check_amount(v numeric, what text) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- NaN compares greater than every number, so it fails the range test too.
    IF NOT (v >= 0 AND v <= 1000000000) THEN
        RAISE EXCEPTION '% must be from 0 to 1000000000 tokens, not %', what, v USING ERRCODE = '22023';
    END IF;
    IF scale(trim_scale(v)) > 12 THEN
        RAISE EXCEPTION '% must have at most 12 decimal places, not %', what, v USING ERRCODE = '22023';
    END IF;
    RETURN trim_scale(v);
END
$$;

-- A JSON number, or a string holding a plain decimal, as numeric; NULL if it
-- is neither.
CREATE FUNCTION product._json_numeric(v jsonb) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    RETURN CASE jsonb_typeof(v)
           WHEN 'number' THEN v::numeric
           WHEN 'string' THEN CASE WHEN v #>> '{}' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (v #>> '{}')::numeric END
           END;

-- Validates graduated tiers and returns them normalised:
-- [{"up_to": number, "unit_price": number}, ..., {"up_to": null, "unit_price": number}].
CREATE FUNCTION product._check_tiers(tiers jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n      int;
    i      int := 0;
    t      jsonb;
    up_to  numeric;
    prev   numeric := 0;
    price  numeric;
    result jsonb := '[]';
BEGIN
    IF jsonb_typeof(tiers) IS DISTINCT FROM 'array' OR jsonb_array_length(tiers) = 0 THEN
        RAISE EXCEPTION 'tiers must be a non-empty JSON array of {"up_to": n, "unit_price": p}, not %', tiers
            USING ERRCODE = '22023',
            HINT = 'For example [{"up_to": 1000, "unit_price": 0.01}, {"up_to": null, "unit_price": 0.005}].';
    END IF;
    n := jsonb_array_length(tiers);
    IF n > 100 THEN
        RAISE EXCEPTION 'at most 100 tiers, not %', n USING ERRCODE = '22023';
    END IF;
    FOR t IN SELECT e FROM jsonb_array_elements(tiers) e LOOP
        i := i + 1;
        IF jsonb_typeof(t) <> 'object' THEN
            RAISE EXCEPTION 'tier % must be an object {"up_to": n, "unit_price": p}, not %', i, t
                USING ERRCODE = '22023';
        END IF;
        IF NOT t ? 'unit_price' OR t - 'up_to' - 'unit_price' <> '{}' THEN
            RAISE EXCEPTION 'tier % must have unit_price and may have up_to, nothing else: %', i, t
                USING ERRCODE = '22023';
        END IF;
        price := product._json_numeric(t -> 'unit_price');
        IF price IS NULL THEN
            RAISE EXCEPTION 'unit_price of tier % must be a number, not %', i, t -> 'unit_price'
                USING ERRCODE = '22023';
        END IF;
        price := product._check_amount(price, format('unit_price of tier %s', i));
        IF coalesce(jsonb_typeof(t -> 'up_to'), 'null') = 'null' THEN
            IF i < n THEN
                RAISE EXCEPTION 'only the last tier may be open (up_to null); tier % of % is open', i, n
                    USING ERRCODE = '22023';
            END IF;
            up_to := NULL;
        ELSE
            IF i = n THEN
                RAISE EXCEPTION 'the last tier must be open (up_to null), not up to %', t -> 'up_to'
                    USING ERRCODE = '22023',
                    HINT = 'The last tier prices everything above the previous tier''s up_to.';
            END IF;
            up_to := product._json_numeric(t -> 'up_to');
            IF up_to IS NULL OR NOT (up_to > 0 AND up_to <= 1000000000000000) OR scale(trim_scale(up_to)) > 12 THEN
                RAISE EXCEPTION 'up_to of tier % must be a number from 0 (excluded) to 1e15, not %', i, t -> 'up_to'
                    USING ERRCODE = '22023';
            END IF;
            up_to := trim_scale(up_to);
            IF up_to <= prev THEN
                RAISE EXCEPTION 'tiers must ascend: up_to of tier % (%) is not above the previous tier''s (%)', i, up_to, prev
                    USING ERRCODE = '22023';
            END IF;
            prev := up_to;
        END IF;
        result := result || jsonb_build_array(jsonb_build_object('up_to', up_to, 'unit_price', price));
    END LOOP;
    RETURN result;
END
$$;

-- Packages needed to cover x units: ceil(x / size), exactly (no division).
CREATE FUNCTION product._packages(x numeric, size bigint) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT
    RETURN div(x, size::numeric) + CASE WHEN x > div(x, size::numeric) * size THEN 1 ELSE 0 END;

-- ---------------------------------------------------------------- API: products
CREATE FUNCTION product.create_product(usage_type text, model text, name text, description text DEFAULT NULL)
RETURNS product.products
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ut text := product._check_usage_type(usage_type);
    n  text := btrim(name);
    p  product.products;
BEGIN
    IF model IS NULL AND ut IN ('model_input_tokens', 'model_output_tokens') THEN
        RAISE EXCEPTION 'model must not be null for usage type %', ut USING ERRCODE = '22004',
            HINT = 'Products for model tokens are per model; only agent_run and mcp_call products may apply to any agent/tool (model NULL).';
    END IF;
    IF model = '' OR length(model) > 200 OR model <> btrim(model) THEN
        RAISE EXCEPTION 'model must be 1 to 200 characters without surrounding spaces, not "%"', model
            USING ERRCODE = '22023';
    END IF;
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = '22004';
    END IF;
    IF n = '' OR length(n) > 200 THEN
        RAISE EXCEPTION 'name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF length(description) > 2000 THEN
        RAISE EXCEPTION 'description must be at most 2000 characters' USING ERRCODE = '22023';
    END IF;

    INSERT INTO product.products AS x (product_id, usage_type, model, name, description)
    VALUES (isa.uuid_v7(), ut, create_product.model, n, coalesce(btrim(create_product.description), ''))
    ON CONFLICT ON CONSTRAINT products_usage_type_model_key DO NOTHING
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a product for usage type % and % already exists', ut,
            CASE WHEN model IS NULL THEN 'any agent/tool' ELSE format('model "%s"', model) END
            USING ERRCODE = '23505',
            DETAIL = format('product_id %s', (SELECT x.product_id FROM product.products x
                                               WHERE x.usage_type = ut AND x.model IS NOT DISTINCT FROM create_product.model));
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION product.create_product(text, text, text, text) IS
    'Creates a product for a usage type and model (agent/tool for agent_run/mcp_call; NULL there: any). 23505 if one exists for the same usage type and model.';

CREATE FUNCTION product.get_product(product_id uuid) RETURNS product.products
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p product.products;
BEGIN
    IF product_id IS NULL THEN
        RAISE EXCEPTION 'product_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO p FROM product.products x WHERE x.product_id = get_product.product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION product.get_product(uuid) IS
    'A product; P0002 if unknown.';

CREATE FUNCTION product.list_products(usage_type text DEFAULT NULL) RETURNS SETOF product.products
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF usage_type IS NOT NULL THEN
        PERFORM product._check_usage_type(usage_type);
    END IF;
    RETURN QUERY
        SELECT * FROM product.products x
         WHERE list_products.usage_type IS NULL OR x.usage_type = list_products.usage_type
         ORDER BY x.usage_type, x.model NULLS FIRST;
END
$$;
COMMENT ON FUNCTION product.list_products(text) IS
    'Every product, or those of one usage type, ordered by usage type and model (the "any" product first). 22023 unknown usage type.';

-- ---------------------------------------------------------------- API: prices
CREATE FUNCTION product.set_price(
    product_id     uuid,
    pricing_model  text,
    unit_price     numeric DEFAULT NULL,
    tiers          jsonb DEFAULT NULL,
    package_size   numeric DEFAULT NULL,
    package_price  numeric DEFAULT NULL,
    effective_from timestamptz DEFAULT now())
RETURNS product.prices
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p     product.products;
    r     product.prices;
    up    numeric;
    tj    jsonb;
    psize bigint;
    pp    numeric;
BEGIN
    IF product_id IS NULL THEN
        RAISE EXCEPTION 'product_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF pricing_model IS NULL THEN
        RAISE EXCEPTION 'pricing_model must not be null' USING ERRCODE = '22004';
    END IF;
    IF effective_from IS NULL THEN
        RAISE EXCEPTION 'effective_from must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(effective_from) THEN
        RAISE EXCEPTION 'effective_from must be a finite time, not %', effective_from USING ERRCODE = '22023';
    END IF;

    CASE pricing_model
    WHEN 'per_unit' THEN
        IF unit_price IS NULL THEN
            RAISE EXCEPTION 'per_unit pricing needs unit_price' USING ERRCODE = '22004';
        END IF;
        IF tiers IS NOT NULL OR package_size IS NOT NULL OR package_price IS NOT NULL THEN
            RAISE EXCEPTION 'per_unit pricing takes only unit_price (tiers, package_size and package_price must be null)'
                USING ERRCODE = '22023';
        END IF;
        up := product._check_amount(unit_price, 'unit_price');
    WHEN 'graduated' THEN
        IF tiers IS NULL THEN
            RAISE EXCEPTION 'graduated pricing needs tiers' USING ERRCODE = '22004',
                HINT = 'For example [{"up_to": 1000, "unit_price": 0.01}, {"up_to": null, "unit_price": 0.005}].';
        END IF;
        IF unit_price IS NOT NULL OR package_size IS NOT NULL OR package_price IS NOT NULL THEN
            RAISE EXCEPTION 'graduated pricing takes only tiers (unit_price, package_size and package_price must be null)'
                USING ERRCODE = '22023';
        END IF;
        tj := product._check_tiers(tiers);
    WHEN 'package' THEN
        IF package_size IS NULL OR package_price IS NULL THEN
            RAISE EXCEPTION 'package pricing needs package_size and package_price' USING ERRCODE = '22004';
        END IF;
        IF unit_price IS NOT NULL OR tiers IS NOT NULL THEN
            RAISE EXCEPTION 'package pricing takes only package_size and package_price (unit_price and tiers must be null)'
                USING ERRCODE = '22023';
        END IF;
        IF NOT (package_size >= 1 AND package_size <= 1000000000000) OR package_size <> trunc(package_size) THEN
            RAISE EXCEPTION 'package_size must be a whole number of units from 1 to 1e12, not %', package_size
                USING ERRCODE = '22023';
        END IF;
        psize := package_size;
        pp := product._check_amount(package_price, 'package_price');
    ELSE
        RAISE EXCEPTION 'unknown pricing model "%"', pricing_model USING ERRCODE = '22023',
            HINT = 'Pricing models: per_unit, graduated, package.';
    END CASE;

    SELECT * INTO p FROM product.products x WHERE x.product_id = set_price.product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;

    INSERT INTO product.prices AS x (price_id, product_id, usage_type, model, pricing_model, unit_price, tiers,
                                     package_size, package_price, effective_from)
    VALUES (isa.uuid_v7(), p.product_id, p.usage_type, p.model, set_price.pricing_model, up, tj, psize, pp,
            set_price.effective_from)
    ON CONFLICT ON CONSTRAINT prices_product_effective_key DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        -- A retry of the same call returns the first result; other terms at
        -- the same instant are a conflict.
        SELECT * INTO r FROM product.prices x
         WHERE x.product_id = p.product_id AND x.effective_from = set_price.effective_from;
        IF r.pricing_model = set_price.pricing_model AND r.unit_price IS NOT DISTINCT FROM up
           AND r.tiers IS NOT DISTINCT FROM tj AND r.package_size IS NOT DISTINCT FROM psize
           AND r.package_price IS NOT DISTINCT FROM pp THEN
            RETURN r;
        END IF;
        RAISE EXCEPTION 'product % already has another price effective from %', p.product_id, product._iso(effective_from)
            USING ERRCODE = '23505', DETAIL = format('price_id %s', r.price_id),
            HINT = 'Prices are never changed; set a new one with a later effective_from.';
    END IF;

    PERFORM isa.publish_event('product.price_changed', 'product_service',
        jsonb_build_object('product_id', p.product_id, 'price_id', r.price_id, 'usage_type', p.usage_type,
                           'model', p.model, 'pricing_model', r.pricing_model,
                           'effective_from', product._iso(r.effective_from)));
    RETURN r;
END
$$;
COMMENT ON FUNCTION product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz) IS
    'Sets a product''s price from effective_from (default now) until the next price: per_unit (unit_price), graduated (tiers) or package (package_size, package_price); publishes product.price_changed. 22004/22023 bad terms, P0002 unknown product, 23505 another price at the same effective_from (the same terms again return the existing price).';

CREATE FUNCTION product.list_prices(product_id uuid)
RETURNS TABLE (price_id uuid, pricing_model text, unit_price numeric, tiers jsonb,
               package_size bigint, package_price numeric, effective_from timestamptz,
               effective_to timestamptz, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF product_id IS NULL THEN
        RAISE EXCEPTION 'product_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM product.products x WHERE x.product_id = list_prices.product_id) THEN
        RAISE EXCEPTION 'product % not found', product_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT x.price_id, x.pricing_model, x.unit_price, x.tiers, x.package_size,
               x.package_price, x.effective_from,
               lead(x.effective_from) OVER (ORDER BY x.effective_from), x.created_at
          FROM product.prices x
         WHERE x.product_id = list_prices.product_id
         ORDER BY x.effective_from;
END
$$;
COMMENT ON FUNCTION product.list_prices(uuid) IS
    'A product''s prices in effective order, each with effective_to (the next price''s effective_from; NULL for the last). P0002 unknown product.';

-- ---------------------------------------------------------------- API: quotes
-- Raises the error for price_quote's first bad argument.
CREATE FUNCTION product._check_quote_arguments(usage_type text, model text, quantity numeric, at timestamptz,
                                               already_used numeric) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM product._check_usage_type(usage_type);
    IF model IS NULL AND usage_type NOT IN ('agent_run', 'mcp_call') THEN
        RAISE EXCEPTION 'model must not be null for usage type %', usage_type USING ERRCODE = '22004';
    END IF;
    IF quantity IS NULL THEN
        RAISE EXCEPTION 'quantity must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT (quantity >= 0 AND quantity < 'Infinity') THEN
        RAISE EXCEPTION 'quantity must be a finite number >= 0, not %', quantity USING ERRCODE = '22023';
    END IF;
    IF at IS NULL THEN
        RAISE EXCEPTION 'at must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT (coalesce(already_used, 0) >= 0 AND coalesce(already_used, 0) < 'Infinity') THEN
        RAISE EXCEPTION 'already_used must be a finite number >= 0, not %', already_used USING ERRCODE = '22023';
    END IF;
END
$$;

-- The cost of `quantity` units of a usage type for a model (agent/tool) at
-- time `at`, after `already_used` units of the same product in the period
-- (graduated tiers and packages continue from there).  One indexed lookup
-- finds the product (the model's own, else for agent_run/mcp_call the "any"
-- product) and its price in force at `at`.  Returns all NULL when no product
-- applies, and product_id with a NULL price_id when the product has no price
-- in force at `at`: billing's hot path, which must not catch exceptions.
-- already_used NULL ("not known yet"): a graduated or package price is only
-- named, so that the caller can look up the usage so far and ask again.
CREATE FUNCTION product.try_price_quote(
    usage_type   text,
    model        text,
    quantity     numeric,
    at           timestamptz DEFAULT now(),
    already_used numeric DEFAULT 0)
RETURNS product.quote
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     record;
    q     product.quote;
    n     numeric;
    used  numeric := try_price_quote.already_used;
    lo    numeric := 0;
    hi    numeric;
    units numeric;
    price numeric;
BEGIN
    -- One test on the common path; the details only when it fails.
    IF try_price_quote.usage_type IS NULL OR try_price_quote.quantity IS NULL OR try_price_quote.at IS NULL
       OR try_price_quote.usage_type NOT IN ('model_input_tokens', 'model_output_tokens', 'agent_run', 'mcp_call')
       OR (try_price_quote.model IS NULL AND try_price_quote.usage_type NOT IN ('agent_run', 'mcp_call'))
       OR NOT (try_price_quote.quantity >= 0 AND try_price_quote.quantity < 'Infinity')
       OR NOT (coalesce(try_price_quote.already_used, 0) >= 0 AND coalesce(try_price_quote.already_used, 0) < 'Infinity') THEN
        PERFORM product._check_quote_arguments(try_price_quote.usage_type, try_price_quote.model,
                                               try_price_quote.quantity, try_price_quote.at,
                                               try_price_quote.already_used);
    END IF;

    -- Common case: the model's own product has a price in force at `at`.
    SELECT pr.product_id, pr.price_id, pr.pricing_model, pr.unit_price, pr.tiers, pr.package_size, pr.package_price
      INTO r
      FROM product.prices pr
     WHERE pr.usage_type = try_price_quote.usage_type AND pr.model = try_price_quote.model
       AND pr.effective_from <= try_price_quote.at
     ORDER BY pr.effective_from DESC
     LIMIT 1;
    IF NOT FOUND THEN
        -- The model's own product (even without a price: it takes
        -- precedence), else for agent_run/mcp_call the "any" product; then
        -- its price in force at `at`, if any.
        SELECT p.product_id, x.price_id, x.pricing_model, x.unit_price, x.tiers, x.package_size, x.package_price
          INTO r
          FROM (SELECT y.product_id
                  FROM (SELECT pp.product_id, pp.model FROM product.products pp
                         WHERE pp.usage_type = try_price_quote.usage_type AND pp.model = try_price_quote.model
                        UNION ALL
                        SELECT pp.product_id, pp.model FROM product.products pp
                         WHERE pp.usage_type = try_price_quote.usage_type AND pp.model IS NULL
                           AND try_price_quote.usage_type IN ('agent_run', 'mcp_call')) y
                 ORDER BY y.model NULLS LAST
                 LIMIT 1) p
          LEFT JOIN LATERAL (
                SELECT pr.price_id, pr.pricing_model, pr.unit_price, pr.tiers, pr.package_size, pr.package_price
                  FROM product.prices pr
                 WHERE pr.product_id = p.product_id AND pr.effective_from <= try_price_quote.at
                 ORDER BY pr.effective_from DESC
                 LIMIT 1) x ON true;
        IF NOT FOUND THEN
            RETURN q;
        END IF;
    END IF;
    q.product_id := r.product_id;
    q.price_id := r.price_id;
    q.pricing_model := r.pricing_model;
    IF used IS NULL AND r.pricing_model <> 'per_unit' THEN
        RETURN q;             -- the caller will ask again with the usage so far
    END IF;

    CASE r.pricing_model
    WHEN 'per_unit' THEN
        q.cost := trim_scale(try_price_quote.quantity * r.unit_price);
        q.lines := jsonb_build_array(jsonb_build_object(
            'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'per_unit',
            'quantity', try_price_quote.quantity, 'unit_price', r.unit_price::text, 'amount', q.cost::text));
    WHEN 'package' THEN
        -- Packages already paid for in the period cover what they can.
        n := product._packages(used + try_price_quote.quantity, r.package_size)
             - product._packages(used, r.package_size);
        q.cost := trim_scale(n * r.package_price);
        q.lines := jsonb_build_array(jsonb_build_object(
            'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'package',
            'quantity', try_price_quote.quantity, 'already_used', used,
            'package_size', r.package_size, 'packages', n,
            'package_price', r.package_price::text, 'amount', q.cost::text));
    WHEN 'graduated' THEN
        -- Units (already_used, already_used + quantity] are spread over the
        -- tiers (lo, up_to]; each tier prices the part that falls in it.
        q.cost := 0;
        q.lines := '[]';
        FOR i IN 0 .. jsonb_array_length(r.tiers) - 1 LOOP
            hi := (r.tiers -> i ->> 'up_to')::numeric;            -- NULL: the open tier
            units := coalesce(least(hi, used + try_price_quote.quantity), used + try_price_quote.quantity)
                     - greatest(lo, used);
            IF units > 0 THEN
                price := (r.tiers -> i ->> 'unit_price')::numeric;
                q.cost := q.cost + units * price;
                q.lines := q.lines || jsonb_build_object(
                    'usage_type', try_price_quote.usage_type, 'price_id', r.price_id, 'pricing_model', 'graduated',
                    'tier', i + 1, 'tier_from', lo, 'tier_up_to', hi, 'already_used', used,
                    'quantity', units, 'unit_price', price::text, 'amount', trim_scale(units * price)::text);
            END IF;
            EXIT WHEN hi IS NULL OR hi >= used + try_price_quote.quantity;
            lo := hi;
        END LOOP;
        q.cost := trim_scale(q.cost);
    ELSE
        NULL;   -- no price in force: price_id is NULL
    END CASE;
    RETURN q;
END
$$;
COMMENT ON FUNCTION product.try_price_quote(text, text, numeric, timestamptz, numeric) IS
    'price_quote without P0002: all NULL if no product applies, price_id NULL if the product has no price in force at `at`; also returns the pricing model. already_used NULL: a graduated or package price is only named (cost NULL), for the caller to ask again with the usage so far.';

CREATE FUNCTION product.price_quote(
    usage_type   text,
    model        text,
    quantity     numeric,
    at           timestamptz DEFAULT now(),
    already_used numeric DEFAULT 0)
RETURNS TABLE (product_id uuid, price_id uuid, cost numeric, lines jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q product.quote;
BEGIN
    IF price_quote.already_used IS NULL THEN
        RAISE EXCEPTION 'already_used must not be null' USING ERRCODE = '22004';
    END IF;
    q := product.try_price_quote(price_quote.usage_type, price_quote.model, price_quote.quantity,
                                 price_quote.at, price_quote.already_used);
    IF q.product_id IS NULL THEN
        IF price_quote.usage_type IN ('agent_run', 'mcp_call') THEN
            RAISE EXCEPTION 'no product for usage type % and %', price_quote.usage_type,
                CASE WHEN price_quote.model IS NULL THEN 'any agent/tool'
                     ELSE format('agent/tool "%s" (nor one for any agent/tool)', price_quote.model) END
                USING ERRCODE = 'P0002';
        END IF;
        RAISE EXCEPTION 'no product for usage type % and model "%"', price_quote.usage_type, price_quote.model
            USING ERRCODE = 'P0002';
    END IF;
    IF q.price_id IS NULL THEN
        RAISE EXCEPTION 'product % (%) has no price in force at %', q.product_id, price_quote.usage_type,
            product._iso(price_quote.at) USING ERRCODE = 'P0002',
            HINT = 'Set one with product.set_price, effective from that time or earlier.';
    END IF;
    product_id := q.product_id;
    price_id := q.price_id;
    cost := q.cost;
    lines := q.lines;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION product.price_quote(text, text, numeric, timestamptz, numeric) IS
    'The exact cost in tokens of `quantity` units of a usage type for a model/agent/tool at time `at`, after `already_used` units in the period (graduated tiers, packages), with lines explaining it. P0002 if no product or no price in force applies; 22004/22023 bad arguments.';

-- ---------------------------------------------------------------- privileges
-- The HTTP front gates the write functions (admin routes); isa_app may call
-- them all, and no table.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA product FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    product.create_product(text, text, text, text),
    product.get_product(uuid),
    product.list_products(text),
    product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz),
    product.list_prices(uuid),
    product.price_quote(text, text, numeric, timestamptz, numeric),
    product.try_price_quote(text, text, numeric, timestamptz, numeric)
TO isa_app;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- The catalogue and its prices are public (a price list); products and prices
-- are set by administrators (isa:admin).
SELECT isa.http_route('GET', '/v1/products', 'product.list_products(text)', 'public',
    'Every product, or those of one usage type.');
SELECT isa.http_route('GET', '/v1/products/{product_id}', 'product.get_product(uuid)', 'public',
    'A product.');
SELECT isa.http_route('GET', '/v1/products/{product_id}/prices', 'product.list_prices(uuid)', 'public',
    'A product''s prices in effective order, each with effective_to.');
SELECT isa.http_route('GET', '/v1/prices/quote', 'product.price_quote(text, text, numeric, timestamptz, numeric)', 'public',
    'The exact cost of quantity units of a usage type for a model at a time, after already_used units (one row).');
SELECT isa.http_route('POST', '/v1/products', 'product.create_product(text, text, text, text)', 'admin',
    'Creates a product for a usage type and model.', status => 201);
SELECT isa.http_route('POST', '/v1/products/{product_id}/prices',
    'product.set_price(uuid, text, numeric, jsonb, numeric, numeric, timestamptz)', 'admin',
    'Sets a product''s price from effective_from: per_unit, graduated or package.', status => 201);

-- ==== sql/billing.sql
-- billing.sql — the billing service (schema billing, source billing_service):
-- prices the usage that producers outside isa publish on
-- external.usage.recorded.{model,agent,mcp} with product.price_quote's rules,
-- records each usage once (dedupe on the producer's usage id), and publishes
-- billing.calculated (which wallet deducts) or billing.error (bad usage is
-- answered, never retried).  Costs are exact numeric tokens; the tokens charged
-- are ceil(cost).  Schema, outbox and inbox come from sql/services.sql.
-- docs/services/billing.md documents the API.

-- ---------------------------------------------------------------- tables
CREATE TABLE billing.billing_records (
    billing_id  uuid PRIMARY KEY,                 -- UUIDv7
    usage_id    text COLLATE "C" NOT NULL,        -- the producer's id: 1 to 200 characters
    usage_kind  text COLLATE "C" NOT NULL,        -- model, agent or mcp
    user_id     uuid NOT NULL,
    model       text NOT NULL,                    -- the model, agent or tool used
    quantities  jsonb NOT NULL,                   -- {input_tokens, output_tokens} | {runs} | {calls}
    cost        numeric NOT NULL,                 -- exact, >= 0
    tokens      bigint NOT NULL,                  -- ceil(cost)
    lines       jsonb NOT NULL,                   -- product.price_quote's lines
    event_id    uuid NOT NULL,                    -- the usage event's envelope id
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A usage is billed once, whatever envelope carried it.
    CONSTRAINT billing_records_usage_key UNIQUE (usage_kind, usage_id)
);
-- No CHECK constraints: the handler is the only writer and validates every
-- value, and each CHECK costs ~2.5 us per INSERT (its expression is parsed
-- again for every statement) on the benchmark's hot path.
COMMENT ON TABLE billing.billing_records IS
    'One row per billed usage: what was used, its exact cost and the tokens charged (ceil(cost)); unique per (usage_kind, usage_id).';
CREATE INDEX billing_records_user_occurred ON billing.billing_records (user_id, occurred_at);

-- What each user used of each product in each calendar month (UTC), kept in
-- the transaction that bills the usage: graduated tiers and packages continue
-- from there (product.price_quote's already_used).
CREATE TABLE billing.usage_counters (
    user_id    uuid NOT NULL,
    product_id uuid NOT NULL,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    quantity   numeric NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, product_id, month)
);
COMMENT ON TABLE billing.usage_counters IS
    'Units of each product billed to each user per calendar month (UTC, by occurred_at): the already_used of graduated and package prices.';

CREATE TABLE billing.usage_errors (
    error_id    uuid PRIMARY KEY,                 -- UUIDv7
    event_id    uuid NOT NULL,                    -- the usage event's envelope id
    event_type  text NOT NULL,
    usage_kind  text,
    usage_id    text,
    user_id     uuid,
    reason_code text NOT NULL CHECK (reason_code IN ('unknown_user', 'unknown_product', 'unknown_model',
                                                     'invalid_quantity', 'invalid_usage')),
    reason      text NOT NULL,
    data        jsonb NOT NULL,                   -- the event's data as received
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.usage_errors IS
    'Usage events that could not be billed, with the reason published in billing.error and the data as received.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('usage.recorded.model', 'external', '1.0.0',
    'A producer (isA_Model) recorded a model call: tokens in and out, for a user. Billed by billing.',
    '{"usage_id":      {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":       {"type": "uuid",      "required": true,  "description": "the user who used the model"},
      "model":         {"type": "string",    "required": true,  "description": "the model, as named by its products"},
      "input_tokens":  {"type": "integer",   "required": true,  "description": "input tokens, 0 to 100000000"},
      "output_tokens": {"type": "integer",   "required": true,  "description": "output tokens, 0 to 100000000"},
      "occurred_at":   {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');
SELECT isa.register_event_type('usage.recorded.agent', 'external', '1.0.0',
    'A producer (isA_Agent) recorded agent runs for a user. Billed by billing.',
    '{"usage_id":    {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":     {"type": "uuid",      "required": true,  "description": "the user who ran the agent"},
      "agent":       {"type": "string",    "required": true,  "description": "the agent"},
      "runs":        {"type": "integer",   "required": true,  "description": "runs, 0 to 100000000"},
      "occurred_at": {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');
SELECT isa.register_event_type('usage.recorded.mcp', 'external', '1.0.0',
    'A producer (isA_MCP) recorded MCP tool calls for a user. Billed by billing.',
    '{"usage_id":    {"type": "string",    "required": true,  "description": "the producer''s id of this usage: it is billed once"},
      "user_id":     {"type": "uuid",      "required": true,  "description": "the user who called the tool"},
      "tool":        {"type": "string",    "required": true,  "description": "the MCP tool"},
      "calls":       {"type": "integer",   "required": true,  "description": "calls, 0 to 100000000"},
      "occurred_at": {"type": "timestamp", "required": false, "description": "when it happened (default: the envelope timestamp)"}}');

SELECT isa.register_event_type('billing.calculated', 'billing_service', '1.0.0',
    'A usage was priced and recorded; wallet deducts `tokens` from the user''s wallet.',
    '{"billing_id": {"type": "uuid",    "required": true, "description": "the billing record"},
      "usage_id":   {"type": "string",  "required": true, "description": "the producer''s usage id"},
      "usage_kind": {"type": "string",  "required": true, "description": "model, agent or mcp"},
      "user_id":    {"type": "uuid",    "required": true, "description": "the user to charge"},
      "tokens":     {"type": "integer", "required": true, "description": "tokens to deduct: ceil(cost), >= 0"},
      "cost":       {"type": "decimal", "required": true, "description": "the exact cost in tokens, a decimal string"},
      "currency":   {"type": "string",  "required": true, "description": "always tokens"},
      "lines":      {"type": "array",   "required": true, "description": "how the cost was computed: product.price_quote''s lines"}}');
SELECT isa.register_event_type('billing.error', 'billing_service', '1.0.0',
    'A usage event could not be billed; it is recorded in billing.usage_errors and not retried.',
    '{"usage_id":    {"type": "string", "required": false, "description": "the producer''s usage id (null if missing or malformed)"},
      "usage_kind":  {"type": "string", "required": true,  "description": "model, agent or mcp (for another usage.recorded.<x> type: x)"},
      "user_id":     {"type": "uuid",   "required": false, "description": "the user (null if missing or malformed)"},
      "reason_code": {"type": "string", "required": true,  "description": "unknown_user, unknown_product, unknown_model, invalid_quantity or invalid_usage"},
      "reason":      {"type": "string", "required": true,  "description": "what is wrong, for a person"}}');

-- ---------------------------------------------------------------- internal helpers
-- A usage quantity: a JSON integer from 0 to 100 million; NULL otherwise.
CREATE FUNCTION billing._quantity(v jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN jsonb_typeof(v) = 'number' AND v::numeric >= 0 AND v::numeric <= 100000000
                     AND v::numeric = trunc(v::numeric)
                THEN v::numeric::bigint END;

-- An RFC 3339 date-time with an offset (Z or ±hh:mm), from 1970 on; NULL if
-- it is not one.  Checked field by field first so that the cast cannot fail.
CREATE FUNCTION billing._timestamp(v jsonb) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    s text;
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'string' THEN
        RETURN NULL;
    END IF;
    s := v #>> '{}';
    -- (A match without capture groups: PostgreSQL's regex engine is ~100
    -- times slower when it must report groups.)
    IF s !~ '^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-](0[0-9]|1[0-5]):?[0-5][0-9])$' THEN
        RETURN NULL;
    END IF;
    IF substr(s, 9, 2)::int > extract(day FROM make_date(substr(s, 1, 4)::int, substr(s, 6, 2)::int, 1)
                                                + interval '1 month - 1 day') THEN
        RETURN NULL;                                  -- 30 February and the like
    END IF;
    RETURN s::timestamptz;
END
$$;

-- The units of a product that a user used in a month before this usage of
-- `quantity` units.  With `apply`, counts the usage first: the upsert locks
-- the counter row, so already_used is exact even if usage of the same user
-- and product is billed concurrently.  (Internal, like _price.)
CREATE FUNCTION billing._used(apply boolean, user_id uuid, product_id uuid, month date, quantity numeric)
RETURNS numeric
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    used numeric;
BEGIN
    IF apply THEN
        INSERT INTO billing.usage_counters AS c (user_id, product_id, month, quantity)
        VALUES (_used.user_id, _used.product_id, _used.month, _used.quantity)
        ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET quantity = c.quantity + excluded.quantity
        RETURNING c.quantity - _used.quantity INTO used;
        RETURN used;
    END IF;
    SELECT c.quantity INTO used FROM billing.usage_counters c
     WHERE c.user_id = _used.user_id AND c.product_id = _used.product_id AND c.month = _used.month;
    RETURN coalesce(used, 0);
END
$$;

-- Prices a usage: kind model (q1 input tokens, q2 output tokens), agent (q1
-- runs) or mcp (q1 calls) of `name` by `user_id` at `at`.  Returns the exact
-- cost and the lines, or a reason_code and reason if no product or price
-- applies.  Graduated and package prices are quoted again with the units
-- already used this month (billing.usage_counters); with `apply` the usage is
-- counted (in the caller's transaction), and `counted` says what was added:
-- [{product_id, month, quantity}], NULL if nothing.
-- (Internal: called by functions whose search_path is pinned.)
CREATE FUNCTION billing._price(kind text, user_id uuid, name text, q1 bigint, q2 bigint, at timestamptz,
                               apply boolean,
                               OUT reason_code text, OUT reason text, OUT cost numeric, OUT lines jsonb,
                               OUT counted jsonb)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ut     text := CASE kind WHEN 'model' THEN 'model_input_tokens' WHEN 'agent' THEN 'agent_run' ELSE 'mcp_call' END;
    a      product.quote;
    b      product.quote;
    m      date;
    used_a numeric;
    used_b numeric;
BEGIN
    -- already_used NULL: a per-unit price is quoted at once, the others
    -- only say which product and price apply.
    a := product.try_price_quote(ut, name, q1, at, NULL);
    IF kind = 'model' THEN
        b := product.try_price_quote('model_output_tokens', name, q2, at, NULL);
    END IF;
    IF a.price_id IS NULL OR (kind = 'model' AND b.price_id IS NULL) THEN
        reason_code := 'unknown_product';
        IF kind = 'model' AND a.product_id IS NULL AND b.product_id IS NULL THEN
            reason_code := 'unknown_model';
            reason := format('no product for model "%s"', name);
        ELSIF a.product_id IS NULL AND kind = 'model' THEN
            reason := format('no product for usage type model_input_tokens and model "%s"', name);
        ELSIF a.product_id IS NULL THEN
            reason := format('no product for usage type %s and %s "%s" (nor one for any %s)', ut,
                             CASE kind WHEN 'agent' THEN 'agent' ELSE 'tool' END, name,
                             CASE kind WHEN 'agent' THEN 'agent' ELSE 'tool' END);
        ELSIF a.price_id IS NULL THEN
            reason := format('product %s (%s) has no price in force at %s', a.product_id, ut, at);
        ELSIF b.product_id IS NULL THEN
            reason := format('no product for usage type model_output_tokens and model "%s"', name);
        ELSE
            reason := format('product %s (model_output_tokens) has no price in force at %s', b.product_id, at);
        END IF;
        RETURN;
    END IF;

    -- Only graduated and package prices depend on the usage so far, so only
    -- their usage is counted: a counter row that every usage of a busy user
    -- updated would be rewritten hundreds of times per bridge transaction.
    IF a.pricing_model <> 'per_unit' OR b.pricing_model <> 'per_unit' THEN
        m := date_trunc('month', at AT TIME ZONE 'UTC')::date;
        IF a.pricing_model <> 'per_unit' THEN
            used_a := billing._used(apply, _price.user_id, a.product_id, m, q1);
            a := product.try_price_quote(ut, name, q1, at, used_a);
        END IF;
        IF b.pricing_model <> 'per_unit' THEN
            used_b := billing._used(apply, _price.user_id, b.product_id, m, q2);
            b := product.try_price_quote('model_output_tokens', name, q2, at, used_b);
        END IF;
        IF apply THEN
            counted := '[]';
            IF a.pricing_model <> 'per_unit' THEN
                counted := counted || jsonb_build_object('product_id', a.product_id, 'month', m, 'quantity', q1);
            END IF;
            IF b.pricing_model <> 'per_unit' THEN
                counted := counted || jsonb_build_object('product_id', b.product_id, 'month', m, 'quantity', q2);
            END IF;
        END IF;
    END IF;
    cost := trim_scale(a.cost + coalesce(b.cost, 0));
    lines := a.lines || coalesce(b.lines, '[]');
END
$$;

-- Records a usage event that cannot be billed and publishes billing.error,
-- unless the usage was billed already (a redelivery: nothing to say).
CREATE FUNCTION billing._reject(e isa.event, usage_kind text, usage_id text, user_id uuid,
                                reason_code text, reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM billing.billing_records r
                WHERE r.usage_kind = _reject.usage_kind AND r.usage_id = _reject.usage_id) THEN
        RETURN;
    END IF;
    INSERT INTO billing.usage_errors (error_id, event_id, event_type, usage_kind, usage_id, user_id,
                                      reason_code, reason, data)
    VALUES (isa.uuid_v7(), e.id, e.event_type, _reject.usage_kind, _reject.usage_id, _reject.user_id,
            _reject.reason_code, _reject.reason, coalesce(e.data, 'null'));
    PERFORM isa.publish_event('billing.error', 'billing_service',
        jsonb_build_object('usage_id', _reject.usage_id, 'usage_kind', _reject.usage_kind,
                           'user_id', _reject.user_id, 'reason_code', _reject.reason_code,
                           'reason', _reject.reason));
END
$$;

-- ---------------------------------------------------------------- the handler
-- external.usage.recorded.{model,agent,mcp}: validate, price, record once per
-- (usage_kind, usage_id), publish billing.calculated; bad usage becomes
-- billing.error (never an exception: it is not transient).
--
-- Hot path (one usage → one chain of the benchmark): no exception block, no
-- query whose plan depends on table statistics.  Plans that plpgsql caches
-- while billing_records is empty would scan it sequentially for the rest of
-- the bridge's transaction, so the dedupe is the INSERT's ON CONFLICT (an
-- index probe whatever the statistics), not a lookup before pricing.
CREATE FUNCTION billing.on_usage_recorded(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d    jsonb := e.data;
    kind text := CASE e.event_type WHEN 'usage.recorded.model' THEN 'model'
                                   WHEN 'usage.recorded.agent' THEN 'agent'
                                   WHEN 'usage.recorded.mcp'   THEN 'mcp' END;
    f    text;          -- the field naming the model, agent or tool, then the quantity
    uid  text := d ->> 'usage_id';
    usr  uuid;
    name text;
    q1   bigint;
    q2   bigint;
    at   timestamptz;
    p    record;
    tok  bigint;
    bid  uuid;
BEGIN
    IF kind IS NULL THEN
        PERFORM billing._reject(e, regexp_replace(e.event_type, '^usage\.recorded\.', ''), uid, NULL,
                                'invalid_usage', format('unknown usage event type "%s"', e.event_type));
        RETURN;
    END IF;
    IF jsonb_typeof(d -> 'usage_id') IS DISTINCT FROM 'string' OR uid = '' OR length(uid) > 200 THEN
        PERFORM billing._reject(e, kind, NULL, NULL, 'invalid_usage',
                                format('usage_id must be a string of 1 to 200 characters, not %s',
                                       coalesce(left((d -> 'usage_id')::text, 250), 'missing')));
        RETURN;
    END IF;
    IF jsonb_typeof(d -> 'user_id') IS DISTINCT FROM 'string'
       OR d ->> 'user_id' !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$' THEN
        PERFORM billing._reject(e, kind, uid, NULL, 'invalid_usage',
                                format('user_id must be a UUID, not %s',
                                       coalesce(left((d -> 'user_id')::text, 250), 'missing')));
        RETURN;
    END IF;
    usr := (d ->> 'user_id')::uuid;

    f := CASE kind WHEN 'model' THEN 'model' WHEN 'agent' THEN 'agent' ELSE 'tool' END;
    name := d ->> f;
    IF jsonb_typeof(d -> f) IS DISTINCT FROM 'string' OR name = '' OR length(name) > 200 THEN
        PERFORM billing._reject(e, kind, uid, usr, 'invalid_usage',
                                format('%s must be a string of 1 to 200 characters, not %s', f,
                                       coalesce(left((d -> f)::text, 250), 'missing')));
        RETURN;
    END IF;

    f := CASE kind WHEN 'model' THEN 'input_tokens' WHEN 'agent' THEN 'runs' ELSE 'calls' END;
    q1 := billing._quantity(d -> f);
    IF kind = 'model' THEN
        q2 := billing._quantity(d -> 'output_tokens');
    END IF;
    IF q1 IS NULL OR (kind = 'model' AND q2 IS NULL) THEN
        IF q1 IS NOT NULL THEN
            f := 'output_tokens';
        END IF;
        PERFORM billing._reject(e, kind, uid, usr, 'invalid_quantity',
                                format('%s must be an integer from 0 to 100000000, not %s', f,
                                       coalesce(left((d -> f)::text, 250), 'missing')));
        RETURN;
    END IF;

    IF coalesce(jsonb_typeof(d -> 'occurred_at'), 'null') = 'null' THEN
        at := e."timestamp";
    ELSE
        at := billing._timestamp(d -> 'occurred_at');
        IF at IS NULL OR at > now() + interval '1 hour' THEN
            PERFORM billing._reject(e, kind, uid, usr, 'invalid_usage',
                                    format('occurred_at must be an RFC 3339 date-time with an offset, from 1970 to an hour from now, not %s',
                                           left((d -> 'occurred_at')::text, 250)));
            RETURN;
        END IF;
    END IF;

    IF NOT account.user_exists(usr) THEN
        PERFORM billing._reject(e, kind, uid, usr, 'unknown_user', format('user %s does not exist or was deleted', usr));
        RETURN;
    END IF;

    p := billing._price(kind, usr, name, q1, q2, at, true);
    IF p.reason_code IS NOT NULL THEN
        PERFORM billing._reject(e, kind, uid, usr, p.reason_code, p.reason);
        RETURN;
    END IF;

    tok := ceil(p.cost);
    INSERT INTO billing.billing_records AS r (billing_id, usage_id, usage_kind, user_id, model, quantities, cost,
                                              tokens, lines, event_id, occurred_at)
    VALUES (isa.uuid_v7(), uid, kind, usr, name,
            CASE kind WHEN 'model' THEN jsonb_build_object('input_tokens', q1, 'output_tokens', q2)
                      WHEN 'agent' THEN jsonb_build_object('runs', q1)
                      ELSE jsonb_build_object('calls', q1) END,
            p.cost, tok, p.lines, e.id, at)
    ON CONFLICT ON CONSTRAINT billing_records_usage_key DO NOTHING
    RETURNING r.billing_id INTO bid;
    IF bid IS NULL THEN
        -- Billed already (the same usage under another envelope id): take
        -- back what _price counted, publish nothing.
        IF p.counted IS NOT NULL THEN
            UPDATE billing.usage_counters c SET quantity = c.quantity - x.quantity
              FROM jsonb_to_recordset(p.counted) AS x (product_id uuid, month date, quantity numeric)
             WHERE c.user_id = usr AND c.product_id = x.product_id AND c.month = x.month;
        END IF;
        RETURN;
    END IF;
    PERFORM isa.publish_event('billing.calculated', 'billing_service',
        jsonb_build_object('billing_id', bid, 'usage_id', uid, 'usage_kind', kind, 'user_id', usr,
                           'tokens', tok, 'cost', p.cost::text, 'currency', 'tokens', 'lines', p.lines));
END
$$;
COMMENT ON FUNCTION billing.on_usage_recorded(isa.event) IS
    'Handler of external.usage.recorded.>: bills a usage once per (usage_kind, usage_id) and publishes billing.calculated, or records and publishes billing.error.';

-- ---------------------------------------------------------------- API
CREATE FUNCTION billing.calculate_cost(usage_kind text, user_id uuid, model text, quantities jsonb,
                                       at timestamptz DEFAULT now())
RETURNS TABLE (cost numeric, tokens bigint, lines jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[];
    k    text;
    q    bigint[] := '{}';
    p    record;
BEGIN
    IF calculate_cost.usage_kind IS NULL THEN
        RAISE EXCEPTION 'usage_kind must not be null' USING ERRCODE = '22004';
    END IF;
    keys := CASE calculate_cost.usage_kind WHEN 'model' THEN ARRAY['input_tokens', 'output_tokens']
                                           WHEN 'agent' THEN ARRAY['runs'] WHEN 'mcp' THEN ARRAY['calls'] END;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'unknown usage kind "%"', calculate_cost.usage_kind USING ERRCODE = '22023',
            HINT = 'Usage kinds: model, agent, mcp.';
    END IF;
    IF calculate_cost.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF calculate_cost.model IS NULL THEN
        RAISE EXCEPTION 'model must not be null' USING ERRCODE = '22004',
            HINT = 'The model for usage kind model, the agent for agent, the tool for mcp.';
    END IF;
    IF calculate_cost.model = '' OR length(calculate_cost.model) > 200 THEN
        RAISE EXCEPTION 'model must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF quantities IS NULL THEN
        RAISE EXCEPTION 'quantities must not be null' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(quantities) <> 'object' THEN
        RAISE EXCEPTION 'quantities must be a JSON object, not %', jsonb_typeof(quantities) USING ERRCODE = '22023';
    END IF;
    IF quantities - keys <> '{}' THEN
        RAISE EXCEPTION 'unknown quantities for usage kind %: %', calculate_cost.usage_kind,
            (SELECT string_agg(x, ', ' ORDER BY x) FROM jsonb_object_keys(quantities - keys) x)
            USING ERRCODE = '22023', HINT = format('Quantities of usage kind %s: %s.', calculate_cost.usage_kind,
                                                   array_to_string(keys, ', '));
    END IF;
    FOREACH k IN ARRAY keys LOOP
        IF billing._quantity(quantities -> k) IS NULL THEN
            RAISE EXCEPTION 'quantities.% must be an integer from 0 to 100000000, not %', k,
                coalesce((quantities -> k)::text, 'missing') USING ERRCODE = '22023';
        END IF;
        q := q || billing._quantity(quantities -> k);
    END LOOP;
    IF calculate_cost.at IS NULL THEN
        RAISE EXCEPTION 'at must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM account.require_user(calculate_cost.user_id);

    p := billing._price(calculate_cost.usage_kind, calculate_cost.user_id, calculate_cost.model,
                        q[1], q[2], calculate_cost.at, false);
    IF p.reason_code IS NOT NULL THEN
        RAISE EXCEPTION '%', p.reason USING ERRCODE = 'P0002',
            DETAIL = format('reason_code %s', p.reason_code);
    END IF;
    cost := p.cost;
    tokens := ceil(p.cost);
    lines := p.lines;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION billing.calculate_cost(text, uuid, text, jsonb, timestamptz) IS
    'What a usage would cost if it were recorded now (after the user''s usage this month), without writing anything: exact cost, tokens = ceil(cost), lines. 22004/22023 bad arguments, P0002 unknown user, product or price.';

CREATE FUNCTION billing.usage_summary(user_id uuid, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (usage_kind text, model text, count bigint, quantities jsonb, cost numeric, tokens bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF usage_summary.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF usage_summary."from" IS NULL OR usage_summary."to" IS NULL THEN
        RAISE EXCEPTION 'from and to must not be null' USING ERRCODE = '22004';
    END IF;
    IF usage_summary."from" > usage_summary."to" THEN
        RAISE EXCEPTION 'from (%) is after to (%)', usage_summary."from", usage_summary."to" USING ERRCODE = '22023';
    END IF;
    IF NOT account.user_exists(usage_summary.user_id)
       AND NOT EXISTS (SELECT 1 FROM billing.billing_records r WHERE r.user_id = usage_summary.user_id) THEN
        RAISE EXCEPTION 'user % not found', usage_summary.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT r.usage_kind, r.model, count(*),
               CASE r.usage_kind
               WHEN 'model' THEN jsonb_build_object('input_tokens', sum((r.quantities ->> 'input_tokens')::bigint),
                                                    'output_tokens', sum((r.quantities ->> 'output_tokens')::bigint))
               WHEN 'agent' THEN jsonb_build_object('runs', sum((r.quantities ->> 'runs')::bigint))
               ELSE jsonb_build_object('calls', sum((r.quantities ->> 'calls')::bigint))
               END,
               trim_scale(sum(r.cost)), sum(r.tokens)::bigint
          FROM billing.billing_records r
         WHERE r.user_id = usage_summary.user_id
           AND r.occurred_at >= usage_summary."from" AND r.occurred_at < usage_summary."to"
         GROUP BY r.usage_kind, r.model
         ORDER BY r.usage_kind, r.model;
END
$$;
COMMENT ON FUNCTION billing.usage_summary(uuid, timestamptz, timestamptz) IS
    'A user''s billed usage with occurred_at in [from, to), per usage kind and model/agent/tool: count, summed quantities, exact cost, tokens charged. P0002 unknown user (one with billing records is known even if deleted).';

CREATE FUNCTION billing.get_billing_records(user_id uuid, "limit" integer DEFAULT 100)
RETURNS SETOF billing.billing_records
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF get_billing_records.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM isa.check_page_size('limit', get_billing_records."limit");
    IF NOT account.user_exists(get_billing_records.user_id)
       AND NOT EXISTS (SELECT 1 FROM billing.billing_records r WHERE r.user_id = get_billing_records.user_id) THEN
        RAISE EXCEPTION 'user % not found', get_billing_records.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT * FROM billing.billing_records r
         WHERE r.user_id = get_billing_records.user_id
         ORDER BY r.occurred_at DESC, r.billing_id DESC
         LIMIT get_billing_records."limit";
END
$$;
COMMENT ON FUNCTION billing.get_billing_records(uuid, integer) IS
    'A user''s newest billing records (by occurred_at), at most `limit` (1 to 1000, default 100). P0002 unknown user (one with billing records is known even if deleted).';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA billing FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    billing.calculate_cost(text, uuid, text, jsonb, timestamptz),
    billing.usage_summary(uuid, timestamptz, timestamptz),
    billing.get_billing_records(uuid, integer)
TO isa_app;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('billing', 'external.usage.recorded.>',
                               'billing.on_usage_recorded(isa.event)'::regprocedure, '{"versions": [1]}');

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user reads their own billing (self_param); anyone else needs billing:read
-- on the user.  The estimate is a POST for its quantities object; it writes
-- nothing.
SELECT isa.http_route('GET', '/v1/billing/{user_id}/records', 'billing.get_billing_records(uuid, integer)', 'user',
    'A user''s newest billing records (limit 1 to 1000, default 100).',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/billing/{user_id}/usage',
    'billing.usage_summary(uuid, timestamptz, timestamptz)', 'user',
    'A user''s billed usage in [from, to) per usage kind and model: count, quantities, cost, tokens.',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('POST', '/v1/billing/{user_id}/estimate',
    'billing.calculate_cost(text, uuid, text, jsonb, timestamptz)', 'user',
    'What a usage would cost the user now (one row), without recording anything.',
    permission => 'billing:read', resource_param => 'user_id', self_param => 'user_id');

-- ==== sql/wallet.sql
-- wallet.sql — the wallet service (schema wallet, source wallet_service): one
-- token wallet per user and its ledger.  wallet.transactions is append-only
-- and is the truth: every committed transaction leaves
-- wallets.balance = sum(transactions.amount) >= 0.  A deduction is one guarded
-- UPDATE (the wallet's row lock serialises deductions on a wallet; no
-- SERIALIZABLE needed) plus one ledger INSERT in the same transaction.
-- Schema, outbox and inbox come from sql/services.sql.  docs/services/wallet.md
-- documents the API, the events and the handlers.

-- ---------------------------------------------------------------- tables
CREATE TABLE wallet.wallets (
    wallet_id             uuid PRIMARY KEY,                 -- UUIDv7
    user_id               uuid NOT NULL UNIQUE,             -- account's user (no cross-schema foreign key)
    balance               bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    low_balance_threshold bigint NOT NULL DEFAULT 1000,     -- >= 0 (set_low_balance_threshold checks it)
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wallet.wallets IS
    'One token wallet per user: the balance (always the sum of its ledger, never negative) and the low-balance threshold (default 1000 tokens; 0 = never warn).';

-- The rules of a ledger row (reference_type one of billing, order, payment,
-- subscription, refund, manual; amount <> 0 except for a refund; balance_after
-- >= 0; key 1-255, reference_id 1-255, description <= 1000 characters) are
-- enforced by its only writer, wallet._post, and the functions that call it,
-- not by CHECK constraints: PostgreSQL rebuilds every CHECK expression from its
-- stored text once per INSERT statement, and these six cost about 18 µs per
-- ledger row on the billing.calculated handler (about 52 µs per event
-- without them).  For the same reason wallet_id has no foreign key (its check
-- cost about 10 µs per row): _post writes the wallet_id that its guarded
-- UPDATE just returned, and wallets cannot be deleted (trigger below).
-- Only the owner writes this table.
CREATE TABLE wallet.transactions (
    transaction_id      uuid PRIMARY KEY,                   -- UUIDv7
    wallet_id           uuid NOT NULL,                      -- wallet.wallets (see above)
    amount              bigint NOT NULL,                    -- + credit, - debit
    balance_after       bigint NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint bytea NOT NULL,                     -- md5 of the request's arguments (wallet._fingerprint)
    reference_type      text NOT NULL,
    reference_id        text,
    description         text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT transactions_idempotency_key UNIQUE (wallet_id, idempotency_key)
);
COMMENT ON TABLE wallet.transactions IS
    'The ledger, append-only: every credit (+) and debit (-) of a wallet with the balance after it, its idempotency key and request fingerprint, and what it refers to.';
CREATE INDEX transactions_wallet_created ON wallet.transactions (wallet_id, created_at);

-- The ledger is append-only: corrections are new transactions.
CREATE FUNCTION wallet._refuse_ledger_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'wallet.transactions is append-only: % is not allowed', TG_OP
        USING ERRCODE = '42501',
        HINT = 'Correct a balance with a new transaction (wallet.add or wallet.deduct); wallet.reconcile_balances() repairs a balance from the ledger.';
END
$$;
CREATE TRIGGER transactions_append_only
    BEFORE UPDATE OR DELETE ON wallet.transactions
    FOR EACH ROW EXECUTE FUNCTION wallet._refuse_ledger_change();
CREATE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON wallet.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION wallet._refuse_ledger_change();

-- A wallet outlives its user (its ledger is the record of what was paid and
-- spent): wallets are never deleted.
CREATE FUNCTION wallet._refuse_wallet_delete() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'wallets cannot be deleted (% on wallet.wallets): the ledger refers to them', TG_OP
        USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER wallets_no_delete
    BEFORE DELETE ON wallet.wallets
    FOR EACH ROW EXECUTE FUNCTION wallet._refuse_wallet_delete();
CREATE TRIGGER wallets_no_truncate
    BEFORE TRUNCATE ON wallet.wallets
    FOR EACH STATEMENT EXECUTE FUNCTION wallet._refuse_wallet_delete();

-- ---------------------------------------------------------------- types
CREATE TYPE wallet.transaction_result AS (
    transaction_id uuid,
    wallet_id      uuid,
    amount         bigint,        -- signed, as in the ledger: negative for a deduction
    balance_after  bigint,
    created_at     timestamptz
);
COMMENT ON TYPE wallet.transaction_result IS
    'The ledger row a wallet.deduct or wallet.add wrote (or, for a retried idempotency key, wrote the first time).';

CREATE TYPE wallet.wallet_info AS (
    wallet_id             uuid,
    user_id               uuid,
    balance               bigint,
    low_balance_threshold bigint,
    created_at            timestamptz,
    updated_at            timestamptz
);
COMMENT ON TYPE wallet.wallet_info IS
    'A wallet as the wallet API returns it.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('wallet.tokens.deducted', 'wallet_service', '1.0.0',
    'Tokens left a wallet: a deduction (wallet.deduct, billing.calculated) or a refund taken back.',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "transaction_id": {"type": "uuid",    "required": true,  "description": "the ledger row"},
      "amount":         {"type": "integer", "required": true,  "description": "tokens deducted (positive)"},
      "balance_after":  {"type": "integer", "required": true,  "description": "the balance after the deduction"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing, order, payment, subscription, refund or manual"},
      "reference_id":   {"type": "string",  "required": false, "description": "the id of what it refers to (billing_id for billing), or null"}}');
SELECT isa.register_event_type('wallet.tokens.added', 'wallet_service', '1.0.0',
    'Tokens were added to a wallet (wallet.add, payment.completed, subscription.created).',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "transaction_id": {"type": "uuid",    "required": true,  "description": "the ledger row"},
      "amount":         {"type": "integer", "required": true,  "description": "tokens added (positive)"},
      "balance_after":  {"type": "integer", "required": true,  "description": "the balance after the credit"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing, order, payment, subscription, refund or manual"},
      "reference_id":   {"type": "string",  "required": false, "description": "the id of what it refers to (payment_id, subscription_id), or null"}}');
SELECT isa.register_event_type('wallet.tokens.insufficient', 'wallet_service', '1.0.0',
    'A deduction asked by an event was refused for lack of tokens and nothing was deducted (billing.calculated), or a refund could not take back all its tokens (payment.refunded: the balance was taken, see wallet.tokens.deducted).',
    '{"wallet_id":      {"type": "uuid",    "required": true,  "description": "the wallet"},
      "user_id":        {"type": "uuid",    "required": true,  "description": "its user"},
      "requested":      {"type": "integer", "required": true,  "description": "tokens asked for"},
      "balance":        {"type": "integer", "required": true,  "description": "the balance when it was refused"},
      "reference_type": {"type": "string",  "required": true,  "description": "billing or refund"},
      "reference_id":   {"type": "string",  "required": false, "description": "billing_id or payment_id"}}');
SELECT isa.register_event_type('wallet.balance.low', 'wallet_service', '1.0.0',
    'A deduction moved a wallet''s balance from at least its low-balance threshold to below it (once per crossing).',
    '{"wallet_id": {"type": "uuid",    "required": true, "description": "the wallet"},
      "user_id":   {"type": "uuid",    "required": true, "description": "its user"},
      "balance":   {"type": "integer", "required": true, "description": "the balance after the deduction"},
      "threshold": {"type": "integer", "required": true, "description": "the wallet''s low-balance threshold"}}');
SELECT isa.register_event_type('wallet.reconciliation.mismatch', 'wallet_service', '1.0.0',
    'wallet.reconcile_balances() found a wallet whose balance differs from the sum of its ledger.',
    '{"wallet_id":        {"type": "uuid",    "required": true, "description": "the wallet"},
      "user_id":          {"type": "uuid",    "required": true, "description": "its user"},
      "recorded_balance": {"type": "integer", "required": true, "description": "the balance found in wallet.wallets"},
      "ledger_balance":   {"type": "integer", "required": true, "description": "the sum of the wallet''s ledger (the truth)"},
      "repaired":         {"type": "boolean", "required": true, "description": "whether the balance was set to the ledger sum"}}');

-- ---------------------------------------------------------------- internal helpers
-- What makes two requests with one idempotency key "the same": operation,
-- amount, reference and description.  Inlined by the planner (plain SQL).
CREATE FUNCTION wallet._fingerprint(operation text, amount bigint, reference_type text,
                                    reference_id text, description text) RETURNS bytea
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.decode(pg_catalog.md5(operation || ':' || amount::text || ':' || pg_catalog.quote_nullable(reference_type)
                             || ':' || pg_catalog.quote_nullable(reference_id) || ':' || pg_catalog.quote_nullable(description)), 'hex')
$$;

-- The one write path of the ledger.  Adds p_amount (signed; 0 only for a
-- refund) to the wallet of p_user_id and appends the ledger row, unless that
-- would make the balance negative; publishes wallet.tokens.deducted or
-- wallet.tokens.added, and wallet.balance.low on a downward threshold crossing.
--
-- Order of operations: the guarded UPDATE first takes the wallet's row lock;
-- every writer of a wallet's ledger holds that lock, so when the ledger INSERT
-- runs, any other transaction with the same idempotency key on this wallet
-- has committed (its row is found: ON CONFLICT) or rolled back.  A conflict
-- undoes the UPDATE (still under the lock: nobody saw it) and reports the
-- first transaction.  When the guarded UPDATE matches nothing (no wallet, not
-- enough tokens), one lookup tells which, and also finds a committed retry.
--
-- outcome: applied | replayed (same key, same fingerprint: tx_* is the first
-- transaction) | conflict (same key, other fingerprint) | insufficient
-- (balance = the balance) | no_wallet.  Raises nothing but real errors.
CREATE FUNCTION wallet._post(
    p_user_id uuid, p_amount bigint, p_key text, p_fingerprint bytea,
    p_reference_type text, p_reference_id text, p_description text,
    OUT outcome text, OUT tx_id uuid, OUT tx_wallet uuid, OUT tx_amount bigint,
    OUT tx_balance_after bigint, OUT tx_created_at timestamptz, OUT balance bigint)
    LANGUAGE plpgsql
    -- No SET search_path: its callers (API functions, handlers) pin it, and a
    -- SET clause costs each call a GUC save and restore.
AS $$
DECLARE
    threshold bigint;
    fp        bytea;
    event_id  uuid;     -- publish_event is assigned, not PERFORMed: a simple expression skips the executor
BEGIN
    UPDATE wallet.wallets w
       SET balance = w.balance + p_amount, updated_at = now()
     WHERE w.user_id = p_user_id AND w.balance >= -p_amount
    RETURNING w.wallet_id, w.balance, w.low_balance_threshold INTO tx_wallet, balance, threshold;
    IF FOUND THEN
        INSERT INTO wallet.transactions AS t (transaction_id, wallet_id, amount, balance_after, idempotency_key,
                                              request_fingerprint, reference_type, reference_id, description)
        VALUES (isa.uuid_v7(), tx_wallet, p_amount, balance, p_key,
                p_fingerprint, p_reference_type, p_reference_id, p_description)
        ON CONFLICT ON CONSTRAINT transactions_idempotency_key DO NOTHING
        RETURNING t.transaction_id, t.created_at INTO tx_id, tx_created_at;
        IF FOUND THEN
            outcome := 'applied';
            tx_amount := p_amount;
            tx_balance_after := balance;
            IF p_amount < 0 THEN
                event_id := isa.publish_event('wallet.tokens.deducted', 'wallet_service',
                    jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id, 'transaction_id', tx_id,
                                       'amount', -p_amount, 'balance_after', balance,
                                       'reference_type', p_reference_type, 'reference_id', p_reference_id));
                IF balance < threshold AND balance - p_amount >= threshold THEN
                    event_id := isa.publish_event('wallet.balance.low', 'wallet_service',
                        jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id,
                                           'balance', balance, 'threshold', threshold));
                END IF;
            ELSIF p_amount > 0 THEN
                event_id := isa.publish_event('wallet.tokens.added', 'wallet_service',
                    jsonb_build_object('wallet_id', tx_wallet, 'user_id', p_user_id, 'transaction_id', tx_id,
                                       'amount', p_amount, 'balance_after', balance,
                                       'reference_type', p_reference_type, 'reference_id', p_reference_id));
            END IF;
            RETURN;
        END IF;
        -- The key is taken by a committed transaction: undo ours.
        UPDATE wallet.wallets w SET balance = w.balance - p_amount WHERE w.wallet_id = tx_wallet;
    END IF;

    SELECT w.wallet_id, w.balance, t.transaction_id, t.amount, t.balance_after, t.created_at, t.request_fingerprint
      INTO tx_wallet, balance, tx_id, tx_amount, tx_balance_after, tx_created_at, fp
      FROM wallet.wallets w
      LEFT JOIN wallet.transactions t ON t.wallet_id = w.wallet_id AND t.idempotency_key = p_key
     WHERE w.user_id = p_user_id;
    IF NOT FOUND THEN
        outcome := 'no_wallet';
    ELSIF tx_id IS NULL AND p_amount >= 0 THEN
        -- A credit's guard cannot fail: the wallet was opened between the
        -- UPDATE and this lookup.  Once more (the UPDATE matches this time).
        SELECT * INTO outcome, tx_id, tx_wallet, tx_amount, tx_balance_after, tx_created_at, balance
          FROM wallet._post(p_user_id, p_amount, p_key, p_fingerprint, p_reference_type, p_reference_id, p_description);
    ELSIF tx_id IS NULL THEN
        outcome := 'insufficient';
    ELSIF fp = p_fingerprint THEN
        outcome := 'replayed';
    ELSE
        outcome := 'conflict';
        tx_id := NULL; tx_amount := NULL; tx_balance_after := NULL; tx_created_at := NULL;
    END IF;
END
$$;

-- Opens the wallet of a user without asking account (callers do); returns it.
CREATE FUNCTION wallet._open(p_user_id uuid) RETURNS wallet.wallets
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    INSERT INTO wallet.wallets AS x (wallet_id, user_id) VALUES (isa.uuid_v7(), p_user_id)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING * INTO w;
    IF NOT FOUND THEN
        SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = p_user_id;
    END IF;
    RETURN w;
END
$$;

-- Argument checks shared by deduct and add.  _request_ok is the fast path:
-- one expression, inlined into the caller's IF; only when it is false does
-- _check_request run to raise the precise error (22004 / 22023).  The two
-- must agree (the pgTAP file exercises every refusal).
CREATE FUNCTION wallet._request_ok(user_id uuid, amount bigint, idempotency_key text,
                                   reference_type text, reference_id text, description text)
RETURNS boolean
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(user_id IS NOT NULL AND amount BETWEEN 1 AND 1000000000000000
                    AND length(idempotency_key) BETWEEN 1 AND 255
                    AND reference_type IN ('billing', 'order', 'payment', 'subscription', 'refund', 'manual')
                    AND (reference_id IS NULL OR length(reference_id) BETWEEN 1 AND 255)
                    AND (description IS NULL OR length(description) <= 1000), false)
$$;

CREATE FUNCTION wallet._check_request(user_id uuid, amount bigint, idempotency_key text,
                                      reference_type text, reference_id text, description text)
RETURNS void
    LANGUAGE plpgsql IMMUTABLE    -- no SET search_path: called only by API functions, which pin it
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF amount IS NULL THEN
        RAISE EXCEPTION 'amount must not be null' USING ERRCODE = '22004';
    END IF;
    IF amount <= 0 OR amount > 1000000000000000 THEN
        RAISE EXCEPTION 'amount must be from 1 to 1000000000000000 tokens, not %', amount USING ERRCODE = '22023';
    END IF;
    IF idempotency_key IS NULL THEN
        RAISE EXCEPTION 'idempotency_key must not be null' USING ERRCODE = '22004',
            HINT = 'Pass a key that is unique per intended operation, e.g. the id of what is paid for; a retry passes the same key.';
    END IF;
    IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023';
    END IF;
    IF reference_type IS NULL THEN
        RAISE EXCEPTION 'reference_type must not be null' USING ERRCODE = '22004';
    END IF;
    IF reference_type NOT IN ('billing', 'order', 'payment', 'subscription', 'refund', 'manual') THEN
        RAISE EXCEPTION 'unknown reference_type "%"', reference_type USING ERRCODE = '22023',
            HINT = 'One of billing, order, payment, subscription, refund, manual.';
    END IF;
    IF length(reference_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'reference_id must be 1 to 255 characters or null' USING ERRCODE = '22023';
    END IF;
    IF length(description) > 1000 THEN
        RAISE EXCEPTION 'description must be at most 1000 characters' USING ERRCODE = '22023';
    END IF;
END
$$;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION wallet.check_balance(user_id uuid, amount bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF amount IS NULL THEN
        RAISE EXCEPTION 'amount must not be null' USING ERRCODE = '22004';
    END IF;
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive, not %', amount USING ERRCODE = '22023';
    END IF;
    RETURN EXISTS (SELECT 1 FROM wallet.wallets w
                    WHERE w.user_id = check_balance.user_id AND w.balance >= check_balance.amount);
END
$$;
COMMENT ON FUNCTION wallet.check_balance(uuid, bigint) IS
    'Whether the user''s wallet holds at least amount tokens now (false if the user has no wallet). 22004 NULL argument, 22023 amount <= 0.';

CREATE FUNCTION wallet.get_balance(user_id uuid) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b bigint;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT w.balance INTO b FROM wallet.wallets w WHERE w.user_id = get_balance.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;
COMMENT ON FUNCTION wallet.get_balance(uuid) IS
    'The balance (tokens) of the user''s wallet; P0002 if the user has no wallet.';

CREATE FUNCTION wallet.get_wallet(user_id uuid) RETURNS wallet.wallet_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r wallet.wallet_info;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at
      INTO r FROM wallet.wallets w WHERE w.user_id = get_wallet.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.get_wallet(uuid) IS
    'The user''s wallet: id, balance, low-balance threshold, created_at, updated_at; P0002 if the user has no wallet.';

CREATE FUNCTION wallet.list_transactions(user_id uuid, "limit" integer DEFAULT 50, before timestamptz DEFAULT NULL)
RETURNS TABLE (transaction_id uuid, amount bigint, balance_after bigint, idempotency_key text,
               reference_type text, reference_id text, description text, created_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wid uuid;
BEGIN
    IF list_transactions.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM isa.check_page_size('limit', list_transactions."limit");
    SELECT w.wallet_id INTO wid FROM wallet.wallets w WHERE w.user_id = list_transactions.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', list_transactions.user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY
        SELECT t.transaction_id, t.amount, t.balance_after, t.idempotency_key,
               t.reference_type, t.reference_id, t.description, t.created_at
          FROM wallet.transactions t
         WHERE t.wallet_id = wid
           AND (list_transactions.before IS NULL OR t.created_at < list_transactions.before)
         ORDER BY t.created_at DESC, t.transaction_id DESC
         LIMIT list_transactions."limit";
END
$$;
COMMENT ON FUNCTION wallet.list_transactions(uuid, integer, timestamptz) IS
    'The user''s ledger, newest first: at most limit (1 to 1000, default 50) transactions created before before (exclusive; NULL: from the newest). P0002 if the user has no wallet.';

-- ---------------------------------------------------------------- API: writes
CREATE FUNCTION wallet.open_wallet(user_id uuid) RETURNS wallet.wallet_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = open_wallet.user_id;
    IF NOT FOUND THEN
        IF NOT account.user_exists(user_id) THEN
            RAISE EXCEPTION 'user % not found', user_id USING ERRCODE = 'P0002',
                HINT = 'A wallet is opened for an existing, not deleted user (account.create_user).';
        END IF;
        w := wallet._open(user_id);
    END IF;
    RETURN ROW(w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at)::wallet.wallet_info;
END
$$;
COMMENT ON FUNCTION wallet.open_wallet(uuid) IS
    'Opens the user''s wallet (balance 0) or returns the one it has: idempotent. P0002 if the user is unknown or deleted.';

CREATE FUNCTION wallet.deduct(user_id uuid, amount bigint, idempotency_key text,
                              reference_type text DEFAULT 'manual', reference_id text DEFAULT NULL,
                              description text DEFAULT NULL)
RETURNS wallet.transaction_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF NOT wallet._request_ok(user_id, amount, idempotency_key, reference_type, reference_id, description) THEN
        PERFORM wallet._check_request(user_id, amount, idempotency_key, reference_type, reference_id, description);
    END IF;
    r := wallet._post(user_id, -amount, idempotency_key,
                      wallet._fingerprint('deduct', amount, reference_type, reference_id, description),
                      reference_type, reference_id, description);
    CASE r.outcome
    WHEN 'applied', 'replayed' THEN
        RETURN ROW(r.tx_id, r.tx_wallet, r.tx_amount, r.tx_balance_after, r.tx_created_at)::wallet.transaction_result;
    WHEN 'insufficient' THEN
        RAISE EXCEPTION 'insufficient balance: % tokens requested, the wallet of user % holds %', amount, user_id, r.balance
            USING ERRCODE = '23514';
    WHEN 'no_wallet' THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    ELSE
        RAISE EXCEPTION 'idempotency key "%" was already used for another transaction of this wallet', idempotency_key
            USING ERRCODE = '23505',
            HINT = 'A retry must repeat the amount, reference and description of the first call; a new operation needs a new key.';
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet.deduct(uuid, bigint, text, text, text, text) IS
    'Deducts amount tokens from the user''s wallet and publishes wallet.tokens.deducted (and wallet.balance.low on crossing the threshold). The same idempotency key with the same arguments returns the first result and publishes nothing. 23514 insufficient balance, P0002 no wallet, 22023/22004 bad argument, 23505 key used with other arguments.';

CREATE FUNCTION wallet.add(user_id uuid, amount bigint, idempotency_key text,
                           reference_type text DEFAULT 'manual', reference_id text DEFAULT NULL,
                           description text DEFAULT NULL)
RETURNS wallet.transaction_result
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF NOT wallet._request_ok(user_id, amount, idempotency_key, reference_type, reference_id, description) THEN
        PERFORM wallet._check_request(user_id, amount, idempotency_key, reference_type, reference_id, description);
    END IF;
    r := wallet._post(user_id, amount, idempotency_key,
                      wallet._fingerprint('add', amount, reference_type, reference_id, description),
                      reference_type, reference_id, description);
    CASE r.outcome
    WHEN 'applied', 'replayed' THEN
        RETURN ROW(r.tx_id, r.tx_wallet, r.tx_amount, r.tx_balance_after, r.tx_created_at)::wallet.transaction_result;
    WHEN 'no_wallet' THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002',
            HINT = 'wallet.open_wallet(user_id) opens it.';
    ELSE   -- 'conflict' ('insufficient' cannot happen for a credit)
        RAISE EXCEPTION 'idempotency key "%" was already used for another transaction of this wallet', idempotency_key
            USING ERRCODE = '23505',
            HINT = 'A retry must repeat the amount, reference and description of the first call; a new operation needs a new key.';
    END CASE;
END
$$;
COMMENT ON FUNCTION wallet.add(uuid, bigint, text, text, text, text) IS
    'Adds amount tokens to the user''s wallet and publishes wallet.tokens.added. The same idempotency key with the same arguments returns the first result and publishes nothing. P0002 no wallet, 22023/22004 bad argument, 23505 key used with other arguments.';

CREATE FUNCTION wallet.set_low_balance_threshold(user_id uuid, threshold bigint) RETURNS wallet.wallet_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r wallet.wallet_info;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF threshold IS NULL THEN
        RAISE EXCEPTION 'threshold must not be null' USING ERRCODE = '22004';
    END IF;
    IF threshold < 0 THEN
        RAISE EXCEPTION 'threshold must not be negative, not %', threshold USING ERRCODE = '22023',
            HINT = '0 turns the low-balance event off.';
    END IF;
    UPDATE wallet.wallets w SET low_balance_threshold = set_low_balance_threshold.threshold, updated_at = now()
     WHERE w.user_id = set_low_balance_threshold.user_id
    RETURNING w.wallet_id, w.user_id, w.balance, w.low_balance_threshold, w.created_at, w.updated_at INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % has no wallet', user_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION wallet.set_low_balance_threshold(uuid, bigint) IS
    'Sets the balance below which a deduction publishes wallet.balance.low (0: never) and returns the wallet. P0002 no wallet, 22023 negative, 22004 NULL.';

-- ---------------------------------------------------------------- reconciliation
CREATE FUNCTION wallet.reconcile_balances(repair boolean DEFAULT true)
RETURNS TABLE (wallet_id uuid, user_id uuid, recorded_balance bigint, ledger_balance bigint, repaired boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    c record;
BEGIN
    IF repair IS NULL THEN
        RAISE EXCEPTION 'repair must not be null' USING ERRCODE = '22004';
    END IF;
    -- One snapshot: a balance and its ledger rows are written by the same
    -- transactions, so a consistent wallet never shows up here.
    FOR c IN
        SELECT w.wallet_id, w.user_id, w.balance, coalesce(l.total, 0) AS total
          FROM wallet.wallets w
          LEFT JOIN (SELECT t.wallet_id, sum(t.amount) AS total
                       FROM wallet.transactions t GROUP BY t.wallet_id) l ON l.wallet_id = w.wallet_id
         WHERE w.balance <> coalesce(l.total, 0)
         ORDER BY w.wallet_id
    LOOP
        wallet_id := c.wallet_id;
        user_id := c.user_id;
        recorded_balance := c.balance;
        ledger_balance := c.total;
        repaired := false;
        IF repair THEN
            -- Lock the wallet, then sum its ledger again: no deduction can
            -- commit in between, and every one committed before is counted.
            SELECT w.balance INTO recorded_balance FROM wallet.wallets w WHERE w.wallet_id = c.wallet_id FOR UPDATE;
            SELECT coalesce(sum(t.amount), 0) INTO ledger_balance FROM wallet.transactions t WHERE t.wallet_id = c.wallet_id;
            CONTINUE WHEN recorded_balance = ledger_balance;   -- repaired meanwhile (another reconcile)
            IF ledger_balance >= 0 THEN
                UPDATE wallet.wallets w SET balance = ledger_balance, updated_at = now() WHERE w.wallet_id = c.wallet_id;
                repaired := true;
            ELSE
                RAISE WARNING 'wallet %: its ledger sums to % tokens, which cannot be a balance; left at %',
                    c.wallet_id, ledger_balance, recorded_balance;
            END IF;
        END IF;
        PERFORM isa.publish_event('wallet.reconciliation.mismatch', 'wallet_service',
            jsonb_build_object('wallet_id', wallet_id, 'user_id', user_id, 'recorded_balance', recorded_balance,
                               'ledger_balance', ledger_balance, 'repaired', repaired));
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION wallet.reconcile_balances(boolean) IS
    'Compares every wallet''s balance with the sum of its ledger; returns and publishes (wallet.reconciliation.mismatch) each mismatch and, with repair (default), sets the balance to the ledger sum under the wallet''s row lock. For isa_admin; pg_cron runs it hourly (isa-wallet-reconcile).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description) VALUES
    ('isa-wallet-reconcile', '23 * * * *', 'SELECT count(*) FROM wallet.reconcile_balances()',
     'Hourly: compare every wallet''s balance with the sum of its ledger, repair and report mismatches (wallet.reconciliation.mismatch).');

-- ---------------------------------------------------------------- handlers
-- Handlers raise only on transient failure: bad data is logged (WARNING) and
-- the event is consumed.  A text is a uuid for them when it has the canonical
-- 8-4-4-4-12 form (checked before casting, so a bad id cannot raise).

-- account_service.user.created: open the user's wallet.
CREATE FUNCTION wallet.on_user_created(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'wallet: user.created % ignored: data.user_id is not a uuid', e.id;
        RETURN;
    END IF;
    IF NOT account.user_exists(uid::uuid) THEN
        RAISE WARNING 'wallet: user.created % ignored: user % does not exist (deleted since?)', e.id, uid;
        RETURN;
    END IF;
    PERFORM wallet._open(uid::uuid);
END
$$;

-- The wallet of a user named by an event, opened if the user exists and has
-- none yet (its user.created may not be handled yet); NULL if the user is
-- unknown or deleted.
CREATE FUNCTION wallet._wallet_for_event(p_user_id uuid) RETURNS wallet.wallets
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w wallet.wallets;
BEGIN
    SELECT * INTO w FROM wallet.wallets x WHERE x.user_id = p_user_id;
    IF FOUND THEN
        RETURN w;
    END IF;
    IF account.user_exists(p_user_id) THEN
        RETURN wallet._open(p_user_id);
    END IF;
    RETURN NULL;
END
$$;

-- billing_service.billing.calculated: deduct data.tokens, all or nothing;
-- refused → wallet.tokens.insufficient.  On the usage→billing→wallet chain.
CREATE FUNCTION wallet.on_billing_calculated(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := e.data ->> 'user_id';
    bid     text := e.data ->> 'billing_id';
    tok     text := e.data ->> 'tokens';
    amount  bigint;
    descr   text;
    r       record;
    w       wallet.wallets;
    event_id uuid;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR bid IS NULL OR bid = '' OR length(bid) > 200
       OR jsonb_typeof(e.data -> 'tokens') IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: billing.calculated % ignored: needs data.user_id (uuid), data.billing_id and data.tokens (integer 0 to 999999999999999), got %',
            e.id, e.data;
        RETURN;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN;
    END IF;
    descr := left(e.data ->> 'usage_kind', 100) || ' usage';
    r := wallet._post(uid::uuid, -amount, 'billing:' || bid,
                      wallet._fingerprint('deduct', amount, 'billing', bid, descr), 'billing', bid, descr);
    IF r.outcome IN ('applied', 'replayed') THEN
        RETURN;
    ELSIF r.outcome = 'insufficient' THEN
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', r.tx_wallet, 'user_id', uid, 'requested', amount, 'balance', r.balance,
                               'reference_type', 'billing', 'reference_id', bid));
    ELSIF r.outcome = 'no_wallet' THEN
        w := wallet._wallet_for_event(uid::uuid);
        IF w.wallet_id IS NULL THEN
            RAISE WARNING 'wallet: billing.calculated % ignored: user % is unknown or deleted', e.id, uid;
            RETURN;
        END IF;
        -- A wallet opened just now holds 0 tokens.
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', w.wallet_id, 'user_id', uid, 'requested', amount, 'balance', w.balance,
                               'reference_type', 'billing', 'reference_id', bid));
    ELSE
        RAISE WARNING 'wallet: billing.calculated % ignored: billing % was already deducted with other arguments', e.id, bid;
    END IF;
END
$$;

-- Credits for payment.completed and subscription.created.
CREATE FUNCTION wallet._credit_from_event(e isa.event, p_amount_field text, p_id_field text, p_reference_type text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid    text := e.data ->> 'user_id';
    ref    text := e.data ->> p_id_field;
    tok    text := e.data ->> p_amount_field;
    amount bigint;
    key    text;
    r      record;
    w      wallet.wallets;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR ref IS NULL OR ref = '' OR length(ref) > 200
       OR jsonb_typeof(e.data -> p_amount_field) IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: %.% % ignored: needs data.user_id (uuid), data.% and data.% (integer 0 to 999999999999999), got %',
            e.source, e.event_type, e.id, p_id_field, p_amount_field, e.data;
        RETURN;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN;
    END IF;
    key := p_reference_type || ':' || ref;
    r := wallet._post(uid::uuid, amount, key, wallet._fingerprint('add', amount, p_reference_type, ref, NULL),
                      p_reference_type, ref, NULL);
    IF r.outcome = 'no_wallet' THEN
        w := wallet._wallet_for_event(uid::uuid);
        IF w.wallet_id IS NULL THEN
            RAISE WARNING 'wallet: %.% % ignored: user % is unknown or deleted; % tokens not credited',
                e.source, e.event_type, e.id, uid, amount;
            RETURN;
        END IF;
        r := wallet._post(uid::uuid, amount, key, wallet._fingerprint('add', amount, p_reference_type, ref, NULL),
                          p_reference_type, ref, NULL);
    END IF;
    IF r.outcome = 'conflict' THEN
        RAISE WARNING 'wallet: %.% % ignored: % % was already credited with other arguments',
            e.source, e.event_type, e.id, p_reference_type, ref;
    END IF;
END
$$;

-- payment_service.payment.completed: add the tokens bought (data.tokens > 0).
CREATE FUNCTION wallet.on_payment_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wallet._credit_from_event(e, 'tokens', 'payment_id', 'payment');
END
$$;

-- payment_service.subscription.created: add the plan's credits (data.credits > 0).
CREATE FUNCTION wallet.on_subscription_created(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM wallet._credit_from_event(e, 'credits', 'subscription_id', 'subscription');
END
$$;

-- payment_service.payment.refunded: take back data.tokens, at most the
-- balance.  The ledger row records what was taken (possibly 0); a shortfall is
-- written off and reported as wallet.tokens.insufficient (reference refund).
CREATE FUNCTION wallet.on_payment_refunded(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := e.data ->> 'user_id';
    pid     text := e.data ->> 'payment_id';
    tok     text := e.data ->> 'tokens';
    charge  text := coalesce(e.data ->> 'stripe_charge_id', '');
    refunded text := coalesce(e.data ->> 'amount_refunded', '');
    amount  bigint;
    taken   bigint;
    descr   text;
    r       record;
    w       wallet.wallets;
    event_id uuid;
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
       OR pid IS NULL OR pid = '' OR length(pid) > 100 OR length(charge) > 100 OR length(refunded) > 30
       OR jsonb_typeof(e.data -> 'tokens') IS DISTINCT FROM 'number' OR tok !~ '^[0-9]{1,15}$' THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: needs data.user_id (uuid), data.payment_id and data.tokens (integer 0 to 999999999999999), got %',
            e.id, e.data;
        RETURN;
    END IF;
    amount := tok::bigint;
    IF amount = 0 THEN
        RETURN;
    END IF;
    w := wallet._wallet_for_event(uid::uuid);
    IF w.wallet_id IS NULL THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: user % is unknown or deleted', e.id, uid;
        RETURN;
    END IF;
    -- Lock the wallet: the amount taken depends on the balance.
    SELECT least(x.balance, amount) INTO taken FROM wallet.wallets x WHERE x.wallet_id = w.wallet_id FOR UPDATE;
    descr := CASE WHEN taken = amount THEN format('refund of payment %s: %s tokens taken back', pid, amount)
                  ELSE format('refund of payment %s: %s of %s tokens taken back, %s written off (balance too low)',
                              pid, taken, amount, amount - taken) END;
    r := wallet._post(uid::uuid, -taken, 'refund:' || pid || ':' || charge || ':' || refunded,
                      wallet._fingerprint('refund', amount, 'refund', pid, NULL), 'refund', pid, descr);
    IF r.outcome = 'applied' AND taken < amount THEN
        event_id := isa.publish_event('wallet.tokens.insufficient', 'wallet_service',
            jsonb_build_object('wallet_id', w.wallet_id, 'user_id', uid, 'requested', amount,
                               'balance', r.tx_balance_after + taken, 'reference_type', 'refund', 'reference_id', pid));
    ELSIF r.outcome = 'conflict' THEN
        RAISE WARNING 'wallet: payment.refunded % ignored: refund % was already taken back with other arguments', e.id, pid;
    END IF;
END
$$;

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA wallet FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    wallet.check_balance(uuid, bigint),
    wallet.get_balance(uuid),
    wallet.get_wallet(uuid),
    wallet.list_transactions(uuid, integer, timestamptz),
    wallet.open_wallet(uuid),
    wallet.deduct(uuid, bigint, text, text, text, text),
    wallet.add(uuid, bigint, text, text, text, text),
    wallet.set_low_balance_threshold(uuid, bigint)
TO isa_app;
GRANT EXECUTE ON FUNCTION wallet.reconcile_balances(boolean) TO isa_admin;
GRANT SELECT ON wallet.wallets, wallet.transactions TO isa_admin;

-- ---------------------------------------------------------------- subscriptions
SELECT isa.subscribe_to_events('wallet', 'account_service.user.created', 'wallet.on_user_created(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'billing_service.billing.calculated', 'wallet.on_billing_calculated(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.payment.completed', 'wallet.on_payment_completed(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.subscription.created', 'wallet.on_subscription_created(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('wallet', 'payment_service.payment.refunded', 'wallet.on_payment_refunded(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user reads their own wallet (self_param); anyone else needs wallet:read on
-- the user.  Tokens are added and deducted only with wallet:write, never by
-- the owner alone: users buy tokens with orders.  reconcile_balances is for
-- isa_admin (pg_cron), not isa_app, so it has no route.
SELECT isa.http_route('GET', '/v1/wallets/{user_id}', 'wallet.get_wallet(uuid)', 'user',
    'A user''s wallet: balance, low-balance threshold.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/wallets/{user_id}', 'wallet.open_wallet(uuid)', 'user',
    'Opens the user''s wallet (balance 0) or returns the one it has.',
    permission => 'wallet:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/balance', 'wallet.get_balance(uuid)', 'user',
    'The balance (tokens) of a user''s wallet.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/check', 'wallet.check_balance(uuid, bigint)', 'user',
    'Whether the wallet holds at least amount tokens now.',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/wallets/{user_id}/transactions', 'wallet.list_transactions(uuid, integer, timestamptz)', 'user',
    'A user''s ledger, newest first, a page at a time (limit 1 to 1000, default 50; before: the created_at to continue from).',
    permission => 'wallet:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('PUT', '/v1/wallets/{user_id}/low-balance-threshold',
    'wallet.set_low_balance_threshold(uuid, bigint)', 'user',
    'Sets the balance below which a deduction publishes wallet.balance.low (0: never).',
    permission => 'wallet:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('POST', '/v1/wallets/{user_id}/add', 'wallet.add(uuid, bigint, text, text, text, text)', 'user',
    'Adds tokens to a user''s wallet (idempotency_key: a retry returns the first transaction).',
    permission => 'wallet:write', resource_param => 'user_id', status => 201);
SELECT isa.http_route('POST', '/v1/wallets/{user_id}/deduct', 'wallet.deduct(uuid, bigint, text, text, text, text)', 'user',
    'Deducts tokens from a user''s wallet (idempotency_key: a retry returns the first transaction).',
    permission => 'wallet:write', resource_param => 'user_id', status => 201);

-- ==== sql/payment.sql
-- payment.sql — the payment service (schema payment, source payment_service):
-- card payments of orders through Stripe PaymentIntents, Stripe webhooks
-- (signature verification, dedupe on Stripe's event id, the mapping of Stripe
-- events to isa events), refunds and subscriptions.  docs/services/payment.md.

-- ---------------------------------------------------------------- tables
CREATE TABLE payment.payments (
    payment_id               uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    order_id                 uuid NOT NULL UNIQUE,          -- one payment per order
    user_id                  uuid NOT NULL,
    amount                   bigint NOT NULL CHECK (amount > 0),        -- minor units (cents)
    currency                 text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    tokens                   bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),   -- tokens this payment buys
    status                   text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'partially_refunded')),
    stripe_payment_intent_id text NOT NULL UNIQUE CHECK (stripe_payment_intent_id ~ '^pi_[A-Za-z0-9]{1,250}$'),
    stripe_charge_id         text,                          -- the charge of the last refund
    amount_refunded          bigint NOT NULL DEFAULT 0,     -- cumulative, minor units
    tokens_refunded          bigint NOT NULL DEFAULT 0,     -- cumulative tokens taken back
    failure_reason           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    succeeded_at             timestamptz,
    CHECK (amount_refunded BETWEEN 0 AND amount),
    CHECK (tokens_refunded BETWEEN 0 AND tokens),
    CHECK ((status IN ('refunded', 'partially_refunded')) = (amount_refunded > 0)),
    CHECK ((status = 'refunded') = (amount_refunded = amount))
);
CREATE INDEX payments_user ON payment.payments (user_id, payment_id DESC);
COMMENT ON TABLE payment.payments IS
    'Card payments of orders: one Stripe PaymentIntent each, its status, and what was refunded.';

CREATE TABLE payment.stripe_events (
    event_id          text PRIMARY KEY CHECK (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$'),   -- the dedupe
    type              text NOT NULL,
    object_id         text,                                -- data.object.id (pi_, ch_, sub_ …)
    livemode          boolean,
    stripe_created_at timestamptz,                         -- the event's "created"
    received_at       timestamptz NOT NULL DEFAULT now(),
    outcome           text CHECK (outcome IN ('processed', 'ignored')),   -- set in the receiving transaction
    reason            text,                                -- why it was ignored
    payment_id        uuid,
    subscription_id   uuid
);
COMMENT ON TABLE payment.stripe_events IS
    'Every verified Stripe webhook event, once (its id is the dedupe key), with what isa did with it.';

CREATE TABLE payment.subscriptions (
    subscription_id        uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    user_id                uuid NOT NULL,
    stripe_subscription_id text NOT NULL UNIQUE CHECK (stripe_subscription_id ~ '^sub_[A-Za-z0-9]{1,250}$'),
    stripe_customer_id     text,
    plan                   text NOT NULL CHECK (plan <> ''),
    credits                bigint NOT NULL CHECK (credits > 0),
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'canceled')),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    canceled_at            timestamptz,
    CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
);
CREATE INDEX subscriptions_user ON payment.subscriptions (user_id, subscription_id DESC);
COMMENT ON TABLE payment.subscriptions IS
    'Stripe subscriptions of users, created and canceled by Stripe webhooks.';

-- ---------------------------------------------------------------- result types
-- The contract's fields first (contract.md), then what a refund or failure adds.
CREATE TYPE payment.payment_info AS (
    payment_id               uuid,
    order_id                 uuid,
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    tokens                   bigint,
    status                   text,
    stripe_payment_intent_id text,
    created_at               timestamptz,
    updated_at               timestamptz,
    amount_refunded          bigint,
    tokens_refunded          bigint,
    failure_reason           text
);

CREATE TYPE payment.subscription_info AS (
    subscription_id        uuid,
    user_id                uuid,
    stripe_subscription_id text,
    plan                   text,
    credits                bigint,
    status                 text,
    created_at             timestamptz,
    updated_at             timestamptz,
    canceled_at            timestamptz
);

-- What a webhook handler did: outcome 'processed' or 'ignored' (with reason).
CREATE TYPE payment._webhook_result AS (
    outcome         text,
    reason          text,
    payment_id      uuid,
    subscription_id uuid
);

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('payment.initiated', 'payment_service', '1.0.0',
    'A card payment of an order was recorded for a Stripe PaymentIntent; it waits for Stripe.',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it pays"},
      "user_id": {"type": "uuid", "description": "who pays"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code, e.g. usd"},
      "tokens": {"type": "integer", "description": "tokens the payment buys (0 for none)"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."}}');
SELECT isa.register_event_type('payment.completed', 'payment_service', '1.0.0',
    'Stripe reported the PaymentIntent succeeded (published once per payment).',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it pays"},
      "user_id": {"type": "uuid", "description": "who paid"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "tokens": {"type": "integer", "description": "tokens bought, to add to the wallet (0 for none)"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...) that completed it"}}');
SELECT isa.register_event_type('payment.failed', 'payment_service', '1.0.0',
    'Stripe reported that a payment attempt failed (a pending payment becomes failed).',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it was to pay"},
      "user_id": {"type": "uuid", "description": "who tried to pay"},
      "amount": {"type": "integer", "description": "minor units of currency (cents)"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "reason": {"type": "string", "description": "Stripe''s last_payment_error.message"},
      "stripe_payment_intent_id": {"type": "string", "description": "pi_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('payment.refunded', 'payment_service', '1.0.0',
    'Stripe refunded (part of) a payment; one event per new refunded amount.',
    '{"payment_id": {"type": "uuid", "description": "the payment"},
      "order_id": {"type": "uuid", "description": "the order it paid"},
      "user_id": {"type": "uuid", "description": "who paid"},
      "amount_refunded": {"type": "integer", "description": "minor units refunded so far, this refund included (cumulative, as Stripe''s charge.amount_refunded)"},
      "refund_amount": {"type": "integer", "description": "minor units this refund adds"},
      "currency": {"type": "string", "description": "lower-case ISO 4217 code"},
      "tokens": {"type": "integer", "description": "tokens to take back for this refund: floor(tokens x total refunded / amount) minus what earlier refunds took"},
      "total_tokens_refunded": {"type": "integer", "description": "tokens taken back so far, this refund included"},
      "stripe_charge_id": {"type": "string", "description": "ch_..."},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('subscription.created', 'payment_service', '1.0.0',
    'A Stripe subscription was created for a user; its credits are to be added to the wallet.',
    '{"subscription_id": {"type": "uuid", "description": "the subscription"},
      "user_id": {"type": "uuid", "description": "the subscriber (metadata.user_id)"},
      "stripe_subscription_id": {"type": "string", "description": "sub_..."},
      "plan": {"type": "string", "description": "metadata.plan, else the first item''s price id"},
      "credits": {"type": "integer", "description": "tokens to add (metadata.credits, > 0)"},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');
SELECT isa.register_event_type('subscription.canceled', 'payment_service', '1.0.0',
    'A Stripe subscription ended (customer.subscription.deleted).',
    '{"subscription_id": {"type": "uuid", "description": "the subscription"},
      "user_id": {"type": "uuid", "description": "the subscriber"},
      "stripe_subscription_id": {"type": "string", "description": "sub_..."},
      "plan": {"type": "string", "description": "its plan"},
      "stripe_event_id": {"type": "string", "description": "the Stripe event (evt_...)"}}');

-- ---------------------------------------------------------------- internal
-- No SET clause: it is inlined into its (pinned) callers; every name is qualified.
CREATE FUNCTION payment._info(p payment.payments) RETURNS payment.payment_info
    LANGUAGE sql IMMUTABLE
RETURN ROW(p.payment_id, p.order_id, p.user_id, p.amount, p.currency, p.tokens, p.status,
           p.stripe_payment_intent_id, p.created_at, p.updated_at,
           p.amount_refunded, p.tokens_refunded, p.failure_reason)::payment.payment_info;

-- pending or failed → succeeded, and payment.completed.  The caller holds the
-- row lock and has checked the status.
CREATE FUNCTION payment._complete(p payment.payments, stripe_event_id text) RETURNS payment.payments
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE payment.payments x
       SET status = 'succeeded', failure_reason = NULL, succeeded_at = now(), updated_at = now()
     WHERE x.payment_id = p.payment_id
    RETURNING * INTO p;
    PERFORM isa.publish_event('payment.completed', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'tokens', p.tokens,
        'stripe_payment_intent_id', p.stripe_payment_intent_id, 'stripe_event_id', stripe_event_id));
    RETURN p;
END
$$;

-- The payment of a PaymentIntent, locked for the webhook's transaction (NULL
-- fields if isa does not know the PaymentIntent).
CREATE FUNCTION payment._locked_payment(intent_id text) RETURNS payment.payments
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT * FROM payment.payments p WHERE p.stripe_payment_intent_id = intent_id FOR UPDATE;
END;

CREATE FUNCTION payment._on_intent_succeeded(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments := payment._locked_payment(obj ->> 'id');
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF p.status IN ('succeeded', 'refunded', 'partially_refunded') THEN
        RETURN ROW('ignored', 'already_succeeded', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF obj ->> 'amount' IS DISTINCT FROM p.amount::text OR obj ->> 'currency' IS DISTINCT FROM p.currency THEN
        -- Money arrived that does not match what the order asked for: a person decides.
        RAISE WARNING 'Stripe event %: PaymentIntent % succeeded for % %, but payment % expects % %; not completed',
            event_id, p.stripe_payment_intent_id, obj ->> 'amount', obj ->> 'currency', p.payment_id, p.amount, p.currency;
        RETURN ROW('ignored', format('amount_mismatch: Stripe reports %s %s, the payment is %s %s',
                                     obj ->> 'amount', obj ->> 'currency', p.amount, p.currency),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    PERFORM payment._complete(p, event_id);
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

CREATE FUNCTION payment._on_intent_failed(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments := payment._locked_payment(obj ->> 'id');
    why text := left(coalesce(nullif(obj #>> '{last_payment_error,message}', ''),
                              nullif(obj #>> '{last_payment_error,code}', ''),
                              'payment failed'), 500);
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF p.status <> 'pending' THEN
        -- A late failure of an earlier attempt never undoes a success.
        RETURN ROW('ignored', CASE p.status WHEN 'failed' THEN 'already_failed' ELSE 'already_succeeded' END,
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    UPDATE payment.payments x SET status = 'failed', failure_reason = why, updated_at = now()
     WHERE x.payment_id = p.payment_id;
    PERFORM isa.publish_event('payment.failed', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'reason', why,
        'stripe_payment_intent_id', p.stripe_payment_intent_id, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

-- charge.amount_refunded is cumulative: the refund is what it adds to what is
-- recorded, and the tokens to take back follow the refunded share of the amount.
CREATE FUNCTION payment._on_charge_refunded(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p        payment.payments := payment._locked_payment(
                 CASE jsonb_typeof(obj -> 'payment_intent') WHEN 'object' THEN obj #>> '{payment_intent,id}'
                                                            ELSE obj ->> 'payment_intent' END);
    refunded bigint;
    tokens_total bigint;
BEGIN
    IF p.payment_id IS NULL THEN
        RETURN ROW('ignored', 'unknown_payment_intent', NULL, NULL)::payment._webhook_result;
    END IF;
    IF jsonb_typeof(obj -> 'amount_refunded') IS DISTINCT FROM 'number' OR obj ->> 'amount_refunded' !~ '^[0-9]{1,18}$' THEN
        RETURN ROW('ignored', 'malformed_object: amount_refunded is not a whole number', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    refunded := (obj ->> 'amount_refunded')::bigint;
    IF obj ->> 'currency' IS DISTINCT FROM p.currency THEN
        RETURN ROW('ignored', format('currency_mismatch: the charge is in %s, the payment in %s', obj ->> 'currency', p.currency),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF refunded > p.amount THEN
        RETURN ROW('ignored', format('refund_exceeds_amount: %s refunded of a payment of %s', refunded, p.amount),
                   p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF refunded <= p.amount_refunded THEN
        RETURN ROW('ignored', 'refund_already_recorded', p.payment_id, NULL)::payment._webhook_result;
    END IF;
    IF p.status IN ('pending', 'failed') THEN
        -- A refunded charge was paid: the success event is late or lost.
        p := payment._complete(p, event_id);
    END IF;

    tokens_total := floor(p.tokens::numeric * refunded / p.amount);
    UPDATE payment.payments x
       SET amount_refunded = refunded, tokens_refunded = tokens_total, stripe_charge_id = obj ->> 'id',
           status = CASE WHEN refunded = p.amount THEN 'refunded' ELSE 'partially_refunded' END,
           updated_at = now()
     WHERE x.payment_id = p.payment_id;
    PERFORM isa.publish_event('payment.refunded', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount_refunded', refunded, 'refund_amount', refunded - p.amount_refunded,
        'currency', p.currency,
        'tokens', tokens_total - p.tokens_refunded, 'total_tokens_refunded', tokens_total,
        'stripe_charge_id', obj ->> 'id', 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, p.payment_id, NULL)::payment._webhook_result;
END
$$;

-- The user, credits and plan come from the subscription's metadata (set by
-- whoever created it at Stripe); without them the event cannot credit anyone
-- and is ignored with the reason.
CREATE FUNCTION payment._on_subscription_created(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid     text := obj #>> '{metadata,user_id}';
    credits text := obj #>> '{metadata,credits}';
    plan    text := left(coalesce(nullif(obj #>> '{metadata,plan}', ''), nullif(obj #>> '{items,data,0,price,id}', '')), 200);
    s       payment.subscriptions;
BEGIN
    IF coalesce(obj ->> 'id', '') !~ '^sub_[A-Za-z0-9]{1,250}$' THEN
        RETURN ROW('ignored', 'malformed_object: id is not a subscription id (sub_...)', NULL, NULL)::payment._webhook_result;
    END IF;
    IF uid IS NULL OR uid !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN ROW('ignored', 'invalid_metadata: metadata.user_id is missing or not a UUID', NULL, NULL)::payment._webhook_result;
    END IF;
    IF credits IS NULL OR credits !~ '^[0-9]{1,15}$' OR credits::bigint = 0 THEN
        RETURN ROW('ignored', 'invalid_metadata: metadata.credits is missing or not a positive whole number', NULL, NULL)::payment._webhook_result;
    END IF;
    IF plan IS NULL THEN
        RETURN ROW('ignored', 'invalid_metadata: neither metadata.plan nor items.data[0].price.id names a plan', NULL, NULL)::payment._webhook_result;
    END IF;
    IF NOT account.user_exists(uid::uuid) THEN
        RETURN ROW('ignored', 'unknown_user', NULL, NULL)::payment._webhook_result;
    END IF;

    INSERT INTO payment.subscriptions (user_id, stripe_subscription_id, stripe_customer_id, plan, credits)
    VALUES (uid::uuid, obj ->> 'id',
            CASE jsonb_typeof(obj -> 'customer') WHEN 'object' THEN obj #>> '{customer,id}' ELSE obj ->> 'customer' END,
            plan, credits::bigint)
    ON CONFLICT (stripe_subscription_id) DO NOTHING
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN ROW('ignored', 'subscription_already_recorded', NULL,
                   (SELECT x.subscription_id FROM payment.subscriptions x WHERE x.stripe_subscription_id = obj ->> 'id'))::payment._webhook_result;
    END IF;
    PERFORM isa.publish_event('subscription.created', 'payment_service', jsonb_build_object(
        'subscription_id', s.subscription_id, 'user_id', s.user_id, 'stripe_subscription_id', s.stripe_subscription_id,
        'plan', s.plan, 'credits', s.credits, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, NULL, s.subscription_id)::payment._webhook_result;
END
$$;

CREATE FUNCTION payment._on_subscription_deleted(event_id text, obj jsonb) RETURNS payment._webhook_result
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s payment.subscriptions;
BEGIN
    SELECT * INTO s FROM payment.subscriptions x WHERE x.stripe_subscription_id = obj ->> 'id' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ROW('ignored', 'unknown_subscription', NULL, NULL)::payment._webhook_result;
    END IF;
    IF s.status = 'canceled' THEN
        RETURN ROW('ignored', 'already_canceled', NULL, s.subscription_id)::payment._webhook_result;
    END IF;
    UPDATE payment.subscriptions x SET status = 'canceled', canceled_at = now(), updated_at = now()
     WHERE x.subscription_id = s.subscription_id;
    PERFORM isa.publish_event('subscription.canceled', 'payment_service', jsonb_build_object(
        'subscription_id', s.subscription_id, 'user_id', s.user_id, 'stripe_subscription_id', s.stripe_subscription_id,
        'plan', s.plan, 'stripe_event_id', event_id));
    RETURN ROW('processed', NULL, NULL, s.subscription_id)::payment._webhook_result;
END
$$;

-- ---------------------------------------------------------------- API
CREATE FUNCTION payment.create_payment(
    order_id                 uuid,
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    stripe_payment_intent_id text,
    tokens                   bigint DEFAULT 0)
RETURNS payment.payment_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    IF order_id IS NULL OR user_id IS NULL OR amount IS NULL OR currency IS NULL
       OR stripe_payment_intent_id IS NULL OR tokens IS NULL THEN
        RAISE EXCEPTION '% must not be null',
            CASE WHEN order_id IS NULL THEN 'order_id' WHEN user_id IS NULL THEN 'user_id'
                 WHEN amount IS NULL THEN 'amount' WHEN currency IS NULL THEN 'currency'
                 WHEN stripe_payment_intent_id IS NULL THEN 'stripe_payment_intent_id' ELSE 'tokens' END
            USING ERRCODE = '22004';
    END IF;
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be a positive number of minor currency units (cents), not %', amount
            USING ERRCODE = '22023';
    END IF;
    IF currency !~ '^[a-z]{3}$' THEN
        RAISE EXCEPTION 'currency must be a lower-case ISO 4217 code, not "%"', left(currency, 40)
            USING ERRCODE = '22023', HINT = 'For example usd or eur, as Stripe writes it.';
    END IF;
    IF stripe_payment_intent_id !~ '^pi_[A-Za-z0-9]{1,250}$' THEN
        RAISE EXCEPTION 'stripe_payment_intent_id must be a Stripe PaymentIntent id (pi_ and letters or digits), not "%"',
            left(stripe_payment_intent_id, 40)
            USING ERRCODE = '22023', HINT = 'Pass the PaymentIntent''s id, not its client_secret.';
    END IF;
    IF tokens < 0 THEN
        RAISE EXCEPTION 'tokens must be 0 or more, not %', tokens USING ERRCODE = '22023';
    END IF;
    PERFORM account.require_user(user_id);

    INSERT INTO payment.payments (order_id, user_id, amount, currency, tokens, stripe_payment_intent_id)
    VALUES (order_id, user_id, amount, currency, tokens, stripe_payment_intent_id)
    ON CONFLICT DO NOTHING
    RETURNING * INTO p;
    IF NOT FOUND THEN
        -- The PaymentIntent id is the idempotency key: the same call again
        -- returns the first payment; anything else is a duplicate.
        SELECT * INTO p FROM payment.payments x WHERE x.stripe_payment_intent_id = create_payment.stripe_payment_intent_id;
        IF FOUND AND (p.order_id, p.user_id, p.amount, p.currency, p.tokens)
                     = (create_payment.order_id, create_payment.user_id, create_payment.amount,
                        create_payment.currency, create_payment.tokens) THEN
            RETURN payment._info(p);
        ELSIF FOUND THEN
            RAISE EXCEPTION 'PaymentIntent % is already recorded for another payment', stripe_payment_intent_id
                USING ERRCODE = '23505', HINT = 'Each order needs its own PaymentIntent.';
        END IF;
        RAISE EXCEPTION 'order % already has a payment', order_id
            USING ERRCODE = '23505', HINT = 'An order is paid by one payment.';
    END IF;

    PERFORM isa.publish_event('payment.initiated', 'payment_service', jsonb_build_object(
        'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id,
        'amount', p.amount, 'currency', p.currency, 'tokens', p.tokens,
        'stripe_payment_intent_id', p.stripe_payment_intent_id));
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.create_payment(uuid, uuid, bigint, text, text, bigint) IS
    'Records the card payment of an order for a Stripe PaymentIntent (pending until Stripe''s webhook) and publishes payment.initiated; the same call again returns the first payment.';

CREATE FUNCTION payment.get_payment(payment_id uuid) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    IF payment_id IS NULL THEN
        RAISE EXCEPTION 'payment_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO p FROM payment.payments x WHERE x.payment_id = get_payment.payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payment_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_payment(uuid) IS 'A payment by its id; P0002 if there is none.';

-- A payment as its owner sees it (GET /v1/me/payments/{payment_id}: the
-- owner is not in the path).  Another user's payment is P0002 like an
-- unknown one, so the answer does not tell which payments exist.
CREATE FUNCTION payment.get_my_payment(user_id uuid, payment_id uuid) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    IF user_id IS NULL OR payment_id IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN user_id IS NULL THEN 'user_id' ELSE 'payment_id' END
            USING ERRCODE = '22004';
    END IF;
    SELECT * INTO p FROM payment.payments x
     WHERE x.payment_id = get_my_payment.payment_id AND x.user_id = get_my_payment.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payment_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_my_payment(uuid, uuid) IS
    'A payment of the given user; P0002 if there is none or it is another user''s.';

CREATE FUNCTION payment.get_payment_by_intent(stripe_payment_intent_id text) RETURNS payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p payment.payments;
BEGIN
    IF stripe_payment_intent_id IS NULL THEN
        RAISE EXCEPTION 'stripe_payment_intent_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF stripe_payment_intent_id !~ '^pi_[A-Za-z0-9]{1,250}$' THEN
        RAISE EXCEPTION 'stripe_payment_intent_id must be a Stripe PaymentIntent id (pi_ and letters or digits), not "%"',
            left(stripe_payment_intent_id, 40) USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM payment.payments x WHERE x.stripe_payment_intent_id = get_payment_by_intent.stripe_payment_intent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no payment for PaymentIntent %', stripe_payment_intent_id USING ERRCODE = 'P0002';
    END IF;
    RETURN payment._info(p);
END
$$;
COMMENT ON FUNCTION payment.get_payment_by_intent(text) IS 'The payment of a Stripe PaymentIntent; P0002 if there is none.';

CREATE FUNCTION payment.list_payments(user_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF payment.payment_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT i.* FROM payment.payments p, LATERAL payment._info(p) i
                  WHERE p.user_id = list_payments.user_id ORDER BY p.payment_id DESC LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION payment.list_payments(uuid, integer) IS 'A user''s payments, newest first (at most row_limit, 1 to 1000).';

CREATE FUNCTION payment.list_subscriptions(user_id uuid) RETURNS SETOF payment.subscription_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT s.subscription_id, s.user_id, s.stripe_subscription_id, s.plan, s.credits, s.status,
                        s.created_at, s.updated_at, s.canceled_at
                   FROM payment.subscriptions s
                  WHERE s.user_id = list_subscriptions.user_id ORDER BY s.subscription_id DESC;
END
$$;
COMMENT ON FUNCTION payment.list_subscriptions(uuid) IS 'A user''s Stripe subscriptions, newest first.';

-- Stripe's scheme (https://docs.stripe.com/webhooks#verify-manually):
-- Stripe-Signature is "t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]"; the
-- signed payload is "<t>.<raw body>"; each v1 is hex(HMAC-SHA256(endpoint
-- secret, signed payload)).  Runs as its owner (a superuser), who alone may
-- read isa.stripe_webhook_secret.  No message, event or log line carries the
-- secret or the expected signature.
CREATE FUNCTION payment.handle_stripe_webhook(raw_body text, signature_header text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret    text := current_setting('isa.stripe_webhook_secret', true);
    tolerance bigint;
    t         text;
    v1        text[] := '{}';
    item      text;
    eq        int;
    expected  bytea;
    valid     boolean := false;
    age       numeric;
    ev        jsonb;
    obj       jsonb;
    ev_id     text;
    ev_type   text;
    r         payment._webhook_result;
BEGIN
    IF coalesce(secret, '') = '' THEN
        RAISE EXCEPTION 'Stripe webhook secret not configured' USING ERRCODE = '55000',
            HINT = 'A superuser sets isa.stripe_webhook_secret to the endpoint''s signing secret (docs/configuration.md).';
    END IF;
    IF raw_body IS NULL THEN
        RAISE EXCEPTION 'Stripe webhook body is missing' USING ERRCODE = '22023';
    END IF;
    IF coalesce(signature_header, '') = '' THEN
        RAISE EXCEPTION 'Stripe-Signature header is missing' USING ERRCODE = '22023';
    END IF;

    FOREACH item IN ARRAY string_to_array(signature_header, ',') LOOP
        item := btrim(item);
        eq := strpos(item, '=');
        IF eq < 2 THEN
            RAISE EXCEPTION 'Stripe-Signature header is malformed: "%" is not scheme=value', left(item, 20)
                USING ERRCODE = '22023', HINT = 'Stripe sends t=<unix time>,v1=<hex signature>.';
        END IF;
        CASE left(item, eq - 1)
        WHEN 't' THEN
            IF t IS NOT NULL OR substr(item, eq + 1) !~ '^[0-9]{1,12}$' THEN
                RAISE EXCEPTION 'Stripe-Signature header is malformed: t must appear once, as a Unix time in seconds'
                    USING ERRCODE = '22023';
            END IF;
            t := substr(item, eq + 1);
        WHEN 'v1' THEN
            v1 := v1 || substr(item, eq + 1);
        ELSE
            NULL;           -- v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do
        END CASE;
    END LOOP;
    IF t IS NULL THEN
        RAISE EXCEPTION 'Stripe-Signature header has no timestamp (t=)' USING ERRCODE = '22023';
    END IF;
    IF cardinality(v1) = 0 THEN
        RAISE EXCEPTION 'Stripe-Signature header has no v1 signature' USING ERRCODE = '22023';
    END IF;

    expected := isa.hmac_sha256(convert_to(secret, 'UTF8'), convert_to(t || '.' || raw_body, 'UTF8'));
    FOREACH item IN ARRAY v1 LOOP
        -- every entry is compared (no early exit), each in constant time
        IF item ~ '^[0-9a-f]{64}$' AND isa.secure_equals(decode(item, 'hex'), expected) THEN
            valid := true;
        END IF;
    END LOOP;
    IF NOT valid THEN
        RAISE EXCEPTION 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp'
            USING ERRCODE = '22023',
                  HINT = 'The body must be passed exactly as received, and isa.stripe_webhook_secret must be this endpoint''s secret.';
    END IF;

    tolerance := extract(epoch FROM current_setting('isa.stripe_webhook_tolerance')::interval)::bigint;
    age := extract(epoch FROM now()) - t::numeric;
    IF age > tolerance THEN
        RAISE EXCEPTION 'Stripe-Signature timestamp is too old: % s ago, the tolerance is % s', floor(age), tolerance
            USING ERRCODE = '22023', HINT = 'A replayed or long-delayed webhook is refused; check the server clock.';
    ELSIF age < -tolerance THEN
        RAISE EXCEPTION 'Stripe-Signature timestamp is in the future: % s ahead, the tolerance is % s', ceil(-age), tolerance
            USING ERRCODE = '22023', HINT = 'Check the server clock.';
    END IF;

    BEGIN
        ev := raw_body::jsonb;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'Stripe webhook body is not JSON' USING ERRCODE = '22023';
    END;
    ev_id := CASE jsonb_typeof(ev -> 'id') WHEN 'string' THEN ev ->> 'id' END;
    ev_type := CASE jsonb_typeof(ev -> 'type') WHEN 'string' THEN ev ->> 'type' END;
    IF jsonb_typeof(ev) <> 'object' OR ev_id IS NULL OR ev_id !~ '^evt_[A-Za-z0-9_]{1,250}$' THEN
        RAISE EXCEPTION 'Stripe webhook body has no event id (evt_...)' USING ERRCODE = '22023';
    END IF;
    IF ev_type IS NULL OR ev_type !~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$' OR length(ev_type) > 200 THEN
        RAISE EXCEPTION 'Stripe webhook body has no event type' USING ERRCODE = '22023';
    END IF;
    obj := ev #> '{data,object}';

    INSERT INTO payment.stripe_events (event_id, type, object_id, livemode, stripe_created_at)
    VALUES (ev_id, ev_type, left(obj ->> 'id', 255),
            CASE jsonb_typeof(ev -> 'livemode') WHEN 'boolean' THEN (ev ->> 'livemode')::boolean END,
            CASE WHEN ev ->> 'created' ~ '^[0-9]{1,12}$' THEN to_timestamp((ev ->> 'created')::bigint) END)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate', 'event_id', ev_id, 'type', ev_type);
    END IF;

    IF ev_type IN ('payment_intent.succeeded', 'payment_intent.payment_failed', 'charge.refunded',
                   'customer.subscription.created', 'customer.subscription.deleted')
       AND jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        r := ROW('ignored', 'malformed_object: data.object is missing', NULL, NULL)::payment._webhook_result;
    ELSE
        r := CASE ev_type
             WHEN 'payment_intent.succeeded'      THEN payment._on_intent_succeeded(ev_id, obj)
             WHEN 'payment_intent.payment_failed' THEN payment._on_intent_failed(ev_id, obj)
             WHEN 'charge.refunded'               THEN payment._on_charge_refunded(ev_id, obj)
             WHEN 'customer.subscription.created' THEN payment._on_subscription_created(ev_id, obj)
             WHEN 'customer.subscription.deleted' THEN payment._on_subscription_deleted(ev_id, obj)
             ELSE ROW('ignored', 'unhandled_type', NULL, NULL)::payment._webhook_result
             END;
    END IF;

    UPDATE payment.stripe_events e
       SET outcome = r.outcome, reason = r.reason, payment_id = r.payment_id, subscription_id = r.subscription_id
     WHERE e.event_id = ev_id;
    RETURN jsonb_strip_nulls(jsonb_build_object('status', r.outcome, 'event_id', ev_id, 'type', ev_type, 'reason', r.reason));
END
$$;
COMMENT ON FUNCTION payment.handle_stripe_webhook(text, text) IS
    'Verifies a Stripe webhook (Stripe-Signature against isa.stripe_webhook_secret, timestamp within isa.stripe_webhook_tolerance), records its event id once and applies it; returns {status: processed|duplicate|ignored, event_id, type[, reason]}.';

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA payment FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    payment.create_payment(uuid, uuid, bigint, text, text, bigint),
    payment.get_payment(uuid),
    payment.get_my_payment(uuid, uuid),
    payment.get_payment_by_intent(text),
    payment.list_payments(uuid, integer),
    payment.list_subscriptions(uuid),
    payment.handle_stripe_webhook(text, text)
TO isa_app;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Stripe's webhook is public: its signature (Stripe-Signature) is the proof.
-- A user reads their own payments (self_param, or /v1/me for one payment by
-- id); anyone else needs payment:read.  Payments are created by
-- orders.create_order (POST /v1/orders), not by a route of their own.
SELECT isa.http_route('POST', '/webhooks/stripe', 'payment.handle_stripe_webhook(text, text)', 'public',
    'Stripe''s webhook: verifies the signature, records the event once and applies it.',
    raw_body_param => 'raw_body', header_params => '{"signature_header": "Stripe-Signature"}');
SELECT isa.http_route('GET', '/v1/payments', 'payment.list_payments(uuid, integer)', 'user',
    'A user''s payments, newest first (at most row_limit, 1 to 1000).',
    permission => 'payment:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/payments/{payment_id}', 'payment.get_payment(uuid)', 'user',
    'A payment by its id.', permission => 'payment:read', resource_param => 'payment_id');
SELECT isa.http_route('GET', '/v1/payments/by-intent/{stripe_payment_intent_id}',
    'payment.get_payment_by_intent(text)', 'user',
    'The payment of a Stripe PaymentIntent.',
    permission => 'payment:read', resource_param => 'stripe_payment_intent_id');
SELECT isa.http_route('GET', '/v1/me/payments/{payment_id}', 'payment.get_my_payment(uuid, uuid)', 'user',
    'One of the caller''s payments.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/subscriptions', 'payment.list_subscriptions(uuid)', 'user',
    'A user''s Stripe subscriptions, newest first.',
    permission => 'payment:read', resource_param => 'user_id', self_param => 'user_id');

-- ==== sql/orders.sql
-- orders.sql — the order service (schema orders, service 'order', source
-- order_service): orders paid from the token wallet (deducted and fulfilled
-- at once) or by card (a payment for a Stripe PaymentIntent, fulfilled when
-- payment_service reports it completed).  docs/services/orders.md.

-- ---------------------------------------------------------------- table
CREATE TABLE orders.orders (
    order_id            uuid PRIMARY KEY,                  -- UUIDv7
    user_id             uuid NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),   -- tokens (wallet) or minor units (card)
    currency            text NOT NULL CHECK (currency = 'tokens' OR currency ~ '^[a-z]{3}$'),
    payment_method      text NOT NULL CHECK (payment_method IN ('card', 'wallet')),
    tokens              bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),   -- tokens bought (card orders)
    items               jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(items) = 'array'),
    status              text NOT NULL CHECK (status IN ('pending', 'fulfilled', 'canceled')),
    payment_id          uuid,                              -- card orders: payment.payments
    cancel_reason       text,
    idempotency_key     text NOT NULL,
    request_fingerprint bytea NOT NULL,                    -- sha256 of the arguments the key was first used with
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    fulfilled_at        timestamptz,
    canceled_at         timestamptz,
    UNIQUE (user_id, idempotency_key),
    CHECK (CASE payment_method WHEN 'wallet' THEN currency = 'tokens' AND tokens = 0 AND payment_id IS NULL
                               ELSE currency <> 'tokens' END),
    CHECK ((status = 'fulfilled') = (fulfilled_at IS NOT NULL)),
    CHECK ((status = 'canceled') = (canceled_at IS NOT NULL AND cancel_reason IS NOT NULL))
);
CREATE INDEX orders_user ON orders.orders (user_id, order_id DESC);
COMMENT ON TABLE orders.orders IS
    'Orders of users, paid from the token wallet or by card; pending until paid, then fulfilled, or canceled.';

CREATE TYPE orders.order_info AS (
    order_id       uuid,
    user_id        uuid,
    amount         bigint,
    currency       text,
    payment_method text,
    tokens         bigint,
    items          jsonb,
    status         text,
    payment_id     uuid,
    cancel_reason  text,
    created_at     timestamptz,
    updated_at     timestamptz,
    fulfilled_at   timestamptz,
    canceled_at    timestamptz
);

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('order.created', 'order_service', '1.0.0',
    'An order was placed (a wallet order is fulfilled in the same transaction; a card order waits for its payment).',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "amount": {"type": "integer", "description": "tokens (wallet) or minor units of currency (card)"},
      "currency": {"type": "string", "description": "tokens, or a lower-case ISO 4217 code for card orders"},
      "payment_method": {"type": "string", "description": "card or wallet"},
      "tokens": {"type": "integer", "description": "tokens the order buys (card orders; 0 for none)"}}');
SELECT isa.register_event_type('order.fulfilled', 'order_service', '1.0.0',
    'An order was paid and fulfilled.',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "payment_id": {"type": "uuid", "required": false, "description": "the card payment; null for a wallet order"}}');
SELECT isa.register_event_type('order.canceled', 'order_service', '1.0.0',
    'A pending order was canceled: on request, or because its payment failed.',
    '{"order_id": {"type": "uuid", "description": "the order"},
      "user_id": {"type": "uuid", "description": "who ordered"},
      "reason": {"type": "string", "description": "why; payment_failed: <Stripe''s reason> when the payment failed"}}');

-- ---------------------------------------------------------------- internal
-- No SET clause: it is inlined into its (pinned) callers; every name is qualified.
CREATE FUNCTION orders._info(o orders.orders) RETURNS orders.order_info
    LANGUAGE sql IMMUTABLE
RETURN ROW(o.order_id, o.user_id, o.amount, o.currency, o.payment_method, o.tokens, o.items, o.status,
           o.payment_id, o.cancel_reason, o.created_at, o.updated_at, o.fulfilled_at, o.canceled_at)::orders.order_info;

-- ---------------------------------------------------------------- API
CREATE FUNCTION orders.create_order(
    user_id                  uuid,
    amount                   bigint,
    currency                 text,
    payment_method           text,
    idempotency_key          text,
    tokens                   bigint DEFAULT 0,
    stripe_payment_intent_id text DEFAULT NULL,
    items                    jsonb DEFAULT '[]')
RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o           orders.orders;
    fingerprint bytea;
BEGIN
    IF user_id IS NULL OR amount IS NULL OR currency IS NULL OR payment_method IS NULL
       OR idempotency_key IS NULL OR tokens IS NULL OR items IS NULL THEN
        RAISE EXCEPTION '% must not be null',
            CASE WHEN user_id IS NULL THEN 'user_id' WHEN amount IS NULL THEN 'amount'
                 WHEN currency IS NULL THEN 'currency' WHEN payment_method IS NULL THEN 'payment_method'
                 WHEN idempotency_key IS NULL THEN 'idempotency_key' WHEN tokens IS NULL THEN 'tokens' ELSE 'items' END
            USING ERRCODE = '22004';
    END IF;
    IF amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive, not %', amount USING ERRCODE = '22023';
    END IF;
    IF tokens < 0 THEN
        RAISE EXCEPTION 'tokens must be 0 or more, not %', tokens USING ERRCODE = '22023';
    END IF;
    IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023',
            HINT = 'Use one new random key per order the client means to place, and the same key when it retries.';
    END IF;
    IF jsonb_typeof(items) <> 'array' OR jsonb_array_length(items) > 100
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(items) i WHERE jsonb_typeof(i) <> 'object') THEN
        RAISE EXCEPTION 'items must be a JSON array of at most 100 objects' USING ERRCODE = '22023';
    END IF;
    CASE payment_method
    WHEN 'wallet' THEN
        IF currency <> 'tokens' THEN
            RAISE EXCEPTION 'a wallet order is paid in tokens: currency must be tokens, not "%"', left(currency, 40)
                USING ERRCODE = '22023';
        END IF;
        IF tokens <> 0 THEN
            RAISE EXCEPTION 'a wallet order cannot buy tokens: tokens must be 0, not %', tokens
                USING ERRCODE = '22023', HINT = 'Tokens are bought with a card order.';
        END IF;
        IF stripe_payment_intent_id IS NOT NULL THEN
            RAISE EXCEPTION 'a wallet order takes no stripe_payment_intent_id' USING ERRCODE = '22023';
        END IF;
    WHEN 'card' THEN
        IF currency !~ '^[a-z]{3}$' THEN
            RAISE EXCEPTION 'a card order''s currency must be a lower-case ISO 4217 code, not "%"', left(currency, 40)
                USING ERRCODE = '22023', HINT = 'For example usd; the amount is in its minor units (cents).';
        END IF;
        IF stripe_payment_intent_id IS NULL THEN
            RAISE EXCEPTION 'a card order needs stripe_payment_intent_id' USING ERRCODE = '22023',
                HINT = 'Create the PaymentIntent at Stripe first and pass its id (pi_...).';
        END IF;
    ELSE
        RAISE EXCEPTION 'payment_method must be card or wallet, not "%"', left(payment_method, 40)
            USING ERRCODE = '22023';
    END CASE;
    PERFORM account.require_user(user_id);

    fingerprint := sha256(convert_to(jsonb_build_object(
        'amount', amount, 'currency', currency, 'payment_method', payment_method, 'tokens', tokens,
        'stripe_payment_intent_id', stripe_payment_intent_id, 'items', items)::text, 'UTF8'));
    -- The key's row is the lock: a concurrent retry waits here, then finds it.
    INSERT INTO orders.orders AS x (order_id, user_id, amount, currency, payment_method, tokens, items, status,
                                    idempotency_key, request_fingerprint, fulfilled_at)
    VALUES (isa.uuid_v7(), user_id, amount, currency, payment_method, tokens, items,
            CASE payment_method WHEN 'wallet' THEN 'fulfilled' ELSE 'pending' END,
            idempotency_key, fingerprint,
            CASE payment_method WHEN 'wallet' THEN now() END)
    ON CONFLICT ON CONSTRAINT orders_user_id_idempotency_key_key DO NOTHING
    RETURNING * INTO o;
    IF NOT FOUND THEN
        SELECT * INTO o FROM orders.orders x
         WHERE x.user_id = create_order.user_id AND x.idempotency_key = create_order.idempotency_key;
        IF o.request_fingerprint <> fingerprint THEN
            RAISE EXCEPTION 'idempotency key "%" was already used for another order (%)', idempotency_key, o.order_id
                USING ERRCODE = '23505', HINT = 'Use a new key for a new order.';
        END IF;
        RETURN orders._info(o);
    END IF;

    PERFORM isa.publish_event('order.created', 'order_service', jsonb_build_object(
        'order_id', o.order_id, 'user_id', o.user_id, 'amount', o.amount, 'currency', o.currency,
        'payment_method', o.payment_method, 'tokens', o.tokens));
    IF payment_method = 'wallet' THEN
        -- Paid here, in this transaction: the order exists only if the tokens left the wallet.
        IF NOT wallet.check_balance(user_id, amount) THEN
            RAISE EXCEPTION 'insufficient balance: the order costs % tokens', amount
                USING ERRCODE = '23514', HINT = 'Add tokens to the wallet, or pay by card.';
        END IF;
        PERFORM wallet.deduct(user_id, amount, 'order:' || o.order_id, 'order', o.order_id::text,
                              'order ' || o.order_id);
        PERFORM isa.publish_event('order.fulfilled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'payment_id', NULL));
    ELSE
        UPDATE orders.orders x
           SET payment_id = (payment.create_payment(o.order_id, o.user_id, o.amount, o.currency,
                                                    create_order.stripe_payment_intent_id, o.tokens)).payment_id
         WHERE x.order_id = o.order_id
        RETURNING * INTO o;
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb) IS
    'Places an order: wallet orders are deducted and fulfilled at once; card orders get a pending payment for the PaymentIntent. The same idempotency key with the same arguments returns the first order.';

CREATE FUNCTION orders.get_order(order_id uuid) RETURNS orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    IF order_id IS NULL THEN
        RAISE EXCEPTION 'order_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = get_order.order_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.get_order(uuid) IS 'An order by its id; P0002 if there is none.';

CREATE FUNCTION orders.list_orders(user_id uuid, row_limit integer DEFAULT 50) RETURNS SETOF orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM isa.check_page_size('row_limit', row_limit);
    PERFORM account.require_user(user_id);
    RETURN QUERY SELECT i.* FROM orders.orders o, LATERAL orders._info(o) i
                  WHERE o.user_id = list_orders.user_id ORDER BY o.order_id DESC LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION orders.list_orders(uuid, integer) IS 'A user''s orders, newest first (at most row_limit, 1 to 1000).';

CREATE FUNCTION orders.cancel_order(order_id uuid, reason text DEFAULT 'canceled on request') RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    IF order_id IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN order_id IS NULL THEN 'order_id' ELSE 'reason' END
            USING ERRCODE = '22004';
    END IF;
    IF btrim(reason) = '' OR length(reason) > 500 THEN
        RAISE EXCEPTION 'reason must be 1 to 500 characters' USING ERRCODE = '22023';
    END IF;
    UPDATE orders.orders x
       SET status = 'canceled', cancel_reason = reason, canceled_at = now(), updated_at = now()
     WHERE x.order_id = cancel_order.order_id AND x.status = 'pending'
    RETURNING * INTO o;
    IF NOT FOUND THEN
        SELECT * INTO o FROM orders.orders x WHERE x.order_id = cancel_order.order_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
        END IF;
        RAISE EXCEPTION 'order % is % and cannot be canceled', order_id, o.status
            USING ERRCODE = '23514', HINT = 'Only a pending order can be canceled.';
    END IF;
    PERFORM isa.publish_event('order.canceled', 'order_service', jsonb_build_object(
        'order_id', o.order_id, 'user_id', o.user_id, 'reason', o.cancel_reason));
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.cancel_order(uuid, text) IS
    'Cancels a pending order and publishes order.canceled; 23514 for a fulfilled or canceled order.';

-- An order as its owner sees it, and its cancellation by its owner: the
-- routes /v1/me/orders/{order_id} fill user_id from the caller's token.
-- Another user's order is P0002 like an unknown one, so the answer does not
-- tell which orders exist.
CREATE FUNCTION orders.get_my_order(user_id uuid, order_id uuid) RETURNS orders.order_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o orders.orders;
BEGIN
    IF user_id IS NULL OR order_id IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN user_id IS NULL THEN 'user_id' ELSE 'order_id' END
            USING ERRCODE = '22004';
    END IF;
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = get_my_order.order_id AND x.user_id = get_my_order.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % not found', order_id USING ERRCODE = 'P0002';
    END IF;
    RETURN orders._info(o);
END
$$;
COMMENT ON FUNCTION orders.get_my_order(uuid, uuid) IS
    'An order of the given user; P0002 if there is none or it is another user''s.';

CREATE FUNCTION orders.cancel_my_order(user_id uuid, order_id uuid, reason text DEFAULT 'canceled on request')
RETURNS orders.order_info
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM orders.get_my_order(user_id, order_id);     -- 22004, or P0002 unless it is the user's
    RETURN orders.cancel_order(order_id, reason);
END
$$;
COMMENT ON FUNCTION orders.cancel_my_order(uuid, uuid, text) IS
    'orders.cancel_order for the order''s owner: P0002 if the order is not the given user''s, 23514 unless pending.';

-- ---------------------------------------------------------------- handlers
-- payment_service.payment.completed: fulfil the order the payment is for.  An
-- order that its own payment's failure canceled is fulfilled too (Stripe lets
-- the customer retry the same PaymentIntent); an order canceled for any other
-- reason stays canceled, with a warning: refunding is for a person to decide.
CREATE FUNCTION orders.on_payment_completed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oid_text text := e.data ->> 'order_id';
    pid_text text := e.data ->> 'payment_id';
    o        orders.orders;
BEGIN
    IF oid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR pid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR oid_text IS NULL OR pid_text IS NULL THEN
        RAISE WARNING 'payment.completed event % has no valid order_id and payment_id; ignored', e.id;
        RETURN;
    END IF;
    UPDATE orders.orders x
       SET status = 'fulfilled', fulfilled_at = now(), updated_at = now(), cancel_reason = NULL, canceled_at = NULL
     WHERE x.order_id = oid_text::uuid AND x.payment_id = pid_text::uuid
       AND (x.status = 'pending' OR (x.status = 'canceled' AND x.cancel_reason LIKE 'payment_failed:%'))
    RETURNING * INTO o;
    IF FOUND THEN
        PERFORM isa.publish_event('order.fulfilled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'payment_id', o.payment_id));
        RETURN;
    END IF;
    SELECT * INTO o FROM orders.orders x WHERE x.order_id = oid_text::uuid;
    IF NOT FOUND THEN
        RAISE WARNING 'payment % completed for order %, which does not exist', pid_text, oid_text;
    ELSIF o.payment_id IS DISTINCT FROM pid_text::uuid THEN
        RAISE WARNING 'payment % completed for order %, which is paid by payment %', pid_text, oid_text, o.payment_id;
    ELSIF o.status = 'canceled' THEN
        RAISE WARNING 'payment % completed for order %, which was canceled (%); the order stays canceled and a person decides about a refund',
            pid_text, oid_text, o.cancel_reason;
    END IF;                           -- fulfilled already: nothing to do
END
$$;

-- payment_service.payment.failed: cancel the pending order the payment was for.
CREATE FUNCTION orders.on_payment_failed(e isa.event) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    oid_text text := e.data ->> 'order_id';
    pid_text text := e.data ->> 'payment_id';
    o        orders.orders;
BEGIN
    IF oid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR pid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR oid_text IS NULL OR pid_text IS NULL THEN
        RAISE WARNING 'payment.failed event % has no valid order_id and payment_id; ignored', e.id;
        RETURN;
    END IF;
    UPDATE orders.orders x
       SET status = 'canceled', canceled_at = now(), updated_at = now(),
           cancel_reason = left('payment_failed: ' || coalesce(nullif(e.data ->> 'reason', ''), 'unknown'), 500)
     WHERE x.order_id = oid_text::uuid AND x.payment_id = pid_text::uuid AND x.status = 'pending'
    RETURNING * INTO o;
    IF FOUND THEN
        PERFORM isa.publish_event('order.canceled', 'order_service', jsonb_build_object(
            'order_id', o.order_id, 'user_id', o.user_id, 'reason', o.cancel_reason));
    END IF;                           -- fulfilled or canceled already: a late failure changes nothing
END
$$;

COMMENT ON FUNCTION orders.on_payment_completed(isa.event) IS
    'Handler of payment_service.payment.completed: fulfils the pending order the payment is for (or one its failure canceled) and publishes order.fulfilled.';
COMMENT ON FUNCTION orders.on_payment_failed(isa.event) IS
    'Handler of payment_service.payment.failed: cancels the pending order with reason payment_failed: <reason> and publishes order.canceled.';

SELECT isa.subscribe_to_events('order', 'payment_service.payment.completed', 'orders.on_payment_completed(isa.event)');
SELECT isa.subscribe_to_events('order', 'payment_service.payment.failed', 'orders.on_payment_failed(isa.event)');

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA orders FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb),
    orders.get_order(uuid),
    orders.get_my_order(uuid, uuid),
    orders.list_orders(uuid, integer),
    orders.cancel_order(uuid, text),
    orders.cancel_my_order(uuid, uuid, text)
TO isa_app;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user orders for themselves (subject_param) and reads their own orders
-- (self_param on the list, /v1/me for one order: an order's path does not
-- name its owner).  Anyone else needs orders:read / orders:write.
-- Not the caller's own route: create_order trusts its amount and tokens, so
-- an end user placing one could pay 1 for a billion tokens.  A checkout
-- backend holding orders:write prices the order and places it for the user
-- (docs/http.md, "Orders").
SELECT isa.http_route('POST', '/v1/orders', 'orders.create_order(uuid, bigint, text, text, text, bigint, text, jsonb)', 'user',
    'Places an order for a user (a checkout backend with orders:write, which priced it): a wallet order is paid and fulfilled at once, a card order waits for its payment.',
    permission => 'orders:write', status => 201);
SELECT isa.http_route('GET', '/v1/orders', 'orders.list_orders(uuid, integer)', 'user',
    'A user''s orders, newest first (at most row_limit, 1 to 1000).',
    permission => 'orders:read', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('GET', '/v1/orders/{order_id}', 'orders.get_order(uuid)', 'user',
    'An order by its id.', permission => 'orders:read', resource_param => 'order_id');
SELECT isa.http_route('POST', '/v1/orders/{order_id}/cancel', 'orders.cancel_order(uuid, text)', 'user',
    'Cancels a pending order.', permission => 'orders:write', resource_param => 'order_id');
SELECT isa.http_route('GET', '/v1/me/orders/{order_id}', 'orders.get_my_order(uuid, uuid)', 'user',
    'One of the caller''s orders.', subject_param => 'user_id');
SELECT isa.http_route('POST', '/v1/me/orders/{order_id}/cancel', 'orders.cancel_my_order(uuid, uuid, text)', 'user',
    'Cancels one of the caller''s pending orders.', subject_param => 'user_id');

-- ==== sql/storage.sql
-- storage.sql — the storage service (schema storage, source storage_service):
-- files a user uploads, stored in the database as chunks.  An upload is begun
-- (begin_upload), fed chunk by chunk in order (put_chunk) and finished
-- (finish_upload: size and SHA-256 checked, file.uploaded published); until
-- then the file is invisible to every read.  Reads return a byte range and
-- touch only the chunks it overlaps.  Devices download through signed,
-- expiring URLs (sign_download / get_signed_file).  isa-httpd streams uploads
-- and downloads through these functions.  Schema, outbox and inbox come from
-- sql/services.sql.  docs/services/storage.md documents the API, the events,
-- the handler and the settings.

-- ---------------------------------------------------------------- tables
-- One row per upload, which becomes the file: status uploading (invisible,
-- chunks arriving), complete (a file), deleted (soft-deleted; chunks gone).
-- An abandoned upload is deleted outright (purge_abandoned_uploads).
CREATE TABLE storage.files (
    file_id       uuid PRIMARY KEY DEFAULT isa.uuid_v7(),   -- the upload id, then the file id
    owner_id      uuid NOT NULL,                            -- account's user (no cross-schema foreign key)
    name          text NOT NULL,                            -- 1-255 characters, no / \ or control character, not . or ..
    content_type  text NOT NULL,                            -- type/subtype[; parameters]
    declared_size bigint CHECK (declared_size >= 0),        -- the size announced by begin_upload, or NULL
    size          bigint NOT NULL DEFAULT 0 CHECK (size >= 0),  -- bytes received so far; the file's size once complete
    next_seq      integer NOT NULL DEFAULT 0 CHECK (next_seq >= 0),  -- the seq put_chunk expects next
    sha256        bytea CHECK (octet_length(sha256) = 32),  -- SHA-256 of the content, set by finish_upload
    status        text NOT NULL DEFAULT 'uploading' CHECK (status IN ('uploading', 'complete', 'deleted')),
    started_at    timestamptz NOT NULL DEFAULT now(),       -- begin_upload
    updated_at    timestamptz NOT NULL DEFAULT now(),       -- the last chunk (abandoned uploads are judged by it)
    created_at    timestamptz,                              -- finish_upload: when the file became visible
    deleted_at    timestamptz,
    CHECK ((status = 'uploading') = (created_at IS NULL)),
    CHECK ((status = 'uploading') = (sha256 IS NULL)),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
COMMENT ON TABLE storage.files IS
    'Uploads and files: owner, name, content type, size, SHA-256; status uploading (invisible until finish_upload), complete, or deleted (soft delete, chunks removed).';
CREATE INDEX files_owner_created ON storage.files (owner_id, created_at DESC, file_id DESC) WHERE status = 'complete';
CREATE INDEX files_uploading ON storage.files (updated_at) WHERE status = 'uploading';

-- The content, in the order received.  start_offset is the chunk's position in
-- the file, so a read selects the chunks it overlaps through the unique index
-- whatever the chunk sizes were.  STORAGE EXTERNAL: out of line, never
-- compressed, so substring() fetches only the TOAST pieces of the bytes it
-- returns.
CREATE TABLE storage.chunks (
    file_id      uuid NOT NULL REFERENCES storage.files ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 0),
    start_offset bigint NOT NULL CHECK (start_offset >= 0),
    data         bytea NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 1048576),
    PRIMARY KEY (file_id, seq),
    CONSTRAINT chunks_offset UNIQUE (file_id, start_offset)
);
ALTER TABLE storage.chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE storage.chunks IS
    'File content as chunks of 1 byte to 1 MiB: seq from 0 in order, start_offset the byte position of the chunk in the file.';

-- ---------------------------------------------------------------- types
CREATE TYPE storage.file_info AS (
    file_id      uuid,
    owner_id     uuid,
    name         text,
    content_type text,
    size         bigint,
    sha256       text,            -- 64 lower-case hexadecimal digits
    created_at   timestamptz
);
COMMENT ON TYPE storage.file_info IS
    'A file as the storage API returns it (sha256 in hexadecimal).';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('file.uploaded', 'storage_service', '1.0.0',
    'An upload was finished: the file is complete, its size and SHA-256 checked (storage.finish_upload).',
    '{"file_id":      {"type": "uuid",    "required": true, "description": "the file"},
      "owner_id":     {"type": "uuid",    "required": true, "description": "the user who owns it"},
      "name":         {"type": "string",  "required": true, "description": "file name"},
      "content_type": {"type": "string",  "required": true, "description": "media type, e.g. image/jpeg"},
      "size":         {"type": "integer", "required": true, "description": "size in bytes"},
      "sha256":       {"type": "string",  "required": true, "description": "SHA-256 of the content, 64 lower-case hexadecimal digits"}}');
SELECT isa.register_event_type('file.deleted', 'storage_service', '1.0.0',
    'A file was deleted (soft delete; its content is gone): by its owner (storage.delete_file) or because the owner''s account was deleted.',
    '{"file_id":    {"type": "uuid",      "required": true, "description": "the file"},
      "owner_id":   {"type": "uuid",      "required": true, "description": "the user who owned it"},
      "size":       {"type": "integer",   "required": true, "description": "its size in bytes"},
      "reason":     {"type": "string",    "required": true, "description": "owner or user_deleted"},
      "deleted_at": {"type": "timestamp", "required": true, "description": "when it was deleted"}}');

-- ---------------------------------------------------------------- settings
-- isa.storage_max_file_bytes and isa.storage_url_secret (docs/services/storage.md).
-- Read through this one function so that nothing else names a setting.
CREATE FUNCTION storage._setting(setting_name text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN nullif(current_setting(setting_name, true), '');
COMMENT ON FUNCTION storage._setting(text) IS
    'The value of a setting, NULL when it is unset, empty or unknown.';

-- The largest file: isa.storage_max_file_bytes, a number of bytes (a unit
-- B, kB, MB or GB allowed, as an integer GUC with GUC_UNIT_BYTE shows it),
-- default 64 MiB, at most 512 MiB: finish_upload hashes the content as one
-- bytea in memory.
CREATE FUNCTION storage._max_file_bytes(v text DEFAULT storage._setting('isa.storage_max_file_bytes')) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text[];
    n numeric;
BEGIN
    IF v IS NULL THEN
        RETURN 67108864;
    END IF;
    m := regexp_match(btrim(v), '^([0-9]{1,12}) ?(B|kB|MB|GB)?$');
    IF m IS NOT NULL THEN
        n := m[1]::numeric * CASE m[2] WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 WHEN 'GB' THEN 1073741824 ELSE 1 END;
    END IF;
    IF n IS NULL OR n > 536870912 THEN
        RAISE EXCEPTION 'isa.storage_max_file_bytes must be a number of bytes from 0 to 536870912 (512 MB), not "%"', left(v, 40)
            USING ERRCODE = '55000', HINT = 'Unset it for the default of 67108864 (64 MB).';
    END IF;
    RETURN n::bigint;
END
$$;
COMMENT ON FUNCTION storage._max_file_bytes(text) IS
    'The largest file in bytes: v, by default the setting isa.storage_max_file_bytes (NULL: 67108864; at most 536870912); 55000 if it is malformed.';

-- The key of download signatures: isa.storage_url_secret, at least 32 bytes.
-- Neither message carries the secret or its length.
CREATE FUNCTION storage._url_secret(v text DEFAULT storage._setting('isa.storage_url_secret')) RETURNS bytea
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR octet_length(convert_to(v, 'UTF8')) < 32 THEN
        RAISE EXCEPTION 'signed download URLs are not configured: isa.storage_url_secret is %',
            CASE WHEN v IS NULL THEN 'not set' ELSE 'shorter than 32 bytes' END
            USING ERRCODE = '55000',
            HINT = 'A superuser sets isa.storage_url_secret to a random secret of at least 32 bytes (docs/services/storage.md).';
    END IF;
    RETURN convert_to(v, 'UTF8');
END
$$;
COMMENT ON FUNCTION storage._url_secret(text) IS
    'The HMAC key of download signatures: v, by default the setting isa.storage_url_secret, as UTF-8 bytes; 55000 when unset or shorter than 32 bytes.';

-- ---------------------------------------------------------------- internal helpers
CREATE FUNCTION storage._info(f storage.files) RETURNS storage.file_info
    LANGUAGE sql IMMUTABLE
    RETURN ROW(f.file_id, f.owner_id, f.name, f.content_type, f.size,
               pg_catalog.encode(f.sha256, 'hex'), f.created_at)::storage.file_info;
COMMENT ON FUNCTION storage._info(storage.files) IS
    'A files row as storage.file_info.';

CREATE FUNCTION storage._iso(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
COMMENT ON FUNCTION storage._iso(timestamptz) IS
    'RFC 3339 UTC with microseconds, as in the envelope.';

-- A file name as given, or 22004/22023.  It is a name, not a path: isa-httpd
-- puts it in Content-Disposition and clients may save under it.
CREATE FUNCTION storage._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = '22004';
    ELSIF name = '' THEN
        RAISE EXCEPTION 'file name must not be empty' USING ERRCODE = '22023';
    ELSIF length(name) > 255 THEN
        RAISE EXCEPTION 'file name is too long (% characters; at most 255)', length(name) USING ERRCODE = '22023';
    ELSIF strpos(name, '/') > 0 THEN
        RAISE EXCEPTION 'file name must not contain "/"' USING ERRCODE = '22023',
            HINT = 'A file name is a name, not a path.';
    ELSIF strpos(name, '\') > 0 THEN
        RAISE EXCEPTION 'file name must not contain "\"' USING ERRCODE = '22023',
            HINT = 'A file name is a name, not a path.';
    ELSIF name IN ('.', '..') THEN
        RAISE EXCEPTION 'file name must not be "%"', name USING ERRCODE = '22023';
    ELSIF name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'file name must not contain control characters' USING ERRCODE = '22023';
    END IF;
    RETURN name;
END
$$;
COMMENT ON FUNCTION storage._check_name(text) IS
    'Checks a file name: 1 to 255 characters, no "/", "\" or control character, not "." or ".."; 22004 / 22023.';

-- A media type type/subtype (RFC 6838 names) with optional ;name=value
-- parameters, at most 255 characters: nothing that could break the
-- Content-Type header isa-httpd sends it in.  NULL: application/octet-stream.
CREATE FUNCTION storage._check_content_type(content_type text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF content_type IS NULL THEN
        RETURN 'application/octet-stream';
    END IF;
    IF length(content_type) > 255
       OR content_type !~ '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}( *; *[A-Za-z0-9!#$&^_.+-]+=([A-Za-z0-9!#$&^_.+-]+|"[^"\\[:cntrl:]]*"))*$' THEN
        RAISE EXCEPTION 'invalid content type "%"', left(content_type, 100) USING ERRCODE = '22023',
            HINT = 'A content type is type/subtype, optionally with parameters, e.g. image/jpeg or text/plain; charset=utf-8.';
    END IF;
    RETURN content_type;
END
$$;
COMMENT ON FUNCTION storage._check_content_type(text) IS
    'Checks a media type (type/subtype[; name=value]..., at most 255 characters; NULL gives application/octet-stream); 22023.';

-- The signature of a download of file_id valid until expires (unix seconds):
-- base64url(HMAC-SHA256(secret, '<file_id>.<expires>')).
CREATE FUNCTION storage._signature(file_id uuid, expires bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN isa.base64url_encode(isa.hmac_sha256(storage._url_secret(),
                                                convert_to(file_id::text || '.' || expires::text, 'UTF8')));
COMMENT ON FUNCTION storage._signature(uuid, bigint) IS
    'base64url(HMAC-SHA256(isa.storage_url_secret, ''<file_id>.<expires>'')): the signature of a download URL.';

-- ---------------------------------------------------------------- API: uploads
CREATE FUNCTION storage.begin_upload(owner_id uuid, name text,
                                     content_type text DEFAULT 'application/octet-stream',
                                     size bigint DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := storage._check_name(begin_upload.name);
    v_type text := storage._check_content_type(begin_upload.content_type);
    v_max  bigint := storage._max_file_bytes();
    v_id   uuid;
BEGIN
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'owner_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF size < 0 THEN
        RAISE EXCEPTION 'size must not be negative, not %', size USING ERRCODE = '22023';
    END IF;
    IF size > v_max THEN
        RAISE EXCEPTION 'file too large: % bytes; at most % bytes', size, v_max USING ERRCODE = '54000',
            HINT = 'The limit is the setting isa.storage_max_file_bytes.';
    END IF;
    PERFORM account.require_user(owner_id);
    INSERT INTO storage.files AS f (owner_id, name, content_type, declared_size)
    VALUES (begin_upload.owner_id, v_name, v_type, begin_upload.size)
    RETURNING f.file_id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION storage.begin_upload(uuid, text, text, bigint) IS
    'Begins an upload for a user and returns its id (the future file_id); the file is invisible until finish_upload. size: the announced size in bytes, or NULL. 22004, 22023 bad name or content type, P0002 unknown user, 54000 file too large.';

CREATE FUNCTION storage.put_chunk(upload_id uuid, seq integer, data bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f     storage.files;
    n     bigint := octet_length(data);
    v_max bigint := storage._max_file_bytes();
BEGIN
    IF upload_id IS NULL THEN
        RAISE EXCEPTION 'upload_id must not be null' USING ERRCODE = '22004';
    ELSIF seq IS NULL THEN
        RAISE EXCEPTION 'seq must not be null' USING ERRCODE = '22004';
    ELSIF data IS NULL THEN
        RAISE EXCEPTION 'data must not be null' USING ERRCODE = '22004';
    ELSIF n = 0 THEN
        RAISE EXCEPTION 'a chunk must not be empty' USING ERRCODE = '22023';
    ELSIF n > 1048576 THEN
        RAISE EXCEPTION 'chunk too large: % bytes; at most 1048576 (1 MiB)', n USING ERRCODE = '22023';
    END IF;
    -- The row lock orders the chunks of one upload.
    SELECT * INTO f FROM storage.files x WHERE x.file_id = put_chunk.upload_id AND x.status <> 'deleted' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % not found', upload_id USING ERRCODE = 'P0002';
    ELSIF f.status <> 'uploading' THEN
        RAISE EXCEPTION 'upload % is finished: it takes no more chunks', upload_id USING ERRCODE = '55000';
    ELSIF seq <> f.next_seq THEN
        RAISE EXCEPTION 'chunk % is out of order: upload % expects chunk %', seq, upload_id, f.next_seq
            USING ERRCODE = '22023', HINT = 'Chunks are numbered from 0 and sent in order, each once.';
    ELSIF f.size + n > f.declared_size THEN
        RAISE EXCEPTION 'file too large: more than the % bytes declared', f.declared_size USING ERRCODE = '54000';
    ELSIF f.size + n > v_max THEN
        RAISE EXCEPTION 'file too large: more than % bytes', v_max USING ERRCODE = '54000',
            HINT = 'The limit is the setting isa.storage_max_file_bytes.';
    END IF;
    INSERT INTO storage.chunks (file_id, seq, start_offset, data) VALUES (f.file_id, put_chunk.seq, f.size, put_chunk.data);
    UPDATE storage.files x SET size = f.size + n, next_seq = f.next_seq + 1, updated_at = now()
     WHERE x.file_id = f.file_id;
END
$$;
COMMENT ON FUNCTION storage.put_chunk(uuid, integer, bytea) IS
    'Appends a chunk (1 byte to 1 MiB) to an upload; seq counts from 0 and must be the next one. 22004, 22023 empty, too large or out-of-order chunk, P0002 unknown upload, 55000 upload finished, 54000 more than the declared size or isa.storage_max_file_bytes.';

CREATE FUNCTION storage.finish_upload(upload_id uuid, sha256 text DEFAULT NULL) RETURNS storage.file_info
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f        storage.files;
    expected bytea;
    digest   bytea;
    event_id uuid;
BEGIN
    IF upload_id IS NULL THEN
        RAISE EXCEPTION 'upload_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF finish_upload.sha256 IS NOT NULL THEN
        IF finish_upload.sha256 !~ '^[0-9A-Fa-f]{64}$' THEN
            RAISE EXCEPTION 'sha256 must be 64 hexadecimal digits' USING ERRCODE = '22023';
        END IF;
        expected := decode(finish_upload.sha256, 'hex');
    END IF;
    SELECT * INTO f FROM storage.files x WHERE x.file_id = finish_upload.upload_id AND x.status <> 'deleted' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % not found', upload_id USING ERRCODE = 'P0002';
    END IF;
    IF f.status = 'complete' THEN
        -- A retried finish: the file as it was made, nothing published again.
        IF expected IS NOT NULL AND expected <> f.sha256 THEN
            RAISE EXCEPTION 'content does not match its sha256' USING ERRCODE = '22023';
        END IF;
        RETURN storage._info(f);
    END IF;
    IF f.size <> f.declared_size THEN
        RAISE EXCEPTION 'upload incomplete: % of the % bytes declared were received', f.size, f.declared_size
            USING ERRCODE = '22023';
    END IF;
    -- At most isa.storage_max_file_bytes (<= 512 MiB), which put_chunk enforced.
    SELECT pg_catalog.sha256(coalesce(string_agg(c.data, '' ORDER BY c.seq), '')) INTO digest
      FROM storage.chunks c WHERE c.file_id = f.file_id;
    IF expected IS NOT NULL AND expected <> digest THEN
        RAISE EXCEPTION 'content does not match its sha256' USING ERRCODE = '22023',
            DETAIL = format('The %s bytes received hash to %s.', f.size, encode(digest, 'hex'));
    END IF;
    UPDATE storage.files x SET status = 'complete', sha256 = digest, created_at = now(), updated_at = now()
     WHERE x.file_id = f.file_id
    RETURNING * INTO f;
    event_id := isa.publish_event('file.uploaded', 'storage_service',
        jsonb_build_object('file_id', f.file_id, 'owner_id', f.owner_id, 'name', f.name,
                           'content_type', f.content_type, 'size', f.size, 'sha256', encode(f.sha256, 'hex')));
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.finish_upload(uuid, text) IS
    'Finishes an upload: checks the declared size and, when given, the SHA-256 (hex) of the content, makes the file visible, publishes file.uploaded and returns the file. Finishing a finished upload again returns it. 22004, 22023 size or sha256 mismatch, P0002 unknown upload.';

-- What isa-httpd calls when an upload ends without finish_upload (the client
-- went away, put_chunk refused a chunk, the session ended): its row and chunks
-- go at once rather than at the purge.  Only an upload in progress: a
-- finished file is never removed here.
CREATE FUNCTION storage.abort_upload(upload_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF upload_id IS NULL THEN
        RAISE EXCEPTION 'upload_id must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM storage.files f WHERE f.file_id = abort_upload.upload_id AND f.status = 'uploading';  -- chunks: cascade
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION storage.abort_upload(uuid) IS
    'Removes an upload still in progress, with its chunks (no event: it was never announced); true when there was one. A finished file is left alone. isa-httpd calls it when an upload ends unfinished.';

CREATE FUNCTION storage.purge_abandoned_uploads(older_than interval DEFAULT '1 hour') RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be null' USING ERRCODE = '22004';
    ELSIF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than USING ERRCODE = '22023';
    END IF;
    DELETE FROM storage.files f WHERE f.status = 'uploading' AND f.updated_at < now() - older_than;  -- chunks: cascade
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION storage.purge_abandoned_uploads(interval) IS
    'Deletes the uploads that received nothing for older_than (default 1 hour) and were never finished, with their chunks; returns how many. For isa_admin; pg_cron runs it every 10 minutes (isa-storage-purge-uploads).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-storage-purge-uploads', '*/10 * * * *', 'SELECT storage.purge_abandoned_uploads()',
        'Every 10 minutes: delete uploads idle for over an hour and never finished, with their chunks.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- API: reads
CREATE FUNCTION storage.get_file(file_id uuid) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
BEGIN
    IF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO f FROM storage.files x WHERE x.file_id = get_file.file_id AND x.status = 'complete';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.get_file(uuid) IS
    'A file by id. P0002 unknown, deleted or not finished.';

CREATE FUNCTION storage.get_my_file(owner_id uuid, file_id uuid) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f storage.files;
BEGIN
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'owner_id must not be null' USING ERRCODE = '22004';
    ELSIF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO f FROM storage.files x
     WHERE x.file_id = get_my_file.file_id AND x.owner_id = get_my_file.owner_id AND x.status = 'complete';
    IF NOT FOUND THEN
        -- The same answer whether the file does not exist or is someone else's.
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    RETURN storage._info(f);
END
$$;
COMMENT ON FUNCTION storage.get_my_file(uuid, uuid) IS
    'A file of owner_id. P0002 (the same error) when it does not exist, is not finished, is deleted or belongs to someone else.';

CREATE FUNCTION storage.read_file(file_id uuid, "offset" bigint, length integer) RETURNS bytea
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_off   bigint := read_file."offset";
    v_size  bigint;
    v_end   bigint;
    v_first bigint;
    result  bytea;
BEGIN
    IF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    ELSIF v_off IS NULL THEN
        RAISE EXCEPTION 'offset must not be null' USING ERRCODE = '22004';
    ELSIF read_file.length IS NULL THEN
        RAISE EXCEPTION 'length must not be null' USING ERRCODE = '22004';
    ELSIF v_off < 0 THEN
        RAISE EXCEPTION 'offset must not be negative, not %', v_off USING ERRCODE = '22023';
    ELSIF read_file.length NOT BETWEEN 0 AND 4194304 THEN
        RAISE EXCEPTION 'length must be from 0 to 4194304 (4 MiB), not %', read_file.length USING ERRCODE = '22023';
    END IF;
    SELECT f.size INTO v_size FROM storage.files f WHERE f.file_id = read_file.file_id AND f.status = 'complete';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    IF v_off >= v_size OR read_file.length = 0 THEN
        RETURN '\x'::bytea;
    END IF;
    v_end := least(v_off + read_file.length, v_size);
    -- The chunk holding the first byte, then every chunk starting before the end.
    SELECT max(c.start_offset) INTO v_first
      FROM storage.chunks c WHERE c.file_id = read_file.file_id AND c.start_offset <= v_off;
    SELECT string_agg(substring(c.data FROM (greatest(v_off - c.start_offset, 0) + 1)::integer
                                       FOR (least(c.start_offset + octet_length(c.data), v_end)
                                            - greatest(c.start_offset, v_off))::integer),
                      '' ORDER BY c.start_offset)
      INTO result
      FROM storage.chunks c
     WHERE c.file_id = read_file.file_id AND c.start_offset >= v_first AND c.start_offset < v_end;
    RETURN result;
END
$$;
COMMENT ON FUNCTION storage.read_file(uuid, bigint, integer) IS
    'The bytes [offset, offset + length) of a finished file, fewer at its end, empty from its end on; reads only the chunks they lie in. 22004, 22023 negative offset or length outside 0 to 4194304, P0002 unknown, deleted or unfinished file.';

CREATE FUNCTION storage.list_files(owner_id uuid, row_limit integer DEFAULT 100) RETURNS SETOF storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'owner_id must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM isa.check_page_size('row_limit', row_limit);
    RETURN QUERY
        SELECT f.file_id, f.owner_id, f.name, f.content_type, f.size, encode(f.sha256, 'hex'), f.created_at
          FROM storage.files f
         WHERE f.owner_id = list_files.owner_id AND f.status = 'complete'
         ORDER BY f.created_at DESC, f.file_id DESC
         LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION storage.list_files(uuid, integer) IS
    'A user''s finished files, newest first, at most row_limit (1 to 1000, default 100). 22004, 22023.';

-- ---------------------------------------------------------------- API: deletion
-- Soft-deletes complete files (the row stays, the chunks go) and publishes
-- file.deleted for each; returns how many.  Callers lock the rows.
CREATE FUNCTION storage._delete(p_file_ids uuid[], p_reason text) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (
        UPDATE storage.files f SET status = 'deleted', deleted_at = now(), updated_at = now()
         WHERE f.file_id = ANY (p_file_ids) AND f.status = 'complete'
        RETURNING f.file_id, f.owner_id, f.size, f.deleted_at),
    dropped AS (
        DELETE FROM storage.chunks c WHERE c.file_id IN (SELECT g.file_id FROM gone g))
    SELECT count(isa.publish_event('file.deleted', 'storage_service',
                     jsonb_build_object('file_id', g.file_id, 'owner_id', g.owner_id, 'size', g.size,
                                        'reason', p_reason, 'deleted_at', storage._iso(g.deleted_at))))
      FROM gone g;
END;
COMMENT ON FUNCTION storage._delete(uuid[], text) IS
    'Soft-deletes the complete files among p_file_ids: status deleted, chunks removed, file.deleted (reason p_reason) published for each; returns how many.';

CREATE FUNCTION storage.delete_file(owner_id uuid, file_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'owner_id must not be null' USING ERRCODE = '22004';
    ELSIF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT x.status INTO v_status FROM storage.files x
     WHERE x.file_id = delete_file.file_id AND x.owner_id = delete_file.owner_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'file % not found', file_id USING ERRCODE = 'P0002';
    END IF;
    -- An upload in progress is aborted: it goes with its chunks, and no event
    -- (it was never announced).
    IF v_status = 'uploading' THEN
        DELETE FROM storage.files x WHERE x.file_id = delete_file.file_id;   -- chunks: cascade
        RETURN;
    END IF;
    -- Deleting a deleted file again: done already, no second event.
    PERFORM storage._delete(ARRAY[delete_file.file_id], 'owner');
END
$$;
COMMENT ON FUNCTION storage.delete_file(uuid, uuid) IS
    'Deletes a file of owner_id (soft delete: its content goes) and publishes file.deleted; deleting it again does nothing. An upload of owner_id still in progress is aborted (removed with its chunks, no event). P0002 (the same error) when it does not exist or belongs to someone else.';

-- ---------------------------------------------------------------- API: signed downloads
CREATE FUNCTION storage.sign_download(file_id uuid, ttl_seconds integer DEFAULT 300) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_expires bigint;
BEGIN
    IF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    ELSIF ttl_seconds IS NULL THEN
        RAISE EXCEPTION 'ttl_seconds must not be null' USING ERRCODE = '22004';
    ELSIF ttl_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'ttl_seconds must be from 1 to 86400 (a day), not %', ttl_seconds USING ERRCODE = '22023';
    END IF;
    PERFORM storage.get_file(file_id);
    v_expires := floor(extract(epoch FROM now()))::bigint + ttl_seconds;
    RETURN jsonb_build_object('file_id', file_id, 'expires', v_expires,
                              'signature', storage._signature(file_id, v_expires));
END
$$;
COMMENT ON FUNCTION storage.sign_download(uuid, integer) IS
    'A signed download of a finished file for ttl_seconds (1 to 86400, default 300): {"file_id", "expires" (unix seconds), "signature" (base64url HMAC-SHA256 of "<file_id>.<expires>")}. 22004, 22023, P0002 unknown file, 55000 isa.storage_url_secret not set.';

CREATE FUNCTION storage.sign_my_download(owner_id uuid, file_id uuid, ttl_seconds integer DEFAULT 300) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM storage.get_my_file(owner_id, file_id);
    RETURN storage.sign_download(file_id, ttl_seconds);
END
$$;
COMMENT ON FUNCTION storage.sign_my_download(uuid, uuid, integer) IS
    'sign_download for a file of owner_id. P0002 (the same error) when it does not exist or belongs to someone else; otherwise as sign_download.';

CREATE FUNCTION storage.get_signed_file(file_id uuid, expires bigint, signature text) RETURNS storage.file_info
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    valid boolean;
BEGIN
    IF file_id IS NULL THEN
        RAISE EXCEPTION 'file_id must not be null' USING ERRCODE = '22004';
    ELSIF expires IS NULL THEN
        RAISE EXCEPTION 'expires must not be null' USING ERRCODE = '22004';
    ELSIF signature IS NULL THEN
        RAISE EXCEPTION 'signature must not be null' USING ERRCODE = '22004';
    END IF;
    -- Compared in constant time; a bad and an expired signature get one answer.
    valid := isa.secure_equals(convert_to(storage._signature(file_id, expires), 'UTF8'),
                               convert_to(signature, 'UTF8'));
    IF NOT valid OR extract(epoch FROM now()) > expires THEN
        RAISE EXCEPTION 'invalid or expired download signature' USING ERRCODE = '42501';
    END IF;
    RETURN storage.get_file(file_id);
END
$$;
COMMENT ON FUNCTION storage.get_signed_file(uuid, bigint, text) IS
    'The file of a signed download URL (sign_download) when its signature is valid and it has not expired. 22004, 42501 invalid or expired signature, P0002 file deleted since, 55000 isa.storage_url_secret not set.';

-- ---------------------------------------------------------------- handlers
-- account_service.user.deleted: the user's files are deleted (file.deleted,
-- reason user_deleted, for each) and the uploads in progress dropped.
-- Idempotent: a second delivery finds nothing to do.
CREATE FUNCTION storage.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid_text text := e.data ->> 'user_id';
    uid      uuid;
    ids      uuid[];
BEGIN
    IF uid_text IS NULL OR uid_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        -- Bad data, not a transient failure: retrying would not help.
        RAISE WARNING 'storage.on_user_deleted: event % has no valid data.user_id (%), ignored', e.id, uid_text;
        RETURN;
    END IF;
    uid := uid_text::uuid;
    DELETE FROM storage.files f WHERE f.owner_id = uid AND f.status = 'uploading';   -- chunks: cascade
    SELECT array_agg(f.file_id ORDER BY f.file_id) INTO ids
      FROM (SELECT x.file_id FROM storage.files x WHERE x.owner_id = uid AND x.status = 'complete'
              ORDER BY x.file_id FOR UPDATE) f;
    IF ids IS NOT NULL THEN
        PERFORM storage._delete(ids, 'user_deleted');
    END IF;
END
$$;
COMMENT ON FUNCTION storage.on_user_deleted(isa.event) IS
    'Handler of account_service.user.deleted: deletes the user''s files (soft delete, chunks removed, file.deleted reason user_deleted for each) and drops the user''s unfinished uploads.';

SELECT isa.subscribe_to_events('storage', 'account_service.user.deleted',
                               'storage.on_user_deleted(isa.event)'::regprocedure);

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA storage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    storage.begin_upload(uuid, text, text, bigint),
    storage.put_chunk(uuid, integer, bytea),
    storage.abort_upload(uuid),
    storage.finish_upload(uuid, text),
    storage.get_file(uuid),
    storage.get_my_file(uuid, uuid),
    storage.read_file(uuid, bigint, integer),
    storage.list_files(uuid, integer),
    storage.delete_file(uuid, uuid),
    storage.sign_download(uuid, integer),
    storage.sign_my_download(uuid, uuid, integer),
    storage.get_signed_file(uuid, bigint, text)
TO isa_app;
GRANT EXECUTE ON FUNCTION storage.purge_abandoned_uploads(interval) TO isa_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user sees and deletes only their own files: owner_id is the caller
-- (subject_param), and another user's file is "not found".
SELECT isa.http_route('GET', '/v1/files', 'storage.list_files(uuid, integer)', 'user',
    'The caller''s files, newest first (row_limit 1 to 1000, default 100).', subject_param => 'owner_id');
SELECT isa.http_route('GET', '/v1/files/{file_id}', 'storage.get_my_file(uuid, uuid)', 'user',
    'One of the caller''s files: name, content type, size, SHA-256.', subject_param => 'owner_id');
SELECT isa.http_route('DELETE', '/v1/files/{file_id}', 'storage.delete_file(uuid, uuid)', 'user',
    'Deletes one of the caller''s files.', subject_param => 'owner_id');
SELECT isa.http_route('POST', '/v1/files/{file_id}/download-url', 'storage.sign_my_download(uuid, uuid, integer)', 'user',
    'A signed download URL of one of the caller''s files, valid ttl_seconds (1 to 86400, default 300): file_id, expires, signature.',
    subject_param => 'owner_id');

-- Streamed by isa-httpd (isa.http_route's stream, docs/http.md "Files"):
--   upload   POST /v1/files?name=…: begin_upload (content_type and size from the
--            Content-Type and Content-Length headers), put_chunk per 256 KiB of
--            the body as it arrives, finish_upload with the SHA-256 isa-httpd
--            computed; 201 with the file_info.
--   download the route's function gives the file_info (Content-Type, ETag =
--            the SHA-256, Content-Disposition from its name), then read_file
--            per 256 KiB as the client reads; Range (206, 416), If-None-Match (304).
SELECT isa.http_route('POST', '/v1/files', 'storage.begin_upload(uuid, text, text, bigint)', 'user',
    'Uploads a file of the caller: the request body, streamed (name in the query string; Content-Type and Content-Length are its type and size); returns the new file.',
    subject_param => 'owner_id', status => 201, stream => 'upload',
    header_params => '{"content_type": "Content-Type", "size": "Content-Length"}');
SELECT isa.http_route('GET', '/v1/files/{file_id}/content', 'storage.get_my_file(uuid, uuid)', 'user',
    'The content of one of the caller''s files (Range, If-None-Match).', subject_param => 'owner_id', stream => 'download');
SELECT isa.http_route('GET', '/v1/downloads/{file_id}', 'storage.get_signed_file(uuid, bigint, text)', 'public',
    'The content of a file through a signed download URL: expires and signature in the query string (Range, If-None-Match).',
    stream => 'download');

-- ==== sql/grants.sql
-- grants.sql — privileges (DESIGN.md §8), last so that they cover every object
-- above.  isa_app may execute the API and read the catalogue, never touch an
-- outbox or inbox; isa_bridge moves events; isa_admin owns the operations.

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA isa FROM PUBLIC;
GRANT USAGE ON SCHEMA isa TO isa_app, isa_bridge, isa_admin;

GRANT EXECUTE ON FUNCTION
    isa.uuid_v7(), isa.uuid_v7_time(uuid),
    isa.publish_event(text, text, jsonb, jsonb),
    isa.event_to_json(isa.event), isa.event_from_json(jsonb), isa._check_envelope(isa.event),
    isa.is_valid_event_type(text), isa.is_valid_version(text), isa.is_valid_subject_filter(text),
    isa.event_catalogue_markdown(), isa.http_routes_markdown(), isa.current_event(),
    isa.hmac_sha256(bytea, bytea), isa.secure_equals(bytea, bytea), isa.random_bytes(int),
    isa.base64url_encode(bytea), isa.base64url_decode(text)
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
GRANT SELECT, INSERT, DELETE ON isa.inbox TO isa_bridge;
GRANT SELECT ON isa.subscriptions TO isa_bridge;
GRANT SELECT, INSERT, UPDATE ON isa.dead_letters TO isa_bridge;
GRANT EXECUTE ON FUNCTION isa.wakeup_state() TO isa_bridge;

GRANT ALL ON ALL TABLES IN SCHEMA isa TO isa_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA isa TO isa_admin;

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
             UNION ALL VALUES ('isa.dead_letters'::regclass),
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

-- Functions of the service schemas are not for PUBLIC either; isa_admin, the
-- operators' role, may read and repair the services' data.
DO $revoke$
DECLARE
    nsp name;
BEGIN
    FOR nsp IN SELECT schema_name FROM isa.services WHERE schema_name IS NOT NULL LOOP
        EXECUTE format('REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', nsp);
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO isa_admin', nsp);
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
END
$secrets$;
