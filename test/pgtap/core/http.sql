-- http.sql — isa-httpd's routes as data: isa.http_route's checks, the
-- catalogue isa-httpd loads, isa.http_begin (each request's settings and its
-- access rule: live session, isa:admin, owner or authz permission),
-- auth.session_is_live, and the rules every route of the services follows.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(96);

-- The settings this file assumes, whatever the server's configuration says.
SET LOCAL isa.jwt_algorithm = 'EdDSA';
SET LOCAL isa.jwt_issuer = 'isa';
SET LOCAL isa.jwt_audience = 'isa';
SET LOCAL isa.jwt_access_ttl = '15min';
SET LOCAL isa.refresh_ttl = '30d';
SET LOCAL isa.jwt_clock_skew = '30s';
SET LOCAL isa.password_opslimit = 2;
SET LOCAL isa.password_memlimit = '19MB';
SET LOCAL isa.jwt_secret = '';
SET LOCAL isa.jwt_previous_secret = '';

-- ---------------------------------------------------------------- helpers
CREATE TEMP TABLE t_ids (label text PRIMARY KEY, id uuid) ON COMMIT DROP;
CREATE TEMP TABLE t_tok (label text PRIMARY KEY, access_token text, refresh_token text, claims jsonb) ON COMMIT DROP;

