/*
 * files.c — streamed uploads and ranged downloads (httpd.h says the protocol).
 *
 * An upload never holds the body: every 256 KiB go to put_chunk in their own
 * transaction (each after isa.http_begin, so an ended session stops an upload)
 * while the SHA-256 is computed on the way; finish_upload checks size and
 * digest and makes the file visible; an upload that ends otherwise goes at
 * once (abort_upload).  A download reads 256 KiB at a time
 * through read_file as the client takes them.  Connections are taken from the
 * pool per chunk, so a slow client does not hold one.
 */
#include "httpd.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (256 * 1024)

struct Upload
{
	char	   *put_sql;
	char	   *finish_sql;
	char	   *abort_sql;
	bool		finished;		/* finish_upload ran (and answered) */
	char	   *upload_id;
	const char *const *begin_params;	/* owned by the request */
	int			seq;
	Buf			pending;
	crypto_hash_sha256_state sha;
	bool		failed;
};

/* Runs one call with the pool (and the request's isa.http_begin when given). */
static void
run_call(const char *const *begin_params, Call *call, SqlResult *res)
{
	bool		timed_out;
	PoolConn   *c = pool_acquire(&timed_out);

	if (c == NULL)
	{
		memset(res, 0, sizeof *res);
		snprintf(res->err.sqlstate, sizeof res->err.sqlstate, "%s", "08006");
		res->err.message = xstrdup(timed_out ? "all database connections are busy" : "the database is not reachable");
		res->broken = true;
		return;
	}
	pool_run(c, begin_params, call, -1, res);
	pool_release(c);
}

Upload *
upload_start(const char *schema, const char *upload_id, const char *const *begin_params)
{
	Upload	   *u = xcalloc(1, sizeof(Upload));
	Buf			b = {0};

	buf_printf(&b, "%s.put_chunk($9::uuid, $10::integer, $11::bytea) x", schema);
	u->put_sql = sql_with_begin("NULL::text", b.data);
	b.len = 0;
	buf_printf(&b, "to_jsonb(%s.finish_upload($9::uuid, $10::text))::text", schema);
	u->finish_sql = sql_with_begin(b.data, NULL);
	b.len = 0;
	buf_printf(&b, "SELECT %s.abort_upload($1::uuid)::text", schema);
	u->abort_sql = b.data;
	u->upload_id = xstrdup(upload_id);
	u->begin_params = begin_params;
	crypto_hash_sha256_init(&u->sha);
	return u;
}

static bool
flush_chunk(Upload *u, SqlResult *err)
{
	char		seq[16];
	char	   *params[3];
	int			lengths[3] = {0, 0, (int) u->pending.len};
	int			formats[3] = {0, 0, 1};
	Call		call = {0};

	snprintf(seq, sizeof seq, "%d", u->seq);
	params[0] = u->upload_id;
	params[1] = seq;
	params[2] = u->pending.data ? u->pending.data : (char *) "";
	call.sql = u->put_sql;
	call.nparams = 3;
	call.params = params;
	call.lengths = lengths;
	call.formats = formats;
	run_call(u->begin_params, &call, err);
	u->pending.len = 0;
	if (!err->ok)
	{
		u->failed = true;
		return false;
	}
	sql_result_clear(err);
	u->seq++;
	return true;
}

bool
upload_write(Upload *u, const char *data, size_t n, SqlResult *err)
{
	if (u->failed)
		return false;
	crypto_hash_sha256_update(&u->sha, (const unsigned char *) data, n);
	while (n > 0)
	{
		size_t		take = CHUNK - u->pending.len;

		if (take > n)
			take = n;
		buf_append(&u->pending, data, take);
		data += take;
		n -= take;
		if (u->pending.len == CHUNK && !flush_chunk(u, err))
			return false;
	}
	return true;
}

void
upload_finish(Upload *u, SqlResult *res)
{
	unsigned char digest[crypto_hash_sha256_BYTES];
	char		hex[crypto_hash_sha256_BYTES * 2 + 1];
	char	   *params[2];
	Call		call = {0};

	if (u->pending.len > 0 && !flush_chunk(u, res))
		return;
	crypto_hash_sha256_final(&u->sha, digest);
	sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
	params[0] = u->upload_id;
	params[1] = hex;
	call.sql = u->finish_sql;
	call.nparams = 2;
	call.params = params;
	run_call(u->begin_params, &call, res);
	u->finished = res->ok;
}

