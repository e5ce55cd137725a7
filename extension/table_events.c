/*
 * table_events.c — the trigger of a tracked table (isa.track_table,
 * sql/core/table_events.sql; docs/table-events.md): one INSERT … SELECT into
 * table_events.outbox per statement, over the statement's transition tables.
 *
 * It is C, not PL/pgSQL, for the single-row write: a SECURITY DEFINER
 * function with SET search_path made PostgreSQL recompute the search path on
 * every call (about 40 µs of a one-row UPDATE's 110).  As isa.publish_event
 * does, it sets pg_catalog as the only search path and the extension's owner
 * as the user itself, and keeps one saved plan per table and operation (the
 * plan cache replans it when the table is altered: a transition table's plan
 * depends on its table).  The per-row step SQL does slowly, the changed
 * columns of an updated row, is isa._jsonb_changed_keys below.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_jsonb_changed_keys);
PG_FUNCTION_INFO_V1(isa_table_changed_trigger);

/*
 * The statements, $1 the event name (the trigger's argument), $2 the event
 * time.  t is the tracking, materialized so that its column lists are made
 * once per statement, not once per row.
 */
#define TRACKING_CTE \
	"WITH t AS MATERIALIZED (" \
	"  SELECT k.event_name, k.operations, k.when_columns, k.exclude_columns, " \
	"         ARRAY(SELECT c FROM unnest(k.columns) c WHERE c <> ALL (k.key_columns)) AS nonkey, " \
	"         format('%I.%I', k.schema_name, k.table_name) AS label " \
	"    FROM isa.table_tracking k WHERE k.event_name = $1) "
#define OUTBOX_INSERT \
	"INSERT INTO table_events.outbox (id, source, event_type, version, occurred_at, data, metadata) "

enum TrackedOperation
{
	OP_INSERT, OP_UPDATE, OP_DELETE, OP_TRUNCATE, N_OPERATIONS
};

static const char *const operation_sql[N_OPERATIONS] = {
	TRACKING_CTE OUTBOX_INSERT
	"SELECT e.id, 'table', t.event_name || '.inserted', '1.0.0', $2, "
	"       jsonb_build_object('table', t.label, 'key', e.j - t.nonkey, 'new', e.j - t.exclude_columns), "
	"       isa._event_metadata(e.id) "
	"  FROM t, (SELECT isa.uuid_v7() AS id, to_jsonb(n) AS j FROM new_rows n) e",

	/*
	 * The n-th old row is the n-th new row: PostgreSQL fills an UPDATE's two
	 * transition tables in step, one row each per updated row, so they pair
	 * by position (a join on an integer, not on the key's JSON).  A row whose
	 * key changed is, as in Debezium, a delete of the old key and an insert
	 * of the new one.
	 */
	TRACKING_CTE ", "
	"p AS (SELECT k.oj, k.nj, k.ok, k.nk, k.ok <> k.nk AS moved, isa._jsonb_changed_keys(k.oj, k.nj) AS changed "
	"        FROM (SELECT o.j AS oj, n.j AS nj, o.j - t.nonkey AS ok, n.j - t.nonkey AS nk "
	"                FROM t, (SELECT row_number() OVER () AS rn, to_jsonb(r) AS j FROM old_rows r) o "
	"                JOIN (SELECT row_number() OVER () AS rn, to_jsonb(r) AS j FROM new_rows r) n ON o.rn = n.rn "
	"              OFFSET 0) k) "
	OUTBOX_INSERT
	"SELECT e.id, 'table', t.event_name || e.suffix, '1.0.0', $2, "
	"       CASE e.suffix "
	"         WHEN '.updated' THEN "
	"           jsonb_build_object('table', t.label, 'key', e.k, 'old', e.oj - t.exclude_columns, "
	"                              'new', e.nj - t.exclude_columns, "
	"                              'changed', CASE WHEN cardinality(t.exclude_columns) = 0 THEN to_jsonb(e.changed) "
	"                                         ELSE to_jsonb(ARRAY(SELECT c FROM unnest(e.changed) c "
	"                                                              WHERE c <> ALL (t.exclude_columns))) END) "
	"         WHEN '.deleted' THEN jsonb_build_object('table', t.label, 'key', e.k, 'old', e.oj - t.exclude_columns) "
	"         ELSE jsonb_build_object('table', t.label, 'key', e.k, 'new', e.nj - t.exclude_columns) "
	"       END, "
	"       isa._event_metadata(e.id) "
	"  FROM t, (SELECT isa.uuid_v7() AS id, c.* "
	"             FROM (SELECT '.updated' AS suffix, p.oj, p.nj, p.nk AS k, p.changed "
	"                     FROM p, t "
	"                    WHERE NOT p.moved AND cardinality(p.changed) > 0 "
	"                      AND (t.when_columns IS NULL OR p.changed && t.when_columns) "
	"                   UNION ALL "
	"                   SELECT '.deleted', p.oj, NULL, p.ok, NULL FROM p, t "
	"                    WHERE p.moved AND 'delete' = ANY (t.operations) "
	"                   UNION ALL "
	"                   SELECT '.inserted', NULL, p.nj, p.nk, NULL FROM p, t "
	"                    WHERE p.moved AND 'insert' = ANY (t.operations)) c) e",

	TRACKING_CTE OUTBOX_INSERT
	"SELECT e.id, 'table', t.event_name || '.deleted', '1.0.0', $2, "
	"       jsonb_build_object('table', t.label, 'key', e.j - t.nonkey, 'old', e.j - t.exclude_columns), "
	"       isa._event_metadata(e.id) "
	"  FROM t, (SELECT isa.uuid_v7() AS id, to_jsonb(o) AS j FROM old_rows o) e",

	TRACKING_CTE OUTBOX_INSERT
	"SELECT e.id, 'table', t.event_name || '.truncated', '1.0.0', $2, "
	"       jsonb_build_object('table', t.label), isa._event_metadata(e.id) "
	"  FROM t, (SELECT isa.uuid_v7() AS id) e"
};

