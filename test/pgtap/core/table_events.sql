-- table_events.sql — a DBA's own table speaks through the outbox
-- (docs/table-events.md): isa.track_table makes statement triggers that write
-- table.<name>.inserted / .updated / .deleted / .truncated: one batch of rows
-- per statement in the writer's transaction, which isa._render_table_events
-- (the bridge, before publishing) turns into outbox rows; the options choose the
-- operations, the updates that count, the columns left out and the key.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(83);

SET LOCAL client_min_messages = warning;
CREATE ROLE t17_owner NOLOGIN;
CREATE ROLE t17_writer NOLOGIN;
GRANT isa_admin TO t17_owner;
CREATE SCHEMA t17 AUTHORIZATION t17_owner;
GRANT USAGE ON SCHEMA t17 TO t17_writer, isa_admin;
SET LOCAL ROLE t17_owner;
CREATE TABLE t17.orders (id int PRIMARY KEY, status text NOT NULL, amount numeric, card text);
CREATE TABLE t17.loose (a int, b text);
CREATE TABLE t17.pairs (x int, y int, v text, PRIMARY KEY (x, y));
GRANT INSERT, UPDATE, DELETE, SELECT, TRUNCATE ON t17.orders TO t17_writer;
RESET ROLE;
CREATE TABLE t17.not_mine (id int PRIMARY KEY);

-- events of this test: the outbox rows of one event name, once the pending
-- statements are rendered as the bridge does before publishing
CREATE FUNCTION pg_temp.events(name text) RETURNS SETOF table_events.outbox
    LANGUAGE sql AS $$ SELECT isa._render_table_events();
                       SELECT * FROM table_events.outbox WHERE event_type LIKE name || '.%' ORDER BY id $$;
-- the statements of a tracking waiting to be rendered
CREATE FUNCTION pg_temp.batches(name text) RETURNS bigint
    LANGUAGE sql AS $$ SELECT pending_statements FROM isa.tracked_tables WHERE event_name = name $$;

-- ---------------------------------------------------------------- who may track
SET LOCAL ROLE isa_app;
SELECT throws_ok($$SELECT isa.track_table('t17.orders')$$, '42501', NULL,
                 'isa_app may not call isa.track_table');
SET LOCAL ROLE isa_admin;
SELECT throws_ok($$SELECT isa.track_table('t17.not_mine')$$, '42501',
                 'role "isa_admin" may not track table t17.not_mine: it is not its owner',
                 'a role that does not own the table may not track it (42501), even isa_admin');
SET LOCAL ROLE t17_owner;
SELECT throws_ok($$SELECT isa.track_table('t17.loose')$$, '22023', 'table t17.loose has no primary key',
                 'a table without a primary key and no key_columns: 22023');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', key_columns => '{nope}')$$, '42703',
                 'column "nope" of table t17.orders does not exist', 'an unknown key column: 42703');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', exclude_columns => '{secret}')$$, '42703', NULL,
                 'an unknown excluded column: 42703');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', when_columns => '{nope}')$$, '42703', NULL,
                 'an unknown when column: 42703');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', operations => '{insert,upsert}')$$, '22023', NULL,
                 'an unknown operation: 22023');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', operations => '{}')$$, '22023', NULL,
                 'no operation at all: 22023');
SELECT throws_ok($$SELECT isa.track_table('t17.orders', event_name => 'Bad Name')$$, '22023', NULL,
                 'an event name that is not dotted lower-case: 22023');
SELECT throws_ok($$SELECT isa.track_table(NULL)$$, '22004', 'relation must not be null', 'a NULL table: 22004');
RESET ROLE;
SELECT throws_ok($$SELECT isa.track_table('wallet.wallets')$$, '42501', NULL,
                 'a service''s own table cannot be tracked: it would speak beside the service');
SELECT is((SELECT count(*) FROM isa.table_tracking), 0::bigint, 'the refusals tracked nothing');

-- ---------------------------------------------------------------- track
SET LOCAL ROLE t17_owner;
SELECT lives_ok($$SELECT isa.track_table('t17.orders', exclude_columns => '{card}')$$,
                'the owner tracks its table (a member of isa_admin)');
