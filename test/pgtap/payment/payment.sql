-- payment.sql — the payment service: card payments of orders recorded for a
-- Stripe PaymentIntent (payment.initiated), Stripe webhooks verified the Stripe
-- way (Stripe-Signature t=…,v1=… over "t.raw body" with the endpoint secret,
-- constant time, several v1, a tolerance in the past and the future), deduped
-- on Stripe's event id and mapped to payment.completed / failed / refunded and
-- subscription.created / canceled; everything else accepted and ignored.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(122);

-- ---------------------------------------------------------------- fixtures
-- A suffix of this run, so that ids never meet committed rows of other runs.
DO $$BEGIN PERFORM set_config('h5.run', substr(md5(random()::text), 1, 10), true); END$$;
CREATE FUNCTION pg_temp.intent(label text) RETURNS text LANGUAGE sql
    RETURN 'pi_' || label || current_setting('h5.run');
CREATE FUNCTION pg_temp.evt(label text) RETURNS text LANGUAGE sql
    RETURN 'evt_' || label || '_' || current_setting('h5.run');
CREATE FUNCTION pg_temp.new_user(label text) RETURNS uuid LANGUAGE sql
    RETURN (account.create_user('h5-pay-' || label || '-' || gen_random_uuid() || '@example.com', 'Payment ' || label)).user_id;

-- The endpoint secret of these tests, and Stripe's signature of a body.
SET LOCAL isa.stripe_webhook_secret = 'whsec_h5TestSecret0123456789abcdef';
CREATE FUNCTION pg_temp.v1(body text, ts bigint, secret text DEFAULT 'whsec_h5TestSecret0123456789abcdef')
RETURNS text LANGUAGE sql
    RETURN encode(isa.hmac_sha256(convert_to(secret, 'UTF8'), convert_to(ts || '.' || body, 'UTF8')), 'hex');
CREATE FUNCTION pg_temp.now_s() RETURNS bigint LANGUAGE sql RETURN floor(extract(epoch FROM now()));
CREATE FUNCTION pg_temp.header(body text, shift_s int DEFAULT 0, secret text DEFAULT 'whsec_h5TestSecret0123456789abcdef')
RETURNS text LANGUAGE sql
    RETURN 't=' || (pg_temp.now_s() + shift_s) || ',v1=' || pg_temp.v1(body, pg_temp.now_s() + shift_s, secret);
-- A Stripe event body as Stripe sends it: pretty-printed, with non-ASCII text.
CREATE FUNCTION pg_temp.body(id text, type text, obj jsonb) RETURNS text LANGUAGE sql
    RETURN jsonb_pretty(jsonb_build_object('id', id, 'object', 'event', 'api_version', '2024-06-20',
                                           'created', pg_temp.now_s(), 'livemode', false, 'type', type,
                                           'data', jsonb_build_object('object', obj || '{"description": "Café ☕ order"}')));
CREATE FUNCTION pg_temp.webhook(id text, type text, obj jsonb) RETURNS jsonb LANGUAGE sql
    RETURN payment.handle_stripe_webhook(pg_temp.body(id, type, obj), pg_temp.header(pg_temp.body(id, type, obj)));
CREATE FUNCTION pg_temp.intent_obj(intent text, amount bigint, currency text DEFAULT 'usd') RETURNS jsonb LANGUAGE sql
    RETURN jsonb_build_object('id', intent, 'object', 'payment_intent', 'amount', amount,
                              'amount_received', amount, 'currency', currency, 'status', 'succeeded');
CREATE FUNCTION pg_temp.charge_obj(charge text, intent text, amount bigint, refunded bigint) RETURNS jsonb LANGUAGE sql
    RETURN jsonb_build_object('id', charge, 'object', 'charge', 'payment_intent', intent, 'amount', amount,
                              'amount_refunded', refunded, 'currency', 'usd', 'refunded', refunded = amount);
CREATE FUNCTION pg_temp.sub_obj(sub text, metadata jsonb, price text DEFAULT 'price_basic') RETURNS jsonb LANGUAGE sql
    RETURN jsonb_build_object('id', sub, 'object', 'subscription', 'customer', 'cus_h5test', 'status', 'active',
                              'metadata', metadata,
                              'items', jsonb_build_object('object', 'list', 'data', jsonb_build_array(
                                  jsonb_build_object('id', 'si_1', 'price', jsonb_build_object('id', price)))));
-- The message, detail and hint of the error a statement raises (NULL if none).
CREATE FUNCTION pg_temp.error_text(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text; h text;
BEGIN
    EXECUTE stmt;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', m, d, h);
END $$;
-- The data of the events of a type in payment's outbox whose data field key is value.
CREATE FUNCTION pg_temp.outbox(event_type text, key text, value text) RETURNS SETOF jsonb LANGUAGE sql
    AS $$SELECT o.data FROM payment.outbox o WHERE o.event_type = $1 AND o.data ->> $2 = $3 ORDER BY o.id$$;

CREATE TEMP TABLE pay (label text PRIMARY KEY, payment_id uuid, order_id uuid, user_id uuid, intent text) ON COMMIT DROP;
CREATE TEMP TABLE usr (label text PRIMARY KEY, user_id uuid) ON COMMIT DROP;
INSERT INTO usr VALUES ('ann', pg_temp.new_user('ann')), ('bob', pg_temp.new_user('bob'));

-- ---------------------------------------------------------------- schema and privileges
SELECT tables_are('payment', ARRAY['payments', 'stripe_events', 'subscriptions', 'outbox', 'inbox'],
                  'schema payment has its three tables, its outbox and its inbox');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'payment'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['payment.create_payment(uuid,uuid,bigint,text,text,bigint)', 'payment.get_payment(uuid)',
                    'payment.get_my_payment(uuid,uuid)',
                    'payment.get_payment_by_intent(text)', 'payment.list_payments(uuid,integer)',
                    'payment.list_subscriptions(uuid)', 'payment.handle_stripe_webhook(text,text)'],
              'isa_app may execute exactly the API, no internal function');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'payment'::regnamespace
             AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))),
          0::bigint, 'no function of schema payment is executable by PUBLIC');
