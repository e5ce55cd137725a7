-- wallet.sql — the wallet service: wallets and their append-only ledger,
-- deduct/add with idempotency keys and request fingerprints, the low-balance
-- crossing, the event handlers (user.created, billing.calculated,
-- payment.completed, subscription.created, payment.refunded), reconciliation,
-- the events each operation puts in wallet.outbox, and who may call what.
-- Concurrency (50 clients, same-key retries) is test/integration/70-wallet-concurrency.sh.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(172);

-- Users this file creates, by label.
CREATE TEMP TABLE u (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.uid(l text) RETURNS uuid LANGUAGE sql AS $$SELECT id FROM pg_temp.u WHERE label = l$$;
CREATE FUNCTION pg_temp.wid(l text) RETURNS uuid LANGUAGE sql
    AS $$SELECT w.wallet_id FROM wallet.wallets w WHERE w.user_id = pg_temp.uid(l)$$;
CREATE FUNCTION pg_temp.new_user(l text) RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO pg_temp.u
    SELECT l, (account.create_user('wallet-' || l || '-' || gen_random_uuid() || '@example.test', 'Wallet ' || l)).user_id
    RETURNING id $$;
-- The outbox rows of this file's users, in publication order.
CREATE TEMP VIEW ev AS
SELECT o.id, o.source, o.event_type, o.data, (SELECT label FROM u WHERE u.id::text = o.data ->> 'user_id') AS label
  FROM wallet.outbox o
 WHERE o.data ->> 'user_id' IN (SELECT id::text FROM u);
-- The ledger of this file's users.
CREATE TEMP VIEW ledger AS
SELECT t.*, (SELECT label FROM u JOIN wallet.wallets w ON w.user_id = u.id WHERE w.wallet_id = t.wallet_id) AS label
  FROM wallet.transactions t
 WHERE t.wallet_id IN (SELECT w.wallet_id FROM wallet.wallets w JOIN u ON u.id = w.user_id);
-- An event as the bridge hands it to a handler.
CREATE FUNCTION pg_temp.event(event_type text, source text, data jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type, 'source', source,
                                                  'timestamp', now(), 'data', data)) $$;
CREATE FUNCTION pg_temp.billing(l text, billing_id text, tokens jsonb) RETURNS isa.event LANGUAGE sql AS $$
    SELECT pg_temp.event('billing.calculated', 'billing_service',
        jsonb_build_object('billing_id', billing_id, 'usage_id', 'use-' || billing_id, 'usage_kind', 'model',
                           'user_id', pg_temp.uid(l), 'tokens', tokens, 'cost', tokens::text, 'currency', 'tokens',
                           'lines', '[]'::jsonb)) $$;

-- ---------------------------------------------------------------- schema
SELECT has_table('wallet', 'wallets', 'table wallet.wallets exists');
SELECT has_table('wallet', 'transactions', 'table wallet.transactions exists');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = (SELECT typrelid FROM pg_type WHERE oid = 'wallet.transaction_result'::regtype)
              AND a.attnum > 0 AND NOT a.attisdropped),
          ARRAY['transaction_id', 'wallet_id', 'amount', 'balance_after', 'created_at'],
          'transaction_result is (transaction_id, wallet_id, amount, balance_after, created_at) as the contract says');
SELECT col_default_is('wallet', 'wallets', 'low_balance_threshold', '1000', 'the low-balance threshold defaults to 1000 tokens');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(data_fields) k)
                 FROM isa.event_types WHERE source = 'wallet_service' AND event_type LIKE 'wallet.%'$$,
              ARRAY['wallet.tokens.deducted amount,balance_after,reference_id,reference_type,transaction_id,user_id,wallet_id',
                    'wallet.tokens.added amount,balance_after,reference_id,reference_type,transaction_id,user_id,wallet_id',
                    'wallet.tokens.insufficient balance,reference_id,reference_type,requested,user_id,wallet_id',
                    'wallet.balance.low balance,threshold,user_id,wallet_id',
                    'wallet.reconciliation.mismatch ledger_balance,recorded_balance,repaired,user_id,wallet_id'],
              'the five wallet events are registered with the contract''s data fields');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'wallet'$$,
              ARRAY['account_service.user.created wallet.on_user_created(isa.event)',
                    'billing_service.billing.calculated wallet.on_billing_calculated(isa.event)',
                    'payment_service.payment.completed wallet.on_payment_completed(isa.event)',
                    'payment_service.subscription.created wallet.on_subscription_created(isa.event)',
                    'payment_service.payment.refunded wallet.on_payment_refunded(isa.event)',
                    'payment_service.subscription.canceled wallet.on_subscription_canceled(isa.event)'],
              'wallet subscribes to user.created, billing.calculated, payment.completed, subscription.created and .canceled, payment.refunded');
SELECT is((SELECT schedule || ' | ' || command FROM isa.scheduled_jobs WHERE jobname = 'isa-wallet-reconcile'),
          '23 * * * * | SELECT count(*) FROM wallet.reconcile_balances()',
          'isa.scheduled_jobs runs wallet.reconcile_balances() hourly (isa-wallet-reconcile)');

-- ---------------------------------------------------------------- open_wallet
SELECT pg_temp.new_user('alice');
SELECT is((SELECT (w.user_id, w.balance, w.low_balance_threshold) FROM wallet.open_wallet(pg_temp.uid('alice')) w),
          ROW(pg_temp.uid('alice'), 0::bigint, 1000::bigint),
          'open_wallet opens a wallet with balance 0 and threshold 1000');
