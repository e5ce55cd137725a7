/*
 * apply.c — the apply path: the messages the consumers delivered, into SQL
 * handlers, exactly once in effect.
 *
 * The messages that arrived since the last turn are applied in one
 * transaction, each in its own subtransaction:
 *
 *   parse the envelope (once per round for the same bytes: a message that
 *   several of this worker's subscriptions match comes once per consumer)
 *   -> check that it arrived on its own subject,
 *   <source>.<event_type> -> check its major version -> insert into the inbox
 *   (a conflict means "already applied": skip) -> call the handler as the
 *   subscription's owner  (the last two: handler.c)
 *
 * Commit, then ack.  A handler error rolls back its subtransaction only; the
 * message is nak'ed with an exponential delay, or after max_deliver attempts
 * dead-lettered (dead_letters.c; committed before the +TERM).  A message that
 * is not a valid envelope, arrived on a subject that is not its own, or has
 * an unsupported version is dead-lettered at once: bad data is not a
 * transient error.  The subject is what NATS permissions vouch for (who may
 * publish where), so an envelope is believed only on its own subject: one
 * saying "source": "payment_service" published on external.> is a forgery.
 * The one exception: a device's ack or heartbeat (isa.devices.<id>.acks,
 * .heartbeat) is a bare JSON object, and its envelope is the bridge's own
 * (device_messages.c).  Which subscription a message belongs to, and its
 * pulls, are subscriptions.c's.
 *
 * Docs: docs/bridge.md, "Consuming" and "Handlers".
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"

#include <time.h>

#include "isa.h"
#include "bridge.h"

typedef enum ApplyResult
{
	APPLY_OK,
	APPLY_DUPLICATE,
	APPLY_RETRY,
	APPLY_DEAD,
	APPLY_PENDING				/* checked; waits for its batch handler's call */
} ApplyResult;

static const char *const status_names[] = {"ok", "duplicate", "retry", "dead_letter", "pending"};

static MemoryContext round_cxt = NULL;	/* outlives the round's SPI and transaction */
static Oid	event_from_json_oid = InvalidOid;
static FmgrInfo event_from_json_finfo;

typedef struct Delivery
{
	natsMsg    *msg;
	BridgeSub  *sub;
	uint64		delivered;
	ApplyResult result;
	char	   *event_type;
	double		seconds;
	Datum		event;			/* APPLY_PENDING: the parsed isa.event, in round_cxt */
	Datum		event_json;		/* APPLY_PENDING: the envelope, for a dead letter */
} Delivery;

static void
prepare_plans(void)
{
	if (!OidIsValid(event_from_json_oid))
	{
		event_from_json_oid = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
																   CStringGetDatum("isa.event_from_json(jsonb)")));
		fmgr_info_cxt(event_from_json_oid, &event_from_json_finfo, TopMemoryContext);
	}
	(void) isa_handler_prepare();
	isa_dead_letters_prepare();
}

static int
major_of(const char *version)
{
	return atoi(version);
}

static FmgrInfo *
handler_finfo(BridgeSub *s)
{
	if (s->finfo_oid != s->handler)
	{
		s->finfo_oid = InvalidOid;
		fmgr_info_cxt(s->handler, &s->finfo, TopMemoryContext);
		s->finfo_oid = s->handler;
	}
	return &s->finfo;
}

/* Seconds since a stream stored a message (its metadata's timestamp), >= 0. */
static double
stored_age(int64 stored_ns)
{
	struct timespec now;
	double		age;

	clock_gettime(CLOCK_REALTIME, &now);
	age = (double) now.tv_sec - (double) stored_ns / 1e9 + (double) now.tv_nsec / 1e9;
	return age > 0 ? age : 0;
}

