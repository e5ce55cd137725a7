/*
 * main.c — isa-httpd: the libmicrohttpd server, one request's life (limits,
 * route, token, arguments, SQL, answer), the built-in endpoints (/live,
 * /ready, /metrics, /openapi.json) and the maintenance thread that loads the
 * routes and the signing keys.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- routes */

static pthread_mutex_t routes_lock = PTHREAD_MUTEX_INITIALIZER;
static RouteTable *routes;
static volatile sig_atomic_t reload_requested = 1;
static volatile sig_atomic_t stopping;

static RouteTable *
routes_get(void)
{
	RouteTable *t;

	pthread_mutex_lock(&routes_lock);
	t = routes;
	if (t)
		t->refcount++;
	pthread_mutex_unlock(&routes_lock);
	return t;
}

static void
routes_put(RouteTable *t)
{
	bool		last;

	if (t == NULL)
		return;
	pthread_mutex_lock(&routes_lock);
	last = --t->refcount == 0;
	pthread_mutex_unlock(&routes_lock);
	if (last)
		routes_free(t);
}

/* Loads the routes (and the EdDSA keys) from the database. */
static bool
load_from_db(bool want_routes, bool want_keys)
{
	bool		timed_out;
	PoolConn   *c = pool_acquire(&timed_out);
	char	   *value;
	SqlError	err;
	bool		ok = true;

	if (c == NULL)
		return false;
	if (want_routes)
	{
		if (pool_query_value(c, "SELECT isa.http_route_catalogue()::text", &value, &err) && value)
		{
			char	   *msg = NULL;
			RouteTable *t = routes_from_json(value, &msg);

			if (t)
			{
				t->refcount = 1;
				pthread_mutex_lock(&routes_lock);
				RouteTable *old = routes;

				routes = t;
				pthread_mutex_unlock(&routes_lock);
				routes_put(old);
				log_line("loaded %d routes", t->nroutes);
			}
			else
			{
				log_line("cannot use the routes: %s", msg);
				free(msg);
				ok = false;
			}
		}
		else
		{
			log_line("cannot load the routes: %s", err.message ? err.message : "no answer");
			ok = false;
		}
		free(value);
		free(err.message), free(err.detail), free(err.hint);
	}
	if (want_keys && ok)
	{
		if (pool_query_value(c, "SELECT auth.jwks()::text", &value, &err) && value)
		{
			char	   *msg = NULL;

			if (jwt_set_jwks(value, &msg) != 0)
			{
				log_line("cannot use auth.jwks(): %s", msg);
				free(msg);
			}
		}
		else
			log_line("cannot load the signing keys: %s", err.message ? err.message : "no answer");
		free(value);
		free(err.message), free(err.detail), free(err.hint);
	}
	pool_release(c);
	return ok;
}

static void *
maintenance(void *arg)
{
	double		next_try = 0;

	(void) arg;
	while (!stopping)
	{
		double		now = now_seconds();
		bool		need_routes = reload_requested || routes == NULL;
		bool		need_keys = jwt_wants_keys();

		if ((need_routes || need_keys) && now >= next_try)
		{
			if (need_routes)
				reload_requested = 0;
			if (!load_from_db(need_routes, need_keys || (need_routes && jwt_keys_from_db())))
			{
				if (need_routes)
					reload_requested = 1;
				next_try = now + 1;
			}
		}
		usleep(100 * 1000);
	}
	return NULL;
}

/* ---------------------------------------------------------------- requests */

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* control characters, and %00 (unescape() decodes it as DEL) */
static bool
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || (unsigned char) *s == 0x7f)
			return true;
	return false;
}

typedef struct KV
{
	Source	   *items;
	int			n;
	int			cap;
	bool		duplicate;
	const char *dup_name;
	bool		control;		/* a name or value holds a control character (or %00) */
} KV;

static enum MHD_Result
collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	KV		   *kv = cls;

	(void) kind;
	if (has_control(key) || (value && has_control(value)))
		kv->control = true;
	for (int i = 0; i < kv->n; i++)
		if (!strcmp(kv->items[i].name, key))
		{
			kv->duplicate = true;
			kv->dup_name = key;
		}
	if (kv->n == kv->cap)
	{
		kv->cap = kv->cap ? kv->cap * 2 : 16;
		Source	   *p = realloc(kv->items, sizeof(Source) * (size_t) kv->cap);

		if (p == NULL)
			return MHD_NO;
		kv->items = p;
	}
	kv->items[kv->n].name = key;
	kv->items[kv->n].value = value ? value : "";
	kv->n++;
	return MHD_YES;
}

