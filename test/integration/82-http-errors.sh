# isa-httpd's errors and limits, from the outside: SQLSTATEs mapped to HTTP
# (P0002 404, 23505 409, 22P02/22023 400, 25006 405, 57014 504), its own
# refusals (unknown route, wrong method with Allow, unknown, missing, repeated
# or forbidden arguments, bad JSON, wrong Content-Type, bodies over
# max_body_bytes with Content-Length or chunked, a huge header), hostile input
# (path traversal, SQL text, NUL bytes) answered 4xx with the data intact, no
# SQL text, stack trace or secret in any error body; then, on isa-httpd
# instances of its own: statement timeout, a client that hangs up (its query
# is canceled), an exhausted pool (503 + Retry-After), pooled connections
# whose backends ended while idle, the connection limit and idle timeout,
# max_header_bytes; the settings (--help, unknown option, config
# file, environment, command line precedence); and last a PostgreSQL crash
# under the stack's isa-httpd (503s meanwhile, never a hang, then 200 again).
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
HTTP_PORT=${U##*:}
P_SLOW=$((HTTP_PORT + 2))   # statement_timeout_ms 500, then pool_size 1, then pool_size 4
P_CONN=$((HTTP_PORT + 3))   # max_connections 2, connection_timeout_s 1, max_header_bytes 4096
P_CFG1=$((HTTP_PORT + 4))   # settings: file, environment, command line
P_CFG2=$((HTTP_PORT + 5))
P_CFG3=$((HTTP_PORT + 6))
BIN=$ROOT/httpd/isa-httpd
run="$$$(date +%s)"
TMP=$(mktemp -d)
PW="it82 correct horse $run"
ROLE="it82-admin-$run"
SRV=            # the pid of this test's isa-httpd of the moment (one at a time)
DBURL="host=127.0.0.1 port=$PGPORT dbname=isa user=isa_httpd"

cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
  for _ in $(seq 300); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done   # after the crash
  sql "SET client_min_messages = warning;
       DELETE FROM isa.http_routes WHERE path LIKE '/test/it82/%';
       DROP FUNCTION IF EXISTS account.it82_write();
       DROP FUNCTION IF EXISTS account.it82_sleep(float8);
       DROP SEQUENCE IF EXISTS account.it82_seq;
       SELECT authz.delete_role('$ROLE') FROM authz.roles WHERE name = '$ROLE';" >/dev/null 2>&1
  kill -HUP "$(cat "$ISA_STACK_DIR/httpd.pid" 2>/dev/null)" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

source "$(dirname "$0")/httplib.sh"
ERRORS_LOG=$TMP/errors   # every error body, for the checks at the end
# the answer as "STATUS CODE"
sc() { printf '%s %s' "$ST" "$(field code)"; }
# a 4xx that is not a 5xx nor a success
is_4xx() { [[ $1 =~ ^4[0-9][0-9]$ ]] && echo 4xx || echo "$1"; }
post_rl() { # PATH JSON: POST to a rate-limited route, waiting out a 429

  for _ in 1 2 3 4 5; do
    call POST "$1" "${JSON[@]}" -d "$2"
    [ "$ST" = 429 ] || return 0
    sleep "$(hdr Retry-After)"
  done
}
# start_httpd PORT NAME ARGS...: an isa-httpd of this test (log $TMP/NAME.log),
# waits until it has loaded its routes (/openapi.json)
start_httpd() {
  local port=$1 name=$2
  shift 2
  env -u ISA_HTTPD_CONFIG "$BIN" --port "$port" --database_url "$DBURL application_name=it82-$name" "$@" >"$TMP/$name.log" 2>&1 &
  SRV=$!
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/openapi.json")" = 200 ] && break; sleep 0.1; done
}
stop_httpd() {
  kill "$SRV" 2>/dev/null
  wait "$SRV" 2>/dev/null
  SRV=
}
ms() { date +%s%3N; }

is "$(curl -s -o /dev/null -w '%{http_code}' "$U/live")" 200 "isa-httpd answers"

