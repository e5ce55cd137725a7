/*
 * jwt.c — verifying the bearer tokens auth issues, without the database.
 *
 * The rules are auth's own, in extension/auth/jwt_verify.c, compiled into
 * isa-httpd too (Makefile), so isa-httpd and auth.verify_token accept and
 * refuse the same tokens (test/integration/16-jwt-corpus.sh).  This file
 * keeps what is isa-httpd's: the keys (EdDSA from auth.jwks(), refreshed when
 * a token names an unknown kid, at most every few seconds, or from a JWKS
 * file; HS256 from the secret files), the cache of verified tokens, and the
 * messages of its 401s.  Whether the session is still live is checked in SQL
 * (isa.http_begin), in the request's transaction.
 */
#include "httpd.h"
#include "jwt_verify.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_KEYS 32

typedef struct Key
{
	char		kid[128];
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
} Key;

static pthread_rwlock_t keys_lock = PTHREAD_RWLOCK_INITIALIZER;
static Key	keys[MAX_KEYS];
static int	nkeys;
static double keys_loaded_at;
static volatile int unknown_kid_seen;

/*
 * Tokens verified lately: a client sends the same access token with every
 * request until it expires, and an Ed25519 verification costs more than the
 * rest of a request's work in isa-httpd.  A hit still checks exp (and nbf) on
 * the clock; new keys (a rotation, a retirement) empty the cache.
 */
#define CACHE_SLOTS 4096

typedef struct CacheEntry
{
	uint64_t	hash;
	char	   *token;
	json_t	   *claims;
	double		exp;
	double		nbf;
	uint64_t	generation;
} CacheEntry;

