-- table_events.sql — events from any table (docs/table-events.md): a DBA's
-- own table, tracked with isa.track_table, speaks on NATS as
-- table.<name>.inserted / .updated / .deleted / .truncated, through the
-- outbox, in the writer's transaction.
--
-- The trust boundary: every tracked table publishes under the one source
-- `table` (service table_events, sql/core/services.sql), whose subjects are
-- table.>: an application's table never speaks as an internal service
-- (wallet_service.…), and nothing but these triggers writes that source's
-- outbox partition (no role has isa_svc_table_events, so isa.publish_event
-- refuses the source to everyone but superusers).
--
-- The triggers are statement-level AFTER triggers with transition tables:
-- one set-based INSERT into table_events.outbox per statement, whatever the
-- number of rows.  Their function is the extension's and writes as its
-- owner, so a table's writers need no right on the outbox.  A trigger names
-- its tracking by an argument (the event name), which survives pg_dump where
-- an oid would not; the function checks that the table firing is the
-- tracked one.

CREATE TABLE isa.table_tracking (
    event_name      text PRIMARY KEY CHECK (isa.is_valid_event_type(event_name || '.inserted')),
    schema_name     name NOT NULL,
    table_name      name NOT NULL,
    operations      text[] NOT NULL CHECK (operations <@ ARRAY['insert', 'update', 'delete', 'truncate']
                                           AND cardinality(operations) > 0),
    key_columns     text[] NOT NULL CHECK (cardinality(key_columns) > 0),
    when_columns    text[],            -- NULL: an update of any column publishes
    exclude_columns text[] NOT NULL DEFAULT '{}',
    columns         text[] NOT NULL,   -- the table's columns, kept by the DDL event trigger
    shadow          int,               -- N of its rows' type table_events.rows_N and table_events.batches_N
    tracked_at      timestamptz NOT NULL DEFAULT now(),
    tracked_by      name NOT NULL,
    UNIQUE (schema_name, table_name)
);
COMMENT ON TABLE isa.table_tracking IS
    'The tables whose changes are events (isa.track_table): event name, operations, key, filter and excluded columns. Read it through isa.tracked_tables.';
SELECT pg_catalog.pg_extension_config_dump('isa.table_tracking', '');
CREATE SEQUENCE isa.table_shadow_seq AS int;
SELECT pg_catalog.pg_extension_config_dump('isa.table_shadow_seq', '');
-- A tracked table's event types are the installation's data, not the
-- extension's: pg_dump keeps them (CREATE EXTENSION makes the others,
-- event.dead_lettered of source table included).
SELECT pg_catalog.pg_extension_config_dump('isa.event_types',
    'WHERE source = ''table'' AND event_type <> ''event.dead_lettered''');

-- Wakes the bridge at commit, as isa.publish_event does for the other
-- sources: the trigger of a tracked table does (in C), and so does a render
-- outside the bridge (untrack, ALTER TABLE), whose events the bridge would
-- otherwise find only at its next idle round.
CREATE FUNCTION isa._wake_bridge_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'isa_wake_bridge_at_commit' LANGUAGE C VOLATILE;

-- The trigger function of every tracked table, its argument the event name:
-- one INSERT … SELECT into table_events.outbox per statement over the
-- transition tables (C, extension/table_events.c, where the statements are:
-- it writes as the extension's owner with pg_catalog as its only search path,
-- as isa.publish_event does, which SECURITY DEFINER … SET search_path would
-- make cost twice as much per statement).  It refuses (55000) to fire on a
-- table other than the one its tracking names.
CREATE FUNCTION isa._table_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'isa_table_changed_trigger' LANGUAGE C;

-- The metadata isa.publish_event gives an event of this id published here and
-- now (correlation_id, causation_id in a handler, traceparent): a tracked
-- table's events carry the same (extension/publish.c).
CREATE FUNCTION isa._event_metadata(id uuid) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'isa_event_metadata' LANGUAGE C VOLATILE STRICT;

-- The keys of a row's new JSON whose value is not its old one (C: the one
-- per-row step SQL does slowly, extension/table_events.c).
CREATE FUNCTION isa._jsonb_changed_keys(old jsonb, new jsonb) RETURNS text[]
    AS 'MODULE_PATHNAME', 'isa_jsonb_changed_keys' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The caller of a SECURITY DEFINER function is not current_user: the role of
