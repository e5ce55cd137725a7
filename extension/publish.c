/*
 * publish.c — isa.publish_event(): the one way an event enters an outbox.
 *
 * The row is inserted in the caller's transaction, so the event exists if and
 * only if the domain write commits.  The hot path is a probe of a per-session
 * catalogue cache and a direct insert into the source's outbox partition; a
 * query runs only to fill the cache.
 *
 * Who may publish as a source (docs/core.md, "Who may publish what"): the
 * source's service, i.e. a role with the privileges of its owner role
 * isa_svc_<service> (its SECURITY DEFINER functions and handlers run as it);
 * the bridge, only the event.dead_lettered of a consuming service; superusers.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "partitioning/partdesc.h"
#include "utils/partcache.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"
#include "bridge.h"

PG_FUNCTION_INFO_V1(isa_publish_event);
PG_FUNCTION_INFO_V1(isa_current_event);

/*
 * The event whose handler is running (set by the bridge and by
 * isa.replay_dead_letter around the call): an event published meanwhile
 * inherits its correlation_id and names it as causation_id.
 */
static bool current_event_set = false;
static Datum current_event = (Datum) 0;
static char current_event_id[UUID_LEN * 2 + 5];
static char *current_correlation_id = NULL;

void
isa_set_current_event(Datum event, const pg_uuid_t *id, const char *correlation_id)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));

	strlcpy(current_event_id, text, sizeof(current_event_id));
	current_correlation_id = correlation_id ? MemoryContextStrdup(TopMemoryContext, correlation_id) : NULL;
	current_event = event;
	current_event_set = true;
}

void
isa_clear_current_event(void)
{
	current_event_set = false;
	current_event = (Datum) 0;
	if (current_correlation_id)
		pfree(current_correlation_id);
	current_correlation_id = NULL;
}

/* isa.current_event(): the event being handled, or NULL outside a handler. */
Datum
isa_current_event(PG_FUNCTION_ARGS)
{
	if (!current_event_set)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(current_event);
}
PG_FUNCTION_INFO_V1(isa_catalogue_changed_trigger);

/*
 * Run once per (source, event_type) and session, then cached:
 * $1 source, $2 event_type → schema of the outbox (NULL: external source),
 * newest registered version (NULL: unknown type), service name; no row:
 * unknown source.  (Every kept SQL version has these columns.)
 */
static const char *lookup_sql =
"SELECT s.schema_name::pg_catalog.text, "
"       (SELECT t.version FROM isa.event_types t "
"         WHERE t.source OPERATOR(pg_catalog.=) s.source AND t.event_type OPERATOR(pg_catalog.=) $2 "
"         ORDER BY t.version_key DESC LIMIT 1), "
"       s.name "
"  FROM isa.services s WHERE s.source OPERATOR(pg_catalog.=) $1";

static SPIPlanPtr lookup_plan = NULL;

/* search path while publishing: pg_catalog, and never pg_temp */
OverrideSearchPath isa_catalog_only_path = {NIL, true, false, 0};

/*
 * Backend-local cache of the catalogue lookup, keyed by "source event_type":
 * the hot path is then one hash probe and one INSERT.  A statement trigger on
 * isa.services and isa.event_types invalidates the tables' relcache entries
 * (as pg_cron does for cron.job); our relcache callback then drops the cache,
 * in every backend at commit and in this one at command end or abort.
 */
#define EVENT_KEY_LEN (NAMEDATALEN + 202)

enum OutboxColumn
{
	COL_ID, COL_SOURCE, COL_EVENT_TYPE, COL_VERSION, COL_OCCURRED_AT, COL_DATA, COL_METADATA,
	N_OUTBOX_COLUMNS
};
static const char *const outbox_column_names[N_OUTBOX_COLUMNS] = {
	"id", "source", "event_type", "version", "occurred_at", "data", "metadata"
};

