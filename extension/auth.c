/*
 * auth.c — C for the auth service (sql/auth.sql, docs/services/auth.md): its
 * settings (JWT algorithm, keys, lifetimes, password hashing cost, login
 * throttle), password hashing (argon2id), Ed25519, JWT signing and
 * verification, and two tables in shared memory that must survive the
 * rollback of the call that writes them:
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
#include "common/jsonapi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"

/* ---------------------------------------------------------------- settings */

#define ISA_JWT_EDDSA 0
#define ISA_JWT_HS256 1

int			isa_jwt_algorithm = ISA_JWT_EDDSA;
char	   *isa_jwt_secret = NULL;
char	   *isa_jwt_previous_secret = NULL;
char	   *isa_jwt_issuer = NULL;
char	   *isa_jwt_audience = NULL;
int			isa_jwt_access_ttl = 900;
int			isa_refresh_ttl = 30 * 24 * 3600;
int			isa_jwt_clock_skew = 30;
int			isa_password_opslimit = 2;
int			isa_password_memlimit = 19 * 1024;	/* kB: OWASP's m=19 MiB, t=2 */
int			isa_login_max_failures = 5;
int			isa_login_failure_window = 900;
int			isa_login_lockout = 900;

static const struct config_enum_entry jwt_algorithm_options[] = {
	{"EdDSA", ISA_JWT_EDDSA, false},
	{"HS256", ISA_JWT_HS256, false},
	{NULL, 0, false}
};

#define JWT_MIN_SECRET 32
#define JWT_MAX_TOKEN 8192
#define JWT_MAX_KID 64

static bool
check_not_empty(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	return true;
}

void
isa_auth_define_gucs(void)
{
	DefineCustomEnumVariable("isa.jwt_algorithm",
							 "The only algorithm auth signs and accepts JWTs with: EdDSA (Ed25519) or HS256.",
							 "The alg of a token's header must equal it; none is never accepted.",
							 &isa_jwt_algorithm, ISA_JWT_EDDSA, jwt_algorithm_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	/*
	 * No check hook on the secrets: PostgreSQL would print the rejected value
	 * in the error.  Their length is checked where they are used.
	 */
	DefineCustomStringVariable("isa.jwt_secret",
							   "HS256 signing secret (at least 32 bytes), used when isa.jwt_algorithm is HS256.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_jwt_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_previous_secret",
							   "The HS256 secret before the last rotation: still accepted for verification.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_jwt_previous_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_issuer",
							   "The iss claim auth writes into tokens and requires of them.",
							   NULL,
							   &isa_jwt_issuer, "isa",
							   PGC_SUSET, 0, check_not_empty, NULL, NULL);
	DefineCustomStringVariable("isa.jwt_audience",
							   "The aud claim auth writes into tokens and requires of them.",
							   NULL,
							   &isa_jwt_audience, "isa",
							   PGC_SUSET, 0, check_not_empty, NULL, NULL);
	DefineCustomIntVariable("isa.jwt_access_ttl",
							"Lifetime of an access token (and of a device token).",
							NULL,
							&isa_jwt_access_ttl, 900, 30, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.refresh_ttl",
							"Lifetime of a refresh token; each refresh issues a new one with a full lifetime.",
							NULL,
							&isa_refresh_ttl, 30 * 24 * 3600, 60, 365 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.jwt_clock_skew",
							"Clock skew tolerated when checking a token's exp, nbf and iat.",
							NULL,
							&isa_jwt_clock_skew, 30, 0, 300,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.password_opslimit",
							"argon2id passes (t) for new password hashes.",
							"Hashes made with other parameters are rehashed at the next successful login.",
							&isa_password_opslimit, 2, 1, 20,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.password_memlimit",
							"argon2id memory (m) for new password hashes.",
							"Hashes made with other parameters are rehashed at the next successful login.",
							&isa_password_memlimit, 19 * 1024, 7 * 1024, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_max_failures",
							"Failed logins for one e-mail address within isa.login_failure_window that lock it.",
							NULL,
							&isa_login_max_failures, 5, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_failure_window",
							"The window in which failed logins are counted.",
							NULL,
							&isa_login_failure_window, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("isa.login_lockout",
							"How long an e-mail address stays locked after too many failed logins.",
							NULL,
							&isa_login_lockout, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

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

/* ---------------------------------------------------------------- settings read by SQL */

/* auth._jwt_algorithm() RETURNS text: 'EdDSA' or 'HS256' */
PG_FUNCTION_INFO_V1(isa_auth_jwt_algorithm);
Datum
isa_auth_jwt_algorithm(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA"));
}

/* auth._lifetime(what text) RETURNS integer: seconds of 'access', 'refresh' or 'skew' */
PG_FUNCTION_INFO_V1(isa_auth_lifetime);
Datum
isa_auth_lifetime(PG_FUNCTION_ARGS)
{
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(what, "access") == 0)
		PG_RETURN_INT32(isa_jwt_access_ttl);
	if (strcmp(what, "refresh") == 0)
		PG_RETURN_INT32(isa_refresh_ttl);
	if (strcmp(what, "skew") == 0)
		PG_RETURN_INT32(isa_jwt_clock_skew);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown lifetime \"%s\"", what),
			 errhint("Use access, refresh or skew.")));
	PG_RETURN_NULL();
}

