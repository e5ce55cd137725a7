# isa-httpd's own endpoints: /live, /ready (database, bridge, routes), /metrics
# (Prometheus text that promtool accepts: request counters and latency
# histograms by route template, the pool's gauges, and isa.metrics() from the
# database; a counter grows by exactly the requests made; the labels stay
# bounded), /openapi.json (OpenAPI 3.0.3, one operation per row of
# isa.http_routes, as the server behaves: success status, security, path
# parameters, headers), and 405 with Allow for another method.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
run="$$$(date +%s)"

# --- /live and /ready
is "$(curl -s -o "$TMP/live" -w '%{http_code}' "$U/live") $(jq -c . "$TMP/live")" '200 {"status":"live"}' "GET /live: 200 live"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(curl -s -o "$TMP/ready" -w '%{http_code}' "$U/ready") $(jq -c '[.status, .database, .bridge, .routes]' "$TMP/ready")" \
   '200 ["ready",true,true,true]' "GET /ready: 200, database, bridge and routes true"

# --- /metrics (the stacks' isa-httpd requires the token of metrics_token_file)
token_file=${ISA_METRICS_TOKEN_FILE:-$ISA_STACK_DIR/metrics.token}
METRICS_AUTH=()
[ -r "$token_file" ] && METRICS_AUTH=(-H "Authorization: Bearer $(cat "$token_file")")
scrape() { curl -s -D "$TMP/metrics.h" -o "$TMP/metrics" "${METRICS_AUTH[@]}" "$U/metrics"; }
# value SERIES: the value of the exposition line "SERIES VALUE" (0 if absent)
value() { awk -v s="$1" 'index($0, s " ") == 1 { v = $NF } END { print v + 0 }' "$TMP/metrics"; }
jwks='route="/v1/auth/jwks",method="GET",status="200"'
scrape
before=$(value "isa_http_requests_total{$jwks}")
before_count=$(value "isa_http_request_duration_seconds_count{$jwks}")
N=7
for _ in $(seq $N); do curl -s -o /dev/null "$U/v1/auth/jwks"; done
pid=$(sql "SELECT gen_random_uuid()")
curl -s -o /dev/null "$U/v1/products/$pid"                                  # a 404 of a matched route
for i in 1 2 3; do curl -s -o /dev/null "$U/it84-$run-scan-$i/x"; done       # unmatched paths
scrape
is "$(tr -d '\r' <"$TMP/metrics.h" | sed -n 's/^Content-Type: //Ip')" "text/plain; version=0.0.4; charset=utf-8" \
   "/metrics is Prometheus text format 0.0.4"
ok "promtool check metrics accepts /metrics" promtool check metrics <"$TMP/metrics"
is "$(value "isa_http_requests_total{$jwks}")" "$((before + N))" \
   "isa_http_requests_total{route=\"/v1/auth/jwks\",method=\"GET\",status=\"200\"} grew by the $N requests made"
is "$(value "isa_http_request_duration_seconds_count{$jwks}")" "$((before_count + N))" "and its latency histogram's count too"
is "$(value "isa_http_request_duration_seconds_bucket{$jwks,le=\"+Inf\"}")" "$(value "isa_http_request_duration_seconds_count{$jwks}")" \
   "the +Inf bucket equals the count"
like "$(grep -c '^isa_http_request_duration_seconds_bucket{route="/v1/auth/jwks",method="GET",status="200",le="' "$TMP/metrics")" '^1[0-9]$' \
   "isa_http_request_duration_seconds_bucket has its le buckets for the route"
like "$(value 'isa_http_requests_total{route="/v1/products/{product_id}",method="GET",status="404"}')" '^[1-9][0-9]*$' \
   "a 404 of GET /v1/products/{id} is counted under the route's template and status 404"
is "$(grep -c -- "$pid\|it84-$run-scan" "$TMP/metrics")" 0 "no label carries a path's values (ids, scanned paths)"
like "$(value 'isa_http_requests_total{route="unmatched",method="GET",status="404"}')" '^[1-9][0-9]*$' "unmatched paths count as route=\"unmatched\""
like "$(grep -E '^isa_http_pool_size [0-9]+$' "$TMP/metrics")" '^isa_http_pool_size [1-9][0-9]*$' "isa_http_pool_size is a positive gauge"
like "$(grep -c '^isa_http_pool_connections_open \|^isa_http_requests_in_flight \|^isa_http_pool_waiting ' "$TMP/metrics")" '^3$' \
   "with the pool's open connections, waiting requests and the requests in flight"
# from the database: isa.metrics() through isa.http_metrics()
services=$(sql "SELECT count(*) FROM isa.services s WHERE EXISTS (SELECT FROM isa.metrics() m WHERE m.metric = 'outbox_backlog' AND m.labels->>'service' = s.name)")
is "$(grep -c '^isa_outbox_backlog{service="[a-z_]*"} [0-9]' "$TMP/metrics")" "$services" \
   "isa_outbox_backlog from the database, one series per service ($services)"
is "$(grep -c '^# TYPE isa_outbox_backlog gauge$' "$TMP/metrics")" 1 "typed once, as a gauge"
is "$(value isa_nats_connected)" 1 "isa_nats_connected 1 (the bridge, from the database)"
# a method label from the client: unknown methods must not each make a series
# (7 characters: isa-httpd keeps at most 7 of a method)
methods=$(for _ in 1 2 3; do printf 'Z%s\n' "$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"; done)
for m in $methods; do curl -s -o /dev/null -X "$m" "$U/it84-nope"; curl -s -o /dev/null -X "$m" "$U/v1/me"; done
scrape
is "$(for m in $methods; do grep -c "method=\"$m\"" "$TMP/metrics"; done | paste -sd ' ')" "0 0 0" \
   "requests with made-up methods create no series of their own (the method label is bounded)"