SELECT is((SELECT substr(wallet_id::text, 15, 1) FROM wallet.wallets WHERE user_id = pg_temp.uid('alice')), '7',
          'a wallet id is a UUIDv7');
SELECT is((SELECT wallet_id FROM wallet.open_wallet(pg_temp.uid('alice'))), pg_temp.wid('alice'),
          'open_wallet again returns the same wallet (idempotent)');
SELECT is((SELECT count(*) FROM wallet.wallets WHERE user_id = pg_temp.uid('alice')), 1::bigint, 'and there is one wallet');
SELECT throws_ok(format('SELECT wallet.open_wallet(%L)', gen_random_uuid()), 'P0002', NULL,
                 'open_wallet for an unknown user is P0002');
SELECT pg_temp.new_user('gone');
SELECT account.delete_user(pg_temp.uid('gone'));
SELECT throws_ok(format('SELECT wallet.open_wallet(%L)', pg_temp.uid('gone')), 'P0002',
                 format('user %s not found', pg_temp.uid('gone')), 'open_wallet for a deleted user is P0002');
SELECT throws_ok('SELECT wallet.open_wallet(NULL)', '22004', 'user_id must not be null', 'open_wallet(NULL) is 22004');
SELECT is((SELECT count(*) FROM ev), 0::bigint, 'opening a wallet publishes nothing');

-- ---------------------------------------------------------------- reads
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 0::bigint, 'get_balance of a new wallet is 0');
SELECT is((SELECT (w.wallet_id, w.balance) FROM wallet.get_wallet(pg_temp.uid('alice')) w),
          ROW(pg_temp.wid('alice'), 0::bigint), 'get_wallet returns the wallet');
SELECT throws_ok(format('SELECT wallet.get_balance(%L)', gen_random_uuid()), 'P0002', NULL, 'get_balance without a wallet is P0002');
SELECT throws_ok(format('SELECT wallet.get_wallet(%L)', gen_random_uuid()), 'P0002', NULL, 'get_wallet without a wallet is P0002');
SELECT throws_ok('SELECT wallet.get_balance(NULL)', '22004', 'user_id must not be null', 'get_balance(NULL) is 22004');
SELECT throws_ok('SELECT wallet.get_wallet(NULL)', '22004', 'user_id must not be null', 'get_wallet(NULL) is 22004');
SELECT is(wallet.check_balance(gen_random_uuid(), 1), false, 'check_balance is false for a user without a wallet');
SELECT throws_ok(format('SELECT wallet.check_balance(%L, 0)', pg_temp.uid('alice')), '22023', 'amount must be positive, not 0',
                 'check_balance of 0 tokens is 22023');
SELECT throws_ok(format('SELECT wallet.check_balance(%L, NULL)', pg_temp.uid('alice')), '22004', 'amount must not be null',
                 'check_balance with a NULL amount is 22004');
SELECT throws_ok('SELECT wallet.check_balance(NULL, 1)', '22004', 'user_id must not be null', 'check_balance(NULL, 1) is 22004');

-- ---------------------------------------------------------------- add
CREATE TEMP TABLE r (label text PRIMARY KEY, res wallet.transaction_result) ON COMMIT DROP;
INSERT INTO r SELECT 'add', wallet.add(pg_temp.uid('alice'), 5000, 'a-add-1', 'payment', 'pay-1', 'top-up');
SELECT is((SELECT ((res).wallet_id, (res).amount, (res).balance_after) FROM r WHERE label = 'add'),
          ROW(pg_temp.wid('alice'), 5000::bigint, 5000::bigint), 'add returns the wallet, the amount and the balance after');
SELECT is((SELECT substr((res).transaction_id::text, 15, 1) FROM r WHERE label = 'add'), '7', 'a transaction id is a UUIDv7');
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 5000::bigint, 'the balance is 5000');
SELECT is((SELECT (l.transaction_id, l.amount, l.balance_after, l.idempotency_key, l.reference_type, l.reference_id,
                   l.description, l.created_at)
             FROM ledger l WHERE l.label = 'alice'),
          (SELECT ((res).transaction_id, 5000::bigint, 5000::bigint, 'a-add-1'::text, 'payment'::text, 'pay-1'::text,
                   'top-up'::text, (res).created_at) FROM r WHERE label = 'add'),
          'add appends one ledger row with amount, balance_after, key, reference and description');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 1::bigint, 'add writes one outbox row');
SELECT is((SELECT (e.source, e.event_type, e.data) FROM ev e WHERE label = 'alice'),
          (SELECT ('wallet_service'::text, 'wallet.tokens.added'::text,
                   jsonb_build_object('wallet_id', (res).wallet_id, 'user_id', pg_temp.uid('alice'),
                                      'transaction_id', (res).transaction_id, 'amount', 5000, 'balance_after', 5000,
                                      'reference_type', 'payment', 'reference_id', 'pay-1')) FROM r WHERE label = 'add'),
          'it is wallet.tokens.added with wallet_id, user_id, transaction_id, amount, balance_after, reference_type, reference_id');