/* ---------------------------------------------------------------- passwords */

static unsigned long long
memlimit_bytes(void)
{
	return (unsigned long long) isa_password_memlimit * 1024;
}

static void
hash_password(char *out, const char *password, size_t len)
{
	isa_crypto_init();
	if (crypto_pwhash_str_alg(out, password, len,
							  (unsigned long long) isa_password_opslimit, (size_t) memlimit_bytes(),
							  crypto_pwhash_ALG_ARGON2ID13) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not hash the password: out of memory"),
				 errdetail("argon2id needs %d kB (isa.password_memlimit).", isa_password_memlimit)));
}

/* auth._hash_password(password text) RETURNS text: $argon2id$v=19$m=...,t=...,p=1$salt$hash */
PG_FUNCTION_INFO_V1(isa_auth_hash_password);
Datum
isa_auth_hash_password(PG_FUNCTION_ARGS)
{
	text	   *password = PG_GETARG_TEXT_PP(0);
	char		out[crypto_pwhash_STRBYTES];

	hash_password(out, VARDATA_ANY(password), VARSIZE_ANY_EXHDR(password));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * A hash of a random password made with the current parameters, per backend:
 * verifying against it costs what verifying a real hash costs, so a login for
 * an unknown address takes as long as one with a wrong password.
 */
static char dummy_hash[crypto_pwhash_STRBYTES];
static int	dummy_opslimit = 0;
static int	dummy_memlimit = 0;

static const char *
get_dummy_hash(void)
{
	if (dummy_opslimit != isa_password_opslimit || dummy_memlimit != isa_password_memlimit)
	{
		unsigned char random_password[32];

		randombytes_buf(random_password, sizeof(random_password));
		hash_password(dummy_hash, (const char *) random_password, sizeof(random_password));
		dummy_opslimit = isa_password_opslimit;
		dummy_memlimit = isa_password_memlimit;
	}
	return dummy_hash;
}

/*
 * auth._verify_password(hash text, password text) RETURNS boolean: whether
 * password matches hash (libsodium's verification is constant-time).  A NULL
 * hash (no such user, no password) verifies against a dummy hash and is false.
 */
PG_FUNCTION_INFO_V1(isa_auth_verify_password);
Datum
isa_auth_verify_password(PG_FUNCTION_ARGS)
{
	text	   *password;
	char	   *hash;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("password must not be null")));
	password = PG_GETARG_TEXT_PP(1);
	isa_crypto_init();
	if (PG_ARGISNULL(0))
	{
		volatile int ignored = crypto_pwhash_str_verify(get_dummy_hash(), VARDATA_ANY(password),
														VARSIZE_ANY_EXHDR(password));

		(void) ignored;
		PG_RETURN_BOOL(false);
	}
	hash = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(hash) >= crypto_pwhash_STRBYTES)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(crypto_pwhash_str_verify(hash, VARDATA_ANY(password),
											VARSIZE_ANY_EXHDR(password)) == 0);
}

