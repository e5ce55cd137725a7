/*
 * auth_shmem.c — the auth service's two tables in shared memory, which must
 * survive the rollback of the call that writes them:
 *
 *  - the login throttle: failures per e-mail address (a failed login raises
 *    an error, which would roll back a counter kept in a table);
 *  - the sessions flagged by refresh-token reuse (auth.refresh raises 28000
 *    on reuse, which would roll back the revocation); a later committing
 *    transaction writes the revocation to auth.sessions and the entry is
 *    removed when that transaction commits.
 *
 * Both live under one LWLock and are lost when the server restarts.  Without
 * shared_preload_libraries there is no shared memory: the SQL side refuses
 * login and refresh then (auth._shmem_available()).
 */
#include "postgres.h"

#include <limits.h>
#include <sodium.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"
#include "auth.h"

/* ---------------------------------------------------------------- shared memory */

#define THROTTLE_SLOTS 8192		/* e-mail addresses tracked at once */
#define THROTTLE_PROBE 16		/* slots looked at for one address */
#define THROTTLE_KEY 16
#define FLAGGED_SLOTS 1024		/* sessions waiting for their revocation to commit */

typedef struct ThrottleSlot
{
	uint8		key[THROTTLE_KEY];	/* keyed BLAKE2b of the lower-cased address */
	bool		in_use;
	int32		failures;		/* attempts counted in the current window */
	TimestampTz window_start;
	TimestampTz locked_until;	/* 0: not locked */
	TimestampTz last_seen;
} ThrottleSlot;

typedef struct FlaggedSlot
{
	pg_uuid_t	session_id;
	bool		in_use;
	TimestampTz flagged_at;
} FlaggedSlot;

typedef struct AuthShared
{
	LWLock	   *lock;
	/* Random per server start: nobody can aim addresses at one probe window. */
	unsigned char hash_key[crypto_generichash_KEYBYTES];
	pg_atomic_uint32 nflagged;	/* lets the common case skip the lock */
	ThrottleSlot throttle[THROTTLE_SLOTS];
	FlaggedSlot flagged[FLAGGED_SLOTS];
} AuthShared;

static AuthShared *auth_shared = NULL;

void
isa_auth_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuthShared)));
	RequestNamedLWLockTranche("isa_auth", 1);
}

void
isa_auth_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	auth_shared = ShmemInitStruct("isa auth", sizeof(AuthShared), &found);
	if (!found)
	{
		memset(auth_shared, 0, sizeof(AuthShared));
		auth_shared->lock = &(GetNamedLWLockTranche("isa_auth"))->lock;
		randombytes_buf(auth_shared->hash_key, sizeof(auth_shared->hash_key));
		pg_atomic_init_u32(&auth_shared->nflagged, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
require_shmem(void)
{
	if (auth_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("isa is not in shared_preload_libraries: the auth service's shared memory does not exist"),
				 errhint("Add isa to shared_preload_libraries and restart PostgreSQL.")));
}

/* auth._shmem_available() RETURNS boolean */
PG_FUNCTION_INFO_V1(isa_auth_shmem_available);
Datum
isa_auth_shmem_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(auth_shared != NULL);
}

/* ---------------------------------------------------------------- login throttle */

static void
throttle_key(text *email, uint8 *key)
{
	isa_crypto_init();
	crypto_generichash(key, THROTTLE_KEY,
					   (const unsigned char *) VARDATA_ANY(email), VARSIZE_ANY_EXHDR(email),
					   auth_shared->hash_key, sizeof(auth_shared->hash_key));
}

static inline TimestampTz
add_seconds(TimestampTz t, int seconds)
{
	return t + (TimestampTz) seconds * USECS_PER_SEC;
}

/*
 * A slot that no longer holds anything worth keeping: its lock (if any) is
 * over and its window of counted failures has passed.
 */
static bool
throttle_stale(const ThrottleSlot *s, TimestampTz now)
{
	return s->locked_until <= now && add_seconds(s->window_start, isa_login_failure_window) <= now;
}

/*
 * The slot of key within its probe window, or NULL.  With create, a missing
 * key takes the least valuable slot of the window: a free or stale one, else
 * the unlocked one seen longest ago, else the lock that ends first.  Caller
 * holds the lock (exclusive when create).
 */