SELECT is((SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'payment'::regnamespace AND c.relkind IN ('r', 'p')
             AND has_table_privilege('isa_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')),
          0::bigint, 'isa_app has no privilege on any table of schema payment');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'payment'::regnamespace
             AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
             AND NOT (p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))),
          0::bigint, 'every API function is SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.oid IN ('payment.handle_stripe_webhook(text,text)'::regprocedure, 'payment._webhook_secret()'::regprocedure)
              AND p.proowner = 'isa_svc_payment'::regrole AND NOT has_function_privilege('isa_app', p.oid, 'EXECUTE')),
          ARRAY['payment._webhook_secret()'],
          'handle_stripe_webhook belongs to the payment service''s role, which alone reads the secret (payment._webhook_secret)');

-- ---------------------------------------------------------------- create_payment
INSERT INTO pay
SELECT 'a', p.payment_id, p.order_id, p.user_id, p.stripe_payment_intent_id
  FROM usr u, payment.create_payment(isa.uuid_v7(), u.user_id, 1000, 'usd', pg_temp.intent('A'), 300) p
 WHERE u.label = 'ann';
SELECT is((SELECT (p.user_id, p.amount, p.currency, p.tokens, p.status, p.stripe_payment_intent_id,
                   p.amount_refunded, p.tokens_refunded, p.failure_reason)::text
             FROM pay x, payment.get_payment(x.payment_id) p WHERE x.label = 'a'),
          (SELECT (user_id, 1000, 'usd', 300, 'pending', pg_temp.intent('A'), 0, 0, NULL::text)::text FROM usr WHERE label = 'ann'),
          'create_payment records a pending payment with the amount, currency, tokens and PaymentIntent');
SELECT is((SELECT substr(payment_id::text, 15, 1) FROM pay WHERE label = 'a'), '7', 'the payment id is a UUIDv7');
SELECT is((SELECT array_agg(d) FROM pay x, pg_temp.outbox('payment.initiated', 'payment_id', x.payment_id::text) d WHERE x.label = 'a'),
          (SELECT ARRAY[jsonb_build_object('payment_id', payment_id, 'order_id', order_id, 'user_id', user_id,
                                           'amount', 1000, 'currency', 'usd', 'tokens', 300,
                                           'stripe_payment_intent_id', intent)] FROM pay WHERE label = 'a'),
          'create_payment publishes one payment.initiated with payment_id, order_id, user_id, amount, currency, tokens and the PaymentIntent');
SELECT is((SELECT source FROM payment.outbox o, pay x WHERE x.label = 'a' AND o.data ->> 'payment_id' = x.payment_id::text),
          'payment_service', 'its source is payment_service');
SELECT is((SELECT p.payment_id FROM pay x, payment.create_payment(x.order_id, x.user_id, 1000, 'usd', x.intent, 300) p WHERE x.label = 'a'),
          (SELECT payment_id FROM pay WHERE label = 'a'),
          'the same call again returns the first payment (the PaymentIntent id is the idempotency key)');
SELECT is((SELECT count(*) FROM pay x, pg_temp.outbox('payment.initiated', 'stripe_payment_intent_id', x.intent) WHERE x.label = 'a'),
          1::bigint, 'and publishes nothing more');
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 1000, 'usd', %L, 300)$$, user_id, intent),
                 '23505', format('PaymentIntent %s is already recorded for another payment', intent),
                 'the PaymentIntent of another order is a duplicate (23505)')
  FROM pay WHERE label = 'a';
SELECT throws_ok(format($$SELECT payment.create_payment(%L, %L, 1000, 'usd', %L, 300)$$, order_id, user_id, pg_temp.intent('Aother')),
                 '23505', format('order %s already has a payment', order_id),
                 'a second payment of the same order is a duplicate (23505)')
  FROM pay WHERE label = 'a';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 1000, 'usd', %L, 300)$$, gen_random_uuid(), pg_temp.intent('X')),
                 'P0002', NULL, 'an unknown user is P0002');
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 0, 'usd', %L)$$, user_id, pg_temp.intent('X')),
                 '22023', 'amount must be a positive number of minor currency units (cents), not 0', 'amount 0 is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, -5, 'usd', %L)$$, user_id, pg_temp.intent('X')),
                 '22023', 'amount must be a positive number of minor currency units (cents), not -5', 'a negative amount is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 100, 'USD', %L)$$, user_id, pg_temp.intent('X')),
                 '22023', 'currency must be a lower-case ISO 4217 code, not "USD"', 'an upper-case currency is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 100, 'tokens', %L)$$, user_id, pg_temp.intent('X')),
                 '22023', 'currency must be a lower-case ISO 4217 code, not "tokens"', 'a currency that is not 3 letters is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 100, 'usd', 'ch_3MmlLrLkdIwHu7ix0snN0B15')$$, user_id),
                 '22023', 'stripe_payment_intent_id must be a Stripe PaymentIntent id (pi_ and letters or digits), not "ch_3MmlLrLkdIwHu7ix0snN0B15"',
                 'a charge id instead of a PaymentIntent id is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 100, 'usd', 'pi_3MtwBw_secret_YrKJUKribcBjcG8')$$, user_id),
                 '22023', NULL, 'a PaymentIntent client_secret is refused (22023)')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(isa.uuid_v7(), %L, 100, 'usd', %L, -1)$$, user_id, pg_temp.intent('X')),
                 '22023', 'tokens must be 0 or more, not -1', 'negative tokens are 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT payment.create_payment(NULL, %L, 100, 'usd', %L)$$, user_id, pg_temp.intent('X')),
                 '22004', 'order_id must not be null', 'a NULL order_id is 22004')
  FROM usr WHERE label = 'ann';
