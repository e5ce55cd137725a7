/*
 * device_messages.c — the named exception to the subject rule: the acks and
 * heartbeats devices publish over MQTT, made into envelopes by the bridge.
 *
 * A device publishes on isa.devices.<id>.acks and isa.devices.<id>.heartbeat
 * only (the scoped signing key's template in tools/nats-config.sh), a bare
 * JSON object: MQTT 3.1.1 has no headers and a device is no isa service, so
 * it sends no envelope.  The stream keeps these subjects (nl_ensure_stream),
 * and the bridge builds the envelope of such a message itself:
 *
 *   source      device (ISA_DEVICE_MESSAGE_SOURCE: no service may take it)
 *   event_type  device.ack or device.heartbeat, from the subject
 *   version     1.0.0
 *   id          a version 7 UUID made from the stream, the message's stream
 *               sequence and its stream timestamp: a redelivery has the same
 *               id (the inbox dedupes it), a recreated stream new ones
 *   timestamp   when the stream stored the message
 *   data        the payload, with device_id the <id> of the subject: the
 *               NATS permissions vouch for it, whatever the payload says
 *
 * Docs: docs/bridge.md, "Device messages".
 */
#include "postgres.h"

#include "common/md5.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include <time.h>

#include "isa.h"
#include "bridge.h"

/* The subjects the stream keeps for devices, and the event type of each. */
typedef struct DeviceMessageKind
{
	const char *suffix;			/* isa.devices.<id>.<suffix> */
	const char *event_type;
} DeviceMessageKind;

static const DeviceMessageKind kinds[] = {
	{"acks", "device.ack"},
	{"heartbeat", "device.heartbeat"},
};

#define DEVICE_PREFIX "isa.devices."

const char *const isa_device_message_subjects[] = {
	DEVICE_PREFIX "*.acks",
	DEVICE_PREFIX "*.heartbeat",
};
const int	isa_device_message_nsubjects = lengthof(isa_device_message_subjects);

/*
 * The event type of a message on subject if it is a device message,
 * isa.devices.<id>.acks or .heartbeat with <id> one token; else NULL.  The
 * device id is copied to device_id (palloc'd) when it is.
 */
const char *
isa_device_message_type(const char *subject, char **device_id)
{
	const char *id = subject + strlen(DEVICE_PREFIX);
	const char *dot;

	if (strncmp(subject, DEVICE_PREFIX, strlen(DEVICE_PREFIX)) != 0)
		return NULL;
	dot = strchr(id, '.');
	if (dot == NULL || dot == id)
		return NULL;
	for (int i = 0; i < (int) lengthof(kinds); i++)
		if (strcmp(dot + 1, kinds[i].suffix) == 0)
		{
			if (device_id)
				*device_id = pnstrdup(id, dot - id);
			return kinds[i].event_type;
		}
	return NULL;
}

/*
 * A version 7 UUID whose time is the message's stream time and whose random
 * bits are the MD5 of (stream, sequence, time): the same message always has
 * the same id.
 */
static void
message_id(uint64 seq, int64 ts_ns, char *out)
{
	char	   *key = psprintf("%s/" UINT64_FORMAT "/" INT64_FORMAT, isa_stream, seq, ts_ns);
	uint8		u[16];
	uint64		ms = (uint64) (ts_ns / 1000000);
	const char *errstr = NULL;

	if (!pg_md5_binary(key, strlen(key), u, &errstr))
		elog(ERROR, "could not compute MD5: %s", errstr);
	for (int i = 0; i < 6; i++)
		u[i] = (uint8) (ms >> (8 * (5 - i)));
	u[6] = 0x70 | (u[6] & 0x0f);
	u[8] = 0x80 | (u[8] & 0x3f);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
			 u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/*
 * The envelope (jsonb) of a device message whose payload is json (UTF-8,
 * NUL-terminated): 22023 if the payload is not a JSON object.
 */
Datum
isa_device_message_envelope(natsMsg *msg, const char *json)
{
	const char *event_type;
	char	   *device_id = NULL;
	jsMsgMetaData *meta = NULL;
	uint64		seq;
	int64		ts_ns;
	Datum		payload;
	Datum		data;
	StringInfoData s;
	char		id[37];
	char		when[64];
	struct tm	tm;
	time_t		secs;

	event_type = isa_device_message_type(natsMsg_GetSubject(msg), &device_id);
	Assert(event_type != NULL);
	if (natsMsg_GetMetaData(&meta, msg) != NATS_OK)
		elog(ERROR, "a device message without JetStream metadata");
	seq = meta->Sequence.Stream;
	ts_ns = meta->Timestamp;
	jsMsgMetaData_Destroy(meta);

	payload = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
	if (!JB_ROOT_IS_OBJECT(DatumGetJsonbP(payload)) || JB_ROOT_IS_SCALAR(DatumGetJsonbP(payload)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a device message must be a JSON object"),
				 errhint("A device publishes on isa/devices/<id>/acks and …/heartbeat a JSON object: the bridge makes its envelope.")));

	initStringInfo(&s);
	appendStringInfoString(&s, "{\"device_id\": ");
	escape_json(&s, device_id);
	appendStringInfoChar(&s, '}');
	data = DirectFunctionCall2(jsonb_concat, payload,
							   DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));

	message_id(seq, ts_ns, id);
	secs = (time_t) (ts_ns / 1000000000);
	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

	resetStringInfo(&s);
	appendStringInfo(&s, "{\"id\": \"%s\", \"source\": \"%s\", \"event_type\": \"%s\", \"version\": \"1.0.0\", "
					 "\"timestamp\": \"%s.%06dZ\", \"data\": %s}",
					 id, ISA_DEVICE_MESSAGE_SOURCE, event_type, when, (int) ((ts_ns / 1000) % 1000000),
					 DatumGetCString(DirectFunctionCall1(jsonb_out, data)));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data));
}
