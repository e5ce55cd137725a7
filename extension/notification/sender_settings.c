/*
 * sender_settings.c — the notification senders' settings (docs/configuration.md,
 * docs/services/notification.md, "Delivery"), registered by _PG_init through
 * isa_notification_sender_define_gucs(): the SMTP server, the sender
 * address and credentials, TLS, the timeouts, how many transfers a sender keeps in
 * flight, and the switch that stops both senders.  They are read only by the
 * senders' own processes, so each is sighup: set in postgresql.conf or with
 * ALTER SYSTEM, then reload.  Also here: the syntax of a mail address, which
 * the check of isa.smtp_from and the email sender's check of each recipient
 * share.  The notification service's own settings (retries, the webhook
 * address policy) are in notification_settings.c.
 */
#include "postgres.h"

#include "utils/guc.h"

#include "sender.h"

bool		isa_notification_senders = true;
char	   *isa_smtp_url = NULL;
char	   *isa_smtp_from = NULL;
char	   *isa_smtp_username = NULL;
char	   *isa_smtp_password = NULL;
char	   *isa_smtp_ca_file = NULL;
int			isa_smtp_tls = SMTP_TLS_TRY;
int			isa_smtp_timeout = 30000;
int			isa_webhook_timeout = 10000;
int			isa_notification_sender_concurrency = 8;

static const struct config_enum_entry smtp_tls_options[] = {
	{"try", SMTP_TLS_TRY, false},
	{"require", SMTP_TLS_REQUIRE, false},
	{NULL, 0, false}
};

/*
 * An address as isa sends to it: local@domain in printable ASCII without
 * blanks, quotes, brackets or the other characters that would need quoting
 * in a header, at most 254 bytes.  Stricter than RFC 5321 (no quoted local
 * parts, no address literals): what it refuses could end up in a header.
 */
