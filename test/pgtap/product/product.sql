-- product.sql — the product service: products per usage type and model,
-- prices over time (per unit, graduated tiers, packages) with product.price_changed,
-- and price_quote, the exact cost of a quantity at a time after what was
-- already used.  Every refusal raises its SQLSTATE and writes nothing.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(128);

-- Names of this run, so that products committed by others never collide.
CREATE TEMP TABLE t (k text PRIMARY KEY, v text) ON COMMIT DROP;
INSERT INTO t VALUES ('m', 'pgtap-model-' || gen_random_uuid());

-- The "any agent/tool" products are unique per usage type: set aside any
-- committed ones for this (rolled back) transaction.
DELETE FROM product.prices WHERE product_id IN (SELECT product_id FROM product.products
                                                 WHERE usage_type IN ('agent_run', 'mcp_call') AND model IS NULL);
DELETE FROM product.products WHERE usage_type IN ('agent_run', 'mcp_call') AND model IS NULL;

CREATE TEMP TABLE outbox_before ON COMMIT DROP AS SELECT count(*) AS n FROM product.outbox;
CREATE FUNCTION pg_temp.new_events() RETURNS bigint LANGUAGE sql
    AS $$SELECT count(*) - (SELECT n FROM outbox_before) FROM product.outbox$$;

-- ---------------------------------------------------------------- create_product
SELECT lives_ok(format($$SELECT product.create_product('model_input_tokens', %L, 'Input of the test model', 'per token')$$,
                       (SELECT v FROM t WHERE k = 'm')),
                'create_product creates a product for model input tokens');
INSERT INTO t SELECT 'in', product_id::text FROM product.products
 WHERE usage_type = 'model_input_tokens' AND model = (SELECT v FROM t WHERE k = 'm');
SELECT is((SELECT (p.usage_type, p.model, p.name, p.description)::text FROM product.products p
            WHERE p.product_id = (SELECT v::uuid FROM t WHERE k = 'in')),
          (SELECT ('model_input_tokens', v, 'Input of the test model', 'per token')::text FROM t WHERE k = 'm'),
          'the product has its usage type, model, name and description');