typedef struct EventTypeEntry
{
	char		key[EVENT_KEY_LEN];
	Oid			outbox_relid;	/* the source's outbox partition */
	AttrNumber	attnum[N_OUTBOX_COLUMNS];
	char		version[24];
	char		service_role[NAMEDATALEN];	/* isa_svc_<service>: may publish it */
	bool		dead_lettered;	/* event.dead_lettered: the bridge may publish it too */
} EventTypeEntry;

static HTAB *event_type_cache = NULL;
static bool event_type_cache_valid = false;
static bool callback_registered = false;
static Oid	services_relid = InvalidOid;
static Oid	event_types_relid = InvalidOid;

static void
catalogue_invalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == services_relid || relid == event_types_relid)
		event_type_cache_valid = false;
}

static void
reset_event_type_cache(void)
{
	HASHCTL		ctl;
	Oid			nsp = get_namespace_oid("isa", false);

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(catalogue_invalidated, (Datum) 0);
		callback_registered = true;
	}
	if (event_type_cache != NULL)
		hash_destroy(event_type_cache);
	ctl.keysize = EVENT_KEY_LEN;
	ctl.entrysize = sizeof(EventTypeEntry);
	ctl.hcxt = TopMemoryContext;
	event_type_cache = hash_create("isa event types", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	services_relid = get_relname_relid("services", nsp);
	event_types_relid = get_relname_relid("event_types", nsp);
	event_type_cache_valid = true;
}

/* isa.services / isa.event_types statement trigger: drop every backend's cache. */
Datum
isa_catalogue_changed_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("isa_catalogue_changed_trigger must be called as a trigger")));
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	return PointerGetDatum(NULL);
}

static void
check_object(Jsonb *j, const char *field)
{
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event %s must be a JSON object", field)));
}

/* The value of a top-level key of a JSON object, or NULL. */
static JsonbValue *
object_field(Jsonb *object, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&object->root, JB_FOBJECT, &k);
}

/*
 * The string value of key in a jsonb object, palloc'ed, or NULL (no object,
 * key absent, or not a string): metadata ids here, JWT claims and request
 * fields in http.c.
 */
