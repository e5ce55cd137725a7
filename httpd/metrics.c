/*
 * metrics.c — request counts and latency histograms by route, method and
 * status, pool gauges, and isa.metrics() from the database, as Prometheus
 * text (/metrics).  A route label is the route's template (bounded), or
 * "unmatched" for everything else, so a scanner cannot grow the series.
 */
#include "httpd.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBOUNDS (int) (sizeof bounds / sizeof bounds[0])
#define MAX_SERIES 4096

typedef struct Series
{
	char	   *route;
	char		method[8];
	int			status;
	uint64_t	count;
	double		sum;
	uint64_t	buckets[NBOUNDS];
} Series;

static Series series[MAX_SERIES];
static int	nseries;
static uint64_t dropped;
static int	inflight;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void
metrics_inflight(int delta)
{
	__atomic_add_fetch(&inflight, delta, __ATOMIC_RELAXED);
}

static uint64_t closed_head_timeout;
static uint64_t closed_per_client;

void
metrics_connection_closed(const char *reason)
{
	__atomic_add_fetch(strcmp(reason, "head_timeout") == 0 ? &closed_head_timeout : &closed_per_client, 1,
					   __ATOMIC_RELAXED);
}

void
metrics_observe(const char *route, const char *method, int status, double seconds)
{
	Series	   *s = NULL;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < nseries; i++)
		if (series[i].status == status && !strcmp(series[i].method, method) && !strcmp(series[i].route, route))
		{
			s = &series[i];
			break;
		}
	if (s == NULL)
	{
		if (nseries == MAX_SERIES)
		{
			dropped++;
			pthread_mutex_unlock(&lock);
			return;
		}
		s = &series[nseries++];
		s->route = xstrdup(route);
		snprintf(s->method, sizeof s->method, "%s", method);
		s->status = status;
	}
	s->count++;
	s->sum += seconds;
	for (int b = 0; b < NBOUNDS; b++)
		if (seconds <= bounds[b])
			s->buckets[b]++;
	pthread_mutex_unlock(&lock);
}

/* A label value, escaped the Prometheus way. */
static void
label(Buf *out, const char *v)
{
	for (const char *p = v; *p; p++)
	{
		if (*p == '\\' || *p == '"')
			buf_puts(out, "\\");
		if (*p == '\n')
		{
			buf_puts(out, "\\n");
			continue;
		}
		buf_append(out, p, 1);
	}
}

/* Help text on one line, escaped the Prometheus way. */
static void
help_text(Buf *out, const char *v)
{
	for (const char *p = v; *p; p++)
	{
		if (*p == '\\')
			buf_puts(out, "\\\\");
		else if (*p == '\n')
			buf_puts(out, "\\n");
		else
			buf_append(out, p, 1);
	}
}

/*
 * isa.http_metrics(): rows grouped by family, each with its exposed name,
 * family, type and help (isa.metric_families()).  Rows without a family (a
 * database of isa 0.1.0) are named isa_<metric>, their type guessed from the
 * name.
 */
static void
isa_metrics(Buf *out, const char *json)
{
	json_error_t jerr;
	json_t	   *rows = json ? json_loads(json, 0, &jerr) : NULL;
	char		last[160] = "";

	if (!json_is_array(rows))
	{
		json_decref(rows);
		return;
	}
	for (size_t i = 0; i < json_array_size(rows); i++)
	{
		json_t	   *r = json_array_get(rows, i);
		const char *m = json_string_value(json_object_get(r, "metric"));
		const char *given_family = json_string_value(json_object_get(r, "family"));
		const char *given_type = json_string_value(json_object_get(r, "type"));
		const char *help = json_string_value(json_object_get(r, "help"));
		json_t	   *labels = json_object_get(r, "labels");
		json_t	   *value = json_object_get(r, "value");
		char		family[160];
		const char *type = "gauge";
		const char *prefix = "isa_";
		size_t		n;

		if (m == NULL || strlen(m) + 4 >= sizeof family)
			continue;
		if (given_family && given_type && strlen(given_family) < sizeof family)
		{
			snprintf(family, sizeof family, "%s", given_family);
			type = given_type;
			prefix = "";
		}
		else
		{
			snprintf(family, sizeof family, "isa_%s", m);
			n = strlen(family);
			if (n > 7 && !strcmp(family + n - 7, "_bucket"))
				family[n - 7] = '\0', type = "histogram";
			else if (n > 4 && !strcmp(family + n - 4, "_sum") && strstr(m, "_seconds"))
				family[n - 4] = '\0', type = "histogram";
			else if (n > 6 && !strcmp(family + n - 6, "_count") && strstr(m, "_seconds"))
				family[n - 6] = '\0', type = "histogram";
			else if (n > 6 && !strcmp(family + n - 6, "_total"))
				type = "counter";
			help = NULL;
		}
		if (strcmp(family, last) != 0)
		{
			buf_printf(out, "# HELP %s ", family);
			if (help)
				help_text(out, help);
			else
				buf_printf(out, "isa.metrics(): %s", family + 4);
			buf_printf(out, "\n# TYPE %s %s\n", family, type);
			snprintf(last, sizeof last, "%s", family);
		}
		buf_printf(out, "%s%s", prefix, m);
		if (json_is_object(labels) && json_object_size(labels))
		{
			const char *k;
			json_t	   *v;
			bool		first = true;

			buf_puts(out, "{");
			json_object_foreach(labels, k, v)
			{
				char	   *text = json_is_string(v) ? xstrdup(json_string_value(v)) :
					json_dumps(v, JSON_ENCODE_ANY);

				buf_printf(out, "%s%s=\"", first ? "" : ",", k);
				label(out, text ? text : "");
				buf_puts(out, "\"");
				free(text);
				first = false;
			}
			buf_puts(out, "}");
		}
		if (json_is_number(value))
			buf_printf(out, " %.17g\n", json_number_value(value));
		else
			buf_puts(out, " NaN\n");
	}
	json_decref(rows);
}

