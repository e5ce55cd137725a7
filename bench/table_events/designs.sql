-- bench/table_events/designs.sql — what a 100,000-row UPDATE costs its writer
-- under the tracking isa ships and under other designs of the trigger, each
-- prototyped here in PL/pgSQL (informational; docs/benchmarks.md,
-- "table_events", explains why it exists).  On a running stack:
--   psql -X -f bench/table_events/designs.sql
-- Switches the bridge off while it runs and leaves nothing behind.
--
--   plain     the table untracked
--   tracked   isa.track_table (what isa does: the shadow design below, in C)
--   rows      one row per changed row holding its event as JSON (old and new
--             row, key, metadata, a UUIDv7): isa's design until 0.2.0's
--   json      one row per statement holding every change as one JSON array
--             (jsonb_agg of old and new rows), which the bridge would split
--   raw       one row per statement holding the transition tables as arrays
--             of the table's row type, rendered as JSON later (by the bridge)
--             — a column of the table's row type makes PostgreSQL refuse
--             ALTER COLUMN … TYPE and ADD COLUMN … DEFAULT on the table
--   send      as raw, the arrays in binary form (array_send, a bytea): no
--             dependency on the row type
--   shadow    as raw, the rows as a composite type of their own with the
--             table's columns (ROW(…)::type): ALTER TABLE stays free
-- Each UPDATE runs three times, in turns; compare the times of one run only.
ALTER SYSTEM SET isa.bridge_enabled = off;
SELECT pg_reload_conf();
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_td CASCADE;
CREATE SCHEMA bench_td;
CREATE TABLE bench_td.plain (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO bench_td.plain SELECT g, 0, 'item ' || g, now() FROM generate_series(1, 100000) g;
CREATE TYPE bench_td.shadow_v1 AS (id int, qty int, label text, updated_at timestamptz);

-- Each prototype: its copy of the table, what its trigger writes to, and the
-- trigger's INSERT over the transition tables old_rows and new_rows.
CREATE TABLE bench_td.designs (name text PRIMARY KEY, target text, write text);
INSERT INTO bench_td.designs VALUES
  ('rows', 'id uuid PRIMARY KEY, data jsonb, metadata jsonb',
   $$INSERT INTO bench_td.rows_out (id, data, metadata)
     SELECT e.id, jsonb_build_object('key', jsonb_build_object('id', e.nj -> 'id'), 'old', e.oj, 'new', e.nj,
                                     'changed', isa._jsonb_changed_keys(e.oj, e.nj)),
            isa._event_metadata(e.id)
       FROM (SELECT isa.uuid_v7() AS id, o.j AS oj, n.j AS nj
               FROM (SELECT row_number() OVER () AS rn, to_jsonb(r) AS j FROM old_rows r) o
               JOIN (SELECT row_number() OVER () AS rn, to_jsonb(r) AS j FROM new_rows r) n USING (rn)) e$$),
  ('json', 'id bigserial PRIMARY KEY, changes jsonb COMPRESSION lz4',
   $$INSERT INTO bench_td.json_out (changes)
     SELECT jsonb_agg(jsonb_build_object('old', to_jsonb(o.r), 'new', to_jsonb(n.r)))
       FROM (SELECT row_number() OVER () AS rn, r FROM old_rows r) o
       JOIN (SELECT row_number() OVER () AS rn, r FROM new_rows r) n USING (rn)$$),
  ('raw', 'id bigserial PRIMARY KEY, old_rows bench_td.raw[] COMPRESSION lz4, new_rows bench_td.raw[] COMPRESSION lz4',
   $$INSERT INTO bench_td.raw_out (old_rows, new_rows)
     SELECT (SELECT array_agg(o.*::bench_td.raw) FROM old_rows o), (SELECT array_agg(n.*::bench_td.raw) FROM new_rows n)$$),
  ('send', 'id bigserial PRIMARY KEY, old_rows bytea COMPRESSION lz4, new_rows bytea COMPRESSION lz4',
   $$INSERT INTO bench_td.send_out (old_rows, new_rows)
     SELECT (SELECT array_send(array_agg(o.*::bench_td.send)) FROM old_rows o),
            (SELECT array_send(array_agg(n.*::bench_td.send)) FROM new_rows n)$$),
  ('shadow', 'id bigserial PRIMARY KEY, old_rows bench_td.shadow_v1[] COMPRESSION lz4, new_rows bench_td.shadow_v1[] COMPRESSION lz4',
   $$INSERT INTO bench_td.shadow_out (old_rows, new_rows)
     SELECT (SELECT array_agg(ROW(o.*)::bench_td.shadow_v1) FROM old_rows o),
            (SELECT array_agg(ROW(n.*)::bench_td.shadow_v1) FROM new_rows n)$$);

DO $$
DECLARE
    d record;
BEGIN
    CREATE TABLE bench_td.tracked (LIKE bench_td.plain INCLUDING ALL);
    INSERT INTO bench_td.tracked SELECT * FROM bench_td.plain;
    PERFORM isa.track_table('bench_td.tracked', event_name => 'bench_td.tracked');
    FOR d IN SELECT * FROM bench_td.designs LOOP
        EXECUTE format('CREATE TABLE bench_td.%I (LIKE bench_td.plain INCLUDING ALL)', d.name);
        EXECUTE format('INSERT INTO bench_td.%I SELECT * FROM bench_td.plain', d.name);
        EXECUTE format('CREATE TABLE bench_td.%I (%s)', d.name || '_out', d.target);
        EXECUTE format('CREATE FUNCTION bench_td.%I() RETURNS trigger LANGUAGE plpgsql AS %L',
                       d.name || '_changed', format('BEGIN %s; RETURN NULL; END', d.write));
        EXECUTE format('CREATE TRIGGER changed AFTER UPDATE ON bench_td.%I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION bench_td.%I()', d.name, d.name || '_changed');
    END LOOP;
END
$$;
VACUUM ANALYZE bench_td.plain, bench_td.tracked, bench_td.rows, bench_td.json, bench_td.raw, bench_td.send, bench_td.shadow;

-- Three rounds, each UPDATE of all rows in its own transaction (\gexec), the
-- time of each printed by \timing.
\timing on
\echo == round 1, 2, 3: plain, tracked, rows, json, raw, send, shadow
SELECT format('UPDATE bench_td.%I SET qty = qty + 1, updated_at = now()', t)
  FROM generate_series(1, 3) r,
       unnest(ARRAY['plain', 'tracked', 'rows', 'json', 'raw', 'send', 'shadow']) WITH ORDINALITY AS d (t, o)
 ORDER BY r, o
\gexec
\echo == raw: rendering the last batch of 100,000 new rows as JSON later, as the bridge would
SELECT count(to_jsonb(r)) FROM bench_td.raw_out b, unnest(b.new_rows) r
 WHERE b.id = (SELECT max(id) FROM bench_td.raw_out);
\timing off
-- (the tracked table's pending statements are dropped, not rendered)
SELECT format('DELETE FROM table_events.%I', 'batches_' || shadow) FROM isa.table_tracking
 WHERE event_name = 'bench_td.tracked'
\gexec
\echo == raw: the price, ALTER COLUMN TYPE and ADD COLUMN DEFAULT on the table
\set ON_ERROR_STOP off
ALTER TABLE bench_td.raw ALTER COLUMN qty TYPE bigint;
ALTER TABLE bench_td.raw ADD COLUMN note text DEFAULT '';
\set ON_ERROR_STOP on
\echo == shadow (and tracked): the same two ALTERs succeed
ALTER TABLE bench_td.shadow ALTER COLUMN qty TYPE bigint;
ALTER TABLE bench_td.shadow ADD COLUMN note text DEFAULT '';
ALTER TABLE bench_td.tracked ALTER COLUMN qty TYPE bigint;
ALTER TABLE bench_td.tracked ADD COLUMN note text DEFAULT '';
DROP SCHEMA bench_td CASCADE;
DELETE FROM table_events.outbox WHERE event_type LIKE 'bench_td.%';
ALTER SYSTEM RESET isa.bridge_enabled;
SELECT pg_reload_conf();