CREATE FUNCTION pg_temp.id(l text) RETURNS uuid LANGUAGE sql AS $$ SELECT id FROM t_ids WHERE label = l $$;
CREATE FUNCTION pg_temp.claims(l text) RETURNS jsonb LANGUAGE sql AS $$ SELECT claims FROM t_tok WHERE label = l $$;
CREATE FUNCTION pg_temp.route(m text, p text) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT r FROM jsonb_array_elements(isa.http_route_catalogue()) r WHERE r ->> 'method' = m AND r ->> 'path' = p $$;
-- The route's catalogue entry with only the keys of `expected`, to compare with it.
CREATE FUNCTION pg_temp.route_as(m text, p text, expected jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(pg_temp.route(m, p)) e WHERE expected ? e.key $$;

-- A user with a password, logged in once as <label>: its tokens and the
-- claims auth.verify_token finds in the access token.
CREATE FUNCTION pg_temp.new_user(l text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    uid uuid := (account.create_user(l || '@http-pgtap.invalid', initcap(l))).user_id;
BEGIN
    PERFORM auth.set_password(uid, 'password of ' || l);
    INSERT INTO t_ids VALUES (l, uid);
    PERFORM pg_temp.login(l, l);
    RETURN uid;
END
$$;
CREATE FUNCTION pg_temp.login(l text, as_label text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t auth.tokens := auth.login(l || '@http-pgtap.invalid', 'password of ' || l);
BEGIN
    INSERT INTO t_tok VALUES (as_label, t.access_token, t.refresh_token, auth.verify_token(t.access_token));
END
$$;

-- Runs isa.http_begin in a subtransaction that is rolled back afterwards (as
-- isa-httpd's request transaction would end): what it set, and whether a
-- write then works ('ok' or its SQLSTATE); or the SQLSTATE it raised.
CREATE FUNCTION pg_temp.request(claims jsonb, m text, p text, self_value text DEFAULT NULL,
                              resource_value text DEFAULT NULL, request jsonb DEFAULT '{}',
                              read_only boolean DEFAULT false, timeout_ms integer DEFAULT 0)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    BEGIN
        PERFORM isa.http_begin(claims, m, p, self_value, resource_value, request, read_only, timeout_ms);
        r := jsonb_build_object(
            'claims', current_setting('request.jwt.claims')::jsonb,
            'method', current_setting('request.method'),
            'path', current_setting('request.path'),
            'headers', current_setting('request.headers')::jsonb,
            'id', current_setting('request.id'),
            'read_only', current_setting('transaction_read_only'),
            'statement_timeout', current_setting('statement_timeout'),
            'http_claims', isa.http_claims());
        BEGIN
            PERFORM account.create_user('write-probe@http-pgtap.invalid', 'Write Probe');
            r := r || '{"write": "ok"}';
        EXCEPTION WHEN OTHERS THEN
            r := r || jsonb_build_object('write', SQLSTATE);
        END;
        RAISE EXCEPTION 'roll the probe back' USING ERRCODE = 'P0004';
    EXCEPTION
        WHEN assert_failure THEN
            RETURN r;
        WHEN OTHERS THEN
            RETURN jsonb_build_object('error', SQLSTATE);
    END;
END
$$;
-- Only the outcome: 'ok' or the SQLSTATE.
CREATE FUNCTION pg_temp.access(claims jsonb, m text, p text, self_value text DEFAULT NULL,
                               resource_value text DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(pg_temp.request(claims, m, p, self_value, resource_value) ->> 'error', 'ok')
$$;

SELECT pg_temp.new_user('alice'), pg_temp.new_user('bob'), pg_temp.new_user('carol'), pg_temp.new_user('dave');
SELECT pg_temp.login('alice', 'alice 2');

-- A device token (challenge signed with the device's key).
CREATE TEMP TABLE t_dev ON COMMIT DROP AS SELECT public_key AS pk, secret_key AS sk FROM auth._ed25519_keypair();
SELECT auth.register_device('http-pgtap-frame', (SELECT pk FROM t_dev), pg_temp.id('alice'));
CREATE TEMP TABLE t_nonce ON COMMIT DROP AS SELECT (auth.device_challenge('http-pgtap-frame')).nonce;
INSERT INTO t_tok
SELECT 'frame', d.access_token, NULL, auth.verify_token(d.access_token)
  FROM t_nonce n,
       auth.device_authenticate('http-pgtap-frame', n.nonce, auth._ed25519_sign((SELECT sk FROM t_dev), convert_to(n.nonce, 'UTF8'))) d;

-- Routes made here for the rules no service route has (rolled back at the end).
SELECT isa.http_route('GET', '/v1/pgtap/device', 'auth.jwks()', 'device', 'A device-only route.');
SELECT isa.http_route('GET', '/v1/pgtap/self/{user_id}', 'account.get_user(uuid)', 'user', 'An owner-only route.',
                      self_param => 'user_id');

-- ---------------------------------------------------------------- isa.http_route refuses what isa-httpd could not serve
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/{nobody}', 'account.get_user(uuid)', 'user', 'x')$$,
                 '22023', NULL, 'a path parameter that is no argument of the function is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.get_user(uuid)', 'user', 'x', self_param => 'owner')$$,
                 '22023', NULL, 'a self_param that is no argument is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.get_user(uuid)', 'user', 'x', subject_param => 'uid')$$,
                 '22023', NULL, 'a subject_param that is no argument is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.get_user(uuid)', 'user', 'x',
                                         permission => 'account:read', resource_param => 'id')$$,
                 '22023', NULL, 'a resource_param that is no argument is 22023');
SELECT throws_ok($$SELECT isa.http_route('POST', '/v1/pgtap/x', 'payment.handle_stripe_webhook(text, text)', 'public', 'x',
                                         header_params => '{"signature": "Stripe-Signature"}')$$,
                 '22023', NULL, 'a header parameter that is no argument is 22023');
SELECT throws_ok($$SELECT isa.http_route('POST', '/v1/pgtap/x', 'payment.handle_stripe_webhook(text, text)', 'public', 'x',
                                         raw_body_param => 'body')$$,
                 '22023', NULL, 'a raw_body_param that is no argument is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'isa.uuid_v7()', 'public', 'x')$$,
                 '22023', NULL, 'a function outside the services'' schemas (isa.uuid_v7) is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/{user_id}', 'account.get_user(uuid)', 'user', 'x',
                                         resource_param => 'user_id')$$,
                 '22023', NULL, 'a resource_param without a permission is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'payment.handle_stripe_webhook(text, text)', 'public', 'x',
                                         raw_body_param => 'raw_body')$$,
                 '22023', NULL, 'a raw body on a GET route is 22023');
