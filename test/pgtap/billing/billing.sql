-- billing.sql — the billing service: the handler of external.usage.recorded.>
-- prices each usage with product's prices, records it once per
-- (usage_kind, usage_id) whatever envelope carries it, and publishes
-- billing.calculated (tokens = ceil(exact cost)) or, for bad usage,
-- billing.error with a reason (never an exception); calculate_cost quotes
-- without writing; usage_summary and get_billing_records read the records.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(98);

-- ---------------------------------------------------------------- fixtures
-- Names of this run (committed products and usage of others never collide),
-- and times relative to the start of the current month (UTC), so that every
-- usage lies in the past: m(-3) is the start of the month three months ago.
CREATE TEMP TABLE t (k text PRIMARY KEY, v text) ON COMMIT DROP;
INSERT INTO t VALUES ('r', 'pgtap-' || gen_random_uuid());
CREATE FUNCTION pg_temp.r(suffix text) RETURNS text LANGUAGE sql
    AS $$SELECT v || '-' || suffix FROM t WHERE k = 'r'$$;
CREATE FUNCTION pg_temp.m(months int, days int DEFAULT 0) RETURNS timestamptz LANGUAGE sql
    AS $$SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => months, days => days)) AT TIME ZONE 'UTC'$$;
CREATE FUNCTION pg_temp.v(key text) RETURNS text LANGUAGE sql AS $$SELECT v FROM t WHERE k = key$$;

-- A usage event as a producer publishes it, handled as the bridge would.
CREATE FUNCTION pg_temp.usage(event_type text, data jsonb) RETURNS isa.event LANGUAGE sql
    AS $$SELECT isa.event_from_json(jsonb_build_object('id', isa.uuid_v7(), 'event_type', event_type,
                                                       'source', 'external', 'timestamp', now(), 'data', data))$$;
CREATE FUNCTION pg_temp.model(usage_id text, user_id text, model text, input jsonb, output jsonb,
                              occurred_at timestamptz) RETURNS isa.event LANGUAGE sql
    AS $$SELECT pg_temp.usage('usage.recorded.model',
                  jsonb_build_object('usage_id', usage_id, 'user_id', user_id, 'model', model,
                                     'input_tokens', input, 'output_tokens', output,
                                     'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))$$;
CREATE FUNCTION pg_temp.calculated(usage_id text) RETURNS SETOF billing.outbox LANGUAGE sql
    AS $$SELECT * FROM billing.outbox WHERE event_type = 'billing.calculated' AND data ->> 'usage_id' = usage_id ORDER BY id$$;
CREATE FUNCTION pg_temp.error(usage_id text) RETURNS SETOF billing.outbox LANGUAGE sql
    AS $$SELECT * FROM billing.outbox WHERE event_type = 'billing.error' AND data ->> 'usage_id' = usage_id ORDER BY id$$;
CREATE FUNCTION pg_temp.record(usage_id text) RETURNS billing.billing_records LANGUAGE sql
    AS $$SELECT * FROM billing.billing_records r WHERE r.usage_id = $1$$;

-- The "any agent/tool" products would price unknown agents and tools: set
-- aside committed ones for this (rolled back) transaction.
DELETE FROM product.prices WHERE product_id IN (SELECT product_id FROM product.products
                                                 WHERE usage_type IN ('agent_run', 'mcp_call') AND model IS NULL);
DELETE FROM product.products WHERE usage_type IN ('agent_run', 'mcp_call') AND model IS NULL;

INSERT INTO t SELECT 'user', user_id::text FROM account.create_user(pg_temp.r('u') || '@example.com', 'Billing Tester');
INSERT INTO t SELECT 'gone', user_id::text FROM account.create_user(pg_temp.r('g') || '@example.com', 'Deleted Later');

-- model M: 0.002 per input token, 0.004 per output token from m(-6);
-- input 0.001 from m(-1).  model X: 0.000001 per token, in and out.
-- model H: an input product only.  agent A: graduated, 1 per run up to 10
-- runs a month, 0.5 above.  tool T: packages of 100 calls for 2.
INSERT INTO t VALUES ('M', pg_temp.r('model')), ('X', pg_temp.r('exact')), ('H', pg_temp.r('half')),
                     ('A', pg_temp.r('agent')), ('T', pg_temp.r('tool'));
DO $fixtures$
DECLARE
    u text;
BEGIN
    PERFORM product.set_price((product.create_product('model_input_tokens', pg_temp.v('M'), 'in', '')).product_id,
                              'per_unit', 0.002, effective_from => pg_temp.m(-6));
    PERFORM product.set_price((SELECT product_id FROM product.products
                                WHERE usage_type = 'model_input_tokens' AND model = pg_temp.v('M')),
                              'per_unit', 0.001, effective_from => pg_temp.m(-1));
    PERFORM product.set_price((product.create_product('model_output_tokens', pg_temp.v('M'), 'out', '')).product_id,
                              'per_unit', 0.004, effective_from => pg_temp.m(-6));
    FOREACH u IN ARRAY ARRAY['model_input_tokens', 'model_output_tokens'] LOOP
        PERFORM product.set_price((product.create_product(u, pg_temp.v('X'), u, '')).product_id, 'per_unit', 0.000001,
                                  effective_from => pg_temp.m(-6));
    END LOOP;
    PERFORM product.set_price((product.create_product('model_input_tokens', pg_temp.v('H'), 'in', '')).product_id,
                              'per_unit', 1, effective_from => pg_temp.m(-6));
    PERFORM product.set_price((product.create_product('agent_run', pg_temp.v('A'), 'agent', '')).product_id, 'graduated',
                              tiers => '[{"up_to": 10, "unit_price": 1}, {"up_to": null, "unit_price": 0.5}]',
                              effective_from => pg_temp.m(-6));
    PERFORM product.set_price((product.create_product('mcp_call', pg_temp.v('T'), 'tool', '')).product_id, 'package',
                              package_size => 100, package_price => 2, effective_from => pg_temp.m(-6));
END
$fixtures$;

-- ---------------------------------------------------------------- registration
SELECT is((SELECT count(*) FROM isa.subscriptions
            WHERE service = 'billing' AND subject_filter = 'external.usage.recorded.>'
              AND handler = 'billing.on_usage_recorded(isa.event)'::regprocedure AND options = '{"versions": [1]}'),
          1::bigint, 'billing subscribes once to external.usage.recorded.> with on_usage_recorded (major version 1)');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(f, ',' ORDER BY f) FROM jsonb_object_keys(data_fields) f)
                  FROM isa.event_types WHERE source = 'external' AND event_type LIKE 'usage.recorded.%'$$,
              ARRAY['usage.recorded.model input_tokens,model,occurred_at,output_tokens,usage_id,user_id',
                    'usage.recorded.agent agent,occurred_at,runs,usage_id,user_id',
                    'usage.recorded.mcp calls,occurred_at,tool,usage_id,user_id'],
              'the three external usage event types are registered with their data fields');
