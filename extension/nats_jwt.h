/*
 * nats_jwt.h — NATS nkeys and JWTs (nats-server's operator/JWT mode), minted
 * by isa itself: plain C over libsodium with caller-provided buffers, no
 * PostgreSQL, so that the extension (extension/nats.c: isa.nats_*) and the
 * command-line program tools/isa-nats-keys share one implementation.
 * docs/bridge.md, "Securing NATS", says who holds which credential.
 *
 * Every function returns NULL on success or a message saying what is wrong
 * (never a key's value).
 */
#ifndef ISA_NATS_JWT_H
#define ISA_NATS_JWT_H

#include <stddef.h>

/* lengths of the encoded keys, plus the terminating NUL */
#define ISA_NKEY_SEED_SIZE 59	/* 'S', type, base32 of prefix + 32-byte seed + CRC16 */
#define ISA_NKEY_PUBLIC_SIZE 57 /* type, base32 of prefix + 32-byte key + CRC16 */

/* the kinds of key isa uses: the first letter of a public key */
#define ISA_NKEY_OPERATOR 'O'
#define ISA_NKEY_ACCOUNT 'A'
#define ISA_NKEY_USER 'U'

/* A user's permissions: lists of subjects (NULL-terminated arrays, or NULL). */
typedef struct IsaNatsPermissions
{
	const char *const *pub_allow;
	const char *const *pub_deny;
	const char *const *sub_allow;
	const char *const *sub_deny;
} IsaNatsPermissions;

/*
 * A scoped signing key of an account (nats-server 2.9: signing_keys entry of
 * kind user_scope): the users it signs carry no permissions of their own, the
 * server gives them the template's, where {{name()}} stands for the user JWT's
 * name; bearer_token lets a client connect with the JWT alone (MQTT's password).
 */
typedef struct IsaNatsScopedKey
{
	const char *key;			/* the signing key's public key (A…); NULL ends a list */
	const char *role;
	IsaNatsPermissions perms;
	int			bearer_token;
} IsaNatsScopedKey;

/* A new random seed of a kind (O, A or U). */
extern const char *isa_nkey_generate(char kind, char seed[ISA_NKEY_SEED_SIZE]);

/* The public key of a seed, and its kind (O, A or U); an error for a bad seed. */
extern const char *isa_nkey_public(const char *seed, char public_key[ISA_NKEY_PUBLIC_SIZE], char *kind);

/* Whether text is a valid public key of that kind (0: any kind). */
extern const char *isa_nkey_check_public(const char *public_key, char kind);

/*
 * The "nats" object of a JWT's claims, as JSON, into buf:
 *   operator: system_account may be NULL; signing_keys (O…) NULL-terminated or NULL:
 *            they may sign accounts in its name (tools/isa-nats-revoker holds one);
 *   account: JetStream enabled (unlimited) or not; signing_keys NULL-terminated or NULL;
 *            scoped signing keys ended by one whose key is NULL, or NULL;
 *            revocations: a JSON object from isa_nats_revocations_json, or NULL;
 *   user: issuer_account is the account's public key when the user is signed
 *         by one of its signing keys, else NULL;
 *   scoped user: signed by a scoped signing key of issuer_account, without
 *         permissions or limits (the server refuses a scoped user that has any).
 */
extern const char *isa_nats_operator_claims(char *buf, size_t len, const char *system_account,
											const char *const *signing_keys);
extern const char *isa_nats_account_claims(char *buf, size_t len, int jetstream,
										   const char *const *signing_keys,
										   const IsaNatsScopedKey *scoped_keys,
										   const char *revocations);
extern const char *isa_nats_user_claims(char *buf, size_t len, const IsaNatsPermissions *perms,
										const char *issuer_account);
extern const char *isa_nats_scoped_user_claims(char *buf, size_t len, const char *issuer_account);

/*
 * A JWT for subject (a public key) named name, with the nats object
 * nats_json, issued at iat and expiring at exp (0: never, in seconds since
 * the epoch), signed by issuer_seed.
 */
extern const char *isa_nats_jwt_encode(char *out, size_t len, const char *issuer_seed,
									   const char *subject, const char *name, long long iat,
									   long long exp, const char *nats_json);

/*
 * The claims (JSON) of a NATS JWT whose signature verifies against the
 * public key of its iss claim; an error for anything else.
 */
extern const char *isa_nats_jwt_decode(char *claims, size_t len, const char *jwt);

/* A creds file (user JWT and seed), as nats clients read it. */
extern const char *isa_nats_creds(char *out, size_t len, const char *jwt, const char *seed);

/*
 * Revocations of users in an account JWT (nats-server 2.9): its
 * nats.revocations maps a user's public key to a time; the server refuses a
 * user JWT of that key issued at or before it, and closes the connections of
 * such users when the account JWT arrives (docs/services/device.md,
 * "Revocation").
 */

/* A top-level integer (iat, exp; 0 if absent) or plain string (sub, name) member of claims. */
extern long long isa_nats_claims_integer(const char *claims, const char *key);
extern int	isa_nats_claims_string(const char *claims, const char *key, char *out, size_t cap);

/* Whether the list nats.<list> of claims (an operator's signing_keys) holds value. */
extern int	isa_nats_claims_lists(const char *claims, const char *list, const char *value);

/* Calls fn for each revocation of an account's claims (none: no call). */
extern const char *isa_nats_claims_revocations(const char *claims,
											   void (*fn) (const char *key, long long at, void *arg),
											   void *arg);

/* The revocations of an account's claims as a JSON object ("{}": none), each checked. */
extern const char *isa_nats_claims_revocations_json(const char *claims, char *buf, size_t len);

/* The JSON object of n revocations: user public keys (or "*") and their times. */
extern const char *isa_nats_revocations_json(char *buf, size_t len, const char *const *keys,
											 const long long *at, int n);

/*
 * The account JWT of claims (an account's, as isa_nats_jwt_decode gives
 * them) issued again at iat by signing_seed (the operator's, or one of its
 * signing keys), with its nats.revocations replaced by revocations (a JSON
 * object; NULL or "{}": none).  Its sub, name, exp and every other member of
 * nats stay; other top-level claims (aud, nbf: isa sets none) are dropped.
 * work is scratch space as long as the claims and the revocations together.
 */
extern const char *isa_nats_account_reissue(char *out, size_t len, char *work, size_t work_len,
											const char *signing_seed, const char *claims,
											const char *revocations, long long iat);

#endif
