/*
 * metrics.c — the bridge's counters in shared memory, and the C function
 * that reads them, isa._bridge_metrics() (the SQL wrapper isa.metrics() adds
 * the outbox and dead-letter gauges).  What isa.bridge_status() shows is
 * status.c's.
 *
 * One hash table keyed by (kind, service, event_type, status) under one
 * LWLock: only the bridge writes, readers take it shared.  A consumer's
 * gauges (kind ISA_METRIC_CONSUMER) keep its durable name in event_type, the
 * messages pending in count and the lag in sum.  A full table
 * drops new label sets rather than fail the bridge (counted in
 * metrics_dropped).  Docs: docs/bridge.md, "isa.metrics()".
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "bridge.h"

#define MAX_METRICS 4096
#define N_BUCKETS 14

static const double bucket_le[N_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5
};

typedef struct MetricKey
{
	int32		kind;
	char		service[32];
	char		event_type[96];
	char		status[16];
} MetricKey;

typedef struct MetricEntry
{
	MetricKey	key;
	uint64		count;
	double		sum;
	uint64		buckets[N_BUCKETS];
} MetricEntry;

typedef struct MetricsHeader
{
	LWLock	   *lock;
	uint64		dropped;
} MetricsHeader;

static HTAB *metrics = NULL;
static MetricsHeader *header = NULL;

void
isa_metrics_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(MetricsHeader)) +
						   hash_estimate_size(MAX_METRICS, sizeof(MetricEntry)));
	RequestNamedLWLockTranche("isa_metrics", 1);
}

void
isa_metrics_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	header = ShmemInitStruct("isa metrics header", sizeof(MetricsHeader), &found);
	if (!found)
	{
		header->lock = &(GetNamedLWLockTranche("isa_metrics"))->lock;
		header->dropped = 0;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(MetricKey);
	info.entrysize = sizeof(MetricEntry);
	metrics = ShmemInitHash("isa metrics", MAX_METRICS, MAX_METRICS, &info,
							HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

static MetricEntry *
entry(const MetricKey *key)
{
	bool		found;
	MetricEntry *e = hash_search(metrics, key, HASH_ENTER_NULL, &found);

	if (e == NULL)
		header->dropped++;
	else if (!found)
	{
		e->count = 0;
		e->sum = 0;
		memset(e->buckets, 0, sizeof(e->buckets));
	}
	return e;
}

/*
 * One event published, or one message handled.  A handled message counts
 * under its status, and its time goes to the duration histogram of its
 * (service, event_type), whatever the status (kind ISA_METRIC_DURATION,
 * status empty): the seed's event_processing_duration_seconds has no status
 * label.
 */
void
isa_metric_count(int kind, const char *service, const char *event_type, const char *status,
				 double seconds)
{
	MetricKey	key;
	MetricEntry *e;

	if (metrics == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.kind = kind;
	strlcpy(key.service, service ? service : "", sizeof(key.service));
	strlcpy(key.event_type, event_type ? event_type : "", sizeof(key.event_type));
	strlcpy(key.status, status ? status : "", sizeof(key.status));

	LWLockAcquire(header->lock, LW_EXCLUSIVE);
	if ((e = entry(&key)) != NULL)
		e->count++;
	if (kind == ISA_METRIC_PROCESSED)
	{
		key.kind = ISA_METRIC_DURATION;
		memset(key.status, 0, sizeof(key.status));
		if ((e = entry(&key)) != NULL)
		{
			e->count++;
			e->sum += seconds;
			for (int i = 0; i < N_BUCKETS; i++)
				if (seconds <= bucket_le[i])
					e->buckets[i]++;
		}
	}
	LWLockRelease(header->lock);
}

/*
 * A consumer's gauges, as of the message just received: the messages the
 * server still has for it after that one, and (while some are pending) how
 * long that message waited in the stream; 0 once the consumer caught up.
 */
void
isa_metric_consumer(const char *service, const char *consumer, uint64 pending, double lag_seconds)
{
	MetricKey	key;
	MetricEntry *e;

	if (metrics == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.kind = ISA_METRIC_CONSUMER;
	strlcpy(key.service, service ? service : "", sizeof(key.service));
	strlcpy(key.event_type, consumer ? consumer : "", sizeof(key.event_type));

	LWLockAcquire(header->lock, LW_EXCLUSIVE);
	if ((e = entry(&key)) != NULL)
	{
		e->count = pending;
		e->sum = pending > 0 ? lag_seconds : 0;
	}
	LWLockRelease(header->lock);
}

static Datum
labels(const MetricKey *k, const char *le)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfoString(&s, "{\"service\": ");
	escape_json(&s, k->service);
	appendStringInfoString(&s, k->kind == ISA_METRIC_CONSUMER ? ", \"consumer\": " : ", \"event_type\": ");
	escape_json(&s, k->event_type);
	if (k->kind == ISA_METRIC_PROCESSED)
	{
		appendStringInfoString(&s, ", \"status\": ");
		escape_json(&s, k->status);
	}
	if (le)
	{
		appendStringInfoString(&s, ", \"le\": ");
		escape_json(&s, le);
	}
	appendStringInfoChar(&s, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data));
}

