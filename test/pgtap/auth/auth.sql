-- auth.sql — the auth service: argon2id passwords, login with a throttle that
-- survives the failed login's rollback, JWTs whose algorithm only the
-- configuration chooses (EdDSA by default, HS256), exp/nbf/iat/iss/aud with
-- clock skew, kid rotation, rotating refresh tokens whose reuse revokes the
-- session, logout, device challenge/response, the user.deleted and
-- permission.revoked handlers, the events in auth.outbox and the privileges.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(224);

-- The settings this file assumes, whatever the server's configuration says.
SET LOCAL isa.jwt_algorithm = 'EdDSA';
SET LOCAL isa.jwt_issuer = 'isa';
SET LOCAL isa.jwt_audience = 'isa';
SET LOCAL isa.jwt_access_ttl = '15min';
SET LOCAL isa.refresh_ttl = '30d';
SET LOCAL isa.jwt_clock_skew = '30s';
SET LOCAL isa.password_opslimit = 2;
SET LOCAL isa.password_memlimit = '19MB';
SET LOCAL isa.login_max_failures = 5;
SET LOCAL isa.login_failure_window = '15min';
SET LOCAL isa.login_lockout = '15min';
SET LOCAL isa.jwt_secret = '';
SET LOCAL isa.jwt_previous_secret = '';

-- ---------------------------------------------------------------- helpers
CREATE TEMP TABLE t_ids (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE TEMP TABLE t_tok (label text PRIMARY KEY, r auth.tokens) ON COMMIT DROP;
CREATE TEMP TABLE t_txt (label text PRIMARY KEY, v text) ON COMMIT DROP;
CREATE TEMP TABLE t_keys (label text PRIMARY KEY, pk bytea, sk bytea) ON COMMIT DROP;

CREATE FUNCTION pg_temp.id(l text) RETURNS uuid LANGUAGE sql AS $$ SELECT id FROM t_ids WHERE label = l $$;
CREATE FUNCTION pg_temp.tok(l text) RETURNS auth.tokens LANGUAGE sql AS $$ SELECT r FROM t_tok WHERE label = l $$;
CREATE FUNCTION pg_temp.txt(l text) RETURNS text LANGUAGE sql AS $$ SELECT v FROM t_txt WHERE label = l $$;
CREATE FUNCTION pg_temp.email(l text) RETURNS text LANGUAGE sql AS $$ SELECT l || '@auth-pgtap.invalid' $$;
CREATE FUNCTION pg_temp.b64(s text) RETURNS text LANGUAGE sql AS $$ SELECT isa.base64url_encode(convert_to(s, 'UTF8')) $$;
CREATE FUNCTION pg_temp.part(token text, n int) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT convert_from(isa.base64url_decode(split_part(token, '.', n)), 'UTF8')::jsonb $$;
CREATE FUNCTION pg_temp.now_s() RETURNS bigint LANGUAGE sql
    AS $$ SELECT floor(extract(epoch FROM clock_timestamp()))::bigint $$;
CREATE FUNCTION pg_temp.current_kid() RETURNS text LANGUAGE sql
    AS $$ SELECT kid FROM auth.signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1 $$;
-- Valid access-token claims for alice's first session, changed by extra
-- (a key set to null is removed).
CREATE FUNCTION pg_temp.claims(extra jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'iss', 'isa', 'aud', 'isa', 'sub', pg_temp.id('alice'), 'sid', (pg_temp.tok('a1')).session_id,
        'iat', pg_temp.now_s(), 'nbf', pg_temp.now_s(), 'exp', pg_temp.now_s() + 300,
        'jti', gen_random_uuid(), 'typ', 'access') || extra)
$$;
-- A token with this header and payload, signed as sign says: 'ed' with the
-- current key, 'none' not at all, or an HMAC key.
CREATE FUNCTION pg_temp.hs256(header text, payload jsonb, key bytea) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.b64(header) || '.' || pg_temp.b64(payload::text) || '.'
           || isa.base64url_encode(isa.hmac_sha256(key, convert_to(pg_temp.b64(header) || '.' || pg_temp.b64(payload::text), 'UTF8')))
$$;
CREATE FUNCTION pg_temp.ed(header text, payload jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.b64(header) || '.' || pg_temp.b64(payload::text) || '.'
           || isa.base64url_encode(auth._ed25519_sign(
                  (SELECT private_key FROM auth.signing_keys WHERE kid = pg_temp.current_kid()),
                  convert_to(pg_temp.b64(header) || '.' || pg_temp.b64(payload::text), 'UTF8')))
$$;
CREATE FUNCTION pg_temp.try_login(e text, p text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM auth.login(e, p);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
CREATE FUNCTION pg_temp.events(type text, sid uuid) RETURNS SETOF jsonb LANGUAGE sql AS $$
    SELECT o.data FROM auth.outbox o
     WHERE o.source = 'auth_service' AND o.event_type = type AND o.data ->> 'session_id' = sid::text
     ORDER BY o.id
$$;

-- Earlier runs roll back, but the throttle lives in shared memory.
SELECT auth._throttle_reset(e)
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'ghost', 'frank', 'grace']) l, pg_temp.email(l) e
 UNION ALL SELECT auth._throttle_reset('not an email');

INSERT INTO t_ids SELECT l, (account.create_user(pg_temp.email(l), initcap(l))).user_id
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) l;

-- ---------------------------------------------------------------- passwords
SELECT lives_ok(format($$SELECT auth.set_password(%L, 'correct horse battery')$$, pg_temp.id('alice')),
                'set_password stores a password');
SELECT matches((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('alice')),
               '^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$',
               'the hash is argon2id with m=19 MiB, t=2, p=1 (OWASP minimum), salt and digest');
INSERT INTO t_txt SELECT 'alice hash 1', hash FROM auth.passwords WHERE user_id = pg_temp.id('alice');
SELECT lives_ok(format($$SELECT auth.set_password(%L, 'correct horse battery')$$, pg_temp.id('alice')),
                'set_password again replaces the password');
SELECT isnt((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('alice')), pg_temp.txt('alice hash 1'),
            'the same password hashes differently each time (random salt)');
SELECT is((SELECT count(*) FROM auth.passwords WHERE user_id = pg_temp.id('alice')), 1::bigint,
          'one password row per user');
SELECT ok(auth._verify_password((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('alice')), 'correct horse battery')
          AND NOT auth._verify_password((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('alice')), 'correct horse batterY'),
          'the hash verifies the password and nothing else');
SELECT throws_ok($$SELECT auth.set_password('00000000-0000-7000-8000-000000000000', 'correct horse battery')$$,
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found',
                 'set_password for an unknown user raises P0002');
SELECT throws_ok(format($$SELECT auth.set_password(%L, 'short')$$, pg_temp.id('alice')),
                 '22023', 'a password has 8 to 1024 characters, not 5',
                 'a password shorter than 8 characters raises 22023');
SELECT throws_ok(format($$SELECT auth.set_password(%L, repeat('x', 1025))$$, pg_temp.id('alice')),
                 '22023', 'a password has 8 to 1024 characters, not 1025',
                 'a password longer than 1024 characters raises 22023');
SELECT throws_ok(format($$SELECT auth.set_password(%L, NULL)$$, pg_temp.id('alice')),
                 '22004', 'password must not be null', 'a NULL password raises 22004');
SELECT throws_ok($$SELECT auth.set_password(NULL, 'correct horse battery')$$,
                 '22004', 'user_id must not be null', 'a NULL user_id raises 22004');

SELECT auth.set_password(pg_temp.id(l), l || ' secret password')
  FROM unnest(ARRAY['bob', 'carol', 'dave', 'frank']) l;

-- ---------------------------------------------------------------- login
INSERT INTO t_tok SELECT 'a1', auth.login(pg_temp.email('alice'), 'correct horse battery');
SELECT is(((pg_temp.tok('a1')).token_type, (pg_temp.tok('a1')).expires_in, (pg_temp.tok('a1')).user_id),
          ('Bearer'::text, 900, pg_temp.id('alice')),
          'login returns a Bearer token valid 900 s (isa.jwt_access_ttl) and the user id');
