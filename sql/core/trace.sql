-- trace.sql — isa.trace(correlation_id): the causation tree of a chain, from
-- what the database already keeps (docs/tracing.md): the outboxes (events isa
-- published, with their publication time), the inboxes (which subscription
-- applied which event, and when), and the event store event.events when that
-- service is installed (events from outside isa, e.g. usage.recorded.*).

-- A metadata id as a uuid, or NULL when it is not one (ids from outside).
CREATE FUNCTION isa._trace_uuid(s text) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT CASE WHEN s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN s::uuid END;
END;
COMMENT ON FUNCTION isa._trace_uuid(text) IS
    'isa.trace''s reading of a metadata id: the uuid it spells, else NULL.';

CREATE FUNCTION isa.trace(correlation_id uuid)
RETURNS TABLE (
    id           uuid,           -- the event
    parent       uuid,           -- its metadata.causation_id (NULL: a root)
    depth        integer,        -- 0 for a root (no parent, or one not found), parent's + 1
    service      text,           -- its source (NULL: an outside event known only from an inbox)
    event_type   text,
    trace_id     text,           -- the 32 hex digits of its traceparent's trace id
    occurred_at  timestamptz,    -- the envelope's timestamp
    published_at timestamptz,    -- JetStream's ack as the bridge recorded it (NULL: not from an outbox)
    consumers    jsonb           -- per subscription that applied it: service, consumer, consumed_at,
                                 -- latency_ms (consumed_at - occurred_at),
                                 -- after_publish_ms (consumed_at - published_at)
)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    -- the planner's estimate for a recursive query over every outbox and
    -- inbox partition is high enough to JIT-compile it: seconds, for rows
    -- read in milliseconds
    SET jit = off
AS $trace$
DECLARE
    -- the event store (another service, maybe not installed) is read when it exists
    store text := CASE WHEN to_regclass('event.events') IS NOT NULL THEN $q$
        UNION ALL
        SELECT e.id, isa._trace_uuid(e.causation_id::text), e.source, e.event_type, NULL::text,
               e.occurred_at, NULL::timestamptz, 2
          FROM event.events e
         WHERE e.correlation_id::text = $1::text$q$ ELSE '' END;
BEGIN
    IF correlation_id IS NULL THEN
        RAISE EXCEPTION 'correlation_id must not be null' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY EXECUTE $q$
    WITH RECURSIVE found (id, parent, service, event_type, traceparent, occurred_at, published_at, rank) AS (
        -- the events isa published with this correlation id
        SELECT o.id, isa._trace_uuid(o.metadata ->> 'causation_id'), o.source, o.event_type,
               o.metadata ->> 'traceparent', o.occurred_at, o.published_at, 1
          FROM isa.outbox o
         WHERE o.metadata ->> 'correlation_id' = $1::text $q$ || store || $q$
    ), known AS (
        SELECT DISTINCT ON (f.id) f.id, f.parent, f.service, f.event_type, f.traceparent, f.occurred_at, f.published_at
          FROM found f ORDER BY f.id, f.rank
    ), outside AS (
        -- the roots from outside: the correlation id itself and any parent
        -- not found above, when an inbox applied it (an inbox knows its type;
        -- a UUIDv7 id carries its time)
        SELECT DISTINCT ON (i.event_id) i.event_id AS id, NULL::uuid AS parent, NULL::text AS service,
               i.event_type, NULL::text AS traceparent,
               CASE WHEN substr(i.event_id::text, 15, 1) = '7' THEN isa.uuid_v7_time(i.event_id) END AS occurred_at,
               NULL::timestamptz AS published_at
          FROM isa.inbox i
         WHERE i.event_id IN (SELECT $1 UNION SELECT k.parent FROM known k)
           AND i.event_id NOT IN (SELECT k.id FROM known k)
    ), events AS (
        SELECT * FROM known UNION ALL SELECT * FROM outside
    ), consumed AS (
        -- one scan of the inboxes for all the events (their key starts with
        -- the service and consumer, so none is looked up by id alone)
        SELECT i.event_id, jsonb_agg(jsonb_build_object(
                   'service', i.service,
                   'consumer', i.consumer,
                   'consumed_at', i.at,
                   'latency_ms', round((extract(epoch FROM i.at - e.occurred_at) * 1000)::numeric, 3),
                   'after_publish_ms', round((extract(epoch FROM i.at - e.published_at) * 1000)::numeric, 3))
                 ORDER BY i.at, i.service, i.consumer) AS consumers
          FROM (SELECT i.event_id, i.service, i.consumer, coalesce(i.applied_at, i.processed_at) AS at
                  FROM isa.inbox i) i
          JOIN events e ON e.id = i.event_id
         GROUP BY i.event_id
    ), tree AS (
        SELECT e.id, 0 AS depth, ARRAY[e.id] AS path
          FROM events e
         WHERE e.parent IS NULL OR NOT EXISTS (SELECT FROM events p WHERE p.id = e.parent)
        UNION ALL
        SELECT e.id, tree.depth + 1, tree.path || e.id
          FROM tree JOIN events e ON e.parent = tree.id
         WHERE e.id <> ALL (tree.path) AND tree.depth < 100
    )
    SELECT e.id, e.parent, tree.depth, e.service, e.event_type,
           coalesce(substr(e.traceparent, 4, 32),
                    -- none: the trace id its children inherited (extension/publish.c)
                    (SELECT substr(x.traceparent, 4, 32) FROM events x
                      WHERE x.parent = e.id AND x.traceparent IS NOT NULL LIMIT 1),
                    replace(e.id::text, '-', '')),
           e.occurred_at, e.published_at, coalesce(c.consumers, '[]'::jsonb)
      FROM tree JOIN events e ON e.id = tree.id
      LEFT JOIN consumed c ON c.event_id = e.id
     ORDER BY tree.path$q$ USING correlation_id;
END
$trace$;
COMMENT ON FUNCTION isa.trace(uuid) IS
    'The causation tree of the events with this correlation id (docs/tracing.md): one row per event (depth-first), its parent, service, type, trace id, occurred and published times, and per subscription that applied it the consumed time and the hop latency. For isa_admin and isa_compliance.';
