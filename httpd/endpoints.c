/*
 * endpoints.c — isa-httpd's own endpoints: /live (the process runs), /ready
 * (database, bridge, routes), /metrics (Prometheus text) and /openapi.json.
 */
#include "httpd.h"

#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Authorization: Bearer <metrics_token>, compared in constant time (as
 * digests, so that the length does not show either). */
static bool
metrics_token_sent(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	unsigned char want[crypto_generichash_BYTES],
				got[crypto_generichash_BYTES];

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	crypto_generichash(want, sizeof want, (const unsigned char *) cfg.metrics_token, strlen(cfg.metrics_token), NULL, 0);
	crypto_generichash(got, sizeof got, (const unsigned char *) h + 7, strlen(h + 7), NULL, 0);
	return sodium_memcmp(want, got, sizeof want) == 0;
}

bool
builtin(struct MHD_Connection *conn, const char *method, const char *url, Answer *a)
{
	bool		get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

	if (strcmp(url, "/live") && strcmp(url, "/ready") && strcmp(url, "/metrics") && strcmp(url, "/openapi.json"))
		return false;
	if (!get)
	{
		snprintf(a->allow, sizeof a->allow, "GET, HEAD");
		answer_error(a, 405, "ISA405", "method not allowed", NULL, NULL);
		return true;
	}
	if (!strcmp(url, "/metrics") && cfg.metrics_token && !metrics_token_sent(conn))
	{
		answer_error(a, 401, "ISA401", "GET /metrics needs the metrics token", NULL,
					 "Send Authorization: Bearer <the token in isa-httpd's metrics_token_file>.");
		a->www_authenticate = "Bearer realm=\"metrics\"";
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
		bool		have_routes = routes_loaded();

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