SELECT throws_ok($$SELECT isa.http_route('DELETE', '/v1/pgtap/x', 'payment.handle_stripe_webhook(text, text)', 'public', 'x',
                                         raw_body_param => 'raw_body')$$,
                 '22023', NULL, 'a raw body on a DELETE route is 22023');
CREATE FUNCTION account.pgtap_unnamed(uuid) RETURNS uuid LANGUAGE sql RETURN $1;
CREATE FUNCTION account.pgtap_half_named(user_id uuid, text) RETURNS uuid LANGUAGE sql RETURN $1;
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.pgtap_unnamed(uuid)', 'user', 'x')$$,
                 '22023', NULL, 'a function without argument names is 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.pgtap_half_named(uuid, text)', 'user', 'x')$$,
                 '22023', NULL, 'a function with an unnamed argument is 22023');
DROP FUNCTION account.pgtap_unnamed(uuid), account.pgtap_half_named(uuid, text);
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'account.get_user(uuid)', 'public', 'x', subject_param => 'user_id')$$,
                 '22023', NULL, 'a public route has no caller for subject_param: 22023');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/{user_id}', 'account.get_user(uuid)', 'public', 'x', self_param => 'user_id')$$,
                 '22023', NULL, 'a public route has no caller for self_param: 22023');
SELECT throws_ok($$SELECT isa.http_route('HEAD', '/v1/pgtap/x', 'auth.jwks()', 'public', 'x')$$,
                 '23514', NULL, 'an unknown method is refused');
SELECT throws_ok($$SELECT isa.http_route('GET', 'v1/pgtap/x?y', 'auth.jwks()', 'public', 'x')$$,
                 '23514', NULL, 'a path that is not /segment/{param}/... is refused');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'auth.jwks()', 'root', 'x')$$,
                 '23514', NULL, 'an unknown auth is refused');
SELECT throws_ok($$SELECT isa.http_route('GET', '/v1/pgtap/x', 'auth.jwks()', 'user', 'x', permission => 'Wallet-Read')$$,
                 '23514', NULL, 'a malformed permission is refused');

-- ---------------------------------------------------------------- registering again replaces the route
SELECT isa.http_route('GET', '/v1/pgtap/again', 'auth.jwks()', 'public', 'first');
SELECT isa.http_route('GET', '/v1/pgtap/again', 'account.get_user(uuid)', 'user', 'second',
                      permission => 'account:read', status => 202);
SELECT is((SELECT format('%s %s %s %s %s %s', count(*), min(function::text), min(auth), min(summary), min(permission), min(status))
             FROM isa.http_routes WHERE method = 'GET' AND path = '/v1/pgtap/again'),
          '1 account.get_user(uuid) user second account:read 202',
          'registering a method and path again replaces its route');
SELECT lives_ok($$SELECT isa.http_route('GET', '/v1/pgtap/again', 'account.get_user(uuid)', 'user', 'second',
                                        permission => 'account:read', status => 202)$$,
                'the same registration again is harmless (CREATE EXTENSION and upgrades may repeat it)');

-- ---------------------------------------------------------------- the catalogue isa-httpd loads
SELECT is(jsonb_typeof(isa.http_route_catalogue()), 'array', 'http_route_catalogue is a JSON array');
SELECT is((SELECT count(*) FROM jsonb_array_elements(isa.http_route_catalogue())),
          (SELECT count(*) FROM isa.http_routes), 'it has one element per route');
SELECT is(pg_temp.route_as('GET', '/v1/accounts/{user_id}', want), want,
          'GET /v1/accounts/{user_id}: account.get_user, one profile, its access rule and its argument')
  FROM (SELECT '{"method": "GET", "path": "/v1/accounts/{user_id}", "auth": "user", "service": "account",
                 "function": "account.get_user", "permission": "account:read", "resource_param": "user_id",
                 "self_param": "user_id", "subject_param": null, "status": 200, "rate_limited": false,
                 "raw_body_param": null, "header_params": {}, "returns": "one", "return_type": "account.user_profile",
                 "args": [{"name": "user_id", "type": "uuid", "optional": false, "array": false}]}'::jsonb AS want) x;