SELECT is((SELECT count(*) FROM payment.payments p, usr u WHERE u.label = 'ann' AND p.user_id = u.user_id),
          1::bigint, 'none of the refused calls wrote a payment');

-- ---------------------------------------------------------------- reading payments
INSERT INTO pay
SELECT v.label, p.payment_id, p.order_id, p.user_id, p.stripe_payment_intent_id
  FROM usr u, (VALUES ('b', 'B', 2500::bigint, 0::bigint), ('c', 'C', 800, 80), ('d', 'D', 500, 50)) v (label, suffix, amount, tokens),
       LATERAL payment.create_payment(isa.uuid_v7(), u.user_id, v.amount, 'usd', pg_temp.intent(v.suffix), v.tokens) p
 WHERE u.label = 'ann';
SELECT is((SELECT p.payment_id FROM pay x, payment.get_payment_by_intent(x.intent) p WHERE x.label = 'b'),
          (SELECT payment_id FROM pay WHERE label = 'b'), 'get_payment_by_intent finds the payment of a PaymentIntent');
SELECT throws_ok(format('SELECT payment.get_payment(%L)', '01a21c2c-86e5-759b-a185-c2f760b7b60e'),
                 'P0002', 'payment 01a21c2c-86e5-759b-a185-c2f760b7b60e not found', 'get_payment of an unknown id is P0002');
SELECT is((SELECT payment.get_my_payment(u.user_id, x.payment_id)::text FROM pay x, usr u WHERE x.label = 'b' AND u.label = 'ann'),
          (SELECT payment.get_payment(payment_id)::text FROM pay WHERE label = 'b'), 'get_my_payment returns the payment to its owner');
SELECT throws_ok(format('SELECT payment.get_my_payment(%L, %L)', u.user_id, x.payment_id),
                 'P0002', format('payment %s not found', x.payment_id),
                 'get_my_payment of another user''s payment is P0002, as for an unknown one')
  FROM pay x, usr u WHERE x.label = 'b' AND u.label = 'bob';
SELECT throws_ok(format('SELECT payment.get_my_payment(%L, NULL)', user_id), '22004', 'payment_id must not be null',
                 'get_my_payment without a payment is 22004')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format('SELECT payment.get_payment_by_intent(%L)', pg_temp.intent('Nobody')),
                 'P0002', format('no payment for PaymentIntent %s', pg_temp.intent('Nobody')), 'get_payment_by_intent of an unknown PaymentIntent is P0002');
SELECT throws_ok($$SELECT payment.get_payment_by_intent('evt_123')$$, '22023', NULL,
                 'get_payment_by_intent of something that is not a PaymentIntent id is 22023');
SELECT is((SELECT array_agg(p.stripe_payment_intent_id) FROM usr u, payment.list_payments(u.user_id) p WHERE u.label = 'ann'),
          ARRAY[pg_temp.intent('D'), pg_temp.intent('C'), pg_temp.intent('B'), pg_temp.intent('A')],
          'list_payments returns a user''s payments, newest first');
SELECT is((SELECT count(*) FROM usr u, payment.list_payments(u.user_id, 2) WHERE u.label = 'ann'), 2::bigint,
          'list_payments returns at most row_limit payments');
SELECT throws_ok(format('SELECT payment.list_payments(%L)', gen_random_uuid()), 'P0002', NULL,
                 'list_payments of an unknown user is P0002');
SELECT throws_ok(format('SELECT payment.list_payments(%L, 0)', user_id), '22023', 'row_limit must be from 1 to 1000, not 0',
                 'list_payments with row_limit 0 is 22023')
  FROM usr WHERE label = 'ann';

-- ---------------------------------------------------------------- webhook: the signature
SELECT is(pg_temp.webhook(pg_temp.evt('other'), 'customer.created', '{"id": "cus_h5test", "object": "customer"}'),
          jsonb_build_object('status', 'ignored', 'event_id', pg_temp.evt('other'), 'type', 'customer.created', 'reason', 'unhandled_type'),
          'a correctly signed event of a type isa does not map is accepted and ignored');
SELECT is((SELECT (type, outcome, reason, object_id)::text FROM payment.stripe_events WHERE event_id = pg_temp.evt('other')),
          '(customer.created,ignored,unhandled_type,cus_h5test)', 'and recorded with its outcome');
SELECT is((SELECT livemode::text || ' ' || (abs(extract(epoch FROM stripe_created_at) - pg_temp.now_s()) < 1)::text
             FROM payment.stripe_events WHERE event_id = pg_temp.evt('other')),
          'false true', 'with livemode and Stripe''s created time');