SELECT is((SELECT substr(v, 15, 1) FROM t WHERE k = 'in'), '7', 'product ids are version 7 UUIDs');
SELECT is((product.create_product('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), '  Output  ', NULL)).name,
          'Output', 'the name is trimmed; the description defaults to empty');
INSERT INTO t SELECT 'out', product_id::text FROM product.products
 WHERE usage_type = 'model_output_tokens' AND model = (SELECT v FROM t WHERE k = 'm');
SELECT is((SELECT description FROM product.products WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'out')), '',
          'a NULL description is stored as empty');
SELECT is((product.create_product('agent_run', NULL, 'Any agent', 'fallback')).model, NULL,
          'an agent_run product may apply to any agent (model NULL)');
SELECT is((product.create_product('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 'One agent', '')).usage_type,
          'agent_run', 'an agent_run product may name its agent');
SELECT is(pg_temp.new_events(), 0::bigint, 'create_product publishes no event');

SELECT throws_ok(format($$SELECT product.create_product('model_input_tokens', %L, 'again', '')$$, (SELECT v FROM t WHERE k = 'm')),
                 '23505', format('a product for usage type model_input_tokens and model "%s" already exists', (SELECT v FROM t WHERE k = 'm')),
                 'a second product for the same usage type and model is 23505');
SELECT throws_ok($$SELECT product.create_product('agent_run', NULL, 'again', '')$$,
                 '23505', 'a product for usage type agent_run and any agent/tool already exists',
                 'a second "any agent" product is 23505 (NULL models are not distinct)');
SELECT throws_ok($$SELECT product.create_product('model_input_tokens', NULL, 'no model', '')$$,
                 '22004', 'model must not be null for usage type model_input_tokens',
                 'model tokens products need a model (22004)');
SELECT throws_ok($$SELECT product.create_product(NULL, 'x', 'n', '')$$,
                 '22004', 'usage_type must not be null', 'a NULL usage type is 22004');
SELECT throws_ok($$SELECT product.create_product('gpu_seconds', 'x', 'n', '')$$,
                 '22023', 'unknown usage type "gpu_seconds"', 'an unknown usage type is 22023');
SELECT throws_ok($$SELECT product.create_product('mcp_call', '', 'n', '')$$,
                 '22023', 'model must be 1 to 200 characters without surrounding spaces, not ""',
                 'an empty model is 22023');
SELECT throws_ok($$SELECT product.create_product('mcp_call', ' tool', 'n', '')$$,
                 '22023', 'model must be 1 to 200 characters without surrounding spaces, not " tool"',
                 'a model with surrounding spaces is 22023');
SELECT throws_ok($$SELECT product.create_product('mcp_call', repeat('x', 201), 'n', '')$$,
                 '22023', NULL, 'a model of 201 characters is 22023');
SELECT throws_ok($$SELECT product.create_product('mcp_call', 'pgtap-tool', NULL, '')$$,
                 '22004', 'name must not be null', 'a NULL name is 22004');
SELECT throws_ok($$SELECT product.create_product('mcp_call', 'pgtap-tool', '   ', '')$$,
                 '22023', 'name must be 1 to 200 characters', 'a blank name is 22023');
SELECT throws_ok($$SELECT product.create_product('mcp_call', 'pgtap-tool', 'n', repeat('d', 2001))$$,
                 '22023', 'description must be at most 2000 characters', 'a description over 2000 characters is 22023');
SELECT is((SELECT count(*) FROM product.products WHERE model = 'pgtap-tool'), 0::bigint,
          'the refused create_product calls wrote nothing');

-- ---------------------------------------------------------------- get_product, list_products
SELECT is((product.get_product((SELECT v::uuid FROM t WHERE k = 'in'))).model, (SELECT v FROM t WHERE k = 'm'),
          'get_product returns the product');
SELECT throws_ok($$SELECT product.get_product('00000000-0000-7000-8000-000000000000')$$,
                 'P0002', 'product 00000000-0000-7000-8000-000000000000 not found', 'get_product of an unknown id is P0002');
SELECT throws_ok($$SELECT product.get_product(NULL)$$, '22004', 'product_id must not be null', 'get_product(NULL) is 22004');
SELECT ok((SELECT v::uuid FROM t WHERE k = 'in') IN (SELECT product_id FROM product.list_products('model_input_tokens'))
          AND (SELECT v::uuid FROM t WHERE k = 'out') NOT IN (SELECT product_id FROM product.list_products('model_input_tokens')),
          'list_products(usage_type) lists the products of that usage type only');
SELECT ok((SELECT count(*) FROM product.list_products()) >= 4, 'list_products() lists every product');
SELECT throws_ok($$SELECT * FROM product.list_products('tokens')$$, '22023', 'unknown usage type "tokens"',
                 'list_products of an unknown usage type is 22023');

-- ---------------------------------------------------------------- set_price: per unit
SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'in'), 'per_unit', 0.0020,
                                           effective_from => '2026-01-01 00:00:00+00')$$,
                'set_price sets a per-unit price from a date');
SELECT is((SELECT (unit_price, tiers, package_size, package_price, pricing_model)::text FROM product.prices
            WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'in')),
          '(0.002,,,,per_unit)', 'the price row holds the unit price without trailing zeros, nothing else');
SELECT is(pg_temp.new_events(), 1::bigint, 'set_price publishes one event');
SELECT is((SELECT o.event_type || ' ' || o.source || ' ' || o.version FROM product.outbox o ORDER BY o.id DESC LIMIT 1),
          'product.price_changed product_service 1.0.0', 'the event is product.price_changed from product_service');
SELECT is((SELECT o.data FROM product.outbox o ORDER BY o.id DESC LIMIT 1),
          (SELECT jsonb_build_object('product_id', p.product_id, 'price_id', p.price_id, 'usage_type', 'model_input_tokens',
                                     'model', (SELECT v FROM t WHERE k = 'm'), 'pricing_model', 'per_unit',
                                     'effective_from', '2026-01-01T00:00:00.000000Z')
             FROM product.prices p WHERE p.product_id = (SELECT v::uuid FROM t WHERE k = 'in')),
          'product.price_changed carries product_id, price_id, usage_type, model, pricing_model and effective_from');

-- A retry of the same call returns the same price and publishes nothing.
SELECT is((product.set_price((SELECT v::uuid FROM t WHERE k = 'in'), 'per_unit', 0.002,
                             effective_from => '2026-01-01 00:00:00+00')).price_id,
          (SELECT price_id FROM product.prices WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'in')),
          'set_price again with the same terms and effective_from returns the existing price');
