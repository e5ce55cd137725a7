-- event.sql — the event service (schema event, source event_service): the
-- event store.  One batch handler, event.on_events, subscribed to every
-- subject ('>', external.> included), writes each batch of the stream into
-- event.events (monthly partitions of occurred_at, made ahead and dropped
-- after isa.event_retention_months by event.maintain_partitions, pg_cron) in
-- one INSERT, and announces at most one event.batch.stored per batch, never
-- for a batch of its own events.  Queries: by id, by type filter, source,
-- user, organization, correlation and time range (keyset pages), and a
-- calendar-like timeline; isa_compliance and isa_admin read everything, a
-- user (the *_my_* functions and the HTTP routes) their own events and those
-- of their organizations.  docs/services/event.md documents it.

-- ---------------------------------------------------------------- tables
-- The table is shared with replay (docs/services/event.md, "The table"):
-- original order = ORDER BY occurred_at, id.
CREATE TABLE event.events (
    id              uuid        NOT NULL,   -- the envelope's id
    occurred_at     timestamptz NOT NULL,   -- the envelope's timestamp: partition key
    event_type      text        NOT NULL,
    source          text        NOT NULL,
    subject         text        NOT NULL,   -- <source>.<event_type>, the NATS subject it came on
    version         text        NOT NULL,
    user_id         uuid,                   -- from data (user_id, else owner_id), NULL when none
    organization_id uuid,                   -- from data (organization_id, else org_id), NULL when none
    correlation_id  uuid,                   -- metadata.correlation_id
    causation_id    uuid,                   -- metadata.causation_id
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
    -- PRIMARY KEY (id, occurred_at) and the indexes: on each partition (event._ensure_partition)
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE event.events IS
    'Every event of the stream, once: the envelope, its subject, the user and organization it concerns and its chain; monthly partitions events_YYYYMM (UTC) of occurred_at, each with the primary key (id, occurred_at) and the indexes of the queries.';
-- ---------------------------------------------------------------- C (extension/event/)
CREATE FUNCTION event._retention_months() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_event_retention_months_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION event._retention_months() IS
    'isa.event_retention_months: how many months after the end of its month an event is kept.';
CREATE FUNCTION event._partitions_ahead() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_event_partitions_ahead_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION event._partitions_ahead() IS
    'isa.event_partitions_ahead: the monthly partitions maintain_partitions creates after the current month.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('event.batch.stored', 'event_service', '1.0.0',
    'The event store wrote a batch of the stream: one summary per batch, never one per event, and none for a batch of the store''s own events.',
    '{"count":            {"type": "integer",   "required": true,  "description": "Events of the batch newly stored (those already stored are not counted)."},
      "skipped":          {"type": "integer",   "required": true,  "description": "Events not stored: their month is past isa.event_retention_months or too far ahead."},
      "first_id":         {"type": "uuid",      "required": false, "description": "The first stored event of the batch, in stream order; absent when count is 0."},
      "last_id":          {"type": "uuid",      "required": false, "description": "The last stored event of the batch, in stream order; absent when count is 0."},
      "first_occurred_at":{"type": "timestamp", "required": false, "description": "The earliest timestamp among the stored events; absent when count is 0."},
      "last_occurred_at": {"type": "timestamp", "required": false, "description": "The latest timestamp among the stored events; absent when count is 0."}}');

-- ---------------------------------------------------------------- partitions
-- Months are UTC months: partition events_YYYYMM holds [YYYY-MM-01 00:00Z, next month).
CREATE FUNCTION event._month(t timestamptz) RETURNS timestamp
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN date_trunc('month', t AT TIME ZONE 'UTC');

-- The first month kept: older partitions are dropped and older events skipped.
CREATE FUNCTION event._horizon() RETURNS timestamp
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN date_trunc('month', (now() AT TIME ZONE 'UTC') - make_interval(months => event._retention_months()));

