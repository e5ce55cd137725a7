/*
 * sender_webhook.c — the webhook channel: the payload's body POSTed as JSON
 * to its URL, signed the way Stripe signs its webhooks, and the answer
 * judged.
 *
 *   Isa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *   Isa-Delivery: <delivery id>     (the same on every attempt: a receiver's dedupe key)
 *
 * The body is posted exactly as signed.  A receiver checks the signature
 * with its secret and refuses an old t (a replay).  No redirect is followed,
 * no proxy taken from the environment, and, unless
 * isa.notification_webhook_private is on, no connection is made to a
 * loopback, private, link-local or otherwise internal address: checked on
 * the address the host name resolved to, when connecting and again before
 * each request (a connection kept from an earlier delivery too), so that a
 * name that resolves to an internal address later than the URL was
 * registered (DNS rebinding) is refused as well.  Docs: docs/services/notification.md,
 * "Delivery".
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "utils/builtins.h"
#include "utils/guc.h"

#include "isa.h"
#include "sender.h"

/* isa.notification_webhook_private at the last prepare (read by the socket callback). */
static bool private_allowed = false;

/*
 * The notification service's setting (notification_settings.c): the rule
 * its register_webhook applies to a URL's literal host, applied here to the
 * address a name resolves to.  Read by name: the variable is that file's.
 */
static bool
read_private_allowed(void)
{
	const char *v = GetConfigOption("isa.notification_webhook_private", true, false);
	bool		on = false;

	return v != NULL && parse_bool(v, &on) && on;
}

static bool
internal_ipv4(uint32 a)
{
	return (a >> 24) == 0 ||	/* 0.0.0.0/8, "this network" */
		(a >> 24) == 10 ||		/* 10/8 */
		(a >> 24) == 127 ||		/* loopback */
		(a >> 16) == 0xA9FE ||	/* 169.254/16, link-local (cloud metadata) */
		(a >> 20) == 0xAC1 ||	/* 172.16/12 */
		(a >> 16) == 0xC0A8 ||	/* 192.168/16 */
		(a >> 22) == (100 << 2 | 1) ||	/* 100.64/10, shared (carrier NAT) */
		(a >> 28) >= 0xE;		/* multicast, reserved, broadcast */
}

static bool
internal_address(int family, const void *address)
{
	if (family == AF_INET)
		return internal_ipv4(ntohl(((const struct in_addr *) address)->s_addr));
	if (family == AF_INET6)
	{
		const struct in6_addr *a = address;

		if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a))
			return internal_ipv4((uint32) a->s6_addr[12] << 24 | (uint32) a->s6_addr[13] << 16 |
								 (uint32) a->s6_addr[14] << 8 | a->s6_addr[15]);
		return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
			IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a) || IN6_IS_ADDR_MULTICAST(a) ||
			(a->s6_addr[0] & 0xFE) == 0xFC; /* fc00::/7, unique local */
	}
	return true;				/* no other family is a webhook's */
}

static void
refuse(SenderTransfer *t, int family, const void *address)
{
	t->refused_address = true;
	if (inet_ntop(family, address, t->refused_ip, sizeof(t->refused_ip)) == NULL)
		strlcpy(t->refused_ip, "?", sizeof(t->refused_ip));
}

