-- arguments.sql — isa.not_null, the one way a service function refuses NULL
-- arguments: 22004 naming the first NULL value, whatever its type.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);

SELECT lives_ok($$SELECT isa.not_null('a, b, c', 1, 'x'::text, '{}'::jsonb)$$,
                'no NULL value: nothing happens');
SELECT throws_ok($$SELECT isa.not_null('user_id', NULL::uuid)$$, '22004', 'user_id must not be null',
                 'a NULL value is 22004 naming it');
SELECT throws_ok($$SELECT isa.not_null('user_id, amount, idempotency_key', gen_random_uuid(), NULL::bigint, NULL::text)$$,
                 '22004', 'amount must not be null', 'the first NULL value is named');
SELECT throws_ok($$SELECT isa.not_null('a,b', 1, NULL::int)$$, '22004', 'b must not be null',
                 'names may be listed without spaces');
SELECT throws_ok($$SELECT isa.not_null('x', NULL)$$, '22004', 'x must not be null',
                 'an untyped NULL counts too');
SELECT throws_ok($$SELECT isa.not_null('a, b', 1)$$, '22023', 'isa.not_null was given 2 names ("a, b") for 1 values',
                 'a list with more names than values is a caller''s mistake, refused whatever the values');
SELECT throws_ok($$SELECT isa.not_null('a', 1, 2)$$, '22023', NULL,
                 'so is a list with fewer names than values');
SELECT throws_ok($$SELECT isa.not_null(NULL, 1)$$, '22023', NULL, 'the list of names must not be NULL');
SELECT throws_ok($$SELECT wallet.deduct(NULL, 1, 'k', 'order', 'r')$$, '22004', 'user_id must not be null',
                 'the services use it: wallet.deduct refuses a NULL user_id');

SELECT * FROM finish();
ROLLBACK;