SELECT is(pg_temp.route('GET', '/v1/orders') -> 'returns', '"set"', 'a SETOF function returns a set (GET /v1/orders)');
SELECT is(pg_temp.route('GET', '/v1/orders') -> 'args',
          '[{"name": "user_id", "type": "uuid", "optional": false, "array": false},
            {"name": "row_limit", "type": "integer", "optional": true, "array": false}]',
          'arguments with a default are optional');
SELECT is(pg_temp.route('DELETE', '/v1/authz/roles/{role}') ->> 'returns', 'void', 'a void function returns void (DELETE a role)');
SELECT is(pg_temp.route('POST', '/v1/authz/roles') -> 'args' -> 2,
          '{"name": "permissions", "type": "text[]", "optional": true, "array": true}',
          'an array argument says so (create_role''s permissions)');
SELECT is(pg_temp.route('GET', '/v1/me') ->> 'subject_param', 'user_id', 'GET /v1/me fills user_id from the caller''s token');
SELECT is(pg_temp.route('POST', '/v1/orders') ->> 'status', '201', 'POST /v1/orders answers 201');
SELECT ok(pg_temp.route('POST', '/v1/orders') ->> 'permission' = 'orders:write' AND pg_temp.route('POST', '/v1/orders') ->> 'subject_param' IS NULL
          AND pg_temp.route('POST', '/v1/orders') ->> 'self_param' IS NULL,
          'POST /v1/orders needs orders:write, never the caller alone (create_order trusts its amount and tokens)');
SELECT is(pg_temp.route_as('POST', '/webhooks/stripe', want), want,
          'POST /webhooks/stripe: the raw body and the Stripe-Signature header are its two arguments')
  FROM (SELECT '{"method": "POST", "path": "/webhooks/stripe", "auth": "public", "service": "payment",
                 "function": "payment.handle_stripe_webhook", "permission": null, "resource_param": null,
                 "self_param": null, "subject_param": null, "status": 200, "rate_limited": false,
                 "raw_body_param": "raw_body", "header_params": {"signature_header": "Stripe-Signature"},
                 "returns": "one", "return_type": "jsonb",
                 "args": [{"name": "raw_body", "type": "text", "optional": false, "array": false},
                          {"name": "signature_header", "type": "text", "optional": false, "array": false}]}'::jsonb AS want) x;

-- ---------------------------------------------------------------- http_begin: the request's settings
SELECT is(pg_temp.request(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('alice')::text, pg_temp.id('alice')::text,
                        '{"method": "GET", "path": "/v1/accounts/x", "headers": {"user-agent": "pgtap"}, "id": "req-1"}',
                        true, 1500) - 'claims' - 'http_claims',
          '{"method": "GET", "path": "/v1/accounts/x", "headers": {"user-agent": "pgtap"}, "id": "req-1",
            "read_only": "on", "statement_timeout": "1500ms", "write": "25006"}',
          'http_begin sets request.method, request.path, request.headers, request.id, the statement timeout and read-only mode; a write then fails 25006');
SELECT is(pg_temp.request(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('alice')::text, NULL,
                        '{}', true, 0) -> 'claims', pg_temp.claims('alice'),
          'it sets request.jwt.claims to the verified claims');
SELECT is(pg_temp.request(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('alice')::text, NULL,
                        '{}', true, 0) -> 'http_claims', pg_temp.claims('alice'),
          'isa.http_claims() returns them to the route''s function');
SELECT is(pg_temp.request(NULL, 'POST', '/v1/auth/signup', NULL, NULL, '{}', false, 0)
            - 'claims' - 'http_claims' - 'headers' - 'method' - 'path' - 'id',
          '{"read_only": "off", "statement_timeout": "0", "write": "ok"}',
          'a POST request stays read-write; timeout 0 means none');
