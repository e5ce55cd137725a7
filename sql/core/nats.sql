-- nats.sql — minting NATS credentials (extension/nats.c over nats_jwt.c, the
-- code tools/isa-nats-keys runs too): nkeys and user JWTs for nats-server's
-- operator/JWT mode.  The device service mints each device's credential with
-- isa.nats_scoped_user_credentials (a scoped signing key).  A seed signs credentials: only superusers and
-- isa_admin may call these (sql/core/grants.sql grants nothing else).  Docs:
-- docs/core.md, "NATS credentials"; docs/bridge.md, "Securing NATS".

CREATE FUNCTION isa.nats_nkey_create(kind text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_nats_nkey_create' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION isa.nats_nkey_create(text) IS
    'A new NATS nkey seed of kind operator (SO…), account (SA…) or user (SU…).';

CREATE FUNCTION isa.nats_nkey_public(seed text) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_nats_nkey_public' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION isa.nats_nkey_public(text) IS
    'The public nkey (O…, A…, U…) of a seed; 22023 for anything but a valid seed.';

CREATE FUNCTION isa.nats_user_credentials(
        signing_seed text, name text, publish text[], subscribe text[],
        account text DEFAULT NULL, expires_at timestamptz DEFAULT NULL,
        OUT public_key text, OUT jwt text, OUT creds text)
    AS 'MODULE_PATHNAME', 'isa_nats_user_credentials' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.nats_user_credentials(text, text, text[], text[], text, timestamptz) IS
    'A new NATS user allowed to publish and subscribe to the subjects given: its public key, its JWT '
    'signed by signing_seed (the account''s seed, or a signing key of account) and its creds file.';

CREATE FUNCTION isa.nats_scoped_user_credentials(
        signing_seed text, name text, account text, expires_at timestamptz DEFAULT NULL,
        OUT public_key text, OUT jwt text, OUT creds text)
    AS 'MODULE_PATHNAME', 'isa_nats_scoped_user_credentials' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION isa.nats_scoped_user_credentials(text, text, text, timestamptz) IS
    'A new NATS user signed by a scoped signing key (signing_seed) of account: no permissions of its own, '
    'the server gives it the scope''s template, {{name()}} standing for name (the device service: its '
    'device id); its public key, JWT and creds file.';

CREATE FUNCTION isa.nats_jwt_claims(jwt text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'isa_nats_jwt_claims' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION isa.nats_jwt_claims(text) IS
    'The claims of a NATS JWT whose signature verifies against its issuer (iss); 22023 otherwise.';