CREATE TEMP TABLE events_before ON COMMIT DROP AS SELECT count(*) AS n FROM payment.stripe_events;
CREATE TEMP TABLE wh (label text PRIMARY KEY, body text) ON COMMIT DROP;
INSERT INTO wh VALUES ('good', pg_temp.body(pg_temp.evt('sig'), 'customer.created', '{"id": "cus_h5test"}')),
                      ('other', pg_temp.body(pg_temp.evt('sig2'), 'customer.created', '{"id": "cus_h5test"}'));

SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', replace(g.body, 'cus_h5test', 'cus_h5tesT'), pg_temp.header(g.body)),
                 '22023', 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp',
                 'a tampered body (one character changed) is refused (22023)')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body || ' ', pg_temp.header(g.body)),
                 '22023', 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp',
                 'a body with one byte appended (trailing space) is refused: the raw body is signed byte for byte')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, pg_temp.header(g.body, 0, 'whsec_someOtherEndpoint')),
                 '22023', 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp',
                 'a signature made with another secret is refused (22023)')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body,
                        't=' || (pg_temp.now_s() + 1) || ',v1=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp',
                 'a signature moved to another timestamp is refused (the timestamp is signed)')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body,
                        't=' || pg_temp.now_s() || ',v1=' || pg_temp.v1(o.body, pg_temp.now_s())),
                 '22023', NULL, 'the signature of another event''s body is refused')
  FROM wh g, wh o WHERE g.label = 'good' AND o.label = 'other';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body,
                        't=' || pg_temp.now_s() || ',v1=' || upper(pg_temp.v1(g.body, pg_temp.now_s()))),
                 '22023', NULL, 'a v1 in upper-case hex is refused (Stripe sends lower-case hex and compares exactly)')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body,
                        't=' || pg_temp.now_s() || ',v1=' || repeat('0', 64) || ',v0=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature does not match: no v1 signature is valid for this body and timestamp',
                 'a valid signature under scheme v0 does not count: only v1 is checked')
  FROM wh g WHERE g.label = 'good';
SELECT ok(strpos(e, 'whsec_h5TestSecret0123456789abcdef') = 0 AND strpos(e, pg_temp.v1(g.body, pg_temp.now_s())) = 0
          AND strpos(e, pg_temp.v1(replace(g.body, 'cus_h5test', 'cus_h5tesT'), pg_temp.now_s())) = 0,
          'the refusal''s message, detail and hint carry neither the secret nor the expected signature')
  FROM wh g, pg_temp.error_text(format('SELECT payment.handle_stripe_webhook(%L, %L)',
                                       replace(g.body, 'cus_h5test', 'cus_h5tesT'), pg_temp.header(g.body))) e
 WHERE g.label = 'good';
SELECT is((SELECT count(*) FROM payment.stripe_events), (SELECT n FROM events_before),
          'no refused webhook was recorded');

SELECT is(payment.handle_stripe_webhook(g.body, 't=' || pg_temp.now_s() || ',v1=' || repeat('ab', 32)
                                                 || ',v1=' || pg_temp.v1(g.body, pg_temp.now_s()) || ',v0=' || repeat('cd', 32)) ->> 'status',
          'ignored', 'with two v1 signatures (as while the endpoint secret is rolled), one valid is enough; v0 is ignored')
  FROM wh g WHERE g.label = 'good';
SELECT is(payment.handle_stripe_webhook(o.body, 'v1=' || pg_temp.v1(o.body, pg_temp.now_s()) || ', t=' || pg_temp.now_s()) ->> 'status',
          'ignored', 'the order of the header''s entries does not matter, nor a space after a comma')
  FROM wh o WHERE o.label = 'other';

SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', body, pg_temp.header(body, -301)),
                 '22023', 'Stripe-Signature timestamp is too old: 301 s ago, the tolerance is 300 s',
                 'a correctly signed event 301 s old is refused (22023)')
  FROM pg_temp.body(pg_temp.evt('stale'), 'customer.created', '{}') body;
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', body, pg_temp.header(body, 301)),
                 '22023', 'Stripe-Signature timestamp is in the future: 301 s ahead, the tolerance is 300 s',
                 'a correctly signed event 301 s in the future is refused (22023)')
  FROM pg_temp.body(pg_temp.evt('future'), 'customer.created', '{}') body;
SELECT is(payment.handle_stripe_webhook(body, pg_temp.header(body, -299)) ->> 'status', 'ignored',
          'an event 299 s old is within the tolerance')
  FROM pg_temp.body(pg_temp.evt('old299'), 'customer.created', '{}') body;
SELECT is(payment.handle_stripe_webhook(body, pg_temp.header(body, 299)) ->> 'status', 'ignored',
          'an event 299 s ahead is within the tolerance')
  FROM pg_temp.body(pg_temp.evt('new299'), 'customer.created', '{}') body;
SET LOCAL isa.stripe_webhook_tolerance = 60;
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', body, pg_temp.header(body, -120)),
                 '22023', 'Stripe-Signature timestamp is too old: 120 s ago, the tolerance is 60 s',
                 'isa.stripe_webhook_tolerance sets the tolerance')
  FROM pg_temp.body(pg_temp.evt('tol60'), 'customer.created', '{}') body;
RESET isa.stripe_webhook_tolerance;

SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, 'garbage'),
                 '22023', 'Stripe-Signature header is malformed: "garbage" is not scheme=value',
                 'a malformed header is refused (22023)')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, 'v1=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature header has no timestamp (t=)', 'a header without t= is refused')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, 't=' || pg_temp.now_s() || ',v0=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature header has no v1 signature', 'a header without v1= is refused')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, 't=yesterday,v1=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature header is malformed: t must appear once, as a Unix time in seconds',
                 'a timestamp that is not a number is refused')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body,
                        't=' || pg_temp.now_s() || ',t=' || pg_temp.now_s() || ',v1=' || pg_temp.v1(g.body, pg_temp.now_s())),
                 '22023', 'Stripe-Signature header is malformed: t must appear once, as a Unix time in seconds',
                 'a header with two timestamps is refused')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, NULL)', g.body),
                 '22023', 'Stripe-Signature header is missing', 'a missing header is refused')
  FROM wh g WHERE g.label = 'good';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', b, pg_temp.header(b)),
                 '22023', 'Stripe webhook body is not JSON', 'a correctly signed body that is not JSON is refused (22023)')
  FROM (VALUES ('{"id": "evt_x", "type": ')) v (b);
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', b, pg_temp.header(b)),
                 '22023', 'Stripe webhook body has no event id (evt_...)', 'a body without an event id is refused (22023)')
  FROM (VALUES ('{"type": "payment_intent.succeeded", "data": {"object": {}}}')) v (b);
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', b, pg_temp.header(b)),
                 '22023', 'Stripe webhook body has no event type', 'a body without a type is refused (22023)')
  FROM (VALUES ('{"id": "evt_h5notype", "data": {"object": {}}}')) v (b);

SET LOCAL isa.stripe_webhook_secret = '';
SELECT throws_ok(format('SELECT payment.handle_stripe_webhook(%L, %L)', g.body, pg_temp.header(g.body)),
                 '55000', 'Stripe webhook secret not configured', 'without a configured secret every webhook is refused (55000)')
  FROM wh g WHERE g.label = 'good';
SET LOCAL isa.stripe_webhook_secret = 'whsec_h5TestSecret0123456789abcdef';

-- isa_app may not compute HMACs: the request is prepared first.
DO $$BEGIN
    PERFORM set_config('h5.app_body', body, true), set_config('h5.app_signature', pg_temp.header(body), true)
       FROM pg_temp.body(pg_temp.evt('asapp'), 'customer.created', '{}') body;
END$$;
SET LOCAL ROLE isa_app;
SELECT throws_ok($$SELECT current_setting('isa.stripe_webhook_secret')$$, '42501', NULL,
                 'isa_app cannot read the webhook secret');
SELECT is(payment.handle_stripe_webhook(current_setting('h5.app_body'), current_setting('h5.app_signature')) ->> 'status', 'ignored',
          'isa_app (the HTTP front) can hand a webhook to handle_stripe_webhook, which reads the secret as its owner');
SELECT throws_ok($$SELECT count(*) FROM payment.stripe_events$$, '42501', NULL, 'isa_app cannot read payment.stripe_events');
RESET ROLE;

-- ---------------------------------------------------------------- payment_intent.succeeded
SELECT is(pg_temp.webhook(pg_temp.evt('a_ok'), 'payment_intent.succeeded', pg_temp.intent_obj(intent, 1000)),
          jsonb_build_object('status', 'processed', 'event_id', pg_temp.evt('a_ok'), 'type', 'payment_intent.succeeded'),
          'payment_intent.succeeded is processed')
  FROM pay WHERE label = 'a';
SELECT is((SELECT status FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'a'), 'succeeded',
          'the payment is succeeded');
SELECT is((SELECT array_agg(d) FROM pay x, pg_temp.outbox('payment.completed', 'payment_id', x.payment_id::text) d WHERE x.label = 'a'),
          (SELECT ARRAY[jsonb_build_object('payment_id', payment_id, 'order_id', order_id, 'user_id', user_id,
                                           'amount', 1000, 'currency', 'usd', 'tokens', 300, 'stripe_payment_intent_id', intent,
                                           'stripe_event_id', pg_temp.evt('a_ok'))] FROM pay WHERE label = 'a'),
          'payment.completed is published with payment_id, order_id, user_id, amount, currency, tokens, PaymentIntent and Stripe event id');
SELECT is((SELECT (outcome, payment_id)::text FROM payment.stripe_events WHERE event_id = pg_temp.evt('a_ok')),
          (SELECT ('processed', payment_id)::text FROM pay WHERE label = 'a'), 'the event is recorded as processed for the payment');
SELECT is(pg_temp.webhook(pg_temp.evt('a_ok'), 'payment_intent.succeeded', pg_temp.intent_obj(intent, 1000)),
          jsonb_build_object('status', 'duplicate', 'event_id', pg_temp.evt('a_ok'), 'type', 'payment_intent.succeeded'),
          'the same event delivered again is a duplicate')
  FROM pay WHERE label = 'a';
SELECT is(pg_temp.webhook(pg_temp.evt('a_ok2'), 'payment_intent.succeeded', pg_temp.intent_obj(intent, 1000)) ->> 'reason',
          'already_succeeded', 'another event id for the same succeeded PaymentIntent is ignored (already_succeeded)')
  FROM pay WHERE label = 'a';
SELECT is((SELECT count(*) FROM pay x, pg_temp.outbox('payment.completed', 'payment_id', x.payment_id::text) WHERE x.label = 'a'),
          1::bigint, 'payment.completed is still published once');
SELECT is(pg_temp.webhook(pg_temp.evt('a_late_fail'), 'payment_intent.payment_failed',
                          pg_temp.intent_obj(intent, 1000) || '{"last_payment_error": {"message": "Your card was declined."}}') ->> 'reason',
          'already_succeeded', 'a late payment_intent.payment_failed does not fail a succeeded payment')
  FROM pay WHERE label = 'a';
SELECT is((SELECT status || ' ' || (SELECT count(*) FROM pg_temp.outbox('payment.failed', 'payment_id', x.payment_id::text))
             FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'a'),
          'succeeded 0', 'the payment stays succeeded and no payment.failed is published');
