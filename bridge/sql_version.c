/*
 * sql_version.c — the upgrade window: which versions of isa's SQL this
 * library's bridge serves, and what the bridge says when the database has
 * another.
 *
 * A new isa.so is installed (and loaded at the next restart) before
 * ALTER EXTENSION isa UPDATE runs, so the bridge may meet the SQL of an older
 * version, or, after a downgrade of the library, a newer one.  The worker
 * asks isa_sql_version_served() before each turn's work (worker.c); while it
 * says no, the worker publishes nothing and fetches nothing, and
 * isa.bridge_status().last_error names what to do.  Docs: docs/bridge.md,
 * "The upgrade window".
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "isa.h"
#include "bridge.h"

/*
 * The SQL versions whose bridge-visible objects (isa.outbox, isa.services,
 * isa.subscriptions, isa.inbox, isa.dead_letters, isa.event_from_json,
 * isa.publish_event, and the columns the bridge reads of them) are those of
 * ISA_SQL_VERSION, the version this library is built with (the last of the
 * Makefile's ISA_VERSIONS).  ISA_SQL_VERSION must be in the list.
 *
 * When to change it: at each new version, add it here.  When the new version
 * changes an object the bridge uses, remove the older versions at the same
 * time (a database on one of them then idles until ALTER EXTENSION isa UPDATE),
 * unless the bridge's C code handles both shapes.
 */
static const char *const served_versions[] = {"0.1.0", "0.2.0"};

#define N_SERVED lengthof(served_versions)

/* How the error starts: any bridge process clears it once the version is served. */
#define MISMATCH_PREFIX "isa's library serves SQL version"

/*
 * extversion of isa in this database (in the caller's memory context), or
 * NULL if isa is not installed.  One catalog index lookup in a short
 * transaction: cheap enough to run once a second.  The one transaction of
 * the worker not run as isa_bridge (bridge_role.c): it reads a catalog
 * without SQL, and runs before CREATE EXTENSION isa has created the role.
 */
char *
isa_installed_sql_version(void)
{
	MemoryContext outer = CurrentMemoryContext;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("isa"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = MemoryContextStrdup(outer, TextDatumGetCString(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(outer);
	return version;
}

/* Dotted versions compared number by number: <0, 0, >0. */
static int
compare_versions(const char *a, const char *b)
{
	while (*a || *b)
	{
		long		x = strtol(a, (char **) &a, 10);
		long		y = strtol(b, (char **) &b, 10);

		if (x != y)
			return x < y ? -1 : 1;
		while (*a && *a != '.')
			a++;
		while (*b && *b != '.')
			b++;
		if (*a == '.')
			a++;
		if (*b == '.')
			b++;
	}
	return 0;
}

/*
 * Whether this library serves the SQL of isa `version`.  If not, records as
 * the bridge's last error what to do (at each call: last_error_at shows when
 * it was last seen); if so, clears that error if it is still the last one.
 */
bool
isa_sql_version_served(const char *version)
{
	StringInfoData list;
	const char *remedy;		/* what the DBA is to do */

	for (int i = 0; i < (int) N_SERVED; i++)
		if (strcmp(served_versions[i], version) == 0)
		{
			isa_bridge_clear_error(MISMATCH_PREFIX);
			return true;
		}

	/* "0.1.0", "0.1.0 and 0.2.0", "0.1.0, 0.2.0 and 0.3.0" */
	initStringInfo(&list);
	for (int i = 0; i < (int) N_SERVED; i++)
		appendStringInfo(&list, "%s%s", i == 0 ? "" : i == (int) N_SERVED - 1 ? " and " : ", ",
						 served_versions[i]);
	if (compare_versions(version, served_versions[N_SERVED - 1]) < 0)
		remedy = "run ALTER EXTENSION isa UPDATE";
	else
		remedy = "install isa's library of that version and restart PostgreSQL";
	isa_bridge_record_error(MISMATCH_PREFIX "%s %s but this database has isa %s: %s",
							N_SERVED > 1 ? "s" : "", list.data, version, remedy);
	pfree(list.data);
	return false;
}
