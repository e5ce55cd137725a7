/*
 * sender.h — the notification senders: one background worker per channel
 * that leaves the database (email over SMTP, webhooks over HTTP), each
 * delivering what the notification service queued in notification.deliveries
 * (docs/services/notification.md, "Delivery").  The files, in the order of
 * use (a file calls only those above it):
 *
 *   sender_settings.c   the settings: isa.smtp_*, isa.webhook_timeout, ...
 *   sender_transfers.c  transfers in flight, with libcurl's multi interface
 *   sender_email.c      the RFC 5322 message and its SMTP transfer
 *   sender_webhook.c    the signed HTTP POST
 *   sender_queue.c      the SQL side, as isa_svc_notification: claim, record
 *   sender_worker.c     registration, the main loop, notification._wake
 *
 * No network I/O ever happens inside a transaction: a claim commits before
 * its transfers start, and each outcome is recorded in a transaction of its
 * own after its transfer ended.
 */
#ifndef ISA_SENDER_H
#define ISA_SENDER_H

#include "postgres.h"

#include <curl/curl.h>

#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"

/* ------------------------------------------------------------ sender_settings.c */
extern bool isa_notification_senders;
extern char *isa_smtp_url;
extern char *isa_smtp_from;
extern char *isa_smtp_username;
extern char *isa_smtp_password;
extern char *isa_smtp_ca_file;
extern int	isa_smtp_tls;			/* SMTP_TLS_* */
extern int	isa_smtp_timeout;		/* ms */
extern int	isa_webhook_timeout;	/* ms */
extern int	isa_notification_sender_concurrency;

#define SMTP_TLS_TRY 0			/* STARTTLS when the server offers it */
#define SMTP_TLS_REQUIRE 1		/* no TLS, no mail */

extern bool isa_sender_split_from(const char *from, char **name, char **address);
extern bool isa_sender_valid_address(const char *address);

/* ------------------------------------------------------------ sender_transfers.c */

/*
 * One delivery attempt: what the claim returned, the transfer, its outcome.
 * Everything it allocates lives in its own memory context, deleted with it.
 */
typedef struct SenderTransfer
{
	struct SenderTransfer *next;
	MemoryContext cxt;
	char		delivery_id[UUID_LEN * 2 + 5];
	int			attempt;
	char	  **fields;			/* the channel's payload_fields, UTF-8, NULL where absent */
	CURL	   *easy;			/* NULL: no transfer (it failed before any I/O) */
	struct curl_slist *list;	/* the recipients (email) or headers (webhook) */
	const char *upload;			/* the message an SMTP transfer sends */
	size_t		upload_len;
	size_t		upload_pos;
	bool		refused_address;	/* a webhook host resolved to a private address */
	char		refused_ip[64];
	char		curl_error[CURL_ERROR_SIZE];

	/* the outcome, for notification.record_delivery */
	bool		ok;
	bool		transient;
	char	   *error;
} SenderTransfer;

/* A channel: how its payload is read and its transfers are made and judged. */
typedef struct SenderChannel
{
	const char *name;			/* notification.deliveries.channel */
	int			index;			/* ISA_SENDER_* */
	/* SQL expressions of text over the claimed payload p, in the order prepare reads them */
	const char *payload_fields;
	int			nfields;
	/* sets t->easy up, or sets the outcome of a delivery that cannot be tried */
	void		(*prepare) (SenderTransfer *t, char **fields);
	/* the outcome of a transfer that ran; rc is libcurl's */
	void		(*judge) (SenderTransfer *t, CURLcode rc);
	int		   *timeout_ms;		/* its setting */
	/* where and how it delivers, as its settings say now (logged when it changes) */
	char	   *(*describe) (void);
} SenderChannel;

extern void isa_transfers_init(void);
extern SenderTransfer *isa_transfer_new(const char *delivery_id, int attempt);
extern void isa_transfer_fail(SenderTransfer *t, bool transient, const char *fmt,...) pg_attribute_printf(3, 4);
extern CURL *isa_transfer_easy(SenderTransfer *t, const char *url, const char *protocols, int timeout_ms);
extern void isa_transfer_start(SenderTransfer *t);
extern int	isa_transfers_in_flight(void);
extern SenderTransfer *isa_transfers_progress(const SenderChannel *ch);
extern void isa_transfers_wait(long timeout_ms);
extern void isa_transfer_free(SenderTransfer *t);
extern void isa_transfers_abandon(void);

/* ------------------------------------------------------------ sender_email.c, sender_webhook.c */
extern const SenderChannel isa_sender_email;
extern const SenderChannel isa_sender_webhook;

/* ------------------------------------------------------------ sender_queue.c */
extern bool isa_sender_queue_ready(const SenderChannel *ch);
extern SenderTransfer *isa_sender_claim(const SenderChannel *ch, int max, int *claimed,
										TimestampTz *next_due, bool *failed);
extern int	isa_sender_record(const SenderChannel *ch, SenderTransfer *list);

#endif							/* ISA_SENDER_H */