SELECT is(wallet.add(pg_temp.uid('alice'), 5000, 'a-add-1', 'payment', 'pay-1', 'top-up'), (SELECT res FROM r WHERE label = 'add'),
          'add retried with the same key and arguments returns the first result');
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 5000::bigint, 'a retried add adds nothing');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 1::bigint, 'a retried add publishes nothing');
SELECT is((SELECT count(*) FROM ledger WHERE label = 'alice'), 1::bigint, 'a retried add writes no ledger row');
SELECT throws_ok(format('SELECT wallet.add(%L, 5001, %L, %L, %L, %L)', pg_temp.uid('alice'), 'a-add-1', 'payment', 'pay-1', 'top-up'),
                 '23505', 'idempotency key "a-add-1" was already used for another transaction of this wallet',
                 'the same key with another amount is 23505');
SELECT throws_ok(format('SELECT wallet.add(%L, 5000, %L, %L, %L, %L)', pg_temp.uid('alice'), 'a-add-1', 'payment', 'pay-2', 'top-up'),
                 '23505', NULL, 'the same key with another reference_id is 23505');
SELECT throws_ok(format('SELECT wallet.add(%L, 5000, %L, %L, %L)', pg_temp.uid('alice'), 'a-add-1', 'payment', 'pay-1'),
                 '23505', NULL, 'the same key with another description is 23505');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 5000, %L, %L, %L, %L)', pg_temp.uid('alice'), 'a-add-1', 'payment', 'pay-1', 'top-up'),
                 '23505', NULL, 'the key of an add reused by a deduct with the same arguments is 23505');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L)', gen_random_uuid(), 'x'), 'P0002', NULL, 'add without a wallet is P0002');
SELECT throws_ok(format('SELECT wallet.add(%L, 0, %L)', pg_temp.uid('alice'), 'x'), '22023',
                 'amount must be from 1 to 1000000000000000 tokens, not 0', 'add of 0 tokens is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, -5, %L)', pg_temp.uid('alice'), 'x'), '22023', NULL, 'add of a negative amount is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, 1000000000000001, %L)', pg_temp.uid('alice'), 'x'), '22023', NULL,
                 'add of more than 10^15 tokens is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, NULL, %L)', pg_temp.uid('alice'), 'x'), '22004', 'amount must not be null',
                 'add with a NULL amount is 22004');
SELECT throws_ok('SELECT wallet.add(NULL, 1, ''x'')', '22004', 'user_id must not be null', 'add with a NULL user is 22004');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, NULL)', pg_temp.uid('alice')), '22004', 'idempotency_key must not be null',
                 'add without an idempotency key is 22004');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L)', pg_temp.uid('alice'), ''), '22023', 'idempotency_key must be 1 to 255 characters',
                 'an empty idempotency key is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L)', pg_temp.uid('alice'), repeat('k', 256)), '22023', NULL,
                 'an idempotency key over 255 characters is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L, %L)', pg_temp.uid('alice'), 'x', 'gift'), '22023', 'unknown reference_type "gift"',
                 'an unknown reference_type is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L, NULL)', pg_temp.uid('alice'), 'x'), '22004', 'reference_type must not be null',
                 'a NULL reference_type is 22004');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L, %L, %L)', pg_temp.uid('alice'), 'x', 'manual', ''), '22023',
                 'reference_id must be 1 to 255 characters or null', 'an empty reference_id is 22023');
SELECT throws_ok(format('SELECT wallet.add(%L, 1, %L, %L, NULL, %L)', pg_temp.uid('alice'), 'x', 'manual', repeat('d', 1001)), '22023',
                 'description must be at most 1000 characters', 'a description over 1000 characters is 22023');
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 5000::bigint, 'none of the refused calls changed the balance');
SELECT is((SELECT count(*) FROM ledger WHERE label = 'alice'), 1::bigint, 'none of them wrote a ledger row');

-- ---------------------------------------------------------------- deduct and the low-balance crossing
INSERT INTO r SELECT 'ded1', wallet.deduct(pg_temp.uid('alice'), 3900, 'a-ded-1', 'order', 'ord-1');
SELECT is((SELECT ((res).wallet_id, (res).amount, (res).balance_after) FROM r WHERE label = 'ded1'),
          ROW(pg_temp.wid('alice'), -3900::bigint, 1100::bigint),
          'deduct returns the signed ledger amount (-3900) and the balance after (1100)');
SELECT is((SELECT e.data FROM ev e WHERE label = 'alice' ORDER BY id DESC LIMIT 1),
          (SELECT jsonb_build_object('wallet_id', (res).wallet_id, 'user_id', pg_temp.uid('alice'),
                                     'transaction_id', (res).transaction_id, 'amount', 3900, 'balance_after', 1100,
                                     'reference_type', 'order', 'reference_id', 'ord-1') FROM r WHERE label = 'ded1'),
          'wallet.tokens.deducted carries the positive amount, balance_after and the reference');
SELECT is((SELECT e.event_type FROM ev e WHERE label = 'alice' ORDER BY id DESC LIMIT 1), 'wallet.tokens.deducted',
          'deduct publishes wallet.tokens.deducted');
SELECT is((SELECT (res).amount FROM (SELECT wallet.deduct(pg_temp.uid('alice'), 100, 'a-ded-2') res) s), -100::bigint,
          'deducting down to exactly the threshold (1000) succeeds');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice' AND event_type = 'wallet.balance.low'), 0::bigint,
          'a balance equal to the threshold is not low');