SELECT is(pg_temp.new_events(), 1::bigint, 'and publishes nothing');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'in'), 'per_unit', 0.003,
                                            effective_from => '2026-01-01 00:00:00+00')$$,
                 '23505', NULL, 'another price at the same effective_from is 23505');

-- A new price from a later date ends the first.
SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'in'), 'per_unit', 0.001,
                                           effective_from => '2026-03-01 00:00:00+00')$$,
                'a second per-unit price from a later date');
SELECT is((SELECT array_agg(unit_price::text || ' ' || coalesce(to_char(effective_to AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'open')
                            ORDER BY effective_from)
             FROM product.list_prices((SELECT v::uuid FROM t WHERE k = 'in'))),
          ARRAY['0.002 2026-03-01', '0.001 open'],
          'list_prices: in effective order, each ending where the next begins, the last open');
SELECT throws_ok($$SELECT * FROM product.list_prices('00000000-0000-7000-8000-000000000000')$$,
                 'P0002', 'product 00000000-0000-7000-8000-000000000000 not found', 'list_prices of an unknown product is P0002');
SELECT throws_ok($$SELECT * FROM product.list_prices(NULL)$$, '22004', 'product_id must not be null',
                 'list_prices(NULL) is 22004');

-- ---------------------------------------------------------------- set_price: refusals
CREATE TEMP TABLE prices_before ON COMMIT DROP AS SELECT count(*) AS n FROM product.prices;
CREATE TEMP TABLE events_before ON COMMIT DROP AS SELECT pg_temp.new_events() AS n;
SELECT throws_ok($$SELECT product.set_price(NULL, 'per_unit', 1)$$, '22004', 'product_id must not be null',
                 'a NULL product_id is 22004');
SELECT throws_ok($$SELECT product.set_price('00000000-0000-7000-8000-000000000000', 'per_unit', 1)$$,
                 'P0002', 'product 00000000-0000-7000-8000-000000000000 not found', 'an unknown product is P0002');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), NULL, 1)$$,
                 '22004', 'pricing_model must not be null', 'a NULL pricing model is 22004');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'volume', 1)$$,
                 '22023', 'unknown pricing model "volume"', 'an unknown pricing model is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit')$$,
                 '22004', 'per_unit pricing needs unit_price', 'per_unit without unit_price is 22004');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 1, package_size => 10)$$,
                 '22023', 'per_unit pricing takes only unit_price (tiers, package_size and package_price must be null)',
                 'per_unit with package terms is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', -0.001)$$,
                 '22023', 'unit_price must be from 0 to 1000000000 tokens, not -0.001', 'a negative unit price is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 'NaN')$$,
                 '22023', 'unit_price must be from 0 to 1000000000 tokens, not NaN', 'a NaN unit price is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 1000000001)$$,
                 '22023', 'unit_price must be from 0 to 1000000000 tokens, not 1000000001', 'a unit price over 1e9 is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 0.0000000000001)$$,
                 '22023', 'unit_price must have at most 12 decimal places, not 0.0000000000001',
                 'a unit price with 13 decimal places is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 1, effective_from => NULL)$$,
                 '22004', 'effective_from must not be null', 'a NULL effective_from is 22004');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 1, effective_from => 'infinity')$$,
                 '22023', 'effective_from must be a finite time, not infinity', 'an infinite effective_from is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated')$$,
                 '22004', 'graduated pricing needs tiers', 'graduated without tiers is 22004');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated', 1,
                                            '[{"up_to": null, "unit_price": 1}]')$$,
                 '22023', 'graduated pricing takes only tiers (unit_price, package_size and package_price must be null)',
                 'graduated with a unit price is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated', tiers => '{"up_to": null}')$$,
                 '22023', NULL, 'tiers that are not an array are 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated', tiers => '[]')$$,
                 '22023', NULL, 'an empty tier list is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": 100, "unit_price": 1}, {"up_to": 100, "unit_price": 0.5}, {"up_to": null, "unit_price": 0.1}]')$$,
                 '22023', 'tiers must ascend: up_to of tier 2 (100) is not above the previous tier''s (100)',
                 'tiers that do not ascend are 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": 100, "unit_price": 1}, {"up_to": 200, "unit_price": 0.5}]')$$,
                 '22023', 'the last tier must be open (up_to null), not up to 200', 'a closed last tier is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"unit_price": 1}, {"up_to": null, "unit_price": 0.5}]')$$,
                 '22023', 'only the last tier may be open (up_to null); tier 1 of 2 is open', 'an open tier before the last is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": 0, "unit_price": 1}, {"up_to": null, "unit_price": 0.5}]')$$,
                 '22023', 'up_to of tier 1 must be a number from 0 (excluded) to 1e15, not 0', 'a tier up to 0 is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": 10, "unit_price": -1}, {"up_to": null, "unit_price": 0.5}]')$$,
                 '22023', 'unit_price of tier 1 must be from 0 to 1000000000 tokens, not -1', 'a negative tier price is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": null, "unit_price": "cheap"}]')$$,
                 '22023', 'unit_price of tier 1 must be a number, not "cheap"', 'a tier price that is not a number is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": null, "unit_price": 1, "currency": "usd"}]')$$,
                 '22023', NULL, 'a tier with an unknown key is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated', tiers => '[5]')$$,
                 '22023', 'tier 1 must be an object {"up_to": n, "unit_price": p}, not 5', 'a tier that is not an object is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'package', package_size => 100)$$,
                 '22004', 'package pricing needs package_size and package_price', 'package without a price is 22004');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'package', package_size => 0, package_price => 1)$$,
                 '22023', 'package_size must be a whole number of units from 1 to 1e12, not 0', 'a package of 0 units is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'package', package_size => 2.5, package_price => 1)$$,
                 '22023', 'package_size must be a whole number of units from 1 to 1e12, not 2.5', 'a fractional package size is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'package', package_size => 10, package_price => -1)$$,
                 '22023', 'package_price must be from 0 to 1000000000 tokens, not -1', 'a negative package price is 22023');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'package', 1, package_size => 10, package_price => 1)$$,
                 '22023', 'package pricing takes only package_size and package_price (unit_price and tiers must be null)',
                 'package with a unit price is 22023');