char *
isa_jsonb_text(Jsonb *object, const char *key)
{
	JsonbValue *v;

	if (object == NULL || !JB_ROOT_IS_OBJECT(object))
		return NULL;
	v = object_field(object, key);
	return v != NULL && v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

/*
 * A statement prepared once per backend and kept, with a generic plan (a
 * custom one would be planned again at every call); 'what' names it in the
 * error.  Call it inside SPI_connect.
 */
SPIPlanPtr
isa_keep_plan(const char *sql, int nargs, Oid *types, const char *what)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "%s: cannot prepare \"%s\": %s", what, sql, SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * A backend's cache of entries keyed by a relation's oid (the entry's first
 * field), in TopMemoryContext, with invalidated called for each relcache
 * invalidation (a relid, or InvalidOid for all).  Call once per cache.
 */
HTAB *
isa_relid_cache(const char *name, Size entrysize, RelcacheCallbackFunction invalidated)
{
	HASHCTL		ctl;
	HTAB	   *cache;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = entrysize;
	ctl.hcxt = TopMemoryContext;
	cache = hash_create(name, 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(invalidated, (Datum) 0);
	return cache;
}

/* A tracing id in metadata, when given, is a non-empty string; true if given. */
static bool
check_metadata_id(Jsonb *metadata, const char *key)
{
	JsonbValue *v = object_field(metadata, key);

	if (v != NULL && (v->type != jbvString || v->val.string.len == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event metadata.%s must be a non-empty string", key)));
	return v != NULL;
}

/* A traceparent's length, version 00 (isa_valid_traceparent, extension/envelope.c) */
#define TRACEPARENT_LEN 55

/* A text GUC's value, or NULL when it is not set or empty (request.* of isa-httpd). */
static const char *
request_setting(const char *name)
{
	const char *v = GetConfigOption(name, true, false);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The handled event's metadata.<key> as a string (palloc'ed), or NULL. */
static char *
current_event_metadata(const char *key)
{
	bool		isnull;
	Datum		metadata;

	if (!current_event_set)
		return NULL;
	metadata = GetAttributeByName(DatumGetHeapTupleHeader(current_event), "metadata", &isnull);
	return isnull ? NULL : isa_jsonb_text(DatumGetJsonbP(metadata), key);
}

/* 32 lower-case hex digits of a UUID. */
static void
uuid_hex(const pg_uuid_t *id, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < UUID_LEN; i++)
	{
		out[2 * i] = hex[id->data[i] >> 4];
		out[2 * i + 1] = hex[id->data[i] & 0x0f];
	}
	out[2 * UUID_LEN] = '\0';
}

/*
 * The traceparent of a new event whose metadata has none: the trace id and
 * flags of its parent's traceparent, else (a root, or a parent without a
 * valid one) a trace id that is the 32 hex digits of the root's id (the
 * handled event's, else the new event's) with flags 01; the span id is always
 * the last 16 hex digits of the new event's id, so a span names its event.
 * The parent is the handled event (isa.current_event()), else the HTTP
 * request's traceparent (request.traceparent, set by isa.http_begin).
 */
/*
 * A traceparent for the event whose id is own (32 hex digits): a child of
 * parent (a valid traceparent) with parent's trace id and flags, else a span
 * of trace root (32 hex digits) with flags 01; the span id is the last 16 hex
 * digits of own.
 */
static void
format_traceparent(const char *parent, const char *root, const char *own, char *out)
{
	if (parent != NULL)
		snprintf(out, TRACEPARENT_LEN + 1, "00-%.32s-%s-%.2s", parent + 3, own + 16, parent + 53);
	else
		snprintf(out, TRACEPARENT_LEN + 1, "00-%s-%s-01", root, own + 16);
}

static void
new_traceparent(const pg_uuid_t *id, char *out)
{
	char		own[2 * UUID_LEN + 1];
	char		root[2 * UUID_LEN + 1];
	const char *parent;

	uuid_hex(id, own);
	parent = current_event_set ? current_event_metadata("traceparent") : request_setting("request.traceparent");
	if (parent != NULL && isa_valid_traceparent(parent, strlen(parent)))
	{
		format_traceparent(parent, NULL, own, out);
		return;
	}
	if (current_event_set)
	{
		char	   *p = current_event_id,
				   *q = root;

		for (; *p; p++)
			if (*p != '-')
				*q++ = *p;
		*q = '\0';
	}
	else
		strlcpy(root, own, sizeof(root));
	format_traceparent(NULL, root, own, out);
}

/* Appends "key": "value" to the object being built. */
static void
push_pair(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * metadata plus what it lacks of correlation_id (the handled event's, else
 * the HTTP request's request.correlation_id when a UUID, else the event's own id),
 * causation_id (the handled event's id) and traceparent (new_traceparent).
 * Built as a JsonbValue from metadata's pairs (no text to parse, no concat).
 */
static Jsonb *
add_tracing_ids(Jsonb *metadata, pg_uuid_t *id, bool has_correlation, bool has_causation,
				bool has_traceparent)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it = JsonbIteratorInit(&metadata->root);
	JsonbIteratorToken tok;
	JsonbValue	v;

	/* metadata's own pairs, nested values as they are, up to its end */
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_END_OBJECT && tok != WJB_DONE)
		pushJsonbValue(&state, tok, tok == WJB_KEY || tok == WJB_VALUE ? &v : NULL);
	if (!has_correlation)
	{
		const char *request_correlation;
		pg_uuid_t	request_uuid;

		/* the request's, only when a UUID: a session may set it to anything */
		if (current_event_set)
			push_pair(&state, "correlation_id", current_correlation_id ? current_correlation_id : current_event_id);
		else if ((request_correlation = request_setting("request.correlation_id")) != NULL &&
				 isa_parse_uuid(request_correlation, strlen(request_correlation), &request_uuid))
			push_pair(&state, "correlation_id", DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&request_uuid))));
		else
			push_pair(&state, "correlation_id", DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id))));
	}
	if (!has_causation && current_event_set)
		push_pair(&state, "causation_id", current_event_id);
	if (!has_traceparent)
	{
		char		tp[TRACEPARENT_LEN + 1];

		new_traceparent(id, tp);
		push_pair(&state, "traceparent", tp);
	}
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/*
 * isa._event_metadata(id uuid) RETURNS jsonb: the metadata isa.publish_event
 * gives an event of that id published here and now without metadata of its
 * own (correlation_id, causation_id in a handler, traceparent); a tracked
 * table's trigger (extension/table_events.c) writes it with each batch, and
 * isa._table_event_metadata derives each event's from it.
 */
