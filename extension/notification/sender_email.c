/*
 * sender_email.c — the email channel: an RFC 5322 message made from a
 * delivery's payload ({to, to_name, subject, text, locale}), sent with
 * libcurl's SMTP to isa.smtp_url (STARTTLS when the server offers it, or
 * required: isa.smtp_tls), and the server's answer judged.
 *
 * The message is plain text in UTF-8, base64-encoded; names and a subject
 * that are not plain printable ASCII become RFC 2047 encoded-words, so no
 * header ever carries a raw non-ASCII byte or a line break taken from a
 * payload (no header injection).  Docs: docs/services/notification.md,
 * "Delivery".
 */
#include "postgres.h"

#include <time.h>

#include "common/base64.h"
#include "lib/stringinfo.h"

#include "sender.h"

/* An encoded-word carries at most this many bytes of text: =?UTF-8?B?<52 chars>?= is 64 columns. */
#define WORD_BYTES 39

/* One UTF-8 character's length from its first byte (1 for a stray byte). */
static int
utf8_len(unsigned char c)
{
	if (c >= 0xF0 && c < 0xF8)
		return 4;
	if (c >= 0xE0)
		return c < 0xF0 ? 3 : 1;
	if (c >= 0xC0)
		return 2;
	return 1;
}

static bool
printable_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < ' ' || (unsigned char) *s > '~')
			return false;
	return true;
}

/*
 * RFC 2047 B encoded-words of a UTF-8 text, cut between characters, folded
 * onto continuation lines (the blank between two words is not part of the
 * text).  Control characters become blanks first.
 */
static void
append_encoded_words(StringInfo buf, const char *text)
{
	char	   *clean = pstrdup(text);
	const char *p = clean;

	for (char *q = clean; *q; q++)
		if ((unsigned char) *q < ' ' || *q == 0x7f)
			*q = ' ';
	while (*p)
	{
		const char *start = p;
		char		b64[128];
		int			n;

		while (*p)
		{
			int			len = utf8_len((unsigned char) *p);

			for (int i = 1; i < len; i++)
				if (p[i] == '\0')	/* a sequence cut short at the end */
					len = i;
			if (p > start && p - start + len > WORD_BYTES)
				break;
			p += len;
		}
		n = pg_b64_encode(start, p - start, b64, sizeof(b64) - 1);
		b64[Max(n, 0)] = '\0';
		appendStringInfo(buf, "%s=?UTF-8?B?%s?=", start == clean ? "" : "\r\n ", b64);
	}
	pfree(clean);
}

/* A display name: an atom sequence, a quoted string, or encoded-words. */
static void
append_phrase(StringInfo buf, const char *name)
{
	if (!printable_ascii(name) || strstr(name, "=?") != NULL)
		append_encoded_words(buf, name);
	else if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~ ") == strlen(name))
		appendStringInfoString(buf, name);
	else
	{
		appendStringInfoChar(buf, '"');
		for (const char *p = name; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(buf, '\\');
			appendStringInfoChar(buf, *p);
		}
		appendStringInfoChar(buf, '"');
	}
}

static void
append_mailbox(StringInfo buf, const char *field, const char *name, const char *address)
{
	appendStringInfo(buf, "%s: ", field);
	if (name != NULL && *name != '\0')
	{
		append_phrase(buf, name);
		appendStringInfoChar(buf, ' ');
	}
	appendStringInfo(buf, "<%s>\r\n", address);
}

