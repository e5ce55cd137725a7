/*
 * isa.h — what the parts of isa.so share: GUC values, the shared-memory
 * state and the helpers that cross files.
 */
#ifndef ISA_H
#define ISA_H

#include "postgres.h"

#include "port/atomics.h"
#include "storage/spin.h"
#include "executor/spi.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* The core's GUCs (extension/isa.c); each service defines its own (below). */
extern char *isa_database;
extern char *isa_nats_url;
extern char *isa_stream;
extern int	isa_outbox_retention;	/* seconds */
extern int	isa_inbox_retention;	/* seconds */
extern int	isa_cron_history_retention; /* seconds */

#define ISA_INVALID_PROCNO PG_UINT32_MAX

/*
 * Bridge processes: worker 0 ("isa bridge") publishes and applies the
 * subscriptions of every service not in a group of isa.bridge_apply_groups;
 * worker k (1 <= k <= ISA_MAX_APPLY_GROUPS, "isa bridge apply") applies those
 * of group k only.
 */
#define ISA_MAX_APPLY_GROUPS 8
#define ISA_BRIDGE_WORKERS (ISA_MAX_APPLY_GROUPS + 1)

/*
 * The notification channels that leave the database, each delivered by its
 * own background worker (extension/notification/sender_worker.c).
 */
#define ISA_SENDER_EMAIL 0
#define ISA_SENDER_WEBHOOK 1
#define ISA_SENDER_CHANNELS 2

/*
 * State in shared memory.  Only plain values and atomics: a pointer or a file
 * descriptor means nothing in another process (pg_net issue #276).
 */
typedef struct IsaSharedState
{
	/* A commit wrote outbox rows since the bridge last cleared this. */
	pg_atomic_uint32 outbox_pending;
	/* A commit wrote tracked tables' batches since the bridge last rendered (table_events.c). */
	pg_atomic_uint32 table_batches_pending;
	/* A commit changed isa.subscriptions since bridge worker k last cleared [k]. */
	pg_atomic_uint32 subscriptions_changed[ISA_BRIDGE_WORKERS];
	/* The bridge worker's PGPROC number and pid, ISA_INVALID_PROCNO if none. */
	pg_atomic_uint32 bridge_procno;
	pg_atomic_uint32 bridge_pid;
	/* The same for apply worker k at [k] ([0] unused: worker 0 is the above). */
	pg_atomic_uint32 apply_procno[ISA_BRIDGE_WORKERS];
	pg_atomic_uint32 apply_pid[ISA_BRIDGE_WORKERS];
	/* Commits that raised a wake-up: lets tests count "once per commit". */
	pg_atomic_uint64 wakeups_signalled;
	/*
	 * The last UUIDv7 made in the cluster, as Unix ms << 12 | counter
	 * (extension/uuid_v7.c): an id made later is greater, in any backend.
	 */
	pg_atomic_uint64 uuid_v7_clock;

	/* What the bridge reports (isa.bridge_status()); written by the bridge. */
	pg_atomic_uint32 nats_connected;
	pg_atomic_uint64 nats_reconnects;
	slock_t		mutex;			/* protects the fields below */
	TimestampTz started_at;
	TimestampTz last_publish_at;
	TimestampTz last_error_at;
	int32		subscriptions[ISA_BRIDGE_WORKERS];	/* set up, per worker */
	char		last_error[256];
	char		nats_server[128];

	/*
	 * The notification senders (extension/notification/), one per channel
	 * ISA_SENDER_*: a commit queued deliveries of the channel since its sender
	 * last cleared [c]; the sender's PGPROC number and pid, ISA_INVALID_PROCNO
	 * if none.
	 */
	pg_atomic_uint32 sender_pending[ISA_SENDER_CHANNELS];
	pg_atomic_uint32 sender_procno[ISA_SENDER_CHANNELS];
	pg_atomic_uint32 sender_pid[ISA_SENDER_CHANNELS];
} IsaSharedState;

