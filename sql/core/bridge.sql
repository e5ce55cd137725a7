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
    WITH b AS (SELECT m.metric, m.labels, m.value FROM isa._bridge_metrics() m)
    SELECT b.metric, b.labels, b.value FROM b
     -- a consumer's gauges keep their last values in shared memory: only
     -- those of subscriptions that still exist are shown
     WHERE b.metric NOT IN ('consumer_pending_messages', 'consumer_lag_seconds')
        OR b.labels->>'consumer' IN (SELECT s.durable_name FROM isa.subscriptions s)
    UNION ALL
    -- every event type a service with an outbox registered, at 0 until the
    -- bridge publishes one: a counter that exists before its first increase
    -- lets increase() see that one (the reconciliation alert relies on it)
    SELECT 'event_published_total', jsonb_build_object('service', s.name, 'event_type', t.event_type), 0
      FROM (SELECT DISTINCT et.source, et.event_type FROM isa.event_types et) t
      JOIN isa.services s ON s.source = t.source AND s.schema_name IS NOT NULL
     WHERE NOT EXISTS (SELECT FROM b
                        WHERE b.metric = 'event_published_total'
                          AND b.labels = jsonb_build_object('service', s.name, 'event_type', t.event_type))
    UNION ALL
    SELECT 'outbox_backlog', jsonb_build_object('service', s.name), count(o.id)::float8
      FROM isa.services s LEFT JOIN isa.outbox o ON o.source = s.source AND o.published_at IS NULL
     WHERE s.schema_name IS NOT NULL
     GROUP BY s.name
    UNION ALL
    -- a tracked table's statements not yet made events (docs/table-events.md):
    -- a tracking whose rendering fails keeps them, and this gauge grows
    SELECT 'table_events_pending_statements', jsonb_build_object('event_name', k.event_name),
           isa._table_pending(k.shadow)::float8
      FROM isa.table_tracking k
    UNION ALL
    SELECT 'outbox_oldest_unpublished_age_seconds', '{}'::jsonb,
           coalesce(extract(epoch FROM clock_timestamp() - min(occurred_at)), 0)::float8
      FROM isa.outbox WHERE published_at IS NULL
    UNION ALL
    -- every service with a subscription, for each reason, at 0 when it has
    -- none: a gauge that is absent reads as "No data", not as "none"
    SELECT 'dead_letters', jsonb_build_object('service', k.service, 'reason', k.reason), count(d.id)::float8
      FROM (SELECT s.service, r.reason
              FROM (SELECT service FROM isa.subscriptions
                    UNION SELECT service FROM isa.dead_letters WHERE replayed_at IS NULL) s,
                   unnest(ARRAY['handler_error', 'invalid_envelope', 'unsupported_version', 'subject_mismatch']) r (reason)) k
      LEFT JOIN isa.dead_letters d
        ON d.service = k.service AND d.reason = k.reason AND d.replayed_at IS NULL
     GROUP BY k.service, k.reason;
END;
COMMENT ON FUNCTION isa.metrics() IS
    'isa''s metrics as (metric, labels, value) rows in Prometheus form: event_published_total, event_processed_total, event_processing_duration_seconds, consumer pending messages and lag, outbox backlog and age, pending statements of tracked tables, NATS connection, dead letters. isa.metric_families() names, types and explains each.';

