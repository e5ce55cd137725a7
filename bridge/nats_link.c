/*
 * nats_link.c — the bridge's one NATS connection, and the only file that
 * talks to nats.c.
 *
 * nats.c runs its own threads (read loop, flusher, reconnect, timers,
 * message delivery).  The rules of docs/architecture.md, "The bridge inside PostgreSQL":
 *   - every nats.c call that may start a thread runs with all signals
 *     blocked, so PostgreSQL's signals keep reaching the main thread;
 *   - callbacks (nl_on_*) run on nats.c threads and never call PostgreSQL:
 *     they append to a malloc'd queue under a pthread mutex, set C atomics
 *     and write to an eventfd that the main loop waits on.
 *
 * Consumers are pulled without blocking: a pull request is a plain publish
 * to $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> whose reply subject is
 * <inbox>.<subscription id>; the server answers into the bridge's single
 * inbox subscription, whose callback only queues.  Acks are publishes to the
 * message's reply subject (+ACK, -NAK {"delay": ns}, +TERM).
 */
#include "postgres.h"

#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "isa.h"
#include "bridge.h"

static natsConnection *conn = NULL;
static jsCtx *js = NULL;
static natsSubscription *inbox_sub = NULL;
static int	efd = -1;
static char inbox_prefix[NAMEDATALEN * 4];

/* shared with nats.c threads */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static NlMsg *queue_head = NULL;
static NlMsg *queue_tail = NULL;
static int	setup_needed = 0;
static uint64 reconnect_count = 0;

/* the batch being published: read by the ack callback */
static int	batch_n = 0;
static char **batch_ids = NULL;
static char *batch_results = NULL;

/* ---------------------------------------------------------------- threads */

static void
signal_main(void)
{
	uint64		one = 1;
	ssize_t		rc;

	rc = write(efd, &one, sizeof(one));
	(void) rc;					/* a full counter still wakes the main loop */
}

static void
nl_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	NlMsg	   *node = malloc(sizeof(NlMsg));

	if (node == NULL)
	{
		/* Not acked: the server redelivers it after ack_wait. */
		natsMsg_Destroy(msg);
		return;
	}
	node->msg = msg;
	node->next = NULL;
	pthread_mutex_lock(&queue_lock);
	if (queue_tail)
		queue_tail->next = node;
	else
		queue_head = node;
	queue_tail = node;
	pthread_mutex_unlock(&queue_lock);
	signal_main();
}

static void
nl_on_disconnected(natsConnection *nc, void *closure)
{
	signal_main();				/* the main loop sees the state in nl_connected() */
}

static void
nl_on_reconnected(natsConnection *nc, void *closure)
{
	__atomic_add_fetch(&reconnect_count, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&setup_needed, 1, __ATOMIC_SEQ_CST);
	signal_main();
}

/* First connection made in the background (retry on failed connect). */
static void
nl_on_connected(natsConnection *nc, void *closure)
{
	nl_on_reconnected(nc, closure);
}

static void
nl_on_closed(natsConnection *nc, void *closure)
{
	signal_main();
}

static void
nl_on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	/* Slow consumer and the like: nothing to do here; the state is visible. */
	signal_main();
}

/*
 * The result of one published message: binary search of the batch's ids
 * (sorted: uuid v7 text in id order).  The message is ours to destroy.
 */
static void
nl_on_pub_ack(jsCtx *ctx, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	const char *id = NULL;
	int			lo = 0,
				hi = __atomic_load_n(&batch_n, __ATOMIC_SEQ_CST) - 1;

	if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != NULL)
	{
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;
			int			c = strcmp(id, batch_ids[mid]);

			if (c == 0)
			{
				__atomic_store_n(&batch_results[mid], pae == NULL ? NL_ACKED : NL_FAILED,
								 __ATOMIC_SEQ_CST);
				break;
			}
			if (c < 0)
				hi = mid - 1;
			else
				lo = mid + 1;
		}
	}
	natsMsg_Destroy(msg);
}

/* ---------------------------------------------------------------- main thread */

typedef struct SigBlock
{
	sigset_t	old;
} SigBlock;

static void
block_signals(SigBlock *b)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &b->old);
}

