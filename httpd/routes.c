/*
 * routes.c — the route table (isa.http_route_catalogue()'s JSON), matching a
 * path to a route, and mapping a request to the route function's named
 * arguments.  Pure functions of their input: test/fuzz/fuzz_routes.c drives
 * them with random requests.
 */
#include "httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *
dup_or_null(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? xstrdup(s) : NULL;
}

static void
route_free_fields(Route *r)
{
	free(r->method);
	free(r->path);
	free(r->function);
	free(r->service);
	free(r->summary);
	free(r->permission);
	free(r->self_param);
	free(r->resource_param);
	free(r->subject_param);
	free(r->raw_body_param);
	free(r->return_type);
	free(r->stream);
	free(r->schema);
	json_decref(r->header_params);
	for (int i = 0; i < r->nargs; i++)
	{
		free(r->args[i].name);
		free(r->args[i].type);
	}
	free(r->args);
	for (int i = 0; i < r->nsegments; i++)
		free(r->segments[i]);
}

void
routes_free(RouteTable *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < t->nroutes; i++)
		route_free_fields(&t->routes[i]);
	free(t->routes);
	free(t);
}

static bool
parse_route(json_t *o, Route *r, char **err)
{
	const char *auth = json_string_value(json_object_get(o, "auth"));
	const char *returns = json_string_value(json_object_get(o, "returns"));
	json_t	   *args = json_object_get(o, "args");
	char	   *copy;
	char	   *segs[MAX_SEGMENTS];
	char		storage[1024];

	r->method = dup_or_null(o, "method");
	r->path = dup_or_null(o, "path");
	r->function = dup_or_null(o, "function");
	r->service = dup_or_null(o, "service");
	r->summary = dup_or_null(o, "summary");
	r->permission = dup_or_null(o, "permission");
	r->self_param = dup_or_null(o, "self_param");
	r->resource_param = dup_or_null(o, "resource_param");
	r->subject_param = dup_or_null(o, "subject_param");
	r->raw_body_param = dup_or_null(o, "raw_body_param");
	r->return_type = dup_or_null(o, "return_type");
	r->stream = dup_or_null(o, "stream");
	r->header_params = json_incref(json_object_get(o, "header_params"));
	r->status = (int) json_integer_value(json_object_get(o, "status"));
	r->rate_limited = json_is_true(json_object_get(o, "rate_limited"));
	if (!r->method || !r->path || !r->function || !auth || !returns || !json_is_array(args) || !r->status)
	{
		*err = xstrdup("a route of isa.http_route_catalogue() lacks a field");
		return false;
	}
	if (!r->summary)
		r->summary = xstrdup("");
	r->schema = xstrdup(r->function);
	if (strchr(r->schema, '.'))
		*strchr(r->schema, '.') = '\0';
	if (!r->service)
		r->service = xstrdup("isa");
	r->auth = !strcmp(auth, "user") ? AUTH_USER : !strcmp(auth, "device") ? AUTH_DEVICE :
		!strcmp(auth, "admin") ? AUTH_ADMIN : AUTH_PUBLIC;
	r->returns = !strcmp(returns, "set") ? RET_SET : !strcmp(returns, "void") ? RET_VOID : RET_ONE;
	r->nargs = (int) json_array_size(args);
	r->args = xcalloc((size_t) r->nargs, sizeof(RouteArg));
	for (int i = 0; i < r->nargs; i++)
	{
		json_t	   *a = json_array_get(args, (size_t) i);
		RouteArg   *ra = &r->args[i];

		ra->name = dup_or_null(a, "name");
		ra->type = dup_or_null(a, "type");
		if (!ra->name || !ra->type)
		{
			*err = xstrdup("an argument of a route lacks a name or type");
			return false;
		}
		ra->optional = json_is_true(json_object_get(a, "optional"));
		if (json_is_true(json_object_get(a, "array")))
			ra->kind = ARG_ARRAY;
		else if (!strcmp(ra->type, "jsonb") || !strcmp(ra->type, "json"))
			ra->kind = ARG_JSON;
		else if (!strcmp(ra->type, "bytea"))
			ra->kind = ARG_BYTEA;
		else
			ra->kind = ARG_TEXT;
	}
	copy = xstrdup(r->path);
	if (!split_path(copy, segs, &r->nsegments, storage, sizeof storage))
	{
		free(copy);
		*err = xstrdup("a route path cannot be split");
		return false;
	}
	free(copy);
	for (int i = 0; i < r->nsegments; i++)
	{
		r->segments[i] = xstrdup(segs[i]);
		if (segs[i][0] != '{')
			r->nliterals++;
	}
	return true;
}

