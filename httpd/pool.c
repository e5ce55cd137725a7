/*
 * pool.c — a fixed set of libpq connections, handed to one request at a time.
 *
 * A connection is opened when first needed and again after it broke, with
 * exponential backoff between failed attempts (100 ms … 5 s) so that a
 * restarting PostgreSQL is not hammered.  Each connection stays in pipeline
 * mode: a request is one statement (isa.http_begin, then the route's call:
 * see sql_with_begin) + Sync, sent at once and answered in one round trip.
 * Statements are prepared once per connection (a small cache keyed by the SQL
 * text).  statement_timeout is the connection's: set once when it opens, it
 * covers every statement.
 */
#include "httpd.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STMT_CACHE 512


struct PoolConn
{
	PGconn	   *pg;
	PGcancel   *cancel;
	bool		busy;
	uint64_t	stmt_hash[STMT_CACHE];
	int			nstmts;
	double		next_attempt;	/* monotonic time of the next connect attempt */
	double		backoff;
};

static PoolConn *conns;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t freed = PTHREAD_COND_INITIALIZER;
static int	waiting;
static uint64_t timeouts;
static uint64_t reconnects;

void
pool_init(void)
{
	conns = xcalloc((size_t) cfg.pool_size, sizeof(PoolConn));
}

static void
close_conn(PoolConn *c)
{
	if (c->cancel)
		PQfreeCancel(c->cancel);
	if (c->pg)
		PQfinish(c->pg);
	c->cancel = NULL;
	c->pg = NULL;
	c->nstmts = 0;
	memset(c->stmt_hash, 0, sizeof c->stmt_hash);
}

void
pool_shutdown(void)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < cfg.pool_size; i++)
		if (!conns[i].busy)
			close_conn(&conns[i]);
	pthread_mutex_unlock(&lock);
}

/* Opens c's connection (outside the lock); false when it failed. */
static bool
open_conn(PoolConn *c)
{
	double		now = now_seconds();

	if (now < c->next_attempt)
		return false;
	c->pg = PQconnectdb(cfg.database_url);
	if (PQstatus(c->pg) != CONNECTION_OK)
	{
		char	   *msg = PQerrorMessage(c->pg);
		size_t		n = strlen(msg);

		while (n > 0 && msg[n - 1] == '\n')
			msg[--n] = '\0';
		log_line("database connection failed: %s", msg);
		PQfinish(c->pg);
		c->pg = NULL;
		c->backoff = c->backoff == 0 ? 0.1 : c->backoff * 2 > 5 ? 5 : c->backoff * 2;
		c->next_attempt = now + c->backoff;
		return false;
	}
	c->backoff = 0;
	c->next_attempt = 0;
	{
		char		set[128];
		PGresult   *r;

		/*
		 * Generic plans: with a custom plan, a parameter's cast ('x'::uuid)
		 * is evaluated while planning, before isa.http_begin has checked the
		 * session and the access rule, so a bad argument would be answered
		 * before a missing right.
		 */
		snprintf(set, sizeof set, "SET statement_timeout = %d; SET plan_cache_mode = force_generic_plan",
				 cfg.statement_timeout_ms);
		r = PQexec(c->pg, set);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			log_line("cannot set statement_timeout and plan_cache_mode: %s", PQerrorMessage(c->pg));
		PQclear(r);
	}
	c->cancel = PQgetCancel(c->pg);
	PQsetnonblocking(c->pg, 1);
	if (PQenterPipelineMode(c->pg) != 1)
	{
		log_line("database connection cannot enter pipeline mode");
		close_conn(c);
		return false;
	}
	__atomic_add_fetch(&reconnects, 1, __ATOMIC_RELAXED);
	return true;
}

PoolConn *
pool_acquire(bool *timed_out)
{
	struct timespec deadline;
	PoolConn   *got = NULL;

	*timed_out = false;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += cfg.pool_timeout_ms / 1000;
	deadline.tv_nsec += (long) (cfg.pool_timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L)
	{
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&lock);
	for (;;)
	{
		/* an open idle connection first, then one to open */
		for (int i = 0; i < cfg.pool_size && !got; i++)
			if (!conns[i].busy && conns[i].pg)
				got = &conns[i];
		for (int i = 0; i < cfg.pool_size && !got; i++)
			if (!conns[i].busy)
				got = &conns[i];
		if (got)
			break;
		waiting++;
		int			rc = pthread_cond_timedwait(&freed, &lock, &deadline);

		waiting--;
		if (rc == ETIMEDOUT)
		{
			timeouts++;
			*timed_out = true;
			pthread_mutex_unlock(&lock);
			return NULL;
		}
	}
	got->busy = true;
	pthread_mutex_unlock(&lock);

	/* an idle connection has nothing to read (isa-httpd never LISTENs): if
	 * it has, its backend ended (terminated, restarted) and sent its last
	 * words; open a new one rather than fail a request on it */
	if (got->pg)
	{
		struct pollfd p = {.fd = PQsocket(got->pg), .events = POLLIN};

		if (PQstatus(got->pg) != CONNECTION_OK || poll(&p, 1, 0) != 0)
			close_conn(got);
	}
	if (got->pg == NULL && !open_conn(got))
	{
		pool_release(got);
		return NULL;
	}
	return got;
}

