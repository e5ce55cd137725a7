/*
 * worker.c — the isa bridge background worker: its registration and its
 * main loop (the worker_spi / pg_cron shape).  The loop only calls named
 * steps; what each step does is in the file it calls (docs/bridge.md has the
 * file map; the operator's view of the worker is docs/bridge.md, "The
 * worker").
 *
 * One loop on the main thread waits on the process latch (set at commit by
 * backends that wrote the outbox or isa.subscriptions), the eventfd that
 * nats.c callbacks write, postmaster death and a timeout.  Each turn: reload
 * settings on SIGHUP, check that this library serves the database's isa SQL
 * (the upgrade window: if not, do nothing else), reload the subscriptions
 * when they changed, (re)create the stream and consumers after a
 * (re)connection, apply what the consumers delivered, publish one outbox
 * batch, and ask for more.  A turn with work left loops without waiting.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "bridge.h"

PGDLLEXPORT void isa_bridge_main(Datum arg);

/* What one turn of the loop leaves to the next. */
typedef struct Turn
{
	bool		setup_pending;	/* the stream, then the consumers, must be set up */
	bool		subscriptions_stale;	/* isa.subscriptions or isa.services changed */
	bool		publish_more;	/* the last publish round was full */
	bool		sql_served;		/* the last check found servable SQL */
	TimestampTz sql_checked_at;
	TimestampTz last_publish_try;
	TimestampTz last_render;		/* the last rendering of tracked tables' statements that commits started */
	TimestampTz last_commit_publish;	/* the last publishing round that outbox commits started */
	TimestampTz last_full_publish;	/* the last publishing round that read every unpublished row */
	bool		full_more;		/* that round was full: the next reads every row too */
	TimestampTz last_setup_try;
	/* set during the turn */
	bool		busy;			/* work is left: do not wait */
	long		timeout_cap;	/* ms: something is to be retried by then */
} Turn;

/* The SQL version is read again at least this often (ms), and at each cache reload. */
#define SQL_VERSION_RECHECK_MS 1000

void
isa_bridge_register(void)
{
	BackgroundWorker w;

	isa_background_worker(&w, "isa_bridge_main", "isa bridge");
	strlcpy(w.bgw_name, "isa bridge", BGW_MAXLEN);
	w.bgw_main_arg = Int32GetDatum(0);
	RegisterBackgroundWorker(&w);

	for (int k = 1; k <= isa_bridge_apply_group_count(); k++)
	{
		snprintf(w.bgw_name, BGW_MAXLEN, "isa bridge apply %d", k);
		strlcpy(w.bgw_type, "isa bridge apply", BGW_MAXLEN);
		w.bgw_main_arg = Int32GetDatum(k);
		RegisterBackgroundWorker(&w);
	}
}

/* Until CREATE EXTENSION isa runs in isa.database, there is nothing to do. */
static void
wait_for_extension(void)
{
	while (isa_installed_sql_version() == NULL)
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
}

static void
log_start(void)
{
	char	   *shown = pstrdup(isa_nats_url ? isa_nats_url : "");

	isa_bridge_strip_credentials(shown);
	if (isa_bridge_worker == 0)
		ereport(LOG, (errmsg("isa bridge started on database \"%s\", NATS %s", isa_database, shown)));
	else
		ereport(LOG, (errmsg("isa bridge apply worker %d started on database \"%s\", NATS %s",
							 isa_bridge_worker, isa_database, shown)));
}

/* The event sources of isa.services: the stream's subjects. */
static List *
load_sources(void)
{
	List	   *sources = NIL;
	MemoryContext outer = CurrentMemoryContext;

	isa_bridge_start_transaction();
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
	isa_bridge_commit_transaction();
	MemoryContextSwitchTo(outer);
	return sources;
}

static char *
connection_settings(void)
{
	return psprintf("%s|%s|%s|%s|%s", isa_nats_url ? isa_nats_url : "", isa_nats_user ? isa_nats_user : "",
					isa_nats_password ? isa_nats_password : "",
					isa_nats_creds_file ? isa_nats_creds_file : "",
					isa_nats_inbox_prefix ? isa_nats_inbox_prefix : "");
}

/* SIGHUP: read the settings again and redo what the changed ones affect. */
static void
reload_settings(Turn *t)
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
		isa_subscriptions_forget_server_state();
		if (isa_bridge_enabled)
			nl_connect();
	}
	if (ack_wait_before != isa_ack_wait || max_deliver_before != isa_max_deliver ||
		batch_before != isa_consume_batch_size)
	{
		/* consumers are updated when set up again */
		isa_subscriptions_forget_server_state();
		t->setup_pending = true;
	}
	if (replicas_before != isa_stream_replicas || window_before != isa_duplicate_window ||
		max_age_before != isa_stream_max_age ||
		strcmp(stream_before, isa_stream) != 0)
	{
		isa_subscriptions_forget_server_state();
		isa_publisher_reset();
		t->setup_pending = true;
	}
	if (strcmp(services_before, isa_services) != 0)
		t->subscriptions_stale = true;
	t->last_setup_try = 0;
}

