/*
 * wakeup.c — commit-time wake-up of the bridge and of the notification
 * senders.
 *
 * A transaction that wrote outbox rows (or changed isa.subscriptions, or
 * queued a notification delivery) only notes it in a backend-local flag.  At
 * commit the flag becomes an atomic in shared memory and one SetLatch on the
 * worker concerned (the bridge, or the channel's sender), whatever the number
 * of rows: one wake-up per commit, none for a rollback, and nothing at all
 * when the library is not preloaded or no such worker is running.  A tracked
 * table's statement wakes the bridge only when no earlier one waits for it
 * (wake_noted).
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_wakeup_state);

/*
 * What a transaction noted, each as the lowest transaction nesting level at
 * which a write that is still alive happened (0: none).  A rolled-back
 * savepoint forgets the writes made inside it, so a commit whose only
 * publish was rolled back wakes nobody.
 */
#define NOTE_OUTBOX 0
#define NOTE_SUBSCRIPTIONS 1
#define NOTE_TABLE_BATCHES 2
#define NOTE_SENDER 3			/* + the channel, ISA_SENDER_* */
#define NOTES (NOTE_SENDER + ISA_SENDER_CHANNELS)

static int	noted[NOTES];

static void
note_at_current_level(int what)
{
	int			current = GetCurrentTransactionNestLevel();

	if (noted[what] == 0 || current < noted[what])
		noted[what] = current;
}

static void
isa_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	int			current = GetCurrentTransactionNestLevel();

	for (int k = 0; k < NOTES; k++)
	{
		if (event == SUBXACT_EVENT_COMMIT_SUB && noted[k] == current)
			noted[k] = current - 1;
		else if (event == SUBXACT_EVENT_ABORT_SUB && noted[k] >= current)
			noted[k] = 0;
	}
}

static void
wake(uint32 procno, uint32 pid)
{
	if (procno == ISA_INVALID_PROCNO || procno >= ProcGlobal->allProcCount)
		return;
	/* The slot may have been reused since the worker registered: check its pid. */
	if ((uint32) ProcGlobal->allProcs[procno].pid == pid)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/* The bridge; with a subscription change, the apply workers too. */
static void
isa_wake_bridge(bool apply_workers)
{
	wake(pg_atomic_read_u32(&isa_shared->bridge_procno), pg_atomic_read_u32(&isa_shared->bridge_pid));
	if (apply_workers)
		for (int k = 1; k < ISA_BRIDGE_WORKERS; k++)
			wake(pg_atomic_read_u32(&isa_shared->apply_procno[k]), pg_atomic_read_u32(&isa_shared->apply_pid[k]));
}

/* At commit: what the transaction noted, to the workers concerned. */
static void
wake_noted(void)
{
	/*
	 * Tracked tables' batches wake the bridge only when their flag was down.
	 * A raised flag is one the bridge has yet to take, which it does when it
	 * renders, at most once per isa.bridge_render_interval: it will render
	 * this commit's batch with the others, and a second wake-up would only
	 * send it back to sleep, at the cost of a kill() in every writer's commit
	 * (which perf record -a showed in a single-row writer's profile).
	 */
	bool		batches = noted[NOTE_TABLE_BATCHES] &&
		pg_atomic_exchange_u32(&isa_shared->table_batches_pending, 1) == 0;

	if (noted[NOTE_OUTBOX] || noted[NOTE_SUBSCRIPTIONS] || batches)
	{
		if (noted[NOTE_OUTBOX])
			pg_atomic_write_u32(&isa_shared->outbox_pending, 1);
		if (noted[NOTE_SUBSCRIPTIONS])
			for (int k = 0; k < ISA_BRIDGE_WORKERS; k++)
				pg_atomic_write_u32(&isa_shared->subscriptions_changed[k], 1);
		pg_atomic_fetch_add_u64(&isa_shared->wakeups_signalled, 1);
		isa_wake_bridge(noted[NOTE_SUBSCRIPTIONS] != 0);
	}
	for (int c = 0; c < ISA_SENDER_CHANNELS; c++)
		if (noted[NOTE_SENDER + c])
		{
			pg_atomic_write_u32(&isa_shared->sender_pending[c], 1);
			wake(pg_atomic_read_u32(&isa_shared->sender_procno[c]),
				 pg_atomic_read_u32(&isa_shared->sender_pid[c]));
		}
}

static void
isa_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (isa_shared != NULL)
				wake_noted();
			memset(noted, 0, sizeof(noted));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared transaction commits elsewhere: the workers' timers find it. */
			memset(noted, 0, sizeof(noted));
			break;
		default:
			break;
	}
}

void
isa_wakeup_init(void)
{
	RegisterXactCallback(isa_xact_callback, NULL);
	RegisterSubXactCallback(isa_subxact_callback, NULL);
}

void
isa_note_outbox_write(void)
{
	note_at_current_level(NOTE_OUTBOX);
}

/* A tracked table's trigger: the bridge renders the batches after commit (bridge/render.c). */
void
isa_note_table_batches(void)
{
	note_at_current_level(NOTE_TABLE_BATCHES);
}

void
isa_note_subscriptions_change(void)
{
	note_at_current_level(NOTE_SUBSCRIPTIONS);
}

/* notification._wake(channel): the channel's sender delivers after commit. */
void
isa_note_sender_wake(int channel)
{
	Assert(channel >= 0 && channel < ISA_SENDER_CHANNELS);
	note_at_current_level(NOTE_SENDER + channel);
}

/* isa.subscriptions trigger: the bridge re-reads its consumers after commit. */
PG_FUNCTION_INFO_V1(isa_subscriptions_changed_trigger);
Datum
isa_subscriptions_changed_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("isa_subscriptions_changed_trigger must be called as a trigger")));
	isa_note_subscriptions_change();
	return PointerGetDatum(NULL);
}

/* isa._wake_bridge_at_commit(): the bridge publishes after this transaction commits. */
PG_FUNCTION_INFO_V1(isa_wake_bridge_at_commit);
Datum
isa_wake_bridge_at_commit(PG_FUNCTION_ARGS)
{
	isa_note_outbox_write();
	PG_RETURN_VOID();
}

/* isa.direct_messages trigger: the bridge publishes them after commit. */
PG_FUNCTION_INFO_V1(isa_outbox_written_trigger);
Datum
isa_outbox_written_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("isa_outbox_written_trigger must be called as a trigger")));
	isa_note_outbox_write();
	return PointerGetDatum(NULL);
}

/*
 * isa.wakeup_state(): whether shared memory exists (library preloaded), the
 * pending flags, the number of commits that signalled, and the bridge's pid.
 */
Datum
isa_wakeup_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = BoolGetDatum(isa_shared != NULL);
	if (isa_shared != NULL)
	{
		uint32		pid = pg_atomic_read_u32(&isa_shared->bridge_pid);

		values[1] = BoolGetDatum(pg_atomic_read_u32(&isa_shared->outbox_pending) != 0);
		values[2] = BoolGetDatum(pg_atomic_read_u32(&isa_shared->subscriptions_changed[0]) != 0);
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&isa_shared->wakeups_signalled));
		values[4] = Int32GetDatum((int32) pid);
		nulls[4] = (pg_atomic_read_u32(&isa_shared->bridge_procno) == ISA_INVALID_PROCNO);
	}
	else
		nulls[1] = nulls[2] = nulls[3] = nulls[4] = true;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
