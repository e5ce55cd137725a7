/*
 * sender_queue.c — a sender's side of notification.deliveries, through the
 * notification service's functions only (its contract: claim_deliveries,
 * record_delivery, next_due) in short transactions run as the service's
 * role, isa_svc_notification (bridge_role.c switches to it, as the bridge
 * switches to isa_bridge): a claim in one, the outcomes of the attempts that
 * ended together in one (a subtransaction each).  An error (the service not
 * installed yet, or dropped) is logged and reported to the caller, never
 * thrown at the worker's loop.
 *
 * Payload fields arrive as text of the server's encoding and leave as UTF-8
 * (the encoding of mail and JSON), converted here, inside the transaction.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "bridge.h"
#include "sender.h"

#define SENDER_ROLE "isa_svc_notification"

/*
 * How long a claim holds its deliveries: a transfer ends within its
 * channel's timeout, and the outcome is recorded right after; the margin
 * covers a slow database.  After a crash, the deliveries come back this
 * much later.
 */
#define LEASE_MARGIN_S 30

/* The error of a call, logged; the transaction rolled back. */
static void
log_failure(const char *what, const SenderChannel *ch, MemoryContext outer)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(outer);
	edata = CopyErrorData();
	FlushErrorState();
	isa_worker_abort_transaction();
	ereport(WARNING,
			(errmsg("isa notification sender (%s): %s failed: %s", ch->name, what, edata->message)));
	FreeErrorData(edata);
}

static void
begin(void)
{
	isa_worker_start_transaction(SENDER_ROLE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	isa_worker_commit_transaction();
	pgstat_report_stat(false);
}

/*
 * Whether the notification service is there to deliver for: its role, and
 * the three functions of the contract, executable by it.  False while isa is
 * not installed, or is of a version without the service.
 */
bool
isa_sender_queue_ready(const SenderChannel *ch)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile bool ready = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_role_oid(SENDER_ROLE, true)))
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(outer);
		return false;
	}
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT count(*) FILTER (WHERE f IS NOT NULL AND has_function_privilege('" SENDER_ROLE "', f, 'EXECUTE')) = 3"
						"  FROM unnest(ARRAY[to_regprocedure('notification.claim_deliveries(text,integer,integer)'),"
						"                    to_regprocedure('notification.record_delivery(uuid,boolean,boolean,text)'),"
						"                    to_regprocedure('notification.next_due(text)')]) AS f",
						true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;

			ready = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errmsg("isa notification sender (%s): looking for the notification service failed: %s",
						ch->name, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return ready;
}

/* A text column of the current SPI row, in UTF-8, in cxt; NULL stays NULL. */
static char *
utf8_column(HeapTuple row, TupleDesc desc, int col, MemoryContext cxt)
{
	char	   *v = SPI_getvalue(row, desc, col);

	if (v == NULL)
		return NULL;
	return MemoryContextStrdup(cxt, pg_server_to_any(v, strlen(v), PG_UTF8));
}

/*
 * Claims up to max due deliveries of the channel (committed on return) and
 * returns them, not yet prepared; *claimed is their number.  When fewer
 * than max were due, *next_due is when the channel's next one is (0: none).
 * *failed tells that the call failed (nothing claimed).
 */
