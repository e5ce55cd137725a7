# One corpus of tokens through both verifiers: every token of jwt-corpus.mjs
# (valid, expired, nbf or iat in the future, wrong iss or aud, no sub, alg
# none, alg switched HS256↔EdDSA, bad or malformed signatures, malformed
# base64 and JSON, repeated members, oversized, trailing garbage …) goes to
# auth.verify_token and to isa-httpd (GET /v1/me with Authorization: Bearer),
# and both must give the corpus's verdict: accept, or refuse with auth's
# reason (28000) and isa-httpd's 401.  Both share extension/auth/jwt_verify.c;
# this test is what keeps them from drifting apart again.
#
# Both are configured with the corpus's fixed keys: its Ed25519 key is added
# to auth.signing_keys (dated 2000, so it never becomes the signing key) for
# the stack's isa-httpd, and a second isa-httpd runs HS256 with the corpus's
# secrets, which the backend gets per session (SET isa.jwt_secret).  The
# tokens name a live session of a user made for the test.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
HS_PORT=$((${U##*:} + 2))          # the second isa-httpd (HS256)
HS=http://127.0.0.1:$HS_PORT
run="$$$(date +%s)"
TMP=$(mktemp -d)
HS_PID=
CORPUS="node $(dirname "$0")/jwt-corpus.mjs"

declare -A KEY
while read -r name value; do KEY[$name]=$value; done < <($CORPUS keys)

cleanup() {
  [ -n "$HS_PID" ] && kill "$HS_PID" 2>/dev/null && wait "$HS_PID" 2>/dev/null
  sql "DELETE FROM auth.signing_keys WHERE kid = '${KEY[ed_kid]}'" >/dev/null 2>&1
  kill -HUP "$(cat "$ISA_STACK_DIR/httpd.pid" 2>/dev/null)" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"

# --- the keys on both sides
sql "DELETE FROM auth.signing_keys WHERE kid = '${KEY[ed_kid]}';
     INSERT INTO auth.signing_keys (kid, public_key, private_key, created_at)
     VALUES ('${KEY[ed_kid]}', '\\x${KEY[ed_public]}', '\\x${KEY[ed_private]}', '2000-01-01')" >/dev/null
reload_httpd
printf '%s' "${KEY[hs_secret]}" >"$TMP/secret"
printf '%s' "${KEY[hs_previous]}" >"$TMP/previous"
env -u ISA_HTTPD_CONFIG -u ISA_HTTPD_JWT_SECRET "$ROOT/httpd/isa-httpd" --port "$HS_PORT" \
  --database_url "host=127.0.0.1 port=$PGPORT dbname=isa user=isa_httpd application_name=it16-hs256" \
  --jwt_algorithm HS256 --jwt_secret_file "$TMP/secret" --jwt_previous_secret_file "$TMP/previous" \
  >"$TMP/hs.log" 2>&1 &
HS_PID=$!
for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$HS/openapi.json")" = 200 ] && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "$HS/openapi.json")" 200 "a second isa-httpd runs HS256 with the corpus's secrets"
is "$(sql "SELECT count(*) FROM auth.jwks() k, jsonb_array_elements(k -> 'keys') e WHERE e ->> 'kid' = '${KEY[ed_kid]}'")" 1 \
   "the corpus's Ed25519 key is published by auth.jwks(), where the stack's isa-httpd reads its keys"

# --- a live session for the tokens to name
email="it16-$run@example.com"
pw="it16 correct horse $run"
sub=$(sql "SELECT user_id FROM auth.sign_up('$email', 'IT16', '$pw')")
sid=$(sql "SELECT session_id FROM auth.login('$email', '$pw')")
like "$sub $sid" '^[0-9a-f-]{36} [0-9a-f-]{36}$' "a user signs up and logs in: the corpus's tokens name that session"

# backend MODE TOKEN: "accept", or the reason of auth.verify_token's 28000
backend() {
  local settings="SET isa.jwt_algorithm = 'EdDSA';"
  [ "$1" = HS256 ] && settings="SET isa.jwt_algorithm = 'HS256'; SET isa.jwt_secret = '${KEY[hs_secret]}';
                                SET isa.jwt_previous_secret = '${KEY[hs_previous]}';"
  psql -X -A -t -q -v tok="$2" -v VERBOSITY=verbose 2>&1 <<SQL | sed -n 's/^ERROR:  28000: invalid token: //p; s/^accept$/accept/p' | head -n 1
\set VERBOSITY verbose
$settings
SELECT 'accept' FROM auth.verify_token(:'tok');
SQL
}
# front MODE TOKEN: "accept" (200) or "refuse" (401 invalid_token), else the status
front() {
  local base=$U
  [ "$1" = HS256 ] && base=$HS
  BASE=$base call GET /v1/me -H "$(auth "$2")"
  case "$ST $(hdr WWW-Authenticate)" in
    "200 "*) echo accept ;;
    '401 Bearer error="invalid_token"') echo refuse ;;
    *) echo "$ST" ;;
  esac
}

# the stack's isa-httpd learns the new key (SIGHUP, or an unknown kid)
first=$($CORPUS tokens "$(date +%s)" "$sub" "$sid" | head -n 1 | cut -f 4)
for _ in $(seq 100); do [ "$(front EdDSA "$first")" = accept ] && break; sleep 0.1; done

n=0
while IFS=$'\t' read -r mode want name token; do
  n=$((n + 1))
  got_backend=$(backend "$mode" "$token")
  got_front=$(front "$mode" "$token")
  if [ "$want" = accept ]; then want_front=accept; else want_front=refuse; fi
  is "$got_backend | $got_front" "$want | $want_front" "$mode, $name (${#token} characters): ${want} in auth.verify_token and isa-httpd"
done < <($CORPUS tokens "$(date +%s)" "$sub" "$sid")
like "$n" '^[0-9]{2,}$' "the corpus has $n tokens"

done_testing
