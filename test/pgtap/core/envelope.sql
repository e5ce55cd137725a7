-- envelope.sql — the event envelope (docs/architecture.md, "The event"): composite type isa.event,
-- its JSON wire form (isa.event_to_json) and the parser that validates a wire
-- event (isa.event_from_json).  Every malformed envelope is refused with
-- SQLSTATE 22023 and a message naming the offending field.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(79);

-- ---------------------------------------------------------------- the type
SELECT has_type('isa', 'event', 'composite type isa.event exists');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum)
             FROM pg_attribute a
            WHERE a.attrelid = (SELECT typrelid FROM pg_type WHERE oid = 'isa.event'::regtype)
              AND a.attnum > 0 AND NOT a.attisdropped),
          ARRAY['id', 'event_type', 'source', 'version', 'timestamp', 'data', 'metadata'],
          'isa.event has exactly the seven envelope fields, in order');
SELECT is((SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
             FROM pg_attribute a
            WHERE a.attrelid = (SELECT typrelid FROM pg_type WHERE oid = 'isa.event'::regtype)
              AND a.attnum > 0 AND NOT a.attisdropped),
          ARRAY['uuid', 'text', 'text', 'text', 'timestamp with time zone', 'jsonb', 'jsonb'],
          'the envelope fields are uuid, text, text, text, timestamptz, jsonb, jsonb');

-- ---------------------------------------------------------------- to JSON
-- The session time zone must not leak into the wire form.
SET LOCAL timezone = 'America/New_York';

CREATE TEMP TABLE ev ON COMMIT DROP AS
    SELECT ROW('018f3c2a-7b10-7abc-8def-0123456789ab'::uuid, 'wallet.tokens.deducted', 'wallet_service',
               '1.2.3', '2026-11-27 08:32:56.123456+00'::timestamptz,
               '{"user_id": "u1", "amount": 5}'::jsonb,
               '{"correlation_id": "c-1", "trace_id": "t-1"}'::jsonb)::isa.event AS e;

SELECT is((SELECT array_agg(k ORDER BY k) FROM ev, jsonb_object_keys(isa.event_to_json(e)) k),
          ARRAY['data', 'event_type', 'id', 'metadata', 'source', 'timestamp', 'version'],
          'event_to_json writes exactly the seven envelope keys');
SELECT is((SELECT isa.event_to_json(e) ->> 'timestamp' FROM ev), '2026-11-27T08:32:56.123456Z',
          'timestamp is written as RFC 3339 in UTC with microseconds and Z, whatever the session time zone');
SELECT matches(isa.event_to_json(ROW(isa.uuid_v7(), 'a.b', 'x', '1.0.0', '2026-01-02 03:04:05+00', '{}', '{}')::isa.event) ->> 'timestamp',
               '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$',
               'a whole-second timestamp still carries six fractional digits');
SELECT is((SELECT isa.event_to_json(e) ->> 'id' FROM ev), '018f3c2a-7b10-7abc-8def-0123456789ab',
          'id is written as the canonical UUID string');
SELECT is((SELECT isa.event_to_json(e) -> 'data' FROM ev), '{"user_id": "u1", "amount": 5}'::jsonb,
          'data is written unchanged as a JSON object');
SELECT is(isa.event_to_json(ROW(isa.uuid_v7(), 'a.b', 'x', '1.0.0', now(), '{}', NULL)::isa.event) -> 'metadata',
          '{}'::jsonb,
          'a NULL metadata is written as {}');

-- ---------------------------------------------------------------- round trip
SELECT is((SELECT isa.event_from_json(isa.event_to_json(e)) FROM ev), (SELECT e FROM ev),
          'event_from_json(event_to_json(e)) gives back e, field for field');

-- A valid wire event; each error case below breaks one field of it.
CREATE TEMP TABLE wire ON COMMIT DROP AS
    SELECT '{"id": "018f3c2a-7b10-7abc-8def-0123456789ab", "event_type": "wallet.tokens.deducted",
             "source": "wallet_service", "timestamp": "2026-11-27T09:32:56.5+01:00",
             "data": {"amount": 5}}'::jsonb AS j;

