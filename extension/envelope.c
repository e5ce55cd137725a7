/*
 * envelope.c — the event envelope (docs/architecture.md, "The event"): the rules for its fields and
 * the parser of its JSON wire form.
 *
 *   isa.is_valid_event_type(text)  ^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$, at most 200 characters
 *   isa.is_valid_version(text)     ^(0|[1-9][0-9]{0,5})\.(same)\.(same)$
 *   isa._check_envelope(isa.event) 22023 naming the first missing or malformed field
 *   isa.event_from_json(jsonb)     a wire event, parsed and checked
 *   isa.iso_time(timestamptz)      a time as events carry it: RFC 3339, UTC, microseconds
 *
 * Each rule is written once, by hand rather than as a regular expression, and
 * check_envelope() is the one check both _check_envelope and event_from_json
 * run.  event_from_json is what the bridge calls for every message it
 * receives: it looks nothing up by name and needs no subtransaction (the UUID
 * and the date-time are parsed with routines that report errors rather than
 * raise them), so it does not depend on the caller's search_path.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tupdesc.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_is_valid_event_type);
PG_FUNCTION_INFO_V1(isa_is_valid_version);
PG_FUNCTION_INFO_V1(isa_check_envelope);
PG_FUNCTION_INFO_V1(isa_event_from_json);
PG_FUNCTION_INFO_V1(isa_iso_time);

#define EVENT_TYPE_MAX_LEN 200

/* The fields of isa.event, in order. */
enum
{
	EV_ID,
	EV_EVENT_TYPE,
	EV_SOURCE,
	EV_VERSION,
	EV_TIMESTAMP,
	EV_DATA,
	EV_METADATA,
	EV_NATTS
};

static const Oid event_atttypes[EV_NATTS] = {
	UUIDOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, JSONBOID
};

/* ---------------------------------------------------------------- the rules */

static inline bool
is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static inline bool
is_token_char(char c)
{
	return is_lower(c) || is_digit(c) || c == '_';
}

/* ^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$ and at most 200 characters. */
bool
isa_valid_event_type(const char *s, int len)
{
	int			i;
	int			dots = 0;

	/* every character the pattern admits is ASCII: bytes are characters */
	if (len < 1 || len > EVENT_TYPE_MAX_LEN || !is_lower(s[0]))
		return false;
	for (i = 1; i < len; i++)
	{
		if (s[i] == '.')
		{
			/* a dot must be followed by a character of a token */
			if (i + 1 >= len || !is_token_char(s[i + 1]))
				return false;
			dots++;
		}
		else if (!is_token_char(s[i]))
			return false;
	}
	return dots > 0;
}

/* ^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$ */
bool
isa_valid_version(const char *s, int len)
{
	int			i = 0;

	for (int part = 0; part < 3; part++)
	{
		int			start = i;

		if (part > 0)
		{
			if (i >= len || s[i] != '.')
				return false;
			start = ++i;
		}
		while (i < len && is_digit(s[i]))
			i++;
		if (i == start || i - start > 6 || (s[start] == '0' && i - start > 1))
			return false;
	}
	return i == len;
}

/* n lower-case hex digits; *zero says whether all are 0. */
static bool
all_hex(const char *s, int n, bool *zero)
{
	*zero = true;
	for (int i = 0; i < n; i++)
	{
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		if (s[i] != '0')
			*zero = false;
	}
	return true;
}

/*
 * A W3C trace context traceparent (docs/tracing.md): "00-<32 hex trace
 * id>-<16 hex parent id>-<2 hex flags>", lower-case hex, neither id all
 * zeros, version not ff; a later version may append "-…" after the 55
 * characters, version 00 may not.
 */
bool
isa_valid_traceparent(const char *s, int len)
{
	bool		zero;

	if (len < 55 || (len > 55 && s[55] != '-'))
		return false;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (!all_hex(s, 2, &zero) || strncmp(s, "ff", 2) == 0 || (strncmp(s, "00", 2) == 0 && len != 55))
		return false;
	if (!all_hex(s + 3, 32, &zero) || zero)
		return false;
	if (!all_hex(s + 36, 16, &zero) || zero)
		return false;
	return all_hex(s + 53, 2, &zero);
}