SELECT set_eq($$SELECT event_type || ' ' || (SELECT string_agg(f, ',' ORDER BY f) FROM jsonb_object_keys(data_fields) f)
                  FROM isa.event_types WHERE source = 'billing_service' AND event_type LIKE 'billing.%'$$,
              ARRAY['billing.calculated billing_id,cost,currency,lines,tokens,usage_id,usage_kind,user_id',
                    'billing.error reason,reason_code,usage_id,usage_kind,user_id'],
              'billing.calculated and billing.error are registered with their data fields');

-- ---------------------------------------------------------------- a model usage
CREATE TEMP TABLE ev AS SELECT 'u1'::text AS k, pg_temp.model(pg_temp.r('u1'), pg_temp.v('user'), pg_temp.v('M'),
                                                             '100000', '25000', pg_temp.m(-2, 4)) AS e;
SELECT lives_ok($$SELECT billing.on_usage_recorded(e) FROM ev WHERE k = 'u1'$$,
                'the handler bills a model usage');
SELECT is((SELECT (r.usage_kind, r.user_id, r.model, r.quantities, r.cost, r.tokens, r.occurred_at, r.event_id)::text
             FROM pg_temp.record(pg_temp.r('u1')) r),
          (SELECT ('model', pg_temp.v('user')::uuid, pg_temp.v('M'), '{"input_tokens": 100000, "output_tokens": 25000}'::jsonb,
                   300::numeric, 300::bigint, pg_temp.m(-2, 4), (e).id)::text FROM ev WHERE k = 'u1'),
          'the billing record: kind, user, model, quantities, cost 100000 x 0.002 + 25000 x 0.004 = 300, tokens, occurred_at, envelope id');
SELECT is((SELECT substr(billing_id::text, 15, 1) FROM pg_temp.record(pg_temp.r('u1'))), '7', 'billing ids are version 7 UUIDs');
SELECT is((SELECT count(*) FROM pg_temp.calculated(pg_temp.r('u1'))), 1::bigint, 'one billing.calculated');
SELECT is((SELECT o.source || ' ' || o.version FROM pg_temp.calculated(pg_temp.r('u1')) o), 'billing_service 1.0.0',
          'billing.calculated comes from billing_service');
SELECT is((SELECT o.data - 'lines' FROM pg_temp.calculated(pg_temp.r('u1')) o),
          (SELECT jsonb_build_object('billing_id', r.billing_id, 'usage_id', pg_temp.r('u1'), 'usage_kind', 'model',
                                     'user_id', pg_temp.v('user'), 'tokens', 300, 'cost', '300', 'currency', 'tokens')
             FROM pg_temp.record(pg_temp.r('u1')) r),
          'billing.calculated: billing_id, usage_id, usage_kind, user_id, tokens (integer), cost (decimal string), currency');
SELECT is((SELECT o.data -> 'lines' FROM pg_temp.calculated(pg_temp.r('u1')) o),
          (SELECT r.lines FROM pg_temp.record(pg_temp.r('u1')) r),
          'its lines are the record''s');
