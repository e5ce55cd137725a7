/*
 * errors.c — SQLSTATE to HTTP status (PostgREST's table, with isa's two
 * authentication codes), the JSON error body {code, message, details, hint},
 * and sending an answer.
 */
#include "httpd.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
sqlstate_http_status(const char *s, bool anonymous)
{
	if (!strcmp(s, "42501"))
		return anonymous ? 401 : 403;	/* insufficient privilege */
	if (!strcmp(s, "28000") || !strcmp(s, "28P01"))
		return 401;				/* invalid token, session or password */
	if (!strcmp(s, "P0001"))
		return 400;				/* raise_exception */
	if (!strcmp(s, "P0002"))
		return 404;				/* no_data_found */
	if (!strcmp(s, "23503") || !strcmp(s, "23505"))
		return 409;				/* foreign key, unique */
	if (!strcmp(s, "25006"))
		return 405;				/* read-only transaction: a GET that writes */
	if (!strcmp(s, "42883") || !strcmp(s, "42P01"))
		return 404;				/* undefined function, table */
	if (!strcmp(s, "57014"))
		return 504;				/* canceled: statement_timeout */
	if (!strcmp(s, "40001") || !strcmp(s, "40P01"))
		return 503;				/* after the retries */
	if (!strncmp(s, "08", 2) || !strncmp(s, "53", 2) || !strcmp(s, "57P01") || !strcmp(s, "57P03"))
		return 503;				/* connection, resources, shutting down */
	if (!strncmp(s, "0L", 2) || !strncmp(s, "0P", 2))
		return 403;
	if (!strcmp(s, "55000"))
		return 503;				/* not configured (a secret unset) or not ready: the server's state */
	if (!strncmp(s, "22", 2) || !strncmp(s, "23", 2))
		return 400;				/* data exceptions, other integrity violations */
	if (!strncmp(s, "54", 2))
		return 413;				/* program limit exceeded */
	if (!strncmp(s, "42", 2))
		return 400;				/* syntax or access rule: a bad argument type … */
	return 500;
}

char *
error_body(const char *code, const char *message, const char *details, const char *hint)
{
	json_t	   *o = json_object();
	char	   *s;

	json_object_set_new(o, "code", json_string(code ? code : ""));
	json_object_set_new(o, "message", message ? json_string(message) : json_null());
	json_object_set_new(o, "details", details ? json_string(details) : json_null());
	json_object_set_new(o, "hint", hint ? json_string(hint) : json_null());
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (s == NULL)				/* a message that is not UTF-8 */
		s = xstrdup("{\"code\":\"XX000\",\"message\":\"error\",\"details\":null,\"hint\":null}");
	return s;
}

void
answer_error(Answer *a, int status, const char *code, const char *message, const char *details, const char *hint)
{
	free(a->body);
	a->status = status;
	a->body = error_body(code, message, details, hint);
	a->content_type = "application/json; charset=utf-8";
}

enum MHD_Result
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
	/* a body is what Content-Type says, never sniffed into HTML */
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
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

void
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
	if (status == 503 && strcmp(s, "55000") != 0)	/* a missing setting is not over in a second */
		a->retry_after = 1;
}

/*
 * A request, from its headers to its answer.  What can be decided from the
 * headers is decided at once (route, rate limit, token; an upload begins),
 * so an upload streams to the database as it arrives and a refused one is
 * answered before its body is sent.
 */
