/*
 * dead_letters.c — the bridge gives up on a message: it writes the message
 * to isa.dead_letters and publishes <source>.event.dead_lettered from the
 * consuming service, both in a subtransaction of the apply transaction, so
 * that they commit with the batch (and before the +TERM that apply.c sends
 * after the commit).
 *
 * Reasons: handler_error (after max_deliver deliveries), invalid_envelope
 * and unsupported_version (at once: bad data is not retried).  Replaying a
 * dead letter is a user's call, in replay.c.  Docs: docs/bridge.md,
 * "Consuming" (Dead letters) and "Dead letters and replay".
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "isa.h"
#include "bridge.h"

/* Saved: prepared once per worker, like the apply path's other statements. */
static SPIPlanPtr dead_letter_plan = NULL;

/* Called by the apply path at the start of each batch, before any subtransaction. */
void
isa_dead_letters_prepare(void)
{
	Oid			types[12] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, JSONBOID, BYTEAOID,
	TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};

	if (dead_letter_plan != NULL)
		return;
	dead_letter_plan = SPI_prepare(
								   "WITH d AS ("
								   "  INSERT INTO isa.dead_letters (subscription_id, service, consumer, subject, event_id,"
								   "         event, payload, reason, error_message, error_sqlstate, attempts)"
								   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id)"
								   " SELECT d.id, isa.publish_event('event.dead_lettered', $12,"
								   "   jsonb_build_object('dead_letter_id', d.id, 'service', $2, 'consumer', $3,"
								   "     'subject', $4, 'event_id', $5, 'reason', $8, 'error', $9, 'sqlstate', $10,"
								   "     'attempts', $11),"
								   "   jsonb_strip_nulls(jsonb_build_object("
								   "     'correlation_id', coalesce($6->'metadata'->>'correlation_id', $5::text),"
								   "     'causation_id', $5::text)))"
								   "  FROM d", 12, types);
	if (dead_letter_plan == NULL)
		elog(ERROR, "isa bridge: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(dead_letter_plan);
}

typedef struct DeadLetter
{
	const BridgeSub *sub;
	natsMsg    *msg;
	uint64		delivered;
	const ApplyFailure *f;
} DeadLetter;

static void
write_dead_letter_body(void *arg)
{
	const DeadLetter *dl = arg;
	const ApplyFailure *f = dl->f;
	Datum		args[12];
	char		nulls[12];
	Datum		event_id = (Datum) 0;
	int			ret;

	memset(nulls, ' ', sizeof(nulls));
	if (f->event_json)
	{
		JsonbValue	k,
				   *v;

		k.type = jbvString;
		k.val.string.val = "id";
		k.val.string.len = 2;
		v = findJsonbValueFromContainer(&DatumGetJsonbP(f->event_json)->root, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
		{
			/* only a well-formed id: the message may be garbage */
			pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

			if (isa_parse_uuid(v->val.string.val, v->val.string.len, id))
				event_id = UUIDPGetDatum(id);
		}
	}
	args[0] = Int64GetDatum(dl->sub->id);
	args[1] = CStringGetTextDatum(dl->sub->service);
	args[2] = CStringGetTextDatum(dl->sub->durable);
	args[3] = CStringGetTextDatum(natsMsg_GetSubject(dl->msg));
	args[4] = event_id;
	nulls[4] = event_id ? ' ' : 'n';
	args[5] = f->event_json;
	nulls[5] = f->event_json ? ' ' : 'n';
	/* the raw bytes of whatever was not a valid envelope */
	if (!f->event_json || strcmp(f->reason, "invalid_envelope") == 0)
	{
		int			len = natsMsg_GetDataLength(dl->msg);
		bytea	   *b = palloc(VARHDRSZ + len);

		SET_VARSIZE(b, VARHDRSZ + len);
		memcpy(VARDATA(b), natsMsg_GetData(dl->msg), len);
		args[6] = PointerGetDatum(b);
	}
	else
		nulls[6] = 'n';
	args[7] = CStringGetTextDatum(f->reason);
	args[8] = CStringGetTextDatum(f->message);
	args[9] = CStringGetTextDatum(f->sqlstate);
	args[10] = Int32GetDatum((int32) Min(dl->delivered, (uint64) PG_INT32_MAX));
	args[11] = CStringGetTextDatum(dl->sub->source);
	ret = SPI_execute_plan(dead_letter_plan, args, nulls, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "isa bridge: writing the dead letter failed: %s", SPI_result_code_string(ret));
}

/*
 * The dead letter of a message of sub (delivered that many times) and its
 * event, in a subtransaction; false, with the error recorded, if that failed
 * (the caller then retries the message).
 */
bool
isa_dead_letter_write(const BridgeSub *sub, natsMsg *msg, uint64 delivered, const ApplyFailure *f)
{
	DeadLetter	dl = {sub, msg, delivered, f};
	ErrorData  *edata = isa_in_subtransaction(write_dead_letter_body, &dl);

	if (edata == NULL)
		return true;
	isa_bridge_record_error("cannot dead-letter a message of %s: %s", sub->durable, edata->message);
	FreeErrorData(edata);
	return false;
}
