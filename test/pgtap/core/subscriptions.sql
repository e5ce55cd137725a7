-- subscriptions.sql — isa.subscribe_to_events() registers a handler
-- function(e isa.event) of a service for a NATS subject filter; the bridge
-- keeps one durable consumer per row, named from service and handler.
-- Subscribing is idempotent; anything malformed is refused before a row is
-- written.  isa.dead_letters holds what a subscription gave up on.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(65);

CREATE SCHEMA subs_test;
CREATE FUNCTION subs_test.on_usage(e isa.event) RETURNS void LANGUAGE sql AS $$SELECT$$;
CREATE FUNCTION subs_test.wrong_arg(e jsonb) RETURNS void LANGUAGE sql AS $$SELECT$$;
CREATE FUNCTION subs_test.two_args(e isa.event, n int) RETURNS void LANGUAGE sql AS $$SELECT$$;
CREATE FUNCTION subs_test.no_args() RETURNS void LANGUAGE sql AS $$SELECT$$;
CREATE PROCEDURE subs_test.a_procedure(e isa.event) LANGUAGE sql AS $$SELECT$$;
CREATE FUNCTION subs_test.set_returning(e isa.event) RETURNS SETOF int LANGUAGE sql AS $$SELECT 1$$;
CREATE FUNCTION subs_test.on_batch(events isa.event[]) RETURNS void LANGUAGE sql AS $$SELECT$$;
CREATE FUNCTION subs_test.wrong_array(events jsonb[]) RETURNS void LANGUAGE sql AS $$SELECT$$;

CREATE TEMP TABLE subs (label text PRIMARY KEY, id bigint) ON COMMIT DROP;

-- ---------------------------------------------------------------- subject filters
SELECT ok(isa.is_valid_subject_filter('a.b'),   'a.b is a valid subject filter');
SELECT ok(isa.is_valid_subject_filter('a.*.c'), 'a.*.c is a valid subject filter (* is one token)');
SELECT ok(isa.is_valid_subject_filter('a.>'),   'a.> is a valid subject filter (> is the rest)');
SELECT ok(isa.is_valid_subject_filter('>'),     '> alone is a valid subject filter');
SELECT ok(isa.is_valid_subject_filter('*'),     '* alone is a valid subject filter');
SELECT ok(isa.is_valid_subject_filter('external.usage.recorded.*'), 'external.usage.recorded.* is a valid subject filter');
SELECT ok(NOT isa.is_valid_subject_filter(''),     'the empty filter is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a..b'), 'a..b (an empty token) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a.>.b'), 'a.>.b (> not last) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a b'),  'a b (whitespace) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('.a'),   '.a (leading dot) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a.'),   'a. (trailing dot) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a.b*'), 'a.b* (* inside a token) is refused');
SELECT ok(NOT isa.is_valid_subject_filter('a.>x'), 'a.>x (> inside a token) is refused');

-- ---------------------------------------------------------------- subscribing
INSERT INTO subs
SELECT 'usage', isa.subscribe_to_events('billing', 'external.usage.recorded.*',
                                        'subs_test.on_usage(isa.event)', '{"max_deliver": 5}');

