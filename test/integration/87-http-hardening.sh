# isa-httpd against the attacks of issue 12 (§4, §5), from the outside:
# every answer says nosniff; HTTP/1.1 without one Host is 400; a 2 KB query
# of 300 parameters is parsed and answered, a target or head over
# max_header_bytes is 414/431 with the JSON body (never an empty reply);
# quantities are bounded (no 393 KB quote); /metrics wants its token; the
# stack's development secrets make the webhook and signed URLs work, and a
# missing secret is 503; PUT /v1/auth/password is throttled like login and a
# sign-up retry is no password oracle; then, on isa-httpd instances of its
# own: slow-header clients (Slowloris) are closed after request_head_timeout_s
# while a normal client is served, max_connections_per_client (trusted
# proxies apart), and X-Forwarded-For believed from a trusted proxy only.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
HTTP_PORT=${U##*:}
P_SLOW=$((HTTP_PORT + 7))    # max_connections 4, request_head_timeout_s 2
P_PROXY=$((HTTP_PORT + 8))   # max_connections_per_client 2, trusted_proxies 127.0.0.2, rate_limit 1
BIN=$ROOT/httpd/isa-httpd
run="$$$(date +%s)"
TMP=$(mktemp -d)
PW="it87 correct horse $run"
SRV=
DBURL="host=127.0.0.1 port=$PGPORT dbname=isa user=isa_httpd"

cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
  sql "ALTER SYSTEM RESET isa.stripe_webhook_secret" >/dev/null 2>&1
  sql "ALTER SYSTEM RESET isa.storage_url_secret" >/dev/null 2>&1
  sql "SELECT pg_reload_conf()" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

source "$(dirname "$0")/httplib.sh"
sc() { printf '%s %s' "$ST" "$(field code)"; }
post_rl() { # PATH JSON [curl args]: POST to a rate-limited route, waiting out a 429
  local p=$1 j=$2
  shift 2
  for _ in 1 2 3 4 5; do
    call POST "$p" "${JSON[@]}" "$@" -d "$j"
    [ "$ST" = 429 ] || return 0
    sleep "$(hdr Retry-After)"
  done
}
start_httpd() { # PORT NAME ARGS...
  local port=$1 name=$2
  shift 2
  env -u ISA_HTTPD_CONFIG -u ISA_HTTPD_METRICS_TOKEN_FILE "$BIN" --port "$port" \
    --database_url "$DBURL application_name=it87-$name" "$@" >"$TMP/$name.log" 2>&1 &
  SRV=$!
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/openapi.json")" = 200 ] && break; sleep 0.1; done
}
stop_httpd() { kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null; SRV=; }
# raw REQUEST: the status line of the answer to a request sent as is
raw() { python3 - "$HTTP_PORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
s.settimeout(5)
data = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
except OSError:
    pass
head, _, body = data.partition(b"\r\n\r\n")
print((head.split(b"\r\n")[0].decode() if data else "(empty reply)") + " | " + body[:200].decode("latin-1"))
PY
}

is "$(curl -s -o /dev/null -w '%{http_code}' "$U/live")" 200 "isa-httpd answers"

# --- a user with a file
post_rl /v1/auth/signup "$(jq -nc --arg e "it87-$run@example.com" --arg p "$PW" --arg k "it87-$run" '{email: $e, name: "IT87", password: $p, idempotency_key: $k}')"
me=$(field user_id)
is "$ST" 201 "a user signs up"
post_rl /v1/auth/login "$(jq -nc --arg e "it87-$run@example.com" --arg p "$PW" '{email: $e, password: $p}')"
tok=$(field access_token)
printf '<html><script>alert(1)</script></html>' >"$TMP/page"
call POST "/v1/files?name=page.txt" -H "$(auth "$tok")" -H 'Content-Type: text/plain' --data-binary @"$TMP/page"
fid=$(field file_id)
is "$ST" 201 "the user uploads a file that looks like HTML"

# --- nosniff
call GET "/v1/files/$fid/content" -H "$(auth "$tok")"
is "$ST $(hdr X-Content-Type-Options)" "200 nosniff" "a download says X-Content-Type-Options: nosniff (a browser may not sniff it into HTML)"
call GET /v1/products
is "$ST $(hdr X-Content-Type-Options)" "200 nosniff" "so does a JSON answer"
call GET "/v1/no/such/route/$run"
is "$ST $(hdr X-Content-Type-Options)" "404 nosniff" "and an error"

