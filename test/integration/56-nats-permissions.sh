# NATS is authenticated and authorised (operator/JWT mode, tools/nats-config.sh):
# on the stack's own nats-server, a client without a credential is refused,
# and each credential may do what its party needs and nothing else: the
# producer publishes external.> only, the subscriber only reads, the bridge
# publishes its services' subjects, not external.>; no credential may
# subscribe to another's inbox.  (docs/bridge.md, "Securing NATS".)
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${ISA_NATS_PRODUCER_CREDS:?the stack environment (tools/stack.sh NAME env) exports the NATS credentials}"
ADMIN=$ISA_NATS_CREDS PRODUCER=$ISA_NATS_PRODUCER_CREDS MODEL=$ISA_NATS_MODEL_CREDS
SUBSCRIBER=$ISA_NATS_SUBSCRIBER_CREDS BRIDGE=$ISA_NATS_BRIDGE_CREDS
ET="it.permissions$$"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# isa-nats.mjs as one party (bounded: a refused request must not hang the file)
as() { local creds=$1; shift; ISA_NATS_CREDS=$creds timeout 30 node "$here/../natsclient/isa-nats.mjs" --timeout-ms 3000 "$@" 2>&1; }
# whether the server lets a party publish or subscribe there: true or false
may() { as "$1" "may-$2" "$3" | sed -n 's/.*"allowed":\(true\|false\).*/\1/p'; }
stream_exists() { as "$ADMIN" stream-info >/dev/null && echo yes || echo no; }

# ---------------------------------------------------------------- who gets in
out=$(as "" stream-info); rc=$?
ok "a client without a credential is refused" test "$rc" != 0
like "$out" "Authorization Violation" "with the server's Authorization Violation"

# a credential minted by a key the operator does not trust
"$root/tools/isa-nats-keys" nkey account >"$TMP/rogue.nk"
"$root/tools/isa-nats-keys" user "$TMP/rogue.nk" --name rogue >"$TMP/rogue.creds"
out=$(as "$TMP/rogue.creds" may-pub "payment_service.payment.completed"); rc=$?
ok "a credential signed by an account the operator never signed is refused" test "$rc" != 0

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected with its own credential"
sql "SELECT isa.register_event_type('$ET', 'audit_service', '1.0.0', 'integration test event')" >/dev/null
id=$(sql "SELECT isa.publish_event('$ET', 'audit_service', '{\"n\": 1}')")
is "$(wait_for "SELECT published_at IS NOT NULL FROM isa.outbox WHERE id = '$id'" t 20)" t \
   "and publishes its services' events (audit_service.$ET) through it"

# ---------------------------------------------------------------- the producer
is "$(as "$PRODUCER" pub-events "$ET" --source external)" 1 "the producer publishes an event on external.$ET"
is "$(may "$PRODUCER" pub payment_service.payment.completed)" false "the producer may not publish payment_service.payment.completed"
is "$(may "$PRODUCER" pub 'payment_service.>')" false "nor anything under payment_service.>"
is "$(may "$PRODUCER" sub 'account_service.>')" false "the producer may not subscribe to account_service.>"
out=$(as "$PRODUCER" sub 'account_service.>' --count 1); rc=$?
ok "nor read account_service.> through a consumer of the stream" test "$rc" != 0
out=$(as "$PRODUCER" stream-delete ISA_EVENTS); rc=$?
ok "the producer may not delete the stream" test "$rc" != 0
is "$(stream_exists)" yes "which is still there"
is "$(may "$MODEL" pub external.usage.recorded.other)" false \
   "the isA_Model producer may publish only its own subject (not external.usage.recorded.other)"

