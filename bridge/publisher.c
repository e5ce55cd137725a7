/*
 * publisher.c — the outbox to JetStream (docs/architecture.md, "Publishing").
 *
 * One round: in one transaction, read up to isa.publish_batch_size
 * unpublished rows in id order, publish them all asynchronously (header
 * Nats-Msg-Id = the row's id, so JetStream drops a republished duplicate), wait
 * for the acks, and mark published the rows that were stored — except those
 * behind a failed row of the same source, which wait for it so that a
 * source's events never overtake each other across rounds.  A crash before
 * the commit republishes the batch under the same ids.
 *
 * A row with a subject override (a replay, event.replay_to_subject) goes out
 * on its replay.> subject with the original envelope's id and source
 * (envelope_id, envelope_source); its own id, made for the replay, stays the
 * Nats-Msg-Id: distinct per (replay, event), so the stream's duplicate window
 * does not drop a second replay of an event, yet a crash still republishes it
 * under the same id.  A replay's failed row holds back the later rows of its
 * replay only, not its source's (event_service): a stream ISA_REPLAY that
 * cannot be written must not stop the service's own events.
 *
 * Docs: docs/bridge.md, "Publishing".
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "isa.h"
#include "bridge.h"

static SPIPlanPtr select_plan = NULL;

/*
 * Marking: one UPDATE per outbox partition in the batch, by ctid (read in the
 * same transaction; only the bridge updates the outbox).  By id, PostgreSQL
 * 15 descends the index once per id, which cost more than the rest of a round.
 */
typedef struct MarkPlan
{
	char	   *relname;
	SPIPlanPtr plan;
} MarkPlan;
static List *mark_plans = NIL;

static SPIPlanPtr
mark_plan_for(const char *relname)
{
	ListCell   *lc;
	MarkPlan   *mp;
	Oid			types[1] = {TIDARRAYOID};
	MemoryContext old;

	foreach(lc, mark_plans)
	{
		mp = lfirst(lc);
		if (strcmp(mp->relname, relname) == 0)
			return mp->plan;
	}
	mp = MemoryContextAlloc(TopMemoryContext, sizeof(MarkPlan));
	mp->relname = MemoryContextStrdup(TopMemoryContext, relname);
	/*
	 * The rows by their ctids alone, so that a TID scan is the only plan: with
	 * "AND published_at IS NULL" beside, stale statistics made the planner walk
	 * the partial index of unpublished rows and test each against the array,
	 * a cost that grew with the square of a backlog ("bridge rendered and
	 * published the 100k events" in bench/table_events/run).  coalesce keeps
	 * the first publication's time.
	 */
	mp->plan = SPI_prepare(psprintf("UPDATE %s SET published_at = coalesce(published_at, clock_timestamp()) "
									"WHERE ctid = ANY ($1)", relname),
						   1, types);
	if (mp->plan == NULL)
		elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(mp->plan);
	old = MemoryContextSwitchTo(TopMemoryContext);
	mark_plans = lappend(mark_plans, mp);
	MemoryContextSwitchTo(old);
	return mp->plan;
}

/* The batch lives here until the next round: late ack callbacks may read ids. */
static MemoryContext batch_cxt = NULL;

#define PUBLISH_ACK_TIMEOUT_MS 5000

/* A recent round reads the rows whose ids were made in this last while (isa_publish_round). */
#define PUBLISH_RECENT_MS 10000

void
isa_publisher_reset(void)
{
	select_plan = NULL;
	mark_plans = NIL;			/* the plans leak: this happens on reconfiguration only */
}

/*
 * Whether isa.outbox has the subject override (SQL 0.2.0; 0.1.0 has not).
 * Asked every round while the plan lacks it: the upgrade that adds it also
 * makes event.replay_to_subject, whose rows must never go out on their
 * original subject, and a round's snapshot sees no row committed after the
 * column.  One syscache probe.
 */
static bool
outbox_has_override(void)
{
	Oid			outbox = get_relname_relid("outbox", get_namespace_oid("isa", false));

	return OidIsValid(outbox) && get_attnum(outbox, "subject") != InvalidAttrNumber;
}

static bool select_has_override = false;

