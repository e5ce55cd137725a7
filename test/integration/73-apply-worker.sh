# Apply workers (isa.bridge_apply_groups; the test stack puts billing in one, the event store and the audit trail in another):
# billing's consumers run in their own process, the setting refuses malformed
# groups, and SIGKILLing that process twice in the middle of 20,000 usage
# events loses none and bills none twice.
source "$(dirname "$0")/lib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
MODEL="it-apply-model-$$"
N=20000

is "$(sql "SHOW isa.bridge_apply_groups")" "billing;event,audit" \
   "the test stack runs billing in an apply group, the two recorders in another"
is "$(wait_for "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity WHERE backend_type = 'isa bridge apply'" \
               "isa bridge apply 1,isa bridge apply 2" 20)" "isa bridge apply 1,isa bridge apply 2" \
   "two apply workers run beside the bridge, named by their group"
is "$(subs_running "" 20)" "$(subs_want)/$(subs_want)" "bridge and apply worker together run every subscription"

for bad in "billing;;wallet" "billing;billing" "billing,wallet;wallet" "a;b;c;d;e;f;g;h;i" "Bad Name!"; do
  is "$(sqlstate "ALTER SYSTEM SET isa.bridge_apply_groups = '$bad'")" 22023 "isa.bridge_apply_groups refuses '$bad'"
done
sql "ALTER SYSTEM RESET isa.bridge_apply_groups" >/dev/null

# --- kill the apply worker while it bills
sql "SELECT product.set_price((product.create_product('model_input_tokens', '$MODEL', 'in', 'test')).product_id, 'per_unit', 1,
                              effective_from => now() - interval '1 day');
     SELECT product.set_price((product.create_product('model_output_tokens', '$MODEL', 'out', 'test')).product_id, 'per_unit', 1,
                              effective_from => now() - interval '1 day');" >/dev/null
uid=$(sql "SELECT user_id FROM account.create_user('apply-$$@example.com', 'Apply Tester')")
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "a user with a wallet"
sql "SELECT wallet.add('$uid', 1000000, 'apply-seed-$$'); SELECT wallet.set_low_balance_threshold('$uid', 0)" >/dev/null

dl0=$(sql "SELECT count(*) FROM isa.dead_letters WHERE service IN ('billing', 'wallet')")
# The publisher runs in the background: billing keeps pace with it, so by the
# time a foreground publish returned there would be nothing left to interrupt.
$NATS pub-events usage.recorded.model --count "$N" --inflight 512 \
  --data-template "{\"usage_id\": \"ap-$$-{{i}}\", \"user_id\": \"$uid\", \"model\": \"$MODEL\", \"input_tokens\": 2, \"output_tokens\": 1}" >/dev/null &
pubpid=$!
billed() { sql "SELECT count(*) FROM billing.billing_records WHERE user_id = '$uid'" 2>/dev/null || echo 0; }
kills=0
for k in 1 2; do
  # wait until billing is under way, then kill its process
  for _ in $(seq 1 200); do b=$(billed); [ "$b" -gt $((k * N / 8)) ] && break; sleep 0.05; done
  pid=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'isa bridge apply 1'" 2>/dev/null)
  if [ -n "$pid" ] && [ "$(billed)" -lt "$N" ]; then kill -KILL "$pid" && kills=$((kills + 1)); fi
  sleep 1
  for _ in $(seq 1 300); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
done
wait "$pubpid"
is "$?" 0 "all $N usage events were published to JetStream"
is "$kills" 2 "the apply worker was SIGKILLed twice while billing"

is "$(wait_for "SELECT count(*) FROM billing.billing_records WHERE user_id = '$uid'" "$N" 120)" "$N" \
   "every usage is billed after the crashes"
is "$(wait_for "SELECT count(*) FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id) WHERE w.user_id = '$uid' AND t.reference_type = 'billing'" "$N" 120)" "$N" \
   "and deducted"
is "$(sql "SELECT count(*) || ' ' || count(DISTINCT data->>'usage_id') FROM billing.outbox WHERE event_type = 'billing.calculated' AND data->>'user_id' = '$uid'")" "$N $N" \
   "billing.calculated: exactly one per usage"
is "$(sql "SELECT balance FROM wallet.wallets WHERE user_id = '$uid'")" "$((1000000 - 3 * N))" \
   "the balance lost exactly 3 tokens per usage"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service IN ('billing', 'wallet')")" "$dl0" "and nothing was dead-lettered"
is "$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'isa bridge apply'" 2 20)" 2 \
   "the apply workers are back"

done_testing
