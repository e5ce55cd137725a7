-- auth.sql — the auth service (schema auth, source auth_service): passwords
-- (argon2id), login with a throttle, JWT access tokens (EdDSA or HS256, kid
-- rotation), rotating refresh tokens whose reuse revokes the session, device
-- challenge/response authentication, and the handlers that end sessions when
-- a user is deleted or loses a permission.  docs/services/auth.md describes it;
-- the C is in extension/auth/: auth.c (passwords, Ed25519), auth_settings.c, jwt.c
-- and jwt_verify.c (tokens), auth_shmem.c (the tables in shared memory).

-- ---------------------------------------------------------------- tables
CREATE TABLE auth.passwords (
    user_id    uuid PRIMARY KEY,                     -- account's user (no FK across schemas)
    hash       text NOT NULL CHECK (hash LIKE '$argon2id$%'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE auth.passwords IS
    'Password hashes (argon2id, libsodium crypto_pwhash_str) per user.';

CREATE TABLE auth.signing_keys (
    kid         text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    algorithm   text NOT NULL DEFAULT 'EdDSA' CHECK (algorithm = 'EdDSA'),
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    private_key bytea NOT NULL CHECK (length(private_key) = 64),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at  timestamptz
);
COMMENT ON TABLE auth.signing_keys IS
    'Ed25519 JWT signing keys: the newest unretired key signs, every unretired key verifies. kid is the RFC 7638 thumbprint of the public key. Only the owner may read private_key.';

CREATE TABLE auth.sessions (
    session_id    uuid PRIMARY KEY DEFAULT isa.uuid_v7(),
    kind          text NOT NULL CHECK (kind IN ('user', 'device')),
    user_id       uuid,                              -- NULL for a device without an owner
    device_id     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,              -- the end of its last refresh token (user) or token (device)
    revoked_at    timestamptz,
    revoke_reason text CHECK (revoke_reason IN ('logout', 'user_deleted', 'permission_revoked', 'refresh_reuse',
                                                'password_changed')),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK (kind = 'user' AND user_id IS NOT NULL AND device_id IS NULL
        OR kind = 'device' AND device_id IS NOT NULL)
);
CREATE INDEX sessions_user_active ON auth.sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires ON auth.sessions (expires_at);
COMMENT ON TABLE auth.sessions IS
    'Logins (kind user) and device authentications (kind device); a session is the family of its refresh tokens. Revoked sessions stay until they expire.';

CREATE TABLE auth.refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),   -- sha256 of the token text
    session_id uuid NOT NULL REFERENCES auth.sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz                                          -- rotated: presenting it again is reuse
);
CREATE INDEX refresh_tokens_session ON auth.refresh_tokens (session_id);
COMMENT ON TABLE auth.refresh_tokens IS
    'Refresh tokens, stored only as their SHA-256; each refresh marks the token used and issues the next one of its session.';

CREATE TABLE auth.devices (
    device_id     text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),
    user_id       uuid,                              -- owner, if any
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_authenticated_at timestamptz
);
COMMENT ON TABLE auth.devices IS
    'Device credentials: the Ed25519 public key each device proves possession of.';