static double
seconds_since(struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

typedef struct ApplyState
{
	Delivery   *d;
	int			stage;			/* 0 parse, 1 subject, 2 version, 3 handler */
	Datum		event_json;		/* once the bytes parsed as JSON */
	bool		kept;			/* event_json and the event are the round's copies (Parsed) */
	ApplyResult result;
} ApplyState;

/*
 * The envelopes parsed this round, by their bytes.  A message that matches
 * several subscriptions of this worker (the event store's and the audit
 * trail's '>' match every event) comes once per consumer with the same
 * bytes: it is checked and parsed once.  A table of 2n slots or more, in
 * round_cxt, made only for a round with messages of two subscriptions or
 * more (NULL otherwise: nothing hashed, nothing copied); a slot's data are
 * the bytes of a message that lives until the round's end.
 */
typedef struct Parsed
{
	const char *data;			/* NULL: a free slot */
	int			len;
	uint32		hash;
	Datum		event;			/* copies in round_cxt */
	Datum		event_json;
} Parsed;

static Parsed *parsed = NULL;
static uint32 parsed_mask = 0;

static void
parsed_start(int n)
{
	uint32		size = 16;

	while (size < (uint32) n * 2)
		size <<= 1;
	parsed = MemoryContextAllocZero(round_cxt, sizeof(Parsed) * size);
	parsed_mask = size - 1;
}

/* The slot of these bytes: parsed already when its data is set, else free. */
static Parsed *
parsed_slot(const char *data, int len)
{
	uint32		hash = hash_bytes((const unsigned char *) data, len);
	Parsed	   *p;

	for (uint32 i = hash & parsed_mask;; i = (i + 1) & parsed_mask)
	{
		p = &parsed[i];
		if (p->data == NULL)
		{
			p->hash = hash;
			return p;
		}
		if (p->hash == hash && p->len == len && memcmp(p->data, data, len) == 0)
			return p;
	}
}

static void
apply_message_body(void *arg)
{
	ApplyState *st = arg;
	Delivery   *d = st->d;
	const char *data = natsMsg_GetData(d->msg);
	int			len = natsMsg_GetDataLength(d->msg);
	Datum		event;
	HeapTupleHeader th;
	bool		isnull;
	char	   *version;
	const char *device_event_type = isa_device_message_type(natsMsg_GetSubject(d->msg), NULL);
	Parsed	   *slot = NULL;

	/* a device message's envelope is made from its subject too: not shared */
	if (parsed != NULL && device_event_type == NULL && len > 0)
		slot = parsed_slot(data, len);
	if (slot != NULL && slot->data != NULL)
	{
		/* the same bytes, checked and parsed for another consumer */
		st->event_json = slot->event_json;
		event = slot->event;
		st->kept = true;
	}
	else
	{
		char	   *buf = palloc(len + 1);

		memcpy(buf, data, len);
		buf[len] = '\0';
		if (len == 0)
			ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							errmsg("empty message")));
		if (memchr(data, '\0', len) != NULL)
			ereport(ERROR, (errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
							errmsg("message contains a NUL byte")));
		if (!pg_verify_mbstr(PG_UTF8, buf, len, true))
			ereport(ERROR, (errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
							errmsg("message is not valid UTF-8")));
		if (device_event_type)
			st->event_json = isa_device_message_envelope(d->msg, buf);
		else
			st->event_json = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf));
		event = FunctionCall1(&event_from_json_finfo, st->event_json);
		if (slot != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(round_cxt);

			slot->event = event = datumCopy(event, false, -1);
			slot->event_json = st->event_json = datumCopy(st->event_json, false, -1);
			slot->len = len;
			slot->data = data;
			MemoryContextSwitchTo(old);
			st->kept = true;
		}
	}
	th = DatumGetHeapTupleHeader(event);
	d->event_type = MemoryContextStrdup(round_cxt,
										TextDatumGetCString(GetAttributeByName(th, "event_type", &isnull)));

	st->stage = 1;
	if (device_event_type == NULL)	/* a device message's envelope is the bridge's own */
	{
		const char *subject = natsMsg_GetSubject(d->msg);
		char	   *source = TextDatumGetCString(GetAttributeByName(th, "source", &isnull));
		size_t		n = strlen(source);

		if (strncmp(subject, source, n) != 0 || subject[n] != '.' ||
			strcmp(subject + n + 1, d->event_type) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("event %s.%s arrived on subject %s: an event is applied only on its own subject",
							source, d->event_type, subject)));
	}

	st->stage = 2;
	version = TextDatumGetCString(GetAttributeByName(th, "version", &isnull));
	if (d->sub->versions)
	{
		bool		ok = false;

		for (int i = 0; i < d->sub->nversions; i++)
			ok |= d->sub->versions[i] == major_of(version);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("event version %s is not accepted by subscription %s", version,
							d->sub->durable)));
	}

	st->stage = 3;
	if (d->sub->batch)
	{
		/* applied with the rest of its subscription's batch (apply_batches) */
		MemoryContext old = MemoryContextSwitchTo(round_cxt);

		d->event = st->kept ? event : datumCopy(event, false, -1);
		d->event_json = st->kept ? st->event_json : datumCopy(st->event_json, false, -1);
		MemoryContextSwitchTo(old);
		st->result = APPLY_PENDING;
		return;
	}
	if (!isa_handler_apply(d->sub->service, d->sub->durable, d->sub->handler, d->sub->owner_role,
						   event, handler_finfo(d->sub)))
		st->result = APPLY_DUPLICATE;
}

