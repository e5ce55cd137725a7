/*
 * consumer.c — subscribed events into SQL handlers (DESIGN.md §5).
 *
 * One durable pull consumer per row of isa.subscriptions whose service this
 * database runs (isa.services).  Messages that arrived since the last round
 * are applied in one transaction, each in its own subtransaction:
 *
 *   parse the envelope -> check its major version -> insert into the inbox
 *   (a conflict means "already applied": skip) -> call the handler as the
 *   subscription's owner
 *
 * Commit, then ack.  A handler error rolls back its subtransaction only; the
 * message is nak'ed with an exponential delay, or after max_deliver attempts
 * written to isa.dead_letters (committed before the +TERM) with a
 * <source>.event.dead_lettered event.  A message that is not a valid envelope
 * or has an unsupported version is dead-lettered at once: bad data is not a
 * transient error.
 *
 * isa.replay_dead_letter(id) applies a dead letter the same way, in the
 * caller's transaction.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include <time.h>

#include "isa.h"
#include "bridge.h"

typedef struct BridgeSub
{
	int64		id;
	char	   *service;
	char	   *source;			/* the service's event source */
	char	   *durable;
	char	   *filter;
	Oid			handler;
	char	   *owner_role;
	int			max_deliver;	/* 0: isa.max_deliver */
	int			batch_size;		/* 0: isa.consume_batch_size */
	int		   *versions;		/* accepted major versions; NULL: any */
	int			nversions;
	bool		deliver_new;
	char	   *reply;			/* <inbox prefix>.<id>: where pulls are answered */
	bool		ready;			/* consumer exists on the server */
	int			outstanding;	/* messages asked for, not yet received */
	TimestampTz pull_deadline;
	bool		seen;			/* still a row of isa.subscriptions */
	bool		disabled;		/* its service is not in isa.services */
	FmgrInfo	finfo;			/* the handler's, kept so plpgsql keeps its plans */
	Oid			finfo_oid;		/* handler finfo was made for; InvalidOid: none */
} BridgeSub;

typedef enum ApplyResult
{
	APPLY_OK,
	APPLY_DUPLICATE,
	APPLY_RETRY,
	APPLY_DEAD
} ApplyResult;

static const char *const status_names[] = {"ok", "duplicate", "retry", "dead_letter"};

static List *subs = NIL;		/* of BridgeSub, in TopMemoryContext */
static MemoryContext round_cxt = NULL;	/* outlives the round's SPI and transaction */
static Oid	event_from_json_oid = InvalidOid;
static FmgrInfo event_from_json_finfo;
static SPIPlanPtr inbox_plan = NULL;
static SPIPlanPtr dead_letter_plan = NULL;

#define PULL_EXPIRES_MS 5000

static int
effective_max_deliver(BridgeSub *s)
{
	return s->max_deliver > 0 ? s->max_deliver : isa_max_deliver;
}

static int
effective_batch(BridgeSub *s)
{
	return s->batch_size > 0 ? s->batch_size : isa_consume_batch_size;
}

/* Whether isa.services lets this database run the service's subscriptions. */
static bool
service_enabled(const char *service)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	/* the bridge runs the services of no group, apply worker k those of group k */
	if (isa_bridge_apply_group(service) != isa_bridge_worker)
		return false;
	if (isa_services == NULL || strcmp(isa_services, "*") == 0 || strcmp(isa_services, "all") == 0)
		return true;
	copy = pstrdup(isa_services);
	if (!SplitIdentifierString(copy, ',', &names))
		return false;			/* check hook rejects this; be safe */
	foreach(lc, names)
		found |= strcmp((char *) lfirst(lc), service) == 0;
	return found;
}

static BridgeSub *
find_sub_by_id(int64 id)
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

static BridgeSub *
find_sub_by_durable(const char *durable)
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
	if (s->reply)
		pfree(s->reply);
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
	if (isa_shared)
	{
		SpinLockAcquire(&isa_shared->mutex);
		isa_shared->subscriptions[isa_bridge_worker] = n;
		SpinLockRelease(&isa_shared->mutex);
	}
}