RESET ROLE;
SELECT is((SELECT row(relation::text, event_name, subjects, operations, key_columns, exclude_columns, triggers, tracked_by::text)::text
             FROM isa.tracked_tables WHERE event_name = 'orders'),
          row('t17.orders', 'orders', 'table.orders.>', '{delete,insert,truncate,update}'::text[], '{id}'::text[],
              '{card}'::text[], 4, 't17_owner')::text,
          'isa.tracked_tables lists it: subjects table.orders.>, every operation, the primary key, four triggers, who');
SELECT set_eq($$SELECT tgname::text FROM pg_trigger WHERE tgrelid = 't17.orders'::regclass$$,
              ARRAY['isa_track_insert', 'isa_track_update', 'isa_track_delete', 'isa_track_truncate'],
              'one statement trigger per operation');
SELECT is((SELECT bool_and(NOT (tgtype::int & 1 = 1)) FROM pg_trigger WHERE tgrelid = 't17.orders'::regclass), true,
          'the triggers are statement-level (FOR EACH STATEMENT)');
SELECT set_eq($$SELECT event_type FROM isa.event_types WHERE source = 'table' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['orders.inserted', 'orders.updated', 'orders.deleted', 'orders.truncated'],
              'the four event types are in the catalogue under source table');
SELECT is((SELECT data_fields -> 'new.amount' FROM isa.event_types WHERE event_type = 'orders.inserted'),
          '{"type": "decimal", "required": false, "description": "column amount (numeric)"}',
          'the table''s columns are the data fields (new.amount: decimal, nullable)');
SELECT is((SELECT data_fields ? 'new.card' OR data_fields ? 'old.card' FROM isa.event_types WHERE event_type = 'orders.updated'),
          false, 'an excluded column is not in the catalogue');
SELECT is(position('`table.' IN isa.event_catalogue_markdown()), 0,
          'the generated catalogue of docs/events.md leaves tracked tables out (each installation''s own)');

-- ---------------------------------------------------------------- the events
SET LOCAL ROLE t17_writer;
SELECT throws_ok($$SELECT 1 FROM isa.outbox$$, '42501', NULL, 'the writer has no right on the outbox');
INSERT INTO t17.orders VALUES (1, 'new', 10, '4242'), (2, 'new', 20, '4343');
RESET ROLE;
SELECT is((SELECT array_agg(event_type || ' ' || source || ' ' || version || ' ' || (data -> 'key')::text || ' ' || (data -> 'new')::text)
             FROM pg_temp.events('orders')),
          ARRAY['orders.inserted table 1.0.0 {"id": 1} {"id": 1, "amount": 10, "status": "new"}',
                'orders.inserted table 1.0.0 {"id": 2} {"id": 2, "amount": 20, "status": "new"}'],
          'an INSERT by a writer with no outbox right: one orders.inserted per row, source table, key and new row without the card');
SELECT is((SELECT data ->> 'table' FROM pg_temp.events('orders') LIMIT 1), 't17.orders', 'data.table names the table');
SELECT is((SELECT bool_and(metadata ->> 'correlation_id' = id::text AND isa.uuid_v7_time(id) IS NOT NULL) FROM pg_temp.events('orders')),
          true, 'each event has a UUIDv7 id, which is its correlation_id');
SELECT is((SELECT bool_and(metadata ->> 'traceparent' = '00-' || replace(id::text, '-', '') || '-'
                                                      || right(replace(id::text, '-', ''), 16) || '-01')
             FROM pg_temp.events('orders')),
          true, 'and a traceparent as isa.publish_event gives a root event (its id the trace id)');
RESET ROLE;
SELECT set_config('request.correlation_id', '01900000-0000-7000-8000-0000000000aa', true),
       set_config('request.traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', true);
INSERT INTO t17.orders VALUES (5, 'new', 5, NULL), (6, 'new', 6, NULL);
SELECT set_config('request.correlation_id', '', true), set_config('request.traceparent', '', true);
SELECT is((SELECT array_agg(DISTINCT (metadata ->> 'correlation_id') || ' '
                            || (metadata ->> 'traceparent' = '00-0af7651916cd43dd8448eb211c80319c-'
                                                           || right(replace(id::text, '-', ''), 16) || '-01')::text)
             FROM pg_temp.events('orders') WHERE data -> 'key' IN ('{"id": 5}', '{"id": 6}')),
          ARRAY['01900000-0000-7000-8000-0000000000aa true'],
          'a statement in an HTTP request: its events carry the request''s correlation and trace, each with its own span');

