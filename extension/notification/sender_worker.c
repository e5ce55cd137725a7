/*
 * sender_worker.c — the notification senders: one background worker per
 * channel that leaves the database ("isa notification sender email",
 * "... webhook"), registered at postmaster start beside the bridge, each
 * connected to isa.database; and notification._wake(channel), which wakes a
 * channel's sender when the transaction that queued its deliveries commits.
 *
 * A worker's loop (the bridge's shape, docs/architecture.md): reload
 * settings on SIGHUP; claim what is due while it has room for more
 * transfers in flight (woken by a commit, or by its own timer: the channel's
 * next due attempt, notification.next_due, and at most a second); move the
 * transfers on and record each outcome; wait.  While transfers are in
 * flight it waits on their sockets for at most POLL_MS at a time, and on its
 * latch otherwise.  Until the notification service is installed it looks
 * every WAIT_FOR_SERVICE_MS (and at any wake-up), never exiting: a missing
 * service is no crash.  Channels never wait for each other: a dead SMTP
 * server holds up email only.  Docs: docs/services/notification.md,
 * "Delivery".
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "sender.h"

PGDLLEXPORT void isa_notification_sender_main(Datum arg);

static const SenderChannel *const channels[ISA_SENDER_CHANNELS] = {
	[ISA_SENDER_EMAIL] = &isa_sender_email,
	[ISA_SENDER_WEBHOOK] = &isa_sender_webhook,
};

/* The longest sleep without looking for due deliveries (the contract's "1 s at most"). */
#define IDLE_MS 1000
/* How often a sender without the notification service looks for it. */
#define WAIT_FOR_SERVICE_MS 5000
/* The longest wait on the transfers' sockets before looking at wake-ups and signals. */
#define POLL_MS 50
/* When due deliveries could not be claimed (another transaction holds them): look again after this. */
#define BUSY_RETRY_MS 100
/* A delivery's failure is logged at most once per this (each is in its row's last_error). */
#define FAILURE_LOG_MS 60000

typedef struct Sender
{
	const SenderChannel *ch;
	bool		ready;			/* the notification service is there */
	bool		said_waiting;	/* logged that it is not */
	TimestampTz ready_checked_at;
	TimestampTz look_at;		/* claim then, even without a wake-up */
	TimestampTz failure_logged_at;
	char	   *described;		/* what describe() said last, logged */
} Sender;

void
isa_notification_senders_register(void)
{
	BackgroundWorker w;

	isa_background_worker(&w, "isa_notification_sender_main", "isa notification sender");
	for (int c = 0; c < ISA_SENDER_CHANNELS; c++)
	{
		snprintf(w.bgw_name, BGW_MAXLEN, "isa notification sender %s", channels[c]->name);
		w.bgw_main_arg = Int32GetDatum(c);
		RegisterBackgroundWorker(&w);
	}
}

/* before_shmem_exit: commits stop waking this process. */
static void
report_stopped(int code, Datum arg)
{
	int			c = DatumGetInt32(arg);

	pg_atomic_write_u32(&isa_shared->sender_procno[c], ISA_INVALID_PROCNO);
	pg_atomic_write_u32(&isa_shared->sender_pid[c], 0);
}

/* Logs where the sender delivers, at start and when a reload changed it. */
static void
log_description(Sender *s)
{
	char	   *now = isa_notification_senders ? s->ch->describe()
		: pstrdup("switched off (isa.notification_senders): deliveries wait");

	if (s->described != NULL && strcmp(now, s->described) == 0)
		return;
	ereport(LOG, (errmsg("isa notification sender (%s): %s", s->ch->name, now)));
	if (s->described != NULL)
		pfree(s->described);
	s->described = MemoryContextStrdup(TopMemoryContext, now);
}

/* Whether the notification service is there; looked for again now and then. */
static bool
service_ready(Sender *s, TimestampTz now)
{
	if (s->ready)
		return true;
	if (s->ready_checked_at != 0 &&
		!TimestampDifferenceExceeds(s->ready_checked_at, now, WAIT_FOR_SERVICE_MS) &&
		pg_atomic_read_u32(&isa_shared->sender_pending[s->ch->index]) == 0)
		return false;
	s->ready_checked_at = now;
	s->ready = isa_sender_queue_ready(s->ch);
	if (!s->ready)				/* a wake-up without the service: nothing to claim */
		pg_atomic_write_u32(&isa_shared->sender_pending[s->ch->index], 0);
	if (s->ready)
	{
		ereport(LOG, (errmsg("isa notification sender (%s) delivering from database \"%s\"",
							 s->ch->name, isa_database)));
		log_description(s);
		s->said_waiting = false;
		s->look_at = 0;
	}
	else if (!s->said_waiting)
	{
		ereport(LOG, (errmsg("isa notification sender (%s) waiting: database \"%s\" has no notification service yet",
							 s->ch->name, isa_database),
					  errdetail("It needs notification.claim_deliveries, record_delivery and next_due, executable by isa_svc_notification.")));
		s->said_waiting = true;
	}
	return s->ready;
}

/*
 * Claims what is due, if there is room: woken by a commit, or when the timer
 * says.  The claim commits before the transfers start.
 */
