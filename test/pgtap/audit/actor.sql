-- actor.sql — audit._actor (extension/audit/audit_actor.c) against the rule
-- it implements, written out here in SQL as docs/services/audit.md states it
-- ("Actor and resource"): the device case, actor_id, the first non-null
-- *_by field by key in the database's collation, user_id, owner_id; a
-- value as ->> gives it (numbers, booleans, objects and arrays as their
-- JSON text).  Fixed cases, then 20,000 generated objects.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(14);

CREATE FUNCTION pg_temp.rule(source text, data jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN source = 'device' AND data ? 'device_id' THEN 'device:' || (data ->> 'device_id')
                ELSE coalesce(data ->> 'actor_id',
                              (SELECT k.value FROM jsonb_each_text(data) k
                                WHERE k.key LIKE '%\_by' AND k.value IS NOT NULL ORDER BY k.key LIMIT 1),
                              data ->> 'user_id', data ->> 'owner_id') END $$;

SELECT is(audit._actor('account_service', '{"actor_id": "a", "sent_by": "s", "user_id": "u"}'), 'a', 'actor_id first');
SELECT is(audit._actor('account_service', '{"zz_by": "z", "shared_by": "s", "user_id": "u"}'), 's', 'the first *_by field by name, before user_id');
SELECT is(audit._actor('account_service', '{"sent_by": null, "user_id": "u", "owner_id": "o"}'), 'u', 'a null *_by field is passed over');
SELECT is(audit._actor('account_service', '{"owner_id": "o"}'), 'o', 'owner_id last');
SELECT is(audit._actor('account_service', '{"name": "x", "by": "b", "_byx": "c"}'), NULL, 'no actor: NULL (by and _byx are not *_by)');
SELECT is(audit._actor('account_service', '{"actor_id": null, "user_id": 42}'), '42', 'a JSON null actor_id falls through; a number as its text');
SELECT is(audit._actor('account_service', '{"approved_by": {"id": 1}}'), '{"id": 1}', 'an object as its JSON text');
SELECT is(audit._actor('device', '{"device_id": "d1", "actor_id": "a"}'), 'device:d1', 'a device''s message: the device');
SELECT is(audit._actor('device', '{"device_id": null, "actor_id": "a"}'), NULL, 'a device''s message with a null device_id: NULL, as the rule says');
SELECT is(audit._actor('device', '{"actor_id": "a"}'), 'a', 'a device source without device_id: the general rule');
SELECT is(audit._actor(NULL, '{"device_id": "d1", "user_id": "u"}'), 'u', 'no source: the general rule');
SELECT is(audit._actor('x', NULL), NULL, 'no data: NULL');
SELECT throws_ok($$SELECT audit._actor('x', '[1]')$$, '22023', NULL, 'data that is not an object: 22023');

-- generated: keys from a pool (several *_by, near misses, non-ASCII), values of every JSON type
CREATE TEMP TABLE gen ON COMMIT DROP AS
SELECT g, (ARRAY['device', 'account_service', NULL])[1 + (g % 3)] AS source,
       (SELECT coalesce(jsonb_object_agg(k, v), '{}')
          FROM (SELECT DISTINCT ON (k) k, v
                  FROM (SELECT (ARRAY['actor_id', 'user_id', 'owner_id', 'device_id', 'sent_by', 'shared_by', 'a_by',
                                      'B_by', 'b_by', 'zz_by', '_by', 'by', 'é_by', 'Z_by', 'x_byy', 'name'])[1 + floor(random() * 16)::int] AS k,
                               (ARRAY['null', '"s' || g || '"', '12.50', 'true', '{"a": [1, "x"]}', '[]', '""'])[1 + floor(random() * 7)::int]::jsonb AS v
                          FROM generate_series(1, 1 + (g % 7)) WHERE g > 0) p
                 ORDER BY k) q) AS data
  FROM generate_series(1, 20000) g;
SELECT is((SELECT count(*) FROM gen WHERE audit._actor(source, data) IS DISTINCT FROM pg_temp.rule(source, data)), 0::bigint,
          '20,000 generated objects: the C function and the rule agree');

SELECT * FROM finish();
ROLLBACK;
