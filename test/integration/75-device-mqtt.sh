# Devices over MQTT, with a real MQTT client that is no isa code (mosquitto):
# a device that authenticated (auth's challenge/response over HTTP) gets its
# NATS credential (POST /v1/device/nats-credentials, a bearer JWT), connects
# to the stack's MQTT listener with it as its password, receives the commands
# sent to it with the API on isa/devices/<id>/commands, answers them and
# says it is alive on isa/devices/<id>/acks and …/heartbeat (the bridge makes
# those messages events: docs/bridge.md, "Device messages"), and may neither
# read nor write another device's topics nor answer its commands; a
# decommissioned device gets no new credential.  (docs/services/device.md,
# "MQTT".)  The cut-off of a connected decommissioned device (revocation):
# 77-device-revocation.sh.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_MQTT_PORT:?run me in the stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"
source "$(dirname "$0")/devicelib.sh"
PREFIX=IT75
command -v mosquitto_sub >/dev/null || { echo "1..0 # SKIP mosquitto-clients is not installed"; exit 0; }

run="$$$(date +%s)"
owner=$(sql "SELECT (account.create_user('it75-$run@example.com', 'IT75')).user_id")

# ---------------------------------------------------------------- credentials
read -r dev priv < <(new_device one)
read -r other other_priv < <(new_device two)
dtok=$(device_token "$dev" "$priv")
ok "the device authenticated (challenge/response): a device token" test -n "$dtok" -a "$dtok" != null
post /v1/device/nats-credentials '{}' "$dtok"
jwt=$(field jwt)
is "$ST $(field device_id) $(field commands_topic)" "200 $dev isa/devices/$dev/commands" \
  "POST /v1/device/nats-credentials: the device's credential and its commands topic"
claims=$(sql "SELECT isa.nats_jwt_claims('$jwt')")
is "$(jq -r '.name' <<<"$claims")" "$dev" "the NATS user is named by the device id (the scope's {{name()}})"
ok "it expires (isa.device_nats_ttl)" test "$(jq -r '.exp' <<<"$claims")" -gt "$(date +%s)"
is "$(jq -c '.nats | [.pub, .sub] | map(select(. != null)) | length' <<<"$claims")" 0 \
  "it carries no permissions of its own: the scoped signing key's template gives them"
post /v1/device/nats-credentials '{}'
is "$ST" 401 "without a device token: 401"

# ---------------------------------------------------------------- QoS 1 is not a device's
# (nats-server delivers QoS 1 subscriptions on $MQTT.sub.>, shared by every
# MQTT client: the template does not grant it, and commands arrive at QoS 0)
out=$(mqtt mosquitto_sub -i "it75-q1-$dev" -u "$dev" -P "$jwt" -q 1 -t "isa/devices/$dev/commands" -C 1 -W 3 2>&1)
like "$out" "denied" "a QoS 1 subscription, even to its own commands, is refused in the SUBACK"

# ---------------------------------------------------------------- commands arrive over MQTT
mqtt mosquitto_sub -i "it75-$dev" -u "$dev" -P "$jwt" -q 0 -t "isa/devices/$dev/commands" -C 1 >"$TMP/cmd" 2>"$TMP/cmd.err" &
PIDS+=($!)
# QoS 0: a command published before the subscription reaches nats-server is
# lost, so wait until the monitor shows it (a fixed sleep was not enough on a
# loaded machine).
is "$(for _ in $(seq 100); do
        curl -s "$ISA_NATS_MONITOR/connz?subs=1&mqtt_client=it75-$dev" |
          jq -e --arg s "isa.devices.$dev.commands" '[.connections[].subscriptions_list[]?] | index($s) != null' >/dev/null && { echo t; break; }
        sleep 0.1; done)" t "mosquitto_sub is subscribed to the device's commands topic"
post /v1/device/heartbeat '{}' "$dtok"
is "$ST $(field status)" "200 online" "the device is online (heartbeat over HTTP)"
cmd=$(sql "SELECT command_id FROM device.send_command('$owner', '$dev', 'show.photo', '{\"photo\": 7}')")
wait "${PIDS[-1]}"
is "$(jq -r '.command_id + " " + .command + " " + (.args.photo | tostring)' <"$TMP/cmd" 2>/dev/null)" "$cmd show.photo 7" \
  "a command sent with the API arrives on isa/devices/<id>/commands (mosquitto_sub, QoS 1)"

# ---------------------------------------------------------------- acks over MQTT
pub() { mqtt mosquitto_pub -i "it75-pub-$dev" -u x -P "$jwt" -q 1 -t "isa/devices/$dev/$1" -m "$2"; }
state() { sql "SELECT state FROM device.commands WHERE command_id = '$1'"; }
is "$(subs_running)" "$(subs_want)/$(subs_want)" \
  "the bridge runs every subscription's consumer, device's of the devices' acks and heartbeats among them"
pub acks "{\"command_id\": \"$cmd\", \"ok\": true, \"result\": {\"shown\": 7}, \"message_id\": \"ack-$run\"}"
is "$(wait_for "SELECT state || ' ' || result FROM device.commands WHERE command_id = '$cmd'" 'acknowledged {"shown": 7}')" \
  'acknowledged {"shown": 7}' "an ack published over MQTT acknowledges the command, with its result"