SELECT is((SELECT (isa.event_from_json(j))."timestamp" FROM wire), '2026-11-27 08:32:56.5+00'::timestamptz,
          'an RFC 3339 timestamp with an offset is read as the instant it names');
SELECT is((SELECT (isa.event_from_json(j)).version FROM wire), '1.0.0',
          'event_from_json defaults a missing version to 1.0.0');
SELECT is((SELECT (isa.event_from_json(j)).metadata FROM wire), '{}'::jsonb,
          'event_from_json defaults a missing metadata to {}');
SELECT is((SELECT (isa.event_from_json(j || '{"metadata": null}')).metadata FROM wire), '{}'::jsonb,
          'event_from_json reads a JSON null metadata as {}');
SELECT is((SELECT (isa.event_from_json(j || '{"version": "2.10.0", "metadata": {"k": "v"}}')).metadata FROM wire),
          '{"k": "v"}'::jsonb,
          'event_from_json keeps a given metadata object');

-- ---------------------------------------------------------------- refused: missing fields
SELECT throws_ok($$SELECT isa.event_from_json(j - 'id') FROM wire$$,
                 '22023', 'event field "id" is missing',
                 'a wire event without id is refused with 22023 naming id');
SELECT throws_ok($$SELECT isa.event_from_json(j - 'event_type') FROM wire$$,
                 '22023', 'event field "event_type" is missing',
                 'a wire event without event_type is refused with 22023 naming event_type');
SELECT throws_ok($$SELECT isa.event_from_json(j - 'source') FROM wire$$,
                 '22023', 'event field "source" is missing',
                 'a wire event without source is refused with 22023 naming source');
SELECT throws_ok($$SELECT isa.event_from_json(j - 'timestamp') FROM wire$$,
                 '22023', 'event field "timestamp" is missing',
                 'a wire event without timestamp is refused with 22023 naming timestamp');
SELECT throws_ok($$SELECT isa.event_from_json(j - 'data') FROM wire$$,
                 '22023', 'event field "data" is missing',
                 'a wire event without data is refused with 22023 naming data');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"data": null}') FROM wire$$,
                 '22023', 'event field "data" is missing',
                 'a wire event with data null is refused with 22023 naming data');

-- ---------------------------------------------------------------- refused: malformed fields
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"id": "not-a-uuid"}') FROM wire$$,
                 '22023', 'event field "id" is not a UUID: not-a-uuid',
                 'an id that is not a UUID is refused with 22023 naming id');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"id": 42}') FROM wire$$,
                 '22023', 'event field "id" must be a string, not number',
                 'an id given as a JSON number is refused with 22023 naming id');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"event_type": "Bad Type"}') FROM wire$$,
                 '22023', 'event field "event_type" is malformed: Bad Type',
                 'an event_type with capitals and a space is refused with 22023 naming event_type');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"event_type": "single"}') FROM wire$$,
                 '22023', 'event field "event_type" is malformed: single',
                 'an event_type of a single token is refused with 22023 naming event_type');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"source": "Wallet Service"}') FROM wire$$,
                 '22023', 'event field "source" is malformed: Wallet Service',
                 'a malformed source is refused with 22023 naming source');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"source": "wallet.service"}') FROM wire$$,
                 '22023', 'event field "source" is malformed: wallet.service',
                 'a source of more than one subject token is refused with 22023 naming source');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"version": "1.0"}') FROM wire$$,
                 '22023', 'event field "version" is malformed: 1.0',
                 'a version of two parts is refused with 22023 naming version');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"version": "v1.0.0"}') FROM wire$$,
                 '22023', 'event field "version" is malformed: v1.0.0',
                 'a version with a v prefix is refused with 22023 naming version');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"version": null}') FROM wire$$,
                 '22023', 'event field "version" must be a string, not null',
                 'a version given as JSON null is refused with 22023 naming version');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "yesterday"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not an RFC 3339 date-time: yesterday',
                 'a timestamp PostgreSQL would accept but RFC 3339 does not (yesterday) is refused with 22023');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-11-27 08:00:00"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not an RFC 3339 date-time: 2026-11-27 08:00:00',
                 'a timestamp without T and without offset is refused with 22023 naming timestamp');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-13-01T00:00:00Z"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not a valid date-time: 2026-13-01T00:00:00Z',
                 'an RFC 3339-shaped timestamp with month 13 is refused with 22023 naming timestamp');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-02-30T00:00:00Z"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not a valid date-time: 2026-02-30T00:00:00Z',
                 'an RFC 3339-shaped timestamp on February 30 is refused with 22023 naming timestamp');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-11-27T08:00:00+16:00"}') FROM wire$$,
                 '22023', NULL,
                 'a timestamp with an offset PostgreSQL cannot hold (+16:00) is refused with 22023, not another SQLSTATE');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"data": [1, 2]}') FROM wire$$,
                 '22023', 'event field "data" must be a JSON object, not array',
                 'data given as an array is refused with 22023 naming data');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"data": "five"}') FROM wire$$,
                 '22023', 'event field "data" must be a JSON object, not string',
                 'data given as a string is refused with 22023 naming data');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"metadata": ["c-1"]}') FROM wire$$,
                 '22023', 'event field "metadata" must be a JSON object, not array',
                 'metadata given as an array is refused with 22023 naming metadata');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"metadata": "c-1"}') FROM wire$$,
                 '22023', 'event field "metadata" must be a JSON object, not string',
                 'metadata given as a string is refused with 22023 naming metadata');
