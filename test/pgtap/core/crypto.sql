-- The cryptographic primitives (extension/crypto.c): known answers, bounds,
-- the strictness of base64url and who may call what.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);

-- RFC 4231 test cases 1 and 2
SELECT is(encode(isa.hmac_sha256('\x0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b', convert_to('Hi There', 'UTF8')), 'hex'),
          'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7', 'HMAC-SHA256: RFC 4231 case 1');
SELECT is(encode(isa.hmac_sha256(convert_to('Jefe', 'UTF8'), convert_to('what do ya want for nothing?', 'UTF8')), 'hex'),
          '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', 'HMAC-SHA256: RFC 4231 case 2 (a key shorter than the block)');
SELECT is(encode(isa.hmac_sha256(decode(repeat('aa', 131), 'hex'),
                                 convert_to('Test Using Larger Than Block-Size Key - Hash Key First', 'UTF8')), 'hex'),
          '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54', 'HMAC-SHA256: RFC 4231 case 6 (a key longer than the block)');

SELECT ok(isa.secure_equals('\x0102', '\x0102'), 'secure_equals: equal bytes');
SELECT ok(NOT isa.secure_equals('\x0102', '\x0103'), 'secure_equals: one bit differs');
SELECT ok(NOT isa.secure_equals('\x0102', '\x010200'), 'secure_equals: different lengths are unequal');
SELECT ok(isa.secure_equals('', ''), 'secure_equals: two empty values are equal');

SELECT is(length(isa.random_bytes(32)), 32, 'random_bytes(32) gives 32 bytes');
SELECT isnt(isa.random_bytes(16), isa.random_bytes(16), 'two random_bytes(16) differ');
SELECT throws_ok('SELECT isa.random_bytes(0)', '22023', NULL, 'random_bytes(0): 22023');
SELECT throws_ok('SELECT isa.random_bytes(1025)', '22023', NULL, 'random_bytes(1025): 22023');

SELECT is(isa.base64url_encode('\xfbff'), '-_8', 'base64url uses - and _ and no padding');
SELECT is(isa.base64url_decode(isa.base64url_encode(convert_to('{"alg":"EdDSA"}', 'UTF8'))),
          convert_to('{"alg":"EdDSA"}', 'UTF8'), 'base64url round trip');
SELECT throws_ok($$SELECT isa.base64url_decode('+/8=')$$, '22023', 'invalid base64url text',
                 'standard base64 (+, /, padding) is refused');
SELECT throws_ok($$SELECT isa.base64url_decode('-_8 ')$$, '22023', 'invalid base64url text',
                 'trailing characters are refused');

SELECT ok(has_function_privilege('isa_app', 'isa.hmac_sha256(bytea,bytea)', 'EXECUTE')
          AND has_function_privilege('isa_app', 'isa.secure_equals(bytea,bytea)', 'EXECUTE'),
          'isa_app may use the primitives');
SELECT ok(NOT has_function_privilege('public', 'isa.random_bytes(int)', 'EXECUTE'),
          'PUBLIC may not');

SELECT * FROM finish();
ROLLBACK;