static void
unblock_signals(SigBlock *b)
{
	pthread_sigmask(SIG_SETMASK, &b->old, NULL);
}

static const char *
nats_error_text(natsStatus s)
{
	const char *last = nats_GetLastError(NULL);

	return (last && *last) ? last : natsStatus_GetText(s);
}

int
nl_eventfd(void)
{
	if (efd < 0)
	{
		efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (efd < 0)
			ereport(ERROR, (errmsg("isa bridge: could not create eventfd: %m")));
	}
	return efd;
}

void
nl_drain_eventfd(void)
{
	uint64		v;
	ssize_t		rc;

	rc = read(efd, &v, sizeof(v));
	(void) rc;
}

/*
 * Whether nats.c gave the connection up for good (CLOSED: it no longer
 * reconnects, e.g. after the server refused its credentials).
 */
bool
nl_closed(void)
{
	return conn != NULL && natsConnection_Status(conn) == NATS_CONN_STATUS_CLOSED;
}

bool
nl_connected(void)
{
	/*
	 * Ask nats.c about the current connection: a flag set by callbacks could
	 * be cleared late by the previous connection's closed callback after a
	 * reconnect to a new URL (seen in the cluster test).
	 */
	return conn != NULL && natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED;
}

bool
nl_take_setup_needed(void)
{
	return __atomic_exchange_n(&setup_needed, 0, __ATOMIC_SEQ_CST) != 0;
}

uint64
nl_reconnects(void)
{
	uint64		n = __atomic_load_n(&reconnect_count, __ATOMIC_SEQ_CST);

	/* the first connection is not a reconnection */
	return n > 0 ? n - 1 : 0;
}

/*
 * Why the current connection is not up, as nats.c last saw it (a refused
 * login, a server that does not answer): false if it has nothing to say.
 */
bool
nl_last_error(char *buf, size_t len)
{
	SigBlock	b;
	const char *text = NULL;
	natsStatus	s;

	if (conn == NULL)
		return false;
	block_signals(&b);
	s = natsConnection_GetLastError(conn, &text);
	if (s != NATS_OK)
		strlcpy(buf, text && *text ? text : natsStatus_GetText(s), len);
	unblock_signals(&b);
	return s != NATS_OK;
}

natsConnection *
nl_conn(void)
{
	return conn;
}

/* The URL of the server the connection is up to, or "" (credentials included). */
void
nl_server_url(char *buf, size_t len)
{
	buf[0] = '\0';
	if (nl_connected() && natsConnection_GetConnectedUrl(conn, buf, len) != NATS_OK)
		buf[0] = '\0';
}

/* Split isa.nats_url on commas and blanks into a palloc'd array. */
static int
split_servers(const char *urls, const char ***out)
{
	char	   *copy = pstrdup(urls);
	const char **list = palloc(sizeof(char *) * (strlen(urls) / 2 + 2));
	int			n = 0;
	char	   *save = NULL;

	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
		list[n++] = tok;
	*out = list;
	return n;
}

/*
 * Connects (or starts connecting in the background: retry on failed
 * connect), subscribes the inbox and creates the JetStream context.  False
 * with the error recorded if the options themselves are wrong.
 */