SELECT matches((pg_temp.tok('a1')).refresh_token, '^[A-Za-z0-9_-]{43}$',
               'the refresh token is 32 random bytes in base64url');
SELECT is((SELECT (kind, user_id, revoked_at IS NULL, expires_at > now() + interval '29 days')::text
             FROM auth.sessions WHERE session_id = (pg_temp.tok('a1')).session_id),
          (text 'user', pg_temp.id('alice'), true, true)::text,
          'login opens a user session of alice that lasts as long as its refresh token (30 days)');
SELECT is((SELECT count(*) FROM auth.refresh_tokens
            WHERE token_hash = sha256(convert_to((pg_temp.tok('a1')).refresh_token, 'UTF8'))
              AND session_id = (pg_temp.tok('a1')).session_id), 1::bigint,
          'the refresh token is stored as its SHA-256 only, in the family of the session');
SELECT results_eq(format($$SELECT pg_temp.events('user.logged_in', %L)$$, (pg_temp.tok('a1')).session_id),
                  ARRAY[jsonb_build_object('user_id', pg_temp.id('alice'), 'session_id', (pg_temp.tok('a1')).session_id,
                                           'method', 'password')],
                  'login publishes user.logged_in {user_id, session_id, method password} from auth_service');
SELECT is(pg_temp.try_login('  ALICE@Auth-PgTap.Invalid ', 'correct horse battery'), 'ok',
          'the email of a login is compared case-insensitively, blanks trimmed');
SELECT throws_ok(format($$SELECT auth.login(%L, 'correct horse batterY')$$, pg_temp.email('alice')),
                 '28000', 'invalid email or password', 'a wrong password raises 28000');
SELECT throws_ok(format($$SELECT auth.login(%L, 'correct horse battery')$$, pg_temp.email('ghost')),
                 '28000', 'invalid email or password', 'an unknown email raises the same 28000');
SELECT throws_ok($$SELECT auth.login('not an email', 'correct horse battery')$$,
                 '28000', 'invalid email or password', 'a malformed email raises the same 28000');
SELECT throws_ok(format($$SELECT auth.login(%L, 'erin secret password')$$, pg_temp.email('erin')),
                 '28000', 'invalid email or password', 'a user without a password raises the same 28000');
SELECT throws_ok(format($$SELECT auth.login(%L, repeat('x', 5000))$$, pg_temp.email('alice')),
                 '28000', 'invalid email or password', 'an absurdly long password raises the same 28000');
SELECT throws_ok($$SELECT auth.login(NULL, 'x')$$, '22004', 'email must not be null',
                 'a NULL email raises 22004');
SELECT is((SELECT count(*) FROM auth.outbox WHERE event_type = 'user.logged_in' AND data ->> 'user_id' = pg_temp.id('alice')::text),
          2::bigint, 'only the two successful logins published user.logged_in');
SELECT is((auth._throttle_state(pg_temp.email('alice'))).failures, 2,
          'alice''s two failed logins (wrong and absurdly long password) are counted, although each rolled back');

-- ---------------------------------------------------------------- throttle
SELECT is(ARRAY(SELECT pg_temp.try_login(pg_temp.email('bob'), 'wrong password ' || i) FROM generate_series(1, 5) i),
          ARRAY['28000', '28000', '28000', '28000', '28000'],
          'five wrong passwords raise 28000 each');
SELECT is((SELECT (failures, locked_until BETWEEN now() + interval '14 min' AND clock_timestamp() + interval '15 min')::text
             FROM auth._throttle_state(pg_temp.email('bob'))),
          '(5,t)', 'the failures survive the rollback of each failed login: 5 counted, bob locked for 15 minutes');
SELECT throws_ok(format($$SELECT auth.login(%L, 'bob secret password')$$, pg_temp.email('bob')),
                 '28P01', NULL, 'a locked address raises 28P01, even with the right password');
SELECT throws_matching(format($$SELECT auth.login(%L, 'bob secret password')$$, pg_temp.email('bob')),
                       '^too many failed logins for this email: try again in (89[0-9]|900) seconds$',
                       'the 28P01 message says when to retry');
SELECT is((auth._throttle_state(pg_temp.email('bob'))).failures, 5,
          'attempts refused while locked are not counted');
SELECT is(pg_temp.try_login(pg_temp.email('alice'), 'correct horse battery'), 'ok',
          'the lock is per address: alice still logs in');
SELECT is(auth.reset_login_throttle(' BOB@auth-pgtap.invalid'), true, 'reset_login_throttle unlocks an address');
SELECT is(pg_temp.try_login(pg_temp.email('bob'), 'bob secret password'), 'ok', 'bob logs in after the reset');
SELECT is(ARRAY(SELECT pg_temp.try_login(pg_temp.email('bob'), p)
                  FROM unnest(ARRAY['wrong 1', 'wrong 2', 'wrong 3', 'bob secret password']) p),
          ARRAY['28000', '28000', '28000', 'ok'], 'three failures, then a success');
SELECT is((auth._throttle_state(pg_temp.email('bob'))).failures, 0, 'a successful login resets the failures');
SELECT auth._throttle_reset(pg_temp.email('ghost'));
SELECT is(ARRAY(SELECT pg_temp.try_login(pg_temp.email('ghost'), 'wrong ' || i) FROM generate_series(1, 6) i),
          ARRAY['28000', '28000', '28000', '28000', '28000', '28P01'],
          'an unknown address is throttled like a known one (nothing tells them apart)');
SET LOCAL isa.login_max_failures = 2;
SET LOCAL isa.login_lockout = '1s';
SELECT is(ARRAY(SELECT pg_temp.try_login(pg_temp.email('frank'), p)
                  FROM unnest(ARRAY['wrong 1', 'wrong 2', 'frank secret password']) p),
          ARRAY['28000', '28000', '28P01'], 'isa.login_max_failures = 2 locks after two failures');
SELECT pg_sleep(1.1);
SELECT is(pg_temp.try_login(pg_temp.email('frank'), 'frank secret password'), 'ok',
          'when isa.login_lockout (1 s) has passed, the address may log in again');
SET LOCAL isa.login_max_failures = 5;
SET LOCAL isa.login_lockout = '15min';
SELECT throws_ok($$SELECT auth.reset_login_throttle(NULL)$$, '22004', 'email must not be null',
                 'reset_login_throttle(NULL) raises 22004');

-- ---------------------------------------------------------------- rehash
SET LOCAL isa.password_opslimit = 3;
SELECT ok(auth._password_needs_rehash((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('bob'))),
          'a hash made with other limits needs a rehash');
SELECT is(pg_temp.try_login(pg_temp.email('bob'), 'bob secret password'), 'ok', 'login with the old hash works');
SELECT matches((SELECT hash FROM auth.passwords WHERE user_id = pg_temp.id('bob')), '^\$argon2id\$v=19\$m=19456,t=3,p=1\$',
               'a successful login rehashes the password with the new limits (t=3)');
SET LOCAL isa.password_opslimit = 2;

-- ---------------------------------------------------------------- access tokens
SELECT is(pg_temp.part((pg_temp.tok('a1')).access_token, 1),
          jsonb_build_object('alg', 'EdDSA', 'typ', 'JWT', 'kid', pg_temp.current_kid()),
          'the token header: alg EdDSA, typ JWT, kid of the current signing key');
INSERT INTO t_txt SELECT 'claims a1', auth.verify_token((pg_temp.tok('a1')).access_token)::text;
SELECT is((SELECT jsonb_build_object('iss', c -> 'iss', 'aud', c -> 'aud', 'sub', c -> 'sub', 'sid', c -> 'sid', 'typ', c -> 'typ')
             FROM (SELECT pg_temp.txt('claims a1')::jsonb c) x),
          jsonb_build_object('iss', 'isa', 'aud', 'isa', 'sub', pg_temp.id('alice'), 'sid', (pg_temp.tok('a1')).session_id,
                             'typ', 'access'),
          'verify_token returns the claims: iss, aud, sub (user id), sid (session), typ access');