Datum
isa_event_metadata_of(pg_uuid_t *id)
{
	JsonbParseState *state = NULL;
	Jsonb	   *empty;

	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	empty = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	return JsonbPGetDatum(add_tracing_ids(empty, id, false, false, false));
}

PG_FUNCTION_INFO_V1(isa_event_metadata);
Datum
isa_event_metadata(PG_FUNCTION_ARGS)
{
	return isa_event_metadata_of(PG_GETARG_UUID_P(0));
}

/*
 * isa._table_event_metadata(m jsonb, batch uuid, id uuid) RETURNS jsonb: the
 * metadata of event id of a tracked table's statement whose trigger took
 * m = isa._event_metadata(batch) in the writer's transaction — what
 * isa._event_metadata(id) would have given there.  Where m's correlation_id
 * is the batch's own id (no handler or request), it is the event's; where
 * m's trace is rooted at the batch, it is rooted at the event; a causation_id
 * is kept; the span is always the last 16 hex digits of the event's id.
 */
PG_FUNCTION_INFO_V1(isa_table_event_metadata);
Datum
isa_table_event_metadata(PG_FUNCTION_ARGS)
{
	Jsonb	   *m = PG_GETARG_JSONB_P(0);
	pg_uuid_t  *batch = PG_GETARG_UUID_P(1);
	pg_uuid_t  *id = PG_GETARG_UUID_P(2);
	char		batch_hex[2 * UUID_LEN + 1];
	char		own[2 * UUID_LEN + 1];
	char		tp[TRACEPARENT_LEN + 1];
	char	   *batch_text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(batch)));
	char	   *id_text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
	char	   *correlation = isa_jsonb_text(m, "correlation_id");
	char	   *causation = isa_jsonb_text(m, "causation_id");
	char	   *parent = isa_jsonb_text(m, "traceparent");
	JsonbParseState *state = NULL;

	uuid_hex(batch, batch_hex);
	uuid_hex(id, own);
	/* a trace rooted at the batch becomes the event's own */
	format_traceparent(parent != NULL && isa_valid_traceparent(parent, strlen(parent)) &&
					   strncmp(parent + 3, batch_hex, 32) != 0 ? parent : NULL, own, own, tp);

	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	push_pair(&state, "correlation_id",
			  correlation == NULL || strcmp(correlation, batch_text) == 0 ? id_text : correlation);
	if (causation != NULL)
		push_pair(&state, "causation_id", causation);
	push_pair(&state, "traceparent", tp);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}

