-- event.sql — the event store: its table, partitions and retention, the
-- batch handler (every event once, the same batch twice stores once, one
-- summary per batch and none for a batch of its own events, months without
-- a partition, months out of the retention), the queries and their filters,
-- the timeline, who reads what (a user: their events and their
-- organizations'; isa_compliance and isa_admin: everything) and the errors.
-- Through real NATS, the bridge and HTTP: test/integration/67-event-store.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(106);

\ir ../fixtures.psql
-- ann and ben are members of the family fam (ann owns it); cat is alone.
SELECT pg_temp.new_user(l) FROM unnest(ARRAY['ann', 'ben', 'cat']) l;
INSERT INTO o SELECT 'fam', org_id FROM organization.create_organization(pg_temp.uid('ann'), 'family', 'Event family', 'ev-fam');
INSERT INTO o SELECT 'biz', org_id FROM organization.create_organization(pg_temp.uid('cat'), 'business', 'Cat corp', 'ev-biz');
SELECT pg_temp.join_org('fam', 'ann', 'ben', 'member');

-- Events by label; m(n) is the start of the UTC month n months from now.
CREATE TEMP TABLE ev (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.eid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.ev WHERE label = l$$;
CREATE FUNCTION pg_temp.m(n integer) RETURNS timestamptz LANGUAGE sql
    AS $$SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => n)) AT TIME ZONE 'UTC'$$;
-- An envelope, remembered under its label.
CREATE FUNCTION pg_temp.e(l text, event_type text, source text, ts timestamptz, data jsonb, metadata jsonb DEFAULT '{}')
RETURNS isa.event LANGUAGE plpgsql AS $$
DECLARE id uuid := gen_random_uuid();
BEGIN
    INSERT INTO pg_temp.ev VALUES (l, id) ON CONFLICT (label) DO UPDATE SET id = EXCLUDED.id;
    RETURN ROW(id, event_type, source, '1.0.0', ts, data, metadata)::isa.event;