static ThrottleSlot *
throttle_slot(const uint8 *key, TimestampTz now, bool create)
{
	uint32		start;
	ThrottleSlot *victim = NULL;
	int			victim_rank = INT_MAX;

	memcpy(&start, key, sizeof(start));
	for (int i = 0; i < THROTTLE_PROBE; i++)
	{
		ThrottleSlot *s = &auth_shared->throttle[(start + i) % THROTTLE_SLOTS];
		int			rank;

		if (s->in_use && memcmp(s->key, key, THROTTLE_KEY) == 0)
			return s;
		if (!create)
			continue;
		if (!s->in_use)
			rank = 0;
		else if (throttle_stale(s, now))
			rank = 1;
		else if (s->locked_until <= now)
			rank = 2;
		else
			rank = 3;
		if (victim == NULL || rank < victim_rank ||
			(rank == victim_rank &&
			 (rank == 3 ? s->locked_until < victim->locked_until : s->last_seen < victim->last_seen)))
		{
			victim = s;
			victim_rank = rank;
		}
	}
	if (!create)
		return NULL;
	memcpy(victim->key, key, THROTTLE_KEY);
	victim->in_use = true;
	victim->failures = 0;
	victim->window_start = now;
	victim->locked_until = 0;
	victim->last_seen = now;
	return victim;
}

static int32
seconds_until(TimestampTz until, TimestampTz now)
{
	return (int32) ((until - now + USECS_PER_SEC - 1) / USECS_PER_SEC);
}

/*
 * auth._throttle_attempt(email text) RETURNS integer: 0 when a login attempt
 * for this (lower-cased) address may go ahead, and then counts it as a
 * failure until auth._throttle_reset clears it; otherwise the seconds until
 * the address is unlocked (the attempt is not counted).  Counting before the
 * password check bounds parallel guessing by isa.login_max_failures too.
 */
PG_FUNCTION_INFO_V1(isa_auth_throttle_attempt);
Datum
isa_auth_throttle_attempt(PG_FUNCTION_ARGS)
{
	uint8		key[THROTTLE_KEY];
	TimestampTz now = GetCurrentTimestamp();
	ThrottleSlot *s;
	int32		wait = 0;

	require_shmem();
	throttle_key(PG_GETARG_TEXT_PP(0), key);
	LWLockAcquire(auth_shared->lock, LW_EXCLUSIVE);
	s = throttle_slot(key, now, true);
	if (s->locked_until > now)
		wait = seconds_until(s->locked_until, now);
	else
	{
		if (s->locked_until != 0 || add_seconds(s->window_start, isa_login_failure_window) <= now)
		{
			/* a lock that is over, or a window that has passed: start afresh */
			s->failures = 0;
			s->window_start = now;
			s->locked_until = 0;
		}
		s->failures++;
		s->last_seen = now;
		if (s->failures >= isa_login_max_failures)
			s->locked_until = add_seconds(now, isa_login_lockout);
	}
	LWLockRelease(auth_shared->lock);
	PG_RETURN_INT32(wait);
}

/* auth._throttle_reset(email text) RETURNS boolean: forgets the address; true if it was tracked */
PG_FUNCTION_INFO_V1(isa_auth_throttle_reset);
Datum
isa_auth_throttle_reset(PG_FUNCTION_ARGS)
{
	uint8		key[THROTTLE_KEY];
	ThrottleSlot *s;
	bool		found = false;

	require_shmem();
	throttle_key(PG_GETARG_TEXT_PP(0), key);
	LWLockAcquire(auth_shared->lock, LW_EXCLUSIVE);
	s = throttle_slot(key, 0, false);
	if (s != NULL)
	{
		s->in_use = false;
		found = true;
	}
	LWLockRelease(auth_shared->lock);
	PG_RETURN_BOOL(found);
}

/*
 * auth._throttle_state(email text, OUT failures int, OUT locked_until
 * timestamptz): attempts counted in the current window (0 when none) and the
 * end of the lock (NULL when not locked).
 */
PG_FUNCTION_INFO_V1(isa_auth_throttle_state);
Datum
isa_auth_throttle_state(PG_FUNCTION_ARGS)
{
	uint8		key[THROTTLE_KEY];
	TimestampTz now = GetCurrentTimestamp();
	ThrottleSlot *s;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, true};
	int32		failures = 0;
	TimestampTz locked_until = 0;

	require_shmem();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	throttle_key(PG_GETARG_TEXT_PP(0), key);
	LWLockAcquire(auth_shared->lock, LW_SHARED);
	s = throttle_slot(key, now, false);
	if (s != NULL && !throttle_stale(s, now))
	{
		if (s->locked_until > now)
			locked_until = s->locked_until;
		if (s->locked_until == 0 || s->locked_until > now)
			failures = s->failures;
	}
	LWLockRelease(auth_shared->lock);
	values[0] = Int32GetDatum(failures);
	if (locked_until != 0)
	{
		values[1] = TimestampTzGetDatum(locked_until);
		nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ---------------------------------------------------------------- flagged sessions */

/*
 * Sessions this transaction wrote as revoked: removed from shared memory when
 * it commits, kept when it (or the subtransaction that wrote them) aborts.
 */
static pg_uuid_t pending_unflag[FLAGGED_SLOTS];
static SubTransactionId pending_subid[FLAGGED_SLOTS];
static int	npending = 0;
static bool callbacks_registered = false;

static FlaggedSlot *
flagged_slot(const pg_uuid_t *id)
{
	for (int i = 0; i < FLAGGED_SLOTS; i++)
	{
		FlaggedSlot *f = &auth_shared->flagged[i];

		if (f->in_use && memcmp(&f->session_id, id, sizeof(pg_uuid_t)) == 0)
			return f;
	}
	return NULL;
}

static void
unflag_pending(void)
{
	if (npending == 0 || auth_shared == NULL)
		return;
	LWLockAcquire(auth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < npending; i++)
	{
		FlaggedSlot *f = flagged_slot(&pending_unflag[i]);

		if (f != NULL)
		{
			f->in_use = false;
			pg_atomic_fetch_sub_u32(&auth_shared->nflagged, 1);
		}
	}
	LWLockRelease(auth_shared->lock);
	npending = 0;
}

static void
auth_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			unflag_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* not (yet) committed: the flags stay, a later transaction writes them */
			npending = 0;
			break;
		default:
			break;
	}
}