static void
check_text(FunctionCallInfo fcinfo, int argno, const char *field)
{
	if (PG_ARGISNULL(argno) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(argno)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be null or empty", field)));
}

/*
 * The compiled CHECK constraints and partition constraint of each table
 * isa_insert_row writes, kept per backend until the table's relcache entry is
 * invalidated.  ExecSimpleRelationInsert compiles them into the ResultRelInfo
 * it is given, and with a fresh ResultRelInfo per row every
 * isa.publish_event read the outbox's constraint from its node string
 * (stringToNode) and compiled it again, which doubled bench/publish_cost's
 * publish/plain (docs/benchmarks.md, "publish_cost").  Such expressions
 * hold no subplan and no link to an EState (they are evaluated in the
 * econtext the executor passes), so one compilation serves every row.  An
 * invalidation only marks the entry stale: the row being inserted may be
 * using it, and the next call rebuilds it.
 */
typedef struct InsertExprs
{
	Oid			relid;			/* hash key */
	bool		valid;
	MemoryContext cxt;			/* holds the compiled expressions */
	ExprState **checks;			/* one per rd_att->constr->check[] */
	ExprState  *partition_check;	/* NULL when the table is not a partition */
} InsertExprs;

static HTAB *insert_exprs = NULL;

static void
insert_exprs_invalidated(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	InsertExprs *e;

	hash_seq_init(&seq, insert_exprs);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (relid == InvalidOid || e->relid == relid)
			e->valid = false;
}

/* The compiled constraints of rel, built when missing or stale. */
static InsertExprs *
insert_exprs_for(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	InsertExprs *e;
	bool		found;
	MemoryContext old;
	TupleConstr *constr = rel->rd_att->constr;

	if (insert_exprs == NULL)
		insert_exprs = isa_relid_cache("isa insert constraints", sizeof(InsertExprs), insert_exprs_invalidated);
	e = hash_search(insert_exprs, &relid, HASH_ENTER, &found);
	if (found && e->valid)
		return e;
	if (found && e->cxt != NULL)
		MemoryContextDelete(e->cxt);
	e->valid = false;
	e->checks = NULL;
	e->partition_check = NULL;
	e->cxt = AllocSetContextCreate(TopMemoryContext, "isa insert constraints", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(e->cxt);
	if (constr != NULL && constr->num_check > 0)
	{
		e->checks = palloc0(sizeof(ExprState *) * constr->num_check);
		/* NOT VALID ones too: they bind new rows, as in ExecRelCheck */
		for (int i = 0; i < constr->num_check; i++)
			e->checks[i] = ExecInitExpr(expression_planner((Expr *) stringToNode(constr->check[i].ccbin)), NULL);
	}
	if (rel->rd_rel->relispartition)
		e->partition_check = ExecInitCheck((List *) expression_planner((Expr *) RelationGetPartitionQual(rel)), NULL);
	MemoryContextSwitchTo(old);
	e->valid = true;
	return e;
}

/*
 * Inserts one row into a table the way logical replication applies a row
 * (ExecSimpleRelationInsert: constraints, partition check, indexes,
 * triggers), without planning or executing a query: values[c] (nulls[c], or
 * never null when nulls is NULL) into column attnums[c], the other columns
 * null.  No ACL check is made: the caller is the gate (isa.publish_event for
 * an outbox, a tracked table's trigger for its batches).
 */
void
isa_insert_row(Oid relid, int n, const int16 *attnums, const Datum *values, const bool *nulls)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	EState	   *estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TupleTableSlot *slot;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(rri, false);
	{
		/* after the opens, whose lock waits may run invalidations */
		InsertExprs *exprs = insert_exprs_for(rel);

		rri->ri_ConstraintExprs = exprs->checks;
		rri->ri_PartitionCheckExpr = exprs->partition_check;
	}

	slot = ExecInitExtraTupleSlot(estate, tupdesc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (int i = 0; i < tupdesc->natts; i++)
		slot->tts_isnull[i] = true;
	for (int c = 0; c < n; c++)
	{
		slot->tts_values[attnums[c] - 1] = values[c];
		slot->tts_isnull[attnums[c] - 1] = nulls != NULL && nulls[c];
	}
	ExecStoreVirtualTuple(slot);

	AfterTriggerBeginQuery();
	ExecSimpleRelationInsert(rri, estate, slot);
	AfterTriggerEndQuery(estate);

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	CommandCounterIncrement();
}

/*
 * The outbox schema and newest version of (source, event_type), or a 22023
 * error saying which of the two is unknown.
 */
static EventTypeEntry *
lookup_event_type(text *event_type, text *source)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {PointerGetDatum(source), PointerGetDatum(event_type)};
	bool		isnull;
	bool		found;
	Datum		d;
	char		key[EVENT_KEY_LEN];
	int			slen = VARSIZE_ANY_EXHDR(source);
	int			tlen = VARSIZE_ANY_EXHDR(event_type);
	EventTypeEntry *entry;
	char	   *schema;
	char	   *version;
	char		service_role[NAMEDATALEN];
	Oid			relid;
	AttrNumber	attnum[N_OUTBOX_COLUMNS];

	/* see catalogue changes committed since this transaction started */
	AcceptInvalidationMessages();
	if (!event_type_cache_valid)
		reset_event_type_cache();
	if (slen + 1 + tlen < EVENT_KEY_LEN)
	{
		memcpy(key, VARDATA_ANY(source), slen);
		key[slen] = ' ';
		memcpy(key + slen + 1, VARDATA_ANY(event_type), tlen);
		key[slen + 1 + tlen] = '\0';
		entry = hash_search(event_type_cache, key, HASH_FIND, NULL);
		if (entry != NULL)
			return entry;
	}
	else
		key[0] = '\0';			/* too long to be registered: the lookup fails */

	SPI_connect();
	if (lookup_plan == NULL)
		lookup_plan = isa_keep_plan(lookup_sql, 2, argtypes, "isa.publish_event");
	if (SPI_execute_plan(lookup_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read isa.services");

	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown event source \"%s\"", text_to_cstring(source)),
				 errhint("The sources are listed in isa.services.")));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source \"%s\" has no outbox", text_to_cstring(source)),
				 errdetail("Events of this source are published by NATS clients, not by isa.")));
	schema = TextDatumGetCString(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown event type \"%s\" for source \"%s\"",
						text_to_cstring(event_type), text_to_cstring(source)),
				 errhint("Register it with isa.register_event_type(); see isa.event_types.")));
	version = TextDatumGetCString(d);
	isa_service_role(TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
													   &isnull)),
					 service_role);
	if (key[0] == '\0' || strlen(version) >= sizeof(entry->version))
		elog(ERROR, "event type catalogue entry too long");
	relid = get_relname_relid("outbox", get_namespace_oid(schema, false));
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the outbox of source \"%s\" is missing: %s.outbox does not exist",
						text_to_cstring(source), schema)));
	for (int c = 0; c < N_OUTBOX_COLUMNS; c++)
	{
		attnum[c] = get_attnum(relid, outbox_column_names[c]);
		if (attnum[c] == InvalidAttrNumber)
			elog(ERROR, "column %s.outbox.%s is missing", schema, outbox_column_names[c]);
	}

	SPI_finish();

	entry = hash_search(event_type_cache, key, HASH_ENTER, &found);
	entry->outbox_relid = relid;
	memcpy(entry->attnum, attnum, sizeof(attnum));
	strlcpy(entry->version, version, sizeof(entry->version));
	strlcpy(entry->service_role, service_role, sizeof(entry->service_role));
	entry->dead_lettered = tlen == strlen("event.dead_lettered") &&
		memcmp(VARDATA_ANY(event_type), "event.dead_lettered", tlen) == 0;
	return entry;
}