SELECT is((SELECT count(*) FROM product.prices), (SELECT n FROM prices_before), 'the refused set_price calls wrote no price');
SELECT is(pg_temp.new_events(), (SELECT n FROM events_before), 'and published nothing');

-- ---------------------------------------------------------------- price_quote: per unit, effective dates, exactness
SELECT is((SELECT (product_id, price_id, cost)::text FROM product.price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'),
                                                                        1000, '2026-02-15 00:00:00+00')),
          (SELECT (product_id, price_id, 2::numeric)::text FROM product.prices
            WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'in') AND unit_price = 0.002),
          'before the second price''s effective_from the first applies: 1000 x 0.002 = 2');
SELECT is((SELECT cost FROM product.price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 1000, '2026-03-01 00:00:00+00')),
          1::numeric, 'from the second price''s effective_from on, it applies: 1000 x 0.001 = 1');
SELECT is((SELECT cost FROM product.price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 1000, '2026-02-28 23:59:59.999999+00')),
          2::numeric, 'a microsecond before, the first still applies');
SELECT throws_ok(format($$SELECT * FROM product.price_quote('model_input_tokens', %L, 1000, '2025-12-31 23:59:59+00')$$,
                        (SELECT v FROM t WHERE k = 'm')),
                 'P0002', format('product %s (model_input_tokens) has no price in force at 2025-12-31T23:59:59.000000Z',
                                 (SELECT v FROM t WHERE k = 'in')),
                 'before the first price there is none: P0002 naming the product and time');
SELECT is((SELECT lines FROM product.price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 1000, '2026-02-15 00:00:00+00')),
          (SELECT jsonb_build_array(jsonb_build_object('usage_type', 'model_input_tokens', 'price_id', price_id,
                                                       'pricing_model', 'per_unit', 'quantity', 1000,
                                                       'unit_price', '0.002', 'amount', '2'))
             FROM product.prices WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'in') AND unit_price = 0.002),
          'a per-unit quote has one line: usage type, price, quantity, unit price and amount (decimal strings)');

SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'per_unit', 0.000001,
                                           effective_from => '2026-01-01 00:00:00+00')$$,
                'a price of 0.000001 per unit');