SELECT is((SELECT (res).balance_after FROM (SELECT wallet.deduct(pg_temp.uid('alice'), 1, 'a-ded-3') res) s), 999::bigint,
          'one more token: 999');
SELECT is((SELECT array_agg(event_type ORDER BY id) FROM (SELECT * FROM ev WHERE label = 'alice' ORDER BY id DESC LIMIT 2) x),
          ARRAY['wallet.tokens.deducted', 'wallet.balance.low'],
          'crossing below the threshold publishes wallet.balance.low after wallet.tokens.deducted');
SELECT is((SELECT data FROM ev WHERE label = 'alice' AND event_type = 'wallet.balance.low'),
          jsonb_build_object('wallet_id', pg_temp.wid('alice'), 'user_id', pg_temp.uid('alice'), 'balance', 999, 'threshold', 1000),
          'wallet.balance.low carries wallet_id, user_id, balance and threshold');
SELECT lives_ok(format('SELECT wallet.deduct(%L, 9, %L)', pg_temp.uid('alice'), 'a-ded-4'), 'a deduction below the threshold');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice' AND event_type = 'wallet.balance.low'), 1::bigint,
          'does not publish wallet.balance.low again (crossing only)');
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 990::bigint, 'the balance is 990');

SELECT throws_ok(format('SELECT wallet.deduct(%L, 991, %L)', pg_temp.uid('alice'), 'a-ded-5'), '23514',
                 format('insufficient balance: 991 tokens requested, the wallet of user %s holds 990', pg_temp.uid('alice')),
                 'deducting more than the balance is 23514');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 6::bigint, 'a refused deduct publishes nothing');
SELECT is((SELECT count(*) FROM ledger WHERE label = 'alice'), 5::bigint, 'and writes no ledger row');
SELECT is(wallet.deduct(pg_temp.uid('alice'), 3900, 'a-ded-1', 'order', 'ord-1'), (SELECT res FROM r WHERE label = 'ded1'),
          'a retried deduct returns the first result, even when the balance no longer covers it');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 6::bigint, 'a retried deduct publishes nothing');
SELECT is(wallet.get_balance(pg_temp.uid('alice')), 990::bigint, 'and deducts nothing');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 3901, %L, %L, %L)', pg_temp.uid('alice'), 'a-ded-1', 'order', 'ord-1'),
                 '23505', NULL, 'a deduct key reused with another amount is 23505 (not 23514)');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 1, %L)', gen_random_uuid(), 'x'), 'P0002', NULL, 'deduct without a wallet is P0002');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 0, %L)', pg_temp.uid('alice'), 'x'), '22023', NULL, 'deduct of 0 tokens is 22023');
SELECT throws_ok(format('SELECT wallet.deduct(%L, -1, %L)', pg_temp.uid('alice'), 'x'), '22023', NULL, 'deduct of a negative amount is 22023');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 1, NULL)', pg_temp.uid('alice')), '22004', NULL, 'deduct without a key is 22004');
SELECT throws_ok(format('SELECT wallet.deduct(%L, 1, %L, %L)', pg_temp.uid('alice'), 'x', 'Billing'), '22023', NULL,
                 'deduct with an unknown reference_type is 22023');
SELECT is(wallet.check_balance(pg_temp.uid('alice'), 990), true, 'check_balance: 990 tokens are there');
SELECT is(wallet.check_balance(pg_temp.uid('alice'), 991), false, 'check_balance: 991 are not');

-- ---------------------------------------------------------------- the ledger
SELECT is((SELECT sum(amount) FROM ledger WHERE label = 'alice'), 990::numeric, 'the ledger sums to the balance');
SELECT is((SELECT array_agg(amount) FROM wallet.list_transactions(pg_temp.uid('alice'))),
          ARRAY[-9, -1, -100, -3900, 5000]::bigint[], 'list_transactions lists the ledger newest first');
SELECT is((SELECT array_agg(balance_after) FROM wallet.list_transactions(pg_temp.uid('alice'))),
          ARRAY[990, 999, 1000, 1100, 5000]::bigint[], 'with the balance after each');
SELECT is((SELECT array_agg(idempotency_key) FROM wallet.list_transactions(pg_temp.uid('alice'), 2)),
          ARRAY['a-ded-4', 'a-ded-3'], 'limit caps the rows');
SELECT is((SELECT array_agg(amount) FROM wallet.list_transactions(pg_temp.uid('alice'), 2,
              (SELECT created_at FROM ledger WHERE idempotency_key = 'a-ded-2' AND label = 'alice'))),
          ARRAY[-3900, 5000]::bigint[], 'before pages on: only transactions created before it');
SELECT throws_ok(format('SELECT * FROM wallet.list_transactions(%L, 0)', pg_temp.uid('alice')), '22023',
                 'limit must be from 1 to 1000, not 0', 'a limit of 0 is 22023');
SELECT throws_ok(format('SELECT * FROM wallet.list_transactions(%L, 1001)', pg_temp.uid('alice')), '22023', NULL,
                 'a limit over 1000 is 22023');
SELECT throws_ok(format('SELECT * FROM wallet.list_transactions(%L)', gen_random_uuid()), 'P0002', NULL,
                 'list_transactions without a wallet is P0002');
SELECT throws_ok('SELECT * FROM wallet.list_transactions(NULL)', '22004', NULL, 'list_transactions(NULL) is 22004');

