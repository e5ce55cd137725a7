# Stripe webhooks over HTTP: POST /webhooks/stripe on isa-httpd, sent with
# curl, the body byte for byte as Stripe sends it (pretty-printed, non-ASCII)
# and signed the Stripe way by openssl (t=…,v1=hex HMAC-SHA256 of "t.body"
# with the endpoint secret).  A payment_intent.succeeded completes the card
# payment, payment.completed is on NATS (read by test/natsclient, not isa
# code), the order is fulfilled and the wallet credited once; the same event
# again is a 200 duplicate that changes nothing; a bad signature, a tampered
# body, a stale or future timestamp are 400 (22023) and change nothing; an
# unknown event type is a 200 "ignored".  72-stripe-webhook.sh covers the
# same in SQL; this is the HTTP front's part.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in the test stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d)
run="$$$(date +%s)"
SECRET="whsec_it83${run}$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

trap 'sql "ALTER SYSTEM RESET isa.stripe_webhook_secret" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null; rm -rf "$TMP"' EXIT
sql "ALTER SYSTEM SET isa.stripe_webhook_secret = '$SECRET'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT current_setting('isa.stripe_webhook_secret') = '$SECRET'" t 10)" t "the endpoint secret is set (ALTER SYSTEM, reload)"
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"

# sign FILE T [SECRET]: Stripe's v1, hex(HMAC-SHA256(secret, "<t>.<body bytes>")), by openssl
sign() { { printf '%s.' "$2"; cat "$1"; } | openssl dgst -sha256 -hmac "${3:-$SECRET}" -hex | sed 's/^.*= *//'; }
# event FILE EVENT_ID TYPE OBJECT_JSON: the body as Stripe sends it
event() {
  jq -n --arg id "$2" --arg type "$3" --argjson obj "$4" --argjson created "$(date +%s)" \
    '{id: $id, object: "event", api_version: "2024-06-20", created: $created, livemode: false, type: $type,
      data: {object: ($obj + {description: "Café ☕ crédits — frame"})}}' >"$1"
}
# post FILE SIGNATURE_HEADER: "STATUS BODY" of POST /webhooks/stripe
post() {
  local code answer
  answer=$(mktemp -p "$TMP")
  code=$(curl -s -o "$answer" -w '%{http_code}' -X POST "$U/webhooks/stripe" \
    -H 'Content-Type: application/json; charset=utf-8' -H "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)" \
    ${2:+-H "Stripe-Signature: $2"} --data-binary @"$1")
  printf '%s %s' "$code" "$(jq -c . "$answer" 2>/dev/null || cat "$answer")"
}
status_of() { jq -r '.status + (if .reason then " " + .reason else "" end)' <<<"${1#* }" 2>/dev/null; }
code_of() { printf '%s %s' "${1%% *}" "$(jq -r .code <<<"${1#* }" 2>/dev/null)"; }

# --- a user (signed up and logged in over HTTP), their wallet, a card order for 500 tokens
email="it83-${run}@example.com"
uid=$(curl -s -X POST "$U/v1/auth/signup" -H 'Content-Type: application/json' \
        -d "{\"email\": \"$email\", \"name\": \"IT83\", \"password\": \"it83-password-$run\"}" | jq -r .user_id)
like "$uid" '^[0-9a-f-]{36}$' "a user signs up over HTTP"
token=$(curl -s -X POST "$U/v1/auth/login" -H 'Content-Type: application/json' \
          -d "{\"email\": \"$email\", \"password\": \"it83-password-$run\"}" | jq -r .access_token)
auth=(-H "Authorization: Bearer $token")
balance() { curl -s "${auth[@]}" "$U/v1/wallets/$uid/balance"; }
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "their wallet is opened (user.created through NATS)"
is "$(balance)" 0 "GET /v1/wallets/{user_id}/balance: 0"
intent="pi_it83${run}a"
read -r order pay < <(sql "SELECT order_id || ' ' || payment_id FROM orders.create_order('$uid', 1999, 'usd', 'card', 'it83-$run-a', 500, '$intent')")
is "$(curl -s "${auth[@]}" "$U/v1/me/payments/$pay" | jq -r .status)" pending "the card order's payment is pending (GET /v1/me/payments/{payment_id})"

obj=$(jq -nc --arg pi "$intent" '{id: $pi, object: "payment_intent", amount: 1999, amount_received: 1999, currency: "usd", status: "succeeded"}')
event "$TMP/paid.json" "evt_it83_${run}_paid" payment_intent.succeeded "$obj"

# --- refused: 400 with code 22023, nothing recorded
t=$(date +%s)
r=$(post "$TMP/paid.json" "t=$t,v1=$(sign "$TMP/paid.json" "$t" whsec_notTheEndpointSecret)")
is "$(code_of "$r")" "400 22023" "signed with another secret: 400, code 22023"
like "${r#* }" '^\{"code":"22023","message":"Stripe-Signature does not match[^"]*","details":null,"hint":"[^"]+"\}$' \
  "the error body is {code, message, details, hint}"
[[ $r == *"$SECRET"* ]] && leaked=yes || leaked=no
is "$leaked" no "and does not carry the secret"
sed 's/1999,/1990,/' "$TMP/paid.json" >"$TMP/tampered.json"
is "$(code_of "$(post "$TMP/tampered.json" "t=$t,v1=$(sign "$TMP/paid.json" "$t")")")" "400 22023" \
  "a tampered body (amount changed after signing): 400 22023"
t=$(date +%s); old=$((t - 301))
r=$(post "$TMP/paid.json" "t=$old,v1=$(sign "$TMP/paid.json" "$old")")
is "$(code_of "$r")" "400 22023" "a correctly signed webhook 301 s old (a replay): 400 22023"
like "$r" 'too old' "the message says the timestamp is too old"
t=$(date +%s); future=$((t + 305))
is "$(code_of "$(post "$TMP/paid.json" "t=$future,v1=$(sign "$TMP/paid.json" "$future")")")" "400 22023" \
  "a timestamp 305 s in the future: 400 22023"
r=$(post "$TMP/paid.json" "")
like "${r%% *} $(jq -r .message <<<"${r#* }")" '^400 .*([Ss]ignature)' "no Stripe-Signature header: 400, naming the missing signature"
is "$(code_of "$(post "$TMP/paid.json" "v1=$(sign "$TMP/paid.json" "$t")")")" "400 22023" "a header without t=: 400 22023"
is "$(sql "SELECT count(*) FROM payment.stripe_events WHERE event_id LIKE 'evt_it83_${run}_%'")
$(curl -s "${auth[@]}" "$U/v1/me/payments/$pay" | jq -r .status) $(balance)" "0
pending 0" "after the refused webhooks: no event recorded, the payment pending, the wallet empty"

# --- accepted
t=$(date +%s)
r=$(post "$TMP/paid.json" "t=$t,v1=$(sign "$TMP/paid.json" "$t")")
is "${r%% *} $(status_of "$r")" "200 processed" "payment_intent.succeeded, correctly signed: 200 processed"
is "$(jq -r '.event_id + " " + .type' <<<"${r#* }")" "evt_it83_${run}_paid payment_intent.succeeded" "the answer names the event and its type"
is "$(curl -s "${auth[@]}" "$U/v1/me/payments/$pay" | jq -r .status)" succeeded "the payment is completed (succeeded)"
is "$(wait_for "SELECT count(*) FROM payment.outbox WHERE event_type = 'payment.completed' AND data->>'payment_id' = '$pay' AND published_at IS NOT NULL" 1 20)" 1 \
  "payment.completed is published"
total=$($NATS count 'payment_service.payment.completed' | cut -d' ' -f1)
$NATS sub 'payment_service.payment.completed' --count "$total" --timeout-ms 20000 >"$TMP/completed.jsonl"
is "$(jq -r --arg p "$pay" 'select(.data.data.payment_id == $p) | [.data.data.stripe_event_id, .data.data.tokens, .data.data.order_id] | join(" ")' "$TMP/completed.jsonl")" \
  "evt_it83_${run}_paid 500 $order" "payment.completed is on NATS (an independent client reads it): the Stripe event, 500 tokens, the order"
for _ in $(seq 200); do [ "$(curl -s "${auth[@]}" "$U/v1/me/orders/$order" | jq -r .status)" = fulfilled ] && break; sleep 0.1; done
is "$(curl -s "${auth[@]}" "$U/v1/me/orders/$order" | jq -r .status)" fulfilled "the order is fulfilled (GET /v1/me/orders/{order_id})"
for _ in $(seq 200); do [ "$(balance)" = 500 ] && break; sleep 0.1; done
is "$(balance)" 500 "the wallet is credited with the order's 500 tokens"

# --- the same event again: a 200 duplicate, nothing applied twice
t=$(date +%s)
r=$(post "$TMP/paid.json" "t=$t,v1=$(sign "$TMP/paid.json" "$t")")
is "${r%% *} $(status_of "$r")" "200 duplicate" "the same event delivered again: 200 duplicate"
sleep 2
is "$(balance)" 500 "the wallet still holds 500"
is "$(sql "SELECT (SELECT count(*) FROM payment.outbox WHERE event_type = 'payment.completed' AND data->>'payment_id' = '$pay')
          || ' ' || (SELECT count(*) FROM orders.outbox WHERE event_type = 'order.fulfilled' AND data->>'order_id' = '$order')
          || ' ' || (SELECT count(*) FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id) WHERE w.user_id = '$uid')")" \
  "1 1 1" "one payment.completed, one order.fulfilled, one ledger row"
total=$($NATS count 'payment_service.payment.completed' | cut -d' ' -f1)
is "$($NATS sub 'payment_service.payment.completed' --count "$total" --timeout-ms 20000 | jq -r --arg p "$pay" 'select(.data.data.payment_id == $p) | .seq' | wc -l)" 1 \
  "and one payment.completed on NATS"

# --- the same PaymentIntent under a new event id, and two deliveries at once
event "$TMP/again.json" "evt_it83_${run}_again" payment_intent.succeeded "$obj"
t=$(date +%s)
is "$(status_of "$(post "$TMP/again.json" "t=$t,v1=$(sign "$TMP/again.json" "$t")")")" "ignored already_succeeded" \
  "the same PaymentIntent under a new event id: 200, ignored (already succeeded)"
intent_b="pi_it83${run}b"
order_b=$(sql "SELECT order_id FROM orders.create_order('$uid', 999, 'usd', 'card', 'it83-$run-b', 200, '$intent_b')")
event "$TMP/paid_b.json" "evt_it83_${run}_paid_b" payment_intent.succeeded \
  "$(jq -nc --arg pi "$intent_b" '{id: $pi, object: "payment_intent", amount: 999, currency: "usd", status: "succeeded"}')"
t=$(date +%s); h="t=$t,v1=$(sign "$TMP/paid_b.json" "$t")"
post "$TMP/paid_b.json" "$h" >"$TMP/c1" & p1=$!
post "$TMP/paid_b.json" "$h" >"$TMP/c2" & p2=$!
wait $p1 $p2
is "$(for f in c1 c2; do r=$(cat "$TMP/$f"); echo "${r%% *} $(status_of "$r")"; done | sort | paste -sd ' ')" \
  "200 duplicate 200 processed" "one event delivered twice at once: both 200, one processed, one duplicate"
for _ in $(seq 200); do [ "$(balance)" = 700 ] && break; sleep 0.1; done
is "$(balance)" 700 "that order's 200 tokens are credited once: 700"
is "$(wait_for "SELECT status FROM orders.get_order('$order_b')" fulfilled 20)" fulfilled "and its order fulfilled"

# --- an event type isa does not handle: 200, ignored, recorded
event "$TMP/other.json" "evt_it83_${run}_other" customer.created '{"id": "cus_it83", "object": "customer"}'
t=$(date +%s)
r=$(post "$TMP/other.json" "t=$t,v1=$(sign "$TMP/other.json" "$t")")
is "${r%% *} $(status_of "$r")" "200 ignored unhandled_type" "an unknown event type (customer.created): 200, ignored"
is "$(sql "SELECT type || ' ' || outcome FROM payment.stripe_events WHERE event_id = 'evt_it83_${run}_other'")" \
  "customer.created ignored" "it is recorded once as ignored"
is "$(balance)" 700 "the wallet is unchanged"
is "$(sql "SELECT string_agg(event_id || ':' || outcome, ' ' ORDER BY event_id) FROM payment.stripe_events WHERE event_id LIKE 'evt_it83_${run}_%'")" \
  "evt_it83_${run}_again:ignored evt_it83_${run}_other:ignored evt_it83_${run}_paid:processed evt_it83_${run}_paid_b:processed" \
  "payment.stripe_events: each accepted event once, with its outcome"

# --- without an endpoint secret every webhook is refused with a 5xx (Stripe retries);
# empty, not reset: a stack has a development secret (tools/stack.sh)
sql "ALTER SYSTEM SET isa.stripe_webhook_secret = ''" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT current_setting('isa.stripe_webhook_secret', true) = ''" t 10 >/dev/null
event "$TMP/late.json" "evt_it83_${run}_late" customer.created '{"id": "cus_it83", "object": "customer"}'
t=$(date +%s)
r=$(post "$TMP/late.json" "t=$t,v1=$(sign "$TMP/late.json" "$t")")
like "$(code_of "$r")" '^5[0-9][0-9] 55000$' "with the secret reset: a 5xx with code 55000 (not configured)"
is "$(sql "SELECT count(*) FROM payment.stripe_events WHERE event_id = 'evt_it83_${run}_late'")" 0 "and nothing recorded"

done_testing