# --- Host (RFC 9112 §3.2)
call GET /v1/products -H 'Host:'
is "$(sc) | $(field message)" "400 ISA400 | an HTTP/1.1 request needs a Host header" "HTTP/1.1 without Host: 400 ISA400"
call GET /v1/products --http1.0 -H 'Host:'
is "$ST" 200 "HTTP/1.0 without Host: served (1.0 has no Host rule)"
like "$(raw 'GET /v1/products HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n')" '^HTTP/1.1 400 .*"message":"more than one Host header"' \
   "two Host headers: 400"

# --- the head's limits (max_header_bytes 16 KiB): always a JSON answer
q=$(for i in $(seq 300); do printf 'p%d=1&' "$i"; done)
call GET "/v1/products?${q%&}"
is "$(sc) | $(field message)" '400 ISA400 | unknown argument "p1" (query string)' \
   "300 query parameters (a ${#q}-byte query): parsed and answered (400 for the unknown argument), not an empty reply"
call GET "/v1/products?$(head -c 20000 /dev/zero | tr '\0' a)"
is "$(sc)" "414 ISA414" "a 20 KB request target: 414 with the JSON body"
like "$(raw "GET /v1/products?$(printf 'a&%.0s' $(seq 9000)) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")" '^HTTP/1.1 414 .*"code":"ISA414"' \
   "a target of 9,000 empty parameters (18 KB, the pool-eating case): 414 with the JSON body"
like "$(raw "GET /v1/products?$(printf 'a%d&%.0s' $(seq 2000)) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")" '^HTTP/1.1 400 .*"code":"ISA400"' \
   "2,000 parameters in 11 KB (within the limit): a JSON 400, the parameters all parsed"
call GET /v1/products -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)"
is "$(sc) $(hdr Content-Type)" "431 ISA431 application/json; charset=utf-8" "a 20 KB header: 431 with the JSON body"
like "$(raw "GET /v1/products HTTP/1.1\r\nHost: x\r\n$(for i in $(seq 3000); do printf 'a%d:\\r\\n' "$i"; done)Connection: close\r\n\r\n")" \
   '^HTTP/1.1 431 .*"code":"ISA431"' "3,000 empty headers (22 KB): 431 with the JSON body"
call GET /v1/products -H "X-Fits: $(head -c 15000 /dev/zero | tr '\0' a)"
is "$ST" 200 "a 15 KB header (within 16 KiB): served"

# --- quantities
call GET "/v1/prices/quote?usage_type=model_input_tokens&model=it87&quantity=1e131000"
is "$(sc) $([ "$(wc -c <"$TMP/b")" -lt 1024 ] && echo small)" "400 22023 small" \
   "GET /v1/prices/quote?quantity=1e131000 (no token): 400 22023 with a small body, not a 393 KB quote"
call GET "/v1/prices/quote?usage_type=model_input_tokens&model=it87&quantity=0.$(head -c 5000 /dev/zero | tr '\0' 0)1"
is "$(sc)" "400 22023" "a quantity with 5,000 decimals: 400 22023"

# --- /metrics wants the stack's token
token_file=${ISA_METRICS_TOKEN_FILE:-$ISA_STACK_DIR/metrics.token}
is "$(stat -c %a "$token_file" 2>/dev/null)" 600 "the stack's metrics token is in a 0600 file ($token_file)"
call GET /metrics
is "$(sc) | $(hdr WWW-Authenticate)" '401 ISA401 | Bearer realm="metrics"' "GET /metrics without the token: 401"
call GET /metrics -H "Authorization: Bearer not-the-token-$run"
is "$ST" 401 "with another token: 401"
call GET /metrics -H "Authorization: Bearer $(cat "$token_file")"
like "$ST $(grep -c '^isa_http_requests_total' "$TMP/b")" '^200 [1-9]' "with the token: 200 and the metrics"

# --- development secrets: a fresh stack's webhook and signed URLs work
secrets="$ISA_PGDATA/isa-dev-secrets.conf"
is "$(stat -c %a "$secrets" 2>/dev/null) $(grep -c -E '^isa\.(stripe_webhook_secret|storage_url_secret) = ' "$secrets" 2>/dev/null)" "600 2" \
   "the stack made development secrets in a 0600 file (isa-dev-secrets.conf)"
is "$(sql "SELECT current_setting('isa.stripe_webhook_secret') <> '' AND length(current_setting('isa.storage_url_secret')) >= 32")" t \
   "and PostgreSQL has them"