SELECT throws_ok(format('UPDATE wallet.transactions SET amount = 1 WHERE wallet_id = %L', pg_temp.wid('alice')), '42501',
                 'wallet.transactions is append-only: UPDATE is not allowed', 'a ledger row cannot be updated (not even by its owner)');
SELECT throws_ok(format('DELETE FROM wallet.transactions WHERE wallet_id = %L', pg_temp.wid('alice')), '42501',
                 'wallet.transactions is append-only: DELETE is not allowed', 'a ledger row cannot be deleted');
SELECT throws_ok('TRUNCATE wallet.transactions', '42501', 'wallet.transactions is append-only: TRUNCATE is not allowed',
                 'the ledger cannot be truncated');
SELECT throws_ok(format('DELETE FROM wallet.wallets WHERE wallet_id = %L', pg_temp.wid('alice')), '42501', NULL,
                 'a wallet cannot be deleted');
SELECT throws_ok(format('UPDATE wallet.wallets SET balance = -1 WHERE wallet_id = %L', pg_temp.wid('alice')), '23514', NULL,
                 'a balance can never be negative (CHECK), whoever writes it');

-- ---------------------------------------------------------------- set_low_balance_threshold
SELECT is((SELECT (w.balance, w.low_balance_threshold) FROM wallet.set_low_balance_threshold(pg_temp.uid('alice'), 500) w),
          ROW(990::bigint, 500::bigint), 'set_low_balance_threshold returns the wallet with its new threshold');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice'), 6::bigint,
          'setting a threshold publishes nothing (a crossing happens on a deduction)');
SELECT lives_ok(format('SELECT wallet.deduct(%L, 490, %L)', pg_temp.uid('alice'), 'a-ded-6'), 'deducting down to 500');
SELECT lives_ok(format('SELECT wallet.deduct(%L, 200, %L)', pg_temp.uid('alice'), 'a-ded-7'), 'then to 300');
SELECT is((SELECT array_agg(data ->> 'balance' ORDER BY id) FROM ev WHERE label = 'alice' AND event_type = 'wallet.balance.low'),
          ARRAY['999', '300'], 'the new threshold applies: 500 -> 300 crosses 500');
SELECT lives_ok(format('SELECT wallet.set_low_balance_threshold(%L, 0)', pg_temp.uid('alice')), 'threshold 0');
SELECT is((SELECT (res).balance_after FROM (SELECT wallet.deduct(pg_temp.uid('alice'), 300, 'a-ded-8') res) s), 0::bigint,
          'deducting the whole balance leaves 0');
SELECT is((SELECT count(*) FROM ev WHERE label = 'alice' AND event_type = 'wallet.balance.low'), 2::bigint,
          'with threshold 0 no deduction is low');
SELECT throws_ok(format('SELECT wallet.set_low_balance_threshold(%L, -1)', pg_temp.uid('alice')), '22023', NULL,
                 'a negative threshold is 22023');
SELECT throws_ok(format('SELECT wallet.set_low_balance_threshold(%L, NULL)', pg_temp.uid('alice')), '22004', NULL,
                 'a NULL threshold is 22004');
SELECT throws_ok(format('SELECT wallet.set_low_balance_threshold(%L, 5)', gen_random_uuid()), 'P0002', NULL,
                 'set_low_balance_threshold without a wallet is P0002');

-- ---------------------------------------------------------------- handlers: user.created
SELECT pg_temp.new_user('carol');
SELECT is(wallet.check_balance(pg_temp.uid('carol'), 1), false, 'carol has no wallet yet');
SELECT lives_ok(format('SELECT wallet.on_user_created(pg_temp.event(%L, %L, %L))', 'user.created', 'account_service',
                       jsonb_build_object('user_id', pg_temp.uid('carol'), 'email', 'c@example.test', 'name', 'Carol', 'created_at', now())),
                'on_user_created runs');
SELECT is((SELECT (balance, low_balance_threshold) FROM wallet.wallets WHERE user_id = pg_temp.uid('carol')),
          ROW(0::bigint, 1000::bigint), 'user.created opens the user''s wallet');
SELECT wallet.on_user_created(pg_temp.event('user.created', 'account_service', jsonb_build_object('user_id', pg_temp.uid('carol'))));
SELECT is((SELECT count(*) FROM wallet.wallets WHERE user_id = pg_temp.uid('carol')), 1::bigint,
          'user.created twice: still one wallet');
SET LOCAL client_min_messages = error;   -- the handlers log bad data as WARNING
SELECT lives_ok($$SELECT wallet.on_user_created(pg_temp.event('user.created', 'account_service', '{"user_id": "not-a-uuid"}'))$$,
                'user.created with a malformed user_id is logged, not raised');
CREATE TEMP TABLE stranger ON COMMIT DROP AS SELECT gen_random_uuid() AS id;
SELECT lives_ok(format('SELECT wallet.on_user_created(pg_temp.event(%L, %L, %L))', 'user.created', 'account_service',
                       jsonb_build_object('user_id', (SELECT id FROM stranger))),
                'user.created for a user account does not know is logged, not raised');
SELECT is((SELECT count(*) FROM wallet.wallets WHERE user_id = (SELECT id FROM stranger)), 0::bigint,
          'and opens no wallet');
RESET client_min_messages;