/* auth._password_needs_rehash(hash text) RETURNS boolean: made with other parameters (or not argon2id) */
PG_FUNCTION_INFO_V1(isa_auth_password_needs_rehash);
Datum
isa_auth_password_needs_rehash(PG_FUNCTION_ARGS)
{
	char	   *hash = text_to_cstring(PG_GETARG_TEXT_PP(0));

	isa_crypto_init();
	if (strncmp(hash, crypto_pwhash_argon2id_STRPREFIX, strlen(crypto_pwhash_argon2id_STRPREFIX)) != 0)
		PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(crypto_pwhash_str_needs_rehash(hash, (unsigned long long) isa_password_opslimit,
												  (size_t) memlimit_bytes()) != 0);
}

/* ---------------------------------------------------------------- Ed25519 */

static bytea *
make_bytea(const unsigned char *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	memcpy(VARDATA(b), data, len);
	SET_VARSIZE(b, VARHDRSZ + len);
	return b;
}

/* auth._ed25519_keypair(OUT public_key bytea, OUT secret_key bytea): a new key pair (32 + 64 bytes) */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_keypair);
Datum
isa_auth_ed25519_keypair(PG_FUNCTION_ARGS)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	isa_crypto_init();
	crypto_sign_keypair(pk, sk);
	values[0] = PointerGetDatum(make_bytea(pk, sizeof(pk)));
	values[1] = PointerGetDatum(make_bytea(sk, sizeof(sk)));
	sodium_memzero(sk, sizeof(sk));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* auth._ed25519_sign(secret_key bytea, message bytea) RETURNS bytea: the 64-byte detached signature */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_sign);
Datum
isa_auth_ed25519_sign(PG_FUNCTION_ARGS)
{
	bytea	   *sk = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	unsigned char sig[crypto_sign_BYTES];

	if (VARSIZE_ANY_EXHDR(sk) != crypto_sign_SECRETKEYBYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an Ed25519 secret key has %d bytes, not %d",
						crypto_sign_SECRETKEYBYTES, (int) VARSIZE_ANY_EXHDR(sk))));
	isa_crypto_init();
	crypto_sign_detached(sig, NULL, (const unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg),
						 (const unsigned char *) VARDATA_ANY(sk));
	PG_RETURN_BYTEA_P(make_bytea(sig, sizeof(sig)));
}

/*
 * auth._ed25519_verify(public_key bytea, message bytea, signature bytea)
 * RETURNS boolean: false for a key or signature of the wrong length too.
 */
PG_FUNCTION_INFO_V1(isa_auth_ed25519_verify);
Datum
isa_auth_ed25519_verify(PG_FUNCTION_ARGS)
{
	bytea	   *pk = PG_GETARG_BYTEA_PP(0);
	bytea	   *msg = PG_GETARG_BYTEA_PP(1);
	bytea	   *sig = PG_GETARG_BYTEA_PP(2);

	if (VARSIZE_ANY_EXHDR(pk) != crypto_sign_PUBLICKEYBYTES || VARSIZE_ANY_EXHDR(sig) != crypto_sign_BYTES)
		PG_RETURN_BOOL(false);
	isa_crypto_init();
	PG_RETURN_BOOL(crypto_sign_verify_detached((const unsigned char *) VARDATA_ANY(sig),
											   (const unsigned char *) VARDATA_ANY(msg),
											   VARSIZE_ANY_EXHDR(msg),
											   (const unsigned char *) VARDATA_ANY(pk)) == 0);
}

/* ---------------------------------------------------------------- JWT */

static void pg_attribute_noreturn()
reject(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token: %s", reason)));
}

