# The money chain through real NATS: a usage event published by a NATS client
# (test/natsclient, not isa code) → billing.calculated → wallet.tokens.deducted
# (or .insufficient), wallet.balance.low when the balance crosses the user's
# threshold, all with the usage event's correlation id; a usage delivered twice
# under two envelope ids is billed once; bad usage becomes billing.error, never
# a retry loop or a dead letter.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
MODEL="it-chain-model-$$"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(wait_for "SELECT subscriptions >= (SELECT count(*) FROM isa.subscriptions) FROM isa.bridge_status()" t 20)" t \
   "every subscription (billing's and wallet's among them) has its consumer"

# prices: 0.002 tokens per input token, 0.004 per output token
sql "SELECT product.set_price((product.create_product('model_input_tokens', '$MODEL', 'input of $MODEL', 'test')).product_id,
                              'per_unit', 0.002, effective_from => now() - interval '1 day');
     SELECT product.set_price((product.create_product('model_output_tokens', '$MODEL', 'output of $MODEL', 'test')).product_id,
                              'per_unit', 0.004, effective_from => now() - interval '1 day');" >/dev/null
uid=$(sql "SELECT user_id FROM account.create_user('chain-$$@example.com', 'Chain Tester')")
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 \
   "user.created reached wallet through NATS: the user has a wallet"
sql "SELECT wallet.add('$uid', 1000, 'it-chain-seed-$$', 'manual');
     SELECT wallet.set_low_balance_threshold('$uid', 500);" >/dev/null

# usage N: publishes one external.usage.recorded.model event; prints its envelope id
usage() { # USAGE_ID INPUT OUTPUT CORRELATION [USER] [MODEL]
  $NATS pub-events usage.recorded.model --correlation-id "$4" --ids-file "$TMP/id" \
    --data-template "{\"usage_id\": \"$1\", \"user_id\": \"${5:-$uid}\", \"model\": \"${6:-$MODEL}\",
                      \"input_tokens\": $2, \"output_tokens\": $3}" >/dev/null && cat "$TMP/id"
}
by_corr() { # OUTBOX EVENT_TYPE CORRELATION JQ-ish SQL expression over data
  sql "SELECT $4 FROM $1 WHERE event_type = '$2' AND metadata->>'correlation_id' = '$3'"
}

# 1: 100000 in + 25000 out = 200 + 100 = 300 tokens; balance 1000 → 700
e1=$(usage "u-$$-1" 100000 25000 "corr-$$-1")
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'" 700 20)" 700 "a 300-token usage is deducted: balance 1000 → 700"
is "$(by_corr billing.outbox billing.calculated "corr-$$-1" "(data->>'tokens') || ' ' || (data->>'usage_id') || ' ' || (metadata->>'causation_id')")" \
   "300 u-$$-1 $e1" "billing.calculated: 300 tokens for the usage id, caused by the usage event, same correlation id"
bc1=$(by_corr billing.outbox billing.calculated "corr-$$-1" id)
is "$(by_corr wallet.outbox wallet.tokens.deducted "corr-$$-1" "(data->>'amount') || ' ' || (data->>'balance_after') || ' ' || (metadata->>'causation_id')")" \
   "300 700 $bc1" "wallet.tokens.deducted: 300, balance 700, caused by billing.calculated, same correlation id"
is "$(by_corr wallet.outbox wallet.balance.low "corr-$$-1" "count(*)")" 0 "no balance.low while the balance stays above the threshold (500)"

# 2: the same again: 700 → 400 crosses 500
usage "u-$$-2" 100000 25000 "corr-$$-2" >/dev/null
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'" 400 20)" 400 "second usage: 700 → 400"
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.balance.low' AND metadata->>'correlation_id' = 'corr-$$-2'" 1 10)" 1 \
   "wallet.balance.low once the balance crosses the threshold, with the usage's correlation id"
is "$(by_corr wallet.outbox wallet.balance.low "corr-$$-2" "(data->>'balance') || ' ' || (data->>'threshold')")" "400 500" \
   "balance.low says the balance and the threshold"

# 2 again under a new envelope id: billed once
dup=$(usage "u-$$-2" 100000 25000 "corr-$$-2b")
is "$(wait_for "SELECT count(*) FROM billing.inbox WHERE event_id = '$dup'" 1 20)" 1 "the redelivered usage (new envelope id) was handled by billing"
is "$(sql "SELECT count(*) FROM billing.outbox WHERE event_type = 'billing.calculated' AND data->>'usage_id' = 'u-$$-2'")" 1 \
   "a usage id is billed once even under two envelope ids"
is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'")" 400 "and deducted once"

# 3: 600 tokens > 400: insufficient, nothing deducted
usage "u-$$-3" 300000 0 "corr-$$-3" >/dev/null
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE event_type = 'wallet.tokens.insufficient' AND metadata->>'correlation_id' = 'corr-$$-3'" 1 20)" 1 \
   "a usage the balance cannot cover: wallet.tokens.insufficient with the correlation id"
is "$(by_corr wallet.outbox wallet.tokens.insufficient "corr-$$-3" "(data->>'requested') || ' ' || (data->>'balance')")" "600 400" \
   "insufficient says what was asked and what there is"
is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'")" 400 "the balance is untouched"
is "$(sql "SELECT balance = (SELECT sum(amount) FROM wallet.transactions t WHERE t.wallet_id = w.wallet_id) FROM wallet.wallets w WHERE user_id = '$uid'")" t \
   "balance = sum of the ledger"

# bad usage: billing.error with a reason, at once, no dead letter
dl0=$(sql "SELECT count(*) FROM isa.dead_letters WHERE service = 'billing'")
usage "u-$$-4" 1000 0 "corr-$$-4" "$uid" "no-such-model-$$" >/dev/null
usage "u-$$-5" -5 0 "corr-$$-5" >/dev/null
usage "u-$$-6" 1000 0 "corr-$$-6" "$(sql "SELECT gen_random_uuid()")" >/dev/null
is "$(wait_for "SELECT string_agg(data->>'reason_code', ' ' ORDER BY metadata->>'correlation_id') FROM billing.outbox WHERE event_type = 'billing.error' AND metadata->>'correlation_id' IN ('corr-$$-4', 'corr-$$-5', 'corr-$$-6')" \
      "unknown_model invalid_quantity unknown_user" 20)" "unknown_model invalid_quantity unknown_user" \
   "unknown model, negative quantity, unknown user: billing.error with the reason, each once"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service = 'billing'")" "$dl0" "invalid usage is not retried into a dead letter"
is "$(sql "SELECT count(*) FROM billing.outbox WHERE event_type = 'billing.calculated' AND data->>'usage_id' IN ('u-$$-4', 'u-$$-5', 'u-$$-6')")" 0 \
   "and nothing is billed for it"

# the chain on the wire, read by the independent client
is "$(wait_for "SELECT count(*) FROM wallet.outbox WHERE metadata->>'correlation_id' LIKE 'corr-$$-%' AND published_at IS NULL" 0 20)" 0 \
   "the wallet's events of this test are published"
total=$($NATS count 'wallet_service.wallet.>' | cut -d' ' -f1)
wire=$($NATS sub 'wallet_service.wallet.>' --count "$total" --timeout-ms 20000 |
       jq -r --arg c "corr-$$-2" 'select(.data.metadata.correlation_id == $c) | .subject' | sort | tr '\n' ' ')
is "$wire" "wallet_service.wallet.balance.low wallet_service.wallet.tokens.deducted " \
   "on NATS: the deduction and the low-balance alert of usage 2 carry its correlation id"

done_testing
