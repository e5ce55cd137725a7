/*
 * worker.c — the isa bridge background worker: its GUCs, its registration
 * and its main loop (the worker_spi / pg_cron shape, DESIGN.md §6).
 *
 * One loop on the main thread waits on the process latch (set at commit by
 * backends that wrote the outbox or isa.subscriptions), the eventfd that
 * nats.c callbacks write, postmaster death and a timeout.  Each turn:
 * reload settings on SIGHUP, (re)create the stream and consumers after a
 * (re)connection, apply what the consumers delivered, ask for more, and
 * publish one outbox batch.  A turn with work left loops without waiting.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "common/hashfn.h"

#include "isa.h"
#include "bridge.h"

PGDLLEXPORT void isa_bridge_main(Datum arg);

bool		isa_bridge_enabled = true;
char	   *isa_services = NULL;
char	   *isa_nats_user = NULL;
char	   *isa_nats_password = NULL;
char	   *isa_nats_creds_file = NULL;
int			isa_stream_replicas = 1;
int			isa_duplicate_window = 120;
int			isa_stream_max_age = 7 * 24 * 3600;
int			isa_max_deliver = 5;
int			isa_retry_base = 1000;
int			isa_retry_max = 300000;
int			isa_ack_wait = 30;
int			isa_publish_batch_size = 1000;
int			isa_consume_batch_size = 256;
int			isa_bridge_idle_interval = 1000;
char	   *isa_bridge_apply_groups = NULL;

/* 0 in the bridge worker, k in the apply worker of group k. */
int			isa_bridge_worker = 0;

/*
 * The group (1 ...) of the list `groups` (isa.bridge_apply_groups) that names
 * a service, 0 if none: "billing;wallet,order" makes group 1 billing, group 2
 * wallet and order.  -1 if the list is malformed (empty group, bad name, a
 * service in two places).  *ngroups gets the number of groups.
 */
static int
apply_group_in(const char *groups, const char *service, int *ngroups)
{
	char	   *copy = pstrdup(groups ? groups : "");
	char	   *next = copy;
	List	   *seen = NIL;
	int			k = 0;
	int			found = 0;

	while (next != NULL && *copy != '\0')
	{
		char	   *g = next;
		char	   *semi = strchr(g, ';');
		List	   *names;
		ListCell   *lc;

		if (semi)
			*semi = '\0';
		next = semi ? semi + 1 : NULL;
		k++;
		if (!SplitIdentifierString(g, ',', &names) || names == NIL)
			return -1;
		foreach(lc, names)
		{
			char	   *name = lfirst(lc);
			ListCell   *lc2;

			foreach(lc2, seen)
				if (strcmp((char *) lfirst(lc2), name) == 0)
					return -1;
			seen = lappend(seen, name);
			if (service && strcmp(name, service) == 0)
				found = k;
		}
	}
	if (ngroups)
		*ngroups = k;
	return found;
}

int
isa_bridge_apply_group(const char *service)
{
	return apply_group_in(isa_bridge_apply_groups, service, NULL);
}

static bool
check_apply_groups(char **newval, void **extra, GucSource source)
{
	int			n = 0;

	if (*newval == NULL || **newval == '\0')
		return true;
	if (apply_group_in(*newval, NULL, &n) < 0 || n == 0)
	{
		GUC_check_errdetail("Groups are separated by ';', the services of a group by ',', e.g. 'billing;wallet,order'.");
		return false;
	}
	if (n > ISA_MAX_APPLY_GROUPS)
	{
		GUC_check_errdetail("At most %d groups.", ISA_MAX_APPLY_GROUPS);
		return false;
	}
	return true;
}

static bool
check_services(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;

	if (strcmp(*newval, "*") == 0 || strcmp(*newval, "all") == 0)
		return true;
	copy = pstrdup(*newval);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		return false;
	}
	return true;
}