static void
prepare_plans(void)
{
	if (select_plan != NULL && !select_has_override && outbox_has_override())
	{
		SPI_freeplan(select_plan);
		select_plan = NULL;
	}
	if (select_plan == NULL)
	{
		Oid			types[2] = {INT4OID, UUIDOID};
		bool		override = outbox_has_override();

		/*
		 * The wire envelope, built as text: jsonb's output is valid JSON and
		 * to_json quotes the strings.
		 */
		select_plan = SPI_prepare(psprintf(
										   "SELECT o.id::text, %s, "
										   "  '{\"id\":\"' || %s || '\",\"event_type\":' || to_json(o.event_type) "
										   "  || ',\"source\":' || to_json(%s) || ',\"version\":' || to_json(o.version) "
										   "  || ',\"timestamp\":\"' "
										   "  || to_char(o.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
										   "  || '\",\"data\":' || o.data || ',\"metadata\":' || o.metadata || '}', "
										   "  o.metadata->>'traceparent', o.metadata->>'correlation_id', "
										   "  o.source, o.event_type, "
										   "  (SELECT s.name FROM isa.services s WHERE s.source = o.source), "
										   "  o.tableoid::regclass::text, o.ctid, %s "
										   "FROM isa.outbox o WHERE o.published_at IS NULL AND o.id >= $2 "
										   "ORDER BY o.id LIMIT $1",
										   override ? "coalesce(o.subject, o.source || '.' || o.event_type)"
										   : "o.source || '.' || o.event_type",
										   override ? "coalesce(o.envelope_id, o.id)" : "o.id",
										   override ? "coalesce(o.envelope_source, o.source)" : "o.source",
										   /* what a failed row holds back: its source, or its replay */
										   override ? "coalesce(substring(o.subject from '^replay\\.[^.]+'), o.source)"
										   : "o.source"),
								  2, types);
		if (select_plan == NULL)
			elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(select_plan);
		select_has_override = override;
	}
}

/*
 * A text column of the batch, copied into batch_cxt.  (SPI_getvalue would
 * look up the output function for every value: 10 columns x 1000 rows of
 * syscache lookups cost more than the query.)
 */
static char *
batch_copy(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	MemoryContext old;
	char	   *v;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(batch_cxt);
	v = TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	return v;
}

/*
 * The least UUID v7 of a time: its Unix milliseconds in the first 48 bits,
 * the rest zero; every id made at or after that time is not less.
 */
static Datum
uuid_v7_floor(TimestampTz t)
{
	pg_uuid_t  *u = palloc0(sizeof(pg_uuid_t));
	int64		ms = t / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	for (int i = 5; i >= 0; i--, ms >>= 8)
		u->data[i] = (uint8) (ms & 0xff);
	return UUIDPGetDatum(u);
}

/*
 * Publishes one batch.  Returns the number of rows read (a full batch means
 * "call again"), or -1 if some could not be published (retry later).
 *
 * recent: read only the rows whose id (a UUID v7) was made in the last
 * PUBLISH_RECENT_MS.  The partial index of unpublished rows keeps the
 * entries of published ones until vacuum, at its left: a scan from the start
 * read hundreds of their pages at every round under a stream of events
 * (bench/table_events/run, perf record).  A row whose transaction committed
 * later than that after making it is published by the next full round, which
 * the worker runs at least once per isa.bridge_idle_interval.
 */