SELECT ok((SELECT (c ->> 'exp')::bigint - (c ->> 'iat')::bigint = 900 AND c -> 'nbf' = c -> 'iat'
                  AND abs((c ->> 'iat')::bigint - pg_temp.now_s()) < 60 AND c ->> 'jti' ~ '^[0-9a-f-]{36}$'
             FROM (SELECT pg_temp.txt('claims a1')::jsonb c) x),
          'iat = nbf = now, exp = iat + 900, and a jti');
SELECT is(pg_temp.part((pg_temp.tok('a1')).access_token, 2), pg_temp.txt('claims a1')::jsonb,
          'the claims returned are the payload of the token');

-- tampering
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        split_part((pg_temp.tok('a1')).access_token, '.', 1) || '.'
                        || pg_temp.b64(replace(convert_from(isa.base64url_decode(split_part((pg_temp.tok('a1')).access_token, '.', 2)), 'UTF8'),
                                               pg_temp.id('alice')::text, pg_temp.id('bob')::text))
                        || '.' || split_part((pg_temp.tok('a1')).access_token, '.', 3)),
                 '28000', 'invalid token: bad signature', 'a tampered payload (another sub) is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        regexp_replace((pg_temp.tok('a1')).access_token, '\.(.)([^.]*)$',
                                       '.' || CASE WHEN split_part((pg_temp.tok('a1')).access_token, '.', 3) LIKE 'A%' THEN 'B' ELSE 'A' END || '\2')),
                 '28000', 'invalid token: bad signature', 'a tampered signature is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        split_part((pg_temp.tok('a1')).access_token, '.', 1) || '.' || split_part((pg_temp.tok('a1')).access_token, '.', 2) || '.'),
                 '28000', 'invalid token: malformed signature', 'a token without signature is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.b64('{"alg":"none","typ":"JWT"}') || '.' || split_part((pg_temp.tok('a1')).access_token, '.', 2) || '.'),
                 '28000', 'invalid token: algorithm "none" is not accepted', 'an alg none token is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.b64(format('{"alg":"none","kid":"%s"}', pg_temp.current_kid())) || '.'
                        || split_part((pg_temp.tok('a1')).access_token, '.', 2) || '.'
                        || split_part((pg_temp.tok('a1')).access_token, '.', 3)),
                 '28000', 'invalid token: algorithm "none" is not accepted',
                 'an alg none token is refused even with a kid and a valid EdDSA signature attached');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.hs256(format('{"alg":"HS256","typ":"JWT","kid":"%s"}', pg_temp.current_kid()),
                                      pg_temp.claims('{}'),
                                      (SELECT public_key FROM auth.signing_keys WHERE kid = pg_temp.current_kid()))),
                 '28000', 'invalid token: algorithm "HS256" is not accepted',
                 'an HS256 token (HMAC keyed with the public key) is refused when EdDSA is configured');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.ed(format('{"alg":"eddsa","kid":"%s"}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                 '28000', 'invalid token: algorithm "eddsa" is not accepted', 'alg is compared exactly');
SELECT lives_ok(format('SELECT auth.verify_token(%L)',
                       pg_temp.ed(format('{"alg":"EdDSA","kid":"%s"}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                'a token built by hand with the right header and key verifies (the helpers are sound)');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', pg_temp.ed('{"alg":"EdDSA"}', pg_temp.claims('{}'))),
                 '28000', 'invalid token: no valid kid in the header', 'a token without kid is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', pg_temp.ed('{"alg":"EdDSA","kid":"nope"}', pg_temp.claims('{}'))),
                 '28000', 'invalid token: unknown signing key', 'a token with an unknown kid is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.ed(format('{"alg":"EdDSA","kid":"%s","crit":["exp"]}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                 '28000', 'invalid token: unsupported critical header parameters', 'a crit header is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.ed(format('{"alg":"EdDSA","kid":"%s","typ":"JOSE+JSON"}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                 '28000', 'invalid token: typ is not JWT', 'a typ other than JWT is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.ed(format('{"alg":"EdDSA","alg":"none","kid":"%s"}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                 '28000', 'invalid token: malformed header', 'a header with alg twice is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.ed(format('{"alg":["EdDSA"],"kid":"%s"}', pg_temp.current_kid()), pg_temp.claims('{}'))),
                 '28000', 'invalid token: malformed header', 'an alg that is not a string is refused');
SELECT throws_ok($$SELECT auth.verify_token('garbage')$$, '28000', 'invalid token: malformed', 'garbage is refused');
SELECT throws_ok($$SELECT auth.verify_token('a.b.c.d')$$, '28000', 'invalid token: malformed', 'four segments are refused');
SELECT throws_ok($$SELECT auth.verify_token('%%%.e30.AAAA')$$, '28000', 'invalid token: malformed header',
                 'a header that is not base64url is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', pg_temp.b64('[1]') || '.e30.AAAA'), '28000',
                 'invalid token: malformed header', 'a header that is not a JSON object is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', repeat('a', 9000)), '28000', 'invalid token: too long',
                 'a token over 8192 characters is refused');
SELECT throws_ok($$SELECT auth.verify_token(NULL)$$, '22004', 'token must not be null', 'a NULL token raises 22004');

-- claims (tokens signed with the current key by auth._sign_jwt)
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('exp', pg_temp.now_s() - 31)))),
                 '28000', 'invalid token: expired', 'a token expired longer ago than the clock skew (30 s) is refused');
SELECT lives_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('exp', pg_temp.now_s() - 20)))),
                'a token expired less than the clock skew ago is accepted');
SET LOCAL isa.jwt_clock_skew = 0;
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('exp', pg_temp.now_s() - 1)))),
                 '28000', 'invalid token: expired', 'with isa.jwt_clock_skew = 0 it is refused');
SET LOCAL isa.jwt_clock_skew = '30s';
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"exp": null}'))),
                 '28000', 'invalid token: no exp claim', 'a token without exp is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"exp": "tomorrow"}'))),
                 '28000', 'invalid token: the exp claim is not a number', 'an exp that is not a number is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('nbf', pg_temp.now_s() + 120)))),
                 '28000', 'invalid token: not valid yet (nbf)', 'a token whose nbf is in the future is refused');
SELECT lives_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('nbf', pg_temp.now_s() + 20)))),
                'an nbf less than the clock skew ahead is accepted');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('iat', pg_temp.now_s() + 120)))),
                 '28000', 'invalid token: issued in the future (iat)', 'a token issued in the future is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"iss": "someone-else"}'))),
                 '28000', 'invalid token: wrong issuer', 'a token of another issuer is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"iss": null}'))),
                 '28000', 'invalid token: wrong issuer', 'a token without iss is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"aud": "other-api"}'))),
                 '28000', 'invalid token: wrong audience', 'a token for another audience is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"aud": null}'))),
                 '28000', 'invalid token: wrong audience', 'a token without aud is refused');
SELECT lives_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"aud": ["other-api", "isa"]}'))),
                'an aud array that holds the audience is accepted');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"aud": ["other-api"]}'))),
                 '28000', 'invalid token: wrong audience', 'an aud array without the audience is refused');
SET LOCAL isa.jwt_audience = 'billing-api';
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('a1')).access_token),
                 '28000', 'invalid token: wrong audience', 'isa.jwt_audience is what is required');
SET LOCAL isa.jwt_audience = 'isa';
SET LOCAL isa.jwt_issuer = 'https://auth.example';
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('a1')).access_token),
                 '28000', 'invalid token: wrong issuer', 'isa.jwt_issuer is what is required');
SET LOCAL isa.jwt_issuer = 'isa';
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"typ": "refresh"}'))),
                 '28000', 'invalid token: not an access or device token', 'a token of another typ is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('sid', gen_random_uuid())))),
                 '28000', 'invalid token: unknown session', 'a token of an unknown session is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims(jsonb_build_object('sub', pg_temp.id('bob'))))),
                 '28000', 'invalid token: subject does not match its session', 'a token whose sub is not its session''s user is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', auth._sign_jwt(pg_temp.claims('{"typ": "device"}'))),
                 '28000', 'invalid token: subject does not match its session', 'a device token for a user session is refused');