static const char *
lookup_header(void *ctx, const char *name)
{
	return MHD_lookup_connection_value((struct MHD_Connection *) ctx, MHD_HEADER_KIND, name);
}

static bool
valid_request_id(const char *s)
{
	size_t		n = s ? strlen(s) : 0;

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && !strchr("-_.:", s[i]))
			return false;
	return true;
}

static void
new_request_id(char *out)
{
	unsigned char b[16];

	randombytes_buf(b, sizeof b);
	b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

typedef struct Answer
{
	int			status;
	char	   *body;			/* malloc'ed; NULL: empty */
	const char *content_type;
	char		allow[128];
	bool		allow_empty;	/* send "Allow:" with no method */
	int			retry_after;
	const char *www_authenticate;
	const char *route;			/* metrics label */
} Answer;

static void
answer_error(Answer *a, int status, const char *code, const char *message, const char *details, const char *hint)
{
	free(a->body);
	a->status = status;
	a->body = error_body(code, message, details, hint);
	a->content_type = "application/json; charset=utf-8";
}

static enum MHD_Result
send_answer(struct MHD_Connection *conn, Answer *a, const char *request_id)
{
	struct MHD_Response *resp;
	enum MHD_Result rc;
	size_t		len = a->body ? strlen(a->body) : 0;

	resp = MHD_create_response_from_buffer(len, a->body ? a->body : (char *) "",
										   a->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	a->body = NULL;
	if (resp == NULL)
		return MHD_NO;
	if (len || a->content_type)
		MHD_add_response_header(resp, "Content-Type", a->content_type ? a->content_type : "application/json; charset=utf-8");
	MHD_add_response_header(resp, "X-Request-Id", request_id);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (a->allow[0] || a->allow_empty)
		MHD_add_response_header(resp, "Allow", a->allow);
	if (a->retry_after > 0)
	{
		char		ra[16];

		snprintf(ra, sizeof ra, "%d", a->retry_after);
		MHD_add_response_header(resp, "Retry-After", ra);
	}
	if (a->www_authenticate)
		MHD_add_response_header(resp, "WWW-Authenticate", a->www_authenticate);
	rc = MHD_queue_response(conn, (unsigned) a->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static void
client_address(struct MHD_Connection *conn, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	snprintf(out, len, "unknown");
	if (ci == NULL || ci->client_addr == NULL)
		return;
	if (ci->client_addr->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *) ci->client_addr)->sin_addr, out, (socklen_t) len);
	else if (ci->client_addr->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) ci->client_addr)->sin6_addr, out, (socklen_t) len);
}

static int
client_fd(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

/* The request headers as a JSON object (lower-case names), without the
 * credentials: request.headers in SQL. */
static enum MHD_Result
collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	json_t	   *o = cls;
	char		name[128];
	size_t		i;

	(void) kind;
	for (i = 0; key[i] && i < sizeof name - 1; i++)
		name[i] = (char) tolower((unsigned char) key[i]);
	name[i] = '\0';
	if (!strcmp(name, "authorization") || !strcmp(name, "cookie") || !strcmp(name, "stripe-signature"))
		return MHD_YES;
	json_object_set_new(o, name, json_string(value ? value : ""));
	return MHD_YES;
}

