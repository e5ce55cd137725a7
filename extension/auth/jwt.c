/*
 * jwt.c — the auth service's JWTs in the backend: compact JWS signed with the
 * configured algorithm (isa.jwt_algorithm: EdDSA, or HS256 with
 * isa.jwt_secret and isa.jwt_previous_secret), and the two SQL functions of
 * verification (auth._jwt_kid, auth._jwt_verify), which apply the rules of
 * jwt_verify.c — the same code isa-httpd runs — and turn its verdicts into
 * 28000 errors.
 */
#include "postgres.h"

#include <limits.h>
#include <sodium.h>

#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "auth.h"

static void pg_attribute_noreturn()
reject(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token: %s", reason)));
}

/* A verdict of jwt_verify.c as the backend's error: 28000 naming the reason. */
static void
check_verdict(IsaJwtVerdict verdict, const IsaJwt *jwt)
{
	const char *configured = isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA";

	switch (verdict)
	{
		case ISA_JWT_OK:
			return;
		case ISA_JWT_WRONG_ALGORITHM:
			if (jwt->alg[0] != '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						 errmsg("invalid token: algorithm \"%s\" is not accepted", jwt->alg),
						 errhint("Tokens must be signed with %s (isa.jwt_algorithm).", configured)));
			break;
		case ISA_JWT_TIME_NOT_NUMBER:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("invalid token: the %s claim is not a number", jwt->bad_claim)));
			break;
		default:
			break;
	}
	reject(isa_jwt_verdict_text(verdict));
}

/*
 * The HS256 secret (current or previous), or NULL when that one is not set;
 * 55000 when the current one is needed and missing, or either is too short.
 */
static const char *
hs256_secret(bool previous, bool required)
{
	const char *s = previous ? isa_jwt_previous_secret : isa_jwt_secret;
	const char *name = previous ? "isa.jwt_previous_secret" : "isa.jwt_secret";

	if (s == NULL || s[0] == '\0')
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("isa.jwt_algorithm is HS256 but %s is not set", name),
					 errhint("Set %s to a random secret of at least %d bytes.", name, ISA_JWT_MIN_SECRET)));
		return NULL;
	}
	if (strlen(s) < ISA_JWT_MIN_SECRET)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s is shorter than %d bytes", name, ISA_JWT_MIN_SECRET),
				 errhint("Use a random secret of at least %d bytes, e.g. from openssl rand -base64 48.",
						 ISA_JWT_MIN_SECRET)));
	return s;
}

/* The HS256 secret a token's kid names (current or previous); 28000 when none. */
static const char *
hs256_secret_of(const IsaJwt *jwt)
{
	const char *secret = isa_jwt_hs256_secret(jwt->kid, hs256_secret(false, true), hs256_secret(true, false));

	if (secret == NULL)
		check_verdict(ISA_JWT_UNKNOWN_KEY, jwt);
	return secret;
}

/* Splits a token and checks its header (jwt_verify.c); 28000 otherwise. */
static void
parse_token(text *token, IsaJwt *jwt)
{
	isa_crypto_init();
	check_verdict(isa_jwt_parse(jwt, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), isa_jwt_algorithm), jwt);
}

/*
 * auth._jwt_kid(token text) RETURNS text: the kid of a token whose header is
 * acceptable (see isa_jwt_parse).  With HS256 the kid must name
 * isa.jwt_secret or isa.jwt_previous_secret.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_kid);
Datum
isa_auth_jwt_kid(PG_FUNCTION_ARGS)
{
	IsaJwt		jwt;

	parse_token(PG_GETARG_TEXT_PP(0), &jwt);
	if (isa_jwt_algorithm == ISA_JWT_HS256)
		(void) hs256_secret_of(&jwt);
	PG_RETURN_TEXT_P(cstring_to_text(jwt.kid));
}

static int64
unix_now(void)
{
	return GetCurrentTimestamp() / USECS_PER_SEC +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/*
 * Whether bytes are one JSON object in the database encoding, with escapes
 * jsonb_in accepts: jwt_verify.c checked UTF-8, and a database in another
 * encoding may still refuse them.
 */
static bool
valid_json_object(char *json, size_t len)
{
	if (len > INT_MAX || !pg_verifymbstr(json, (int) len, true))
		return false;
	return pg_parse_json(makeJsonLexContextCstringLen(json, (int) len, GetDatabaseEncoding(), true),
						 &nullSemAction) == JSON_SUCCESS;
}

