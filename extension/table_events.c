/*
 * table_events.c — the trigger of a tracked table (isa.track_table,
 * sql/core/table_events.sql; docs/table-events.md): one row of the
 * tracking's table_events.batches_N per statement, holding the statement's
 * transition tables as they are; the bridge turns the batch into events later
 * (isa._render_table_events), because doing it here cost several times the
 * statement (bench/table_events/designs.sql).
 *
 * It is C, not PL/pgSQL, for the single-row write: a SECURITY DEFINER
 * function with SET search_path makes PostgreSQL set up the search path at
 * every call (bench/publish_cost measures it).  As isa.publish_event does,
 * it sets pg_catalog as the only search path and the extension's owner as
 * the user itself, builds its row in C and inserts it without a query
 * (isa_insert_row), and checks the tracking once per table until the table's
 * relcache entry is invalidated.  The per-row step SQL does slowly when the
 * bridge renders, the changed columns of an updated row, is
 * isa._jsonb_changed_keys below.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_jsonb_changed_keys);
PG_FUNCTION_INFO_V1(isa_table_changed_trigger);

/*
 * A statement's batch: its rows as they are, as arrays of the tracking's
 * shadow type table_events.rows_N, in one row of table_events.batches_N
 * (id, operation, occurred_at, metadata, old_rows, new_rows).  The bridge
 * makes the events of the batch later (isa._render_table_events,
 * sql/core/table_events.sql).  Built and inserted here in C, with no query:
 * the executor's set-up cost a one-row statement more than the row did.
 */
enum TrackedOperation
{
	OP_INSERT, OP_UPDATE, OP_DELETE, OP_TRUNCATE, N_OPERATIONS
};

static const char operation_code[N_OPERATIONS] = {'i', 'u', 'd', 't'};

#define N_BATCH_COLUMNS 6

/* The rows of a transition table as an array of the shadow type (live columns only, in order). */
static Datum
rows_array(Relation rel, Tuplestorestate *rows, Oid shadow_type)
{
	TupleDesc	reldesc = RelationGetDescr(rel);
	TupleDesc	shdesc = lookup_rowtype_tupdesc(shadow_type, -1);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(reldesc, &TTSOpsMinimalTuple);
	int64		n = tuplestore_tuple_count(rows);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(shdesc->natts, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(shdesc->natts, 1));
	int			k = 0;
	ArrayType  *array;

	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		int			j = 0;
		HeapTuple	tuple;

		slot_getallattrs(slot);
		for (int i = 0; i < reldesc->natts; i++)
		{
			if (TupleDescAttr(reldesc, i)->attisdropped)
				continue;
			if (j >= shdesc->natts)
				break;
			values[j] = slot->tts_values[i];
			nulls[j] = slot->tts_isnull[i];
			j++;
		}
		if (j != shdesc->natts)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the columns of %s are not those of its tracking's type %s",
							RelationGetRelationName(rel), format_type_be(shadow_type)),
					 errhint("Track the table again with isa.track_table.")));
		tuple = heap_form_tuple(shdesc, values, nulls);
		elems[k++] = heap_copy_tuple_as_datum(tuple, shdesc);
		heap_freetuple(tuple);
	}
	ExecDropSingleTupleTableSlot(slot);
	ReleaseTupleDesc(shdesc);
	array = construct_array(elems, k, shadow_type, -1, false, TYPALIGN_DOUBLE);
	return PointerGetDatum(array);
}

