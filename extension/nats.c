/*
 * nats.c — the SQL functions that mint NATS credentials (isa.nats_*), over
 * the one implementation of nkeys and JWTs in nats_jwt.c (which
 * tools/isa-nats-keys compiles too).  The device service will mint each
 * device's credential with them.  Callers: superusers and isa_admin (a seed
 * passed here signs credentials).  Docs: docs/core.md, "NATS credentials";
 * docs/bridge.md, "Securing NATS".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include <time.h>

#include "isa.h"
#include "nats_jwt.h"

static void
invalid(const char *what, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: %s", what, why)));
}

/*
 * The subjects of a text[] as a NULL-terminated array; each must be a NATS
 * subject (no blank, not empty; NULLs are refused).  *total grows by their
 * length, to size the JWT's buffer.
 */
static const char **
subject_list(ArrayType *arr, const char *what, size_t *total)
{
	Datum	   *items;
	bool	   *nulls;
	int			n;
	const char **out;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &items, &nulls, &n);
	out = palloc0(sizeof(char *) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		char	   *s;

		if (nulls[i])
			invalid(what, "a subject is NULL");
		s = TextDatumGetCString(items[i]);
		if (*s == '\0' || strpbrk(s, " \t\r\n") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: \"%s\" is not a NATS subject", what, s),
					 errhint("A subject is tokens separated by dots, without blanks; * and > are wildcards.")));
		out[i] = s;
		*total += strlen(s) * 2 + 8;	/* escaped, quoted, separated */
	}
	return out;
}

/* isa.nats_nkey_create(kind text) RETURNS text: a new seed (SO…, SA…, SU…) */
PG_FUNCTION_INFO_V1(isa_nats_nkey_create);
Datum
isa_nats_nkey_create(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		seed[ISA_NKEY_SEED_SIZE];
	char		k;
	const char *err;
	text	   *result;

	if (strcmp(kind, "operator") == 0)
		k = ISA_NKEY_OPERATOR;
	else if (strcmp(kind, "account") == 0)
		k = ISA_NKEY_ACCOUNT;
	else if (strcmp(kind, "user") == 0)
		k = ISA_NKEY_USER;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kind of nkey \"%s\"", kind),
				 errhint("The kinds are operator, account and user.")));
	err = isa_nkey_generate(k, seed);
	if (err)
		elog(ERROR, "%s", err);
	result = cstring_to_text(seed);
	explicit_bzero(seed, sizeof(seed));
	PG_RETURN_TEXT_P(result);
}

/* isa.nats_nkey_public(seed text) RETURNS text */
PG_FUNCTION_INFO_V1(isa_nats_nkey_public);
Datum
isa_nats_nkey_public(PG_FUNCTION_ARGS)
{
	char	   *seed = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		pub[ISA_NKEY_PUBLIC_SIZE];
	const char *err = isa_nkey_public(seed, pub, NULL);

	explicit_bzero(seed, strlen(seed));
	if (err)
		invalid("invalid nkey seed", err);
	PG_RETURN_TEXT_P(cstring_to_text(pub));
}

/*
 * A new user, its JWT signed by signing_seed (an account's seed or one of its
 * signing keys: then account names the account), as a record (public_key,
 * jwt, creds); perms NULL: a user of a scoped signing key, whose permissions
 * are the scope's.  signing_seed is wiped.
 */
