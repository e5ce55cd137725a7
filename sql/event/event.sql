-- event.sql — the event service (schema event, source event_service): the
-- event store and its replay.  docs/services/event.md documents it.

-- STAND-IN (the store helper's file replaces it): only what replay needs to
-- be tested — event.events as docs/services/event.md fixes it, one partition
-- for 2000–2100, isa_compliance's read access, and the NATS subject matcher
-- the store's branch adds to sql/core/subscriptions.sql (isa.apply_event and
-- the replay use it).
CREATE TABLE event.events (
    id             uuid        NOT NULL,   -- the envelope's id
    occurred_at    timestamptz NOT NULL,   -- the envelope's timestamp: partition key
    event_type     text        NOT NULL,
    source         text        NOT NULL,
    subject        text        NOT NULL,   -- <source>.<event_type>, the NATS subject it came on
    version        text        NOT NULL,
    user_id        uuid,                   -- from data (user_id, …), NULL when none
    organization_id uuid,                  -- from data (org_id / organization_id), NULL when none
    correlation_id uuid,                   -- metadata.correlation_id
    causation_id   uuid,                   -- metadata.causation_id
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE event.events_standin PARTITION OF event.events
    FOR VALUES FROM ('2000-01-01 00:00Z') TO ('2100-01-01 00:00Z');
CREATE INDEX events_time ON event.events (occurred_at, id);
ALTER TABLE event.events_standin OWNER TO isa_svc_event;
GRANT USAGE ON SCHEMA event TO isa_compliance;
GRANT SELECT ON event.events TO isa_compliance;

CREATE FUNCTION isa.subject_filter_regex(filter text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN isa.is_valid_subject_filter(filter) THEN
        '^' || replace(replace(regexp_replace(filter, '([.^$|?+()\[\]{}\\])', '\\\1', 'g'),
                               '*', '[^.]+'), '>', '.+') || '$' END;
CREATE FUNCTION isa.subject_matches(subject text, filter text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN coalesce(subject ~ isa.subject_filter_regex(filter), false);
GRANT EXECUTE ON FUNCTION isa.is_valid_subject_filter(text), isa.subject_filter_regex(text),
                          isa.subject_matches(text, text) TO isa_service;

-- ------------------------------ replay
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