END $$;
-- The summaries written since a mark (event_service's outbox).
CREATE TEMP TABLE mark (at uuid) ON COMMIT DROP;   -- ids are monotonic within a session
INSERT INTO mark VALUES (isa.uuid_v7());
CREATE FUNCTION pg_temp.summaries() RETURNS SETOF jsonb LANGUAGE sql AS $$
    SELECT x.data FROM event.outbox x, mark WHERE x.event_type = 'event.batch.stored' AND x.id > mark.at
     ORDER BY x.id $$;
CREATE FUNCTION pg_temp.reset_mark() RETURNS void LANGUAGE sql AS $$UPDATE mark SET at = isa.uuid_v7()$$;
CREATE FUNCTION pg_temp.stored(l text) RETURNS bigint LANGUAGE sql
    AS $$SELECT count(*) FROM event.events WHERE id = pg_temp.eid(l)$$;

-- ---------------------------------------------------------------- catalogue
SELECT is((SELECT relkind::text FROM pg_class WHERE oid = 'event.events'::regclass), 'p',
          'event.events is a partitioned table');
SELECT is((SELECT pg_get_partkeydef('event.events'::regclass)), 'RANGE (occurred_at)', 'partitioned by range of occurred_at');
SELECT is((SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = 'event.events'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
          'id,occurred_at,event_type,source,subject,version,user_id,organization_id,correlation_id,causation_id,data,metadata,stored_at',
          'its columns are those replay reads (docs/services/event.md, "The table")');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text || ' ' || options::text FROM isa.subscriptions WHERE service = 'event'$$,
              ARRAY['> event.on_events(isa.event[]) {"batch_size": 500}'],
              'event subscribes its batch handler to every subject (>)');
SELECT ok(isa.subject_matches('external.usage.recorded.model', '>') AND isa.subject_matches('account_service.user.created', '>')
          AND isa.subject_matches('isa.devices.d1.acks', '>'),
          '> takes every subject: external.>, the services'' and the devices''');
SELECT set_eq($$SELECT jobname || ' ' || command FROM isa.scheduled_jobs WHERE jobname LIKE 'isa-event-%'$$,
              ARRAY['isa-event-partitions SELECT event.maintain_partitions()'], 'its job maintains the partitions');
SELECT is((SELECT string_agg(k, ',' ORDER BY k) FROM isa.event_types, jsonb_object_keys(data_fields) k
            WHERE source = 'event_service' AND event_type = 'event.batch.stored'),
          'count,first_id,first_occurred_at,last_id,last_occurred_at,skipped', 'event.batch.stored is registered with its data fields');
SELECT set_eq($$SELECT method || ' ' || path || ' ' || auth || ' ' || subject_param FROM isa.http_routes
                 WHERE function::text LIKE 'event.%'$$,
              ARRAY['GET /v1/events user user_id', 'GET /v1/events/timeline user user_id',
                    'GET /v1/events/{event_id} user user_id', 'GET /v1/organizations/{org_id}/events user user_id',
                    'GET /v1/organizations/{org_id}/events/timeline user user_id'],
              'five user routes, the user always from the token');
SELECT is((SELECT count(*)::integer FROM isa.subscriptions s
            WHERE s.service NOT IN ('event', 'audit') AND isa.subject_matches('event_service.event.batch.stored', s.subject_filter)),
          0, 'no other service consumes event.batch.stored');

-- ---------------------------------------------------------------- partitions
SET LOCAL isa.event_partitions_ahead = 3;
SELECT lives_ok('SELECT event.maintain_partitions()', 'maintain_partitions runs');
SELECT is((SELECT count(*)::integer FROM generate_series(0, 3) n
            WHERE to_regclass('event.events_' || to_char(pg_temp.m(n) AT TIME ZONE 'UTC', 'YYYYMM')) IS NOT NULL),
          4, 'the partitions of this month and 3 months ahead exist (isa.event_partitions_ahead)');
SELECT is((SELECT count(*)::integer FROM event.maintain_partitions()), 0, 'a second run creates and drops nothing');
SELECT is((SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indexrelid::regclass::text) FROM pg_index
            WHERE indrelid = ('event.events_' || to_char(pg_temp.m(1) AT TIME ZONE 'UTC', 'YYYYMM'))::regclass),
          (SELECT string_agg(replace(d, '$', 'events_' || to_char(pg_temp.m(1) AT TIME ZONE 'UTC', 'YYYYMM')), '; ' ORDER BY n) FROM unnest(ARRAY[
              'CREATE INDEX $_correlation ON event.$ USING btree (correlation_id) WHERE (correlation_id IS NOT NULL)',
              'CREATE INDEX $_organization ON event.$ USING btree (organization_id, occurred_at) WHERE (organization_id IS NOT NULL)',
              'CREATE UNIQUE INDEX $_pkey ON event.$ USING btree (id, occurred_at)',
              'CREATE INDEX $_source ON event.$ USING btree (source, occurred_at)',
              'CREATE INDEX $_time ON event.$ USING btree (occurred_at, id)',
              'CREATE INDEX $_type ON event.$ USING btree (event_type text_pattern_ops, occurred_at)',
              'CREATE INDEX $_user ON event.$ USING btree (user_id, occurred_at) WHERE (user_id IS NOT NULL)']) WITH ORDINALITY AS x (d, n)),
          'each partition has its primary key (id, occurred_at) and the six indexes of the queries');
SELECT ok(event._ensure_partition((pg_temp.m(-13) AT TIME ZONE 'UTC')::timestamp)
          AND event._ensure_partition((pg_temp.m(-14) AT TIME ZONE 'UTC')::timestamp)
          AND event._ensure_partition((pg_temp.m(-30) AT TIME ZONE 'UTC')::timestamp), 'old partitions can be made');
SELECT set_eq($$SELECT partition_name || ' ' || action FROM event.maintain_partitions()$$,
              ARRAY['event.events_' || to_char(pg_temp.m(-14) AT TIME ZONE 'UTC', 'YYYYMM') || ' dropped',
                    'event.events_' || to_char(pg_temp.m(-30) AT TIME ZONE 'UTC', 'YYYYMM') || ' dropped'],
              'with the default retention (13 months) the partitions of months ended more than 13 months ago are dropped');
SELECT ok(to_regclass('event.events_' || to_char(pg_temp.m(-13) AT TIME ZONE 'UTC', 'YYYYMM')) IS NOT NULL,
          'the month that ended 12 months ago is kept');