bool
nl_connect(void)
{
	natsOptions *opts = NULL;
	natsStatus	s;
	const char **servers;
	int			nservers;
	jsOptions	jo;
	SigBlock	b;
	char		inbox_filter[sizeof(inbox_prefix) + 4];

	nl_eventfd();
	nservers = split_servers(isa_nats_url ? isa_nats_url : "", &servers);
	if (nservers == 0)
	{
		isa_bridge_record_error("isa.nats_url is empty");
		return false;
	}
	/*
	 * One prefix per process and setting, under isa.nats_inbox_prefix (the
	 * only subjects its credential may subscribe to): pulls are answered on
	 * <setting>.<pid>.<random>.<subscription id>, nats.c's own requests on
	 * <setting>.<nuid>.<n>, whose second token is never a pid.
	 */
	if (strncmp(inbox_prefix, isa_nats_inbox_prefix, strlen(isa_nats_inbox_prefix)) != 0 ||
		inbox_prefix[strlen(isa_nats_inbox_prefix)] != '.')
		snprintf(inbox_prefix, sizeof(inbox_prefix), "%s.%d.%lx", isa_nats_inbox_prefix, MyProcPid,
				 (unsigned long) random());

	block_signals(&b);
	s = nats_Open(-1);
	if (s == NATS_OK)
		s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, servers, nservers);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, "isa bridge");
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 500);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectJitter(opts, 500, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(opts, 32 * 1024 * 1024);
	if (s == NATS_OK)
		s = natsOptions_SetPingInterval(opts, 5000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxPingsOut(opts, 2);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(opts, true, nl_on_connected, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, nl_on_disconnected, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, nl_on_reconnected, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(opts, nl_on_closed, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, nl_on_error, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetCustomInboxPrefix(opts, isa_nats_inbox_prefix);
	/*
	 * One way to log in: a user name (with its password) wins over a creds
	 * file, since a server of users and passwords sends no nonce for the
	 * creds' signature and nats.c would then refuse to connect at all.
	 */
	if (s == NATS_OK && isa_nats_user && *isa_nats_user)
		s = natsOptions_SetUserInfo(opts, isa_nats_user, isa_nats_password);
	else if (s == NATS_OK && isa_nats_creds_file && *isa_nats_creds_file)
		s = natsOptions_SetUserCredentialsFromFiles(opts, isa_nats_creds_file, NULL);
	if (s != NATS_OK)
	{
		const char *why = nats_error_text(s);

		natsOptions_Destroy(opts);
		unblock_signals(&b);
		/* the text names the option, never a credential's value */
		isa_bridge_record_error("invalid NATS options: %s", why);
		return false;
	}

	s = natsConnection_Connect(&conn, opts);
	natsOptions_Destroy(opts);
	if (s == NATS_OK)
	{
		__atomic_store_n(&setup_needed, 1, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&reconnect_count, 1, __ATOMIC_SEQ_CST);
	}
	else if (s != NATS_NOT_YET_CONNECTED)
	{
		unblock_signals(&b);
		isa_bridge_record_error("cannot connect to NATS: %s", nats_error_text(s));
		conn = NULL;
		return false;
	}

	snprintf(inbox_filter, sizeof(inbox_filter), "%s.*", inbox_prefix);
	s = natsConnection_Subscribe(&inbox_sub, conn, inbox_filter, nl_on_msg, NULL);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(inbox_sub, -1, -1);
	if (s == NATS_OK)
	{
		jsOptions_Init(&jo);
		jo.Wait = 5000;
		jo.PublishAsync.MaxPending = 1 << 16;
		jo.PublishAsync.AckHandler = nl_on_pub_ack;
		s = natsConnection_JetStream(&js, conn, &jo);
	}
	unblock_signals(&b);
	if (s != NATS_OK)
	{
		isa_bridge_record_error("cannot set up the NATS connection: %s", nats_error_text(s));
		nl_disconnect();
		return false;
	}
	return true;
}

void
nl_disconnect(void)
{
	SigBlock	b;
	NlMsg	   *m;

	block_signals(&b);
	if (inbox_sub)
	{
		natsSubscription_Unsubscribe(inbox_sub);
		natsSubscription_Destroy(inbox_sub);
		inbox_sub = NULL;
	}
	if (js)
	{
		jsCtx_Destroy(js);
		js = NULL;
	}
	if (conn)
	{
		natsConnection_Close(conn);
		natsConnection_Destroy(conn);
		conn = NULL;
	}
	unblock_signals(&b);

	/* Messages still queued were not acked: the server redelivers them. */
	pthread_mutex_lock(&queue_lock);
	m = queue_head;
	queue_head = queue_tail = NULL;
	pthread_mutex_unlock(&queue_lock);
	while (m)
	{
		NlMsg	   *next = m->next;

		natsMsg_Destroy(m->msg);
		free(m);
		m = next;
	}
}

/* Up to max queued messages, in arrival order; the caller frees the nodes. */
NlMsg *
nl_take_messages(int max, int *n)
{
	NlMsg	   *head,
			   *last;
	int			k = 1;

	pthread_mutex_lock(&queue_lock);
	head = queue_head;
	if (head == NULL)
	{
		pthread_mutex_unlock(&queue_lock);
		*n = 0;
		return NULL;
	}
	last = head;
	while (k < max && last->next)
	{
		last = last->next;
		k++;
	}
	queue_head = last->next;
	if (queue_head == NULL)
		queue_tail = NULL;
	last->next = NULL;
	pthread_mutex_unlock(&queue_lock);
	*n = k;
	return head;
}

/*
 * Creates a stream, or updates it when its subjects, replicas, duplicate
 * window or age limit differ from the configuration.
 */
static bool
ensure_stream(const char *name, const char **subjects, int n, int replicas, int max_age_s)
{
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	natsStatus	s;
	SigBlock	b;
	bool		same = false;

	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = n;
	cfg.Storage = js_FileStorage;
	cfg.Retention = js_LimitsPolicy;
	cfg.Replicas = replicas;
	cfg.MaxAge = (int64) max_age_s * 1000000000LL;
	/* the window may not outlast the messages */
	cfg.Duplicates = (int64) (max_age_s > 0 && max_age_s < isa_duplicate_window
							  ? max_age_s : isa_duplicate_window) * 1000000000LL;

	block_signals(&b);
	s = js_GetStreamInfo(&si, js, name, NULL, &ec);
	if (s == NATS_OK)
	{
		jsStreamConfig *cur = si->Config;

		same = cur->Replicas == cfg.Replicas && cur->Duplicates == cfg.Duplicates &&
			cur->MaxAge == cfg.MaxAge && cur->SubjectsLen == n;
		for (int i = 0; same && i < n; i++)
		{
			bool		found = false;

			for (int j = 0; j < cur->SubjectsLen; j++)
				found |= strcmp(cur->Subjects[j], subjects[i]) == 0;
			same = found;
		}
		if (!same)
		{
			/* keep what an operator set that isa does not manage */
			cfg.MaxBytes = cur->MaxBytes;
			cfg.MaxMsgs = cur->MaxMsgs;
			cfg.Storage = cur->Storage;
		}
		jsStreamInfo_Destroy(si);
		si = NULL;
		if (!same)
			s = js_UpdateStream(&si, js, &cfg, NULL, &ec);
	}
	else if (ec == JSStreamNotFoundErr)
		s = js_AddStream(&si, js, &cfg, NULL, &ec);
	if (si)
		jsStreamInfo_Destroy(si);
	unblock_signals(&b);
	if (s != NATS_OK)
	{
		isa_bridge_record_error("cannot create or update stream %s: %s (JetStream error %d)",
								name, nats_error_text(s), (int) ec);
		return false;
	}
	return true;
}

/*
 * The stream isa.stream of the sources' subjects and the devices' messages,
 * then ISA_REPLAY, which holds the replays (replay.>, docs/bridge.md,
 * "Subject override") for ISA_REPLAY_MAX_AGE: no consumer of isa's reads
 * it.  One replica whatever isa.stream_replicas says: a replay lost with a
 * node is asked for again, and an R1 stream is made at once, where an R3
 * one on a cluster just formed can outlast the API's wait and hold up the
 * consumers' set-up behind it.  A replay stream that cannot be made leaves the replays in the outbox
 * (and the error in isa.bridge_status()); the events still flow.
 */
bool
nl_ensure_stream(List *sources)
{
	const char **subjects;
	const char *replay_subjects[1] = {"replay.>"};
	int			n = 0;
	ListCell   *lc;
	bool		ok;

	subjects = palloc(sizeof(char *) * (list_length(sources) + isa_device_message_nsubjects));
	foreach(lc, sources)
		subjects[n++] = psprintf("%s.>", (char *) lfirst(lc));
	/* the devices' acks and heartbeats (device_messages.c); not their commands */
	for (int i = 0; i < isa_device_message_nsubjects; i++)
		subjects[n++] = isa_device_message_subjects[i];

	ok = ensure_stream(isa_stream, subjects, n, isa_stream_replicas, isa_stream_max_age);
	if (ok)
		(void) ensure_stream(ISA_REPLAY_STREAM, replay_subjects, 1, 1, ISA_REPLAY_MAX_AGE);
	return ok;
}

bool
nl_ensure_consumer(const char *durable, const char *filter, int max_ack_pending,
				   bool deliver_new)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode	ec = 0;
	natsStatus	s;
	SigBlock	b;

	jsConsumerConfig_Init(&cc);
	cc.Durable = durable;
	cc.FilterSubject = filter;
	cc.AckPolicy = js_AckExplicit;
	cc.AckWait = (int64) isa_ack_wait * 1000000000LL;
	/* The bridge counts deliveries and dead-letters: the server never drops. */
	cc.MaxDeliver = -1;
	cc.MaxAckPending = max_ack_pending;
	cc.DeliverPolicy = deliver_new ? js_DeliverNew : js_DeliverAll;

	block_signals(&b);
	s = js_GetConsumerInfo(&ci, js, isa_stream, durable, NULL, &ec);
	if (s == NATS_OK)
	{
		bool		same = ci->Config->AckWait == cc.AckWait &&
			ci->Config->MaxAckPending == cc.MaxAckPending;

		jsConsumerInfo_Destroy(ci);
		ci = NULL;
		if (!same)
			s = js_UpdateConsumer(&ci, js, isa_stream, &cc, NULL, &ec);
	}
	else if (ec == JSConsumerNotFoundErr)
		s = js_AddConsumer(&ci, js, isa_stream, &cc, NULL, &ec);
	if (ci)
		jsConsumerInfo_Destroy(ci);
	unblock_signals(&b);
	if (s != NATS_OK)
	{
		isa_bridge_record_error("cannot create consumer %s on stream %s: %s (JetStream error %d)",
								durable, isa_stream, nats_error_text(s), (int) ec);
		return false;
	}
	return true;
}

bool
nl_delete_consumer(const char *durable)
{
	jsErrCode	ec = 0;
	natsStatus	s;
	SigBlock	b;

	block_signals(&b);
	s = js_DeleteConsumer(js, isa_stream, durable, NULL, &ec);
	unblock_signals(&b);
	return s == NATS_OK || ec == JSConsumerNotFoundErr;
}

/*
 * A pull request for the consumer of a subscription, answered on
 * <inbox prefix>.<subscription id>: built here at each pull, so a reload
 * that changes isa.nats_inbox_prefix moves the answers with it.
 */
bool
nl_pull(const char *durable, int64 subscription_id, int batch, int64 expires_ms)
{
	char		subject[512];
	char		reply[sizeof(inbox_prefix) + 24];
	char		body[128];
	natsStatus	s;
	SigBlock	b;

	snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", isa_stream, durable);
	snprintf(reply, sizeof(reply), "%s." INT64_FORMAT, inbox_prefix, subscription_id);
	snprintf(body, sizeof(body), "{\"batch\":%d,\"expires\":" INT64_FORMAT "}",
			 batch, expires_ms * 1000000);
	block_signals(&b);
	s = natsConnection_PublishRequest(conn, subject, reply, body, strlen(body));
	unblock_signals(&b);
	return s == NATS_OK;
}

static void
reply_to(natsMsg *msg, const char *text)
{
	const char *reply = natsMsg_GetReply(msg);
	SigBlock	b;

	if (conn == NULL || reply == NULL || *reply == '\0')
		return;
	block_signals(&b);
	/* A lost ack only means a redelivery, which the inbox absorbs. */
	(void) natsConnection_Publish(conn, reply, text, strlen(text));
	unblock_signals(&b);
}

void
nl_ack(natsMsg *msg)
{
	reply_to(msg, "+ACK");
}

void
nl_nak(natsMsg *msg, int64 delay_ms)
{
	char		text[64];

	snprintf(text, sizeof(text), "-NAK {\"delay\":" INT64_FORMAT "}", delay_ms * 1000000);
	reply_to(msg, text);
}

void
nl_term(natsMsg *msg)
{
	reply_to(msg, "+TERM");
}

/*
 * The consumer and delivery count of a JetStream message, from its ack
 * subject, as nats.c reads it (both forms: $JS.ACK.<stream>.<consumer>... and
 * the newer one with domain and account hash), with the messages the
 * consumer still has to deliver after it and when the stream stored it
 * (nanoseconds since the epoch).  False for anything else: a message without
 * such a reply subject is not one of a consumer's.
 */
bool
nl_delivery(natsMsg *msg, char *consumer, size_t consumer_len, uint64 *delivered,
			uint64 *pending, int64 *stored_ns)
{
	jsMsgMetaData *meta = NULL;
	bool		ok;

	if (natsMsg_GetMetaData(&meta, msg) != NATS_OK)
		return false;
	ok = meta->Consumer != NULL && strlen(meta->Consumer) < consumer_len;
	if (ok)
	{
		strlcpy(consumer, meta->Consumer, consumer_len);
		*delivered = meta->NumDelivered;
		*pending = meta->NumPending;
		*stored_ns = meta->Timestamp;
	}
	jsMsgMetaData_Destroy(meta);
	return ok;
}

/* The status code of a control message (no data, "NATS/1.0 408"), or NULL. */
const char *
nl_status(natsMsg *msg)
{
	const char *v = NULL;

	if (natsMsg_GetDataLength(msg) == 0 && natsMsgHeader_Get(msg, "Status", &v) == NATS_OK)
		return v;
	return NULL;
}

/* A plain message (core NATS, no headers): false if nats.c refused it. */
bool
nl_publish_plain(const char *subject, const char *data)
{
	natsStatus	s;
	SigBlock	b;

	if (conn == NULL)
		return false;
	block_signals(&b);
	s = natsConnection_Publish(conn, subject, data, (int) strlen(data));
	unblock_signals(&b);
	return s == NATS_OK;
}

/* Whether the server has everything published so far (a PING answered in time). */
bool
nl_flush(int64 timeout_ms)
{
	natsStatus	s;
	SigBlock	b;

	if (conn == NULL)
		return false;
	block_signals(&b);
	s = natsConnection_FlushTimeout(conn, timeout_ms);
	unblock_signals(&b);
	return s == NATS_OK;
}

/*
 * Publishes n messages asynchronously and waits (up to timeout_ms) for their
 * acks; results[i] says which were stored.  Ids must be in ascending order.
 * False if the batch could not even be sent.
 */
bool
nl_publish_batch(int n, char **subjects, char **ids, char **bodies, int *body_lens,
				 char **traceparents, char **correlations, char *results, int64 timeout_ms)
{
	natsStatus	s = NATS_OK;
	SigBlock	b;
	jsPubOptions po;
	natsMsgList pending = {0};

	memset(results, NL_PENDING, n);
	batch_ids = ids;
	batch_results = results;
	__atomic_store_n(&batch_n, n, __ATOMIC_SEQ_CST);

	block_signals(&b);
	for (int i = 0; i < n && s == NATS_OK; i++)
	{
		natsMsg    *m = NULL;

		s = natsMsg_Create(&m, subjects[i], NULL, bodies[i], body_lens[i]);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(m, "Nats-Msg-Id", ids[i]);
		if (s == NATS_OK && traceparents[i])
			s = natsMsgHeader_Set(m, "traceparent", traceparents[i]);
		if (s == NATS_OK && correlations[i])
			s = natsMsgHeader_Set(m, "Isa-Correlation-Id", correlations[i]);
		if (s == NATS_OK)
			s = js_PublishMsgAsync(js, &m, NULL);
		if (m)
		{
			/* not handed over: nats.c took ownership only on success */
			natsMsg_Destroy(m);
			results[i] = NL_FAILED;
		}
	}
	if (s != NATS_OK)
		isa_bridge_record_error("publish to NATS failed: %s", nats_error_text(s));

	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	if (js_PublishAsyncComplete(js, &po) != NATS_OK)
	{
		/* Unacked in time: take them back so no late ack lands after we return. */
		if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
			natsMsgList_Destroy(&pending);
	}
	unblock_signals(&b);

	__atomic_store_n(&batch_n, 0, __ATOMIC_SEQ_CST);
	batch_ids = NULL;
	batch_results = NULL;
	return s == NATS_OK;
}