/*
 * A connection nats.c closed for good (the server refused the credentials,
 * say while a creds file was being replaced) is made anew every 5 seconds,
 * reading the credentials again: nats.c would never retry it by itself.  So
 * is one that nl_connect gave up on (no connection at all: it failed before
 * nats.c's own retries began, or while it set the connection up).
 */
static void
reconnect_if_closed(Turn *t)
{
	static TimestampTz last_try = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (!isa_bridge_enabled || !(nl_closed() || nl_conn() == NULL))
		return;
	t->timeout_cap = Min(t->timeout_cap, 5000);	/* nothing else wakes us for it */
	if (!TimestampDifferenceExceeds(last_try, now, 5000))
		return;
	last_try = now;
	ereport(LOG, (errmsg(nl_conn() == NULL ? "isa bridge: no NATS connection; connecting again"
						 : "isa bridge: NATS closed the connection; connecting again")));
	nl_disconnect();
	isa_subscriptions_forget_server_state();
	nl_connect();
}

/* isa.bridge_status(): the connection, and why it is down. */
static void
note_connection_state(Turn *t)
{
	char		url[256];

	reconnect_if_closed(t);
	nl_server_url(url, sizeof(url));
	isa_bridge_report_connection(nl_connected(), url, nl_reconnects());
	if (!nl_connected() && nl_conn() != NULL)
	{
		char		why[200];

		/* the text is the server's or nats.c's, never a credential */
		if (nl_last_error(why, sizeof(why)))
			isa_bridge_record_error("not connected to NATS: %s", why);
	}
}

/*
 * The upgrade window (sql_version.c): whether this library serves the isa
 * SQL of the database.  Read at most once a second, and before the caches
 * are loaded again; while the answer is no, the turn does nothing else.
 * When it becomes yes, every cache is loaded again: the SQL may have changed.
 */
static bool
sql_version_served(Turn *t)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		changed = pg_atomic_exchange_u32(&isa_shared->subscriptions_changed[isa_bridge_worker], 0);
	char	   *version;
	bool		served;

	t->subscriptions_stale |= changed;
	if (t->sql_checked_at != 0 && !changed &&
		!TimestampDifferenceExceeds(t->sql_checked_at, now, SQL_VERSION_RECHECK_MS))
	{
		if (!t->sql_served)
			t->timeout_cap = SQL_VERSION_RECHECK_MS;
		return t->sql_served;
	}
	t->sql_checked_at = now;
	version = isa_installed_sql_version();
	if (version == NULL)
	{
		/* dropped: a new worker waits for CREATE EXTENSION, with empty caches */
		ereport(LOG, (errmsg("isa bridge: extension isa is no longer in database \"%s\"; restarting",
							 isa_database)));
		ShutdownRequestPending = true;
		return false;
	}
	served = isa_sql_version_served(version);
	if (served && !t->sql_served)
	{
		isa_publisher_reset();
		t->subscriptions_stale = true;
		t->setup_pending = true;
		t->last_setup_try = 0;
	}
	t->sql_served = served;
	if (!served)
		t->timeout_cap = SQL_VERSION_RECHECK_MS;
	return served;
}

/* After a commit that changed isa.subscriptions, or a reload of isa.services. */
static void
reload_subscriptions(Turn *t)
{
	if (!t->subscriptions_stale)
		return;
	t->subscriptions_stale = false;
	isa_subscriptions_load();
	t->setup_pending = true;
	t->last_setup_try = 0;		/* a new consumer now, not in a second */
}

/*
 * Stream, then consumers; what failed (a timeout during a leader election)
 * is tried again every second.
 */
static void
set_up_stream_and_consumers(Turn *t)
{
	TimestampTz now;

	if (nl_take_setup_needed())
	{
		/* a (re)connection: the server may not know the stream or consumers */
		isa_subscriptions_forget_server_state();
		t->setup_pending = true;
		t->last_setup_try = 0;
	}
	now = GetCurrentTimestamp();
	if ((t->setup_pending || isa_subscriptions_unready() > 0) &&
		TimestampDifferenceExceeds(t->last_setup_try, now, 1000))
	{
		t->last_setup_try = now;
		if (t->setup_pending)
			t->setup_pending = !nl_ensure_stream(load_sources());
		if (!t->setup_pending)
			isa_subscriptions_setup();
	}
	if (t->setup_pending || isa_subscriptions_unready() > 0)
		t->timeout_cap = 1000;
}

static void
apply_arrived(Turn *t)
{
	if (isa_apply_arrived() > 0)
		t->busy = true;
}

