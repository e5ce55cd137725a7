-- offers.sql — files for sale: an owner offers a file for tokens; an order
-- naming it (orders.create_order, items [{"file_id": …}]) is checked against
-- the offer; order.fulfilled (1.1.0, file_ids) makes storage share the file,
-- read, with the buyer, once.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(25);

CREATE TEMP TABLE t (k text PRIMARY KEY, v uuid) ON COMMIT DROP;
CREATE FUNCTION pg_temp.v(key text) RETURNS uuid LANGUAGE sql AS $$SELECT v FROM t WHERE k = key$$;
CREATE FUNCTION pg_temp.file(owner uuid, name text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    up uuid := storage.begin_upload(owner, name, 'image/jpeg', 3);
BEGIN
    PERFORM storage.put_chunk(up, 0, '\x010203'::bytea);
    RETURN (storage.finish_upload(up)).file_id;
END $$;
CREATE FUNCTION pg_temp.fulfilled(order_id uuid) RETURNS isa.event LANGUAGE sql AS $$
    SELECT o.id, o.event_type, o.source, o.version, o.occurred_at, o.data, o.metadata
      FROM orders.outbox o WHERE o.event_type = 'order.fulfilled' AND o.data ->> 'order_id' = $1::text$$;
CREATE FUNCTION pg_temp.buy(key text, amount bigint, items jsonb, method text DEFAULT 'wallet') RETURNS uuid LANGUAGE sql AS $$
    SELECT (orders.create_order(pg_temp.v('buyer'), amount, CASE method WHEN 'wallet' THEN 'tokens' ELSE 'usd' END,
                                method, key || gen_random_uuid(), 0,
                                CASE method WHEN 'card' THEN 'pi_offers' || substr(md5(random()::text), 1, 8) END,
                                items)).order_id$$;

INSERT INTO t SELECT 'seller', user_id FROM account.create_user('offers-s-' || gen_random_uuid() || '@example.com', 'Seller');
INSERT INTO t SELECT 'buyer', user_id FROM account.create_user('offers-b-' || gen_random_uuid() || '@example.com', 'Buyer');
SELECT wallet.open_wallet(pg_temp.v('buyer'));
SELECT wallet.add(pg_temp.v('buyer'), 1000, 'offers-fund-' || pg_temp.v('buyer'));
INSERT INTO t VALUES ('photo', pg_temp.file(pg_temp.v('seller'), 'sunset.jpg')),
                     ('other', pg_temp.file(pg_temp.v('seller'), 'not-for-sale.jpg')),
                     ('mine', pg_temp.file(pg_temp.v('buyer'), 'mine.jpg'));

-- offering
SELECT throws_ok(format('SELECT storage.offer_file(%L, %L, 0)', pg_temp.v('seller'), pg_temp.v('photo')), '22023', NULL,
                 'a price of 0 is 22023');
SELECT throws_ok(format('SELECT storage.offer_file(%L, %L, 10)', pg_temp.v('buyer'), pg_temp.v('photo')), 'P0002', NULL,
                 'someone else''s file cannot be offered (P0002: they cannot see it)');
SELECT throws_ok(format('SELECT storage.offer_file(%L, NULL, 10)', pg_temp.v('seller')), '22004', NULL, 'a NULL file is 22004');
SELECT is((storage.offer_file(pg_temp.v('seller'), pg_temp.v('photo'), 150)).price, 150::bigint, 'the seller offers the photo');
SELECT is((storage.offer_file(pg_temp.v('seller'), pg_temp.v('photo'), 120)).price, 120::bigint, 'and changes its price');
SELECT is((storage.get_offer(pg_temp.v('photo'))).seller_id, pg_temp.v('seller'), 'get_offer names the seller');
SELECT ok(storage.get_offer(pg_temp.v('other')) IS NULL, 'a file not offered has no offer');
SELECT ok(has_function_privilege('isa_svc_orders', 'storage.get_offer(uuid)', 'EXECUTE'),
          'orders may read offers (it checks the files an order buys)');
SELECT storage.offer_file(pg_temp.v('buyer'), pg_temp.v('mine'), 5);

-- orders naming files
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 100, %L)', 'low', jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('photo')))),
                 '22023', 'amount 100 is less than the price of the files it names (120 tokens)',
                 'an amount below the price is 22023');
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 120, %L, %L)', 'card', jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('photo'))), 'card'),
                 '22023', NULL, 'a file is sold for tokens: a card order naming one is 22023');
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 500, %L)', 'nfs', jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('other')))),
                 '22023', format('file %s is not for sale', pg_temp.v('other')), 'a file not for sale is 22023');
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 500, %L)', 'own', jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('mine')))),
                 '22023', NULL, 'one''s own file is not sold to its owner');
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 500, %L)', 'bad', '[{"file_id": "x"}]'), '22023', NULL,
                 'a file_id that is no uuid is 22023');