SELECT throws_ok($$SELECT isa.event_from_json('[{"id": "018f3c2a-7b10-7abc-8def-0123456789ab"}]')$$,
                 '22023', 'an event must be a JSON object, not array',
                 'a wire event that is an array, not an object, is refused with 22023');
SELECT throws_ok($$SELECT isa.event_from_json('"an event"')$$,
                 '22023', 'an event must be a JSON object, not string',
                 'a wire event that is a JSON string is refused with 22023');
SELECT throws_ok($$SELECT isa.event_from_json('null')$$,
                 '22023', 'an event must be a JSON object, not null',
                 'a wire event that is JSON null is refused with 22023');

-- ---------------------------------------------------------------- edge cases of the C rules
-- The rules are hand-written C (extension/envelope.c) equivalent to these
-- regular expressions; the cases below are where such code goes wrong.
SELECT ok(isa.is_valid_event_type('a.b'), 'a.b is a valid event type');
SELECT ok(NOT isa.is_valid_event_type('A.b'), 'A.b is not a valid event type (upper case)');
SELECT ok(NOT isa.is_valid_event_type('a'), 'a is not a valid event type (one token)');
SELECT ok(NOT isa.is_valid_event_type('a..b'), 'a..b is not a valid event type (empty token)');
SELECT ok(NOT isa.is_valid_event_type('a.b.'), 'a.b. is not a valid event type (trailing dot)');
SELECT ok(NOT isa.is_valid_event_type('_a.b') AND NOT isa.is_valid_event_type('.a.b') AND isa.is_valid_event_type('a_1.2_b.0'),
          'an event type starts with a letter; later tokens may start with a digit or _');
SELECT ok(isa.is_valid_event_type(repeat('a', 198) || '.b'), 'an event type of 200 characters is valid');
SELECT ok(NOT isa.is_valid_event_type(repeat('a', 199) || '.b'), 'an event type of 201 characters is not');
SELECT ok(isa.is_valid_version('999999.0.0') AND isa.is_valid_version('0.0.0') AND isa.is_valid_version('10.20.30'),
          '999999.0.0, 0.0.0 and 10.20.30 are valid versions');
SELECT ok(NOT isa.is_valid_version('1000000.0.0'), '1000000.0.0 is not a valid version (more than six digits)');
SELECT ok(NOT isa.is_valid_version('01.0.0') AND NOT isa.is_valid_version('1.00.0') AND NOT isa.is_valid_version('1.0.01'),
          'a version part with a leading zero is not valid');