# --- a user and an administrator (isa:admin and account:read)
post_rl /v1/auth/signup "$(jq -nc --arg e "it82-user-$run@example.com" --arg p "$PW" --arg r "$run" '{email: $e, name: "IT82", password: $p, idempotency_key: ("it82-a-" + $r)}')"
is "$ST" 201 "a user signs up (201)"
me=$(field user_id)
post_rl /v1/auth/signup "$(jq -nc --arg e "it82-admin-$run@example.com" --arg p "$PW" '{email: $e, name: "IT82 admin", password: $p}')"
adm=$(field user_id)
sql "SELECT authz.create_role('$ROLE', 'it82 administrators', '{isa:admin,account:read}');
     SELECT authz.bind_role('$adm', '$ROLE')" >/dev/null
post_rl /v1/auth/login "$(jq -nc --arg e "it82-user-$run@example.com" --arg p "$PW" '{email: $e, password: $p}')"
utok=$(field access_token)
post_rl /v1/auth/login "$(jq -nc --arg e "it82-admin-$run@example.com" --arg p "$PW" '{email: $e, password: $p}')"
atok=$(field access_token)
call GET /v1/me -H "$(auth "$utok")"
is "$ST $(field user_id)" "200 $me" "the user's token works"

# --- SQLSTATE → HTTP
call GET "/v1/accounts/$(sql "SELECT gen_random_uuid()")" -H "$(auth "$atok")"
is "$(sc)" "404 P0002" "a user that does not exist, read by an administrator: P0002 → 404"
post_rl /v1/auth/signup "$(jq -nc --arg e "it82-user-$run@example.com" --arg p "$PW" --arg r "$run" '{email: $e, name: "IT82", password: $p, idempotency_key: ("it82-b-" + $r)}')"
is "$(sc)" "409 23505" "the same email signed up again with another idempotency key: 23505 → 409"
post_rl /v1/auth/signup "$(jq -nc --arg e "it82-user-$run@example.com" --arg p "$PW" --arg r "$run" '{email: $e, name: "IT82", password: $p, idempotency_key: ("it82-a-" + $r)}')"
is "$ST $(field user_id)" "201 $me" "(the first key again is a retry: 201, the same user)"
call GET /v1/products/not-a-uuid
is "$(sc)" "400 22P02" "a malformed uuid in the path (public route): 22P02 → 400"
call GET /v1/accounts/not-a-uuid -H "$(auth "$utok")"
is "$(sc)" "403 42501" "a malformed uuid where the caller is neither owner nor permitted: the access rule first, 403"
call GET "/v1/wallets/$me/check?amount=abc" -H "$(auth "$utok")"
is "$(sc)" "400 22P02" "a malformed integer in the query string: 22P02 → 400"
call GET "/v1/products?usage_type=no_such_type"
is "$(sc)" "400 22023" "an invalid value (unknown usage type): 22023 → 400"
call PATCH "/v1/accounts/$me" -H "$(auth "$utok")" "${JSON[@]}" -d '{"email": "not an email"}'
is "$(sc)" "400 22023" "PATCH with an invalid email: 22023 → 400"