SELECT is((SELECT cost::text FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3, '2026-01-02 00:00:00+00')),
          '0.000003', 'three units at 0.000001 cost exactly 0.000003');
SELECT is((SELECT sum(q.cost)::text FROM generate_series(1, 3) i,
                  product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 1, '2026-01-02 00:00:00+00') q),
          '0.000003', 'and three quotes of one unit sum to exactly 0.000003');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 0, '2026-01-02 00:00:00+00')),
          0::numeric, 'a quantity of 0 costs 0');

-- ---------------------------------------------------------------- price_quote: graduated
-- 0.01 per unit up to 1000, 0.005 up to 5000, 0.001 above.
SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'out'), 'graduated',
                   tiers => '[{"up_to": 1000, "unit_price": "0.01"}, {"up_to": 5000, "unit_price": 0.005}, {"unit_price": 0.001}]',
                   effective_from => '2026-02-01 00:00:00+00')$$,
                'a graduated price (tier prices as numbers or decimal strings, the last tier without up_to)');
SELECT is((SELECT tiers FROM product.prices WHERE product_id = (SELECT v::uuid FROM t WHERE k = 'out') AND pricing_model = 'graduated'),
          '[{"up_to": 1000, "unit_price": 0.01}, {"up_to": 5000, "unit_price": 0.005}, {"up_to": null, "unit_price": 0.001}]'::jsonb,
          'the tiers are stored normalised: numbers, the last tier up_to null');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 800, '2026-02-02 00:00:00+00')),
          8::numeric, 'within the first tier: 800 x 0.01 = 8');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3000, '2026-02-02 00:00:00+00')),
          20::numeric, 'across a boundary: 1000 x 0.01 + 2000 x 0.005 = 20');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3000, '2026-02-02 00:00:00+00', 500)),
          17.5, 'after 500 already used: 500 x 0.01 + 2500 x 0.005 = 17.5');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 6000, '2026-02-02 00:00:00+00', 1)),
          (999 * 0.01 + 4000 * 0.005 + 1001 * 0.001), 'through all three tiers after 1 used: 999 x 0.01 + 4000 x 0.005 + 1001 x 0.001');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 10, '2026-02-02 00:00:00+00', 10000)),
          0.01, 'far into the open tier: 10 x 0.001');
SELECT is((SELECT jsonb_agg(jsonb_build_object('tier', l -> 'tier', 'from', l -> 'tier_from', 'up_to', l -> 'tier_up_to',
                                               'quantity', l -> 'quantity', 'amount', l -> 'amount', 'already_used', l -> 'already_used'))
             FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3000, '2026-02-02 00:00:00+00', 500) q,
                  jsonb_array_elements(q.lines) l),
          '[{"tier": 1, "from": 0, "up_to": 1000, "quantity": 500, "amount": "5", "already_used": 500},
            {"tier": 2, "from": 1000, "up_to": 5000, "quantity": 2500, "amount": "12.5", "already_used": 500}]'::jsonb,
          'a graduated quote explains itself tier by tier: bounds, units in the tier, amount');
SELECT is((SELECT lines FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 0, '2026-02-02 00:00:00+00')),
          '[]'::jsonb, 'a graduated quote of 0 units has no line');
SELECT is((SELECT cost FROM product.price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3, '2026-01-20 00:00:00+00')),
          0.000003, 'the graduated price does not apply before its effective_from');

-- ---------------------------------------------------------------- price_quote: packages
INSERT INTO t SELECT 'agent', product_id::text FROM product.products
 WHERE usage_type = 'agent_run' AND model = (SELECT v FROM t WHERE k = 'm') || '-agent';
SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'agent'), 'package',
                                           package_size => 100, package_price => 2.5,
                                           effective_from => '2026-01-01 00:00:00+00')$$,
                'a package price: 100 runs for 2.5');
SELECT is((SELECT cost FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 100, '2026-01-02 00:00:00+00')),
          2.5, 'exactly one package: 2.5');
SELECT is((SELECT cost FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 101, '2026-01-02 00:00:00+00')),
          5::numeric, 'a partial package rounds up: 101 runs are 2 packages');
SELECT is((SELECT cost FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 1, '2026-01-02 00:00:00+00')),
          2.5, 'one run is a whole package');
