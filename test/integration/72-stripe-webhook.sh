# Stripe webhooks end to end, through the real bridge: a card order is paid
# by a payment_intent.succeeded webhook signed with Stripe's scheme by an
# independent implementation (Node's crypto, not isa's), payment.completed
# reaches the order service (fulfilled) and the wallet (credited with the
# order's tokens exactly once), also when Stripe delivers the webhook twice at
# once or sends the same PaymentIntent again under a new event id; badly
# signed, tampered, stale and future webhooks change nothing; a failed payment
# cancels its order; a refund takes the tokens back.
source "$(dirname "$0")/lib.sh"

run="$$$(date +%s)"
SECRET="whsec_it${run}$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

source "$(dirname "$0")/stripelib.sh"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"

# --- the endpoint secret, as an operator sets it (reset when the test ends)
set_webhook_secret

# --- a user with a wallet (opened by wallet's user.created handler) and a card order
uid=$(sql "SELECT (account.create_user('it-stripe-$run@example.com', 'Stripe Webhook')).user_id")
is "$(wait_for "SELECT wallet.get_balance('$uid')" 0 20)" 0 "the new user's wallet is opened through the bridge, empty"
intent="pi_it${run}a"
read -r order pay < <(sql "SELECT order_id || ' ' || payment_id FROM orders.create_order('$uid', 1999, 'usd', 'card', 'it-$run-a', 500, '$intent')")
is "$(sql "SELECT status FROM orders.get_order('$order')")" pending "a card order for 500 tokens is pending"

obj=$(jq -nc --arg pi "$intent" '{id: $pi, object: "payment_intent", amount: 1999, amount_received: 1999, currency: "usd", status: "succeeded"}')
body=$(event_body "evt_it_${run}_paid" payment_intent.succeeded "$obj")
t=$(date +%s)

# --- refused: nothing happens
is "$(webhook "$body" "t=$t,v1=$(sign "$t" "$body" "whsec_notTheEndpointSecret")")" "error 22023" \
   "a webhook signed with another secret is refused (22023: the front answers 400)"
is "$(webhook "${body/1999,/1990,}" "t=$t,v1=$(sign "$t" "$body")")" "error 22023" \
   "a tampered body (amount changed after signing) is refused"
# date +%s is whole seconds and the call takes a moment: 301 s in the past is
# always too old, but a future timestamp needs a margin (test/pgtap/payment/payment.sql
# checks both at exactly 301 s, on the transaction's clock).
t=$(date +%s)
is "$(webhook "$body" "t=$((t - 301)),v1=$(sign "$((t - 301))" "$body")")" "error 22023" \
   "a correctly signed webhook 301 s old is refused (replay)"
t=$(date +%s)
is "$(webhook "$body" "t=$((t + 305)),v1=$(sign "$((t + 305))" "$body")")" "error 22023" \
   "a correctly signed webhook 305 s in the future is refused"
is "$(webhook "$body" "v1=$(sign "$t" "$body")")" "error 22023" "a header without t= is refused"
sleep 1
is "$(sql "SELECT (SELECT status FROM payment.get_payment('$pay')) || ' ' || (SELECT status FROM orders.get_order('$order'))
                  || ' ' || wallet.get_balance('$uid') || ' ' || (SELECT count(*) FROM payment.stripe_events WHERE event_id LIKE 'evt_it_${run}_%')")" \
   "pending pending 0 0" "after the refused webhooks the payment and order are pending, the wallet empty, no event recorded"

# --- accepted: Stripe delivers the same event twice at once
t=$(date +%s)
header="t=$t,v1=$(sign "$t" "$body")"
webhook "$body" "$header" >"$ISA_STACK_DIR/it72.a" & pa=$!
webhook "$body" "$header" >"$ISA_STACK_DIR/it72.b" & pb=$!
wait $pa $pb
is "$(for f in a b; do echo "$(status_of "$(cat "$ISA_STACK_DIR/it72.$f")")"; done | sort | paste -sd ' ')" "duplicate processed" \
   "the same webhook delivered twice at once: one is processed, the other is a duplicate"
rm -f "$ISA_STACK_DIR"/it72.[ab]
is "$(wait_for "SELECT status FROM orders.get_order('$order')" fulfilled 20)" fulfilled \
   "payment.completed reached the order service through NATS: the order is fulfilled"
is "$(wait_for "SELECT wallet.get_balance('$uid')" 500 20)" 500 "and the wallet is credited with the order's 500 tokens"