# --- isa-httpd's own refusals
call GET "/v1/no/such/route/$run"
is "$(sc)" "404 ISA404" "an unknown route: 404 ISA404"
call DELETE /v1/me -H "$(auth "$utok")"
is "$(sc) | $(hdr Allow)" "405 ISA405 | GET, HEAD" "a wrong method (DELETE /v1/me): 405 with Allow: GET, HEAD"
call PUT /v1/auth/login "${JSON[@]}" -d '{}'
is "$(sc) | $(hdr Allow)" "405 ISA405 | POST" "PUT on the login route: 405 with Allow: POST"
ST=$(curl -s -m 10 -o "$TMP/b" -w '%{http_code} %{size_download}' -I "$U/v1/products")
is "$ST" "200 0" "HEAD on a GET route: 200 without a body"
call GET "/v1/products?bogus=1"
is "$(sc) $(field message)" "400 ISA400 unknown argument \"bogus\" (query string)" "an unknown query argument: 400"
post_rl /v1/auth/login "$(jq -nc '{email: "x@example.com", password: "y", bogus: 1}')"
is "$(sc) $(field message)" "400 ISA400 unknown argument \"bogus\" (body)" "an unknown body argument: 400"
post_rl /v1/auth/login '{"email": "x@example.com"}'
is "$(sc) $(field message)" "400 ISA400 missing argument \"password\" (text)" "a missing argument: 400"
call GET "/v1/products?usage_type=agent_run&usage_type=agent_run"
is "$(sc)" "400 ISA400" "a query argument given twice: 400"
call PATCH "/v1/accounts/$me" -H "$(auth "$utok")" "${JSON[@]}" -d "{\"user_id\": \"$me\", \"name\": \"x\"}"
is "$(sc) $(field message)" "400 ISA400 argument \"user_id\" is given twice (body)" "an argument in the path and in the body: 400"
call PATCH "/v1/accounts/$me?name=a" -H "$(auth "$utok")" "${JSON[@]}" -d '{"name": "b"}'
is "$(sc)" "400 ISA400" "an argument in the query string and in the body: 400"
call GET "/v1/me?user_id=$me" -H "$(auth "$utok")"
is "$(sc) $(field message)" "400 ISA400 argument \"user_id\" cannot be given: it is the caller's identity from the token" \
   "the subject argument given by the client (GET /v1/me?user_id=…): 400"
call PUT /v1/auth/password -H "$(auth "$utok")" "${JSON[@]}" -d "{\"user_id\": \"$(sql "SELECT gen_random_uuid()")\", \"current_password\": \"$PW\", \"new_password\": \"x$PW\"}"
is "$(sc)" "400 ISA400" "the subject argument in the body (PUT /v1/auth/password with user_id): 400"
call POST /v1/auth/login "${JSON[@]}" -d '{"email": "x@example.com", "password": '
is "$(sc)" "400 ISA400" "malformed JSON: 400"
call POST /v1/auth/login "${JSON[@]}" -d '{"email": "a", "email": "b", "password": "c"}'
is "$(sc)" "400 ISA400" "JSON with a duplicate key: 400"
call POST /v1/auth/login "${JSON[@]}" -d '["x@example.com", "pw"]'
is "$(sc)" "400 ISA400" "a JSON array instead of an object: 400"
call POST /v1/auth/login -H 'Content-Type: text/plain' -d '{"email": "x@example.com", "password": "y"}'
is "$(sc)" "415 ISA415" "Content-Type text/plain: 415"
call POST /v1/auth/login -H 'Content-Type: application/x-www-form-urlencoded' -d 'email=x&password=y'
is "$(sc)" "415 ISA415" "a form body: 415"
call POST /v1/auth/login -H 'Content-Type: application/jsonp' -d '{}'
is "$(sc)" "415 ISA415" "Content-Type application/jsonp (not application/json): 415"

call POST /v1/auth/login "${JSON[@]}" --data-binary $'{"email": "\xff@example.com", "password": "y"}'
is "$(sc)" "400 ISA400" "a body that is not UTF-8: 400"
printf '{"email": %s"x"%s, "password": "y"}' "$(head -c 100000 /dev/zero | tr '\0' '[')" "$(head -c 100000 /dev/zero | tr '\0' ']')" >"$TMP/deep.json"
call POST /v1/auth/login "${JSON[@]}" --data-binary @"$TMP/deep.json"
is "$(sc)" "400 ISA400" "JSON nested 100,000 deep: 400 (the parser's depth limit), no crash"
call GET "/v1/products/%ff%fe"
is "$(sc)" "400 22021" "a path parameter that is not UTF-8 (%ff%fe): 400"
call GET "/v1/products?usage_type=%ff"
is "$(sc)" "400 22021" "a query value that is not UTF-8: 400"
call TRACE /v1/me
is "$(sc) | $(hdr Allow)" "405 ISA405 | GET, HEAD" "TRACE: 405 with Allow"
call OPTIONS /v1/me
is "$(sc)" "405 ISA405" "OPTIONS: 405"

