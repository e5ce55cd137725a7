/*
 * subscriptions.c — the subscription set: the rows of isa.subscriptions that
 * this bridge process runs (isa.services and isa.bridge_apply_groups decide:
 * settings.c), each with its durable pull consumer on the stream and the
 * state of its pulls.
 *
 * Loading reads isa.subscriptions again (at start, after a commit that
 * changed it, after a reload of isa.services): a new row gets a consumer at
 * the next setup, a removed one loses its consumer, changed options apply to
 * the next messages.  A pull asks for a batch; the next is asked for when the
 * batch is complete, its request expired, or its answer is overdue.  The
 * messages themselves are applied by apply.c.
 *
 * Docs: docs/bridge.md, "Consuming" and "Changing subscriptions at run time".
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "isa.h"
#include "bridge.h"

static List *subs = NIL;		/* of BridgeSub, in TopMemoryContext */

#define PULL_EXPIRES_MS 5000

int
isa_subscription_max_deliver(const BridgeSub *s)
{
	return s->max_deliver > 0 ? s->max_deliver : isa_max_deliver;
}

static int
effective_batch(const BridgeSub *s)
{
	return s->batch_size > 0 ? s->batch_size : isa_consume_batch_size;
}

/* The subscription of an id, or NULL. */
BridgeSub *
isa_subscription_by_id(int64 id)
{
	ListCell   *lc;

	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);

		if (s->id == id)
			return s;
	}
	return NULL;
}

/* The subscription of a durable consumer name, or NULL. */
BridgeSub *
isa_subscription_by_durable(const char *durable)
{
	ListCell   *lc;

	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);

		if (strcmp(s->durable, durable) == 0)
			return s;
	}
	return NULL;
}

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v ? MemoryContextStrdup(TopMemoryContext, v) : NULL;
}

static void
free_sub(BridgeSub *s)
{
	pfree(s->service);
	pfree(s->source);
	pfree(s->durable);
	pfree(s->filter);
	pfree(s->owner_role);
	if (s->versions)
		pfree(s->versions);
	pfree(s);
}

/* isa.bridge_status().subscriptions: those whose consumer is set up. */
static void
publish_running_count(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, subs)
		n += ((BridgeSub *) lfirst(lc))->ready ? 1 : 0;
	isa_bridge_report_subscriptions(n);
}

/*
 * Re-reads isa.subscriptions: new rows get a consumer at the next setup,
 * removed ones lose theirs now (if connected), changed options apply.
 */
void
isa_subscriptions_load(void)
{
	List	   *kept = NIL;
	ListCell   *lc;
	int			ret;

	isa_bridge_start_transaction();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "isa bridge: loading subscriptions");

	ret = SPI_execute("SELECT s.id, s.service, v.source, s.durable_name, s.subject_filter, "
					  "       s.handler::oid, s.owner_role, "
					  "       coalesce((s.options->>'max_deliver')::int, 0), "
					  "       coalesce((s.options->>'batch_size')::int, 0), "
					  "       (SELECT string_agg(x, ',') FROM jsonb_array_elements_text(s.options->'versions') x), "
					  "       coalesce(s.options->>'deliver_policy', 'all') = 'new', "
					  "       (SELECT p.pronargs = 1 AND t.typcategory = 'A' FROM pg_proc p "
					  "          JOIN pg_type t ON t.oid = p.proargtypes[0] WHERE p.oid = s.handler) "
					  "  FROM isa.subscriptions s JOIN isa.services v ON v.name = s.service "
					  " ORDER BY s.id", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "isa bridge: reading isa.subscriptions failed: %d", ret);

	foreach(lc, subs)
		((BridgeSub *) lfirst(lc))->seen = false;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *service = SPI_getvalue(tup, desc, 2);
		BridgeSub  *s;
		char	   *versions;

		if (!isa_bridge_runs_service(service))
		{
			/* another database's bridge may run it: keep its consumer */
			s = isa_subscription_by_id(id);
			if (s)
				s->seen = s->disabled = true;
			continue;
		}
		s = isa_subscription_by_id(id);
		if (s == NULL)
		{
			s = MemoryContextAllocZero(TopMemoryContext, sizeof(BridgeSub));
			s->id = id;
			s->service = spi_text(tup, desc, 2);
			s->source = spi_text(tup, desc, 3);
			s->durable = spi_text(tup, desc, 4);
			s->filter = spi_text(tup, desc, 5);
			subs = lappend(subs, s);
			/* lappend may have run in the caller's context: keep the list */
		}
		else
		{
			pfree(s->owner_role);
			if (s->versions)
				pfree(s->versions);
		}
		s->seen = true;
		s->disabled = false;
		s->handler = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));
		s->owner_role = spi_text(tup, desc, 7);
		s->max_deliver = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		s->batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
		s->deliver_new = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
		s->batch = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull)) && !isnull;
		versions = SPI_getvalue(tup, desc, 10);
		s->versions = NULL;
		s->nversions = 0;
		if (versions)
		{
			char	   *save = NULL;

			s->versions = MemoryContextAlloc(TopMemoryContext, sizeof(int) * (strlen(versions) + 1));
			for (char *t = strtok_r(versions, ",", &save); t; t = strtok_r(NULL, ",", &save))
				s->versions[s->nversions++] = atoi(t);
		}
	}

	SPI_finish();
	PopActiveSnapshot();
	isa_bridge_commit_transaction();
	pgstat_report_activity(STATE_IDLE, NULL);

	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);

		if (s->seen && !s->disabled)
			kept = lappend(kept, s);
		else
		{
			/* Unsubscribed: the consumer goes too.  Excluded by isa.services: it stays. */
			if (!s->seen && nl_connected() && !nl_delete_consumer(s->durable))
				isa_bridge_record_error("could not delete consumer %s", s->durable);
			free_sub(s);
		}
	}
	/* keep the list itself in TopMemoryContext */
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		List	   *copy = list_copy(kept);

		MemoryContextSwitchTo(old);
		subs = copy;
	}
	publish_running_count();
}