static CacheEntry cache[CACHE_SLOTS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t cache_generation = 1;

static json_t *
cache_get(const char *token, uint64_t h)
{
	CacheEntry *e = &cache[h % CACHE_SLOTS];
	json_t	   *claims = NULL;
	double		now = (double) time(NULL);

	pthread_mutex_lock(&cache_lock);
	if (e->token && e->hash == h && e->generation == cache_generation && strcmp(e->token, token) == 0 &&
		e->exp > now - cfg.jwt_clock_skew && e->nbf <= now + cfg.jwt_clock_skew)
		claims = json_incref(e->claims);
	pthread_mutex_unlock(&cache_lock);
	return claims;
}

static void
cache_put(const char *token, uint64_t h, json_t *claims)
{
	CacheEntry *e = &cache[h % CACHE_SLOTS];
	json_t	   *nbf = json_object_get(claims, "nbf");
	char	   *old_token;
	json_t	   *old_claims;

	pthread_mutex_lock(&cache_lock);
	old_token = e->token;
	old_claims = e->claims;
	e->token = xstrdup(token);
	e->claims = json_incref(claims);
	e->hash = h;
	e->exp = json_number_value(json_object_get(claims, "exp"));
	e->nbf = json_is_number(nbf) ? json_number_value(nbf) : -1e18;
	e->generation = cache_generation;
	pthread_mutex_unlock(&cache_lock);
	free(old_token);
	json_decref(old_claims);
}

bool
jwt_keys_from_db(void)
{
	return !strcmp(cfg.jwt_algorithm, "EdDSA") && cfg.jwks_file == NULL;
}

int
jwt_init(char **err)
{
	if (sodium_init() < 0)
	{
		*err = xstrdup("libsodium cannot be initialized");
		return -1;
	}
	if (!strcmp(cfg.jwt_algorithm, "HS256"))
		return 0;
	if (cfg.jwks_file)
	{
		char	   *text = read_file(cfg.jwks_file, NULL);
		int			rc;

		if (text == NULL)
		{
			*err = xstrdup("cannot read jwks_file");
			return -1;
		}
		rc = jwt_set_jwks(text, err);
		free(text);
		return rc;
	}
	return 0;
}

static bool
b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap, size_t *outlen)
{
	return sodium_base642bin(out, outcap, in, inlen, NULL, outlen, NULL,
							 sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0;
}

int
jwt_set_jwks(const char *json, char **err)
{
	json_error_t jerr;
	json_t	   *root = json_loads(json, 0, &jerr);
	json_t	   *arr = json_object_get(root, "keys");
	Key			fresh[MAX_KEYS];
	int			n = 0;

	if (!json_is_array(arr))
	{
		json_decref(root);
		*err = xstrdup("the JWKS is not an object with a keys array");
		return -1;
	}
	for (size_t i = 0; i < json_array_size(arr) && n < MAX_KEYS; i++)
	{
		json_t	   *k = json_array_get(arr, i);
		const char *kty = json_string_value(json_object_get(k, "kty"));
		const char *crv = json_string_value(json_object_get(k, "crv"));
		const char *x = json_string_value(json_object_get(k, "x"));
		const char *kid = json_string_value(json_object_get(k, "kid"));
		size_t		len;

		if (!kty || strcmp(kty, "OKP") || !crv || strcmp(crv, "Ed25519") || !x || !kid ||
			strlen(kid) >= sizeof fresh[n].kid)
			continue;
		if (!b64url_decode(x, strlen(x), fresh[n].pk, sizeof fresh[n].pk, &len) || len != crypto_sign_PUBLICKEYBYTES)
			continue;
		strcpy(fresh[n].kid, kid);
		n++;
	}
	json_decref(root);
	pthread_rwlock_wrlock(&keys_lock);
	memcpy(keys, fresh, sizeof(Key) * (size_t) n);
	nkeys = n;
	keys_loaded_at = now_seconds();
	unknown_kid_seen = 0;
	pthread_rwlock_unlock(&keys_lock);
	/* a retired key's tokens must not be served from the cache */
	pthread_mutex_lock(&cache_lock);
	cache_generation++;
	pthread_mutex_unlock(&cache_lock);
	return 0;
}

/* Keys from the database are refreshed every 60 s, and at most every 5 s when
 * a token names a kid we do not know (a rotation). */
bool
jwt_wants_keys(void)
{
	double		age;

	if (!jwt_keys_from_db())
		return false;
	pthread_rwlock_rdlock(&keys_lock);
	age = now_seconds() - keys_loaded_at;
	pthread_rwlock_unlock(&keys_lock);
	return keys_loaded_at == 0 || age > 60 || (unknown_kid_seen && age > 5);
}

/*
 * The message of a refusal: the verdicts of jwt_verify.c in isa-httpd's words
 * (docs/http.md), coarser than auth's for what a client cannot fix.
 */
static const char *
refusal(IsaJwtVerdict verdict)
{
	switch (verdict)
	{
		case ISA_JWT_TOO_LONG:
		case ISA_JWT_MALFORMED:
		case ISA_JWT_MALFORMED_HEADER:
		case ISA_JWT_MALFORMED_SIGNATURE:
			return "invalid token: malformed";
		case ISA_JWT_NO_ALGORITHM:
		case ISA_JWT_WRONG_ALGORITHM:
			return "invalid token: unexpected algorithm";
		case ISA_JWT_BAD_TYP:
		case ISA_JWT_CRIT:
			return "invalid token: unsupported header";
		case ISA_JWT_NO_KID:
			return "invalid token: no kid";
		case ISA_JWT_UNKNOWN_KEY:
		case ISA_JWT_KEY_RETIRED:
			return "invalid token: unknown signing key";
		case ISA_JWT_BAD_SIGNATURE:
			return "invalid token: bad signature";
		case ISA_JWT_MALFORMED_CLAIMS:
			return "invalid token: the claims are not a JSON object";
		case ISA_JWT_NO_EXP:
			return "invalid token: no exp claim";
		case ISA_JWT_TIME_NOT_NUMBER:
			return "invalid token: a time claim is not a number";
		case ISA_JWT_EXPIRED:
			return "invalid token: expired";
		case ISA_JWT_NOT_YET_VALID:
			return "invalid token: not valid yet (nbf)";
		case ISA_JWT_ISSUED_IN_FUTURE:
			return "invalid token: issued in the future (iat)";
		case ISA_JWT_WRONG_ISSUER:
			return "invalid token: wrong issuer";
		case ISA_JWT_WRONG_AUDIENCE:
			return "invalid token: wrong audience";
		case ISA_JWT_NO_SUBJECT:
			return "invalid token: no subject";
		case ISA_JWT_OK:
			break;
	}
	return "invalid token";
}

/*
 * The key of a parsed token's kid: the HS256 secret it names, or its Ed25519
 * public key copied into pk (the table may be replaced meanwhile); a verdict.
 */
static IsaJwtVerdict
find_key(const IsaJwt *jwt, unsigned char *pk, const unsigned char **key, size_t *keylen)
{
	if (!strcmp(cfg.jwt_algorithm, "HS256"))
	{
		const char *secret = isa_jwt_hs256_secret(jwt->kid, cfg.jwt_secret, cfg.jwt_previous_secret);

		if (secret == NULL)
			return ISA_JWT_UNKNOWN_KEY;
		*key = (const unsigned char *) secret;
		*keylen = strlen(secret);
		return ISA_JWT_OK;
	}
	pthread_rwlock_rdlock(&keys_lock);
	for (int i = 0; i < nkeys; i++)
		if (!strcmp(keys[i].kid, jwt->kid))
		{
			memcpy(pk, keys[i].pk, crypto_sign_PUBLICKEYBYTES);
			*key = pk;
			*keylen = crypto_sign_PUBLICKEYBYTES;
			pthread_rwlock_unlock(&keys_lock);
			return ISA_JWT_OK;
		}
	pthread_rwlock_unlock(&keys_lock);
	unknown_kid_seen = 1;
	return ISA_JWT_UNKNOWN_KEY;
}

json_t *
jwt_verify(const char *token, const char **reason)
{
	IsaJwt		jwt;
	IsaJwtPolicy policy;
	IsaJwtVerdict verdict;
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	const unsigned char *key = NULL;
	size_t		keylen = 0;
	json_t	   *claims;
	json_error_t jerr;
	size_t		len = strlen(token);
	uint64_t	h = 0;
	int			algorithm = !strcmp(cfg.jwt_algorithm, "HS256") ? ISA_JWT_HS256 : ISA_JWT_EDDSA;

	*reason = NULL;
	if (len <= ISA_JWT_MAX_TOKEN)
	{
		h = hash_string(token);
		if ((claims = cache_get(token, h)) != NULL)
			return claims;
	}
	verdict = isa_jwt_parse(&jwt, token, len, algorithm);
	if (verdict == ISA_JWT_OK)
		verdict = find_key(&jwt, pk, &key, &keylen);
	if (verdict == ISA_JWT_OK)
	{
		policy.issuer = cfg.jwt_issuer;
		policy.audience = cfg.jwt_audience;
		policy.clock_skew = cfg.jwt_clock_skew;
		policy.now = (int64_t) time(NULL);
		verdict = isa_jwt_verify(&jwt, algorithm, key, keylen, &policy);
	}
	if (verdict != ISA_JWT_OK)
	{
		*reason = refusal(verdict);
		return NULL;
	}
	/* jwt_verify.c has checked the text: jansson only builds the value */
	claims = json_loadb(jwt.claims, jwt.claims_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(claims))
	{
		json_decref(claims);
		*reason = refusal(ISA_JWT_MALFORMED_CLAIMS);
		return NULL;
	}
	cache_put(token, h, claims);
	return claims;
}
