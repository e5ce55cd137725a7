/*
 * http.c — isa.http_begin(), the first statement of every isa-httpd request.
 *
 * It runs once per HTTP request, so it is C: the request settings are set
 * with set_config_option (no SQL), and the three lookups it may need — the
 * route's access rule, whether the token's session is live, the authz
 * permission — are SPI plans kept for the life of the backend.  The rules are
 * those documented in sql/core/http.sql.  (A PL/pgSQL version took about half the
 * throughput of bench/http_api: docs/benchmarks.md, "http_api".)
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "isa.h"

static SPIPlanPtr route_plan;
static SPIPlanPtr session_plan;
static SPIPlanPtr check_plan;

static bool
is_uuid_text(const char *s)
{
	if (s == NULL || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		bool		dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/* A palloc'ed copy of an ASCII string in lower case. */
static char *
lower_ascii(const char *s)
{
	char	   *c = pstrdup(s);

	for (char *p = c; *p; p++)
		*p = (char) tolower((unsigned char) *p);
	return c;
}

static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
}

/* One boolean from a kept plan (false when there is no row or it is NULL). */
static bool
plan_bool(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "isa.http_begin: a lookup failed");
	if (SPI_processed == 0)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(d);
}

/*
 * isa.http_begin(claims jsonb, route_method text, route_path text,
 *                self_value text, resource_value text, request jsonb,
 *                read_only boolean, timeout_ms integer) RETURNS boolean (true)
 */
