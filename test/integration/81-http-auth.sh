# isa-httpd's authentication and access rules, from the outside: tokens made
# by an independent implementation (Node's crypto: Ed25519 and HMAC-SHA256,
# not isa's C) with the database's own keys, then broken one way at a time —
# no token, a header that is not Bearer, garbage, expired, tampered payload or
# signature, alg none, the HS256-with-the-public-key confusion, wrong iss or
# aud, nbf/iat in the future, an unknown kid, a retired key, a logged-out
# session, a device token on a user route and an access token on a device
# route — each 401 with WWW-Authenticate; 403 for another user's resource and
# an admin route until authz grants it; the rate limit of login (429 with
# Retry-After, then recovery); and a second isa-httpd in HS256 mode (a short
# secret refused at start; tokens of the secret, of the previous secret (each
# under its kid; a token without kid refused, as auth does) and of
# auth itself accepted; EdDSA and other secrets refused).
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
HS_PORT=$((${U##*:} + 1))          # the second isa-httpd (HS256)
HS=http://127.0.0.1:$HS_PORT
run="$$$(date +%s)"
TMP=$(mktemp -d)
PW="it81 correct horse $run"
HS_PID=
ROLE="it81-admin-$run"

cleanup() {
  [ -n "$HS_PID" ] && kill "$HS_PID" 2>/dev/null && wait "$HS_PID" 2>/dev/null
  sql "ALTER SYSTEM RESET isa.jwt_algorithm" >/dev/null 2>&1
  sql "ALTER SYSTEM RESET isa.jwt_secret" >/dev/null 2>&1
  sql "SELECT pg_reload_conf()" >/dev/null 2>&1
  sql "SET client_min_messages = warning;
       DELETE FROM isa.http_routes WHERE path LIKE '/test/it81/%';
       DROP FUNCTION IF EXISTS account.it81_whoami();
       SELECT authz.delete_role('$ROLE') FROM authz.roles WHERE name = '$ROLE';" >/dev/null 2>&1
  kill -HUP "$(cat "$ISA_STACK_DIR/httpd.pid" 2>/dev/null)" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

source "$(dirname "$0")/httplib.sh"
# "STATUS CODE | WWW-Authenticate | message" of the last answer
refusal() { printf '%s %s | %s | %s' "$ST" "$(field code)" "$(hdr WWW-Authenticate)" "$(field message)"; }
INVALID='Bearer error="invalid_token"'

# POST to a rate-limited route, waiting out a 429 (another test may have used the burst)
post_rl() { # PATH JSON [BASE]

  for _ in 1 2 3 4 5; do
    BASE=${3:-$U} call POST "$1" "${JSON[@]}" -d "$2"
    [ "$ST" = 429 ] || return 0
    sleep "$(hdr Retry-After)"
  done
}
signup() { # EMAIL → user id
  post_rl /v1/auth/signup "$(jq -nc --arg e "$1" --arg p "$PW" '{email: $e, name: "IT81", password: $p}')"
  field user_id
}
login() { # EMAIL [BASE] → the JSON answer
  post_rl /v1/auth/login "$(jq -nc --arg e "$1" --arg p "$PW" '{email: $e, password: $p}')" "${2:-$U}"
  printf '%s' "$BODY"
}

# --- JWTs by Node's crypto
b64json() { node -e 'process.stdout.write(Buffer.from(process.argv[1].split(".")[+process.argv[2]], "base64url").toString())' "$1" "$2"; }
claims_of() { b64json "$1" 1; }
header_of() { b64json "$1" 0; }
# mint ALG KEY HEADER CLAIMS: a JWS over the exact header and claims texts.
# ALG EdDSA: KEY is hex of a 64-byte libsodium secret key (seed + public key);
# HS256: KEY is the secret (text, or hex:… for bytes); anything else: no signature.
mint() {
  node -e '
    const c = require("crypto");
    const [alg, key, header, claims] = process.argv.slice(1);
    const b64 = (s) => Buffer.from(s).toString("base64url");
    const input = b64(header) + "." + b64(claims);
    const k = key.startsWith("hex:") ? Buffer.from(key.slice(4), "hex") : Buffer.from(key, "utf8");
    let sig = "";
    if (alg === "EdDSA") {
      const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), k.subarray(0, 32)]);
      sig = b64(c.sign(null, Buffer.from(input), c.createPrivateKey({ key: der, format: "der", type: "pkcs8" })));
    } else if (alg === "HS256") {
      sig = b64(c.createHmac("sha256", k).update(input).digest());
    }
    process.stdout.write(input + "." + sig);' "$@"
}
# hs256_kid SECRET: the kid auth derives from an HS256 secret (16 hex digits of HMAC(secret, "isa-jwt-kid"))
hs256_kid() { node -e 'process.stdout.write(require("crypto").createHmac("sha256", process.argv[1]).update("isa-jwt-kid").digest("hex").slice(0, 16))' "$1"; }

is "$(curl -s -o /dev/null -w '%{http_code}' "$U/live")" 200 "isa-httpd answers"

# --- users: alice, bob, carol (to be an administrator)
alice=$(signup "it81-alice-$run@example.com")
bob=$(signup "it81-bob-$run@example.com")
carol=$(signup "it81-carol-$run@example.com")
like "$alice $bob $carol" '^[0-9a-f-]{36} [0-9a-f-]{36} [0-9a-f-]{36}$' "three users sign up over HTTP"
A=$(login "it81-alice-$run@example.com")
atok=$(jq -r .access_token <<<"$A")
call GET /v1/me -H "$(auth "$atok")"
is "$ST $(field user_id)" "200 $alice" "alice's access token from POST /v1/auth/login reads GET /v1/me"
claims=$(claims_of "$atok")
is "$(jq -r '[.iss, .aud, .typ, .sub, (.sid | length > 0), (.exp > .iat)] | join(" ")' <<<"$claims")" "isa isa access $alice true true" \
   "its claims: iss isa, aud isa, typ access, sub alice, a sid, exp after iat"

read -r K1 K1_PRIV K1_PUB < <(sql "SELECT kid, encode(private_key, 'hex'), encode(public_key, 'hex') FROM auth.signing_keys
                                    WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1" -F ' ')
is "$(header_of "$atok" | jq -r '.alg + " " + .kid')" "EdDSA $K1" "the token is EdDSA under the current signing key's kid"
H1="{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"$K1\"}"
# with_claims JQ: alice's claims changed by a jq filter ($now is the time)
with_claims() { jq -c --argjson now "$(date +%s)" "$1" <<<"$claims"; }
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.exp = $now + 300 | .jti = "it81-node"')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field user_id)" "200 $alice" "a token signed by Node's Ed25519 with the database's key is accepted (independent implementation)"

# --- 401
call GET /v1/me
is "$ST $(field code) | $(hdr WWW-Authenticate)" "401 28000 | Bearer" "no token on a user route: 401 with WWW-Authenticate: Bearer"
call GET /v1/me -H "Authorization: Basic $(printf 'alice:pw' | base64)"
is "$ST $(field code) | $(hdr WWW-Authenticate)" "401 ISA401 | Bearer" "Authorization: Basic …: 401 ISA401 with WWW-Authenticate"
call GET /v1/me -H "Authorization: $atok"
is "$ST $(field code) | $(hdr WWW-Authenticate)" "401 ISA401 | Bearer" "a token without the Bearer scheme: 401 ISA401"
call GET /v1/me -H "Authorization: Bearer not-a-jwt"
is "$(refusal)" "401 28000 | $INVALID | invalid token: malformed" "Bearer garbage: 401 invalid token: malformed"
call GET /v1/me -H "Authorization: Bearer a.b.c"
is "$ST $(field code) | $(hdr WWW-Authenticate)" "401 28000 | $INVALID" "three dots of nothing (a.b.c): 401"
call GET /v1/me -H "Authorization: Bearer $atok.x"
is "$ST $(hdr WWW-Authenticate)" "401 $INVALID" "a valid token with a fourth part: 401"
call GET /v1/products -H "Authorization: Bearer not-a-jwt"
is "$ST $(field code)" "401 28000" "an invalid token is refused on a public route too (401, not ignored)"

tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.exp = $now - 120')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: expired" "expired 120 s ago (beyond the 30 s clock skew): 401 expired"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.exp = $now - 10')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST" 200 "expired 10 s ago, within jwt_clock_skew (30 s): still accepted"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims 'del(.exp)')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: no exp claim" "no exp claim: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.exp = ($now + 300 | tostring)')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(hdr WWW-Authenticate)" "401 $INVALID" "exp as a string: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.nbf = $now + 120')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: not valid yet (nbf)" "nbf 120 s in the future: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.iat = $now + 120 | .nbf = $now')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: issued in the future (iat)" "iat 120 s in the future: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.iss = "evil"')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: wrong issuer" "wrong iss: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims 'del(.iss)')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: wrong issuer" "no iss: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.aud = "another-api"')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: wrong audience" "wrong aud: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.aud = ["another-api"]')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: wrong audience" "an aud list without isa: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.aud = ["another-api", "isa"]')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST" 200 "an aud list that includes isa: accepted"

# claims and headers a lenient parser might read another way: all refused
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.' | sed "s/^{/{\"sub\": \"$bob\", /")")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: the claims are not a JSON object" "claims with sub twice (bob, then alice), correctly signed: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "{\"alg\":\"none\",\"alg\":\"EdDSA\",\"kid\":\"$K1\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(hdr WWW-Authenticate)" "401 $INVALID" "a header with alg twice (none, then EdDSA): 401"
for c in '.typ = "refresh"|refresh token' 'del(.typ)|untyped token' 'del(.sid)|no sid' '.sub = 5|sub a number' 'del(.sub)|no sub'; do
  tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims "${c%%|*}")")
  call GET /v1/me -H "$(auth "$tok")"
  is "$ST $(field code)" "401 28000" "correctly signed, ${c##*|}: 401 ($(field message))"