-- ---------------------------------------------------------------- HS256
SET LOCAL isa.jwt_algorithm = 'HS256';
SELECT throws_ok($$SELECT auth._sign_jwt('{"a": 1}')$$, '55000', 'isa.jwt_algorithm is HS256 but isa.jwt_secret is not set',
                 'HS256 without isa.jwt_secret raises 55000');
SET LOCAL isa.jwt_secret = 'too short a secret';
SELECT throws_ok($$SELECT auth._sign_jwt('{"a": 1}')$$, '55000', 'isa.jwt_secret is shorter than 32 bytes',
                 'an isa.jwt_secret under 32 bytes raises 55000 (without showing it)');
SET LOCAL isa.jwt_secret = 'first-secret-0123456789abcdefghijklmnopqrstuvwxyz';
INSERT INTO t_txt VALUES ('hs first', auth._sign_jwt(pg_temp.claims('{}')));
SELECT is(pg_temp.part(pg_temp.txt('hs first'), 1),
          jsonb_build_object('alg', 'HS256', 'typ', 'JWT',
                             'kid', left(encode(isa.hmac_sha256(convert_to('first-secret-0123456789abcdefghijklmnopqrstuvwxyz', 'UTF8'),
                                                                convert_to('isa-jwt-kid', 'UTF8')), 'hex'), 16)),
          'with HS256 the header says HS256 and the kid is derived from the secret');
SELECT is(auth.verify_token(pg_temp.txt('hs first')) ->> 'sub', pg_temp.id('alice')::text, 'an HS256 token verifies');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('a1')).access_token),
                 '28000', 'invalid token: algorithm "EdDSA" is not accepted', 'an EdDSA token is refused when HS256 is configured');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.hs256(pg_temp.part(pg_temp.txt('hs first'), 1)::text, pg_temp.claims('{}'),
                                      convert_to('wrong-secret-0123456789abcdefghijklmnopqrstuvwxyz', 'UTF8'))),
                 '28000', 'invalid token: bad signature', 'an HS256 token with the right kid and another secret is refused');
SELECT throws_ok(format('SELECT auth.verify_token(%L)',
                        pg_temp.hs256('{"alg":"HS256","typ":"JWT"}', pg_temp.claims('{}'),
                                      convert_to('first-secret-0123456789abcdefghijklmnopqrstuvwxyz', 'UTF8'))),
                 '28000', 'invalid token: no valid kid in the header', 'an HS256 token without kid is refused');
SET LOCAL isa.jwt_secret = 'second-secret-0123456789abcdefghijklmnopqrstuvwxyz';
SELECT throws_ok(format('SELECT auth.verify_token(%L)', pg_temp.txt('hs first')),
                 '28000', 'invalid token: unknown signing key', 'after rotating isa.jwt_secret the old token is refused...');
SET LOCAL isa.jwt_previous_secret = 'first-secret-0123456789abcdefghijklmnopqrstuvwxyz';
SELECT is(auth.verify_token(pg_temp.txt('hs first')) ->> 'sub', pg_temp.id('alice')::text,
          '...unless the old secret is isa.jwt_previous_secret');
SELECT is(auth.verify_token(auth._sign_jwt(pg_temp.claims('{}'))) ->> 'sub', pg_temp.id('alice')::text,
          'new tokens are signed with the new secret and verify');
SELECT is(auth.jwks(), '{"keys": []}'::jsonb, 'jwks publishes no key with HS256');
SET LOCAL isa.jwt_previous_secret = '';
SET LOCAL isa.jwt_secret = '';
SET LOCAL isa.jwt_algorithm = 'EdDSA';

-- ---------------------------------------------------------------- signing key rotation
INSERT INTO t_txt VALUES ('old kid', pg_temp.current_kid());
INSERT INTO t_txt VALUES ('old token', auth._sign_jwt(pg_temp.claims('{}')));
INSERT INTO t_txt VALUES ('new kid', auth.rotate_signing_key());
SELECT isnt(pg_temp.txt('new kid'), pg_temp.txt('old kid'), 'rotate_signing_key returns a new kid');
SELECT is((SELECT kid FROM auth.signing_keys WHERE kid = pg_temp.txt('new kid')),
          (SELECT isa.base64url_encode(sha256(convert_to(format('{"crv":"Ed25519","kty":"OKP","x":"%s"}',
                                                                isa.base64url_encode(public_key)), 'UTF8')))
             FROM auth.signing_keys WHERE kid = pg_temp.txt('new kid')),
          'the kid is the RFC 7638 thumbprint of the public key');
SELECT is(pg_temp.part(auth._sign_jwt(pg_temp.claims('{}')), 1) ->> 'kid', pg_temp.txt('new kid'),
          'new tokens are signed with the new key');
SELECT is(auth.verify_token(pg_temp.txt('old token')) ->> 'sub', pg_temp.id('alice')::text,
          'a token signed with the old key still verifies');
SELECT is((SELECT jsonb_path_query_array(auth.jwks(), '$.keys[*].kid') -> 0), to_jsonb(pg_temp.txt('new kid')),
          'jwks lists the new key first');
SELECT is((SELECT k FROM jsonb_array_elements(auth.jwks() -> 'keys') k WHERE k ->> 'kid' = pg_temp.txt('old kid')),
          jsonb_build_object('kty', 'OKP', 'crv', 'Ed25519', 'alg', 'EdDSA', 'use', 'sig', 'kid', pg_temp.txt('old kid'),
                             'x', (SELECT isa.base64url_encode(public_key) FROM auth.signing_keys WHERE kid = pg_temp.txt('old kid'))),
          'jwks holds the old key too, as an OKP/Ed25519 JWK');
SELECT lives_ok(format('SELECT auth.retire_signing_key(%L)', pg_temp.txt('old kid')), 'retire_signing_key retires the old key');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', pg_temp.txt('old token')),
                 '28000', 'invalid token: signing key retired', 'a token of a retired key is refused');
SELECT ok(NOT (auth.jwks() -> 'keys') @> jsonb_build_array(jsonb_build_object('kid', pg_temp.txt('old kid'))),
          'jwks no longer lists the retired key');
SELECT lives_ok(format('SELECT auth.retire_signing_key(%L)', pg_temp.txt('old kid')), 'retiring it again does nothing');
SELECT throws_ok(format('SELECT auth.retire_signing_key(%L)', pg_temp.txt('new kid')),
                 '23514', format('signing key "%s" is the current one', pg_temp.txt('new kid')),
                 'the current key cannot be retired');
SELECT throws_ok($$SELECT auth.retire_signing_key('no-such-kid')$$, 'P0002', 'signing key "no-such-kid" not found',
                 'retiring an unknown kid raises P0002');

-- ---------------------------------------------------------------- refresh
INSERT INTO t_tok SELECT 'a2', auth.refresh((pg_temp.tok('a1')).refresh_token);
SELECT ok((pg_temp.tok('a2')).refresh_token <> (pg_temp.tok('a1')).refresh_token
          AND (pg_temp.tok('a2')).session_id = (pg_temp.tok('a1')).session_id
          AND (pg_temp.tok('a2')).user_id = pg_temp.id('alice'),
          'refresh returns a new refresh token of the same session');
SELECT is(auth.verify_token((pg_temp.tok('a2')).access_token) ->> 'sid', (pg_temp.tok('a1')).session_id::text,
          'the new access token verifies');
SELECT isnt((SELECT used_at FROM auth.refresh_tokens WHERE token_hash = sha256(convert_to((pg_temp.tok('a1')).refresh_token, 'UTF8'))),
            NULL, 'the presented refresh token is marked used');
SELECT throws_ok(format('SELECT auth.refresh(%L)', (pg_temp.tok('a1')).refresh_token),
                 '28000', 'invalid refresh token: reuse detected, the session is revoked',
                 'presenting a rotated refresh token again raises 28000');
