/*
 * device_settings.c — the device service's settings (docs/services/device.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_device_define_gucs(): when a silent device counts as offline, and the
 * NATS key that signs the devices' credentials.  The service reads them in
 * SQL (sql/device/device.sql) through the readers below: the signing key is
 * superuser-only and the service's role is no superuser.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_device_offline_after = 90;	/* seconds */
static char *isa_device_nats_signing_key = NULL;
static char *isa_device_nats_account = NULL;
static int	isa_device_nats_ttl = 3600;	/* seconds */

void
isa_device_define_gucs(void)
{
	DefineCustomIntVariable("isa.device_offline_after",
							"How long after its last heartbeat a device is marked offline.",
							"device.mark_offline() (pg_cron, every minute) applies it.",
							&isa_device_offline_after, 90, 10, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	/*
	 * GUC_SUPERUSER_ONLY hides the seed from SHOW and pg_settings for other
	 * roles; the device service's role reads it through
	 * device._nats_signing_key().
	 */
	DefineCustomStringVariable("isa.device_nats_signing_key",
							   "Seed (SA...) of the scoped signing key of the NATS account that signs device credentials.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_device_nats_signing_key, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.device_nats_account",
							   "Public key (A...) of the NATS account whose scoped signing key isa.device_nats_signing_key is.",
							   NULL,
							   &isa_device_nats_account, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.device_nats_ttl",
							"Lifetime of a device's NATS credential.",
							NULL,
							&isa_device_nats_ttl, 3600, 10, 30 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_device_offline_after_setting);

/* device._offline_after() RETURNS integer: isa.device_offline_after in seconds */
Datum
isa_device_offline_after_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(isa_device_offline_after);
}

PG_FUNCTION_INFO_V1(isa_device_nats_settings);

/*
 * device._nats_settings(OUT signing_key text, OUT account text, OUT ttl
 * integer): the signing seed ('' when unset), the account and the lifetime.
 * The one reader of the seed besides superusers: EXECUTE on it is its
 * owner's, the device service's role (isa_svc_device).
 */
Datum
isa_device_nats_settings(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "device._nats_settings must return a record");
	values[0] = CStringGetTextDatum(isa_device_nats_signing_key ? isa_device_nats_signing_key : "");
	values[1] = CStringGetTextDatum(isa_device_nats_account ? isa_device_nats_account : "");
	values[2] = Int32GetDatum(isa_device_nats_ttl);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