/* An upload that ends unfinished (the client went away, a chunk or the
 * finish was refused) is removed at once, not left for the purge. */
void
upload_abort(Upload *u)
{
	char	   *params[1] = {u->upload_id};
	Call		call = {0};
	SqlResult	res;

	if (u->finished)
		return;
	call.sql = u->abort_sql;
	call.nparams = 1;
	call.params = params;
	run_call(NULL, &call, &res);
	if (!res.ok)
		log_line("upload %s could not be aborted: SQLSTATE %s %s", u->upload_id, res.err.sqlstate,
				 res.err.message ? res.err.message : "");
	u->finished = true;
	sql_result_clear(&res);
}

void
upload_free(Upload *u)
{
	if (u == NULL)
		return;
	free(u->put_sql);
	free(u->finish_sql);
	free(u->abort_sql);
	free(u->upload_id);
	buf_free(&u->pending);
	free(u);
}

/* ---------------------------------------------------------------- downloads */

typedef struct Download
{
	char	   *read_sql;
	char	   *file_id;
	uint64_t	first;			/* the first byte sent */
	Buf			buf;			/* bytes read, from buf_pos */
	uint64_t	buf_pos;
} Download;

static ssize_t
download_read(void *cls, uint64_t pos, char *out, size_t max)
{
	Download   *d = cls;
	uint64_t	at = d->first + pos;

	if (at < d->buf_pos || at >= d->buf_pos + d->buf.len)
	{
		char		offset[32];
		char		length[16];
		char	   *params[3];
		Call		call = {0};
		SqlResult	res;

		snprintf(offset, sizeof offset, "%" PRIu64, at);
		snprintf(length, sizeof length, "%d", CHUNK);
		params[0] = d->file_id;
		params[1] = offset;
		params[2] = length;
		call.sql = d->read_sql;
		call.nparams = 3;
		call.params = params;
		call.binary_result = true;
		run_call(NULL, &call, &res);
		if (!res.ok || res.value == NULL || res.value_len == 0)
		{
			if (!res.ok)
				log_line("download of %s stopped at byte %" PRIu64 ": SQLSTATE %s %s", d->file_id, at,
						 res.err.sqlstate, res.err.message ? res.err.message : "");
			sql_result_clear(&res);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		buf_free(&d->buf);
		d->buf.data = res.value;
		d->buf.len = d->buf.cap = res.value_len;
		d->buf_pos = at;
		res.value = NULL;
		sql_result_clear(&res);
	}
	size_t		n = (size_t) (d->buf_pos + d->buf.len - at);

	if (n > max)
		n = max;
	memcpy(out, d->buf.data + (at - d->buf_pos), n);
	return (ssize_t) n;
}

static void
download_free(void *cls)
{
	Download   *d = cls;

	free(d->read_sql);
	free(d->file_id);
	buf_free(&d->buf);
	free(d);
}

/*
 * One range of "bytes=a-b", "bytes=a-" or "bytes=-n" against size; false when
 * it is malformed, several ranges, or unsatisfiable (416).
 */
static bool
parse_range(const char *h, uint64_t size, uint64_t *first, uint64_t *last)
{
	char	   *end;
	unsigned long long a,
				b;

	while (*h == ' ')
		h++;
	h += 6;					/* "bytes=": the caller ignores other units */
	if (strchr(h, ','))
		return false;
	if (*h == '-')
	{
		if (!isdigit((unsigned char) h[1]))
			return false;
		errno = 0;
		b = strtoull(h + 1, &end, 10);
		if (errno || *end || b == 0 || size == 0)
			return false;
		*first = b >= size ? 0 : size - b;
		*last = size - 1;
		return true;
	}
	if (!isdigit((unsigned char) *h))
		return false;
	errno = 0;
	a = strtoull(h, &end, 10);
	if (errno || *end != '-' || a >= size)
		return false;
	h = end + 1;
	if (*h == '\0')
		b = size - 1;
	else
	{
		if (!isdigit((unsigned char) *h))
			return false;
		b = strtoull(h, &end, 10);
		if (errno || *end || b < a)
			return false;
		if (b >= size)
			b = size - 1;
	}
	*first = a;
	*last = b;
	return true;
}

static bool
etag_matches(const char *header, const char *etag)
{
	const char *p = header;
	size_t		n = strlen(etag);

	if (!strcmp(header, "*"))
		return true;
	while ((p = strstr(p, etag)) != NULL)
	{
		if ((p == header || p[-1] == ' ' || p[-1] == ',' || (p >= header + 2 && p[-1] == '/' && p[-2] == 'W')) &&
			(p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return true;
		p += n;
	}
	return false;
}

/* filename*=UTF-8''… (RFC 6266 / 5987), so any name is safe in the header */
static void
content_disposition(Buf *out, const char *name)
{
	buf_puts(out, "attachment; filename*=UTF-8''");
	for (const unsigned char *p = (const unsigned char *) name; *p; p++)
	{
		if (isalnum(*p) || strchr("!#$&+-.^_`|~", *p))
			buf_append(out, (const char *) p, 1);
		else
			buf_printf(out, "%%%02X", *p);
	}
}

struct MHD_Response *
download_response(const char *schema, const char *file_json, const char *range,
				  const char *if_none_match, bool head, int *status, const char **message)
{
	json_error_t jerr;
	json_t	   *info = json_loads(file_json ? file_json : "null", 0, &jerr);
	json_t	   *jsize = json_object_get(info, "size");
	const char *sha = json_string_value(json_object_get(info, "sha256"));
	const char *file_id = json_string_value(json_object_get(info, "file_id"));
	const char *ctype = json_string_value(json_object_get(info, "content_type"));
	const char *name = json_string_value(json_object_get(info, "name"));
	struct MHD_Response *resp;
	char		etag[80];
	uint64_t	size,
				first = 0,
				last = 0;
	Buf			b = {0};

	(void) head;
	if (!json_is_integer(jsize) || json_integer_value(jsize) < 0 || !sha || strlen(sha) > 64 || !file_id)
	{
		json_decref(info);
		*status = 500;
		*message = "the download route did not return a file (file_id, size, sha256)";
		return NULL;
	}
	size = (uint64_t) json_integer_value(jsize);
	snprintf(etag, sizeof etag, "\"%s\"", sha);

	if (if_none_match && etag_matches(if_none_match, etag))
	{
		/* libmicrohttpd 0.9.75 adds "Content-Length: 0" to it, which RFC 9110
		 * §8.6 frowns on (docs/http.md, Gaps) */
		*status = 304;
		resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
	}
	else if (range && strncmp(range + strspn(range, " "), "bytes=", 6) == 0 &&
			 !parse_range(range, size, &first, &last))
	{
		*status = 416;
		resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
		buf_printf(&b, "bytes */%" PRIu64, size);
		MHD_add_response_header(resp, "Content-Range", b.data);
		b.len = 0;
	}
	else
	{
		Download   *d = xcalloc(1, sizeof(Download));
		uint64_t	len;

		/* a range in another unit than bytes is ignored (RFC 9110 §14.2) */
		if (range && strncmp(range + strspn(range, " "), "bytes=", 6) != 0)
			range = NULL;
		if (range)
		{
			*status = 206;
			len = last - first + 1;
		}
		else
		{
			*status = 200;
			first = 0;
			len = size;
		}
		buf_printf(&b, "SELECT %s.read_file($1::uuid, $2::bigint, $3::integer)", schema);
		d->read_sql = b.data;
		b = (Buf) {0};
		d->file_id = xstrdup(file_id);
		d->first = first;
		/* HEAD: libmicrohttpd sends the headers (with this length) and never reads */
		if (len == 0)
		{
			download_free(d);
			resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
		}
		else
			resp = MHD_create_response_from_callback(len, CHUNK, download_read, d, download_free);
		if (*status == 206)
		{
			buf_printf(&b, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
			MHD_add_response_header(resp, "Content-Range", b.data);
			b.len = 0;
		}
		MHD_add_response_header(resp, "Content-Type", ctype ? ctype : "application/octet-stream");
		if (name)
		{
			content_disposition(&b, name);
			MHD_add_response_header(resp, "Content-Disposition", b.data);
		}
	}
	MHD_add_response_header(resp, "ETag", etag);
	MHD_add_response_header(resp, "Accept-Ranges", "bytes");
	buf_free(&b);
	json_decref(info);
	return resp;
}
