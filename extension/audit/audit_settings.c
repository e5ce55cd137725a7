/*
 * audit_settings.c — the audit service's setting (docs/services/audit.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_audit_define_gucs(): how many months of the trail the retention job
 * keeps.  sql/audit/audit.sql reads it through audit._retention_months().
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_audit_retention_months = 84;	/* seven years */

void
isa_audit_define_gucs(void)
{
	/* superuser: whoever may shorten the trail may erase it */
	DefineCustomIntVariable("isa.audit_retention_months",
							"Months of the audit trail kept: older monthly partitions are dropped whole.",
							"audit.drop_expired_partitions() (pg_cron, daily) applies it; a partition goes when its month ended more than this many months ago.",
							&isa_audit_retention_months, 84, 1, 1200,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_audit_retention_months_setting);

/* audit._retention_months() RETURNS integer: isa.audit_retention_months */
Datum
isa_audit_retention_months_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_audit_retention_months);
}
