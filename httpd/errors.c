/*
 * errors.c — SQLSTATE to HTTP status (PostgREST's table, with isa's two
 * authentication codes) and the JSON error body {code, message, details, hint}.
 */
#include "httpd.h"

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
