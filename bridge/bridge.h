/*
 * bridge.h — the parts of the bridge worker (bridge/) and what the rest of
 * isa.so calls in it, one section per file (docs/bridge.md has the map).
 * The sections are in the order of use: a file calls only files of
 * sections above its own, never one below (no cycle).
 *
 * Threads: nats.c runs its own threads.  Code in nats_link.c that runs on
 * them (the nl_on_* callbacks) touches only pthread mutexes, malloc'd queue
 * nodes, C11 atomics and an eventfd; everything else runs on the worker's
 * main thread.
 */
#ifndef ISA_BRIDGE_H
#define ISA_BRIDGE_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include <nats/nats.h>

/* ------------------------------------------------------------ settings.c */
extern bool isa_bridge_enabled;
extern char *isa_services;
extern char *isa_nats_user;
extern char *isa_nats_password;
extern char *isa_nats_creds_file;
extern char *isa_nats_inbox_prefix;
extern int	isa_stream_replicas;
extern int	isa_duplicate_window;	/* seconds */
extern int	isa_stream_max_age;		/* seconds, 0: unlimited */
extern int	isa_max_deliver;
extern int	isa_retry_base;			/* ms */
extern int	isa_retry_max;			/* ms */
extern int	isa_ack_wait;			/* seconds */
extern int	isa_publish_batch_size;
extern int	isa_consume_batch_size;
extern int	isa_bridge_idle_interval;	/* ms */
extern int	isa_bridge_render_interval;	/* ms */
extern int	isa_bridge_publish_interval;	/* ms */
extern char *isa_bridge_apply_groups;
extern int	isa_bridge_worker;		/* 0: the bridge; k: apply worker of group k */
extern void isa_bridge_define_gucs(void);
extern int	isa_bridge_apply_group_count(void);
extern bool isa_bridge_runs_service(const char *service);

/* ------------------------------------------------------------ status.c */
extern void isa_bridge_report_started(void);
extern void isa_bridge_report_stopped(int code, Datum arg);
extern void isa_bridge_report_connection(bool connected, const char *server, uint64 reconnects);
extern void isa_bridge_report_subscriptions(int n);
extern void isa_bridge_report_published(void);
extern void isa_bridge_record_error(const char *fmt,...) pg_attribute_printf(1, 2);
extern void isa_bridge_clear_error(const char *prefix);
extern void isa_bridge_strip_credentials(char *urls);

/* ------------------------------------------------------------ metrics.c */
#define ISA_METRIC_PUBLISHED 0
#define ISA_METRIC_PROCESSED 1
#define ISA_METRIC_CONSUMER 2
#define ISA_METRIC_DURATION 3
extern void isa_metrics_shmem_request(void);
extern void isa_metrics_shmem_startup(void);
extern void isa_metric_count(int kind, const char *service, const char *event_type,
							 const char *status, double seconds);
extern void isa_metric_consumer(const char *service, const char *consumer, uint64 pending,
								double lag_seconds);

/* ------------------------------------------------------------ publish.c (extension/) */
extern void isa_set_current_event(Datum event, const pg_uuid_t *id, const char *correlation_id);
extern void isa_clear_current_event(void);

/* ------------------------------------------------------------ device_messages.c */
/* The source of the envelopes the bridge makes of device messages: no service may take it. */
#define ISA_DEVICE_MESSAGE_SOURCE "device"
extern const char *const isa_device_message_subjects[];
extern const int isa_device_message_nsubjects;
extern const char *isa_device_message_type(const char *subject, char **device_id);
extern Datum isa_device_message_envelope(natsMsg *msg, const char *json);

/* ------------------------------------------------------------ nats_link.c */

/* A message delivered to the bridge's inbox subscription. */
typedef struct NlMsg
{
	struct NlMsg *next;
	natsMsg    *msg;
} NlMsg;

extern int	nl_eventfd(void);
extern bool nl_connect(void);
extern void nl_disconnect(void);
extern bool nl_connected(void);
extern bool nl_closed(void);
extern bool nl_take_setup_needed(void);
extern void nl_drain_eventfd(void);
extern NlMsg *nl_take_messages(int max, int *n);
extern natsConnection *nl_conn(void);
extern void nl_server_url(char *buf, size_t len);
extern uint64 nl_reconnects(void);
extern bool nl_last_error(char *buf, size_t len);

/* The stream of the replays (replay.<request>.<subject>) and how long it keeps them, seconds. */
#define ISA_REPLAY_STREAM "ISA_REPLAY"
#define ISA_REPLAY_MAX_AGE 3600
extern bool nl_ensure_stream(List *sources);
extern bool nl_ensure_consumer(const char *durable, const char *filter,
							   int max_ack_pending, bool deliver_new);
extern bool nl_delete_consumer(const char *durable);
extern bool nl_pull(const char *durable, int64 subscription_id, int batch, int64 expires_ms);
extern void nl_ack(natsMsg *msg);
extern void nl_nak(natsMsg *msg, int64 delay_ms);
extern void nl_term(natsMsg *msg);
extern bool nl_delivery(natsMsg *msg, char *consumer, size_t consumer_len, uint64 *delivered,
						uint64 *pending, int64 *stored_ns);