done
call GET /v1/me -H "Authorization: Bearer $(head -c 12000 /dev/zero | tr '\0' a).b.c"
is "$ST $(field code)" "401 28000" "a 12 KB token: 401"
call GET /v1/me -H "Authorization: Bearer $(head -c 20000 /dev/zero | tr '\0' a).b.c"
is "$ST" "431" "a 20 KB token: over max_header_bytes (16 KiB), 431"

# tampering: the payload of alice's real token says bob, the signature is alice's
forged=$(node -e 'const [h, p, s] = process.argv[1].split(".");
  const c = JSON.parse(Buffer.from(p, "base64url")); c.sub = process.argv[2];
  process.stdout.write([h, Buffer.from(JSON.stringify(c)).toString("base64url"), s].join("."))' "$atok" "$bob")
call GET /v1/me -H "$(auth "$forged")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: bad signature" "a tampered payload (sub changed to bob) under the original signature: 401 bad signature"
sig=${atok##*.}
c10=${sig:10:1}; [ "$c10" = A ] && r=B || r=A
call GET /v1/me -H "$(auth "${atok%.*}.${sig:0:10}$r${sig:11}")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: bad signature" "a tampered signature (one character changed): 401 bad signature"
call GET /v1/me -H "$(auth "${atok%.*}.")"
is "$ST $(hdr WWW-Authenticate)" "401 $INVALID" "the right header and claims with an empty signature: 401"
call GET /v1/me -H "$(auth "$atok")"
is "$ST" 200 "(the untampered token still passes)"

tok=$(mint none "" '{"alg":"none","typ":"JWT"}' "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: unexpected algorithm" "alg none with an empty signature: 401 unexpected algorithm"
tok=$(mint none "" "{\"alg\":\"none\",\"kid\":\"$K1\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "alg none naming the real kid: 401"
# the classic confusion: HS256 keyed with the server's public key
tok=$(mint HS256 "hex:$K1_PUB" "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"$K1\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: unexpected algorithm" "HS256 signed with the public key's bytes as the HMAC secret: 401 unexpected algorithm"
jwk_x=$(curl -s "$U/v1/auth/jwks" | jq -r --arg k "$K1" '.keys[] | select(.kid == $k) | .x')
tok=$(mint HS256 "$jwk_x" "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"$K1\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "HS256 keyed with the JWKS x text of the key: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "{\"alg\":\"eddsa\",\"kid\":\"$K1\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "alg eddsa (not the configured spelling): 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "{\"alg\":\"EdDSA\",\"kid\":\"$K1\",\"crit\":[\"exp\"]}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unsupported header" "a crit header: 401 unsupported header"
tok=$(mint EdDSA "hex:$K1_PRIV" "{\"alg\":\"EdDSA\",\"kid\":\"$K1\",\"typ\":\"at+jwt\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unsupported header" "typ at+jwt: 401 unsupported header"
tok=$(mint EdDSA "hex:$K1_PRIV" '{"alg":"EdDSA","typ":"JWT"}' "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: no kid" "no kid: 401"

# a key isa does not know, under a kid it does not know — and under the real kid
read -r _ X_PRIV < <(ed_keypair)
tok=$(mint EdDSA "hex:$X_PRIV" "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"it81-unknown-$run\"}" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: unknown signing key" "signed by an unknown key under an unknown kid: 401 unknown signing key"
tok=$(mint EdDSA "hex:$X_PRIV" "$H1" "$(with_claims '.')")
call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: bad signature" "signed by another key under the real kid: 401 bad signature"

# --- sessions: a logged-out session's access token is refused at once
L=$(login "it81-alice-$run@example.com")
ltok=$(jq -r .access_token <<<"$L")
call GET /v1/me -H "$(auth "$ltok")"
is "$ST" 200 "a second login of alice: its token works"
call POST /v1/auth/logout "${JSON[@]}" -d "$(jq -c '{refresh_token}' <<<"$L")"
is "$ST $BODY" "200 true" "POST /v1/auth/logout with its refresh token ends the session"
call GET /v1/me -H "$(auth "$ltok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: session ended" "the logged-out session's access token (signature and exp still valid): 401 session ended"
call GET /v1/accounts/not-a-uuid -H "$(auth "$ltok")"
is "$ST $(field code)" "401 28000" \
   "that token with a malformed argument (GET /v1/accounts/not-a-uuid): still 401 — the session is checked before the arguments are used"
call GET /v1/me -H "$(auth "$atok")"
is "$ST" 200 "alice's first session is not affected"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.sid = "01234567-89ab-7def-8123-456789abcdef"')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: session ended" "a correctly signed token naming a session that never existed: 401"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims ".sub = \"$bob\"")")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field code)" "401 28000" "a correctly signed token whose sub is not its session's user: 401"

# --- devices: challenge/response over HTTP, then the device token on a user route
read -r D_PUB D_PRIV < <(ed_keypair)
dev="it81-dev-$run"
is "$(sql "SELECT auth.register_device('$dev', '\\x$D_PUB'::bytea)")" t "a device is registered with an Ed25519 public key made by Node"
post_rl "/v1/devices/$dev/challenge" '{}'
nonce=$(field nonce)
is "$ST $([ ${#nonce} -ge 32 ] && echo nonce)" "200 nonce" "POST /v1/devices/{id}/challenge gives a nonce"
post_rl "/v1/devices/$dev/token" "$(jq -nc --arg n "$nonce" --arg s "$(ed_sign "$X_PRIV" "$nonce")" '{nonce: $n, signature: $s}')"
is "$ST $(field code)" "401 28000" "the nonce signed by another key: 401"
post_rl "/v1/devices/$dev/challenge" '{}'
nonce=$(field nonce)
post_rl "/v1/devices/$dev/token" "$(jq -nc --arg n "$nonce" --arg s "$(ed_sign "$D_PRIV" "$nonce")" '{nonce: $n, signature: $s}')"
dtok=$(field access_token)
is "$ST $(field device_id)" "200 $dev" "the nonce signed by the device's key: a device token"
is "$(claims_of "$dtok" | jq -r '.typ + " " + .sub')" "device $dev" "its claims: typ device, sub the device id"
call GET /v1/me -H "$(auth "$dtok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: device token for a user route" "a device token on a user route (GET /v1/me): 401"
call GET "/v1/accounts/$alice" -H "$(auth "$dtok")"
is "$ST $(field code)" "401 28000" "and on GET /v1/accounts/{id}: 401"
call DELETE "/v1/auth/sessions/$(jq -r .session_id <<<"$L")" -H "$(auth "$dtok")"
is "$ST $(field code)" "401 28000" "and on an admin route: 401"

# a device route: isa has none yet, so one for the test
note "device routes in isa.http_routes: $(sql "SELECT count(*) FROM isa.http_routes WHERE auth = 'device'") (a test route is added)"
sql "CREATE FUNCTION account.it81_whoami() RETURNS jsonb LANGUAGE sql STABLE AS 'SELECT isa.http_claims()';
     GRANT EXECUTE ON FUNCTION account.it81_whoami() TO isa_app;
     SELECT isa.http_route('GET', '/test/it81/device', 'account.it81_whoami()', 'device', 'test: the caller''s claims');" >/dev/null
reload_httpd
for _ in $(seq 50); do call GET /test/it81/device; [ "$ST" != 404 ] && break; sleep 0.1; done
is "$ST $(field code)" "401 28000" "a device route without a token: 401"
call GET /test/it81/device -H "$(auth "$atok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: access token for a device route" "an access token on a device route: 401"
call GET /test/it81/device -H "$(auth "$dtok")"
is "$ST $(field sub) $(field typ)" "200 $dev device" "the device token on the device route: 200, the function sees its claims"

# --- 403 and the permissions that lift it
call GET "/v1/accounts/$alice" -H "$(auth "$atok")"
is "$ST $(field user_id)" "200 $alice" "alice reads her own account (owner)"
call GET "/v1/accounts/$bob" -H "$(auth "$atok")"
is "$ST $(field code)" "403 42501" "alice reading bob's account: 403 (42501)"
call GET "/v1/accounts/${bob^^}" -H "$(auth "$atok")"
is "$ST" 403 "nor with bob's id in upper case"
call GET "/v1/wallets/$bob/balance" -H "$(auth "$atok")"
is "$ST $(field code)" "403 42501" "nor bob's wallet balance"
call GET "/v1/accounts/$bob"
is "$ST $(field code)" "401 28000" "anonymous: 401, not 403"
alice_sid2=$(jq -r .session_id <<<"$(login "it81-alice-$run@example.com")")
call DELETE "/v1/auth/sessions/$alice_sid2" -H "$(auth "$atok")"
is "$ST $(field code) $(field message)" "403 42501 permission denied: isa:admin required" "an admin route (DELETE /v1/auth/sessions/{id}) as a user: 403"
C=$(login "it81-carol-$run@example.com")
ctok=$(jq -r .access_token <<<"$C")
call DELETE "/v1/auth/sessions/$alice_sid2" -H "$(auth "$ctok")"
is "$ST" 403 "carol, not an administrator yet: 403"

is "$(sql "SELECT authz.grant_permission('$alice', 'account:read', '$bob')")" t "authz grants alice account:read on bob"
call GET "/v1/accounts/$bob" -H "$(auth "$atok")"
is "$ST $(field user_id)" "200 $bob" "now alice reads bob's account: 200"
call GET "/v1/accounts/$carol" -H "$(auth "$atok")"
is "$ST" 403 "but not carol's: the grant is on bob only"
call PATCH "/v1/accounts/$bob" -H "$(auth "$atok")" "${JSON[@]}" -d '{"name": "Bobby"}'
is "$ST" 403 "and she may not write bob's account (account:write)"

sql "SELECT authz.create_role('$ROLE', 'it81 administrators', '{isa:admin}')" >/dev/null
is "$(sql "SELECT authz.bind_role('$carol', '$ROLE')")" t "carol is bound to a role with isa:admin"
call DELETE "/v1/auth/sessions/$alice_sid2" -H "$(auth "$ctok")"
is "$ST $BODY" "200 true" "the admin route as an administrator (the same token as before): 200, the session is ended"
call GET "/v1/accounts/$bob" -H "$(auth "$ctok")"
is "$ST" 403 "isa:admin is not every permission: carol may not read bob's account"
call GET /v1/me -H "$(auth "$atok")"
is "$ST" 200 "(alice's first session is still live)"

# --- rotation and retirement of the signing key
K2=$(sql "SELECT auth.rotate_signing_key()")
T2=$(login "it81-bob-$run@example.com")
btok=$(jq -r .access_token <<<"$T2")
is "$(header_of "$btok" | jq -r .kid)" "$K2" "after auth.rotate_signing_key(), a login is signed under the new kid"
for _ in $(seq 100); do call GET /v1/me -H "$(auth "$btok")"; [ "$ST" = 200 ] && break; sleep 0.1; done
is "$ST $(field user_id)" "200 $bob" "isa-httpd learns the new key by itself (an unknown kid reloads the keys, at most every 5 s)"
call GET /v1/me -H "$(auth "$atok")"
is "$ST" 200 "a token of the previous key still passes while that key is not retired"
sql "SELECT auth.retire_signing_key('$K1')" >/dev/null
reload_httpd
for _ in $(seq 50); do call GET /v1/me -H "$(auth "$atok")"; [ "$ST" = 401 ] && break; sleep 0.1; done
is "$(refusal)" "401 28000 | $INVALID | invalid token: unknown signing key" \
   "after auth.retire_signing_key() and a reload (SIGHUP), the retired key's token is refused (even though it passed, and was cached, before)"
tok=$(mint EdDSA "hex:$K1_PRIV" "$H1" "$(with_claims '.jti = "it81-retired"')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unknown signing key" "so is a new token signed with the retired key"
call GET /v1/me -H "$(auth "$btok")"
is "$ST" 200 "the new key's token passes"

# --- rate limit on POST /v1/auth/login (rate_limit 10/s, burst 20 per client address)
flood=()
for _ in $(seq 40); do flood+=(-o /dev/null "$U/v1/auth/login"); done
curl -s -w '%{http_code}\n' -X POST "${JSON[@]}" -d '{}' "${flood[@]}" >"$TMP/codes"
n429=$(grep -c '^429$' "$TMP/codes")
other=$(grep -v '^429$' "$TMP/codes" | sort -u | paste -sd ' ')
like "$n429" '^([1-9][0-9])$' "40 logins at once: at least 10 are refused with 429 ($n429)"
is "$other" 400 "the others went through the limit (400: no email and password, before any SQL)"
call POST /v1/auth/login "${JSON[@]}" -d '{}'
ra=$(hdr Retry-After)
is "$ST $(field code) $([[ $ra =~ ^[1-9][0-9]*$ ]] && echo retry-after)" "429 ISA429 retry-after" "the next login: 429 ISA429 with Retry-After ($ra)"
# (a flood again, not one request: on a loaded machine the bucket may have
# refilled a token or two since the flood above)
curl -s -w '%{http_code}\n' -X POST "${JSON[@]}" -H 'X-Forwarded-For: 203.0.113.7' -H 'X-Real-IP: 203.0.113.7' \
     -d '{}' "${flood[@]}" >"$TMP/codes"
like "$(grep -c '^429$' "$TMP/codes")" '^([1-9][0-9])$' \
     "X-Forwarded-For / X-Real-IP do not give a client a fresh bucket: 40 more logins with them, at least 10 are 429"
call GET /v1/products
is "$ST" 200 "a route that is not rate-limited still answers 200"
sleep "$((ra + 1))"
call POST /v1/auth/login "${JSON[@]}" -d "$(jq -nc --arg e "it81-alice-$run@example.com" --arg p "$PW" '{email: $e, password: $p}')"
is "$ST $(field user_id)" "200 $alice" "after waiting Retry-After (+1 s) the login succeeds"
sleep 2   # the burst refills for the tests after this one

# --- HS256: a second isa-httpd
DBURL="host=127.0.0.1 port=$PGPORT dbname=isa user=isa_httpd application_name=it81-hs256"
printf '%s' "0123456789012345678901234567890" >"$TMP/short"      # 31 bytes
SECRET="it81-hs256-secret-$run-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PREV="it81-hs256-previous-$run-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$SECRET" >"$TMP/secret"
printf '%s' "$PREV" >"$TMP/previous"
timeout 10 env -u ISA_HTTPD_CONFIG -u ISA_HTTPD_JWT_SECRET "$ROOT/httpd/isa-httpd" --port "$HS_PORT" --database_url "$DBURL" \
  --jwt_algorithm HS256 --jwt_secret_file "$TMP/short" >"$TMP/short.out" 2>&1
rc=$?
is "$rc $(grep -c 'at least 32 bytes' "$TMP/short.out")" "2 1" "HS256 with a 31-byte secret: isa-httpd refuses to start (exit 2, says at least 32 bytes)"
is "$(curl -s -o /dev/null -w '%{http_code}' "$HS/live")" 000 "and nothing listens on its port"
env -u ISA_HTTPD_CONFIG -u ISA_HTTPD_JWT_SECRET "$ROOT/httpd/isa-httpd" --port "$HS_PORT" --database_url "$DBURL" \
  --jwt_algorithm HS256 --jwt_secret_file "$TMP/secret" --jwt_previous_secret_file "$TMP/previous" >"$TMP/hs.log" 2>&1 &
HS_PID=$!
for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$HS/openapi.json")" = 200 ] && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "$HS/openapi.json")" 200 "isa-httpd in HS256 mode starts with a 48+-byte secret (and a previous one) and loads its routes"
is "$(grep -c -F "$SECRET" "$TMP/hs.log")" 0 "its log does not show the secret"

# a real session of bob's, its claims signed by Node with the secret
T3=$(login "it81-bob-$run@example.com")
bclaims=$(claims_of "$(jq -r .access_token <<<"$T3")")
hs_claims() { jq -c --argjson now "$(date +%s)" "$1" <<<"$bclaims"; }
# auth always signs under the kid of its secret, and both verifiers require one
HSH="{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"$(hs256_kid "$SECRET")\"}"
tok=$(mint HS256 "$SECRET" "$HSH" "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field user_id)" "200 $bob" "an HS256 token (Node's HMAC, the secret file's text, the kid auth derives from it) of a live session: 200"
tok=$(mint HS256 "$SECRET" '{"alg":"HS256","typ":"JWT"}' "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: no kid" "without a kid: 401 no kid (as auth.verify_token)"
tok=$(mint HS256 "$SECRET" '{"alg":"HS256","typ":"JWT","kid":"0123456789abcdef"}' "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unknown signing key" "with another kid: 401 unknown signing key"
tok=$(mint HS256 "$PREV" "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"$(hs256_kid "$PREV")\"}" "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST" 200 "signed with the previous secret under its kid (a rotation): 200"
tok=$(mint HS256 "$SECRET-not" "$HSH" "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: bad signature" "signed with another secret: 401 bad signature"
tok=$(mint HS256 "$SECRET" "$HSH" "$(hs_claims '.exp = $now - 120')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: expired" "expired: 401 (the claims are checked in HS256 mode too)"
tok=$(mint HS256 "$SECRET" "$HSH" "$(hs_claims '.exp = $now + 300 | .aud = "other"')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: wrong audience" "wrong aud: 401"
BASE=$HS call GET /v1/me -H "$(auth "$btok")"
is "$(refusal)" "401 28000 | $INVALID | invalid token: unexpected algorithm" "an EdDSA token (a real login's) on the HS256 server: 401 unexpected algorithm"
tok=$(mint none "" '{"alg":"none","typ":"JWT"}' "$(hs_claims '.exp = $now + 300')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "alg none on the HS256 server: 401"
tok=$(mint HS256 "$SECRET" "$HSH" "$(hs_claims '.exp = $now + 300')")
call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "the HS256 token on the EdDSA server: 401 unexpected algorithm"
call POST /v1/auth/logout "${JSON[@]}" -d "$(jq -c '{refresh_token}' <<<"$T3")"
tok=$(mint HS256 "$SECRET" "$HSH" "$(hs_claims '.exp = $now + 300 | .jti = "after-logout"')")
BASE=$HS call GET /v1/me -H "$(auth "$tok")"
is "$ST $(field message)" "401 invalid token: session ended" "after that session's logout, its HS256 token is refused too (the session is checked in SQL)"

# auth itself issuing HS256 tokens (isa.jwt_algorithm, isa.jwt_secret; reset below and at exit)
sql "ALTER SYSTEM SET isa.jwt_algorithm = 'HS256'" >/dev/null
sql "ALTER SYSTEM SET isa.jwt_secret = '$SECRET'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT current_setting('isa.jwt_algorithm')" HS256 10)" HS256 "isa.jwt_algorithm = HS256 with isa.jwt_secret the same secret"
T4=$(login "it81-carol-$run@example.com" "$HS")
htok=$(jq -r .access_token <<<"$T4")
is "$(header_of "$htok" | jq -r '.alg + " " + .kid')" "HS256 $(hs256_kid "$SECRET")" \
   "a login through the HS256 server is signed HS256 by auth, under the kid both derive from the secret"
BASE=$HS call GET /v1/me -H "$(auth "$htok")"
is "$ST $(field user_id)" "200 $carol" "auth's HS256 token passes the HS256 isa-httpd"
call GET /v1/me -H "$(auth "$htok")"
is "$ST $(field message)" "401 invalid token: unexpected algorithm" "and is refused by the EdDSA one"
sql "ALTER SYSTEM RESET isa.jwt_algorithm" >/dev/null
sql "ALTER SYSTEM RESET isa.jwt_secret" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT current_setting('isa.jwt_algorithm')" EdDSA 10)" EdDSA "isa.jwt_algorithm is reset to EdDSA"
reload_httpd   # auth.jwks() was empty under HS256: reload the keys now
T5=$(login "it81-carol-$run@example.com")
for _ in $(seq 100); do call GET /v1/me -H "$(auth "$(jq -r .access_token <<<"$T5")")"; [ "$ST" = 200 ] && break; sleep 0.1; done
is "$ST $(header_of "$(jq -r .access_token <<<"$T5")" | jq -r .alg)" "200 EdDSA" "EdDSA logins pass the stack's isa-httpd again"

kill "$HS_PID"
for _ in $(seq 50); do kill -0 "$HS_PID" 2>/dev/null || break; sleep 0.1; done
wait "$HS_PID"
is "$?" 0 "the HS256 isa-httpd stops on SIGTERM with status 0"
HS_PID=

# --- clean up: the role, the grant, the test route
sql "SELECT authz.unbind_role('$carol', '$ROLE'); SELECT authz.delete_role('$ROLE');
     SELECT authz.revoke_permission('$alice', 'account:read', '$bob')" >/dev/null
sql "DELETE FROM isa.http_routes WHERE path LIKE '/test/it81/%'; DROP FUNCTION account.it81_whoami()" >/dev/null
reload_httpd
for _ in $(seq 50); do call GET /test/it81/device -H "$(auth "$dtok")"; [ "$(field code)" = ISA404 ] && break; sleep 0.1; done
is "$ST $(field code)" "404 ISA404" "the test route is gone after the reload"

done_testing
