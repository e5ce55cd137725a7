-- audit.sql — the audit service (schema audit, source audit_service): a
-- tamper-evident trail of every event on the stream (external.> and device
-- messages included).  A batch handler (audit.on_events) appends each event
-- once to audit.entries, partitioned by the month it was recorded; each
-- month is one hash chain, entry_hash = sha256(prev_hash || canonical
-- content), its first prev_hash the previous month's head.  Entries are
-- append-only (triggers refuse UPDATE, DELETE, TRUNCATE, the owner's too);
-- the retention job drops whole months.  audit.verify names the first
-- altered, removed or reordered entry; audit.checkpoint publishes the head
-- (audit.checkpoint.created) so that it is kept outside the database.
-- Compliance queries (audit.search) and exports (audit.export) are
-- isa_compliance's and isa_admin's.  docs/services/audit.md documents the
-- chain, the canonical form, the API and the rules for actor, resource and
-- security marks.

-- ---------------------------------------------------------------- tables
CREATE TABLE audit.entries (
    chain       date        NOT NULL,   -- the month (UTC) it was recorded: the partition and its chain
    seq         bigint      NOT NULL CHECK (seq >= 1),   -- position in the chain: 1, 2, …
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    source      text        NOT NULL,
    subject     text        NOT NULL,   -- the NATS subject: <source>.<event_type>, a device's isa.devices.<id>.<kind>
    version     text        NOT NULL,
    occurred_at timestamptz NOT NULL,   -- the envelope's timestamp
    recorded_at timestamptz NOT NULL,   -- when the trail took it (non-decreasing along the chains)
    actor       text,                   -- who did it (audit._actor)
    resource    text,                   -- what it was done to, <kind>:<id> (audit._resource)
    security    text CHECK (security IN ('login', 'permission', 'payment', 'deletion', 'dead_letter')),
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (length(prev_hash) = 32),
    entry_hash  bytea       NOT NULL CHECK (length(entry_hash) = 32)
) PARTITION BY RANGE (chain);
-- Keys and indexes are each partition's own (audit._ensure_partition): the
-- partitions are not members of the extension, and pg_dump writes their
-- indexes itself, which an index of the parent would already have made at
-- ATTACH PARTITION.
COMMENT ON TABLE audit.entries IS
    'The audit trail: every event once, in the order recorded; one hash chain per monthly partition (entry_hash = sha256(prev_hash || audit._canonical(...))). Append-only.';

-- One row per chain (month) ever started: where it began (the hash its
-- first entry links to), and once the retention job dropped it, its tail.
CREATE TABLE audit.chains (
    chain      date        PRIMARY KEY,
    prev_hash  bytea       NOT NULL CHECK (length(prev_hash) = 32),   -- the previous chain's head, or 32 zero bytes
    started_at timestamptz NOT NULL,
    dropped_at timestamptz,            -- the retention job dropped its partition
    last_seq   bigint,                 -- at the drop: its last entry
    last_hash  bytea
);
COMMENT ON TABLE audit.chains IS
    'The chains of the audit trail, one per month: the hash the first entry links to, and the tail of a chain whose partition retention dropped.';

-- The head of the trail: every append locks this one row, so the chains
-- are written one batch at a time, in commit order.
CREATE TABLE audit.head (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    chain       date,                   -- NULL before the first entry
    seq         bigint      NOT NULL DEFAULT 0,
    entry_hash  bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
                            CHECK (length(entry_hash) = 32),
    recorded_at timestamptz NOT NULL DEFAULT '-infinity'
);
COMMENT ON TABLE audit.head IS
    'The head of the audit trail (one row, made by the first append): the current chain, its last seq and hash. Appends lock it.';

CREATE TABLE audit.checkpoints (
    checkpoint_id uuid        PRIMARY KEY,   -- UUIDv7
    chain         date        NOT NULL,
    seq           bigint      NOT NULL,
    entry_hash    bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    event_id      uuid        NOT NULL       -- the audit.checkpoint.created event that carried it out
);
COMMENT ON TABLE audit.checkpoints IS
    'Checkpoints of the trail''s head (audit.checkpoint), each also published as audit.checkpoint.created to be kept outside the database.';

-- ---------------------------------------------------------------- append-only
-- 42501 for any change but an insert: the owner role and isa_admin included.
-- Only a superuser can get around it (session_replication_role = replica, or
-- ALTER TABLE … DISABLE TRIGGER), which audit.verify and the checkpoints
-- kept outside then show.
CREATE FUNCTION audit._refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP
        USING ERRCODE = '42501',
              HINT = 'The audit trail is never changed; audit.drop_expired_partitions() drops whole months past isa.audit_retention_months.';
END
$$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON audit.entries
    FOR EACH ROW EXECUTE FUNCTION audit._refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON audit.entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit._refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON audit.checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit._refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON audit.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit._refuse_change();
CREATE TRIGGER chains_no_delete BEFORE DELETE ON audit.chains
    FOR EACH ROW EXECUTE FUNCTION audit._refuse_change();
CREATE TRIGGER chains_no_truncate BEFORE TRUNCATE ON audit.chains
    FOR EACH STATEMENT EXECUTE FUNCTION audit._refuse_change();

-- ---------------------------------------------------------------- C (extension/audit/)
CREATE FUNCTION audit._retention_months() RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_audit_retention_months_setting' LANGUAGE C STABLE;
COMMENT ON FUNCTION audit._retention_months() IS
    'isa.audit_retention_months: how many months of the trail audit.drop_expired_partitions keeps.';

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('audit.checkpoint.created', 'audit_service', '1.0.0',
    'The head of the audit trail at a checkpoint (audit.checkpoint, hourly): keep these outside the database and check them with audit.verify_checkpoint.',
    '{"checkpoint_id": {"type": "uuid",      "required": true, "description": "The checkpoint (audit.checkpoints)."},
      "chain":         {"type": "string",    "required": true, "description": "The chain (month) of the head, YYYY-MM-DD (the first day)."},
      "seq":           {"type": "integer",   "required": true, "description": "The head''s position in its chain."},
      "entry_hash":    {"type": "string",    "required": true, "description": "The head''s entry_hash, 64 hexadecimal digits."},
      "created_at":    {"type": "timestamp", "required": true, "description": "When the checkpoint was taken."}}');

-- ---------------------------------------------------------------- the rules
-- The bytes an entry's hash covers: the UTF-8 text of a JSON array, as
-- jsonb prints it (one space after , and :, object keys in jsonb's fixed
-- order, numbers as stored), of
--   [event_id, event_type, source, subject, version, occurred_at,
--    recorded_at, actor, resource, security, data, metadata]
-- with the times as isa.iso_time (RFC 3339 UTC, microseconds) and absent
-- values as null.  The position (chain, seq) is not in it: the links are.
-- STABLE, as jsonb_build_array and convert_to are: declared IMMUTABLE, it
-- was never inlined, and ran a function executor of its own per entry.
CREATE FUNCTION audit._canonical(
    event_id uuid, event_type text, source text, subject text, version text,
    occurred_at timestamptz, recorded_at timestamptz, actor text, resource text, security text,
    data jsonb, metadata jsonb) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN convert_to(jsonb_build_array(event_id, event_type, source, subject, version,
                                        isa.iso_time(occurred_at), isa.iso_time(recorded_at),
                                        actor, resource, security, data, metadata)::text, 'UTF8');
COMMENT ON FUNCTION audit._canonical(uuid, text, text, text, text, timestamptz, timestamptz, text, text, text, jsonb, jsonb) IS
    'The canonical bytes of an audit entry (docs/services/audit.md, "Canonical form"): the UTF-8 text of the jsonb array of its fields.';

-- A link of the chain as an aggregate: run as a window over a batch in
-- order, it gives each entry's hash, starting from the head's.
CREATE FUNCTION audit._chain_step(state bytea, canonical bytea, start bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN sha256(coalesce(state, start) || canonical);
CREATE AGGREGATE audit.chain_hash(canonical bytea, start bytea) (
    SFUNC = audit._chain_step,
    STYPE = bytea
);
COMMENT ON AGGREGATE audit.chain_hash(bytea, bytea) IS
    'sha256(…sha256(sha256(start || c1) || c2)… || cn): the hash of the last of the canonical entries c1…cn chained from start.';

-- Who did it: data.actor_id, else the value of a field named *_by (sent_by,
-- shared_by … — the first by name), else data.user_id, else data.owner_id;
-- for a device's own message (source device), device:<device_id>.
-- In C (extension/audit/audit_actor.c): a SQL body with a subquery is never inlined.
CREATE FUNCTION audit._actor(source text, data jsonb) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_audit_actor' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION audit._actor(text, jsonb) IS
    'The actor of an event (docs/services/audit.md, "Actor and resource"): data.actor_id, a *_by field, data.user_id or data.owner_id; device:<id> for a device''s message.';

-- What it was done to: <kind>:<id> where kind is the event type's first
-- word and data has <kind>_id (wallet.tokens.added -> wallet:<wallet_id>;
-- organization also as org_id); else data.resource_type:data.resource_id;
-- else user:<data.user_id>; else NULL.
CREATE FUNCTION audit._resource(event_type text, data jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN data ->> (split_part(event_type, '.', 1) || '_id') IS NOT NULL
            THEN split_part(event_type, '.', 1) || ':' || (data ->> (split_part(event_type, '.', 1) || '_id'))
        WHEN split_part(event_type, '.', 1) = 'organization' AND data ->> 'org_id' IS NOT NULL
            THEN 'organization:' || (data ->> 'org_id')
        WHEN data ->> 'resource_type' IS NOT NULL AND data ->> 'resource_id' IS NOT NULL
            THEN (data ->> 'resource_type') || ':' || (data ->> 'resource_id')
        WHEN data ->> 'user_id' IS NOT NULL THEN 'user:' || (data ->> 'user_id')
    END;
COMMENT ON FUNCTION audit._resource(text, jsonb) IS
    'The resource of an event as <kind>:<id> (docs/services/audit.md, "Actor and resource").';

-- The security mark: dead_letter (any <source>.event.dead_lettered: how the
-- bridge's dead letters reach the trail), deletion (*.deleted), login (auth
-- logins and logouts, device authentication), permission (every event of
-- authorization_service), payment (every event of payment_service); else NULL.
CREATE FUNCTION audit._security(source text, event_type text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN event_type = 'event.dead_lettered' THEN 'dead_letter'
        WHEN event_type LIKE '%.deleted' THEN 'deletion'
        WHEN source = 'auth_service' THEN 'login'
        WHEN source = 'authorization_service' THEN 'permission'
        WHEN source = 'payment_service' THEN 'payment'
    END;
COMMENT ON FUNCTION audit._security(text, text) IS
    'The security mark of an event type: dead_letter, deletion, login, permission, payment or NULL (docs/services/audit.md, "Security marks").';

-- The subject an event came on: <source>.<event_type>, which the bridge has
-- checked; a device's message came on isa.devices.<id>.acks or .heartbeat.
CREATE FUNCTION audit._subject(source text, event_type text, data jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN source = 'device' AND event_type IN ('device.ack', 'device.heartbeat')
                THEN 'isa.devices.' || (data ->> 'device_id') || '.'
                     || CASE event_type WHEN 'device.ack' THEN 'acks' ELSE 'heartbeat' END
                ELSE source || '.' || event_type END;

-- Whether an event type matches a NATS-style filter (* one token, > the
-- rest), as a subscription filter matches a subject.
CREATE FUNCTION audit._type_matches(event_type text, filter text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN event_type ~ ('^' || replace(replace(regexp_replace(filter, '([.+?^$()\[\]{}|\\])', '\\\1', 'g'),
                                                 '*', '[^.]+'),
                                         '>', '.+') || '$');

-- ---------------------------------------------------------------- partitions
-- The chain (month, UTC) of a time; otherwise when the time is NULL or infinite.
CREATE FUNCTION audit._month(t timestamptz, otherwise date) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN isfinite(t) THEN date_trunc('month', t AT TIME ZONE 'UTC')::date ELSE otherwise END;

CREATE FUNCTION audit._partition_name(chain date) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN 'entries_' || to_char(chain, 'YYYYMM');

-- The partition of a month, created when absent, with its keys, indexes and
-- TRUNCATE trigger (statement triggers are not inherited); true if it
-- created it.  No index on recorded_at: it grows with seq, so a period is a
-- range of chains (partition pruning) read in primary key order, and each
-- index costs every append.
CREATE FUNCTION audit._ensure_partition(p_chain date) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part text := audit._partition_name(p_chain);
BEGIN
    IF to_regclass('audit.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE audit.%I PARTITION OF audit.entries (PRIMARY KEY (chain, seq), '
                   'CONSTRAINT %I UNIQUE (event_id, chain)) FOR VALUES FROM (%L) TO (%L)',
                   part, part || '_event_id', p_chain, (p_chain + interval '1 month')::date);
    EXECUTE format('CREATE INDEX %I ON audit.%I (actor, recorded_at) WHERE actor IS NOT NULL', part || '_actor', part);
    EXECUTE format('CREATE INDEX %I ON audit.%I (resource, recorded_at) WHERE resource IS NOT NULL', part || '_resource', part);
    EXECUTE format('CREATE TRIGGER no_truncate BEFORE TRUNCATE ON audit.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit._refuse_change()', part);
    RETURN true;
END
$$;

CREATE FUNCTION audit.maintain_partitions() RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m date;
BEGIN
    FOR m IN SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => g))::date
               FROM generate_series(0, 2) g LOOP
        IF audit._ensure_partition(m) THEN
            RETURN NEXT 'audit.' || audit._partition_name(m);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION audit.maintain_partitions() IS
    'Creates the audit trail''s partitions of this month and the next two (UTC) when absent; returns those it created. pg_cron runs it daily (isa-audit-partitions).';

CREATE FUNCTION audit.drop_expired_partitions() RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keep_from date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                       - make_interval(months => audit._retention_months()))::date;
    c         audit.chains;
    h         audit.head;
    part      text;
BEGIN
    SELECT * INTO h FROM audit.head FOR UPDATE;     -- no append while a chain closes
    FOR c IN SELECT * FROM audit.chains x
              WHERE x.chain < keep_from AND x.dropped_at IS NULL AND x.chain IS DISTINCT FROM h.chain
              ORDER BY x.chain FOR UPDATE LOOP
        part := audit._partition_name(c.chain);
        -- its tail, for audit.verify of the next chain and for the record
        UPDATE audit.chains x
           SET dropped_at = now(),
               (last_seq, last_hash) = (SELECT e.seq, e.entry_hash FROM audit.entries e
                                         WHERE e.chain = c.chain ORDER BY e.seq DESC LIMIT 1)
         WHERE x.chain = c.chain;
        IF to_regclass('audit.' || part) IS NOT NULL THEN
            EXECUTE format('DROP TABLE audit.%I', part);
        END IF;
        RETURN NEXT 'audit.' || part;
    END LOOP;
    -- partitions made ahead that expired without a chain (nothing recorded)
    FOR part IN SELECT c2.relname FROM pg_inherits i JOIN pg_class c2 ON c2.oid = i.inhrelid
                 WHERE i.inhparent = 'audit.entries'::regclass
                   AND c2.relname ~ '^entries_[0-9]{6}$'
                   AND to_date(substr(c2.relname, 9), 'YYYYMM') < keep_from
                   AND NOT EXISTS (SELECT FROM audit.chains x
                                    WHERE x.chain = to_date(substr(c2.relname, 9), 'YYYYMM'))
                 ORDER BY 1 LOOP
        EXECUTE format('DROP TABLE audit.%I', part);
        RETURN NEXT 'audit.' || part;
    END LOOP;
END
$$;
COMMENT ON FUNCTION audit.drop_expired_partitions() IS
    'Drops whole monthly partitions of the audit trail older than isa.audit_retention_months (never the current chain), keeping each dropped chain''s tail in audit.chains; returns the partitions dropped. pg_cron runs it daily (isa-audit-retention).';

-- ---------------------------------------------------------------- the handler
-- Every event of the stream (subscription '>'), a fetched batch per call.
-- Locks the head, then appends the batch's new events in one statement: the
-- hashes are a running audit.chain_hash over the batch in stream order.  The
-- bridge's inbox already drops redeliveries; an event the trail holds in
-- this chain or the previous one is skipped too, and one twice in the array
-- is taken once.  A new month starts a new chain linked to the old head.
CREATE FUNCTION audit.on_events(events isa.event[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h       audit.head;
    v_now   timestamptz;
    v_chain date;
    v_seq   bigint;
    v_prev  bytea;
    n       bigint;
    v_last  bytea;
BEGIN
    IF cardinality(events) IS NULL OR cardinality(events) = 0 THEN
        RETURN;
    END IF;
    -- The row is made by the first append, not at install: pg_dump keeps
    -- this table's rows, and a restore runs CREATE EXTENSION first.
    SELECT * INTO h FROM audit.head FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit.head DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT * INTO h FROM audit.head FOR UPDATE;
    END IF;
    -- after the lock: recorded_at never goes back along the chains
    v_now := greatest(clock_timestamp(), h.recorded_at);
    v_chain := date_trunc('month', v_now AT TIME ZONE 'UTC')::date;
    IF h.chain IS NULL OR v_chain > h.chain THEN
        PERFORM audit._ensure_partition(v_chain);
        v_seq := 0;
    ELSE
        v_chain := h.chain;
        v_seq := h.seq;
    END IF;
    v_prev := h.entry_hash;

    WITH batch AS (
        SELECT DISTINCT ON (u.id) u.*
          FROM unnest(events) WITH ORDINALITY AS u (id, event_type, source, version, "timestamp", data, metadata, ord)
         WHERE u.id IS NOT NULL
           -- one index probe per event, never a join: a plan made while the
           -- month's partition was new and empty would otherwise hash a
           -- scan of the whole partition for every batch until it is analyzed
           AND (SELECT 1 FROM audit.entries x
                 WHERE x.event_id = u.id AND x.chain >= (v_chain - interval '1 month')::date
                 LIMIT 1) IS NULL
         ORDER BY u.id, u.ord
    ), fields AS MATERIALIZED (
        -- materialized: each field is computed once, not once per use below
        SELECT b.ord, b.id, b.event_type, b.source, audit._subject(b.source, b.event_type, b.data) AS subject,
               b.version, b."timestamp" AS occurred_at,
               audit._actor(b.source, coalesce(b.data, '{}')) AS actor,
               audit._resource(b.event_type, coalesce(b.data, '{}')) AS resource,
               audit._security(b.source, b.event_type) AS security,
               coalesce(b.data, '{}') AS data, coalesce(b.metadata, '{}') AS metadata
          FROM batch b
    ), hashed AS (
        SELECT f.*, v_seq + row_number() OVER w AS seq,
               audit.chain_hash(audit._canonical(f.id, f.event_type, f.source, f.subject, f.version,
                                                 f.occurred_at, v_now, f.actor, f.resource, f.security,
                                                 f.data, f.metadata), v_prev) OVER w AS entry_hash
          FROM fields f
        WINDOW w AS (ORDER BY f.ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ), ins AS (
        INSERT INTO audit.entries (chain, seq, event_id, event_type, source, subject, version, occurred_at,
                                   recorded_at, actor, resource, security, data, metadata, prev_hash, entry_hash)
        SELECT v_chain, x.seq, x.id, x.event_type, x.source, x.subject, x.version, x.occurred_at,
               v_now, x.actor, x.resource, x.security, x.data, x.metadata,
               coalesce(lag(x.entry_hash) OVER (ORDER BY x.seq), v_prev), x.entry_hash
          FROM hashed x
        RETURNING seq, entry_hash
    )
    SELECT count(*), (array_agg(i.entry_hash ORDER BY i.seq DESC))[1] INTO n, v_last FROM ins i;

    IF n > 0 THEN
        -- a chain begins with its first entry (audit.verify counts an empty chain as removed)
        IF v_seq = 0 THEN
            INSERT INTO audit.chains (chain, prev_hash, started_at) VALUES (v_chain, v_prev, v_now);
        END IF;
        UPDATE audit.head SET chain = v_chain, seq = v_seq + n, entry_hash = v_last, recorded_at = v_now;
    END IF;
END
$$;
COMMENT ON FUNCTION audit.on_events(isa.event[]) IS
    'Batch handler of every subject (>): appends the batch''s new events to the audit trail in one statement, chained from the head it locks.';

-- ---------------------------------------------------------------- verify
-- Walks the chains of the months from..to (whole months, UTC; NULL: no
-- bound), every entry in seq order, and reports the first problem:
--   altered    an entry's hash is not sha256(prev_hash || its canonical bytes)
--   removed    a gap in seq, a link to an entry that is not there, entries
--              missing at the end of a chain (its tail is not what the next
--              chain or the head says), or a chain without its partition
--   reordered  an entry links to an entry of its chain other than the one
--              before it
CREATE FUNCTION audit.verify("from" timestamptz DEFAULT NULL, "to" timestamptz DEFAULT NULL)
RETURNS TABLE (ok boolean, checked bigint, first_bad_seq bigint, first_bad_event_id uuid,
               "partition" text, reason text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo date := audit._month("from", '-infinity');
    hi date := audit._month("to", 'infinity');
    h  audit.head;
BEGIN
    IF lo > hi THEN
        RAISE EXCEPTION 'audit.verify: "from" (%) is after "to" (%)', "from", "to" USING ERRCODE = '22023';
    END IF;
    SELECT * INTO h FROM audit.head;
    RETURN QUERY
    WITH c AS (
        SELECT x.chain, x.prev_hash AS genesis, x.dropped_at,
               -- what the chain's last entry must be: the next chain's link, or the head
               CASE WHEN x.chain = h.chain THEN h.entry_hash
                    ELSE lead(x.prev_hash) OVER (ORDER BY x.chain) END AS tail_hash,
               CASE WHEN x.chain = h.chain THEN h.seq END AS tail_seq
          FROM audit.chains x
    ), e AS (
        SELECT en.chain, en.seq, en.event_id, en.prev_hash, en.entry_hash,
               sha256(en.prev_hash || audit._canonical(en.event_id, en.event_type, en.source, en.subject,
                                                       en.version, en.occurred_at, en.recorded_at, en.actor,
                                                       en.resource, en.security, en.data, en.metadata)) AS computed,
               coalesce(lag(en.entry_hash) OVER w, c.genesis) AS expected_prev,
               coalesce(lag(en.seq) OVER w, 0) + 1 AS expected_seq
          FROM audit.entries en JOIN c ON c.chain = en.chain
         WHERE en.chain BETWEEN lo AND hi
        WINDOW w AS (PARTITION BY en.chain ORDER BY en.seq)
    ), problems AS (
        SELECT e.chain, e.expected_seq AS seq, e.event_id, 'removed' AS reason, 1 AS rank
          FROM e WHERE e.seq <> e.expected_seq
        UNION ALL
        SELECT e.chain, e.seq, e.event_id, 'altered', 2
          FROM e WHERE e.computed <> e.entry_hash
        UNION ALL
        SELECT e.chain, e.seq, e.event_id,
               CASE WHEN EXISTS (SELECT FROM audit.entries o
                                  WHERE o.chain = e.chain AND o.entry_hash = e.prev_hash AND o.seq <> e.seq)
                    THEN 'reordered' ELSE 'removed' END, 3
          FROM e WHERE e.prev_hash <> e.expected_prev
        UNION ALL
        -- the end of each chain: nothing missing after its last entry
        SELECT t.chain, t.seq + 1, NULL::uuid, 'removed', 4
          FROM (SELECT DISTINCT ON (e.chain) e.chain, e.seq, e.entry_hash FROM e ORDER BY e.chain, e.seq DESC) t
          JOIN c ON c.chain = t.chain
         WHERE (c.tail_hash IS NOT NULL AND t.entry_hash <> c.tail_hash)
            OR (c.tail_seq IS NOT NULL AND t.seq <> c.tail_seq)
        UNION ALL
        -- a chain whose entries are all gone, its partition not dropped by retention
        SELECT c.chain, 1, NULL::uuid, 'removed', 5
          FROM c
         WHERE c.dropped_at IS NULL AND c.chain BETWEEN lo AND hi
           AND NOT EXISTS (SELECT FROM e WHERE e.chain = c.chain)
    ), first AS (
        SELECT * FROM problems p ORDER BY p.chain, p.seq, p.rank LIMIT 1
    )
    SELECT NOT EXISTS (SELECT FROM first), (SELECT count(*) FROM e),
           f.seq, f.event_id, 'audit.' || audit._partition_name(f.chain), f.reason
      FROM (SELECT 1) one LEFT JOIN first f ON true;
END
$$;
COMMENT ON FUNCTION audit.verify(timestamptz, timestamptz) IS
    'Checks the chains of the months from..to (whole months; NULL: all): ok, the entries checked, and the first altered, removed or reordered entry (seq, event id, partition, reason).';

-- ---------------------------------------------------------------- checkpoints
CREATE FUNCTION audit.checkpoint() RETURNS audit.checkpoints
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h  audit.head;
    cp audit.checkpoints;
BEGIN
    SELECT * INTO h FROM audit.head FOR SHARE;       -- the head as committed, no append in between
    IF h.chain IS NULL THEN
        RAISE EXCEPTION 'the audit trail is empty: nothing to checkpoint' USING ERRCODE = 'P0002';
    END IF;
    cp.checkpoint_id := isa.uuid_v7();
    cp.chain := h.chain;
    cp.seq := h.seq;
    cp.entry_hash := h.entry_hash;
    cp.created_at := now();
    cp.event_id := isa.publish_event('audit.checkpoint.created', 'audit_service',
        jsonb_build_object('checkpoint_id', cp.checkpoint_id, 'chain', cp.chain::text, 'seq', cp.seq,
                           'entry_hash', encode(cp.entry_hash, 'hex'), 'created_at', isa.iso_time(cp.created_at)));
    INSERT INTO audit.checkpoints SELECT cp.*;
    RETURN cp;
END
$$;
COMMENT ON FUNCTION audit.checkpoint() IS
    'Records the head of the audit trail (chain, seq, hash) in audit.checkpoints and publishes it as audit.checkpoint.created, to be kept outside the database; P0002 when the trail is empty. pg_cron runs it hourly (isa-audit-checkpoint).';

-- A checkpoint kept outside (the data of an audit.checkpoint.created event):
-- the entry it names must still carry its hash, and its chain up to there
-- must verify.
CREATE FUNCTION audit.verify_checkpoint(checkpoint jsonb)
RETURNS TABLE (ok boolean, reason text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_chain date;
    v_seq   bigint;
    v_hash  bytea;
    stored  bytea;
    dropped audit.chains;
    v       record;
BEGIN
    BEGIN
        v_chain := (checkpoint ->> 'chain')::date;
        v_seq := (checkpoint ->> 'seq')::bigint;
        v_hash := decode(checkpoint ->> 'entry_hash', 'hex');
    EXCEPTION WHEN data_exception THEN
        v_chain := NULL;
    END;
    IF v_chain IS NULL OR v_seq IS NULL OR v_hash IS NULL OR length(v_hash) <> 32 THEN
        RAISE EXCEPTION 'a checkpoint is {"chain": "YYYY-MM-01", "seq": n, "entry_hash": "<64 hex digits>"}, not %', checkpoint
            USING ERRCODE = '22023', HINT = 'Pass the data of an audit.checkpoint.created event.';
    END IF;
    SELECT * INTO dropped FROM audit.chains x WHERE x.chain = v_chain;
    IF dropped.dropped_at IS NOT NULL THEN
        ok := dropped.last_seq = v_seq AND dropped.last_hash = v_hash;
        reason := CASE WHEN ok THEN 'dropped' ELSE 'dropped_mismatch' END;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT e.entry_hash INTO stored FROM audit.entries e WHERE e.chain = v_chain AND e.seq = v_seq;
    IF NOT FOUND THEN
        ok := false; reason := 'missing'; RETURN NEXT; RETURN;
    END IF;
    IF stored <> v_hash THEN
        ok := false; reason := 'hash_mismatch'; RETURN NEXT; RETURN;
    END IF;
    SELECT * INTO v FROM audit.verify(v_chain::timestamp AT TIME ZONE 'UTC', v_chain::timestamp AT TIME ZONE 'UTC');
    IF NOT v.ok AND (v.first_bad_seq <= v_seq) THEN
        ok := false; reason := 'chain_' || v.reason; RETURN NEXT; RETURN;
    END IF;
    ok := true; reason := 'match';
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION audit.verify_checkpoint(jsonb) IS
    'Compares the trail with a checkpoint kept outside (the data of audit.checkpoint.created): ok and match, or why not (missing, hash_mismatch, chain_altered/removed/reordered; dropped or dropped_mismatch for a chain retention dropped).';

-- ---------------------------------------------------------------- compliance queries
CREATE FUNCTION audit.search(
    actor         text DEFAULT NULL,
    resource      text DEFAULT NULL,
    type_filter   text DEFAULT NULL,
    "from"        timestamptz DEFAULT NULL,
    "to"          timestamptz DEFAULT NULL,
    security_only boolean DEFAULT false,
    row_limit     integer DEFAULT 100,
    after         uuid DEFAULT NULL)
RETURNS SETOF audit.entries
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a_chain date;
    a_seq   bigint;
BEGIN
    PERFORM isa.check_page_size('row_limit', row_limit);
    IF type_filter IS NOT NULL AND NOT isa.is_valid_subject_filter(type_filter) THEN
        RAISE EXCEPTION 'invalid type filter "%"', type_filter USING ERRCODE = '22023',
            HINT = 'Dot-separated tokens; * matches one token, > the rest, e.g. authz.> or wallet.tokens.*';
    END IF;
    IF after IS NOT NULL THEN
        SELECT e.chain, e.seq INTO a_chain, a_seq FROM audit.entries e WHERE e.event_id = after
         ORDER BY e.chain LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'event % is not in the audit trail', after USING ERRCODE = 'P0002',
                HINT = 'after is the event_id of the last entry of the previous page.';
        END IF;
    END IF;
    RETURN QUERY
    SELECT * FROM audit.entries e
     WHERE e.chain BETWEEN audit._month(search."from", '-infinity') AND audit._month(search."to", 'infinity')
       AND (search.actor IS NULL OR e.actor = search.actor)
       AND (search.resource IS NULL OR e.resource = search.resource)
       AND (type_filter IS NULL OR audit._type_matches(e.event_type, type_filter))
       AND (search."from" IS NULL OR e.recorded_at >= search."from")
       AND (search."to" IS NULL OR e.recorded_at < search."to")
       AND (NOT coalesce(security_only, false) OR e.security IS NOT NULL)
       AND (a_chain IS NULL OR (e.chain, e.seq) > (a_chain, a_seq))
     ORDER BY e.chain, e.seq
     LIMIT row_limit;
END
$$;
COMMENT ON FUNCTION audit.search(text, text, text, timestamptz, timestamptz, boolean, integer, uuid) IS
    'Compliance query of the audit trail in recorded order: by actor, resource, event type (NATS-style filter on event_type), recorded period [from, to), security-marked only; row_limit 1..1000 a page, after the event_id of the previous page''s last entry.';

-- One line per entry, in recorded order: CSV (RFC 4180, a header line first,
-- CRLF-free lines: a field with a comma, a quote or a line break is quoted,
-- quotes doubled) or JSON lines (one object per line).
CREATE FUNCTION audit._csv(v text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN v IS NULL THEN ''
                WHEN v ~ '[",\r\n]' OR v <> btrim(v) THEN '"' || replace(v, '"', '""') || '"'
                ELSE v END;

CREATE FUNCTION audit.export("from" timestamptz DEFAULT NULL, "to" timestamptz DEFAULT NULL,
                             format text DEFAULT 'csv', security_only boolean DEFAULT false)
RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF format IS NULL OR format NOT IN ('csv', 'jsonl') THEN
        RAISE EXCEPTION 'export format must be csv or jsonl, not %', coalesce(format, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF format = 'csv' THEN
        RETURN NEXT 'chain,seq,event_id,event_type,source,subject,version,occurred_at,recorded_at,actor,resource,security,data,metadata,prev_hash,entry_hash';
    END IF;
    RETURN QUERY
    SELECT CASE WHEN format = 'csv' THEN
               concat_ws(',', e.chain::text, e.seq::text, e.event_id::text, audit._csv(e.event_type),
                         audit._csv(e.source), audit._csv(e.subject), audit._csv(e.version),
                         isa.iso_time(e.occurred_at), isa.iso_time(e.recorded_at), audit._csv(e.actor),
                         audit._csv(e.resource), audit._csv(e.security), audit._csv(e.data::text),
                         audit._csv(e.metadata::text), encode(e.prev_hash, 'hex'), encode(e.entry_hash, 'hex'))
           ELSE
               jsonb_build_object('chain', e.chain, 'seq', e.seq, 'event_id', e.event_id, 'event_type', e.event_type,
                                  'source', e.source, 'subject', e.subject, 'version', e.version,
                                  'occurred_at', isa.iso_time(e.occurred_at), 'recorded_at', isa.iso_time(e.recorded_at),
                                  'actor', e.actor, 'resource', e.resource, 'security', e.security,
                                  'data', e.data, 'metadata', e.metadata,
                                  'prev_hash', encode(e.prev_hash, 'hex'), 'entry_hash', encode(e.entry_hash, 'hex'))::text
           END
      FROM audit.entries e
     WHERE e.chain BETWEEN audit._month(export."from", '-infinity') AND audit._month(export."to", 'infinity')
       AND (export."from" IS NULL OR e.recorded_at >= export."from")
       AND (export."to" IS NULL OR e.recorded_at < export."to")
       AND (NOT coalesce(security_only, false) OR e.security IS NOT NULL)
     ORDER BY e.chain, e.seq;
END
$$;
COMMENT ON FUNCTION audit.export(timestamptz, timestamptz, text, boolean) IS
    'The audit trail recorded in [from, to) as lines of text, in recorded order: csv (a header, then RFC 4180 rows; hashes in hex) or jsonl (one JSON object per entry).';

-- ---------------------------------------------------------------- jobs
INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-audit-partitions', '7 0 * * *', 'SELECT audit.maintain_partitions()',
        'Daily: create the audit trail''s partitions of this month and the next two.'),
       ('isa-audit-retention', '27 0 * * *', 'SELECT audit.drop_expired_partitions()',
        'Daily: drop the audit trail''s months older than isa.audit_retention_months.'),
       ('isa-audit-checkpoint', '41 * * * *', 'SELECT audit.checkpoint() WHERE EXISTS (SELECT FROM audit.head WHERE chain IS NOT NULL)',
        'Hourly: record the head of the audit trail and publish it (audit.checkpoint.created).')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- privileges
-- Nobody writes the trail but its handler (as isa_svc_audit, the owner);
-- isa_compliance and isa_admin read, verify and export it
-- (sql/core/grants.sql takes back what it gives isa_admin on the tables).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA audit FROM PUBLIC;
REVOKE ALL ON audit.entries, audit.chains, audit.head, audit.checkpoints FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO isa_compliance, isa_admin;
GRANT SELECT ON audit.entries, audit.chains, audit.head, audit.checkpoints TO isa_compliance;
GRANT EXECUTE ON FUNCTION
    audit.verify(timestamptz, timestamptz),
    audit.verify_checkpoint(jsonb),
    audit.search(text, text, text, timestamptz, timestamptz, boolean, integer, uuid),
    audit.export(timestamptz, timestamptz, text, boolean)
TO isa_compliance, isa_admin;
GRANT EXECUTE ON FUNCTION
    audit.checkpoint(), audit.maintain_partitions(), audit.drop_expired_partitions()
TO isa_admin;
-- What audit's own code calls of isa, as isa_svc_audit.
GRANT EXECUTE ON FUNCTION isa.is_valid_subject_filter(text) TO isa_svc_audit;

-- ---------------------------------------------------------------- subscriptions
-- '>' is every subject of the stream: each source's, external.> and the
-- devices' messages.
SELECT isa.subscribe_to_events('audit', '>', 'audit.on_events(isa.event[])'::regprocedure,
                               '{"batch_size": 500}');