/* libcurl's socket callback: a new connection to an internal address is never made. */
static curl_socket_t
open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *address)
{
	int			family = address->addr.sa_family;
	const void *ip = family == AF_INET6
		? (const void *) &((struct sockaddr_in6 *) &address->addr)->sin6_addr
		: (const void *) &((struct sockaddr_in *) &address->addr)->sin_addr;

	if (!private_allowed && internal_address(family, ip))
	{
		refuse(arg, family, ip);
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * libcurl's callback before each request, on a new connection or one kept
 * from an earlier delivery (made while the setting was on): nothing is sent
 * to an internal address.
 */
static int
before_request(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	unsigned char ip[sizeof(struct in6_addr)];
	int			family = strchr(primary_ip, ':') != NULL ? AF_INET6 : AF_INET;

	SenderTransfer *t = arg;

	if (private_allowed)
		return CURL_PREREQFUNC_OK;
	if (inet_pton(family, primary_ip, ip) != 1)
	{
		t->refused_address = true;
		strlcpy(t->refused_ip, primary_ip, sizeof(t->refused_ip));
		return CURL_PREREQFUNC_ABORT;
	}
	if (internal_address(family, ip))
	{
		refuse(t, family, ip);
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/* The receiver's answer is not read. */
static size_t
discard(char *data, size_t size, size_t nmemb, void *arg)
{
	return size * nmemb;
}

/* fields: url, secret, body (the JSON text to post) */
static void
webhook_prepare(SenderTransfer *t, char **f)
{
	const char *url = f[0];
	const char *secret = f[1];
	const char *body = f[2];
	long		now = (long) time(NULL);
	char	   *signed_text;
	unsigned char mac[32];
	char		hex[65];
	CURL	   *e;

	if (url == NULL || (pg_strncasecmp(url, "http://", 7) != 0 && pg_strncasecmp(url, "https://", 8) != 0))
	{
		isa_transfer_fail(t, false, "the payload's url is missing or not an http(s) URL");
		return;
	}
	if (secret == NULL || *secret == '\0' || body == NULL)
	{
		isa_transfer_fail(t, false, "the payload has no %s", body == NULL ? "body" : "secret");
		return;
	}
	signed_text = psprintf("%ld.%s", now, body);
	isa_hmac_sha256_buf(mac, (const unsigned char *) secret, strlen(secret),
						(const unsigned char *) signed_text, strlen(signed_text));
	hex[hex_encode((const char *) mac, sizeof(mac), hex)] = '\0';

	e = isa_transfer_easy(t, url, "http,https", isa_webhook_timeout);
	if (e == NULL)
		return;
	private_allowed = read_private_allowed();
	t->list = curl_slist_append(t->list, "Content-Type: application/json");
	t->list = curl_slist_append(t->list, psprintf("Isa-Signature: t=%ld,v1=%s", now, hex));
	t->list = curl_slist_append(t->list, psprintf("Isa-Delivery: %s", t->delivery_id));
	t->list = curl_slist_append(t->list, "User-Agent: isa-notification-sender");
	t->list = curl_slist_append(t->list, "Expect:");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->list);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(body));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, before_request);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
}

/*
 * 2xx delivered; 408, 429, 5xx, no connection or a timeout: later; any other
 * answer (4xx, a redirect, which is not followed) never.
 */
static void
webhook_judge(SenderTransfer *t, CURLcode rc)
{
	long		status = 0;

	if (rc != CURLE_OK)
	{
		const char *why = t->curl_error[0] ? t->curl_error : curl_easy_strerror(rc);

		if (t->refused_address)
			isa_transfer_fail(t, false, "the webhook's host is %s, an internal address (isa.notification_webhook_private is off)",
							  t->refused_ip);
		else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT)
			isa_transfer_fail(t, false, "the webhook's URL cannot be used: %s", why);
		else
			isa_transfer_fail(t, true, "webhook: %s", why);
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300)
		t->ok = true;
	else
		isa_transfer_fail(t, status == 408 || status == 429 || status >= 500,
						  "the webhook answered HTTP %ld%s", status,
						  status >= 300 && status < 400 ? " (redirects are not followed)" : "");
}

static char *
webhook_describe(void)
{
	return psprintf("delivering with internal addresses %s, timeout %d ms",
					read_private_allowed() ? "allowed (isa.notification_webhook_private)" : "refused",
					isa_webhook_timeout);
}

const SenderChannel isa_sender_webhook = {
	.name = "webhook",
	.index = ISA_SENDER_WEBHOOK,
	.payload_fields = "p->>'url', p->>'secret', (p->'body')::text",
	.nfields = 3,
	.prepare = webhook_prepare,
	.judge = webhook_judge,
	.timeout_ms = &isa_webhook_timeout,
	.describe = webhook_describe,
};