/* ^[a-z][a-z0-9_]*$: one lower-case subject token. */
bool
isa_valid_source(const char *s, int len)
{
	if (len < 1 || !is_lower(s[0]))
		return false;
	for (int i = 1; i < len; i++)
		if (!is_token_char(s[i]))
			return false;
	return true;
}

/*
 * ^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$
 * (RFC 3339 §5.6 date-time, fractions of at most nanoseconds).
 */
static bool
is_rfc3339_date_time(const char *s, int len)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	int			i;

	if (len < (int) sizeof(shape) - 1 + 1)
		return false;
	for (i = 0; shape[i] != '\0'; i++)
	{
		bool		ok;

		switch (shape[i])
		{
			case 'd':
				ok = is_digit(s[i]);
				break;
			case 'T':
				ok = s[i] == 'T' || s[i] == 't';
				break;
			default:
				ok = s[i] == shape[i];
				break;
		}
		if (!ok)
			return false;
	}
	if (s[i] == '.')
	{
		int			start = ++i;

		while (i < len && is_digit(s[i]))
			i++;
		if (i == start || i - start > 9)
			return false;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z'))
		return i + 1 == len;
	return i + 6 == len && (s[i] == '+' || s[i] == '-') &&
		is_digit(s[i + 1]) && is_digit(s[i + 2]) && s[i + 3] == ':' &&
		is_digit(s[i + 4]) && is_digit(s[i + 5]);
}

/* ---------------------------------------------------------------- the envelope check */

/*
 * What check_envelope needs to know of an event: whether each field is there
 * and, for the checked ones, its value.  A NULL pointer (NULL type name) is a
 * missing field.
 */
typedef struct EnvelopeFields
{
	bool		has_id;
	const char *event_type;
	int			event_type_len;
	const char *source;
	int			source_len;
	const char *version;
	int			version_len;
	bool		has_timestamp;
	TimestampTz timestamp;
	const char *data_type;		/* JSON type of data */
	const char *metadata_type;	/* JSON type of metadata */
} EnvelopeFields;

#define ENVELOPE_ERROR(msg, ...) \
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg(msg, ##__VA_ARGS__)))

/* Raises 22023 naming the first field that is missing or malformed. */
static void
check_envelope(const EnvelopeFields *f)
{
	if (!f->has_id)
		ENVELOPE_ERROR("event field \"id\" is missing");

	if (f->event_type == NULL)
		ENVELOPE_ERROR("event field \"event_type\" is missing");
	else if (!isa_valid_event_type(f->event_type, f->event_type_len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event field \"event_type\" is malformed: %s",
						pnstrdup(f->event_type, f->event_type_len)),
				 errhint("An event type is dotted lower-case tokens, e.g. wallet.tokens.deducted.")));

	if (f->source == NULL)
		ENVELOPE_ERROR("event field \"source\" is missing");
	else if (!isa_valid_source(f->source, f->source_len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event field \"source\" is malformed: %s",
						pnstrdup(f->source, f->source_len)),
				 errhint("A source is one lower-case token, e.g. wallet_service or external.")));

	if (f->version == NULL)
		ENVELOPE_ERROR("event field \"version\" is missing");
	else if (!isa_valid_version(f->version, f->version_len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event field \"version\" is malformed: %s",
						pnstrdup(f->version, f->version_len)),
				 errhint("A version is MAJOR.MINOR.PATCH, e.g. 1.0.0.")));

	if (!f->has_timestamp)
		ENVELOPE_ERROR("event field \"timestamp\" is missing");
	else if (TIMESTAMP_NOT_FINITE(f->timestamp))
		ENVELOPE_ERROR("event field \"timestamp\" must be finite");

	if (f->data_type == NULL)
		ENVELOPE_ERROR("event field \"data\" is missing");
	else if (strcmp(f->data_type, "object") != 0)
		ENVELOPE_ERROR("event field \"data\" must be a JSON object, not %s", f->data_type);

	if (f->metadata_type != NULL && strcmp(f->metadata_type, "object") != 0)
		ENVELOPE_ERROR("event field \"metadata\" must be a JSON object, not %s", f->metadata_type);
}

/* ---------------------------------------------------------------- helpers */

/* What jsonb_typeof says of a jsonb datum. */
static const char *
jsonb_type_name(Jsonb *j)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &j->root;
	v.val.binary.len = VARSIZE(j) - VARHDRSZ;
	return JsonbTypeName(&v);
}

