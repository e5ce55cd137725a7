-- orders.sql — the order service: a wallet order deducts its tokens and is
-- fulfilled in the same transaction (order.created, order.fulfilled); a card
-- order creates a pending payment for its Stripe PaymentIntent (order.created)
-- and is fulfilled when payment_service.payment.completed arrives, or
-- canceled on payment.failed; a pending order can be canceled; the same
-- idempotency key with the same arguments returns the first order.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(89);

-- ---------------------------------------------------------------- fixtures
DO $$BEGIN PERFORM set_config('h5.run', substr(md5(random()::text), 1, 10), true); END$$;
CREATE FUNCTION pg_temp.intent(label text) RETURNS text LANGUAGE sql
    RETURN 'pi_' || label || current_setting('h5.run');
-- A user as account creates it, with the wallet that wallet's user.created
-- handler opens (called here, as the bridge would), holding `tokens`.
CREATE FUNCTION pg_temp.new_user(label text, tokens bigint DEFAULT 0) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    u  uuid := (account.create_user('h5-ord-' || label || '-' || gen_random_uuid() || '@example.com', 'Order ' || label)).user_id;
    ev isa.event;
    h  regproc;
BEGIN
    SELECT o.id, o.event_type, o.source, o.version, o.occurred_at, o.data, o.metadata INTO ev
      FROM account.outbox o WHERE o.event_type = 'user.created' AND o.data ->> 'user_id' = u::text;
    FOR h IN SELECT s.handler::oid::regproc FROM isa.subscriptions s
              WHERE s.service = 'wallet'
                AND 'account_service.user.created' LIKE replace(replace(s.subject_filter, '*', '%'), '>', '%') LOOP
        EXECUTE format('SELECT %s($1)', h) USING ev;
    END LOOP;
    IF tokens > 0 THEN
        PERFORM wallet.add(u, tokens, 'h5-fund-' || u, 'manual');
    END IF;
    RETURN u;
END $$;
-- A payment_service event about a payment, as payment_service publishes it.
CREATE FUNCTION pg_temp.payment_event(event_type text, payment_id uuid, reason text DEFAULT NULL) RETURNS isa.event
LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object(
        'id', isa.uuid_v7(), 'event_type', event_type, 'source', 'payment_service', 'timestamp', now(),
        'data', jsonb_strip_nulls(jsonb_build_object(
            'payment_id', p.payment_id, 'order_id', p.order_id, 'user_id', p.user_id, 'amount', p.amount,
            'currency', p.currency, 'tokens', p.tokens, 'stripe_payment_intent_id', p.stripe_payment_intent_id,
            'reason', reason))))
      FROM payment.get_payment(payment_id) p
$$;
-- The data of order_service's events of a type about an order, oldest first.
CREATE FUNCTION pg_temp.events(event_type text, order_id uuid) RETURNS SETOF jsonb LANGUAGE sql
    AS $$SELECT o.data FROM orders.outbox o WHERE o.event_type = $1 AND o.data ->> 'order_id' = $2::text ORDER BY o.id$$;

CREATE TEMP TABLE usr (label text PRIMARY KEY, user_id uuid) ON COMMIT DROP;
INSERT INTO usr VALUES ('ann', pg_temp.new_user('ann', 1000)), ('bob', pg_temp.new_user('bob', 1000)),
                       ('cat', pg_temp.new_user('cat'));
CREATE TEMP TABLE ord (label text PRIMARY KEY, o orders.order_info) ON COMMIT DROP;
CREATE TEMP TABLE outbox_mark (label text PRIMARY KEY, n bigint) ON COMMIT DROP;

