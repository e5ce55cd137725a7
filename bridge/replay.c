/*
 * replay.c — applying an event again from SQL, in the caller's backend and
 * transaction, not in the bridge worker, through the same rule as the bridge
 * (handler.c: inbox row, then the handler as the subscription's owner):
 *   isa.replay_dead_letter(id)  a dead letter, once its cause is fixed;
 *   isa.apply_event(subscription, event, force)  any event, e.g. one of the
 *       event store's (event.replay_to_subscription), force applying it
 *       again although the inbox has it.
 *
 * Docs: docs/bridge.md, "Dead letters and replay"; docs/services/event.md, "Replay".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/regproc.h"

#include "bridge.h"

PG_FUNCTION_INFO_V1(isa_replay_dead_letter);
PG_FUNCTION_INFO_V1(isa_apply_event);

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

/* A field of an isa.event that must be there, as text (22023 if NULL). */
static char *
event_field(HeapTupleHeader th, const char *field)
{
	bool		isnull;
	Datum		d = GetAttributeByName(th, field, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event %s must not be null", field)));
	return TextDatumGetCString(d);
}

/*
 * isa.apply_event(subscription_id bigint, event isa.event, force boolean)
 * RETURNS boolean: the bridge's rule for one event, in the caller's
 * transaction (SECURITY DEFINER: the inbox is written as the extension's
 * owner, the handler runs as the subscription's).  The event must be one the
 * subscription takes: its subject <source>.<event_type> matches the filter
 * (a device message's subject carries the device id, which the envelope does
 * not: not checked) and its major version is accepted.  force deletes the
 * inbox row first, so an event applied already is applied again.
 */
Datum
isa_apply_event(PG_FUNCTION_ARGS)
{
	int64		id;
	bool		force = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
	Datum		event;
	HeapTupleHeader th;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	int			ret;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *service;
	char	   *consumer;
	char	   *filter;
	char	   *versions;
	Oid			handler;
	char	   *owner;
	char	   *source;
	char	   *event_type;
	char	   *version;
	char	   *subject;
	bool		applied;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("subscription id must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("event must not be null")));
	id = PG_GETARG_INT64(0);
	event = PG_GETARG_DATUM(1);
	th = DatumGetHeapTupleHeader(event);
	(void) GetAttributeByName(th, "id", &isnull);
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("event id must not be null")));
	source = event_field(th, "source");
	event_type = event_field(th, "event_type");
	version = event_field(th, "version");

	subject = psprintf("%s.%s", source, event_type);
	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(subject);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT s.service, s.durable_name, s.subject_filter, s.handler::oid, s.owner_role, "
								"       (SELECT string_agg(v, ',') FROM jsonb_array_elements_text(s.options->'versions') v), "
								"       isa.subject_matches($2, s.subject_filter) "
								"  FROM isa.subscriptions s WHERE s.id = $1",
								2, types, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the subscription failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("subscription " INT64_FORMAT " does not exist", id),
						errhint("The subscriptions are listed in isa.subscriptions.")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	service = SPI_getvalue(tup, desc, 1);
	consumer = SPI_getvalue(tup, desc, 2);
	filter = SPI_getvalue(tup, desc, 3);
	handler = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	owner = SPI_getvalue(tup, desc, 5);
	versions = SPI_getvalue(tup, desc, 6);

	if (strcmp(source, ISA_DEVICE_MESSAGE_SOURCE) != 0 && !DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subscription " INT64_FORMAT " (%s) does not take events on %s: its filter is %s",
						id, consumer, subject, filter)));
	if (versions)
	{
		bool		ok = false;
		char	   *v;

		for (v = strtok(versions, ","); v; v = strtok(NULL, ","))
			ok |= atoi(v) == atoi(version);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event version %s is not accepted by subscription " INT64_FORMAT " (%s)",
							version, id, consumer)));
	}

	if (force)
	{
		Oid			dtypes[3] = {TEXTOID, TEXTOID, UUIDOID};
		Datum		dargs[3];

		dargs[0] = CStringGetTextDatum(service);
		dargs[1] = CStringGetTextDatum(consumer);
		dargs[2] = GetAttributeByName(th, "id", &isnull);
		ret = SPI_execute_with_args("DELETE FROM isa.inbox WHERE service = $1 AND consumer = $2 AND event_id = $3",
									3, dtypes, dargs, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			elog(ERROR, "forgetting the inbox row failed: %s", SPI_result_code_string(ret));
	}
	applied = isa_handler_apply(service, consumer, handler, owner, event, NULL);
	SPI_finish();
	PG_RETURN_BOOL(applied);
}
