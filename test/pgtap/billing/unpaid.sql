-- unpaid.sql — a billing record the wallet refused (wallet.tokens.insufficient)
-- is unpaid until a credit (wallet.tokens.added: a top-up, a payment's tokens)
-- lets billing deduct it, with the key wallet's first attempt used: charged
-- once, whichever attempt charges it, and never while the balance is short.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);

CREATE TEMP TABLE t (k text PRIMARY KEY, v text) ON COMMIT DROP;
INSERT INTO t VALUES ('r', 'pgtap-unpaid-' || gen_random_uuid());
CREATE FUNCTION pg_temp.v(key text) RETURNS text LANGUAGE sql AS $$SELECT v FROM t WHERE k = key$$;
-- The newest event of a service's outbox of a type whose data has key = val, as the bridge hands it over.
CREATE FUNCTION pg_temp.ev(outbox regclass, event_type text, key text, val text) RETURNS isa.event LANGUAGE plpgsql AS $$
DECLARE
    e isa.event;
BEGIN
    EXECUTE format('SELECT o.id, o.event_type, o.source, o.version, o.occurred_at, o.data, o.metadata FROM %s o
                     WHERE o.event_type = $1 AND o.data ->> $2 = $3 ORDER BY o.id DESC LIMIT 1', outbox)
       INTO e USING event_type, key, val;
    RETURN e;
END $$;
CREATE FUNCTION pg_temp.usage(usage_id text, input bigint) RETURNS void LANGUAGE sql AS $$
    SELECT billing.on_usage_recorded(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
        'event_type', 'usage.recorded.model', 'source', 'external', 'timestamp', now(),
        'data', jsonb_build_object('usage_id', usage_id, 'user_id', pg_temp.v('user'), 'model', pg_temp.v('r'),
                                   'input_tokens', input, 'output_tokens', 0))))$$;
-- billing.calculated of a usage → wallet's handler, as the bridge would run it.
CREATE FUNCTION pg_temp.charge(usage_id text) RETURNS void LANGUAGE sql AS $$
    SELECT wallet.on_billing_calculated(pg_temp.ev('billing.outbox', 'billing.calculated', 'usage_id', usage_id))$$;
CREATE FUNCTION pg_temp.bid(usage_id text) RETURNS text LANGUAGE sql AS $$
    SELECT billing_id::text FROM billing.billing_records WHERE billing_records.usage_id = $1$$;
CREATE FUNCTION pg_temp.state(usage_id text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN settled_at IS NOT NULL THEN 'settled' WHEN unpaid_at IS NOT NULL THEN 'unpaid' ELSE 'open' END
      FROM billing.billing_records WHERE billing_records.usage_id = $1$$;
CREATE FUNCTION pg_temp.deductions(usage_id text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM wallet.transactions x WHERE x.reference_type = 'billing' AND x.reference_id = pg_temp.bid(usage_id)$$;

-- a user, their wallet (wallet's user.created handler) with 5 tokens; model at 1 token per input token
INSERT INTO t SELECT 'user', user_id::text FROM account.create_user(pg_temp.v('r') || '@example.com', 'Unpaid');
SELECT wallet.on_user_created(pg_temp.ev('account.outbox', 'user.created', 'user_id', pg_temp.v('user')));
SELECT wallet.add(pg_temp.v('user')::uuid, 5, pg_temp.v('r') || '-fund');
SELECT product.set_price((product.create_product(u, pg_temp.v('r'), u, '')).product_id,
                         'per_unit', 1, effective_from => now() - interval '1 day')
  FROM unnest(ARRAY['model_input_tokens', 'model_output_tokens']) u;

SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions
                 WHERE service = 'billing' AND subject_filter LIKE 'wallet_service.%'$$,
              ARRAY['wallet_service.wallet.tokens.insufficient billing.on_tokens_insufficient(isa.event)',
                    'wallet_service.wallet.tokens.added billing.on_tokens_added(isa.event)'],
              'billing subscribes to wallet.tokens.insufficient and wallet.tokens.added');
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'billing'::regnamespace
             AND p.proname IN ('_settle', 'on_tokens_insufficient', 'on_tokens_added')
             AND has_function_privilege('isa_app', p.oid, 'EXECUTE')), 0::bigint,
          'isa_app may not run the handlers or _settle');

-- 10 tokens of usage, 5 in the wallet: refused, unpaid
SELECT pg_temp.usage(pg_temp.v('r') || '-a', 10);
SELECT pg_temp.charge(pg_temp.v('r') || '-a');
SELECT is((SELECT count(*) FROM wallet.outbox o WHERE o.event_type = 'wallet.tokens.insufficient'
             AND o.data ->> 'reference_id' = pg_temp.bid(pg_temp.v('r') || '-a')), 1::bigint,
          'the wallet refuses the 10 tokens (wallet.tokens.insufficient)');
