# The seed's money edges between built services, through NATS and the bridge:
#   subscription.canceled → wallet: a subscription's periodic credits stop;
#   wallet.tokens.insufficient → billing: the record is unpaid, and a later
#     top-up (wallet.tokens.added) settles it, charged once;
#   order.fulfilled → storage: a file an order bought is shared with the buyer.
# (payment.refunded → order is in 72, with the refund webhook.)  Each event
# goes out through the publishing service's outbox and comes back through the
# subscriber's inbox; the jobs are called, not waited for.
source "$(dirname "$0")/lib.sh"

run="$$$(date +%s)"
SECRET="whsec_it${run}$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
source "$(dirname "$0")/stripelib.sh"
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
set_webhook_secret

uid=$(sql "SELECT (account.create_user('it-edges-$run@example.com', 'Money Edges')).user_id")
is "$(wait_for "SELECT wallet.get_balance('$uid')" 0 20)" 0 "the user's wallet is opened through the bridge"

# ---------------------------------------------------------------- subscription
sub=$(jq -nc --arg u "$uid" --arg id "sub_it${run}" \
  '{id: $id, object: "subscription", customer: "cus_it", status: "active", metadata: {user_id: $u, credits: "40", plan: "frame-pro"}}')
is "$(deliver "$(event_body "evt_it_${run}_sub" customer.subscription.created "$sub")")" processed \
   "customer.subscription.created is processed"
is "$(wait_for "SELECT wallet.get_balance('$uid')" 40 20)" 40 "subscription.created reached the wallet: the first period's 40 credits"
is "$(wait_for "SELECT count(*) FROM wallet.subscriptions WHERE user_id = '$uid' AND canceled_at IS NULL" 1 10)" 1 \
   "its periods begin"
# (the job credits every subscription of the database: the assertions are about this user's)
sql "SELECT wallet.credit_subscriptions(now() + interval '31 days')" >/dev/null
is "$(sql "SELECT periods_credited FROM wallet.subscriptions WHERE user_id = '$uid'")" 2 "a period later, the job credits it again"
is "$(sql "SELECT wallet.get_balance('$uid')")" 80 "80 tokens"
is "$(deliver "$(event_body "evt_it_${run}_unsub" customer.subscription.deleted "$sub")")" processed \
   "customer.subscription.deleted is processed"
is "$(wait_for "SELECT count(*) FROM wallet.subscriptions WHERE user_id = '$uid' AND canceled_at IS NOT NULL" 1 20)" 1 \
   "subscription.canceled reached the wallet"
sql "SELECT wallet.credit_subscriptions(now() + interval '400 days')" >/dev/null
is "$(sql "SELECT periods_credited FROM wallet.subscriptions WHERE user_id = '$uid'")" 2 "no period is credited after the cancellation"
is "$(sql "SELECT wallet.get_balance('$uid')")" 80 "the periods credited stay: 80 tokens"

# ---------------------------------------------------------------- an unpaid usage, settled by a top-up
MODEL="it-edges-model-$run"
sql "SELECT product.set_price((product.create_product(u, '$MODEL', u, 'test')).product_id, 'per_unit', 1,
                              effective_from => now() - interval '1 day')
       FROM unnest(ARRAY['model_input_tokens', 'model_output_tokens']) u" >/dev/null
$NATS pub-events usage.recorded.model --correlation-id "it-edges-$run" \
  --data-template "{\"usage_id\": \"it-edges-$run\", \"user_id\": \"$uid\", \"model\": \"$MODEL\",
                    \"input_tokens\": 100, \"output_tokens\": 20}" >/dev/null
rec="(SELECT r FROM billing.billing_records r WHERE usage_id = 'it-edges-$run')"
is "$(wait_for "SELECT (r).unpaid_at IS NOT NULL AND (r).settled_at IS NULL FROM $rec x (r)" t 20)" t \
   "a 120-token usage against 80 tokens: wallet.tokens.insufficient reached billing, the record is unpaid"
is "$(sql "SELECT wallet.get_balance('$uid')")" 80 "nothing was taken"
sql "SELECT wallet.add('$uid', 50, 'it-edges-topup-$run', 'manual')" >/dev/null
is "$(wait_for "SELECT (r).settled_at IS NOT NULL FROM $rec x (r)" t 20)" t \
   "a top-up of 50: wallet.tokens.added reached billing, which settles the record"
is "$(wait_for "SELECT wallet.get_balance('$uid')" 10 20)" 10 "80 + 50 - 120 = 10 tokens"
bid=$(sql "SELECT (r).billing_id FROM $rec x (r)")
is "$(sql "SELECT count(*) FROM wallet.transactions WHERE reference_type = 'billing' AND reference_id = '$bid'")" 1 \
   "one ledger row for the usage"
sql "SELECT wallet.add('$uid', 500, 'it-edges-topup2-$run', 'manual')" >/dev/null
is "$(wait_for "SELECT wallet.get_balance('$uid')" 510 20)" 510 "a second top-up charges nothing more: 510 tokens"

# ---------------------------------------------------------------- a file bought with an order
seller=$(sql "SELECT (account.create_user('it-edges-seller-$run@example.com', 'Seller')).user_id")
fid=$(sql "SELECT (storage.finish_upload(u)).file_id FROM (SELECT storage.begin_upload('$seller', 'print-$run.jpg', 'image/jpeg', 3) u) x,
             LATERAL storage.put_chunk(u, 0, '\\x010203'::bytea)")
sql "SELECT storage.offer_file('$seller', '$fid', 25)" >/dev/null
is "$(sql "SELECT storage.can_read('$uid', '$fid')")" f "the buyer cannot read the seller's file"
oid=$(sql "SELECT (orders.create_order('$uid', 25, 'tokens', 'wallet', 'it-edges-$run', 0, NULL,
                                       jsonb_build_array(jsonb_build_object('file_id', '$fid')))).order_id")
is "$(sql "SELECT status FROM orders.get_order('$oid')")" fulfilled "a wallet order naming the file is fulfilled"
is "$(wait_for "SELECT storage.can_read('$uid', '$fid')" t 20)" t "order.fulfilled reached storage: the buyer may read the file"
is "$(wait_for "SELECT count(*) FROM storage.outbox WHERE event_type = 'file.shared' AND data ->> 'resource_id' = '$fid'" 1 10)" 1 \
   "one file.shared, by the seller"
is "$(sql "SELECT wallet.get_balance('$uid')")" 485 "the file's 25 tokens left the wallet"
