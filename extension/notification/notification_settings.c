/*
 * notification_settings.c — the notification service's own settings
 * (docs/services/notification.md, docs/configuration.md), registered by
 * _PG_init through isa_notification_define_gucs(): how often and how far
 * apart a failed email or webhook delivery is tried again, how long an MQTT
 * notification waits for a device, and whether webhooks may name private
 * addresses.  The service reads them in SQL (sql/notification/notification.sql)
 * through the readers below.  The senders' settings (SMTP, timeouts) are the
 * senders' own, in another file of this folder.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_notification_max_attempts = 5;
static int	isa_notification_retry_base = 1;	/* seconds */
static int	isa_notification_retry_max = 300;	/* seconds */
static int	isa_notification_mqtt_ttl = 3600;	/* seconds */
static bool isa_notification_webhook_private = false;

void
isa_notification_define_gucs(void)
{
	DefineCustomIntVariable("isa.notification_max_attempts",
							"Attempts of an email or webhook delivery before it fails and the next channel is tried.",
							"notification.record_delivery applies it to transient failures.",
							&isa_notification_max_attempts, 5, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.notification_retry_base",
							"Backoff before the second attempt of a failed delivery; it doubles with each attempt (full jitter).",
							NULL,
							&isa_notification_retry_base, 1, 1, 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.notification_retry_max",
							"The longest backoff between two attempts of a delivery.",
							NULL,
							&isa_notification_retry_max, 300, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.notification_mqtt_ttl",
							"How long an MQTT notification (device command notification.show) waits for a device to take it.",
							NULL,
							&isa_notification_mqtt_ttl, 3600, 60, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	/* superuser: an application must not open the internal network to its users' webhooks */
	DefineCustomBoolVariable("isa.notification_webhook_private",
							 "Whether a webhook may name localhost or a loopback, private or link-local address (tests, closed networks).",
							 NULL,
							 &isa_notification_webhook_private, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_notification_settings);

/*
 * notification._settings(OUT max_attempts integer, OUT retry_base integer,
 * OUT retry_max integer, OUT mqtt_ttl integer, OUT webhook_private boolean)
 */
Datum
isa_notification_settings(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "notification._settings must return a record");
	values[0] = Int32GetDatum(isa_notification_max_attempts);
	values[1] = Int32GetDatum(isa_notification_retry_base);
	values[2] = Int32GetDatum(Max(isa_notification_retry_max, isa_notification_retry_base));
	values[3] = Int32GetDatum(isa_notification_mqtt_ttl);
	values[4] = BoolGetDatum(isa_notification_webhook_private);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
