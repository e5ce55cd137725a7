/*
 * fuzz_routes.c — libFuzzer target for isa-httpd's request-to-arguments
 * mapping (httpd/routes.c): path splitting, route matching, and building the
 * SQL call from path parameters, a query string and a JSON body.
 *
 * An input is four lines: method, path, query string (a=1&b=2), JSON body.
 * Besides "no crash, no leak, no undefined behaviour" (ASan/UBSan), every
 * accepted request must give SQL that carries no byte of the request: only
 * the route's function, argument names and $n placeholders, each below the
 * parameter count, so nothing a client sends is ever SQL text.
 *
 * Built and run by test/integration/15-fuzz-routes.sh:
 *   clang -fsanitize=fuzzer,address,undefined … httpd/routes.c httpd/util.c
 */
#include "httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

HttpdConfig cfg;

static const char catalogue[] =
	"[{\"method\":\"GET\",\"path\":\"/v1/accounts/{user_id}\",\"auth\":\"user\",\"function\":\"account.get_user\","
	"\"returns\":\"one\",\"return_type\":\"account.user_profile\",\"status\":200,\"self_param\":\"user_id\","
	"\"header_params\":{},\"args\":[{\"name\":\"user_id\",\"type\":\"uuid\",\"optional\":false,\"array\":false}]},"
	"{\"method\":\"GET\",\"path\":\"/v1/accounts/me\",\"auth\":\"user\",\"function\":\"account.get_user\","
	"\"returns\":\"one\",\"return_type\":\"account.user_profile\",\"status\":200,\"subject_param\":\"user_id\","
	"\"header_params\":{},\"args\":[{\"name\":\"user_id\",\"type\":\"uuid\",\"optional\":false,\"array\":false}]},"
	"{\"method\":\"GET\",\"path\":\"/v1/wallets/{user_id}/transactions\",\"auth\":\"user\",\"function\":\"wallet.list_transactions\","
	"\"returns\":\"set\",\"return_type\":\"record\",\"status\":200,\"header_params\":{},"
	"\"args\":[{\"name\":\"user_id\",\"type\":\"uuid\",\"optional\":false,\"array\":false},"
	"{\"name\":\"limit\",\"type\":\"integer\",\"optional\":true,\"array\":false},"
	"{\"name\":\"before\",\"type\":\"timestamp with time zone\",\"optional\":true,\"array\":false}]},"
	"{\"method\":\"POST\",\"path\":\"/v1/roles\",\"auth\":\"admin\",\"function\":\"authz.create_role\","
	"\"returns\":\"one\",\"return_type\":\"authz.role_info\",\"status\":201,\"header_params\":{},"
	"\"args\":[{\"name\":\"name\",\"type\":\"text\",\"optional\":false,\"array\":false},"
	"{\"name\":\"description\",\"type\":\"text\",\"optional\":false,\"array\":false},"
	"{\"name\":\"permissions\",\"type\":\"text[]\",\"optional\":true,\"array\":true}]},"
	"{\"method\":\"PUT\",\"path\":\"/v1/accounts/{user_id}/prefs\",\"auth\":\"user\",\"function\":\"account.set_prefs\","
	"\"returns\":\"one\",\"return_type\":\"jsonb\",\"status\":200,\"header_params\":{},"
	"\"args\":[{\"name\":\"user_id\",\"type\":\"uuid\",\"optional\":false,\"array\":false},"
	"{\"name\":\"prefs\",\"type\":\"jsonb\",\"optional\":false,\"array\":false}]},"
	"{\"method\":\"POST\",\"path\":\"/v1/devices/{device_id}\",\"auth\":\"public\",\"function\":\"auth.register_device\","
	"\"returns\":\"void\",\"return_type\":\"void\",\"status\":204,\"header_params\":{\"user_agent\":\"User-Agent\"},"
	"\"args\":[{\"name\":\"device_id\",\"type\":\"text\",\"optional\":false,\"array\":false},"
	"{\"name\":\"public_key\",\"type\":\"bytea\",\"optional\":false,\"array\":false},"
	"{\"name\":\"user_agent\",\"type\":\"text\",\"optional\":true,\"array\":false}]},"
	"{\"method\":\"POST\",\"path\":\"/webhooks/stripe\",\"auth\":\"public\",\"function\":\"payment.handle_stripe_webhook\","
	"\"returns\":\"one\",\"return_type\":\"jsonb\",\"status\":200,\"raw_body_param\":\"raw_body\","
	"\"header_params\":{\"signature_header\":\"Stripe-Signature\"},"
	"\"args\":[{\"name\":\"raw_body\",\"type\":\"text\",\"optional\":false,\"array\":false},"
	"{\"name\":\"signature_header\",\"type\":\"text\",\"optional\":false,\"array\":false}]}]";