static Datum
mint_user(FunctionCallInfo fcinfo, char *signing_seed, const char *name, const IsaNatsPermissions *perms,
		  size_t total, const char *account, long long exp)
{
	char		signer[ISA_NKEY_PUBLIC_SIZE],
				kind = 0,
				user_seed[ISA_NKEY_SEED_SIZE],
				user_pub[ISA_NKEY_PUBLIC_SIZE];
	char	   *nats_json,
			   *jwt,
			   *creds;
	size_t		jwt_len,
				creds_len;
	const char *err;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "a NATS credential must be returned as a record");
	err = isa_nkey_public(signing_seed, signer, &kind);
	if (err)
		invalid("invalid signing seed", err);
	if (kind != ISA_NKEY_ACCOUNT)
		invalid("invalid signing seed", "a user is signed by an account's seed or signing key (SA…)");
	if (account && (err = isa_nkey_check_public(account, ISA_NKEY_ACCOUNT)) != NULL)
		invalid("invalid account", err);
	if (account && strcmp(account, signer) == 0)
		account = NULL;			/* signed by the account itself: no issuer_account */
	if (perms == NULL && account == NULL)
		invalid("invalid account", "a scoped signing key signs for its account: name it (A…), not the key itself");
	total += strlen(name) * 6;

	nats_json = palloc(total);
	err = perms ? isa_nats_user_claims(nats_json, total, perms, account) :
		isa_nats_scoped_user_claims(nats_json, total, account);
	if (err)
		invalid("nats_user_credentials", err);
	err = isa_nkey_generate(ISA_NKEY_USER, user_seed);
	if (err == NULL)
		err = isa_nkey_public(user_seed, user_pub, NULL);
	if (err)
		elog(ERROR, "%s", err);
	jwt_len = total * 3 + 1024;
	jwt = palloc(jwt_len);
	err = isa_nats_jwt_encode(jwt, jwt_len, signing_seed, user_pub, name, (long long) time(NULL), exp,
							  nats_json);
	explicit_bzero(signing_seed, strlen(signing_seed));
	if (err)
		invalid("nats_user_credentials", err);
	creds_len = strlen(jwt) + 1024;
	creds = palloc(creds_len);
	err = isa_nats_creds(creds, creds_len, jwt, user_seed);
	explicit_bzero(user_seed, sizeof(user_seed));
	if (err)
		elog(ERROR, "%s", err);

	values[0] = CStringGetTextDatum(user_pub);
	values[1] = CStringGetTextDatum(jwt);
	values[2] = CStringGetTextDatum(creds);
	explicit_bzero(creds, creds_len);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* expires_at as seconds since the epoch (0: NULL, never); 22023 if it is past */
static long long
expiry_argument(FunctionCallInfo fcinfo, int argno)
{
	TimestampTz ts;

	if (PG_ARGISNULL(argno))
		return 0;
	ts = PG_GETARG_TIMESTAMPTZ(argno);
	if (ts <= GetCurrentTimestamp())
		invalid("nats_user_credentials", "expires_at is not in the future");
	return (long long) timestamptz_to_time_t(ts);
}

/*
 * isa.nats_user_credentials(signing_seed, name, publish, subscribe, account,
 * expires_at) RETURNS (public_key, jwt, creds): a new user, its JWT signed by
 * the account's seed or one of its signing keys (then account names the
 * account), allowed to publish and subscribe to the subjects given.
 */
PG_FUNCTION_INFO_V1(isa_nats_user_credentials);
Datum
isa_nats_user_credentials(PG_FUNCTION_ARGS)
{
	size_t		total = 1024;
	IsaNatsPermissions perms = {0};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		invalid("nats_user_credentials", "signing_seed, name, publish and subscribe must not be NULL");
	perms.pub_allow = subject_list(PG_GETARG_ARRAYTYPE_P(2), "publish", &total);
	perms.sub_allow = subject_list(PG_GETARG_ARRAYTYPE_P(3), "subscribe", &total);
	return mint_user(fcinfo, text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
					 &perms, total, PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4)),
					 expiry_argument(fcinfo, 5));
}

/*
 * isa.nats_scoped_user_credentials(signing_seed, name, account, expires_at)
 * RETURNS (public_key, jwt, creds): a new user of a scoped signing key of
 * account; the server gives it the scope's permissions (with {{name()}}
 * standing for name) and, if the scope says so, lets it connect with the
 * JWT alone (bearer).
 */
PG_FUNCTION_INFO_V1(isa_nats_scoped_user_credentials);
Datum
isa_nats_scoped_user_credentials(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		invalid("nats_scoped_user_credentials", "signing_seed, name and account must not be NULL");
	return mint_user(fcinfo, text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
					 NULL, 1024, text_to_cstring(PG_GETARG_TEXT_PP(2)), expiry_argument(fcinfo, 3));
}

/* isa.nats_jwt_claims(jwt text) RETURNS jsonb: the claims, once the signature verifies */
PG_FUNCTION_INFO_V1(isa_nats_jwt_claims);
Datum
isa_nats_jwt_claims(PG_FUNCTION_ARGS)
{
	char	   *jwt = text_to_cstring(PG_GETARG_TEXT_PP(0));
	size_t		len = strlen(jwt) + 1;
	char	   *claims = palloc(len);
	const char *err = isa_nats_jwt_decode(claims, len, jwt);

	if (err)
		invalid("invalid NATS JWT", err);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(claims)));
}
