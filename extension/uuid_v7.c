/*
 * uuid_v7.c — time-ordered UUIDs (RFC 9562 §5.7).
 *
 * Layout: 48 bits Unix milliseconds | 4 bits version (7) | 12 bits rand_a |
 * 2 bits variant (10) | 62 bits rand_b.  rand_a is used as a counter within a
 * millisecond (RFC 9562 §6.2 method 1), seeded with random bits but with its
 * top bit clear so it has room to count, which makes ids monotonic within a
 * backend even when several are made in the same millisecond or the clock
 * steps back.
 *
 * When isa is preloaded, the millisecond and counter are one clock for the
 * whole cluster (an atomic in shared memory): an id made later is greater,
 * whichever backend makes it.  The bridge publishes in id order, so two
 * transactions that change the same row one after the other publish their
 * events in that order, even within one millisecond (test 45).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "isa.h"

PG_FUNCTION_INFO_V1(isa_uuid_v7);
PG_FUNCTION_INFO_V1(isa_uuid_v7_time);

/* Milliseconds between the Unix and PostgreSQL epochs. */
#define UNIX_TO_PG_EPOCH_MS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000)

static int64 last_ms = -1;
static uint32 last_counter = 0;

/*
 * Makes a UUIDv7 for time ts and returns the time it carries: ts itself, or a
 * later millisecond when the counter or a clock step moved past ts.
 */
TimestampTz
isa_uuid_v7_at(TimestampTz ts, pg_uuid_t *out)
{
	int64		ms = ts / 1000 + UNIX_TO_PG_EPOCH_MS;
	uint32		counter;
	uint8		rnd[10];

	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a UUID")));

	if (isa_shared != NULL)
	{
		uint64		want = (uint64) ms << 12 | (((uint32) rnd[0] << 8 | rnd[1]) & 0x7FF);
		uint64		cur = pg_atomic_read_u64(&isa_shared->uuid_v7_clock);
		uint64		next;

		/* a new millisecond starts at a random counter; else count on (into the next ms) */
		do
			next = want > cur ? want : cur + 1;
		while (!pg_atomic_compare_exchange_u64(&isa_shared->uuid_v7_clock, &cur, next));
		ms = (int64) (next >> 12);
		counter = (uint32) (next & 0xFFF);
	}
	else if (ms > last_ms)
		counter = ((uint32) rnd[0] << 8 | rnd[1]) & 0x7FF;
	else
	{
		/* same millisecond, or the clock went back: keep counting */
		ms = last_ms;
		counter = last_counter + 1;
		if (counter > 0xFFF)
		{
			ms++;
			counter = 0;
		}
	}
	last_ms = ms;
	last_counter = counter;

	out->data[0] = (uint8) (ms >> 40);
	out->data[1] = (uint8) (ms >> 32);
	out->data[2] = (uint8) (ms >> 24);
	out->data[3] = (uint8) (ms >> 16);
	out->data[4] = (uint8) (ms >> 8);
	out->data[5] = (uint8) ms;
	out->data[6] = 0x70 | (uint8) (counter >> 8);
	out->data[7] = (uint8) counter;
	out->data[8] = 0x80 | (rnd[2] & 0x3F);
	memcpy(&out->data[9], &rnd[3], 7);

	if (ms != ts / 1000 + UNIX_TO_PG_EPOCH_MS)
		return (ms - UNIX_TO_PG_EPOCH_MS) * 1000;
	return ts;
}

Datum
isa_uuid_v7(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	isa_uuid_v7_at(GetCurrentTimestamp(), id);
	PG_RETURN_UUID_P(id);
}

/* The millisecond timestamp inside a UUIDv7; an error for other versions. */
Datum
isa_uuid_v7_time(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	int64		ms = 0;

	if ((id->data[6] >> 4) != 7 || (id->data[8] & 0xC0) != 0x80)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a version 7 UUID",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id))))));

	for (int i = 0; i < 6; i++)
		ms = (ms << 8) | id->data[i];
	PG_RETURN_TIMESTAMPTZ((ms - UNIX_TO_PG_EPOCH_MS) * 1000);
}
