/*
 * nats_jwt.c — NATS nkeys and JWTs, the one implementation compiled into
 * isa.so (extension/nats.c, the isa.nats_* functions) and into
 * tools/isa-nats-keys (which tools/stack.sh and tools/nats-config.sh run).
 * Plain C over libsodium: no PostgreSQL, no allocation; the caller gives the
 * buffers.  nsc, NATS's own tool, is not in Debian.
 *
 * The formats, as nats-server 2.9 reads them (its tests in
 * test/integration/56-nats-permissions.sh and test/pgtap/core/nats.sql):
 *   nkey   base32 (RFC 4648, no padding) of prefix + Ed25519 key + CRC16
 *          (XMODEM, little-endian).  A public key's prefix is one byte, the
 *          type's letter's base32 value << 3 (O, A, U); a seed's is two bytes
 *          that spell "S" then the type; its key is the Ed25519 seed.
 *   JWT    base64url(header) "." base64url(claims) "." base64url(Ed25519
 *          signature of the first two parts by the issuer's seed); header
 *          {"typ":"JWT","alg":"ed25519-nkey"}; claims jti (base32 of SHA-256
 *          of the claims without jti), iat, iss, name, sub, exp, nats.
 * docs/bridge.md, "Securing NATS", says who holds which credential.
 */
#include "nats_jwt.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NKEY_RAW_SEED 36		/* 2 prefix bytes + 32 + CRC16 */
#define NKEY_RAW_PUBLIC 35		/* 1 prefix byte + 32 + CRC16 */
#define PREFIX_SEED (18 << 3)	/* 'S' */

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static const char *
init_sodium(void)
{
	return sodium_init() < 0 ? "libsodium could not be initialised" : NULL;
}

/* ---------------------------------------------------------------- encodings */