SELECT ok(auth._session_flagged((pg_temp.tok('a1')).session_id),
          'the reuse survives the rollback of the refresh: the session is flagged in shared memory');
SELECT throws_ok(format('SELECT auth.refresh(%L)', (pg_temp.tok('a2')).refresh_token),
                 '28000', 'invalid refresh token: the session was revoked',
                 'the newest refresh token of the family is refused too');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('a2')).access_token),
                 '28000', 'invalid token: session revoked', 'and so are the access tokens of the session');
SELECT cmp_ok(auth._persist_flagged_sessions(), '>=', 1, 'the next committing auth call writes the revocation');
SELECT is((SELECT (revoked_at IS NOT NULL, revoke_reason)::text FROM auth.sessions WHERE session_id = (pg_temp.tok('a1')).session_id),
          '(t,refresh_reuse)', 'the session is revoked with reason refresh_reuse');
SELECT results_eq(format($$SELECT pg_temp.events('user.logged_out', %L)$$, (pg_temp.tok('a1')).session_id),
                  ARRAY[jsonb_build_object('user_id', pg_temp.id('alice'), 'session_id', (pg_temp.tok('a1')).session_id,
                                           'reason', 'refresh_reuse')],
                  'user.logged_out {reason refresh_reuse} is published once');
SELECT is(auth._persist_flagged_sessions(), 0, 'writing it again publishes nothing more');

INSERT INTO t_tok SELECT 'b1', auth.login(pg_temp.email('bob'), 'bob secret password');
SELECT throws_ok($$SELECT auth.refresh('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')$$,
                 '28000', 'invalid refresh token', 'an unknown refresh token raises 28000');
SELECT throws_ok($$SELECT auth.refresh('not a token')$$, '28000', 'invalid refresh token', 'a malformed refresh token raises 28000');
SELECT throws_ok($$SELECT auth.refresh(NULL)$$, '22004', 'refresh_token must not be null', 'a NULL refresh token raises 22004');
UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'
 WHERE token_hash = sha256(convert_to((pg_temp.tok('b1')).refresh_token, 'UTF8'));
SELECT throws_ok(format('SELECT auth.refresh(%L)', (pg_temp.tok('b1')).refresh_token),
                 '28000', 'invalid refresh token: expired', 'an expired refresh token raises 28000');

-- ---------------------------------------------------------------- logout
INSERT INTO t_tok SELECT 'b2', auth.login(pg_temp.email('bob'), 'bob secret password');
INSERT INTO t_tok SELECT 'b3', auth.refresh((pg_temp.tok('b2')).refresh_token);
SELECT is(auth.logout((pg_temp.tok('b3')).refresh_token), true, 'logout with a refresh token ends its session');
SELECT is((SELECT revoke_reason FROM auth.sessions WHERE session_id = (pg_temp.tok('b2')).session_id), 'logout',
          'the session is revoked with reason logout');
SELECT results_eq(format($$SELECT pg_temp.events('user.logged_out', %L)$$, (pg_temp.tok('b2')).session_id),
                  ARRAY[jsonb_build_object('user_id', pg_temp.id('bob'), 'session_id', (pg_temp.tok('b2')).session_id,
                                           'reason', 'logout')],
                  'logout publishes user.logged_out {reason logout}');
SELECT is(auth.logout((pg_temp.tok('b2')).refresh_token), false, 'logout again (even with an older token) returns false...');
SELECT is((SELECT count(*) FROM pg_temp.events('user.logged_out', (pg_temp.tok('b2')).session_id)), 1::bigint,
          '...and publishes nothing');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('b3')).access_token),
                 '28000', 'invalid token: session revoked', 'after logout the access token is refused');
SELECT throws_ok(format('SELECT auth.refresh(%L)', (pg_temp.tok('b3')).refresh_token),
                 '28000', 'invalid refresh token: the session was revoked', 'after logout the refresh token is refused');
SELECT throws_ok($$SELECT auth.logout('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::text)$$,
                 '28000', 'invalid refresh token', 'logout with an unknown refresh token raises 28000');
INSERT INTO t_tok SELECT 'b4', auth.login(pg_temp.email('bob'), 'bob secret password');
SELECT is(auth.logout((pg_temp.tok('b4')).session_id), true, 'logout with a session id ends the session');
SELECT throws_ok($$SELECT auth.logout('00000000-0000-7000-8000-000000000000'::uuid)$$,
                 'P0002', 'session 00000000-0000-7000-8000-000000000000 not found', 'logout of an unknown session raises P0002');
SELECT throws_ok($$SELECT auth.logout(NULL::uuid)$$, '22004', 'session_id must not be null', 'logout(NULL) raises 22004');
INSERT INTO t_tok SELECT 'b5', auth.login(pg_temp.email('bob'), 'bob secret password');
INSERT INTO t_txt SELECT 'bob sessions', count(*) FROM auth.sessions WHERE user_id = pg_temp.id('bob') AND revoked_at IS NULL;
SELECT cmp_ok(pg_temp.txt('bob sessions')::int, '>=', 2, 'bob has several active sessions (b5 and the throttle tests'' logins)');
SELECT is(auth.logout_all(pg_temp.id('bob')), pg_temp.txt('bob sessions')::int, 'logout_all ends every active session of the user');
SELECT is((SELECT count(*) FROM auth.sessions WHERE user_id = pg_temp.id('bob') AND revoked_at IS NULL), 0::bigint,
          'bob has no active session left');
SELECT throws_ok($$SELECT auth.logout_all('00000000-0000-7000-8000-000000000000')$$,
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'logout_all of an unknown user raises P0002');

-- a password change ends the other sessions
INSERT INTO t_tok SELECT 'b6', auth.login(pg_temp.email('bob'), 'bob secret password');
INSERT INTO t_tok SELECT 'b7', auth.login(pg_temp.email('bob'), 'bob secret password');
SELECT lives_ok(format($$SELECT auth.set_password(%L, 'bob new password', %L)$$, pg_temp.id('bob'), (pg_temp.tok('b7')).session_id),
                'set_password with keep_session');
SELECT is((SELECT revoke_reason FROM auth.sessions WHERE session_id = (pg_temp.tok('b6')).session_id), 'password_changed',
          'a password change ends the user''s other sessions (reason password_changed)');
SELECT is((SELECT revoked_at FROM auth.sessions WHERE session_id = (pg_temp.tok('b7')).session_id), NULL,
          'but not the session it was asked to keep');
SELECT is((SELECT count(*) FROM auth.outbox WHERE event_type = 'user.logged_out'
              AND data->>'session_id' = (pg_temp.tok('b6')).session_id::text AND data->>'reason' = 'password_changed'), 1::bigint,
          'and publishes user.logged_out with reason password_changed');
SELECT throws_ok(format($$SELECT auth.refresh(%L)$$, (pg_temp.tok('b6')).refresh_token),
                 '28000', NULL, 'the ended session''s refresh token is refused');
SELECT throws_ok(format($$SELECT auth.login(%L, 'bob secret password')$$, pg_temp.email('bob')),
                 '28000', 'invalid email or password', 'the old password no longer logs in');
SELECT isnt((auth.login(pg_temp.email('bob'), 'bob new password')).access_token, NULL, 'the new one does');

-- changing one's own password needs the current one
SELECT throws_ok(format($$SELECT auth.change_password(%L, 'not the password', 'bob newer password')$$, pg_temp.id('bob')),
                 '28000', 'the current password is wrong', 'change_password with a wrong current password raises 28000');
SELECT is(pg_temp.try_login(pg_temp.email('bob'), 'bob new password'), 'ok', 'and the password stays');
SELECT throws_ok(format($$SELECT auth.change_password(%L, 'bob new password', 'short')$$, pg_temp.id('bob')),
                 '22023', 'a password has 8 to 1024 characters, not 5', 'change_password to a short password raises 22023');
SELECT throws_ok(format($$SELECT auth.change_password(%L, NULL, 'bob newer password')$$, pg_temp.id('bob')),
                 '22004', 'current_password must not be null', 'change_password without the current password raises 22004');
SELECT lives_ok(format($$SELECT auth.change_password(%L, 'bob new password', 'bob newer password', %L)$$,
                       pg_temp.id('bob'), (pg_temp.tok('b7')).session_id),
                'change_password with the current password');
SELECT is(pg_temp.try_login(pg_temp.email('bob'), 'bob new password') || ' ' || pg_temp.try_login(pg_temp.email('bob'), 'bob newer password'),
          '28000 ok', 'the new password logs in, the old one no more');
SELECT is((SELECT revoked_at FROM auth.sessions WHERE session_id = (pg_temp.tok('b7')).session_id), NULL,
          'the session it was asked to keep goes on');

-- wrong current passwords are throttled like logins, per user (not per email)
CREATE FUNCTION pg_temp.try_change(u uuid, cur text, new text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM auth.change_password(u, cur, new);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
SELECT is(ARRAY(SELECT pg_temp.try_change(pg_temp.id('bob'), 'wrong current ' || i, 'bob newest password') FROM generate_series(1, 5) i),
          ARRAY['28000', '28000', '28000', '28000', '28000'],
          'five wrong current passwords to change_password raise 28000 each');
SELECT throws_matching(format($$SELECT auth.change_password(%L, 'bob newer password', 'bob newest password')$$, pg_temp.id('bob')),
                       '^too many wrong passwords for this user: try again in (89[0-9]|900) seconds$',
                       'then the right one is refused too (28P01, when to retry): 5 guesses per 15 minutes, as for login');
SELECT is((SELECT (failures, locked_until > now())::text FROM auth._throttle_state('USER:' || pg_temp.id('bob'))), '(5,t)',
          'the count is kept under the user''s id, whatever the email');
SELECT is(pg_temp.try_login(pg_temp.email('bob'), 'bob newer password') || ' ' || (auth._throttle_state(pg_temp.email('bob'))).failures,
          'ok 0', 'the login of that user is not locked by it: a stolen token cannot lock its owner out');
SELECT is(auth.reset_login_throttle(pg_temp.email('bob')), true,
          'reset_login_throttle(email) unlocks the password changes of the email''s user too');
SELECT is(pg_temp.try_change(pg_temp.id('bob'), 'wrong again', 'bob newest password') || ' '
          || pg_temp.try_change(pg_temp.id('bob'), 'bob newer password', 'bob newest password') || ' '
          || (auth._throttle_state('USER:' || pg_temp.id('bob'))).failures,
          '28000 ok 0', 'after the reset a wrong one is counted, the right one changes the password and clears the count');

-- ---------------------------------------------------------------- sign-up
SELECT is((SELECT (u.email, u.name, u.status)::text FROM auth.sign_up(pg_temp.email('grace'), 'Grace', 'grace password', 'signup-grace') u),
          (pg_temp.email('grace'), 'Grace', 'active')::text, 'sign_up creates the user');
INSERT INTO t_ids SELECT 'grace', user_id FROM account.find_user_by_email(pg_temp.email('grace'));
SELECT is(pg_temp.try_login(pg_temp.email('grace'), 'grace password'), 'ok', 'with the password: the new user can log in');
SELECT is((auth.sign_up(pg_temp.email('grace'), 'Grace', 'grace password', 'signup-grace')).user_id, pg_temp.id('grace'),
          'sign_up again with the same idempotency key and arguments returns the same user');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Grace', 'another password', 'signup-grace')$$, pg_temp.email('grace')),
                 '23505', 'idempotency key "signup-grace" was already used to create another user',
                 'the same key with another password raises 23505');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Grace Hopper', 'grace password', 'signup-grace')$$, pg_temp.email('grace')),
                 '23505', 'idempotency key "signup-grace" was already used to create another user',
                 'with another name: the very same error, so a refusal does not tell which argument (the password) differs');