static void
claim_due(Sender *s)
{
	TimestampTz now = GetCurrentTimestamp();
	int			room = isa_notification_sender_concurrency - isa_transfers_in_flight();
	int			claimed;
	TimestampTz next_due;
	bool		failed;
	SenderTransfer *t;

	if (room <= 0)
		return;					/* a wake-up stays pending until there is room */
	if (!pg_atomic_exchange_u32(&isa_shared->sender_pending[s->ch->index], 0) && now < s->look_at)
		return;
	t = isa_sender_claim(s->ch, room, &claimed, &next_due, &failed);
	if (failed)
	{
		s->ready = false;		/* the service went away? look for it again */
		s->ready_checked_at = now;
		return;
	}
	while (t != NULL)
	{
		SenderTransfer *next = t->next;
		MemoryContext old = MemoryContextSwitchTo(t->cxt);

		s->ch->prepare(t, t->fields);
		MemoryContextSwitchTo(old);
		isa_transfer_start(t);
		t = next;
	}
	if (claimed == room)
		s->look_at = now;		/* more may be due: again as soon as there is room */
	else if (next_due == 0)
		s->look_at = TimestampTzPlusMilliseconds(now, IDLE_MS);
	else if (next_due <= now)
		s->look_at = TimestampTzPlusMilliseconds(now, BUSY_RETRY_MS);
	else
		s->look_at = Min(next_due, TimestampTzPlusMilliseconds(now, IDLE_MS));
}

/* Moves the transfers on and records the outcomes of those that ended, in one transaction. */
static void
record_ended(Sender *s)
{
	SenderTransfer *ended = isa_transfers_progress(s->ch);

	for (SenderTransfer *t = ended; t != NULL; t = t->next)
	{
		if (!t->ok)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (TimestampDifferenceExceeds(s->failure_logged_at, now, FAILURE_LOG_MS))
			{
				ereport(LOG,
						(errmsg("isa notification sender (%s): delivery %s, attempt %d failed (%s): %s",
								s->ch->name, t->delivery_id, t->attempt,
								t->transient ? "transient" : "permanent", t->error),
						 errdetail("Further failures in the next minute are not logged; each is in its delivery's last_error.")));
				s->failure_logged_at = now;
			}
		}
	}
	(void) isa_sender_record(s->ch, ended);
	while (ended != NULL)
	{
		SenderTransfer *next = ended->next;

		isa_transfer_free(ended);
		ended = next;
	}
}

/* Until a wake-up, a transfer's socket, or the next thing to do. */
static void
wait_for_work(Sender *s)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = IDLE_MS;

	/* claiming now or soon: only with the service, switched on, and room */
	if (s->ready && isa_notification_senders &&
		isa_transfers_in_flight() < isa_notification_sender_concurrency)
	{
		if (s->look_at <= now || pg_atomic_read_u32(&isa_shared->sender_pending[s->ch->index]) != 0)
			timeout = 0;
		else
			timeout = Min(IDLE_MS, TimestampDifferenceMilliseconds(now, s->look_at));
	}
	if (isa_transfers_in_flight() > 0)
	{
		isa_transfers_wait(Min(timeout, POLL_MS));
		if (!PostmasterIsAlive())
			proc_exit(1);
		return;
	}
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

void
isa_notification_sender_main(Datum arg)
{
	int			c = DatumGetInt32(arg);
	Sender		s = {0};
	MemoryContext turn_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	if (isa_shared == NULL || c < 0 || c >= ISA_SENDER_CHANNELS)
		proc_exit(1);
	s.ch = channels[c];
	BackgroundWorkerInitializeConnection(isa_database, NULL, 0);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	pg_atomic_write_u32(&isa_shared->sender_pid[c], (uint32) MyProcPid);
	pg_atomic_write_u32(&isa_shared->sender_procno[c], (uint32) MyProc->pgprocno);
	before_shmem_exit(report_stopped, Int32GetDatum(c));
	isa_transfers_init();
	turn_cxt = AllocSetContextCreate(TopMemoryContext, "isa sender turn", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContextSwitchTo(turn_cxt);
		MemoryContextReset(turn_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (s.ready)
				log_description(&s);
		}
		if (ShutdownRequestPending)
			break;
		if (isa_notification_senders && service_ready(&s, GetCurrentTimestamp()))
			claim_due(&s);
		record_ended(&s);
		wait_for_work(&s);
	}

	/* SIGTERM: what ended is recorded; what is in flight comes back after its lease. */
	MemoryContextSwitchTo(turn_cxt);
	record_ended(&s);
	isa_transfers_abandon();
	proc_exit(1);
}

PG_FUNCTION_INFO_V1(isa_notification_wake);

/*
 * notification._wake(channel text) RETURNS void: the channel's sender looks
 * for due deliveries when the calling transaction commits (none if it rolls
 * back).  The in-app and MQTT channels have no sender: nothing to wake.
 */
Datum
isa_notification_wake(PG_FUNCTION_ARGS)
{
	char	   *channel;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the channel to wake must not be null")));
	channel = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (int c = 0; c < ISA_SENDER_CHANNELS; c++)
		if (strcmp(channel, channels[c]->name) == 0)
		{
			isa_note_sender_wake(c);
			PG_RETURN_VOID();
		}
	if (strcmp(channel, "mqtt") != 0 && strcmp(channel, "inapp") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown notification channel \"%s\"", channel),
				 errhint("The channels are email, webhook, mqtt and inapp.")));
	PG_RETURN_VOID();
}
