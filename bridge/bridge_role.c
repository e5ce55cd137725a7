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

#define BRIDGE_ROLE "isa_bridge"

/* the user and context outside a transaction: the worker's session user */
static Oid	outer_user = InvalidOid;
static int	outer_sec_context = 0;

/* StartTransactionCommand, then isa_bridge; an ERROR if the role is missing. */
void
isa_bridge_start_transaction(void)
{
	Oid			role;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&outer_user, &outer_sec_context);
	role = get_role_oid(BRIDGE_ROLE, true);
	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("isa bridge: role \"%s\" does not exist", BRIDGE_ROLE),
				 errhint("CREATE EXTENSION isa creates it; the bridge runs as no other role.")));
	SetUserIdAndSecContext(role, SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * CommitTransactionCommand, then back to the user outside transactions (a
 * transaction must start without a security context).
 */
void
isa_bridge_commit_transaction(void)
{
	CommitTransactionCommand();
	SetUserIdAndSecContext(outer_user, outer_sec_context);
}

/* AbortCurrentTransaction, then back to the user outside transactions. */
void
isa_bridge_abort_transaction(void)
{
	AbortCurrentTransaction();
	SetUserIdAndSecContext(outer_user, outer_sec_context);
}
