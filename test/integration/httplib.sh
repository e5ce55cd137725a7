# test/integration/httplib.sh — helpers of the HTTP tests (75, 77, 81, 82 …), sourced
# after lib.sh.  Needs TMP (a scratch directory), U (the stack's isa-httpd
# URL), ROOT and STACK (the stack's name).

# call METHOD PATH [curl args...]: the answer's status in ST, body in BODY,
# headers in $TMP/h (BASE: the server, default the stack's isa-httpd).  With
# ERRORS_LOG set, every 4xx/5xx body is appended to it.
call() {
  local m=$1 p=$2
  shift 2
  ST=$(curl -s -m 20 -o "$TMP/b" -D "$TMP/h" -w '%{http_code}' -X "$m" "$@" "${BASE:-$U}$p")
  BODY=$(cat "$TMP/b")
  if [ -n "${ERRORS_LOG:-}" ] && [[ $ST =~ ^[45] ]]; then { cat "$TMP/b"; echo; } >>"$ERRORS_LOG"; fi
  return 0
}
# SIGHUP the stack's isa-httpd: it reads the routes and the signing keys again
reload_httpd() { "$ROOT/tools/stack.sh" "$STACK" httpd-reload 2>/dev/null || kill -HUP "$(cat "$ISA_STACK_DIR/httpd.pid")"; }
hdr() { tr -d '\r' <"$TMP/h" | sed -n "s/^$1: //Ip" | head -n 1; }
field() { jq -r ".$1" <<<"$BODY" 2>/dev/null; }
auth() { printf 'Authorization: Bearer %s' "$1"; }
JSON=(-H 'Content-Type: application/json')
# post PATH JSON [TOKEN]: a JSON POST (call), waiting Retry-After and trying
# again while it is rate-limited (429; the login and device-token routes)
post() {
  for _ in 1 2 3 4 5; do
    call POST "$1" "${JSON[@]}" ${3:+-H "$(auth "$3")"} -d "$2"
    [ "$ST" = 429 ] || return 0
    sleep "$(hdr Retry-After)"
  done
}
# signup_login EMAIL NAME: signs a user up and logs in over HTTP; prints "USER_ID TOKEN"
signup_login() {
  local pw="pw-$1-$$" id
  post /v1/auth/signup "$(jq -nc --arg e "$1" --arg n "$2" --arg p "$pw" '{email: $e, name: $n, password: $p}')"
  id=$(field user_id)
  post /v1/auth/login "$(jq -nc --arg e "$1" --arg p "$pw" '{email: $e, password: $p}')"
  echo "$id $(field access_token)"
}

# Devices authenticate with Ed25519 (auth's challenge/response; 75, 77, 78, 81).
# A new Ed25519 key pair: "PUBLIC_HEX SECRET_HEX" (secret = seed + public, as libsodium)
ed_keypair() {
  node -e '
    const { publicKey, privateKey } = require("crypto").generateKeyPairSync("ed25519");
    const pub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
    const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32);
    process.stdout.write(pub.toString("hex") + " " + Buffer.concat([seed, pub]).toString("hex"));'
}
# ed_sign SECRET_HEX TEXT: the Ed25519 signature of TEXT (UTF-8), base64url
ed_sign() {
  node -e '
    const c = require("crypto");
    const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(process.argv[1], "hex").subarray(0, 32)]);
    process.stdout.write(c.sign(null, Buffer.from(process.argv[2], "utf8"), c.createPrivateKey({ key: der, format: "der", type: "pkcs8" })).toString("base64url"));' "$1" "$2"
}
# device_token DEVICE_ID SECRET_HEX: a device token (auth's challenge/response over HTTP)
device_token() {
  local nonce
  post "/v1/devices/$1/challenge" '{}'
  nonce=$(field nonce)
  post "/v1/devices/$1/token" "$(jq -nc --arg n "$nonce" --arg s "$(ed_sign "$2" "$nonce")" '{nonce: $n, signature: $s}')"
  field access_token
}
