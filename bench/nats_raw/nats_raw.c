/*
 * bench/nats_raw/nats_raw.c — the raw ceiling of nats.c asynchronous JetStream
 * publishing, with no database: the most the bridge's publisher could reach.
 *
 *   nats_raw URL STREAM SUBJECT N [REPLICAS [MAX_PENDING]]
 *
 * Connects (URL may be a comma-separated list), makes sure stream STREAM
 * exists (created with subjects [SUBJECT], file storage, REPLICAS replicas,
 * default 1), then publishes N messages of the size of an isa envelope (~400
 * bytes of JSON, each with its own Nats-Msg-Id) with js_PublishMsgAsync
 * (MAX_PENDING in flight, default 4000) and waits with js_PublishAsyncComplete.
 * Prints one line:  nats_raw_publish msgs=N seconds=S rate=R/s
 * (time from the first publish to the last ack).  Exits 1 if any publish was
 * not acknowledged or was reported as a duplicate.  $ISA_NATS_CREDS, when set,
 * is the creds file it connects with (the stacks' NATS requires one).
 */
#include <nats/nats.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t acked, dups, failed;

/* Runs on a nats.c thread: counts only. */
static void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void) js;
	(void) closure;
	if (pa != NULL && pa->Duplicate)
		__atomic_add_fetch(&dups, 1, __ATOMIC_RELAXED);
	else if (pa != NULL)
		__atomic_add_fetch(&acked, 1, __ATOMIC_RELAXED);
	else
	{
		if (__atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED) == 1 && pae != NULL)
			fprintf(stderr, "nats_raw: publish failed: %s (%s)\n",
					natsStatus_GetText(pae->Err), pae->ErrText ? pae->ErrText : "");
	}
	natsMsg_Destroy(msg);
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *what, natsStatus s, jsErrCode jerr)
{
	fprintf(stderr, "nats_raw: %s: %s", what, natsStatus_GetText(s));
	if (jerr != 0)
		fprintf(stderr, " (JetStream error %d)", (int) jerr);
	fprintf(stderr, "\n");
	nats_PrintLastErrorStack(stderr);
	exit(1);
}

/* A UUIDv7-shaped id: 48 bits of milliseconds, the process id, the message number. */
static void
make_id(char *buf, size_t len, uint64_t ms, uint64_t i)
{
	snprintf(buf, len, "%08" PRIx64 "-%04" PRIx64 "-7%03" PRIx64 "-8%03x-%012" PRIx64,
			 (ms >> 16) & UINT64_C(0xffffffff), ms & 0xffff, (i >> 48) & 0xfff,
			 (unsigned) getpid() & 0xfff, i & UINT64_C(0xffffffffffff));
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsOptions	jo;
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsPubOptions po;
	jsErrCode	jerr = 0;
	natsStatus	s;
	const char *subject;
	long long	n;
	int			replicas = 1;
	long long	max_pending = 4000;
	char		id[48];
	char		body[512];
	uint64_t	ms;
	struct timespec wall;
	double		t0, secs;

	if (argc < 5 || argc > 7 || (n = atoll(argv[4])) <= 0 ||
		(argc > 5 && (replicas = atoi(argv[5])) <= 0) ||
		(argc > 6 && (max_pending = atoll(argv[6])) <= 0))
	{
		fprintf(stderr, "usage: nats_raw URL STREAM SUBJECT N [REPLICAS [MAX_PENDING]]\n");
		return 2;
	}
	subject = argv[3];

	{
		natsOptions *opts = NULL;
		const char *creds = getenv("ISA_NATS_CREDS");

		s = natsOptions_Create(&opts);
		if (s == NATS_OK)
			s = natsOptions_SetURL(opts, argv[1]);
		if (s == NATS_OK && creds && *creds)
			s = natsOptions_SetUserCredentialsFromFiles(opts, creds, NULL);
		if (s == NATS_OK)
			s = natsConnection_Connect(&nc, opts);
		natsOptions_Destroy(opts);
		if (s != NATS_OK)
			die("connect", s, 0);
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = max_pending;
	jo.PublishAsync.AckHandler = on_ack;
	if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK)
		die("JetStream context", s, 0);

	s = js_GetStreamInfo(&si, js, argv[2], NULL, &jerr);
	if (s == NATS_NOT_FOUND)
	{
		jsStreamConfig_Init(&cfg);
		cfg.Name = argv[2];
		cfg.Subjects = &subject;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Replicas = replicas;
		jerr = 0;
		s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	}
	if (s != NATS_OK)
		die("stream", s, jerr);
	jsStreamInfo_Destroy(si);

	clock_gettime(CLOCK_REALTIME, &wall);
	ms = (uint64_t) wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
	t0 = now_seconds();
	for (long long i = 0; i < n; i++)
	{
		natsMsg    *msg = NULL;
		int			len;

		make_id(id, sizeof(id), ms, (uint64_t) i);
		len = snprintf(body, sizeof(body),
					   "{\"id\": \"%s\", \"event_type\": \"usage.recorded.model\", "
					   "\"source\": \"external\", \"version\": \"1.0.0\", "
					   "\"timestamp\": \"2026-11-27T08:39:20.586600Z\", "
					   "\"data\": {\"model\": \"gpt-large\", \"user_id\": \"2b7e1516-28ae-4d2a-a6d2-abf7158809cf\", "
					   "\"input_tokens\": %lld, \"output_tokens\": 512, \"cost_micros\": 1234}, "
					   "\"metadata\": {\"correlation_id\": \"%s\"}}",
					   id, i, id);
		if ((s = natsMsg_Create(&msg, subject, NULL, body, len)) != NATS_OK ||
			(s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id)) != NATS_OK)
			die("message", s, 0);
		if ((s = js_PublishMsgAsync(js, &msg, NULL)) != NATS_OK)
			die("js_PublishMsgAsync", s, 0);
	}
	jsPubOptions_Init(&po);
	po.MaxWait = 120000;
	if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK)
		die("js_PublishAsyncComplete", s, 0);
	secs = now_seconds() - t0;
	/* the last ack handler may still be returning on the delivery thread */
	for (int i = 0; i < 1000 && __atomic_load_n(&acked, __ATOMIC_RELAXED) +
		 __atomic_load_n(&dups, __ATOMIC_RELAXED) + __atomic_load_n(&failed, __ATOMIC_RELAXED) < n; i++)
		nats_Sleep(1);

	printf("nats_raw_publish msgs=%lld seconds=%.3f rate=%.0f/s\n", n, secs, n / secs);
	if (__atomic_load_n(&acked, __ATOMIC_RELAXED) != n)
		fprintf(stderr, "nats_raw: %" PRId64 " acknowledged, %" PRId64 " duplicates, %" PRId64 " failed of %lld\n",
				acked, dups, failed, n);

	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return __atomic_load_n(&acked, __ATOMIC_RELAXED) == n ? 0 : 1;
}
