-- The bridge's SQL surface: status, metrics, the handled event, replay's
-- errors, privileges, and what a service registered later gets.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(21);

SELECT is((SELECT count(*) FROM isa.bridge_status()), 1::bigint, 'bridge_status() is one row');
SELECT is((SELECT running FROM isa.bridge_status()), true, 'the bridge worker of this preloaded cluster is running');
SELECT is((SELECT pid FROM isa.bridge_status()),
          (SELECT pid FROM pg_stat_activity WHERE backend_type = 'isa bridge'),
          'bridge_status().pid is the isa bridge backend');
SELECT ok((SELECT outbox_backlog >= 0 AND lag >= '0'::interval FROM isa.bridge_status()),
          'bridge_status() reports the outbox backlog and lag');
SELECT set_has($$SELECT DISTINCT metric FROM isa.metrics()$$,
               $$VALUES ('nats_connected'), ('nats_reconnects_total'), ('bridge_up'),
                        ('outbox_backlog'), ('outbox_oldest_unpublished_age_seconds'), ('metrics_dropped_total')$$,
               'isa.metrics() always has the gauges');
SELECT is((SELECT count(*) FROM isa.metrics() WHERE metric = 'outbox_backlog'),
          (SELECT count(*) FROM isa.services WHERE schema_name IS NOT NULL),
          'outbox_backlog has one row per service');
SELECT is((SELECT count(*) FROM isa.metrics() m
            WHERE NOT EXISTS (SELECT FROM isa.metric_families() f
                               WHERE m.metric IN (f.family, f.family || '_bucket', f.family || '_sum', f.family || '_count'))),
          0::bigint, 'every metric of isa.metrics() has its family in isa.metric_families()');
SELECT set_eq($$SELECT exposed_as FROM isa.metric_families() WHERE exposed_as !~ '^isa_'$$,
              ARRAY['event_published_total', 'event_processed_total', 'event_processing_duration_seconds'],
              '/metrics shows the seed''s three under their own names, the others prefixed isa_');
SELECT is((SELECT count(*) FROM jsonb_array_elements(isa.http_metrics()) r
            WHERE r->>'type' NOT IN ('counter', 'gauge', 'histogram') OR coalesce(r->>'help', '') = ''
               OR NOT starts_with(r->>'metric', r->>'family')),
          0::bigint, 'isa.http_metrics(): each sample with its family, a type and a help text');
SELECT is((SELECT count(*) FROM (SELECT DISTINCT source, event_type FROM isa.event_types) t
             JOIN isa.services s ON s.source = t.source AND s.schema_name IS NOT NULL
            WHERE NOT EXISTS (SELECT FROM isa.metrics() m
                               WHERE m.metric = 'event_published_total'
                                 AND m.labels = jsonb_build_object('service', s.name, 'event_type', t.event_type))),
          0::bigint, 'every registered event type of a service with an outbox has its event_published_total');
SELECT is((SELECT count(*) - count(DISTINCT labels) FROM isa.metrics() WHERE metric = 'event_published_total'),
          0::bigint, 'and only one: a counted type is not there at 0 as well');
SELECT is((SELECT count(*) FROM isa.metrics() WHERE metric = 'dead_letters'),
          (SELECT count(*) * 4 FROM (SELECT service FROM isa.subscriptions
                                      UNION SELECT service FROM isa.dead_letters WHERE replayed_at IS NULL) s),
          'dead_letters: a series per service with a subscription and reason, with or without dead letters');
INSERT INTO isa.dead_letters (service, consumer, subject, payload, reason, error_message, attempts)
VALUES ('billing', 'pgtap_dl', 'order_service.x', '\x00', 'subject_mismatch', 'pgtap', 1),
       ('billing', 'pgtap_dl', 'order_service.x', '\x00', 'subject_mismatch', 'pgtap', 1);
SELECT is((SELECT value FROM isa.metrics() WHERE metric = 'dead_letters'
            AND labels = '{"service": "billing", "reason": "subject_mismatch"}'),
          (SELECT count(*)::float8 FROM isa.dead_letters
            WHERE service = 'billing' AND reason = 'subject_mismatch' AND replayed_at IS NULL),
          'and counts the unreplayed dead letters of its service and reason');
SELECT is(isa.current_event(), NULL, 'current_event() is NULL outside a handler');

SELECT throws_ok('SELECT isa.replay_dead_letter(-42)', 'P0002', 'dead letter -42 does not exist',
                 'replaying an unknown dead letter: P0002');
INSERT INTO isa.dead_letters (service, consumer, subject, payload, reason, error_message, attempts)
VALUES ('audit', 'x', 'external.x', '\x00ff', 'invalid_envelope', 'message is not valid UTF-8', 1);
SELECT throws_ok(format('SELECT isa.replay_dead_letter(%s)', currval(pg_get_serial_sequence('isa.dead_letters', 'id'))),
                 '55000', NULL, 'an invalid envelope cannot be replayed: 55000');

SELECT ok(NOT has_function_privilege('isa_app', 'isa.replay_dead_letter(bigint)', 'EXECUTE'),
          'isa_app may not replay dead letters');
SELECT ok(has_function_privilege('isa_admin', 'isa.replay_dead_letter(bigint)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'isa.bridge_status()', 'EXECUTE'),
          'isa_admin may replay and watch the bridge');

SELECT is((SELECT count(DISTINCT source) FROM isa.event_types WHERE event_type = 'event.dead_lettered'),
          (SELECT count(*) FROM isa.services WHERE schema_name IS NOT NULL),
          'every service has event.dead_lettered');
SELECT isa.register_service('pgtap_extra', 'pgtap_extra', 'pgtap_extra_service', 'a service registered later');
SELECT is((SELECT count(*) FROM isa.event_types WHERE event_type = 'event.dead_lettered' AND source = 'pgtap_extra_service'),
          1::bigint, 'a service registered later gets event.dead_lettered too');
SELECT has_trigger('isa', 'services', 'services_changed_bridge',
                   'a change to isa.services wakes the bridge to re-read the stream subjects');

SELECT * FROM finish();
ROLLBACK;
