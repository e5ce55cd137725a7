/*
 * event_settings.c — the event store's settings (docs/services/event.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_event_define_gucs(): how many months of events the store keeps and how
 * many months of partitions event.maintain_partitions() creates ahead.  The
 * service reads them in SQL (sql/event/event.sql) through the readers below.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_event_retention_months = 13;
static int	isa_event_partitions_ahead = 2;

void
isa_event_define_gucs(void)
{
	/* superuser: the store holds every user's events; an application must not shorten or stretch it */
	DefineCustomIntVariable("isa.event_retention_months",
							"Months the event store keeps an event after the end of its month.",
							"event.maintain_partitions() (pg_cron, daily) drops the monthly partitions past it.",
							&isa_event_retention_months, 13, 1, 1200,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.event_partitions_ahead",
							"Monthly partitions of the event store created ahead of the current month.",
							"event.maintain_partitions() (pg_cron, daily) creates them.",
							&isa_event_partitions_ahead, 2, 0, 24,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_event_retention_months_setting);

/* event._retention_months() RETURNS integer: isa.event_retention_months */
Datum
isa_event_retention_months_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_event_retention_months);
}

PG_FUNCTION_INFO_V1(isa_event_partitions_ahead_setting);

/* event._partitions_ahead() RETURNS integer: isa.event_partitions_ahead */
Datum
isa_event_partitions_ahead_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_event_partitions_ahead);
}