SELECT is((SELECT jsonb_agg((l ->> 'usage_type') || ' ' || (l ->> 'quantity') || ' x ' || (l ->> 'unit_price') || ' = ' || (l ->> 'amount'))
             FROM pg_temp.record(pg_temp.r('u1')) r, jsonb_array_elements(r.lines) l),
          '["model_input_tokens 100000 x 0.002 = 200", "model_output_tokens 25000 x 0.004 = 100"]'::jsonb,
          'the lines: one per usage type, quantity x unit price = amount');

-- ---------------------------------------------------------------- billed once
INSERT INTO ev SELECT 'u1 again', pg_temp.model(pg_temp.r('u1'), pg_temp.v('user'), pg_temp.v('M'), '100000', '25000', pg_temp.m(-2, 4));
SELECT isnt((SELECT (e).id FROM ev WHERE k = 'u1 again'), (SELECT (e).id FROM ev WHERE k = 'u1'),
            'the same usage again, under another envelope id');
SELECT lives_ok($$SELECT billing.on_usage_recorded(e) FROM ev WHERE k = 'u1 again'$$, 'is handled without error');
SELECT lives_ok($$SELECT billing.on_usage_recorded(e) FROM ev WHERE k = 'u1'$$, 'and so is the first envelope once more');
SELECT is((SELECT count(*) FROM billing.billing_records WHERE usage_id = pg_temp.r('u1')), 1::bigint,
          'a usage delivered three times has one billing record');
SELECT is((SELECT count(*) FROM pg_temp.calculated(pg_temp.r('u1'))), 1::bigint, 'and one billing.calculated');
SELECT is((SELECT count(*) FROM pg_temp.error(pg_temp.r('u1'))), 0::bigint, 'and no billing.error');
SELECT lives_ok($$SELECT billing.on_usage_recorded(pg_temp.usage('usage.recorded.mcp',
                     jsonb_build_object('usage_id', pg_temp.r('u1'), 'user_id', pg_temp.v('user'), 'tool', pg_temp.v('T'),
                                        'calls', 1, 'occurred_at', pg_temp.m(-2, 4))))$$,
                'the same usage_id from another producer (mcp)');
SELECT is((SELECT array_agg(usage_kind ORDER BY usage_kind) FROM billing.billing_records WHERE usage_id = pg_temp.r('u1')),
          ARRAY['mcp', 'model'], 'is another usage: usage ids are unique per usage kind');

-- ---------------------------------------------------------------- prices in force, exactness, ceil
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('u2'), pg_temp.v('user'), pg_temp.v('M'), '100000', '25000', pg_temp.m(-1, 1)));
SELECT is((SELECT cost FROM pg_temp.record(pg_temp.r('u2'))), 200::numeric,
          'after the new input price took effect, it applies: 100000 x 0.001 + 25000 x 0.004 = 200');
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('u3'), pg_temp.v('user'), pg_temp.v('M'), '100000', '25000',
                                               pg_temp.m(-1) - interval '1 second'));
SELECT is((SELECT cost FROM pg_temp.record(pg_temp.r('u3'))), 300::numeric, 'a second before it, the old price applies');
SELECT billing.on_usage_recorded(pg_temp.usage('usage.recorded.model',
         jsonb_build_object('usage_id', pg_temp.r('u4'), 'user_id', pg_temp.v('user'), 'model', pg_temp.v('M'),
                            'input_tokens', 1000, 'output_tokens', 0)));
SELECT is((SELECT (cost, occurred_at)::text FROM pg_temp.record(pg_temp.r('u4'))), (1::numeric, now())::text,
          'without occurred_at, the usage is priced at the envelope timestamp');

SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('x' || i), pg_temp.v('user'), pg_temp.v('X'), '1', '0', pg_temp.m(-2, 1)))
  FROM generate_series(1, 3) i;
SELECT is((SELECT array_agg(o.data ->> 'cost' || ' ' || (o.data ->> 'tokens') ORDER BY o.id) FROM billing.outbox o
            WHERE o.event_type = 'billing.calculated' AND o.data ->> 'usage_id' LIKE pg_temp.r('x%')),
          ARRAY['0.000001 1', '0.000001 1', '0.000001 1'],
          'a cost of 0.000001 is charged ceil(0.000001) = 1 token');
SELECT is((SELECT sum(cost)::text FROM billing.billing_records WHERE usage_id LIKE pg_temp.r('x%')), '0.000003',
          'three costs of 0.000001 sum to exactly 0.000003');
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('x4'), pg_temp.v('user'), pg_temp.v('X'), '2500001', '0', pg_temp.m(-2, 1)));
SELECT is((SELECT cost::text || ' ' || tokens FROM pg_temp.record(pg_temp.r('x4'))), '2.500001 3',
          'ceil rounds up any fraction: 2.500001 costs 3 tokens');
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('x5'), pg_temp.v('user'), pg_temp.v('X'), '0', '0', pg_temp.m(-2, 1)));
SELECT is((SELECT o.data ->> 'cost' || ' ' || (o.data ->> 'tokens') FROM pg_temp.calculated(pg_temp.r('x5')) o), '0 0',
          'a usage of nothing is recorded at cost 0 and 0 tokens (billing.calculated says so)');

