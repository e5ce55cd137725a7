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

# Devices authenticate with Ed25519 (auth's challenge/response; 75, 77, 81).
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
