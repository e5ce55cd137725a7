/*
 * config.c — isa-httpd's settings: defaults, then the environment
 * (ISA_HTTPD_<NAME>), then a file (--config FILE or ISA_HTTPD_CONFIG; lines
 * "name = value", # comments), then the command line (--name=value).  Secrets
 * are read from files (jwt_secret_file), never taken from the command line,
 * where ps would show them.
 */
#include "httpd.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

HttpdConfig cfg;

typedef enum
{
	OPT_STRING, OPT_INT, OPT_DOUBLE, OPT_BOOL, OPT_SECRET_FILE
} OptType;

typedef struct Option
{
	const char *name;
	OptType		type;
	void	   *target;
	const char *def;
	int			min;
	int			max;
	const char *help;
} Option;

static char *secret_file;
static char *previous_secret_file;
static char *metrics_token_file;

static const Option options[] = {
	{"listen", OPT_STRING, &cfg.listen, "127.0.0.1", 0, 0, "address to listen on"},
	{"port", OPT_INT, &cfg.port, "8080", 1, 65535, "TCP port"},
	{"database_url", OPT_STRING, &cfg.database_url, "dbname=isa", 0, 0,
	"libpq connection string or URI; its role must be a member of isa_app"},
	{"pool_size", OPT_INT, &cfg.pool_size, "8", 1, 1000, "PostgreSQL connections"},
	{"pool_timeout_ms", OPT_INT, &cfg.pool_timeout_ms, "2000", 1, 600000,
	"wait this long for a free connection, then answer 503 with Retry-After"},
	{"statement_timeout_ms", OPT_INT, &cfg.statement_timeout_ms, "5000", 0, 3600000,
	"statement_timeout of each request's transaction (0: none)"},
	{"max_body_bytes", OPT_INT, &cfg.max_body_bytes, "1048576", 1, 1073741824,
	"larger request bodies are refused with 413"},
	{"max_header_bytes", OPT_INT, &cfg.max_header_bytes, "16384", 4096, 1048576,
	"a longer request target is refused with 414, longer request line and headers with 431"},
	{"max_connections", OPT_INT, &cfg.max_connections, "256", 1, 100000,
	"concurrent client connections (more are refused)"},
	{"max_connections_per_client", OPT_INT, &cfg.max_connections_per_client, "32", 0, 100000,
	"concurrent connections from one address (0: no cap); trusted proxies are not capped"},
	{"connection_timeout_s", OPT_INT, &cfg.connection_timeout_s, "30", 1, 86400,
	"an idle or stalled client connection is closed after this many seconds"},
	{"request_head_timeout_s", OPT_INT, &cfg.request_head_timeout_s, "10", 1, 3600,
	"a connection without a whole request head this long after it opened (or after its last answer) is closed"},
	{"trusted_proxies", OPT_STRING, &cfg.trusted_proxies, NULL, 0, 0,
	"addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (comma-separated)"},
	{"metrics_token_file", OPT_SECRET_FILE, &metrics_token_file, NULL, 0, 0,
	"a file holding the token GET /metrics requires (Authorization: Bearer); unset: /metrics is public"},
	{"rate_limit", OPT_DOUBLE, &cfg.rate_limit, "10", 0, 1000000,
	"requests per second per client address on rate-limited routes (login …); 0: off"},
	{"rate_burst", OPT_INT, &cfg.rate_burst, "20", 1, 1000000, "burst allowed above rate_limit"},
	{"retries", OPT_INT, &cfg.retries, "3", 0, 100,
	"retries of a request that met a serialization failure or deadlock, then 503"},
	{"jwt_algorithm", OPT_STRING, &cfg.jwt_algorithm, "EdDSA", 0, 0,
	"EdDSA (keys from auth.jwks() or jwks_file) or HS256 (jwt_secret_file); tokens of another algorithm are refused"},
	{"jwt_secret_file", OPT_SECRET_FILE, &secret_file, NULL, 0, 0,
	"HS256: file holding the secret (at least 32 bytes), as isa.jwt_secret; or ISA_HTTPD_JWT_SECRET"},
	{"jwt_previous_secret_file", OPT_SECRET_FILE, &previous_secret_file, NULL, 0, 0,
	"HS256: the previous secret during a rotation (isa.jwt_previous_secret)"},
	{"jwks_file", OPT_STRING, &cfg.jwks_file, NULL, 0, 0,
	"EdDSA: a JWKS file of the public keys; default: auth.jwks() from the database, refreshed"},
	{"jwt_issuer", OPT_STRING, &cfg.jwt_issuer, "isa", 0, 0, "the iss claim required (isa.jwt_issuer)"},
	{"jwt_audience", OPT_STRING, &cfg.jwt_audience, "isa", 0, 0, "the aud claim required (isa.jwt_audience)"},
	{"jwt_clock_skew", OPT_INT, &cfg.jwt_clock_skew, "30", 0, 300, "seconds of tolerance on exp, nbf and iat"},
	{"public_url", OPT_STRING, &cfg.public_url, NULL, 0, 0, "the URL clients use (openapi.json servers)"},
	{"log_requests", OPT_BOOL, &cfg.log_requests, "on", 0, 0, "one log line per request"},
	{NULL, 0, NULL, NULL, 0, 0, NULL}
};

