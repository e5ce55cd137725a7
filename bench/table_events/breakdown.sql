-- bench/table_events/breakdown.sql — where a tracked 100,000-row UPDATE's
-- time goes, in the writer's statement and in the bridge's rendering after
-- it (informational; docs/benchmarks.md, "table_events").  On a
-- running stack: psql -X -f bench/table_events/breakdown.sql.  Switches the
-- bridge off while it runs and leaves nothing behind (schema bench_tb is
-- dropped, the outbox rows deleted).
ALTER SYSTEM SET isa.bridge_enabled = off;
SELECT pg_reload_conf();
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_tb CASCADE;
CREATE SCHEMA bench_tb;
CREATE TABLE bench_tb.tracked (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE bench_tb.plain (LIKE bench_tb.tracked INCLUDING ALL);
INSERT INTO bench_tb.tracked SELECT g, 0, 'item ' || g, now() FROM generate_series(1, 100000) g;
INSERT INTO bench_tb.plain SELECT * FROM bench_tb.tracked;
VACUUM ANALYZE bench_tb.tracked, bench_tb.plain;
SELECT isa.track_table('bench_tb.tracked', event_name => 'bench_tb.tracked');
\timing on
\echo == the statement, untracked then tracked (twice)
UPDATE bench_tb.plain SET qty = qty + 1, updated_at = now();
UPDATE bench_tb.tracked SET qty = qty + 1, updated_at = now();
UPDATE bench_tb.plain SET qty = qty + 1, updated_at = now();
UPDATE bench_tb.tracked SET qty = qty + 1, updated_at = now();
\echo == one-row UPDATEs: 2,000 statements on each table in one session, microseconds per statement
DO $$
DECLARE
    t0 timestamptz;
    plain float8;
    tracked float8;
BEGIN
    t0 := clock_timestamp();
    FOR i IN 1..2000 LOOP UPDATE bench_tb.plain SET qty = qty + 1 WHERE id = i; END LOOP;
    plain := extract(epoch FROM clock_timestamp() - t0) * 1e6 / 2000;
    t0 := clock_timestamp();
    FOR i IN 1..2000 LOOP UPDATE bench_tb.tracked SET qty = qty + 1 WHERE id = i; END LOOP;
    tracked := extract(epoch FROM clock_timestamp() - t0) * 1e6 / 2000;
    RAISE WARNING 'one-row UPDATE: untracked % us, tracked % us', round(plain::numeric, 1), round(tracked::numeric, 1);
END
$$;
\echo == what the bridge does after the commits: render the pending statements (two of 100,000 rows, 2,000 of one row) into outbox rows
SELECT isa._render_table_events('bench_tb.tracked', false);
\echo -- of which the rows as JSON (to_jsonb of 100,000 rows, twice in an UPDATE)
SELECT count(to_jsonb(r)) FROM bench_tb.plain r;
\timing off
DROP SCHEMA bench_tb CASCADE;
DELETE FROM table_events.outbox WHERE event_type LIKE 'bench_tb.%';
ALTER SYSTEM RESET isa.bridge_enabled;
SELECT pg_reload_conf();