/*
 * 42501 unless userid may publish the entry's events.  The roles are looked
 * up by name on every call (a syscache probe): they are cluster-wide and may
 * be created after the entry was cached, or not exist at all (a database of
 * 0.1.0, whose service functions run as the superuser who installed isa).
 */
static void
check_may_publish(Oid userid, const EventTypeEntry *entry, text *source)
{
	Oid			role;
	Oid			bridge;

	if (superuser_arg(userid))
		return;
	role = get_role_oid(entry->service_role, true);
	if (OidIsValid(role) && has_privs_of_role(userid, role))
		return;
	if (entry->dead_lettered && OidIsValid(bridge = get_role_oid("isa_bridge", true)) &&
		has_privs_of_role(userid, bridge))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not publish events of source \"%s\"",
					GetUserNameFromId(userid, false), text_to_cstring(source)),
			 errdetail("Only the service's own functions, which run as role \"%s\", publish its events.",
					   entry->service_role),
			 errhint("Call the service's API function that makes the change; it publishes the event.")));
}

/* The owner of the called function (the extension's owner), cached per call site. */
Oid
isa_function_owner(FunctionCallInfo fcinfo)
{
	if (fcinfo->flinfo->fn_extra == NULL)
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
		Oid		   *owner;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
		owner = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(Oid));
		*owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
		ReleaseSysCache(tup);
		fcinfo->flinfo->fn_extra = owner;
	}
	return *(Oid *) fcinfo->flinfo->fn_extra;
}