-- ---------------------------------------------------------------- schema and privileges
SELECT tables_are('orders', ARRAY['orders', 'outbox', 'inbox'], 'schema orders has its table, its outbox and its inbox');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'orders'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['orders.create_order(uuid,bigint,text,text,text,bigint,text,jsonb)', 'orders.get_order(uuid)',
                    'orders.get_my_order(uuid,uuid)', 'orders.list_orders(uuid,integer)', 'orders.cancel_order(uuid,text)',
                    'orders.cancel_my_order(uuid,uuid,text)'],
              'isa_app may execute exactly the API: not the handlers');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'orders'::regnamespace
             AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))),
          0::bigint, 'no function of schema orders is executable by PUBLIC');
SELECT is((SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'orders'::regnamespace AND c.relkind IN ('r', 'p')
             AND has_table_privilege('isa_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')),
          0::bigint, 'isa_app has no privilege on any table of schema orders');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'orders'::regnamespace
             AND has_function_privilege('isa_app', p.oid, 'EXECUTE')
             AND NOT (p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))),
          0::bigint, 'every API function is SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'orders'$$,
              ARRAY['payment_service.payment.completed orders.on_payment_completed(isa.event)',
                    'payment_service.payment.failed orders.on_payment_failed(isa.event)',
                    'payment_service.payment.refunded orders.on_payment_refunded(isa.event)'],
              'service order subscribes to payment.completed, payment.failed and payment.refunded');

-- ---------------------------------------------------------------- a wallet order
INSERT INTO outbox_mark SELECT 'before wallet order', count(*) FROM isa.outbox;
INSERT INTO ord SELECT 'w1', orders.create_order(user_id, 300, 'tokens', 'wallet', 'w1', 0, NULL, '[{"sku": "frame-theme-aurora", "qty": 1}]')
                  FROM usr WHERE label = 'ann';
SELECT is((SELECT ((o).user_id, (o).amount, (o).currency, (o).payment_method, (o).tokens, (o).items, (o).status,
                   (o).payment_id, (o).cancel_reason, (o).fulfilled_at IS NOT NULL)::text FROM ord WHERE label = 'w1'),
          (SELECT (user_id, 300, 'tokens', 'wallet', 0, '[{"sku": "frame-theme-aurora", "qty": 1}]'::jsonb, 'fulfilled',
                   NULL::uuid, NULL::text, true)::text FROM usr WHERE label = 'ann'),
          'a wallet order is fulfilled at once, with its amount, items and no payment');
SELECT is((SELECT substr((o).order_id::text, 15, 1) FROM ord WHERE label = 'w1'), '7', 'the order id is a UUIDv7');
SELECT is(wallet.get_balance(user_id), 700::bigint, 'its 300 tokens left the wallet (1000 -> 700) in the same transaction')
  FROM usr WHERE label = 'ann';
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.created', (o).order_id) d WHERE label = 'w1'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id, 'amount', 300, 'currency', 'tokens',
                                           'payment_method', 'wallet', 'tokens', 0)] FROM ord WHERE label = 'w1'),
          'order.created is published with order_id, user_id, amount, currency, payment_method and tokens');
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.fulfilled', (o).order_id) d WHERE label = 'w1'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id, 'payment_id', NULL)] FROM ord WHERE label = 'w1'),
          'order.fulfilled is published with order_id, user_id and a null payment_id');
SELECT is((SELECT string_agg(o.source || ':' || o.event_type, ' ' ORDER BY o.id) FROM isa.outbox o, ord
            WHERE label = 'w1' AND (o.data ->> 'order_id' = (ord.o).order_id::text OR o.data ->> 'reference_id' = (ord.o).order_id::text)),
          'order_service:order.created wallet_service:wallet.tokens.deducted order_service:order.fulfilled',
          'in this order: order.created, the wallet''s deduction, order.fulfilled');
SELECT is((SELECT (o.data ->> 'amount') || ' ' || (o.data ->> 'reference_type') FROM wallet.outbox o, ord
            WHERE label = 'w1' AND o.event_type = 'wallet.tokens.deducted' AND o.data ->> 'reference_id' = (ord.o).order_id::text),
          '300 order', 'the deduction is of 300 tokens, referencing the order');