# bodies over max_body_bytes (1 MiB): with Content-Length and chunked
printf '{"email": "x@example.com", "password": "%s"}' "$(head -c 1100000 /dev/zero | tr '\0' a)" >"$TMP/big.json"
call POST /v1/auth/login "${JSON[@]}" --data-binary @"$TMP/big.json"
is "$(sc)" "413 ISA413" "a 1.1 MB body with Content-Length: 413"
call POST /v1/auth/login "${JSON[@]}" -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big.json"
is "$(sc)" "413 ISA413" "the same body chunked (no Content-Length): 413"
call POST /v1/auth/login "${JSON[@]}" -H 'Transfer-Encoding: chunked' -d '{"email": "nobody@example.com", "password": "x"}'
is "$(sc)" "401 28000" "a small chunked body is read: the login is refused for the credentials (401), not the framing"
# a header over max_header_bytes (16 KiB): 431 (ISA431)
curl -s -m 10 -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 100000 /dev/zero | tr '\0' a)" "$U/v1/products" >"$TMP/code"
like "$(cat "$TMP/code")" '^4(13|31)$' "a 100 KB header: 431 or 413 ($(cat "$TMP/code"))"
is "$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/products")" 200 "and the server answers afterwards"

# --- hostile paths and values: 4xx, never 2xx or 5xx
call GET /v1/../v1/me --path-as-is -H "$(auth "$utok")"
is "$(sc)" "400 ISA400" "/v1/../v1/me (as is): 400 invalid path"
call GET /v1/%2e%2e/v1/me -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "/v1/%2e%2e/v1/me: 4xx ($ST)"
call GET /v1/./me --path-as-is -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "/v1/./me: 4xx ($ST)"
call GET //v1/me --path-as-is -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "//v1/me (an empty segment): 4xx ($ST)"
call GET "/v1/accounts/..%2F..%2Fv1%2Fme" -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "%2F in a path parameter (/v1/accounts/..%2F..%2Fv1%2Fme): 4xx ($ST)"
call GET "/v1/accounts/$me%2Fexists" -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "an encoded slash that would make another route (/v1/accounts/{id}%2Fexists): 4xx ($ST)"
call GET "/v1/products/%2e%2e" -H "$(auth "$utok")"
is "$(is_4xx "$ST")" 4xx "%2e%2e as a path parameter: 4xx ($ST)"
call GET "/v1/$(printf 'a/%.0s' $(seq 40))x"
is "$(is_4xx "$ST")" 4xx "a path of 41 segments: 4xx ($ST)"

inj="'; DROP TABLE account.users; --"
enc=$(jq -rn --arg s "$inj" '$s | @uri')
call GET "/v1/products/$enc"
is "$(is_4xx "$ST") $(field code)" "4xx 22P02" "SQL text in a path parameter: 400 (22P02: it is only a value)"
call GET "/v1/products?usage_type=$enc"
is "$(is_4xx "$ST")" 4xx "SQL text in a query parameter: 4xx ($ST)"
post_rl /v1/auth/login "$(jq -nc --arg s "$inj" '{email: $s, password: $s}')"
is "$(sc)" "401 28000" "SQL text in body values: 401 (no such user)"
call PATCH "/v1/accounts/$me" -H "$(auth "$utok")" "${JSON[@]}" -d "$(jq -nc --arg s "$inj" '{name: $s}')"
is "$ST $(field name)" "200 $inj" "SQL text as a name is stored as text"
is "$(sql "SELECT to_regclass('account.users') IS NOT NULL AND (SELECT count(*) > 1 FROM account.users)")" t "account.users still exists, with its users"

