# Every route of isa.http_routes over HTTP, from a client that is not isa
# code: http-routes.mjs (Node's fetch) signs users up, makes an administrator,
# and calls each route with valid arguments, checking its success status and
# body; a route without a test case fails the run.  Then, from here with
# curl: X-Request-Id is echoed (and logged) when valid, generated when
# missing or invalid.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
run="$$$(date +%s)"
TMP=$(mktemp -d)

# --- the Stripe endpoint secret for POST /webhooks/stripe (reset when the test ends)
SECRET="whsec_it80${run}$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
trap 'sql "ALTER SYSTEM RESET isa.stripe_webhook_secret" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; rm -rf "$TMP"' EXIT
sql "ALTER SYSTEM SET isa.stripe_webhook_secret = '$SECRET'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT current_setting('isa.stripe_webhook_secret') = '$SECRET'" t 10)" t "the Stripe webhook secret is set"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(curl -s -o /dev/null -w '%{http_code}' "$U/ready")" 200 "isa-httpd is ready"

# --- every route (TAP from Node, numbered after ours)
IT80_STRIPE_SECRET=$SECRET IT80_TAP_START=$_n node "$HERE/http-routes.mjs" >"$TMP/node.out" 2>"$TMP/node.err"
rc=$?
cat "$TMP/node.out"
read -r node_n node_failed < <(sed -n 's/^# tap: \([0-9]*\) \([0-9]*\)$/\1 \2/p' "$TMP/node.out")
if [ -n "${node_n:-}" ]; then _n=$node_n; _failed=$((_failed + node_failed)); fi
is "$rc" 0 "http-routes.mjs exits 0 (every route answered as declared)"
is "$(grep -c '^not ok ' "$TMP/node.out")" 0 "no failed route"
[ -s "$TMP/node.err" ] && sed 's/^/# node stderr: /' "$TMP/node.err"
routes=$(sql "SELECT count(*) FROM isa.http_routes WHERE stream IS NULL AND (path !~ '^/v1/(files|downloads)(/|$)' OR path ~ '/offer$')")
like "$(grep -c '^ok .* -> [0-9]*: ' "$TMP/node.out")" "^$routes\$" "one passing line per route ($routes)"

# --- X-Request-Id
uuid_re='^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
hdr() { tr -d '\r' | sed -n "s/^$1: //Ip" | head -n 1; }
# the log line of a request id, as "METHOD PATH STATUS ID" (no time stamp, no duration)
wait_for_log() {
  local line= i
  for ((i = 0; i < 50; i++)); do
    line=$(grep -F -- " $1" "$ISA_HTTPD_LOG" | tail -n 1) && [ -n "$line" ] && break
    sleep 0.1
  done
  awk '{print $2, $3, $4, $6}' <<<"$line"
}
rid="it80-${run}-Req_1.2:3"
curl -s -D "$TMP/h1" -o /dev/null -H "X-Request-Id: $rid" "$U/v1/products"
is "$(hdr x-request-id <"$TMP/h1")" "$rid" "a valid incoming X-Request-Id is echoed back"
is "$(wait_for_log "$rid")" "GET /v1/products 200 $rid" "and ends isa-httpd's log line of the request"
curl -s -D "$TMP/h2" -o /dev/null "$U/v1/products"
gen=$(hdr x-request-id <"$TMP/h2")
like "$gen" "$uuid_re" "without X-Request-Id, one is generated (a UUID v4)"
is "$(wait_for_log "$gen")" "GET /v1/products 200 $gen" "and logged"
curl -s -D "$TMP/h3" -o /dev/null -H "X-Request-Id: bad id with spaces" "$U/v1/products"
like "$(hdr x-request-id <"$TMP/h3")" "$uuid_re" "an invalid X-Request-Id (spaces) is replaced by a generated one"
curl -s -D "$TMP/h4" -o /dev/null -H "X-Request-Id: $(printf 'a%.0s' $(seq 129))" "$U/v1/products"
like "$(hdr x-request-id <"$TMP/h4")" "$uuid_re" "so is one of 129 characters"
rid2="it80-${run}-err"
code=$(curl -s -D "$TMP/h5" -o "$TMP/b5" -w '%{http_code}' -H "X-Request-Id: $rid2" "$U/v1/me")
is "$code $(hdr x-request-id <"$TMP/h5") $(jq -r .code "$TMP/b5")" "401 $rid2 28000" "an error answer carries the request's id too"
ids=$(for _ in 1 2 3; do curl -s -D - -o /dev/null "$U/live" | hdr x-request-id; done | sort -u | wc -l)
is "$ids" 3 "each request gets its own id"

done_testing