SET LOCAL isa.event_retention_months = 1;
SELECT set_eq($$SELECT partition_name || ' ' || action FROM event.maintain_partitions() WHERE action = 'dropped'
                   AND partition_name = 'event.events_' || to_char(pg_temp.m(-13) AT TIME ZONE 'UTC', 'YYYYMM')$$,
              ARRAY['event.events_' || to_char(pg_temp.m(-13) AT TIME ZONE 'UTC', 'YYYYMM') || ' dropped'],
              'a shorter isa.event_retention_months drops more');
SELECT ok(to_regclass('event.events_' || to_char(pg_temp.m(0) AT TIME ZONE 'UTC', 'YYYYMM')) IS NOT NULL,
          'never the current month');
RESET isa.event_retention_months;
SELECT is((SELECT relowner::regrole::text FROM pg_class WHERE oid = 'event.events'::regclass), 'isa_svc_event',
          'the table is the service role''s');

-- ---------------------------------------------------------------- handler
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])', ARRAY[
    pg_temp.e('created', 'user.created', 'account_service', pg_temp.m(0) + interval '1 hour',
              jsonb_build_object('user_id', pg_temp.uid('ann'), 'email', 'ann@example.test'),
              jsonb_build_object('correlation_id', '01a25095-0000-7000-8000-000000000001')),
    pg_temp.e('shared', 'resource.shared', 'organization_service', pg_temp.m(0) + interval '2 hours',
              jsonb_build_object('org_id', pg_temp.oid('fam'), 'shared_by', pg_temp.uid('ben'))),
    pg_temp.e('owned', 'device.registered', 'device_service', pg_temp.m(0) + interval '3 hours',
              jsonb_build_object('device_id', 'frame-1', 'owner_id', pg_temp.uid('ben'))),
    pg_temp.e('usage', 'usage.recorded.model', 'external', pg_temp.m(0) + interval '4 hours',
              jsonb_build_object('user_id', 'not-a-uuid', 'organization_id', pg_temp.oid('biz'), 'tokens', 10),
              jsonb_build_object('correlation_id', '01a25095-0000-7000-8000-000000000001',
                                 'causation_id', '01a25095-0000-7000-8000-000000000002')),
    pg_temp.e('ack', 'device.ack', 'device', pg_temp.m(0) + interval '5 hours', '{"device_id": "frame-1", "command_id": 7}'),
    pg_temp.e('last_month', 'user.updated', 'account_service', pg_temp.m(-1) + interval '1 day',
              jsonb_build_object('user_id', pg_temp.uid('ann')))]), 'a batch of six events is stored');
SELECT is((SELECT count(*)::integer FROM event.events WHERE id IN (SELECT id FROM ev)), 6, 'all six are in event.events');
SELECT is((SELECT subject FROM event.events WHERE id = pg_temp.eid('created')), 'account_service.user.created',
          'the subject is <source>.<event_type>');
SELECT is((SELECT subject FROM event.events WHERE id = pg_temp.eid('ack')), 'isa.devices.frame-1.acks',
          'a device message''s subject is its topic');
SELECT is((SELECT subject FROM event.events WHERE id = pg_temp.eid('usage')), 'external.usage.recorded.model',
          'an external producer''s event is stored like the others');
SELECT is((SELECT row(user_id, organization_id)::text FROM event.events WHERE id = pg_temp.eid('created')),
          row(pg_temp.uid('ann'), NULL::uuid)::text, 'user_id comes from data.user_id');
SELECT is((SELECT row(user_id, organization_id)::text FROM event.events WHERE id = pg_temp.eid('shared')),
          row(NULL::uuid, pg_temp.oid('fam'))::text, 'organization_id from data.org_id (shared_by is not the user)');
SELECT is((SELECT user_id FROM event.events WHERE id = pg_temp.eid('owned')), pg_temp.uid('ben'),
          'else user_id from data.owner_id');
SELECT is((SELECT row(user_id, organization_id)::text FROM event.events WHERE id = pg_temp.eid('usage')),
          row(NULL::uuid, pg_temp.oid('biz'))::text, 'a user_id that is not a uuid is none; organization_id from data.organization_id');
