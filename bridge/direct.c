/*
 * direct.c — direct messages: plain NATS messages (no envelope, core NATS,
 * not JetStream) that a service queued in isa.direct_messages in its own
 * transaction (isa.send_direct_message), published by the bridge in id
 * order.  One round: in one transaction, delete a batch RETURNING its rows,
 * publish them, flush; commit only if the server took them all, else roll
 * back so that they are tried again.  Core NATS has no ack: a message is
 * delivered at most once, to whoever is subscribed at that moment; a sender
 * that needs more re-sends until the receiver answers (the device service's
 * commands, sql/device/device.sql).  A database whose isa predates the table
 * (0.1.0) has nothing to send.
 *
 * Docs: docs/bridge.md, "Direct messages".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "isa.h"
#include "bridge.h"

#define DIRECT_FLUSH_TIMEOUT_MS 2000

/* Saved: every publishing round runs it. */
static SPIPlanPtr take_plan = NULL;
static bool table_known = false;

static void
prepare_plan(void)
{
	Oid			types[1] = {INT4OID};

	if (take_plan != NULL)
		return;
	take_plan = SPI_prepare("DELETE FROM isa.direct_messages d WHERE d.id IN "
							"  (SELECT x.id FROM isa.direct_messages x ORDER BY x.id LIMIT $1) "
							"RETURNING d.id, d.subject, d.payload::text",
							1, types);
	if (take_plan == NULL)
		elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(take_plan);
}

/* Whether isa.direct_messages exists (0.1.0 has none); remembered once true. */
static bool
table_exists(void)
{
	if (!table_known)
	{
		int			ret = SPI_execute("SELECT to_regclass('isa.direct_messages') IS NOT NULL", true, 1);
		bool		isnull;

		table_known = ret == SPI_OK_SELECT && SPI_processed == 1 &&
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return table_known;
}

/*
 * Publishes one batch of direct messages.  Returns how many were sent (a
 * full batch means "call again"), or -1 when NATS did not take them (they
 * stay queued).
 */
int
isa_direct_round(void)
{
	int			n = 0;
	bool		sent = true;

	isa_bridge_start_transaction();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (table_exists())
	{
		Datum		arg = Int32GetDatum(isa_publish_batch_size);
		int			ret;

		pgstat_report_activity(STATE_RUNNING, "isa bridge: publishing direct messages");
		prepare_plan();
		ret = SPI_execute_plan(take_plan, &arg, NULL, false, 0);
		if (ret != SPI_OK_DELETE_RETURNING)
			elog(ERROR, "isa bridge: reading isa.direct_messages failed: %s", SPI_result_code_string(ret));
		n = (int) SPI_processed;
		for (int i = 0; i < n && sent; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;

			sent = nl_publish_plain(SPI_getvalue(tup, desc, 2), SPI_getvalue(tup, desc, 3));
		}
		if (n > 0 && sent)
			sent = nl_flush(DIRECT_FLUSH_TIMEOUT_MS);
	}
	SPI_finish();
	PopActiveSnapshot();
	if (sent)
		isa_bridge_commit_transaction();
	else
	{
		/* the rows come back: the next round sends them again */
		isa_bridge_abort_transaction();
		isa_bridge_record_error("%d direct messages were not taken by NATS; they stay queued", n);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	return sent ? n : -1;
}