/* NULL when isa.so is not in shared_preload_libraries. */
extern IsaSharedState *isa_shared;

/* extension/wakeup.c */
extern void isa_wakeup_init(void);
extern void isa_note_outbox_write(void);
extern void isa_note_table_batches(void);
extern void isa_note_subscriptions_change(void);
extern void isa_note_sender_wake(int channel);

/* extension/isa.c: what every background worker of isa.so shares */
struct BackgroundWorker;
extern void isa_background_worker(struct BackgroundWorker *w, const char *function, const char *type);

/*
 * extension/notification/: the notification senders (sender.h), their
 * settings and workers, started from _PG_init.
 */
extern void isa_notification_sender_define_gucs(void);
extern void isa_notification_senders_register(void);

/* extension/envelope.c: the rules for envelope fields (bytes, not NUL-terminated) */
extern bool isa_valid_event_type(const char *s, int len);
extern bool isa_valid_version(const char *s, int len);
extern bool isa_valid_source(const char *s, int len);
extern bool isa_parse_uuid(const char *s, int len, pg_uuid_t *uuid);
extern bool isa_valid_traceparent(const char *s, int len);	/* W3C, docs/tracing.md */

/* extension/crypto.c: libsodium primitives */
extern void isa_crypto_init(void);
extern void isa_hmac_sha256_buf(unsigned char *out, const unsigned char *key, size_t keylen,
								const unsigned char *msg, size_t len);
extern bool isa_secure_equals_buf(const void *a, size_t alen, const void *b, size_t blen);
extern char *isa_b64url_encode(const unsigned char *data, size_t len);
extern bool isa_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen);

/*
 * What the core calls of the services, whose C lives in extension/<service>/.
 * Settings: one call per service from _PG_init (auth/auth_settings.c,
 * payment/payment_settings.c, storage/storage_settings.c, device/device_settings.c,
 * wallet/wallet_settings.c, session/session_settings.c,
 * notification/notification_settings.c, audit/audit_settings.c).
 */
extern void isa_auth_define_gucs(void);
extern void isa_payment_define_gucs(void);
extern void isa_storage_define_gucs(void);
extern void isa_device_define_gucs(void);
extern void isa_wallet_define_gucs(void);
extern void isa_session_define_gucs(void);
extern void isa_event_define_gucs(void);
extern void isa_notification_define_gucs(void);
extern void isa_audit_define_gucs(void);
/* auth/auth_shmem.c: the login throttle and the flagged sessions */
extern void isa_auth_shmem_request(void);
extern void isa_auth_shmem_startup(void);

/* extension/service_roles.c: isa_svc_<service>, into buf[NAMEDATALEN] */
extern void isa_service_role(const char *service, char *buf);

/*
 * extension/publish.c: what a function that writes as the extension's owner
 * uses (isa.publish_event, a tracked table's trigger): the search path of
 * pg_catalog alone, and the owner of the called function.
 */
struct OverrideSearchPath;
struct FunctionCallInfoBaseData;
extern struct OverrideSearchPath isa_catalog_only_path;
extern Oid	isa_function_owner(struct FunctionCallInfoBaseData *fcinfo);

/* extension/publish.c */
extern void isa_insert_row(Oid relid, int n, const int16 *attnums, const Datum *values, const bool *nulls);
extern char *isa_jsonb_text(Jsonb *object, const char *key);
extern SPIPlanPtr isa_keep_plan(const char *sql, int nargs, Oid *types, const char *what);
extern HTAB *isa_relid_cache(const char *name, Size entrysize, RelcacheCallbackFunction invalidated);
extern Datum isa_event_metadata_of(pg_uuid_t *id);

/* extension/uuid_v7.c */
extern TimestampTz isa_uuid_v7_at(TimestampTz ts, pg_uuid_t *out);

#endif							/* ISA_H */
