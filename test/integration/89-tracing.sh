# Tracing through the real stack (docs/tracing.md): an HTTP request's
# X-Request-Id (a UUID) and traceparent become the correlation id and trace id
# of the events its SQL call publishes and of those the handlers publish after
# them; a usage event from a NATS client (test/natsclient, not isa code) →
# billing.calculated → wallet.tokens.deducted keeps one trace id, and
# isa.trace(correlation id) shows the tree with billing's and wallet's hops and
# their latencies.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
run="$$$(date +%s)"
TP_TRACE=4bf92f3577b34da6a3ce929d0e0e4736
TP="00-$TP_TRACE-00f067aa0ba902b7-01"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(wait_for "SELECT subscriptions >= (SELECT count(*) FROM isa.subscriptions) FROM isa.bridge_status()" t 20)" t \
   "every subscription has its consumer"

# signup N [HEADER...]: POST /v1/auth/signup; the response headers in $TMP/h, the user id printed
signup() {
  local n=$1; shift
  curl -s -D "$TMP/h" -o "$TMP/body" -X POST "$U/v1/auth/signup" -H 'Content-Type: application/json' "$@" \
       -d "{\"email\": \"it89-$n-$run@example.com\", \"name\": \"IT89 $n\", \"password\": \"it89-password-$run\"}"
  jq -r .user_id "$TMP/body"
}
hdr() { tr -d '\r' <"$TMP/h" | sed -n "s/^$1: //Ip" | head -n 1; }
# meta USER_ID KEY: metadata.KEY of account's user.created of that user
meta() { sql "SELECT metadata->>'$2' FROM account.outbox WHERE event_type = 'user.created' AND data->>'user_id' = '$1'"; }

# --- an HTTP request with X-Request-Id and traceparent
rid=$(sql "SELECT gen_random_uuid()")
uid=$(signup 1 -H "X-Request-Id: $rid" -H "traceparent: $TP")
like "$uid" '^[0-9a-f-]{36}$' "POST /v1/auth/signup with X-Request-Id and traceparent creates the user"
is "$(hdr X-Request-Id)" "$rid" "the response echoes X-Request-Id"
is "$(meta "$uid" correlation_id)" "$rid" "user.created, published by the request's SQL call, has the request id as correlation id"
tp=$(meta "$uid" traceparent)
like "$tp" "^00-$TP_TRACE-[0-9a-f]{16}-01\$" "... and the request's trace id and flags in its traceparent"
isnt_span() { [ "${tp:36:16}" != 00f067aa0ba902b7 ]; }
ok "... with a span id of its own, not the caller's" isnt_span
# organization's handler of user.created publishes organization.created: the chain keeps both
is "$(wait_for "SELECT count(*) FROM organization.outbox WHERE event_type = 'organization.created' AND metadata->>'correlation_id' = '$rid'" 1 20)" 1 \
   "organization.created, published by a handler of user.created, keeps the request's correlation id"
like "$(sql "SELECT metadata->>'traceparent' FROM organization.outbox WHERE event_type = 'organization.created' AND metadata->>'correlation_id' = '$rid'")" \
   "^00-$TP_TRACE-[0-9a-f]{16}-01\$" "... and its trace id"

# --- without X-Request-Id: the generated one (a UUID) is the correlation id
uid2=$(signup 2)
gen=$(hdr X-Request-Id)
like "$gen" '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' "without X-Request-Id the response carries a generated UUID"
is "$(meta "$uid2" correlation_id)" "$gen" "... which is the correlation id of the request's events"
is "$(meta "$uid2" traceparent | cut -c1-36)" \
   "00-$(sql "SELECT replace(id::text, '-', '') FROM account.outbox WHERE event_type = 'user.created' AND data->>'user_id' = '$uid2'")-" \
   "... and without traceparent the event starts a trace of its own (its id)"