-- ---------------------------------------------------------------- graduated over the month
CREATE FUNCTION pg_temp.agent(usage_id text, runs int, at timestamptz) RETURNS isa.event LANGUAGE sql
    AS $$SELECT pg_temp.usage('usage.recorded.agent', jsonb_build_object('usage_id', usage_id, 'user_id', pg_temp.v('user'),
                                                                         'agent', pg_temp.v('A'), 'runs', runs, 'occurred_at', at))$$;
INSERT INTO ev SELECT 'a2', pg_temp.agent(pg_temp.r('a2'), 5, pg_temp.m(-3, 9));
SELECT billing.on_usage_recorded(pg_temp.agent(pg_temp.r('a1'), 8, pg_temp.m(-3, 2)));
SELECT is((SELECT (cost, tokens)::text FROM pg_temp.record(pg_temp.r('a1'))), '(8,8)', 'graduated: 8 runs in the first tier cost 8');
SELECT billing.on_usage_recorded(e) FROM ev WHERE k = 'a2';
SELECT is((SELECT (cost, tokens)::text FROM pg_temp.record(pg_temp.r('a2'))), '(3.5,4)',
          'the same month, 5 more runs cross the boundary: 2 x 1 + 3 x 0.5 = 3.5, charged 4');
SELECT is((SELECT jsonb_agg(jsonb_build_array(l -> 'tier', l -> 'already_used', l -> 'quantity', l -> 'amount'))
             FROM pg_temp.record(pg_temp.r('a2')) r, jsonb_array_elements(r.lines) l),
          '[[1, 8, 2, "2"], [2, 8, 3, "1.5"]]'::jsonb, 'its lines, tier by tier, after 8 already used');
SELECT is((SELECT quantity FROM billing.usage_counters
            WHERE user_id = pg_temp.v('user')::uuid AND month = pg_temp.m(-3)::date
              AND product_id = (SELECT product_id FROM product.products WHERE model = pg_temp.v('A'))),
          13::numeric, 'the month''s counter holds the 13 runs');
SELECT billing.on_usage_recorded(pg_temp.agent(pg_temp.r('a3'), 5, pg_temp.m(-2, 0)));
SELECT is((SELECT cost FROM pg_temp.record(pg_temp.r('a3'))), 5::numeric,
          'the next calendar month (UTC) starts again in the first tier');
SELECT billing.on_usage_recorded(pg_temp.agent(pg_temp.r('a2'), 5, pg_temp.m(-3, 9)));
SELECT is((SELECT quantity FROM billing.usage_counters
            WHERE user_id = pg_temp.v('user')::uuid AND month = pg_temp.m(-3)::date
              AND product_id = (SELECT product_id FROM product.products WHERE model = pg_temp.v('A'))),
          13::numeric, 'a redelivered graduated usage does not count twice');
SELECT is((SELECT count(*) FROM pg_temp.calculated(pg_temp.r('a2'))), 1::bigint, 'nor is it published twice');
SELECT is((SELECT (cost, tokens)::text FROM billing.calculate_cost('agent', pg_temp.v('user')::uuid, pg_temp.v('A'),
                                                                   '{"runs": 3}', pg_temp.m(-3, 20))),
          '(1.5,2)', 'calculate_cost continues from the month''s usage: 3 more runs cost 1.5');

-- ---------------------------------------------------------------- packages over the month
CREATE FUNCTION pg_temp.mcp(usage_id text, calls int) RETURNS isa.event LANGUAGE sql
    AS $$SELECT pg_temp.usage('usage.recorded.mcp', jsonb_build_object('usage_id', usage_id, 'user_id', pg_temp.v('user'),
                                                                       'tool', pg_temp.v('T'), 'calls', calls,
                                                                       'occurred_at', pg_temp.m(-4, 3)))$$;
SELECT billing.on_usage_recorded(pg_temp.mcp(pg_temp.r('t1'), 150));
SELECT billing.on_usage_recorded(pg_temp.mcp(pg_temp.r('t2'), 30));
SELECT billing.on_usage_recorded(pg_temp.mcp(pg_temp.r('t3'), 30));
SELECT is((SELECT array_agg(tokens ORDER BY usage_id) FROM billing.billing_records WHERE usage_id IN (pg_temp.r('t1'), pg_temp.r('t2'), pg_temp.r('t3'))),
          ARRAY[4, 0, 2]::bigint[],
          'packages of 100 for 2: 150 calls buy 2 packages (4); 30 more fit in them (0); 30 more need a third (2)');