SELECT isnt((SELECT id FROM subs WHERE label = 'usage'), NULL, 'subscribe_to_events returns the subscription id');
SELECT is((SELECT s.service || ' | ' || s.subject_filter || ' | ' || s.handler::regprocedure::text
             FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
          'billing | external.usage.recorded.* | subs_test.on_usage(isa.event)',
          'the subscription row records service, subject filter and handler');
SELECT is((SELECT s.options FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
          '{"max_deliver": 5}'::jsonb,
          'the subscription row records its options');
SELECT is((SELECT s.owner_role FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
          'isa_svc_billing'::name,
          'the subscription is owned by its service''s role, isa_svc_billing, not by the role that subscribed (handlers run as it)');
SELECT matches((SELECT s.durable_name FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
               '^[A-Za-z0-9_-]+$',
               'the durable name is a valid JetStream consumer name');
SELECT alike((SELECT s.durable_name FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
             'billing%on_usage%',
             'the durable name is derived from the service and the handler');

INSERT INTO subs
SELECT 'usage again', isa.subscribe_to_events('billing', 'external.usage.recorded.*',
                                              'subs_test.on_usage(isa.event)', '{"max_deliver": 9, "versions": [1, 2]}');
SELECT is((SELECT id FROM subs WHERE label = 'usage again'), (SELECT id FROM subs WHERE label = 'usage'),
          're-subscribing the same service, filter and handler returns the same id');
SELECT is((SELECT count(*) FROM isa.subscriptions
            WHERE service = 'billing' AND subject_filter = 'external.usage.recorded.*'
              AND handler = 'subs_test.on_usage(isa.event)'::regprocedure),
          1::bigint,
          're-subscribing does not add a second row');
SELECT is((SELECT s.options FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
          '{"max_deliver": 9, "versions": [1, 2]}'::jsonb,
          're-subscribing updates the options');

INSERT INTO subs
SELECT 'payments', isa.subscribe_to_events('billing', 'payment_service.payment.completed',
                                           'subs_test.on_usage(isa.event)');
SELECT isnt((SELECT id FROM subs WHERE label = 'payments'), (SELECT id FROM subs WHERE label = 'usage'),
            'the same handler with a second filter is a second subscription');
SELECT isnt((SELECT durable_name FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'payments'),
            (SELECT durable_name FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
            'the second filter gets its own durable name');
SELECT matches((SELECT s.durable_name FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'payments'),
               '^[A-Za-z0-9_-]+$',
               'the second durable name is a valid JetStream consumer name too');
SELECT is((SELECT options FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'payments'), '{}'::jsonb,
          'options default to {}');

INSERT INTO subs
SELECT 'everything', isa.subscribe_to_events('audit', '>', 'subs_test.on_usage(isa.event)');
SELECT isnt((SELECT id FROM subs WHERE label = 'everything'), NULL,
            'a service may subscribe to every subject (>)');

-- Two handlers of one service with the same function name in different
-- schemas: each (service, filter, handler) is its own subscription.
CREATE SCHEMA subs_other;
CREATE FUNCTION subs_other.on_usage(e isa.event) RETURNS void LANGUAGE sql AS $$SELECT$$;
INSERT INTO subs
SELECT 'other schema', isa.subscribe_to_events('billing', 'payment_service.payment.refunded',
                                               'subs_other.on_usage(isa.event)');
SELECT lives_ok($$SELECT isa.subscribe_to_events('billing', 'payment_service.payment.refunded',
                                                 'subs_test.on_usage(isa.event)')$$,
                'handlers of the same name in two schemas can both subscribe to the same filter');

SELECT lives_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_batch(isa.event[])')$$,
                'a batch handler taking isa.event[] may subscribe');

-- ---------------------------------------------------------------- refused
CREATE TEMP TABLE subs_before ON COMMIT DROP AS SELECT count(*) AS n FROM isa.subscriptions;

SELECT throws_ok($$SELECT isa.subscribe_to_events('nope', 'billing_service.>', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'unknown service "nope"',
                 'an unknown service raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('external', 'billing_service.>', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'unknown service "external"',
                 'service external (no schema, no inbox) cannot subscribe: 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service..x', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'invalid subject filter "billing_service..x"',
                 'an invalid subject filter raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'nosuch_service.thing.done', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'subject filter "nosuch_service.thing.done" matches no isa subject',
                 'a filter whose first token is not a known source raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'isa.devices.*.commands', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'subject filter "isa.devices.*.commands" matches no isa subject',
                 'devices'' commands are direct messages, not in the stream: no subscription (22023)');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'isa.devices.>', 'subs_test.on_usage(isa.event)')$$,
                 '22023', 'subject filter "isa.devices.>" matches no isa subject',
                 'a device message filter is one of the two named ones, isa.devices.*.acks or .heartbeat (22023)');
SELECT throws_ok($$SELECT isa.register_service('fake_device', NULL, 'device', 'claims the devices'' source')$$,
                 '22023', 'source "device" is reserved',
                 'no service may take the source of the envelopes the bridge makes of device messages (22023)');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.wrong_arg(jsonb)')$$,
                 '22023', 'handler subs_test.wrong_arg(jsonb) must be a function taking one isa.event (or an isa.event[] batch)',
                 'a handler taking another argument type raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.wrong_array(jsonb[])')$$,
                 '22023', 'handler subs_test.wrong_array(jsonb[]) must be a function taking one isa.event (or an isa.event[] batch)',
                 'a handler taking an array of anything but isa.event raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.two_args(isa.event, int)')$$,
                 '22023', 'handler subs_test.two_args(isa.event,integer) must be a function taking one isa.event (or an isa.event[] batch)',
                 'a handler taking two arguments raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.no_args()')$$,
                 '22023', 'handler subs_test.no_args() must be a function taking one isa.event (or an isa.event[] batch)',
                 'a handler taking no argument raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.a_procedure(isa.event)')$$,
                 '22023', 'handler subs_test.a_procedure(isa.event) must be a function taking one isa.event (or an isa.event[] batch)',
                 'a procedure as handler raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.set_returning(isa.event)')$$,
                 '22023', 'handler subs_test.set_returning(isa.event) must be a function taking one isa.event (or an isa.event[] batch)',
                 'a set-returning handler raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'nope(isa.event)')$$,
                 '42883', NULL,
                 'a handler named as text that does not exist raises 42883');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 4000000000::oid::regprocedure)$$,
                 '42883', 'handler function with OID 4000000000 does not exist',
                 'a handler OID that is no function raises 42883');

SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"speed": 1}')$$,
                 '22023', 'unknown subscription option "speed"',
                 'an unknown option raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '[]')$$,
                 '22023', 'subscription options must be a JSON object',
                 'options that are not an object raise 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"max_deliver": 0}')$$,
                 '22023', 'subscription option "max_deliver" must be an integer from 1 to 10000, not 0',
                 'max_deliver 0 raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"max_deliver": -1}')$$,
                 '22023', 'subscription option "max_deliver" must be an integer from 1 to 10000, not -1',
                 'max_deliver -1 raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"max_deliver": "x"}')$$,
                 '22023', 'subscription option "max_deliver" must be an integer from 1 to 10000, not "x"',
                 'max_deliver given as a string raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"max_deliver": 1.5}')$$,
                 '22023', 'subscription option "max_deliver" must be an integer from 1 to 10000, not 1.5',
                 'a fractional max_deliver raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"batch_size": 10001}')$$,
                 '22023', 'subscription option "batch_size" must be an integer from 1 to 10000, not 10001',
                 'a batch_size above 10000 raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"versions": []}')$$,
                 '22023', 'subscription option "versions" must be a non-empty array of major versions, not []',
                 'an empty versions list raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"versions": ["1"]}')$$,
                 '22023', 'subscription option "versions" must be a non-empty array of major versions, not ["1"]',
                 'versions given as strings raise 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'billing_service.>', 'subs_test.on_usage(isa.event)', '{"deliver_policy": "sometimes"}')$$,
                 '22023', 'subscription option "deliver_policy" must be "all" or "new", not "sometimes"',
                 'an unknown deliver_policy raises 22023');
SELECT throws_ok($$SELECT isa.subscribe_to_events('billing', 'external.usage.recorded.*', 'subs_test.on_usage(isa.event)', '{"max_deliver": 0}')$$,
                 '22023', 'subscription option "max_deliver" must be an integer from 1 to 10000, not 0',
                 're-subscribing an existing triple with bad options raises 22023 too');
SELECT is((SELECT count(*) FROM isa.subscriptions), (SELECT n FROM subs_before),
          'no refused subscription wrote a row');
SELECT is((SELECT s.options FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'),
          '{"max_deliver": 9, "versions": [1, 2]}'::jsonb,
          'a refused re-subscription leaves the existing options unchanged');

-- ---------------------------------------------------------------- unsubscribing
SELECT is(isa.unsubscribe_from_events('billing', 'payment_service.payment.completed', 'subs_test.on_usage(isa.event)'),
          true,
          'unsubscribe_from_events returns true when it removed a subscription');
SELECT is(isa.unsubscribe_from_events('billing', 'payment_service.payment.completed', 'subs_test.on_usage(isa.event)'),
          false,
          'unsubscribing again returns false');
SELECT is((SELECT count(*) FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label IN ('usage', 'payments')),
          1::bigint,
          'unsubscribing removed that subscription only');

-- ---------------------------------------------------------------- dead letters
SELECT throws_ok($$INSERT INTO isa.dead_letters (service, consumer, subject, reason, error_message, attempts)
                   VALUES ('billing', 'billing_on_usage', 'external.usage.recorded.model', 'invalid_envelope', 'no body', 1)$$,
                 '23514', NULL,
                 'a dead letter with neither event nor payload is refused (23514)');
SELECT throws_ok($$INSERT INTO isa.dead_letters (service, consumer, subject, payload, reason, error_message, attempts)
                   VALUES ('billing', 'billing_on_usage', 'external.usage.recorded.model', '\x00', 'lost_in_space', 'x', 1)$$,
                 '23514', NULL,
                 'a dead letter with an unknown reason is refused (23514)');
SELECT lives_ok($$INSERT INTO isa.dead_letters (subscription_id, service, consumer, subject, event_id, event,
                                                reason, error_message, error_sqlstate, attempts)
                  SELECT s.id, 'billing', s.durable_name, 'external.usage.recorded.model', isa.uuid_v7(),
                         '{"event_type": "usage.recorded.model"}', 'handler_error', 'division by zero', '22012', 5
                    FROM isa.subscriptions s JOIN subs USING (id) WHERE subs.label = 'usage'$$,
                'a handler_error dead letter with its event, error and attempts is accepted');
SELECT is((SELECT replay_count || ' ' || (replayed_at IS NULL) FROM isa.dead_letters WHERE error_message = 'division by zero'),
          '0 true',
          'a new dead letter has not been replayed');

SELECT * FROM finish();
ROLLBACK;
