/*
 * subxact.c — running a step in a subtransaction and keeping its error: the
 * apply path applies each message this way (a failed handler rolls back
 * alone) and so does the writing of a dead letter.
 *
 * Docs: docs/bridge.md, "Consuming".
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "bridge.h"

/*
 * Runs fn(arg) in a subtransaction: NULL if it committed, else its error (in
 * the caller's memory context) after rolling it back.
 */
ErrorData *
isa_in_subtransaction(void (*fn) (void *), void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return edata;
}