static void
put(Tuplestorestate *ts, TupleDesc desc, const char *name, Datum lab, double value)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = lab;
	values[2] = Float8GetDatum(value);
	tuplestore_putvalues(ts, desc, values, nulls);
}

PG_FUNCTION_INFO_V1(isa_bridge_metrics);

/* isa._bridge_metrics(): (metric, labels, value) rows, Prometheus-shaped. */
Datum
isa_bridge_metrics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	MetricEntry *e;
	Datum		empty = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));

	InitMaterializedSRF(fcinfo, 0);
	if (metrics == NULL)
		return (Datum) 0;

	LWLockAcquire(header->lock, LW_SHARED);
	hash_seq_init(&seq, metrics);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.kind == ISA_METRIC_PUBLISHED)
		{
			put(rsinfo->setResult, rsinfo->setDesc, "event_published_total", labels(&e->key, NULL),
				(double) e->count);
			continue;
		}
		if (e->key.kind == ISA_METRIC_CONSUMER)
		{
			put(rsinfo->setResult, rsinfo->setDesc, "consumer_pending_messages", labels(&e->key, NULL),
				(double) e->count);
			put(rsinfo->setResult, rsinfo->setDesc, "consumer_lag_seconds", labels(&e->key, NULL), e->sum);
			continue;
		}
		if (e->key.kind == ISA_METRIC_PROCESSED)
		{
			put(rsinfo->setResult, rsinfo->setDesc, "event_processed_total", labels(&e->key, NULL),
				(double) e->count);
			continue;
		}
		for (int i = 0; i < N_BUCKETS; i++)
		{
			char		le[32];

			snprintf(le, sizeof(le), "%g", bucket_le[i]);
			put(rsinfo->setResult, rsinfo->setDesc, "event_processing_duration_seconds_bucket",
				labels(&e->key, le), (double) e->buckets[i]);
		}
		put(rsinfo->setResult, rsinfo->setDesc, "event_processing_duration_seconds_bucket",
			labels(&e->key, "+Inf"), (double) e->count);
		put(rsinfo->setResult, rsinfo->setDesc, "event_processing_duration_seconds_sum",
			labels(&e->key, NULL), e->sum);
		put(rsinfo->setResult, rsinfo->setDesc, "event_processing_duration_seconds_count",
			labels(&e->key, NULL), (double) e->count);
	}
	put(rsinfo->setResult, rsinfo->setDesc, "metrics_dropped_total", empty, (double) header->dropped);
	LWLockRelease(header->lock);

	if (isa_shared)
	{
		put(rsinfo->setResult, rsinfo->setDesc, "nats_connected", empty,
			(double) pg_atomic_read_u32(&isa_shared->nats_connected));
		put(rsinfo->setResult, rsinfo->setDesc, "nats_reconnects_total", empty,
			(double) pg_atomic_read_u64(&isa_shared->nats_reconnects));
		put(rsinfo->setResult, rsinfo->setDesc, "bridge_up", empty,
			pg_atomic_read_u32(&isa_shared->bridge_procno) != ISA_INVALID_PROCNO ? 1.0 : 0.0);
	}
	return (Datum) 0;
}