extern const char *nl_status(natsMsg *msg);
extern bool nl_publish_plain(const char *subject, const char *data);
extern bool nl_flush(int64 timeout_ms);

/* Publishing a batch: results per message, filled by the ack callback. */
#define NL_PENDING 0
#define NL_ACKED 1
#define NL_FAILED 2
extern bool nl_publish_batch(int n, char **subjects, char **ids, char **bodies, int *body_lens,
							 char **traceparents, char **correlations, char *results,
							 int64 timeout_ms);

/* ------------------------------------------------------------ subxact.c */
extern ErrorData *isa_in_subtransaction(void (*fn) (void *), void *arg);

/*
 * bridge_role.c: every transaction of the worker runs as role isa_bridge (and
 * each of a notification sender's as isa_svc_notification)
 */
extern void isa_worker_start_transaction(const char *role);
extern void isa_worker_commit_transaction(void);
extern void isa_worker_abort_transaction(void);
#define isa_bridge_start_transaction() isa_worker_start_transaction("isa_bridge")
#define isa_bridge_commit_transaction() isa_worker_commit_transaction()
#define isa_bridge_abort_transaction() isa_worker_abort_transaction()

/* ------------------------------------------------------------ handler.c */
extern SPIPlanPtr isa_handler_prepare(void);
extern bool isa_handler_apply(const char *service, const char *consumer, Oid handler,
							  const char *owner_role, Datum event, FmgrInfo *cached);
extern bool isa_handler_is_batch(Oid handler);
extern int	isa_handler_apply_batch(const char *service, const char *consumer, Oid handler,
									const char *owner_role, Datum *events, int n, bool *applied,
									FmgrInfo *cached);

/* ------------------------------------------------------------ subscriptions.c */

/* A subscription this process runs: a row of isa.subscriptions and its consumer. */
typedef struct BridgeSub
{
	int64		id;
	char	   *service;
	char	   *source;			/* the service's event source */
	char	   *durable;
	char	   *filter;
	Oid			handler;
	char	   *owner_role;
	int			max_deliver;	/* 0: isa.max_deliver */
	int			batch_size;		/* 0: isa.consume_batch_size */
	int		   *versions;		/* accepted major versions; NULL: any */
	int			nversions;
	bool		deliver_new;
	bool		batch;			/* a batch handler: f(isa.event[]) */
	bool		ready;			/* consumer exists on the server */
	int			outstanding;	/* messages asked for, not yet received */
	TimestampTz pull_deadline;
	bool		seen;			/* still a row of isa.subscriptions */
	bool		gauge_due;		/* a message arrived since its consumer gauges were set */
	uint64		gauge_pending;	/* the last one's: messages the consumer still has */
	int64		gauge_stored_ns;	/* the last one's: when the stream stored it */
	bool		disabled;		/* its service is not in isa.services */
	FmgrInfo	finfo;			/* the handler's, kept so plpgsql keeps its plans */
	Oid			finfo_oid;		/* handler finfo was made for; InvalidOid: none */
} BridgeSub;

extern void isa_subscriptions_load(void);
extern void isa_subscriptions_setup(void);
extern void isa_subscriptions_forget_server_state(void);
extern int	isa_subscriptions_unready(void);
extern void isa_subscriptions_pull(TimestampTz now, long *next_wake_ms);
extern void isa_subscriptions_pull_ended(const char *subject, const char *status);
extern void isa_subscription_received(BridgeSub *s);
extern BridgeSub *isa_subscription_by_id(int64 id);
extern BridgeSub *isa_subscription_by_durable(const char *durable);
extern int	isa_subscription_max_deliver(const BridgeSub *s);

/* ------------------------------------------------------------ dead_letters.c */
/* Why a message failed: what its dead letter records. */
typedef struct ApplyFailure
{
	const char *reason;			/* invalid_envelope, unsupported_version, handler_error */
	char	   *message;
	char		sqlstate[6];
	Datum		event_json;		/* the envelope when it parsed, else 0 */
} ApplyFailure;

extern void isa_dead_letters_prepare(void);
extern bool isa_dead_letter_write(const BridgeSub *sub, natsMsg *msg, uint64 delivered,
								  const ApplyFailure *f);

/* ------------------------------------------------------------ apply.c */
extern int	isa_apply_arrived(void);
extern void isa_apply_hand_back(void);

/* ------------------------------------------------------------ publisher.c */
extern int	isa_publish_round(bool recent);
extern void isa_publisher_reset(void);

/* ------------------------------------------------------------ direct.c */
extern int	isa_direct_round(void);

/* ------------------------------------------------------------ render.c */
extern int	isa_render_round(void);

/* ------------------------------------------------------------ sql_version.c */
extern char *isa_installed_sql_version(void);
extern bool isa_sql_version_served(const char *version);

/* ------------------------------------------------------------ worker.c */
extern void isa_bridge_register(void);

#endif							/* ISA_BRIDGE_H */
