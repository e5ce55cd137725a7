/*
 * manifest.c — the release manifest's parser (docs/services/ota.md, "The
 * manifest"): a flat JSON object of known members, strictly checked.  Its
 * bytes are what the vendor signs, so the parser accepts one shape only and
 * says precisely what is wrong; it allocates one buffer for the strings.
 */
#include "ota.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct P
{
	const char *s;
	size_t		len;
	size_t		i;
	char	   *out;			/* the strings, NUL-terminated, one after another */
	size_t		outlen;
	char	   *err;
	size_t		errlen;
} P;

static bool
fail(P *p, const char *what)
{
	snprintf(p->err, p->errlen, "%s (at byte %zu)", what, p->i);
	return false;
}

static void
skip_ws(P *p)
{
	while (p->i < p->len && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
		p->i++;
}

/* The length of the UTF-8 sequence at s[0..n), 0 when invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned	c = s[0];
	size_t		k;
	unsigned	cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		k = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		k = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		k = 4, cp = c & 0x07;
	else
		return 0;
	if (n < k)
		return 0;
	for (size_t j = 1; j < k; j++)
	{
		if ((s[j] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[j] & 0x3F);
	}
	if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return k;
}

/* A JSON string into p->out; *res points at its copy. */
static bool
parse_string(P *p, char **res)
{
	char	   *start = p->out + p->outlen;

	if (p->i >= p->len || p->s[p->i] != '"')
		return fail(p, "a string was expected");
	p->i++;
	for (;;)
	{
		unsigned char c;
		size_t		k;

		if (p->i >= p->len)
			return fail(p, "unterminated string");
		c = (unsigned char) p->s[p->i];
		if (c == '"')
			break;
		if (c < 0x20 || c == 0x7F)
			return fail(p, "a control character in a string");
		if (c == '\\')
		{
			char		e;

			if (p->i + 1 >= p->len)
				return fail(p, "unterminated string");
			e = p->s[p->i + 1];
			switch (e)
			{
				case '"':
				case '\\':
				case '/':
					p->out[p->outlen++] = e;
					p->i += 2;
					continue;
				default:
					return fail(p, "an escape other than \\\" \\\\ \\/ in a string");
			}
		}
		k = utf8_len((const unsigned char *) p->s + p->i, p->len - p->i);
		if (k == 0)
			return fail(p, "a string that is not valid UTF-8");
		memcpy(p->out + p->outlen, p->s + p->i, k);
		p->outlen += k;
		p->i += k;
	}
	p->i++;
	p->out[p->outlen++] = '\0';
	*res = start;
	return true;
}

static bool
parse_size(P *p, uint64_t *res)
{
	size_t		start = p->i;
	uint64_t	v = 0;

	while (p->i < p->len && p->s[p->i] >= '0' && p->s[p->i] <= '9')
	{
		unsigned	d = (unsigned) (p->s[p->i] - '0');

		if (v > (UINT64_MAX - d) / 10 || v * 10 + d > (uint64_t) INT64_MAX)
			return fail(p, "size is too large");
		v = v * 10 + d;
		p->i++;
	}
	if (p->i == start)
		return fail(p, "size must be a positive integer");
	if (p->s[start] == '0')
		return fail(p, "size must be a positive integer without leading zero");
	if (p->i < p->len && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
		return fail(p, "size must be an integer");
	*res = v;
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool
uuid_ok(const char *u)
{
	if (strlen(u) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (u[i] != '-')
				return false;
		}
		else if (hexval(u[i]) < 0)
			return false;
	}
	return true;
}

enum
{
	F_FORMAT, F_MODEL, F_VERSION, F_SHA256, F_SIZE, F_FILE_ID, F_NOTES, F_COUNT
};
static const char *const field_names[F_COUNT] = {"format", "model", "version", "sha256", "size", "file_id", "notes"};

bool
ota_manifest_parse(const char *s, size_t len, OtaManifest *m, char *err, size_t errlen)
{
	P			p = {.s = s, .len = len, .err = err, .errlen = errlen};
	bool		seen[F_COUNT] = {false};
	char	   *sha = NULL;

	memset(m, 0, sizeof *m);
	if (s == NULL || len == 0)
		return fail(&p, "the manifest is empty");
	if (len > OTA_MANIFEST_MAX)
	{
		snprintf(err, errlen, "the manifest is larger than %d bytes", OTA_MANIFEST_MAX);
		return false;
	}
	/* every string is shorter than the input: one buffer holds them all */
	p.out = malloc(len + 1);
	if (p.out == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	m->buf = p.out;
	skip_ws(&p);
	if (p.i >= len || s[p.i] != '{')
		goto bad_object;
	p.i++;
	skip_ws(&p);
	if (p.i < len && s[p.i] == '}')
		goto missing;
	for (;;)
	{
		char	   *key;
		int			f;

		skip_ws(&p);
		if (!parse_string(&p, &key))
			goto out;
		for (f = 0; f < F_COUNT; f++)
			if (strcmp(key, field_names[f]) == 0)
				break;
		if (f == F_COUNT)
		{
			snprintf(err, errlen, "unknown member \"%.40s\" (the members are format, model, version, sha256, size, file_id and notes)", key);
			goto out;
		}
		if (seen[f])
		{
			snprintf(err, errlen, "member \"%s\" appears twice", key);
			goto out;
		}
		seen[f] = true;
		p.outlen = key - p.out;	/* the key's copy is not kept */
		skip_ws(&p);
		if (p.i >= len || s[p.i] != ':')
		{
			fail(&p, "':' was expected");
			goto out;
		}
		p.i++;
		skip_ws(&p);
		if (f == F_SIZE)
		{
			if (!parse_size(&p, &m->size))
				goto out;
		}
		else
		{
			char	   *v;

			if (!parse_string(&p, &v))
				goto out;
			switch (f)
			{
				case F_FORMAT: m->format = v; break;
				case F_MODEL: m->model = v; break;
				case F_VERSION: m->version = v; break;
				case F_SHA256: sha = v; break;
				case F_FILE_ID: m->file_id = v; break;
				default: m->notes = v; break;
			}
		}
		skip_ws(&p);
		if (p.i < len && s[p.i] == ',')
		{
			p.i++;
			continue;
		}
		if (p.i < len && s[p.i] == '}')
			break;
		goto bad_object;
	}
	p.i++;
	skip_ws(&p);
	if (p.i != len)
	{
		fail(&p, "text after the manifest's object");
		goto out;
	}
	for (int f = 0; f < F_COUNT; f++)
		if (!seen[f] && f != F_NOTES)
			goto missing;
	if (strcmp(m->format, "isa-ota-manifest/1") != 0)
	{
		snprintf(err, errlen, "format must be \"isa-ota-manifest/1\"");
		goto out;
	}
	if (m->model[0] == '\0' || strlen(m->model) > 100)
	{
		snprintf(err, errlen, "model must be 1 to 100 bytes");
		goto out;
	}
	if (!ota_version_valid(m->version, strlen(m->version)))
	{
		snprintf(err, errlen, "version \"%.64s\" is not a semantic version (SemVer 2.0.0, e.g. 1.2.0 or 1.3.0-rc.1)", m->version);
		goto out;
	}
	if (strlen(sha) != 64)
	{
		snprintf(err, errlen, "sha256 must be 64 lower-case hexadecimal digits");
		goto out;
	}
	for (int i = 0; i < 32; i++)
	{
		int			hi = hexval(sha[2 * i]),
					lo = hexval(sha[2 * i + 1]);

		if (hi < 0 || lo < 0)
		{
			snprintf(err, errlen, "sha256 must be 64 lower-case hexadecimal digits");
			goto out;
		}
		m->sha256[i] = (uint8_t) (hi * 16 + lo);
	}
	if (!uuid_ok(m->file_id))
	{
		snprintf(err, errlen, "file_id must be a UUID in lower-case text");
		goto out;
	}
	if (m->notes && strlen(m->notes) > 2000)
	{
		snprintf(err, errlen, "notes must be at most 2000 bytes");
		goto out;
	}
	return true;

missing:
	{
		const char *what = "format";

		for (int f = 0; f < F_COUNT; f++)
			if (!seen[f] && f != F_NOTES)
			{
				what = field_names[f];
				break;
			}
		snprintf(err, errlen, "member \"%s\" is missing", what);
		goto out;
	}
bad_object:
	fail(&p, "the manifest must be one JSON object of strings and the integer size");
out:
	ota_manifest_free(m);
	return false;
}

void
ota_manifest_free(OtaManifest *m)
{
	free(m->buf);
	memset(m, 0, sizeof *m);
}