static void
usage(FILE *out)
{
	fputs("Usage: isa-httpd [--config FILE] [--name=value ...]\n\n"
		  "The HTTP front of isa: routes from isa.http_routes, JWT authentication,\n"
		  "PostgreSQL through a libpq pool. See docs/http.md.\n\n"
		  "Settings (environment ISA_HTTPD_<NAME>, a config file of name = value lines,\n"
		  "or --name=value; later ones win):\n", out);
	for (const Option *o = options; o->name; o++)
		fprintf(out, "  --%-26s %s%s%s%s\n", o->name, o->help,
				o->def ? " [" : "", o->def ? o->def : "", o->def ? "]" : "");
	fputs("\n  --config FILE                read settings from FILE\n"
		  "  --help                       this text\n", out);
}

static void
die(const char *fmt, const char *a, const char *b)
{
	fputs("isa-httpd: ", stderr);
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(2);
}

static const Option *
find_option(const char *name)
{
	for (const Option *o = options; o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

static void
set_option(const Option *o, const char *value, const char *origin)
{
	char	   *end;

	switch (o->type)
	{
		case OPT_STRING:
		case OPT_SECRET_FILE:
			free(*(char **) o->target);
			*(char **) o->target = value[0] ? xstrdup(value) : NULL;
			break;
		case OPT_INT:
			{
				errno = 0;
				long		v = strtol(value, &end, 10);

				if (errno || end == value || *end || v < o->min || v > o->max)
				{
					char		range[64];

					snprintf(range, sizeof range, "an integer from %d to %d", o->min, o->max);
					fprintf(stderr, "isa-httpd: %s: %s must be %s, not \"%s\"\n", origin, o->name, range, value);
					exit(2);
				}
				*(int *) o->target = (int) v;
				break;
			}
		case OPT_DOUBLE:
			{
				errno = 0;
				double		v = strtod(value, &end);

				if (errno || end == value || *end || v < o->min || v > o->max)
				{
					fprintf(stderr, "isa-httpd: %s: %s must be a number from %d to %d, not \"%s\"\n",
							origin, o->name, o->min, o->max, value);
					exit(2);
				}
				*(double *) o->target = v;
				break;
			}
		case OPT_BOOL:
			if (!strcmp(value, "on") || !strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes"))
				*(bool *) o->target = true;
			else if (!strcmp(value, "off") || !strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no"))
				*(bool *) o->target = false;
			else
				die("%s must be on or off", o->name, NULL);
			break;
	}
}

static char *
trim(char *s)
{
	while (isspace((unsigned char) *s))
		s++;
	char	   *e = s + strlen(s);

	while (e > s && isspace((unsigned char) e[-1]))
		*--e = '\0';
	return s;
}

static void
load_file(const char *path)
{
	char	   *text = read_file(path, NULL);
	int			lineno = 0;

	if (text == NULL)
		die("cannot read config file %s: %s", path, strerror(errno));
	for (char *line = text, *next; line; line = next)
	{
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		char	   *hash = strchr(line, '#');

		if (hash)
			*hash = '\0';
		char	   *l = trim(line);

		if (!*l)
			continue;
		char	   *eq = strchr(l, '=');

		if (!eq)
			die("%s: a line is not name = value: %s", path, l);
		*eq = '\0';
		char	   *name = trim(l);
		char	   *value = trim(eq + 1);
		size_t		vl = strlen(value);

		if (vl >= 2 && ((value[0] == '\'' && value[vl - 1] == '\'') || (value[0] == '"' && value[vl - 1] == '"')))
		{
			value[vl - 1] = '\0';
			value++;
		}
		const Option *o = find_option(name);

		if (!o)
			die("%s: unknown setting \"%s\" (isa-httpd --help lists them)", path, name);
		set_option(o, value, path);
	}
	free(text);
}

static char *
read_secret(const char *path, const char *what)
{
	size_t		len;
	char	   *s = read_file(path, &len);

	if (s == NULL)
		die("cannot read %s: %s", what, strerror(errno));
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = '\0';
	return s;
}

void
config_load(int argc, char **argv)
{
	const char *config_file = getenv("ISA_HTTPD_CONFIG");

	for (const Option *o = options; o->name; o++)
		if (o->def)
			set_option(o, o->def, "default");

	/* environment */
	for (const Option *o = options; o->name; o++)
	{
		char		env[128];
		int			i;

		snprintf(env, sizeof env, "ISA_HTTPD_%s", o->name);
		for (i = 10; env[i]; i++)
			env[i] = (char) toupper((unsigned char) env[i]);
		const char *v = getenv(env);

		if (v)
			set_option(o, v, env);
	}

	/* --config and --help first: the file comes before the other flags */
	for (int i = 1; i < argc; i++)
	{
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
		{
			usage(stdout);
			exit(0);
		}
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			config_file = argv[++i];
		else if (!strncmp(argv[i], "--config=", 9))
			config_file = argv[i] + 9;
	}
	if (config_file)
		load_file(config_file);

	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];

		if (!strcmp(a, "--config"))
		{
			i++;
			continue;
		}
		if (!strncmp(a, "--config=", 9))
			continue;
		if (strncmp(a, "--", 2) != 0)
		{
			usage(stderr);
			exit(2);
		}
		char	   *name = xstrdup(a + 2);
		char	   *eq = strchr(name, '=');
		const char *value;

		if (eq)
		{
			*eq = '\0';
			value = eq + 1;
		}
		else if (i + 1 < argc)
			value = argv[++i];
		else
			die("--%s needs a value%s", name, "");
		const Option *o = find_option(name);

		if (!o)
			die("unknown option --%s (isa-httpd --help lists them)%s", name, "");
		set_option(o, value, "command line");
		free(name);
	}

	if (strcmp(cfg.jwt_algorithm, "EdDSA") != 0 && strcmp(cfg.jwt_algorithm, "HS256") != 0)
		die("jwt_algorithm must be EdDSA or HS256, not \"%s\"%s", cfg.jwt_algorithm, "");
	if (secret_file)
		cfg.jwt_secret = read_secret(secret_file, "jwt_secret_file");
	else if (getenv("ISA_HTTPD_JWT_SECRET"))
		cfg.jwt_secret = xstrdup(getenv("ISA_HTTPD_JWT_SECRET"));
	if (previous_secret_file)
		cfg.jwt_previous_secret = read_secret(previous_secret_file, "jwt_previous_secret_file");
	if (metrics_token_file)
	{
		cfg.metrics_token = read_secret(metrics_token_file, "metrics_token_file");
		if (strlen(cfg.metrics_token) < 16)
			die("the metrics token must be at least 16 bytes (metrics_token_file)%s%s", "", "");
	}
	{
		char	   *err = NULL;

		if (!proxies_init(&err))
			die("trusted_proxies: %s%s", err, "");
	}
	if (!strcmp(cfg.jwt_algorithm, "HS256"))
	{
		if (cfg.jwt_secret == NULL || strlen(cfg.jwt_secret) < 32)
			die("jwt_algorithm HS256 needs a secret of at least 32 bytes (jwt_secret_file)%s%s", "", "");
		if (cfg.jwt_previous_secret && strlen(cfg.jwt_previous_secret) < 32)
			die("the previous HS256 secret must be at least 32 bytes too%s%s", "", "");
	}
}

/*
 * The memory of a connection: libmicrohttpd's pool holds the head as it
 * arrives (its read buffer takes half the pool when a request begins) and,
 * in the other half, what it parses out of it: one entry of 64 bytes (56 and
 * alignment) per query argument, header or cookie, at most one per 2 bytes of
 * head, a copy of the Cookie header, and the answer's headers.  Sized so that
 * any head of max_header_bytes parses, for request.c to answer one that is
 * too long with a JSON 414/431: libmicrohttpd's own refusal has an HTML body,
 * and when its pool runs out while it splits the query string, no answer at
 * all (0.9.75).  It is address space: pages are touched as a head fills them,
 * and all of them when a kept-alive connection starts its next request.
 */
size_t
connection_memory(void)
{
	size_t		head = (size_t) cfg.max_header_bytes;

	return 2 * (head / 2 * 64 + head + 16384);
}
