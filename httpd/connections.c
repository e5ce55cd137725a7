/*
 * connections.c — the client connections isa-httpd holds, and the two limits
 * that keep a few slow or greedy clients from taking them all
 * (docs/http.md, "Limits"):
 *
 *  - request_head_timeout_s: libmicrohttpd's connection timeout starts again
 *    at every byte, so a client sending one header line every 10 s kept its
 *    connection (and, with thread-per-connection, a thread) forever.  Each
 *    connection here has a deadline for its request head, from its start or
 *    from its previous answer; a sweeper thread shuts down the socket of one
 *    that misses it, which libmicrohttpd's thread sees as the end of the
 *    connection and closes.
 *  - max_connections_per_client: the accept policy refuses a peer address
 *    that holds that many connections already, trusted proxies apart (the
 *    proxy caps its clients).
 *
 * A connection is in the list from libmicrohttpd's STARTED notification to
 * its CLOSED one, which comes before the socket is closed, so the sweeper
 * (holding the lock) never shuts down a descriptor that was reused.
 */
#include "httpd.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct Conn
{
	struct Conn *prev;
	struct Conn *next;
	int			fd;
	char		peer[64];		/* the peer's address (not X-Forwarded-For) */
	bool		proxy;			/* the peer is a trusted proxy */
	double		head_deadline;	/* 0: a head was received, its answer is under way */
	bool		shut;			/* shut down by the sweeper */
} Conn;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Conn *conns;
static pthread_t sweeper;
static volatile bool stopping;

void
connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
				  enum MHD_ConnectionNotificationCode code)
{
	Conn	   *c = *socket_context;

	(void) cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *addr = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		c = xcalloc(1, sizeof(Conn));
		c->fd = fd ? fd->connect_fd : -1;
		address_text(addr ? addr->client_addr : NULL, c->peer, sizeof c->peer);
		c->proxy = proxy_trusted(addr ? addr->client_addr : NULL);
		c->head_deadline = now_seconds() + cfg.request_head_timeout_s;
		pthread_mutex_lock(&lock);
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
		pthread_mutex_unlock(&lock);
		*socket_context = c;
	}
	else if (code == MHD_CONNECTION_NOTIFY_CLOSED && c)
	{
		pthread_mutex_lock(&lock);
		if (c->prev)
			c->prev->next = c->next;
		else
			conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&lock);
		free(c);
		*socket_context = NULL;
	}
}

/* The accept policy: libmicrohttpd accepts and notifies STARTED in its one
 * listening thread, so the count of a peer's connections is exact here. */
enum MHD_Result
connection_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	char		peer[64];
	int			n = 0;

	(void) cls;
	(void) addrlen;
	if (cfg.max_connections_per_client == 0 || proxy_trusted(addr))
		return MHD_YES;
	address_text(addr, peer, sizeof peer);
	pthread_mutex_lock(&lock);
	for (Conn *c = conns; c; c = c->next)
		if (!c->shut && strcmp(c->peer, peer) == 0)
			n++;
	pthread_mutex_unlock(&lock);
	if (n < cfg.max_connections_per_client)
		return MHD_YES;
	metrics_connection_closed("per_client_limit");
	return MHD_NO;
}

static Conn *
conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

void
connection_head_received(struct MHD_Connection *conn)
{
	Conn	   *c = conn_of(conn);

	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	c->head_deadline = 0;
	pthread_mutex_unlock(&lock);
}

/* A kept-alive connection's next head has its own deadline from now. */
void
connection_answered(struct MHD_Connection *conn)
{
	Conn	   *c = conn_of(conn);

	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	c->head_deadline = now_seconds() + cfg.request_head_timeout_s;
	pthread_mutex_unlock(&lock);
}

static void *
sweep(void *arg)
{
	(void) arg;
	while (!stopping)
	{
		double		now = now_seconds();
		int			closed = 0;
		char		last[64] = "";

		pthread_mutex_lock(&lock);
		for (Conn *c = conns; c; c = c->next)
			if (!c->shut && c->head_deadline > 0 && now > c->head_deadline && c->fd >= 0)
			{
				/* not close(): the descriptor stays libmicrohttpd's to close */
				shutdown(c->fd, SHUT_RDWR);
				c->shut = true;
				closed++;
				snprintf(last, sizeof last, "%s", c->peer);
			}
		pthread_mutex_unlock(&lock);
		for (int i = 0; i < closed; i++)
			metrics_connection_closed("head_timeout");
		if (closed)
			log_line("closed %d connection%s without a whole request head after %d s (last from %s)", closed,
					 closed > 1 ? "s" : "", cfg.request_head_timeout_s, last);
		usleep(100 * 1000);
	}
	return NULL;
}

void
connections_start(void)
{
	stopping = false;
	pthread_create(&sweeper, NULL, sweep, NULL);
}

void
connections_stop(void)
{
	stopping = true;
	pthread_join(sweeper, NULL);
}