bool
isa_sender_valid_address(const char *address)
{
	const char *at = strchr(address, '@');
	size_t		len = strlen(address);
	const char *p;

	if (at == NULL || at == address || strchr(at + 1, '@') != NULL ||
		len > 254 || at - address > 64 || at[1] == '\0')
		return false;
	for (p = address; p < at; p++)
		if (*p <= ' ' || *p >= 0x7f || strchr("<>()[]\\,;:\"", *p) != NULL)
			return false;
	/* the domain: labels of letters, digits and hyphens */
	if (at[1] == '.' || address[len - 1] == '.' || strstr(at, "..") != NULL)
		return false;
	for (p = at + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return false;
	return true;
}

/*
 * isa.smtp_from, "Display Name <address>" or a bare address, into its two
 * parts (palloc'd; name "" when there is none).  False when malformed: no
 * valid address, or a control character in the name.
 */
bool
isa_sender_split_from(const char *from, char **name, char **address)
{
	char	   *copy = pstrdup(from);
	char	   *end = copy + strlen(copy);
	char	   *open;
	char	   *n;

	while (end > copy && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	open = strrchr(copy, '<');
	if (end > copy && end[-1] == '>' && open != NULL)
	{
		end[-1] = '\0';
		*open = '\0';
		*address = pstrdup(open + 1);
		n = copy;
		while (*n == ' ' || *n == '\t')
			n++;
		end = n + strlen(n);
		while (end > n && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (end - n >= 2 && n[0] == '"' && end[-1] == '"')
		{
			end[-1] = '\0';
			n++;
		}
		*name = pstrdup(n);
	}
	else
	{
		n = copy;
		while (*n == ' ' || *n == '\t')
			n++;
		*address = pstrdup(n);
		*name = pstrdup("");
	}
	for (n = *name; *n; n++)
		if ((unsigned char) *n < ' ' || *n == 0x7f || *n == '"' || *n == '\\')
			return false;
	return isa_sender_valid_address(*address);
}

static bool
check_smtp_from(char **newval, void **extra, GucSource source)
{
	char	   *name;
	char	   *address;

	if (**newval == '\0' || isa_sender_split_from(*newval, &name, &address))
		return true;
	GUC_check_errdetail("Write \"Display Name <sender@example.com>\" or a bare address; the name without quotes, backslashes or control characters.");
	return false;
}

/*
 * smtp:// or smtps://, without credentials: a URL is shown where a secret is
 * not (pg_settings, the log), so they go into isa.smtp_username and
 * isa.smtp_password.
 */
static bool
check_smtp_url(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	const char *host;

	if (*v == '\0')
		return true;
	if (pg_strncasecmp(v, "smtp://", 7) == 0)
		host = v + 7;
	else if (pg_strncasecmp(v, "smtps://", 8) == 0)
		host = v + 8;
	else
	{
		GUC_check_errdetail("The URL starts with smtp:// (STARTTLS as isa.smtp_tls says) or smtps:// (TLS from the start).");
		return false;
	}
	if (memchr(host, '@', strcspn(host, "/")) != NULL)
	{
		GUC_check_errdetail("Credentials go into isa.smtp_username and isa.smtp_password, not into the URL.");
		return false;
	}
	for (; *v; v++)
		if ((unsigned char) *v <= ' ' || *v == 0x7f)
		{
			GUC_check_errdetail("The URL contains a blank or a control character.");
			return false;
		}
	return true;
}

void
isa_notification_sender_define_gucs(void)
{
	DefineCustomBoolVariable("isa.notification_senders",
							 "Whether the notification senders deliver email and webhooks.",
							 "Off: the workers stay up and deliver nothing; deliveries wait in notification.deliveries.",
							 &isa_notification_senders, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.smtp_url",
							   "SMTP server the email sender delivers through, e.g. smtp://mail.example.com:587.",
							   "Empty: email is not configured and every email delivery fails at once (the next channel is tried).",
							   &isa_smtp_url, "", PGC_SIGHUP, 0, check_smtp_url, NULL, NULL);
	DefineCustomStringVariable("isa.smtp_from",
							   "Sender of isa's email: \"Display Name <address>\" or an address.",
							   "The envelope sender (MAIL FROM) is the address; the From header carries the name too.",
							   &isa_smtp_from, "", PGC_SIGHUP, 0, check_smtp_from, NULL, NULL);
	DefineCustomStringVariable("isa.smtp_username",
							   "User name for SMTP authentication (with isa.smtp_password); empty: none.",
							   NULL, &isa_smtp_username, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	/*
	 * GUC_NO_SHOW_ALL: out of SHOW ALL and pg_settings, and isa's log hook
	 * (extension/isa.c) hides the value from a reload's log line.
	 */
	DefineCustomStringVariable("isa.smtp_password",
							   "Password for SMTP authentication.",
							   "Readable by superusers only; a reload's log line does not show it.",
							   &isa_smtp_password, "", PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomEnumVariable("isa.smtp_tls",
							 "Whether an smtp:// server must offer STARTTLS: try (use it when offered) or require.",
							 "smtps:// URLs always use TLS.",
							 &isa_smtp_tls, SMTP_TLS_TRY, smtp_tls_options, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("isa.smtp_ca_file",
							   "PEM file of the certificate authorities that verify the SMTP server's certificate; empty: the system's.",
							   "For a server whose certificate a private CA signed. The certificate is always verified.",
							   &isa_smtp_ca_file, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.smtp_timeout",
							"Longest time one email delivery may take, connection included; then it is tried again later.",
							NULL, &isa_smtp_timeout, 30000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.webhook_timeout",
							"Longest time one webhook delivery may take, connection included; then it is tried again later.",
							NULL, &isa_webhook_timeout, 10000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.notification_sender_concurrency",
							"Deliveries each notification sender keeps in flight at once.",
							NULL, &isa_notification_sender_concurrency, 8, 1, 256, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
}
