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
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "catalog/pg_proc.h"

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

/* Saved: a batch subscription's inbox rows, one statement per batch. */
static SPIPlanPtr inbox_batch_plan = NULL;

static SPIPlanPtr
inbox_batch_prepare(void)
{
	if (inbox_batch_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, UUIDARRAYOID, TEXTARRAYOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO isa.inbox (service, consumer, event_id, event_type) "
						   "SELECT $1, $2, u.i, u.t FROM unnest($3, $4) AS u (i, t) "
						   "ON CONFLICT DO NOTHING RETURNING event_id", 4, types);
		if (plan == NULL)
			elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		inbox_batch_plan = plan;
	}
	return inbox_batch_plan;
}

/* Whether a handler is a batch handler: it takes isa.event[] (docs/bridge.md, "Batch handlers"). */
bool
isa_handler_is_batch(Oid handler)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	bool		batch;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", handler);
	batch = ((Form_pg_proc) GETSTRUCT(tup))->pronargs == 1 &&
		OidIsValid(get_element_type(((Form_pg_proc) GETSTRUCT(tup))->proargtypes.values[0]));
	ReleaseSysCache(tup);
	return batch;
}

/*
 * Calls handler(arg) as owner_role, with isa.current_event() set to event
 * (or left NULL for a batch: no one event is being handled).
 */
static void
call_as_owner(Oid handler, const char *owner_role, FmgrInfo *cached, Datum arg,
			  Datum event, const pg_uuid_t *id, const char *correlation)
{
	Oid			owner = get_role_oid(owner_role, false);
	Oid			save_userid;
	int			save_sec;
	FmgrInfo	local;
	FmgrInfo   *flinfo = cached;
	LOCAL_FCINFO(fcinfo, 1);

	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s", owner_role,
						format_procedure(handler))));
	if (flinfo == NULL)
	{
		fmgr_info(handler, &local);
		flinfo = &local;
	}
	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg;
	fcinfo->args[0].isnull = false;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (id)
		isa_set_current_event(event, id, correlation);
	PG_TRY();
	{
		(void) FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		if (id)
			isa_clear_current_event();
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * Inbox insert and handler call for one parsed event (an isa.event datum),
 * inside an SPI connection; false if the inbox already had it.  cached, if
 * not NULL, is the handler's FmgrInfo kept by the caller (plpgsql keeps its
 * plans in it).  A batch handler gets the event as a one-element array.
 * Errors propagate: the caller decides (a subtransaction in the bridge, the
 * caller's transaction in replay).
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
	char	   *correlation = NULL;

	if (isa_handler_is_batch(handler))
	{
		bool		applied;

		return isa_handler_apply_batch(service, consumer, handler, owner_role, &event, 1,
									   &applied, cached) == 1;
	}

	args[0] = CStringGetTextDatum(service);
	args[1] = CStringGetTextDatum(consumer);
	args[2] = id;
	args[3] = event_type;
	ret = SPI_execute_plan(isa_handler_prepare(), args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "isa bridge: inbox insert failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

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
	call_as_owner(handler, owner_role, cached, event, event, DatumGetUUIDP(id), correlation);
	return true;
}

/*
 * A batch handler's rule: the inbox rows of n events in one statement, then
 * one call of the handler with those the inbox did not have yet, in the
 * order given.  applied[i] says which; returns how many.  The same event
 * twice in one batch is applied once (its first place).  Errors propagate.
 */
int
isa_handler_apply_batch(const char *service, const char *consumer, Oid handler, const char *owner_role,
						Datum *events, int n, bool *applied, FmgrInfo *cached)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *types = palloc(sizeof(Datum) * n);
	Datum	   *fresh = palloc(sizeof(Datum) * n);
	Datum		args[4];
	int			ret;
	int			nfresh = 0;
	Oid			elem_type = InvalidOid;
	int16		elem_len;
	bool		elem_byval;
	char		elem_align;

	for (int i = 0; i < n; i++)
	{
		HeapTupleHeader th = DatumGetHeapTupleHeader(events[i]);
		bool		isnull;

		ids[i] = GetAttributeByName(th, "id", &isnull);
		types[i] = GetAttributeByName(th, "event_type", &isnull);
		applied[i] = false;
		if (i == 0)
			elem_type = HeapTupleHeaderGetTypeId(th);
	}
	if (n == 0)
		return 0;
	args[0] = CStringGetTextDatum(service);
	args[1] = CStringGetTextDatum(consumer);
	args[2] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[3] = PointerGetDatum(construct_array(types, n, TEXTOID, -1, false, TYPALIGN_INT));
	ret = SPI_execute_plan(inbox_batch_prepare(), args, NULL, false, 0);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "isa bridge: inbox insert failed: %s", SPI_result_code_string(ret));

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *got = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1,
													  &isnull));

		for (int i = 0; i < n; i++)
			if (!applied[i] && memcmp(DatumGetUUIDP(ids[i])->data, got->data, UUID_LEN) == 0)
			{
				applied[i] = true;
				break;
			}
	}
	for (int i = 0; i < n; i++)
		if (applied[i])
			fresh[nfresh++] = events[i];
	if (nfresh == 0)
		return 0;

	get_typlenbyvalalign(elem_type, &elem_len, &elem_byval, &elem_align);
	call_as_owner(handler, owner_role, cached,
				  PointerGetDatum(construct_array(fresh, nfresh, elem_type, elem_len, elem_byval, elem_align)),
				  (Datum) 0, NULL, NULL);
	return nfresh;
}