/* Writes the statement's batch into the tracking's table_events.batches_N. */
static void
write_batch(TriggerData *td, int operation, Oid shadow_type, Oid batches)
{
	static const int16 attnums[N_BATCH_COLUMNS] = {1, 2, 3, 4, 5, 6};
	Datum		values[N_BATCH_COLUMNS];
	bool		nulls[N_BATCH_COLUMNS] = {false, false, false, false, true, true};
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	values[2] = TimestampTzGetDatum(isa_uuid_v7_at(GetCurrentTimestamp(), id));
	values[0] = UUIDPGetDatum(id);
	values[1] = CharGetDatum(operation_code[operation]);
	values[3] = isa_event_metadata_of(id);
	if (operation == OP_UPDATE || operation == OP_DELETE)
	{
		values[4] = rows_array(td->tg_relation, td->tg_oldtable, shadow_type);
		nulls[4] = false;
	}
	if (operation == OP_UPDATE || operation == OP_INSERT)
	{
		values[5] = rows_array(td->tg_relation, td->tg_newtable, shadow_type);
		nulls[5] = false;
	}
	isa_insert_row(batches, N_BATCH_COLUMNS, attnums, values, nulls);
}

/* The shadow of the tracking $1, if it names the table firing ($2 schema, $3 table). */
static const char *tracking_sql =
"SELECT k.shadow FROM isa.table_tracking k "
" WHERE k.event_name = $1 AND k.schema_name = $2 AND k.table_name = $3";

static SPIPlanPtr tracking_plan = NULL;

/*
 * The tracking checked for a table (its relid): the event name its trigger
 * named, its shadow type and batches table.  Any invalidation of the table's
 * relcache entry forgets it: track_table and untrack_table make or drop the
 * table's triggers, ALTER TABLE (which may make a new shadow) alters it, and
 * a trigger attached by hand to another table is that table's.
 */
typedef struct CheckedEntry
{
	Oid			relid;
	char		event_name[NAMEDATALEN * 2];
	Oid			shadow_type;	/* table_events.rows_N */
	Oid			batches;		/* table_events.batches_N */
} CheckedEntry;

static HTAB *checked = NULL;

static void
table_invalidated(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	CheckedEntry *e;

	if (checked == NULL)
		return;
	if (OidIsValid(relid))
	{
		(void) hash_search(checked, &relid, HASH_REMOVE, NULL);
		return;
	}
	hash_seq_init(&seq, checked);
	while ((e = hash_seq_search(&seq)) != NULL)
		(void) hash_search(checked, &e->relid, HASH_REMOVE, NULL);
}

/*
 * The tracking the trigger's argument names, checked to be the table's own
 * (55000 otherwise) once per table until its next invalidation.
 */
static CheckedEntry *
tracking_of(TriggerData *td)
{
	static CheckedEntry uncached;
	Relation	rel = td->tg_relation;
	Oid			relid = RelationGetRelid(rel);
	const char *event_name = td->tg_trigger->tgargs[0];
	CheckedEntry *e;
	char	   *schema;
	Datum		args[3];
	Datum		shadow;
	bool		isnull;
	Oid			nsp;

	if (checked == NULL)
		checked = isa_relid_cache("isa tracked tables", sizeof(CheckedEntry), table_invalidated);
	e = hash_search(checked, &relid, HASH_FIND, NULL);
	if (e != NULL && strcmp(e->event_name, event_name) == 0)
		return e;

	schema = get_namespace_name(RelationGetNamespace(rel));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (tracking_plan == NULL)
	{
		Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};

		tracking_plan = isa_keep_plan(tracking_sql, 3, argtypes, "a tracked table's trigger");
	}
	args[0] = CStringGetTextDatum(event_name);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(RelationGetRelationName(rel));
	if (SPI_execute_plan(tracking_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read isa.table_tracking");
	if (SPI_processed == 0 ||
		(shadow = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull), isnull))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s.%s is not tracked as \"%s\"", schema, RelationGetRelationName(rel), event_name),
				 errhint("Track it again with isa.track_table, or drop the trigger %s.", td->tg_trigger->tgname)));
	SPI_finish();

	e = strlen(event_name) < sizeof(uncached.event_name) ?
		hash_search(checked, &relid, HASH_ENTER, NULL) : &uncached;
	e->relid = relid;
	strlcpy(e->event_name, event_name, sizeof(e->event_name));
	nsp = get_namespace_oid("table_events", false);
	e->shadow_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									 CStringGetDatum(psprintf("rows_%d", DatumGetInt32(shadow))),
									 ObjectIdGetDatum(nsp));
	e->batches = get_relname_relid(psprintf("batches_%d", DatumGetInt32(shadow)), nsp);
	if (!OidIsValid(e->shadow_type) || !OidIsValid(e->batches))
	{
		(void) hash_search(checked, &relid, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the tracking of %s has lost table_events.rows_%d or table_events.batches_%d",
						RelationGetRelationName(rel), DatumGetInt32(shadow), DatumGetInt32(shadow)),
				 errhint("Track the table again with isa.track_table.")));
	}
	return e;
}

