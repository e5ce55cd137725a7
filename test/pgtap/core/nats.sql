-- Minting NATS credentials in SQL (isa.nats_*, extension/nats_jwt.c): an
-- nkey's seed gives back the same public key, a minted user's JWT verifies
-- and says what it was given, a bad seed is a clear 22023, and only
-- superusers and isa_admin may mint.  (That nats-server accepts what is
-- minted: test/integration/56-nats-permissions.sh.)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(24);

CREATE TEMP TABLE k AS
SELECT isa.nats_nkey_create('operator') AS operator_seed,
       isa.nats_nkey_create('account') AS account_seed,
       isa.nats_nkey_create('account') AS signing_seed,
       isa.nats_nkey_create('user') AS user_seed;

SELECT ok((SELECT operator_seed ~ '^SO[A-Z2-7]{56}$' AND account_seed ~ '^SA[A-Z2-7]{56}$'
                  AND user_seed ~ '^SU[A-Z2-7]{56}$' FROM k),
          'seeds are S + their type, base32 (58 characters)');
SELECT ok((SELECT isa.nats_nkey_public(operator_seed) ~ '^O[A-Z2-7]{55}$'
                  AND isa.nats_nkey_public(account_seed) ~ '^A[A-Z2-7]{55}$'
                  AND isa.nats_nkey_public(user_seed) ~ '^U[A-Z2-7]{55}$' FROM k),
          'their public keys are O…, A…, U… (56 characters)');
SELECT is((SELECT isa.nats_nkey_public(account_seed) FROM k), (SELECT isa.nats_nkey_public(account_seed) FROM k),
          'a seed gives the same public key every time');
SELECT isnt((SELECT isa.nats_nkey_create('user')), (SELECT isa.nats_nkey_create('user')),
            'two new seeds differ');
-- A known key (an nkey from NATS's own documentation): the encoding is NATS's.
SELECT is(isa.nats_nkey_public('SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY'),
          'UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4',
          'the seed of NATS''s documentation gives its public key');

SELECT throws_ok($$SELECT isa.nats_nkey_public('SUACSSL3UAIUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY')$$,
                 '22023', NULL, 'a seed with a wrong checksum: 22023');
SELECT throws_ok($$SELECT isa.nats_nkey_public('not a seed')$$, '22023', NULL, 'text that is no seed: 22023');
SELECT throws_ok($$SELECT isa.nats_nkey_public('UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4')$$,
                 '22023', NULL, 'a public key is not a seed: 22023');
SELECT throws_ok($$SELECT isa.nats_nkey_create('server')$$, '22023', 'unknown kind of nkey "server"',
                 'an unknown kind of nkey: 22023');

-- A user signed by a signing key of the account (issuer_account names it).
CREATE TEMP TABLE u AS
SELECT c.*, isa.nats_jwt_claims(c.jwt) AS claims
  FROM k, isa.nats_user_credentials(k.signing_seed, 'device-42',
                                    ARRAY['devices.42.>', 'external.usage.recorded.model'],
                                    ARRAY['_INBOX.device42.>'],
                                    isa.nats_nkey_public(k.account_seed),
                                    now() + interval '1 day') AS c;

SELECT is((SELECT claims->>'sub' FROM u), (SELECT public_key FROM u), 'the JWT''s subject is the new user''s public key');
SELECT ok((SELECT public_key ~ '^U[A-Z2-7]{55}$' FROM u), 'which is a user''s public key');
SELECT is((SELECT claims->>'iss' FROM u), (SELECT isa.nats_nkey_public(signing_seed) FROM k),
          'the issuer is the signing key');
SELECT is((SELECT claims->'nats'->>'issuer_account' FROM u), (SELECT isa.nats_nkey_public(account_seed) FROM k),
          'issuer_account names the account the signing key belongs to');
SELECT is((SELECT claims->>'name' FROM u), 'device-42', 'the name is the one given');
SELECT is((SELECT claims->'nats'->'pub'->'allow' FROM u), '["devices.42.>", "external.usage.recorded.model"]'::jsonb,
          'it may publish exactly the subjects given');
SELECT is((SELECT claims->'nats'->'sub'->'allow' FROM u), '["_INBOX.device42.>"]'::jsonb,
          'and subscribe exactly to those given');
SELECT is((SELECT claims->'nats'->>'type' FROM u) || ' ' || (SELECT claims->'nats'->>'version' FROM u), 'user 2',
          'a NATS user JWT of version 2');
SELECT ok((SELECT (claims->>'exp')::bigint BETWEEN extract(epoch FROM now() + interval '1 day')::bigint - 5
                                              AND extract(epoch FROM now() + interval '1 day')::bigint + 5 FROM u),
          'it expires when asked');
SELECT ok((SELECT starts_with(creds, E'-----BEGIN NATS USER JWT-----\n' || jwt || E'\n------END NATS USER JWT------\n')
                  AND creds ~ '-----BEGIN USER NKEY SEED-----\nSU[A-Z2-7]{56}\n------END USER NKEY SEED------' FROM u),
          'the creds file holds the JWT and the user''s seed in NATS''s format');
SELECT is((SELECT isa.nats_nkey_public(substring(creds FROM 'SU[A-Z2-7]{56}')) FROM u), (SELECT public_key FROM u),
          'the seed in the creds file is the user''s');

SELECT throws_ok($$SELECT isa.nats_jwt_claims(overlay(jwt PLACING CASE WHEN substr(jwt, length(jwt) - 3, 1) = 'A'
                                                                   THEN 'B' ELSE 'A' END FROM length(jwt) - 3 FOR 1)) FROM u$$,
                 '22023', NULL, 'a JWT whose signature does not verify: 22023');
SELECT throws_ok($$SELECT * FROM isa.nats_user_credentials('SAbad', 'x', '{}', '{}')$$,
                 '22023', NULL, 'a bad signing seed: 22023');
SELECT throws_ok($$SELECT * FROM isa.nats_user_credentials((SELECT user_seed FROM k), 'x', '{}', '{}')$$,
                 '22023', 'invalid signing seed: a user is signed by an account''s seed or signing key (SA…)',
                 'a user''s seed signs no user: 22023');
SELECT ok(NOT has_function_privilege('isa_app', 'isa.nats_user_credentials(text, text, text[], text[], text, timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('isa_bridge', 'isa.nats_nkey_create(text)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'isa.nats_user_credentials(text, text, text[], text[], text, timestamptz)', 'EXECUTE'),
          'only isa_admin (and superusers) may mint: not isa_app, not isa_bridge');

SELECT * FROM finish();
ROLLBACK;
