/*
 * notification_wake_stub.c — a weak stand-in for isa_notification_wake, the C
 * function behind notification._wake(channel) (sql/notification/notification.sql),
 * so that the notification service's SQL installs and runs on a build without
 * the senders (docs/services/notification.md, "Senders").  The senders' file of
 * this folder defines the real one, a strong symbol that the linker takes
 * instead of these; this file can then go.  It does nothing: a delivery waits
 * for a sender's own timer.
 */
#include "postgres.h"

#include "fmgr.h"

extern PGDLLEXPORT Datum isa_notification_wake(PG_FUNCTION_ARGS) __attribute__((weak));
extern PGDLLEXPORT const Pg_finfo_record *pg_finfo_isa_notification_wake(void) __attribute__((weak));

const Pg_finfo_record *
pg_finfo_isa_notification_wake(void)
{
	static const Pg_finfo_record finfo = {1};

	return &finfo;
}

Datum
isa_notification_wake(PG_FUNCTION_ARGS)
{
	PG_RETURN_VOID();
}