call GET "/v1/products%00/x"
is "$(is_4xx "$ST")" 4xx "a NUL byte (%00) in the path: 4xx ($ST)"
call GET "/v1/auth/jwks%00.json"
is "$(is_4xx "$ST")" 4xx "a NUL byte before a suffix (/v1/auth/jwks%00.json): 4xx, not the route before it ($ST)"
call GET "/v1/products/$(sql "SELECT gen_random_uuid()")%00x"
is "$(is_4xx "$ST")" 4xx "a NUL byte in a path parameter: 4xx ($ST)"
call GET "/v1/products?usage_type=agent_run%00junk"
is "$(is_4xx "$ST")" 4xx "a NUL byte in a query value: 4xx ($ST)"
post_rl /v1/auth/login '{"email": "x\u0000@example.com", "password": "y"}'
is "$(sc)" "400 ISA400" "a NUL character in a JSON string: 400"

# --- GET is read-only; statement timeout (functions and routes of this test)
sql "SET client_min_messages = warning;
     CREATE SEQUENCE account.it82_seq;
     GRANT USAGE ON SEQUENCE account.it82_seq TO isa_app;
     CREATE FUNCTION account.it82_write() RETURNS bigint LANGUAGE sql AS \$\$SELECT nextval('account.it82_seq')\$\$;
     CREATE FUNCTION account.it82_sleep(seconds float8) RETURNS text LANGUAGE sql AS \$\$SELECT 'slept ' || pg_sleep(seconds)\$\$;
     GRANT EXECUTE ON FUNCTION account.it82_write(), account.it82_sleep(float8) TO isa_app;
     SELECT isa.http_route('GET', '/test/it82/write', 'account.it82_write()', 'public', 'test: writes');
     SELECT isa.http_route('POST', '/test/it82/write', 'account.it82_write()', 'public', 'test: writes');
     SELECT isa.http_route('GET', '/test/it82/sleep', 'account.it82_sleep(float8)', 'public', 'test: sleeps');" >/dev/null
reload_httpd
for _ in $(seq 50); do call POST /test/it82/write; [ "$ST" != 404 ] && break; sleep 0.1; done
is "$ST $BODY" "200 1" "POST to a function that writes (nextval): 200"
call GET /test/it82/write
is "$(sc)" "405 25006" "GET to the same function: read-only transaction, 25006 → 405"
like "$(hdr Allow)" 'POST' "that 405 says with Allow which method would do ($(hdr Allow))"
call POST /test/it82/write
is "$ST $BODY" "200 2" "the GET wrote nothing: the next POST gets 2"

start_httpd "$P_SLOW" timeout --statement_timeout_ms 500
BASE=http://127.0.0.1:$P_SLOW call GET "/test/it82/sleep?seconds=0.1"
is "$ST $BODY" '200 "slept "' "a second isa-httpd (statement_timeout_ms 500): a 0.1 s query answers"
t0=$(ms)
BASE=http://127.0.0.1:$P_SLOW call GET "/test/it82/sleep?seconds=5"
t=$(($(ms) - t0))
is "$(sc)" "504 57014" "a 5 s query: canceled by statement_timeout, 57014 → 504"
ok "after about 0.5 s, not 5 s (took $t ms)" test "$t" -ge 400 -a "$t" -lt 3000
stop_httpd