static char *
b64url_encode(const unsigned char *data, size_t len)
{
	size_t		cap = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char	   *out = palloc(cap);

	sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

/* Strict base64url without padding; false on anything else. */
static bool
b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	size_t		cap = len / 4 * 3 + 3;
	const char *end = NULL;

	*out = palloc(cap + 1);
	if (len == 0 ||
		sodium_base642bin(*out, cap, in, len, NULL, outlen, &end,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		end != in + len)
		return false;
	(*out)[*outlen] = '\0';
	return true;
}

/* A compact JWS: the three segments and what the signature covers. */
typedef struct Jws
{
	const char *signing_input;	/* header.payload */
	size_t		signing_len;
	const char *payload_b64;
	size_t		payload_b64_len;
	const char *signature_b64;
	size_t		signature_b64_len;
	/* from the header */
	char	   *alg;
	char	   *kid;
} Jws;

/* What the header parser collects: top-level alg, kid, typ; crit; duplicates. */
typedef struct HeaderState
{
	int			depth;
	char	   *field;			/* the top-level member whose value comes next */
	char	   *alg;
	char	   *kid;
	char	   *typ;
	bool		crit;
	bool		duplicate;
	bool		not_string;		/* alg, kid or typ has a value that is not a string */
} HeaderState;

static void
hdr_nest_start(void *state)
{
	((HeaderState *) state)->depth++;
}

static void
hdr_nest_end(void *state)
{
	((HeaderState *) state)->depth--;
}

static bool
is_member(const char *fname, const char *name)
{
	return fname != NULL && strcmp(fname, name) == 0;
}

static void
hdr_field_start(void *state, char *fname, bool isnull)
{
	HeaderState *h = state;

	if (h->depth != 1)
		return;
	h->field = fname;
	if (is_member(fname, "crit"))
		h->crit = true;
	if ((is_member(fname, "alg") && h->alg) || (is_member(fname, "kid") && h->kid) ||
		(is_member(fname, "typ") && h->typ))
		h->duplicate = true;
}

static void
hdr_field_end(void *state, char *fname, bool isnull)
{
	HeaderState *h = state;

	if (h->depth != 1)
		return;
	/* alg, kid or typ whose value was not a string: its slot is still empty */
	if ((is_member(fname, "alg") && !h->alg) || (is_member(fname, "kid") && !h->kid) ||
		(is_member(fname, "typ") && !h->typ))
		h->not_string = true;
	h->field = NULL;
}

static void
hdr_scalar(void *state, char *token, JsonTokenType tokentype)
{
	HeaderState *h = state;
	char	  **slot = NULL;

	if (h->depth != 1 || h->field == NULL)
		return;
	if (is_member(h->field, "alg"))
		slot = &h->alg;
	else if (is_member(h->field, "kid"))
		slot = &h->kid;
	else if (is_member(h->field, "typ"))
		slot = &h->typ;
	if (slot == NULL)
		return;
	if (tokentype == JSON_TOKEN_STRING)
		*slot = token;
}

/*
 * Whether bytes are one JSON object in the database encoding; escapes are
 * checked too (need_escapes), so jsonb_in cannot fail on them later.
 */
static bool
valid_json_object(char *json, size_t len, JsonSemAction *sem)
{
	const char *p = json;

	if (len > INT_MAX || !pg_verifymbstr(json, (int) len, true))
		return false;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != '{')
		return false;
	return pg_parse_json(makeJsonLexContextCstringLen(json, (int) len, GetDatabaseEncoding(), true),
						 sem) == JSON_SUCCESS;
}

/* The kid of an HS256 secret: 16 hex digits of HMAC-SHA256(secret, "isa-jwt-kid"). */
static char *
hs256_kid(const char *secret)
{
	static const char label[] = "isa-jwt-kid";
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;
	char	   *hex = palloc(17);

	crypto_auth_hmacsha256_init(&st, (const unsigned char *) secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) label, strlen(label));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
	sodium_bin2hex(hex, 17, mac, 8);
	return hex;
}

/*
 * The HS256 secret (current or previous), or NULL when that one is not set;
 * 55000 when the current one is needed and missing, or either is too short.
 */
static const char *
hs256_secret(bool previous, bool required)
{
	const char *s = previous ? isa_jwt_previous_secret : isa_jwt_secret;
	const char *name = previous ? "isa.jwt_previous_secret" : "isa.jwt_secret";

	if (s == NULL || s[0] == '\0')
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("isa.jwt_algorithm is HS256 but %s is not set", name),
					 errhint("Set %s to a random secret of at least %d bytes.", name, JWT_MIN_SECRET)));
		return NULL;
	}
	if (strlen(s) < JWT_MIN_SECRET)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s is shorter than %d bytes", name, JWT_MIN_SECRET),
				 errhint("Use a random secret of at least %d bytes, e.g. from openssl rand -base64 48.",
						 JWT_MIN_SECRET)));
	return s;
}