void
metrics_render(Buf *out, const char *isa_metrics_json)
{
	PoolStats	ps;

	pthread_mutex_lock(&lock);
	buf_puts(out, "# HELP isa_http_requests_total HTTP requests answered, by route template, method and status.\n"
			 "# TYPE isa_http_requests_total counter\n");
	for (int i = 0; i < nseries; i++)
	{
		buf_puts(out, "isa_http_requests_total{route=\"");
		label(out, series[i].route);
		buf_printf(out, "\",method=\"%s\",status=\"%d\"} %llu\n", series[i].method, series[i].status,
				   (unsigned long long) series[i].count);
	}
	buf_puts(out, "# HELP isa_http_request_duration_seconds Time from the request's headers to its answer.\n"
			 "# TYPE isa_http_request_duration_seconds histogram\n");
	for (int i = 0; i < nseries; i++)
	{
		Buf			l = {0};

		buf_puts(&l, "route=\"");
		label(&l, series[i].route);
		buf_printf(&l, "\",method=\"%s\",status=\"%d\"", series[i].method, series[i].status);
		for (int b = 0; b < NBOUNDS; b++)
			buf_printf(out, "isa_http_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", l.data, bounds[b],
					   (unsigned long long) series[i].buckets[b]);
		buf_printf(out, "isa_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", l.data,
				   (unsigned long long) series[i].count);
		buf_printf(out, "isa_http_request_duration_seconds_sum{%s} %.9f\n", l.data, series[i].sum);
		buf_printf(out, "isa_http_request_duration_seconds_count{%s} %llu\n", l.data,
				   (unsigned long long) series[i].count);
		buf_free(&l);
	}
	buf_printf(out, "# HELP isa_http_series_dropped_total Observations not recorded because the series table was full.\n"
			   "# TYPE isa_http_series_dropped_total counter\nisa_http_series_dropped_total %llu\n",
			   (unsigned long long) dropped);
	pthread_mutex_unlock(&lock);

	buf_printf(out, "# HELP isa_http_connections_closed_total Client connections isa-httpd closed or refused: "
			   "head_timeout (no whole request head within request_head_timeout_s), "
			   "per_client_limit (max_connections_per_client).\n"
			   "# TYPE isa_http_connections_closed_total counter\n"
			   "isa_http_connections_closed_total{reason=\"head_timeout\"} %llu\n"
			   "isa_http_connections_closed_total{reason=\"per_client_limit\"} %llu\n",
			   (unsigned long long) __atomic_load_n(&closed_head_timeout, __ATOMIC_RELAXED),
			   (unsigned long long) __atomic_load_n(&closed_per_client, __ATOMIC_RELAXED));
	buf_printf(out, "# HELP isa_http_requests_in_flight Requests being answered.\n"
			   "# TYPE isa_http_requests_in_flight gauge\nisa_http_requests_in_flight %d\n",
			   __atomic_load_n(&inflight, __ATOMIC_RELAXED));
	pool_stats(&ps);
	buf_printf(out,
			   "# HELP isa_http_pool_size PostgreSQL connections the pool may hold.\n"
			   "# TYPE isa_http_pool_size gauge\nisa_http_pool_size %d\n"
			   "# HELP isa_http_pool_connections_open PostgreSQL connections open.\n"
			   "# TYPE isa_http_pool_connections_open gauge\nisa_http_pool_connections_open %d\n"
			   "# HELP isa_http_pool_connections_busy Connections serving a request.\n"
			   "# TYPE isa_http_pool_connections_busy gauge\nisa_http_pool_connections_busy %d\n"
			   "# HELP isa_http_pool_waiting Requests waiting for a connection.\n"
			   "# TYPE isa_http_pool_waiting gauge\nisa_http_pool_waiting %d\n"
			   "# HELP isa_http_pool_timeouts_total Requests answered 503 because no connection came in time.\n"
			   "# TYPE isa_http_pool_timeouts_total counter\nisa_http_pool_timeouts_total %llu\n"
			   "# HELP isa_http_pool_connects_total Connections opened (the first ones and reconnections).\n"
			   "# TYPE isa_http_pool_connects_total counter\nisa_http_pool_connects_total %llu\n",
			   ps.size, ps.open, ps.busy, ps.waiting,
			   (unsigned long long) ps.timeouts, (unsigned long long) ps.reconnects);
	isa_metrics(out, isa_metrics_json);
}