/* One message in its own subtransaction; f says why when it failed. */
static ApplyResult
apply_message(Delivery *d, ApplyFailure *f)
{
	ApplyState	st = {d, 0, (Datum) 0, false, APPLY_OK};
	ErrorData  *edata;

	memset(f, 0, sizeof(*f));
	edata = isa_in_subtransaction(apply_message_body, &st);
	if (edata == NULL)
		return st.result;

	f->message = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
	strlcpy(f->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(f->sqlstate));
	f->event_json = st.event_json;
	FreeErrorData(edata);
	if (st.stage == 0)
	{
		f->reason = "invalid_envelope";
		return APPLY_DEAD;
	}
	if (st.stage == 1)
	{
		f->reason = "subject_mismatch";
		return APPLY_DEAD;
	}
	if (st.stage == 2)
	{
		f->reason = "unsupported_version";
		return APPLY_DEAD;
	}
	f->reason = "handler_error";
	return (int64) d->delivered >= isa_subscription_max_deliver(d->sub) ? APPLY_DEAD : APPLY_RETRY;
}

/*
 * A handler failed on d: retried later, or dead-lettered after max_deliver
 * attempts (or when f says so); logged either way.
 */
static void
settle_failure(Delivery *d, ApplyFailure *f)
{
	if (d->result == APPLY_DEAD && !isa_dead_letter_write(d->sub, d->msg, d->delivered, f))
		d->result = APPLY_RETRY;
	if (d->result == APPLY_RETRY && f->message)
		ereport(LOG,
				(errmsg("isa bridge: handler of %s failed on delivery " UINT64_FORMAT ": %s",
						d->sub->durable, d->delivered, f->message)));
	else if (d->result == APPLY_DEAD)
		ereport(WARNING,
				(errmsg("isa bridge: %s dead-lettered a message on %s (%s): %s",
						d->sub->durable, natsMsg_GetSubject(d->msg), f->reason, f->message)));
}

typedef struct BatchCall
{
	BridgeSub  *sub;
	Delivery  **ds;
	int			n;
} BatchCall;

static void
apply_batch_body(void *arg)
{
	BatchCall  *b = arg;
	Datum	   *events = palloc(sizeof(Datum) * b->n);
	bool	   *applied = palloc(sizeof(bool) * b->n);

	for (int i = 0; i < b->n; i++)
		events[i] = b->ds[i]->event;
	(void) isa_handler_apply_batch(b->sub->service, b->sub->durable, b->sub->handler, b->sub->owner_role,
								   events, b->n, applied, handler_finfo(b->sub));
	for (int i = 0; i < b->n; i++)
		b->ds[i]->result = applied[i] ? APPLY_OK : APPLY_DUPLICATE;
}

/*
 * The batch handlers' turn (docs/bridge.md, "Batch handlers"): per batch
 * subscription, its checked messages of this round in one call, in one
 * subtransaction.  If that fails, one call per message, each in its own
 * subtransaction, so that a poison message is retried and dead-lettered
 * alone and the others apply.
 */