INSERT INTO outbox_mark SELECT 'after wallet order', count(*) FROM isa.outbox;
SELECT is((SELECT (orders.create_order(user_id, 300, 'tokens', 'wallet', 'w1', 0, NULL, '[{"sku": "frame-theme-aurora", "qty": 1}]')).order_id
             FROM usr WHERE label = 'ann'),
          (SELECT (o).order_id FROM ord WHERE label = 'w1'),
          'the same idempotency key with the same arguments returns the first order');
SELECT is(wallet.get_balance(user_id), 700::bigint, 'and deducts nothing more') FROM usr WHERE label = 'ann';
SELECT is((SELECT count(*) FROM isa.outbox), (SELECT n FROM outbox_mark WHERE label = 'after wallet order'),
          'and publishes nothing');
SELECT throws_ok(format($$SELECT orders.create_order(%L, 301, 'tokens', 'wallet', 'w1')$$, user_id),
                 '23505', format('idempotency key "w1" was already used for another order (%s)', (SELECT (o).order_id FROM ord WHERE label = 'w1')),
                 'the same key with other arguments is 23505')
  FROM usr WHERE label = 'ann';
SELECT isnt((SELECT (orders.create_order(user_id, 300, 'tokens', 'wallet', 'w1', 0, NULL, '[{"sku": "frame-theme-aurora", "qty": 1}]')).order_id
               FROM usr WHERE label = 'bob'),
            (SELECT (o).order_id FROM ord WHERE label = 'w1'),
            'idempotency keys belong to a user: another user''s same key is another order');

INSERT INTO outbox_mark SELECT 'before refusals', count(*) FROM isa.outbox;
SELECT throws_ok(format($$SELECT orders.create_order(%L, 701, 'tokens', 'wallet', 'too-much')$$, user_id),
                 '23514', 'insufficient balance: the order costs 701 tokens',
                 'a wallet order above the balance is 23514')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 1, 'tokens', 'wallet', 'no-tokens')$$, user_id),
                 '23514', 'insufficient balance: the order costs 1 tokens',
                 'a wallet order of a user with an empty wallet is 23514')
  FROM usr WHERE label = 'cat';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'usd', 'wallet', 'k')$$, user_id),
                 '22023', 'a wallet order is paid in tokens: currency must be tokens, not "usd"', 'a wallet order in usd is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', 'k', 5)$$, user_id),
                 '22023', 'a wallet order cannot buy tokens: tokens must be 0, not 5', 'a wallet order buying tokens is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', 'k', 0, %L)$$, user_id, pg_temp.intent('W')),
                 '22023', 'a wallet order takes no stripe_payment_intent_id', 'a wallet order with a PaymentIntent is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'paypal', 'k')$$, user_id),
                 '22023', 'payment_method must be card or wallet, not "paypal"', 'an unknown payment method is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 0, 'tokens', 'wallet', 'k')$$, user_id),
                 '22023', 'amount must be positive, not 0', 'amount 0 is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'usd', 'card', 'k', -1, %L)$$, user_id, pg_temp.intent('W')),
                 '22023', 'tokens must be 0 or more, not -1', 'negative tokens are 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', '')$$, user_id),
                 '22023', 'idempotency_key must be 1 to 255 characters', 'an empty idempotency key is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', 'k', 0, NULL, '{"sku": "x"}')$$, user_id),
                 '22023', 'items must be a JSON array of at most 100 objects', 'items that are not an array are 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', 'k', 0, NULL, '["x"]')$$, user_id),
                 '22023', 'items must be a JSON array of at most 100 objects', 'items that are not objects are 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok($$SELECT orders.create_order(NULL, 10, 'tokens', 'wallet', 'k')$$,
                 '22004', 'user_id must not be null', 'a NULL user_id is 22004');
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', NULL)$$, user_id),
                 '22004', 'idempotency_key must not be null', 'a NULL idempotency key is 22004')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 10, 'tokens', 'wallet', 'k')$$, gen_random_uuid()),
                 'P0002', NULL, 'an unknown user is P0002');