PG_FUNCTION_INFO_V1(isa_http_begin);
Datum
isa_http_begin(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	text	   *method = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	text	   *path = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	char	   *self_value = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	char	   *resource_value = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	Jsonb	   *request = PG_ARGISNULL(5) ? NULL : PG_GETARG_JSONB_P(5);
	bool		read_only = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
	int32		timeout_ms = PG_ARGISNULL(7) ? 0 : PG_GETARG_INT32(7);
	char	   *sub = isa_jsonb_text(claims, "sub");
	char	   *typ = isa_jsonb_text(claims, "typ");
	char	   *sid = isa_jsonb_text(claims, "sid");
	char	   *auth = NULL,
			   *permission = NULL,
			   *self_param = NULL;
	char		buf[32];
	Datum		args[3];

	/* the request, as PostgREST names it */
	set_local("request.jwt.claims", claims ? JsonbToCString(NULL, &claims->root, VARSIZE(claims)) : "{}");
	if (request)
	{
		char	   *m = isa_jsonb_text(request, "method");
		char	   *p = isa_jsonb_text(request, "path");
		char	   *id = isa_jsonb_text(request, "id");
		JsonbValue	k;
		JsonbValue *h;
		JsonbValue *tp = NULL;

		k.type = jbvString;
		k.val.string.val = "headers";
		k.val.string.len = 7;
		h = JB_ROOT_IS_OBJECT(request) ? findJsonbValueFromContainer(&request->root, JB_FOBJECT, &k) : NULL;
		set_local("request.method", m ? m : "");
		set_local("request.path", p ? p : "");
		set_local("request.headers", h && h->type == jbvBinary ?
				  JsonbToCString(NULL, h->val.binary.data, h->val.binary.len) : "{}");
		set_local("request.id", id ? id : "");

		/*
		 * The request's correlation for the events it publishes
		 * (docs/tracing.md): its id when a UUID (the client's X-Request-Id,
		 * else the one isa-httpd made), and a valid traceparent header.
		 */
		set_local("request.correlation_id", is_uuid_text(id) ? lower_ascii(id) : "");
		if (h && h->type == jbvBinary)
		{
			k.val.string.val = "traceparent";
			k.val.string.len = strlen("traceparent");
			tp = findJsonbValueFromContainer(h->val.binary.data, JB_FOBJECT, &k);
		}
		if (tp && tp->type == jbvString && isa_valid_traceparent(tp->val.string.val, tp->val.string.len))
			set_local("request.traceparent", pnstrdup(tp->val.string.val, tp->val.string.len));
		else
			set_local("request.traceparent", "");
	}
	else
	{
		set_local("request.method", "");
		set_local("request.path", "");
		set_local("request.headers", "{}");
		set_local("request.id", "");
		set_local("request.correlation_id", "");
		set_local("request.traceparent", "");
	}
	snprintf(buf, sizeof buf, "%d", timeout_ms > 0 ? timeout_ms : 0);
	set_local("statement_timeout", buf);
	if (read_only)
		set_local("transaction_read_only", "on");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "isa.http_begin: SPI_connect failed");
	if (route_plan == NULL)
	{
		Oid			t2[2] = {TEXTOID, TEXTOID};

		route_plan = isa_keep_plan("SELECT auth, permission, self_param FROM isa.http_routes WHERE method = $1 AND path = $2", 2, t2, "isa.http_begin");
	}
	args[0] = PointerGetDatum(method);
	args[1] = PointerGetDatum(path);
	if (method == NULL || path == NULL ||
		SPI_execute_plan(route_plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
						errmsg("no route %s %s", method ? text_to_cstring(method) : "?",
							   path ? text_to_cstring(path) : "?")));
	auth = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	permission = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	self_param = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);

	if (strcmp(auth, "public") == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(true);
	}
	if (claims == NULL || sub == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						errmsg("authentication required")));
	if (typ == NULL || (strcmp(typ, "access") != 0 && strcmp(typ, "device") != 0) ||
		(strcmp(auth, "device") == 0) != (strcmp(typ, "device") == 0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						errmsg("invalid token: %s token for a %s route", typ ? typ : "untyped", auth)));

	/* the session: live, of this subject and kind (auth.live_sessions, in the plan) */
	if (!is_uuid_text(sid))
		ereport(ERROR, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						errmsg("invalid token: session ended")));
	if (session_plan == NULL)
	{
		Oid			t3[3] = {TEXTOID, TEXTOID, TEXTOID};

		session_plan = isa_keep_plan("SELECT EXISTS (SELECT FROM auth.live_sessions l "
								 "WHERE l.session_id = $1::uuid AND l.subject = $2 AND l.token_type = $3)", 3, t3, "isa.http_begin");
	}
	args[0] = CStringGetTextDatum(sid);
	args[1] = CStringGetTextDatum(sub);
	args[2] = CStringGetTextDatum(typ);
	if (!plan_bool(session_plan, args, NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
						errmsg("invalid token: session ended")));

	if (check_plan == NULL)
	{
		Oid			t3[3] = {TEXTOID, TEXTOID, TEXTOID};

		check_plan = isa_keep_plan("SELECT authz.check($1::uuid, $2, $3)", 3, t3, "isa.http_begin");
	}
	if (strcmp(auth, "admin") == 0)
	{
		args[0] = CStringGetTextDatum(sub);
		args[1] = CStringGetTextDatum("isa:admin");
		if (!plan_bool(check_plan, args, "  n"))
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							errmsg("permission denied: isa:admin required")));
	}
	/* the owner needs no permission; ids are compared case-blind */
	if (self_param && self_value && pg_strcasecmp(self_value, sub) == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(true);
	}
	if (permission)
	{
		bool		granted = false;

		if (strcmp(typ, "access") == 0)
		{
			args[0] = CStringGetTextDatum(sub);
			args[1] = CStringGetTextDatum(permission);
			args[2] = resource_value ? CStringGetTextDatum(resource_value) : (Datum) 0;
			granted = plan_bool(check_plan, args, resource_value ? NULL : "  n");
		}
		if (!granted)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							errmsg("permission denied: %s required", permission)));
	}
	else if (self_param)
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("permission denied: only the owner may do this")));
	SPI_finish();
	PG_RETURN_BOOL(true);
}
