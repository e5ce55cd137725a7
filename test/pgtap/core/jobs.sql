-- jobs.sql — scheduled work through pg_cron (installed in the test database).
-- isa.schedule_jobs() hands isa.scheduled_jobs to pg_cron idempotently, by job
-- name; isa.purge_retention() deletes published outbox rows, inbox rows and
-- cron history older than their retention GUCs, and nothing else.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);

SELECT has_table('cron', 'job', 'pg_cron is installed in this database (cron.job exists)');

-- ---------------------------------------------------------------- scheduling
CREATE TEMP TABLE first_run ON COMMIT DROP AS SELECT * FROM isa.schedule_jobs();
CREATE TEMP TABLE second_run ON COMMIT DROP AS SELECT * FROM isa.schedule_jobs();

SELECT set_eq($$SELECT jobname FROM first_run$$, $$SELECT jobname FROM isa.scheduled_jobs$$,
              'schedule_jobs returns one row per job of isa.scheduled_jobs');
SELECT isnt((SELECT jobid FROM first_run WHERE jobname = 'isa-retention'), NULL,
            'schedule_jobs returns the pg_cron jobid of isa-retention');
SELECT is((SELECT jobid FROM second_run WHERE jobname = 'isa-retention'),
          (SELECT jobid FROM first_run WHERE jobname = 'isa-retention'),
          'calling schedule_jobs again keeps the same pg_cron job');
SELECT is((SELECT count(*) FROM cron.job WHERE jobname = 'isa-retention'), 1::bigint,
          'after two calls there is exactly one cron.job named isa-retention');
SELECT is((SELECT schedule || ' | ' || command || ' | ' || database FROM cron.job WHERE jobname = 'isa-retention'),
          '17 * * * * | SELECT isa.purge_retention() | ' || current_database(),
          'isa-retention runs isa.purge_retention() hourly in this database');
SELECT is((SELECT jobid FROM isa.jobs WHERE jobname = 'isa-retention'),
          (SELECT jobid FROM cron.job WHERE jobname = 'isa-retention'),
          'isa.jobs shows isa-retention with its pg_cron jobid');
SELECT is((SELECT active FROM isa.jobs WHERE jobname = 'isa-retention'), true,
          'isa.jobs shows isa-retention as active');
SELECT is((SELECT description FROM isa.jobs WHERE jobname = 'isa-retention'),
          (SELECT description FROM isa.scheduled_jobs WHERE jobname = 'isa-retention'),
          'isa.jobs carries the description of isa.scheduled_jobs');

-- ---------------------------------------------------------------- retention GUCs
SELECT is(isa.retention('outbox'), current_setting('isa.outbox_retention')::interval,
          'isa.retention(outbox) is the isa.outbox_retention GUC');
SET LOCAL isa.outbox_retention = '2d';
SELECT is(isa.retention('outbox'), interval '2 days',
          'isa.retention(outbox) follows the GUC: 2d is 2 days');
SET LOCAL isa.inbox_retention = '90min';
SELECT is(isa.retention('inbox'), interval '90 minutes',
          'isa.retention(inbox) follows isa.inbox_retention');
SET LOCAL isa.cron_history_retention = '3h';
SELECT is(isa.retention('cron_history'), interval '3 hours',
          'isa.retention(cron_history) follows isa.cron_history_retention');
SELECT throws_ok($$SELECT isa.retention('bogus')$$, '22023', 'unknown retention target "bogus"',
                 'an unknown retention target raises 22023');
SELECT throws_ok($$SET LOCAL isa.outbox_retention = '10s'$$, '22023', NULL,
                 'a retention below one minute is refused');
RESET isa.outbox_retention;
RESET isa.inbox_retention;
RESET isa.cron_history_retention;
SELECT is(isa.retention('outbox'), interval '7 days',
          'the default outbox retention is 7 days');

-- ---------------------------------------------------------------- purging
-- As superuser, straight into the tables: rows just older and younger than
-- the 7-day default retention.
INSERT INTO isa.outbox (id, source, event_type, version, occurred_at, data, metadata, published_at)
SELECT isa.uuid_v7(), 'wallet_service', 'wallet.tokens.deducted', '1.0.0', t.occurred, jsonb_build_object('row', t.label), '{}', t.published
  FROM (VALUES ('old published',    now() - interval '31 days', now() - interval '30 days'),
               ('fresh published',  now() - interval '2 hours',  now() - interval '1 hour'),
               ('old unpublished',  now() - interval '30 days',  NULL::timestamptz)) AS t (label, occurred, published);
INSERT INTO isa.inbox (service, consumer, event_id, event_type, processed_at)
SELECT 'wallet', 'wallet_on_usage', isa.uuid_v7(), 'usage.recorded.model', t.processed
  FROM (VALUES (now() - interval '30 days'), (now() - interval '1 hour')) AS t (processed);
INSERT INTO cron.job_run_details (jobid, database, username, command, status, start_time, end_time)
VALUES (NULL, current_database(), current_user, 'SELECT isa_test_old_run', 'succeeded',
        now() - interval '30 days', now() - interval '30 days'),
       (NULL, current_database(), current_user, 'SELECT isa_test_fresh_run', 'succeeded',
        now() - interval '1 hour', now() - interval '1 hour');

CREATE TEMP TABLE purged ON COMMIT DROP AS SELECT * FROM isa.purge_retention();

SELECT set_eq($$SELECT target FROM purged$$, ARRAY['isa.outbox', 'isa.inbox', 'cron.job_run_details'],
              'purge_retention reports one count per target');
SELECT is((SELECT deleted FROM purged WHERE target = 'isa.outbox'), 1::bigint,
          'purge_retention deleted one outbox row');
SELECT set_eq($$SELECT data ->> 'row' FROM isa.outbox WHERE data ? 'row'$$,
              ARRAY['fresh published', 'old unpublished'],
              'only the published row older than the retention left the outbox; fresh and unpublished rows stay');
SELECT is((SELECT deleted FROM purged WHERE target = 'isa.inbox'), 1::bigint,
          'purge_retention deleted one inbox row');
SELECT is((SELECT count(*) FROM wallet.inbox WHERE consumer = 'wallet_on_usage' AND processed_at < now() - interval '1 day'),
          0::bigint,
          'the inbox row older than the retention is gone');
SELECT is((SELECT count(*) FROM wallet.inbox WHERE consumer = 'wallet_on_usage'), 1::bigint,
          'the fresh inbox row stays');
SELECT cmp_ok((SELECT deleted FROM purged WHERE target = 'cron.job_run_details'), '>=', 1::bigint,
              'purge_retention deleted the old cron history');
SELECT set_eq($$SELECT command FROM cron.job_run_details WHERE command LIKE 'SELECT isa_test_%'$$,
              ARRAY['SELECT isa_test_fresh_run'],
              'only cron history older than its retention was deleted');

-- A shorter retention reaches younger rows.
SET LOCAL isa.outbox_retention = '30min';
CREATE TEMP TABLE purged_again ON COMMIT DROP AS SELECT * FROM isa.purge_retention();
SELECT is((SELECT deleted FROM purged_again WHERE target = 'isa.outbox'), 1::bigint,
          'with a 30-minute retention the hour-old published row is purged too');
SELECT set_eq($$SELECT data ->> 'row' FROM isa.outbox WHERE data ? 'row'$$,
              ARRAY['old unpublished'],
              'an unpublished row is never purged, however old');
SELECT is((SELECT deleted FROM purged_again WHERE target = 'isa.inbox'), 0::bigint,
          'the inbox keeps its own retention (7 days) when the outbox retention changes');

SELECT * FROM finish();
ROLLBACK;