start_httpd "$P_SLOW" slow --pool_size 1 --pool_timeout_ms 200 --statement_timeout_ms 10000
SLOW=http://127.0.0.1:$P_SLOW
# a client that hangs up: its query is canceled
active() { sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'it82-slow' AND state = 'active' AND query LIKE '%it82_sleep%'"; }
curl -s -o /dev/null -m 1 "$SLOW/test/it82/sleep?seconds=5" &
bg=$!
sleep 0.5
is "$(active)" 1 "another isa-httpd (statement_timeout_ms 10000, pool_size 1): a 5 s query runs"
wait "$bg"
for _ in $(seq 10); do [ "$(active)" = 0 ] && break; sleep 0.1; done
is "$(active)" 0 "curl -m 1 hangs up: within 1 s no query of that isa-httpd is active (canceled, not left to run 4 s more)"
for _ in $(seq 20); do grep -q ' GET /test/it82/sleep 499 ' "$TMP/slow.log" && break; sleep 0.1; done
is "$(grep -c ' GET /test/it82/sleep 499 ' "$TMP/slow.log")" 1 "the request is logged with status 499"
BASE=$SLOW call GET "/test/it82/sleep?seconds=0"
is "$ST" 200 "the connection went back to the pool: the next request answers"

# an exhausted pool: 503 with Retry-After, quickly
curl -s -o "$TMP/bg" -w '%{http_code}' "$SLOW/test/it82/sleep?seconds=1" >"$TMP/bg.code" &
bg=$!
sleep 0.3
t0=$(ms)
BASE=$SLOW call GET /v1/products
t=$(($(ms) - t0))
is "$(sc) | $(hdr Retry-After)" "503 ISA503 | 1" "pool_size 1 held by a slow request: the next request is 503 ISA503 with Retry-After: 1"
ok "after pool_timeout_ms (200 ms), not when the slow one ends (took $t ms)" test "$t" -ge 150 -a "$t" -lt 900
wait "$bg"
is "$(cat "$TMP/bg.code")" 200 "the slow request itself completes (200)"
BASE=$SLOW call GET /v1/products
is "$ST" 200 "and then the pool serves again"
stop_httpd

# pooled connections whose backends ended (pg_terminate_backend, DROP DATABASE
# … FORCE, a restart) while idle: once the database is up, a request must not
# be the one that finds out
start_httpd "$P_SLOW" term --pool_size 4
bgs=()
for _ in 1 2 3 4; do curl -s -o /dev/null "http://127.0.0.1:$P_SLOW/test/it82/sleep?seconds=0.5" & bgs+=($!); done
wait "${bgs[@]}"
conns() { sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'it82-term'"; }
is "$(conns)" 4 "an isa-httpd with pool_size 4 has opened 4 connections (4 requests at once)"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'it82-term'" >/dev/null
for _ in $(seq 50); do [ "$(conns)" = 0 ] && break; sleep 0.1; done
sleep 1
codes=$(for _ in 1 2 3 4 5 6; do curl -s -m 10 -o /dev/null -w '%{http_code} ' "http://127.0.0.1:$P_SLOW/v1/products"; done)
is "$codes" "200 200 200 200 200 200 " \
   "their backends terminated while idle, the database up all along: 1 s later, six requests in a row are all 200 (a dead idle connection is replaced, not handed to a request)"
stop_httpd

# --- connections: the limit, the idle timeout, the header limit
start_httpd "$P_CONN" conn --max_connections 2 --connection_timeout_s 1 --max_header_bytes 4096
CONN=http://127.0.0.1:$P_CONN
exec 7<>"/dev/tcp/127.0.0.1/$P_CONN"
exec 8<>"/dev/tcp/127.0.0.1/$P_CONN"
curl -s -m 5 -o /dev/null -w '%{http_code}' "$CONN/v1/products" >"$TMP/code"
rc=$?
is "$(cat "$TMP/code") $([ "$rc" != 0 ] && echo refused)" "000 refused" \
   "max_connections 2 with two idle connections open: a third is refused (closed without an answer)"
t0=$(ms)
timeout 5 cat <&7 >/dev/null
t=$(($(ms) - t0))
exec 7>&- 8>&-
ok "connection_timeout_s 1: an idle connection is closed by the server after about 1 s (took $t ms)" test "$t" -ge 500 -a "$t" -lt 3000
for _ in $(seq 30); do [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$CONN/v1/products")" = 200 ] && break; sleep 0.1; done
is "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$CONN/v1/products")" 200 "once they are closed, requests are served again"
exec 7<>"/dev/tcp/127.0.0.1/$P_CONN"
printf 'GET /v1/products HTTP/1.1\r\nHost: x\r\n' >&7   # a request that stalls mid-headers
t0=$(ms)
timeout 5 cat <&7 >/dev/null
t=$(($(ms) - t0))
exec 7>&-
ok "a stalled request (headers never finished) is closed after about 1 s too (took $t ms)" test "$t" -ge 500 -a "$t" -lt 3000
curl -s -m 5 -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 8192 /dev/zero | tr '\0' a)" "$CONN/v1/products" >"$TMP/code"
is "$(cat "$TMP/code")" 431 "max_header_bytes 4096: a request with an 8 KB header is refused with 431"
is "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H "X-Small: $(head -c 1000 /dev/zero | tr '\0' a)" "$CONN/v1/products")" 200 \
   "a 1 KB header passes"