# --- POST /metrics and other methods on the built-in endpoints: 405 with Allow
for ep in /metrics /live /ready /openapi.json; do
  code=$(curl -s -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' -X POST "$U$ep")
  is "$code $(tr -d '\r' <"$TMP/h" | sed -n 's/^Allow: //Ip') $(jq -r .code "$TMP/b")" "405 GET, HEAD ISA405" "POST $ep: 405, Allow: GET, HEAD"
done

# --- /openapi.json
curl -s -o "$TMP/openapi.json" "$U/openapi.json"
ok "/openapi.json is valid JSON" jq empty "$TMP/openapi.json"
is "$(jq -r .openapi "$TMP/openapi.json")" 3.0.3 "openapi: 3.0.3"
is "$(jq '[.paths[] | to_entries[] | select(.key | IN("get", "put", "post", "delete", "patch", "head", "options", "trace"))] | length' "$TMP/openapi.json")" \
   "$(sql "SELECT count(*) FROM isa.http_routes")" "one operation per row of isa.http_routes"
is "$(jq -r '.paths | to_entries[] | .key as $p | .value | keys[] | ascii_upcase + " " + $p' "$TMP/openapi.json" | LC_ALL=C sort)" \
   "$(sql "SELECT method || ' ' || path FROM isa.http_routes" | LC_ALL=C sort)" "and they are the routes' methods and paths"
is "$(jq -c '[.components.securitySchemes.user, .components.securitySchemes.device] | map({type, scheme, bearerFormat})' "$TMP/openapi.json")" \
   '[{"type":"http","scheme":"bearer","bearerFormat":"JWT"},{"type":"http","scheme":"bearer","bearerFormat":"JWT"}]' \
   "security schemes: user and device bearer JWT"
is "$(jq -r '[.. | objects | select(has("security")) | .security[]? | keys[]] | unique | .[]' "$TMP/openapi.json" |
      while read -r s; do jq -e --arg s "$s" '.components.securitySchemes[$s]' "$TMP/openapi.json" >/dev/null || echo "$s"; done)" "" \
   "every security requirement names a defined scheme"
is "$(jq -r '[.. | objects | select(has("$ref")) | .["$ref"]] | unique | .[]' "$TMP/openapi.json" |
      while read -r ref; do jq -e --arg p "${ref#\#/}" 'getpath($p | split("/")) != null' "$TMP/openapi.json" >/dev/null || echo "$ref"; done)" "" \
   "every \$ref resolves"
is "$(jq -r '[.paths[][] | .operationId] | group_by(.) | map(select(length > 1) | .[0]) | .[]' "$TMP/openapi.json")" "" \
   "operationIds are unique (OpenAPI requires it)"
# the success status of each operation is what the server answers: 204 for a void function
want=$(sql "SELECT lower(r.method) || ' ' || r.path || ' ' || CASE WHEN p.prorettype = 'void'::regtype THEN 204 ELSE r.status END
              FROM isa.http_routes r JOIN pg_proc p ON p.oid = r.function" | LC_ALL=C sort)
got=$(jq -r '.paths | to_entries[] | .key as $p | .value | to_entries[] | "\(.key) \($p) \(.value.responses | keys | map(select(. != "default")) | join(","))"' \
        "$TMP/openapi.json" | LC_ALL=C sort)
is "$(diff <(echo "$want") <(echo "$got") | sed -n 's/^> //p')" "" "each operation's success status is the one the server answers (204 for void functions)"
want=$(sql "SELECT lower(method) || ' ' || path || ' ' || CASE auth WHEN 'public' THEN 'none' WHEN 'device' THEN 'device' ELSE 'user' END
              FROM isa.http_routes" | LC_ALL=C sort)
got=$(jq -r '.paths | to_entries[] | .key as $p | .value | to_entries[] | "\(.key) \($p) \(.value.security | if length == 0 then "none" else (.[0] | keys[0]) end)"' \
        "$TMP/openapi.json" | LC_ALL=C sort)
is "$(diff <(echo "$want") <(echo "$got") | sed -n 's/^> //p')" "" "each operation's security is the route's auth"
is "$(jq -r '.paths | to_entries[] | .key as $p | .value | to_entries[] | . as $op
             | ($p | [scan("\\{([a-z_][a-z0-9_]*)\\}")[0]]) as $want
             | ([$op.value.parameters[] | select(.in == "path" and .required == true) | .name]) as $got
             | select(($want | sort) != ($got | sort)) | "\($op.key) \($p)"' "$TMP/openapi.json")" "" \
   "every {name} of a path is a required path parameter, and only those"
is "$(jq -c '[.paths["/webhooks/stripe"].post.parameters[] | select(.in == "header") | {name: (.name | ascii_downcase), required}]' "$TMP/openapi.json")" \
   '[{"name":"stripe-signature","required":true}]' "the webhook's Stripe-Signature header is a documented (required) header parameter"
if python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  ok "openapi-spec-validator accepts /openapi.json" \
     python3 -c '
import json, sys
from openapi_spec_validator import validate
try:
    validate(json.load(open(sys.argv[1])))
except Exception as e:
    sys.exit(f"{type(e).__name__}: {str(e)[:300]}")' "$TMP/openapi.json"
else
  echo "# openapi-spec-validator is not installed: the structural checks above only"
fi
is "$(jq -r '.servers[0].url' "$TMP/openapi.json")" "$U" "servers: the public URL isa-httpd was given"

done_testing