SELECT is((auth._throttle_state(pg_temp.email('grace'))).failures, 1,
          'the retry with a wrong password counted as a failed login of the email (a retry is a password check)');
SELECT is(ARRAY(SELECT pg_temp.try_login(pg_temp.email('grace'), 'wrong ' || i) FROM generate_series(1, 4) i),
          ARRAY['28000', '28000', '28000', '28000'], 'four wrong logins of the email: with the retry, five failures');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Grace', 'grace password', 'signup-grace')$$, pg_temp.email('grace')),
                 '28P01', NULL, 'then even a retry with the right password is refused while the email is locked: no oracle beside the throttle');
SELECT auth.reset_login_throttle(pg_temp.email('grace'));
SELECT is((auth.sign_up(pg_temp.email('grace'), 'Grace', 'grace password', 'signup-grace')).user_id || ' '
          || (auth._throttle_state(pg_temp.email('grace'))).failures,
          pg_temp.id('grace') || ' 0', 'unlocked, the right retry returns the user and clears the count, as a login does');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Grace', 'grace password')$$, pg_temp.email('grace')),
                 '23505', NULL, 'signing up with a taken email raises 23505');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Heidi', 'short')$$, pg_temp.email('heidi')),
                 '22023', 'a password has 8 to 1024 characters, not 5', 'signing up with a short password raises 22023');
SELECT throws_ok(format($$SELECT auth.sign_up(%L, 'Heidi', NULL)$$, pg_temp.email('heidi')),
                 '22004', 'password must not be null', 'signing up without a password raises 22004');
SELECT is((SELECT count(*) FROM account.users WHERE lower(email) = pg_temp.email('heidi')), 0::bigint,
          'a refused sign-up leaves no user behind');

-- ---------------------------------------------------------------- devices
INSERT INTO t_keys SELECT 'frame-1', public_key, secret_key FROM auth._ed25519_keypair();
INSERT INTO t_keys SELECT 'other', public_key, secret_key FROM auth._ed25519_keypair();
SELECT is(auth.register_device('pgtap-frame-1', (SELECT pk FROM t_keys WHERE label = 'frame-1'), pg_temp.id('dave')), true,
          'register_device registers a device key with its owner');
SELECT is(auth.register_device('pgtap-frame-1', (SELECT pk FROM t_keys WHERE label = 'frame-1'), pg_temp.id('dave')), false,
          'registering it again with the same key and owner returns false');
SELECT throws_ok(format('SELECT auth.register_device(%L, %L)', 'pgtap-frame-1', (SELECT pk FROM t_keys WHERE label = 'other')),
                 '23505', 'device "pgtap-frame-1" is already registered with another key or owner',
                 'registering it with another key raises 23505');
SELECT throws_ok($$SELECT auth.register_device('pgtap-frame-2', '\x0102')$$,
                 '22023', 'an Ed25519 public key has 32 bytes, not 2', 'a key of the wrong length raises 22023');
SELECT throws_ok(format('SELECT auth.register_device(%L, %L)', 'bad id!', (SELECT pk FROM t_keys WHERE label = 'other')),
                 '22023', 'invalid device id "bad id!"', 'a malformed device id raises 22023');
SELECT throws_ok(format('SELECT auth.register_device(%L, %L, %L)', 'pgtap-frame-2', (SELECT pk FROM t_keys WHERE label = 'other'),
                        '00000000-0000-7000-8000-000000000000'),
                 'P0002', 'user 00000000-0000-7000-8000-000000000000 not found', 'an unknown owner raises P0002');
SELECT throws_ok($$SELECT auth.register_device(NULL, '\x00')$$, '22004', 'device_id must not be null',
                 'a NULL device id raises 22004');

INSERT INTO t_txt SELECT 'nonce 1', (auth.device_challenge('pgtap-frame-1')).nonce;
SELECT is((SELECT (nonce ~ '^[A-Za-z0-9_-]{43}$', expires_at BETWEEN now() + interval '59 seconds' AND clock_timestamp() + interval '60 seconds')::text
             FROM auth.device_challenges WHERE nonce = pg_temp.txt('nonce 1') AND device_id = 'pgtap-frame-1'),
          '(t,t)', 'device_challenge stores a random 32-byte nonce valid 60 seconds');