static void
hmac_sha256(unsigned char *out, const char *key, const char *msg, size_t len)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, (const unsigned char *) key, strlen(key));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *) msg, len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

static bool
valid_kid(const char *kid)
{
	size_t		len = strlen(kid);

	if (len == 0 || len > JWT_MAX_KID)
		return false;
	for (const char *p = kid; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			  *p == '-' || *p == '_'))
			return false;
	return true;
}

/*
 * Splits and checks a compact JWS and its header: three segments, header and
 * payload not empty; the header a JSON object whose alg is the configured
 * algorithm (the token never chooses), typ absent or JWT, no crit, a kid.
 * 28000 otherwise.
 */
static void
parse_jws(text *token, Jws *jws)
{
	char	   *t = VARDATA_ANY(token);
	size_t		len = VARSIZE_ANY_EXHDR(token);
	const char *dot1 = NULL,
			   *dot2 = NULL;
	unsigned char *header;
	size_t		header_len;
	HeaderState h;
	JsonSemAction sem;
	const char *configured = isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA";

	memset(jws, 0, sizeof(*jws));
	if (len > JWT_MAX_TOKEN)
		reject("too long");
	for (size_t i = 0; i < len; i++)
	{
		if (t[i] != '.')
			continue;
		if (dot1 == NULL)
			dot1 = t + i;
		else if (dot2 == NULL)
			dot2 = t + i;
		else
			reject("malformed");
	}
	/* an empty signature (alg none) is refused by the algorithm check first */
	if (dot2 == NULL || dot1 == t || dot2 == dot1 + 1)
		reject("malformed");

	jws->signing_input = t;
	jws->signing_len = dot2 - t;
	jws->payload_b64 = dot1 + 1;
	jws->payload_b64_len = dot2 - dot1 - 1;
	jws->signature_b64 = dot2 + 1;
	jws->signature_b64_len = t + len - dot2 - 1;

	isa_crypto_init();
	if (!b64url_decode(t, dot1 - t, &header, &header_len))
		reject("malformed header");
	memset(&h, 0, sizeof(h));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &h;
	sem.object_start = hdr_nest_start;
	sem.object_end = hdr_nest_end;
	sem.array_start = hdr_nest_start;
	sem.array_end = hdr_nest_end;
	sem.object_field_start = hdr_field_start;
	sem.object_field_end = hdr_field_end;
	sem.scalar = hdr_scalar;
	if (!valid_json_object((char *) header, header_len, &sem))
		reject("malformed header");
	if (h.duplicate || h.not_string)
		reject("malformed header");
	if (h.alg == NULL)
		reject("no algorithm in the header");
	if (strcmp(h.alg, configured) != 0)
	{
		bool		printable = strlen(h.alg) <= 20;

		for (const char *p = h.alg; *p && printable; p++)
			printable = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '+';
		if (printable)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("invalid token: algorithm \"%s\" is not accepted", h.alg),
					 errhint("Tokens must be signed with %s (isa.jwt_algorithm).", configured)));
		reject("algorithm is not accepted");
	}
	if (h.typ != NULL && strcmp(h.typ, "JWT") != 0)
		reject("typ is not JWT");
	if (h.crit)
		reject("unsupported critical header parameters");
	if (h.kid == NULL || !valid_kid(h.kid))
		reject("no valid kid in the header");
	jws->alg = h.alg;
	jws->kid = h.kid;
}