void
pool_release(PoolConn *c)
{
	pthread_mutex_lock(&lock);
	c->busy = false;
	pthread_cond_signal(&freed);
	pthread_mutex_unlock(&lock);
}

void
pool_stats(PoolStats *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_lock(&lock);
	s->size = cfg.pool_size;
	for (int i = 0; i < cfg.pool_size; i++)
	{
		s->open += conns[i].pg != NULL;
		s->busy += conns[i].busy;
	}
	s->waiting = waiting;
	s->timeouts = timeouts;
	pthread_mutex_unlock(&lock);
	s->reconnects = __atomic_load_n(&reconnects, __ATOMIC_RELAXED);
}

/* The statement's name on c, and whether it must be prepared first. */
static bool
stmt_name(PoolConn *c, const char *sql, char *name, size_t len, bool *prepared, int *slot)
{
	uint64_t	h = hash_string(sql);

	snprintf(name, len, "isa_%016llx", (unsigned long long) h);
	*slot = -1;
	for (int i = 0; i < c->nstmts; i++)
		if (c->stmt_hash[i] == h)
		{
			*prepared = true;
			return true;
		}
	*prepared = false;
	if (c->nstmts == STMT_CACHE)
		return false;			/* full: use the unnamed statement */
	*slot = c->nstmts;
	return true;
}

static void
set_error(SqlError *e, const char *state, const char *msg, const char *detail, const char *hint)
{
	if (e->sqlstate[0])
		return;					/* the first error is the one that counts */
	snprintf(e->sqlstate, sizeof e->sqlstate, "%s", state ? state : "XX000");
	e->message = xstrdup(msg ? msg : "");
	e->detail = detail ? xstrdup(detail) : NULL;
	e->hint = hint ? xstrdup(hint) : NULL;
}

static void
result_error(SqlError *e, PGresult *r)
{
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

	set_error(e, PQresultErrorField(r, PG_DIAG_SQLSTATE), msg ? msg : PQresultErrorMessage(r),
			  PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL), PQresultErrorField(r, PG_DIAG_MESSAGE_HINT));
}

/* Waits until PQgetResult will not block; false on a broken connection or,
 * with client_fd, a client that hung up (then the query is canceled once). */