call POST /webhooks/stripe -H 'Content-Type: application/json' -H "Stripe-Signature: t=$(date +%s),v1=00" -d '{"id": "evt_it87"}'
is "$(sc)" "400 22023" "the Stripe webhook out of the box: a bad signature is its own 400, not a 5xx"
call POST "/v1/files/$fid/download-url" -H "$(auth "$tok")"
is "$ST $(field file_id)" "200 $fid" "a signed download URL out of the box"
D="/v1/downloads/$fid?expires=$(field expires)&signature=$(field signature)"
call GET "$D"
is "$ST $(hdr X-Content-Type-Options)" "200 nosniff" "and it downloads, nosniff"
sql "ALTER SYSTEM SET isa.stripe_webhook_secret = ''" >/dev/null
sql "ALTER SYSTEM SET isa.storage_url_secret = ''" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT current_setting('isa.storage_url_secret') || current_setting('isa.stripe_webhook_secret')" "" 10 >/dev/null
call POST /webhooks/stripe -H 'Content-Type: application/json' -H "Stripe-Signature: t=$(date +%s),v1=00" -d '{"id": "evt_it87"}'
is "$(sc) | $(field message) | $(hdr Retry-After)" "503 55000 | Stripe webhook secret not configured | " \
   "with the secret emptied: 503 55000 saying so (not 500), no Retry-After"
call POST "/v1/files/$fid/download-url" -H "$(auth "$tok")"
is "$(sc) | $(field message)" "503 55000 | signed download URLs are not configured: isa.storage_url_secret is not set" \
   "signing a URL without its secret: 503 with the setting named"
sql "ALTER SYSTEM RESET isa.stripe_webhook_secret" >/dev/null
sql "ALTER SYSTEM RESET isa.storage_url_secret" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT current_setting('isa.storage_url_secret') <> ''" t 10 >/dev/null
call GET "$D"
is "$ST" 200 "ALTER SYSTEM RESET returns to the development secret: the URL signed before works again"

# --- PUT /v1/auth/password: throttled like login (per user)
codes=$(for i in 1 2 3 4 5; do
  call PUT /v1/auth/password -H "$(auth "$tok")" "${JSON[@]}" -d "$(jq -nc --arg i "$i" '{current_password: ("wrong " + $i), new_password: "it87 brand new password"}')"
  printf '%s ' "$(sc)"; done)
is "$codes" "401 28000 401 28000 401 28000 401 28000 401 28000 " "five wrong current passwords: 401 28000 each"
call PUT /v1/auth/password -H "$(auth "$tok")" "${JSON[@]}" -d "$(jq -nc --arg p "$PW" '{current_password: $p, new_password: "it87 brand new password"}')"
like "$(sc) | $(field message)" '^401 28P01 \| too many wrong passwords for this user: try again in [0-9]+ seconds$' \
   "the sixth, with the right password: 401 28P01 (12 guesses no longer pass)"
post_rl /v1/auth/login "$(jq -nc --arg e "it87-$run@example.com" --arg p "$PW" '{email: $e, password: $p}')"
is "$ST" 200 "the user still logs in: the lock is the password change's own"
sql "SELECT auth.reset_login_throttle('it87-$run@example.com')" >/dev/null

# --- a sign-up retry is no password oracle
signup() { # NAME PASSWORD: the same key and email as the first sign-up
  post_rl /v1/auth/signup "$(jq -nc --arg e "it87-$run@example.com" --arg n "$1" --arg p "$2" --arg k "it87-$run" '{email: $e, name: $n, password: $p, idempotency_key: $k}')"
}
signup IT87 "$PW"
is "$ST $(field user_id)" "201 $me" "the sign-up retried with the same key and arguments: the first user"
signup IT87 "not the password"
wrong_pw="$(sc) | $(field message)"
signup "Not IT87" "$PW"
is "$wrong_pw" "$(sc) | $(field message)" "a retry with a wrong password answers exactly as one with another name ($wrong_pw)"
for i in 1 2 3; do signup IT87 "wrong $i"; done
signup IT87 "wrong 4"
signup IT87 "$PW"
like "$(sc) | $(field message)" '^401 28P01 \| too many failed logins for this email' \
   "after five wrong retries even the right password is refused: the retries go through the login throttle"
sql "SELECT auth.reset_login_throttle('it87-$run@example.com')" >/dev/null

# --- Slowloris: four clients sending one header line every 0.5 s to an
# isa-httpd with max_connections 4 and request_head_timeout_s 2
start_httpd "$P_SLOW" slow --max_connections 4 --max_connections_per_client 0 --request_head_timeout_s 2
python3 - "$P_SLOW" >"$TMP/slow.out" <<'PY'
import socket, sys, threading, time, urllib.request
port = int(sys.argv[1])
t0 = time.time()
closed = {}
def slow(i):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n")
    opened = time.time()
    s.settimeout(0.5)
    while time.time() - opened < 12:
        try:
            if s.recv(1) == b"":
                break
        except socket.timeout:
            pass
        except OSError:
            break
        try:
            s.sendall(b"X-Slow: %d\r\n" % i)
        except OSError:
            break
    closed[i] = time.time() - opened