/* The jsonb {}, made once per backend. */
static Datum
empty_object(void)
{
	static Jsonb *empty = NULL;

	if (empty == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		JsonbParseState *state = NULL;
		JsonbValue *res;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		empty = JsonbValueToJsonb(res);
		MemoryContextSwitchTo(old);
	}
	return JsonbPGetDatum(empty);
}

/* Refuses a row type that is not the seven envelope fields in order. */
static void
check_event_tupdesc(TupleDesc tupdesc)
{
	bool		ok = tupdesc->natts == EV_NATTS;

	for (int i = 0; ok && i < EV_NATTS; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		ok = !att->attisdropped && att->atttypid == event_atttypes[i];
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("type %s is not the event envelope isa.event expects",
						format_type_be(tupdesc->tdtypeid)),
				 errdetail("Its fields must be id uuid, event_type text, source text, version text, "
						   "timestamp timestamptz, data jsonb, metadata jsonb.")));
}

/*
 * string_to_uuid of PostgreSQL's uuid.c (what a cast to uuid accepts: 32 hex
 * digits, a hyphen allowed after any group of four, optionally in braces),
 * for a string of known length and returning false instead of raising.
 */
bool
isa_parse_uuid(const char *s, int len, pg_uuid_t *uuid)
{
	const char *end = s + len;
	bool		braces = false;

	if (s < end && *s == '{')
	{
		s++;
		braces = true;
	}
	for (int i = 0; i < UUID_LEN; i++)
	{
		int			hi,
					lo;

		if (end - s < 2 || (hi = hex_value(s[0])) < 0 || (lo = hex_value(s[1])) < 0)
			return false;
		uuid->data[i] = (unsigned char) (hi << 4 | lo);
		s += 2;
		if (s < end && *s == '-' && (i % 2) == 1 && i < UUID_LEN - 1)
			s++;
	}
	if (braces)
	{
		if (s >= end || *s != '}')
			return false;
		s++;
	}
	return s == end;
}

/*
 * timestamptz_in for a string that has an explicit offset, returning false
 * where timestamptz_in would raise (bad field, out of range, bad offset).
 */
static bool
parse_timestamptz(const char *str, TimestampTz *result)
{
	fsec_t		fsec;
	struct pg_tm tt,
			   *tm = &tt;
	int			tz;
	int			dtype;
	int			nf;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];

	if (ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0 ||
		DecodeDateTime(field, ftype, nf, &dtype, tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE)
		return false;
	return tm2timestamp(tm, fsec, &tz, result) == 0;
}

/* ---------------------------------------------------------------- SQL functions */