static bool
wait_readable(PoolConn *c, int client_fd, SqlResult *res)
{
	while (PQisBusy(c->pg))
	{
		struct pollfd fds[2];
		int			n = 1;

		fds[0].fd = PQsocket(c->pg);
		fds[0].events = POLLIN;
		if (PQflush(c->pg) == 1)
			fds[0].events |= POLLOUT;
		if (client_fd >= 0 && !res->canceled)
		{
			fds[1].fd = client_fd;
			fds[1].events = POLLRDHUP;
			n = 2;
		}
		if (poll(fds, (nfds_t) n, 1000) < 0 && errno != EINTR)
			return false;
		if (n == 2 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
		{
			char		buf[256];

			res->canceled = true;
			PQcancel(c->cancel, buf, sizeof buf);
		}
		if (fds[0].revents & (POLLIN | POLLERR | POLLHUP))
			if (!PQconsumeInput(c->pg))
				return false;
	}
	return true;
}

static void
broken(PoolConn *c, SqlResult *res)
{
	res->broken = true;
	set_error(&res->err, "08006", "the database connection was lost", NULL, NULL);
	close_conn(c);
}

/*
 * Sends [Parse] Bind/Execute Sync for the call, then reads every result up to
 * the Sync.  With begin_params, the call's SQL takes them as $1 … $8 (see
 * sql_with_begin) and its own from $9.  The value is the first column of the
 * first row.
 */
void
pool_run(PoolConn *c, const char *const *begin_params, const Call *call, int client_fd, SqlResult *res)
{
	char		name[32];
	bool		prepared;
	int			slot;
	bool		named;
	bool		prepare_ok = true;
	int			nb = begin_params ? BEGIN_PARAMS : 0;
	int			n = nb + call->nparams;
	const char *values[BEGIN_PARAMS + 64];
	int			lengths[BEGIN_PARAMS + 64];
	int			formats[BEGIN_PARAMS + 64];
	Oid			types[BEGIN_PARAMS + 64];
	int			commands = 0;
	int			step;

	memset(res, 0, sizeof *res);
	if (n > (int) (sizeof values / sizeof values[0]))
	{
		set_error(&res->err, "54023", "too many arguments", NULL, NULL);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		int			k = i - nb;

		values[i] = i < nb ? begin_params[i] : call->params[k];
		lengths[i] = i < nb || !call->lengths ? 0 : call->lengths[k];
		formats[i] = i < nb || !call->formats ? 0 : call->formats[k];
		/* text parameters (bytea when binary): the casts in the SQL run in
		 * the statement, after isa.http_begin, not when the values are bound */
		types[i] = formats[i] ? 17 : 25;
	}

	named = stmt_name(c, call->sql, name, sizeof name, &prepared, &slot);
	if (!named)
	{
		prepared = true;		/* nothing to remember */
		if (!PQsendQueryParams(c->pg, call->sql, n, types, values, lengths, formats, call->binary_result))
			return broken(c, res);
	}
	else
	{
		if (!prepared)
		{
			if (!PQsendPrepare(c->pg, name, call->sql, n, types))
				return broken(c, res);
			commands++;
		}
		if (!PQsendQueryPrepared(c->pg, name, n, values, lengths, formats, call->binary_result))
			return broken(c, res);
	}
	commands++;
	if (!PQpipelineSync(c->pg))
		return broken(c, res);

	/* every command's results (each ended by a NULL), then the sync */
	for (step = 0;;)
	{
		if (!wait_readable(c, client_fd, res))
			return broken(c, res);
		PGresult   *r = PQgetResult(c->pg);

		if (r == NULL)
		{
			if (PQstatus(c->pg) != CONNECTION_OK || ++step > commands)
				return broken(c, res);
			continue;
		}
		ExecStatusType st = PQresultStatus(r);

		if (st == PGRES_PIPELINE_SYNC)
		{
			PQclear(r);
			break;
		}
		if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)
		{
			if (st == PGRES_FATAL_ERROR)
				result_error(&res->err, r);
			if (!prepared && step == 0)
				prepare_ok = false;
		}
		else if (step == commands - 1 && st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !res->has_row)
		{
			res->has_row = true;
			if (!PQgetisnull(r, 0, 0))
			{
				int			len = PQgetlength(r, 0, 0);

				res->value = xmalloc((size_t) len + 1);
				memcpy(res->value, PQgetvalue(r, 0, 0), (size_t) len);
				res->value[len] = '\0';
				res->value_len = (size_t) len;
			}
		}
		PQclear(r);
	}
	if (!prepared && slot >= 0 && prepare_ok && c->nstmts < STMT_CACHE)
		c->stmt_hash[c->nstmts++] = hash_string(call->sql);
	res->ok = res->err.sqlstate[0] == '\0';
	if (PQstatus(c->pg) != CONNECTION_OK)
		close_conn(c);
}

/* A query outside pipeline mode's request shape: one Sync, one value. */
bool
pool_query_value(PoolConn *c, const char *sql, char **value, SqlError *err)
{
	bool		ok = true;

	*value = NULL;
	memset(err, 0, sizeof *err);
	if (!PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(c->pg))
	{
		set_error(err, "08006", "the database connection was lost", NULL, NULL);
		close_conn(c);
		return false;
	}
	for (;;)
	{
		SqlResult	dummy = {0};

		if (!wait_readable(c, -1, &dummy))
		{
			set_error(err, "08006", "the database connection was lost", NULL, NULL);
			close_conn(c);
			return false;
		}
		PGresult   *r = PQgetResult(c->pg);

		if (r == NULL)
			continue;
		ExecStatusType st = PQresultStatus(r);

		if (st == PGRES_PIPELINE_SYNC)
		{
			PQclear(r);
			break;
		}
		if (st == PGRES_FATAL_ERROR)
		{
			result_error(err, r);
			ok = false;
		}
		else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) && *value == NULL)
			*value = xstrdup(PQgetvalue(r, 0, 0));
		PQclear(r);
	}
	return ok;
}

void
sql_result_clear(SqlResult *r)
{
	free(r->value);
	free(r->err.message);
	free(r->err.detail);
	free(r->err.hint);
	memset(r, 0, sizeof *r);
}