SET LOCAL client_min_messages = error;     -- the warning of the next test is expected
SELECT is(pg_temp.webhook(pg_temp.evt('c_mismatch'), 'payment_intent.succeeded', pg_temp.intent_obj(intent, 1)) ->> 'reason',
          'amount_mismatch: Stripe reports 1 usd, the payment is 800 usd',
          'a PaymentIntent that succeeded for another amount is not completed (ignored with the reason, for a person)')
  FROM pay WHERE label = 'c';
RESET client_min_messages;
SELECT is((SELECT status FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'c'), 'pending', 'that payment stays pending');
SELECT is(pg_temp.webhook(pg_temp.evt('unknown_pi'), 'payment_intent.succeeded', pg_temp.intent_obj(pg_temp.intent('Unknown'), 1000)),
          jsonb_build_object('status', 'ignored', 'event_id', pg_temp.evt('unknown_pi'), 'type', 'payment_intent.succeeded',
                             'reason', 'unknown_payment_intent'),
          'a PaymentIntent isa does not know is accepted and ignored (unknown_payment_intent), not an error Stripe would retry');
SELECT is((SELECT (outcome, reason)::text FROM payment.stripe_events WHERE event_id = pg_temp.evt('unknown_pi')),
          '(ignored,unknown_payment_intent)', 'and recorded so');
SELECT is(payment.handle_stripe_webhook(b, pg_temp.header(b)) ->> 'reason', 'malformed_object: data.object is missing',
          'a mapped event without data.object is ignored with the reason')
  FROM (SELECT jsonb_build_object('id', pg_temp.evt('noobj'), 'type', 'payment_intent.succeeded')::text) v (b);

-- ---------------------------------------------------------------- payment_intent.payment_failed
SELECT is(pg_temp.webhook(pg_temp.evt('b_fail'), 'payment_intent.payment_failed',
                          pg_temp.intent_obj(intent, 2500) || '{"status": "requires_payment_method", "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}') ->> 'status',
          'processed', 'payment_intent.payment_failed is processed')
  FROM pay WHERE label = 'b';
SELECT is((SELECT status || ': ' || failure_reason FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'b'),
          'failed: Your card was declined.', 'the payment is failed, with last_payment_error.message as its reason');
SELECT is((SELECT array_agg(d) FROM pay x, pg_temp.outbox('payment.failed', 'payment_id', x.payment_id::text) d WHERE x.label = 'b'),
          (SELECT ARRAY[jsonb_build_object('payment_id', payment_id, 'order_id', order_id, 'user_id', user_id,
                                           'amount', 2500, 'currency', 'usd', 'reason', 'Your card was declined.',
                                           'stripe_payment_intent_id', intent, 'stripe_event_id', pg_temp.evt('b_fail'))] FROM pay WHERE label = 'b'),
          'payment.failed is published with payment_id, order_id, user_id, amount, currency, reason and the PaymentIntent');
SELECT is(pg_temp.webhook(pg_temp.evt('b_fail2'), 'payment_intent.payment_failed', pg_temp.intent_obj(intent, 2500)) ->> 'reason',
          'already_failed', 'a second failure of the same PaymentIntent is ignored (already_failed)')
  FROM pay WHERE label = 'b';
SELECT is(pg_temp.webhook(pg_temp.evt('b_retry_ok'), 'payment_intent.succeeded', pg_temp.intent_obj(intent, 2500)) ->> 'status',
          'processed', 'a failed PaymentIntent that then succeeds (the customer retried with another card) is processed')
  FROM pay WHERE label = 'b';
SELECT is((SELECT status || ' ' || coalesce(failure_reason, '-') || ' '
                  || (SELECT count(*) FROM pg_temp.outbox('payment.completed', 'payment_id', x.payment_id::text))
                  || ' ' || (SELECT count(*) FROM pg_temp.outbox('payment.failed', 'payment_id', x.payment_id::text))
             FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'b'),
          'succeeded - 1 1', 'the payment is succeeded with one payment.completed after its one payment.failed');

-- ---------------------------------------------------------------- charge.refunded
SELECT is(pg_temp.webhook(pg_temp.evt('a_ref1'), 'charge.refunded', pg_temp.charge_obj('ch_h5A', intent, 1000, 333)) ->> 'status',
          'processed', 'charge.refunded for a part of the amount is processed')
  FROM pay WHERE label = 'a';
SELECT is((SELECT (status, amount_refunded, tokens_refunded)::text FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'a'),
          '(partially_refunded,333,99)', 'the payment is partially_refunded: 333 of 1000 refunded, floor(300 x 333 / 1000) = 99 tokens taken back');
SELECT is((SELECT d FROM pay x, pg_temp.outbox('payment.refunded', 'stripe_event_id', pg_temp.evt('a_ref1')) d WHERE x.label = 'a'),
          (SELECT jsonb_build_object('payment_id', payment_id, 'order_id', order_id, 'user_id', user_id,
                                     'amount_refunded', 333, 'refund_amount', 333, 'currency', 'usd',
                                     'tokens', 99, 'total_tokens_refunded', 99, 'stripe_charge_id', 'ch_h5A',
                                     'stripe_event_id', pg_temp.evt('a_ref1')) FROM pay WHERE label = 'a'),
          'payment.refunded carries the refund, the tokens to take back, the totals and the charge');
