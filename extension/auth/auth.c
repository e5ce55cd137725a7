/*
 * auth.c — C for the auth service (sql/auth/auth.sql, docs/services/auth.md):
 * password hashing (argon2id) and Ed25519 keys, signatures and their
 * verification.  The settings are in auth_settings.c, the shared-memory tables
 * in auth_shmem.c, JWT signing and the SQL side of verification in jwt.c, the
 * verification rules (shared with isa-httpd) in jwt_verify.c.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "isa.h"
#include "auth.h"

/* ---------------------------------------------------------------- passwords */

static unsigned long long
memlimit_bytes(void)
{
	return (unsigned long long) isa_password_memlimit * 1024;
}

static void
hash_password(char *out, const char *password, size_t len)
{
	isa_crypto_init();
	if (crypto_pwhash_str_alg(out, password, len,
							  (unsigned long long) isa_password_opslimit, (size_t) memlimit_bytes(),
							  crypto_pwhash_ALG_ARGON2ID13) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not hash the password: out of memory"),
				 errdetail("argon2id needs %d kB (isa.password_memlimit).", isa_password_memlimit)));
}

/* auth._hash_password(password text) RETURNS text: $argon2id$v=19$m=...,t=...,p=1$salt$hash */
PG_FUNCTION_INFO_V1(isa_auth_hash_password);
Datum
isa_auth_hash_password(PG_FUNCTION_ARGS)
{
	text	   *password = PG_GETARG_TEXT_PP(0);
	char		out[crypto_pwhash_STRBYTES];

	hash_password(out, VARDATA_ANY(password), VARSIZE_ANY_EXHDR(password));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * A hash of a random password made with the current parameters, per backend:
 * verifying against it costs what verifying a real hash costs, so a login for
 * an unknown address takes as long as one with a wrong password.
 */
static char dummy_hash[crypto_pwhash_STRBYTES];
static int	dummy_opslimit = 0;
static int	dummy_memlimit = 0;

static const char *
get_dummy_hash(void)
{
	if (dummy_opslimit != isa_password_opslimit || dummy_memlimit != isa_password_memlimit)
	{
		unsigned char random_password[32];

		randombytes_buf(random_password, sizeof(random_password));
		hash_password(dummy_hash, (const char *) random_password, sizeof(random_password));
		dummy_opslimit = isa_password_opslimit;
		dummy_memlimit = isa_password_memlimit;
	}
	return dummy_hash;
}

/*
 * auth._verify_password(hash text, password text) RETURNS boolean: whether
 * password matches hash (libsodium's verification is constant-time).  A NULL
 * hash (no such user, no password) verifies against a dummy hash and is false.
 */
PG_FUNCTION_INFO_V1(isa_auth_verify_password);
Datum
isa_auth_verify_password(PG_FUNCTION_ARGS)
{
	text	   *password;
	char	   *hash;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("password must not be null")));
	password = PG_GETARG_TEXT_PP(1);
	isa_crypto_init();
	if (PG_ARGISNULL(0))
	{
		volatile int ignored = crypto_pwhash_str_verify(get_dummy_hash(), VARDATA_ANY(password),
														VARSIZE_ANY_EXHDR(password));

		(void) ignored;
		PG_RETURN_BOOL(false);
	}
	hash = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(hash) >= crypto_pwhash_STRBYTES)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(crypto_pwhash_str_verify(hash, VARDATA_ANY(password),
											VARSIZE_ANY_EXHDR(password)) == 0);
}

/* auth._password_needs_rehash(hash text) RETURNS boolean: made with other parameters (or not argon2id) */
PG_FUNCTION_INFO_V1(isa_auth_password_needs_rehash);
Datum
isa_auth_password_needs_rehash(PG_FUNCTION_ARGS)
{
	char	   *hash = text_to_cstring(PG_GETARG_TEXT_PP(0));

	isa_crypto_init();
	if (strncmp(hash, crypto_pwhash_argon2id_STRPREFIX, strlen(crypto_pwhash_argon2id_STRPREFIX)) != 0)
		PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(crypto_pwhash_str_needs_rehash(hash, (unsigned long long) isa_password_opslimit,
												  (size_t) memlimit_bytes()) != 0);
}

/* ---------------------------------------------------------------- Ed25519 */

static bytea *
make_bytea(const unsigned char *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	memcpy(VARDATA(b), data, len);
	SET_VARSIZE(b, VARHDRSZ + len);
	return b;
}

/* auth._ed25519_keypair(OUT public_key bytea, OUT secret_key bytea): a new key pair (32 + 64 bytes) */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_keypair);
Datum
isa_auth_ed25519_keypair(PG_FUNCTION_ARGS)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	isa_crypto_init();
	crypto_sign_keypair(pk, sk);
	values[0] = PointerGetDatum(make_bytea(pk, sizeof(pk)));
	values[1] = PointerGetDatum(make_bytea(sk, sizeof(sk)));
	sodium_memzero(sk, sizeof(sk));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* auth._ed25519_sign(secret_key bytea, message bytea) RETURNS bytea: the 64-byte detached signature */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_sign);
Datum
isa_auth_ed25519_sign(PG_FUNCTION_ARGS)
{
	bytea	   *sk = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	unsigned char sig[crypto_sign_BYTES];

	if (VARSIZE_ANY_EXHDR(sk) != crypto_sign_SECRETKEYBYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an Ed25519 secret key has %d bytes, not %d",
						crypto_sign_SECRETKEYBYTES, (int) VARSIZE_ANY_EXHDR(sk))));
	isa_crypto_init();
	crypto_sign_detached(sig, NULL, (const unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg),
						 (const unsigned char *) VARDATA_ANY(sk));
	PG_RETURN_BYTEA_P(make_bytea(sig, sizeof(sig)));
}

/*
 * auth._ed25519_verify(public_key bytea, message bytea, signature bytea)
 * RETURNS boolean: false for a key or signature of the wrong length too.
 */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_verify);
Datum
isa_auth_ed25519_verify(PG_FUNCTION_ARGS)
{
	bytea	   *pk = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	bytea	   *sig = PG_GETARG_BYTEA_PP(2);

	if (VARSIZE_ANY_EXHDR(pk) != crypto_sign_PUBLICKEYBYTES || VARSIZE_ANY_EXHDR(sig) != crypto_sign_BYTES)
		PG_RETURN_BOOL(false);
	isa_crypto_init();
	PG_RETURN_BOOL(crypto_sign_verify_detached((const unsigned char *) VARDATA_ANY(sig),
											   (const unsigned char *) VARDATA_ANY(msg),
											   VARSIZE_ANY_EXHDR(msg),
											   (const unsigned char *) VARDATA_ANY(pk)) == 0);
}