CREATE TABLE auth.device_challenges (
    nonce      text PRIMARY KEY,
    device_id  text NOT NULL REFERENCES auth.devices ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX device_challenges_device ON auth.device_challenges (device_id);
CREATE INDEX device_challenges_expires ON auth.device_challenges (expires_at);
COMMENT ON TABLE auth.device_challenges IS
    'Outstanding device challenges (nonces), valid 60 seconds and consumed by a successful authentication.';

-- ---------------------------------------------------------------- result types
CREATE TYPE auth.tokens AS (
    access_token  text,
    refresh_token text,
    token_type    text,
    expires_in    integer,
    user_id       uuid,
    session_id    uuid
);
COMMENT ON TYPE auth.tokens IS 'What auth.login and auth.refresh return.';

CREATE TYPE auth.challenge AS (
    nonce      text,
    expires_at timestamptz
);
COMMENT ON TYPE auth.challenge IS 'What auth.device_challenge returns: the nonce to sign and when it expires.';

CREATE TYPE auth.device_token AS (
    access_token text,
    token_type   text,
    expires_in   integer,
    device_id    text,
    session_id   uuid
);
COMMENT ON TYPE auth.device_token IS 'What auth.device_authenticate returns.';

-- ---------------------------------------------------------------- C (extension/auth/)
CREATE FUNCTION auth._shmem_available() RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_shmem_available' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._throttle_attempt(email text) RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_attempt' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._throttle_reset(email text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_reset' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._throttle_state(email text, OUT failures integer, OUT locked_until timestamptz)
    AS 'MODULE_PATHNAME', 'isa_auth_throttle_state' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._flag_session(session_id uuid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_flag_session' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._session_flagged(session_id uuid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_session_flagged' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._flagged_sessions() RETURNS uuid[]
    AS 'MODULE_PATHNAME', 'isa_auth_flagged_sessions' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._unflag_at_commit(session_ids uuid[]) RETURNS void
    AS 'MODULE_PATHNAME', 'isa_auth_unflag_at_commit' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._jwt_algorithm() RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_algorithm' LANGUAGE C STABLE;
CREATE FUNCTION auth._lifetime(what text) RETURNS integer
    AS 'MODULE_PATHNAME', 'isa_auth_lifetime' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._hash_password(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_hash_password' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION auth._verify_password(hash text, password text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_verify_password' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._password_needs_rehash(hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_password_needs_rehash' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._ed25519_keypair(OUT public_key bytea, OUT secret_key bytea)
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_keypair' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._ed25519_sign(secret_key bytea, message bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_sign' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION auth._ed25519_verify(public_key bytea, message bytea, signature bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_auth_ed25519_verify' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION auth._jwt_kid(token text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_kid' LANGUAGE C STABLE STRICT;
CREATE FUNCTION auth._jwt_verify(token text, public_key bytea) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_verify' LANGUAGE C VOLATILE;
CREATE FUNCTION auth._jwt_encode(claims jsonb, kid text, secret_key bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_auth_jwt_encode' LANGUAGE C VOLATILE;

-- ---------------------------------------------------------------- events
SELECT isa.register_event_type('user.logged_in', 'auth_service', '1.0.0',
    'A user logged in with a password: a new session began.',
    '{"user_id":    {"type": "uuid",   "required": true, "description": "The user."},
      "session_id": {"type": "uuid",   "required": true, "description": "The new session (the sid claim of its tokens)."},
      "method":     {"type": "string", "required": true, "description": "How the user authenticated: password."}}');
SELECT isa.register_event_type('user.logged_out', 'auth_service', '1.0.0',
    'A session ended: its refresh tokens and access tokens are refused from now on.',
    '{"user_id":    {"type": "uuid",   "required": true, "description": "The user of the session."},
      "session_id": {"type": "uuid",   "required": true, "description": "The session that ended."},
      "reason":     {"type": "string", "required": true, "description": "logout, user_deleted, permission_revoked, refresh_reuse or password_changed."}}');
SELECT isa.register_event_type('device.authenticated', 'auth_service', '1.0.0',
    'A device proved possession of its key (challenge/response) and received a device token.',
    '{"device_id":  {"type": "string", "required": true,  "description": "The device."},
      "session_id": {"type": "uuid",   "required": true,  "description": "The device session (the sid claim of its token)."},
      "user_id":    {"type": "uuid",   "required": false, "description": "The device''s owner; null when it has none."}}');

-- ---------------------------------------------------------------- internals
CREATE FUNCTION auth._refuse(message text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = '28000';
END
$$;

-- Signs claims with the configured algorithm: the newest unretired Ed25519
-- key (EdDSA) or isa.jwt_secret (HS256).  Not granted: tests use it to build
-- tokens with any claims.
CREATE FUNCTION auth._sign_jwt(claims jsonb) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k auth.signing_keys;
BEGIN
    IF auth._jwt_algorithm() = 'HS256' THEN
        RETURN auth._jwt_encode(claims, NULL, NULL);
    END IF;
    SELECT * INTO k FROM auth.signing_keys s WHERE s.retired_at IS NULL
     ORDER BY s.created_at DESC, s.kid LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'there is no signing key' USING ERRCODE = '55000',
            HINT = 'Create one with SELECT auth.rotate_signing_key().';
    END IF;
    RETURN auth._jwt_encode(claims, k.kid, k.private_key);
END
$$;

-- The claims of a token whose header, signature (by an unretired key) and
-- exp/nbf/iat/iss/aud are valid; 28000 naming the reason.  Says nothing of
-- the session: auth.verify_token does.
CREATE FUNCTION auth._verify_jwt(token text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kid text := auth._jwt_kid(token);
    k     auth.signing_keys;
BEGIN
    IF auth._jwt_algorithm() = 'HS256' THEN
        RETURN auth._jwt_verify(token, NULL);
    END IF;
    SELECT * INTO k FROM auth.signing_keys s WHERE s.kid = v_kid;
    IF NOT FOUND THEN
        PERFORM auth._refuse('invalid token: unknown signing key');
    ELSIF k.retired_at IS NOT NULL THEN
        PERFORM auth._refuse('invalid token: signing key retired');
    END IF;
    RETURN auth._jwt_verify(token, k.public_key);
END
$$;

-- An access token (typ access, sub = user id) or device token (typ device,
-- sub = device id) for a session.
CREATE FUNCTION auth._access_token(sub text, sid uuid, typ text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_s bigint := floor(extract(epoch FROM clock_timestamp()))::bigint;
BEGIN
    RETURN auth._sign_jwt(jsonb_build_object(
        'iss', current_setting('isa.jwt_issuer'),
        'aud', current_setting('isa.jwt_audience'),
        'sub', sub,
        'sid', sid,
        'iat', now_s,
        'nbf', now_s,
        'exp', now_s + auth._lifetime('access'),
        'jti', gen_random_uuid(),
        'typ', typ));
END
$$;

-- A new refresh token of a session: 32 random bytes, base64url; only its
-- SHA-256 is stored.
CREATE FUNCTION auth._issue_refresh_token(sid uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token   text := isa.base64url_encode(isa.random_bytes(32));
    expires timestamptz := now() + make_interval(secs => auth._lifetime('refresh'));
BEGIN
    INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
    VALUES (sha256(convert_to(token, 'UTF8')), sid, expires);
    UPDATE auth.sessions s SET expires_at = expires WHERE s.session_id = sid;
    RETURN token;
END
$$;

-- Ends every active session of a user but `keep`; one user.logged_out per session.
CREATE FUNCTION auth._revoke_user_sessions(uid uuid, reason text, keep uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    WITH r AS (
        UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = reason
         WHERE s.user_id = uid AND s.revoked_at IS NULL AND s.session_id IS DISTINCT FROM keep
        RETURNING s.session_id, s.user_id)
    SELECT count(isa.publish_event('user.logged_out', 'auth_service',
                 jsonb_build_object('user_id', r.user_id, 'session_id', r.session_id, 'reason', reason)))
      INTO n FROM r;
    RETURN n;
END
$$;

-- Ends one session if it is active; true if it did.  A device session
-- without an owner ends without an event (user.logged_out names a user).
CREATE FUNCTION auth._revoke_session(sid uuid, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid;
BEGIN
    UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = reason
     WHERE s.session_id = sid AND s.revoked_at IS NULL
    RETURNING s.user_id INTO uid;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF uid IS NOT NULL THEN
        PERFORM isa.publish_event('user.logged_out', 'auth_service',
            jsonb_build_object('user_id', uid, 'session_id', sid, 'reason', reason));
    END IF;
    RETURN true;
END
$$;

-- Writes the revocations that refresh-token reuse flagged in shared memory
-- (auth.refresh raises, so it cannot write them itself).  The flags go when
-- this transaction commits.  Called by login, refresh, logout and
-- auth.housekeeping(); a read-only transaction leaves them for later.
CREATE FUNCTION auth._persist_flagged_sessions() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids uuid[] := auth._flagged_sessions();
    n   integer;
BEGIN
    IF ids IS NULL OR current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    WITH r AS (
        UPDATE auth.sessions s SET revoked_at = now(), revoke_reason = 'refresh_reuse'
         WHERE s.session_id = ANY (ids) AND s.revoked_at IS NULL
        RETURNING s.session_id, s.user_id)
    SELECT count(isa.publish_event('user.logged_out', 'auth_service',
                 jsonb_build_object('user_id', r.user_id, 'session_id', r.session_id, 'reason', 'refresh_reuse')))
      INTO n FROM r;
    -- now revoked (pending this commit), revoked before, or gone: all done
    PERFORM auth._unflag_at_commit(ids);
    RETURN n;
END
$$;

-- The login throttle around a password check (docs/services/auth.md, "The
-- login throttle"): counts this attempt against key until auth._throttle_reset
-- clears it, and raises 28P01 while key is locked.  what names the refused
-- operation when there is no shared memory (55000).  Login keys by the
-- lower-cased email; a password change by 'USER:' || user_id, which a login
-- cannot reach (lower() leaves no capital), so neither locks the other.
CREATE FUNCTION auth._throttle_or_raise(key text, what text, locked_message text, hint text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wait integer;
BEGIN
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION '% is unavailable: isa is not in shared_preload_libraries', what USING ERRCODE = '55000',
            HINT = 'The login throttle lives in shared memory: add isa to shared_preload_libraries and restart PostgreSQL.';
    END IF;
    wait := auth._throttle_attempt(key);
    IF wait > 0 THEN
        RAISE EXCEPTION '%: try again in % seconds', locked_message, wait
            USING ERRCODE = '28P01',
            DETAIL = format('Locked until %s.', to_char((clock_timestamp() + make_interval(secs => wait)) AT TIME ZONE 'UTC',
                                                        'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            HINT = hint;
    END IF;
END
$$;

-- ---------------------------------------------------------------- API: passwords and login
CREATE FUNCTION auth.set_password(user_id uuid, password text, keep_session uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM isa.not_null('user_id, password', user_id, password);
    IF length(password) NOT BETWEEN 8 AND 1024 THEN
        RAISE EXCEPTION 'a password has 8 to 1024 characters, not %', length(password) USING ERRCODE = '22023';
    END IF;
    PERFORM account.require_user(user_id);
    INSERT INTO auth.passwords AS p (user_id, hash)
    VALUES (set_password.user_id, auth._hash_password(password))
    ON CONFLICT ON CONSTRAINT passwords_pkey
    DO UPDATE SET hash = excluded.hash, updated_at = now();
    -- whoever knew the old password must not stay logged in with it
    PERFORM auth._revoke_user_sessions(set_password.user_id, 'password_changed', keep_session);
END
$$;
COMMENT ON FUNCTION auth.set_password(uuid, text, uuid) IS
    'Sets (or replaces) a user''s password, hashed with argon2id, and ends the user''s sessions except keep_session (user.logged_out reason password_changed). 22023 unless 8 to 1024 characters, P0002 unknown or deleted user.';

-- Sign-up over HTTP: the account (account.create_user) and its password in
-- one transaction, so that a new user can log in.  A retry with the same
-- idempotency key and arguments (the password too) returns the first call's
-- user and changes nothing.  Comparing the password of a retry is a password
-- check, so it goes through the login throttle of the user's email (a retry
-- would otherwise be a guess that no throttle counts), and a wrong one is
-- refused with account.create_user's own conflict: the answer does not say
-- which argument differed.
CREATE FUNCTION auth.sign_up(email text, name text, password text, idempotency_key text DEFAULT NULL)
RETURNS account.user_profile
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    profile account.user_profile;
    pw_hash text;
    key     text;
BEGIN
    PERFORM isa.not_null('password', password);
    profile := account.create_user(email, name, idempotency_key);
    SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = profile.user_id;
    IF NOT FOUND THEN
        PERFORM auth.set_password(profile.user_id, password);
        RETURN profile;
    END IF;
    key := lower(profile.email);
    PERFORM auth._throttle_or_raise(key, 'sign-up', 'too many failed logins for this email',
                                    'Wait, or ask an administrator to run auth.reset_login_throttle(email).');
    IF octet_length(password) > 4096 OR NOT auth._verify_password(pw_hash, password) THEN
        RAISE EXCEPTION 'idempotency key "%" was already used to create another user', idempotency_key
            USING ERRCODE = '23505', HINT = 'Use a new idempotency key for a new user.';
    END IF;
    PERFORM auth._throttle_reset(key);
    RETURN profile;
END
$$;
COMMENT ON FUNCTION auth.sign_up(text, text, text, text) IS
    'Creates a user (account.create_user, user.created) with a password (auth.set_password) in one transaction. The same idempotency key with the same arguments returns the first call''s user (its password is checked through the login throttle of the email: 28P01 when locked); 23505 email taken or key used with other arguments (the same message whichever differs), 22023 malformed email, name or password.';

-- A user's own password change: the current password proves it is the user,
-- not someone holding a stolen access token.  Its guesses are throttled like
-- logins, under the user's id rather than the email: a stolen token cannot
-- reset the count by changing the email, nor lock the user's login, and
-- knowing the email alone cannot lock a password change.
CREATE FUNCTION auth.change_password(user_id uuid, current_password text, new_password text,
                                     keep_session uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pw_hash text;
    key     text := 'USER:' || change_password.user_id;
BEGIN
    PERFORM isa.not_null('user_id, current_password, new_password',
                         user_id, current_password, new_password);
    PERFORM account.require_user(user_id);
    PERFORM auth._throttle_or_raise(key, 'password change', 'too many wrong passwords for this user',
                                    'Wait, or ask an administrator to run auth.reset_login_throttle(email).');
    SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = change_password.user_id;
    -- no password yet: a dummy verification costs the same time
    IF octet_length(current_password) > 4096 OR NOT auth._verify_password(pw_hash, current_password) THEN
        RAISE EXCEPTION 'the current password is wrong' USING ERRCODE = '28000';
    END IF;
    PERFORM auth._throttle_reset(key);
    PERFORM auth.set_password(user_id, new_password, keep_session);
END
$$;
COMMENT ON FUNCTION auth.change_password(uuid, text, text, uuid) IS
    'Changes a user''s password after checking the current one (throttled like login, per user: 28P01 after isa.login_max_failures wrong ones), then ends the user''s sessions except keep_session (auth.set_password). 28000 wrong current password, 22023 new password not 8 to 1024 characters, P0002 unknown or deleted user, 55000 isa not preloaded.';

CREATE FUNCTION auth.login(email text, password text) RETURNS auth.tokens
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    norm    text;
    profile account.user_profile;
    pw_hash text;
    result  auth.tokens;
BEGIN
    PERFORM isa.not_null('email, password', email, password);
    norm := lower(btrim(email, E' \t\r\n'));
    -- counts this attempt until a success resets it
    PERFORM auth._throttle_or_raise(norm, 'login', 'too many failed logins for this email',
                                    'Wait, or ask an administrator to run auth.reset_login_throttle(email).');

    IF octet_length(password) <= 4096 THEN
        BEGIN
            profile := account.find_user_by_email(email);
        EXCEPTION WHEN no_data_found OR invalid_parameter_value THEN
            profile := NULL;
        END;
        IF profile.user_id IS NOT NULL THEN
            SELECT p.hash INTO pw_hash FROM auth.passwords p WHERE p.user_id = profile.user_id;
        END IF;
        -- unknown email or no password: a dummy verification costs the same time
        IF auth._verify_password(pw_hash, password) THEN
            result.user_id := profile.user_id;
        END IF;
    END IF;
    IF result.user_id IS NULL THEN
        RAISE EXCEPTION 'invalid email or password' USING ERRCODE = '28000';
    END IF;

    PERFORM auth._throttle_reset(norm);
    IF auth._password_needs_rehash(pw_hash) THEN
        UPDATE auth.passwords p SET hash = auth._hash_password(password), updated_at = now()
         WHERE p.user_id = result.user_id;
    END IF;

    INSERT INTO auth.sessions (kind, user_id, expires_at)
    VALUES ('user', result.user_id, now())
    RETURNING session_id INTO result.session_id;
    result.refresh_token := auth._issue_refresh_token(result.session_id);
    result.access_token := auth._access_token(result.user_id::text, result.session_id, 'access');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    PERFORM isa.publish_event('user.logged_in', 'auth_service',
        jsonb_build_object('user_id', result.user_id, 'session_id', result.session_id, 'method', 'password'));
    PERFORM auth._persist_flagged_sessions();
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.login(text, text) IS
    'Email + password -> access token, refresh token and a new session; publishes user.logged_in. 28000 invalid email or password (the same for both), 28P01 throttled, 55000 isa not preloaded.';

CREATE FUNCTION auth.refresh(refresh_token text) RETURNS auth.tokens
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t      auth.refresh_tokens;
    s      auth.sessions;
    result auth.tokens;
BEGIN
    PERFORM isa.not_null('refresh_token', refresh_token);
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION 'refresh is unavailable: isa is not in shared_preload_libraries' USING ERRCODE = '55000',
            HINT = 'Refresh-token reuse is recorded in shared memory: add isa to shared_preload_libraries and restart PostgreSQL.';
    END IF;
    IF refresh_token !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;

    -- The row lock serialises two refreshes with one token: the second sees it used.
    SELECT * INTO t FROM auth.refresh_tokens r
     WHERE r.token_hash = sha256(convert_to(refresh_token, 'UTF8')) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.session_id = t.session_id;
    IF s.revoked_at IS NOT NULL OR auth._session_flagged(s.session_id) THEN
        RAISE EXCEPTION 'invalid refresh token: the session was revoked' USING ERRCODE = '28000';
    END IF;
    IF t.used_at IS NOT NULL THEN
        -- Reuse of a rotated token: someone else holds the family.  The error
        -- below rolls back what this call writes, so the revocation goes to
        -- shared memory; the next committing auth call writes it.
        IF NOT auth._flag_session(s.session_id) THEN
            RAISE WARNING 'auth: the table of sessions revoked for refresh-token reuse is full; session % is not revoked',
                s.session_id;
        END IF;
        RAISE EXCEPTION 'invalid refresh token: reuse detected, the session is revoked' USING ERRCODE = '28000',
            HINT = 'Log in again.';
    END IF;
    IF t.expires_at <= now() THEN
        RAISE EXCEPTION 'invalid refresh token: expired' USING ERRCODE = '28000';
    END IF;
    IF NOT account.user_exists(s.user_id) THEN
        RAISE EXCEPTION 'invalid refresh token: the user no longer exists' USING ERRCODE = '28000';
    END IF;

    UPDATE auth.refresh_tokens r SET used_at = now() WHERE r.token_hash = t.token_hash;
    result.refresh_token := auth._issue_refresh_token(s.session_id);
    result.access_token := auth._access_token(s.user_id::text, s.session_id, 'access');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    result.user_id := s.user_id;
    result.session_id := s.session_id;
    PERFORM auth._persist_flagged_sessions();
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.refresh(text) IS
    'Rotates a refresh token: marks it used, returns a new access token and refresh token of the same session. 28000 unknown, expired, revoked or reused token (reuse revokes the session and publishes user.logged_out reason refresh_reuse).';

CREATE FUNCTION auth.logout(refresh_token text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid uuid;
    done boolean;
BEGIN
    PERFORM isa.not_null('refresh_token', refresh_token);
    SELECT r.session_id INTO sid FROM auth.refresh_tokens r
     WHERE r.token_hash = sha256(convert_to(refresh_token, 'UTF8'));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = '28000';
    END IF;
    done := auth._revoke_session(sid, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN done;
END
$$;
COMMENT ON FUNCTION auth.logout(text) IS
    'Ends the session of a refresh token (any token of the session); publishes user.logged_out reason logout. true if it ended the session, false if it had ended already. 28000 unknown token.';

CREATE FUNCTION auth.logout(session_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean;
BEGIN
    PERFORM isa.not_null('session_id', session_id);
    IF NOT EXISTS (SELECT 1 FROM auth.sessions s WHERE s.session_id = logout.session_id) THEN
        RAISE EXCEPTION 'session % not found', session_id USING ERRCODE = 'P0002';
    END IF;
    done := auth._revoke_session(session_id, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN done;
END
$$;
COMMENT ON FUNCTION auth.logout(uuid) IS
    'Ends a session (the sid claim of its tokens); publishes user.logged_out reason logout. true if it ended the session, false if it had ended already. P0002 unknown session.';

CREATE FUNCTION auth.logout_all(user_id uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM account.require_user(user_id);
    n := auth._revoke_user_sessions(user_id, 'logout');
    PERFORM auth._persist_flagged_sessions();
    RETURN n;
END
$$;
COMMENT ON FUNCTION auth.logout_all(uuid) IS
    'Ends every active session of a user (log out everywhere); one user.logged_out reason logout per session. Returns how many. P0002 unknown or deleted user.';

-- The live sessions, as a token sees them: not revoked (nor flagged in shared
-- memory), their user still active (read from account.users directly), with
-- the subject and token type a token of theirs carries.  The one statement of
-- the rule: auth._session_live and isa.http_begin (every HTTP request, where
-- a view is planned into its query and a function call would not be) read it.
CREATE VIEW auth.live_sessions AS
SELECT s.session_id,
       coalesce(s.device_id, s.user_id::text) AS subject,
       CASE s.kind WHEN 'user' THEN 'access' ELSE 'device' END AS token_type
  FROM auth.sessions s
 WHERE s.revoked_at IS NULL
   AND NOT auth._session_flagged(s.session_id)
   AND (s.kind <> 'user'
        OR EXISTS (SELECT FROM account.users u WHERE u.user_id = s.user_id AND u.status = 'active'));
COMMENT ON VIEW auth.live_sessions IS
    'Sessions a token may still use: not ended, user active; subject and token_type (access, device) are what the token must carry.';

-- Whether a session is live for a token's sid, sub and typ.  The signature
-- and times are checked by the caller (auth.verify_token, isa-httpd).
CREATE FUNCTION auth._session_live(sid uuid, sub text, typ text) RETURNS boolean
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    RETURN EXISTS (SELECT FROM auth.live_sessions l
                    WHERE l.session_id = sid AND l.subject = sub AND l.token_type = typ);

CREATE FUNCTION auth.session_is_live(claims jsonb) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid text := claims ->> 'sid';
BEGIN
    IF sid IS NULL OR sid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RETURN false;
    END IF;
    RETURN auth._session_live(sid::uuid, claims ->> 'sub', claims ->> 'typ');
END
$$;
COMMENT ON FUNCTION auth.session_is_live(jsonb) IS
    'Whether the session named by verified token claims (sid, sub, typ) is live: not ended, matching its subject, its user not deleted. Does not check the signature: auth.verify_token does.';

CREATE FUNCTION auth.verify_token(token text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims jsonb;
    sid    text;
    s      auth.sessions;
BEGIN
    PERFORM isa.not_null('token', token);
    claims := auth._verify_jwt(token);
    IF NOT coalesce(claims ->> 'typ' IN ('access', 'device'), false) THEN
        RAISE EXCEPTION 'invalid token: not an access or device token' USING ERRCODE = '28000';
    END IF;
    sid := claims ->> 'sid';
    IF sid IS NULL OR sid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE EXCEPTION 'invalid token: no session' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.session_id = sid::uuid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid token: unknown session' USING ERRCODE = '28000';
    END IF;
    IF s.revoked_at IS NOT NULL OR auth._session_flagged(s.session_id) THEN
        RAISE EXCEPTION 'invalid token: session revoked' USING ERRCODE = '28000';
    END IF;
    IF (claims ->> 'typ' = 'access') <> (s.kind = 'user')
       OR claims ->> 'sub' IS DISTINCT FROM coalesce(s.device_id, s.user_id::text) THEN
        RAISE EXCEPTION 'invalid token: subject does not match its session' USING ERRCODE = '28000';
    END IF;
    IF s.kind = 'user' AND NOT account.user_exists(s.user_id) THEN
        RAISE EXCEPTION 'invalid token: the user no longer exists' USING ERRCODE = '28000';
    END IF;
    RETURN claims;
END
$$;
COMMENT ON FUNCTION auth.verify_token(text) IS
    'The claims of a valid access or device token: signature with the configured algorithm and an unretired key, exp/nbf/iat with clock skew, iss, aud, and a live session. 28000 naming the reason otherwise.';

-- ---------------------------------------------------------------- API: signing keys
CREATE FUNCTION auth.rotate_signing_key() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kp    record;
    v_kid text;
BEGIN
    SELECT * INTO kp FROM auth._ed25519_keypair();
    -- RFC 7638 thumbprint: SHA-256 of the canonical JWK {crv, kty, x}
    v_kid := isa.base64url_encode(sha256(convert_to(
        format('{"crv":"Ed25519","kty":"OKP","x":"%s"}', isa.base64url_encode(kp.public_key)), 'UTF8')));
    INSERT INTO auth.signing_keys (kid, public_key, private_key) VALUES (v_kid, kp.public_key, kp.secret_key);
    RETURN v_kid;
END
$$;
COMMENT ON FUNCTION auth.rotate_signing_key() IS
    'Makes a new Ed25519 signing key (generated in the database) the current one and returns its kid; older unretired keys keep verifying.';

CREATE FUNCTION auth.retire_signing_key(kid text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k auth.signing_keys;
BEGIN
    PERFORM isa.not_null('kid', kid);
    SELECT * INTO k FROM auth.signing_keys s WHERE s.kid = retire_signing_key.kid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'signing key "%" not found', left(kid, 100) USING ERRCODE = 'P0002';
    END IF;
    IF k.retired_at IS NOT NULL THEN
        RETURN;                                        -- retired already
    END IF;
    IF NOT EXISTS (SELECT 1 FROM auth.signing_keys s
                    WHERE s.retired_at IS NULL AND (s.created_at, s.kid) > (k.created_at, k.kid)) THEN
        RAISE EXCEPTION 'signing key "%" is the current one', kid USING ERRCODE = '23514',
            HINT = 'Make a new key with auth.rotate_signing_key() first.';
    END IF;
    UPDATE auth.signing_keys s SET retired_at = now() WHERE s.kid = k.kid;
END
$$;
COMMENT ON FUNCTION auth.retire_signing_key(text) IS
    'Retires a signing key: tokens signed with it are refused from now on. P0002 unknown kid, 23514 the current key; retiring a retired key does nothing.';

CREATE FUNCTION auth.jwks() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF auth._jwt_algorithm() <> 'EdDSA' THEN
        RETURN '{"keys": []}';
    END IF;
    RETURN jsonb_build_object('keys', coalesce(
        (SELECT jsonb_agg(jsonb_build_object('kty', 'OKP', 'crv', 'Ed25519', 'alg', 'EdDSA', 'use', 'sig',
                                             'kid', s.kid, 'x', isa.base64url_encode(s.public_key))
                          ORDER BY s.created_at DESC, s.kid DESC)
           FROM auth.signing_keys s WHERE s.retired_at IS NULL), '[]'));
END
$$;
COMMENT ON FUNCTION auth.jwks() IS
    'The public keys that verify tokens, as a JSON Web Key Set (RFC 7517), newest first; empty with HS256.';

-- ---------------------------------------------------------------- API: devices
CREATE FUNCTION auth.register_device(device_id text, public_key bytea, user_id uuid DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d auth.devices;
BEGIN
    PERFORM isa.not_null('device_id, public_key', device_id, public_key);
    IF device_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid device id "%"', left(device_id, 140) USING ERRCODE = '22023',
            HINT = 'A device id is 1 to 128 characters of A-Z a-z 0-9 . _ : -';
    END IF;
    IF length(public_key) <> 32 THEN
        RAISE EXCEPTION 'an Ed25519 public key has 32 bytes, not %', length(public_key) USING ERRCODE = '22023';
    END IF;
    IF user_id IS NOT NULL THEN
        PERFORM account.require_user(user_id);
    END IF;
    INSERT INTO auth.devices AS x (device_id, public_key, user_id)
    VALUES (register_device.device_id, register_device.public_key, register_device.user_id)
    ON CONFLICT ON CONSTRAINT devices_pkey DO NOTHING;
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT * INTO d FROM auth.devices x WHERE x.device_id = register_device.device_id;
    IF d.public_key <> public_key OR d.user_id IS DISTINCT FROM user_id THEN
        RAISE EXCEPTION 'device "%" is already registered with another key or owner', device_id
            USING ERRCODE = '23505';
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION auth.register_device(text, bytea, uuid) IS
    'Registers a device''s Ed25519 public key (32 bytes), optionally with its owner. true if new, false if registered already with the same key and owner; 23505 with another; 22023 bad id or key; P0002 unknown owner.';

-- A device taken out of service (the device service's decommission): its key
-- goes (no new challenge can be answered; its open ones go with it) and its
-- live sessions end (reason logout), so its device tokens are refused at once.
CREATE FUNCTION auth.unregister_device(device_id text) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid uuid;
    n   integer := 0;
BEGIN
    PERFORM isa.not_null('device_id', device_id);
    DELETE FROM auth.devices x WHERE x.device_id = unregister_device.device_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device "%" is not registered', left(device_id, 140) USING ERRCODE = 'P0002';
    END IF;
    FOR sid IN SELECT s.session_id FROM auth.sessions s
                WHERE s.kind = 'device' AND s.device_id = unregister_device.device_id AND s.revoked_at IS NULL LOOP
        IF auth._revoke_session(sid, 'logout') THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION auth.unregister_device(text) IS
    'Forgets a device''s key (it can no longer authenticate) and ends its live sessions (its device tokens are refused from now on); returns how many sessions ended. P0002 unknown device.';

CREATE FUNCTION auth.device_challenge(device_id text) RETURNS auth.challenge
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result auth.challenge;
BEGIN
    PERFORM isa.not_null('device_id', device_id);
    IF device_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid device id "%"', left(device_id, 140) USING ERRCODE = '22023',
            HINT = 'A device id is 1 to 128 characters of A-Z a-z 0-9 . _ : -';
    END IF;
    result.nonce := isa.base64url_encode(isa.random_bytes(32));
    result.expires_at := clock_timestamp() + interval '60 seconds';
    -- An unknown device gets a nonce too (stored nowhere): the answer does
    -- not tell which devices exist.  A device keeps at most 5 open challenges.
    IF EXISTS (SELECT 1 FROM auth.devices d WHERE d.device_id = device_challenge.device_id) THEN
        DELETE FROM auth.device_challenges c
         WHERE c.device_id = device_challenge.device_id
           AND (c.expires_at <= now()
                OR c.nonce NOT IN (SELECT c2.nonce FROM auth.device_challenges c2
                                    WHERE c2.device_id = device_challenge.device_id
                                    ORDER BY c2.created_at DESC LIMIT 4));
        INSERT INTO auth.device_challenges (nonce, device_id, expires_at)
        VALUES (result.nonce, device_id, result.expires_at);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.device_challenge(text) IS
    'A random nonce (base64url text) for a device to sign with its key, valid 60 seconds. 22023 malformed device id.';

CREATE FUNCTION auth.device_authenticate(device_id text, nonce text, signature bytea) RETURNS auth.device_token
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      auth.devices;
    c      auth.device_challenges;
    ok     boolean;
    result auth.device_token;
BEGIN
    PERFORM isa.not_null('device_id, nonce, signature', device_id, nonce, signature);
    SELECT * INTO d FROM auth.devices x WHERE x.device_id = device_authenticate.device_id;
    SELECT * INTO c FROM auth.device_challenges x
     WHERE x.nonce = device_authenticate.nonce AND x.device_id = device_authenticate.device_id
       AND x.expires_at > clock_timestamp()
       FOR UPDATE;
    -- Verify even when the device or challenge is unknown (against a key that
    -- matches nothing), so that every failure takes the same time.
    ok := auth._ed25519_verify(coalesce(d.public_key, '\xfad2ebde3c007760e42fa3868d6deecf43e81fcdc96c2a5eb761851fdbcdbc59'::bytea),
                               convert_to(nonce, 'UTF8'), signature);
    IF NOT ok OR d.device_id IS NULL OR c.nonce IS NULL THEN
        RAISE EXCEPTION 'device authentication failed' USING ERRCODE = '28000';
    END IF;
    DELETE FROM auth.device_challenges x WHERE x.nonce = c.nonce;   -- single use
    UPDATE auth.devices x SET last_authenticated_at = now() WHERE x.device_id = d.device_id;

    INSERT INTO auth.sessions (kind, user_id, device_id, expires_at)
    VALUES ('device', d.user_id, d.device_id, now() + make_interval(secs => auth._lifetime('access')))
    RETURNING session_id INTO result.session_id;
    result.access_token := auth._access_token(d.device_id, result.session_id, 'device');
    result.token_type := 'Bearer';
    result.expires_in := auth._lifetime('access');
    result.device_id := d.device_id;
    PERFORM isa.publish_event('device.authenticated', 'auth_service',
        jsonb_build_object('device_id', d.device_id, 'session_id', result.session_id, 'user_id', d.user_id));
    RETURN result;
END
$$;
COMMENT ON FUNCTION auth.device_authenticate(text, text, bytea) IS
    'A device token for a device that signed (Ed25519) an open challenge nonce of its own; the nonce is consumed; publishes device.authenticated. 28000 device authentication failed (unknown device, unknown or expired nonce, bad signature: one message).';

-- ---------------------------------------------------------------- administration
CREATE FUNCTION auth.reset_login_throttle(email text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    norm text;
    had  boolean;
    uid  uuid;
BEGIN
    PERFORM isa.not_null('email', email);
    IF NOT auth._shmem_available() THEN
        RAISE EXCEPTION 'there is no login throttle: isa is not in shared_preload_libraries' USING ERRCODE = '55000';
    END IF;
    norm := lower(btrim(email, E' \t\r\n'));
    had := auth._throttle_reset(norm);
    -- the password changes of the user who has this email too (auth.change_password),
    -- asked of account (its table is not auth's to read)
    BEGIN
        uid := (account.find_user_by_email(norm)).user_id;
        had := auth._throttle_reset('USER:' || uid) OR had;
    EXCEPTION WHEN no_data_found THEN
        NULL;                      -- no active user has this email
    END;
    RETURN had;
END
$$;
COMMENT ON FUNCTION auth.reset_login_throttle(text) IS
    'Forgets the failed logins of an email, and the wrong passwords of its user''s password changes, and unlocks them; true if it had any.';

CREATE FUNCTION auth.housekeeping() RETURNS TABLE (action text, n bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bigint;
BEGIN
    action := 'sessions revoked for refresh-token reuse';
    n := auth._persist_flagged_sessions();
    RETURN NEXT;

    DELETE FROM auth.device_challenges c WHERE c.expires_at <= now();
    GET DIAGNOSTICS k = ROW_COUNT;
    action := 'expired device challenges deleted'; n := k;
    RETURN NEXT;

    -- An expired session can do nothing any more; a day of grace keeps it
    -- visible a little while.  Its refresh tokens go with it (cascade).
    DELETE FROM auth.sessions s WHERE s.expires_at < now() - interval '1 day';
    GET DIAGNOSTICS k = ROW_COUNT;
    action := 'expired sessions deleted'; n := k;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION auth.housekeeping() IS
    'Writes pending refresh-reuse revocations, deletes expired device challenges and sessions expired for over a day. pg_cron runs it every minute (isa-auth-housekeeping).';

INSERT INTO isa.scheduled_jobs (jobname, schedule, command, description)
VALUES ('isa-auth-housekeeping', '* * * * *', 'SELECT auth.housekeeping()',
        'Every minute: write pending refresh-reuse revocations, delete expired device challenges and sessions.')
ON CONFLICT (jobname) DO NOTHING;

-- ---------------------------------------------------------------- handlers
CREATE FUNCTION auth.on_user_deleted(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'auth.on_user_deleted: event % has no valid user_id; ignored', e.id;
        RETURN;
    END IF;
    DELETE FROM auth.passwords p WHERE p.user_id = uid::uuid;
    PERFORM auth._revoke_user_sessions(uid::uuid, 'user_deleted');
END
$$;
COMMENT ON FUNCTION auth.on_user_deleted(isa.event) IS
    'account_service.user.deleted: drops the user''s password and ends the user''s sessions (user.logged_out reason user_deleted per session).';

CREATE FUNCTION auth.on_permission_revoked(e isa.event) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid text := e.data ->> 'user_id';
BEGIN
    IF uid IS NULL OR uid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        RAISE WARNING 'auth.on_permission_revoked: event % has no valid user_id; ignored', e.id;
        RETURN;
    END IF;
    -- A permission lost inside one organization (a member removed, a role
    -- changed) is checked live by authz.check on every call: ending the
    -- user's sessions everywhere for it would log out a member who was
    -- merely promoted.
    IF nullif(e.data ->> 'org_id', '') IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM auth._revoke_user_sessions(uid::uuid, 'permission_revoked');
END
$$;
COMMENT ON FUNCTION auth.on_permission_revoked(isa.event) IS
    'authorization_service.permission.revoked: ends the user''s sessions (force logout; user.logged_out reason permission_revoked per session), so new tokens carry the new permissions; a revocation inside one organization (org_id set) ends none.';

SELECT isa.subscribe_to_events('auth', 'account_service.user.deleted',
                               'auth.on_user_deleted(isa.event)'::regprocedure);
SELECT isa.subscribe_to_events('auth', 'authorization_service.permission.revoked',
                               'auth.on_permission_revoked(isa.event)'::regprocedure);

-- The first signing key, made in the database.
SELECT auth.rotate_signing_key();

-- ---------------------------------------------------------------- privileges
-- (sql/core/grants.sql, loaded last, marks every table for pg_dump.)
REVOKE ALL ON ALL TABLES IN SCHEMA auth FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA auth FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    auth.sign_up(text, text, text, text),
    auth.change_password(uuid, text, text, uuid),
    auth.login(text, text),
    auth.refresh(text),
    auth.logout(text),
    auth.logout_all(uuid),
    auth.verify_token(text),
    auth.session_is_live(jsonb),
    auth.jwks(),
    auth.device_challenge(text),
    auth.device_authenticate(text, text, bytea)
TO isa_app_auth;
-- Setting a password without the old one, ending anyone's session by id and
-- registering a device are administration: isa_app_admin.
GRANT EXECUTE ON FUNCTION
    auth.set_password(uuid, text, uuid),
    auth.logout(uuid),
    auth.register_device(text, bytea, uuid),
    auth.unregister_device(text)
TO isa_app_admin;
-- What auth's own code calls of other services, as isa_svc_auth.
GRANT EXECUTE ON FUNCTION
    account.create_user(text, text, text), account.find_user_by_email(text),
    account.require_user(uuid), account.user_exists(uuid)
TO isa_svc_auth;
-- auth.live_sessions reads whether a session's user is active from
-- account.users directly (isa.http_begin plans it into every request's
-- query): those two columns, nothing else of the table.
GRANT SELECT (user_id, status) ON account.users TO isa_svc_auth;
GRANT EXECUTE ON FUNCTION
    auth.rotate_signing_key(),
    auth.retire_signing_key(text),
    auth.reset_login_throttle(text),
    auth.housekeeping(),
    auth.jwks()
TO isa_admin;
-- isa_admin may look at sessions and devices and at the public half of the
-- signing keys; private_key is readable by the owner only (sql/core/grants.sql's
-- GRANT ALL ON ALL TABLES IN SCHEMA auth TO isa_admin must leave it out).
GRANT SELECT ON auth.sessions, auth.devices TO isa_admin;
GRANT SELECT (kid, algorithm, public_key, created_at, retired_at) ON auth.signing_keys TO isa_admin;

-- ---------------------------------------------------------------- HTTP routes (isa-httpd, docs/http.md)
-- Sign-up, login, refresh and the device handshake are public and limited per
-- client address; a refresh token is its own proof for logout.  Setting
-- another user's password, ending a session by id and registering a device
-- are for administrators (isa:admin).
SELECT isa.http_route('POST', '/v1/auth/signup', 'auth.sign_up(text, text, text, text)', 'public',
    'Creates an account with its password (sign-up).', status => 201, rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/login', 'auth.login(text, text)', 'public',
    'Email and password to an access token, a refresh token and a new session.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/refresh', 'auth.refresh(text)', 'public',
    'Rotates a refresh token: a new access token and refresh token of the same session.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/auth/logout', 'auth.logout(text)', 'public',
    'Ends the session of a refresh token: true if it ended it, false if it had ended already.');
SELECT isa.http_route('POST', '/v1/auth/verify', 'auth.verify_token(text)', 'public',
    'The claims of a valid access or device token with a live session; 401 otherwise.');
SELECT isa.http_route('GET', '/v1/auth/jwks', 'auth.jwks()', 'public',
    'The public keys that verify tokens (JSON Web Key Set).');
SELECT isa.http_route('PUT', '/v1/auth/password', 'auth.change_password(uuid, text, text, uuid)', 'user',
    'Changes the caller''s password (the current one must be given) and ends the other sessions but keep_session.',
    subject_param => 'user_id', rate_limited => true);
SELECT isa.http_route('PUT', '/v1/auth/users/{user_id}/password', 'auth.set_password(uuid, text, uuid)', 'admin',
    'Sets a user''s password and ends the user''s sessions but keep_session.');
SELECT isa.http_route('POST', '/v1/auth/users/{user_id}/logout-all', 'auth.logout_all(uuid)', 'user',
    'Ends every session of a user (log out everywhere); returns how many.',
    permission => 'auth:write', resource_param => 'user_id', self_param => 'user_id');
SELECT isa.http_route('DELETE', '/v1/auth/sessions/{session_id}', 'auth.logout(uuid)', 'admin',
    'Ends a session by its id (the sid claim): true if it ended it.');
SELECT isa.http_route('PUT', '/v1/devices/{device_id}', 'auth.register_device(text, bytea, uuid)', 'admin',
    'Registers a device''s Ed25519 public key, optionally with its owner: true if new, false if registered already.');
SELECT isa.http_route('POST', '/v1/devices/{device_id}/challenge', 'auth.device_challenge(text)', 'public',
    'A nonce for the device to sign with its key, valid 60 seconds.', rate_limited => true);
SELECT isa.http_route('POST', '/v1/devices/{device_id}/token', 'auth.device_authenticate(text, text, bytea)', 'public',
    'A device token for a device that signed an open challenge nonce.', rate_limited => true);