static bool
is_json_content_type(const char *ct)
{
	size_t		n = strlen("application/json");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static bool
builtin(struct MHD_Connection *conn, const char *method, const char *url, Answer *a)
{
	bool		get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

	if (strcmp(url, "/live") && strcmp(url, "/ready") && strcmp(url, "/metrics") && strcmp(url, "/openapi.json"))
		return false;
	a->route = url;
	if (!get)
	{
		snprintf(a->allow, sizeof a->allow, "GET, HEAD");
		answer_error(a, 405, "ISA405", "method not allowed", NULL, NULL);
		return true;
	}
	a->content_type = "application/json; charset=utf-8";
	a->status = 200;
	if (!strcmp(url, "/live"))
	{
		a->body = xstrdup("{\"status\":\"live\"}");
		return true;
	}
	if (!strcmp(url, "/openapi.json"))
	{
		RouteTable *t = routes_get();

		if (t == NULL)
			answer_error(a, 503, "ISA503", "the routes are not loaded yet", NULL, NULL), a->retry_after = 1;
		else
			a->body = openapi_render(t);
		routes_put(t);
		return true;
	}

	bool		timed_out;
	PoolConn   *c = pool_acquire(&timed_out);
	char	   *value = NULL;
	SqlError	err = {0};
	bool		ok = false;

	if (c)
	{
		ok = pool_query_value(c, !strcmp(url, "/ready") ?
							  "SELECT isa.http_ready()::text" :
							  "SELECT isa.http_metrics()::text",
							  &value, &err);
		pool_release(c);
	}
	if (!strcmp(url, "/ready"))
	{
		bool		db = c != NULL && ok;
		bool		bridge = db && value && !strcmp(value, "true");
		bool		have_routes = routes != NULL;

		a->status = db && bridge && have_routes ? 200 : 503;
		Buf			b = {0};

		buf_printf(&b, "{\"status\":\"%s\",\"database\":%s,\"bridge\":%s,\"routes\":%s}",
				   a->status == 200 ? "ready" : "not ready", db ? "true" : "false", bridge ? "true" : "false",
				   have_routes ? "true" : "false");
		a->body = b.data;
		if (a->status == 503)
			a->retry_after = 1;
	}
	else
	{
		Buf			b = {0};

		metrics_render(&b, ok ? value : NULL);
		a->body = b.data;
		a->content_type = "text/plain; version=0.0.4; charset=utf-8";
	}
	free(value);
	free(err.message), free(err.detail), free(err.hint);
	return true;
}

static void
map_sql_error(Answer *a, const SqlResult *res, bool anonymous, const char *request_id)
{
	const char *s = res->err.sqlstate;
	int			status = sqlstate_http_status(s, anonymous);
	bool		internal = status == 500 && (!strncmp(s, "XX", 2) || !strncmp(s, "58", 2) || !strncmp(s, "F0", 2));

	if (internal || res->broken)
	{
		log_line("request %s: SQLSTATE %s: %s", request_id, s, res->err.message ? res->err.message : "");
		answer_error(a, res->broken ? 503 : status, s, res->broken ? "the database is not reachable" : "internal error",
					 NULL, "The server log has the details under this request's X-Request-Id.");
		if (res->broken)
			a->retry_after = 1;
		return;
	}
	answer_error(a, status, s, res->err.message, res->err.detail, res->err.hint);
	if (status == 401)
		a->www_authenticate = "Bearer error=\"invalid_token\"";
	if (status == 503)
		a->retry_after = 1;
}

/*
 * A request, from its headers to its answer.  What can be decided from the
 * headers is decided at once (route, rate limit, token; an upload begins),
 * so an upload streams to the database as it arrives and a refused one is
 * answered before its body is sent.
 */
typedef struct Request
{
	bool		seen;			/* the access handler has run once */
	char	   *raw_path;		/* the path as sent (before percent-decoding) */
	double		start;
	Buf			body;
	bool		too_large;
	bool		builtin;
	char		request_id[140];
	Answer		early;			/* status != 0: the answer is decided */
	bool		early_sent;
	RouteTable *t;
	const Route *r;
	char		storage[2048];
	char	   *segs[MAX_SEGMENTS];
	PathParam	pparams[MAX_SEGMENTS];
	int			npp;
	json_t	   *claims;
	char	   *claims_text;
	const char *subject;
	char	   *request_json;
	char		timeout[16];
	const char *begin_params[8];
	Upload	   *upload;
	SqlResult	upload_err;
} Request;

static void
request_free(Request *req)
{
	free(req->raw_path);
	buf_free(&req->body);
	free(req->early.body);
	json_decref(req->claims);
	free(req->claims_text);
	free(req->request_json);
	upload_free(req->upload);
	sql_result_clear(&req->upload_err);
	routes_put(req->t);
	free(req);
}

/* Allow of a 405 from SQL (a GET whose function writes): the path's other methods. */
static void
allowed_methods(Request *req, Answer *a)
{
	Buf			b = {0};

	for (int i = 0; i < req->t->nroutes; i++)
	{
		const Route *o = &req->t->routes[i];

		if (!strcmp(o->path, req->r->path) && strcmp(o->method, req->r->method) != 0)
		{
			if (b.len)
				buf_puts(&b, ", ");
			buf_puts(&b, o->method);
		}
	}
	snprintf(a->allow, sizeof a->allow, "%s", b.data ? b.data : "");
	a->allow_empty = b.data == NULL;
	buf_free(&b);
}

/* Runs a call of the request (isa.http_begin first), retrying serialization
 * failures and deadlocks; false with the answer set on an error. */
static bool
run_request_call(struct MHD_Connection *conn, Request *req, const Call *call, SqlResult *res, Answer *a)
{
	for (int attempt = 0;; attempt++)
	{
		bool		timed_out;
		PoolConn   *c = pool_acquire(&timed_out);

		if (c == NULL)
		{
			memset(res, 0, sizeof *res);
			answer_error(a, 503, "ISA503", timed_out ? "all database connections are busy" :
						 "the database is not reachable", NULL, NULL);
			a->retry_after = 1;
			return false;
		}
		req->begin_params[3] = call->self_value;
		req->begin_params[4] = call->resource_value;
		pool_run(c, req->begin_params, call, conn ? client_fd(conn) : -1, res);
		pool_release(c);
		if (res->canceled)
		{
			answer_error(a, 499, "57014", "the client closed the connection", NULL, NULL);
			return false;
		}
		if (!res->ok && (!strcmp(res->err.sqlstate, "40001") || !strcmp(res->err.sqlstate, "40P01")) &&
			attempt < cfg.retries)
		{
			sql_result_clear(res);
			usleep((useconds_t) (1000 << attempt));
			continue;
		}
		/* a backend ended by the server (terminate, shutdown, restart) rolled
		 * back whatever it was doing: once more, on a new connection */
		if (!res->ok && !strncmp(res->err.sqlstate, "57P0", 4) && attempt == 0)
		{
			sql_result_clear(res);
			continue;
		}
		if (!res->ok)
		{
			/* 401 asks for a token: only where a token would help */
			map_sql_error(a, res, req->claims == NULL && req->r->auth != AUTH_PUBLIC, req->request_id);
			if (a->status == 405)
				allowed_methods(req, a);
			return false;
		}
		return true;
	}
}

/* Query string and body to arguments; false with the answer set. */
static bool
request_call(struct MHD_Connection *conn, Request *req, json_t *body, Call *call, Answer *a)
{
	KV			query = {0};
	char	   *message = NULL;
	bool		ok;

	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect, &query);
	if (query.duplicate || query.control)
	{
		if (query.control)
			answer_error(a, 400, "ISA400", "a query parameter holds a control character or %00", NULL, NULL);
		else
			answer_error(a, 400, "ISA400", "a query parameter is given twice", query.dup_name, NULL);
		free(query.items);
		return false;
	}
	ok = build_call(req->r, req->pparams, req->npp, query.items, query.n, body, req->body.data, req->body.len,
					lookup_header, conn, req->subject, call, &message);
	if (!ok)
		answer_error(a, 400, "ISA400", message, NULL, "GET /openapi.json describes each route's arguments.");
	free(message);
	free(query.items);
	return ok;
}

