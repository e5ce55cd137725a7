/*
 * handler.c — the one rule for applying an event to a subscription's
 * handler: insert (service, consumer, event id) into isa.inbox, and only if
 * the row is new, call the handler as the subscription's owner with
 * isa.current_event() set.  The bridge's apply path (apply.c, in a
 * subtransaction of the worker) and isa.replay_dead_letter (replay.c, in a
 * user's transaction) both apply events through it.
 *
 * Docs: docs/bridge.md, "Consuming" (Applying) and "Handlers".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/regproc.h"

#include "isa.h"
#include "bridge.h"

/* Saved: the bridge inserts an inbox row for every message it applies. */
static SPIPlanPtr inbox_plan = NULL;

/* Also called by the apply path at the start of each batch. */
SPIPlanPtr
isa_handler_prepare(void)
{
	if (inbox_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO isa.inbox (service, consumer, event_id, event_type) "
						   "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", 4, types);
		if (plan == NULL)
			elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		inbox_plan = plan;
	}
	return inbox_plan;
}

/*
 * Inbox insert and handler call for one parsed event (an isa.event datum),
 * inside an SPI connection; false if the inbox already had it.  cached, if
 * not NULL, is the handler's FmgrInfo kept by the caller (plpgsql keeps its
 * plans in it).  Errors propagate: the caller decides (a subtransaction in
 * the bridge, the caller's transaction in replay).
 */
bool
isa_handler_apply(const char *service, const char *consumer, Oid handler, const char *owner_role,
				  Datum event, FmgrInfo *cached)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(event);
	bool		isnull;
	Datum		id = GetAttributeByName(th, "id", &isnull);
	Datum		event_type = GetAttributeByName(th, "event_type", &isnull);
	Datum		metadata = GetAttributeByName(th, "metadata", &isnull);
	Datum		args[4];
	int			ret;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	char	   *correlation = NULL;
	FmgrInfo	local;
	FmgrInfo   *flinfo = cached;
	LOCAL_FCINFO(fcinfo, 1);

	args[0] = CStringGetTextDatum(service);
	args[1] = CStringGetTextDatum(consumer);
	args[2] = id;
	args[3] = event_type;
	ret = SPI_execute_plan(isa_handler_prepare(), args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "isa bridge: inbox insert failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

	owner = get_role_oid(owner_role, false);
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s", owner_role,
						format_procedure(handler))));

	if (!isnull)
	{
		JsonbValue	k,
				   *v;

		k.type = jbvString;
		k.val.string.val = "correlation_id";
		k.val.string.len = strlen("correlation_id");
		v = findJsonbValueFromContainer(&DatumGetJsonbP(metadata)->root, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
			correlation = pnstrdup(v->val.string.val, v->val.string.len);
	}

	if (flinfo == NULL)
	{
		fmgr_info(handler, &local);
		flinfo = &local;
	}
	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = event;
	fcinfo->args[0].isnull = false;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	isa_set_current_event(event, DatumGetUUIDP(id), correlation);
	PG_TRY();
	{
		(void) FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		isa_clear_current_event();
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
	return true;
}