threads = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
time.sleep(0.3)
served = None
while time.time() - t0 < 12 and served is None:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/live" % port, timeout=1) as r:
            if r.status == 200:
                served = time.time() - t0
    except Exception:
        time.sleep(0.1)
for t in threads:
    t.join()
print("served %.1f" % (served if served is not None else 99))
print("closed " + " ".join("%.1f" % closed[i] for i in sorted(closed)))
PY
served=$(sed -n 's/^served //p' "$TMP/slow.out")
closed=$(sed -n 's/^closed //p' "$TMP/slow.out")
ok "every slow connection is closed within request_head_timeout_s 2 (+1 s), while it was still sending (after $closed s)" \
   awk -v c="$closed" 'BEGIN { n = split(c, a, " "); if (n != 4) exit 1; for (i = 1; i <= n; i++) if (a[i] < 1.5 || a[i] > 3.5) exit 1 }'
ok "a normal client is served meanwhile, within 4 s of the attack's start (at $served s), not locked out" \
   awk -v s="$served" 'BEGIN { exit !(s < 4) }'
like "$(curl -s "http://127.0.0.1:$P_SLOW/metrics" | grep 'isa_http_connections_closed_total{reason="head_timeout"}')" ' [4-9]$' \
   "isa_http_connections_closed_total{reason=\"head_timeout\"} counts them"
is "$(grep -c 'without a whole request head' "$TMP/slow.log" | awk '{print ($1 >= 1)}')" 1 "and the log says so"
stop_httpd

# --- max_connections_per_client, trusted proxies, X-Forwarded-For
start_httpd "$P_PROXY" proxy --max_connections_per_client 2 --trusted_proxies 127.0.0.2 --rate_limit 1 --rate_burst 2
PX=http://127.0.0.1:$P_PROXY
HOLDERS=()
hold() { # SOURCE N: N idle connections from SOURCE, held until $TMP/release exists
  python3 - "$P_PROXY" "$1" "$2" "$TMP/release" <<'PY' &
import os, socket, sys, time
port, src, n, release = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
socks = [socket.create_connection(("127.0.0.1", port), source_address=(src, 0)) for _ in range(n)]
while not os.path.exists(release):
    time.sleep(0.05)
PY
  HOLDERS+=($!)
}
rm -f "$TMP/release"
hold 127.0.0.1 2
sleep 0.5
is "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$PX/live")" 000 "max_connections_per_client 2: a third connection from 127.0.0.1 is refused"
is "$(curl -s -m 5 --interface 127.0.0.3 -o /dev/null -w '%{http_code}' "$PX/live")" 200 "while a client at another address (127.0.0.3) is served"
hold 127.0.0.2 3
sleep 0.5
is "$(curl -s -m 5 --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$PX/live")" 200 \
   "the trusted proxy (127.0.0.2) is not capped: a fourth connection of its own is served"
touch "$TMP/release"
wait "${HOLDERS[@]}"
sleep 0.3
login() { # SOURCE XFF: the status of an empty login (400 when the rate limit lets it through, 429 when not)
  curl -s -m 5 --interface "$1" -o /dev/null -w '%{http_code}' -X POST "${JSON[@]}" -H "X-Forwarded-For: $2" -d '{}' "$PX/v1/auth/login"
}
is "$(login 127.0.0.1 203.0.113.1) $(login 127.0.0.1 203.0.113.1) $(login 127.0.0.1 203.0.113.1)" "400 400 429" \
   "rate_limit 1, burst 2: a client at 127.0.0.1 is limited at its third login"
is "$(login 127.0.0.1 198.51.100.2)" 429 "a forged X-Forwarded-For from a peer that is not a trusted proxy is ignored: still 429"
is "$(login 127.0.0.2 203.0.113.1) $(login 127.0.0.2 203.0.113.1) $(login 127.0.0.2 203.0.113.1)" "400 400 429" \
   "through the trusted proxy, X-Forwarded-For 203.0.113.1 has its own bucket (not the proxy's, not 127.0.0.1's): limited at its third"
is "$(login 127.0.0.2 203.0.113.2)" 400 "another client behind the proxy (203.0.113.2) is not limited by the first"
is "$(login 127.0.0.2 '198.51.100.7, 203.0.113.1')" 429 \
   "a client-forged left part (198.51.100.7, 203.0.113.1): the rightmost address the proxy wrote counts, 429"
is "$(login 127.0.0.2 '203.0.113.1, 127.0.0.2')" 429 "two trusted hops (203.0.113.1, 127.0.0.2): the client is the rightmost untrusted address, 429"
stop_httpd

done_testing