/*
 * Re-reads isa.subscriptions: new rows get a consumer at the next setup,
 * removed ones lose theirs now (if connected), changed options apply.
 */
void
isa_consumers_load(void)
{
	List	   *kept = NIL;
	ListCell   *lc;
	int			ret;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "isa bridge: loading subscriptions");

	ret = SPI_execute("SELECT s.id, s.service, v.source, s.durable_name, s.subject_filter, "
					  "       s.handler::oid, s.owner_role, "
					  "       coalesce((s.options->>'max_deliver')::int, 0), "
					  "       coalesce((s.options->>'batch_size')::int, 0), "
					  "       (SELECT string_agg(x, ',') FROM jsonb_array_elements_text(s.options->'versions') x), "
					  "       coalesce(s.options->>'deliver_policy', 'all') = 'new' "
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

		if (!service_enabled(service))
		{
			/* another database's bridge may run it: keep its consumer */
			s = find_sub_by_id(id);
			if (s)
				s->seen = s->disabled = true;
			continue;
		}
		s = find_sub_by_id(id);
		if (s == NULL)
		{
			s = MemoryContextAllocZero(TopMemoryContext, sizeof(BridgeSub));
			s->id = id;
			s->service = spi_text(tup, desc, 2);
			s->source = spi_text(tup, desc, 3);
			s->durable = spi_text(tup, desc, 4);
			s->filter = spi_text(tup, desc, 5);
			s->reply = MemoryContextStrdup(TopMemoryContext,
										   psprintf("%s." INT64_FORMAT, nl_inbox_prefix(), id));
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
	CommitTransactionCommand();
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
isa_consumers_forget_server_state(void)
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
isa_consumers_unready(void)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, subs)
		n += ((BridgeSub *) lfirst(lc))->ready ? 0 : 1;
	return n;
}

/* Creates the consumers that are not ready yet. */
void
isa_consumers_setup(void)
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
isa_consumers_pull(TimestampTz now, long *next_wake_ms)
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
		if (nl_pull(s->durable, s->reply, effective_batch(s), PULL_EXPIRES_MS))
		{
			s->outstanding = effective_batch(s);
			/* no answer by then (lost across a reconnect): ask again */
			s->pull_deadline = now + (PULL_EXPIRES_MS + 2000) * 1000L;
		}
	}
}

/* ---------------------------------------------------------------- applying */

typedef struct Delivery
{
	natsMsg    *msg;
	BridgeSub  *sub;
	uint64		delivered;
	ApplyResult result;
	char	   *event_type;
	double		seconds;
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
	if (inbox_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID};

		inbox_plan = SPI_prepare("INSERT INTO isa.inbox (service, consumer, event_id, event_type) "
								 "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", 4, types);
		if (inbox_plan == NULL)
			elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(inbox_plan);
	}
	if (dead_letter_plan == NULL)
	{
		Oid			types[12] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, JSONBOID, BYTEAOID,
		TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};

		dead_letter_plan = SPI_prepare(
									   "WITH d AS ("
									   "  INSERT INTO isa.dead_letters (subscription_id, service, consumer, subject, event_id,"
									   "         event, payload, reason, error_message, error_sqlstate, attempts)"
									   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id)"
									   " SELECT d.id, isa.publish_event('event.dead_lettered', $12,"
									   "   jsonb_build_object('dead_letter_id', d.id, 'service', $2, 'consumer', $3,"
									   "     'subject', $4, 'event_id', $5, 'reason', $8, 'error', $9, 'sqlstate', $10,"
									   "     'attempts', $11),"
									   "   jsonb_strip_nulls(jsonb_build_object("
									   "     'correlation_id', coalesce($6->'metadata'->>'correlation_id', $5::text),"
									   "     'causation_id', $5::text)))"
									   "  FROM d", 12, types);
		if (dead_letter_plan == NULL)
			elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(dead_letter_plan);
	}
}

static int
major_of(const char *version)
{
	return atoi(version);
}

/*
 * Inbox insert and handler call for one parsed event; false if the inbox
 * already had it.  Errors propagate (the caller decides: subtransaction in
 * the bridge, the caller's transaction in replay).
 */