static int64
rows_of(Tuplestorestate *rows)
{
	return rows == NULL ? 0 : tuplestore_tuple_count(rows);
}

/*
 * isa._table_changed(): AFTER … FOR EACH STATEMENT trigger with transition
 * tables old_rows / new_rows, argument the event name.
 */
Datum
isa_table_changed_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	int			operation;
	Oid			save_userid;
	int			save_sec_context;
	CheckedEntry *tracking;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("isa._table_changed must be an AFTER … FOR EACH STATEMENT trigger with one argument"),
				 errhint("isa.track_table makes these triggers.")));
	/* a statement that changed no row (UPDATE … WHERE false) has no event to write, nor a bridge to wake */
	if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) &&
		Max(rows_of(td->tg_oldtable), rows_of(td->tg_newtable)) == 0)
		return PointerGetDatum(NULL);
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		operation = OP_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		operation = OP_UPDATE;
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		operation = OP_DELETE;
	else
		operation = OP_TRUNCATE;

	/* Resolve names in pg_catalog alone and write as the extension's owner; abort restores both. */
	PushOverrideSearchPath(&isa_catalog_only_path);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(isa_function_owner(fcinfo), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	tracking = tracking_of(td);
	write_batch(td, operation, tracking->shadow_type, tracking->batches);
	/* the bridge renders and publishes after the commit */
	isa_note_table_batches();
	SetUserIdAndSecContext(save_userid, save_sec_context);
	PopOverrideSearchPath();
	return PointerGetDatum(NULL);
}

static bool
same_value(JsonbValue *a, JsonbValue *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return a->val.boolean == b->val.boolean;
		case jbvString:
			return a->val.string.len == b->val.string.len &&
				memcmp(a->val.string.val, b->val.string.val, a->val.string.len) == 0;
		case jbvNumeric:
			return DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(a->val.numeric),
													NumericGetDatum(b->val.numeric)));
		case jbvBinary:
			return compareJsonbContainers(a->val.binary.data, b->val.binary.data) == 0;
		default:
			return false;
	}
}

/*
 * isa._jsonb_changed_keys(old jsonb, new jsonb) RETURNS text[]: the keys of
 * the object new whose value is not the one they have in old (or that old
 * lacks), in new's key order; {} when none.
 */
Datum
isa_jsonb_changed_keys(PG_FUNCTION_ARGS)
{
	Jsonb	   *old = PG_GETARG_JSONB_P(0);
	Jsonb	   *new = PG_GETARG_JSONB_P(1);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbValue	key;
	JsonbIteratorToken tok;
	ArrayBuildState *acc = initArrayResult(TEXTOID, CurrentMemoryContext, false);

	if (!JB_ROOT_IS_OBJECT(new) || !JB_ROOT_IS_OBJECT(old))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("isa._jsonb_changed_keys compares two JSON objects")));

	it = JsonbIteratorInit(&new->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = v;
		else if (tok == WJB_VALUE)
		{
			JsonbValue *before = findJsonbValueFromContainer(&old->root, JB_FOBJECT, &key);

			if (before == NULL || !same_value(before, &v))
				accumArrayResult(acc, PointerGetDatum(cstring_to_text_with_len(key.val.string.val,
																			  key.val.string.len)),
								 false, TEXTOID, CurrentMemoryContext);
		}
	}
	PG_RETURN_DATUM(makeArrayResult(acc, CurrentMemoryContext));
}