/*
 * Whether the work a commit flag announces is due: when the flag is raised
 * and the last round it started (*last) is at least interval_ms old; the
 * flag is then taken.  A commit after a quiet spell is served at once; under
 * a stream of commits, one round per interval serves them together, and the
 * flag stays raised until then (the wait caps this turn's sleep).
 *
 * The two flags, both for the bridge worker only and not before the stream
 * is there (acks would only fail):
 * - tracked tables' batches, rendered into outbox rows first (render.c),
 *   at most once per isa.bridge_render_interval (50 ms): a rendering costs
 *   its transaction and a publishing round whatever it renders, and at
 *   interval 0 an event cost the bridge and the subscribers three and two
 *   times the CPU under single-row writes (bench/table_events/run,
 *   docs/benchmarks.md);
 * - outbox rows, at once by default; isa.bridge_publish_interval spaces
 *   those rounds too, trading latency (bench/bridge_latency) for rounds
 *   that carry more than one commit's events under a stream of one-row
 *   commits, each of which the bridge and every subscriber that records the
 *   stream pay in transactions (bench/outbox_overhead).
 * Rendering also happens at the idle interval (batches a restart or a failed
 * render left); that does not start an interval.
 */
static bool
commit_flag_due(Turn *t, pg_atomic_uint32 *flag, TimestampTz *last, int interval_ms, TimestampTz now)
{
	TimestampTz next = TimestampTzPlusMilliseconds(*last, interval_ms);

	if (pg_atomic_read_u32(flag) == 0)
		return false;
	if (now < next)
	{
		t->timeout_cap = Min(t->timeout_cap, Max(TimestampDifferenceMilliseconds(now, next), 1));
		return false;
	}
	(void) pg_atomic_exchange_u32(flag, 0);
	*last = now;
	return true;
}

static void
publish_outbox(Turn *t)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		outbox,
				batches,
				idle,
				full;

	if (t->setup_pending || isa_bridge_worker != 0)
		return;
	outbox = commit_flag_due(t, &isa_shared->outbox_pending, &t->last_commit_publish,
							 isa_bridge_publish_interval, now);
	batches = commit_flag_due(t, &isa_shared->table_batches_pending, &t->last_render,
							  isa_bridge_render_interval, now);
	idle = TimestampDifferenceExceeds(t->last_publish_try, now, isa_bridge_idle_interval);
	if (outbox || batches || idle || t->publish_more)
	{
		t->last_publish_try = now;
		if (batches || idle)
			(void) isa_render_round();
		/*
		 * A full round at least once per idle interval (isa_publish_round),
		 * and after a full round that filled its batch: a backlog older than
		 * the recent rounds see (after an outage) is read to its end.
		 */
		full = t->full_more || TimestampDifferenceExceeds(t->last_full_publish, now, isa_bridge_idle_interval);
		if (full)
			t->last_full_publish = now;
		t->publish_more = isa_publish_round(!full) >= isa_publish_batch_size;
		t->full_more = full && t->publish_more;
		/* direct messages (direct.c) are woken by the same commits */
		t->publish_more |= isa_direct_round() >= isa_publish_batch_size;
		t->busy |= t->publish_more;
	}
}

/* Sleeps until a wake-up, a NATS event, or the next thing to do. */
static void
wait_for_work(Turn *t, WaitEventSet *wes, bool pull)
{
	WaitEvent	ev;
	long		timeout = Min(isa_bridge_idle_interval, t->timeout_cap);

	if (pull)
		isa_subscriptions_pull(GetCurrentTimestamp(), &timeout);
	if (t->busy || timeout < 0)
		timeout = 0;
	(void) WaitEventSetWait(wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

void
isa_bridge_main(Datum arg)
{
	MemoryContext turn_cxt;
	WaitEventSet *wes;
	Turn		t = {0};

	isa_bridge_worker = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(isa_database, NULL, 0);
	/* application_name: "isa bridge", or the apply worker's own name with its group's number */
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	if (isa_shared == NULL || isa_bridge_worker < 0 || isa_bridge_worker > ISA_MAX_APPLY_GROUPS)
		proc_exit(1);
	before_shmem_exit(isa_bridge_report_stopped, (Datum) 0);
	isa_bridge_report_started();
	wait_for_extension();
	log_start();

	turn_cxt = AllocSetContextCreate(TopMemoryContext, "isa bridge turn", ALLOCSET_DEFAULT_SIZES);
	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, nl_eventfd(), NULL, NULL);

	if (isa_bridge_enabled)
		nl_connect();
	t.setup_pending = true;

	for (;;)
	{
		bool		served;

		MemoryContextSwitchTo(turn_cxt);
		MemoryContextReset(turn_cxt);
		CHECK_FOR_INTERRUPTS();
		t.busy = false;
		t.timeout_cap = LONG_MAX;

		if (ConfigReloadPending)
			reload_settings(&t);
		if (ShutdownRequestPending)
			break;
		nl_drain_eventfd();
		note_connection_state(&t);
		served = sql_version_served(&t);
		if (ShutdownRequestPending)
			break;
		if (served)
		{
			reload_subscriptions(&t);
			if (nl_connected())
			{
				set_up_stream_and_consumers(&t);
				apply_arrived(&t);
				publish_outbox(&t);
			}
		}
		wait_for_work(&t, wes, served);
	}

	/* SIGTERM: the current batch is done; hand back what is queued and leave. */
	MemoryContextSwitchTo(TopMemoryContext);
	isa_apply_hand_back();
	nl_disconnect();
	ereport(LOG, (errmsg("isa bridge shutting down")));
	proc_exit(1);
}