void
isa_bridge_define_gucs(void)
{
	DefineCustomBoolVariable("isa.bridge_enabled",
							 "Whether the isa bridge publishes the outbox and runs subscriptions.",
							 "Off: the worker stays up, disconnected from NATS, and the outbox grows.",
							 &isa_bridge_enabled, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.services",
							   "Services whose subscriptions the bridge of this database runs.",
							   "A comma-separated list of isa.services names, or * for all.",
							   &isa_services, "*", PGC_SIGHUP, GUC_LIST_INPUT,
							   check_services, NULL, NULL);
	DefineCustomStringVariable("isa.nats_user",
							   "User name for NATS (with isa.nats_password).",
							   NULL, &isa_nats_user, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	/*
	 * PostgreSQL logs the new value of a setting changed by a reload; isa's
	 * log hook (extension/isa.c) hides it for GUC_NO_SHOW_ALL settings.
	 */
	DefineCustomStringVariable("isa.nats_password",
							   "Password for NATS.",
							   "Readable by superusers only; a reload's log line does not show it.",
							   &isa_nats_password, "", PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.nats_creds_file",
							   "NATS credentials file (user JWT and NKey seed) for the bridge.",
							   NULL, &isa_nats_creds_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("isa.stream_replicas",
							"Replicas of the isa stream (3 on a NATS cluster).",
							NULL, &isa_stream_replicas, 1, 1, 5, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.duplicate_window",
							"JetStream duplicate window of the isa stream (dedupe by Nats-Msg-Id).",
							NULL, &isa_duplicate_window, 120, 120, 7 * 24 * 3600, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.stream_max_age",
							"How long the isa stream keeps events (JetStream MaxAge); 0 keeps them forever.",
							"A new subscription with deliver_policy all starts at the oldest event kept.",
							&isa_stream_max_age, 7 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.max_deliver",
							"Delivery attempts before a failing event is dead-lettered (subscription option max_deliver overrides).",
							NULL, &isa_max_deliver, 5, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.retry_base",
							"Delay before the first redelivery of a failed event; doubles with each attempt.",
							NULL, &isa_retry_base, 1000, 1, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.retry_max",
							"Longest delay between redeliveries of a failed event.",
							NULL, &isa_retry_max, 300000, 1, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.ack_wait",
							"How long JetStream waits for the bridge's ack before redelivering.",
							"Messages a crashed bridge held come back after this.",
							&isa_ack_wait, 30, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.publish_batch_size",
							"Outbox rows published per round.",
							NULL, &isa_publish_batch_size, 1000, 1, 100000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.consume_batch_size",
							"Messages asked for per pull (subscription option batch_size overrides).",
							NULL, &isa_consume_batch_size, 256, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.bridge_apply_groups",
							   "Services whose subscriptions get their own apply worker, in groups.",
							   "Groups separated by ';', services by ',': 'billing;wallet,order' starts two apply "
							   "workers. Other services' subscriptions run in the bridge worker. Requires a restart.",
							   &isa_bridge_apply_groups, "",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, check_apply_groups, NULL, NULL);
	DefineCustomIntVariable("isa.bridge_idle_interval",
							"Safety timer: the bridge looks at the outbox at least this often.",
							"Commits wake it at once; this only catches what no wake-up announced.",
							&isa_bridge_idle_interval, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

void
isa_bridge_register(void)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	strlcpy(w.bgw_library_name, "isa", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "isa_bridge_main", BGW_MAXLEN);
	strlcpy(w.bgw_name, "isa bridge", BGW_MAXLEN);
	strlcpy(w.bgw_type, "isa bridge", BGW_MAXLEN);
	w.bgw_main_arg = Int32GetDatum(0);
	RegisterBackgroundWorker(&w);

	if (isa_bridge_apply_groups && *isa_bridge_apply_groups)
	{
		int			n = 0;

		(void) apply_group_in(isa_bridge_apply_groups, NULL, &n);
		for (int k = 1; k <= n && k <= ISA_MAX_APPLY_GROUPS; k++)
		{
			snprintf(w.bgw_name, BGW_MAXLEN, "isa bridge apply %d", k);
			strlcpy(w.bgw_type, "isa bridge apply", BGW_MAXLEN);
			w.bgw_main_arg = Int32GetDatum(k);
			RegisterBackgroundWorker(&w);
		}
	}
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

static void
bridge_exit(int code, Datum arg)
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

static bool
extension_installed(void)
{
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	found = OidIsValid(get_extension_oid("isa", true));
	CommitTransactionCommand();
	return found;
}

/* The event sources of isa.services: the stream's subjects. */
static List *
load_sources(void)
{
	List	   *sources = NIL;
	MemoryContext outer = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT source FROM isa.services ORDER BY source", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "isa bridge: reading isa.services failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext old = MemoryContextSwitchTo(outer);

		sources = lappend(sources, pstrdup(v));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(outer);
	return sources;
}

/* Removes "user:password@" from every URL of a list, in place. */
static void
strip_credentials(char *urls)
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

/* The connected server for isa.bridge_status(), without credentials. */
static void
publish_connection_state(void)
{
	char		url[256] = "";
	bool		up = nl_connected();

	if (isa_shared == NULL || isa_bridge_worker > 0)
		return;
	if (up && nl_conn() && natsConnection_GetConnectedUrl(nl_conn(), url, sizeof(url)) == NATS_OK)
		strip_credentials(url);
	pg_atomic_write_u32(&isa_shared->nats_connected, up ? 1 : 0);
	pg_atomic_write_u64(&isa_shared->nats_reconnects, nl_reconnects());
	SpinLockAcquire(&isa_shared->mutex);
	strlcpy(isa_shared->nats_server, url, sizeof(isa_shared->nats_server));
	SpinLockRelease(&isa_shared->mutex);
}

static char *
connection_settings(void)
{
	return psprintf("%s|%s|%s|%s", isa_nats_url ? isa_nats_url : "", isa_nats_user ? isa_nats_user : "",
					isa_nats_password ? isa_nats_password : "",
					isa_nats_creds_file ? isa_nats_creds_file : "");
}

void
isa_bridge_main(Datum arg)
{
	MemoryContext turn_cxt;
	WaitEventSet *wes;
	bool		setup_pending = true;
	bool		publish_more = false;
	TimestampTz last_publish_try = 0;
	TimestampTz last_setup_try = 0;

	isa_bridge_worker = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(isa_database, NULL, 0);
	pgstat_report_appname(isa_bridge_worker == 0 ? "isa bridge" : "isa bridge apply");

	if (isa_shared == NULL || isa_bridge_worker < 0 || isa_bridge_worker > ISA_MAX_APPLY_GROUPS)
		proc_exit(1);
	before_shmem_exit(bridge_exit, (Datum) 0);
	if (isa_bridge_worker > 0)
	{
		/* an apply worker: its group's subscriptions, nothing else */
		pg_atomic_write_u32(&isa_shared->apply_pid[isa_bridge_worker], (uint32) MyProcPid);
		pg_atomic_write_u32(&isa_shared->apply_procno[isa_bridge_worker], (uint32) MyProc->pgprocno);
	}
	else
	{
		pg_atomic_write_u32(&isa_shared->bridge_pid, (uint32) MyProcPid);
		pg_atomic_write_u32(&isa_shared->bridge_procno, (uint32) MyProc->pgprocno);
		SpinLockAcquire(&isa_shared->mutex);
		isa_shared->started_at = GetCurrentTimestamp();
		isa_shared->last_error[0] = '\0';
		isa_shared->nats_server[0] = '\0';
		SpinLockRelease(&isa_shared->mutex);
	}

	/* Until CREATE EXTENSION isa runs in isa.database, there is nothing to do. */
	while (!extension_installed())
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 5000,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			proc_exit(1);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	{
		char	   *shown = pstrdup(isa_nats_url ? isa_nats_url : "");

		strip_credentials(shown);
		if (isa_bridge_worker == 0)
			ereport(LOG, (errmsg("isa bridge started on database \"%s\", NATS %s", isa_database, shown)));
		else
			ereport(LOG, (errmsg("isa bridge apply worker %d started on database \"%s\", NATS %s",
								 isa_bridge_worker, isa_database, shown)));
	}

	turn_cxt = AllocSetContextCreate(TopMemoryContext, "isa bridge turn", ALLOCSET_DEFAULT_SIZES);
	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, nl_eventfd(), NULL, NULL);

	if (isa_bridge_enabled)
		nl_connect();
	isa_consumers_load();

	for (;;)
	{
		WaitEvent	ev;
		long		timeout;
		TimestampTz now;
		bool		busy = false;
		long		timeout_cap = LONG_MAX;

		MemoryContextSwitchTo(turn_cxt);
		MemoryContextReset(turn_cxt);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			char	   *before = connection_settings();
			char	   *services_before = pstrdup(isa_services);
			int			replicas_before = isa_stream_replicas;
			int			window_before = isa_duplicate_window;
			int			max_age_before = isa_stream_max_age;
			int			ack_wait_before = isa_ack_wait;
			int			max_deliver_before = isa_max_deliver;
			int			batch_before = isa_consume_batch_size;
			char	   *stream_before = pstrdup(isa_stream);

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(before, connection_settings()) != 0 ||
				(!isa_bridge_enabled && nl_conn() != NULL) ||
				(isa_bridge_enabled && nl_conn() == NULL))
			{
				nl_disconnect();
				isa_consumers_forget_server_state();
				if (isa_bridge_enabled)
					nl_connect();
			}
			if (ack_wait_before != isa_ack_wait || max_deliver_before != isa_max_deliver ||
				batch_before != isa_consume_batch_size)
			{
				/* consumers are updated when set up again */
				isa_consumers_forget_server_state();
				setup_pending = true;
			}
			if (replicas_before != isa_stream_replicas || window_before != isa_duplicate_window ||
				max_age_before != isa_stream_max_age ||
				strcmp(stream_before, isa_stream) != 0)
			{
				isa_consumers_forget_server_state();
				isa_publisher_reset();
				setup_pending = true;
			}
			if (strcmp(services_before, isa_services) != 0)
			{
				isa_consumers_load();
				setup_pending = true;
			}
			last_setup_try = 0;
		}
		if (ShutdownRequestPending)
			break;

		nl_drain_eventfd();
		publish_connection_state();
		if (!nl_connected() && nl_conn() != NULL)
		{
			char		why[200];

			/* the text is the server's or nats.c's, never a credential */
			if (nl_last_error(why, sizeof(why)))
				isa_bridge_record_error("not connected to NATS: %s", why);
		}

		if (pg_atomic_exchange_u32(&isa_shared->subscriptions_changed[isa_bridge_worker], 0))
		{
			isa_consumers_load();
			setup_pending = true;
			last_setup_try = 0;	/* a new consumer now, not in a second */
		}

		if (nl_connected())
		{
			if (nl_take_setup_needed())
			{
				/* a (re)connection: the server may not know the stream or consumers */
				isa_consumers_forget_server_state();
				setup_pending = true;
				last_setup_try = 0;
			}
			/*
			 * Stream, then consumers; what failed (a timeout during a
			 * leader election) is tried again every second.
			 */
			now = GetCurrentTimestamp();
			if ((setup_pending || isa_consumers_unready() > 0) &&
				TimestampDifferenceExceeds(last_setup_try, now, 1000))
			{
				last_setup_try = now;
				if (setup_pending)
					setup_pending = !nl_ensure_stream(load_sources());
				if (!setup_pending)
					isa_consumers_setup();
			}
			if (setup_pending || isa_consumers_unready() > 0)
				timeout_cap = 1000;

			if (isa_consumers_apply() > 0)
				busy = true;

			now = GetCurrentTimestamp();
			/* not before the stream is there: acks would only fail */
			if (!setup_pending && isa_bridge_worker == 0 &&
				(pg_atomic_exchange_u32(&isa_shared->outbox_pending, 0) || publish_more ||
				 TimestampDifferenceExceeds(last_publish_try, now, isa_bridge_idle_interval)))
			{
				int			k;

				last_publish_try = now;
				k = isa_publish_round();
				publish_more = k >= isa_publish_batch_size;
				busy |= publish_more;
			}
		}

		timeout = Min(isa_bridge_idle_interval, timeout_cap);
		now = GetCurrentTimestamp();
		isa_consumers_pull(now, &timeout);
		if (busy)
			timeout = 0;
		if (timeout < 0)
			timeout = 0;

		(void) WaitEventSetWait(wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* SIGTERM: the current batch is done; hand back what is queued and leave. */
	MemoryContextSwitchTo(TopMemoryContext);
	isa_consumers_shutdown();
	nl_disconnect();
	ereport(LOG, (errmsg("isa bridge shutting down")));
	proc_exit(1);
}
