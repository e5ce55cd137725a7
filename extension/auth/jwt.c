/*
 * jwt.c — the auth service's JWTs: compact JWS signed with the configured
 * algorithm (isa.jwt_algorithm: EdDSA, or HS256 with isa.jwt_secret and
 * isa.jwt_previous_secret), the checks of a token's header (alg, typ, crit,
 * kid) and of its claims (exp, nbf, iat, iss, aud), and the kid of a token.
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
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "auth.h"

#define JWT_MIN_SECRET 32
#define JWT_MAX_TOKEN 8192
#define JWT_MAX_KID 64

static void pg_attribute_noreturn()
reject(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token: %s", reason)));
}

/* A compact JWS: the three segments and what the signature covers. */
typedef struct Jws
{
	const char *signing_input;	/* header.payload */
	size_t		signing_len;
	const char *payload_b64;
	size_t		payload_b64_len;
	const char *signature_b64;
	size_t		signature_b64_len;
	/* from the header */
	char	   *alg;
	char	   *kid;
} Jws;

/* What the header parser collects: top-level alg, kid, typ; crit; duplicates. */
typedef struct HeaderState
{
	int			depth;
	char	   *field;			/* the top-level member whose value comes next */
	char	   *alg;
	char	   *kid;
	char	   *typ;
	bool		crit;
	bool		duplicate;
	bool		not_string;		/* alg, kid or typ has a value that is not a string */
} HeaderState;

static void
hdr_nest_start(void *state)
{
	((HeaderState *) state)->depth++;
}

static void
hdr_nest_end(void *state)
{
	((HeaderState *) state)->depth--;
}

static bool
is_member(const char *fname, const char *name)
{
	return fname != NULL && strcmp(fname, name) == 0;
}

static void
hdr_field_start(void *state, char *fname, bool isnull)
{
	HeaderState *h = state;

	if (h->depth != 1)
		return;
	h->field = fname;
	if (is_member(fname, "crit"))
		h->crit = true;
	if ((is_member(fname, "alg") && h->alg) || (is_member(fname, "kid") && h->kid) ||
		(is_member(fname, "typ") && h->typ))
		h->duplicate = true;
}

static void
hdr_field_end(void *state, char *fname, bool isnull)
{
	HeaderState *h = state;

	if (h->depth != 1)
		return;
	/* alg, kid or typ whose value was not a string: its slot is still empty */
	if ((is_member(fname, "alg") && !h->alg) || (is_member(fname, "kid") && !h->kid) ||
		(is_member(fname, "typ") && !h->typ))
		h->not_string = true;
	h->field = NULL;
}

static void
hdr_scalar(void *state, char *token, JsonTokenType tokentype)
{
	HeaderState *h = state;
	char	  **slot = NULL;

	if (h->depth != 1 || h->field == NULL)
		return;
	if (is_member(h->field, "alg"))
		slot = &h->alg;
	else if (is_member(h->field, "kid"))
		slot = &h->kid;
	else if (is_member(h->field, "typ"))
		slot = &h->typ;
	if (slot == NULL)
		return;
	if (tokentype == JSON_TOKEN_STRING)
		*slot = token;
}

/*
 * Whether bytes are one JSON object in the database encoding; escapes are
 * checked too (need_escapes), so jsonb_in cannot fail on them later.
 */
static bool
valid_json_object(char *json, size_t len, JsonSemAction *sem)
{
	const char *p = json;

	if (len > INT_MAX || !pg_verifymbstr(json, (int) len, true))
		return false;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != '{')
		return false;
	return pg_parse_json(makeJsonLexContextCstringLen(json, (int) len, GetDatabaseEncoding(), true),
						 sem) == JSON_SUCCESS;
}

/* HMAC-SHA256 of len bytes of msg with secret: an HS256 signature. */
static void
hs256_mac(unsigned char *mac, const char *secret, const char *msg, size_t len)
{
	isa_hmac_sha256_buf(mac, (const unsigned char *) secret, strlen(secret),
						(const unsigned char *) msg, len);
}

/* The kid of an HS256 secret: 16 hex digits of HMAC-SHA256(secret, "isa-jwt-kid"). */
static char *
hs256_kid(const char *secret)
{
	static const char label[] = "isa-jwt-kid";
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	char	   *hex = palloc(17);

	hs256_mac(mac, secret, label, strlen(label));
	sodium_bin2hex(hex, 17, mac, 8);
	return hex;
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
					 errhint("Set %s to a random secret of at least %d bytes.", name, JWT_MIN_SECRET)));
		return NULL;
	}
	if (strlen(s) < JWT_MIN_SECRET)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s is shorter than %d bytes", name, JWT_MIN_SECRET),
				 errhint("Use a random secret of at least %d bytes, e.g. from openssl rand -base64 48.",
						 JWT_MIN_SECRET)));
	return s;
}

