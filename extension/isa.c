/*
 * isa.c — module entry: the core's GUCs and each service's (one call per
 * service), shared memory and the hooks that need them.
 *
 * Works preloaded (shared memory, commit-time wake-up of the bridge) and not
 * preloaded (publishing still writes the outbox; there is just nobody to wake).
 */
#include "postgres.h"

#include <ctype.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "isa.h"
#include "bridge.h"

PG_MODULE_MAGIC;

char	   *isa_database = NULL;
char	   *isa_nats_url = NULL;
char	   *isa_stream = NULL;
int			isa_outbox_retention = 7 * 24 * 3600;
int			isa_inbox_retention = 7 * 24 * 3600;
int			isa_cron_history_retention = 7 * 24 * 3600;

IsaSharedState *isa_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
isa_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(IsaSharedState)));
	isa_metrics_shmem_request();
	isa_auth_shmem_request();
}

static void
isa_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	isa_shared = ShmemInitStruct("isa", sizeof(IsaSharedState), &found);
	if (!found)
	{
		pg_atomic_init_u32(&isa_shared->outbox_pending, 0);
		pg_atomic_init_u32(&isa_shared->table_batches_pending, 0);
		pg_atomic_init_u32(&isa_shared->bridge_procno, ISA_INVALID_PROCNO);
		pg_atomic_init_u32(&isa_shared->bridge_pid, 0);
		for (int k = 0; k < ISA_BRIDGE_WORKERS; k++)
		{
			pg_atomic_init_u32(&isa_shared->subscriptions_changed[k], 0);
			pg_atomic_init_u32(&isa_shared->apply_procno[k], ISA_INVALID_PROCNO);
			pg_atomic_init_u32(&isa_shared->apply_pid[k], 0);
			isa_shared->subscriptions[k] = 0;
		}
		pg_atomic_init_u64(&isa_shared->wakeups_signalled, 0);
		pg_atomic_init_u64(&isa_shared->uuid_v7_clock, 0);
		pg_atomic_init_u32(&isa_shared->nats_connected, 0);
		pg_atomic_init_u64(&isa_shared->nats_reconnects, 0);
		SpinLockInit(&isa_shared->mutex);
		isa_shared->started_at = 0;
		isa_shared->last_publish_at = 0;
		isa_shared->last_error_at = 0;
		isa_shared->last_error[0] = '\0';
		isa_shared->nats_server[0] = '\0';
		for (int c = 0; c < ISA_SENDER_CHANNELS; c++)
		{
			pg_atomic_init_u32(&isa_shared->sender_pending[c], 0);
			pg_atomic_init_u32(&isa_shared->sender_procno[c], ISA_INVALID_PROCNO);
			pg_atomic_init_u32(&isa_shared->sender_pid[c], 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
	isa_metrics_shmem_startup();
	isa_auth_shmem_startup();
}

/*
 * At a reload the postmaster logs every changed setting with its new value
 * ("parameter "x" changed to "v""), whatever its flags.  For isa's hidden
 * settings (GUC_NO_SHOW_ALL: passwords and signing secrets) the value is cut
 * from that line, so a secret set with ALTER SYSTEM never reaches the log.
 */
static void
isa_emit_log(ErrorData *edata)
{
	const char *name;

	/* message_id is the untranslated format; the message may be translated */
	if (edata->message_id != NULL && edata->message != NULL &&
		strcmp(edata->message_id, "parameter \"%s\" changed to \"%s\"") == 0 &&
		(name = strstr(edata->message, "isa.")) != NULL)
	{
		char		buf[NAMEDATALEN];
		int			len = 0;

		while (len < NAMEDATALEN - 1 &&
			   (isalnum((unsigned char) name[len]) || name[len] == '_' || name[len] == '.'))
		{
			buf[len] = name[len];
			len++;
		}
		buf[len] = '\0';
		if (GetConfigOptionFlags(buf, true) & GUC_NO_SHOW_ALL)
			edata->message = psprintf("parameter \"%s\" changed (value hidden)", buf);
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
isa_define_gucs(void)
{
	/*
	 * PostgreSQL allows PGC_POSTMASTER variables only while preloading (a
	 * later definition is FATAL).  Without preload there is no bridge to read
	 * isa.database, so it is then an ordinary reloadable setting.
	 */
	DefineCustomStringVariable("isa.database",
							   "Database the isa bridge worker connects to.",
							   "The database where CREATE EXTENSION isa was run. Requires a restart.",
							   &isa_database, "isa",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.nats_url",
							   "NATS server URL(s) for the bridge, comma-separated.",
							   "For example nats://127.0.0.1:4222,nats://127.0.0.1:4223.",
							   &isa_nats_url, "nats://127.0.0.1:4222",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.stream",
							   "JetStream stream that carries isa's events.",
							   NULL,
							   &isa_stream, "ISA_EVENTS",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.outbox_retention",
							"How long published outbox rows are kept before isa.purge_retention() deletes them.",
							NULL,
							&isa_outbox_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.inbox_retention",
							"How long inbox (already-processed) rows are kept for deduplication.",
							"Must exceed the longest time a message can wait for redelivery.",
							&isa_inbox_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.cron_history_retention",
							"How long rows of cron.job_run_details are kept.",
							NULL,
							&isa_cron_history_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	isa_bridge_define_gucs();
	/* each service's own, from its folder */
	isa_notification_sender_define_gucs();
	isa_auth_define_gucs();
	isa_payment_define_gucs();
	isa_storage_define_gucs();
	isa_device_define_gucs();
	isa_wallet_define_gucs();
	isa_session_define_gucs();
	isa_event_define_gucs();
	isa_notification_define_gucs();
	isa_audit_define_gucs();
	MarkGUCPrefixReserved("isa");
}

void
_PG_init(void)
{
	isa_define_gucs();
	isa_wakeup_init();
	isa_crypto_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = isa_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = isa_shmem_startup;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = isa_emit_log;
	isa_bridge_register();
	isa_notification_senders_register();
}

/*
 * The background workers of isa.so (the bridge's, the notification
 * senders'): connected to a database, started once recovery is over,
 * started again a second after they exit with an error.  w gets that and
 * the entry point; the caller names each worker and registers it.
 */
void
isa_background_worker(BackgroundWorker *w, const char *function, const char *type)
{
	memset(w, 0, sizeof(*w));
	w->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w->bgw_start_time = BgWorkerStart_RecoveryFinished;
	w->bgw_restart_time = 1;
	strlcpy(w->bgw_library_name, "isa", BGW_MAXLEN);
	strlcpy(w->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(w->bgw_type, type, BGW_MAXLEN);
}

/* isa.retention(target text): the retention GUC for outbox, inbox or cron_history. */
PG_FUNCTION_INFO_V1(isa_retention);
Datum
isa_retention(PG_FUNCTION_ARGS)
{
	char	   *target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			seconds;
	Interval   *result = palloc0(sizeof(Interval));

	if (strcmp(target, "outbox") == 0)
		seconds = isa_outbox_retention;
	else if (strcmp(target, "inbox") == 0)
		seconds = isa_inbox_retention;
	else if (strcmp(target, "cron_history") == 0)
		seconds = isa_cron_history_retention;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown retention target \"%s\"", target),
				 errhint("Use outbox, inbox or cron_history.")));
	result->time = (int64) seconds * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}