SELECT throws_ok(format($$SELECT orders.create_order(%L, 1999, 'usd', 'card', 'k', 500)$$, user_id),
                 '22023', 'a card order needs stripe_payment_intent_id', 'a card order without a PaymentIntent is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 1999, 'tokens', 'card', 'k', 500, %L)$$, user_id, pg_temp.intent('W')),
                 '22023', 'a card order''s currency must be a lower-case ISO 4217 code, not "tokens"', 'a card order in tokens is 22023')
  FROM usr WHERE label = 'ann';
SELECT throws_ok(format($$SELECT orders.create_order(%L, 1999, 'usd', 'card', 'k', 500, 'pi_bad-id')$$, user_id),
                 '22023', NULL, 'a card order with a malformed PaymentIntent id is 22023 (from payment.create_payment)')
  FROM usr WHERE label = 'ann';
SELECT is((SELECT count(*) FROM isa.outbox), (SELECT n FROM outbox_mark WHERE label = 'before refusals'),
          'no refused order published anything');
SELECT is((SELECT count(*) FROM orders.orders o, usr u WHERE o.user_id = u.user_id AND u.label IN ('ann', 'cat')),
          1::bigint, 'and none was written: ann has her one order, cat none');
SELECT is(wallet.get_balance(user_id), 700::bigint, 'ann''s balance is unchanged') FROM usr WHERE label = 'ann';

-- ---------------------------------------------------------------- card orders
INSERT INTO ord SELECT 'c' || n, orders.create_order(user_id, 1999, 'usd', 'card', 'card-' || n, 500, pg_temp.intent('C' || n))
                  FROM usr, generate_series(1, 4) n WHERE label = 'bob';
SELECT is((SELECT ((o).amount, (o).currency, (o).payment_method, (o).tokens, (o).items, (o).status, (o).payment_id IS NOT NULL)::text
             FROM ord WHERE label = 'c1'),
          '(1999,usd,card,500,[],pending,t)', 'a card order is pending, with a payment');
SELECT is((SELECT (p.order_id, p.user_id, p.amount, p.currency, p.tokens, p.status, p.stripe_payment_intent_id)::text
             FROM ord, payment.get_payment((o).payment_id) p WHERE label = 'c1'),
          (SELECT ((o).order_id, (o).user_id, 1999, 'usd', 500, 'pending', pg_temp.intent('C1'))::text FROM ord WHERE label = 'c1'),
          'its payment (payment.create_payment) is pending for the order, the amount, the tokens and the PaymentIntent');
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.created', (o).order_id) d WHERE label = 'c1'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id, 'amount', 1999, 'currency', 'usd',
                                           'payment_method', 'card', 'tokens', 500)] FROM ord WHERE label = 'c1'),
          'order.created is published with the card order''s fields');
SELECT is((SELECT string_agg(o.source || ':' || o.event_type, ' ' ORDER BY o.id) FROM isa.outbox o, ord
            WHERE label = 'c1' AND o.data ->> 'order_id' = (ord.o).order_id::text),
          'order_service:order.created payment_service:payment.initiated',
          'order.created, then payment.initiated; no order.fulfilled yet');
SELECT is((SELECT (orders.create_order(user_id, 1999, 'usd', 'card', 'card-1', 500, pg_temp.intent('C1'))).payment_id
             FROM usr WHERE label = 'bob'),
          (SELECT (o).payment_id FROM ord WHERE label = 'c1'),
          'retrying a card order returns the first order and its payment');
SELECT is((SELECT count(*) FROM payment.payments p, ord WHERE label = 'c1' AND p.order_id = (ord.o).order_id), 1::bigint,
          'one payment for the order');