SELECT is((SELECT row(correlation_id, causation_id)::text FROM event.events WHERE id = pg_temp.eid('usage')),
          '(01a25095-0000-7000-8000-000000000001,01a25095-0000-7000-8000-000000000002)',
          'correlation_id and causation_id come from metadata');
SELECT is((SELECT data ->> 'email' FROM event.events WHERE id = pg_temp.eid('created')), 'ann@example.test',
          'data is kept whole');
SELECT is((SELECT tableoid::regclass::text FROM event.events WHERE id = pg_temp.eid('last_month')),
          'event.events_' || to_char(pg_temp.m(-1) AT TIME ZONE 'UTC', 'YYYYMM'),
          'last month''s event is in its month''s partition, made on demand');
SELECT is((SELECT count(*)::integer FROM pg_temp.summaries()), 1, 'one event.batch.stored for the batch');
SELECT is((SELECT s - 'first_occurred_at' - 'last_occurred_at' FROM pg_temp.summaries() s),
          jsonb_build_object('count', 6, 'skipped', 0, 'first_id', pg_temp.eid('created'), 'last_id', pg_temp.eid('last_month')),
          'it counts the batch and names its first and last event in stream order');
SELECT is((SELECT array[s ->> 'first_occurred_at', s ->> 'last_occurred_at'] FROM pg_temp.summaries() s),
          array[isa.iso_time(pg_temp.m(-1) + interval '1 day'), isa.iso_time(pg_temp.m(0) + interval '5 hours')],
          'and its time range');

SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])',
    ARRAY(SELECT ROW(e.id, e.event_type, e.source, e.version, e.occurred_at, e.data, e.metadata)::isa.event
            FROM event.events e WHERE e.id IN (SELECT id FROM ev) ORDER BY e.occurred_at)),
    'the same batch again');
SELECT is((SELECT count(*)::integer FROM event.events WHERE id IN (SELECT id FROM ev)), 6, 'is stored once');
SELECT is((SELECT count(*)::integer FROM pg_temp.summaries()), 0, 'and announced no more (nothing new)');

-- not feeding itself
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])', ARRAY[
    pg_temp.e('own1', 'event.batch.stored', 'event_service', now(), '{"count": 3, "skipped": 0}'),
    pg_temp.e('own2', 'event.batch.stored', 'event_service', now(), '{"count": 1, "skipped": 0}')]),
    'a batch of the store''s own summaries');
SELECT is(pg_temp.stored('own1') + pg_temp.stored('own2'), 2::bigint, 'is stored (the store keeps every event)');
SELECT is((SELECT count(*)::integer FROM pg_temp.summaries()), 0, 'but announces nothing: the store does not feed itself');
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])', ARRAY[
    pg_temp.e('own3', 'event.batch.stored', 'event_service', now(), '{"count": 3, "skipped": 0}'),
    pg_temp.e('mixed', 'user.updated', 'account_service', now(), jsonb_build_object('user_id', pg_temp.uid('cat')))]),
    'a batch of a summary and another service''s event');
SELECT is((SELECT array_agg(s ->> 'count') FROM pg_temp.summaries() s), '{2}', 'gets one summary, counting both');

-- out of the retention, too far ahead
SELECT pg_temp.reset_mark();
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])', ARRAY[
    pg_temp.e('ancient', 'user.created', 'account_service', pg_temp.m(-20), '{}'),
    pg_temp.e('future', 'user.created', 'account_service', pg_temp.m(40), '{}')]),
    'a batch of an event 20 months old and one 40 months ahead');
SELECT is(pg_temp.stored('ancient') + pg_temp.stored('future'), 0::bigint, 'neither is stored');
SELECT ok(to_regclass('event.events_' || to_char(pg_temp.m(40) AT TIME ZONE 'UTC', 'YYYYMM')) IS NULL,
          'no partition is made for them');
SELECT is((SELECT array_agg((s ->> 'count') || '/' || (s ->> 'skipped')) FROM pg_temp.summaries() s), '{0/2}',
          'the summary says 2 were skipped');
SELECT lives_ok($$SELECT event.on_events('{}'::isa.event[])$$, 'an empty batch is nothing');

