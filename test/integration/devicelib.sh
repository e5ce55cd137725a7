# test/integration/devicelib.sh — helpers of the tests of devices over MQTT
# (75, 77), sourced after lib.sh and httplib.sh (post, ed_keypair, device_token).
# Needs U (the stack's isa-httpd), ISA_MQTT_PORT, owner (the devices' owner),
# run (a word unique to the run) and PREFIX (the test's, e.g. IT75: the
# devices' serials and names).

# a device of the owner, registered with a fresh key: "DEVICE_ID SECRET_HEX"
new_device() {
  local pub priv id
  read -r pub priv < <(ed_keypair)
  id=$(sql "SELECT device_id FROM device.register_device('$owner', '$PREFIX-$run-$1', 'Frame', '\\x$pub'::bytea, '$PREFIX $1')")
  echo "$id $priv"
}
mqtt() { local tool=$1; shift; timeout 10 "$tool" -h 127.0.0.1 -p "$ISA_MQTT_PORT" "$@"; }
# mqtt_subscribed CLIENT_ID DEVICE_ID: waits (10 s) until the MQTT client
# CLIENT_ID subscribes to the device's commands (the NATS monitor's connz);
# prints t when it did
mqtt_subscribed() {
  for _ in $(seq 100); do
    curl -s "$ISA_NATS_MONITOR/connz?subs=1&mqtt_client=$1" |
      jq -e --arg s "isa.devices.$2.commands" '[.connections[].subscriptions_list[]?] | index($s) != null' >/dev/null &&
      { echo t; return 0; }
    sleep 0.1
  done
}