SELECT is(wallet.get_balance(pg_temp.v('buyer')), 1000::bigint, 'the refused orders took nothing');
INSERT INTO t SELECT 'order', pg_temp.buy('ok', 120, jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('photo')),
                                                                       jsonb_build_object('file_id', pg_temp.v('photo'), 'note', 'twice')));
SELECT is((orders.get_order(pg_temp.v('order'))).status, 'fulfilled', 'an order at the price is fulfilled');
SELECT is((SELECT (version, data -> 'file_ids')::text FROM orders.outbox WHERE event_type = 'order.fulfilled'
             AND data ->> 'order_id' = pg_temp.v('order')::text),
          format('(1.1.0,"[""%s""]")', pg_temp.v('photo')), 'order.fulfilled 1.1.0 names the file bought, once');
SELECT ok(NOT storage.can_read(pg_temp.v('buyer'), pg_temp.v('photo')), 'the buyer cannot read it before storage handles the event');

-- storage's handler
SELECT storage.on_order_fulfilled(pg_temp.fulfilled(pg_temp.v('order')));
SELECT ok(storage.can_read(pg_temp.v('buyer'), pg_temp.v('photo')) AND NOT storage.can_write(pg_temp.v('buyer'), pg_temp.v('photo')),
          'order.fulfilled: the buyer may read the photo, not write it');
SELECT is((SELECT count(*) FROM storage.outbox o WHERE o.event_type = 'file.shared'
             AND o.data ->> 'resource_id' = pg_temp.v('photo')::text AND o.data ->> 'user_id' = pg_temp.v('buyer')::text),
          1::bigint, 'file.shared is published, by the seller');
SELECT storage.on_order_fulfilled(pg_temp.fulfilled(pg_temp.v('order')));
SELECT is((SELECT count(*) FROM storage.shares s WHERE s.file_id = pg_temp.v('photo') AND s.user_id = pg_temp.v('buyer')),
          1::bigint, 'the same event again: still one share');
SELECT is((SELECT count(*) FROM storage.outbox o WHERE o.event_type = 'file.shared'
             AND o.data ->> 'resource_id' = pg_temp.v('photo')::text), 1::bigint, 'and no second file.shared');
SELECT lives_ok($$SELECT storage.on_order_fulfilled(isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(),
                    'event_type', 'order.fulfilled', 'source', 'order_service', 'timestamp', now(),
                    'data', jsonb_build_object('order_id', 'x', 'user_id', 1, 'file_ids', 'none'))))$$,
                'bad data is consumed with a warning');

-- withdrawn
SELECT ok(storage.withdraw_offer(pg_temp.v('seller'), pg_temp.v('photo')), 'the seller withdraws the offer');
SELECT throws_ok(format('SELECT pg_temp.buy(%L, 500, %L)', 'late', jsonb_build_array(jsonb_build_object('file_id', pg_temp.v('photo')))),
                 '22023', NULL, 'a withdrawn file is not for sale any more');
SELECT ok(storage.can_read(pg_temp.v('buyer'), pg_temp.v('photo')), 'what was bought stays shared');

SELECT * FROM finish();
ROLLBACK;