-- the session (SET ROLE, else the login) is, and it must own the table.
CREATE FUNCTION isa._session_role() RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN current_setting('role') = 'none' THEN session_user
                ELSE current_setting('role')::name END;

-- A catalogue type for a column's SQL type (isa.register_event_type's list).
CREATE FUNCTION isa._catalogue_type(t regtype) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE
        WHEN t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN 'integer'
        WHEN t = 'numeric'::regtype THEN 'decimal'
        WHEN t IN ('real'::regtype, 'double precision'::regtype) THEN 'number'
        WHEN t = 'boolean'::regtype THEN 'boolean'
        WHEN t = 'uuid'::regtype THEN 'uuid'
        WHEN t IN ('timestamptz'::regtype, 'timestamp'::regtype) THEN 'timestamp'
        WHEN t IN ('json'::regtype, 'jsonb'::regtype) THEN 'object'
        WHEN (SELECT typcategory FROM pg_type WHERE oid = t) = 'A' THEN 'array'
        ELSE 'string' END;

-- (Re)registers a tracking's event types with the table's current columns,
-- keeps isa.table_tracking.columns and the shadow (isa._table_shadow_make);
-- 42703 if a column the options name is gone.
CREATE FUNCTION isa._register_table_events(event_name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t       isa.table_tracking;
    rel     regclass;
    cols    text[];
    missing text;
    fields  jsonb;
    row_fields jsonb;
    op      text;
BEGIN
    SELECT * INTO STRICT t FROM isa.table_tracking k WHERE k.event_name = _register_table_events.event_name;
    rel := format('%I.%I', t.schema_name, t.table_name)::regclass;
    cols := ARRAY(SELECT a.attname::text FROM pg_attribute a
                   WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum);
    SELECT c INTO missing
      FROM unnest(t.key_columns || coalesce(t.when_columns, '{}') || t.exclude_columns) c
     WHERE c <> ALL (cols) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', missing, rel USING ERRCODE = '42703',
            HINT = 'The tracking of the table names it (key, when or excluded columns): untrack the table, or track it again with other options.';
    END IF;
    UPDATE isa.table_tracking k SET columns = cols WHERE k.event_name = t.event_name;

    row_fields := (SELECT coalesce(jsonb_object_agg(a.attname, jsonb_build_object(
                              'type', isa._catalogue_type(a.atttypid::regtype),
                              'required', a.attnotnull,
                              'description', coalesce(col_description(rel, a.attnum),
                                                      format('column %s (%s)', a.attname,
                                                             format_type(a.atttypid, a.atttypmod))))), '{}')
                     FROM pg_attribute a
                    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
                      AND a.attname::text <> ALL (t.exclude_columns));
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        IF op = ANY (t.operations) THEN
            fields := jsonb_build_object('table', jsonb_build_object('type', 'string', 'required', true,
                                             'description', 'The table, schema-qualified.'));
            IF op <> 'truncate' THEN
                fields := fields || jsonb_build_object('key', jsonb_build_object('type', 'object', 'required', true,
                                        'description', 'The key columns of the row: ' || array_to_string(t.key_columns, ', ') || '.'));
            END IF;
            IF op IN ('insert', 'update') THEN
                fields := fields || jsonb_build_object('new', jsonb_build_object('type', 'object', 'required', true,
                                        'description', 'The row after the change, without the excluded columns.'))
                                 || (SELECT coalesce(jsonb_object_agg('new.' || f.key, f.value), '{}') FROM jsonb_each(row_fields) f);
            END IF;
            IF op IN ('update', 'delete') THEN
                fields := fields || jsonb_build_object('old', jsonb_build_object('type', 'object', 'required', true,
                                        'description', 'The row before the change, without the excluded columns.'))
                                 || (SELECT coalesce(jsonb_object_agg('old.' || f.key, f.value), '{}') FROM jsonb_each(row_fields) f);
            END IF;
            IF op = 'update' THEN
                fields := fields || jsonb_build_object('changed', jsonb_build_object('type', 'array', 'required', true,
                                        'description', 'The names of the columns whose value changed (excluded columns left out).'));
            END IF;
            PERFORM isa.register_event_type(
                t.event_name || CASE op WHEN 'insert' THEN '.inserted' WHEN 'update' THEN '.updated'
                                        WHEN 'delete' THEN '.deleted' ELSE '.truncated' END,
                'table', '1.0.0',
                format('A row of table %s was %s (isa.track_table).', rel,
                       CASE op WHEN 'insert' THEN 'inserted' WHEN 'update' THEN 'updated'
                               WHEN 'delete' THEN 'deleted' ELSE 'truncated: every row removed' END),
                fields);
        ELSE
            DELETE FROM isa.event_types e
             WHERE e.source = 'table'
               AND e.event_type = t.event_name || CASE op WHEN 'insert' THEN '.inserted' WHEN 'update' THEN '.updated'
                                                         WHEN 'delete' THEN '.deleted' ELSE '.truncated' END;
        END IF;
    END LOOP;
    PERFORM isa._table_shadow_make(t, rel);
END
$$;

-- Ends a tracking whose table no longer fires (untrack, DROP TABLE): its
-- committed statements become events, then the tracking, its shadow and its
-- event types go.
CREATE FUNCTION isa._end_tracking(event_name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shadow int;
BEGIN
    PERFORM isa._render_table_events(event_name);
    DELETE FROM isa.table_tracking k WHERE k.event_name = _end_tracking.event_name RETURNING k.shadow INTO shadow;
    IF shadow IS NOT NULL THEN
        PERFORM isa._table_shadow_drop(shadow);
    END IF;
    PERFORM isa._forget_table_events(event_name);
END
$$;

-- Removes a tracking's event types from the catalogue.
CREATE FUNCTION isa._forget_table_events(event_name text) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    DELETE FROM isa.event_types e
     WHERE e.source = 'table'
       AND e.event_type IN (event_name || '.inserted', event_name || '.updated',
                            event_name || '.deleted', event_name || '.truncated');
END;

-- Drops the triggers isa.track_table made on a table (all four names).
CREATE FUNCTION isa._drop_table_triggers(rel regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg text;
BEGIN
    FOR trg IN SELECT t.tgname FROM pg_trigger t
                WHERE t.tgrelid = rel
                  AND t.tgname IN ('isa_track_insert', 'isa_track_update', 'isa_track_delete', 'isa_track_truncate') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg, rel);
    END LOOP;
END
$$;

-- Deferred rendering.  A tracked table's trigger keeps a statement's rows as
-- they are: one row of table_events.batches_N per statement, its transition
-- tables as arrays of table_events.rows_N, a composite type with the table's
-- columns (the table's "shadow").  Turning rows into JSON events costs
-- several times the UPDATE that changed them (bench/table_events/designs.sql):
-- the bridge does it, before publishing, when a commit wrote batches, with
-- isa._render_table_events().  The shadow is a type of its own, not the
-- table's row type, which would make PostgreSQL refuse ALTER COLUMN … TYPE
-- and ADD COLUMN … DEFAULT on the table; when ALTER TABLE changes the
-- columns, the pending batches are rendered and a new shadow replaces the
-- old (isa._table_shadow_make).  Shadows are not extension members: pg_dump
-- keeps them and their pending batches.

-- The metadata of event id made from batch's (isa._event_metadata(batch),
-- taken by the trigger in the writer's transaction): what
-- isa._event_metadata(id) would have given there — the writer's correlation,
-- causation and trace when it had them, else the event's own id as
-- correlation and root of its trace; the span is always the event's (C,
-- extension/publish.c: it runs once per event).
CREATE FUNCTION isa._table_event_metadata(m jsonb, batch uuid, id uuid) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'isa_table_event_metadata' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- A relation's columns and their types, in order: a shadow matches its
-- table when both give the same.
CREATE FUNCTION isa._columns_signature(rel oid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
RETURN (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped);

-- Writes the events of the pending batches of one tracking (every tracking
-- when event_name is null) into table_events.outbox, in the order of the
-- statements and of their rows, and deletes the batches; returns how many
-- events it wrote.  One call at a time (an advisory lock): ids are made in
-- that order.  The bridge calls it before publishing, when a commit wrote batches (wake false:
-- it publishes them next); any other caller wakes the bridge at commit.
--
-- JIT is off: the render statement's estimate (a DELETE … RETURNING of the
-- batches, unnested twice and full-joined) passes jit_above_cost even for one
-- row, and JIT compiles at every execution: under single-row writes, LLVM
-- was most of the bridge's CPU in perf record -a.  With one generic plan and
-- without sequential scans, the batches are read through their index (see
-- the renderer's comment).
CREATE FUNCTION isa._render_table_events(event_name text DEFAULT NULL, wake boolean DEFAULT true) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_bitmapscan = off
AS $$
DECLARE
    k       record;
    n       bigint;
    total   bigint := 0;
    msg     text;
    state   text;
BEGIN
    IF NOT EXISTS (SELECT FROM isa.table_tracking) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('isa._render_table_events'));
    FOR k IN SELECT t.event_name, t.shadow, format('%I.%I', t.schema_name, t.table_name) AS relation
               FROM isa.table_tracking t
              WHERE t.shadow IS NOT NULL AND (_render_table_events.event_name IS NULL
                                              OR t.event_name = _render_table_events.event_name)
              ORDER BY t.event_name LOOP
        CONTINUE WHEN to_regprocedure('table_events.render_' || k.shadow || '(text)') IS NULL;
        IF _render_table_events.event_name IS NOT NULL THEN
            -- one tracking, for a caller that needs it done: its error is theirs
            EXECUTE format('SELECT table_events.%I($1)', 'render_' || k.shadow) INTO n USING k.event_name;
        ELSE
            -- every tracking: one that fails keeps its statements pending and
            -- says why, and the others' events still go out
            BEGIN
                -- the shadow's own function: its statements are planned once per session
                EXECUTE format('SELECT table_events.%I($1)', 'render_' || k.shadow) INTO n USING k.event_name;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
                RAISE WARNING 'isa: rendering the events of tracked table % (%) failed, its statements stay pending: % (SQLSTATE %)',
                    k.event_name, k.relation, msg, state;
                n := 0;
            END;
        END IF;
        total := total + n;
    END LOOP;
    IF total > 0 AND wake THEN
        PERFORM isa._wake_bridge_at_commit();
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION isa._render_table_events(text, boolean) IS
    'Turns the pending statements of tracked tables (table_events.batches_N) into events in table_events.outbox, in order; the bridge calls it before publishing, when a commit wrote batches. Returns the number of events written.';

-- Makes the shadow of tracking k from its table rel's columns now: the pending
-- batches of the one it had are rendered, and that one dropped.  Nothing
-- when the shadow still matches the table.
CREATE FUNCTION isa._table_shadow_make(k isa.table_tracking, rel regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n      int;
    lz4    boolean;
BEGIN
    IF k.shadow IS NOT NULL AND to_regtype('table_events.rows_' || k.shadow) IS NOT NULL
       AND isa._columns_signature((SELECT typrelid FROM pg_type WHERE oid = to_regtype('table_events.rows_' || k.shadow)))
           = isa._columns_signature(rel) THEN
        RETURN;
    END IF;
    IF k.shadow IS NOT NULL THEN
        PERFORM isa._render_table_events(k.event_name);
        PERFORM isa._table_shadow_drop(k.shadow);
    END IF;
    n := nextval('isa.table_shadow_seq');
    EXECUTE format('CREATE TYPE table_events.%I AS (%s)', 'rows_' || n, isa._columns_signature(rel));
    EXECUTE format('CREATE TABLE table_events.%I (id uuid PRIMARY KEY, operation "char" NOT NULL, '
                   'occurred_at timestamptz NOT NULL, metadata jsonb NOT NULL, '
                   'old_rows table_events.%I[], new_rows table_events.%I[])',
                   'batches_' || n, 'rows_' || n, 'rows_' || n);
    -- a bulk statement's arrays are megabytes: lz4 compresses them several
    -- times faster than pglz, where the server has it
    lz4 := EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals));
    IF lz4 THEN
        EXECUTE format('ALTER TABLE table_events.%I ALTER old_rows SET COMPRESSION lz4, '
                       'ALTER new_rows SET COMPRESSION lz4', 'batches_' || n);
    END IF;
    -- its renderer: static statements, planned once per session (the bridge's)
    EXECUTE format($f$CREATE FUNCTION table_events.%2$I(tracking text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    written bigint;
BEGIN
    -- most rounds find nothing.  Both scans of the batches go through their
    -- index (the bound on id and the SET of isa._render_table_events): the
    -- table holds every statement deleted since autovacuum's last visit, and
    -- a sequential scan read them all at every round, where an index scan
    -- skips them once their entries are marked dead
    IF NOT EXISTS (SELECT FROM table_events.%1$I WHERE id >= '00000000-0000-0000-0000-000000000000') THEN
        RETURN 0;
    END IF;
WITH t AS MATERIALIZED (
    SELECT k.event_name, k.operations, k.when_columns, k.exclude_columns,
           ARRAY(SELECT c FROM unnest(k.columns) c WHERE c <> ALL (k.key_columns)) AS nonkey,
           format('%%I.%%I', k.schema_name, k.table_name) AS label
      FROM isa.table_tracking k WHERE k.event_name = $1),
b AS (DELETE FROM table_events.%1$I WHERE id >= '00000000-0000-0000-0000-000000000000' RETURNING id, operation, occurred_at, metadata, old_rows, new_rows),
o AS (SELECT b.id AS bid, x.ord, x.j FROM b,
             LATERAL (SELECT row_number() OVER () AS ord, to_jsonb(e) AS j FROM unnest(b.old_rows) e) x),
n AS (SELECT b.id AS bid, x.ord, x.j FROM b,
             LATERAL (SELECT row_number() OVER () AS ord, to_jsonb(e) AS j FROM unnest(b.new_rows) e) x),
p AS (SELECT r.bid, r.ord, b.operation AS op, r.oj, r.nj, r.oj - t.nonkey AS ok, r.nj - t.nonkey AS nk,
             CASE WHEN b.operation = 'u' THEN isa._jsonb_changed_keys(r.oj, r.nj) END AS changed
        FROM (SELECT coalesce(o.bid, n.bid) AS bid, coalesce(o.ord, n.ord) AS ord, o.j AS oj, n.j AS nj
                FROM o FULL JOIN n ON o.bid = n.bid AND o.ord = n.ord) r
        JOIN b ON b.id = r.bid, t),
e AS (SELECT p.bid, p.ord, 1 AS sub, '.inserted' AS suffix, p.nk AS k, NULL::jsonb AS oj, p.nj, NULL::text[] AS changed
        FROM p WHERE p.op = 'i'
      UNION ALL
      SELECT p.bid, p.ord, 1, '.deleted', p.ok, p.oj, NULL, NULL FROM p WHERE p.op = 'd'
      UNION ALL
      SELECT p.bid, p.ord, 1, '.updated', p.nk, p.oj, p.nj, p.changed FROM p, t
       WHERE p.op = 'u' AND p.ok = p.nk AND cardinality(p.changed) > 0
         AND (t.when_columns IS NULL OR p.changed && t.when_columns)
      UNION ALL
      -- a row whose key changed is, as in Debezium, a delete of the old key
      -- and an insert of the new one
      SELECT p.bid, p.ord, 1, '.deleted', p.ok, p.oj, NULL, NULL FROM p, t
       WHERE p.op = 'u' AND p.ok <> p.nk AND 'delete' = ANY (t.operations)
      UNION ALL
      SELECT p.bid, p.ord, 2, '.inserted', p.nk, NULL, p.nj, NULL FROM p, t
       WHERE p.op = 'u' AND p.ok <> p.nk AND 'insert' = ANY (t.operations)
      UNION ALL
      SELECT b.id, 0, 1, '.truncated', NULL, NULL, NULL, NULL FROM b WHERE b.operation = 't'),
s AS (SELECT e.*, isa.uuid_v7() AS id FROM (SELECT * FROM e ORDER BY e.bid, e.ord, e.sub) e)
INSERT INTO table_events.outbox (id, source, event_type, version, occurred_at, data, metadata)
SELECT s.id, 'table', t.event_name || s.suffix, '1.0.0', b.occurred_at,
       CASE s.suffix
         WHEN '.updated' THEN
           jsonb_build_object('table', t.label, 'key', s.k, 'old', s.oj - t.exclude_columns,
                              'new', s.nj - t.exclude_columns,
                              'changed', CASE WHEN cardinality(t.exclude_columns) = 0 THEN to_jsonb(s.changed)
                                         ELSE to_jsonb(ARRAY(SELECT c FROM unnest(s.changed) c
                                                              WHERE c <> ALL (t.exclude_columns))) END)
         WHEN '.deleted' THEN jsonb_build_object('table', t.label, 'key', s.k, 'old', s.oj - t.exclude_columns)
         WHEN '.inserted' THEN jsonb_build_object('table', t.label, 'key', s.k, 'new', s.nj - t.exclude_columns)
         ELSE jsonb_build_object('table', t.label)
       END,
       isa._table_event_metadata(b.metadata, b.id, s.id)
  FROM s JOIN b ON b.id = s.bid, t;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$body$ $f$, 'batches_' || n, 'render_' || n);
    EXECUTE format('REVOKE ALL ON FUNCTION table_events.%I(text) FROM PUBLIC', 'render_' || n);
    EXECUTE format('COMMENT ON TABLE table_events.%I IS %L', 'batches_' || n,
                   format('Statements on %s waiting to become events (isa._render_table_events).', rel));
    UPDATE isa.table_tracking t SET shadow = n WHERE t.event_name = k.event_name;
END
$$;

CREATE FUNCTION isa._table_shadow_drop(n int) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP FUNCTION IF EXISTS table_events.%I(text)', 'render_' || n);
    EXECUTE format('DROP TABLE IF EXISTS table_events.%I', 'batches_' || n);
    EXECUTE format('DROP TYPE IF EXISTS table_events.%I', 'rows_' || n);
END
$$;

CREATE FUNCTION isa.track_table(
    relation        regclass,
    event_name      text DEFAULT NULL,
    operations      text[] DEFAULT ARRAY['insert', 'update', 'delete', 'truncate'],
    when_columns    text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT '{}',
    key_columns     text[] DEFAULT NULL)
RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c       pg_class;
    nsp     name;
    caller  name := isa._session_role();
    cols    text[];
    missing text;
    op      text;
    other   text;
    other_name text;
BEGIN
    PERFORM isa.not_null('relation, operations, exclude_columns', relation, operations, exclude_columns);
    SELECT * INTO c FROM pg_class WHERE oid = relation;
    nsp := (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace);
    IF NOT pg_has_role(caller, c.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'role "%" may not track table %: it is not its owner', caller, relation
            USING ERRCODE = '42501', HINT = 'The owner of the table (or a member of its owning role) tracks it.';
    END IF;
    IF c.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', relation USING ERRCODE = '22023';
    END IF;
    IF nsp IN ('isa', 'pg_catalog', 'information_schema') OR nsp LIKE 'pg\_%'
       OR nsp IN (SELECT s.schema_name FROM isa.services s WHERE s.schema_name IS NOT NULL) THEN
        RAISE EXCEPTION 'table % belongs to isa or PostgreSQL and cannot be tracked', relation
            USING ERRCODE = '42501', HINT = 'isa''s services publish their own events.';
    END IF;

    event_name := coalesce(event_name, c.relname::text);
    IF NOT isa.is_valid_event_type(event_name || '.inserted') THEN
        RAISE EXCEPTION 'event name "%" is not a dotted lower-case name', event_name USING ERRCODE = '22023',
            HINT = 'Pass event_name => ''orders'' (events orders.inserted …) when the table''s name is not one.';
    END IF;
    SELECT k.schema_name || '.' || k.table_name INTO other FROM isa.table_tracking k
     WHERE k.event_name = track_table.event_name AND (k.schema_name, k.table_name) <> (nsp, c.relname);
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'event name "%" is already the tracking of table %', event_name, other
            USING ERRCODE = '23505', HINT = 'Pass another event_name.';
    END IF;

    operations := ARRAY(SELECT DISTINCT lower(o) FROM unnest(operations) o ORDER BY 1);
    SELECT o INTO op FROM unnest(operations) o
     WHERE o IS NULL OR o <> ALL (ARRAY['insert', 'update', 'delete', 'truncate']) LIMIT 1;
    IF FOUND OR cardinality(operations) = 0 THEN
        RAISE EXCEPTION 'operations must be some of insert, update, delete, truncate, not %', operations
            USING ERRCODE = '22023';
    END IF;

    cols := ARRAY(SELECT a.attname::text FROM pg_attribute a
                   WHERE a.attrelid = relation AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum);
    IF key_columns IS NULL THEN
        key_columns := ARRAY(SELECT a.attname::text
                               FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k (attnum, n), pg_attribute a
                              WHERE i.indrelid = relation AND i.indisprimary
                                AND a.attrelid = relation AND a.attnum = k.attnum
                              ORDER BY k.n);
        IF cardinality(key_columns) = 0 THEN
            RAISE EXCEPTION 'table % has no primary key', relation USING ERRCODE = '22023',
                HINT = 'Name the columns that identify a row: key_columns => ARRAY[''…''].';
        END IF;
    ELSIF cardinality(key_columns) = 0 THEN
        RAISE EXCEPTION 'key_columns must name at least one column' USING ERRCODE = '22023';
    END IF;
    IF when_columns IS NOT NULL AND cardinality(when_columns) = 0 THEN
        RAISE EXCEPTION 'when_columns must name at least one column, or be null for any change'
            USING ERRCODE = '22023';
    END IF;
    SELECT m INTO missing FROM unnest(key_columns || coalesce(when_columns, '{}') || exclude_columns) m
     WHERE m IS NULL OR m <> ALL (cols) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', missing, relation USING ERRCODE = '42703';
    END IF;

    -- tracking again replaces the options, the event types and the triggers
    SELECT k.event_name INTO other_name FROM isa.table_tracking k
     WHERE (k.schema_name, k.table_name) = (nsp, c.relname);
    PERFORM isa._drop_table_triggers(relation);
    -- the statements made under the options it had become events under them
    IF other_name IS NOT NULL THEN
        PERFORM isa._render_table_events(other_name);
    END IF;
    INSERT INTO isa.table_tracking AS k (event_name, schema_name, table_name, operations, key_columns,
                                         when_columns, exclude_columns, columns, tracked_by)
    VALUES (event_name, nsp, c.relname, operations, key_columns, when_columns, exclude_columns, cols, caller)
    ON CONFLICT (schema_name, table_name) DO UPDATE
       SET event_name = excluded.event_name, operations = excluded.operations,
           key_columns = excluded.key_columns, when_columns = excluded.when_columns,
           exclude_columns = excluded.exclude_columns, columns = excluded.columns,
           tracked_at = now(), tracked_by = excluded.tracked_by;
    IF other_name IS DISTINCT FROM event_name THEN
        PERFORM isa._forget_table_events(other_name);
    END IF;
    PERFORM isa._register_table_events(event_name);

    FOREACH op IN ARRAY operations LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION isa._table_changed(%L)',
                       'isa_track_' || op, upper(op), relation,
                       CASE op WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows'
                               WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                               WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows'
                               ELSE '' END,
                       event_name);
    END LOOP;
END
$$;
COMMENT ON FUNCTION isa.track_table(regclass, text, text[], text[], text[], text[]) IS
    'Makes a table''s changes events table.<event_name>.inserted/updated/deleted/truncated, written to the outbox by statement triggers in the writer''s transaction. The session''s role must own the table (42501); 22023 no primary key and no key_columns, bad operations or event name; 42703 unknown column; 23505 event name taken. Tracking again replaces the options.';

CREATE FUNCTION isa.untrack_table(relation regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c      pg_class;
    caller name := isa._session_role();
    name   text;
BEGIN
    PERFORM isa.not_null('relation', relation);
    SELECT * INTO c FROM pg_class WHERE oid = relation;
    IF NOT pg_has_role(caller, c.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'role "%" may not untrack table %: it is not its owner', caller, relation
            USING ERRCODE = '42501';
    END IF;
    SELECT k.event_name INTO name FROM isa.table_tracking k
     WHERE (k.schema_name, k.table_name) = ((SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace), c.relname);
    IF name IS NULL THEN
        RAISE EXCEPTION 'table % is not tracked', relation USING ERRCODE = 'P0002';
    END IF;
    -- no statement adds a batch once the triggers are gone
    PERFORM isa._drop_table_triggers(relation);
    PERFORM isa._end_tracking(name);
END
$$;
COMMENT ON FUNCTION isa.untrack_table(regclass) IS
    'Stops publishing a tracked table''s changes: drops its triggers and its event types. 42501 not the owner; P0002 not tracked. Events already committed are still published.';

-- ALTER TABLE of a tracked table: its new columns join the catalogue's
-- fields, a rename (of the table or its schema) follows the table, and
-- dropping or renaming a column the options name fails (42703) with the
-- ALTER.  DROP TABLE untracks.
CREATE FUNCTION isa._tracked_table_altered() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd  record;
    name text;
BEGIN
    IF NOT EXISTS (SELECT FROM isa.table_tracking) THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT DISTINCT c.classid, c.objid FROM pg_event_trigger_ddl_commands() c
                WHERE c.classid IN ('pg_class'::regclass, 'pg_namespace'::regclass) LOOP
        -- A tracking follows its table to a new name or schema, known by the
        -- argument of the table's triggers, but only when the name it had
        -- is gone: a trigger attached by hand to another table never takes
        -- a tracking away from its table.
        UPDATE isa.table_tracking k SET schema_name = n.nspname, table_name = r.relname
          FROM pg_trigger t, pg_class r, pg_namespace n
         WHERE (CASE WHEN cmd.classid = 'pg_class'::regclass THEN r.oid = cmd.objid
                     ELSE r.relnamespace = cmd.objid END)
           AND t.tgrelid = r.oid AND n.oid = r.relnamespace
           AND t.tgfoid = 'isa._table_changed()'::regprocedure AND t.tgnargs = 1
           AND convert_from(substring(t.tgargs FROM 1 FOR position('\x00'::bytea IN t.tgargs) - 1), 'UTF8') = k.event_name
           AND (k.schema_name, k.table_name) <> (n.nspname, r.relname)
           AND to_regclass(format('%I.%I', k.schema_name, k.table_name)) IS NULL;
        CONTINUE WHEN cmd.classid <> 'pg_class'::regclass;
        SELECT k.event_name INTO name FROM isa.table_tracking k, pg_class r, pg_namespace n
         WHERE r.oid = cmd.objid AND n.oid = r.relnamespace
           AND (k.schema_name, k.table_name) = (n.nspname, r.relname);
        CONTINUE WHEN name IS NULL;
        PERFORM isa._register_table_events(name);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER isa_tracked_table_altered ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION isa._tracked_table_altered();

CREATE FUNCTION isa._tracked_table_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name   text;
BEGIN
    IF NOT EXISTS (SELECT FROM isa.table_tracking) THEN
        RETURN;
    END IF;
    FOR name IN SELECT k.event_name FROM isa.table_tracking k, pg_event_trigger_dropped_objects() d
                 WHERE d.object_type = 'table' AND d.classid = 'pg_class'::regclass AND d.objsubid = 0
                   AND (k.schema_name, k.table_name) = (d.schema_name, d.object_name) LOOP
        -- its committed statements are events of rows that existed
        PERFORM isa._end_tracking(name);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER isa_tracked_table_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION isa._tracked_table_dropped();

-- How many statements of a tracking wait for the bridge to render them.
CREATE FUNCTION isa._table_pending(shadow int) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF to_regclass('table_events.batches_' || shadow) IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM table_events.%I', 'batches_' || shadow) INTO n;
    RETURN n;
END
$$;

CREATE VIEW isa.tracked_tables AS
SELECT to_regclass(format('%I.%I', k.schema_name, k.table_name)) AS relation,
       k.event_name,
       'table.' || k.event_name || '.>' AS subjects,
       k.operations, k.key_columns, k.when_columns, k.exclude_columns,
       (SELECT count(*) FROM pg_trigger t
         WHERE t.tgrelid = to_regclass(format('%I.%I', k.schema_name, k.table_name))
           AND t.tgname LIKE 'isa\_track\_%')::int AS triggers,
       isa._table_pending(k.shadow) AS pending_statements,
       k.tracked_at, k.tracked_by
  FROM isa.table_tracking k;
COMMENT ON VIEW isa.tracked_tables IS
    'The tracked tables (isa.track_table): the NATS subjects of their events, the options, how many of its triggers each still has (one per operation), and how many of its statements wait for the bridge to make their events.';

-- isa_admin (the DBAs) tracks and untracks (sql/core/grants.sql grants it
-- every function of schema isa); the owner check is the functions' own.
GRANT SELECT ON isa.tracked_tables TO isa_compliance;