stop_httpd

# --- settings
"$BIN" --help >"$TMP/help" 2>&1
is "$?" 0 "isa-httpd --help exits 0"
names=$(sed -n 's/^[[:space:]]*{"\([a-z_]*\)", OPT_.*/\1/p' "$ROOT/httpd/config.c")
doc_names=$(sed -n '/^## Configuration/,/^## /s/^| `\([a-z_]*\)` |.*/\1/p' "$ROOT/docs/http.md")
missing=$(for n in $names $doc_names; do grep -q -- "--$n " "$TMP/help" || echo "$n"; done | sort -u | paste -sd ' ')
is "$(wc -w <<<"$names" | tr -d ' ') ${missing:-none}" "$(wc -w <<<"$doc_names" | tr -d ' ') none" \
   "--help lists every setting of httpd/config.c and of docs/http.md's table (as many of each)"
ok "--help names --config and --help too" grep -q -- '--config FILE' "$TMP/help"
"$BIN" --no_such_setting=1 >"$TMP/out" 2>&1
is "$? $(grep -c 'unknown option --no_such_setting' "$TMP/out")" "2 1" "an unknown option: exit 2, named"
"$BIN" --port=notaport >"$TMP/out" 2>&1
is "$? $(grep -c 'port must be an integer' "$TMP/out")" "2 1" "a bad value: exit 2 with the setting's range"
printf '# it82\nport = %s\nlog_requests = off   # a comment\n' "$P_CFG1" >"$TMP/a.conf"
# the file alone
env -u ISA_HTTPD_CONFIG -u ISA_HTTPD_PORT "$BIN" --config "$TMP/a.conf" --database_url "$DBURL application_name=it82-cfg" >"$TMP/cfg1.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$P_CFG1/live" && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG1/live")" 200 "--config FILE with port = N: it listens on N"
curl -s -o /dev/null "http://127.0.0.1:$P_CFG1/v1/products"
sleep 0.2
is "$(grep -c ' GET /v1/products ' "$TMP/cfg1.log")" 0 "and the file's log_requests = off (after a # comment) is honoured"
stop_httpd
# the environment
ISA_HTTPD_PORT=$P_CFG2 env -u ISA_HTTPD_CONFIG "$BIN" --database_url "$DBURL application_name=it82-cfg" >"$TMP/cfg2.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$P_CFG2/live" && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG2/live")" 200 "ISA_HTTPD_PORT=N: it listens on N"
stop_httpd
# the file beats the environment, the command line beats the file
ISA_HTTPD_PORT=$P_CFG2 env -u ISA_HTTPD_CONFIG "$BIN" --config "$TMP/a.conf" --database_url "$DBURL application_name=it82-cfg" >"$TMP/cfg3.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$P_CFG1/live" && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG1/live") $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG2/live")" "200 000" \
   "ISA_HTTPD_PORT and a file's port: the file wins"
stop_httpd
ISA_HTTPD_CONFIG=$TMP/a.conf env -u ISA_HTTPD_PORT "$BIN" --port "$P_CFG3" --database_url "$DBURL application_name=it82-cfg" >"$TMP/cfg4.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$P_CFG3/live" && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG3/live") $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_CFG1/live")" "200 000" \
   "ISA_HTTPD_CONFIG names the file, and --port on the command line beats the file's port"
stop_httpd
printf 'port = %s\nno_such_setting = 1\n' "$P_CFG1" >"$TMP/bad.conf"
env -u ISA_HTTPD_CONFIG "$BIN" --config "$TMP/bad.conf" >"$TMP/out" 2>&1
is "$? $(grep -c 'unknown setting "no_such_setting"' "$TMP/out")" "2 1" "an unknown setting in the file: exit 2, named"
env -u ISA_HTTPD_CONFIG "$BIN" --config "$TMP/no-such-file.conf" >"$TMP/out" 2>&1
is "$?" 2 "a config file that cannot be read: exit 2"

