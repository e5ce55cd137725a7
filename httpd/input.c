/*
 * input.c — reading a request: percent-decoding (%00 kept out of C
 * strings), control characters, query arguments, headers (for
 * request.headers), the client's socket, request ids.  Who the client is
 * (its address, behind a proxy) is client.c's.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* control characters, and %00 (unescape() decodes it as DEL) */
bool
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 || (unsigned char) *s == 0x7f)
			return true;
	return false;
}


enum MHD_Result
collect(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	KV		   *kv = cls;

	(void) kind;
	if (has_control(key) || (value && has_control(value)))
		kv->control = true;
	for (int i = 0; i < kv->n; i++)
		if (!strcmp(kv->items[i].name, key))
		{
			kv->duplicate = true;
			kv->dup_name = key;
		}
	if (kv->n == kv->cap)
	{
		kv->cap = kv->cap ? kv->cap * 2 : 16;
		Source	   *p = realloc(kv->items, sizeof(Source) * (size_t) kv->cap);

		if (p == NULL)
			return MHD_NO;
		kv->items = p;
	}
	kv->items[kv->n].name = key;
	kv->items[kv->n].value = value ? value : "";
	kv->n++;
	return MHD_YES;
}

const char *
lookup_header(void *ctx, const char *name)
{
	return MHD_lookup_connection_value((struct MHD_Connection *) ctx, MHD_HEADER_KIND, name);
}

bool
valid_request_id(const char *s)
{
	size_t		n = s ? strlen(s) : 0;

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && !strchr("-_.:", s[i]))
			return false;
	return true;
}

void
new_request_id(char *out)
{
	unsigned char b[16];

	randombytes_buf(b, sizeof b);
	b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

int
client_fd(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

/* The request headers as a JSON object (lower-case names), without the
 * credentials: request.headers in SQL. */
enum MHD_Result
collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	json_t	   *o = cls;
	char		name[128];
	size_t		i;

	(void) kind;
	for (i = 0; key[i] && i < sizeof name - 1; i++)
		name[i] = (char) tolower((unsigned char) key[i]);
	name[i] = '\0';
	if (!strcmp(name, "authorization") || !strcmp(name, "cookie") || !strcmp(name, "stripe-signature"))
		return MHD_YES;
	json_object_set_new(o, name, json_string(value ? value : ""));
	return MHD_YES;
}

bool
is_json_content_type(const char *ct)
{
	size_t		n = strlen("application/json");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * Percent-decoding of paths and query arguments, as libmicrohttpd's own, but
 * %00 becomes DEL (0x7f) instead of a NUL that would cut the C string short
 * ("evil.exe%00.txt" read as "evil.exe"): split_path and the query check
 * refuse control characters, so such a request is a 400.
 */
size_t
request_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	char	   *w = s;

	(void) cls;
	(void) conn;
	for (const char *r = s; *r; r++)
	{
		int			hi,
					lo;

		if (r[0] == '%' && (hi = hexdigit(r[1])) >= 0 && (lo = hexdigit(r[2])) >= 0)
		{
			int			c = hi * 16 + lo;

			*w++ = c == 0 ? 0x7f : (char) c;
			r += 2;
		}
		else
			*w++ = *r;
	}
	*w = '\0';
	return (size_t) (w - s);
}