-- ---------------------------------------------------------------- handlers: payment.completed, subscription.created
CREATE FUNCTION pg_temp.paid(l text, payment_id text, tokens int) RETURNS isa.event LANGUAGE sql AS $$
    SELECT pg_temp.event('payment.completed', 'payment_service',
        jsonb_build_object('payment_id', payment_id, 'order_id', gen_random_uuid(), 'user_id', pg_temp.uid(l),
                           'amount', 1999, 'currency', 'usd', 'tokens', tokens, 'stripe_payment_intent_id', 'pi_' || payment_id)) $$;
SELECT wallet.on_payment_completed(pg_temp.paid('carol', 'p-1', 2000));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 2000::bigint, 'payment.completed adds data.tokens');
SELECT is((SELECT (idempotency_key, amount, reference_type, reference_id) FROM ledger WHERE label = 'carol'),
          ROW('payment:p-1'::text, 2000::bigint, 'payment'::text, 'p-1'::text),
          'with the key payment:<payment_id> and reference payment/<payment_id>');
SELECT is((SELECT (event_type, data ->> 'reference_type', data ->> 'reference_id', data ->> 'amount') FROM ev WHERE label = 'carol'),
          ROW('wallet.tokens.added'::text, 'payment'::text, 'p-1'::text, '2000'::text), 'and publishes wallet.tokens.added');
SELECT wallet.on_payment_completed(pg_temp.paid('carol', 'p-1', 2000));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 2000::bigint, 'the same payment.completed again adds nothing');
SELECT wallet.on_payment_completed(pg_temp.paid('carol', 'p-0', 0));
SELECT is((SELECT count(*) FROM ledger WHERE label = 'carol'), 1::bigint, 'a payment of 0 tokens writes nothing');
SELECT wallet.on_subscription_created(pg_temp.event('subscription.created', 'payment_service',
    jsonb_build_object('subscription_id', 's-1', 'user_id', pg_temp.uid('carol'), 'stripe_subscription_id', 'sub_1',
                       'plan', 'pro', 'credits', 500)));
SELECT is((SELECT (idempotency_key, amount, reference_type) FROM ledger WHERE label = 'carol' AND reference_type = 'subscription'),
          ROW('subscription:s-1'::text, 500::bigint, 'subscription'::text), 'subscription.created adds data.credits');
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 2500::bigint, 'carol holds 2500');
SELECT pg_temp.new_user('erin');
SELECT wallet.on_payment_completed(pg_temp.paid('erin', 'p-e', 100));
SELECT is(wallet.get_balance(pg_temp.uid('erin')), 100::bigint,
          'payment.completed for a user whose wallet is not open yet opens it and credits it');

-- ---------------------------------------------------------------- handlers: billing.calculated
SELECT wallet.on_billing_calculated(pg_temp.billing('carol', 'b-1', '1200'));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 1300::bigint, 'billing.calculated deducts data.tokens');
SELECT is((SELECT (idempotency_key, amount, reference_type, reference_id, description) FROM ledger
            WHERE label = 'carol' AND reference_type = 'billing'),
          ROW('billing:b-1'::text, -1200::bigint, 'billing'::text, 'b-1'::text, 'model usage'::text),
          'with the key billing:<billing_id>, reference billing/<billing_id> and the usage kind');
SELECT is((SELECT data FROM ev WHERE label = 'carol' ORDER BY id DESC LIMIT 1),
          jsonb_build_object('wallet_id', pg_temp.wid('carol'), 'user_id', pg_temp.uid('carol'),
                             'transaction_id', (SELECT transaction_id FROM ledger WHERE idempotency_key = 'billing:b-1'),
                             'amount', 1200, 'balance_after', 1300, 'reference_type', 'billing', 'reference_id', 'b-1'),
          'and publishes wallet.tokens.deducted with the billing reference');
SELECT wallet.on_billing_calculated(pg_temp.billing('carol', 'b-1', '1200'));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 1300::bigint, 'the same billing.calculated again deducts nothing');
SELECT is((SELECT count(*) FROM ev WHERE label = 'carol'), 3::bigint, 'and publishes nothing');
SELECT wallet.on_billing_calculated(pg_temp.billing('carol', 'b-2', '400'));
SELECT is((SELECT array_agg(event_type ORDER BY id) FROM (SELECT * FROM ev WHERE label = 'carol' ORDER BY id DESC LIMIT 2) x),
          ARRAY['wallet.tokens.deducted', 'wallet.balance.low'], 'a billed deduction crossing the threshold publishes wallet.balance.low');
SELECT wallet.on_billing_calculated(pg_temp.billing('carol', 'b-3', '5000'));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 900::bigint, 'billing.calculated beyond the balance deducts nothing');
SELECT is((SELECT count(*) FROM ledger WHERE label = 'carol' AND reference_id = 'b-3'), 0::bigint, 'and writes no ledger row');
SELECT is((SELECT (event_type, data) FROM ev WHERE label = 'carol' ORDER BY id DESC LIMIT 1),
          ROW('wallet.tokens.insufficient'::text,
              jsonb_build_object('wallet_id', pg_temp.wid('carol'), 'user_id', pg_temp.uid('carol'), 'requested', 5000,
                                 'balance', 900, 'reference_type', 'billing', 'reference_id', 'b-3')),
          'it publishes wallet.tokens.insufficient with requested, balance and the billing reference');