-- ---------------------------------------------------------------- queries
-- 30 events of ann over three days of last month, alternating types; 5 of fam.
SELECT lives_ok(format('SELECT event.on_events(%L::isa.event[])', ARRAY(
    SELECT pg_temp.e('q' || n, CASE WHEN n % 2 = 0 THEN 'wallet.tokens.deducted' ELSE 'wallet.tokens.added' END, 'wallet_service',
                     pg_temp.m(-1) + make_interval(days => 2 + n / 10, mins => n),
                     jsonb_build_object('user_id', pg_temp.uid('ann'), 'n', n),
                     jsonb_build_object('correlation_id', CASE WHEN n < 3 THEN '01a25095-0000-7000-8000-0000000000cc' END))
      FROM generate_series(0, 29) n
    UNION ALL
    SELECT pg_temp.e('f' || n, 'resource.shared', 'organization_service', pg_temp.m(-1) + make_interval(days => 3, mins => n),
                     jsonb_build_object('org_id', pg_temp.oid('fam'), 'n', n))
      FROM generate_series(0, 4) n)), 'a batch of 35 events for the queries');
SELECT is((SELECT (event.get_event(pg_temp.eid('q7'))).data ->> 'n'), '7', 'get_event returns one by id');
SELECT throws_ok(format('SELECT event.get_event(%L)', gen_random_uuid()), 'P0002', NULL, 'an unknown id: P0002');
SELECT throws_ok('SELECT event.get_event(NULL)', '22004', NULL, 'NULL: 22004');
SELECT is((SELECT count(*)::integer FROM event.query(user_id => pg_temp.uid('ann'), from_time => pg_temp.m(-1), to_time => pg_temp.m(0))),
          31, 'by user and time range: ann''s 31 events of last month');
SELECT is((SELECT array_agg(data ->> 'n') FROM event.query(user_id => pg_temp.uid('ann'), source => 'wallet_service', row_limit => 3)),
          '{29,28,27}', 'by source, newest first, limited');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'wallet.tokens.added', user_id => pg_temp.uid('ann'))), 15,
          'by exact type');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'wallet.tokens.*', user_id => pg_temp.uid('ann'))), 30,
          'by type with * (one token)');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'wallet.*', user_id => pg_temp.uid('ann'))), 0,
          '* is one token only: wallet.* takes no wallet.tokens.added');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'wallet.>', user_id => pg_temp.uid('ann'))), 30,
          'by type with > (the rest)');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => '*.tokens.deducted', user_id => pg_temp.uid('ann'))), 15,
          'a leading * works too');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'user.*', user_id => pg_temp.uid('ann'))), 2,
          'user.* takes user.created and user.updated');
SELECT is((SELECT count(*)::integer FROM event.query(organization_id => pg_temp.oid('fam'))), 6, 'by organization');
SELECT is((SELECT array_agg(data ->> 'n' ORDER BY data ->> 'n') FROM event.query(correlation_id => '01a25095-0000-7000-8000-0000000000cc')),
          '{0,1,2}', 'by correlation id');
SELECT is((SELECT count(*)::integer FROM event.query(user_id => pg_temp.uid('ann'), from_time => pg_temp.m(-1) + interval '3 days',
                                                       to_time => pg_temp.m(-1) + interval '4 days')), 10,
          'from_time included, to_time excluded');
-- paging: pages of 7 cover the 30 wallet events once each
CREATE TEMP TABLE pages (page integer, id uuid, occurred_at timestamptz) ON COMMIT DROP;
DO $$
DECLARE
    p integer := 0;
    t timestamptz;
    i uuid;
BEGIN
    LOOP
        p := p + 1;
        INSERT INTO pages SELECT p, e.id, e.occurred_at
          FROM event.query(source => 'wallet_service', user_id => pg_temp.uid('ann'), before_time => t, before_id => i, row_limit => 7) e;
        EXIT WHEN NOT FOUND OR p > 10;
        SELECT x.occurred_at, x.id INTO t, i FROM pages x WHERE x.page = p ORDER BY x.occurred_at, x.id LIMIT 1;
    END LOOP;
