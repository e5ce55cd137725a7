/*
 * replay.c — isa.replay_dead_letter(id), the SQL function that applies a
 * dead letter again once its cause is fixed.  It runs in the caller's
 * backend and transaction, not in the bridge worker: it applies the event
 * through the same rule as the bridge (handler.c: inbox row, then the handler
 * as the subscription's owner) and marks the dead letter replayed.
 *
 * Docs: docs/bridge.md, "Dead letters and replay".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/regproc.h"

#include "bridge.h"

PG_FUNCTION_INFO_V1(isa_replay_dead_letter);

/*
 * isa.replay_dead_letter(id bigint) RETURNS boolean: applies a dead letter to
 * its subscription's handler in the caller's transaction (inbox first: true
 * if applied, false if the inbox shows it was applied meanwhile).  The
 * handler's error, if it fails again, is the caller's error.
 */
Datum
isa_replay_dead_letter(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	int			ret;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		event_json;
	Datum		event;
	char	   *service;
	char	   *consumer;
	Oid			handler;
	char	   *owner;
	bool		applied;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("dead letter id must not be null")));
	args[0] = Int64GetDatum(id);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT d.event, d.reason, s.service, s.durable_name, s.handler::oid, "
								"       s.owner_role, d.subscription_id "
								"  FROM isa.dead_letters d LEFT JOIN isa.subscriptions s ON s.id = d.subscription_id "
								" WHERE d.id = $1 FOR UPDATE OF d",
								1, types, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the dead letter failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("dead letter " INT64_FORMAT " does not exist", id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	event_json = SPI_getbinval(tup, desc, 1, &isnull);
	if (isnull || strcmp(SPI_getvalue(tup, desc, 2), "invalid_envelope") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("dead letter " INT64_FORMAT " cannot be replayed: it is not a valid event (%s)",
						id, SPI_getvalue(tup, desc, 2)),
				 errhint("Its raw payload is in isa.dead_letters.payload.")));
	/* whoever published it had no right to its subject: never apply it */
	if (strcmp(SPI_getvalue(tup, desc, 2), "subject_mismatch") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("dead letter " INT64_FORMAT " cannot be replayed: it arrived on a subject that is not its own", id),
				 errhint("An event is trusted only on its <source>.<event_type> subject.")));
	(void) SPI_getbinval(tup, desc, 3, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("dead letter " INT64_FORMAT " cannot be replayed: its subscription was removed", id)));
	service = SPI_getvalue(tup, desc, 3);
	consumer = SPI_getvalue(tup, desc, 4);
	handler = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	owner = SPI_getvalue(tup, desc, 6);

	event = OidFunctionCall1(DatumGetObjectId(DirectFunctionCall1(regprocedurein,
																  CStringGetDatum("isa.event_from_json(jsonb)"))),
							 event_json);
	applied = isa_handler_apply(service, consumer, handler, owner, event, NULL);

	ret = SPI_execute_with_args("UPDATE isa.dead_letters SET replayed_at = now(), replay_count = replay_count + 1 "
								" WHERE id = $1", 1, types, args, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "marking the dead letter replayed failed: %s", SPI_result_code_string(ret));
	SPI_finish();
	PG_RETURN_BOOL(applied);
}