static void
apply_batches(Delivery *ds, int nd, MemoryContext msg_cxt)
{
	Delivery  **group = palloc(sizeof(Delivery *) * nd);

	for (int first = 0; first < nd; first++)
	{
		BridgeSub  *sub = ds[first].sub;
		BatchCall	b = {sub, group, 0};
		struct timespec t0;
		ErrorData  *edata;
		MemoryContext spi_cxt;

		/* each subscription once, at its first pending message */
		if (ds[first].result != APPLY_PENDING)
			continue;
		for (int i = first; i < nd; i++)
			if (ds[i].result == APPLY_PENDING && ds[i].sub == sub)
				group[b.n++] = &ds[i];

		MemoryContextReset(msg_cxt);
		spi_cxt = MemoryContextSwitchTo(msg_cxt);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		edata = isa_in_subtransaction(apply_batch_body, &b);
		if (edata != NULL)
		{
			if (b.n > 1)
			{
				ereport(LOG,
						(errmsg("isa bridge: batch handler of %s failed on %d messages, applying them one by one: %s",
								sub->durable, b.n, edata->message)));
				FreeErrorData(edata);
				edata = NULL;
			}
			for (int i = 0; i < b.n; i++)
			{
				BatchCall	one = {sub, &group[i], 1};
				Delivery   *d = group[i];

				/* a batch of one already failed: its error is the one to settle */
				if (edata == NULL)
					edata = isa_in_subtransaction(apply_batch_body, &one);
				if (edata == NULL)
					continue;
				{
					ApplyFailure f;

					memset(&f, 0, sizeof(f));
					f.reason = "handler_error";
					f.message = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
					strlcpy(f.sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(f.sqlstate));
					f.event_json = d->event_json;
					FreeErrorData(edata);
					edata = NULL;
					d->result = (int64) d->delivered >= isa_subscription_max_deliver(sub) ? APPLY_DEAD : APPLY_RETRY;
					settle_failure(d, &f);
				}
			}
		}
		for (int i = 0; i < b.n; i++)
		{
			group[i]->seconds = seconds_since(&t0) / b.n;
			if (group[i]->result == APPLY_PENDING)	/* cannot happen: settled above */
				group[i]->result = APPLY_RETRY;
		}
		MemoryContextSwitchTo(spi_cxt);
	}
}

static int64
retry_delay_ms(uint64 delivered)
{
	int64		delay = isa_retry_base;

	for (uint64 i = 1; i < delivered && delay < isa_retry_max; i++)
		delay *= 2;
	return Min(delay, (int64) isa_retry_max);
}

/*
 * Applies what arrived: control messages update the pull state, the rest is
 * applied in one transaction, then acked.  Returns the messages handled.
 */