SELECT is(pg_temp.request(NULL, 'GET', '/v1/auth/jwks') -> 'claims', '{}',
          'an anonymous request has empty request.jwt.claims');
SELECT is(pg_temp.request(NULL, 'GET', '/v1/auth/jwks') -> 'http_claims', 'null',
          '... and isa.http_claims() is NULL');
SELECT is(coalesce(current_setting('request.jwt.claims', true), ''), '', 'nothing of a request outlives its transaction');
SELECT is(pg_temp.request(NULL, 'GET', '/v1/pgtap/nowhere') ->> 'error', '42883', 'an unknown route is 42883');

-- ---------------------------------------------------------------- http_begin: authentication
SELECT is(pg_temp.access(NULL, 'GET', '/v1/auth/jwks'), 'ok', 'a public route needs no token');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'POST', '/v1/auth/login'), 'ok', 'a public route accepts a caller with a token too');
SELECT is(pg_temp.access(NULL, 'GET', '/v1/me'), '28000', 'a user route without a token is 28000');
SELECT is(pg_temp.access('{"typ": "access"}', 'GET', '/v1/me'), '28000', 'claims without sub are 28000');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/me'), 'ok', 'a user route passes with a live user session');
SELECT is(pg_temp.access(pg_temp.claims('frame'), 'GET', '/v1/me'), '28000', 'a device token on a user route is 28000');
SELECT is(pg_temp.access(pg_temp.claims('frame'), 'POST', '/v1/authz/roles'), '28000', 'a device token on an admin route is 28000');
SELECT is(pg_temp.access(pg_temp.claims('frame'), 'GET', '/v1/pgtap/device'), 'ok', 'a device route passes with a live device session');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/pgtap/device'), '28000', 'a user token on a device route is 28000');
SELECT is(pg_temp.access(pg_temp.claims('alice') || '{"typ": "refresh"}', 'GET', '/v1/me'), '28000',
          'a token of another type is 28000');
SELECT is(pg_temp.access(pg_temp.claims('alice') || jsonb_build_object('sid', gen_random_uuid()), 'GET', '/v1/me'), '28000',
          'a token of an unknown session is 28000');
SELECT is(pg_temp.access(pg_temp.claims('alice') || jsonb_build_object('sub', pg_temp.id('bob')), 'GET', '/v1/me'), '28000',
          'a session presented with another subject is 28000');
SELECT auth.logout((SELECT refresh_token FROM t_tok WHERE label = 'alice 2'));
SELECT is(pg_temp.access(pg_temp.claims('alice 2'), 'GET', '/v1/me'), '28000', 'a token of a session that logged out is 28000');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/me'), 'ok', '... while the user''s other session goes on');
SELECT account.delete_user(pg_temp.id('dave'));
SELECT is(pg_temp.access(pg_temp.claims('dave'), 'GET', '/v1/me'), '28000', 'a token of a deleted user is 28000');

-- ---------------------------------------------------------------- http_begin: owner, permission, admin
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('alice')::text, pg_temp.id('alice')::text),
          'ok', 'the owner (self_param equal to the caller) needs no permission');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('bob')::text, pg_temp.id('bob')::text),
          '42501', 'another user''s account without account:read is 42501');
SELECT authz.grant_permission(pg_temp.id('alice'), 'account:read', pg_temp.id('bob')::text);
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('bob')::text, pg_temp.id('bob')::text),
          'ok', 'a grant of account:read on that user lets the caller read it');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/accounts/{user_id}', pg_temp.id('carol')::text, pg_temp.id('carol')::text),
          '42501', '... and no other user''s (the resource is the route''s resource_param)');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/wallets/{user_id}', pg_temp.id('bob')::text, pg_temp.id('bob')::text),
          '42501', 'another user''s wallet without wallet:read is 42501');