-- ---------------------------------------------------------------- bad usage: billing.error, never an exception
SELECT account.delete_user(pg_temp.v('gone')::uuid);
INSERT INTO ev VALUES
  ('unknown user',     pg_temp.model(pg_temp.r('e1'), gen_random_uuid()::text, pg_temp.v('M'), '10', '10', pg_temp.m(-2))),
  ('deleted user',     pg_temp.model(pg_temp.r('e2'), pg_temp.v('gone'), pg_temp.v('M'), '10', '10', pg_temp.m(-2))),
  ('unknown model',    pg_temp.model(pg_temp.r('e3'), pg_temp.v('user'), pg_temp.r('no-such-model'), '10', '10', pg_temp.m(-2))),
  ('no output product', pg_temp.model(pg_temp.r('e4'), pg_temp.v('user'), pg_temp.v('H'), '10', '10', pg_temp.m(-2))),
  ('no price yet',     pg_temp.model(pg_temp.r('e5'), pg_temp.v('user'), pg_temp.v('M'), '10', '10', pg_temp.m(-7))),
  ('unknown agent',    pg_temp.usage('usage.recorded.agent', jsonb_build_object('usage_id', pg_temp.r('e6'), 'user_id', pg_temp.v('user'),
                                                                                'agent', pg_temp.r('no-such-agent'), 'runs', 1))),
  ('negative',         pg_temp.model(pg_temp.r('e7'), pg_temp.v('user'), pg_temp.v('M'), '-5', '10', pg_temp.m(-2))),
  ('fractional',       pg_temp.model(pg_temp.r('e8'), pg_temp.v('user'), pg_temp.v('M'), '10', '2.5', pg_temp.m(-2))),
  ('absurd',           pg_temp.model(pg_temp.r('e9'), pg_temp.v('user'), pg_temp.v('M'), '100000001', '0', pg_temp.m(-2))),
  ('string',           pg_temp.model(pg_temp.r('e10'), pg_temp.v('user'), pg_temp.v('M'), '"10"', '0', pg_temp.m(-2))),
  ('no output',        pg_temp.usage('usage.recorded.model', jsonb_build_object('usage_id', pg_temp.r('e11'), 'user_id', pg_temp.v('user'),
                                                                                'model', pg_temp.v('M'), 'input_tokens', 10))),
  ('no usage_id',      pg_temp.usage('usage.recorded.model', jsonb_build_object('user_id', pg_temp.v('user'), 'model', pg_temp.v('M'),
                                                                                'input_tokens', 1, 'output_tokens', 1, 'marker', pg_temp.r('e12')))),
  ('bad user_id',      pg_temp.model(pg_temp.r('e13'), 'user-42', pg_temp.v('M'), '10', '10', pg_temp.m(-2))),
  ('no model',         pg_temp.usage('usage.recorded.model', jsonb_build_object('usage_id', pg_temp.r('e14'), 'user_id', pg_temp.v('user'),
                                                                                'input_tokens', 1, 'output_tokens', 1))),
  ('bad occurred_at',  pg_temp.usage('usage.recorded.agent', jsonb_build_object('usage_id', pg_temp.r('e15'), 'user_id', pg_temp.v('user'),
                                                                                'agent', pg_temp.v('A'), 'runs', 1,
                                                                                'occurred_at', '2026-02-30T10:00:00Z'))),
  ('future',           pg_temp.usage('usage.recorded.agent', jsonb_build_object('usage_id', pg_temp.r('e16'), 'user_id', pg_temp.v('user'),
                                                                                'agent', pg_temp.v('A'), 'runs', 1,
                                                                                'occurred_at', now() + interval '2 hours'))),
  ('unknown type',     pg_temp.usage('usage.recorded.gpu', jsonb_build_object('usage_id', pg_temp.r('e17'), 'user_id', pg_temp.v('user'),
                                                                              'seconds', 5)));
CREATE TEMP TABLE outbox_before ON COMMIT DROP AS SELECT count(*) AS n FROM billing.outbox;
SELECT lives_ok($$SELECT count(billing.on_usage_recorded(e)) FROM ev
                   WHERE k NOT IN ('u1', 'u1 again', 'a2')$$,
                'seventeen bad usage events are handled without an exception');
SELECT is((SELECT count(*) FROM billing.outbox), (SELECT n FROM outbox_before) + 17,
          'each publishes one event');
SELECT is((SELECT count(*) FROM billing.billing_records WHERE usage_id ~ ('^' || pg_temp.r('e') || '[0-9]+$')), 0::bigint,
          'and none is billed');

SELECT is((SELECT o.data FROM pg_temp.error(pg_temp.r('e1')) o),
          jsonb_build_object('usage_id', pg_temp.r('e1'), 'usage_kind', 'model',
                             'user_id', (SELECT (e).data ->> 'user_id' FROM ev WHERE k = 'unknown user'),
                             'reason_code', 'unknown_user',
                             'reason', format('user %s does not exist or was deleted', (SELECT (e).data ->> 'user_id' FROM ev WHERE k = 'unknown user'))),
          'unknown user: billing.error with usage_id, usage_kind, user_id, reason_code unknown_user and the reason');
SELECT is((SELECT o.source || ' ' || o.version FROM pg_temp.error(pg_temp.r('e1')) o), 'billing_service 1.0.0',
          'billing.error comes from billing_service');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e2'))), 'unknown_user', 'a deleted user: unknown_user');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e3'))),
          format('unknown_model: no product for model "%s"', pg_temp.r('no-such-model')),
          'a model without products: unknown_model');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e4'))),
          format('unknown_product: no product for usage type model_output_tokens and model "%s"', pg_temp.v('H')),
          'a model without an output product: unknown_product');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e5'))), 'unknown_product',
          'a usage from before any price: unknown_product');
