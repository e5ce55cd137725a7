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

-- The one NATS matcher of isa's SQL: which subjects a filter takes, as
-- NATS does (* one token, > one or more tokens at the end).  The event store's
-- queries filter with it; tests ask which subscriptions take a subject.
CREATE FUNCTION isa.subject_filter_regex(filter text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN isa.is_valid_subject_filter(filter) THEN
        '^' || replace(replace(regexp_replace(filter, '([.^$|?+()\[\]{}\\])', '\\\1', 'g'),
                               '*', '[^.]+'), '>', '.+') || '$' END;
COMMENT ON FUNCTION isa.subject_filter_regex(text) IS
    'The regular expression of a NATS subject filter (* one token, > the rest), anchored; NULL for an invalid filter.';

CREATE FUNCTION isa.subject_matches(subject text, filter text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN coalesce(subject ~ isa.subject_filter_regex(filter), false);
COMMENT ON FUNCTION isa.subject_matches(text, text) IS
    'Whether a subject matches a NATS subject filter (* one token, > one or more tokens at the end); false for an invalid filter.';

CREATE TABLE isa.subscriptions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service        text NOT NULL REFERENCES isa.services (name),
    subject_filter text NOT NULL CHECK (isa.is_valid_subject_filter(subject_filter)),
    handler        regprocedure NOT NULL,
    durable_name   text NOT NULL UNIQUE CHECK (durable_name ~ '^[A-Za-z0-9_-]+$'),
    options        jsonb NOT NULL DEFAULT '{}',
    owner_role     name NOT NULL,        -- handlers run as this role: isa.service_role(service)
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
    -- A subject starts with a source; the one exception, the acks and
    -- heartbeats devices publish (docs/bridge.md, "Device messages").
    IF split_part(subject_filter, '.', 1) NOT IN ('*', '>')
       AND subject_filter NOT IN ('isa.devices.*.acks', 'isa.devices.*.heartbeat')
       AND NOT EXISTS (SELECT 1 FROM isa.services s WHERE s.source = split_part(subject_filter, '.', 1)) THEN
        RAISE EXCEPTION 'subject filter "%" matches no isa subject', subject_filter USING ERRCODE = '22023',
            HINT = 'A subject starts with a source of isa.services, e.g. payment_service. or external., or is a device message filter, isa.devices.*.acks or isa.devices.*.heartbeat.';
    END IF;

    SELECT * INTO fn FROM pg_proc p WHERE p.oid = handler;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'handler function with OID % does not exist', handler::oid USING ERRCODE = '42883';
    END IF;
    -- f(isa.event) gets one event per call; a batch handler f(isa.event[])
    -- gets the events of one fetched batch per call (docs/bridge.md, "Batch
    -- handlers").
    IF fn.prokind <> 'f' OR fn.proretset OR fn.pronargs <> 1
       OR fn.proargtypes[0] NOT IN ('isa.event'::regtype, 'isa.event[]'::regtype) THEN
        RAISE EXCEPTION 'handler % must be a function taking one isa.event (or an isa.event[] batch)', handler
            USING ERRCODE = '22023',
            HINT = 'Declare it as CREATE FUNCTION ...(e isa.event) RETURNS void, or ...(events isa.event[]) for a batch handler; its result is ignored.';
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
COMMENT ON FUNCTION isa.subscribe_to_events(text, text, regprocedure, jsonb) IS
    'Registers handler(isa.event), or a batch handler(isa.event[]), of a service for the events whose subject matches subject_filter; idempotent; returns the subscription id. The handler runs as the service''s role (isa.service_role). Options: max_deliver, batch_size, versions, deliver_policy.';

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
    reason          text NOT NULL CHECK (reason IN ('handler_error', 'invalid_envelope', 'unsupported_version',
                                                'subject_mismatch')),
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