-- The first month not accepted: beyond the partitions made ahead (at least
-- the next month, for a producer whose clock runs ahead at a month's end).
CREATE FUNCTION event._limit() RETURNS timestamp
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN date_trunc('month', now() AT TIME ZONE 'UTC')
           + make_interval(months => greatest(event._partitions_ahead(), 1) + 1);

-- Creates the partition of a month (a UTC month start) unless it exists;
-- true when it made it.  The advisory lock serialises two creators (the job
-- and a batch of the handler).
CREATE FUNCTION event._ensure_partition(month timestamp) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := 'events_' || to_char(month, 'YYYYMM');
BEGIN
    IF to_regclass('event.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('event.partition:' || name, 0));
    IF to_regclass('event.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE event.%I PARTITION OF event.events FOR VALUES FROM (%L) TO (%L)',
                   name, to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00',
                   to_char(month + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
    -- One index per query (docs/services/event.md, "Indexes").  Made here,
    -- not on event.events: an index of the extension's parent would be made
    -- again on each partition as a restored dump attaches it, before the
    -- dump's own, and the restore would fail (test/integration/99-dump-restore.sh).
    EXECUTE format('ALTER TABLE event.%I ADD CONSTRAINT %I PRIMARY KEY (id, occurred_at)', name, name || '_pkey');
    EXECUTE format('CREATE INDEX %I ON event.%I (occurred_at, id)', name || '_time', name);
    EXECUTE format('CREATE INDEX %I ON event.%I (user_id, occurred_at) WHERE user_id IS NOT NULL', name || '_user', name);
    EXECUTE format('CREATE INDEX %I ON event.%I (organization_id, occurred_at) WHERE organization_id IS NOT NULL',
                   name || '_organization', name);
    EXECUTE format('CREATE INDEX %I ON event.%I (correlation_id) WHERE correlation_id IS NOT NULL', name || '_correlation', name);
    EXECUTE format('CREATE INDEX %I ON event.%I (event_type text_pattern_ops, occurred_at)', name || '_type', name);
    EXECUTE format('CREATE INDEX %I ON event.%I (source, occurred_at)', name || '_source', name);
    RETURN true;
END
$$;

CREATE FUNCTION event.maintain_partitions() RETURNS TABLE (partition_name text, action text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m       timestamp;
    horizon timestamp := event._horizon();
BEGIN
    FOR m IN SELECT generate_series(event._month(now()),
                                    event._month(now()) + make_interval(months => event._partitions_ahead()),
                                    interval '1 month') LOOP
        IF event._ensure_partition(m) THEN
            partition_name := 'event.events_' || to_char(m, 'YYYYMM'); action := 'created';
            RETURN NEXT;
        END IF;
    END LOOP;
    FOR partition_name IN
        SELECT c.oid::regclass::text
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'event.events'::regclass AND c.relname ~ '^events_[0-9]{6}$'
           AND to_date(substr(c.relname, 8), 'YYYYMM')::timestamp < horizon
         ORDER BY c.relname LOOP
        EXECUTE format('DROP TABLE %s', partition_name);
        action := 'dropped';
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION event.maintain_partitions() IS
    'Creates the monthly partitions of event.events (UTC months) for the current month and isa.event_partitions_ahead months ahead, and drops those whose month ended more than isa.event_retention_months months ago; returns what it created and dropped. pg_cron runs it daily (isa-event-partitions).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-event-partitions', '7 0 * * *', 'SELECT event.maintain_partitions()',
        'Daily: create the event store''s monthly partitions ahead and drop those past isa.event_retention_months.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handler
-- The user and the organization an event concerns, from its data: user_id,
-- else owner_id; organization_id, else org_id; each only when it is a uuid.
-- No SET clause: a SQL function with one is never inlined, and this one runs
-- twice per stored event (its body is bound at CREATE, so no search path
-- reaches it).
CREATE FUNCTION event._data_uuid(data jsonb, first_key text, second_key text) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN isa.is_uuid(data ->> first_key) THEN (data ->> first_key)::uuid
                WHEN isa.is_uuid(data ->> second_key) THEN (data ->> second_key)::uuid END;

-- Every event of the stream (subscription '>'), one fetched batch per call:
-- the partitions its months need, one INSERT … ON CONFLICT DO NOTHING (a
-- replayed or redelivered event is stored once), and one event.batch.stored
-- when it stored or skipped an event of another source.  Events of a month
-- past the retention, or too far ahead (event._limit), are skipped with a
-- warning.  A device message's subject is its MQTT topic, not source.type.
CREATE FUNCTION event.on_events(events isa.event[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    horizon timestamp := event._horizon();
    lim     timestamp := event._limit();
    m       timestamp;
    s       record;
    k       record;
BEGIN
    FOR m IN SELECT DISTINCT event._month(e."timestamp") FROM unnest(events) e
              WHERE event._month(e."timestamp") >= horizon AND event._month(e."timestamp") < lim LOOP
        PERFORM event._ensure_partition(m);
    END LOOP;

    WITH b AS (
        SELECT e.* FROM unnest(events) WITH ORDINALITY AS e (id, event_type, source, version, ts, data, metadata, o)
         WHERE e.id IS NOT NULL AND e.ts IS NOT NULL),
    ins AS (
        INSERT INTO event.events (id, occurred_at, event_type, source, subject, version, user_id, organization_id,
                                  correlation_id, causation_id, data, metadata)
        SELECT b.id, b.ts, b.event_type, b.source,
               CASE WHEN b.source = 'device' AND b.event_type IN ('device.ack', 'device.heartbeat')
                         AND b.data ->> 'device_id' IS NOT NULL
                    THEN 'isa.devices.' || (b.data ->> 'device_id') || '.'
                         || CASE b.event_type WHEN 'device.ack' THEN 'acks' ELSE 'heartbeat' END
                    ELSE b.source || '.' || b.event_type END,
               b.version,
               event._data_uuid(b.data, 'user_id', 'owner_id'),
               event._data_uuid(b.data, 'organization_id', 'org_id'),
               CASE WHEN isa.is_uuid(b.metadata ->> 'correlation_id') THEN (b.metadata ->> 'correlation_id')::uuid END,
               CASE WHEN isa.is_uuid(b.metadata ->> 'causation_id') THEN (b.metadata ->> 'causation_id')::uuid END,
               coalesce(b.data, '{}'), coalesce(b.metadata, '{}')
          FROM b
         WHERE event._month(b.ts) >= horizon AND event._month(b.ts) < lim
        ON CONFLICT DO NOTHING
        RETURNING id, occurred_at, source)
    SELECT count(*) AS stored,
           count(*) FILTER (WHERE ins.source <> 'event_service') AS foreign_stored,
           (array_agg(ins.id ORDER BY b.o))[1] AS first_id,
           (array_agg(ins.id ORDER BY b.o DESC))[1] AS last_id,
           min(ins.occurred_at) AS first_at, max(ins.occurred_at) AS last_at
      INTO s
      FROM ins JOIN b ON b.id = ins.id AND b.ts = ins.occurred_at;

    SELECT count(*) AS skipped, count(*) FILTER (WHERE e.source <> 'event_service') AS foreign_skipped
      INTO k
      FROM unnest(events) e
     WHERE e.id IS NULL OR e."timestamp" IS NULL
        OR event._month(e."timestamp") < horizon OR event._month(e."timestamp") >= lim;
    IF k.skipped > 0 THEN
        RAISE WARNING 'event store: % event(s) of a batch not stored: their month is before % or from % on (isa.event_retention_months, isa.event_partitions_ahead)',
            k.skipped, to_char(horizon, 'YYYY-MM'), to_char(lim, 'YYYY-MM');
    END IF;

    IF s.foreign_stored > 0 OR k.foreign_skipped > 0 THEN
        PERFORM isa.publish_event('event.batch.stored', 'event_service',
            jsonb_strip_nulls(jsonb_build_object(
                'count', s.stored, 'skipped', k.skipped, 'first_id', s.first_id, 'last_id', s.last_id,
                'first_occurred_at', isa.iso_time(s.first_at), 'last_occurred_at', isa.iso_time(s.last_at))));
    END IF;
END
$$;
COMMENT ON FUNCTION event.on_events(isa.event[]) IS
    'Batch handler of every subject (>): stores the batch in event.events in one INSERT (an event already stored is skipped), creating the partitions of its months; publishes one event.batch.stored per batch that held an event of another source, none for a batch of event_service''s own events.';

-- ---------------------------------------------------------------- queries (internal)
-- The one query behind event.query and event.list_my_events: only the
-- conditions given, planned with their values (EXECUTE), so each picks its
-- index and its partitions.  visible_user/visible_orgs, when given, restrict
-- to the events of that user or of those organizations.  Newest first;
-- the next page: before_time, before_id = the last row's occurred_at, id.
CREATE FUNCTION event._find(p_event_type text, p_source text, p_user_id uuid, p_org_id uuid,
                            p_correlation_id uuid, p_from timestamptz, p_to timestamptz,
                            p_before_time timestamptz, p_before_id uuid, p_row_limit integer,
                            p_visible_user uuid, p_visible_orgs uuid[])
RETURNS SETOF event.events
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q      text := 'SELECT e.* FROM event.events e WHERE true';
    prefix text;
BEGIN
    PERFORM isa.check_page_size('row_limit', p_row_limit);
    IF p_event_type IS NOT NULL AND NOT isa.is_valid_subject_filter(p_event_type) THEN
        RAISE EXCEPTION 'invalid event type filter "%"', left(p_event_type, 100) USING ERRCODE = '22023',
            HINT = 'Dot-separated tokens; * matches one token, > the rest, e.g. user.created, payment.*, wallet.>';
    END IF;
    IF p_from IS NOT NULL AND p_to IS NOT NULL AND p_from >= p_to THEN
        RAISE EXCEPTION 'from_time must be before to_time' USING ERRCODE = '22023';
    END IF;
    IF (p_before_time IS NULL) <> (p_before_id IS NULL) THEN
        RAISE EXCEPTION 'before_time and before_id go together: the occurred_at and id of the last event of the previous page'
            USING ERRCODE = '22023';
    END IF;

    IF p_event_type IS NOT NULL THEN
        IF p_event_type ~ '[*>]' THEN
            -- the literal tokens before the first wildcard: a prefix the index can use
            prefix := substring(p_event_type from '^((?:[^.*>]+\.)*)');
            IF prefix <> '' THEN
                q := q || ' AND e.event_type LIKE ' || quote_literal(replace(replace(replace(prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%');
            END IF;
            q := q || ' AND e.event_type ~ isa.subject_filter_regex($1)';
        ELSE
            q := q || ' AND e.event_type = $1';
        END IF;
    END IF;
    IF p_source IS NOT NULL THEN q := q || ' AND e.source = $2'; END IF;
    IF p_user_id IS NOT NULL THEN q := q || ' AND e.user_id = $3'; END IF;
    IF p_org_id IS NOT NULL THEN q := q || ' AND e.organization_id = $4'; END IF;
    IF p_correlation_id IS NOT NULL THEN q := q || ' AND e.correlation_id = $5'; END IF;
    IF p_from IS NOT NULL THEN q := q || ' AND e.occurred_at >= $6'; END IF;
    IF p_to IS NOT NULL THEN q := q || ' AND e.occurred_at < $7'; END IF;
    IF p_before_time IS NOT NULL THEN
        q := q || ' AND e.occurred_at <= $8 AND (e.occurred_at, e.id) < ($8, $9)';
    END IF;
    IF p_visible_user IS NOT NULL THEN
        q := q || ' AND (e.user_id = $11 OR e.organization_id = ANY ($12))';
    END IF;
    q := q || ' ORDER BY e.occurred_at DESC, e.id DESC LIMIT $10';
    RETURN QUERY EXECUTE q USING p_event_type, p_source, p_user_id, p_org_id, p_correlation_id, p_from, p_to,
                                 p_before_time, p_before_id, p_row_limit, p_visible_user, p_visible_orgs;
END
$$;

-- Events per UTC hour, day or month of one user or one organization in
-- [from, to): only the buckets that have some, with the counts per type.
CREATE FUNCTION event._timeline(p_user_id uuid, p_org_id uuid, p_bucket text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket_start timestamptz, count bigint, by_type jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    buckets numeric;
BEGIN
    PERFORM isa.not_null('bucket, from_time, to_time', p_bucket, p_from, p_to);
    IF num_nonnulls(p_user_id, p_org_id) <> 1 THEN
        RAISE EXCEPTION 'a timeline is of one user or one organization: give one of user_id and organization_id'
            USING ERRCODE = '22023';
    END IF;
    IF p_bucket NOT IN ('hour', 'day', 'month') THEN
        RAISE EXCEPTION 'bucket must be hour, day or month, not "%"', left(p_bucket, 40) USING ERRCODE = '22023';
    END IF;
    IF p_from >= p_to THEN
        RAISE EXCEPTION 'from_time must be before to_time' USING ERRCODE = '22023';
    END IF;
    buckets := extract(epoch FROM p_to - p_from)
               / (CASE p_bucket WHEN 'hour' THEN 3600 WHEN 'day' THEN 86400 ELSE 28 * 86400 END);
    IF buckets > 10000 THEN
        RAISE EXCEPTION 'a timeline spans at most 10000 buckets: % to % is too long for bucket %',
            isa.iso_time(p_from), isa.iso_time(p_to), p_bucket USING ERRCODE = '22023',
            HINT = 'Use a larger bucket or a shorter range.';
    END IF;
    IF p_user_id IS NOT NULL THEN
        RETURN QUERY
            SELECT t.b, sum(t.n)::bigint, jsonb_object_agg(t.event_type, t.n ORDER BY t.event_type)
              FROM (SELECT date_trunc(p_bucket, e.occurred_at, 'UTC') AS b, e.event_type, count(*) AS n
                      FROM event.events e
                     WHERE e.user_id = p_user_id AND e.occurred_at >= p_from AND e.occurred_at < p_to
                     GROUP BY 1, 2) t
             GROUP BY t.b ORDER BY t.b;
    ELSE
        RETURN QUERY
            SELECT t.b, sum(t.n)::bigint, jsonb_object_agg(t.event_type, t.n ORDER BY t.event_type)
              FROM (SELECT date_trunc(p_bucket, e.occurred_at, 'UTC') AS b, e.event_type, count(*) AS n
                      FROM event.events e
                     WHERE e.organization_id = p_org_id AND e.occurred_at >= p_from AND e.occurred_at < p_to
                     GROUP BY 1, 2) t
             GROUP BY t.b ORDER BY t.b;
    END IF;
END
$$;

-- The organizations whose events a user reads: those they are a member of
-- (organization.members, active organizations).
CREATE FUNCTION event._user_orgs(p_user_id uuid) RETURNS uuid[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN ARRAY(SELECT o.org_id FROM organization.list_my_organizations(p_user_id, 1000) o);

-- 42501 unless the user is a member of the organization.
CREATE FUNCTION event._check_member(p_user_id uuid, p_org_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT organization.is_member(p_org_id, p_user_id) THEN
        RAISE EXCEPTION 'not allowed: user % is not a member of organization %', p_user_id, p_org_id
            USING ERRCODE = '42501', HINT = 'A user reads the events of their own organizations only.';
    END IF;
END
$$;

-- ---------------------------------------------------------------- API: everything (isa_compliance, isa_admin)
CREATE FUNCTION event.get_event(event_id uuid) RETURNS event.events
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r event.events;
BEGIN
    PERFORM isa.not_null('event_id', event_id);
    SELECT * INTO r FROM event.events e WHERE e.id = get_event.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % not found', event_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION event.get_event(uuid) IS
    'One stored event by id, whoever it concerns (isa_compliance, isa_admin). P0002 not stored, 22004.';

CREATE FUNCTION event.query(event_type text DEFAULT NULL, source text DEFAULT NULL, user_id uuid DEFAULT NULL,
                            organization_id uuid DEFAULT NULL, correlation_id uuid DEFAULT NULL,
                            from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL,
                            before_time timestamptz DEFAULT NULL, before_id uuid DEFAULT NULL,
                            row_limit integer DEFAULT 100)
RETURNS SETOF event.events
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM event._find(event_type, source, user_id, organization_id, correlation_id,
                                           from_time, to_time, before_time, before_id, row_limit, NULL, NULL);
END
$$;
COMMENT ON FUNCTION event.query(text, text, uuid, uuid, uuid, timestamptz, timestamptz, timestamptz, uuid, integer) IS
    'Stored events, newest first, matching every filter given: event_type a NATS-style filter (user.created, payment.*, wallet.>), source, user_id, organization_id, correlation_id, occurred_at in [from_time, to_time); at most row_limit (1 to 1000, default 100); the next page: before_time, before_id = the occurred_at and id of the last row (isa_compliance, isa_admin). 22023 bad filter or range, 22004.';

CREATE FUNCTION event.timeline(user_id uuid DEFAULT NULL, organization_id uuid DEFAULT NULL, bucket text DEFAULT 'day',
                               from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL)
RETURNS TABLE (bucket_start timestamptz, count bigint, by_type jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM event._timeline(user_id, organization_id, bucket, from_time, to_time);
END
$$;
COMMENT ON FUNCTION event.timeline(uuid, uuid, text, timestamptz, timestamptz) IS
    'A calendar of one user''s or one organization''s events: per UTC hour, day or month in [from_time, to_time) (at most 10000 buckets), the buckets that have events, each with its count and the counts per event type (isa_compliance, isa_admin). 22023, 22004.';

-- ---------------------------------------------------------------- API: a user's own (isa_app_event, HTTP)
-- A user reads the events whose user_id is theirs or whose organization_id
-- is one of their organizations.  Another's event is not found (P0002: the
-- two are not told apart); naming an organization of which they are not a
-- member is 42501.
CREATE FUNCTION event.get_my_event(user_id uuid, event_id uuid) RETURNS event.events
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r event.events;
BEGIN
    PERFORM isa.not_null('user_id, event_id', user_id, event_id);
    SELECT * INTO r FROM event.events e WHERE e.id = get_my_event.event_id;
    IF NOT FOUND OR (r.user_id IS DISTINCT FROM get_my_event.user_id
                     AND (r.organization_id IS NULL OR NOT organization.is_member(r.organization_id, get_my_event.user_id))) THEN
        RAISE EXCEPTION 'event % not found', event_id USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION event.get_my_event(uuid, uuid) IS
    'One stored event the user may read: theirs (user_id) or of one of their organizations. P0002 unknown or not theirs (not told apart), 22004.';

CREATE FUNCTION event.list_my_events(user_id uuid, org_id uuid DEFAULT NULL, event_type text DEFAULT NULL,
                                     source text DEFAULT NULL, correlation_id uuid DEFAULT NULL,
                                     from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL,
                                     before_time timestamptz DEFAULT NULL, before_id uuid DEFAULT NULL,
                                     row_limit integer DEFAULT 100)
RETURNS SETOF event.events
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    IF org_id IS NOT NULL THEN
        PERFORM event._check_member(user_id, org_id);
        RETURN QUERY SELECT * FROM event._find(event_type, source, NULL, org_id, correlation_id,
                                               from_time, to_time, before_time, before_id, row_limit, NULL, NULL);
    ELSE
        RETURN QUERY SELECT * FROM event._find(event_type, source, NULL, NULL, correlation_id,
                                               from_time, to_time, before_time, before_id, row_limit,
                                               user_id, event._user_orgs(user_id));
    END IF;
END
$$;
COMMENT ON FUNCTION event.list_my_events(uuid, uuid, text, text, uuid, timestamptz, timestamptz, timestamptz, uuid, integer) IS
    'The events the user may read, newest first: theirs and those of their organizations, or with org_id only that organization''s (42501 unless a member); filters and pages as event.query. 22023, 22004, 42501.';

CREATE FUNCTION event.my_timeline(user_id uuid, org_id uuid DEFAULT NULL, bucket text DEFAULT 'day',
                                  from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL)
RETURNS TABLE (bucket_start timestamptz, count bigint, by_type jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id', user_id);
    IF org_id IS NOT NULL THEN
        PERFORM event._check_member(user_id, org_id);
        RETURN QUERY SELECT * FROM event._timeline(NULL, org_id, bucket, from_time, to_time);
    ELSE
        RETURN QUERY SELECT * FROM event._timeline(user_id, NULL, bucket, from_time, to_time);
    END IF;
END
$$;
COMMENT ON FUNCTION event.my_timeline(uuid, uuid, text, timestamptz, timestamptz) IS
    'The calendar of the user''s own events (user_id), or with org_id of that organization''s (42501 unless a member), as event.timeline. 22023, 22004, 42501.';

-- ---------------------------------------------------------------- replay
-- Stored events delivered again, in their original order (occurred_at, id),
-- from a time range, optionally only some event types (a NATS-style filter
-- of event_type, e.g. wallet.tokens.*):
--   event.replay_to_subscription  to one subscription's handler, through its
--       inbox (isa.apply_event, bridge/replay.c): what it applied already is
--       skipped unless force — a projection is rebuilt this way;
--   event.replay_to_subject  to whoever reads replay.<request id>.<original
--       subject> (stream ISA_REPLAY), never the original subject: through
--       the event service's outbox, so in this transaction, with the
--       original envelope (its id: a consumer dedupes on it).
-- Only isa_admin and isa_compliance may start a replay.  Docs:
-- docs/services/event.md, "Replay"; docs/bridge.md, "Subject override".

-- Every replay, who asked for it and what it delivered: an outside consumer
-- knows from events how many messages its request has.
CREATE TABLE event.replays (
    request_id      uuid PRIMARY KEY,                    -- UUIDv7; replay.<request_id>.> for a subject replay
    kind            text NOT NULL CHECK (kind IN ('subscription', 'subject')),
    subscription_id bigint,                              -- kind subscription (no foreign key: subscriptions go)
    from_time       timestamptz NOT NULL,
    to_time         timestamptz NOT NULL,
    event_type      text,                                -- the filter given, if any
    source          text,                                -- kind subject: the source given, if any
    force           boolean NOT NULL DEFAULT false,
    events          bigint NOT NULL,                     -- seen (subscription) or published (subject)
    applied         bigint,                              -- kind subscription
    requested_by    name NOT NULL,                       -- session_user
    requested_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'subscription') = (subscription_id IS NOT NULL AND applied IS NOT NULL))
);
COMMENT ON TABLE event.replays IS
    'The replays: which kind, of what (range, filters, subscription), how many events, who asked (session_user) and when.';

-- 22004 / 22023 unless [from_time, to_time) is a range and event_type a filter.
CREATE FUNCTION event._check_replay_range(from_time timestamptz, to_time timestamptz, event_type text)
RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('from_time, to_time', from_time, to_time);
    IF from_time >= to_time THEN
        RAISE EXCEPTION 'from_time must be before to_time' USING ERRCODE = '22023',
            HINT = 'The range is [from_time, to_time); ''-infinity'' and ''infinity'' replay everything stored.';
    END IF;
    IF event_type IS NOT NULL AND NOT isa.is_valid_subject_filter(event_type) THEN
        RAISE EXCEPTION 'invalid event type filter "%"', left(event_type, 100) USING ERRCODE = '22023',
            HINT = 'Dot-separated tokens; * matches one token, > the rest, e.g. user.created, wallet.tokens.*, payment.>';
    END IF;
END
$$;

CREATE FUNCTION event.replay_to_subscription(
    subscription_id bigint,
    from_time       timestamptz,
    to_time         timestamptz,
    event_type      text DEFAULT NULL,
    force           boolean DEFAULT false,
    OUT seen bigint, OUT applied bigint, OUT skipped bigint)
RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s isa.subscriptions;
    e record;
BEGIN
    PERFORM isa.not_null('subscription_id', subscription_id);
    PERFORM event._check_replay_range(from_time, to_time, event_type);
    -- force runs a handler's side effects again (a charge, an email): the
    -- operators' decision, not compliance's.  session_user: a definer does
    -- not see its caller's role, the login is what a person holds.
    IF force AND NOT pg_has_role(session_user, 'isa_admin', 'USAGE') THEN
        RAISE EXCEPTION 'only isa_admin may force a replay' USING ERRCODE = '42501',
            HINT = 'force applies again what the handler applied already, its side effects too; without force the replay applies only the events the subscription has not applied.';
    END IF;
    SELECT * INTO s FROM isa.subscriptions x WHERE x.id = replay_to_subscription.subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'P0002',
            HINT = 'The subscriptions are listed in isa.subscriptions.';
    END IF;
    seen := 0;
    applied := 0;
    -- what the subscription took: its subject filter, its major versions
    -- (another major was dead-lettered, never applied)
    FOR e IN
        SELECT x.id, x.event_type, x.source, x.version, x.occurred_at, x.data, x.metadata
          FROM event.events x
         WHERE x.occurred_at >= from_time AND x.occurred_at < to_time
           AND isa.subject_matches(x.subject, s.subject_filter)
           AND (replay_to_subscription.event_type IS NULL
                OR isa.subject_matches(x.event_type, replay_to_subscription.event_type))
           AND (NOT s.options ? 'versions'
                OR s.options->'versions' @> to_jsonb(split_part(x.version, '.', 1)::int))
         ORDER BY x.occurred_at, x.id
    LOOP
        seen := seen + 1;
        IF isa.apply_event(s.id, ROW(e.id, e.event_type, e.source, e.version, e.occurred_at, e.data,
                                     e.metadata)::isa.event, force) THEN
            applied := applied + 1;
        END IF;
    END LOOP;
    skipped := seen - applied;
    INSERT INTO event.replays (request_id, kind, subscription_id, from_time, to_time, event_type, force,
                               events, applied, requested_by)
    VALUES (isa.uuid_v7(), 'subscription', s.id, from_time, to_time, replay_to_subscription.event_type,
            coalesce(force, false), seen, applied, session_user);
END
$$;
COMMENT ON FUNCTION event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean) IS
    'Applies the stored events of [from_time, to_time) that a subscription takes (its subject filter and major versions; event_type, a NATS-style filter, narrows them) to its handler in their original order (occurred_at, id), in this transaction, through its inbox: those it applied already are skipped unless force (isa_admin only). Returns how many were seen, applied and skipped; event.replays records it. A handler''s error is raised (nothing is applied). isa_admin, isa_compliance. P0002 unknown subscription, 22023 bad range or filter, 42501 force by another than isa_admin, 22004.';

CREATE FUNCTION event.replay_to_subject(
    from_time  timestamptz,
    to_time    timestamptz,
    event_type text DEFAULT NULL,
    source     text DEFAULT NULL)
RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request_id uuid := isa.uuid_v7();
    n bigint;
BEGIN
    PERFORM event._check_replay_range(from_time, to_time, event_type);
    -- Each row gets an id of its own, made after the sort (a volatile
    -- target is computed after ORDER BY): the publisher sends the outbox in
    -- id order, so the replay goes out in (occurred_at, id) order, and the
    -- id is its Nats-Msg-Id, distinct per (replay, event).
    INSERT INTO event.outbox (id, source, event_type, version, occurred_at, data, metadata,
                              subject, envelope_id, envelope_source)
    SELECT isa.uuid_v7(), 'event_service', e.event_type, e.version, e.occurred_at, e.data, e.metadata,
           'replay.' || request_id || '.' || e.subject, e.id, e.source
      FROM event.events e
     WHERE e.occurred_at >= from_time AND e.occurred_at < to_time
       AND (replay_to_subject.event_type IS NULL OR isa.subject_matches(e.event_type, replay_to_subject.event_type))
       AND (replay_to_subject.source IS NULL OR e.source = replay_to_subject.source)
     ORDER BY e.occurred_at, e.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO event.replays (request_id, kind, from_time, to_time, event_type, source, events, requested_by)
    VALUES (request_id, 'subject', from_time, to_time, replay_to_subject.event_type, replay_to_subject.source,
            n, session_user);
    RETURN request_id;
END
$$;
COMMENT ON FUNCTION event.replay_to_subject(timestamptz, timestamptz, text, text) IS
    'Publishes the stored events of [from_time, to_time) (event_type a NATS-style filter, source: only those) again, in their original order (occurred_at, id), each on replay.<request id>.<its original subject> of stream ISA_REPLAY — never on its original subject — with its original envelope (id, source, timestamp, data, metadata); written to the outbox in this transaction, published after commit. Returns the request id; event.replays records it with the number of events. isa_admin, isa_compliance. 22023 bad range or filter, 22004.';

-- A replay's rows are written by INSERT, not isa.publish_event (which
-- writes only the service's own event types): their commit wakes the
-- bridge the same way.  event.outbox is the event service's own partition
-- of isa.outbox; its role may add rows to it, nothing else.
CREATE TRIGGER outbox_replay_written
    AFTER INSERT ON event.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION isa._outbox_written();
GRANT INSERT ON event.outbox TO isa_svc_event;
GRANT SELECT ON isa.subscriptions TO isa_svc_event;
GRANT EXECUTE ON FUNCTION isa.apply_event(bigint, isa.event, boolean) TO isa_svc_event;
GRANT SELECT ON event.replays TO isa_compliance;
REVOKE ALL ON FUNCTION event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean),
                       event.replay_to_subject(timestamptz, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    event.replay_to_subscription(bigint, timestamptz, timestamptz, text, boolean),
    event.replay_to_subject(timestamptz, timestamptz, text, text)
TO isa_admin, isa_compliance;

-- ---------------------------------------------------------------- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA event FROM PUBLIC;
GRANT USAGE ON SCHEMA event TO isa_compliance;
GRANT SELECT ON event.events TO isa_compliance;
GRANT EXECUTE ON FUNCTION
    event.get_event(uuid),
    event.query(text, text, uuid, uuid, uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
    event.timeline(uuid, uuid, text, timestamptz, timestamptz)
TO isa_compliance, isa_admin;
GRANT EXECUTE ON FUNCTION
    event.get_my_event(uuid, uuid),
    event.list_my_events(uuid, uuid, text, text, uuid, timestamptz, timestamptz, timestamptz, uuid, integer),
    event.my_timeline(uuid, uuid, text, timestamptz, timestamptz)
TO isa_app_event;
GRANT EXECUTE ON FUNCTION event.maintain_partitions() TO isa_admin;
-- What event's own code calls of other services, as isa_svc_event.
GRANT EXECUTE ON FUNCTION
    organization.list_my_organizations(uuid, integer),
    organization.is_member(uuid, uuid)
TO isa_svc_event;

-- ---------------------------------------------------------------- subscriptions
-- '>' takes every subject of the stream: every source's, external.> and the
-- devices' messages.
SELECT isa.subscribe_to_events('event', '>', 'event.on_events(isa.event[])'::regprocedure, '{"batch_size": 500}');

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- A user's own events and those of their organizations: user_id is filled
-- from the token.
SELECT isa.http_route('GET', '/v1/events', 'event.list_my_events(uuid, uuid, text, text, uuid, timestamptz, timestamptz, timestamptz, uuid, integer)', 'user',
    'The caller''s events and those of their organizations, newest first (event_type filter, source, correlation_id, from_time, to_time, before_time + before_id, row_limit).',
    subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/events/timeline', 'event.my_timeline(uuid, uuid, text, timestamptz, timestamptz)', 'user',
    'The calendar of the caller''s own events: counts per hour, day or month (bucket, from_time, to_time), with counts per type.',
    subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/events/{event_id}', 'event.get_my_event(uuid, uuid)', 'user',
    'One event the caller may read (theirs or of one of their organizations); 404 otherwise.', subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/events', 'event.list_my_events(uuid, uuid, text, text, uuid, timestamptz, timestamptz, timestamptz, uuid, integer)', 'user',
    'The events of one of the caller''s organizations, newest first (filters as GET /v1/events); 403 unless a member.',
    subject_param => 'user_id');
SELECT isa.http_route('GET', '/v1/organizations/{org_id}/events/timeline', 'event.my_timeline(uuid, uuid, text, timestamptz, timestamptz)', 'user',
    'The calendar of one of the caller''s organizations'' events (bucket, from_time, to_time); 403 unless a member.',
    subject_param => 'user_id');
