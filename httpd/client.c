/*
 * client.c — who the client is.  Directly connected, the peer's address.
 * Behind a reverse proxy (the TLS front docs/http.md prescribes) every
 * client shares the proxy's address, so a per-address limit would be
 * site-wide: the peers listed in trusted_proxies are believed about
 * X-Forwarded-For, and the client is the rightmost address of it that is not
 * one of them (what each trusted hop appended).  Anyone else's
 * X-Forwarded-For is ignored: a client cannot choose its own address.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PROXIES 64

typedef struct Network
{
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			bits;			/* prefix length */
} Network;

static Network proxies[MAX_PROXIES];
static int	nproxies;

/* An address (no prefix) into family and bytes; false if it is none. */
static bool
parse_address(const char *s, int *family, unsigned char *addr)
{
	if (inet_pton(AF_INET, s, addr) == 1)
		*family = AF_INET;
	else if (inet_pton(AF_INET6, s, addr) == 1)
		*family = AF_INET6;
	else
		return false;
	return true;
}

bool
proxies_init(char **err)
{
	char	   *list = cfg.trusted_proxies ? xstrdup(cfg.trusted_proxies) : NULL;
	char	   *save = NULL;
	bool		ok = true;

	nproxies = 0;
	for (char *item = list ? strtok_r(list, ", \t", &save) : NULL; item; item = strtok_r(NULL, ", \t", &save))
	{
		Network		n = {0};
		char	   *slash = strchr(item, '/');
		int			max;

		if (slash)
			*slash = '\0';
		if (nproxies == MAX_PROXIES || !parse_address(item, &n.family, n.addr))
		{
			Buf			b = {0};

			if (nproxies == MAX_PROXIES)
				buf_printf(&b, "more than %d entries", MAX_PROXIES);
			else
				buf_printf(&b, "\"%s\" is not an IPv4 or IPv6 address", item);
			*err = b.data;
			ok = false;
			break;
		}
		max = n.family == AF_INET ? 32 : 128;
		n.bits = max;
		if (slash)
		{
			char	   *end;
			long		bits = strtol(slash + 1, &end, 10);

			if (end == slash + 1 || *end || bits < 0 || bits > max)
			{
				Buf			b = {0};

				buf_printf(&b, "\"%s/%s\" has a bad prefix length", item, slash + 1);
				*err = b.data;
				ok = false;
				break;
			}
			n.bits = (int) bits;
		}
		proxies[nproxies++] = n;
	}
	free(list);
	return ok;
}

static bool
in_network(const Network *n, int family, const unsigned char *addr)
{
	int			full = n->bits / 8,
				rest = n->bits % 8;

	if (family != n->family || memcmp(addr, n->addr, (size_t) full) != 0)
		return false;
	return rest == 0 || ((addr[full] ^ n->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

static bool
trusted(int family, const unsigned char *addr)
{
	for (int i = 0; i < nproxies; i++)
		if (in_network(&proxies[i], family, addr))
			return true;
	return false;
}

bool
proxy_trusted(const struct sockaddr *sa)
{
	if (sa == NULL || nproxies == 0)
		return false;
	if (sa->sa_family == AF_INET)
		return trusted(AF_INET, (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr);
	if (sa->sa_family == AF_INET6)
		return trusted(AF_INET6, (const unsigned char *) &((const struct sockaddr_in6 *) sa)->sin6_addr);
	return false;
}

void
address_text(const struct sockaddr *sa, char *out, size_t len)
{
	snprintf(out, len, "unknown");
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, out, (socklen_t) len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, out, (socklen_t) len);
}

/* Every X-Forwarded-For line, in order, joined by commas (a proxy may add a
 * line of its own instead of appending to the client's). */
static enum MHD_Result
collect_forwarded(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	Buf		   *b = cls;

	(void) kind;
	if (strcasecmp(key, "X-Forwarded-For") == 0 && value)
	{
		if (b->len)
			buf_puts(b, ",");
		buf_puts(b, value);
	}
	return MHD_YES;
}

void
client_address(struct MHD_Connection *conn, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *peer = ci ? ci->client_addr : NULL;
	Buf			xff = {0};
	char	  **hops = NULL;
	int			nhops = 0;
	char	   *save = NULL;

	address_text(peer, out, len);
	if (!proxy_trusted(peer))
		return;
	MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_forwarded, &xff);
	for (char *h = xff.data ? strtok_r(xff.data, ",", &save) : NULL; h; h = strtok_r(NULL, ",", &save))
	{
		hops = realloc(hops, sizeof(char *) * (size_t) (nhops + 1));
		if (hops == NULL)
			abort();
		hops[nhops++] = h;
	}
	/* from the right: skip the trusted hops; the first other address is the
	 * client.  Something that is not an address stops the walk at the last
	 * trusted hop (no trusted hop wrote it). */
	for (int i = nhops - 1; i >= 0; i--)
	{
		char	   *h = hops[i];
		char	   *e = h + strlen(h);
		unsigned char addr[16];
		int			family;

		while (isspace((unsigned char) *h))
			h++;
		while (e > h && isspace((unsigned char) e[-1]))
			*--e = '\0';
		if (!parse_address(h, &family, addr))
			break;
		snprintf(out, len, "%s", h);
		if (!trusted(family, addr))
			break;
	}
	free(hops);
	buf_free(&xff);
}
