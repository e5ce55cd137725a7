/*
 * settings.c — the bridge's settings (GUCs isa.bridge_enabled ...
 * isa.bridge_idle_interval), their check hooks, and what they decide
 * together: which services' subscriptions this bridge process runs
 * (isa.services and isa.bridge_apply_groups).
 *
 * It calls nothing else in bridge/: every other file reads these values.
 * isa.database, isa.nats_url and isa.stream are extension/isa.c's (they
 * exist without the bridge).  Docs: docs/configuration.md (each setting),
 * docs/bridge.md (what they change).
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "isa.h"
#include "bridge.h"

bool		isa_bridge_enabled = true;
char	   *isa_services = NULL;
char	   *isa_nats_user = NULL;
char	   *isa_nats_password = NULL;
char	   *isa_nats_creds_file = NULL;
char	   *isa_nats_inbox_prefix = NULL;
int			isa_stream_replicas = 1;
int			isa_duplicate_window = 120;
int			isa_stream_max_age = 7 * 24 * 3600;
int			isa_max_deliver = 5;
int			isa_retry_base = 1000;
int			isa_retry_max = 300000;
int			isa_ack_wait = 30;
int			isa_publish_batch_size = 1000;
int			isa_consume_batch_size = 256;
int			isa_bridge_idle_interval = 1000;
int			isa_bridge_render_interval = 50;
int			isa_bridge_publish_interval = 0;
char	   *isa_bridge_apply_groups = NULL;

/*
 * Which bridge process this is: 0 in the bridge worker, k in the apply
 * worker of group k (set once by worker.c at start).  It selects, with the
 * two settings above, the subscriptions this process runs.
 */
int			isa_bridge_worker = 0;

/*
 * The group (1 ...) of the list `groups` (isa.bridge_apply_groups) that names
 * a service, 0 if none: "billing;wallet,order" makes group 1 billing, group 2
 * wallet and order.  -1 if the list is malformed (empty group, bad name, a
 * service in two places).  *ngroups gets the number of groups.
 */
static int
apply_group_in(const char *groups, const char *service, int *ngroups)
{
	char	   *copy = pstrdup(groups ? groups : "");
	char	   *next = copy;
	List	   *seen = NIL;
	int			k = 0;
	int			found = 0;

	while (next != NULL && *copy != '\0')
	{
		char	   *g = next;
		char	   *semi = strchr(g, ';');
		List	   *names;
		ListCell   *lc;

		if (semi)
			*semi = '\0';
		next = semi ? semi + 1 : NULL;
		k++;
		if (!SplitIdentifierString(g, ',', &names) || names == NIL)
			return -1;
		foreach(lc, names)
		{
			char	   *name = lfirst(lc);
			ListCell   *lc2;

			foreach(lc2, seen)
				if (strcmp((char *) lfirst(lc2), name) == 0)
					return -1;
			seen = lappend(seen, name);
			if (service && strcmp(name, service) == 0)
				found = k;
		}
	}
	if (ngroups)
		*ngroups = k;
	return found;
}

/* The number of groups of isa.bridge_apply_groups: the apply workers to start. */
int
isa_bridge_apply_group_count(void)
{
	int			n = 0;

	if (isa_bridge_apply_groups == NULL || *isa_bridge_apply_groups == '\0')
		return 0;
	(void) apply_group_in(isa_bridge_apply_groups, NULL, &n);
	return Min(n, ISA_MAX_APPLY_GROUPS);
}

/*
 * Whether this process runs the subscriptions of a service: the bridge those
 * of the services in no group, apply worker k those of group k, and only
 * services that isa.services allows.
 */
bool
isa_bridge_runs_service(const char *service)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	if (apply_group_in(isa_bridge_apply_groups, service, NULL) != isa_bridge_worker)
		return false;
	if (isa_services == NULL || strcmp(isa_services, "*") == 0 || strcmp(isa_services, "all") == 0)
		return true;
	copy = pstrdup(isa_services);
	if (!SplitIdentifierString(copy, ',', &names))
		return false;			/* check hook rejects this; be safe */
	foreach(lc, names)
		found |= strcmp((char *) lfirst(lc), service) == 0;
	return found;
}

static bool
check_apply_groups(char **newval, void **extra, GucSource source)
{
	int			n = 0;

	if (*newval == NULL || **newval == '\0')
		return true;
	if (apply_group_in(*newval, NULL, &n) < 0 || n == 0)
	{
		GUC_check_errdetail("Groups are separated by ';', the services of a group by ',', e.g. 'billing;wallet,order'.");
		return false;
	}
	if (n > ISA_MAX_APPLY_GROUPS)
	{
		GUC_check_errdetail("At most %d groups.", ISA_MAX_APPLY_GROUPS);
		return false;
	}
	return true;
}

/*
 * A NATS subject without wildcards: the bridge's replies come to subjects
 * under it, and its credential may subscribe only there.
 */
