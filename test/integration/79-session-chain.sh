# The session service through real NATS, the bridge and HTTP
# (docs/services/session.md): a start refused for a wallet below
# isa.session_min_balance writes nothing (no session, no event, nothing on
# the stream); sessions started over HTTP belong to the caller's login; the
# user's messages over HTTP, the model's answer through SQL; logging out of
# one login (auth's HTTP logout) ends that login's sessions only, through
# user.logged_out and the bridge, with one session.ended carrying the
# totals; the model's usage event is the charge and session.ended charges
# nothing (one deduction, one billing record); another user reaches none of
# it; deleting the account ends the rest and erases the content.
source "$(dirname "$0")/lib.sh"
: "${ISA_HTTP_URL:?run me in a stack environment (tools/stack.sh NAME env)}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/httplib.sh"
run="$$$(date +%s)"
MODEL="it79-model-$run"

is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the bridge is connected to NATS"
is "$(subs_running)" "$(subs_want)/$(subs_want)" "every subscription (session's of user.logged_out and user.deleted among them) has its consumer"

# prices of the model: 0.002 tokens per input token, 0.004 per output token
sql "SELECT product.set_price((product.create_product('model_input_tokens', '$MODEL', 'input of $MODEL', 'test')).product_id,
                              'per_unit', 0.002, effective_from => now() - interval '1 day');
     SELECT product.set_price((product.create_product('model_output_tokens', '$MODEL', 'output of $MODEL', 'test')).product_id,
                              'per_unit', 0.004, effective_from => now() - interval '1 day');" >/dev/null

signup() { # WHO: prints the user id
  call POST /v1/auth/signup "${JSON[@]}" -d "{\"email\": \"it79-$1-$run@example.com\", \"name\": \"IT79 $1\", \"password\": \"it79-password-$run\"}"
  field user_id
}
login() { # WHO: prints "access refresh session_id"
  call POST /v1/auth/login "${JSON[@]}" -d "{\"email\": \"it79-$1-$run@example.com\", \"password\": \"it79-password-$run\"}"
  jq -r '"\(.access_token) \(.refresh_token) \(.session_id)"' <<<"$BODY"
}
alice=$(signup alice)
bob=$(signup bob)
read -r a1 r1 sid1 < <(login alice)
read -r a2 r2 sid2 < <(login alice)
read -r b1 _ _ < <(login bob)
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id IN ('$alice', '$bob')" 2 20)" 2 \
   "user.created reached wallet through NATS: alice and bob have (empty) wallets"

# ---------------------------------------------------------------- refused: the wallet is below the minimum
call POST /v1/sessions "${JSON[@]}" -H "$(auth "$a1")" -d "{\"model\": \"$MODEL\", \"idempotency_key\": \"it79-first-$run\"}"
is "$ST $(field code)" "400 23514" "alice's empty wallet (< isa.session_min_balance, 1 token): 400, code 23514"
like "$(field message)" "holds less than isa.session_min_balance" "the message says why"
is "$(sql "SELECT count(*) FROM session.sessions WHERE user_id = '$alice'")" 0 "no session row is written"
is "$(sql "SELECT count(*) FROM session.outbox WHERE data->>'user_id' = '$alice'")" 0 "and no event"

# ---------------------------------------------------------------- sessions in two logins
sql "SELECT wallet.add('$alice', 1000, 'it79-seed-$run', 'manual')" >/dev/null
call POST /v1/sessions "${JSON[@]}" -H "$(auth "$a1")" -d "{\"model\": \"$MODEL\", \"title\": \"Trip\", \"idempotency_key\": \"it79-first-$run\"}"
s1=$(field session_id)
is "$ST $(field status) $(field login_session_id)" "201 active $sid1" \
   "with 1000 tokens the start succeeds (201), the same key now: in the login of the token (sid)"
call POST /v1/sessions "${JSON[@]}" -H "$(auth "$a2")" -d '{"agent": "it79-agent"}'
s2=$(field session_id)
is "$ST $(field login_session_id)" "201 $sid2" "a session in alice's second login"
s3=$(sql "SELECT session_id FROM session.start_session('$alice', '$MODEL')")
is "$(sql "SELECT login_session_id IS NULL FROM session.sessions WHERE session_id = '$s3'")" t "one started through SQL, in no login"