static RouteTable *table;

static const char *
fake_header(void *ctx, const char *name)
{
	(void) ctx;
	return strcmp(name, "Stripe-Signature") == 0 ? "t=1,v1=00" : NULL;
}

/* The SQL may hold only what the route table put there. */
static void
check_sql(const Route *r, const Call *c)
{
	const char *p = c->sql;

	if (strchr(p, ';') || strstr(p, "--") || strstr(p, "/*"))
		abort();
	while ((p = strchr(p, '$')) != NULL)
	{
		long		n = strtol(p + 1, (char **) &p, 10);

		if (n < 1 || n > BEGIN_PARAMS + c->nparams)
			abort();
	}
	if (c->nparams > r->nargs)
		abort();
	/* quotes only in the fixed fragments of the bytea and set forms */
	for (p = c->sql; (p = strchr(p, '\'')) != NULL; p++)
		if (strncmp(p, "'='", 3) && strncmp(p, "'+/'", 4) && strncmp(p, "'-_'", 4) && strncmp(p, "'[]'", 4) &&
			strncmp(p - 1, "='", 2) && strncmp(p - 2, "+/'", 3) && strncmp(p - 2, "-_'", 3) && strncmp(p - 2, "[]'", 3))
			abort();
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char	   *in = malloc(size + 1);
	char	   *line[4] = {NULL, NULL, NULL, NULL};
	char	   *segs[MAX_SEGMENTS];
	char		storage[2048];
	int			nsegs;
	PathParam	pp[MAX_SEGMENTS];
	int			npp;
	bool		matched;
	Buf			allow = {0};
	Source		query[32];
	int			nquery = 0;
	json_t	   *body = NULL;
	Call		call;
	char	   *message = NULL;

	if (table == NULL)
	{
		char	   *err = NULL;

		table = routes_from_json(catalogue, &err);
		if (table == NULL)
		{
			fprintf(stderr, "catalogue: %s\n", err);
			abort();
		}
	}
	memcpy(in, data, size);
	in[size] = '\0';
	line[0] = in;
	for (int i = 1; i < 4 && line[i - 1]; i++)
	{
		char	   *nl = strchr(line[i - 1], '\n');

		if (nl)
		{
			*nl = '\0';
			line[i] = nl + 1;
		}
	}
	if (line[1] == NULL || !decode_path(line[1], segs, &nsegs, storage, sizeof storage))
		goto out;
	for (int i = 0; i < nsegs; i++)
		for (const char *c = segs[i]; *c; c++)
			if ((unsigned char) *c < 0x20 || (unsigned char) *c == 0x7f)
				abort();		/* decode_path lets no control character through */
	const Route *r = route_match(table, line[0], segs, nsegs, pp, &npp, &matched, &allow);

	if (r == NULL)
		goto out;
	if (npp > nsegs)
		abort();
	for (char *q = line[2], *amp; q && *q && nquery < 32; q = amp)
	{
		amp = strchr(q, '&');
		if (amp)
			*amp++ = '\0';
		char	   *eq = strchr(q, '=');

		if (eq)
			*eq = '\0';
		query[nquery].name = q;
		query[nquery].value = eq ? eq + 1 : "";
		nquery++;
	}
	if (line[3] && *line[3])
	{
		json_error_t jerr;

		body = json_loads(line[3], JSON_REJECT_DUPLICATES, &jerr);
	}
	if (build_call(r, pp, npp, query, nquery, body, line[3], line[3] ? strlen(line[3]) : 0,
				   fake_header, NULL, "0190b0a0-0000-7000-8000-000000000000", &call, &message))
	{
		check_sql(r, &call);
		call_free(&call);
	}
	else if (message == NULL)
		abort();
	free(message);
out:
	json_decref(body);
	buf_free(&allow);
	free(in);
	return 0;
}