SELECT authz.create_role('http-pgtap-support', 'Reads wallets.', '{wallet:read}');
SELECT authz.bind_role(pg_temp.id('alice'), 'http-pgtap-support');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/wallets/{user_id}', pg_temp.id('bob')::text, pg_temp.id('bob')::text),
          'ok', 'a role with wallet:read lets the caller read every wallet');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'POST', '/v1/wallets/{user_id}/add', pg_temp.id('alice')::text, pg_temp.id('alice')::text),
          '42501', 'even the owner cannot add tokens to their own wallet without wallet:write');
SELECT is(pg_temp.access(pg_temp.claims('bob'), 'GET', '/v1/pgtap/self/{user_id}', pg_temp.id('alice')::text),
          '42501', 'an owner-only route (self_param, no permission) refuses anyone else: 42501');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/pgtap/self/{user_id}', pg_temp.id('alice')::text),
          'ok', '... and lets the owner in');
SELECT is(pg_temp.access(pg_temp.claims('alice'), 'GET', '/v1/orders/{order_id}', NULL, gen_random_uuid()::text),
          '42501', 'an order by id without orders:read is 42501 (its owner reads it at /v1/me/orders/{order_id})');
SELECT is(pg_temp.access(pg_temp.claims('frame'), 'GET', '/v1/pgtap/again'), '28000',
          'a device token never reaches a permission route');
SELECT is(pg_temp.access(pg_temp.claims('carol'), 'POST', '/v1/authz/roles'), '42501', 'an admin route without isa:admin is 42501');
SELECT authz.create_role('http-pgtap-admin', 'Administers isa.', '{isa:admin}');
SELECT authz.bind_role(pg_temp.id('carol'), 'http-pgtap-admin');
SELECT is(pg_temp.access(pg_temp.claims('carol'), 'POST', '/v1/authz/roles'), 'ok', 'isa:admin passes an admin route');
SELECT is(pg_temp.access(pg_temp.claims('carol'), 'GET', '/v1/wallets/{user_id}', pg_temp.id('bob')::text, pg_temp.id('bob')::text),
          '42501', 'isa:admin is not every permission: a user route''s permission is checked as such');

-- ---------------------------------------------------------------- auth.session_is_live
SELECT is(auth.session_is_live(pg_temp.claims('alice')), true, 'session_is_live: a live user session');
SELECT is(auth.session_is_live(pg_temp.claims('frame')), true, 'session_is_live: a live device session');
SELECT is(auth.session_is_live(pg_temp.claims('alice 2')), false, 'session_is_live: false after logout');
SELECT is(auth.session_is_live(pg_temp.claims('alice') || jsonb_build_object('sub', pg_temp.id('bob'))), false,
          'session_is_live: false for another subject');
SELECT is(auth.session_is_live(pg_temp.claims('frame') || '{"typ": "access"}'), false,
          'session_is_live: false when the token type does not match the session''s kind');
SELECT is(auth.session_is_live(pg_temp.claims('alice') || '{"sid": "not-a-uuid"}'), false, 'session_is_live: false for a malformed sid');
SELECT is(auth.session_is_live(pg_temp.claims('alice') - 'sid'), false, 'session_is_live: false without a sid');
SELECT is(auth.session_is_live(pg_temp.claims('dave')), false, 'session_is_live: false once the user is deleted');
SELECT is(auth.session_is_live(NULL), false, 'session_is_live: false for no claims');

-- ---------------------------------------------------------------- the services' routes
DELETE FROM isa.http_routes WHERE path LIKE '/v1/pgtap/%';
SELECT is((SELECT array_agg(format('%s %s', method, path) ORDER BY path, method) FROM isa.http_routes
            WHERE NOT has_function_privilege('isa_app', function, 'EXECUTE')
              AND NOT has_function_privilege('isa_app_admin', function, 'EXECUTE')), NULL,
          'every route names a function isa_app or isa_app_admin (isa-httpd''s roles) may execute');
SELECT is((SELECT array_agg(format('%s %s %s', r.method, r.path, r.function) ORDER BY r.path) FROM isa.http_routes r
             JOIN pg_proc p ON p.oid = r.function
            WHERE r.method = 'GET' AND p.provolatile = 'v'), NULL,
          'every GET route names a STABLE or IMMUTABLE function (GET runs read-only)');
