/*
 * jwt.c — verifying the bearer tokens auth issues, without the database.
 *
 * The algorithm is the configured one (jwt_algorithm), never the token's:
 * a header naming another algorithm ("none", HS256 on an EdDSA server …) is
 * refused.  EdDSA keys come from auth.jwks() (refreshed by the server when a
 * token names an unknown kid, at most every few seconds) or from a JWKS file;
 * HS256 uses the secret file (and the previous secret during a rotation).
 * Then exp/nbf/iat with clock skew, iss and aud.  Whether the session is
 * still live is checked in SQL (isa.http_begin), in the request's transaction.
 */
#include "httpd.h"

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
static char hs_kid[17];
static char hs_prev_kid[17];

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

static void
hs256_kid(const char *secret, char *out)
{
	static const char label[] = "isa-jwt-kid";
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, (const unsigned char *) secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) label, strlen(label));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(out, 17, mac, 8);
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
	{
		hs256_kid(cfg.jwt_secret, hs_kid);
		if (cfg.jwt_previous_secret)
			hs256_kid(cfg.jwt_previous_secret, hs_prev_kid);
		return 0;
	}
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

static bool
number_claim(json_t *claims, const char *name, bool required, double *v, const char **reason)
{
	json_t	   *c = json_object_get(claims, name);

	if (c == NULL)
	{
		if (required)
			*reason = "invalid token: no exp claim";
		return !required;
	}
	if (!json_is_number(c))
	{
		*reason = "invalid token: a time claim is not a number";
		return false;
	}
	*v = json_number_value(c);
	return true;
}

static bool
check_claims(json_t *claims, const char **reason)
{
	double		now = (double) time(NULL);
	double		exp = 0,
				nbf = -1e18,
				iat = -1e18;
	json_t	   *aud;
	const char *iss;
	bool		aud_ok = false;

	if (!json_is_object(claims))
	{
		*reason = "invalid token: the claims are not a JSON object";
		return false;
	}
	if (!number_claim(claims, "exp", true, &exp, reason) ||
		!number_claim(claims, "nbf", false, &nbf, reason) ||
		!number_claim(claims, "iat", false, &iat, reason))
		return false;
	if (exp <= now - cfg.jwt_clock_skew)
	{
		*reason = "invalid token: expired";
		return false;
	}
	if (nbf > now + cfg.jwt_clock_skew)
	{
		*reason = "invalid token: not valid yet (nbf)";
		return false;
	}
	if (iat > now + cfg.jwt_clock_skew)
	{
		*reason = "invalid token: issued in the future (iat)";
		return false;
	}
	iss = json_string_value(json_object_get(claims, "iss"));
	if (iss == NULL || strcmp(iss, cfg.jwt_issuer) != 0)
	{
		*reason = "invalid token: wrong issuer";
		return false;
	}
	aud = json_object_get(claims, "aud");
	if (json_is_string(aud))
		aud_ok = !strcmp(json_string_value(aud), cfg.jwt_audience);
	else if (json_is_array(aud))
		for (size_t i = 0; i < json_array_size(aud); i++)
			if (json_is_string(json_array_get(aud, i)) &&
				!strcmp(json_string_value(json_array_get(aud, i)), cfg.jwt_audience))
				aud_ok = true;
	if (!aud_ok)
	{
		*reason = "invalid token: wrong audience";
		return false;
	}
	if (!json_is_string(json_object_get(claims, "sub")))
	{
		*reason = "invalid token: no subject";
		return false;
	}
	return true;
}

static json_t *
decode_json_part(const char *p, size_t len)
{
	unsigned char *raw;
	size_t		rawlen;
	json_t	   *j;
	json_error_t jerr;

	if (len == 0 || len > 8192)
		return NULL;
	raw = xmalloc(len);
	if (!b64url_decode(p, len, raw, len, &rawlen))
	{
		free(raw);
		return NULL;
	}
	j = json_loadb((const char *) raw, rawlen, JSON_REJECT_DUPLICATES, &jerr);
	free(raw);
	if (!json_is_object(j))
	{
		json_decref(j);
		return NULL;
	}
	return j;
}