static bool
apply_event(const char *service, const char *consumer, Oid handler, const char *owner_role,
			Datum event, SPIPlanPtr plan, FmgrInfo *cached)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(event);
	bool		isnull;
	Datum		id = GetAttributeByName(th, "id", &isnull);
	Datum		event_type = GetAttributeByName(th, "event_type", &isnull);
	Datum		metadata = GetAttributeByName(th, "metadata", &isnull);
	Datum		args[4];
	int			ret;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	char	   *correlation = NULL;
	FmgrInfo	local;
	FmgrInfo   *flinfo = cached;
	LOCAL_FCINFO(fcinfo, 1);

	args[0] = CStringGetTextDatum(service);
	args[1] = CStringGetTextDatum(consumer);
	args[2] = id;
	args[3] = event_type;
	if (plan)
		ret = SPI_execute_plan(plan, args, NULL, false, 0);
	else
	{
		Oid			types[4] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID};

		ret = SPI_execute_with_args("INSERT INTO isa.inbox (service, consumer, event_id, event_type) "
									"VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
									4, types, args, NULL, false, 0);
	}
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "isa bridge: inbox insert failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

	owner = get_role_oid(owner_role, false);
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s", owner_role,
						format_procedure(handler))));

	if (!isnull)
	{
		JsonbValue	k,
				   *v;

		k.type = jbvString;
		k.val.string.val = "correlation_id";
		k.val.string.len = strlen("correlation_id");
		v = findJsonbValueFromContainer(&DatumGetJsonbP(metadata)->root, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
			correlation = pnstrdup(v->val.string.val, v->val.string.len);
	}

	if (flinfo == NULL)
	{
		fmgr_info(handler, &local);
		flinfo = &local;
	}
	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = event;
	fcinfo->args[0].isnull = false;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	isa_set_current_event(event, DatumGetUUIDP(id), correlation);
	PG_TRY();
	{
		(void) FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		isa_clear_current_event();
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
	return true;
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

/* Why a message was dead-lettered at once, or NULL. */
typedef struct Failure
{
	const char *reason;			/* invalid_envelope, unsupported_version, handler_error */
	char	   *message;
	char		sqlstate[6];
	Datum		event_json;		/* the envelope when it parsed, else 0 */
} Failure;

static double
seconds_since(struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * Runs fn(arg) in a subtransaction: NULL if it committed, else its error (in
 * the caller's memory context) after rolling it back.
 */
static ErrorData *
in_subtransaction(void (*fn) (void *), void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return edata;
}

typedef struct ApplyState
{
	Delivery   *d;
	int			stage;			/* 0 parse, 1 version, 2 handler */
	Datum		event_json;		/* once the bytes parsed as JSON */
	ApplyResult result;
} ApplyState;

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
	st->event_json = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf));
	event = FunctionCall1(&event_from_json_finfo, st->event_json);
	th = DatumGetHeapTupleHeader(event);
	d->event_type = MemoryContextStrdup(round_cxt,
										TextDatumGetCString(GetAttributeByName(th, "event_type", &isnull)));

	st->stage = 1;
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

	st->stage = 2;
	if (!apply_event(d->sub->service, d->sub->durable, d->sub->handler, d->sub->owner_role,
					 event, inbox_plan, handler_finfo(d->sub)))
		st->result = APPLY_DUPLICATE;
}

/* One message in its own subtransaction; f says why when it failed. */
static ApplyResult
apply_message(Delivery *d, Failure *f)
{
	ApplyState	st = {d, 0, (Datum) 0, APPLY_OK};
	ErrorData  *edata;

	memset(f, 0, sizeof(*f));
	edata = in_subtransaction(apply_message_body, &st);
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
		f->reason = "unsupported_version";
		return APPLY_DEAD;
	}
	f->reason = "handler_error";
	return (int64) d->delivered >= effective_max_deliver(d->sub) ? APPLY_DEAD : APPLY_RETRY;
}

typedef struct DeadLetter
{
	Delivery   *d;
	Failure    *f;
} DeadLetter;