/* base32 of len bytes into out (NUL-terminated); out holds (len * 8 + 4) / 5 + 1 */
static void
base32_encode(const unsigned char *data, size_t len, char *out)
{
	unsigned int buffer = 0;
	int			bits = 0;
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		buffer = (buffer << 8) | data[i];
		bits += 8;
		while (bits >= 5)
		{
			out[o++] = base32_alphabet[(buffer >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = base32_alphabet[(buffer << (5 - bits)) & 31];
	out[o] = '\0';
}

/* base32 text into at most cap bytes; -1 on a character outside the alphabet */
static long
base32_decode(const char *in, unsigned char *out, size_t cap)
{
	unsigned int buffer = 0;
	int			bits = 0;
	size_t		o = 0;

	for (const char *p = in; *p; p++)
	{
		const char *at = strchr(base32_alphabet, *p);

		if (at == NULL || *p == '\0')
			return -1;
		buffer = (buffer << 5) | (unsigned int) (at - base32_alphabet);
		bits += 5;
		if (bits >= 8)
		{
			if (o == cap)
				return -1;
			out[o++] = (unsigned char) (buffer >> (bits - 8));
			bits -= 8;
		}
	}
	return (long) o;
}

static unsigned short
crc16_xmodem(const unsigned char *data, size_t len)
{
	unsigned short crc = 0;

	for (size_t i = 0; i < len; i++)
	{
		crc ^= (unsigned short) (data[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (unsigned short) ((crc << 1) ^ 0x1021) : (unsigned short) (crc << 1);
	}
	return crc;
}

static int
kind_prefix(char kind)
{
	const char *at = strchr(base32_alphabet, kind);

	if (kind != ISA_NKEY_OPERATOR && kind != ISA_NKEY_ACCOUNT && kind != ISA_NKEY_USER)
		return -1;
	return (int) (at - base32_alphabet) << 3;
}

/* raw bytes of an nkey (public or seed) after its CRC is checked; -1 if broken */
static long
nkey_decode(const char *text, unsigned char *raw, size_t cap)
{
	long		n;
	unsigned short crc;

	if (text == NULL || strlen(text) > 64)
		return -1;
	n = base32_decode(text, raw, cap);
	if (n < 3)
		return -1;
	crc = (unsigned short) (raw[n - 2] | (raw[n - 1] << 8));
	if (crc != crc16_xmodem(raw, (size_t) n - 2))
		return -1;
	return n - 2;
}

static void
public_from_key(char kind, const unsigned char key[32], char out[ISA_NKEY_PUBLIC_SIZE])
{
	unsigned char raw[NKEY_RAW_PUBLIC];
	unsigned short crc;

	raw[0] = (unsigned char) kind_prefix(kind);
	memcpy(raw + 1, key, 32);
	crc = crc16_xmodem(raw, 33);
	raw[33] = (unsigned char) (crc & 0xff);
	raw[34] = (unsigned char) (crc >> 8);
	base32_encode(raw, sizeof(raw), out);
	sodium_memzero(raw, sizeof(raw));
}

/* The kind and 32-byte Ed25519 seed of a seed's text. */
static const char *
seed_decode(const char *seed, char *kind, unsigned char ed_seed[32])
{
	unsigned char raw[NKEY_RAW_SEED + 8];
	long		n = nkey_decode(seed, raw, sizeof(raw));
	int			prefix;
	const char *err = NULL;

	if (n != 34 || (raw[0] & 0xf8) != PREFIX_SEED)
		err = "not an nkey seed (SO…, SA… or SU…, 58 characters)";
	else
	{
		prefix = ((raw[0] & 7) << 5) | (raw[1] >> 3);
		*kind = base32_alphabet[prefix >> 3];
		if (kind_prefix(*kind) != prefix)
			err = "an nkey seed of a type other than operator, account or user";
		else
			memcpy(ed_seed, raw + 2, 32);
	}
	sodium_memzero(raw, sizeof(raw));
	return err;
}

const char *
isa_nkey_generate(char kind, char seed[ISA_NKEY_SEED_SIZE])
{
	unsigned char raw[NKEY_RAW_SEED];
	unsigned short crc;
	int			prefix = kind_prefix(kind);
	const char *err = init_sodium();

	if (err)
		return err;
	if (prefix < 0)
		return "the type of an nkey is O (operator), A (account) or U (user)";
	raw[0] = (unsigned char) (PREFIX_SEED | (prefix >> 5));
	raw[1] = (unsigned char) ((prefix & 31) << 3);
	randombytes_buf(raw + 2, 32);
	crc = crc16_xmodem(raw, 34);
	raw[34] = (unsigned char) (crc & 0xff);
	raw[35] = (unsigned char) (crc >> 8);
	base32_encode(raw, sizeof(raw), seed);
	sodium_memzero(raw, sizeof(raw));
	return NULL;
}

/* The Ed25519 key pair of a seed. */
static const char *
seed_keypair(const char *seed, char *kind, unsigned char pk[32], unsigned char sk[64])
{
	unsigned char ed_seed[32];
	const char *err = init_sodium();

	if (err == NULL)
		err = seed_decode(seed, kind, ed_seed);
	if (err == NULL)
		crypto_sign_seed_keypair(pk, sk, ed_seed);
	sodium_memzero(ed_seed, sizeof(ed_seed));
	return err;
}

const char *
isa_nkey_public(const char *seed, char public_key[ISA_NKEY_PUBLIC_SIZE], char *kind)
{
	unsigned char pk[32],
				sk[64];
	char		k = 0;
	const char *err = seed_keypair(seed, &k, pk, sk);

	sodium_memzero(sk, sizeof(sk));
	if (err)
		return err;
	public_from_key(k, pk, public_key);
	if (kind)
		*kind = k;
	return NULL;
}

/* The Ed25519 public key of an nkey's text, checked against its kind (0: any). */
static const char *
public_decode(const char *public_key, char kind, unsigned char key[32])
{
	unsigned char raw[NKEY_RAW_PUBLIC + 8];
	long		n = nkey_decode(public_key, raw, sizeof(raw));

	if (n != 33 || kind_prefix(public_key[0]) != raw[0])
		return "not an nkey public key (O…, A… or U…, 56 characters)";
	if (kind != 0 && public_key[0] != kind)
		return kind == ISA_NKEY_ACCOUNT ? "not an account's public key (A…)" :
			kind == ISA_NKEY_OPERATOR ? "not an operator's public key (O…)" : "not a user's public key (U…)";
	memcpy(key, raw + 1, 32);
	return NULL;
}

const char *
isa_nkey_check_public(const char *public_key, char kind)
{
	unsigned char key[32];

	return public_decode(public_key, kind, key);
}

/* ---------------------------------------------------------------- JSON out */

typedef struct Out
{
	char	   *buf;
	size_t		len;
	size_t		used;
	int			overflow;
} Out;

static void
out_raw(Out *o, const char *s, size_t n)
{
	if (o->overflow || o->used + n + 1 > o->len)
	{
		o->overflow = 1;
		return;
	}
	memcpy(o->buf + o->used, s, n);
	o->used += n;
	o->buf[o->used] = '\0';
}

static void
out_str(Out *o, const char *s)
{
	out_raw(o, s, strlen(s));
}

static void out_fmt(Out *o, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static void
out_fmt(Out *o, const char *fmt,...)
{
	char		tmp[64];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	out_raw(o, tmp, (size_t) n);
}

/* a JSON string, escaped */
static void
out_json(Out *o, const char *s)
{
	out_raw(o, "\"", 1);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (*p == '"' || *p == '\\')
		{
			char		esc[2] = {'\\', (char) *p};

			out_raw(o, esc, 2);
		}
		else if (*p < 0x20)
			out_fmt(o, "\\u%04x", *p);
		else
			out_raw(o, (const char *) p, 1);
	}
	out_raw(o, "\"", 1);
}

static void
out_list(Out *o, const char *const *items)
{
	out_raw(o, "[", 1);
	for (int i = 0; items && items[i]; i++)
	{
		if (i > 0)
			out_raw(o, ",", 1);
		out_json(o, items[i]);
	}
	out_raw(o, "]", 1);
}

static const char *
out_done(Out *o)
{
	return o->overflow ? "the JWT does not fit in its buffer" : NULL;
}

static int
list_empty(const char *const *items)
{
	return items == NULL || items[0] == NULL;
}

/* {"allow":[…],"deny":[…]} with the lists that are given */
static void
out_permission(Out *o, const char *key, const char *const *allow, const char *const *deny)
{
	int			first = 1;

	if (list_empty(allow) && list_empty(deny))
		return;
	out_json(o, key);
	out_raw(o, ":{", 2);
	if (!list_empty(allow))
	{
		out_str(o, "\"allow\":");
		out_list(o, allow);
		first = 0;
	}
	if (!list_empty(deny))
	{
		if (!first)
			out_raw(o, ",", 1);
		out_str(o, "\"deny\":");
		out_list(o, deny);
	}
	out_str(o, "},");
}

const char *
isa_nats_operator_claims(char *buf, size_t len, const char *system_account, const char *const *signing_keys)
{
	Out			o = {buf, len, 0, 0};

	if (system_account && isa_nkey_check_public(system_account, ISA_NKEY_ACCOUNT))
		return "the system account is not an account's public key (A…)";
	for (int i = 0; signing_keys && signing_keys[i]; i++)
		if (isa_nkey_check_public(signing_keys[i], ISA_NKEY_OPERATOR))
			return "a signing key of an operator is an operator's public key (O…)";
	out_str(&o, "{");
	if (system_account)
	{
		out_str(&o, "\"system_account\":");
		out_json(&o, system_account);
		out_str(&o, ",");
	}
	if (!list_empty(signing_keys))
	{
		out_str(&o, "\"signing_keys\":");
		out_list(&o, signing_keys);
		out_str(&o, ",");
	}
	out_str(&o, "\"type\":\"operator\",\"version\":2}");
	return out_done(&o);
}

const char *
isa_nats_account_claims(char *buf, size_t len, int jetstream, const char *const *signing_keys,
						const IsaNatsScopedKey *scoped_keys, const char *revocations)
{
	Out			o = {buf, len, 0, 0};
	int			n = 0;

	for (int i = 0; signing_keys && signing_keys[i]; i++)
		if (isa_nkey_check_public(signing_keys[i], ISA_NKEY_ACCOUNT))
			return "a signing key of an account is an account's public key (A…)";
	for (int i = 0; scoped_keys && scoped_keys[i].key; i++)
		if (isa_nkey_check_public(scoped_keys[i].key, ISA_NKEY_ACCOUNT))
			return "a scoped signing key of an account is an account's public key (A…)";
	out_str(&o, "{\"limits\":{\"subs\":-1,\"data\":-1,\"payload\":-1,\"imports\":-1,\"exports\":-1,"
			"\"wildcards\":true,\"conn\":-1,\"leaf\":-1");
	/* JetStream is on for an account whose limits are not all zero */
	if (jetstream)
		out_str(&o, ",\"mem_storage\":-1,\"disk_storage\":-1,\"streams\":-1,\"consumer\":-1");
	out_str(&o, "},\"default_permissions\":{\"pub\":{},\"sub\":{}}");
	/* one list: plain keys as strings, scoped ones as objects */
	for (int i = 0; signing_keys && signing_keys[i]; i++, n++)
	{
		out_str(&o, n == 0 ? ",\"signing_keys\":[" : ",");
		out_json(&o, signing_keys[i]);
	}
	for (int i = 0; scoped_keys && scoped_keys[i].key; i++, n++)
	{
		const IsaNatsScopedKey *k = &scoped_keys[i];

		out_str(&o, n == 0 ? ",\"signing_keys\":[" : ",");
		out_str(&o, "{\"kind\":\"user_scope\",\"key\":");
		out_json(&o, k->key);
		out_str(&o, ",\"role\":");
		out_json(&o, k->role ? k->role : "");
		out_str(&o, ",\"template\":{");
		out_permission(&o, "pub", k->perms.pub_allow, k->perms.pub_deny);
		out_permission(&o, "sub", k->perms.sub_allow, k->perms.sub_deny);
		out_str(&o, "\"subs\":-1,\"data\":-1,\"payload\":-1");
		if (k->bearer_token)
			out_str(&o, ",\"bearer_token\":true");
		out_str(&o, "}}");
	}
	if (n > 0)
		out_str(&o, "]");
	if (revocations && strcmp(revocations, "{}") != 0)
	{
		out_str(&o, ",\"revocations\":");
		out_str(&o, revocations);
	}
	out_str(&o, ",\"type\":\"account\",\"version\":2}");
	return out_done(&o);
}

const char *
isa_nats_user_claims(char *buf, size_t len, const IsaNatsPermissions *perms, const char *issuer_account)
{
	Out			o = {buf, len, 0, 0};

	if (issuer_account && isa_nkey_check_public(issuer_account, ISA_NKEY_ACCOUNT))
		return "the issuer account is not an account's public key (A…)";
	out_str(&o, "{");
	if (perms)
	{
		out_permission(&o, "pub", perms->pub_allow, perms->pub_deny);
		out_permission(&o, "sub", perms->sub_allow, perms->sub_deny);
	}
	out_str(&o, "\"subs\":-1,\"data\":-1,\"payload\":-1");
	if (issuer_account)
	{
		out_str(&o, ",\"issuer_account\":");
		out_json(&o, issuer_account);
	}
	out_str(&o, ",\"type\":\"user\",\"version\":2}");
	return out_done(&o);
}

const char *
isa_nats_scoped_user_claims(char *buf, size_t len, const char *issuer_account)
{
	Out			o = {buf, len, 0, 0};

	if (issuer_account == NULL || isa_nkey_check_public(issuer_account, ISA_NKEY_ACCOUNT))
		return "a scoped user names its account (issuer_account, A…)";
	out_str(&o, "{\"issuer_account\":");
	out_json(&o, issuer_account);
	out_str(&o, ",\"type\":\"user\",\"version\":2}");
	return out_done(&o);
}

/* ---------------------------------------------------------------- JWT */

static const char jwt_header[] = "{\"typ\":\"JWT\",\"alg\":\"ed25519-nkey\"}";

static void
out_b64url(Out *o, const unsigned char *data, size_t n)
{
	size_t		need = sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

	if (o->overflow || o->used + need > o->len)
	{
		o->overflow = 1;
		return;
	}
	sodium_bin2base64(o->buf + o->used, need, data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	o->used += need - 1;
}

/* claims with or without their jti (the hash covers the claims without it) */
static void
out_claims(Out *o, const char *jti, long long iat, const char *iss, const char *name,
		   const char *subject, long long exp, const char *nats_json)
{
	out_str(o, "{");
	if (jti)
	{
		out_str(o, "\"jti\":");
		out_json(o, jti);
		out_str(o, ",");
	}
	out_fmt(o, "\"iat\":%lld,\"iss\":", iat);
	out_json(o, iss);
	out_str(o, ",\"name\":");
	out_json(o, name);
	out_str(o, ",\"sub\":");
	out_json(o, subject);
	if (exp > 0)
		out_fmt(o, ",\"exp\":%lld", exp);
	out_str(o, ",\"nats\":");
	out_str(o, nats_json);
	out_str(o, "}");
}

const char *
isa_nats_jwt_encode(char *out, size_t len, const char *issuer_seed, const char *subject,
					const char *name, long long iat, long long exp, const char *nats_json)
{
	unsigned char pk[32],
				sk[64],
				digest[crypto_hash_sha256_BYTES],
				sig[crypto_sign_BYTES];
	char		iss[ISA_NKEY_PUBLIC_SIZE],
				jti[64],
				kind = 0;
	Out			o = {out, len, 0, 0};
	size_t		claims_at,
				signed_len;
	const char *err;

	if (isa_nkey_check_public(subject, 0))
		return "the subject of a NATS JWT is a public nkey";
	err = seed_keypair(issuer_seed, &kind, pk, sk);
	if (err)
		return err;
	if (kind == ISA_NKEY_USER)
		err = "a user's seed signs no JWT: the issuer is an operator or an account";
	public_from_key(kind, pk, iss);

	/* the jti: the claims without it, hashed; they are written here first */
	if (err == NULL)
	{
		out_claims(&o, NULL, iat, iss, name ? name : "", subject, exp, nats_json);
		err = out_done(&o);
	}
	if (err == NULL)
	{
		crypto_hash_sha256(digest, (const unsigned char *) out, o.used);
		base32_encode(digest, sizeof(digest), jti);

		o.used = 0;
		out_b64url(&o, (const unsigned char *) jwt_header, strlen(jwt_header));
		out_str(&o, ".");
		claims_at = o.used;
		/* the claims go to the end of the buffer, then their base64url here */
		{
			Out			c = {out + claims_at, len - claims_at, 0, 0};
			size_t		clen;

			out_claims(&c, jti, iat, iss, name ? name : "", subject, exp, nats_json);
			clen = c.used;
			if (c.overflow ||
				claims_at + sodium_base64_encoded_len(clen, sodium_base64_VARIANT_URLSAFE_NO_PADDING) + clen > len)
				o.overflow = 1;
			else
			{
				/* move the raw claims out of the way of their encoding */
				memmove(out + len - clen, out + claims_at, clen);
				out_b64url(&o, (const unsigned char *) out + len - clen, clen);
			}
		}
		signed_len = o.used;
		if (!o.overflow)
		{
			crypto_sign_detached(sig, NULL, (const unsigned char *) out, signed_len, sk);
			out_str(&o, ".");
			out_b64url(&o, sig, sizeof(sig));
		}
		err = out_done(&o);
	}
	sodium_memzero(sk, sizeof(sk));
	return err;
}

/* ---------------------------------------------------------------- JWT in */

/* past a JSON string starting at p (a '"'); NULL if unterminated */
static const char *
skip_string(const char *p)
{
	for (p++; *p; p++)
	{
		if (*p == '\\' && p[1])
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/*
 * The value of the top-level member key of a JSON object, if it is a string
 * of plain characters (a public key): into out.  Nested members are skipped.
 */
static int
top_level_string(const char *json, const char *key, char *out, size_t cap)
{
	int			depth = 0;
	size_t		klen = strlen(key);

	for (const char *p = json; p && *p;)
	{
		if (*p == '"')
		{
			const char *end = skip_string(p);

			if (end == NULL)
				return 0;
			if (depth == 1 && (size_t) (end - p) == klen + 2 && strncmp(p + 1, key, klen) == 0)
			{
				const char *v = end;

				while (*v == ' ')
					v++;
				if (*v != ':')
				{
					/* a value that reads "iss", not the member */
					p = end;
					continue;
				}
				v++;
				while (*v == ' ')
					v++;
				if (*v != '"')
					return 0;
				end = skip_string(v);
				if (end == NULL || (size_t) (end - v - 2) >= cap || memchr(v + 1, '\\', end - v - 2))
					return 0;
				memcpy(out, v + 1, end - v - 2);
				out[end - v - 2] = '\0';
				return 1;
			}
			p = end;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']')
			depth--;
		p++;
	}
	return 0;
}

const char *
isa_nats_jwt_decode(char *claims, size_t len, const char *jwt)
{
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	unsigned char sig[crypto_sign_BYTES],
				key[32];
	size_t		n = 0;
	const char *end = NULL;
	char		iss[ISA_NKEY_PUBLIC_SIZE + 8];
	const char *err = init_sodium();

	if (err)
		return err;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		return "not a JWT (three base64url parts separated by dots)";
	if (len == 0 ||
		sodium_base642bin((unsigned char *) claims, len - 1, dot1 + 1, (size_t) (dot2 - dot1 - 1),
						  NULL, &n, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		end != dot2)
		return "the claims of the JWT are not base64url, or too long";
	claims[n] = '\0';
	if (memchr(claims, '\0', n) != NULL || claims[0] != '{')
		return "the claims of the JWT are not a JSON object";
	if (!top_level_string(claims, "iss", iss, sizeof(iss)))
		return "the JWT has no issuer (iss)";
	if (public_decode(iss, 0, key) != NULL)
		return "the issuer (iss) of the JWT is not a public nkey";
	if (sodium_base642bin(sig, sizeof(sig), dot2 + 1, strlen(dot2 + 1), NULL, &n, &end,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		*end != '\0' || n != sizeof(sig))
		return "the signature of the JWT is not base64url of 64 bytes";
	if (crypto_sign_verify_detached(sig, (const unsigned char *) jwt, (size_t) (dot2 - jwt), key) != 0)
		return "the signature of the JWT does not verify against its issuer's key";
	return NULL;
}

const char *
isa_nats_creds(char *out, size_t len, const char *jwt, const char *seed)
{
	Out			o = {out, len, 0, 0};
	char		pub[ISA_NKEY_PUBLIC_SIZE],
				kind = 0;
	const char *err = isa_nkey_public(seed, pub, &kind);

	if (err)
		return err;
	if (kind != ISA_NKEY_USER)
		return "a creds file holds a user's seed (SU…)";
	out_str(&o, "-----BEGIN NATS USER JWT-----\n");
	out_str(&o, jwt);
	out_str(&o, "\n------END NATS USER JWT------\n\n"
			"************************* IMPORTANT *************************\n"
			"NKEY Seed printed below can be used to sign and prove identity.\n"
			"NKEYs are sensitive and should be treated as secrets.\n\n"
			"-----BEGIN USER NKEY SEED-----\n");
	out_str(&o, seed);
	out_str(&o, "\n------END USER NKEY SEED------\n\n"
			"*************************************************************\n");
	return out_done(&o);
}

/* ---------------------------------------------------------------- account revocations */

/*
 * Reading an account JWT's claims again, to issue it anew with other
 * revocations (tools/isa-nats-revoker, tools/isa-nats-keys account
 * --revocations-from): a JSON reader just large enough for claims, which are
 * a JSON object of members whose keys are plain (no escapes).
 */

static const char *
skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* past one JSON value at p; NULL if it is not one */
static const char *
skip_value(const char *p, int depth)
{
	const char *start;

	p = skip_blanks(p);
	if (*p == '"')
		return skip_string(p);
	if (*p == '{' || *p == '[')
	{
		char		close = *p == '{' ? '}' : ']';

		if (depth > 32)
			return NULL;
		p = skip_blanks(p + 1);
		if (*p == close)
			return p + 1;
		for (;;)
		{
			if (close == '}')
			{
				if (*p != '"' || (p = skip_string(p)) == NULL)
					return NULL;
				p = skip_blanks(p);
				if (*p++ != ':')
					return NULL;
			}
			if ((p = skip_value(p, depth + 1)) == NULL)
				return NULL;
			p = skip_blanks(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
			p = skip_blanks(p);
		}
	}
	/* a number, true, false or null */
	start = p;
	while (*p && strchr("+-.0123456789eEtruefalsn", *p) != NULL)
		p++;
	return p == start ? NULL : p;
}

/* One member of an object: its key (without quotes) and its value's text. */
typedef struct Member
{
	const char *key;
	size_t		key_len;
	const char *value;
	size_t		value_len;
} Member;

/*
 * The next member of the object at *p, which points at its '{' or past the
 * previous member: 1 and m, 0 at the object's end (*p past it), -1 if the
 * text is no object.
 */
static int
next_member(const char **p, Member *m)
{
	const char *q = skip_blanks(*p),
			   *end;

	if (*q == '{' || *q == ',')
		q = skip_blanks(q + 1);
	if (*q == '}')
	{
		*p = q + 1;
		return 0;
	}
	if (*q != '"' || (end = skip_string(q)) == NULL || memchr(q, '\\', (size_t) (end - q)) != NULL)
		return -1;
	m->key = q + 1;
	m->key_len = (size_t) (end - q - 2);
	q = skip_blanks(end);
	if (*q++ != ':')
		return -1;
	m->value = skip_blanks(q);
	if ((end = skip_value(m->value, 0)) == NULL)
		return -1;
	m->value_len = (size_t) (end - m->value);
	q = skip_blanks(end);
	if (*q != ',' && *q != '}')
		return -1;
	*p = q;
	return 1;
}

/* The value of member key of the object at obj, or NULL (len: its length). */
static const char *
member_value(const char *obj, const char *key, size_t *len)
{
	const char *p = skip_blanks(obj);
	Member		m;
	int			r;

	if (*p != '{')
		return NULL;
	while ((r = next_member(&p, &m)) == 1)
		if (m.key_len == strlen(key) && strncmp(m.key, key, m.key_len) == 0)
		{
			*len = m.value_len;
			return m.value;
		}
	return NULL;
}

/* An integer member of an object (iat, exp, a revocation's time); 0 if absent or not one. */
static long long
member_integer(const char *obj, const char *key)
{
	size_t		len = 0;
	const char *v = member_value(obj, key, &len);
	long long	n = 0;

	if (v == NULL || len == 0 || len > 18)
		return 0;
	for (size_t i = 0; i < len; i++)
	{
		if (v[i] < '0' || v[i] > '9')
			return 0;
		n = n * 10 + (v[i] - '0');
	}
	return n;
}

/* A plain string member of an object, into out. */
static int
member_string(const char *obj, const char *key, char *out, size_t cap)
{
	size_t		len = 0;
	const char *v = member_value(obj, key, &len);

	if (v == NULL || len < 2 || v[0] != '"' || len - 2 >= cap || memchr(v, '\\', len) != NULL)
		return 0;
	memcpy(out, v + 1, len - 2);
	out[len - 2] = '\0';
	return 1;
}

int
isa_nats_claims_lists(const char *claims, const char *list, const char *value)
{
	size_t		len = 0;
	const char *nats = member_value(claims, "nats", &len);
	const char *p = nats ? member_value(nats, list, &len) : NULL;
	const char *end;

	if (p == NULL || *p != '[')
		return 0;
	for (p = skip_blanks(p + 1); *p == '"'; p = skip_blanks(p))
	{
		if ((end = skip_string(p)) == NULL)
			return 0;
		if ((size_t) (end - p - 2) == strlen(value) && strncmp(p + 1, value, strlen(value)) == 0)
			return 1;
		p = skip_blanks(end);
		if (*p != ',')
			return 0;
		p++;
	}
	return 0;
}

long long
isa_nats_claims_integer(const char *claims, const char *key)
{
	return member_integer(claims, key);
}

int
isa_nats_claims_string(const char *claims, const char *key, char *out, size_t cap)
{
	return member_string(claims, key, out, cap);
}

const char *
isa_nats_claims_revocations(const char *claims, void (*fn) (const char *key, long long at, void *arg), void *arg)
{
	size_t		nats_len = 0,
				rev_len = 0;
	const char *nats = member_value(claims, "nats", &nats_len);
	const char *rev;
	const char *p;
	Member		m;
	int			r;

	if (nats == NULL || *nats != '{')
		return "the claims have no nats object";
	rev = member_value(nats, "revocations", &rev_len);
	if (rev == NULL)
		return NULL;				/* none */
	if (*rev != '{')
		return "nats.revocations is not an object";
	p = rev;
	while ((r = next_member(&p, &m)) == 1)
	{
		char		key[ISA_NKEY_PUBLIC_SIZE];
		long long	at = 0;

		if (m.key_len >= sizeof(key) || m.value_len == 0 || m.value_len > 18)
			return "a revocation is not a public key and a time";
		memcpy(key, m.key, m.key_len);
		key[m.key_len] = '\0';
		for (size_t i = 0; i < m.value_len; i++)
		{
			if (m.value[i] < '0' || m.value[i] > '9')
				return "a revocation's time is not an integer";
			at = at * 10 + (m.value[i] - '0');
		}
		fn(key, at, arg);
	}
	return r < 0 ? "nats.revocations is malformed" : NULL;
}

/* One revocation of a claims' into the JSON object being written (isa_nats_claims_revocations_json). */
typedef struct RevocationsOut
{
	Out			o;
	int			n;
	const char *err;
} RevocationsOut;

static void
out_revocation(const char *key, long long at, void *arg)
{
	RevocationsOut *r = arg;

	if (strcmp(key, "*") != 0 && isa_nkey_check_public(key, ISA_NKEY_USER))
		r->err = "a revoked key is a user's public key (U…)";
	if (r->n++ > 0)
		out_str(&r->o, ",");
	out_json(&r->o, key);
	out_fmt(&r->o, ":%lld", at);
}

const char *
isa_nats_claims_revocations_json(const char *claims, char *buf, size_t len)
{
	RevocationsOut r = {{buf, len, 0, 0}, 0, NULL};
	const char *err;

	out_str(&r.o, "{");
	err = isa_nats_claims_revocations(claims, out_revocation, &r);
	out_str(&r.o, "}");
	return err ? err : r.err ? r.err : out_done(&r.o);
}

const char *
isa_nats_revocations_json(char *buf, size_t len, const char *const *keys, const long long *at, int n)
{
	Out			o = {buf, len, 0, 0};

	out_str(&o, "{");
	for (int i = 0; i < n; i++)
	{
		/* "*" revokes every user of the account: kept if there, never made here */
		if (strcmp(keys[i], "*") != 0 && isa_nkey_check_public(keys[i], ISA_NKEY_USER))
			return "a revoked key is a user's public key (U…)";
		if (at[i] <= 0)
			return "a revocation's time is a positive number of seconds";
		if (i > 0)
			out_str(&o, ",");
		out_json(&o, keys[i]);
		out_fmt(&o, ":%lld", at[i]);
	}
	out_str(&o, "}");
	return out_done(&o);
}

const char *
isa_nats_account_reissue(char *out, size_t len, char *work, size_t work_len, const char *signing_seed,
						 const char *claims, const char *revocations, long long iat)
{
	char		sub[ISA_NKEY_PUBLIC_SIZE],
				name[256];
	size_t		nats_len = 0;
	const char *nats = member_value(claims, "nats", &nats_len);
	const char *p;
	Out			o = {work, work_len, 0, 0};
	Member		m;
	int			r,
				n = 0;
	const char *err;

	if (!member_string(claims, "sub", sub, sizeof(sub)) || isa_nkey_check_public(sub, ISA_NKEY_ACCOUNT))
		return "the claims are not an account's (sub A…)";
	if (!member_string(claims, "name", name, sizeof(name)))
		name[0] = '\0';
	if (nats == NULL || *nats != '{')
		return "the claims have no nats object";
	/* the nats object again, its revocations replaced, into work */
	out_str(&o, "{");
	p = nats;
	while ((r = next_member(&p, &m)) == 1)
	{
		if (m.key_len == strlen("revocations") && strncmp(m.key, "revocations", m.key_len) == 0)
			continue;
		if (n++ > 0)
			out_str(&o, ",");
		out_str(&o, "\"");		/* the key is plain (next_member): copied as it is */
		out_raw(&o, m.key, m.key_len);
		out_str(&o, "\":");
		out_raw(&o, m.value, m.value_len);
	}
	if (r == 0 && revocations && strcmp(revocations, "{}") != 0)
	{
		out_str(&o, n > 0 ? ",\"revocations\":" : "\"revocations\":");
		out_str(&o, revocations);
	}
	out_str(&o, "}");
	err = r < 0 ? "the nats object of the claims is malformed" : out_done(&o);
	if (err == NULL)
		err = isa_nats_jwt_encode(out, len, signing_seed, sub, name, iat, member_integer(claims, "exp"), work);
	return err;
}