Datum
isa_is_valid_event_type(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(isa_valid_event_type(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

Datum
isa_is_valid_version(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(isa_valid_version(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

/*
 * isa._check_envelope(e isa.event) RETURNS isa.event: e, with a NULL metadata
 * made {}, or 22023 naming the first field that is missing or malformed.  Not
 * strict: a NULL event is one whose id is missing.
 */
Datum
isa_check_envelope(PG_FUNCTION_ARGS)
{
	HeapTupleHeader th;
	HeapTupleData tuple;
	TupleDesc	tupdesc;
	Datum		values[EV_NATTS];
	bool		nulls[EV_NATTS];
	EnvelopeFields f;
	HeapTuple	result;

	if (PG_ARGISNULL(0))
		ENVELOPE_ERROR("event field \"id\" is missing");

	th = PG_GETARG_HEAPTUPLEHEADER(0);
	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(th), HeapTupleHeaderGetTypMod(th));
	check_event_tupdesc(tupdesc);

	tuple.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = th;
	heap_deform_tuple(&tuple, tupdesc, values, nulls);

	memset(&f, 0, sizeof(f));
	f.has_id = !nulls[EV_ID];
	if (!nulls[EV_EVENT_TYPE])
	{
		text	   *t = DatumGetTextPP(values[EV_EVENT_TYPE]);

		f.event_type = VARDATA_ANY(t);
		f.event_type_len = VARSIZE_ANY_EXHDR(t);
	}
	if (!nulls[EV_SOURCE])
	{
		text	   *t = DatumGetTextPP(values[EV_SOURCE]);

		f.source = VARDATA_ANY(t);
		f.source_len = VARSIZE_ANY_EXHDR(t);
	}
	if (!nulls[EV_VERSION])
	{
		text	   *t = DatumGetTextPP(values[EV_VERSION]);

		f.version = VARDATA_ANY(t);
		f.version_len = VARSIZE_ANY_EXHDR(t);
	}
	f.has_timestamp = !nulls[EV_TIMESTAMP];
	if (f.has_timestamp)
		f.timestamp = DatumGetTimestampTz(values[EV_TIMESTAMP]);
	if (!nulls[EV_DATA])
		f.data_type = jsonb_type_name(DatumGetJsonbP(values[EV_DATA]));
	if (!nulls[EV_METADATA])
		f.metadata_type = jsonb_type_name(DatumGetJsonbP(values[EV_METADATA]));

	check_envelope(&f);

	if (nulls[EV_METADATA])
	{
		values[EV_METADATA] = empty_object();
		nulls[EV_METADATA] = false;
	}
	result = heap_form_tuple(tupdesc, values, nulls);
	ReleaseTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

/* The result row type of event_from_json, kept with its FmgrInfo. */
typedef struct EventFromJsonCache
{
	Oid			typid;
	uint64		tupdesc_id;		/* the type cache's identifier of its tupdesc */
	TupleDesc	tupdesc;		/* blessed, in fn_mcxt */
} EventFromJsonCache;

static TupleDesc
event_result_tupdesc(FunctionCallInfo fcinfo)
{
	EventFromJsonCache *cache = (EventFromJsonCache *) fcinfo->flinfo->fn_extra;
	TypeCacheEntry *tce;
	Oid			typid;
	TupleDesc	tupdesc;
	MemoryContext old;

	/* The type cache says whether the row type changed since the last call. */
	if (cache != NULL)
	{
		tce = lookup_type_cache(cache->typid, TYPECACHE_TUPDESC);
		if (tce->tupDesc_identifier == cache->tupdesc_id)
			return cache->tupdesc;
	}

	if (get_call_result_type(fcinfo, &typid, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("isa.event_from_json must return a composite type")));
	check_event_tupdesc(tupdesc);
	tce = lookup_type_cache(typid, TYPECACHE_TUPDESC);

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (cache == NULL)
		cache = palloc0(sizeof(EventFromJsonCache));
	else if (cache->tupdesc != NULL)
		FreeTupleDesc(cache->tupdesc);
	cache->typid = typid;
	cache->tupdesc_id = tce->tupDesc_identifier;
	cache->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = cache;
	return cache->tupdesc;
}

/*
 * isa.event_from_json(j jsonb) RETURNS isa.event: a wire event, parsed and
 * checked; 22023 naming the field that is missing or malformed.  version
 * defaults to 1.0.0, metadata to {}; a JSON null data or metadata is absent.
 */
Datum
isa_event_from_json(PG_FUNCTION_ARGS)
{
	static const char *const string_fields[] = {"id", "event_type", "source", "version", "timestamp"};
	Jsonb	   *j = PG_GETARG_JSONB_P(0);
	TupleDesc	tupdesc = event_result_tupdesc(fcinfo);
	JsonbValue	fields[lengthof(string_fields)];
	JsonbValue *present[lengthof(string_fields)];
	JsonbValue	dataval,
			   *data,
				metaval,
			   *metadata;
	EnvelopeFields f;
	pg_uuid_t  *id = NULL;
	Datum		values[EV_NATTS];
	bool		nulls[EV_NATTS];

	if (!JB_ROOT_IS_OBJECT(j))
		ENVELOPE_ERROR("an event must be a JSON object, not %s", jsonb_type_name(j));

	/*
	 * Fields that are present must be strings (data and metadata: objects,
	 * checked with the rest of the envelope).
	 */
	for (int i = 0; i < (int) lengthof(string_fields); i++)
	{
		present[i] = getKeyJsonValueFromContainer(&j->root, string_fields[i],
												  strlen(string_fields[i]), &fields[i]);
		if (present[i] != NULL && present[i]->type != jbvString)
			ENVELOPE_ERROR("event field \"%s\" must be a string, not %s",
						   string_fields[i], JsonbTypeName(present[i]));
	}

	memset(&f, 0, sizeof(f));
	if (present[EV_ID] != NULL)
	{
		JsonbValue *v = present[EV_ID];

		id = palloc(sizeof(pg_uuid_t));
		if (!isa_parse_uuid(v->val.string.val, v->val.string.len, id))
			ENVELOPE_ERROR("event field \"id\" is not a UUID: %s",
						   pnstrdup(v->val.string.val, v->val.string.len));
		f.has_id = true;
	}
	if (present[EV_EVENT_TYPE] != NULL)
	{
		f.event_type = present[EV_EVENT_TYPE]->val.string.val;
		f.event_type_len = present[EV_EVENT_TYPE]->val.string.len;
	}
	if (present[EV_SOURCE] != NULL)
	{
		f.source = present[EV_SOURCE]->val.string.val;
		f.source_len = present[EV_SOURCE]->val.string.len;
	}
	if (present[EV_VERSION] != NULL)
	{
		f.version = present[EV_VERSION]->val.string.val;
		f.version_len = present[EV_VERSION]->val.string.len;
	}
	else
	{
		f.version = "1.0.0";
		f.version_len = strlen(f.version);
	}
	if (present[EV_TIMESTAMP] != NULL)
	{
		const char *s = present[EV_TIMESTAMP]->val.string.val;
		int			len = present[EV_TIMESTAMP]->val.string.len;
		char		buf[64];

		if (!is_rfc3339_date_time(s, len))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event field \"timestamp\" is not an RFC 3339 date-time: %s",
							pnstrdup(s, len)),
					 errhint("Use e.g. 2026-11-27T08:32:56.123456Z.")));
		/* the shape bounds the length: at most 35 bytes */
		Assert(len < (int) sizeof(buf));
		memcpy(buf, s, len);
		buf[len] = '\0';
		if (!parse_timestamptz(buf, &f.timestamp))
			ENVELOPE_ERROR("event field \"timestamp\" is not a valid date-time: %s", buf);
		f.has_timestamp = true;
	}
	data = getKeyJsonValueFromContainer(&j->root, "data", 4, &dataval);
	if (data != NULL && data->type == jbvNull)
		data = NULL;
	if (data != NULL)
		f.data_type = JsonbTypeName(data);
	metadata = getKeyJsonValueFromContainer(&j->root, "metadata", 8, &metaval);
	if (metadata != NULL && metadata->type == jbvNull)
		metadata = NULL;
	if (metadata != NULL)
		f.metadata_type = JsonbTypeName(metadata);

	check_envelope(&f);

	memset(nulls, false, sizeof(nulls));
	values[EV_ID] = UUIDPGetDatum(id);
	values[EV_EVENT_TYPE] = PointerGetDatum(cstring_to_text_with_len(f.event_type, f.event_type_len));
	values[EV_SOURCE] = PointerGetDatum(cstring_to_text_with_len(f.source, f.source_len));
	values[EV_VERSION] = PointerGetDatum(cstring_to_text_with_len(f.version, f.version_len));
	values[EV_TIMESTAMP] = TimestampTzGetDatum(f.timestamp);
	values[EV_DATA] = JsonbPGetDatum(JsonbValueToJsonb(data));
	values[EV_METADATA] = metadata != NULL ? JsonbPGetDatum(JsonbValueToJsonb(metadata)) : empty_object();

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * isa.iso_time(timestamptz): 2026-12-07T10:00:00.000000Z, what
 * to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') gives, and
 * what that SQL function was.  In C because the event store and the audit
 * trail format two times per event, and a SQL function is not inlined where
 * it is IMMUTABLE and to_char is not: each call was a function executor of
 * its own.  The years to_char writes otherwise (before 1, after 9999) go
 * through to_char; an infinite time gives NULL, as to_char does.
 */
Datum
isa_iso_time(PG_FUNCTION_ARGS)
{
	TimestampTz t = PG_GETARG_TIMESTAMPTZ(0);
	struct pg_tm tm;
	fsec_t		fsec;
	char		buf[64];

	if (TIMESTAMP_NOT_FINITE(t))
		PG_RETURN_NULL();
	/* a timestamptz is UTC inside: its fields without a zone are UTC's */
	if (timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) == 0 && tm.tm_year >= 1 && tm.tm_year <= 9999)
	{
		snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
				 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
		PG_RETURN_TEXT_P(cstring_to_text(buf));
	}
	PG_RETURN_DATUM(DirectFunctionCall2Coll(timestamp_to_char, C_COLLATION_OID, TimestampGetDatum(t),
											CStringGetTextDatum("YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"")));
}