static bool
check_inbox_prefix(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	bool		token_start = true;

	for (; *p; p++)
	{
		if (*p == '.')
		{
			if (token_start)
				break;
			token_start = true;
			continue;
		}
		if (*p == '*' || *p == '>' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			break;
		token_start = false;
	}
	if (**newval == '\0' || *p != '\0' || token_start || strlen(*newval) > 200)
	{
		GUC_check_errdetail("A subject of tokens separated by dots, without wildcards or blanks, at most 200 bytes, e.g. _INBOX.bridge.");
		return false;
	}
	return true;
}

static bool
check_services(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;

	if (strcmp(*newval, "*") == 0 || strcmp(*newval, "all") == 0)
		return true;
	copy = pstrdup(*newval);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		return false;
	}
	return true;
}

void
isa_bridge_define_gucs(void)
{
	DefineCustomBoolVariable("isa.bridge_enabled",
							 "Whether the isa bridge publishes the outbox and runs subscriptions.",
							 "Off: the worker stays up, disconnected from NATS, and the outbox grows.",
							 &isa_bridge_enabled, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.services",
							   "Services whose subscriptions the bridge of this database runs.",
							   "A comma-separated list of isa.services names, or * for all.",
							   &isa_services, "*", PGC_SIGHUP, GUC_LIST_INPUT,
							   check_services, NULL, NULL);
	DefineCustomStringVariable("isa.nats_user",
							   "User name for NATS (with isa.nats_password).",
							   NULL, &isa_nats_user, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	/*
	 * PostgreSQL logs the new value of a setting changed by a reload; isa's
	 * log hook (extension/isa.c) hides it for GUC_NO_SHOW_ALL settings.
	 */
	DefineCustomStringVariable("isa.nats_password",
							   "Password for NATS.",
							   "Readable by superusers only; a reload's log line does not show it.",
							   &isa_nats_password, "", PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.nats_creds_file",
							   "NATS credentials file (user JWT and NKey seed) for the bridge.",
							   NULL, &isa_nats_creds_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("isa.nats_inbox_prefix",
							   "Subject prefix of the bridge's NATS inboxes (replies, pulled messages).",
							   "Its NATS credential may subscribe only under it (docs/bridge.md, \"Securing NATS\").",
							   &isa_nats_inbox_prefix, "_INBOX.isa", PGC_SIGHUP, 0,
							   check_inbox_prefix, NULL, NULL);
	DefineCustomIntVariable("isa.stream_replicas",
							"Replicas of the isa stream (3 on a NATS cluster).",
							NULL, &isa_stream_replicas, 1, 1, 5, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.duplicate_window",
							"JetStream duplicate window of the isa stream (dedupe by Nats-Msg-Id).",
							NULL, &isa_duplicate_window, 120, 120, 7 * 24 * 3600, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.stream_max_age",
							"How long the isa stream keeps events (JetStream MaxAge); 0 keeps them forever.",
							"A new subscription with deliver_policy all starts at the oldest event kept.",
							&isa_stream_max_age, 7 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.max_deliver",
							"Delivery attempts before a failing event is dead-lettered (subscription option max_deliver overrides).",
							NULL, &isa_max_deliver, 5, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.retry_base",
							"Delay before the first redelivery of a failed event; doubles with each attempt.",
							NULL, &isa_retry_base, 1000, 1, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.retry_max",
							"Longest delay between redeliveries of a failed event.",
							NULL, &isa_retry_max, 300000, 1, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.ack_wait",
							"How long JetStream waits for the bridge's ack before redelivering.",
							"Messages a crashed bridge held come back after this.",
							&isa_ack_wait, 30, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.publish_batch_size",
							"Outbox rows published per round.",
							NULL, &isa_publish_batch_size, 1000, 1, 100000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.consume_batch_size",
							"Messages asked for per pull (subscription option batch_size overrides).",
							NULL, &isa_consume_batch_size, 256, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.bridge_apply_groups",
							   "Services whose subscriptions get their own apply worker, in groups.",
							   "Groups separated by ';', services by ',': 'billing;wallet,order' starts two apply "
							   "workers. Other services' subscriptions run in the bridge worker. Requires a restart.",
							   &isa_bridge_apply_groups, "",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, check_apply_groups, NULL, NULL);
	DefineCustomIntVariable("isa.bridge_idle_interval",
							"Safety timer: the bridge looks at the outbox at least this often.",
							"Commits wake it at once; this only catches what no wake-up announced.",
							&isa_bridge_idle_interval, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.bridge_publish_interval",
							"Least time between two publishing rounds that outbox commits start.",
							"0 (the default): a round at once for every commit the bridge is not already publishing. Larger: under a stream of commits, "
							"the events of this interval are published together and the subscribers that record every event get them in batches, "
							"at the cost of up to this much latency; a commit after a quiet spell is published at once.",
							&isa_bridge_publish_interval, 0, 0, 60 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("isa.bridge_render_interval",
							"Least time between two renderings of tracked tables' statements into events.",
							"A commit to a tracked table is rendered at once when the last rendering is older; "
							"under a stream of commits, the statements of this interval are rendered and published together. 0 renders at every commit.",
							&isa_bridge_render_interval, 50, 0, 60 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