static void
auth_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	for (int i = 0; i < npending; i++)
	{
		if (pending_subid[i] == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			pending_subid[i] = parentSubid;
		}
		pending_unflag[kept] = pending_unflag[i];
		pending_subid[kept] = pending_subid[i];
		kept++;
	}
	npending = kept;
}

/*
 * auth._flag_session(session_id uuid) RETURNS boolean: marks a session as
 * revoked in shared memory, whatever becomes of the calling transaction;
 * false if the table is full.
 */
PG_FUNCTION_INFO_V1(isa_auth_flag_session);
Datum
isa_auth_flag_session(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	bool		done = false;

	require_shmem();
	LWLockAcquire(auth_shared->lock, LW_EXCLUSIVE);
	if (flagged_slot(id) != NULL)
		done = true;
	else
	{
		for (int i = 0; i < FLAGGED_SLOTS && !done; i++)
		{
			FlaggedSlot *f = &auth_shared->flagged[i];

			if (!f->in_use)
			{
				f->session_id = *id;
				f->in_use = true;
				f->flagged_at = GetCurrentTimestamp();
				pg_atomic_fetch_add_u32(&auth_shared->nflagged, 1);
				done = true;
			}
		}
	}
	LWLockRelease(auth_shared->lock);
	PG_RETURN_BOOL(done);
}

/* auth._session_flagged(session_id uuid) RETURNS boolean (false without shared memory) */
PG_FUNCTION_INFO_V1(isa_auth_session_flagged);
Datum
isa_auth_session_flagged(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	bool		found;

	if (auth_shared == NULL || pg_atomic_read_u32(&auth_shared->nflagged) == 0)
		PG_RETURN_BOOL(false);
	LWLockAcquire(auth_shared->lock, LW_SHARED);
	found = flagged_slot(id) != NULL;
	LWLockRelease(auth_shared->lock);
	PG_RETURN_BOOL(found);
}

/* auth._flagged_sessions() RETURNS uuid[]: NULL when there is none */
PG_FUNCTION_INFO_V1(isa_auth_flagged_sessions);
Datum
isa_auth_flagged_sessions(PG_FUNCTION_ARGS)
{
	Datum	   *ids;
	int			n = 0;

	if (auth_shared == NULL || pg_atomic_read_u32(&auth_shared->nflagged) == 0)
		PG_RETURN_NULL();
	ids = palloc(sizeof(Datum) * FLAGGED_SLOTS);
	LWLockAcquire(auth_shared->lock, LW_SHARED);
	for (int i = 0; i < FLAGGED_SLOTS; i++)
	{
		FlaggedSlot *f = &auth_shared->flagged[i];

		if (f->in_use)
		{
			pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

			*copy = f->session_id;
			ids[n++] = UUIDPGetDatum(copy);
		}
	}
	LWLockRelease(auth_shared->lock);
	if (n == 0)
		PG_RETURN_NULL();
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * auth._unflag_at_commit(session_ids uuid[]) RETURNS void: the caller has
 * written these sessions as revoked (or found them revoked or gone); their
 * flags go when this transaction commits.
 */
PG_FUNCTION_INFO_V1(isa_auth_unflag_at_commit);
Datum
isa_auth_unflag_at_commit(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	SubTransactionId subid = GetCurrentSubTransactionId();

	require_shmem();
	if (!callbacks_registered)
	{
		RegisterXactCallback(auth_xact_callback, NULL);
		RegisterSubXactCallback(auth_subxact_callback, NULL);
		callbacks_registered = true;
	}
	deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
	for (int i = 0; i < n && npending < FLAGGED_SLOTS; i++)
	{
		if (nulls[i])
			continue;
		pending_unflag[npending] = *DatumGetUUIDP(elems[i]);
		pending_subid[npending] = subid;
		npending++;
	}
	PG_RETURN_VOID();
}