/* Whether the table firing is the one the tracking $1 names ($2 schema, $3 table). */
static const char *tracking_sql =
"SELECT 1 FROM isa.table_tracking k "
" WHERE k.event_name = $1 AND k.schema_name = $2 AND k.table_name = $3";

/* Above this many rows a statement is a bulk one: no JIT, sorts in memory. */
#define BULK_ROWS 1000

/*
 * A saved plan is made for the size of the transition tables of the
 * statement that prepared it, and the plan cache does not replan when the
 * next statement's are a thousand times larger: a one-row statement's
 * nested loops took more than ten minutes over a 100,000-row UPDATE, a bulk
 * statement's hashes 25 ms for one row.  So each table and operation keeps
 * one plan per order of magnitude of rows (size_class).
 */
typedef struct PlanKey
{
	Oid			relid;
	Oid			reltype;		/* a table made later with a reused oid has another row type */
	int			operation;
	int			size_class;		/* decimal digits of the statement's row count */
} PlanKey;

typedef struct PlanEntry
{
	PlanKey		key;
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plans = NULL;
static SPIPlanPtr tracking_plan = NULL;

static SPIPlanPtr
saved_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "could not prepare a tracked table's statement: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/* The saved plan of an operation on a table, prepared at its first statement. */
static SPIPlanPtr
operation_plan(Relation rel, int operation, int64 rows)
{
	PlanKey		key;
	PlanEntry  *entry;
	bool		found;

	if (plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(PlanKey);
		ctl.entrysize = sizeof(PlanEntry);
		ctl.hcxt = TopMemoryContext;
		plans = hash_create("isa tracked table plans", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.relid = RelationGetRelid(rel);
	key.reltype = rel->rd_rel->reltype;
	key.operation = operation;
	for (int64 r = rows; r >= 10; r /= 10)
		key.size_class++;
	entry = hash_search(plans, &key, HASH_ENTER, &found);
	if (!found)
	{
		Oid			argtypes[2] = {TEXTOID, TIMESTAMPTZOID};

		entry->plan = NULL;
		PG_TRY();
		{
			entry->plan = saved_plan(operation_sql[operation], 2, argtypes);
		}
		PG_CATCH();
		{
			hash_search(plans, &key, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return entry->plan;
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
	Relation	rel;
	int			operation;
	char	   *schema;
	Datum		args[3];
	Oid			save_userid;
	int			save_sec_context;
	int			guc_level = -1;
	int			rc;
	int64		rows;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("isa._table_changed must be an AFTER … FOR EACH STATEMENT trigger with one argument"),
				 errhint("isa.track_table makes these triggers.")));
	/* a statement that changed no row (UPDATE … WHERE false) has no event to write, nor a bridge to wake */
	rows = Max(rows_of(td->tg_oldtable), rows_of(td->tg_newtable));
	if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) && rows == 0)
		return PointerGetDatum(NULL);
	rel = td->tg_relation;
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		operation = OP_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		operation = OP_UPDATE;
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		operation = OP_DELETE;
	else
		operation = OP_TRUNCATE;
	schema = get_namespace_name(RelationGetNamespace(rel));
	args[0] = CStringGetTextDatum(td->tg_trigger->tgargs[0]);

	/* Resolve names in pg_catalog alone and write as the extension's owner; abort restores both. */
	PushOverrideSearchPath(&isa_catalog_only_path);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(isa_function_owner(fcinfo), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (rows > BULK_ROWS)
	{
		/*
		 * A bulk statement's plan looks costly enough for JIT, whose
		 * compilation costs more than it saves here (0.5 s of a 100,000-row
		 * UPDATE), and its joins and sorts belong in memory.
		 */
		guc_level = NewGUCNestLevel();
		(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("work_mem", "32MB", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables of %s", RelationGetRelationName(rel));

	if (tracking_plan == NULL)
	{
		Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};

		tracking_plan = saved_plan(tracking_sql, 3, argtypes);
	}
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(RelationGetRelationName(rel));
	if (SPI_execute_plan(tracking_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read isa.table_tracking");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s.%s is not tracked as \"%s\"", schema, RelationGetRelationName(rel),
						td->tg_trigger->tgargs[0]),
				 errhint("Track it again with isa.track_table, or drop the trigger %s.", td->tg_trigger->tgname)));

	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	rc = SPI_execute_plan(operation_plan(rel, operation, rows), args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write the events of %s: %s", RelationGetRelationName(rel), SPI_result_code_string(rc));
	SPI_finish();

	if (guc_level >= 0)
		AtEOXact_GUC(true, guc_level);
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