/*
 * isa.publish_event(event_type text, source text, data jsonb,
 *                   metadata jsonb DEFAULT '{}') RETURNS uuid
 */
Datum
isa_publish_event(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	Jsonb	   *data;
	Jsonb	   *metadata;
	Datum		columns[N_OUTBOX_COLUMNS];
	EventTypeEntry *entry;
	bool		has_correlation_id;
	bool		has_causation_id;
	bool		has_traceparent;
	Oid			save_userid;
	int			save_sec_context;

	check_text(fcinfo, 0, "event_type");
	check_text(fcinfo, 1, "source");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event data must not be null"),
				 errhint("Use '{}' for an event without data.")));
	data = PG_GETARG_JSONB_P(2);
	check_object(data, "data");
	if (PG_ARGISNULL(3))
		metadata = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
		metadata = PG_GETARG_JSONB_P(3);
	check_object(metadata, "metadata");
	has_correlation_id = check_metadata_id(metadata, "correlation_id");
	has_causation_id = check_metadata_id(metadata, "causation_id");
	has_traceparent = check_metadata_id(metadata, "traceparent");
	if (has_traceparent)
	{
		JsonbValue *tp = object_field(metadata, "traceparent");

		if (!isa_valid_traceparent(tp->val.string.val, tp->val.string.len))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event metadata.traceparent is not a W3C traceparent"),
					 errdetail("Expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case, ids not all zeros."),
					 errhint("Leave it out: isa.publish_event() fills it in.")));
	}

	now = isa_uuid_v7_at(now, id);

	/*
	 * Resolve names with only pg_catalog in the path: the function runs as its
	 * owner, so a caller's search_path (or pg_temp) must not pick its types,
	 * operators or casts.  An override is cheaper than a function SET
	 * clause and keeps the saved lookup plan valid.  Abort pops it.
	 */
	PushOverrideSearchPath(&isa_catalog_only_path);

	/*
	 * Write as the function's owner, so a service's role can publish into
	 * the outbox it may not touch (check_may_publish decides whether it may).  Switching here rather than declaring SECURITY DEFINER
	 * keeps the caller's search path cache intact (a definer's user change
	 * makes PostgreSQL recompute it twice per call).  Abort restores the user.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(isa_function_owner(fcinfo), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	entry = lookup_event_type(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	check_may_publish(save_userid, entry, PG_GETARG_TEXT_PP(1));
	columns[COL_ID] = UUIDPGetDatum(id);
	columns[COL_SOURCE] = PG_GETARG_DATUM(1);
	columns[COL_EVENT_TYPE] = PG_GETARG_DATUM(0);
	columns[COL_VERSION] = CStringGetTextDatum(entry->version);
	columns[COL_OCCURRED_AT] = TimestampTzGetDatum(now);
	columns[COL_DATA] = JsonbPGetDatum(data);
	columns[COL_METADATA] = JsonbPGetDatum((has_correlation_id && has_traceparent &&
											(has_causation_id || !current_event_set))
										   ? metadata
										   : add_tracing_ids(metadata, id, has_correlation_id,
															 has_causation_id, has_traceparent));
	isa_insert_row(entry->outbox_relid, N_OUTBOX_COLUMNS, entry->attnum, columns, NULL);

	SetUserIdAndSecContext(save_userid, save_sec_context);
	PopOverrideSearchPath();

	isa_note_outbox_write();
	PG_RETURN_UUID_P(id);
}