SELECT is((SELECT data ->> 'reason_code' || ' ' || (data ->> 'usage_kind') || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e6'))),
          format('unknown_product agent: no product for usage type agent_run and agent "%s" (nor one for any agent)', pg_temp.r('no-such-agent')),
          'an agent without a product (and no "any agent" product): unknown_product');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e7'))),
          'invalid_quantity: input_tokens must be an integer from 0 to 100000000, not -5', 'a negative quantity: invalid_quantity');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e8'))),
          'invalid_quantity: output_tokens must be an integer from 0 to 100000000, not 2.5', 'a fractional quantity: invalid_quantity');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e9'))), 'invalid_quantity',
          'more than 100 million tokens in one usage: invalid_quantity');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e10'))), 'invalid_quantity', 'a quantity as a string: invalid_quantity');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e11'))),
          'invalid_quantity: output_tokens must be an integer from 0 to 100000000, not missing', 'a missing quantity: invalid_quantity');
SELECT is((SELECT (x.reason_code, x.reason, x.usage_id, x.user_id)::text FROM billing.usage_errors x
            WHERE x.data ->> 'marker' = pg_temp.r('e12')),
          '(invalid_usage,"usage_id must be a string of 1 to 200 characters, not missing",,)',
          'no usage_id: invalid_usage, recorded with usage_id and user_id null');
SELECT is((SELECT count(*) FROM billing.outbox o
            WHERE o.event_type = 'billing.error' AND o.occurred_at >= transaction_timestamp()
              AND o.data = '{"usage_id": null, "usage_kind": "model", "user_id": null, "reason_code": "invalid_usage",
                             "reason": "usage_id must be a string of 1 to 200 characters, not missing"}'),
          1::bigint, 'and published with usage_id and user_id null');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') || ' ' || coalesce(data ->> 'user_id', 'null')
             FROM pg_temp.error(pg_temp.r('e13'))),
          'invalid_usage: user_id must be a UUID, not "user-42" null', 'a user_id that is not a UUID: invalid_usage');
SELECT is((SELECT data ->> 'reason_code' || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e14'))),
          'invalid_usage: model must be a string of 1 to 200 characters, not missing', 'no model: invalid_usage');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e15'))), 'invalid_usage', 'occurred_at 30 February: invalid_usage');
SELECT is((SELECT data ->> 'reason_code' FROM pg_temp.error(pg_temp.r('e16'))), 'invalid_usage', 'occurred_at two hours ahead: invalid_usage');
SELECT is((SELECT data ->> 'reason_code' || ' ' || (data ->> 'usage_kind') || ': ' || (data ->> 'reason') FROM pg_temp.error(pg_temp.r('e17'))),
          'invalid_usage gpu: unknown usage event type "usage.recorded.gpu"', 'an unknown usage event type: invalid_usage');
SELECT is((SELECT count(*) FROM billing.usage_errors x JOIN ev ON (ev.e).id = x.event_id
            WHERE x.data = (ev.e).data AND x.event_type = (ev.e).event_type
              AND x.reason_code IN ('unknown_user', 'unknown_model', 'unknown_product', 'invalid_quantity', 'invalid_usage')),
          17::bigint, 'billing.usage_errors keeps each with its envelope id, type, reason and data as received');

-- Bad data is not a transient error: once corrected, the same usage is billed.
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('e7'), pg_temp.v('user'), pg_temp.v('M'), '5', '10', pg_temp.m(-2)));
SELECT is((SELECT cost FROM pg_temp.record(pg_temp.r('e7'))), 0.05, 'a rejected usage id is billed when it comes back valid');
-- A billed usage redelivered after its user was deleted: still nothing to say.
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('g1'), pg_temp.v('user'), pg_temp.v('M'), '5', '10', pg_temp.m(-2)));
INSERT INTO t VALUES ('other', (account.create_user(pg_temp.r('o') || '@example.com', 'Other')).user_id::text);
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('g2'), pg_temp.v('other'), pg_temp.v('M'), '5', '10', pg_temp.m(-2)));
SELECT account.delete_user(pg_temp.v('other')::uuid);
SELECT billing.on_usage_recorded(pg_temp.model(pg_temp.r('g2'), pg_temp.v('other'), pg_temp.v('M'), '5', '10', pg_temp.m(-2)));
SELECT is((SELECT count(*) FROM pg_temp.error(pg_temp.r('g2'))) + (SELECT count(*) FROM pg_temp.calculated(pg_temp.r('g2'))),
          1::bigint, 'a billed usage redelivered after its user was deleted publishes nothing more');

-- ---------------------------------------------------------------- calculate_cost
CREATE TEMP TABLE counts_before ON COMMIT DROP AS
SELECT (SELECT count(*) FROM billing.billing_records) AS records, (SELECT count(*) FROM billing.outbox) AS events,
       (SELECT sum(quantity) FROM billing.usage_counters) AS counted, (SELECT count(*) FROM billing.usage_errors) AS errors;