SELECT throws_ok(format($$SELECT orders.create_order(%L, 1999, 'usd', 'card', 'card-dup', 500, %L)$$, user_id, pg_temp.intent('C1')),
                 '23505', format('PaymentIntent %s is already recorded for another payment', pg_temp.intent('C1')),
                 'a card order with another order''s PaymentIntent is 23505')
  FROM usr WHERE label = 'bob';
SELECT is((SELECT count(*) FROM orders.orders o, usr u WHERE u.label = 'bob' AND o.user_id = u.user_id AND o.idempotency_key = 'card-dup'),
          0::bigint, 'and that order was not written');

-- ---------------------------------------------------------------- get, list
SELECT is((SELECT orders.get_order((o).order_id)::text FROM ord WHERE label = 'c1'),
          (SELECT o::text FROM ord WHERE label = 'c1'), 'get_order returns the order');
SELECT throws_ok($$SELECT orders.get_order('01a21c2c-86e5-759b-a185-c2f760b7b60e')$$,
                 'P0002', 'order 01a21c2c-86e5-759b-a185-c2f760b7b60e not found', 'get_order of an unknown id is P0002');
SELECT throws_ok($$SELECT orders.get_order(NULL)$$, '22004', 'order_id must not be null', 'get_order(NULL) is 22004');
SELECT is((SELECT orders.get_my_order(u.user_id, (o).order_id)::text FROM ord, usr u WHERE ord.label = 'c1' AND u.label = 'bob'),
          (SELECT o::text FROM ord WHERE label = 'c1'), 'get_my_order returns the order to its owner');
SELECT throws_ok(format('SELECT orders.get_my_order(%L, %L)', u.user_id, (o).order_id),
                 'P0002', format('order %s not found', (o).order_id),
                 'get_my_order of another user''s order is P0002, as for an unknown one')
  FROM ord, usr u WHERE ord.label = 'c1' AND u.label = 'ann';
SELECT throws_ok(format('SELECT orders.get_my_order(NULL, %L)', (o).order_id), '22004', 'user_id must not be null',
                 'get_my_order without a user is 22004')
  FROM ord WHERE label = 'c1';
SELECT is((SELECT array_agg(l.order_id) FROM usr u, orders.list_orders(u.user_id) l WHERE u.label = 'bob'),
          (SELECT array_agg(order_id ORDER BY order_id DESC) FROM orders.orders o, usr u WHERE u.label = 'bob' AND o.user_id = u.user_id),
          'list_orders returns a user''s orders, newest first');
SELECT is((SELECT count(*) FROM usr u, orders.list_orders(u.user_id, 2) WHERE u.label = 'bob'), 2::bigint,
          'list_orders returns at most row_limit orders');
SELECT throws_ok(format('SELECT orders.list_orders(%L)', gen_random_uuid()), 'P0002', NULL, 'list_orders of an unknown user is P0002');
SELECT throws_ok(format('SELECT orders.list_orders(%L, 1001)', user_id), '22023', 'row_limit must be from 1 to 1000, not 1001',
                 'list_orders with row_limit 1001 is 22023')
  FROM usr WHERE label = 'bob';

-- ---------------------------------------------------------------- payment.completed
SELECT lives_ok(format('SELECT orders.on_payment_completed(pg_temp.payment_event(%L, %L))', 'payment.completed', (o).payment_id),
                'the payment.completed handler runs')
  FROM ord WHERE label = 'c1';
SELECT is((SELECT status || ' ' || (fulfilled_at IS NOT NULL) FROM ord, orders.get_order((o).order_id) WHERE label = 'c1'),
          'fulfilled true', 'payment.completed fulfils the pending order');
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.fulfilled', (o).order_id) d WHERE label = 'c1'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id, 'payment_id', (o).payment_id)] FROM ord WHERE label = 'c1'),
          'order.fulfilled is published with order_id, user_id and payment_id');
