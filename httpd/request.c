/*
 * request.c — one request's life: what the headers decide (route, rate
 * limit, token; an upload begins), the body, the call in SQL, the answer
 * (JSON, an error with its status, a file), the log line and the metrics;
 * and the built-in endpoints /live, /ready, /metrics and /openapi.json.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct Request
{
	bool		seen;			/* the access handler has run once */
	char	   *raw_path;		/* the path as sent (before percent-decoding) */
	size_t		target_len;		/* the request target as sent, query string included */
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
	if (req->upload)
		upload_abort(req->upload);	/* nothing when it finished */
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
	/* decode_path refuses control characters and %00 itself */
	if (!decode_path(req->raw_path ? req->raw_path : url, req->segs, &nsegs,
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
		MHD_add_response_header(stream, "X-Content-Type-Options", "nosniff");
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
void *
request_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	Request    *req = xcalloc(1, sizeof(Request));
	size_t		n = strcspn(uri, "?");

	(void) cls;
	(void) conn;
	req->raw_path = xmalloc(n + 1);
	memcpy(req->raw_path, uri, n);
	req->raw_path[n] = '\0';
	req->target_len = n + strlen(uri + n);
	/*
	 * A target longer than max_header_bytes is answered 414 (head_refused),
	 * but libmicrohttpd splits its query string into its pool first, right
	 * after this callback, and a pool that runs out there ends the
	 * connection without an answer (0.9.75 to 0.9.77: parse_initial_message_line
	 * ignores the failure).  uri is that very buffer, about to be parsed from
	 * the byte after '?': ending it there leaves no argument to split.
	 */
	if (req->target_len > (size_t) cfg.max_header_bytes && uri[n] == '?')
		((char *) uri)[n + 1] = '\0';
	return req;
}

static enum MHD_Result
count_head(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	size_t	   *n = cls;

	(void) kind;
	n[0] += strlen(key) + (value ? strlen(value) : 0) + 4;	/* "key: value\r\n" */
	if (strcasecmp(key, "Host") == 0)
		n[1]++;
	return MHD_YES;
}

/*
 * What is wrong with the head itself, before any route: a target or a head
 * over max_header_bytes (414, 431: libmicrohttpd's pool holds more, see
 * connection_memory), and the Host rule of RFC 9112 §3.2: an HTTP/1.1 request
 * has exactly one Host header, any request at most one.  false with the
 * answer set.
 */
static bool
head_accepted(struct MHD_Connection *conn, const char *method, const char *version, Request *req, Answer *a)
{
	size_t		n[2] = {0, 0};	/* header bytes, Host lines */

	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_head, n);
	if (req->target_len > (size_t) cfg.max_header_bytes)
	{
		answer_error(a, 414, "ISA414", "the request target is too long", NULL,
					 "The request line and headers may have max_header_bytes together.");
		return false;
	}
	if (strlen(method) + req->target_len + strlen(version) + 4 + n[0] + 2 > (size_t) cfg.max_header_bytes)
	{
		answer_error(a, 431, "ISA431", "the request headers are too large", NULL,
					 "The request line and headers may have max_header_bytes together.");
		return false;
	}
	if (n[1] > 1 || (n[1] == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0))
	{
		answer_error(a, 400, "ISA400", n[1] ? "more than one Host header" : "an HTTP/1.1 request needs a Host header",
					 NULL, NULL);
		return false;
	}
	return true;
}

enum MHD_Result
request_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;
	Answer		a = {0};
	struct MHD_Response *stream = NULL;

	(void) cls;
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
		connection_head_received(conn);
		if (head_accepted(conn, method, version, req, &req->early))
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

void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;

	(void) cls;
	connection_answered(conn);
	if (req == NULL)
		return;
	if (req->seen)
		metrics_inflight(-1);
	request_free(req);
	*con_cls = NULL;
}
