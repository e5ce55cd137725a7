/*
 * session_settings.c — the session service's settings (docs/services/session.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_session_define_gucs(): the balance a user's wallet must hold to start
 * an AI chat session, and how long a session may stay silent before the idle
 * job ends it.  The service reads them in SQL (sql/session/session.sql)
 * through the readers below.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_session_min_balance = 1;	/* tokens */
static int	isa_session_idle_timeout = 1800;	/* seconds */

void
isa_session_define_gucs(void)
{
	/* superuser: an application must not lower the bar for its own calls */
	DefineCustomIntVariable("isa.session_min_balance",
							"Tokens a user's wallet must hold to start an AI chat session (0: no check).",
							"session.start_session refuses a user below it (wallet.check_balance).",
							&isa_session_min_balance, 1, 0, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.session_idle_timeout",
							"How long an AI chat session may go without a message before it is ended.",
							"session.end_idle_sessions() (pg_cron, every minute) applies it.",
							&isa_session_idle_timeout, 1800, 60, 30 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_session_min_balance_setting);

/* session._min_balance() RETURNS integer: isa.session_min_balance in tokens */
Datum
isa_session_min_balance_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_session_min_balance);
}

PG_FUNCTION_INFO_V1(isa_session_idle_timeout_setting);

/* session._idle_timeout() RETURNS integer: isa.session_idle_timeout in seconds */
Datum
isa_session_idle_timeout_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_session_idle_timeout);
}