# --- an X-Request-Id that is not a UUID is echoed, never a correlation id
uid3=$(signup 3 -H "X-Request-Id: it89-$run" -H "traceparent: 00-not-a-traceparent")
is "$(hdr X-Request-Id)" "it89-$run" "a request id that is not a UUID is echoed too"
is "$(meta "$uid3" correlation_id)" "$(sql "SELECT id FROM account.outbox WHERE event_type = 'user.created' AND data->>'user_id' = '$uid3'")" \
   "... but the events correlate by their own id; a malformed traceparent is ignored"

# --- the usage chain: an outside usage event, billing, wallet
MODEL="it89-model-$run"
sql "SELECT product.set_price((product.create_product('model_input_tokens', '$MODEL', 'input of $MODEL', 'test')).product_id,
                              'per_unit', 0.002, effective_from => now() - interval '1 day');
     SELECT product.set_price((product.create_product('model_output_tokens', '$MODEL', 'output of $MODEL', 'test')).product_id,
                              'per_unit', 0.004, effective_from => now() - interval '1 day');" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "the user has a wallet"
sql "SELECT wallet.add('$uid', 1000, 'it89-seed-$run', 'manual')" >/dev/null
corr=$(sql "SELECT gen_random_uuid()")
$NATS pub-events usage.recorded.model --correlation-id "$corr" --ids-file "$TMP/id" \
  --data-template "{\"usage_id\": \"it89-$run\", \"user_id\": \"$uid\", \"model\": \"$MODEL\", \"input_tokens\": 100000, \"output_tokens\": 25000}" >/dev/null
usage=$(cat "$TMP/id")
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.deducted' AND metadata->>'correlation_id' = '$corr'" 1 20)" 1 \
   "the usage event was billed and deducted"

sql "SELECT t.depth, coalesce(t.service, '-'), t.event_type, t.trace_id, t.consumers FROM isa.trace('$corr') t" >"$TMP/trace"
# (wallet.balance.low and its notification may follow, depending on the default threshold)
is "$(cut -d'|' -f1-3 "$TMP/trace" | grep -E 'usage.recorded|billing.calculated|tokens.deducted' | tr '\n' ' ')" \
   "0|-|usage.recorded.model 1|billing_service|billing.calculated 2|wallet_service|wallet.tokens.deducted " \
   "isa.trace: the outside usage event (from billing's inbox), billing.calculated under it, wallet.tokens.deducted under that"
is "$(cut -d'|' -f4 "$TMP/trace" | sort -u)" "${usage//-/}" "one trace id throughout: the usage event's id (it came without traceparent)"
hops() { # the subscription services that consumed the event at DEPTH, with latency_ms >= 0
  sql "SELECT string_agg(c->>'service', ' ' ORDER BY c->>'service') FROM isa.trace('$corr') t, jsonb_array_elements(t.consumers) c
        WHERE t.depth = $1 AND (c->>'latency_ms')::numeric >= 0 AND (c->>'consumed_at')::timestamptz >= t.occurred_at"
}
like "$(hops 0)" '(^| )billing( |$)' "billing's hop: it consumed the usage event, with a non-negative latency"
like "$(hops 1)" '(^| )wallet( |$)' "wallet's hop: it consumed billing.calculated, with a non-negative latency"
is "$(sql "SELECT count(*) FROM isa.trace('$corr') t WHERE t.depth > 0 AND t.published_at IS NULL")" 0 \
   "the events isa published show their publication time"
is "$(sql "SET ROLE isa_compliance; SELECT count(*) FROM isa.trace('$corr') WHERE event_type <> 'wallet.balance.low' AND event_type NOT LIKE 'notification.%'")" 3 \
   "isa_compliance may read the tree"
is "$(sqlstate "SET ROLE isa_app; SELECT count(*) FROM isa.trace('$corr')")" 42501 "isa_app may not"
echo "# isa.trace('$corr'):"
sql "SELECT t.depth, coalesce(t.service, '-'), t.event_type, t.published_at,
            (SELECT string_agg(format('%s %s ms', c->>'service', c->>'latency_ms'), ', ') FROM jsonb_array_elements(t.consumers) c)
       FROM isa.trace('$corr') t" | sed 's/^/#   /'

done_testing