/*
 * auth._jwt_kid(token text) RETURNS text: the kid of a token whose header is
 * acceptable (see parse_jws).  With HS256 the kid must name isa.jwt_secret
 * or isa.jwt_previous_secret.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_kid);
Datum
isa_auth_jwt_kid(PG_FUNCTION_ARGS)
{
	Jws			jws;

	parse_jws(PG_GETARG_TEXT_PP(0), &jws);
	if (isa_jwt_algorithm == ISA_JWT_HS256)
	{
		const char *current = hs256_secret(false, true);
		const char *previous = hs256_secret(true, false);

		if (strcmp(jws.kid, hs256_kid(current)) != 0 &&
			(previous == NULL || strcmp(jws.kid, hs256_kid(previous)) != 0))
			reject("unknown signing key");
	}
	PG_RETURN_TEXT_P(cstring_to_text(jws.kid));
}

static int64
unix_now(void)
{
	return GetCurrentTimestamp() / USECS_PER_SEC +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

static int
cmp_numeric_int(Numeric a, int64 b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a),
											 NumericGetDatum(int64_to_numeric(b))));
}

static JsonbValue *
claim(Jsonb *claims, const char *name)
{
	return getKeyJsonValueFromContainer(&claims->root, name, strlen(name), NULL);
}

static bool
jbv_string_equals(const JsonbValue *v, const char *s)
{
	return v->type == jbvString && v->val.string.len == (int) strlen(s) &&
		memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

/* A numeric claim: NULL when absent, 28000 when not a number. */
static Numeric
numeric_claim(Jsonb *claims, const char *name, bool required)
{
	JsonbValue *v = claim(claims, name);

	if (v == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("invalid token: no %s claim", name)));
		return NULL;
	}
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("invalid token: the %s claim is not a number", name)));
	return v->val.numeric;
}

/*
 * exp (required) not passed, nbf and iat (when present) not in the future,
 * each with isa.jwt_clock_skew of tolerance; iss equal to isa.jwt_issuer; aud
 * equal to isa.jwt_audience or an array holding it.
 */
static void
check_claims(Jsonb *claims)
{
	int64		now = unix_now();
	Numeric		exp,
				nbf,
				iat;
	JsonbValue *iss,
			   *aud;
	bool		aud_ok = false;

	if (JB_ROOT_IS_SCALAR(claims) || !JB_ROOT_IS_OBJECT(claims))
		reject("the claims are not a JSON object");
	exp = numeric_claim(claims, "exp", true);
	nbf = numeric_claim(claims, "nbf", false);
	iat = numeric_claim(claims, "iat", false);
	if (cmp_numeric_int(exp, now - isa_jwt_clock_skew) <= 0)
		reject("expired");
	if (nbf != NULL && cmp_numeric_int(nbf, now + isa_jwt_clock_skew) > 0)
		reject("not valid yet (nbf)");
	if (iat != NULL && cmp_numeric_int(iat, now + isa_jwt_clock_skew) > 0)
		reject("issued in the future (iat)");

	iss = claim(claims, "iss");
	if (iss == NULL || !jbv_string_equals(iss, isa_jwt_issuer))
		reject("wrong issuer");

	aud = claim(claims, "aud");
	if (aud != NULL && aud->type == jbvString)
		aud_ok = jbv_string_equals(aud, isa_jwt_audience);
	else if (aud != NULL && aud->type == jbvBinary && JsonContainerIsArray(aud->val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(aud->val.binary.data);
		JsonbValue	elem;
		JsonbIteratorToken r;

		while ((r = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
			if (r == WJB_ELEM && jbv_string_equals(&elem, isa_jwt_audience))
				aud_ok = true;
	}
	if (!aud_ok)
		reject("wrong audience");
}

/*
 * auth._jwt_verify(token text, public_key bytea) RETURNS jsonb: the claims of
 * a token whose header is acceptable, whose signature is valid (Ed25519 with
 * public_key for EdDSA; HMAC-SHA256 with the secret its kid names for HS256,
 * public_key ignored) and whose claims pass check_claims.  28000 otherwise,
 * naming the reason.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_verify);
Datum
isa_auth_jwt_verify(PG_FUNCTION_ARGS)
{
	Jws			jws;
	unsigned char *sig;
	size_t		sig_len;
	unsigned char *payload;
	size_t		payload_len;
	Jsonb	   *claims;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null")));
	parse_jws(PG_GETARG_TEXT_PP(0), &jws);
	if (!b64url_decode(jws.signature_b64, jws.signature_b64_len, &sig, &sig_len))
		reject("malformed signature");

	if (isa_jwt_algorithm == ISA_JWT_EDDSA)
	{
		bytea	   *pk;

		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("an EdDSA token needs the public key of its kid")));
		pk = PG_GETARG_BYTEA_PP(1);
		if (VARSIZE_ANY_EXHDR(pk) != crypto_sign_PUBLICKEYBYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an Ed25519 public key has %d bytes, not %d",
							crypto_sign_PUBLICKEYBYTES, (int) VARSIZE_ANY_EXHDR(pk))));
		if (sig_len != crypto_sign_BYTES ||
			crypto_sign_verify_detached(sig, (const unsigned char *) jws.signing_input, jws.signing_len,
										(const unsigned char *) VARDATA_ANY(pk)) != 0)
			reject("bad signature");
	}
	else
	{
		const char *current = hs256_secret(false, true);
		const char *previous = hs256_secret(true, false);
		const char *secret = NULL;
		unsigned char mac[crypto_auth_hmacsha256_BYTES];

		if (strcmp(jws.kid, hs256_kid(current)) == 0)
			secret = current;
		else if (previous != NULL && strcmp(jws.kid, hs256_kid(previous)) == 0)
			secret = previous;
		else
			reject("unknown signing key");
		hmac_sha256(mac, secret, jws.signing_input, jws.signing_len);
		if (sig_len != sizeof(mac) || sodium_memcmp(mac, sig, sizeof(mac)) != 0)
			reject("bad signature");
	}

	/* Signed by us: now the payload may be parsed as a whole. */
	if (!b64url_decode(jws.payload_b64, jws.payload_b64_len, &payload, &payload_len) ||
		!valid_json_object((char *) payload, payload_len, &nullSemAction))
		reject("malformed claims");
	claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum((char *) payload)));
	check_claims(claims);
	PG_RETURN_JSONB_P(claims);
}

