-- arguments.sql — isa.not_null, the one way a service function refuses NULL
-- arguments: 22004 naming the first NULL value, whatever its type; and the
-- shared checks of stored names (isa.check_text) and idempotency keys
-- (isa.check_idempotency_key).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);

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

SELECT is(isa.check_text('a thing''s name', E' \t Kitchen frame \r\n', 20), 'Kitchen frame',
          'check_text: the blanks around a name go');
SELECT is(isa.check_text('a thing''s name', NULL, 20), NULL, 'NULL gives NULL (isa.not_null refuses it)');
SELECT throws_ok($$SELECT isa.check_text('a thing''s name', '   ', 20)$$, '22023',
                 'a thing''s name must be 1 to 20 characters without control characters', 'a blank name: 22023 naming it');
SELECT throws_ok($$SELECT isa.check_text('a name', repeat('x', 21), 20)$$, '22023', NULL, 'one character too many: 22023');
SELECT throws_ok($$SELECT isa.check_text('a name', E'two\nlines', 20)$$, '22023', NULL, 'a control character inside: 22023');
SELECT lives_ok($$SELECT isa.check_idempotency_key(NULL), isa.check_idempotency_key(repeat('k', 255))$$,
                'check_idempotency_key: none, or up to 255 characters');
SELECT throws_ok($$SELECT isa.check_idempotency_key('')$$, '22023', 'idempotency_key must be 1 to 255 characters or null',
                 'an empty key: 22023');
SELECT throws_ok($$SELECT isa.check_idempotency_key(repeat('k', 256))$$, '22023', NULL, '256 characters: 22023');

SELECT * FROM finish();
ROLLBACK;