END $$;
SELECT is((SELECT count(DISTINCT id)::integer || '/' || count(*) || '/' || max(page) FROM pages), '30/30/5',
          'keyset pages of 7 (before_time, before_id = the last row) give the 30 events once, in 5 pages');
SELECT throws_ok($$SELECT event.query(event_type => 'wallet..x')$$, '22023', NULL, 'a malformed type filter: 22023');
SELECT throws_ok($$SELECT event.query(event_type => 'wallet.>.x')$$, '22023', NULL, '> not last: 22023');
SELECT throws_ok($$SELECT event.query(from_time => now(), to_time => now() - interval '1 day')$$, '22023', NULL,
                 'from_time after to_time: 22023');
SELECT throws_ok($$SELECT event.query(before_time => now())$$, '22023', NULL, 'before_time without before_id: 22023');
SELECT throws_ok($$SELECT event.query(row_limit => 0)$$, '22023', NULL, 'row_limit 0: 22023');
SELECT throws_ok($$SELECT event.query(row_limit => 1001)$$, '22023', NULL, 'row_limit 1001: 22023');
SELECT throws_ok($$SELECT event.query(row_limit => NULL)$$, '22004', NULL, 'row_limit NULL: 22004');
SELECT is((SELECT count(*)::integer FROM event.query(event_type => 'x%y_z.*')), 0, 'LIKE characters in a filter match only themselves');

-- ---------------------------------------------------------------- timeline
SELECT is((SELECT array_agg(count ORDER BY bucket_start) FROM event.timeline(pg_temp.uid('ann'), NULL, 'day', pg_temp.m(-1), pg_temp.m(0))),
          '{1,10,10,10}', 'ann''s days of last month: only the days with events, counted');
SELECT is((SELECT bucket_start FROM event.timeline(pg_temp.uid('ann'), NULL, 'day', pg_temp.m(-1), pg_temp.m(0)) ORDER BY 1 OFFSET 1 LIMIT 1),
          pg_temp.m(-1) + interval '48 hours', 'buckets start at UTC midnight');
SELECT is((SELECT by_type FROM event.timeline(pg_temp.uid('ann'), NULL, 'day', pg_temp.m(-1), pg_temp.m(0)) ORDER BY 1 OFFSET 1 LIMIT 1),
          '{"wallet.tokens.added": 5, "wallet.tokens.deducted": 5}', 'with the counts per type');
SELECT is((SELECT array_agg(count ORDER BY bucket_start) FROM event.timeline(NULL, pg_temp.oid('fam'), 'month', pg_temp.m(-12), pg_temp.m(1))),
          '{5,1}', 'the family by month: 5 last month, 1 this month');
SELECT is((SELECT sum(count)::integer FROM event.timeline(pg_temp.uid('ann'), NULL, 'hour', pg_temp.m(-1), pg_temp.m(0))), 31,
          'by hour, the same events');
SELECT throws_ok(format('SELECT event.timeline(%L, %L, %L, now() - interval ''1 day'', now())', pg_temp.uid('ann'), pg_temp.oid('fam'), 'day'),
                 '22023', NULL, 'a user and an organization: 22023');
SELECT throws_ok($$SELECT event.timeline(NULL, NULL, 'day', now() - interval '1 day', now())$$, '22023', NULL, 'neither: 22023');
SELECT throws_ok(format('SELECT event.timeline(%L, NULL, %L, now() - interval ''1 day'', now())', pg_temp.uid('ann'), 'week'),
                 '22023', NULL, 'bucket week: 22023');
SELECT throws_ok(format('SELECT event.timeline(%L, NULL, %L, now() - interval ''2 years'', now())', pg_temp.uid('ann'), 'hour'),
                 '22023', NULL, 'more than 10000 buckets: 22023');
SELECT throws_ok(format('SELECT event.timeline(%L, NULL, %L, NULL, now())', pg_temp.uid('ann'), 'day'),
                 '22004', NULL, 'no from_time: 22004');

-- ---------------------------------------------------------------- a user's own
SELECT is((SELECT (event.get_my_event(pg_temp.uid('ann'), pg_temp.eid('q1'))).id), pg_temp.eid('q1'), 'ann reads her event');
SELECT is((SELECT (event.get_my_event(pg_temp.uid('ben'), pg_temp.eid('f1'))).id), pg_temp.eid('f1'),
          'ben reads an event of his family');