/* RFC 5322 date, in UTC, with English names whatever the locale. */
static void
append_date(StringInfo buf)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t		now = time(NULL);
	struct tm	tm;

	gmtime_r(&now, &tm);
	appendStringInfo(buf, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n",
					 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
					 tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* A language tag (BCP 47 shape) for Content-Language, or false. */
static bool
valid_language_tag(const char *tag)
{
	int			run = 0;

	if (tag == NULL || *tag == '\0' || strlen(tag) > 35)
		return false;
	for (const char *p = tag; *p; p++)
	{
		if (*p == '-' || *p == '_')
		{
			if (run == 0)
				return false;
			run = 0;
		}
		else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
		{
			if (++run > 8)
				return false;
		}
		else
			return false;
	}
	return run > 0;
}

/* The body: line breaks made CRLF (text/plain's canonical form), then base64 in lines of 76. */
static void
append_body(StringInfo buf, const char *text)
{
	StringInfoData canon;
	char	   *b64;
	int			n;

	initStringInfo(&canon);
	for (const char *p = text; *p; p++)
	{
		if (*p == '\r' && p[1] == '\n')
			continue;			/* the \n that follows writes the break */
		if (*p == '\r' || *p == '\n')
			appendStringInfoString(&canon, "\r\n");
		else
			appendStringInfoChar(&canon, *p);
	}
	b64 = palloc(pg_b64_enc_len(canon.len) + 1);
	n = pg_b64_encode(canon.data, canon.len, b64, pg_b64_enc_len(canon.len));
	for (int i = 0; i < n; i += 76)
	{
		appendBinaryStringInfo(buf, b64 + i, Min(76, n - i));
		appendStringInfoString(buf, "\r\n");
	}
}

/* The whole message; fields are the payload's, checked by the caller. */
static void
build_message(StringInfo msg, const char *delivery_id, const char *from_name, const char *from_address,
			  const char *to, const char *to_name, const char *subject, const char *text,
			  const char *locale)
{
	append_date(msg);
	append_mailbox(msg, "From", from_name, from_address);
	append_mailbox(msg, "To", to_name, to);
	appendStringInfoString(msg, "Subject: ");
	if (printable_ascii(subject) && strstr(subject, "=?") == NULL && strlen(subject) <= 900)
		appendStringInfoString(msg, subject);
	else
		append_encoded_words(msg, subject);
	appendStringInfo(msg, "\r\nMessage-ID: <%s@isa>\r\n", delivery_id);
	appendStringInfoString(msg, "MIME-Version: 1.0\r\n"
						   "Content-Type: text/plain; charset=UTF-8\r\n"
						   "Content-Transfer-Encoding: base64\r\n"
						   "Auto-Submitted: auto-generated\r\n");
	if (valid_language_tag(locale))
		appendStringInfo(msg, "Content-Language: %s\r\n", locale);
	appendStringInfoString(msg, "\r\n");
	append_body(msg, text);
}

/* libcurl's upload callback: the next bytes of the message. */
static size_t
read_message(char *buffer, size_t size, size_t nitems, void *arg)
{
	SenderTransfer *t = arg;
	size_t		n = Min(size * nitems, t->upload_len - t->upload_pos);

	memcpy(buffer, t->upload + t->upload_pos, n);
	t->upload_pos += n;
	return n;
}

/* libcurl's rewind, to send the message again on a new connection (a kept one had died). */
static int
seek_message(void *arg, curl_off_t offset, int origin)
{
	SenderTransfer *t = arg;

	if (origin != SEEK_SET || offset < 0 || (size_t) offset > t->upload_len)
		return CURL_SEEKFUNC_CANTSEEK;
	t->upload_pos = (size_t) offset;
	return CURL_SEEKFUNC_OK;
}

/* fields: to, to_name, subject, text, locale */
static void
email_prepare(SenderTransfer *t, char **f)
{
	const char *to = f[0];
	const char *to_name = f[1] ? f[1] : "";
	char	   *from_name;
	char	   *from_address;
	StringInfoData msg;
	CURL	   *e;

	if (isa_smtp_url == NULL || *isa_smtp_url == '\0')
	{
		isa_transfer_fail(t, false, "email is not configured: isa.smtp_url is empty");
		return;
	}
	if (isa_smtp_from == NULL || *isa_smtp_from == '\0' ||
		!isa_sender_split_from(isa_smtp_from, &from_name, &from_address))
	{
		isa_transfer_fail(t, false, "email is not configured: isa.smtp_from is empty");
		return;
	}
	if (to == NULL || !isa_sender_valid_address(to))
	{
		isa_transfer_fail(t, false, "the payload's recipient address (to) is missing or not an address isa sends to");
		return;
	}
	if (f[2] == NULL || f[3] == NULL)
	{
		isa_transfer_fail(t, false, "the payload has no %s", f[2] == NULL ? "subject" : "text");
		return;
	}
	initStringInfo(&msg);
	build_message(&msg, t->delivery_id, from_name, from_address, to, to_name, f[2], f[3], f[4]);
	t->upload = msg.data;
	t->upload_len = msg.len;

	e = isa_transfer_easy(t, isa_smtp_url, "smtp,smtps", isa_smtp_timeout);
	if (e == NULL)
		return;
	t->list = curl_slist_append(NULL, psprintf("<%s>", to));
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, psprintf("<%s>", from_address));
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, t->list);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_message);
	curl_easy_setopt(e, CURLOPT_READDATA, t);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_message);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) t->upload_len);
	curl_easy_setopt(e, CURLOPT_USE_SSL, isa_smtp_tls == SMTP_TLS_REQUIRE ? (long) CURLUSESSL_ALL : (long) CURLUSESSL_TRY);
	if (isa_smtp_ca_file != NULL && *isa_smtp_ca_file != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, isa_smtp_ca_file);
	if (isa_smtp_username != NULL && *isa_smtp_username != '\0')
	{
		curl_easy_setopt(e, CURLOPT_USERNAME, isa_smtp_username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, isa_smtp_password ? isa_smtp_password : "");
	}
}