SELECT orders.on_payment_completed(pg_temp.payment_event('payment.completed', (o).payment_id)) FROM ord WHERE label = 'c1';
SELECT is((SELECT count(*) FROM ord, pg_temp.events('order.fulfilled', (o).order_id) WHERE label = 'c1'), 1::bigint,
          'a second payment.completed (another event id) changes nothing: order.fulfilled once');
SELECT orders.on_payment_failed(pg_temp.payment_event('payment.failed', (o).payment_id, 'late')) FROM ord WHERE label = 'c1';
SELECT is((SELECT status || ' ' || (SELECT count(*) FROM pg_temp.events('order.canceled', (ord.o).order_id))
             FROM ord, orders.get_order((o).order_id) WHERE label = 'c1'),
          'fulfilled 0', 'a late payment.failed leaves a fulfilled order fulfilled');
SELECT throws_ok(format('SELECT orders.cancel_order(%L)', (o).order_id), '23514',
                 format('order %s is fulfilled and cannot be canceled', (o).order_id), 'a fulfilled order cannot be canceled (23514)')
  FROM ord WHERE label = 'c1';
SELECT throws_ok(format('SELECT orders.cancel_order(%L)', (o).order_id), '23514', NULL,
                 'nor a fulfilled wallet order')
  FROM ord WHERE label = 'w1';

-- ---------------------------------------------------------------- payment.failed
SELECT orders.on_payment_failed(pg_temp.payment_event('payment.failed', (o).payment_id, 'Your card was declined.')) FROM ord WHERE label = 'c2';
SELECT is((SELECT status || ': ' || cancel_reason FROM ord, orders.get_order((o).order_id) WHERE label = 'c2'),
          'canceled: payment_failed: Your card was declined.', 'payment.failed cancels the pending order with the reason');
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.canceled', (o).order_id) d WHERE label = 'c2'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id,
                                           'reason', 'payment_failed: Your card was declined.')] FROM ord WHERE label = 'c2'),
          'order.canceled is published with order_id, user_id and reason');
SELECT orders.on_payment_failed(pg_temp.payment_event('payment.failed', (o).payment_id, 'again')) FROM ord WHERE label = 'c2';
SELECT is((SELECT count(*) FROM ord, pg_temp.events('order.canceled', (o).order_id) WHERE label = 'c2'), 1::bigint,
          'a second payment.failed changes nothing');
SELECT orders.on_payment_completed(pg_temp.payment_event('payment.completed', (o).payment_id)) FROM ord WHERE label = 'c2';
SELECT is((SELECT status || ' ' || coalesce(cancel_reason, '-') || ' ' || (SELECT count(*) FROM pg_temp.events('order.fulfilled', (ord.o).order_id))
             FROM ord, orders.get_order((o).order_id) WHERE label = 'c2'),
          'fulfilled - 1',
          'an order its own payment''s failure canceled is fulfilled when that payment then completes (the customer retried the PaymentIntent)');

-- ---------------------------------------------------------------- cancel_order
SELECT is((SELECT (orders.cancel_order((o).order_id, 'changed my mind')).status FROM ord WHERE label = 'c3'), 'canceled',
          'cancel_order cancels a pending order');
SELECT is((SELECT (status, cancel_reason, canceled_at IS NOT NULL)::text FROM ord, orders.get_order((o).order_id) WHERE label = 'c3'),
          '(canceled,"changed my mind",t)', 'with its reason and time');
SELECT is((SELECT array_agg(d) FROM ord, pg_temp.events('order.canceled', (o).order_id) d WHERE label = 'c3'),
          (SELECT ARRAY[jsonb_build_object('order_id', (o).order_id, 'user_id', (o).user_id, 'reason', 'changed my mind')] FROM ord WHERE label = 'c3'),
          'and publishes order.canceled');