SELECT throws_ok(format('SELECT auth.device_authenticate(%L, %L, %L)', 'pgtap-frame-1', pg_temp.txt('nonce 1'),
                        auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'other'), convert_to(pg_temp.txt('nonce 1'), 'UTF8'))),
                 '28000', 'device authentication failed', 'a signature by another key raises 28000');
INSERT INTO t_txt SELECT 'device token', row_to_json(auth.device_authenticate('pgtap-frame-1', pg_temp.txt('nonce 1'),
    auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'frame-1'), convert_to(pg_temp.txt('nonce 1'), 'UTF8'))))::text;
SELECT is((SELECT (j ->> 'token_type', (j ->> 'expires_in')::int, j ->> 'device_id')::text FROM (SELECT pg_temp.txt('device token')::jsonb j) x),
          '(Bearer,900,pgtap-frame-1)', 'a device that signs its nonce gets a Bearer device token');
INSERT INTO t_txt SELECT 'device claims', auth.verify_token(pg_temp.txt('device token')::jsonb ->> 'access_token')::text;
SELECT is((SELECT (c ->> 'typ', c ->> 'sub', c ->> 'sid')::text FROM (SELECT pg_temp.txt('device claims')::jsonb c) x),
          ('device', 'pgtap-frame-1', pg_temp.txt('device token')::jsonb ->> 'session_id')::text,
          'the device token verifies: typ device, sub the device id, sid its session');
SELECT is((SELECT (kind, device_id, user_id)::text FROM auth.sessions
            WHERE session_id = (pg_temp.txt('device token')::jsonb ->> 'session_id')::uuid),
          ('device', 'pgtap-frame-1', pg_temp.id('dave'))::text, 'a device session of the device and its owner');
SELECT results_eq(format($$SELECT pg_temp.events('device.authenticated', %L)$$, pg_temp.txt('device token')::jsonb ->> 'session_id'),
                  ARRAY[jsonb_build_object('device_id', 'pgtap-frame-1', 'session_id', pg_temp.txt('device token')::jsonb ->> 'session_id',
                                           'user_id', pg_temp.id('dave'))],
                  'device.authenticated {device_id, session_id, user_id} is published');
SELECT throws_ok(format('SELECT auth.device_authenticate(%L, %L, %L)', 'pgtap-frame-1', pg_temp.txt('nonce 1'),
                        auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'frame-1'), convert_to(pg_temp.txt('nonce 1'), 'UTF8'))),
                 '28000', 'device authentication failed', 'a nonce is single-use');
SELECT throws_ok(format('SELECT auth.device_authenticate(%L, %L, %L)', 'pgtap-nobody', pg_temp.txt('nonce 1'),
                        auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'frame-1'), convert_to(pg_temp.txt('nonce 1'), 'UTF8'))),
                 '28000', 'device authentication failed', 'an unknown device raises the same 28000');
SELECT is((SELECT count(*) FROM auth.device_challenges WHERE nonce = (auth.device_challenge('pgtap-nobody')).nonce), 0::bigint,
          'an unknown device gets a nonce that is stored nowhere');
INSERT INTO t_txt SELECT 'nonce 2', (auth.device_challenge('pgtap-frame-1')).nonce;
UPDATE auth.device_challenges SET expires_at = now() - interval '1 second' WHERE nonce = pg_temp.txt('nonce 2');
SELECT throws_ok(format('SELECT auth.device_authenticate(%L, %L, %L)', 'pgtap-frame-1', pg_temp.txt('nonce 2'),
                        auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'frame-1'), convert_to(pg_temp.txt('nonce 2'), 'UTF8'))),
                 '28000', 'device authentication failed', 'an expired nonce raises the same 28000');
SELECT auth.register_device('pgtap-frame-2', (SELECT pk FROM t_keys WHERE label = 'other'));
INSERT INTO t_txt SELECT 'nonce 3', (auth.device_challenge('pgtap-frame-2')).nonce;
SELECT throws_ok(format('SELECT auth.device_authenticate(%L, %L, %L)', 'pgtap-frame-1', pg_temp.txt('nonce 3'),
                        auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'frame-1'), convert_to(pg_temp.txt('nonce 3'), 'UTF8'))),
                 '28000', 'device authentication failed', 'a nonce issued to another device raises the same 28000');
INSERT INTO t_txt SELECT 'frame-2 token', row_to_json(auth.device_authenticate('pgtap-frame-2', pg_temp.txt('nonce 3'),
    auth._ed25519_sign((SELECT sk FROM t_keys WHERE label = 'other'), convert_to(pg_temp.txt('nonce 3'), 'UTF8'))))::text;
SELECT results_eq(format($$SELECT pg_temp.events('device.authenticated', %L)$$, pg_temp.txt('frame-2 token')::jsonb ->> 'session_id'),
                  ARRAY[jsonb_build_object('device_id', 'pgtap-frame-2', 'session_id', pg_temp.txt('frame-2 token')::jsonb ->> 'session_id',
                                           'user_id', NULL)],
                  'a device without owner authenticates: device.authenticated has user_id null');
SELECT is(auth.logout((pg_temp.txt('frame-2 token')::jsonb ->> 'session_id')::uuid), true, 'logout ends a device session');
SELECT is((SELECT count(*) FROM pg_temp.events('user.logged_out', (pg_temp.txt('frame-2 token')::jsonb ->> 'session_id')::uuid)),
          0::bigint, 'a device session without owner ends without user.logged_out');
SELECT auth.device_challenge('pgtap-frame-1') FROM generate_series(1, 7);
SELECT is((SELECT count(*) FROM auth.device_challenges WHERE device_id = 'pgtap-frame-1'), 5::bigint,
          'a device keeps at most 5 open challenges');
SELECT throws_ok($$SELECT auth.device_challenge('bad id!')$$, '22023', 'invalid device id "bad id!"',
                 'a challenge for a malformed device id raises 22023');
SELECT throws_ok($$SELECT auth.device_authenticate('pgtap-frame-1', NULL, '\x00')$$, '22004',
                 'nonce must not be null', 'a NULL nonce raises 22004');

-- ---------------------------------------------------------------- handlers
INSERT INTO t_tok SELECT 'c1', auth.login(pg_temp.email('carol'), 'carol secret password');
INSERT INTO t_tok SELECT 'c2', auth.login(pg_temp.email('carol'), 'carol secret password');
SELECT account.delete_user(pg_temp.id('carol'));
SELECT throws_ok(format($$SELECT auth.login(%L, 'carol secret password')$$, pg_temp.email('carol')),
                 '28000', 'invalid email or password', 'a deleted user cannot log in');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('c1')).access_token),
                 '28000', 'invalid token: the user no longer exists', 'a deleted user''s token is refused even before user.deleted arrives');
SELECT throws_ok(format('SELECT auth.refresh(%L)', (pg_temp.tok('c1')).refresh_token),
                 '28000', 'invalid refresh token: the user no longer exists', 'and so is its refresh token');
SELECT lives_ok(format($$SELECT auth.on_user_deleted(isa.event_from_json(jsonb_build_object(
                    'id', isa.uuid_v7(), 'event_type', 'user.deleted', 'source', 'account_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', %L::uuid, 'deleted_at', now()))))$$, pg_temp.id('carol')),
                'on_user_deleted handles user.deleted');
SELECT is((SELECT array_agg(revoke_reason ORDER BY session_id) FROM auth.sessions WHERE user_id = pg_temp.id('carol')),
          ARRAY['user_deleted', 'user_deleted'], 'every session of the deleted user is revoked (reason user_deleted)');
SELECT is((SELECT count(*) FROM auth.passwords WHERE user_id = pg_temp.id('carol')), 0::bigint, 'the password is dropped');
SELECT is((SELECT count(*) FROM auth.outbox WHERE event_type = 'user.logged_out' AND data ->> 'user_id' = pg_temp.id('carol')::text
              AND data ->> 'reason' = 'user_deleted'
              AND data ->> 'session_id' IN ((pg_temp.tok('c1')).session_id::text, (pg_temp.tok('c2')).session_id::text)),
          2::bigint, 'user.logged_out {reason user_deleted} is published per session');
