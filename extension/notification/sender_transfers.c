/*
 * sender_transfers.c — a sender's transfers in flight, driven by libcurl's
 * multi interface on the worker's main thread: up to
 * isa.notification_sender_concurrency deliveries of one channel progress
 * together, so one slow recipient (a webhook URL that hangs) does not hold
 * the others back, and each is bounded by its channel's timeout.
 *
 * Threads: libcurl resolves host names on a thread of its own.  It starts
 * it inside curl_multi_perform, which therefore runs with every signal
 * blocked, as isa's calls into nats.c do (docs/architecture.md, "The bridge
 * inside PostgreSQL"): PostgreSQL's signals must reach the main thread.
 * libcurl's callbacks (sender_email.c, sender_webhook.c) run on the main
 * thread, inside curl_multi_perform; they only copy bytes and set flags,
 * never elog or palloc (an ERROR must not jump over libcurl's frames).
 */
#include "postgres.h"

#include <signal.h>
#include <pthread.h>

#include "utils/memutils.h"

#include "sender.h"

static CURLM *multi = NULL;
static MemoryContext transfers_cxt = NULL;
static SenderTransfer *in_flight = NULL;
static int	n_in_flight = 0;
/* transfers that ended (or never started) since the last isa_transfers_progress */
static SenderTransfer *ended = NULL;

void
isa_transfers_init(void)
{
	CURLcode	rc = curl_global_init(CURL_GLOBAL_DEFAULT);

	if (rc != CURLE_OK)
		ereport(ERROR,
				(errmsg("isa notification sender: libcurl did not initialize: %s", curl_easy_strerror(rc))));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR, (errmsg("isa notification sender: libcurl did not make a multi handle")));
	transfers_cxt = AllocSetContextCreate(TopMemoryContext, "isa sender transfers", ALLOCSET_DEFAULT_SIZES);
}

/* A claimed delivery, before its channel prepares it. */
SenderTransfer *
isa_transfer_new(const char *delivery_id, int attempt)
{
	MemoryContext cxt = AllocSetContextCreate(transfers_cxt, "isa sender transfer", ALLOCSET_SMALL_SIZES);
	SenderTransfer *t = MemoryContextAllocZero(cxt, sizeof(SenderTransfer));

	t->cxt = cxt;
	strlcpy(t->delivery_id, delivery_id, sizeof(t->delivery_id));
	t->attempt = attempt;
	return t;
}

/*
 * The outcome of a failed attempt.  The text goes to
 * notification.deliveries.last_error: printable ASCII only (a server's reply
 * may hold anything), at most 500 bytes.
 */
void
isa_transfer_fail(SenderTransfer *t, bool transient, const char *fmt,...)
{
	char		buf[501];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if ((unsigned char) *p < ' ' || (unsigned char) *p > '~')
			*p = '?';
	t->ok = false;
	t->transient = transient;
	t->error = MemoryContextStrdup(t->cxt, buf);
}

/*
 * The easy handle of a transfer, with what every channel sets: the URL and
 * the protocols it may use (no other scheme, no redirect), the timeout of
 * the whole transfer, no proxy from the environment, no signals (libcurl
 * would use SIGALRM for timeouts).  NULL, and a transient failure, if
 * libcurl cannot make one.
 */
CURL *
isa_transfer_easy(SenderTransfer *t, const char *url, const char *protocols, int timeout_ms)
{
	CURL	   *e = curl_easy_init();

	if (e == NULL)
	{
		isa_transfer_fail(t, true, "libcurl could not make a transfer handle");
		return NULL;
	}
	t->easy = e;
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->curl_error);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	return e;
}

static void
push(SenderTransfer **list, SenderTransfer *t)
{
	t->next = *list;
	*list = t;
}

/* Starts a prepared transfer; one that failed already ends at once. */
void
isa_transfer_start(SenderTransfer *t)
{
	if (t->error == NULL && t->easy != NULL && curl_multi_add_handle(multi, t->easy) == CURLM_OK)
	{
		push(&in_flight, t);
		n_in_flight++;
		return;
	}
	if (t->error == NULL)
		isa_transfer_fail(t, true, "libcurl could not start the transfer");
	push(&ended, t);
}

int
isa_transfers_in_flight(void)
{
	return n_in_flight;
}

static void
unlink_in_flight(SenderTransfer *t)
{
	for (SenderTransfer **p = &in_flight; *p; p = &(*p)->next)
		if (*p == t)
		{
			*p = t->next;
			n_in_flight--;
			return;
		}
}

/*
 * Moves every transfer as far as it can go without waiting, and returns those
 * that ended, each with its outcome (judged by its channel).
 */
SenderTransfer *
isa_transfers_progress(const SenderChannel *ch)
{
	SenderTransfer *result;
	CURLMsg    *msg;
	int			running;
	int			left;
	sigset_t	all;
	sigset_t	old;

	if (n_in_flight > 0)
	{
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		curl_multi_perform(multi, &running);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		SenderTransfer *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		curl_multi_remove_handle(multi, msg->easy_handle);
		unlink_in_flight(t);
		ch->judge(t, msg->data.result);
		push(&ended, t);
	}
	result = ended;
	ended = NULL;
	return result;
}

/* Until a transfer's socket is ready or timeout_ms passed. */
void
isa_transfers_wait(long timeout_ms)
{
	int			numfds;

	curl_multi_poll(multi, NULL, 0, (int) timeout_ms, &numfds);
}

void
isa_transfer_free(SenderTransfer *t)
{
	if (t->easy != NULL)
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->list);
	MemoryContextDelete(t->cxt);
}

/*
 * At shutdown: the transfers in flight stop where they are.  Their
 * deliveries stay claimed until the lease expires and are then tried again
 * (a message the server had taken may arrive twice: delivery is at least
 * once, and Message-ID / Isa-Delivery let a receiver see the repeat).
 */
void
isa_transfers_abandon(void)
{
	while (in_flight != NULL)
	{
		SenderTransfer *t = in_flight;

		curl_multi_remove_handle(multi, t->easy);
		unlink_in_flight(t);
		isa_transfer_free(t);
	}
}