/*
 * auth._jwt_verify(token text, public_key bytea) RETURNS jsonb: the claims of
 * a token that passes isa_jwt_parse and isa_jwt_verify: its signature (Ed25519
 * with public_key for EdDSA; HMAC-SHA256 with the secret its kid names for
 * HS256, public_key ignored), exp, nbf, iat, iss, aud and sub.  28000
 * otherwise, naming the reason.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_verify);
Datum
isa_auth_jwt_verify(PG_FUNCTION_ARGS)
{
	IsaJwt		jwt;
	IsaJwtPolicy policy;
	const unsigned char *key;
	size_t		keylen;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null")));
	parse_token(PG_GETARG_TEXT_PP(0), &jwt);
	if (isa_jwt_algorithm == ISA_JWT_EDDSA)
	{
		bytea	   *pk;

		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("an EdDSA token needs the public key of its kid")));
		pk = PG_GETARG_BYTEA_PP(1);
		if (VARSIZE_ANY_EXHDR(pk) != crypto_sign_PUBLICKEYBYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an Ed25519 public key has %d bytes, not %d",
							crypto_sign_PUBLICKEYBYTES, (int) VARSIZE_ANY_EXHDR(pk))));
		key = (const unsigned char *) VARDATA_ANY(pk);
		keylen = crypto_sign_PUBLICKEYBYTES;
	}
	else
	{
		const char *secret = hs256_secret_of(&jwt);

		key = (const unsigned char *) secret;
		keylen = strlen(secret);
	}
	policy.issuer = isa_jwt_issuer;
	policy.audience = isa_jwt_audience;
	policy.clock_skew = isa_jwt_clock_skew;
	policy.now = unix_now();
	check_verdict(isa_jwt_verify(&jwt, isa_jwt_algorithm, key, keylen, &policy), &jwt);
	if (!valid_json_object((char *) jwt.claims, jwt.claims_len))
		check_verdict(ISA_JWT_MALFORMED_CLAIMS, &jwt);
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(jwt.claims))));
}

/*
 * auth._jwt_encode(claims jsonb, kid text, secret_key bytea) RETURNS text: a
 * compact JWS of claims with the configured algorithm.  EdDSA signs with
 * secret_key (64 bytes) under kid; HS256 ignores both and signs with
 * isa.jwt_secret under its derived kid.  The claims are signed as given.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_encode);
Datum
isa_auth_jwt_encode(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	StringInfoData header;
	StringInfoData out;
	char	   *payload;
	char	   *kid;
	const char *secret = NULL;
	bytea	   *sk = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("claims must not be null")));
	claims = PG_GETARG_JSONB_P(0);
	if (JB_ROOT_IS_SCALAR(claims) || !JB_ROOT_IS_OBJECT(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("JWT claims must be a JSON object")));
	isa_crypto_init();
	if (isa_jwt_algorithm == ISA_JWT_EDDSA)
	{
		if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("EdDSA signing needs a kid and a secret key")));
		kid = text_to_cstring(PG_GETARG_TEXT_PP(1));
		sk = PG_GETARG_BYTEA_PP(2);
		if (!isa_jwt_valid_kid(kid))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a kid is 1 to %d characters of A-Z a-z 0-9 - _", ISA_JWT_MAX_KID)));
		if (VARSIZE_ANY_EXHDR(sk) != crypto_sign_SECRETKEYBYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an Ed25519 secret key has %d bytes, not %d",
							crypto_sign_SECRETKEYBYTES, (int) VARSIZE_ANY_EXHDR(sk))));
	}
	else
	{
		secret = hs256_secret(false, true);
		kid = palloc(17);
		isa_jwt_hs256_kid(secret, kid);
	}

	initStringInfo(&header);
	appendStringInfo(&header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":",
					 isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA");
	escape_json(&header, kid);
	appendStringInfoChar(&header, '}');
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	initStringInfo(&out);
	appendStringInfoString(&out, isa_b64url_encode((unsigned char *) header.data, header.len));
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, isa_b64url_encode((unsigned char *) payload, strlen(payload)));
	if (sk != NULL)
	{
		unsigned char sig[crypto_sign_BYTES];

		crypto_sign_detached(sig, NULL, (const unsigned char *) out.data, out.len,
							 (const unsigned char *) VARDATA_ANY(sk));
		appendStringInfoChar(&out, '.');
		appendStringInfoString(&out, isa_b64url_encode(sig, sizeof(sig)));
	}
	else
	{
		unsigned char mac[crypto_auth_hmacsha256_BYTES];

		isa_hmac_sha256_buf(mac, (const unsigned char *) secret, strlen(secret),
							(const unsigned char *) out.data, out.len);
		appendStringInfoChar(&out, '.');
		appendStringInfoString(&out, isa_b64url_encode(mac, sizeof(mac)));
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