/*
 * The server's last reply decides: 2xx delivered, 4xx later, 5xx never.
 * Without a reply (no connection, a timeout, a dropped line) it is tried
 * again, unless no attempt can ever succeed (no TLS where it is required, a
 * URL libcurl cannot use).
 */
static void
email_judge(SenderTransfer *t, CURLcode rc)
{
	long		reply = 0;
	const char *why = t->curl_error[0] ? t->curl_error : curl_easy_strerror(rc);

	if (rc == CURLE_OK)
	{
		t->ok = true;
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &reply);
	if (reply >= 500 && reply < 600)
		isa_transfer_fail(t, false, "the SMTP server refused the message (%ld): %s", reply, why);
	else if (reply >= 400 && reply < 500)
		isa_transfer_fail(t, true, "the SMTP server deferred the message (%ld): %s", reply, why);
	else if (rc == CURLE_USE_SSL_FAILED)
		isa_transfer_fail(t, false, "the SMTP server offers no STARTTLS and isa.smtp_tls is require: %s", why);
	else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT)
		isa_transfer_fail(t, false, "isa.smtp_url cannot be used: %s", why);
	else
		isa_transfer_fail(t, true, "SMTP: %s", why);
}

static char *
email_describe(void)
{
	if (isa_smtp_url == NULL || *isa_smtp_url == '\0')
		return pstrdup("email is not configured (isa.smtp_url is empty): every email delivery fails at once");
	return psprintf("delivering through %s from %s (STARTTLS %s, timeout %d ms)", isa_smtp_url,
					*isa_smtp_from ? isa_smtp_from : "nobody (isa.smtp_from is empty: every email delivery fails)",
					isa_smtp_tls == SMTP_TLS_REQUIRE ? "required" : "when offered", isa_smtp_timeout);
}

const SenderChannel isa_sender_email = {
	.name = "email",
	.index = ISA_SENDER_EMAIL,
	.payload_fields = "p->>'to', p->>'to_name', p->>'subject', p->>'text', p->>'locale'",
	.nfields = 5,
	.prepare = email_prepare,
	.judge = email_judge,
	.timeout_ms = &isa_smtp_timeout,
	.describe = email_describe,
};