SELECT is((SELECT array_agg(format('%s %s', r.method, r.path)) FROM isa.http_routes r
             JOIN pg_proc p ON p.oid = r.function
            WHERE 'isa.event'::regtype = ANY (p.proargtypes::oid[]) OR p.proname LIKE 'on\_%'), NULL,
          'no route names an event handler');
SELECT is((SELECT array_agg(format('%s %s', r.method, r.path)) FROM isa.http_routes r
             JOIN pg_proc p ON p.oid = r.function WHERE p.proname LIKE '\_%'), NULL,
          'no route names an internal function');
SELECT is((SELECT array_agg(format('%s %s', method, path)) FROM isa.http_routes
            WHERE path !~ '^/v1/' AND path <> '/webhooks/stripe'), NULL,
          'every route but Stripe''s webhook is under /v1/');
-- The synchronous API of every service is reachable over HTTP, except what
-- another function serves (create_user: sign_up; try_price_quote:
-- price_quote; create_payment: create_order), what isa-httpd itself does
-- (session_is_live; storage's put_chunk, finish_upload, abort_upload and read_file, which
-- isa-httpd calls while it streams), require_user, user_exists's
-- error-raising twin, storage's get_file, sign_download and get_my_file (the
-- owner check organization calls), its access checks (can_read, can_write,
-- can_read_album, can_write_album, album_owner), for services (a user
-- reaches get_readable_file and sign_my_download), and organization's
-- checks for other services (organization_exists, member_role, is_member,
-- can_access), and session's add_message, the AI backends' (a user's own
-- message is send_message's route).
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                  JOIN pg_namespace n ON n.oid = p.pronamespace JOIN isa.services s ON s.schema_name = n.nspname
                 WHERE has_function_privilege('isa_app', p.oid, 'EXECUTE')
                   AND NOT EXISTS (SELECT 1 FROM isa.http_routes r WHERE r.function = p.oid)$$,
              ARRAY['account.create_user(text,text,text)', 'account.require_user(uuid)', 'auth.session_is_live(jsonb)',
                    'product.try_price_quote(text,text,numeric,timestamp with time zone,numeric)',
                    'payment.create_payment(uuid,uuid,bigint,text,text,bigint)',
                    'storage.put_chunk(uuid,integer,bytea)', 'storage.finish_upload(uuid,text)',
                    'storage.abort_upload(uuid)',
                    'storage.read_file(uuid,bigint,integer)', 'storage.get_file(uuid)',
                    'storage.sign_download(uuid,integer)', 'storage.get_my_file(uuid,uuid)',
                    'storage.can_read(uuid,uuid)', 'storage.can_write(uuid,uuid)', 'storage.can_read_album(uuid,uuid)',
                    'storage.can_write_album(uuid,uuid)', 'storage.album_owner(uuid)',
                    'organization.organization_exists(uuid)', 'organization.member_role(uuid,uuid)',
                    'organization.is_member(uuid,uuid)', 'organization.can_access(uuid,text,uuid)',
                    'session.add_message(uuid,uuid,text,text,integer,integer,uuid[],text)'],
              'every API function isa_app may execute has a route, but twenty-two that others serve');
SELECT is((SELECT array_agg(format('%s %s', method, path) ORDER BY path) FROM isa.http_routes
            WHERE function IN ('wallet.add(uuid,bigint,text,text,text,text)'::regprocedure,
                               'wallet.deduct(uuid,bigint,text,text,text,text)'::regprocedure)
              AND (self_param IS NOT NULL OR permission IS DISTINCT FROM 'wallet:write')), NULL,
          'tokens are added and deducted only with wallet:write, never by the owner alone');
SELECT set_eq($$SELECT format('%s %s', method, path) FROM isa.http_routes WHERE rate_limited$$,
              ARRAY['POST /v1/auth/signup', 'POST /v1/auth/login', 'POST /v1/auth/refresh', 'PUT /v1/auth/password',
                    'POST /v1/devices/{device_id}/challenge', 'POST /v1/devices/{device_id}/token'],
              'sign-up, login, refresh, the password change and the device handshake are rate-limited');