# ---------------------------------------------------------------- messages
call POST "/v1/sessions/$s1/messages" "${JSON[@]}" -H "$(auth "$a1")" -d '{"content": "Plan a trip to Lisbon", "idempotency_key": "m1"}'
is "$ST $(field seq) $(field role)" "201 1 user" "alice's message over HTTP: 201, number 1, role user"
sql "SELECT session.add_message('$alice', '$s1', 'assistant', 'Three days in Lisbon: …', 100000, 25000)" >/dev/null
call GET "/v1/sessions/$s1/messages?row_limit=1" -H "$(auth "$a1")"
is "$ST $(jq -c '[.[] | .seq]' <<<"$BODY")" "200 [1]" "a page of one message"
call GET "/v1/sessions/$s1/messages?after_seq=1&row_limit=1" -H "$(auth "$a1")"
is "$(jq -r '.[0] | "\(.seq) \(.role) \(.input_tokens) \(.output_tokens)"' <<<"$BODY")" "2 assistant 100000 25000" \
   "the next page: the model's answer with its token counts"
call GET "/v1/sessions/$s1" -H "$(auth "$a1")"
is "$(jq -r '"\(.message_count) \(.input_tokens) \(.output_tokens)"' <<<"$BODY")" "2 100000 25000" "the session's totals"

# bob reaches none of it
call GET "/v1/sessions/$s1" -H "$(auth "$b1")"
is "$ST $(field code)" "404 P0002" "bob reading alice's session: 404, as an unknown one"
call POST "/v1/sessions/$s1/messages" "${JSON[@]}" -H "$(auth "$b1")" -d '{"content": "hi"}'
is "$ST" 404 "bob posting to it: 404"
call POST "/v1/sessions/$s1/end" -H "$(auth "$b1")"
is "$ST" 404 "bob ending it: 404"
call GET /v1/sessions -H "$(auth "$b1")"
is "$ST $BODY" "200 []" "bob lists no session"
call POST /v1/sessions "${JSON[@]}" -H "$(auth "$a1")" -d "{\"model\": \"$MODEL\", \"user_id\": \"$bob\"}"
is "$ST" 400 "the user cannot be given in the body: it is the token's"

# ---------------------------------------------------------------- the charge: the model's usage event, once
usage_corr="it79-corr-$run"
$NATS pub-events usage.recorded.model --correlation-id "$usage_corr" \
  --data-template "{\"usage_id\": \"it79-u-$run\", \"user_id\": \"$alice\", \"model\": \"$MODEL\", \"input_tokens\": 100000, \"output_tokens\": 25000}" >/dev/null
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$alice'" 700 20)" 700 \
   "the model's usage event (100000 in, 25000 out) is billed and deducted: 1000 → 700"

# ---------------------------------------------------------------- logout ends that login's sessions
call POST /v1/auth/logout "${JSON[@]}" -d "{\"refresh_token\": \"$r1\"}"
is "$ST $BODY" "200 true" "alice logs out of her first login (auth's HTTP logout)"
is "$(wait_for "SELECT status || ' ' || end_reason FROM session.sessions WHERE session_id = '$s1'" "ended logout" 20)" "ended logout" \
   "user.logged_out reached session through NATS: the login's session ended (reason logout)"
is "$(sql "SELECT string_agg(status, ' ' ORDER BY session_id) FROM session.sessions WHERE session_id IN ('$s2', '$s3')")" "active active" \
   "the sessions of the other login and of none stay active"
ended=$(sql "SELECT id FROM session.outbox WHERE event_type = 'session.ended' AND data->>'session_id' = '$s1'")
is "$(sql "SELECT count(*) || ' ' || min(data->>'reason') || ' ' || min(data->>'message_count') || ' ' || min(data->>'input_tokens') || ' ' || min(data->>'output_tokens')
            FROM session.outbox WHERE event_type = 'session.ended' AND data->>'session_id' = '$s1'")" "1 logout 2 100000 25000" \
   "one session.ended, with the totals: 2 messages, 100000 and 25000 tokens"
is "$(sql "SELECT metadata->>'causation_id' = (SELECT id::text FROM auth.outbox WHERE event_type = 'user.logged_out' AND data->>'session_id' = '$sid1')
            FROM session.outbox WHERE id = '$ended'")" t "caused by auth's user.logged_out of that login"