SET LOCAL ROLE t17_writer;
UPDATE t17.orders SET status = 'paid' WHERE id = 1;
RESET ROLE;
SELECT is((SELECT data - 'table' FROM pg_temp.events('orders') WHERE event_type = 'orders.updated'),
          '{"key": {"id": 1}, "old": {"id": 1, "amount": 10, "status": "new"}, "new": {"id": 1, "amount": 10, "status": "paid"}, "changed": ["status"]}',
          'an UPDATE: orders.updated with the old row, the new row and the changed columns');
UPDATE t17.orders SET card = '9999' WHERE id = 1;
SELECT is((SELECT data -> 'changed' FROM pg_temp.events('orders') WHERE event_type = 'orders.updated' ORDER BY id DESC LIMIT 1),
          '[]', 'a change of an excluded column publishes, without naming it');
CREATE TEMP TABLE n0 ON COMMIT DROP AS SELECT count(*) AS n FROM pg_temp.events('orders');
UPDATE t17.orders SET status = status;
SELECT is((SELECT count(*) FROM pg_temp.events('orders')), (SELECT n FROM n0),
          'an UPDATE that changes nothing publishes nothing');
UPDATE t17.orders SET id = 3 WHERE id = 2;
SELECT is((SELECT array_agg(event_type || ' ' || (data -> 'key')::text ORDER BY event_type DESC)
             FROM pg_temp.events('orders') WHERE id > (SELECT id FROM pg_temp.events('orders') WHERE event_type = 'orders.updated' ORDER BY id DESC LIMIT 1)),
          ARRAY['orders.inserted {"id": 3}', 'orders.deleted {"id": 2}'],
          'an UPDATE of the key is a delete of the old key and an insert of the new one');
DELETE FROM t17.orders WHERE id = 1;
SELECT is((SELECT data - 'table' FROM pg_temp.events('orders') ORDER BY id DESC LIMIT 1),
          '{"key": {"id": 1}, "old": {"id": 1, "amount": 10, "status": "paid"}}',
          'a DELETE: orders.deleted with the old row');
TRUNCATE t17.orders;
SELECT is((SELECT event_type || ' ' || data::text FROM pg_temp.events('orders') ORDER BY id DESC LIMIT 1),
          'orders.truncated {"table": "t17.orders"}',
          'TRUNCATE publishes one orders.truncated');

-- ---------------------------------------------------------------- transactions
SAVEPOINT s1;
INSERT INTO t17.orders VALUES (10, 'x', 1, NULL);
SELECT is((SELECT count(*) FROM pg_temp.events('orders') WHERE data -> 'key' = '{"id": 10}'), 1::bigint,
          'inside the writer''s transaction the event is in the outbox');
ROLLBACK TO SAVEPOINT s1;
SELECT is((SELECT count(*) FROM pg_temp.events('orders') WHERE data -> 'key' = '{"id": 10}'), 0::bigint,
          'a rolled-back savepoint takes its events with it');
SAVEPOINT s2;
INSERT INTO t17.orders VALUES (11, 'x', 1, NULL);
SAVEPOINT s3;
UPDATE t17.orders SET status = 'y' WHERE id = 11;
ROLLBACK TO SAVEPOINT s3;
RELEASE SAVEPOINT s2;
SELECT is((SELECT array_agg(event_type) FROM pg_temp.events('orders') WHERE data -> 'key' = '{"id": 11}'),
          ARRAY['orders.inserted'], 'a released savepoint keeps its events, a rolled-back inner one loses its own');

-- ---------------------------------------------------------------- bulk: one INSERT per statement
SET LOCAL track_functions = 'all';
INSERT INTO t17.orders SELECT g, 'bulk', g, NULL FROM generate_series(100, 1099) g;
CREATE TEMP TABLE b0 ON COMMIT DROP AS
    SELECT pg_stat_get_xact_function_calls('isa._table_changed'::regproc) AS trig,
           (SELECT count(*) FROM pg_temp.events('orders')) AS n;
UPDATE t17.orders SET amount = amount + 1 WHERE status = 'bulk';
SELECT is(pg_temp.batches('orders'), 1::bigint,
          'a 1,000-row UPDATE writes one batch, its rows as they are (rendered later)');