# ---------------------------------------------------------------- the subscriber
out=$(as "$SUBSCRIBER" sub "external.$ET" --consumer watch --count 1); rc=$?
is "$rc" 0 "the subscriber reads the stream through a consumer it owns ('watch')"
like "$out" "\"subject\":\"external.$ET\"" "and gets the producer's event"
is "$(may "$SUBSCRIBER" sub "audit_service.$ET")" true "the subscriber may subscribe to event subjects"
out=$(as "$SUBSCRIBER" sub "external.$ET" --consumer someone_else --count 1); rc=$?
ok "the subscriber may not create a consumer of another name" test "$rc" != 0
for subject in payment_service.payment.completed external.usage.recorded.model '$JS.API.STREAM.PURGE.ISA_EVENTS'; do
  is "$(may "$SUBSCRIBER" pub "$subject")" false "the subscriber may not publish $subject"
done
out=$(as "$SUBSCRIBER" stream-delete ISA_EVENTS); rc=$?
ok "the subscriber may not delete the stream" test "$rc" != 0
is "$(stream_exists)" yes "which is still there"
durable=$(sql "SELECT durable_name FROM isa.subscriptions ORDER BY id LIMIT 1")
out=$(as "$SUBSCRIBER" consumer-delete ISA_EVENTS "$durable"); rc=$?
ok "the subscriber may not delete a consumer it does not own (the bridge's $durable)" test "$rc" != 0
out=$(as "$ADMIN" consumer-info ISA_EVENTS "$durable"); rc=$?
is "$rc" 0 "which is still there"

# ---------------------------------------------------------------- the bridge's credential
is "$(may "$BRIDGE" pub external.usage.recorded.model)" false "the bridge's credential may not publish external.usage.recorded.model"
is "$(may "$BRIDGE" pub 'external.>')" false "nor anything under external.>"
is "$(may "$BRIDGE" pub replay.r1.wallet_service.tokens.deducted)" true "the bridge may publish replays (replay.>)"
is "$(may "$SUBSCRIBER" sub 'replay.r1.>')" true "which the subscriber may read"
is "$(may "$PRODUCER" pub replay.r1.wallet_service.tokens.deducted)" false "and the producer may not forge"
is "$(may "$SUBSCRIBER" pub replay.r1.wallet_service.tokens.deducted)" false "nor the subscriber"

# ---------------------------------------------------------------- inboxes
is "$(may "$PRODUCER" sub _INBOX.producer.x)" true "the producer may subscribe to its own inbox prefix _INBOX.producer"
for pair in "PRODUCER bridge" "PRODUCER subscriber" "SUBSCRIBER bridge" "SUBSCRIBER producer" "BRIDGE producer" \
            "BRIDGE subscriber" "MODEL producer"; do
  set -- $pair
  is "$(may "${!1}" sub "_INBOX.$2.>")" false "the ${1,,} credential may not subscribe to the $2's inbox prefix _INBOX.$2"
done
is "$(may "$PRODUCER" sub '_INBOX.>')" false "nor to every inbox (_INBOX.>)"

# ---------------------------------------------------------------- minted in SQL
# as the device service will: signed by the account's signing key, accepted
# by the running server without a reload, limited to what it was given
seed=$(cat "$ISA_STACK_DIR/nats/isa-signing.nk")
account=$("$root/tools/isa-nats-keys" public "$ISA_STACK_DIR/nats/isa.nk")
sql "SELECT creds FROM isa.nats_user_credentials('$seed', 'it-device', ARRAY['devices.it$$.>'],
       ARRAY['_INBOX.itdevice$$.>'], '$account', now() + interval '1 hour')" >"$TMP/device.creds"
is "$(may "$TMP/device.creds" pub "devices.it$$.status")" true \
   "a credential minted by isa.nats_user_credentials connects and publishes its subject (no server reload)"
is "$(may "$TMP/device.creds" pub "devices.other.status")" false "and only its subjects"

# the consumer the subscriber made is its own to delete
out=$(as "$SUBSCRIBER" consumer-delete ISA_EVENTS watch); rc=$?
is "$rc" 0 "the subscriber deletes its own consumer"
done_testing