static bool
valid_kid(const char *kid)
{
	size_t		len = strlen(kid);

	if (len == 0 || len > JWT_MAX_KID)
		return false;
	for (const char *p = kid; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			  *p == '-' || *p == '_'))
			return false;
	return true;
}

/*
 * Splits and checks a compact JWS and its header: three segments, header and
 * payload not empty; the header a JSON object whose alg is the configured
 * algorithm (the token never chooses), typ absent or JWT, no crit, a kid.
 * 28000 otherwise.
 */
static void
parse_jws(text *token, Jws *jws)
{
	char	   *t = VARDATA_ANY(token);
	size_t		len = VARSIZE_ANY_EXHDR(token);
	const char *dot1 = NULL,
			   *dot2 = NULL;
	unsigned char *header;
	size_t		header_len;
	HeaderState h;
	JsonSemAction sem;
	const char *configured = isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA";

	memset(jws, 0, sizeof(*jws));
	if (len > JWT_MAX_TOKEN)
		reject("too long");
	for (size_t i = 0; i < len; i++)
	{
		if (t[i] != '.')
			continue;
		if (dot1 == NULL)
			dot1 = t + i;
		else if (dot2 == NULL)
			dot2 = t + i;
		else
			reject("malformed");
	}
	/* an empty signature (alg none) is refused by the algorithm check first */
	if (dot2 == NULL || dot1 == t || dot2 == dot1 + 1)
		reject("malformed");

	jws->signing_input = t;
	jws->signing_len = dot2 - t;
	jws->payload_b64 = dot1 + 1;
	jws->payload_b64_len = dot2 - dot1 - 1;
	jws->signature_b64 = dot2 + 1;
	jws->signature_b64_len = t + len - dot2 - 1;

	isa_crypto_init();
	if (!isa_b64url_decode(t, dot1 - t, &header, &header_len))
		reject("malformed header");
	memset(&h, 0, sizeof(h));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &h;
	sem.object_start = hdr_nest_start;
	sem.object_end = hdr_nest_end;
	sem.array_start = hdr_nest_start;
	sem.array_end = hdr_nest_end;
	sem.object_field_start = hdr_field_start;
	sem.object_field_end = hdr_field_end;
	sem.scalar = hdr_scalar;
	if (!valid_json_object((char *) header, header_len, &sem))
		reject("malformed header");
	if (h.duplicate || h.not_string)
		reject("malformed header");
	if (h.alg == NULL)
		reject("no algorithm in the header");
	if (strcmp(h.alg, configured) != 0)
	{
		bool		printable = strlen(h.alg) <= 20;

		for (const char *p = h.alg; *p && printable; p++)
			printable = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '+';
		if (printable)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("invalid token: algorithm \"%s\" is not accepted", h.alg),
					 errhint("Tokens must be signed with %s (isa.jwt_algorithm).", configured)));
		reject("algorithm is not accepted");
	}
	if (h.typ != NULL && strcmp(h.typ, "JWT") != 0)
		reject("typ is not JWT");
	if (h.crit)
		reject("unsupported critical header parameters");
	if (h.kid == NULL || !valid_kid(h.kid))
		reject("no valid kid in the header");
	jws->alg = h.alg;
	jws->kid = h.kid;
}

/*
 * auth._jwt_kid(token text) RETURNS text: the kid of a token whose header is
 * acceptable (see parse_jws).  With HS256 the kid must name isa.jwt_secret
 * or isa.jwt_previous_secret.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_kid);
Datum
isa_auth_jwt_kid(PG_FUNCTION_ARGS)
{
	Jws			jws;

	parse_jws(PG_GETARG_TEXT_PP(0), &jws);
	if (isa_jwt_algorithm == ISA_JWT_HS256)
	{
		const char *current = hs256_secret(false, true);
		const char *previous = hs256_secret(true, false);

		if (strcmp(jws.kid, hs256_kid(current)) != 0 &&
			(previous == NULL || strcmp(jws.kid, hs256_kid(previous)) != 0))
			reject("unknown signing key");
	}
	PG_RETURN_TEXT_P(cstring_to_text(jws.kid));
}

static int64
unix_now(void)
{
	return GetCurrentTimestamp() / USECS_PER_SEC +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

static int
cmp_numeric_int(Numeric a, int64 b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a),
											 NumericGetDatum(int64_to_numeric(b))));
}

static JsonbValue *
claim(Jsonb *claims, const char *name)
{
	return getKeyJsonValueFromContainer(&claims->root, name, strlen(name), NULL);
}

static bool
jbv_string_equals(const JsonbValue *v, const char *s)
{
	return v->type == jbvString && v->val.string.len == (int) strlen(s) &&
		memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

/* A numeric claim: NULL when absent, 28000 when not a number. */
static Numeric
numeric_claim(Jsonb *claims, const char *name, bool required)
{
	JsonbValue *v = claim(claims, name);

	if (v == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("invalid token: no %s claim", name)));
		return NULL;
	}
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("invalid token: the %s claim is not a number", name)));
	return v->val.numeric;
}