SELECT is((SELECT count(*) FROM pg_temp.events('orders')) - (SELECT n FROM b0), 1000::bigint,
          'which become 1,000 orders.updated');
SELECT is(pg_stat_get_xact_function_calls('isa._table_changed'::regproc) - (SELECT trig FROM b0), 1::bigint,
          'with one call of the trigger function');
SELECT is(pg_temp.batches('orders'), 0::bigint, 'and the rendered batch is gone');

-- ---------------------------------------------------------------- options
SET LOCAL ROLE t17_owner;
SELECT lives_ok($$SELECT isa.track_table('t17.orders', operations => '{update}', when_columns => '{status}',
                                         exclude_columns => '{}', event_name => 'shop.orders')$$,
                'tracking again replaces the options: only updates of status, under another event name');
RESET ROLE;
SELECT set_eq($$SELECT event_type FROM isa.event_types WHERE source = 'table' AND event_type <> 'event.dead_lettered'$$, ARRAY['shop.orders.updated'],
              'the catalogue follows: the old names are gone, only shop.orders.updated');
SELECT set_eq($$SELECT tgname::text FROM pg_trigger WHERE tgrelid = 't17.orders'::regclass$$, ARRAY['isa_track_update'],
              'only the update trigger is left');
INSERT INTO t17.orders VALUES (20, 'new', 1, '1111');
DELETE FROM t17.orders WHERE id = 11;
UPDATE t17.orders SET amount = 2 WHERE id = 20;
SELECT is((SELECT count(*) FROM pg_temp.events('shop.orders')), 0::bigint,
          'inserts, deletes and updates of other columns publish nothing');
UPDATE t17.orders SET status = 'paid', amount = 3 WHERE id = 20;
SELECT is((SELECT data - 'table' FROM pg_temp.events('shop.orders')),
          '{"key": {"id": 20}, "old": {"id": 20, "card": "1111", "amount": 2, "status": "new"}, "new": {"id": 20, "card": "1111", "amount": 3, "status": "paid"}, "changed": ["amount", "status"]}',
          'an update of status publishes shop.orders.updated, with every changed column (nothing excluded now)');

SET LOCAL ROLE t17_owner;
SELECT lives_ok($$SELECT isa.track_table('t17.loose', key_columns => '{a}')$$, 'a table without a primary key is tracked with key_columns');
SELECT lives_ok($$SELECT isa.track_table('t17.pairs', operations => '{insert,delete}')$$, 'a composite primary key');
SELECT throws_ok($$SELECT isa.track_table('t17.pairs', event_name => 'loose')$$, '23505', NULL,
                 'an event name another table has: 23505');
RESET ROLE;
INSERT INTO t17.loose VALUES (1, 'b');
SELECT is((SELECT data -> 'key' FROM pg_temp.events('loose')), '{"a": 1}', 'the key is the key_columns given');
INSERT INTO t17.pairs VALUES (1, 2, 'v');
SELECT is((SELECT data -> 'key' FROM pg_temp.events('pairs')), '{"x": 1, "y": 2}', 'a composite key is every column of it');

-- ---------------------------------------------------------------- DDL
-- (a statement before an ALTER is rendered with the columns it had)
INSERT INTO t17.loose VALUES (9, 'before');
ALTER TABLE t17.loose ADD COLUMN c date;
SELECT is((SELECT data -> 'new' FROM pg_temp.events('loose') WHERE data -> 'key' = '{"a": 9}'), '{"a": 9, "b": "before"}',
          'a statement made before ALTER TABLE keeps the columns it had');
SELECT is((SELECT data_fields -> 'new.c' ->> 'type' FROM isa.event_types WHERE event_type = 'loose.inserted'), 'string',
          'ALTER TABLE ADD COLUMN: the new column is a data field of the catalogue');
INSERT INTO t17.loose VALUES (2, 'b', '2026-12-07');
SELECT is((SELECT data -> 'new' ->> 'c' FROM pg_temp.events('loose') ORDER BY id DESC LIMIT 1), '2026-12-07',
          'and it is in the events');
ALTER TABLE t17.loose DROP COLUMN b;
SELECT is((SELECT data_fields ? 'new.b' FROM isa.event_types WHERE event_type = 'loose.inserted'), false,
          'ALTER TABLE DROP COLUMN: the column leaves the catalogue');
