/*
 * auth_settings.c — the auth service's settings (isa.jwt_*, isa.refresh_ttl,
 * isa.password_*, isa.login_*; docs/configuration.md, "The auth service"),
 * registered by _PG_init through isa_auth_define_gucs(), and the two C
 * functions through which its SQL reads them.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "isa.h"
#include "auth.h"

/* ---------------------------------------------------------------- settings */

int			isa_jwt_algorithm = ISA_JWT_EDDSA;
char	   *isa_jwt_secret = NULL;
char	   *isa_jwt_previous_secret = NULL;
char	   *isa_jwt_issuer = NULL;
char	   *isa_jwt_audience = NULL;
int			isa_jwt_access_ttl = 900;
int			isa_refresh_ttl = 30 * 24 * 3600;
int			isa_jwt_clock_skew = 30;
int			isa_password_opslimit = 2;
int			isa_password_memlimit = 19 * 1024;	/* kB: OWASP's m=19 MiB, t=2 */
int			isa_login_max_failures = 5;
int			isa_login_failure_window = 900;
int			isa_login_lockout = 900;

static const struct config_enum_entry jwt_algorithm_options[] = {
	{"EdDSA", ISA_JWT_EDDSA, false},
	{"HS256", ISA_JWT_HS256, false},
	{NULL, 0, false}
};

static bool
check_not_empty(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	return true;
}

void
isa_auth_define_gucs(void)
{
	DefineCustomEnumVariable("isa.jwt_algorithm",
							 "The only algorithm auth signs and accepts JWTs with: EdDSA (Ed25519) or HS256.",
							 "The alg of a token's header must equal it; none is never accepted.",
							 &isa_jwt_algorithm, ISA_JWT_EDDSA, jwt_algorithm_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	/*
	 * No check hook on the secrets: PostgreSQL would print the rejected value
	 * in the error.  Their length is checked where they are used.
	 */
	DefineCustomStringVariable("isa.jwt_secret",
							   "HS256 signing secret (at least 32 bytes), used when isa.jwt_algorithm is HS256.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_jwt_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_previous_secret",
							   "The HS256 secret before the last rotation: still accepted for verification.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_jwt_previous_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_issuer",
							   "The iss claim auth writes into tokens and requires of them.",
							   NULL,
							   &isa_jwt_issuer, "isa",
							   PGC_SUSET, 0, check_not_empty, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_audience",
							   "The aud claim auth writes into tokens and requires of them.",
							   NULL,
							   &isa_jwt_audience, "isa",
							   PGC_SUSET, 0, check_not_empty, NULL, NULL);
	DefineCustomIntVariable("isa.jwt_access_ttl",
							"Lifetime of an access token (and of a device token).",
							NULL,
							&isa_jwt_access_ttl, 900, 30, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.refresh_ttl",
							"Lifetime of a refresh token; each refresh issues a new one with a full lifetime.",
							NULL,
							&isa_refresh_ttl, 30 * 24 * 3600, 60, 365 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.jwt_clock_skew",
							"Clock skew tolerated when checking a token's exp, nbf and iat.",
							NULL,
							&isa_jwt_clock_skew, 30, 0, 300,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.password_opslimit",
							"argon2id passes (t) for new password hashes.",
							"Hashes made with other parameters are rehashed at the next successful login.",
							&isa_password_opslimit, 2, 1, 20,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.password_memlimit",
							"argon2id memory (m) for new password hashes.",
							"Hashes made with other parameters are rehashed at the next successful login.",
							&isa_password_memlimit, 19 * 1024, 7 * 1024, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_max_failures",
							"Failed logins for one e-mail address within isa.login_failure_window that lock it.",
							NULL,
							&isa_login_max_failures, 5, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_failure_window",
							"The window in which failed logins are counted.",
							NULL,
							&isa_login_failure_window, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_lockout",
							"How long an e-mail address stays locked after too many failed logins.",
							NULL,
							&isa_login_lockout, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* ---------------------------------------------------------------- settings read by SQL */

/* auth._jwt_algorithm() RETURNS text: 'EdDSA' or 'HS256' */
PG_FUNCTION_INFO_V1(isa_auth_jwt_algorithm);
Datum
isa_auth_jwt_algorithm(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA"));
}

/* auth._lifetime(what text) RETURNS integer: seconds of 'access', 'refresh' or 'skew' */
PG_FUNCTION_INFO_V1(isa_auth_lifetime);
Datum
isa_auth_lifetime(PG_FUNCTION_ARGS)
{
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(what, "access") == 0)
		PG_RETURN_INT32(isa_jwt_access_ttl);
	if (strcmp(what, "refresh") == 0)
		PG_RETURN_INT32(isa_refresh_ttl);
	if (strcmp(what, "skew") == 0)
		PG_RETURN_INT32(isa_jwt_clock_skew);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown lifetime \"%s\"", what),
			 errhint("Use access, refresh or skew.")));
	PG_RETURN_NULL();
}
