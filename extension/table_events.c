/*
 * table_events.c — the one per-row step of a tracked table's UPDATE that SQL
 * does slowly: which columns changed (docs/table-events.md).
 *
 * isa._table_changed (sql/core/table_events.sql) writes one outbox row per
 * updated row in one INSERT … SELECT; in SQL the changed columns of a row
 * are a subquery over jsonb_each, about half of the trigger's cost on a
 * 100,000-row UPDATE.  Here it is one walk over the new row's keys.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_jsonb_changed_keys);

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