SELECT throws_ok($$ALTER TABLE t17.loose DROP COLUMN a$$, '42703', NULL,
                 'dropping a key column of the tracking fails with the ALTER (42703)');
SELECT lives_ok($$ALTER TABLE t17.loose ALTER COLUMN a TYPE bigint$$,
                'ALTER COLUMN … TYPE of a tracked table (its pending rows are kept in a type of their own)');
SELECT lives_ok($$ALTER TABLE t17.loose ADD COLUMN d int NOT NULL DEFAULT 7$$, 'and ADD COLUMN … DEFAULT');
INSERT INTO t17.loose VALUES (4, NULL);
SELECT is((SELECT data -> 'new' FROM pg_temp.events('loose') WHERE data -> 'key' = '{"a": 4}'), '{"a": 4, "c": null, "d": 7}',
          'the events follow the altered columns');
ALTER TABLE t17.loose RENAME TO loose2;
SELECT is((SELECT relation::text FROM isa.tracked_tables WHERE event_name = 'loose'), 't17.loose2',
          'a renamed table stays tracked under its event name');
INSERT INTO t17.loose2 VALUES (3, NULL);
SELECT is((SELECT data ->> 'table' FROM pg_temp.events('loose') ORDER BY id DESC LIMIT 1), 't17.loose2',
          'and publishes with its new name');
CREATE SCHEMA t17s;
CREATE TABLE t17s.moving (id int PRIMARY KEY);
SELECT isa.track_table('t17s.moving');
ALTER SCHEMA t17s RENAME TO t17s_renamed;
SELECT is((SELECT relation::text FROM isa.tracked_tables WHERE event_name = 'moving'), 't17s_renamed.moving',
          'a renamed schema: its tracked tables stay tracked');
INSERT INTO t17s_renamed.moving VALUES (1);
SELECT is((SELECT data ->> 'table' FROM pg_temp.events('moving')), 't17s_renamed.moving',
          'and publish with the new schema''s name');
DROP SCHEMA t17s_renamed CASCADE;
SELECT is((SELECT count(*) FROM isa.table_tracking WHERE event_name = 'moving'), 0::bigint,
          'DROP SCHEMA … CASCADE untracks its tables');
DROP TABLE t17.loose2;
SELECT is((SELECT count(*) FROM isa.table_tracking WHERE event_name = 'loose'), 0::bigint, 'DROP TABLE untracks it');
SELECT is((SELECT count(*) FROM isa.event_types WHERE event_type LIKE 'loose.%'), 0::bigint, 'and takes its event types');