SELECT is((SELECT (c.cost, c.tokens, c.lines)::text FROM billing.calculate_cost('model', pg_temp.v('user')::uuid, pg_temp.v('M'),
                                                                                '{"input_tokens": 100000, "output_tokens": 25000}',
                                                                                pg_temp.m(-2, 4)) c),
          (SELECT (r.cost, r.tokens, r.lines)::text FROM pg_temp.record(pg_temp.r('u1')) r),
          'calculate_cost prices like the handler: cost, tokens and lines');
SELECT is((SELECT (cost, tokens)::text FROM billing.calculate_cost('mcp', pg_temp.v('user')::uuid, pg_temp.v('T'), '{"calls": 1}')),
          '(2,2)', 'calculate_cost at now() by default');
SELECT is((SELECT (records, events, counted, errors)::text FROM counts_before),
          (SELECT ((SELECT count(*) FROM billing.billing_records), (SELECT count(*) FROM billing.outbox),
                   (SELECT sum(quantity) FROM billing.usage_counters), (SELECT count(*) FROM billing.usage_errors))::text),
          'calculate_cost writes nothing');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost(NULL, gen_random_uuid(), 'm', '{}')$$, '22004',
                 'usage_kind must not be null', 'calculate_cost: NULL usage_kind is 22004');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('gpu', gen_random_uuid(), 'm', '{}')$$, '22023',
                 'unknown usage kind "gpu"', 'calculate_cost: an unknown usage kind is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', NULL, 'm', '{"runs": 1}')$$, '22004',
                 'user_id must not be null', 'calculate_cost: NULL user_id is 22004');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), NULL, '{"runs": 1}')$$, '22004',
                 'model must not be null', 'calculate_cost: NULL model is 22004');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), '', '{"runs": 1}')$$, '22023',
                 'model must be 1 to 200 characters', 'calculate_cost: an empty model is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), 'm', NULL)$$, '22004',
                 'quantities must not be null', 'calculate_cost: NULL quantities is 22004');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), 'm', '[1]')$$, '22023',
                 'quantities must be a JSON object, not array', 'calculate_cost: quantities not an object is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), 'm', '{"runs": 1, "calls": 2}')$$, '22023',
                 'unknown quantities for usage kind agent: calls', 'calculate_cost: a quantity of another kind is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('model', gen_random_uuid(), 'm', '{"input_tokens": 1}')$$, '22023',
                 'quantities.output_tokens must be an integer from 0 to 100000000, not missing',
                 'calculate_cost: a missing quantity is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), 'm', '{"runs": -1}')$$, '22023',
                 'quantities.runs must be an integer from 0 to 100000000, not -1', 'calculate_cost: a negative quantity is 22023');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', gen_random_uuid(), 'm', '{"runs": 1}', NULL)$$, '22004',
                 'at must not be null', 'calculate_cost: NULL at is 22004');
SELECT throws_ok($$SELECT * FROM billing.calculate_cost('agent', '00000000-0000-7000-8000-000000000000', 'm', '{"runs": 1}')$$,
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'calculate_cost: an unknown user is P0002');
SELECT throws_ok(format($$SELECT * FROM billing.calculate_cost('model', %L, %L, '{"input_tokens": 1, "output_tokens": 1}')$$,
                        pg_temp.v('user'), pg_temp.r('no-such-model')),
                 'P0002', format('no product for model "%s"', pg_temp.r('no-such-model')),
                 'calculate_cost: an unknown model is P0002');
SELECT throws_ok(format($$SELECT * FROM billing.calculate_cost('model', %L, %L, '{"input_tokens": 1, "output_tokens": 1}', %L)$$,
                        pg_temp.v('user'), pg_temp.v('M'), pg_temp.m(-7)),
                 'P0002', NULL, 'calculate_cost: a time before any price is P0002');

-- ---------------------------------------------------------------- usage_summary, get_billing_records
SELECT results_eq(format($$SELECT usage_kind, model, count, quantities, cost, tokens
                             FROM billing.usage_summary(%L, %L, %L)$$, pg_temp.v('user'), pg_temp.m(-3), pg_temp.m(-2)),
                  format($$VALUES ('agent', %L, 2::bigint, '{"runs": 13}'::jsonb, 11.5, 12::bigint)$$, pg_temp.v('A')),
                  'usage_summary: per usage kind and model in [from, to): count, summed quantities, exact cost, tokens');
SELECT results_eq(format($$SELECT usage_kind, model, count, quantities::text, cost::text, tokens
                             FROM billing.usage_summary(%L, %L, %L)$$, pg_temp.v('user'), pg_temp.m(-2), pg_temp.m(-1)),
                  format($$VALUES ('agent', %L, 1::bigint, '{"runs": 5}', '5', 5::bigint),
                                  ('mcp', %L, 1::bigint, '{"calls": 1}', '2', 2::bigint),
                                  ('model', %L, 5::bigint, '{"input_tokens": 2500004, "output_tokens": 0}', '2.500004', 6::bigint),
                                  ('model', %L, 4::bigint, '{"input_tokens": 200010, "output_tokens": 50020}', '600.1', 602::bigint)$$,
                         pg_temp.v('A'), pg_temp.v('T'), pg_temp.v('X'), pg_temp.v('M')),
                  'usage_summary of another month: one row per kind and model, in order');