/* What the headers decide: the route, the rate limit, the token. */
static void
prepare(struct MHD_Connection *conn, const char *method, const char *url, Request *req)
{
	Answer	   *a = &req->early;
	Buf			allow = {0};
	bool		path_matched;
	int			nsegs;

	if (!strcmp(url, "/live") || !strcmp(url, "/ready") || !strcmp(url, "/metrics") || !strcmp(url, "/openapi.json"))
	{
		req->builtin = true;
		return;
	}
	req->t = routes_get();
	if (req->t == NULL)
	{
		answer_error(a, 503, "ISA503", "the routes are not loaded yet", NULL, NULL);
		a->retry_after = 1;
		return;
	}
	if (has_control(url) || !decode_path(req->raw_path ? req->raw_path : url, req->segs, &nsegs,
										 req->storage, sizeof req->storage))
	{
		answer_error(a, 400, "ISA400", "invalid path",
					 "Empty, \".\" and \"..\" segments, control characters and %00 are not allowed.", NULL);
		return;
	}
	req->r = route_match(req->t, method, req->segs, nsegs, req->pparams, &req->npp, &path_matched, &allow);
	if (req->r == NULL)
	{
		if (path_matched)
		{
			snprintf(a->allow, sizeof a->allow, "%s", allow.data ? allow.data : "");
			answer_error(a, 405, "ISA405", "method not allowed", NULL, NULL);
		}
		else
			answer_error(a, 404, "ISA404", "no such route", NULL, "GET /openapi.json lists the routes.");
		buf_free(&allow);
		return;
	}
	buf_free(&allow);
	/* an upload's size limit is the service's (put_chunk), not max_body_bytes */
	if (req->too_large && !(req->r->stream && !strcmp(req->r->stream, "upload")))
	{
		answer_error(a, 413, "ISA413", "the request body is too large", NULL, NULL);
		return;
	}
	req->too_large = false;

	if (req->r->rate_limited)
	{
		char		addr[64];
		int			retry = 1;

		client_address(conn, addr, sizeof addr);
		if (!ratelimit_take(addr, &retry))
		{
			answer_error(a, 429, "ISA429", "too many requests", NULL, NULL);
			a->retry_after = retry;
			return;
		}
	}

	/* the token: its signature and times here, its session in SQL */
	const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");

	if (authz)
	{
		const char *reason;

		if (strncasecmp(authz, "Bearer ", 7) != 0)
		{
			answer_error(a, 401, "ISA401", "the Authorization header must be Bearer <token>", NULL, NULL);
			a->www_authenticate = "Bearer";
			return;
		}
		req->claims = jwt_verify(authz + 7, &reason);
		if (req->claims == NULL)
		{
			answer_error(a, 401, "28000", reason, NULL, NULL);
			a->www_authenticate = "Bearer error=\"invalid_token\"";
			return;
		}
		req->subject = json_string_value(json_object_get(req->claims, "sub"));
		req->claims_text = json_dumps(req->claims, JSON_COMPACT);
	}
	else if (req->r->auth != AUTH_PUBLIC)
	{
		answer_error(a, 401, "28000", "authentication required", NULL, "Send Authorization: Bearer <access token>.");
		a->www_authenticate = "Bearer";
		return;
	}

	json_t	   *rq = json_object();
	json_t	   *headers = json_object();

	MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, headers);
	json_object_set_new(rq, "method", json_string(method));
	json_object_set_new(rq, "path", json_string(url));
	json_object_set_new(rq, "headers", headers);
	json_object_set_new(rq, "id", json_string(req->request_id));
	req->request_json = json_dumps(rq, JSON_COMPACT);
	json_decref(rq);
	if (req->request_json == NULL)
	{
		answer_error(a, 400, "ISA400", "a header is not valid UTF-8", NULL, NULL);
		return;
	}
	snprintf(req->timeout, sizeof req->timeout, "%d", cfg.statement_timeout_ms);
	req->begin_params[0] = req->claims_text;
	req->begin_params[1] = req->r->method;
	req->begin_params[2] = req->r->path;
	req->begin_params[5] = req->request_json;
	req->begin_params[6] = !strcmp(req->r->method, "GET") ? "true" : "false";
	req->begin_params[7] = req->timeout;

	if (req->r->stream && !strcmp(req->r->stream, "upload"))
	{
		Call		call;
		SqlResult	res;

		if (!request_call(conn, req, NULL, &call, a))
			return;
		if (run_request_call(NULL, req, &call, &res, a))
		{
			json_error_t jerr;
			json_t	   *id = json_loads(res.value ? res.value : "null", JSON_DECODE_ANY, &jerr);

			if (json_is_string(id))
				req->upload = upload_start(req->r->schema, json_string_value(id), req->begin_params);
			else
				answer_error(a, 500, "XX000", "the upload route did not return an upload id", NULL, NULL);
			json_decref(id);
		}
		sql_result_clear(&res);
		call_free(&call);
	}
}

