-- test/integration/notification-fixture.sql — a stand-in for the notification
-- service's delivery queue, for a build of isa without that service's SQL
-- (sql/notification/notification.sql): notification.deliveries and the
-- functions the senders call, with exactly the signatures and the rules of
-- their contract (docs/services/notification.md, "Delivery"), and none of
-- the rest (no events, no fallback channel).  Not part of the extension:
-- 65-notification-delivery.sh loads it, as a superuser, only when
-- notification.claim_deliveries does not exist, and drops it at the end
-- (DROP TABLE notification.fixture_policy, deliveries and the functions: the
-- schema and the role are the extension's).  Retry policy: the row of
-- notification.fixture_policy (the service's settings
-- isa.notification_max_attempts and isa.notification_retry_base play that
-- part in the real SQL), here in milliseconds, so the test stays short.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE TABLE notification.fixture_policy (
    max_attempts  integer NOT NULL,
    retry_base_ms integer NOT NULL
);
INSERT INTO notification.fixture_policy VALUES (5, 1000);

CREATE TABLE notification.deliveries (
    delivery_id     uuid PRIMARY KEY,
    notification_id uuid NOT NULL,
    user_id         uuid,
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook', 'mqtt', 'inapp')),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'deferred', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    idempotency_key text NOT NULL UNIQUE,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE FUNCTION notification._wake(channel text) RETURNS void
    AS 'isa', 'isa_notification_wake' LANGUAGE C;

CREATE FUNCTION notification.claim_deliveries(p_channel text, p_max integer DEFAULT 10, p_lease_seconds integer DEFAULT 60)
RETURNS TABLE (delivery_id uuid, attempt integer, payload jsonb)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_channel IS NULL OR p_channel NOT IN ('email', 'webhook') OR p_max NOT BETWEEN 1 AND 1000
       OR p_lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'bad claim: %, %, %', p_channel, p_max, p_lease_seconds USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT d.delivery_id
          FROM notification.deliveries d
         WHERE d.channel = p_channel
           AND (d.state IN ('pending', 'deferred') OR (d.state = 'sending' AND d.locked_until < now()))
           AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at, d.created_at
         LIMIT p_max
           FOR UPDATE SKIP LOCKED)
    UPDATE notification.deliveries d
       SET state = 'sending', attempts = d.attempts + 1,
           locked_until = now() + p_lease_seconds * interval '1 second'
      FROM due
     WHERE d.delivery_id = due.delivery_id
    RETURNING d.delivery_id, d.attempts, d.payload;
END
$$;

CREATE FUNCTION notification.record_delivery(p_delivery_id uuid, p_ok boolean, p_transient boolean DEFAULT true, p_error text DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d   notification.deliveries;
    pol notification.fixture_policy;
BEGIN
    SELECT * INTO d FROM notification.deliveries WHERE delivery_id = p_delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', p_delivery_id USING ERRCODE = 'P0002';
    END IF;
    IF d.state <> 'sending' THEN
        RETURN d.state;                -- a late answer after the lease expired
    END IF;
    IF p_ok THEN
        UPDATE notification.deliveries SET state = 'sent', sent_at = now(), locked_until = NULL
         WHERE delivery_id = p_delivery_id;
        RETURN 'sent';
    END IF;
    SELECT * INTO pol FROM notification.fixture_policy;
    IF p_transient AND d.attempts < pol.max_attempts THEN
        UPDATE notification.deliveries
           SET state = 'pending', locked_until = NULL, last_error = p_error,
               next_attempt_at = now() + random() * pol.retry_base_ms * 2 ^ (d.attempts - 1) * interval '1 millisecond'
         WHERE delivery_id = p_delivery_id;
        PERFORM notification._wake(d.channel);
        RETURN 'pending';
    END IF;
    UPDATE notification.deliveries SET state = 'failed', locked_until = NULL, last_error = p_error
     WHERE delivery_id = p_delivery_id;
    RETURN 'failed';
END
$$;

CREATE FUNCTION notification.next_due(p_channel text) RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(CASE WHEN d.state = 'sending' THEN d.locked_until ELSE d.next_attempt_at END)
      FROM notification.deliveries d
     WHERE d.channel = p_channel AND d.state IN ('pending', 'deferred', 'sending')
$$;

ALTER TABLE notification.fixture_policy OWNER TO isa_svc_notification;
ALTER TABLE notification.deliveries OWNER TO isa_svc_notification;
ALTER FUNCTION notification.claim_deliveries(text, integer, integer) OWNER TO isa_svc_notification;
ALTER FUNCTION notification.record_delivery(uuid, boolean, boolean, text) OWNER TO isa_svc_notification;
ALTER FUNCTION notification.next_due(text) OWNER TO isa_svc_notification;
ALTER FUNCTION notification._wake(text) OWNER TO isa_svc_notification;
REVOKE ALL ON FUNCTION notification.claim_deliveries(text, integer, integer),
    notification.record_delivery(uuid, boolean, boolean, text), notification.next_due(text),
    notification._wake(text) FROM PUBLIC;