/*
 * exp (required) not passed, nbf and iat (when present) not in the future,
 * each with isa.jwt_clock_skew of tolerance; iss equal to isa.jwt_issuer; aud
 * equal to isa.jwt_audience or an array holding it.
 */
static void
check_claims(Jsonb *claims)
{
	int64		now = unix_now();
	Numeric		exp,
				nbf,
				iat;
	JsonbValue *iss,
			   *aud;
	bool		aud_ok = false;

	if (JB_ROOT_IS_SCALAR(claims) || !JB_ROOT_IS_OBJECT(claims))
		reject("the claims are not a JSON object");
	exp = numeric_claim(claims, "exp", true);
	nbf = numeric_claim(claims, "nbf", false);
	iat = numeric_claim(claims, "iat", false);
	if (cmp_numeric_int(exp, now - isa_jwt_clock_skew) <= 0)
		reject("expired");
	if (nbf != NULL && cmp_numeric_int(nbf, now + isa_jwt_clock_skew) > 0)
		reject("not valid yet (nbf)");
	if (iat != NULL && cmp_numeric_int(iat, now + isa_jwt_clock_skew) > 0)
		reject("issued in the future (iat)");

	iss = claim(claims, "iss");
	if (iss == NULL || !jbv_string_equals(iss, isa_jwt_issuer))
		reject("wrong issuer");

	aud = claim(claims, "aud");
	if (aud != NULL && aud->type == jbvString)
		aud_ok = jbv_string_equals(aud, isa_jwt_audience);
	else if (aud != NULL && aud->type == jbvBinary && JsonContainerIsArray(aud->val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(aud->val.binary.data);
		JsonbValue	elem;
		JsonbIteratorToken r;

		while ((r = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
			if (r == WJB_ELEM && jbv_string_equals(&elem, isa_jwt_audience))
				aud_ok = true;
	}
	if (!aud_ok)
		reject("wrong audience");
}

/*
 * auth._jwt_verify(token text, public_key bytea) RETURNS jsonb: the claims of
 * a token whose header is acceptable, whose signature is valid (Ed25519 with
 * public_key for EdDSA; HMAC-SHA256 with the secret its kid names for HS256,
 * public_key ignored) and whose claims pass check_claims.  28000 otherwise,
 * naming the reason.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_verify);
Datum
isa_auth_jwt_verify(PG_FUNCTION_ARGS)
{
	Jws			jws;
	unsigned char *sig;
	size_t		sig_len;
	unsigned char *payload;
	size_t		payload_len;
	Jsonb	   *claims;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null")));
	parse_jws(PG_GETARG_TEXT_PP(0), &jws);
	if (!isa_b64url_decode(jws.signature_b64, jws.signature_b64_len, &sig, &sig_len))
		reject("malformed signature");

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
		if (sig_len != crypto_sign_BYTES ||
			crypto_sign_verify_detached(sig, (const unsigned char *) jws.signing_input, jws.signing_len,
										(const unsigned char *) VARDATA_ANY(pk)) != 0)
			reject("bad signature");
	}
	else
	{
		const char *current = hs256_secret(false, true);
		const char *previous = hs256_secret(true, false);
		const char *secret = NULL;
		unsigned char mac[crypto_auth_hmacsha256_BYTES];

		if (strcmp(jws.kid, hs256_kid(current)) == 0)
			secret = current;
		else if (previous != NULL && strcmp(jws.kid, hs256_kid(previous)) == 0)
			secret = previous;
		else
			reject("unknown signing key");
		hs256_mac(mac, secret, jws.signing_input, jws.signing_len);
		if (!isa_secure_equals_buf(mac, sizeof(mac), sig, sig_len))
			reject("bad signature");
	}

	/* Signed by us: now the payload may be parsed as a whole. */
	if (!isa_b64url_decode(jws.payload_b64, jws.payload_b64_len, &payload, &payload_len) ||
		!valid_json_object((char *) payload, payload_len, &nullSemAction))
		reject("malformed claims");
	claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum((char *) payload)));
	check_claims(claims);
	PG_RETURN_JSONB_P(claims);
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
		if (!valid_kid(kid))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a kid is 1 to %d characters of A-Z a-z 0-9 - _", JWT_MAX_KID)));
		if (VARSIZE_ANY_EXHDR(sk) != crypto_sign_SECRETKEYBYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an Ed25519 secret key has %d bytes, not %d",
							crypto_sign_SECRETKEYBYTES, (int) VARSIZE_ANY_EXHDR(sk))));
	}
	else
	{
		secret = hs256_secret(false, true);
		kid = hs256_kid(secret);
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

		hs256_mac(mac, secret, out.data, out.len);
		appendStringInfoChar(&out, '.');
		appendStringInfoString(&out, isa_b64url_encode(mac, sizeof(mac)));
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