SELECT throws_ok(format('SELECT orders.cancel_order(%L)', (o).order_id), '23514',
                 format('order %s is canceled and cannot be canceled', (o).order_id), 'a canceled order cannot be canceled again (23514)')
  FROM ord WHERE label = 'c3';
SET LOCAL client_min_messages = error;     -- the handler's warning is expected
SELECT orders.on_payment_completed(pg_temp.payment_event('payment.completed', (o).payment_id)) FROM ord WHERE label = 'c3';
RESET client_min_messages;
SELECT is((SELECT status || ' ' || (SELECT count(*) FROM pg_temp.events('order.fulfilled', (ord.o).order_id))
             FROM ord, orders.get_order((o).order_id) WHERE label = 'c3'),
          'canceled 0', 'a payment that completes after the order was canceled on request leaves it canceled (a refund is for a person)');
SELECT is((SELECT (orders.cancel_order((o).order_id)).cancel_reason FROM ord WHERE label = 'c4'), 'canceled on request',
          'the default reason is "canceled on request"');
SELECT throws_ok($$SELECT orders.cancel_order('01a21c2c-86e5-759b-a185-c2f760b7b60e')$$,
                 'P0002', 'order 01a21c2c-86e5-759b-a185-c2f760b7b60e not found', 'canceling an unknown order is P0002');
INSERT INTO ord SELECT 'c6', orders.create_order(user_id, 700, 'usd', 'card', 'card-6', 0, pg_temp.intent('C6'))
                  FROM usr WHERE label = 'bob';
SELECT throws_ok(format('SELECT orders.cancel_my_order(%L, %L)', u.user_id, (o).order_id),
                 'P0002', format('order %s not found', (o).order_id), 'cancel_my_order of another user''s order is P0002')
  FROM ord, usr u WHERE ord.label = 'c6' AND u.label = 'ann';
SELECT is((SELECT status FROM ord, orders.get_order((o).order_id) WHERE label = 'c6'), 'pending', 'and leaves it pending');
SELECT is((SELECT (orders.cancel_my_order(u.user_id, (o).order_id, 'not needed')).cancel_reason
             FROM ord, usr u WHERE ord.label = 'c6' AND u.label = 'bob'),
          'not needed', 'cancel_my_order cancels the owner''s pending order');
SELECT throws_ok(format('SELECT orders.cancel_order(%L, %L)', (o).order_id, ' '), '22023', 'reason must be 1 to 500 characters',
                 'a blank reason is 22023')
  FROM ord WHERE label = 'c1';

-- ---------------------------------------------------------------- handlers and bad data
INSERT INTO ord SELECT 'c5', orders.create_order(user_id, 500, 'eur', 'card', 'card-5', 0, pg_temp.intent('C5'))
                  FROM usr WHERE label = 'bob';
