/*
 * render.c — the tracked tables' batches become events (docs/table-events.md,
 * "Decisions"): before a publishing round, when a commit wrote batches
 * (isa_note_table_batches) or at the idle interval, the bridge calls
 * isa._render_table_events() in a transaction of its own, which turns the
 * statements the tables' triggers kept (table_events.batches_N) into rows of
 * table_events.outbox, in order; the round then publishes them.  One
 * tracking that fails keeps its batches and is logged by that function; a
 * failure of the whole is recorded and the batches stay for the next idle
 * round: the other services' events are published meanwhile.  A database whose isa predates tracked
 * tables (0.1.0) has nothing to render.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "isa.h"
#include "bridge.h"

static bool render_known = false;

/* Renders what the tracked tables wrote.  Returns the number of events made, -1 on failure. */
int
isa_render_round(void)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile int made = 0;

	PG_TRY();
	{
		isa_bridge_start_transaction();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!render_known)
		{
			int			ret = SPI_execute("SELECT to_regprocedure('isa._render_table_events(text, boolean)') IS NOT NULL",
										  true, 1);
			bool		isnull;

			render_known = ret == SPI_OK_SELECT && SPI_processed == 1 &&
				DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		if (render_known)
		{
			bool		isnull;
			Datum		n;

			pgstat_report_activity(STATE_RUNNING, "isa bridge: rendering tracked tables' events");
			if (SPI_execute("SELECT isa._render_table_events(NULL, false)", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "isa bridge: isa._render_table_events() failed");
			n = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			made = isnull ? 0 : (int) DatumGetInt64(n);
		}
		SPI_finish();
		PopActiveSnapshot();
		isa_bridge_commit_transaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		isa_bridge_abort_transaction();
		isa_bridge_record_error("rendering the tracked tables' events failed: %s", edata->message);
		FreeErrorData(edata);
		made = -1;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return made;
}