SELECT billing.on_tokens_insufficient(pg_temp.ev('wallet.outbox', 'wallet.tokens.insufficient', 'reference_id',
                                                 pg_temp.bid(pg_temp.v('r') || '-a')));
SELECT is(pg_temp.state(pg_temp.v('r') || '-a'), 'unpaid', 'the record is unpaid');
SELECT is(wallet.get_balance(pg_temp.v('user')::uuid), 5::bigint, 'nothing is taken while the balance is short');

-- a top-up of 3 is not enough; one of 20 settles it
SELECT wallet.add(pg_temp.v('user')::uuid, 3, pg_temp.v('r') || '-top3');
SELECT billing.on_tokens_added(pg_temp.ev('wallet.outbox', 'wallet.tokens.added', 'user_id', pg_temp.v('user')));
SELECT is(pg_temp.state(pg_temp.v('r') || '-a'), 'unpaid', 'a credit that does not cover it leaves it unpaid');
SELECT wallet.add(pg_temp.v('user')::uuid, 20, pg_temp.v('r') || '-top20');
SELECT billing.on_tokens_added(pg_temp.ev('wallet.outbox', 'wallet.tokens.added', 'user_id', pg_temp.v('user')));
SELECT is(pg_temp.state(pg_temp.v('r') || '-a'), 'settled', 'the top-up settles it');
SELECT is(wallet.get_balance(pg_temp.v('user')::uuid), 18::bigint, '5 + 3 + 20 - 10 tokens are left');
SELECT is(pg_temp.deductions(pg_temp.v('r') || '-a'), 1::bigint, 'one ledger row for the record');

-- everything again: the same events change nothing
SELECT pg_temp.charge(pg_temp.v('r') || '-a');
SELECT billing.on_tokens_insufficient(pg_temp.ev('wallet.outbox', 'wallet.tokens.insufficient', 'reference_id',
                                                 pg_temp.bid(pg_temp.v('r') || '-a')));
SELECT billing.on_tokens_added(pg_temp.ev('wallet.outbox', 'wallet.tokens.added', 'user_id', pg_temp.v('user')));
SELECT is(pg_temp.deductions(pg_temp.v('r') || '-a'), 1::bigint,
          'billing.calculated, the refusal and the credit handled again charge nothing more');
SELECT is(pg_temp.state(pg_temp.v('r') || '-a'), 'settled', 'and the record stays settled');

-- a top-up that billing sees before the refusal: the refusal settles at once
SELECT pg_temp.usage(pg_temp.v('r') || '-b', 100);
SELECT pg_temp.charge(pg_temp.v('r') || '-b');
SELECT wallet.add(pg_temp.v('user')::uuid, 200, pg_temp.v('r') || '-top200');
SELECT billing.on_tokens_added(pg_temp.ev('wallet.outbox', 'wallet.tokens.added', 'user_id', pg_temp.v('user')));
SELECT is(pg_temp.state(pg_temp.v('r') || '-b'), 'open', 'a credit before the refusal arrives finds nothing unpaid');
SELECT billing.on_tokens_insufficient(pg_temp.ev('wallet.outbox', 'wallet.tokens.insufficient', 'reference_id',
                                                 pg_temp.bid(pg_temp.v('r') || '-b')));
SELECT is(pg_temp.state(pg_temp.v('r') || '-b'), 'settled', 'the refusal, handled after it, settles the record at once');
SELECT is(wallet.get_balance(pg_temp.v('user')::uuid), 118::bigint, '18 + 200 - 100 tokens are left');

-- not billing's, or bad: consumed, nothing changes
SET LOCAL client_min_messages = error;
SELECT lives_ok($$SELECT billing.on_tokens_insufficient(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
                    'event_type', 'wallet.tokens.insufficient', 'source', 'wallet_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', pg_temp.v('user'), 'reference_type', 'refund',
                                               'reference_id', gen_random_uuid(), 'requested', 1, 'balance', 0,
                                               'wallet_id', gen_random_uuid()))))$$,
                'a refund''s refusal is not billing''s: ignored');
SELECT lives_ok($$SELECT billing.on_tokens_insufficient(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
                    'event_type', 'wallet.tokens.insufficient', 'source', 'wallet_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', 'nobody', 'reference_type', 'billing', 'reference_id', 7))));
                  SELECT billing.on_tokens_added(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
                    'event_type', 'wallet.tokens.added', 'source', 'wallet_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', 12))))$$,
                'bad data is consumed with a warning');
RESET client_min_messages;
SELECT is((SELECT count(*) FROM billing.billing_records r WHERE r.user_id = pg_temp.v('user')::uuid AND r.settled_at IS NULL
             AND r.unpaid_at IS NOT NULL), 0::bigint, 'no record of the user is left unpaid');

SELECT * FROM finish();
ROLLBACK;
