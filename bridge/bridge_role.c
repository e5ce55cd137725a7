/*
 * bridge_role.c — the role the bridge's transactions run as: isa_bridge, not
 * the bootstrap superuser the worker connects as.  Every transaction of the
 * worker starts and ends here; handlers then switch again, to their
 * subscription's owner role (handler.c).
 *
 * Why switch rather than connect as isa_bridge: in PostgreSQL 15
 * BackgroundWorkerInitializeConnection needs a role with LOGIN, which would
 * make isa_bridge a role anyone could log in as wherever pg_hba.conf trusts
 * or peer-maps; and the worker starts before CREATE EXTENSION isa has created
 * the role.  SECURITY_LOCAL_USERID_CHANGE makes SET ROLE and SET SESSION
 * AUTHORIZATION fail inside the transaction, so nothing run in it can turn
 * back into the session's superuser.  An abort restores the superuser
 * (xact.c's saved user), a commit here.
 *
 * Docs: docs/bridge.md, "The worker" (Its role).
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/acl.h"

#include "bridge.h"

/* the user and context outside a transaction: the worker's session user */
static Oid	outer_user = InvalidOid;
static int	outer_sec_context = 0;

/*
 * StartTransactionCommand, then `role`; an ERROR if the role is missing.  The
 * bridge's role is isa_bridge (isa_bridge_start_transaction in bridge.h); the
 * notification senders (extension/notification/) run theirs as
 * isa_svc_notification the same way, for the same reasons.
 */
void
isa_worker_start_transaction(const char *role_name)
{
	Oid			role;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&outer_user, &outer_sec_context);
	role = get_role_oid(role_name, true);
	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("isa worker: role \"%s\" does not exist", role_name),
				 errhint("CREATE EXTENSION isa creates it; the worker runs as no other role.")));
	SetUserIdAndSecContext(role, SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * CommitTransactionCommand, then back to the user outside transactions (a
 * transaction must start without a security context).
 */
void
isa_worker_commit_transaction(void)
{
	CommitTransactionCommand();
	SetUserIdAndSecContext(outer_user, outer_sec_context);
}

/* AbortCurrentTransaction, then back to the user outside transactions. */
void
isa_worker_abort_transaction(void)
{
	AbortCurrentTransaction();
	SetUserIdAndSecContext(outer_user, outer_sec_context);
}
