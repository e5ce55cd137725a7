# Revocation of a decommissioned device's NATS credential, with mosquitto as
# the devices (no isa code): a device connected over MQTT with a valid JWT is
# cut off within 10 s of DELETE /v1/devices/{id} (the revoker, notified at
# commit, pushes the account JWT with the device's key revoked; nats-server
# closes its connection), its old JWT is refused at connect, and still after
# nats-server restarts (the resolver kept the JWT; the revoker stopped, so
# the server alone) and after tools/nats-config.sh re-mints the account JWT
# (it carries the revocations); another device of the same owner stays
# connected and working (per key, not a wildcard); a device decommissioned
# while NATS is down is cut off once it is back (the revocation waits in the
# database, unpushed), one decommissioned just after PostgreSQL crashed too.
# docs/services/device.md, "Revocation".
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_MQTT_PORT:?run me in the stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
NATSDIR=$ISA_STACK_DIR/nats
TMP=$(mktemp -d)
PIDS=()
stack() { "$ROOT/tools/stack.sh" "$STACK" "$@" >/dev/null 2>&1; }
# whatever happens, the stack is left whole
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  stack nats-start
  stack revoker-start
  rm -rf "$TMP"
}
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"
source "$(dirname "$0")/devicelib.sh"
PREFIX=IT77
ok "mosquitto-clients is installed (the devices)" command -v mosquitto_sub || { done_testing; exit 1; }

run="$$$(date +%s)"
email="it77-$run@example.com"
owner=$(curl -s -X POST "$U/v1/auth/signup" "${JSON[@]}" \
          -d "{\"email\": \"$email\", \"name\": \"IT77\", \"password\": \"it77-password-$run\"}" | jq -r .user_id)
token=$(curl -s -X POST "$U/v1/auth/login" "${JSON[@]}" \
          -d "{\"email\": \"$email\", \"password\": \"it77-password-$run\"}" | jq -r .access_token)
account=$("$ROOT/tools/isa-nats-keys" public "$NATSDIR/isa.nk")

