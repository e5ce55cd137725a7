# test/integration/devicelib.sh — helpers of the tests of devices over MQTT
# (75, 77), sourced after lib.sh and httplib.sh (call, ed_keypair, ed_sign).
# Needs U (the stack's isa-httpd), ISA_MQTT_PORT, owner (the devices' owner),
# run (a word unique to the run) and PREFIX (the test's, e.g. IT75: the
# devices' serials and names).

post() { # PATH JSON [TOKEN]
  for _ in 1 2 3 4 5; do
    call POST "$1" "${JSON[@]}" ${3:+-H "$(auth "$3")"} -d "$2"
    [ "$ST" = 429 ] || return 0
    sleep "$(hdr Retry-After)"
  done
}
# a device of the owner, registered with a fresh key: "DEVICE_ID SECRET_HEX"
new_device() {
  local pub priv id
  read -r pub priv < <(ed_keypair)
  id=$(sql "SELECT device_id FROM device.register_device('$owner', '$PREFIX-$run-$1', 'Frame', '\\x$pub'::bytea, '$PREFIX $1')")
  echo "$id $priv"
}
# the device token of a device (challenge/response over HTTP)
device_token() { # DEVICE_ID SECRET_HEX
  local nonce
  post "/v1/devices/$1/challenge" '{}'
  nonce=$(field nonce)
  post "/v1/devices/$1/token" "$(jq -nc --arg n "$nonce" --arg s "$(ed_sign "$2" "$nonce")" '{nonce: $n, signature: $s}')"
  field access_token
}
mqtt() { local tool=$1; shift; timeout 10 "$tool" -h 127.0.0.1 -p "$ISA_MQTT_PORT" "$@"; }