SET LOCAL client_min_messages = error;     -- the handlers' warnings are expected
SELECT lives_ok($$SELECT orders.on_payment_completed(isa.event_from_json('{"id": "01a21c2c-86e5-759b-a185-c2f760b7b60e",
                   "event_type": "payment.completed", "source": "payment_service", "timestamp": "2026-11-27T10:00:00Z",
                   "data": {"order_id": "not-a-uuid", "payment_id": 7}}'))$$,
                'a payment.completed without valid ids is answered with a warning, not an error the bridge would retry');
SELECT lives_ok($$SELECT orders.on_payment_failed(isa.event_from_json('{"id": "01a21c2c-86e5-759b-a185-c2f760b7b60f",
                   "event_type": "payment.failed", "source": "payment_service", "timestamp": "2026-11-27T10:00:00Z",
                   "data": {}}'))$$,
                'so is a payment.failed without ids');
SELECT orders.on_payment_completed(e) FROM ord,
       LATERAL (SELECT (pg_temp.payment_event('payment.completed', (o).payment_id)).*) ev,
       LATERAL (SELECT ROW(ev.id, ev.event_type, ev.source, ev.version, ev."timestamp",
                           jsonb_set(ev.data, '{payment_id}', to_jsonb(gen_random_uuid()::text)), ev.metadata)::isa.event) x (e)
 WHERE label = 'c5';
RESET client_min_messages;
SELECT is((SELECT status FROM ord, orders.get_order((o).order_id) WHERE label = 'c5'), 'pending',
          'a payment.completed naming another payment of the order does not fulfil it');
SELECT orders.on_payment_completed(pg_temp.payment_event('payment.completed', (o).payment_id)) FROM ord WHERE label = 'c5';
SELECT is((SELECT status FROM ord, orders.get_order((o).order_id) WHERE label = 'c5'), 'fulfilled',
          'an order with tokens 0 (nothing but its items) is fulfilled by its payment too');

-- ---------------------------------------------------------------- payment.refunded
-- payment_service's refund of the order's payment, amount_refunded cumulative.
CREATE FUNCTION pg_temp.refund(lbl text, amount_refunded bigint, other_payment boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ev isa.event;
BEGIN
    SELECT (pg_temp.payment_event('payment.refunded', (o).payment_id)).* INTO ev FROM ord WHERE label = lbl;
    ev.data := ev.data || jsonb_build_object('amount_refunded', amount_refunded);
    IF other_payment THEN
        ev.data := ev.data || jsonb_build_object('payment_id', gen_random_uuid());
    END IF;
    PERFORM orders.on_payment_refunded(ev);
END $$;
SET LOCAL client_min_messages = error;
SELECT pg_temp.refund('c1', 500);
SELECT is((SELECT ((x).status, (x).amount_refunded, (x).refunded_at IS NULL)::text FROM ord, orders.get_order((o).order_id) x
            WHERE label = 'c1'), '(fulfilled,500,t)', 'a partial refund is recorded; the order stays fulfilled');
SELECT pg_temp.refund('c1', 300);
SELECT is((SELECT (x).amount_refunded FROM ord, orders.get_order((o).order_id) x WHERE label = 'c1'), 500::bigint,
          'an older refund (smaller cumulative amount) arriving late changes nothing');
SELECT pg_temp.refund('c1', 1999, other_payment => true);
SELECT is((SELECT (x).amount_refunded FROM ord, orders.get_order((o).order_id) x WHERE label = 'c1'), 500::bigint,
          'a refund naming another payment of the order changes nothing');
SELECT pg_temp.refund('c1', 1999);
SELECT is((SELECT ((x).status, (x).amount_refunded, (x).refunded_at IS NOT NULL, (x).fulfilled_at IS NOT NULL)::text
             FROM ord, orders.get_order((o).order_id) x WHERE label = 'c1'),
          '(refunded,1999,t,t)', 'refunded in full, the order is refunded (and keeps when it was fulfilled)');
SELECT pg_temp.refund('c1', 1999);
SELECT is((SELECT count(*) FROM ord, orders.outbox x WHERE label = 'c1' AND x.data ->> 'order_id' = (o).order_id::text
             AND x.event_type NOT IN ('order.created', 'order.fulfilled')), 0::bigint,
          'a refund publishes nothing of the order''s (payment.refunded says it already)');
SELECT lives_ok($$SELECT orders.on_payment_refunded(isa.event_from_json('{"id": "0190a000-0000-7000-8000-000000000001",
                   "event_type": "payment.refunded", "source": "payment_service", "timestamp": "2026-01-01T00:00:00Z",
                   "data": {"order_id": "not-a-uuid", "payment_id": 7, "amount_refunded": "x"}}'))$$,
                'a payment.refunded with bad data is consumed with a warning');
SELECT throws_ok($$UPDATE orders.orders SET status = 'refunded', refunded_at = now()
                    WHERE amount_refunded < amount AND status = 'fulfilled'$$, '23514', NULL,
                 'an order is refunded only when its whole amount was');
RESET client_min_messages;

SELECT * FROM finish();
ROLLBACK;