int
isa_apply_arrived(void)
{
	int			n;
	NlMsg	   *head = nl_take_messages(Max(isa_consume_batch_size * 4, 1000), &n);
	Delivery   *ds;
	int			nd = 0;
	NlMsg	   *m;

	if (head == NULL)
		return 0;
	round_cxt = CurrentMemoryContext;
	ds = palloc(sizeof(Delivery) * n);
	for (m = head; m; m = m->next)
	{
		char		consumer[256];
		uint64		delivered;
		uint64		pending = 0;
		int64		stored_ns = 0;
		BridgeSub  *s = NULL;
		const char *status = nl_status(m->msg);

		if (status != NULL || !nl_delivery(m->msg, consumer, sizeof(consumer), &delivered, &pending, &stored_ns))
		{
			/* end (408 expired, 409 ...) or heartbeat (100) of a pull request */
			isa_subscriptions_pull_ended(natsMsg_GetSubject(m->msg), status);
			natsMsg_Destroy(m->msg);
			continue;
		}
		s = isa_subscription_by_durable(consumer);
		if (s == NULL)
		{
			/*
			 * Answering a pull made before its subscription was removed or
			 * its service excluded (isa.services): hand it back now, not
			 * after ack_wait, for whoever runs that consumer.
			 */
			nl_nak(m->msg, 0);
			natsMsg_Destroy(m->msg);
			continue;
		}
		isa_subscription_received(s);
		s->gauge_due = true;
		s->gauge_pending = pending;
		s->gauge_stored_ns = stored_ns;
		ds[nd].msg = m->msg;
		ds[nd].sub = s;
		ds[nd].delivered = delivered;
		ds[nd].event_type = NULL;
		ds[nd].seconds = 0;
		ds[nd].result = APPLY_RETRY;
		ds[nd].event = ds[nd].event_json = (Datum) 0;
		nd++;
	}
	while (head)
	{
		NlMsg	   *next = head->next;

		free(head);
		head = next;
	}
	/* each consumer's gauges once per arrival, as of its last message (one lock each, not one per message) */
	for (int i = 0; i < nd; i++)
		if (ds[i].sub->gauge_due)
		{
			ds[i].sub->gauge_due = false;
			isa_metric_consumer(ds[i].sub->service, ds[i].sub->durable, ds[i].sub->gauge_pending,
								stored_age(ds[i].sub->gauge_stored_ns));
		}
	/*
	 * A subscription whose batch has all arrived asks for the next one now,
	 * so that JetStream delivers it while this one is applied (at most two
	 * batches in flight, within MaxAckPending).
	 */
	{
		long		ignored = LONG_MAX;

		isa_subscriptions_pull(GetCurrentTimestamp(), &ignored);
	}
	if (nd == 0)
		return n;

	/* only a round with messages of two subscriptions or more can share */
	for (int i = 1; i < nd; i++)
		if (ds[i].sub != ds[0].sub)
		{
			parsed_start(nd);
			break;
		}
	isa_bridge_start_transaction();
	PG_TRY();
	{
		MemoryContext msg_cxt;

		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "isa bridge: applying events");
		prepare_plans();
		msg_cxt = AllocSetContextCreate(round_cxt, "isa bridge message", ALLOCSET_DEFAULT_SIZES);
		for (int i = 0; i < nd; i++)
		{
			ApplyFailure f;
			struct timespec t0;
			MemoryContext spi_cxt;

			/* what one message allocates goes when the next one starts */
			MemoryContextReset(msg_cxt);
			spi_cxt = MemoryContextSwitchTo(msg_cxt);
			clock_gettime(CLOCK_MONOTONIC, &t0);
			ds[i].result = apply_message(&ds[i], &f);
			if (ds[i].result == APPLY_DEAD || ds[i].result == APPLY_RETRY)
				settle_failure(&ds[i], &f);
			ds[i].seconds = seconds_since(&t0);
			MemoryContextSwitchTo(spi_cxt);
		}
		apply_batches(ds, nd, msg_cxt);
		SPI_finish();
		PopActiveSnapshot();
		isa_bridge_commit_transaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* Nothing of the batch committed: every message comes back later. */
		MemoryContextSwitchTo(round_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		isa_bridge_record_error("applying a batch failed: %s", edata->message);
		FreeErrorData(edata);
		for (int i = 0; i < nd; i++)
			ds[i].result = APPLY_RETRY;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(round_cxt);
	parsed = NULL;				/* its bytes go with the messages below */
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);

	/* Committed: now tell the server. */
	for (int i = 0; i < nd; i++)
	{
		Delivery   *d = &ds[i];

		switch (d->result)
		{
			case APPLY_OK:
			case APPLY_DUPLICATE:
				nl_ack(d->msg);
				break;
			case APPLY_RETRY:
			case APPLY_PENDING:	/* not reached: apply_batches settles every one */
				nl_nak(d->msg, retry_delay_ms(d->delivered));
				break;
			case APPLY_DEAD:
				nl_term(d->msg);
				break;
		}
		isa_metric_count(ISA_METRIC_PROCESSED, d->sub->service,
						 d->event_type ? d->event_type : "(invalid)",
						 status_names[d->result], d->seconds);
		natsMsg_Destroy(d->msg);
	}
	return n;
}

/* SIGTERM: what is queued goes back to the server now, not after ack_wait. */
void
isa_apply_hand_back(void)
{
	int			n;
	NlMsg	   *m = nl_take_messages(INT_MAX, &n);

	while (m)
	{
		NlMsg	   *next = m->next;

		if (nl_status(m->msg) == NULL && natsMsg_GetReply(m->msg))
			nl_nak(m->msg, 0);
		natsMsg_Destroy(m->msg);
		free(m);
		m = next;
	}
}