static bool
hs256_ok(const char *secret, const char *msg, size_t len, const unsigned char *sig, size_t siglen)
{
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;

	if (secret == NULL || siglen != sizeof mac)
		return false;
	crypto_auth_hmacsha256_init(&st, (const unsigned char *) secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) msg, len);
	crypto_auth_hmacsha256_final(&st, mac);
	return sodium_memcmp(mac, sig, sizeof mac) == 0;
}

json_t *
jwt_verify(const char *token, const char **reason)
{
	const char *dot1 = strchr(token, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	json_t	   *header = NULL;
	json_t	   *claims = NULL;
	unsigned char sig[128];
	size_t		siglen;
	const char *alg,
			   *kid,
			   *typ;
	bool		valid = false;

	uint64_t	h;

	*reason = "invalid token: malformed";
	if (strlen(token) > 16384 || !dot1 || !dot2 || strchr(dot2 + 1, '.'))
		return NULL;
	h = hash_string(token);
	if ((claims = cache_get(token, h)) != NULL)
	{
		*reason = NULL;
		return claims;
	}
	header = decode_json_part(token, (size_t) (dot1 - token));
	if (header == NULL)
		goto fail;
	alg = json_string_value(json_object_get(header, "alg"));
	kid = json_string_value(json_object_get(header, "kid"));
	typ = json_string_value(json_object_get(header, "typ"));
	if (alg == NULL || strcmp(alg, cfg.jwt_algorithm) != 0)
	{
		*reason = "invalid token: unexpected algorithm";
		goto fail;
	}
	if (json_object_get(header, "crit") || (json_object_get(header, "typ") && (!typ || strcmp(typ, "JWT"))))
	{
		*reason = "invalid token: unsupported header";
		goto fail;
	}
	if (!b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof sig, &siglen))
		goto fail;

	if (!strcmp(cfg.jwt_algorithm, "HS256"))
	{
		size_t		len = (size_t) (dot2 - token);

		/* the kid, when present, names the secret (isa.jwt_secret's kid) */
		if (kid && strcmp(kid, hs_kid) && (!cfg.jwt_previous_secret || strcmp(kid, hs_prev_kid)))
			*reason = "invalid token: unknown signing key";
		else if (hs256_ok(cfg.jwt_secret, token, len, sig, siglen) ||
				 hs256_ok(cfg.jwt_previous_secret, token, len, sig, siglen))
			valid = true;
		else
			*reason = "invalid token: bad signature";
	}
	else
	{
		Key			key;
		bool		found = false;

		if (kid == NULL)
		{
			*reason = "invalid token: no kid";
			goto fail;
		}
		pthread_rwlock_rdlock(&keys_lock);
		for (int i = 0; i < nkeys; i++)
			if (!strcmp(keys[i].kid, kid))
			{
				key = keys[i];
				found = true;
			}
		pthread_rwlock_unlock(&keys_lock);
		if (!found)
		{
			unknown_kid_seen = 1;
			*reason = "invalid token: unknown signing key";
		}
		else if (siglen == crypto_sign_BYTES &&
				 crypto_sign_verify_detached(sig, (const unsigned char *) token,
											 (unsigned long long) (dot2 - token), key.pk) == 0)
			valid = true;
		else
			*reason = "invalid token: bad signature";
	}
	if (!valid)
		goto fail;
	claims = decode_json_part(dot1 + 1, (size_t) (dot2 - dot1 - 1));
	if (claims == NULL)
	{
		*reason = "invalid token: the claims are not a JSON object";
		goto fail;
	}
	if (!check_claims(claims, reason))
		goto fail;
	json_decref(header);
	cache_put(token, h, claims);
	*reason = NULL;
	return claims;
fail:
	json_decref(header);
	json_decref(claims);
	return NULL;
}
