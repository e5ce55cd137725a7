/*
 * status.c — what isa.bridge_status() shows about the bridge processes:
 * whether they run, the NATS connection, the subscriptions set up, the last
 * publish and the last error.  The workers write it into isa_shared (plain
 * values under its spinlock, atomics); isa._bridge_state(), the C function
 * under the SQL wrapper isa.bridge_status(), reads it in any backend.
 *
 * Every bridge file reports here; this file calls none of them.  Docs:
 * docs/bridge.md, "Watching the bridge".
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "bridge.h"

/* A worker starts: isa.bridge_status() shows it running, its last error cleared. */
void
isa_bridge_report_started(void)
{
	if (isa_bridge_worker > 0)
	{
		/* an apply worker: its group's subscriptions, nothing else */
		pg_atomic_write_u32(&isa_shared->apply_pid[isa_bridge_worker], (uint32) MyProcPid);
		pg_atomic_write_u32(&isa_shared->apply_procno[isa_bridge_worker], (uint32) MyProc->pgprocno);
		return;
	}
	pg_atomic_write_u32(&isa_shared->bridge_pid, (uint32) MyProcPid);
	pg_atomic_write_u32(&isa_shared->bridge_procno, (uint32) MyProc->pgprocno);
	SpinLockAcquire(&isa_shared->mutex);
	isa_shared->started_at = GetCurrentTimestamp();
	isa_shared->last_error[0] = '\0';
	isa_shared->nats_server[0] = '\0';
	SpinLockRelease(&isa_shared->mutex);
}

/* before_shmem_exit callback: the worker is gone. */
void
isa_bridge_report_stopped(int code, Datum arg)
{
	if (isa_shared == NULL)
		return;
	SpinLockAcquire(&isa_shared->mutex);
	isa_shared->subscriptions[isa_bridge_worker] = 0;
	SpinLockRelease(&isa_shared->mutex);
	if (isa_bridge_worker > 0)
	{
		pg_atomic_write_u32(&isa_shared->apply_procno[isa_bridge_worker], ISA_INVALID_PROCNO);
		pg_atomic_write_u32(&isa_shared->apply_pid[isa_bridge_worker], 0);
		return;
	}
	pg_atomic_write_u32(&isa_shared->bridge_procno, ISA_INVALID_PROCNO);
	pg_atomic_write_u32(&isa_shared->bridge_pid, 0);
	pg_atomic_write_u32(&isa_shared->nats_connected, 0);
}

/* Removes "user:password@" from every URL of a list, in place. */
void
isa_bridge_strip_credentials(char *urls)
{
	char	   *p = urls;

	while ((p = strstr(p, "://")) != NULL)
	{
		char	   *host = p + 3;
		char	   *end = host + strcspn(host, ",/ ");
		char	   *at = memchr(host, '@', end - host);

		if (at)
			memmove(host, at + 1, strlen(at + 1) + 1);
		p = host;
	}
}

/*
 * The NATS connection as the bridge worker sees it (apply workers have
 * connections of their own, not shown): server is the connected URL or "".
 */
void
isa_bridge_report_connection(bool connected, const char *server, uint64 reconnects)
{
	char		url[sizeof(isa_shared->nats_server)];

	if (isa_shared == NULL || isa_bridge_worker > 0)
		return;
	strlcpy(url, server, sizeof(url));
	isa_bridge_strip_credentials(url);
	pg_atomic_write_u32(&isa_shared->nats_connected, connected ? 1 : 0);
	pg_atomic_write_u64(&isa_shared->nats_reconnects, reconnects);
	SpinLockAcquire(&isa_shared->mutex);
	strlcpy(isa_shared->nats_server, url, sizeof(isa_shared->nats_server));
	SpinLockRelease(&isa_shared->mutex);
}

/* isa.bridge_status().subscriptions: this process's share, consumers set up. */
void
isa_bridge_report_subscriptions(int n)
{
	if (isa_shared == NULL)
		return;
	SpinLockAcquire(&isa_shared->mutex);
	isa_shared->subscriptions[isa_bridge_worker] = n;
	SpinLockRelease(&isa_shared->mutex);
}

/* isa.bridge_status().last_publish_at: a publish round that found rows ended. */
void
isa_bridge_report_published(void)
{
	if (isa_shared == NULL)
		return;
	SpinLockAcquire(&isa_shared->mutex);
	isa_shared->last_publish_at = GetCurrentTimestamp();
	SpinLockRelease(&isa_shared->mutex);
}

