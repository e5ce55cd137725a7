# test/integration/devicelib.sh — helpers of the tests of devices over MQTT
# (75, 77), sourced after lib.sh and httplib.sh.  Needs U (the stack's
# isa-httpd), ISA_MQTT_PORT, owner (the devices' owner), run (a word unique to
# the run) and PREFIX (the test's, e.g. IT75: the devices' serials and names).

# A new Ed25519 key pair: "PUBLIC_HEX SECRET_HEX"; ed_sign SECRET_HEX TEXT: base64url signature
ed_keypair() {
  node -e '
    const { publicKey, privateKey } = require("crypto").generateKeyPairSync("ed25519");
    const pub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
    const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32);
    process.stdout.write(pub.toString("hex") + " " + Buffer.concat([seed, pub]).toString("hex"));'
}
ed_sign() {
  node -e '
    const c = require("crypto");
    const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(process.argv[1], "hex").subarray(0, 32)]);
    process.stdout.write(c.sign(null, Buffer.from(process.argv[2], "utf8"), c.createPrivateKey({ key: der, format: "der", type: "pkcs8" })).toString("base64url"));' "$1" "$2"
}
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