SELECT is((SELECT cost FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 50, '2026-01-02 00:00:00+00', 30)),
          0::numeric, 'after 30 used, 50 more fit in the package already paid for: 0');
SELECT is((SELECT cost FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 50, '2026-01-02 00:00:00+00', 80)),
          2.5, 'after 80 used, 50 more need one more package');
SELECT is((SELECT (l ->> 'packages') || ' x ' || (l ->> 'package_price') || ' = ' || (l ->> 'amount')
             FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 250, '2026-01-02 00:00:00+00') q,
                  jsonb_array_elements(q.lines) l),
          '3 x 2.5 = 7.5', 'the package line says packages, package price and amount');

-- ---------------------------------------------------------------- price_quote: which product
INSERT INTO t SELECT 'any', product_id::text FROM product.products WHERE usage_type = 'agent_run' AND model IS NULL;
SELECT lives_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'any'), 'per_unit', 0.5,
                                           effective_from => '2026-01-01 00:00:00+00')$$,
                'a per-unit price for any agent');
SELECT is((SELECT (product_id, cost)::text FROM product.price_quote('agent_run', 'pgtap-unlisted-agent', 4, '2026-01-02 00:00:00+00')),
          (SELECT (v::uuid, 2::numeric)::text FROM t WHERE k = 'any'),
          'an agent without its own product is priced by the "any agent" product');
SELECT is((SELECT product_id FROM product.price_quote('agent_run', NULL, 4, '2026-01-02 00:00:00+00')),
          (SELECT v::uuid FROM t WHERE k = 'any'), 'so is a NULL agent');
SELECT is((SELECT product_id FROM product.price_quote('agent_run', (SELECT v FROM t WHERE k = 'm') || '-agent', 4, '2026-01-02 00:00:00+00')),
          (SELECT v::uuid FROM t WHERE k = 'agent'), 'an agent with its own product is priced by it');
SELECT throws_ok(format($$SELECT * FROM product.price_quote('agent_run', %L, 4, '2025-06-01 00:00:00+00')$$,
                        (SELECT v FROM t WHERE k = 'm') || '-agent'),
                 'P0002', NULL,
                 'an agent''s own product without a price in force is P0002, even if "any agent" had one');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_input_tokens', 'pgtap-no-such-model', 4)$$,
                 'P0002', 'no product for usage type model_input_tokens and model "pgtap-no-such-model"',
                 'a model without a product is P0002 naming it');
SELECT throws_ok($$SELECT * FROM product.price_quote('mcp_call', 'pgtap-no-such-tool', 4)$$,
                 'P0002', 'no product for usage type mcp_call and agent/tool "pgtap-no-such-tool" (nor one for any agent/tool)',
                 'a tool without a product, and no "any tool" product: P0002');

SELECT is((SELECT (q.product_id, q.price_id, q.pricing_model, q.cost, q.lines)::text
             FROM product.try_price_quote('model_input_tokens', 'pgtap-no-such-model', 4) q),
          '(,,,,)', 'try_price_quote: all NULL when no product applies');
SELECT is((SELECT (q.product_id, q.price_id)::text
             FROM product.try_price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 4, '2025-01-01 00:00:00+00') q),
          (SELECT (v::uuid, NULL::uuid)::text FROM t WHERE k = 'in'),
          'try_price_quote: the product with a NULL price when none is in force');
SELECT is((SELECT (q.pricing_model, q.cost)::text
             FROM product.try_price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3000, '2026-02-02 00:00:00+00', 500) q),
          '(graduated,17.5)', 'try_price_quote: the pricing model and the same cost as price_quote');

SELECT is((SELECT (q.price_id IS NOT NULL, q.pricing_model, q.cost, q.lines)::text
             FROM product.try_price_quote('model_output_tokens', (SELECT v FROM t WHERE k = 'm'), 3000, '2026-02-02 00:00:00+00', NULL) q),
          '(t,graduated,,)', 'try_price_quote with already_used NULL: a graduated price is named, not computed');
SELECT is((SELECT q.cost FROM product.try_price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 1000, '2026-02-15 00:00:00+00', NULL) q),
          2::numeric, 'try_price_quote with already_used NULL: a per-unit price is computed');