CREATE TEMP TABLE before_bad ON COMMIT DROP AS
SELECT (SELECT count(*) FROM ledger) AS ledger_rows, (SELECT count(*) FROM ev) AS events;
SELECT wallet.on_billing_calculated(pg_temp.billing('carol', 'b-0', '0'));
SET LOCAL client_min_messages = error;
SELECT lives_ok(format('SELECT wallet.on_billing_calculated(pg_temp.billing(%L, %L, %L))', 'carol', 'b-x', t),
                format('billing.calculated with tokens %s is logged, not raised', t))
  FROM unnest(ARRAY['"12"', '-5', '1.5', '"abc"', 'null', '10000000000000000', '{"n": 1}']) t;
SELECT lives_ok($$SELECT wallet.on_billing_calculated(pg_temp.event('billing.calculated', 'billing_service',
                    '{"billing_id": "b-y", "user_id": "nope", "tokens": 5}'))$$,
                'billing.calculated with a malformed user_id is logged, not raised');
SELECT lives_ok(format('SELECT wallet.on_billing_calculated(pg_temp.event(%L, %L, %L))', 'billing.calculated', 'billing_service',
                       jsonb_build_object('user_id', pg_temp.uid('carol'), 'tokens', 5)),
                'billing.calculated without a billing_id is logged, not raised');
SELECT lives_ok(format('SELECT wallet.on_billing_calculated(pg_temp.event(%L, %L, %L))', 'billing.calculated', 'billing_service',
                       jsonb_build_object('billing_id', 'b-z', 'user_id', (SELECT id FROM stranger), 'tokens', 5)),
                'billing.calculated for an unknown user is logged, not raised');
RESET client_min_messages;
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 900::bigint, 'tokens 0 and bad billing events change no balance');
SELECT is((SELECT (count(*), (SELECT count(*) FROM ev)) FROM ledger),
          (SELECT (ledger_rows, events) FROM before_bad), 'and write no ledger row and publish nothing');
SELECT is((SELECT count(*) FROM wallet.wallets WHERE user_id = (SELECT id FROM stranger)), 0::bigint,
          'no wallet is opened for an unknown user');
SELECT pg_temp.new_user('dave');
SELECT wallet.on_billing_calculated(pg_temp.billing('dave', 'b-d', '7'));
SELECT is((SELECT (event_type, data ->> 'wallet_id', data ->> 'requested', data ->> 'balance') FROM ev WHERE label = 'dave'),
          ROW('wallet.tokens.insufficient'::text, pg_temp.wid('dave')::text, '7'::text, '0'::text),
          'billing.calculated for a user whose wallet is not open yet opens it and reports insufficient (balance 0)');

-- ---------------------------------------------------------------- handlers: payment.refunded
CREATE FUNCTION pg_temp.refund(l text, payment_id text, charge text, refunded int, tokens int) RETURNS isa.event LANGUAGE sql AS $$
    SELECT pg_temp.event('payment.refunded', 'payment_service',
        jsonb_build_object('payment_id', payment_id, 'order_id', gen_random_uuid(), 'user_id', pg_temp.uid(l),
                           'amount_refunded', refunded, 'currency', 'usd', 'tokens', tokens, 'stripe_charge_id', charge)) $$;
SELECT wallet.on_payment_refunded(pg_temp.refund('carol', 'p-1', 'ch_1', 500, 300));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 600::bigint, 'payment.refunded takes data.tokens back');
SELECT is((SELECT (idempotency_key, amount, reference_type, reference_id) FROM ledger WHERE label = 'carol' AND reference_type = 'refund'),
          ROW('refund:p-1:ch_1:500'::text, -300::bigint, 'refund'::text, 'p-1'::text),
          'with the key refund:<payment_id>:<charge>:<amount_refunded> and reference refund/<payment_id>');
SELECT is((SELECT (event_type, data ->> 'amount', data ->> 'reference_type') FROM ev WHERE label = 'carol' ORDER BY id DESC LIMIT 1),
          ROW('wallet.tokens.deducted'::text, '300'::text, 'refund'::text), 'and publishes wallet.tokens.deducted (reference refund)');
SELECT wallet.on_payment_refunded(pg_temp.refund('carol', 'p-1', 'ch_1', 500, 300));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 600::bigint, 'the same refund again takes nothing');
SELECT wallet.on_payment_refunded(pg_temp.refund('carol', 'p-1', 'ch_1', 2000, 1000));
SELECT is(wallet.get_balance(pg_temp.uid('carol')), 0::bigint, 'a refund larger than the balance takes the balance, never more');
SELECT is((SELECT amount FROM ledger WHERE idempotency_key = 'refund:p-1:ch_1:2000'), -600::bigint,
          'the ledger records what was taken back');
SELECT is((SELECT array_agg(event_type || ' ' || (data ->> 'balance') || ' ' || (data ->> 'requested') ORDER BY id)
             FROM ev WHERE label = 'carol' AND event_type = 'wallet.tokens.insufficient' AND data ->> 'reference_type' = 'refund'),
          ARRAY['wallet.tokens.insufficient 600 1000'],
          'and the shortfall is reported as wallet.tokens.insufficient (requested 1000, balance 600)');
SELECT wallet.on_payment_refunded(pg_temp.refund('carol', 'p-1', 'ch_1', 2100, 50));
SELECT is((SELECT (amount, balance_after) FROM ledger WHERE idempotency_key = 'refund:p-1:ch_1:2100'), ROW(0::bigint, 0::bigint),
          'a refund on an empty wallet records a ledger row of 0');