is "$(sql "SELECT event_id FROM isa.inbox WHERE service = 'device' AND event_type = 'device.ack'
             AND event_id = (SELECT event_id FROM isa.inbox WHERE service = 'device' AND event_type = 'device.ack'
                              ORDER BY processed_at DESC LIMIT 1)" | cut -c15)" 7 \
  "the bridge made its envelope: its id is a version 7 UUID (from the stream sequence)"
ocmd=$(sql "SELECT command_id FROM device.send_command('$owner', '$other', 'show.photo', '{}')")
cmd2=$(sql "SELECT command_id FROM device.send_command('$owner', '$dev', 'show.photo', '{\"photo\": 8}')")
pub acks "{\"command_id\": \"$ocmd\", \"ok\": true}"
pub acks "{\"command_id\": \"$cmd2\", \"ok\": false, \"error\": \"no such photo\"}"
is "$(wait_for "SELECT state || ' ' || error FROM device.commands WHERE command_id = '$cmd2'" "failed no such photo")" \
  "failed no such photo" "an ack with ok false fails the command, with its error"
is "$(state "$ocmd")" pending "an ack (applied before it) for another device's command changed nothing"
like "$(grep -c "device $dev has no command $ocmd" "$ISA_STACK_DIR/pg/postgresql.log")" "^[1-9]" \
  "… and the device service says why in its log"

# ---------------------------------------------------------------- heartbeats over MQTT
sql "UPDATE device.devices SET last_seen_at = now() - interval '1 hour' WHERE device_id = '$dev'" >/dev/null
sql "SELECT device.mark_offline()" >/dev/null
is "$(sql "SELECT status FROM device.devices WHERE device_id = '$dev'")" offline "the device went offline (silent)"
online() { sql "SELECT count(*) FROM device.outbox WHERE event_type = 'device.online' AND data ->> 'device_id' = '$dev'"; }
beats() { sql "SELECT count(*) FROM isa.inbox WHERE service = 'device' AND event_type = 'device.heartbeat'"; }
n_online=$(online)
n_beats=$(beats)
pub heartbeat "{\"firmware_version\": \"3.0.$run\", \"message_id\": \"hb-$run\"}"
is "$(wait_for "SELECT status || ' ' || firmware_version FROM device.devices WHERE device_id = '$dev'" "online 3.0.$run")" \
  "online 3.0.$run" "a heartbeat published over MQTT brings it online, with its firmware"
is "$(online)" "$((n_online + 1))" "one device.online in the outbox"
sql "UPDATE device.devices SET status = 'offline' WHERE device_id = '$dev'" >/dev/null
pub heartbeat "{\"message_id\": \"hb-$run\"}"
is "$(wait_for "SELECT count(*) FROM isa.inbox WHERE service = 'device' AND event_type = 'device.heartbeat'" "$((n_beats + 2))")" \
  "$((n_beats + 2))" "the same heartbeat again reached the device service (another stream message)"
is "$(sql "SELECT status FROM device.devices WHERE device_id = '$dev'") $(online)" "offline $((n_online + 1))" \
  "… and counted once: the same message_id is applied once"
pub heartbeat 'not json'
is "$(wait_for "SELECT reason FROM isa.dead_letters WHERE subject = 'isa.devices.$dev.heartbeat' AND service = 'device'" invalid_envelope)" invalid_envelope \
  "a device message that is not a JSON object is dead-lettered (invalid_envelope)"

# ---------------------------------------------------------------- one device, its own topics
out=$(mqtt mosquitto_sub -i "it75-spy-$dev" -u x -P "$jwt" -q 0 -t "isa/devices/$other/commands" -C 1 -W 3 2>&1)
like "$out" "denied" "subscribing to another device's commands is refused (SUBACK failure)"
mqtt mosquitto_pub -i "it75-forge-$dev" -u x -P "$jwt" -q 1 -t "isa/devices/$other/acks" -m '{"message_id":"x"}'
like "$(grep -c "Publish Violation.*isa.devices.$other.acks" "$ISA_STACK_DIR/nats/nats.log")" "^[1-9]" \
  "publishing on another device's acks topic is a Publish Violation on the server"
mqtt mosquitto_pub -i "it75-own-$dev" -u x -P "$jwt" -q 1 -t "isa/devices/$dev/commands" -m '{}'
like "$(grep -c "Publish Violation.*isa.devices.$dev.commands" "$ISA_STACK_DIR/nats/nats.log")" "^[1-9]" \
  "a device may not publish on its own commands topic either"
out=$(mqtt mosquitto_pub -i "it75-nopw" -u x -P "not-a-jwt" -q 1 -t "isa/devices/$dev/heartbeat" -m '{}' 2>&1); rc=$?
ok "a client without a valid JWT is refused at connect" test "$rc" != 0
like "$out" "not authori[sz]ed" "with MQTT's 'not authorised'"

# ---------------------------------------------------------------- decommission
otok=$(device_token "$other" "$other_priv")
is "$(sql "SELECT device.decommission_device('$owner', '$other')")" t "the other device is decommissioned"
post /v1/device/nats-credentials '{}' "$otok"
is "$ST" 401 "its device token ended with it: no credential over HTTP"
is "$(sqlstate "SELECT device.nats_credentials('$other')")" 23514 "nor through the function (23514)"

done_testing