SELECT is((SELECT count(*) FROM billing.usage_summary(pg_temp.v('user')::uuid, pg_temp.m(-12), pg_temp.m(-11))), 0::bigint,
          'usage_summary of a period without usage is empty');
SELECT is((SELECT count(*)::int FROM billing.usage_summary(pg_temp.v('other')::uuid, pg_temp.m(-12), pg_temp.m(1))), 1,
          'a deleted user''s billed usage is still summarised');
SELECT throws_ok($$SELECT * FROM billing.usage_summary(gen_random_uuid(), now(), now() - interval '1 day')$$, '22023', NULL,
                 'usage_summary: from after to is 22023');
SELECT throws_ok($$SELECT * FROM billing.usage_summary(NULL, now(), now())$$, '22004', 'user_id must not be null',
                 'usage_summary: NULL user_id is 22004');
SELECT throws_ok($$SELECT * FROM billing.usage_summary(gen_random_uuid(), NULL, now())$$, '22004', 'from must not be null',
                 'usage_summary: NULL from is 22004');
SELECT throws_ok($$SELECT * FROM billing.usage_summary('00000000-0000-7000-8000-000000000000', now() - interval '1 day', now())$$,
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'usage_summary: an unknown user is P0002');

SELECT is((SELECT array_agg(usage_id ORDER BY n) FROM (SELECT usage_id, row_number() OVER () AS n
                                                          FROM billing.get_billing_records(pg_temp.v('user')::uuid, 3)) r),
          ARRAY[pg_temp.r('u4'), pg_temp.r('u2'), pg_temp.r('u3')],
          'get_billing_records: the newest by occurred_at first, at most `limit`');
SELECT is((SELECT count(*) FROM billing.get_billing_records(pg_temp.v('user')::uuid)),
          (SELECT count(*) FROM billing.billing_records WHERE user_id = pg_temp.v('user')::uuid),
          'get_billing_records: every record of the user when there are fewer than 100');
SELECT throws_ok($$SELECT * FROM billing.get_billing_records(gen_random_uuid(), 0)$$, '22023', 'limit must be from 1 to 1000, not 0',
                 'get_billing_records: limit 0 is 22023');
SELECT throws_ok($$SELECT * FROM billing.get_billing_records(gen_random_uuid(), 1001)$$, '22023', 'limit must be from 1 to 1000, not 1001',
                 'get_billing_records: limit 1001 is 22023');
SELECT throws_ok($$SELECT * FROM billing.get_billing_records(NULL)$$, '22004', 'user_id must not be null',
                 'get_billing_records: NULL user_id is 22004');
SELECT throws_ok($$SELECT * FROM billing.get_billing_records('00000000-0000-7000-8000-000000000000')$$,
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'get_billing_records: an unknown user is P0002');

-- ---------------------------------------------------------------- privileges
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'billing'::regnamespace AND has_function_privilege('isa_app', p.oid, 'EXECUTE')$$,
              ARRAY['billing.calculate_cost(text,uuid,text,jsonb,timestamp with time zone)',
                    'billing.usage_summary(uuid,timestamp with time zone,timestamp with time zone)',
                    'billing.get_billing_records(uuid,integer)'],
              'isa_app may execute exactly the API: not the handler, not the internal functions');
SELECT is((SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p
            WHERE p.pronamespace = 'billing'::regnamespace AND p.proname NOT LIKE '\_%' AND p.proname NOT LIKE 'on\_%'
              AND NOT (p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'])),
          NULL, 'every API function is SECURITY DEFINER with a pinned search_path');
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c
            WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'p')
              AND (has_table_privilege('isa_app', c.oid, 'SELECT') OR has_table_privilege('isa_app', c.oid, 'INSERT'))),
          NULL, 'isa_app has no privilege on billing''s tables');

GRANT SELECT ON t TO isa_app;
SET LOCAL ROLE isa_app;
SELECT is((SELECT tokens FROM billing.calculate_cost('agent', pg_temp.v('user')::uuid, pg_temp.v('A'), '{"runs": 2}', pg_temp.m(-1, 3))),
          2::bigint, 'as isa_app: calculate_cost works');
SELECT is((SELECT count(*) FROM billing.get_billing_records(pg_temp.v('user')::uuid, 1)), 1::bigint,
          'as isa_app: get_billing_records works');
SELECT throws_ok($$SELECT billing.on_usage_recorded(pg_temp.usage('usage.recorded.agent', '{}'))$$, '42501', NULL,
                 'as isa_app: the handler is 42501');
SELECT throws_ok($$SELECT count(*) FROM billing.billing_records$$, '42501', NULL, 'as isa_app: reading billing_records is 42501');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