# --- what error bodies never contain
n=$(grep -c . "$TMP/errors")
is "$(grep -v -c '^{"code":"[A-Z0-9]*","message":' "$TMP/errors" | tr -d ' ')" 0 "each of the $n error bodies is {code, message, …} JSON"
is "$(grep -i -c -E 'select |isa\.http_begin|to_jsonb|\$[0-9]|::text' "$TMP/errors")" 0 "no error body carries SQL text (SELECT, isa.http_begin, to_jsonb, \$n, casts)"
is "$(grep -c -E '\.c:[0-9]+|at [a-z_]+\(|Traceback|PL/pgSQL function|CONTEXT' "$TMP/errors")" 0 "nor a stack trace or SQL context"
secret=$(sql "SELECT encode(private_key, 'hex') FROM auth.signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1")
b64secret=$(sql "SELECT isa.base64url_encode(private_key) FROM auth.signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1")
is "$(grep -c -F -e "$secret" -e "$b64secret" -e "$PW" "$TMP/errors")" 0 "nor a secret (the signing key, a password sent)"

# --- PostgreSQL crashes under the stack's isa-httpd
is "$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/products")" 200 "before the crash: 200"
( while [ ! -e "$TMP/stop" ]; do
    s=$(ms)
    c=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$U/v1/products")
    echo "$c $(($(ms) - s)) $(ms)"
    sleep 0.05
  done >"$TMP/crash.codes" ) &
loop=$!
sleep 0.5
crash_ok=$("$ROOT/tools/stack.sh" "$STACK" pg-crash >/dev/null 2>&1 && echo restarted)
crashed_at=$(ms)
is "$crash_ok" restarted "PostgreSQL stops with -m immediate and starts again (tools/stack.sh $STACK pg-crash)"
for _ in $(seq 100); do tail -n 1 "$TMP/crash.codes" | grep -q '^200 ' && [ "$(tail -n 1 "$TMP/crash.codes" | cut -d' ' -f3)" -gt "$crashed_at" ] && break; sleep 0.1; done
sleep 0.5
touch "$TMP/stop"
wait "$loop"
codes=$(cut -d' ' -f1 "$TMP/crash.codes" | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}')
note "answers during the crash: $codes"
is "$(cut -d' ' -f1 "$TMP/crash.codes" | grep -v -c -E '^(200|503)$')" 0 "every answer during the crash is 200 or 503 (never a hang, a 500 or a dropped connection)"
is "$(awk '$2 > 3000' "$TMP/crash.codes" | wc -l | tr -d ' ')" 0 "no answer took more than 3 s"
first200=$(awk -v t="$crashed_at" '$1 == 200 && $3 > t {print $3; exit}' "$TMP/crash.codes")
ok "200 again within 6 s of the restart ($((${first200:-999999999999} - crashed_at)) ms)" test -n "$first200" -a "$((${first200:-0} - crashed_at))" -lt 6000
is "$(curl -s -o /dev/null -w '%{http_code}' -H "$(auth "$utok")" "$U/v1/me")" 200 "an authenticated request after the crash: 200"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 60)" t "the bridge is connected to NATS again"
for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/ready")" = 200 ] && break; sleep 0.1; done
is "$(curl -s -o /dev/null -w '%{http_code}' "$U/ready")" 200 "GET /ready: 200 again"

# --- clean up the test routes
sql "DELETE FROM isa.http_routes WHERE path LIKE '/test/it82/%'" >/dev/null
reload_httpd
for _ in $(seq 50); do call GET /test/it82/sleep?seconds=0; [ "$(field code)" = ISA404 ] && break; sleep 0.1; done
is "$(sc)" "404 ISA404" "the test routes are gone after the reload"

done_testing
