-- subscriptions.sql — a subscription's credits come every period
-- (isa.wallet_subscription_period, taken when it begins) until
-- payment_service.subscription.canceled: wallet.credit_subscriptions(as_of)
-- adds each period once, whatever the order the two events arrive in.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);

CREATE TEMP TABLE t (k text PRIMARY KEY, v text) ON COMMIT DROP;
INSERT INTO t VALUES ('r', 'pgtap-sub-' || gen_random_uuid()), ('s1', gen_random_uuid()::text), ('s2', gen_random_uuid()::text);
CREATE FUNCTION pg_temp.v(key text) RETURNS text LANGUAGE sql AS $$SELECT v FROM t WHERE k = key$$;
CREATE FUNCTION pg_temp.sub_event(event_type text, sid text, credits bigint DEFAULT 50) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type,
        'source', 'payment_service', 'timestamp', now(),
        'data', jsonb_build_object('subscription_id', sid, 'user_id', pg_temp.v('user'), 'plan', 'pro',
                                   'credits', credits, 'stripe_subscription_id', 'sub_x', 'stripe_event_id', 'evt_x')))$$;
CREATE FUNCTION pg_temp.credited(sid text) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(amount), 0) FROM wallet.transactions x
     WHERE x.reference_type = 'subscription' AND split_part(x.reference_id, ':', 1) = sid$$;

INSERT INTO t SELECT 'user', user_id::text FROM account.create_user(pg_temp.v('r') || '@example.com', 'Subscriber');
SELECT wallet.open_wallet(pg_temp.v('user')::uuid);

SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions
                 WHERE service = 'wallet' AND subject_filter LIKE 'payment_service.subscription.%'$$,
              ARRAY['payment_service.subscription.created wallet.on_subscription_created(isa.event)',
                    'payment_service.subscription.canceled wallet.on_subscription_canceled(isa.event)'],
              'wallet subscribes to subscription.created and subscription.canceled');
SELECT is((SELECT count(*) FROM isa.scheduled_jobs WHERE jobname = 'isa-wallet-subscriptions'
             AND command = 'SELECT wallet.credit_subscriptions()'), 1::bigint, 'pg_cron credits the periods hourly');
SELECT ok(NOT has_function_privilege('isa_app', 'wallet.credit_subscriptions(timestamptz)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'wallet.credit_subscriptions(timestamptz)', 'EXECUTE'),
          'credit_subscriptions is isa_admin''s, not the applications''');

SET LOCAL isa.wallet_subscription_period = '7d';
SELECT wallet.on_subscription_created(pg_temp.sub_event('subscription.created', pg_temp.v('s1')));
SELECT is(pg_temp.credited(pg_temp.v('s1')), 50::bigint, 'subscription.created adds the first period''s credits');
SELECT is((SELECT (period = interval '7 days', periods_credited, next_credit_at - created_at = interval '7 days')::text
             FROM wallet.subscriptions WHERE subscription_id = pg_temp.v('s1')::uuid), '(t,1,t)',
          'the periods begin: isa.wallet_subscription_period, one credited, the next a period on');
SELECT wallet.on_subscription_created(pg_temp.sub_event('subscription.created', pg_temp.v('s1')));
SELECT is(pg_temp.credited(pg_temp.v('s1')), 50::bigint, 'the same creation again adds nothing');

SELECT is(wallet.credit_subscriptions(now() + interval '6 days'), 0, 'nothing is due before a period passed');
SELECT is(wallet.credit_subscriptions(now() + interval '7 days 1 hour'), 1, 'a period later, one credit');
SELECT is(pg_temp.credited(pg_temp.v('s1')), 100::bigint, 'the second period''s credits are in the wallet');
SELECT is(wallet.credit_subscriptions(now() + interval '7 days 2 hours'), 0, 'the job run again adds nothing');
SELECT is(wallet.credit_subscriptions(now() + interval '21 days 1 hour'), 2, 'two missed periods are both credited');
SELECT is((SELECT count(*) FROM wallet.outbox o WHERE o.event_type = 'wallet.tokens.added'
             AND o.data ->> 'reference_type' = 'subscription' AND o.data ->> 'reference_id' LIKE pg_temp.v('s1') || '%'),
          4::bigint, 'each credit publishes wallet.tokens.added');

SELECT wallet.on_subscription_canceled(pg_temp.sub_event('subscription.canceled', pg_temp.v('s1')));
SELECT is(wallet.credit_subscriptions(now() + interval '90 days'), 0, 'canceled, its credits stop');
SELECT is(pg_temp.credited(pg_temp.v('s1')), 200::bigint, 'and the periods credited stay');

-- the cancellation handled before the creation (two consumers, no order between them)
SELECT wallet.on_subscription_canceled(pg_temp.sub_event('subscription.canceled', pg_temp.v('s2')));
SELECT wallet.on_subscription_created(pg_temp.sub_event('subscription.created', pg_temp.v('s2'), 30));
SELECT is(pg_temp.credited(pg_temp.v('s2')), 30::bigint, 'a creation after its cancellation still adds what payment granted');
SELECT is(wallet.credit_subscriptions(now() + interval '90 days'), 0, 'but starts no period');

SELECT * FROM finish();
ROLLBACK;