int
isa_publish_round(bool recent)
{
	int			n;
	int			ret;
	char	  **ids,
			  **subjects,
			  **bodies,
			  **traces,
			  **correlations,
			  **sources,
			  **order_keys,
			  **types,
			  **services;
	int		   *lens;
	char	  **partitions;
	Datum	   *tids;
	char	   *results;
	bool	   *mark;
	int			nmark = 0;
	int			nfailed = 0;
	List	   *blocked_keys = NIL;

	if (batch_cxt == NULL)
		batch_cxt = AllocSetContextCreate(TopMemoryContext, "isa bridge publish batch",
										  ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(batch_cxt);

	isa_bridge_start_transaction();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "isa bridge: publishing the outbox");

	/*
	 * The backlog grows in bursts, faster than autovacuum's statistics: with
	 * stale ones the planner sorts every unpublished row (135 ms for 200k)
	 * instead of walking the partial index in id order (4 ms).  Keep the
	 * index walk whatever the statistics say; the settings end with the
	 * transaction.
	 */
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);

	/*
	 * A mark lost in a crash only republishes the batch under the same ids,
	 * which JetStream drops: no need to wait for the WAL flush.  (The
	 * consumer's commits stay synchronous: they are acked after.)
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	prepare_plans();

	{
		Datum		args[2];

		args[0] = Int32GetDatum(isa_publish_batch_size);
		args[1] = recent ? uuid_v7_floor(GetCurrentTimestamp() - PUBLISH_RECENT_MS * INT64CONST(1000))
			: UUIDPGetDatum(palloc0(sizeof(pg_uuid_t)));	/* the nil UUID: every row */
		ret = SPI_execute_plan(select_plan, args, NULL, true, 0);
	}
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "isa bridge: reading the outbox failed: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	if (n == 0)
	{
		SPI_finish();
		PopActiveSnapshot();
		isa_bridge_commit_transaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		return 0;
	}

	ids = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	subjects = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	bodies = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	traces = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	correlations = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	sources = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	order_keys = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	types = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	services = MemoryContextAlloc(batch_cxt, sizeof(char *) * n);
	lens = MemoryContextAlloc(batch_cxt, sizeof(int) * n);
	partitions = palloc(sizeof(char *) * n);
	tids = palloc(sizeof(Datum) * n);
	results = MemoryContextAlloc(batch_cxt, n);
	mark = MemoryContextAllocZero(batch_cxt, sizeof(bool) * n);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		ids[i] = batch_copy(tup, desc, 1);
		partitions[i] = batch_copy(tup, desc, 9);
		{
			bool		isnull;
			ItemPointer tid = palloc(sizeof(ItemPointerData));

			ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 10, &isnull)), tid);
			tids[i] = PointerGetDatum(tid);
		}
		subjects[i] = batch_copy(tup, desc, 2);
		bodies[i] = batch_copy(tup, desc, 3);
		lens[i] = strlen(bodies[i]);
		traces[i] = batch_copy(tup, desc, 4);
		correlations[i] = batch_copy(tup, desc, 5);
		sources[i] = batch_copy(tup, desc, 6);
		order_keys[i] = batch_copy(tup, desc, 11);
		types[i] = batch_copy(tup, desc, 7);
		services[i] = batch_copy(tup, desc, 8);
	}
	SPI_freetuptable(SPI_tuptable);

	(void) nl_publish_batch(n, subjects, ids, bodies, lens, traces, correlations, results,
							PUBLISH_ACK_TIMEOUT_MS);

	for (int i = 0; i < n; i++)
	{
		bool		blocked = false;
		ListCell   *lc;

		foreach(lc, blocked_keys)
			blocked |= strcmp((char *) lfirst(lc), order_keys[i]) == 0;
		if (results[i] == NL_ACKED && !blocked)
		{
			mark[i] = true;
			nmark++;
		}
		else
		{
			if (results[i] != NL_ACKED)
				nfailed++;
			if (!blocked)
				blocked_keys = lappend(blocked_keys, order_keys[i]);
		}
	}

	if (nmark > 0)
	{
		Datum	   *elems = palloc(sizeof(Datum) * nmark);
		bool	   *done = palloc0(sizeof(bool) * n);

		for (int first = 0; first < n; first++)
		{
			int			k = 0;
			Datum		arg;

			if (!mark[first] || done[first])
				continue;
			for (int i = first; i < n; i++)
				if (mark[i] && !done[i] && strcmp(partitions[i], partitions[first]) == 0)
				{
					elems[k++] = tids[i];
					done[i] = true;
				}
			arg = PointerGetDatum(construct_array(elems, k, TIDOID, sizeof(ItemPointerData), false,
												  TYPALIGN_SHORT));
			ret = SPI_execute_plan(mark_plan_for(partitions[first]), &arg, NULL, false, 0);
			if (ret != SPI_OK_UPDATE)
				elog(ERROR, "isa bridge: marking the outbox failed: %s", SPI_result_code_string(ret));
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	isa_bridge_commit_transaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);

	for (int i = 0; i < n; i++)
		if (mark[i])
			isa_metric_count(ISA_METRIC_PUBLISHED, services[i] ? services[i] : sources[i], types[i],
							 NULL, 0);
	isa_bridge_report_published();
	if (nfailed > 0)
	{
		isa_bridge_record_error("%d of %d events were not acknowledged by JetStream; they stay in the outbox",
								nfailed, n);
		return -1;
	}
	return n;
}
