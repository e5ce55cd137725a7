/*
 * ratelimit.c — a token bucket per client address for the routes marked
 * rate_limited (login, refresh, signup, device authentication): rate_limit
 * tokens per second, up to rate_burst.  A fixed table; a new client takes the
 * slot of the one seen longest ago, so memory stays bounded whatever the
 * number of addresses.
 */
#include "httpd.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#define SLOTS 4096

typedef struct Bucket
{
	char		client[64];
	double		tokens;
	double		last;
} Bucket;

static Bucket buckets[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

bool
ratelimit_take(const char *client, int *retry_after)
{
	double		now = now_seconds();
	unsigned	h = (unsigned) hash_string(client);
	Bucket	   *b = NULL;
	Bucket	   *oldest = NULL;
	bool		ok;

	if (cfg.rate_limit <= 0)
		return true;
	pthread_mutex_lock(&lock);
	/* eight probes: the client's slot, or the stalest of them */
	for (unsigned i = 0; i < 8 && !b; i++)
	{
		Bucket	   *x = &buckets[(h + i) % SLOTS];

		if (!strncmp(x->client, client, sizeof x->client - 1))
			b = x;
		else if (oldest == NULL || x->last < oldest->last)
			oldest = x;
	}
	if (b == NULL)
	{
		b = oldest;
		strncpy(b->client, client, sizeof b->client - 1);
		b->client[sizeof b->client - 1] = '\0';
		b->tokens = cfg.rate_burst;
		b->last = now;
	}
	b->tokens = fmin((double) cfg.rate_burst, b->tokens + (now - b->last) * cfg.rate_limit);
	b->last = now;
	ok = b->tokens >= 1;
	if (ok)
		b->tokens -= 1;
	else
		*retry_after = (int) ceil((1 - b->tokens) / cfg.rate_limit);
	pthread_mutex_unlock(&lock);
	return ok;
}