SELECT is(pg_temp.webhook(pg_temp.evt('a_ref1b'), 'charge.refunded', pg_temp.charge_obj('ch_h5A', intent, 1000, 333)) ->> 'reason',
          'refund_already_recorded', 'a new event with the same cumulative refund adds nothing (refund_already_recorded)')
  FROM pay WHERE label = 'a';
SELECT is(pg_temp.webhook(pg_temp.evt('a_ref2'), 'charge.refunded', pg_temp.charge_obj('ch_h5A', intent, 1000, 1000)) ->> 'status',
          'processed', 'charge.refunded for the rest of the amount is processed')
  FROM pay WHERE label = 'a';
SELECT is((SELECT (status, amount_refunded, tokens_refunded)::text FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'a'),
          '(refunded,1000,300)', 'the payment is refunded, all its tokens taken back');
SELECT is((SELECT (d ->> 'refund_amount') || ' ' || (d ->> 'tokens') || ' ' || (d ->> 'amount_refunded') || ' ' || (d ->> 'total_tokens_refunded')
             FROM pg_temp.outbox('payment.refunded', 'stripe_event_id', pg_temp.evt('a_ref2')) d),
          '667 201 1000 300', 'the second payment.refunded carries this refund (667, 300 - 99 = 201 tokens) and the totals (1000, 300)');
SELECT is((SELECT sum((d ->> 'tokens')::bigint) FROM pay x, pg_temp.outbox('payment.refunded', 'payment_id', x.payment_id::text) d WHERE x.label = 'a'),
          300::numeric, 'the refunds take back exactly the tokens the payment bought');
SELECT is(pg_temp.webhook(pg_temp.evt('d_over'), 'charge.refunded', pg_temp.charge_obj('ch_h5D', intent, 500, 501)) ->> 'reason',
          'refund_exceeds_amount: 501 refunded of a payment of 500', 'a refund above the amount is ignored with the reason')
  FROM pay WHERE label = 'd';
SELECT is(pg_temp.webhook(pg_temp.evt('unknown_ch'), 'charge.refunded', pg_temp.charge_obj('ch_h5X', pg_temp.intent('Unknown'), 500, 500)) ->> 'reason',
          'unknown_payment_intent', 'a refund of an unknown PaymentIntent is ignored (unknown_payment_intent)');
SELECT is(pg_temp.webhook(pg_temp.evt('d_ref'), 'charge.refunded',
                          pg_temp.charge_obj('ch_h5D', intent, 500, 250) || jsonb_build_object('payment_intent', jsonb_build_object('id', intent))) ->> 'status',
          'processed', 'a refund of a payment still pending (its success event late) is processed; an expanded payment_intent object is read too')
  FROM pay WHERE label = 'd';
SELECT is((SELECT (status, amount_refunded, tokens_refunded)::text
                  || ' ' || (SELECT string_agg(o.event_type, ',' ORDER BY o.id) FROM payment.outbox o
                              WHERE o.data ->> 'payment_id' = x.payment_id::text)
             FROM pay x, payment.get_payment(x.payment_id) WHERE x.label = 'd'),
          '(partially_refunded,250,25) payment.initiated,payment.completed,payment.refunded',
          'it is completed first (a refunded charge was paid), then refunded');

-- ---------------------------------------------------------------- subscriptions
SELECT is(pg_temp.webhook(pg_temp.evt('sub1'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5one' || current_setting('h5.run'),
                                          jsonb_build_object('user_id', user_id, 'credits', '5000', 'plan', 'pro_monthly'))) ->> 'status',
          'processed', 'customer.subscription.created with metadata user_id and credits is processed')
  FROM usr WHERE label = 'bob';
SELECT is((SELECT (s.user_id, s.plan, s.credits, s.status)::text FROM usr u, payment.list_subscriptions(u.user_id) s WHERE u.label = 'bob'),
          (SELECT (user_id, 'pro_monthly', 5000, 'active')::text FROM usr WHERE label = 'bob'),
          'the subscription is recorded for the user with its plan (metadata.plan) and credits');
SELECT is((SELECT d FROM pg_temp.outbox('subscription.created', 'stripe_subscription_id', 'sub_h5one' || current_setting('h5.run')) d),
          (SELECT jsonb_build_object('subscription_id', s.subscription_id, 'user_id', s.user_id,
                                     'stripe_subscription_id', s.stripe_subscription_id, 'plan', 'pro_monthly', 'credits', 5000,
                                     'stripe_event_id', pg_temp.evt('sub1'))
             FROM usr u, payment.list_subscriptions(u.user_id) s WHERE u.label = 'bob'),
          'subscription.created is published with subscription_id, user_id, the Stripe id, plan and credits');
SELECT is((SELECT subscription_id FROM payment.stripe_events WHERE event_id = pg_temp.evt('sub1')),
          (SELECT s.subscription_id FROM usr u, payment.list_subscriptions(u.user_id) s WHERE u.label = 'bob'),
          'the event is recorded with the subscription');
SELECT is(pg_temp.webhook(pg_temp.evt('sub1b'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5one' || current_setting('h5.run'),
                                          jsonb_build_object('user_id', user_id, 'credits', '5000', 'plan', 'pro_monthly'))) ->> 'reason',
          'subscription_already_recorded', 'the same subscription under a new event id is ignored: its credits are granted once')
  FROM usr WHERE label = 'bob';
SELECT is(pg_temp.webhook(pg_temp.evt('sub2'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5two' || current_setting('h5.run'),
                                          jsonb_build_object('user_id', user_id, 'credits', 100), 'price_1Pbasic')) ->> 'status',
          'processed', 'without metadata.plan the plan is the first item''s price id (credits may also be a JSON number)')
  FROM usr WHERE label = 'bob';