SenderTransfer *
isa_sender_claim(const SenderChannel *ch, int max, int *claimed, TimestampTz *next_due, bool *failed)
{
	MemoryContext outer = CurrentMemoryContext;
	SenderTransfer *volatile list = NULL;
	int			lease = *ch->timeout_ms / 1000 + 1 + LEASE_MARGIN_S;

	*claimed = 0;
	*next_due = 0;
	*failed = false;
	PG_TRY();
	{
		Oid			types[3] = {TEXTOID, INT4OID, INT4OID};
		Datum		args[3] = {CStringGetTextDatum(ch->name), Int32GetDatum(max), Int32GetDatum(lease)};
		char	   *query = psprintf("SELECT c.delivery_id::text, c.attempt, %s"
									 "  FROM notification.claim_deliveries($1, $2, $3) AS c (delivery_id, attempt, p)",
									 ch->payload_fields);

		begin();
		if (SPI_execute_with_args(query, 3, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "notification.claim_deliveries did not return rows");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		attempt = SPI_getbinval(row, desc, 2, &isnull);
			SenderTransfer *t = isa_transfer_new(SPI_getvalue(row, desc, 1), isnull ? 0 : DatumGetInt32(attempt));

			t->fields = MemoryContextAllocZero(t->cxt, sizeof(char *) * ch->nfields);
			for (int k = 0; k < ch->nfields; k++)
				t->fields[k] = utf8_column(row, desc, 3 + k, t->cxt);
			t->next = list;
			list = t;
			(*claimed)++;
		}
		if (*claimed < max)
		{
			bool		isnull;

			if (SPI_execute_with_args("SELECT notification.next_due($1)", 1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "notification.next_due did not return a row");
			*next_due = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			if (isnull)
				*next_due = 0;
		}
		commit();
	}
	PG_CATCH();
	{
		log_failure("claiming deliveries", ch, outer);
		while (list != NULL)
		{
			SenderTransfer *t = list;

			list = t->next;
			isa_transfer_free(t);
		}
		*claimed = 0;
		*failed = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return list;
}

/* What record_one needs: the channel and the ended attempt. */
typedef struct RecordCall
{
	const SenderChannel *ch;
	SenderTransfer *t;
} RecordCall;

/* notification.record_delivery for one ended attempt, inside the caller's transaction. */
static void
record_one(void *arg)
{
	RecordCall *c = arg;
	SenderTransfer *t = c->t;
	Oid			types[4] = {UUIDOID, BOOLOID, BOOLOID, TEXTOID};
	Datum		args[4];
	char		nulls[5] = "   n";
	char	   *state;

	args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(t->delivery_id));
	args[1] = BoolGetDatum(t->ok);
	args[2] = BoolGetDatum(t->transient);
	if (t->error != NULL)
	{
		args[3] = CStringGetTextDatum(t->error);
		nulls[3] = ' ';
	}
	if (SPI_execute_with_args("SELECT notification.record_delivery($1, $2, $3, $4)",
							  4, types, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "notification.record_delivery did not return a row");
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	ereport(DEBUG1,
			(errmsg("isa notification sender (%s): delivery %s, attempt %d: %s, now %s",
					c->ch->name, t->delivery_id, t->attempt,
					t->ok ? "delivered" : t->error, state ? state : "?")));
}

/*
 * notification.record_delivery for each attempt of the list (the attempts
 * that ended together), in one transaction: one commit, not one per
 * delivery (bench/notification_fanout: the commits were most of the
 * sender's time).  Each runs in a subtransaction of its own, so an error in
 * one loses that outcome only (logged).  An outcome not recorded leaves its
 * delivery claimed until the lease expires: it is tried again.  Returns how
 * many were recorded.
 */
int
isa_sender_record(const SenderChannel *ch, SenderTransfer *list)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile int done = 0;

	if (list == NULL)
		return 0;
	PG_TRY();
	{
		int			n = 0;

		begin();
		for (SenderTransfer *t = list; t != NULL; t = t->next)
		{
			RecordCall	c = {ch, t};
			ErrorData  *edata = isa_in_subtransaction(record_one, &c);

			if (edata == NULL)
				n++;
			else
			{
				ereport(WARNING,
						(errmsg("isa notification sender (%s): recording the outcome of delivery %s failed: %s",
								ch->name, t->delivery_id, edata->message),
						 errdetail("The delivery stays claimed until its lease ends; then it is tried again.")));
				FreeErrorData(edata);
			}
		}
		commit();
		done = n;
	}
	PG_CATCH();
	{
		log_failure("recording deliveries' outcomes", ch, outer);
		done = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return done;
}
