-- uuid_v7.sql — isa.uuid_v7() makes RFC 9562 version 7 UUIDs: time-ordered,
-- monotonic within a session, and isa.uuid_v7_time() reads their millisecond
-- timestamp back (and refuses UUIDs of other versions).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(11);

-- ---------------------------------------------------------------- layout
-- Text form xxxxxxxx-xxxx-Vxxx-Rxxx-xxxxxxxxxxxx: V (15th char) is the
-- version, R (20th char) carries the variant bits 10, i.e. one of 8 9 a b.
CREATE TEMP TABLE sample ON COMMIT DROP AS
    SELECT isa.uuid_v7() AS id FROM generate_series(1, 1000);

SELECT is((SELECT count(*) FROM sample WHERE substr(id::text, 15, 1) <> '7'), 0::bigint,
          'every id carries version nibble 7 (15th hex character of its text form)');
SELECT is((SELECT count(*) FROM sample WHERE substr(id::text, 20, 1) NOT IN ('8', '9', 'a', 'b')), 0::bigint,
          'every id carries the RFC 9562 variant bits 10 (20th character is 8, 9, a or b)');
SELECT isnt((SELECT count(DISTINCT substr(id::text, 25)) FROM sample), 1::bigint,
            'the random tail (rand_b) differs between ids');

-- ---------------------------------------------------------------- ordering
-- 10000 ids in one statement: far more than one per millisecond, so the
-- counter inside a millisecond is what keeps them ordered.
CREATE TEMP TABLE burst ON COMMIT DROP AS
    SELECT g.n, isa.uuid_v7() AS id
      FROM generate_series(1, 10000) WITH ORDINALITY AS g (i, n);

SELECT is((SELECT count(*) FROM burst), 10000::bigint,
          'the burst made 10000 ids');
SELECT is((SELECT count(*)
             FROM (SELECT id, lag(id) OVER (ORDER BY n) AS prev FROM burst) s
            WHERE prev IS NOT NULL AND id <= prev),
          0::bigint,
          'ids made in one statement are strictly increasing in generation order');
SELECT is((SELECT count(DISTINCT id) FROM burst), 10000::bigint,
          'ids made in one statement are all distinct');
SELECT cmp_ok(isa.uuid_v7(), '>', (SELECT id FROM burst ORDER BY id DESC LIMIT 1),
              'an id made by a later statement of the session sorts after every earlier one');

-- ---------------------------------------------------------------- time
SELECT cmp_ok(abs(extract(epoch FROM isa.uuid_v7_time(isa.uuid_v7()) - clock_timestamp())), '<', 1::numeric,
              'uuid_v7_time of a fresh id is within one second of clock_timestamp()');
SELECT is(isa.uuid_v7_time('018f3c2a-7b10-7abc-8def-0123456789ab'),
          'epoch'::timestamptz + x'018f3c2a7b10'::bigint * interval '1 millisecond',
          'uuid_v7_time decodes the leading 48 bits as Unix milliseconds');
SELECT throws_ok($$SELECT isa.uuid_v7_time(gen_random_uuid())$$, '22023', NULL,
                 'uuid_v7_time of a version 4 UUID raises 22023');
SELECT throws_ok($$SELECT isa.uuid_v7_time('018f3c2a-7b10-7abc-cdef-0123456789ab')$$, '22023', NULL,
                 'uuid_v7_time of a UUID with version 7 but a non-RFC variant raises 22023');

SELECT * FROM finish();
ROLLBACK;
