/*
 * crypto.c — the cryptographic primitives the services share (libsodium):
 * HMAC-SHA256, constant-time comparison, random bytes and base64url.
 * Services build on these in SQL, and C on the isa_*_buf and isa_b64url_*
 * functions (isa.h) the SQL functions wrap; nothing here knows a service.
 */
#include "postgres.h"

#include <limits.h>
#include <sodium.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "isa.h"

/* libsodium must be initialised once per process before use; idempotent. */
void
isa_crypto_init(void)
{
	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("libsodium could not be initialised")));
}

/*
 * The C functions below expect isa_crypto_init() to have run (_PG_init runs
 * it; the SQL functions run it again, which costs nothing).
 */

/* HMAC-SHA256 of msg with key into out (crypto_auth_hmacsha256_BYTES, 32 bytes). */
void
isa_hmac_sha256_buf(unsigned char *out, const unsigned char *key, size_t keylen,
					const unsigned char *msg, size_t len)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, keylen);
	crypto_auth_hmacsha256_update(&st, msg, len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

/*
 * Whether a and b hold the same bytes, compared in time that depends only on
 * the length.  Different lengths are unequal at once (the values compared are
 * digests of a fixed length).
 */
bool
isa_secure_equals_buf(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && sodium_memcmp(a, b, alen) == 0;
}

/* base64url (RFC 4648 §5) of len bytes of data, without padding (as in JWTs); palloc'd */
char *
isa_b64url_encode(const unsigned char *data, size_t len)
{
	size_t		cap = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char	   *out = palloc(cap);

	sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

/*
 * Decodes len bytes of strict base64url (no padding, no whitespace, URL-safe
 * alphabet only) into *out, palloc'd and NUL-terminated after its *outlen
 * bytes; false on anything else, and on empty input (an empty JWT segment is
 * malformed).
 */
bool
isa_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	size_t		cap = len / 4 * 3 + 3;
	const char *end = NULL;

	*out = palloc(cap + 1);
	if (len == 0 ||
		sodium_base642bin(*out, cap, in, len, NULL, outlen, &end,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		end != in + len)
		return false;
	(*out)[*outlen] = '\0';
	return true;
}

/* isa.hmac_sha256(key bytea, message bytea) RETURNS bytea (32 bytes) */
PG_FUNCTION_INFO_V1(isa_hmac_sha256);
Datum
isa_hmac_sha256(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	bytea	   *out = palloc(VARHDRSZ + crypto_auth_hmacsha256_BYTES);

	isa_crypto_init();
	isa_hmac_sha256_buf((unsigned char *) VARDATA(out),
						(const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
						(const unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg));
	SET_VARSIZE(out, VARHDRSZ + crypto_auth_hmacsha256_BYTES);
	PG_RETURN_BYTEA_P(out);
}

/* isa.secure_equals(a bytea, b bytea) RETURNS boolean: see isa_secure_equals_buf */
PG_FUNCTION_INFO_V1(isa_secure_equals);
Datum
isa_secure_equals(PG_FUNCTION_ARGS)
{
	bytea	   *a = PG_GETARG_BYTEA_PP(0);
	bytea	   *b = PG_GETARG_BYTEA_PP(1);

	isa_crypto_init();
	PG_RETURN_BOOL(isa_secure_equals_buf(VARDATA_ANY(a), VARSIZE_ANY_EXHDR(a),
										 VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b)));
}

/* isa.random_bytes(n int) RETURNS bytea: n bytes from the OS CSPRNG, 1 <= n <= 1024 */
PG_FUNCTION_INFO_V1(isa_random_bytes);
Datum
isa_random_bytes(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	bytea	   *out;

	if (n < 1 || n > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("random_bytes wants between 1 and 1024 bytes, not %d", n)));
	isa_crypto_init();
	out = palloc(VARHDRSZ + n);
	randombytes_buf(VARDATA(out), n);
	SET_VARSIZE(out, VARHDRSZ + n);
	PG_RETURN_BYTEA_P(out);
}

/* isa.base64url_encode(bytea) RETURNS text: RFC 4648 §5, no padding (as in JWTs) */
PG_FUNCTION_INFO_V1(isa_base64url_encode);
Datum
isa_base64url_encode(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);

	isa_crypto_init();
	PG_RETURN_TEXT_P(cstring_to_text(isa_b64url_encode((const unsigned char *) VARDATA_ANY(in),
													   VARSIZE_ANY_EXHDR(in))));
}

/*
 * isa.base64url_decode(text) RETURNS bytea: the strict inverse (no padding,
 * no whitespace, URL-safe alphabet only); 22023 otherwise.  Unlike
 * isa_b64url_decode, '' is valid here: the encoding of the empty bytea.
 */
PG_FUNCTION_INFO_V1(isa_base64url_decode);
Datum
isa_base64url_decode(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	unsigned char *data = NULL;
	size_t		outlen = 0;
	bytea	   *out;

	isa_crypto_init();
	if (len > 0 && !isa_b64url_decode(VARDATA_ANY(in), len, &data, &outlen))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base64url text"),
				 errhint("base64url uses A-Z a-z 0-9 - _ without padding.")));
	out = palloc(VARHDRSZ + outlen);
	if (outlen > 0)
		memcpy(VARDATA(out), data, outlen);
	SET_VARSIZE(out, VARHDRSZ + outlen);
	PG_RETURN_BYTEA_P(out);
}