SELECT throws_ok(format('SELECT event.get_my_event(%L, %L)', pg_temp.uid('ben'), pg_temp.eid('q1')), 'P0002', NULL,
                 'ben does not read ann''s own event: P0002, as an unknown one');
SELECT throws_ok(format('SELECT event.get_my_event(%L, %L)', pg_temp.uid('cat'), pg_temp.eid('f1')), 'P0002', NULL,
                 'cat does not read the family''s: P0002');
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ann'), row_limit => 1000)), 38,
          'ann lists her own 32 events and her family''s 6');
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ben'), row_limit => 1000)), 7,
          'ben: his device and the family''s 6');
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ben'), row_limit => 1000)
            WHERE user_id = pg_temp.uid('ann')), 0, 'none of ann''s own among ben''s');
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ben'), pg_temp.oid('fam'), row_limit => 1000)), 6,
          'with org_id: that organization''s only');
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ann'), event_type => 'wallet.tokens.added')), 15,
          'the filters of query apply');
SELECT throws_ok(format('SELECT event.list_my_events(%L, %L)', pg_temp.uid('ben'), pg_temp.oid('biz')), '42501', NULL,
                 'an organization one is not a member of: 42501');
SELECT is((SELECT array_agg(count ORDER BY bucket_start) FROM event.my_timeline(pg_temp.uid('ann'), NULL, 'month', pg_temp.m(-12), pg_temp.m(1))),
          '{31,1}', 'my_timeline: ann''s own events by month');
SELECT is((SELECT array_agg(count ORDER BY bucket_start) FROM event.my_timeline(pg_temp.uid('ben'), pg_temp.oid('fam'), 'month', pg_temp.m(-12), pg_temp.m(1))),
          '{5,1}', 'and her family''s for ben, a member');
SELECT throws_ok(format('SELECT event.my_timeline(%L, %L, ''day'', now() - interval ''1 day'', now())', pg_temp.uid('cat'), pg_temp.oid('fam')),
                 '42501', NULL, 'not for cat: 42501');
SELECT throws_ok(format('SELECT event.list_my_events(NULL)'), '22004', NULL, 'no user: 22004');

-- ---------------------------------------------------------------- privileges
GRANT SELECT ON u, o, ev TO PUBLIC;     -- the labels, for the roles below
SET LOCAL ROLE isa_app;
SELECT is((SELECT count(*)::integer FROM event.list_my_events(pg_temp.uid('ben'), row_limit => 1000)), 7, 'isa_app calls the user functions');
SELECT throws_ok(format('SELECT event.get_event(%L)', pg_temp.eid('q1')), '42501', NULL, 'not get_event');
SELECT throws_ok('SELECT event.query()', '42501', NULL, 'nor query');
SELECT throws_ok('SELECT 1 FROM event.events', '42501', NULL, 'nor read the table');
SELECT throws_ok('SELECT event.maintain_partitions()', '42501', NULL, 'nor maintain the partitions');
SELECT throws_ok($$SELECT event.on_events('{}')$$, '42501', NULL, 'nor call the handler');
RESET ROLE;
SET LOCAL ROLE isa_compliance;
SELECT is((SELECT count(*)::integer FROM event.query(organization_id => pg_temp.oid('fam'))), 6, 'isa_compliance queries everything');
SELECT is((SELECT (event.get_event(pg_temp.eid('q1'))).id), pg_temp.eid('q1'), 'reads any event');
SELECT ok((SELECT count(*) FROM event.events WHERE id = pg_temp.eid('q1')) = 1, 'and the table');
SELECT throws_ok($$SELECT event.on_events('{}')$$, '42501', NULL, 'but does not write');
RESET ROLE;
SELECT ok(has_function_privilege('isa_admin', 'event.query(text, text, uuid, uuid, uuid, timestamptz, timestamptz, timestamptz, uuid, integer)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'event.maintain_partitions()', 'EXECUTE'),
          'isa_admin queries and maintains');

SELECT * FROM finish();
ROLLBACK;
