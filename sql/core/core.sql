-- core.sql — schema isa: roles, the service registry, the event envelope and
-- the event type catalogue.  Schema isa itself is created by CREATE EXTENSION
-- (isa.control: schema = isa).

-- Roles (docs/architecture.md, "Security"; docs/install.md, "Roles").  Roles
-- are cluster-wide, so they are created only when absent and survive DROP
-- EXTENSION.  isa_app_admin executes the services' administration functions
-- (set a password, bind a role, add tokens); isa_service is what every
-- service's own role (isa_svc_<service>, made by isa.register_service) may
-- use of schema isa; isa_compliance reads everything the event store and
-- the audit trail hold (emails and names included).
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['isa_admin', 'isa_app', 'isa_bridge', 'isa_app_admin', 'isa_service', 'isa_compliance'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

-- The names of a service's roles (extension/service_roles.c, the one place
-- the rule is written): isa_svc_<service> owns its schema and objects, runs
-- its handlers and alone publishes its events; isa_app_<service> executes
-- its API.
CREATE FUNCTION isa.service_role(service text) RETURNS name
    AS 'MODULE_PATHNAME', 'isa_service_role_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.service_role(text) IS
    'The role that owns a service''s schema and objects and runs its handlers: isa_svc_<service>.';
CREATE FUNCTION isa.service_app_role(service text) RETURNS name
    AS 'MODULE_PATHNAME', 'isa_service_app_role_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.service_app_role(text) IS
    'The role that may execute a service''s API: isa_app_<service>.';

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
    'A new time-ordered UUID (RFC 9562 version 7): one made later is greater, across the cluster when isa is preloaded, else within a session.';

-- The one way a service function refuses NULL arguments (extension/arguments.c):
-- 22004 "<name> must not be null" for the first NULL value, e.g.
-- PERFORM isa.not_null('user_id, amount', user_id, amount).
CREATE FUNCTION isa.not_null(names text, VARIADIC "any") RETURNS void
    AS 'MODULE_PATHNAME', 'isa_not_null' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION isa.not_null(text, "any") IS
    'Raises 22004 "<name> must not be null" for the first NULL value, names being a comma-separated list with one name per value.';

-- The services' timestamps as text: RFC 3339 UTC with microseconds, as in
-- the envelope (isa.event_to_json).
-- (C, extension/envelope.c: the event store and the audit trail call it
-- twice per event)
CREATE FUNCTION isa.iso_time(t timestamptz) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_iso_time' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.iso_time(timestamptz) IS
    'A timestamp as RFC 3339 UTC text with microseconds (2026-12-07T10:00:00.000000Z), as events and the services'' results carry it.';

-- Whether a text is a UUID in its canonical form: handlers test event data
-- with it before a cast that could raise.
CREATE FUNCTION isa.is_uuid(t text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(t ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false);
COMMENT ON FUNCTION isa.is_uuid(text) IS
    'Whether a text is a UUID in canonical form (8-4-4-4-12 hexadecimal digits); false for NULL.';

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

-- A name, title or label a service stores: blanks around it removed, 1 to
-- max_len characters, no control characters; 22023 naming what it is
-- ("a session's model").  NULL is the caller's to refuse (isa.not_null).
-- The one copy of the rule: session, device and organization call it.
CREATE FUNCTION isa.check_text(what text, value text, max_len integer) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := btrim(value, E' \t\r\n');
BEGIN
    IF v = '' OR length(v) > max_len OR v ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION '% must be 1 to % characters without control characters', what, max_len
            USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION isa.check_text(text, text, integer) IS
    'A stored name or title: value without the blanks around it; 22023 "<what> must be 1 to <max_len> characters without control characters" otherwise. NULL gives NULL.';

-- An idempotency key of a service's write: NULL (none) or 1 to 255 characters.
CREATE FUNCTION isa.check_idempotency_key(idempotency_key text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF idempotency_key = '' OR length(idempotency_key) > 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters or null' USING ERRCODE = '22023';
    END IF;
END
$$;
COMMENT ON FUNCTION isa.check_idempotency_key(text) IS
    'Raises 22023 unless an idempotency key is NULL or 1 to 255 characters.';

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
    'The event envelope (docs/architecture.md, "The event"); its JSON form is isa.event_to_json / isa.event_from_json.';

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
              FROM isa.event_types t
             -- a tracked table's events (source table) are the installation's own
             WHERE t.source <> 'table') s;
END;
COMMENT ON FUNCTION isa.event_catalogue_markdown() IS
    'The event catalogue (isa.event_types) as the Markdown of docs/events.md, without the events of tracked tables (source table: each installation''s own).';