SELECT ok(NOT isa.is_valid_version('1.0') AND NOT isa.is_valid_version('1.0.0.0') AND NOT isa.is_valid_version('1.0.')
          AND NOT isa.is_valid_version('1..0') AND NOT isa.is_valid_version(''),
          'a version of other than three non-empty parts is not valid');
SELECT throws_ok($$SELECT isa.event_from_json(j || jsonb_build_object('event_type', repeat('a', 199) || '.b')) FROM wire$$,
                 '22023', 'event field "event_type" is malformed: ' || repeat('a', 199) || '.b',
                 'a wire event_type of 201 characters is refused with 22023 naming event_type');
SELECT is((SELECT (isa.event_from_json(j || jsonb_build_object('event_type', repeat('a', 198) || '.b'))).event_type FROM wire),
          repeat('a', 198) || '.b',
          'a wire event_type of 200 characters is accepted');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"version": "01.0.0"}') FROM wire$$,
                 '22023', 'event field "version" is malformed: 01.0.0',
                 'a version with a leading zero is refused with 22023 naming version');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"version": "1000000.0.0"}') FROM wire$$,
                 '22023', 'event field "version" is malformed: 1000000.0.0',
                 'a version part of seven digits is refused with 22023 naming version');
SELECT is((SELECT (isa.event_from_json(j || '{"version": "999999.0.0"}')).version FROM wire), '999999.0.0',
          'a version part of six digits is accepted');
SELECT is((SELECT (isa.event_from_json(j || '{"timestamp": "2026-11-27T08:32:56.123456789Z"}'))."timestamp" FROM wire),
          '2026-11-27 08:32:56.123457+00'::timestamptz,
          'a timestamp with nine fractional digits is read, rounded to microseconds');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-11-27T08:32:56.1234567891Z"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not an RFC 3339 date-time: 2026-11-27T08:32:56.1234567891Z',
                 'a timestamp with ten fractional digits is refused with 22023 naming timestamp');
SELECT is((SELECT (isa.event_from_json(j || '{"timestamp": "2026-11-27T14:02:56+05:30"}'))."timestamp" FROM wire),
          '2026-11-27 08:32:56+00'::timestamptz,
          'a timestamp with offset +05:30 is read as the instant it names');
SELECT is((SELECT (isa.event_from_json(j || '{"timestamp": "2026-11-27t08:32:56z"}'))."timestamp" FROM wire),
          '2026-11-27 08:32:56+00'::timestamptz,
          'lower-case t and z are accepted in a timestamp');
SELECT throws_ok($$SELECT isa.event_from_json(j || '{"timestamp": "2026-11-27T08:32:56+0530"}') FROM wire$$,
                 '22023', 'event field "timestamp" is not an RFC 3339 date-time: 2026-11-27T08:32:56+0530',
                 'an offset without a colon is refused with 22023 naming timestamp');
SELECT is((SELECT (isa.event_from_json(j || '{"data": {"name": "Zoë ünïcödé 😀 日本語", "k\u00e9y": "\u2603"}}')).data FROM wire),
          '{"name": "Zoë ünïcödé 😀 日本語", "kéy": "☃"}'::jsonb,
          'data with non-ASCII text (and escapes) is kept unchanged');
SELECT is((SELECT isa.event_from_json(isa.event_to_json(isa.event_from_json(j || '{"data": {"name": "Zoë 😀 日本語"}}')))
             = isa.event_from_json(j || '{"data": {"name": "Zoë 😀 日本語"}}') FROM wire),
          true,
          'an event with non-ASCII data survives the round trip');
SELECT throws_ok($$SELECT isa.event_from_json('42')$$,
                 '22023', 'an event must be a JSON object, not number',
                 'a wire event that is a JSON number is refused with 22023');
SELECT throws_ok($$SELECT isa.event_from_json('true')$$,
                 '22023', 'an event must be a JSON object, not boolean',
                 'a wire event that is a JSON boolean is refused with 22023');