SELECT is((SELECT array_agg(format('%s %s', method, path) ORDER BY path) FROM isa.http_routes
            WHERE auth = 'public' AND method <> 'GET'
              AND path NOT IN ('/v1/auth/signup', '/v1/auth/login', '/v1/auth/refresh', '/v1/auth/logout', '/v1/auth/verify',
                               '/v1/devices/{device_id}/challenge', '/v1/devices/{device_id}/token', '/webhooks/stripe')), NULL,
          'no public route writes but sign-up, the token exchanges and Stripe''s webhook');
SELECT is((SELECT array_agg(format('%s %s', method, path) ORDER BY path) FROM isa.http_routes
            WHERE path LIKE '/v1/me%' AND subject_param IS NULL), NULL,
          'every /v1/me route takes the user from the token');
SELECT is((SELECT array_agg(format('%s %s', method, path) ORDER BY path) FROM isa.http_routes r
             JOIN pg_proc p ON p.oid = r.function
            WHERE r.status = 201 AND r.method <> 'POST'), NULL, 'only POST routes answer 201');

-- ---------------------------------------------------------------- the Markdown of docs/http.md
SELECT ok(strpos(isa.http_routes_markdown(),
                 E'### account\n\n| method | path | auth | access | function | summary |\n|---|---|---|---|---|---|\n') = 1,
          'http_routes_markdown begins with the account service''s table');
SELECT ok(strpos(isa.http_routes_markdown(),
                 E'| `GET` | `/v1/accounts/{user_id}` | user | owner (`user_id`) or `account:read` on `user_id` | `account.get_user(user_id)` | A user''s profile. |\n') > 0,
          'a route''s line: method, path, auth, owner or permission, function with arguments, summary');
SELECT ok(strpos(isa.http_routes_markdown(),
                 E'| `POST` (201) | `/v1/orders` | user | `orders:write` | `orders.create_order(user_id, amount, currency, payment_method, idempotency_key, [tokens], [stripe_payment_intent_id], [items])` |') > 0
          AND strpos(isa.http_routes_markdown(), E'| `GET` | `/v1/me` | user | the caller | `account.get_user(user_id ← token)` |') > 0,
          'subject arguments, optional arguments and a status other than 200 are shown');
SELECT ok(strpos(isa.http_routes_markdown(), '`payment.handle_stripe_webhook(raw_body ← body, signature_header ← Stripe-Signature)`') > 0,
          'the raw body and header arguments are shown');
SELECT is((SELECT count(*) FROM regexp_matches(isa.http_routes_markdown(), E'^\\| `', 'gn')), (SELECT count(*) FROM isa.http_routes),
          'one line per route');

-- ---------------------------------------------------------------- privileges
SELECT ok(has_function_privilege('isa_app', 'isa.http_route_catalogue()', 'EXECUTE')
          AND has_function_privilege('isa_app', 'isa.http_begin(jsonb,text,text,text,text,jsonb,boolean,integer)', 'EXECUTE')
          AND has_function_privilege('isa_app', 'isa.http_claims()', 'EXECUTE')
          AND has_function_privilege('isa_app', 'isa.http_routes_markdown()', 'EXECUTE'),
          'isa_app may load the routes, begin a request, read its claims and the routes'' Markdown');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'isa'::regnamespace AND p.proname = 'http_route'
                        AND has_function_privilege('isa_app', p.oid, 'EXECUTE'))
          AND NOT has_table_privilege('isa_app', 'isa.http_routes', 'SELECT, INSERT, UPDATE, DELETE'),
          'isa_app may not add routes nor touch isa.http_routes');
SET LOCAL ROLE isa_app;
SELECT is(jsonb_typeof(isa.http_route_catalogue()), 'array', 'isa_app loads the catalogue (SECURITY DEFINER)');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