is "$(status_of "$(webhook "$body" "$header")")" duplicate "delivered once more later: a duplicate"
body2=$(event_body "evt_it_${run}_paid_again" payment_intent.succeeded "$obj")
t2=$(date +%s)
is "$(status_of "$(webhook "$body2" "t=$t2,v1=$(sign "$t2" "$body2" whsec_rolledOldSecret),v1=$(sign "$t2" "$body2")")")" \
   "ignored already_succeeded" \
   "the same PaymentIntent under a new event id (two v1 signatures, one valid) is accepted and ignored"
sleep 2
is "$(sql "SELECT wallet.get_balance('$uid')")" 500 "the wallet still holds 500: credited exactly once"
is "$(sql "SELECT (SELECT count(*) FROM payment.outbox WHERE event_type = 'payment.completed' AND data ->> 'payment_id' = '$pay')
                  || ' ' || (SELECT count(*) FROM orders.outbox WHERE event_type = 'order.fulfilled' AND data ->> 'order_id' = '$order')
                  || ' ' || (SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.added' AND data ->> 'user_id' = '$uid')")" \
   "1 1 1" "one payment.completed, one order.fulfilled, one wallet.tokens.added"
is "$(sql "SELECT string_agg(event_id || ':' || outcome, ' ' ORDER BY event_id) FROM payment.stripe_events WHERE event_id LIKE 'evt_it_${run}_%'")" \
   "evt_it_${run}_paid:processed evt_it_${run}_paid_again:ignored" "payment.stripe_events holds each Stripe event once, with its outcome"

# --- a failed payment cancels its order
intent_b="pi_it${run}b"
order_b=$(sql "SELECT order_id FROM orders.create_order('$uid', 999, 'usd', 'card', 'it-$run-b', 200, '$intent_b')")
body=$(event_body "evt_it_${run}_declined" payment_intent.payment_failed \
       "$(jq -nc --arg pi "$intent_b" '{id: $pi, object: "payment_intent", amount: 999, currency: "usd", status: "requires_payment_method",
                                        last_payment_error: {code: "card_declined", message: "Your card was declined."}}')")
t=$(date +%s)
is "$(status_of "$(webhook "$body" "t=$t,v1=$(sign "$t" "$body")")")" processed "payment_intent.payment_failed is processed"
is "$(wait_for "SELECT status || ': ' || cancel_reason FROM orders.get_order('$order_b')" "canceled: payment_failed: Your card was declined." 20)" \
   "canceled: payment_failed: Your card was declined." "payment.failed reached the order service: the order is canceled with Stripe's reason"

# --- a full refund takes the tokens back
body=$(event_body "evt_it_${run}_refund" charge.refunded \
       "$(jq -nc --arg pi "$intent" '{id: "ch_it", object: "charge", payment_intent: $pi, amount: 1999, amount_refunded: 1999, currency: "usd", refunded: true}')")
t=$(date +%s)
is "$(status_of "$(webhook "$body" "t=$t,v1=$(sign "$t" "$body")")")" processed "charge.refunded is processed"
is "$(sql "SELECT status FROM payment.get_payment('$pay')")" refunded "the payment is refunded"
is "$(wait_for "SELECT wallet.get_balance('$uid')" 0 20)" 0 "payment.refunded reached the wallet: the 500 tokens are taken back"
is "$(wait_for "SELECT status || ' ' || amount_refunded FROM orders.get_order('$order')" "refunded 1999" 20)" "refunded 1999" \
   "payment.refunded reached the order service: the order is refunded"

# --- without a secret every webhook is refused (empty, not reset: a stack has a development secret)
sql "ALTER SYSTEM SET isa.stripe_webhook_secret = ''" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT current_setting('isa.stripe_webhook_secret') = ''" t 10 >/dev/null
is "$(webhook "$body" "t=$t,v1=$(sign "$t" "$body")")" "error 55000" "with the secret reset, webhooks are refused (55000)"
# At a reload the postmaster logs every changed parameter with its value;
# isa's log hook (extension/isa.c) hides the value of its hidden settings.
log="$ISA_PGDATA/../postgresql.log"
is "$(test -r "$log" && grep -c -F "$SECRET" "$log")" 0 "no line of the server log carries the secret"
is "$(test -r "$log" && grep -c -F 'parameter "isa.stripe_webhook_secret" changed (value hidden)' "$log" | awk '{print ($1 >= 1)}')" 1 \
   "the reload that set it is logged without the value"

done_testing
