/*
 * arguments.c — the one way a service function refuses a NULL argument:
 * PERFORM isa.not_null('user_id, amount', user_id, amount) raises 22004
 * (null_value_not_allowed) "<name> must not be null" for the first NULL value,
 * naming it as the list names it.  docs/core.md documents it.
 *
 * It is C and not PL/pgSQL because every API call of every service runs it:
 * a C function in a PL/pgSQL PERFORM is evaluated as a simple expression,
 * and takes values of any type (VARIADIC "any"), as format() does.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_not_null);

/*
 * Copies the name'th (0-based) comma-separated name of list into buf; false
 * when the list has fewer names.
 */
static bool
nth_name(const char *list, int n, char *buf, size_t size)
{
	const char *p = list;
	const char *end;
	size_t		len;

	for (; n > 0; n--)
	{
		p = strchr(p, ',');
		if (p == NULL)
			return false;
		p++;
	}
	while (*p == ' ')
		p++;
	end = strchr(p, ',');
	if (end == NULL)
		end = p + strlen(p);
	while (end > p && end[-1] == ' ')
		end--;
	len = Min((size_t) (end - p), size - 1);
	memcpy(buf, p, len);
	buf[len] = '\0';
	return true;
}

Datum
isa_not_null(PG_FUNCTION_ARGS)
{
	char	   *names;
	int			nvalues = PG_NARGS() - 1;
	int			nnames = 1;
	char		name[NAMEDATALEN];

	if (PG_ARGISNULL(0) || get_fn_expr_variadic(fcinfo->flinfo))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("isa.not_null takes a list of names and one value per name")));
	names = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (const char *p = names; *p; p++)
		nnames += *p == ',';
	if (nnames != nvalues)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("isa.not_null was given %d names (\"%s\") for %d values", nnames, names, nvalues)));

	for (int i = 0; i < nvalues; i++)
		if (PG_ARGISNULL(i + 1))
		{
			nth_name(names, i, name, sizeof(name));
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", name)));
		}
	PG_RETURN_VOID();
}