# A device of the owner with its device token, online, and its NATS credential:
# sets ID_<name>, JWT_<name>, KEY_<name> (the JWT's user public key).
device() { # NAME
  local id priv dtok
  read -r id priv < <(new_device "$1")
  dtok=$(device_token "$id" "$priv")
  post /v1/device/heartbeat '{}' "$dtok"
  post /v1/device/nats-credentials '{}' "$dtok"
  printf -v "ID_$1" '%s' "$id"
  printf -v "JWT_$1" '%s' "$(field jwt)"
  printf -v "KEY_$1" '%s' "$(sql "SELECT isa.nats_jwt_claims('$(field jwt)') ->> 'sub'")"
}
# mosquitto_sub as device NAME on its commands topic, in the background (MQTT client id it77-NAME-RUN)
subscribe() { # NAME
  local id=ID_$1 jwt=JWT_$1
  mosquitto_sub -h 127.0.0.1 -p "$ISA_MQTT_PORT" -i "it77-$1-$run" -u "${!id}" -P "${!jwt}" -q 0 \
    -t "isa/devices/${!id}/commands" >"$TMP/$1.out" 2>"$TMP/$1.err" &
  printf -v "PID_$1" '%s' "$!"
  PIDS+=($!)
}
# the server's connections of device NAME's client (nats-server's monitoring)
connections() { curl -s "$ISA_NATS_MONITOR/connz?mqtt_client=it77-$1-$run" | jq -r .num_connections; }
wait_connections() { # NAME WANT SECONDS
  local got end=$((SECONDS + $3))
  while :; do
    got=$(connections "$1")
    [ "$got" = "$2" ] || [ "$SECONDS" -ge "$end" ] && break
    sleep 0.1
  done
  printf '%s' "$got"
}
# a command to device NAME reaches its client (its id appears in its output)
command_arrives() { # NAME SECONDS
  local id=ID_$1 cmd i
  cmd=$(sql "SELECT command_id FROM device.send_command('$owner', '${!id}', 'show.photo', '{}')")
  for ((i = 0; i < $2 * 10; i++)); do
    grep -q "$cmd" "$TMP/$1.out" && return 0
    sleep 0.1
  done
  echo "command $cmd did not arrive; the client said: $(cat "$TMP/$1.err")"
  return 1
}
# device NAME is cut off: no connection on the server and its client gone
# (mosquitto_sub reconnects by itself; refused, it exits)
cut_off() { local pid=PID_$1; [ "$(connections "$1")" = 0 ] && ! kill -0 "${!pid}" 2>/dev/null; }
wait_cut_off() { # NAME SECONDS: 0 once cut off
  local end=$((SECONDS + $2))
  until cut_off "$1"; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.05
  done
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
# a connection attempt with device NAME's JWT: "rc output"
try_connect() {
  local id=ID_$1 jwt=JWT_$1 out rc
  out=$(mqtt mosquitto_sub -i "it77-again-$1-$run" -u "${!id}" -P "${!jwt}" -q 0 -t "isa/devices/${!id}/commands" -W 2 2>&1)
  rc=$?
  echo "$rc $out"
}
revoked_in() { # FILE KEY: the time the account JWT in FILE revokes KEY at, or null
  "$ROOT/tools/isa-nats-keys" decode "$1" | jq -r --arg k "$2" '.nats.revocations[$k]'
}

# ---------------------------------------------------------------- connected devices
like "$("$ROOT/tools/stack.sh" "$STACK" status)" "isa-nats-revoker: running" "the stack runs the revoker"
device victim
device bystander
ok "two devices of the owner got their NATS credentials" test -n "$KEY_victim" -a -n "$KEY_bystander"
is "$(sql "SELECT count(*) FROM device.nats_keys WHERE public_key IN ('$KEY_victim', '$KEY_bystander') AND revoked_at IS NULL")" 2 \
  "the device service recorded both keys"
subscribe victim
subscribe bystander
is "$(wait_connections victim 1 10)" 1 "a device is connected over MQTT with its JWT (mosquitto_sub)"
is "$(wait_connections bystander 1 10)" 1 "and another device of the same owner"
ok "a command reaches the first (its subscription works)" command_arrives victim 10

# ---------------------------------------------------------------- decommissioned: cut off
t0=$(date +%s%N)
call DELETE "/v1/devices/$ID_victim" -H "$(auth "$token")"
is "$ST $BODY" "200 true" "DELETE /v1/devices/{id}: its owner decommissions it"
wait_cut_off victim 15
elapsed=$(ms_since "$t0")
ok "the connected device is cut off within 10 s (${elapsed} ms): no connection, its client gone" \
  test "$elapsed" -lt 10000 -a "$(connections victim)" = 0
# (a client still running would make wait hang: then it was not refused)
if kill -0 "$PID_victim" 2>/dev/null; then rc=running; else wait "$PID_victim"; rc=$?; fi
is "$rc" 5 "its client's reconnection was refused (CONNACK 5: not authorised)"
like "$(grep -c "\"it77-victim-$run\" - authentication error" "$NATSDIR/nats.log")" "^[1-9]" \
  "nats-server logged the refusal"
like "$(revoked_in "$NATSDIR/resolver/$account.jwt" "$KEY_victim")" "^[0-9]+$" \
  "the account JWT the server keeps (resolver) revokes its key"
is "$(wait_for "SELECT pushed_at IS NOT NULL FROM device.nats_revocations() WHERE public_key = '$KEY_victim'" t)" t \
  "the revoker marked the revocation pushed once the server took it"
like "$(grep -c "pushed the account JWT of $account" "$ISA_REVOKER_LOG")" "^[1-9]" "the revoker logged the push"
is "$(sql "SELECT count(*) FROM device.outbox WHERE event_type = 'device.decommissioned' AND data ->> 'device_id' = '$ID_victim'")" 1 \
  "device.decommissioned is published once"
like "$(try_connect victim)" "^5 .*not authori[sz]ed" "its old JWT is refused at connect"
ok "the other device stayed connected: revocation is per key" kill -0 "$PID_bystander"
is "$(connections bystander)" 1 "… the server still holds its connection"
ok "… and a command still reaches it" command_arrives bystander 15

# ---------------------------------------------------------------- nats-server restarts
pushes=$(grep -c "pushed the account JWT" "$ISA_REVOKER_LOG")
ok "the revoker stops (the server alone now)" stack revoker-stop
ok "nats-server stops and starts again" bash -c "'$ROOT/tools/stack.sh' '$STACK' nats-stop && '$ROOT/tools/stack.sh' '$STACK' nats-start"
like "$(try_connect victim)" "^5 .*not authori[sz]ed" \
  "after the restart the old JWT is still refused: the resolver kept the account JWT"