static void
write_dead_letter_body(void *arg)
{
	Delivery   *d = ((DeadLetter *) arg)->d;
	Failure    *f = ((DeadLetter *) arg)->f;
	Datum		args[12];
	char		nulls[12];
	Datum		event_id = (Datum) 0;
	int			ret;

	memset(nulls, ' ', sizeof(nulls));
	if (f->event_json)
	{
		JsonbValue	k,
				   *v;

		k.type = jbvString;
		k.val.string.val = "id";
		k.val.string.len = 2;
		v = findJsonbValueFromContainer(&DatumGetJsonbP(f->event_json)->root, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
		{
			/* only a well-formed id: the message may be garbage */
			pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

			if (isa_parse_uuid(v->val.string.val, v->val.string.len, id))
				event_id = UUIDPGetDatum(id);
		}
	}
	args[0] = Int64GetDatum(d->sub->id);
	args[1] = CStringGetTextDatum(d->sub->service);
	args[2] = CStringGetTextDatum(d->sub->durable);
	args[3] = CStringGetTextDatum(natsMsg_GetSubject(d->msg));
	args[4] = event_id;
	nulls[4] = event_id ? ' ' : 'n';
	args[5] = f->event_json;
	nulls[5] = f->event_json ? ' ' : 'n';
	/* the raw bytes of whatever was not a valid envelope */
	if (!f->event_json || strcmp(f->reason, "invalid_envelope") == 0)
	{
		int			len = natsMsg_GetDataLength(d->msg);
		bytea	   *b = palloc(VARHDRSZ + len);

		SET_VARSIZE(b, VARHDRSZ + len);
		memcpy(VARDATA(b), natsMsg_GetData(d->msg), len);
		args[6] = PointerGetDatum(b);
	}
	else
		nulls[6] = 'n';
	args[7] = CStringGetTextDatum(f->reason);
	args[8] = CStringGetTextDatum(f->message);
	args[9] = CStringGetTextDatum(f->sqlstate);
	args[10] = Int32GetDatum((int32) Min(d->delivered, (uint64) PG_INT32_MAX));
	args[11] = CStringGetTextDatum(d->sub->source);
	ret = SPI_execute_plan(dead_letter_plan, args, nulls, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "isa bridge: writing the dead letter failed: %s", SPI_result_code_string(ret));
}

/* The dead letter and its event, in a subtransaction; false if that failed. */
static bool
write_dead_letter(Delivery *d, Failure *f)
{
	DeadLetter	dl = {d, f};
	ErrorData  *edata = in_subtransaction(write_dead_letter_body, &dl);

	if (edata == NULL)
		return true;
	isa_bridge_record_error("cannot dead-letter a message of %s: %s", d->sub->durable, edata->message);
	FreeErrorData(edata);
	return false;
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
isa_consumers_apply(void)
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
		const char *reply = natsMsg_GetReply(m->msg);
		char		consumer[256];
		uint64		delivered;
		BridgeSub  *s = NULL;
		const char *status = nl_status(m->msg);

		if (status != NULL || reply == NULL || !nl_parse_ack_subject(reply, consumer, sizeof(consumer), &delivered))
		{
			/* end (408 expired, 409 ...) or heartbeat (100) of a pull request */
			const char *subj = natsMsg_GetSubject(m->msg);
			const char *dot = strrchr(subj, '.');

			if (dot && (status == NULL || strcmp(status, "100") != 0))
				s = find_sub_by_id(strtoll(dot + 1, NULL, 10));
			if (s)
			{
				s->outstanding = 0;
				if (status && strcmp(status, "408") != 0 && strcmp(status, "404") != 0)
					s->pull_deadline = GetCurrentTimestamp() + 1000 * 1000L;	/* 409: back off */
				else
					s->pull_deadline = 0;
			}
			natsMsg_Destroy(m->msg);
			continue;
		}
		s = find_sub_by_durable(consumer);
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
		if (s->outstanding > 0 && --s->outstanding == 0)
			s->pull_deadline = 0;	/* batch complete: ask again */
		ds[nd].msg = m->msg;
		ds[nd].sub = s;
		ds[nd].delivered = delivered;
		ds[nd].event_type = NULL;
		ds[nd].seconds = 0;
		ds[nd].result = APPLY_RETRY;
		nd++;
	}
	while (head)
	{
		NlMsg	   *next = head->next;

		free(head);
		head = next;
	}
	/*
	 * A subscription whose batch has all arrived asks for the next one now,
	 * so that JetStream delivers it while this one is applied (at most two
	 * batches in flight, within MaxAckPending).
	 */
	{
		long		ignored = LONG_MAX;

		isa_consumers_pull(GetCurrentTimestamp(), &ignored);
	}
	if (nd == 0)
		return n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
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
			Failure		f;
			struct timespec t0;
			MemoryContext spi_cxt;

			/* what one message allocates goes when the next one starts */
			MemoryContextReset(msg_cxt);
			spi_cxt = MemoryContextSwitchTo(msg_cxt);
			clock_gettime(CLOCK_MONOTONIC, &t0);
			ds[i].result = apply_message(&ds[i], &f);
			if (ds[i].result == APPLY_DEAD && !write_dead_letter(&ds[i], &f))
				ds[i].result = APPLY_RETRY;
			if (ds[i].result == APPLY_RETRY && f.message)
				ereport(LOG,
						(errmsg("isa bridge: handler of %s failed on delivery " UINT64_FORMAT ": %s",
								ds[i].sub->durable, ds[i].delivered, f.message)));
			else if (ds[i].result == APPLY_DEAD)
				ereport(WARNING,
						(errmsg("isa bridge: %s dead-lettered a message on %s (%s): %s",
								ds[i].sub->durable, natsMsg_GetSubject(ds[i].msg), f.reason, f.message)));
			ds[i].seconds = seconds_since(&t0);
			MemoryContextSwitchTo(spi_cxt);
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
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
isa_consumers_shutdown(void)
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

/* ---------------------------------------------------------------- replay */

PG_FUNCTION_INFO_V1(isa_replay_dead_letter);

/*
 * isa.replay_dead_letter(id bigint) RETURNS boolean: applies a dead letter to
 * its subscription's handler in the caller's transaction (inbox first: true
 * if applied, false if the inbox shows it was applied meanwhile).  The
 * handler's error, if it fails again, is the caller's error.
 */
Datum
isa_replay_dead_letter(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	int			ret;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		event_json;
	Datum		event;
	char	   *service;
	char	   *consumer;
	Oid			handler;
	char	   *owner;
	bool		applied;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("dead letter id must not be null")));
	args[0] = Int64GetDatum(id);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT d.event, d.reason, s.service, s.durable_name, s.handler::oid, "
								"       s.owner_role, d.subscription_id "
								"  FROM isa.dead_letters d LEFT JOIN isa.subscriptions s ON s.id = d.subscription_id "
								" WHERE d.id = $1 FOR UPDATE OF d",
								1, types, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the dead letter failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("dead letter " INT64_FORMAT " does not exist", id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	event_json = SPI_getbinval(tup, desc, 1, &isnull);
	if (isnull || strcmp(SPI_getvalue(tup, desc, 2), "invalid_envelope") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("dead letter " INT64_FORMAT " cannot be replayed: it is not a valid event (%s)",
						id, SPI_getvalue(tup, desc, 2)),
				 errhint("Its raw payload is in isa.dead_letters.payload.")));
	(void) SPI_getbinval(tup, desc, 3, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("dead letter " INT64_FORMAT " cannot be replayed: its subscription was removed", id)));
	service = SPI_getvalue(tup, desc, 3);
	consumer = SPI_getvalue(tup, desc, 4);
	handler = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	owner = SPI_getvalue(tup, desc, 6);

	event = OidFunctionCall1(DatumGetObjectId(DirectFunctionCall1(regprocedurein,
																  CStringGetDatum("isa.event_from_json(jsonb)"))),
							 event_json);
	applied = apply_event(service, consumer, handler, owner, event, NULL, NULL);

	ret = SPI_execute_with_args("UPDATE isa.dead_letters SET replayed_at = now(), replay_count = replay_count + 1 "
								" WHERE id = $1", 1, types, args, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "marking the dead letter replayed failed: %s", SPI_result_code_string(ret));
	SPI_finish();
	PG_RETURN_BOOL(applied);
}
