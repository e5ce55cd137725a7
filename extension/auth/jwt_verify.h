/*
 * jwt_verify.h — the one verification of auth's tokens, compiled into isa.so
 * (extension/auth/jwt.c) and into isa-httpd (httpd/jwt.c).  Plain C over
 * libsodium: no PostgreSQL, no allocation; the caller gives the buffers,
 * finds the key of a kid and turns a verdict into its own error (SQLSTATE
 * 28000 in the backend, 401 in isa-httpd).  The rules are those of
 * docs/services/auth.md, "Verification".
 */
#ifndef ISA_JWT_VERIFY_H
#define ISA_JWT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The algorithms (isa.jwt_algorithm, isa-httpd's jwt_algorithm): fixed by configuration, never by the token. */
#define ISA_JWT_EDDSA 0
#define ISA_JWT_HS256 1

#define ISA_JWT_MAX_TOKEN 8192	/* characters of a token */
#define ISA_JWT_MAX_KID 64		/* a kid is 1 to 64 of A-Z a-z 0-9 - _ */
#define ISA_JWT_MIN_SECRET 32	/* bytes of an HS256 secret */
#define ISA_JWT_MAX_SUB 256		/* bytes of sub (a user or device id) */

typedef enum IsaJwtVerdict
{
	ISA_JWT_OK = 0,
	ISA_JWT_TOO_LONG,			/* more than ISA_JWT_MAX_TOKEN characters */
	ISA_JWT_MALFORMED,			/* not three segments, or an empty header or payload */
	ISA_JWT_MALFORMED_HEADER,	/* not base64url of a JSON object; a repeated member; alg, kid or typ not a string */
	ISA_JWT_NO_ALGORITHM,
	ISA_JWT_WRONG_ALGORITHM,	/* alg is not the configured algorithm (none included) */
	ISA_JWT_BAD_TYP,			/* typ present and not JWT */
	ISA_JWT_CRIT,				/* a crit member: no extension is understood */
	ISA_JWT_NO_KID,				/* kid absent or not 1 to 64 of A-Z a-z 0-9 - _ */
	ISA_JWT_UNKNOWN_KEY,		/* the caller's verdict: no key has this kid */
	ISA_JWT_KEY_RETIRED,		/* the caller's verdict: the kid's key is retired */
	ISA_JWT_MALFORMED_SIGNATURE,	/* not base64url */
	ISA_JWT_BAD_SIGNATURE,
	ISA_JWT_MALFORMED_CLAIMS,	/* not base64url of a JSON object (UTF-8, no repeated member, no \u0000) */
	ISA_JWT_NO_EXP,
	ISA_JWT_TIME_NOT_NUMBER,	/* exp, nbf or iat (IsaJwt.bad_claim) not a number */
	ISA_JWT_EXPIRED,
	ISA_JWT_NOT_YET_VALID,		/* nbf in the future */
	ISA_JWT_ISSUED_IN_FUTURE,	/* iat in the future */
	ISA_JWT_WRONG_ISSUER,		/* iss absent or not the configured issuer */
	ISA_JWT_WRONG_AUDIENCE,		/* aud neither the configured audience nor an array holding it */
	ISA_JWT_NO_SUBJECT			/* sub absent, not a string, empty or too long */
} IsaJwtVerdict;

/* What the claims are checked against. */
typedef struct IsaJwtPolicy
{
	const char *issuer;
	const char *audience;
	int			clock_skew;		/* seconds of tolerance on exp, nbf, iat */
	int64_t		now;			/* Unix seconds */
} IsaJwtPolicy;

/*
 * A token being verified: filled by isa_jwt_parse (segments and header), then
 * isa_jwt_verify (the claims).  About 20 kB: a caller keeps it on its stack.
 */
typedef struct IsaJwt
{
	/* the segments, pointing into the caller's token */
	const char *signing_input;	/* header.payload, what the signature covers */
	size_t		signing_len;
	const char *payload_b64;
	size_t		payload_b64_len;
	const char *signature_b64;
	size_t		signature_b64_len;

	/* the header */
	char		alg[24];		/* with ISA_JWT_WRONG_ALGORITHM: the token's alg when printable, else "" */
	char		kid[ISA_JWT_MAX_KID + 1];

	/* the claims, once verified: the JSON text, NUL-terminated, in buf */
	const char *claims;
	size_t		claims_len;
	double		exp;
	double		nbf;			/* -1e18 when absent */
	double		iat;			/* -1e18 when absent */
	char		sub[ISA_JWT_MAX_SUB + 1];
	const char *bad_claim;		/* with ISA_JWT_TIME_NOT_NUMBER: "exp", "nbf" or "iat" */

	/* scratch: a decoded segment, and the unescaped member names of the parse */
	unsigned char buf[ISA_JWT_MAX_TOKEN];
	char		names[ISA_JWT_MAX_TOKEN];
	uint16_t	name_at[2048];
} IsaJwt;

/*
 * Splits a token and checks its header: the length, three segments, the
 * header a JSON object whose alg is the configured algorithm, typ absent or
 * JWT, no crit, a valid kid (jwt->kid).  The key of that kid is the caller's
 * to find.  libsodium must be initialised.
 */
extern IsaJwtVerdict isa_jwt_parse(IsaJwt *jwt, const char *token, size_t len, int algorithm);

/*
 * After isa_jwt_parse: the signature with the key of the kid (EdDSA: the
 * 32-byte Ed25519 public key; HS256: the secret's bytes), then the claims:
 * exp required and not passed, nbf and iat not in the future (each with
 * clock_skew), iss and aud, and sub.  The claims' text is jwt->claims.
 */
extern IsaJwtVerdict isa_jwt_verify(IsaJwt *jwt, int algorithm, const unsigned char *key, size_t keylen,
									const IsaJwtPolicy *policy);

/* The kid of an HS256 secret: 16 hex digits of HMAC-SHA256(secret, "isa-jwt-kid"), NUL-terminated. */
extern void isa_jwt_hs256_kid(const char *secret, char out[17]);

/* The HS256 secret a kid names: current, previous (NULL or "" when none), or NULL. */
extern const char *isa_jwt_hs256_secret(const char *kid, const char *current, const char *previous);

/* Whether a kid is 1 to ISA_JWT_MAX_KID characters of A-Z a-z 0-9 - _ (what auth signs under). */
extern bool isa_jwt_valid_kid(const char *kid);

/* The reason of a verdict, as auth words it ("expired", "bad signature" …). */
extern const char *isa_jwt_verdict_text(IsaJwtVerdict verdict);

#endif							/* ISA_JWT_VERIFY_H */