is "$(wait_for "SELECT published_at IS NOT NULL FROM session.outbox WHERE id = '$ended'" t 20)" t "the bridge publishes it"
total=$($NATS count 'session_service.session.ended' | cut -d' ' -f1)
is "$($NATS sub 'session_service.session.ended' --count "$total" --timeout-ms 20000 |
      jq -r --arg s "$s1" 'select(.data.data.session_id == $s) | "\(.data.data.reason) \(.data.data.input_tokens) \(.data.data.output_tokens)"')" \
   "logout 100000 25000" "on NATS: session.ended of that session once, with its totals"
call GET "/v1/sessions/$s1" -H "$(auth "$a2")"
is "$(field status) $(field end_reason)" "ended logout" "alice sees it ended from her other login"
call POST "/v1/sessions/$s1/messages" "${JSON[@]}" -H "$(auth "$a2")" -d '{"content": "more"}'
is "$ST $(field code)" "400 23514" "an ended session takes no message: 400, 23514"

# ---------------------------------------------------------------- session.ended charges nothing
# No subscription takes it (billing charges external.usage.recorded.>), and
# once it is on the stream a second usage event is billed after it: each
# usage once, nothing for the summary.
is "$(sql "SELECT count(*) FROM isa.subscriptions WHERE 'session_service.session.ended'
             ~ ('^' || replace(replace(replace(subject_filter, '.', '\.'), '*', '[^.]+'), '>', '.+') || '$')
             AND service NOT IN ('audit', 'event')")" 0 \
   "no subscription but the recorders' (audit, event) matches session_service.session.ended"
$NATS pub-events usage.recorded.model \
  --data-template "{\"usage_id\": \"it79-u2-$run\", \"user_id\": \"$alice\", \"model\": \"$MODEL\", \"input_tokens\": 50000, \"output_tokens\": 0}" >/dev/null
is "$(wait_for "SELECT balance FROM wallet.wallets WHERE user_id = '$alice'" 600 20)" 600 "a later usage event is billed: 700 → 600"
is "$(sql "SELECT count(*) FROM billing.billing_records WHERE user_id = '$alice'")" 2 "two billing records: one per usage event"
is "$(sql "SELECT string_agg(t.amount::text, ' ' ORDER BY t.transaction_id) FROM wallet.transactions t JOIN wallet.wallets w USING (wallet_id)
            WHERE w.user_id = '$alice'")" "1000 -300 -100" "the ledger: the credit and one deduction per usage, none for session.ended"
is "$(sql "SELECT count(*) FROM isa.inbox WHERE event_id = '$ended' AND service NOT IN ('audit', 'event')")" 0 \
   "no service but the recorders applied session.ended"

# ---------------------------------------------------------------- the user ends a session
call POST "/v1/sessions/$s2/end" -H "$(auth "$a2")"
is "$ST $(field status) $(field end_reason)" "200 ended user" "alice ends her agent session over HTTP"
call POST "/v1/sessions/$s2/end" -H "$(auth "$a2")"
is "$ST $(sql "SELECT count(*) FROM session.outbox WHERE event_type = 'session.ended' AND data->>'session_id' = '$s2'")" "200 1" \
   "ending it again: 200, still one session.ended"
call GET "/v1/sessions?status=active" -H "$(auth "$a2")"
is "$(jq -r '[.[] | .session_id] | join(" ")' <<<"$BODY")" "$s3" "her active sessions: the one of no login"

# ---------------------------------------------------------------- the account is deleted
call DELETE "/v1/accounts/$alice" -H "$(auth "$a2")"
is "$ST" 204 "alice deletes her account"
is "$(wait_for "SELECT status || ' ' || end_reason FROM session.sessions WHERE session_id = '$s3'" "ended user_deleted" 20)" "ended user_deleted" \
   "user.deleted reached session: her last session ended (reason user_deleted)"
is "$(wait_for "SELECT count(*) FROM session.messages m JOIN session.sessions s USING (session_id) WHERE s.user_id = '$alice' AND m.content IS NOT NULL" 0 20)" 0 \
   "the content of her messages is erased"
is "$(sql "SELECT count(*) || ' ' || sum(input_tokens) || ' ' || count(*) FILTER (WHERE title IS NULL AND erased_at IS NOT NULL)
            FROM session.sessions WHERE user_id = '$alice'")" "3 100000 3" \
   "her three sessions stay with their totals, titles erased"
is "$(sql "SELECT count(*) FROM isa.dead_letters WHERE service = 'session'")" 0 "no dead letter for the session service"

done_testing