/* After a (re)connection: the server may have lost or never had our consumers. */
void
isa_subscriptions_forget_server_state(void)
{
	ListCell   *lc;

	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);

		s->ready = false;
		s->outstanding = 0;
		s->pull_deadline = 0;
	}
	publish_running_count();
}

/* Subscriptions whose consumer is not set up on the server. */
int
isa_subscriptions_unready(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, subs)
		n += ((BridgeSub *) lfirst(lc))->ready ? 0 : 1;
	return n;
}

/* Creates the consumers that are not ready yet. */
void
isa_subscriptions_setup(void)
{
	ListCell   *lc;

	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);
		int			batch = effective_batch(s);

		if (s->ready || !nl_connected())
			continue;
		s->ready = nl_ensure_consumer(s->durable, s->filter, Max(1000, batch * 4), s->deliver_new);
		s->outstanding = 0;
		s->pull_deadline = 0;
	}
	publish_running_count();
}

/*
 * Asks for the next batch where the last one is complete or expired
 * (pull_deadline: an answer overdue, or a back-off after a 409).
 */
void
isa_subscriptions_pull(TimestampTz now, long *next_wake_ms)
{
	ListCell   *lc;

	if (!nl_connected())
		return;
	foreach(lc, subs)
	{
		BridgeSub  *s = lfirst(lc);

		if (!s->ready)
			continue;
		if (now < s->pull_deadline)
		{
			long		wait_ms = (long) ((s->pull_deadline - now) / 1000) + 1;

			if (wait_ms < *next_wake_ms)
				*next_wake_ms = wait_ms;
			continue;
		}
		if (s->outstanding > 0 && s->pull_deadline == 0)
			continue;
		if (nl_pull(s->durable, s->id, effective_batch(s), PULL_EXPIRES_MS))
		{
			s->outstanding = effective_batch(s);
			/* no answer by then (lost across a reconnect): ask again */
			s->pull_deadline = now + (PULL_EXPIRES_MS + 2000) * 1000L;
		}
	}
}

/*
 * A message of a pull request that carries no event, on the reply subject
 * <inbox>.<subscription id>: its end (status 408 expired, 404 no messages,
 * 409 a server limit: back off a second) or a heartbeat (100, ignored).
 */
void
isa_subscriptions_pull_ended(const char *subject, const char *status)
{
	const char *dot = strrchr(subject, '.');
	BridgeSub  *s = NULL;

	if (dot && (status == NULL || strcmp(status, "100") != 0))
		s = isa_subscription_by_id(strtoll(dot + 1, NULL, 10));
	if (s == NULL)
		return;
	s->outstanding = 0;
	if (status && strcmp(status, "408") != 0 && strcmp(status, "404") != 0)
		s->pull_deadline = GetCurrentTimestamp() + 1000 * 1000L;	/* 409: back off */
	else
		s->pull_deadline = 0;
}

/* An event of s's pull arrived: when the batch is complete, ask again. */
void
isa_subscription_received(BridgeSub *s)
{
	if (s->outstanding > 0 && --s->outstanding == 0)
		s->pull_deadline = 0;
}