-- The families of isa.metrics() as isa-httpd's /metrics shows them: the
-- seed's three under their own names, the others prefixed isa_.
CREATE FUNCTION isa.metric_families(OUT family text, OUT exposed_as text, OUT type text, OUT help text)
RETURNS SETOF record
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT f.family, f.exposed_as, f.type, f.help
      FROM (VALUES
        ('event_published_total', 'event_published_total', 'counter',
         'Events the bridge published to JetStream, by publishing service and event type (every registered type from 0).'),
        ('event_processed_total', 'event_processed_total', 'counter',
         'Messages the bridge handled, by consuming service, event type and status (ok, duplicate, retry, dead_letter).'),
        ('event_processing_duration_seconds', 'event_processing_duration_seconds', 'histogram',
         'Time a consuming service''s handler took per message, by service and event type.'),
        ('consumer_pending_messages', 'isa_consumer_pending_messages', 'gauge',
         'Messages JetStream still had for a subscription''s consumer after the last one it delivered.'),
        ('consumer_lag_seconds', 'isa_consumer_lag_seconds', 'gauge',
         'While a consumer has messages pending: how long its last delivered message waited in the stream; 0 once caught up.'),
        ('outbox_backlog', 'isa_outbox_backlog', 'gauge',
         'Events in a service''s outbox not yet published.'),
        ('table_events_pending_statements', 'isa_table_events_pending_statements', 'gauge',
         'Statements of a tracked table whose events the bridge has not rendered yet, by event name.'),
        ('outbox_oldest_unpublished_age_seconds', 'isa_outbox_oldest_unpublished_age_seconds', 'gauge',
         'Age of the oldest unpublished outbox event (0 when the outbox is empty).'),
        ('dead_letters', 'isa_dead_letters', 'gauge',
         'Dead letters not replayed, by consuming service and reason.'),
        ('metrics_dropped_total', 'isa_metrics_dropped_total', 'counter',
         'Observations the bridge did not record because its metrics table was full.'),
        ('nats_connected', 'isa_nats_connected', 'gauge',
         '1 while the bridge is connected to NATS, else 0.'),
        ('nats_reconnects_total', 'isa_nats_reconnects_total', 'counter',
         'Times the bridge reconnected to NATS.'),
        ('bridge_up', 'isa_bridge_up', 'gauge',
         '1 while the bridge worker runs, else 0.')
      ) AS f (family, exposed_as, type, help);
END;
COMMENT ON FUNCTION isa.metric_families() IS
    'Each family of isa.metrics(): the name isa-httpd''s /metrics shows it under, its Prometheus type and its help text (docs/operations.md, "Monitoring").';

CREATE FUNCTION isa.current_event() RETURNS isa.event
    AS 'MODULE_PATHNAME', 'isa_current_event' LANGUAGE C STABLE;
COMMENT ON FUNCTION isa.current_event() IS
    'The event whose handler is running (NULL elsewhere); events published meanwhile carry its correlation_id and its id as causation_id.';

CREATE FUNCTION isa.replay_dead_letter(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_replay_dead_letter' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.replay_dead_letter(bigint) IS
    'Applies a dead letter to its subscription''s handler now, in this transaction: true if applied, false if its inbox shows it was applied already. The handler''s error, if it fails again, is raised.';

-- Runs as the extension's owner: it writes any service's inbox (the handler
-- itself runs as the subscription's owner).  Only isa_admin may execute it,
-- and the event service's replay (docs/services/event.md, "Replay").
CREATE FUNCTION isa.apply_event(subscription_id bigint, event isa.event, force boolean DEFAULT false)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_apply_event' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION isa.apply_event(bigint, isa.event, boolean) IS
    'Applies one event to a subscription''s handler now, in this transaction, through its inbox as the bridge does: true if applied, false if the inbox shows it applied already (force: forget that inbox row and apply again). The handler''s error is raised. P0002 unknown subscription, 22023 an event the subscription does not take (subject or major version).';

-- Every service announces the messages its subscriptions gave up on.
SELECT isa.register_event_type('event.dead_lettered', s.source, '1.0.0',
         'A subscription of this service gave up on a message and wrote it to isa.dead_letters.',
         '{"dead_letter_id": {"type": "integer", "required": true, "description": "id in isa.dead_letters"},
           "service":        {"type": "string",  "required": true, "description": "the consuming service"},
           "consumer":       {"type": "string",  "required": true, "description": "durable consumer name"},
           "subject":        {"type": "string",  "required": true, "description": "NATS subject of the message"},
           "event_id":       {"type": "uuid",    "required": false, "description": "id of the event; absent if the message was not an envelope"},
           "reason":         {"type": "string",  "required": true, "description": "handler_error, invalid_envelope, subject_mismatch or unsupported_version"},
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
