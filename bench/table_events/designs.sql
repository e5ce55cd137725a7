-- bench/table_events/designs.sql — what a 100,000-row UPDATE costs its writer
-- under the tracking isa ships and under two other designs of the trigger,
-- each prototyped here in PL/pgSQL (informational; docs/benchmarks.md,
-- "table_events", explains why it exists).  On a running stack:
--   psql -X -f bench/table_events/designs.sql
-- Switches the bridge off while it runs and leaves nothing behind.
--
--   plain     the table untracked
--   tracked   isa.track_table: one outbox row per changed row (what isa does)
--   json      one row per statement holding every change as one JSON array
--             (jsonb_agg of old and new rows), which the bridge would split
--   raw       one row per statement holding the transition tables as arrays
--             of the table's row type, rendered as JSON later (by the bridge)
--             — a column of the table's row type makes PostgreSQL refuse
--             ALTER COLUMN … TYPE and ADD COLUMN … DEFAULT on the table
--   send      as raw, the arrays in binary form (array_send, a bytea): no
--             dependency on the row type
--   shadow    as raw, the rows as a composite type of their own with the
--             table's columns (ROW(…)::type): ALTER TABLE stays free, and a
--             changed table would get a new version of the type
-- Each UPDATE runs three times, in turns; compare the times of one run only.
ALTER SYSTEM SET isa.bridge_enabled = off;
SELECT pg_reload_conf();
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_td CASCADE;
CREATE SCHEMA bench_td;
CREATE TABLE bench_td.plain (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO bench_td.plain SELECT g, 0, 'item ' || g, now() FROM generate_series(1, 100000) g;
CREATE TABLE bench_td.tracked (LIKE bench_td.plain INCLUDING ALL);
CREATE TABLE bench_td.json (LIKE bench_td.plain INCLUDING ALL);
CREATE TABLE bench_td.raw (LIKE bench_td.plain INCLUDING ALL);
CREATE TABLE bench_td.send (LIKE bench_td.plain INCLUDING ALL);
CREATE TABLE bench_td.shadow (LIKE bench_td.plain INCLUDING ALL);
INSERT INTO bench_td.tracked SELECT * FROM bench_td.plain;
INSERT INTO bench_td.json SELECT * FROM bench_td.plain;
INSERT INTO bench_td.raw SELECT * FROM bench_td.plain;
INSERT INTO bench_td.send SELECT * FROM bench_td.plain;
INSERT INTO bench_td.shadow SELECT * FROM bench_td.plain;
SELECT isa.track_table('bench_td.tracked', event_name => 'bench_td.tracked');

CREATE TABLE bench_td.json_batches (id bigserial PRIMARY KEY, changes jsonb COMPRESSION lz4);
CREATE FUNCTION bench_td.json_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_td.json_batches (changes)
    SELECT jsonb_agg(jsonb_build_object('old', to_jsonb(o.r), 'new', to_jsonb(n.r)))
      FROM (SELECT row_number() OVER () AS rn, r FROM old_rows r) o
      JOIN (SELECT row_number() OVER () AS rn, r FROM new_rows r) n USING (rn);
    RETURN NULL;
END $$;
CREATE TRIGGER json_changed AFTER UPDATE ON bench_td.json
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_td.json_changed();

CREATE TABLE bench_td.raw_batches (id bigserial PRIMARY KEY,
    old_rows bench_td.raw[] COMPRESSION lz4, new_rows bench_td.raw[] COMPRESSION lz4);
CREATE FUNCTION bench_td.raw_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_td.raw_batches (old_rows, new_rows)
    SELECT (SELECT array_agg(o.*::bench_td.raw) FROM old_rows o),
           (SELECT array_agg(n.*::bench_td.raw) FROM new_rows n);
    RETURN NULL;
END $$;
CREATE TRIGGER raw_changed AFTER UPDATE ON bench_td.raw
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_td.raw_changed();

CREATE TABLE bench_td.send_batches (id bigserial PRIMARY KEY,
    old_rows bytea COMPRESSION lz4, new_rows bytea COMPRESSION lz4);
CREATE FUNCTION bench_td.send_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_td.send_batches (old_rows, new_rows)
    SELECT (SELECT array_send(array_agg(o.*::bench_td.send)) FROM old_rows o),
           (SELECT array_send(array_agg(n.*::bench_td.send)) FROM new_rows n);
    RETURN NULL;
END $$;
CREATE TRIGGER send_changed AFTER UPDATE ON bench_td.send
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_td.send_changed();

CREATE TYPE bench_td.shadow_v1 AS (id int, qty int, label text, updated_at timestamptz);
CREATE TABLE bench_td.shadow_batches (id bigserial PRIMARY KEY,
    old_rows bench_td.shadow_v1[] COMPRESSION lz4, new_rows bench_td.shadow_v1[] COMPRESSION lz4);
CREATE FUNCTION bench_td.shadow_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_td.shadow_batches (old_rows, new_rows)
    SELECT (SELECT array_agg(ROW(o.id, o.qty, o.label, o.updated_at)::bench_td.shadow_v1) FROM old_rows o),
           (SELECT array_agg(ROW(n.id, n.qty, n.label, n.updated_at)::bench_td.shadow_v1) FROM new_rows n);
    RETURN NULL;
END $$;
CREATE TRIGGER shadow_changed AFTER UPDATE ON bench_td.shadow
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_td.shadow_changed();
VACUUM ANALYZE bench_td.plain, bench_td.tracked, bench_td.json, bench_td.raw, bench_td.send, bench_td.shadow;

\timing on
\echo == round 1: plain, tracked, json, raw, send, shadow
UPDATE bench_td.plain SET qty = qty + 1, updated_at = now();
UPDATE bench_td.tracked SET qty = qty + 1, updated_at = now();
UPDATE bench_td.json SET qty = qty + 1, updated_at = now();
UPDATE bench_td.raw SET qty = qty + 1, updated_at = now();
UPDATE bench_td.send SET qty = qty + 1, updated_at = now();
UPDATE bench_td.shadow SET qty = qty + 1, updated_at = now();
\echo == round 2: plain, tracked, json, raw, send, shadow
UPDATE bench_td.plain SET qty = qty + 1, updated_at = now();
UPDATE bench_td.tracked SET qty = qty + 1, updated_at = now();
UPDATE bench_td.json SET qty = qty + 1, updated_at = now();
UPDATE bench_td.raw SET qty = qty + 1, updated_at = now();
UPDATE bench_td.send SET qty = qty + 1, updated_at = now();
UPDATE bench_td.shadow SET qty = qty + 1, updated_at = now();
\echo == round 3: plain, tracked, json, raw, send, shadow
UPDATE bench_td.plain SET qty = qty + 1, updated_at = now();
UPDATE bench_td.tracked SET qty = qty + 1, updated_at = now();
UPDATE bench_td.json SET qty = qty + 1, updated_at = now();
UPDATE bench_td.raw SET qty = qty + 1, updated_at = now();
UPDATE bench_td.send SET qty = qty + 1, updated_at = now();
UPDATE bench_td.shadow SET qty = qty + 1, updated_at = now();
\echo == raw: rendering the last batch of 100,000 new rows as JSON later, as the bridge would
SELECT count(to_jsonb(r)) FROM bench_td.raw_batches b, unnest(b.new_rows) r
 WHERE b.id = (SELECT max(id) FROM bench_td.raw_batches);
\timing off
\echo == raw: the price, ALTER COLUMN TYPE and ADD COLUMN DEFAULT on the table
\set ON_ERROR_STOP off
ALTER TABLE bench_td.raw ALTER COLUMN qty TYPE bigint;
ALTER TABLE bench_td.raw ADD COLUMN note text DEFAULT '';
\set ON_ERROR_STOP on
\echo == shadow: the same two ALTERs succeed
ALTER TABLE bench_td.shadow ALTER COLUMN qty TYPE bigint;
ALTER TABLE bench_td.shadow ADD COLUMN note text DEFAULT '';
DROP SCHEMA bench_td CASCADE;
DELETE FROM table_events.outbox WHERE event_type LIKE 'bench_td.%';
ALTER SYSTEM RESET isa.bridge_enabled;
SELECT pg_reload_conf();