RouteTable *
routes_from_json(const char *json, char **err)
{
	json_error_t jerr;
	json_t	   *root = json_loads(json, 0, &jerr);
	RouteTable *t;

	if (!json_is_array(root))
	{
		json_decref(root);
		*err = xstrdup("isa.http_route_catalogue() is not a JSON array");
		return NULL;
	}
	t = xcalloc(1, sizeof(RouteTable));
	t->nroutes = (int) json_array_size(root);
	t->routes = xcalloc((size_t) t->nroutes, sizeof(Route));
	for (int i = 0; i < t->nroutes; i++)
	{
		if (!parse_route(json_array_get(root, (size_t) i), &t->routes[i], err))
		{
			t->nroutes = i + 1;
			routes_free(t);
			json_decref(root);
			return NULL;
		}
	}
	json_decref(root);			/* the routes hold copies (and references) of what they need */
	return t;
}

/* Splits into storage (a copy); rejects empty, "." and ".." segments. */
bool
split_path(const char *path, char **segs, int *nsegs, char *storage, size_t storage_len)
{
	size_t		len = strlen(path);
	char	   *p;

	*nsegs = 0;
	if (len == 0 || path[0] != '/' || len >= storage_len)
		return false;
	memcpy(storage, path, len + 1);
	if (len == 1)
		return true;			/* "/" */
	p = storage + 1;
	for (;;)
	{
		char	   *slash = strchr(p, '/');

		if (slash)
			*slash = '\0';
		if (*p == '\0' || !strcmp(p, ".") || !strcmp(p, "..") || *nsegs == MAX_SEGMENTS)
			return false;
		for (const char *c = p; *c; c++)
			if ((unsigned char) *c < 0x20 || (unsigned char) *c == 0x7f)
				return false;	/* control characters, and %00 (decoded as DEL) */
		segs[(*nsegs)++] = p;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

int
hexdigit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Splits the raw path, then decodes each segment; false on a bad escape, a
 * control character (or %00), an empty, "." or ".." segment. */
bool
decode_path(const char *raw, char **segs, int *nsegs, char *storage, size_t len)
{
	char		copy[2048];
	char	   *csegs[MAX_SEGMENTS];
	int			n;
	size_t		used = 0;

	if (strlen(raw) >= sizeof copy || !split_path(raw, csegs, &n, copy, sizeof copy))
		return false;
	for (int i = 0; i < n; i++)
	{
		char	   *out = storage + used;

		for (const char *r = csegs[i]; *r; r++)
		{
			int			hi,
						lo,
						c = (unsigned char) *r;

			if (*r == '%')
			{
				if ((hi = hexdigit(r[1])) < 0 || (lo = hexdigit(r[2])) < 0)
					return false;
				c = hi * 16 + lo;
				r += 2;
			}
			if (c < 0x20 || c == 0x7f || used + 2 > len)
				return false;
			storage[used++] = (char) c;
		}
		storage[used++] = '\0';
		if (!strcmp(out, ".") || !strcmp(out, ".."))
			return false;
		segs[i] = out;
	}
	*nsegs = n;
	return true;
}

/*
 * The route whose template matches: literal segments equal, {name} segments
 * take any value.  The most literal segments win, so /v1/accounts/me beats
 * /v1/accounts/{user_id}.  When the path matches only for other methods,
 * *path_matched is set and allow lists them (405).
 */
const Route *
route_match(const RouteTable *t, const char *method, char **segs, int nsegs,
			PathParam *params, int *nparams, bool *path_matched, Buf *allow)
{
	const Route *best = NULL;
	bool		head = !strcmp(method, "HEAD");

	*path_matched = false;
	*nparams = 0;
	for (int i = 0; i < t->nroutes; i++)
	{
		const Route *r = &t->routes[i];
		bool		ok = r->nsegments == nsegs;

		for (int s = 0; ok && s < nsegs; s++)
			if (r->segments[s][0] != '{' && strcmp(r->segments[s], segs[s]) != 0)
				ok = false;
		if (!ok)
			continue;
		if (strcmp(r->method, method) != 0 && !(head && !strcmp(r->method, "GET")))
		{
			*path_matched = true;
			if (allow)
			{
				if (allow->len)
					buf_puts(allow, ", ");
				buf_puts(allow, r->method);
				if (!strcmp(r->method, "GET"))
					buf_puts(allow, ", HEAD");
			}
			continue;
		}
		if (best == NULL || r->nliterals > best->nliterals)
			best = r;
	}
	if (best)
	{
		for (int s = 0; s < nsegs; s++)
			if (best->segments[s][0] == '{')
			{
				params[*nparams].name = best->segments[s];
				params[*nparams].value = segs[s];
				(*nparams)++;
			}
	}
	return best;
}

/* ------------------------------------------------------------ arguments */

typedef struct Bound
{
	const char *from;			/* "path", "query", "body" … for messages */
	char	   *value;			/* NULL: JSON null */
	bool		set;
} Bound;

static int
arg_index(const Route *r, const char *name)
{
	for (int i = 0; i < r->nargs; i++)
		if (!strcmp(r->args[i].name, name))
			return i;
	return -1;
}

static char *
fmt_message(const char *fmt, const char *a, const char *b)
{
	Buf			m = {0};

	buf_printf(&m, fmt, a, b ? b : "");
	return m.data;
}

/* The SQL text a JSON value stands for, for an argument of kind k. */
static bool
json_to_param(const RouteArg *a, json_t *v, char **out, char **message)
{
	*out = NULL;
	if (json_is_null(v))
		return true;
	if (a->kind == ARG_JSON || a->kind == ARG_ARRAY)
	{
		if (a->kind == ARG_ARRAY && !json_is_array(v))
		{
			*message = fmt_message("argument %s must be a JSON array%s", a->name, NULL);
			return false;
		}
		*out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		return true;
	}
	if (json_is_string(v))
	{
		const char *s = json_string_value(v);
		size_t		n = json_string_length(v);

		if (memchr(s, '\0', n))
		{
			*message = fmt_message("argument %s contains a NUL character%s", a->name, NULL);
			return false;
		}
		*out = xstrdup(s);
		return true;
	}
	if (json_is_integer(v) || json_is_real(v) || json_is_boolean(v))
	{
		*out = json_dumps(v, JSON_ENCODE_ANY);
		return true;
	}
	*message = fmt_message("argument %s must be a string, number or boolean, not an %s", a->name,
						   json_is_array(v) ? "array" : "object");
	return false;
}

static bool
bind_arg(const Route *r, Bound *b, const char *name, const char *from, char *value, bool take, char **message)
{
	int			i = arg_index(r, name);

	if (i < 0)
	{
		if (take)
			free(value);
		*message = fmt_message("unknown argument \"%s\" (%s)", name, from);
		return false;
	}
	if ((r->subject_param && !strcmp(name, r->subject_param)) ||
		(r->raw_body_param && !strcmp(name, r->raw_body_param)))
	{
		if (take)
			free(value);
		*message = fmt_message("argument \"%s\" cannot be given: %s", name,
							   r->subject_param && !strcmp(name, r->subject_param) ?
							   "it is the caller's identity from the token" : "it is the request body");
		return false;
	}
	if (b[i].set)
	{
		if (take)
			free(value);
		*message = fmt_message("argument \"%s\" is given twice (%s)", name, from);
		return false;
	}
	b[i].set = true;
	b[i].from = from;
	b[i].value = take ? value : (value ? xstrdup(value) : NULL);
	return true;
}

static void
quote_ident(Buf *sql, const char *name)
{
	buf_puts(sql, "\"");
	for (const char *p = name; *p; p++)
	{
		if (*p == '"')
			buf_puts(sql, "\"");
		buf_append(sql, p, 1);
	}
	buf_puts(sql, "\"");
}

bool
build_call(const Route *r, const PathParam *path, int npath, const Source *query, int nquery,
		   json_t *body, const char *raw_body, size_t raw_len,
		   HeaderLookup get_header, void *header_ctx,
		   const char *subject, Call *call, char **message)
{
	Bound	   *b = xcalloc((size_t) r->nargs, sizeof(Bound));
	Buf			args = {0};
	bool		ok = false;
	int			n = 0;

	memset(call, 0, sizeof *call);
	*message = NULL;

	for (int i = 0; i < npath; i++)
	{
		char		name[64];
		size_t		len = strlen(path[i].name);

		if (len < 3 || len - 2 >= sizeof name)
			goto done;
		memcpy(name, path[i].name + 1, len - 2);
		name[len - 2] = '\0';
		if (!bind_arg(r, b, name, "path", (char *) path[i].value, false, message))
			goto done;
	}
	for (int i = 0; i < nquery; i++)
		if (!bind_arg(r, b, query[i].name, "query string", (char *) query[i].value, false, message))
			goto done;
	if (body && !r->raw_body_param)
	{
		const char *key;
		json_t	   *v;

		if (!json_is_object(body))
		{
			*message = xstrdup("the request body must be a JSON object of named arguments");
			goto done;
		}
		json_object_foreach(body, key, v)
		{
			int			i = arg_index(r, key);
			char	   *text;

			if (i < 0)
			{
				*message = fmt_message("unknown argument \"%s\" (%s)", key, "body");
				goto done;
			}
			if (!json_to_param(&r->args[i], v, &text, message))
				goto done;
			if (!bind_arg(r, b, key, "body", text, true, message))
				goto done;
		}
	}
	if (r->raw_body_param)
	{
		int			i = arg_index(r, r->raw_body_param);

		if (i >= 0)
		{
			if (memchr(raw_body ? raw_body : "", '\0', raw_len))
			{
				*message = xstrdup("the request body contains a NUL character");
				goto done;
			}
			b[i].set = true;
			b[i].from = "body";
			b[i].value = raw_body ? xstrdup(raw_body) : xstrdup("");
		}
	}
	if (r->header_params)
	{
		const char *key;
		json_t	   *v;

		json_object_foreach(r->header_params, key, v)
		{
			int			i = arg_index(r, key);
			const char *h = json_is_string(v) && get_header ? get_header(header_ctx, json_string_value(v)) : NULL;

			if (i >= 0 && !b[i].set && h != NULL)
			{
				b[i].set = true;
				b[i].from = "header";
				b[i].value = h ? xstrdup(h) : NULL;
			}
		}
	}
	if (r->subject_param)
	{
		int			i = arg_index(r, r->subject_param);

		if (i >= 0)
		{
			if (subject == NULL)
			{
				*message = xstrdup("this route needs the caller's identity");
				goto done;
			}
			b[i].set = true;
			b[i].from = "token";
			b[i].value = xstrdup(subject);
		}
	}

	call->params = xcalloc((size_t) r->nargs + 1, sizeof(char *));
	for (int i = 0; i < r->nargs; i++)
	{
		const RouteArg *a = &r->args[i];

		if (!b[i].set)
		{
			if (a->optional)
				continue;
			*message = fmt_message("missing argument \"%s\" (%s)", a->name, a->type);
			goto done;
		}
		n++;
		call->nparams = n;
		call->params[n - 1] = b[i].value;
		b[i].value = NULL;
		if (args.len)
			buf_puts(&args, ", ");
		quote_ident(&args, a->name);
		switch (a->kind)
		{
			case ARG_TEXT:
			case ARG_JSON:
				buf_printf(&args, " => $%d::%s", BEGIN_PARAMS + n, a->type);
				break;
			case ARG_ARRAY:
				buf_printf(&args, " => ARRAY(SELECT jsonb_array_elements_text($%d::jsonb))::%s", BEGIN_PARAMS + n,
						   a->type);
				break;
			case ARG_BYTEA:
				buf_printf(&args, " => isa.base64url_decode(translate(rtrim($%d::text, '='), '+/', '-_'))",
						   BEGIN_PARAMS + n);
				break;
		}
		if (r->self_param && !strcmp(a->name, r->self_param) && call->params[n - 1])
			call->self_value = xstrdup(call->params[n - 1]);
		if (r->resource_param && !strcmp(a->name, r->resource_param) && call->params[n - 1])
			call->resource_value = xstrdup(call->params[n - 1]);
	}
	call->nparams = n;
	{
		Buf			expr = {0};

		if (r->returns == RET_ONE)
		{
			buf_printf(&expr, "to_jsonb(%s(%s))::text", r->function, args.data ? args.data : "");
			call->sql = sql_with_begin(expr.data, NULL);
		}
		else
		{
			buf_printf(&expr, "%s(%s) r", r->function, args.data ? args.data : "");
			call->sql = sql_with_begin(r->returns == RET_SET ? "coalesce(jsonb_agg(to_jsonb(r)), '[]')::text" :
									   "NULL::text", expr.data);
		}
		buf_free(&expr);
	}
	ok = true;
done:
	for (int i = 0; i < r->nargs; i++)
		free(b[i].value);
	free(b);
	buf_free(&args);
	if (!ok)
	{
		call_free(call);
		if (*message == NULL)
			*message = xstrdup("the request cannot be mapped to the route's arguments");
	}
	return ok;
}

char *
sql_with_begin(const char *value, const char *from)
{
	Buf			sql = {0};

	buf_printf(&sql, "SELECT (SELECT %s%s%s WHERE b.ok) FROM (SELECT isa.http_begin($1::jsonb, $2, $3, $4, $5, "
			   "$6::jsonb, $7::boolean, $8::integer) AS ok) b",
			   value, from ? " FROM " : "", from ? from : "");
	return sql.data;
}

void
call_free(Call *c)
{
	if (c->params)
		for (int i = 0; i < c->nparams; i++)
			free(c->params[i]);
	free(c->params);
	free(c->lengths);
	free(c->formats);
	free(c->sql);
	free(c->self_value);
	free(c->resource_value);
	memset(c, 0, sizeof *c);
}
