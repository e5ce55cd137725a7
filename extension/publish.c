/*
 * publish.c — isa.publish_event(): the one way an event enters an outbox.
 *
 * The row is inserted in the caller's transaction, so the event exists if and
 * only if the domain write commits.  The happy path is one saved INSERT … SELECT
 * that both checks the catalogue and writes; the reasons for "nothing
 * inserted" are only looked up when it happens.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_publish_event);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr diagnose_plan = NULL;

/*
 * $1 id, $2 event_type, $3 source, $4 occurred_at, $5 data, $6 metadata.
 * The newest registered version of the type is the one published.
 */
static const char *insert_sql =
"INSERT INTO isa.outbox (id, source, event_type, version, occurred_at, data, metadata) "
"SELECT $1, $3, $2, t.version, $4, $5, "
"       CASE WHEN $6 ? 'correlation_id' THEN $6 "
"            ELSE $6 || pg_catalog.jsonb_build_object('correlation_id', $1) END "
"  FROM isa.event_types t JOIN isa.services s ON s.source = t.source "
" WHERE t.source = $3 AND t.event_type = $2 AND s.schema_name IS NOT NULL "
" ORDER BY t.version_key DESC LIMIT 1";

/* Why nothing was inserted: unknown source, a source with no outbox, or an unknown type. */
static const char *diagnose_sql =
"SELECT s.source, s.schema_name IS NOT NULL, "
"       pg_catalog.string_agg(s2.source, ', ' ORDER BY s2.source) "
"  FROM (SELECT 1) one "
"  LEFT JOIN isa.services s ON s.source = $1 "
"  LEFT JOIN isa.services s2 ON s2.schema_name IS NOT NULL "
" GROUP BY s.source, s.schema_name";

static void
check_object(Jsonb *j, const char *field)
{
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event %s must be a JSON object", field)));
}

/* Tracing ids in metadata, when given, are non-empty strings. */
static void
check_metadata_id(Jsonb *metadata, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&metadata->root, JB_FOBJECT, &k);
	if (v != NULL && (v->type != jbvString || v->val.string.len == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event metadata.%s must be a non-empty string", key)));
}

static void
check_text(FunctionCallInfo fcinfo, int argno, const char *field)
{
	if (PG_ARGISNULL(argno) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(argno)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be null or empty", field)));
}

static SPIPlanPtr
prepare_saved(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

static void
report_not_published(text *event_type, text *source)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {PointerGetDatum(source)};
	bool		isnull;
	bool		has_outbox;
	Datum		known;
	char	   *type_str = text_to_cstring(event_type);
	char	   *source_str = text_to_cstring(source);

	if (diagnose_plan == NULL)
		diagnose_plan = prepare_saved(diagnose_sql, 1, argtypes);
	if (SPI_execute_plan(diagnose_plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read isa.services");

	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
	{
		known = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown event source \"%s\"", source_str),
				 errhint("Known sources: %s.", isnull ? "none" : TextDatumGetCString(known))));
	}
	has_outbox = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!has_outbox)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source \"%s\" has no outbox", source_str),
				 errdetail("Events of this source are published by NATS clients, not by isa.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown event type \"%s\" for source \"%s\"", type_str, source_str),
			 errhint("Register it with isa.register_event_type(); see isa.event_types.")));
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
	Datum		args[6];
	Oid			argtypes[6] = {UUIDOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, JSONBOID};
	int			rc;

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
	check_metadata_id(metadata, "correlation_id");
	check_metadata_id(metadata, "causation_id");

	isa_uuid_v7_at(now, id);
	args[0] = UUIDPGetDatum(id);
	args[1] = PG_GETARG_DATUM(0);
	args[2] = PG_GETARG_DATUM(1);
	args[3] = TimestampTzGetDatum(now);
	args[4] = JsonbPGetDatum(data);
	args[5] = JsonbPGetDatum(metadata);

	SPI_connect();
	if (insert_plan == NULL)
		insert_plan = prepare_saved(insert_sql, 6, argtypes);
	rc = SPI_execute_plan(insert_plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "outbox insert failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		report_not_published(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	SPI_finish();

	isa_note_outbox_write();
	PG_RETURN_UUID_P(id);
}