SELECT is((SELECT d ->> 'plan' FROM pg_temp.outbox('subscription.created', 'stripe_subscription_id', 'sub_h5two' || current_setting('h5.run')) d),
          'price_1Pbasic', 'its plan is price_1Pbasic');
SELECT is(pg_temp.webhook(pg_temp.evt('sub_nouser'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5three' || current_setting('h5.run'), '{"credits": "100"}')) ->> 'reason',
          'invalid_metadata: metadata.user_id is missing or not a UUID', 'without metadata.user_id the event is ignored with the reason');
SELECT is(pg_temp.webhook(pg_temp.evt('sub_nocredits'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5three' || current_setting('h5.run'), jsonb_build_object('user_id', user_id, 'credits', 'lots'))) ->> 'reason',
          'invalid_metadata: metadata.credits is missing or not a positive whole number', 'credits that are not a positive whole number are ignored with the reason')
  FROM usr WHERE label = 'bob';
SELECT is(pg_temp.webhook(pg_temp.evt('sub_zero'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5three' || current_setting('h5.run'), jsonb_build_object('user_id', user_id, 'credits', '0'))) ->> 'reason',
          'invalid_metadata: metadata.credits is missing or not a positive whole number', 'zero credits are ignored with the reason')
  FROM usr WHERE label = 'bob';
SELECT is(pg_temp.webhook(pg_temp.evt('sub_ghost'), 'customer.subscription.created',
                          pg_temp.sub_obj('sub_h5three' || current_setting('h5.run'), jsonb_build_object('user_id', gen_random_uuid(), 'credits', '10'))) ->> 'reason',
          'unknown_user', 'a user_id account does not know is ignored (unknown_user)');
SELECT is((SELECT (outcome, reason)::text FROM payment.stripe_events WHERE event_id = pg_temp.evt('sub_ghost')),
          '(ignored,unknown_user)', 'and recorded with the reason');
SELECT is((SELECT count(*) FROM payment.subscriptions WHERE stripe_subscription_id = 'sub_h5three' || current_setting('h5.run')),
          0::bigint, 'none of the ignored events recorded a subscription');
SELECT is(pg_temp.webhook(pg_temp.evt('sub1_del'), 'customer.subscription.deleted',
                          pg_temp.sub_obj('sub_h5one' || current_setting('h5.run'), '{}') || '{"status": "canceled"}') ->> 'status',
          'processed', 'customer.subscription.deleted is processed');
SELECT is((SELECT s.status || ' ' || (s.canceled_at IS NOT NULL) FROM payment.list_subscriptions((SELECT user_id FROM usr WHERE label = 'bob')) s
            WHERE s.stripe_subscription_id = 'sub_h5one' || current_setting('h5.run')),
          'canceled true', 'the subscription is canceled');
SELECT is((SELECT d FROM pg_temp.outbox('subscription.canceled', 'stripe_subscription_id', 'sub_h5one' || current_setting('h5.run')) d),
          (SELECT jsonb_build_object('subscription_id', s.subscription_id, 'user_id', s.user_id,
                                     'stripe_subscription_id', s.stripe_subscription_id, 'plan', 'pro_monthly',
                                     'stripe_event_id', pg_temp.evt('sub1_del'))
             FROM payment.list_subscriptions((SELECT user_id FROM usr WHERE label = 'bob')) s
            WHERE s.stripe_subscription_id = 'sub_h5one' || current_setting('h5.run')),
          'subscription.canceled is published with subscription_id, user_id, the Stripe id and plan');
SELECT is(pg_temp.webhook(pg_temp.evt('sub1_del2'), 'customer.subscription.deleted',
                          pg_temp.sub_obj('sub_h5one' || current_setting('h5.run'), '{}')) ->> 'reason',
          'already_canceled', 'a second deletion is ignored (already_canceled)');
SELECT is(pg_temp.webhook(pg_temp.evt('sub_del_unknown'), 'customer.subscription.deleted',
                          pg_temp.sub_obj('sub_h5nobody' || current_setting('h5.run'), '{}')) ->> 'reason',
          'unknown_subscription', 'deleting a subscription isa does not know is ignored (unknown_subscription)');
SELECT is((SELECT count(*) FROM pg_temp.outbox('subscription.canceled', 'user_id', (SELECT user_id::text FROM usr WHERE label = 'bob'))),
          1::bigint, 'one subscription.canceled in all');

-- ---------------------------------------------------------------- the record of events
SELECT is((SELECT count(*) FROM payment.stripe_events WHERE event_id LIKE '%\_' || current_setting('h5.run') AND outcome IS NULL),
          0::bigint, 'every recorded event has its outcome');
SELECT is((SELECT count(*) FROM payment.stripe_events WHERE event_id LIKE '%\_' || current_setting('h5.run')),
          (SELECT count(DISTINCT event_id) FROM payment.stripe_events WHERE event_id LIKE '%\_' || current_setting('h5.run')),
          'each Stripe event id is recorded once');
SELECT is((SELECT count(*) FROM payment.outbox o, pay x WHERE o.data ->> 'payment_id' = x.payment_id::text
             AND (o.data::text LIKE '%whsec_%' OR o.metadata::text LIKE '%whsec_%')),
          0::bigint, 'no event carries the secret');
SELECT is((SELECT count(*) FROM payment.subscriptions s, usr u WHERE u.label = 'bob' AND s.user_id = u.user_id), 2::bigint,
          'bob has the two subscriptions the valid events created');

SELECT * FROM finish();
ROLLBACK;