/*
 * Records the last error for isa.bridge_status() and logs it — each distinct
 * message at most once a minute, so an outage does not flood the log even
 * when two errors alternate.
 */
#define LOGGED_ERRORS 8
static struct
{
	uint32		hash;
	TimestampTz at;
}			logged[LOGGED_ERRORS];

void
isa_bridge_record_error(const char *fmt,...)
{
	char		buf[256];
	va_list		ap;
	uint32		h;
	TimestampTz now = GetCurrentTimestamp();
	int			slot = 0;
	bool		quiet = false;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (isa_shared)
	{
		SpinLockAcquire(&isa_shared->mutex);
		memcpy(isa_shared->last_error, buf, sizeof(buf));
		isa_shared->last_error_at = now;
		SpinLockRelease(&isa_shared->mutex);
	}
	h = hash_bytes((const unsigned char *) buf, strlen(buf));
	for (int i = 0; i < LOGGED_ERRORS; i++)
	{
		if (logged[i].hash == h)
		{
			slot = i;
			quiet = !TimestampDifferenceExceeds(logged[i].at, now, 60 * 1000);
			break;
		}
		if (logged[i].at < logged[slot].at)
			slot = i;
	}
	if (quiet)
		return;
	logged[slot].hash = h;
	logged[slot].at = now;
	ereport(WARNING, (errmsg("isa bridge: %s", buf)));
}

/*
 * Clears last_error if it still starts with `prefix` (an error known to be
 * over now); another error recorded since stays.
 */
void
isa_bridge_clear_error(const char *prefix)
{
	if (isa_shared == NULL)
		return;
	SpinLockAcquire(&isa_shared->mutex);
	if (strncmp(isa_shared->last_error, prefix, strlen(prefix)) == 0)
	{
		isa_shared->last_error[0] = '\0';
		isa_shared->last_error_at = 0;
	}
	SpinLockRelease(&isa_shared->mutex);
}

PG_FUNCTION_INFO_V1(isa_bridge_state);

/*
 * isa._bridge_state(): running, pid, connected, server, reconnects,
 * subscriptions, started_at, last_publish_at, last_error, last_error_at.
 */
Datum
isa_bridge_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(false);
	nulls[0] = false;
	if (isa_shared)
	{
		bool		running = pg_atomic_read_u32(&isa_shared->bridge_procno) != ISA_INVALID_PROCNO;

		values[0] = BoolGetDatum(running);
		if (running)
		{
			values[1] = Int32GetDatum((int32) pg_atomic_read_u32(&isa_shared->bridge_pid));
			nulls[1] = false;
		}
		values[2] = BoolGetDatum(running && pg_atomic_read_u32(&isa_shared->nats_connected) != 0);
		nulls[2] = false;
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&isa_shared->nats_reconnects));
		nulls[4] = false;
		{
			char		server[sizeof(isa_shared->nats_server)];
			char		error[sizeof(isa_shared->last_error)];
			int32		nsubs;
			TimestampTz started,
						published,
						errored;

			/* copy under the spinlock, build datums after it */
			SpinLockAcquire(&isa_shared->mutex);
			memcpy(server, isa_shared->nats_server, sizeof(server));
			memcpy(error, isa_shared->last_error, sizeof(error));
			nsubs = 0;
			for (int k = 0; k < ISA_BRIDGE_WORKERS; k++)
				nsubs += isa_shared->subscriptions[k];
			started = isa_shared->started_at;
			published = isa_shared->last_publish_at;
			errored = isa_shared->last_error_at;
			SpinLockRelease(&isa_shared->mutex);

			if (running && server[0])
			{
				values[3] = CStringGetTextDatum(server);
				nulls[3] = false;
			}
			values[5] = Int32GetDatum(nsubs);
			nulls[5] = false;
			if (started)
			{
				values[6] = TimestampTzGetDatum(started);
				nulls[6] = false;
			}
			if (published)
			{
				values[7] = TimestampTzGetDatum(published);
				nulls[7] = false;
			}
			if (error[0])
			{
				values[8] = CStringGetTextDatum(error);
				nulls[8] = false;
				values[9] = TimestampTzGetDatum(errored);
				nulls[9] = false;
			}
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