SELECT lives_ok(format($$SELECT auth.on_user_deleted(isa.event_from_json(jsonb_build_object(
                    'id', isa.uuid_v7(), 'event_type', 'user.deleted', 'source', 'account_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', %L::uuid, 'deleted_at', now()))))$$, pg_temp.id('carol')),
                'a second user.deleted for the same user...');
SELECT is((SELECT count(*) FROM auth.outbox WHERE event_type = 'user.logged_out' AND data ->> 'user_id' = pg_temp.id('carol')::text),
          2::bigint, '...publishes nothing more');

INSERT INTO t_tok SELECT 'd1', auth.login(pg_temp.email('dave'), 'dave secret password');
SELECT lives_ok(format($$SELECT auth.on_permission_revoked(isa.event_from_json(jsonb_build_object(
                    'id', isa.uuid_v7(), 'event_type', 'permission.revoked', 'source', 'authorization_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', %L::uuid, 'permission', 'wallet:read', 'resource_type', 'wallet',
                                               'resource_id', NULL, 'org_id', NULL, 'via', 'grant', 'role', NULL))))$$, pg_temp.id('dave')),
                'on_permission_revoked handles permission.revoked');
SELECT is((SELECT revoke_reason FROM auth.sessions WHERE session_id = (pg_temp.tok('d1')).session_id), 'permission_revoked',
          'the user''s session is revoked (reason permission_revoked)');
SELECT results_eq(format($$SELECT pg_temp.events('user.logged_out', %L)$$, (pg_temp.tok('d1')).session_id),
                  ARRAY[jsonb_build_object('user_id', pg_temp.id('dave'), 'session_id', (pg_temp.tok('d1')).session_id,
                                           'reason', 'permission_revoked')],
                  'user.logged_out {reason permission_revoked} is published');
SELECT throws_ok(format('SELECT auth.verify_token(%L)', (pg_temp.tok('d1')).access_token),
                 '28000', 'invalid token: session revoked', 'the forced-out session''s token is refused');
SELECT is(pg_temp.try_login(pg_temp.email('dave'), 'dave secret password'), 'ok', 'the user may log in again');
SELECT lives_ok($$SELECT auth.on_permission_revoked(isa.event_from_json(jsonb_build_object(
                    'id', isa.uuid_v7(), 'event_type', 'permission.revoked', 'source', 'authorization_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', 'not-a-uuid'))))$$,
                'a permission.revoked without a valid user_id is ignored, not retried');
INSERT INTO t_tok SELECT 'd2', auth.login(pg_temp.email('dave'), 'dave secret password');
SELECT lives_ok(format($$SELECT auth.on_permission_revoked(isa.event_from_json(jsonb_build_object(
                    'id', isa.uuid_v7(), 'event_type', 'permission.revoked', 'source', 'authorization_service', 'timestamp', now(),
                    'data', jsonb_build_object('user_id', %L::uuid, 'permission', 'org:read', 'resource_type', 'org',
                                               'resource_id', NULL, 'org_id', gen_random_uuid(), 'via', 'role', 'role', 'org_guest'))))$$,
                       pg_temp.id('dave')),
                'a permission.revoked inside one organization is handled...');
SELECT is((SELECT revoked_at FROM auth.sessions WHERE session_id = (pg_temp.tok('d2')).session_id), NULL,
          '...and ends no session: authz.check answers for the organization live');

-- ---------------------------------------------------------------- housekeeping
UPDATE auth.sessions SET expires_at = now() - interval '2 days' WHERE session_id = (pg_temp.tok('b1')).session_id;
SELECT cmp_ok((SELECT n FROM auth.housekeeping() WHERE action = 'expired sessions deleted'), '>=', 1::bigint,
              'housekeeping deletes expired sessions...');
SELECT ok(NOT EXISTS (SELECT 1 FROM auth.sessions WHERE session_id = (pg_temp.tok('b1')).session_id)
          AND NOT EXISTS (SELECT 1 FROM auth.refresh_tokens WHERE session_id = (pg_temp.tok('b1')).session_id),
          '...a session expired for over a day is gone, with its refresh tokens');
SELECT is((SELECT schedule || ' | ' || command FROM isa.scheduled_jobs WHERE jobname = 'isa-auth-housekeeping'),
          '* * * * * | SELECT auth.housekeeping()', 'housekeeping is scheduled every minute');

-- ---------------------------------------------------------------- catalogue, subscriptions, privileges
SELECT set_eq($$SELECT event_type FROM isa.event_types WHERE source = 'auth_service' AND event_type <> 'event.dead_lettered'$$,
              ARRAY['user.logged_in', 'user.logged_out', 'device.authenticated'],
              'auth_service registers user.logged_in, user.logged_out and device.authenticated');
SELECT set_eq($$SELECT subject_filter || ' ' || handler::text FROM isa.subscriptions WHERE service = 'auth'$$,
              ARRAY['account_service.user.deleted auth.on_user_deleted(isa.event)',
                    'authorization_service.permission.revoked auth.on_permission_revoked(isa.event)'],
              'auth subscribes to user.deleted and permission.revoked');
SELECT ok(bool_and(has_function_privilege('isa_app', f, 'EXECUTE')),
          'isa_app may execute the API') FROM unnest(ARRAY[
    'auth.sign_up(text,text,text,text)', 'auth.change_password(uuid,text,text,uuid)',
    'auth.login(text,text)', 'auth.refresh(text)', 'auth.logout(text)',
    'auth.logout_all(uuid)', 'auth.verify_token(text)', 'auth.jwks()',
    'auth.device_challenge(text)', 'auth.device_authenticate(text,text,bytea)']) f;
SELECT is(array_agg(f ORDER BY f) FILTER (WHERE has_function_privilege('isa_app', f, 'EXECUTE')), NULL,
          'isa_app may not execute handlers, administration (set_password, logout by session id, register_device: isa_app_admin''s) or internals') FROM unnest(ARRAY[
    'auth.set_password(uuid,text,uuid)', 'auth.logout(uuid)', 'auth.register_device(text,bytea,uuid)',
    'auth.on_user_deleted(isa.event)', 'auth.on_permission_revoked(isa.event)', 'auth.rotate_signing_key()',
    'auth.retire_signing_key(text)', 'auth.reset_login_throttle(text)', 'auth.housekeeping()', 'auth._sign_jwt(jsonb)',
    'auth._jwt_encode(jsonb,text,bytea)', 'auth._ed25519_keypair()', 'auth._ed25519_sign(bytea,bytea)',
    'auth._throttle_reset(text)', 'auth._throttle_attempt(text)', 'auth._flag_session(uuid)', 'auth._hash_password(text)',
    'auth._verify_password(text,text)', 'auth._persist_flagged_sessions()']) f;
SELECT is(array_agg(t ORDER BY t) FILTER (WHERE has_table_privilege('isa_app', t, 'SELECT,INSERT,UPDATE,DELETE')), NULL,
          'isa_app has no privilege on any auth table')
  FROM (SELECT format('auth.%I', tablename) t FROM pg_tables WHERE schemaname = 'auth') x;
SELECT ok(has_column_privilege('isa_admin', 'auth.signing_keys', 'kid', 'SELECT')
          AND NOT has_column_privilege('isa_admin', 'auth.signing_keys', 'private_key', 'SELECT')
          AND NOT has_column_privilege('isa_app', 'auth.signing_keys', 'private_key', 'SELECT'),
          'isa_admin may read the public half of the signing keys, nobody but the owner the private key');
SELECT ok(has_function_privilege('isa_admin', 'auth.rotate_signing_key()', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'auth.retire_signing_key(text)', 'EXECUTE')
          AND has_function_privilege('isa_admin', 'auth.reset_login_throttle(text)', 'EXECUTE'),
          'isa_admin may rotate and retire keys and reset the throttle');
SELECT ok(NOT has_function_privilege('public', 'auth.login(text,text)', 'EXECUTE'), 'PUBLIC may not execute the API');

SELECT * FROM finish();
ROLLBACK;