SELECT throws_ok($$SELECT isa._check_envelope(NULL)$$,
                 '22023', 'event field "id" is missing',
                 '_check_envelope of a NULL event raises 22023 naming id');
SELECT is(isa._check_envelope(ROW('018f3c2a-7b10-7abc-8def-0123456789ab', 'a.b', 'x', '1.0.0',
                                  '2026-11-27 08:32:56+00', '{}', NULL)::isa.event),
          ROW('018f3c2a-7b10-7abc-8def-0123456789ab', 'a.b', 'x', '1.0.0',
              '2026-11-27 08:32:56+00', '{}', '{}')::isa.event,
          '_check_envelope returns the event with a NULL metadata made {}');

-- ---------------------------------------------------------------- to JSON refuses incomplete events
SELECT throws_ok($$SELECT isa.event_to_json(ROW(NULL, 'wallet.tokens.deducted', 'wallet_service', '1.0.0', now(), '{}', '{}')::isa.event)$$,
                 '22023', 'event field "id" is missing',
                 'event_to_json of an event with a NULL id raises 22023 naming id');
SELECT throws_ok($$SELECT isa.event_to_json(ROW(isa.uuid_v7(), 'wallet.tokens.deducted', 'wallet_service', '1.0.0', now(), NULL, '{}')::isa.event)$$,
                 '22023', 'event field "data" is missing',
                 'event_to_json of an event with NULL data raises 22023 naming data');
SELECT throws_ok($$SELECT isa.event_to_json(ROW(isa.uuid_v7(), 'wallet.tokens.deducted', 'wallet_service', NULL, now(), '{}', '{}')::isa.event)$$,
                 '22023', 'event field "version" is missing',
                 'event_to_json of an event with a NULL version raises 22023 naming version');
SELECT throws_ok($$SELECT isa.event_to_json(ROW(isa.uuid_v7(), 'wallet.tokens.deducted', 'wallet_service', '1.0.0', 'infinity', '{}', '{}')::isa.event)$$,
                 '22023', 'event field "timestamp" must be finite',
                 'event_to_json of an event with an infinite timestamp raises 22023 naming timestamp');
SELECT throws_ok($$SELECT isa.event_to_json(ROW(isa.uuid_v7(), 'wallet.tokens.deducted', 'wallet_service', '1.0.0', now(), '[]', '{}')::isa.event)$$,
                 '22023', 'event field "data" must be a JSON object, not array',
                 'event_to_json of an event whose data is an array raises 22023 naming data');

-- isa.iso_time (C since 0.2.0) writes what to_char wrote: RFC 3339, UTC, microseconds
SELECT is(isa.iso_time('2026-12-07 10:00:00.000001+05:30'), '2026-12-07T04:30:00.000001Z',
          'iso_time: UTC, microseconds, whatever the zone of the input');
SELECT is((SELECT count(*) FROM (SELECT timestamptz '0001-01-01 00:00:00+00' + random() * interval '9998 years' AS t
                                   FROM generate_series(1, 20000)
                                 UNION ALL
                                 SELECT unnest(ARRAY['0001-01-01 00:00:00+00', '9999-12-31 23:59:59.999999+00',
                                                     '10000-01-01 00:00:00.5+00', '0044-03-15 12:00:00+00 BC',
                                                     '2000-02-29 23:59:59.5+00']::timestamptz[])) x
            WHERE isa.iso_time(t) IS DISTINCT FROM to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
          0::bigint, 'iso_time gives to_char''s text for 20,000 random times and the years at and past its bounds');
SELECT is(isa.iso_time('10000-01-01 00:00:00.5+00'), '10000-01-01T00:00:00.500000Z', 'iso_time: a year past 9999 as to_char writes it');
SELECT ok(isa.iso_time('infinity') IS NULL AND isa.iso_time('-infinity') IS NULL, 'iso_time of an infinite time is NULL, as to_char''s');

SELECT * FROM finish();
ROLLBACK;
