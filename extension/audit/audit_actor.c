/*
 * audit_actor.c — audit._actor(source, data): who did what an event says
 * (docs/services/audit.md, "Actor and resource"), computed for every entry
 * the trail appends.  In C because the rule needs the first *_by field by
 * name, a subquery over the object's keys, and a SQL function with a
 * subquery is never inlined: each entry paid a SQL function executor.
 *
 * The rule, as the SQL it replaced said it:
 *   CASE WHEN source = 'device' AND data ? 'device_id'
 *        THEN 'device:' || (data ->> 'device_id')
 *        ELSE coalesce(data ->> 'actor_id',
 *                      (SELECT k.value FROM jsonb_each_text(data) k
 *                        WHERE k.key LIKE '%\_by' AND k.value IS NOT NULL
 *                        ORDER BY k.key LIMIT 1),
 *                      data ->> 'user_id', data ->> 'owner_id') END
 * test/pgtap/audit/actor.sql compares the two on generated objects.
 */
#include "postgres.h"

#include "catalog/pg_collation_d.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/varlena.h"

#include "isa.h"

/* A value as ->> gives it: NULL for JSON null, a string's text, else its JSON text. */
static text *
value_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return cstring_to_text_with_len(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return cstring_to_text(DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
		case jbvBool:
			return cstring_to_text(v->val.boolean ? "true" : "false");
		default:
			return cstring_to_text(JsonbToCString(NULL, v->val.binary.data, v->val.binary.len));
	}
}

/* The top-level field key's value as ->> gives it, or NULL. */
static text *
field_text(Jsonb *data, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&data->root, key, strlen(key), NULL);

	return v ? value_text(v) : NULL;
}

PG_FUNCTION_INFO_V1(isa_audit_actor);

/* audit._actor(source text, data jsonb) RETURNS text */
Datum
isa_audit_actor(PG_FUNCTION_ARGS)
{
	Jsonb	   *data;
	text	   *result;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue	best_key = {0};
	JsonbValue	best_value = {0};
	bool		found = false;

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	data = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("audit._actor: event data must be a JSON object")));

	if (!PG_ARGISNULL(0) && strcmp(TextDatumGetCString(PG_GETARG_DATUM(0)), "device") == 0)
	{
		JsonbValue *id = getKeyJsonValueFromContainer(&data->root, "device_id", strlen("device_id"), NULL);

		if (id != NULL)
		{
			text	   *t = value_text(id);

			if (t == NULL)
				PG_RETURN_NULL();
			PG_RETURN_TEXT_P(DatumGetTextPP(DirectFunctionCall2(textcat, CStringGetTextDatum("device:"),
																 PointerGetDatum(t))));
		}
	}

	if ((result = field_text(data, "actor_id")) != NULL)
		PG_RETURN_TEXT_P(result);

	/* the first non-null *_by field, by key in the database's collation */
	it = JsonbIteratorInit(&data->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbValue	key;

		if (tok != WJB_KEY)
			continue;
		key = v;
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (v.type == jbvNull || key.val.string.len < 3 ||
			memcmp(key.val.string.val + key.val.string.len - 3, "_by", 3) != 0)
			continue;
		if (!found || varstr_cmp(key.val.string.val, key.val.string.len,
								 best_key.val.string.val, best_key.val.string.len,
								 DEFAULT_COLLATION_OID) < 0)
		{
			best_key = key;
			best_value = v;
			found = true;
		}
	}
	if (found)
		PG_RETURN_TEXT_P(value_text(&best_value));

	if ((result = field_text(data, "user_id")) != NULL)
		PG_RETURN_TEXT_P(result);
	if ((result = field_text(data, "owner_id")) != NULL)
		PG_RETURN_TEXT_P(result);
	PG_RETURN_NULL();
}