-- ---------------------------------------------------------------- price_quote: bad arguments
SELECT throws_ok($$SELECT * FROM product.price_quote(NULL, 'x', 1)$$, '22004', 'usage_type must not be null',
                 'price_quote with a NULL usage type is 22004');
SELECT throws_ok($$SELECT * FROM product.price_quote('tokens', 'x', 1)$$, '22023', 'unknown usage type "tokens"',
                 'price_quote with an unknown usage type is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', NULL, 1)$$,
                 '22004', 'model must not be null for usage type model_output_tokens', 'price_quote of model tokens without a model is 22004');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', NULL)$$, '22004', 'quantity must not be null',
                 'price_quote with a NULL quantity is 22004');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', -1)$$,
                 '22023', 'quantity must be a whole number from 0 to 100000000, not -1', 'a negative quantity is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 'Infinity')$$,
                 '22023', 'quantity must be a whole number from 0 to 100000000, not Infinity', 'an infinite quantity is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 100000001)$$,
                 '22023', 'quantity must be a whole number from 0 to 100000000, not 100000001',
                 'a quantity over 100 million (the most billing prices in one usage) is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 1e131000)$$,
                 '22023', 'quantity must be a whole number from 0 to 100000000, not 10000000000000000000000000000000…',
                 'a quantity of 1e131000 is 22023, and the message shows it cut at 32 digits (not a 131 kB message)');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 0.5)$$,
                 '22023', 'quantity must be a whole number from 0 to 100000000, not 0.5',
                 'a fraction of a unit is 22023: billing prices whole units');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 1, now(), 1e16)$$,
                 '22023', 'already_used must be a whole number from 0 to 1000000000000000, not 10000000000000000',
                 'an already_used over 10^15 is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 1, NULL)$$, '22004', 'at must not be null',
                 'price_quote at a NULL time is 22004');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 1, now(), -5)$$,
                 '22023', 'already_used must be a whole number from 0 to 1000000000000000, not -5', 'a negative already_used is 22023');
SELECT throws_ok($$SELECT * FROM product.price_quote('model_output_tokens', 'x', 1, now(), NULL)$$,
                 '22004', 'already_used must not be null', 'a NULL already_used is 22004');

-- ---------------------------------------------------------------- the catalogue
SELECT is((SELECT data_fields ->> 'model' IS NOT NULL AND (data_fields -> 'model' ->> 'required')::boolean = false
             FROM isa.event_types WHERE source = 'product_service' AND event_type = 'product.price_changed'),
          true, 'product.price_changed is registered, its model field optional');

-- ---------------------------------------------------------------- privileges
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'product'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['product.get_product(uuid)', 'product.list_products(text)', 'product.list_prices(uuid)',
                    'product.price_quote(text,text,numeric,timestamp with time zone,numeric)',
                    'product.try_price_quote(text,text,numeric,timestamp with time zone,numeric)'],
              'isa_app may execute exactly the read API: create_product and set_price are isa_app_admin''s');
SELECT is((SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p
            WHERE p.pronamespace = 'product'::regnamespace AND p.proname NOT LIKE '\_%'
              AND NOT (p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'])),
          NULL, 'every API function is SECURITY DEFINER with a pinned search_path');
SELECT ok(NOT has_table_privilege('isa_app', 'product.products', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'product.prices', 'SELECT')
          AND NOT has_table_privilege('isa_app', 'product.prices', 'INSERT'),
          'isa_app has no privilege on the tables');

GRANT SELECT ON t TO isa_app, isa_app_admin;
SET LOCAL ROLE isa_app;
SELECT is((SELECT cost FROM product.price_quote('model_input_tokens', (SELECT v FROM t WHERE k = 'm'), 1000, '2026-03-02 00:00:00+00')),
          1::numeric, 'as isa_app: price_quote works');
SELECT throws_ok($$SELECT product.set_price((SELECT v::uuid FROM t WHERE k = 'in'), 'per_unit', 0.0015,
                                            effective_from => '2026-04-01 00:00:00+00')$$,
                 '42501', 'permission denied for function set_price', 'as isa_app: set_price is 42501 (administration)');
SELECT throws_ok($$SELECT * FROM product.prices$$, '42501', NULL, 'as isa_app: reading product.prices is 42501');
SELECT throws_ok($$SELECT product._check_tiers('[]')$$, '42501', NULL, 'as isa_app: an internal function is 42501');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