/* The answer once the whole request is in. */
static void
finish(struct MHD_Connection *conn, const char *method, Request *req, Answer *a, struct MHD_Response **stream)
{
	const Route *r = req->r;
	json_t	   *body = NULL;
	Call		call = {0};
	SqlResult	res = {0};

	if (req->upload)
	{
		if (req->too_large)
			answer_error(a, 413, "ISA413", "the request body is too large", NULL, NULL);
		else if (!req->upload_err.ok && req->upload_err.err.sqlstate[0])
			map_sql_error(a, &req->upload_err, req->claims == NULL, req->request_id);
		else
		{
			upload_finish(req->upload, &res);
			if (!res.ok)
				map_sql_error(a, &res, req->claims == NULL, req->request_id);
			else
			{
				a->status = r->status;
				a->content_type = "application/json; charset=utf-8";
				a->body = res.value ? res.value : xstrdup("null");
				res.value = NULL;
			}
		}
		sql_result_clear(&res);
		return;
	}
	if (req->too_large)
	{
		answer_error(a, 413, "ISA413", "the request body is too large", NULL, NULL);
		return;
	}

	bool		has_body = !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");

	if (has_body && req->body.len > 0 && !r->raw_body_param)
	{
		json_error_t jerr;

		if (!is_json_content_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type")))
		{
			answer_error(a, 415, "ISA415", "the request body must be application/json", NULL, NULL);
			return;
		}
		body = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
		if (body == NULL)
		{
			answer_error(a, 400, "ISA400", "the request body is not valid JSON", jerr.text, NULL);
			return;
		}
	}
	if (request_call(conn, req, body, &call, a) && run_request_call(conn, req, &call, &res, a))
	{
		a->status = r->status;
		a->content_type = "application/json; charset=utf-8";
		if (r->stream && !strcmp(r->stream, "download"))
		{
			int			status = 500;
			const char *message = NULL;

			*stream = download_response(r->schema, res.value,
										MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Range"),
										MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match"),
										!strcmp(method, "HEAD"), &status, &message);
			if (*stream == NULL)
				answer_error(a, status, "XX000", message, NULL, NULL);
			else
				a->status = status;
		}
		else if (r->returns == RET_VOID || r->status == 204)
		{
			a->status = 204;
			a->content_type = NULL;
		}
		else
		{
			a->body = res.value ? res.value : xstrdup("null");
			res.value = NULL;
		}
	}
	sql_result_clear(&res);
	call_free(&call);
	json_decref(body);
}

static const char *
metrics_method(const char *m)
{
	static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (!strcmp(m, known[i]))
			return known[i];
	return "other";
}

static enum MHD_Result
respond(struct MHD_Connection *conn, const char *method, const char *url, Request *req, Answer *a,
		struct MHD_Response *stream)
{
	double		elapsed = now_seconds() - req->start;
	const char *route = req->builtin ? url : req->r ? req->r->path : "unmatched";
	enum MHD_Result rc;

	if (a->status == 0)
		answer_error(a, 500, "XX000", "internal error", NULL, NULL);
	/* the method label takes the methods routes have, so a scanner cannot grow the series */
	metrics_observe(route, metrics_method(method), a->status, elapsed);
	if (cfg.log_requests)
		log_line("%s %s %d %.3fms %s", method, url, a->status, elapsed * 1000, req->request_id);
	if (stream)
	{
		MHD_add_response_header(stream, "X-Request-Id", req->request_id);
		rc = MHD_queue_response(conn, (unsigned) a->status, stream);
		MHD_destroy_response(stream);
		return rc;
	}
	rc = send_answer(conn, a, req->request_id);
	free(a->body);
	a->body = NULL;
	return rc;
}

/* Before libmicrohttpd decodes the URI: keep the raw path, so that a path is
 * split before its segments are decoded ("a%2Fb" is one segment). */
static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	Request    *req = xcalloc(1, sizeof(Request));
	size_t		n = strcspn(uri, "?");

	(void) cls;
	(void) conn;
	req->raw_path = xmalloc(n + 1);
	memcpy(req->raw_path, uri, n);
	req->raw_path[n] = '\0';
	return req;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;
	Answer		a = {0};
	struct MHD_Response *stream = NULL;

	(void) cls;
	(void) version;
	if (req == NULL || !req->seen)
	{
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");

		if (req == NULL)
			req = xcalloc(1, sizeof(Request));
		req->seen = true;
		req->start = now_seconds();
		*con_cls = req;
		metrics_inflight(1);
		if (valid_request_id(rid))
			snprintf(req->request_id, sizeof req->request_id, "%s", rid);
		else
			new_request_id(req->request_id);
		if (cl && strtoll(cl, NULL, 10) > cfg.max_body_bytes)
			req->too_large = true;
		prepare(conn, method, url, req);
		/* refused at the headers with a body coming: answer now, without
		 * reading it (libmicrohttpd then closes the connection); without a
		 * body, answer at the end as usual and keep the connection */
		if (req->early.status &&
			((cl && strcmp(cl, "0") != 0) ||
			 MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding")))
		{
			req->early_sent = true;
			return respond(conn, method, url, req, &req->early, NULL);
		}
		return MHD_YES;
	}
	if (*upload_data_size)
	{
		if (req->upload)
		{
			if (!req->upload_err.err.sqlstate[0])
				upload_write(req->upload, upload_data, *upload_data_size, &req->upload_err);
		}
		else if (!req->too_large)
		{
			if (req->body.len + *upload_data_size > (size_t) cfg.max_body_bytes)
			{
				req->too_large = true;
				buf_free(&req->body);
			}
			else
				buf_append(&req->body, upload_data, *upload_data_size);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->early_sent)
		return MHD_YES;			/* already answered */
	if (req->early.status)
		return respond(conn, method, url, req, &req->early, NULL);
	if (req->builtin)
		builtin(conn, method, url, &a);
	else
		finish(conn, method, req, &a, &stream);
	return respond(conn, method, url, req, &a, stream);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (req == NULL)
		return;
	if (req->seen)
		metrics_inflight(-1);
	request_free(req);
	*con_cls = NULL;
}

/*
 * Percent-decoding of paths and query arguments, as libmicrohttpd's own, but
 * %00 becomes DEL (0x7f) instead of a NUL that would cut the C string short
 * ("evil.exe%00.txt" read as "evil.exe"): split_path and the query check
 * refuse control characters, so such a request is a 400.
 */
static size_t
unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	char	   *w = s;

	(void) cls;
	(void) conn;
	for (const char *r = s; *r; r++)
	{
		int			hi,
					lo;

		if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0)
		{
			int			c = hi * 16 + lo;

			*w++ = c == 0 ? 0x7f : (char) c;
			r += 2;
		}
		else
			*w++ = *r;
	}
	*w = '\0';
	return (size_t) (w - s);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char		line[512];

	(void) cls;
	vsnprintf(line, sizeof line, fmt, ap);
	size_t		n = strlen(line);

	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	log_line("libmicrohttpd: %s", line);
}

static void
on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stopping = 1;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in addr;
	struct MHD_Daemon *d;
	pthread_t	maint;
	char	   *err = NULL;
	struct sigaction sa;

	config_load(argc, argv);
	if (jwt_init(&err) != 0)
	{
		fprintf(stderr, "isa-httpd: %s\n", err);
		return 2;
	}
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t) cfg.port);
	if (inet_pton(AF_INET, cfg.listen, &addr.sin_addr) != 1)
	{
		fprintf(stderr, "isa-httpd: listen must be an IPv4 address, not \"%s\"\n", cfg.listen);
		return 2;
	}
	pool_init();
	metrics_init(0);

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
						 MHD_USE_ERROR_LOG,
						 (uint16_t) cfg.port, NULL, NULL, on_request, NULL,
						 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
						 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
						 MHD_OPTION_CONNECTION_LIMIT, (unsigned) cfg.max_connections,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) cfg.connection_timeout_s,
						 /* the request line and headers must fit, with room for the answer's headers */
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) cfg.max_header_bytes + 2048,
						 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
						 MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
						 MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
						 MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned) 1024,
						 MHD_OPTION_END);
	if (d == NULL)
	{
		fprintf(stderr, "isa-httpd: cannot listen on %s:%d: %s\n", cfg.listen, cfg.port, strerror(errno));
		return 1;
	}
	log_line("isa-httpd listening on http://%s:%d (pool %d, jwt %s)", cfg.listen, cfg.port, cfg.pool_size,
			 cfg.jwt_algorithm);
	/* the routes and keys before the first request, when the database is up
	 * (otherwise the maintenance thread keeps trying; requests get 503) */
	if (load_from_db(true, jwt_keys_from_db()))
		reload_requested = 0;
	pthread_create(&maint, NULL, maintenance, NULL);
	while (!stopping)
		pause();
	log_line("isa-httpd stopping");
	MHD_stop_daemon(d);
	pthread_join(maint, NULL);
	pool_shutdown();
	routes_put(routes);
	return 0;
}