/*
 * auth._jwt_encode(claims jsonb, kid text, secret_key bytea) RETURNS text: a
 * compact JWS of claims with the configured algorithm.  EdDSA signs with
 * secret_key (64 bytes) under kid; HS256 ignores both and signs with
 * isa.jwt_secret under its derived kid.  The claims are signed as given.
 */
PG_FUNCTION_INFO_V1(isa_auth_jwt_encode);
Datum
isa_auth_jwt_encode(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	StringInfoData header;
	StringInfoData out;
	char	   *payload;
	char	   *kid;
	const char *secret = NULL;
	bytea	   *sk = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("claims must not be null")));
	claims = PG_GETARG_JSONB_P(0);
	if (JB_ROOT_IS_SCALAR(claims) || !JB_ROOT_IS_OBJECT(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("JWT claims must be a JSON object")));
	isa_crypto_init();
	if (isa_jwt_algorithm == ISA_JWT_EDDSA)
	{
		if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("EdDSA signing needs a kid and a secret key")));
		kid = text_to_cstring(PG_GETARG_TEXT_PP(1));
		sk = PG_GETARG_BYTEA_PP(2);
		if (!valid_kid(kid))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a kid is 1 to %d characters of A-Z a-z 0-9 - _", JWT_MAX_KID)));
		if (VARSIZE_ANY_EXHDR(sk) != crypto_sign_SECRETKEYBYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an Ed25519 secret key has %d bytes, not %d",
							crypto_sign_SECRETKEYBYTES, (int) VARSIZE_ANY_EXHDR(sk))));
	}
	else
	{
		secret = hs256_secret(false, true);
		kid = hs256_kid(secret);
	}

	initStringInfo(&header);
	appendStringInfo(&header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":",
					 isa_jwt_algorithm == ISA_JWT_HS256 ? "HS256" : "EdDSA");
	escape_json(&header, kid);
	appendStringInfoChar(&header, '}');
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	initStringInfo(&out);
	appendStringInfoString(&out, b64url_encode((unsigned char *) header.data, header.len));
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, b64url_encode((unsigned char *) payload, strlen(payload)));
	if (sk != NULL)
	{
		unsigned char sig[crypto_sign_BYTES];

		crypto_sign_detached(sig, NULL, (const unsigned char *) out.data, out.len,
							 (const unsigned char *) VARDATA_ANY(sk));
		appendStringInfoChar(&out, '.');
		appendStringInfoString(&out, b64url_encode(sig, sizeof(sig)));
	}
	else
	{
		unsigned char mac[crypto_auth_hmacsha256_BYTES];

		hmac_sha256(mac, secret, out.data, out.len);
		appendStringInfoChar(&out, '.');
		appendStringInfoString(&out, b64url_encode(mac, sizeof(mac)));
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