is "$(wait_connections bystander 1 15)" 1 "the other device connected again by itself (its JWT is valid)"
rm -f "$NATSDIR/isa.jwt.args"
ok "nats-server restarts after tools/nats-config.sh re-minted the account JWT" \
  bash -c "'$ROOT/tools/stack.sh' '$STACK' nats-stop && '$ROOT/tools/stack.sh' '$STACK' nats-start"
like "$(revoked_in "$NATSDIR/isa.jwt" "$KEY_victim")" "^[0-9]+$" \
  "the re-minted account JWT (the preload) carries the revocation the server kept"
like "$(try_connect victim)" "^5 .*not authori[sz]ed" "the old JWT is still refused"
steps=$(grep -c "in step: " "$ISA_REVOKER_LOG")
ok "the revoker starts again" stack revoker-start
for ((i = 0; i < 100; i++)); do [ "$(grep -c "in step: " "$ISA_REVOKER_LOG")" -gt "$steps" ] && break; sleep 0.1; done
like "$(tail -n 1 "$ISA_REVOKER_LOG")" "in step: the account JWT of $account revokes [1-9][0-9]* keys" \
  "it checked the server's account JWT at start …"
is "$(grep -c "pushed the account JWT" "$ISA_REVOKER_LOG")" "$pushes" "… and had nothing to push: the server had kept it all"

# ---------------------------------------------------------------- decommissioned while NATS is down
device late
subscribe late
is "$(wait_connections late 1 15)" 1 "a third device is connected"
ok "nats-server stops" stack nats-stop
is "$(sql "SELECT device.decommission_device('$owner', '$ID_late')")" t "the third device is decommissioned while NATS is down"
sleep 0.5 # (the revoker tried once: NATS is down)
is "$(sql "SELECT revoked_at IS NOT NULL AND pushed_at IS NULL FROM device.nats_revocations() WHERE public_key = '$KEY_late'")" t \
  "its revocation waits in the database, not pushed"
ok "nats-server starts again" stack nats-start
t1=$(date +%s%N)
wait_cut_off late 15
elapsed=$(ms_since "$t1")
ok "once NATS is back, the device is cut off within 10 s (${elapsed} ms)" test "$elapsed" -lt 10000 -a "$(connections late)" = 0
is "$(wait_for "SELECT pushed_at IS NOT NULL FROM device.nats_revocations() WHERE public_key = '$KEY_late'" t)" t \
  "… and the revocation is marked pushed"
like "$(try_connect late)" "^5 .*not authori[sz]ed" "its old JWT is refused"

# ---------------------------------------------------------------- PostgreSQL crashes
device crashed
subscribe crashed
is "$(wait_connections crashed 1 15)" 1 "a fourth device is connected"
ok "PostgreSQL crashes (-m immediate) and starts again: the revoker's connection is gone" stack pg-crash
t2=$(date +%s%N)
is "$(sql "SELECT device.decommission_device('$owner', '$ID_crashed')")" t "the fourth device is decommissioned at once"
wait_cut_off crashed 15
elapsed=$(ms_since "$t2")
ok "the revoker connected again and cut it off within 10 s (${elapsed} ms)" \
  test "$elapsed" -lt 10000 -a "$(connections crashed)" = 0

# ---------------------------------------------------------------- expired: dropped from the list
sql "UPDATE device.nats_keys SET expires_at = now() - interval '1 minute' WHERE public_key = '$KEY_victim'" >/dev/null
sql "SELECT pg_notify('isa_device_nats_revocations', '')" >/dev/null
for ((i = 0; i < 100; i++)); do
  [ "$(revoked_in "$NATSDIR/resolver/$account.jwt" "$KEY_victim")" = null ] && break
  sleep 0.1
done
is "$(revoked_in "$NATSDIR/resolver/$account.jwt" "$KEY_victim")" null \
  "a revoked credential that expired is dropped from the account JWT (the server refuses it anyway): the list stays short"
like "$(revoked_in "$NATSDIR/resolver/$account.jwt" "$KEY_late")" "^[0-9]+$" "the unexpired ones stay"
ok "isa-nats-revoker --once: the server revokes what the database says (exit 0)" \
  "$ROOT/tools/isa-nats-revoker" --once --database "dbname=$PGDATABASE user=isa_nats_revoker" --nats "$ISA_NATS_URL" \
  --creds "$NATSDIR/revoker.creds" --operator-jwt "$NATSDIR/operator.jwt" --signing-key "$NATSDIR/operator-signing.nk" --account "$account"

is "$(wait_connections bystander 1 15)" 1 "the other device is connected"
ok "… and still gets its commands" command_arrives bystander 15

done_testing