SELECT is((SELECT count(*) FROM ev WHERE label = 'carol' AND event_type = 'wallet.tokens.insufficient' AND data ->> 'requested' = '50'),
          1::bigint, 'and reports the whole refund as insufficient');

-- ---------------------------------------------------------------- reconciliation
SELECT is((SELECT count(*) FROM wallet.reconcile_balances(false) r WHERE r.user_id IN (SELECT id FROM u)), 0::bigint,
          'reconcile_balances finds no mismatch in the wallets of this file');
UPDATE wallet.wallets SET balance = balance + 7 WHERE wallet_id = pg_temp.wid('erin');
CREATE TEMP TABLE rec ON COMMIT DROP AS SELECT * FROM wallet.reconcile_balances(false) r WHERE r.user_id IN (SELECT id FROM u);
SELECT is((SELECT array_agg((wallet_id, user_id, recorded_balance, ledger_balance, repaired)::text) FROM rec),
          ARRAY[ROW(pg_temp.wid('erin'), pg_temp.uid('erin'), 107::bigint, 100::bigint, false)::text],
          'an injected mismatch is found: recorded 107, ledger 100, not repaired with repair => false');
SELECT is(wallet.get_balance(pg_temp.uid('erin')), 107::bigint, 'repair => false leaves the balance');
SELECT is((SELECT (event_type, data) FROM ev WHERE label = 'erin' ORDER BY id DESC LIMIT 1),
          ROW('wallet.reconciliation.mismatch'::text,
              jsonb_build_object('wallet_id', pg_temp.wid('erin'), 'user_id', pg_temp.uid('erin'), 'recorded_balance', 107,
                                 'ledger_balance', 100, 'repaired', false)),
          'and publishes wallet.reconciliation.mismatch');
SELECT is((SELECT array_agg((wallet_id, recorded_balance, ledger_balance, repaired)::text)
             FROM wallet.reconcile_balances() r WHERE r.user_id IN (SELECT id FROM u)),
          ARRAY[ROW(pg_temp.wid('erin'), 107::bigint, 100::bigint, true)::text],
          'reconcile_balances() repairs it');
SELECT is(wallet.get_balance(pg_temp.uid('erin')), 100::bigint, 'the balance is the ledger sum again');
SELECT is((SELECT data ->> 'repaired' FROM ev WHERE label = 'erin' ORDER BY id DESC LIMIT 1), 'true',
          'and the mismatch event says repaired');
SELECT is((SELECT count(*) FROM wallet.reconcile_balances() r WHERE r.user_id IN (SELECT id FROM u)), 0::bigint,
          'a second run finds nothing');
SELECT throws_ok('SELECT * FROM wallet.reconcile_balances(NULL)', '22004', NULL, 'reconcile_balances(NULL) is 22004');

-- ---------------------------------------------------------------- privileges
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p
            WHERE p.pronamespace = 'wallet'::regnamespace
              AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))),
          NULL, 'no function of schema wallet is executable by PUBLIC');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'wallet'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['wallet.check_balance(uuid,bigint)', 'wallet.get_balance(uuid)', 'wallet.get_wallet(uuid)',
                    'wallet.list_transactions(uuid,integer,timestamp with time zone)', 'wallet.open_wallet(uuid)',
                    'wallet.deduct(uuid,bigint,text,text,text,text)', 'wallet.set_low_balance_threshold(uuid,bigint)'],
              'isa_app may execute exactly the API functions (no add: isa_app_admin''s; no handler, no reconcile, no internal function)');
SELECT ok(has_function_privilege('isa_admin', 'wallet.reconcile_balances(boolean)', 'EXECUTE'),
          'isa_admin may run reconcile_balances');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'wallet.deduct(uuid,bigint,text,text,text,text)'::regprocedure), true,
          'the API functions are SECURITY DEFINER');

SELECT pg_temp.new_user('app');
SELECT wallet.open_wallet(pg_temp.uid('app'));
GRANT SELECT ON u TO isa_app, isa_app_admin;          -- for pg_temp.uid()
SET LOCAL ROLE isa_app_admin;
SELECT is((SELECT (res).balance_after FROM (SELECT wallet.add(pg_temp.uid('app'), 50, 'app-1') res) s), 50::bigint,
          'isa_app_admin can add');
SET LOCAL ROLE isa_app;
SELECT is((SELECT (res).balance_after FROM (SELECT wallet.deduct(pg_temp.uid('app'), 20, 'app-2') res) s), 30::bigint,
          'isa_app can deduct');
SELECT is(wallet.get_balance(pg_temp.uid('app')), 30::bigint, 'isa_app can read a balance');
SELECT throws_ok('SELECT 1 FROM wallet.wallets', '42501', NULL, 'isa_app cannot read wallet.wallets');
SELECT throws_ok('SELECT 1 FROM wallet.transactions', '42501', NULL, 'isa_app cannot read wallet.transactions');
SELECT throws_ok(format('UPDATE wallet.wallets SET balance = 1000000 WHERE user_id = %L', pg_temp.uid('app')), '42501', NULL,
                 'isa_app cannot write a balance');
SELECT throws_ok($$SELECT wallet.on_billing_calculated(NULL::isa.event)$$, '42501', NULL, 'isa_app cannot call a handler');
SELECT throws_ok('SELECT * FROM wallet.reconcile_balances()', '42501', NULL, 'isa_app cannot run reconcile_balances');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
