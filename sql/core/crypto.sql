-- crypto.sql — the cryptographic primitives services build on
-- (extension/crypto.c, libsodium).  SHA-256 itself is PostgreSQL's sha256().

CREATE FUNCTION isa.hmac_sha256(key bytea, message bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_hmac_sha256' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.hmac_sha256(bytea, bytea) IS
    'HMAC-SHA256 of message under key (32 bytes).';

CREATE FUNCTION isa.secure_equals(a bytea, b bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'isa_secure_equals' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.secure_equals(bytea, bytea) IS
    'Whether a = b, in time that depends only on the length (for comparing MACs and token hashes).';

CREATE FUNCTION isa.random_bytes(n int) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_random_bytes' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.random_bytes(int) IS
    'n (1..1024) bytes from the operating system''s cryptographic random generator.';

CREATE FUNCTION isa.base64url_encode(data bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'isa_base64url_encode' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.base64url_encode(bytea) IS
    'base64url (RFC 4648 §5) without padding, as in JWTs.';

CREATE FUNCTION isa.base64url_decode(data text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'isa_base64url_decode' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION isa.base64url_decode(text) IS
    'The bytes of base64url text without padding; 22023 on anything else.';