-- ---------------------------------------------------------------- statements of every size, one session
-- A trigger's plan is made for its statement's row count: one made for one
-- row, reused over 30,000, ran its nested loops for minutes (the timeout
-- below is a guard against that, not a speed target: this takes well under
-- a second).
CREATE TABLE t17.sizes (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO t17.sizes SELECT g, 0 FROM generate_series(1, 30000) g;
SELECT isa.track_table('t17.sizes', operations => ARRAY['update']);
UPDATE t17.sizes SET n = n + 1 WHERE id = 1;
SET LOCAL statement_timeout = '30s';
SELECT lives_ok($$UPDATE t17.sizes SET n = n + 1$$, 'a 30,000-row UPDATE after a one-row one on the same table');
UPDATE t17.sizes SET n = n + 1 WHERE id = 2;
RESET statement_timeout;
SELECT is((SELECT count(*) FROM pg_temp.events('sizes')), 30002::bigint,
          'one event per row changed, whatever the size of the statements before');

-- ---------------------------------------------------------------- untrack
INSERT INTO t17.pairs VALUES (4, 4, 'last');
CREATE TEMP TABLE sh ON COMMIT DROP AS SELECT shadow FROM isa.table_tracking WHERE event_name = 'pairs';
SET LOCAL ROLE isa_admin;
SELECT throws_ok($$SELECT isa.untrack_table('t17.not_mine')$$, '42501', NULL, 'a non-owner may not untrack');
SET LOCAL ROLE t17_owner;
SELECT lives_ok($$SELECT isa.untrack_table('t17.pairs')$$, 'the owner untracks');
SELECT throws_ok($$SELECT isa.untrack_table('t17.pairs')$$, 'P0002', 'table t17.pairs is not tracked',
                 'untracking a table that is not tracked: P0002');
RESET ROLE;
SELECT is((SELECT count(*) FROM pg_trigger WHERE tgrelid = 't17.pairs'::regclass), 0::bigint, 'untrack removes the triggers');
SELECT is((SELECT count(*) FROM isa.event_types WHERE event_type LIKE 'pairs.%'), 0::bigint, 'and the event types');
SELECT is((SELECT count(*) FROM pg_temp.events('pairs') WHERE data -> 'key' = '{"x": 4, "y": 4}'), 1::bigint,
          'a statement made before untrack still becomes its event');
SELECT is(to_regtype('table_events.rows_' || (SELECT shadow FROM sh)), NULL,
          'and the tracking''s shadow type and batches are gone');
CREATE TEMP TABLE p0 ON COMMIT DROP AS SELECT count(*) AS n FROM pg_temp.events('pairs');
INSERT INTO t17.pairs VALUES (5, 5, 'v');
SELECT is((SELECT count(*) FROM pg_temp.events('pairs')), (SELECT n FROM p0), 'an untracked table publishes nothing');

-- ---------------------------------------------------------------- the boundary
SET LOCAL ROLE isa_app;
SELECT throws_ok($$SELECT isa.publish_event('shop.orders.updated', 'table', '{}')$$, '42501', NULL,
                 'no application role may publish as source table through isa.publish_event');
SET LOCAL ROLE t17_owner;
CREATE TRIGGER forged AFTER INSERT ON t17.pairs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION isa._table_changed('shop.orders');
SELECT throws_ok($$INSERT INTO t17.pairs VALUES (6, 6, 'forged')$$, '55000', NULL,
                 'the trigger function attached by hand to another table refuses to speak for a tracked one');
ALTER TABLE t17.pairs ADD COLUMN w int;
RESET ROLE;
SELECT is((SELECT relation::text FROM isa.tracked_tables WHERE event_name = 'shop.orders'), 't17.orders',
          'and an ALTER TABLE of that other table does not take the tracking away from its table');
-- ---------------------------------------------------------------- one failing tracking
-- A tracking whose events cannot be written (here an outbox trigger refuses
-- them) keeps its statements pending; the others' events still go out, and
-- the failing one's follow once the cause is gone.
CREATE TABLE t17.good (id int PRIMARY KEY, v text);
CREATE TABLE t17.bad (id int PRIMARY KEY, v text);
SELECT isa.track_table('t17.good', event_name => 'iso.good');
SELECT isa.track_table('t17.bad', event_name => 'iso.bad');
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'P0001';
END $$;
CREATE TRIGGER refuse_bad BEFORE INSERT ON table_events.outbox
    FOR EACH ROW WHEN (NEW.event_type LIKE 'iso.bad.%') EXECUTE FUNCTION pg_temp.refuse();
INSERT INTO t17.bad VALUES (1, 'b');
INSERT INTO t17.good VALUES (1, 'g');
SET LOCAL client_min_messages = error;   -- the failing tracking's WARNING
SELECT is((SELECT count(*) FROM pg_temp.events('iso.good')), 1::bigint,
          'a tracking whose events fail to render does not hold back another''s');
SELECT is(pg_temp.batches('iso.bad'), 1::bigint, 'the failing tracking''s statement stays pending');
SELECT is((SELECT value FROM isa.metrics() WHERE metric = 'table_events_pending_statements'
                                               AND labels = '{"event_name": "iso.bad"}'), 1::float8,
          'and the gauge table_events_pending_statements shows it');
SELECT throws_ok($$SELECT isa._render_table_events('iso.bad')$$, 'P0001', 'refused by the test',
                 'rendering that one tracking by name raises its error to the caller');
DROP TRIGGER refuse_bad ON table_events.outbox;
SET LOCAL client_min_messages = warning;
SELECT is((SELECT array_agg(data ->> 'new' ORDER BY id) FROM pg_temp.events('iso.bad')), ARRAY['{"v": "b", "id": 1}'],
          'once the cause is gone, its events follow');
SELECT is(pg_temp.batches('iso.bad'), 0::bigint, 'and nothing of it is pending');
SELECT * FROM finish();
ROLLBACK;
