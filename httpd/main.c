/*
 * main.c — isa-httpd: settings, the libmicrohttpd daemon, signals, and the
 * route table with the maintenance thread that loads the routes and the
 * signing keys.  A request's life is in request.c.
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

RouteTable *
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

void
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

bool
routes_loaded(void)
{
	bool		loaded;

	pthread_mutex_lock(&routes_lock);
	loaded = routes != NULL;
	pthread_mutex_unlock(&routes_lock);
	return loaded;
}

/* A loading error, logged when it changes or once a minute: the maintenance
 * thread retries every second and must not flood the log. */
static void
load_error(const char *what, const char *why)
{
	static char last[512];
	static double last_at;
	char		line[512];
	double		now = now_seconds();

	snprintf(line, sizeof line, "%s: %s", what, why ? why : "no answer");
	if (strcmp(line, last) != 0 || now - last_at >= 60)
	{
		log_line("%s", line);
		snprintf(last, sizeof last, "%s", line);
		last_at = now;
	}
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
				load_error("cannot use the routes", msg);
				free(msg);
				ok = false;
			}
		}
		else
		{
			load_error("cannot load the routes", err.message);
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
				load_error("cannot use auth.jwks()", msg);
				free(msg);
			}
		}
		else
			load_error("cannot load the signing keys", err.message);
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

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
						 MHD_USE_ERROR_LOG,
						 (uint16_t) cfg.port, connection_accept, NULL, request_handle, NULL,
						 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
						 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
						 MHD_OPTION_CONNECTION_LIMIT, (unsigned) cfg.max_connections,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) cfg.connection_timeout_s,
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, connection_memory(),
						 MHD_OPTION_NOTIFY_CONNECTION, connection_notify, NULL,
						 MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
						 MHD_OPTION_UNESCAPE_CALLBACK, request_unescape, NULL,
						 MHD_OPTION_URI_LOG_CALLBACK, request_uri, NULL,
						 MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned) 1024,
						 MHD_OPTION_END);
	if (d == NULL)
	{
		fprintf(stderr, "isa-httpd: cannot listen on %s:%d: %s\n", cfg.listen, cfg.port, strerror(errno));
		return 1;
	}
	log_line("isa-httpd listening on http://%s:%d (pool %d, jwt %s%s%s)", cfg.listen, cfg.port, cfg.pool_size,
			 cfg.jwt_algorithm, cfg.trusted_proxies ? ", trusted proxies " : "",
			 cfg.trusted_proxies ? cfg.trusted_proxies : "");
	if (cfg.metrics_token == NULL)
		log_line("GET /metrics is public: set metrics_token_file to require a token");
	/* the routes and keys before the first request, when the database is up
	 * (otherwise the maintenance thread keeps trying; requests get 503) */
	if (load_from_db(true, jwt_keys_from_db()))
		reload_requested = 0;
	pthread_create(&maint, NULL, maintenance, NULL);
	connections_start();
	while (!stopping)
		pause();
	log_line("isa-httpd stopping");
	connections_stop();
	MHD_stop_daemon(d);
	pthread_join(maint, NULL);
	pool_shutdown();
	routes_put(routes);
	return 0;
}
