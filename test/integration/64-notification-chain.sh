# The notification service's SQL side through NATS and the bridge
# (docs/services/notification.md): a user signs up and logs in over HTTP
# (auth's user.logged_in: "welcome back"), her frame listens over MQTT
# (mosquitto_sub with the device's own credential), a deduction crosses her
# wallet's low-balance threshold (wallet.balance.low through NATS): one
# in-app notification in her German, one notification.show on the frame's
# commands topic, one email that a real SMTP server (aiosmtpd, with
# test/integration/smtp_sink.py) receives; the same envelope published again
# (another NATS message) is applied once and notifies nobody again.  Email's
# and webhooks' retries, failures and fallbacks are test 65's.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ISA_MQTT_PORT:?run me in the stack environment (tools/stack.sh NAME env)}"
U=$ISA_HTTP_URL
STACK=$(basename "$ISA_STACK_DIR")
NATS="node $(dirname "$0")/../natsclient/isa-nats.mjs"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sql "ALTER SYSTEM RESET isa.smtp_url" >/dev/null 2>&1
  sql "ALTER SYSTEM RESET isa.smtp_from" >/dev/null 2>&1
  sql "SELECT pg_reload_conf()" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
source "$(dirname "$0")/httplib.sh"
command -v mosquitto_sub >/dev/null || { echo "mosquitto-clients is not installed (make deps)"; exit 1; }
dups() { sql "SELECT coalesce(sum(value), 0) FROM isa.metrics() WHERE metric = 'event_processed_total'
                AND labels->>'service' = 'notification' AND labels->>'status' = 'duplicate'"; }

run="$$$(date +%s)"
# an SMTP server a few ports above the stack's PostgreSQL (65 uses +10 and +11)
SMTP_PORT=${ISA_TEST_SMTP_PORT64:-$((PGPORT + 12))}
mkdir -p "$TMP/mail"
PYTHONPATH=$(dirname "$0") /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c smtp_sink.Sink "$TMP/mail" \
  >"$TMP/smtp.log" 2>&1 &
PIDS+=($!)
sql "ALTER SYSTEM SET isa.smtp_url = 'smtp://127.0.0.1:$SMTP_PORT'" >/dev/null
sql "ALTER SYSTEM SET isa.smtp_from = 'isa <noreply@isa.test>'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT current_setting('isa.smtp_url')" "smtp://127.0.0.1:$SMTP_PORT" 10)" "smtp://127.0.0.1:$SMTP_PORT" \
   "the email sender delivers to a local SMTP server (isa.smtp_url, ALTER SYSTEM and a reload)"
is "$(subs_running "" 30)" "$(subs_want)/$(subs_want)" "the bridge runs every subscription, notification's nine among them"

# ---------------------------------------------------------------- sign-up and login: welcome back
read -r uid tok < <(signup_login "it64-$run@example.com" "Zoë Müller")
ok "Zoë signed up and logged in over HTTP" test -n "$tok" -a "$tok" != null
is "$(wait_for "SELECT count(*) FROM notification.notifications WHERE user_id = '$uid' AND kind = 'auth.welcome_back'" 1 20)" 1 \
   "her login (auth's user.logged_in, through NATS) made one welcome-back notification"
call GET /v1/notifications -H "$(auth "$tok")"
is "$ST $(jq -r '.[0].title' <<<"$BODY")" "200 Welcome back, Zoë Müller" "GET /v1/notifications lists it (in-app, in English)"
call PATCH "/v1/accounts/$uid/notification-preferences" "${JSON[@]}" -H "$(auth "$tok")" -d '{"prefs": {"locale": "de"}}'
is "$ST $(field locale) $(field channels.mqtt)" "200 de true" "she prefers German (account's preferences); MQTT is on"
is "$(wait_for "SELECT count(*) FROM wallet.wallets WHERE user_id = '$uid'" 1 20)" 1 "her wallet was opened (user.created through NATS)"

# ---------------------------------------------------------------- her frame, listening over MQTT
read -r pub priv < <(ed_keypair)
dev=$(sql "SELECT device_id FROM device.register_device('$uid', 'IT64-$run', 'Frame', '\\x$pub'::bytea, 'Wohnzimmer')")
dtok=$(device_token "$dev" "$priv")
post /v1/device/nats-credentials '{}' "$dtok"
jwt=$(field jwt)
is "$ST $(field commands_topic)" "200 isa/devices/$dev/commands" "the frame has its NATS credential"
timeout 30 mosquitto_sub -h 127.0.0.1 -p "$ISA_MQTT_PORT" -i "it64-$dev" -u "$dev" -P "$jwt" -q 0 \
  -t "isa/devices/$dev/commands" -C 1 >"$TMP/cmd" 2>"$TMP/cmd.err" &
PIDS+=($!)
listening() { curl -s "$ISA_NATS_MONITOR/connz?subs=1&limit=10000" | jq -r --arg s "isa.devices.$dev.commands" \
                '[.connections[].subscriptions_list // [] | .[] | select(. == $s)] | length'; }
for ((i = 0; i < 100; i++)); do [ "$(listening)" -ge 1 ] 2>/dev/null && break; sleep 0.1; done
is "$(listening)" 1 "mosquitto_sub, as the frame, is subscribed to its commands topic"
post /v1/device/heartbeat '{}' "$dtok"
is "$ST $(field status)" "200 online" "the frame is online"

# ---------------------------------------------------------------- a low balance
sql "SELECT wallet.add('$uid', 1500, 'it64-add-$run')" >/dev/null
sql "SELECT wallet.deduct('$uid', 1000, 'it64-deduct-$run')" >/dev/null
ev=$(sql "SELECT id FROM wallet.outbox WHERE event_type = 'wallet.balance.low' AND data->>'user_id' = '$uid'")
ok "the deduction crossed her threshold: wallet.balance.low" test -n "$ev"
is "$(wait_for "SELECT count(*) FROM notification.notifications WHERE event_id = '$ev'" 1 20)" 1 \
   "the event, through NATS and the bridge, made one notification"
n=$(sql "SELECT notification_id FROM notification.notifications WHERE event_id = '$ev'")
is "$(wait_for "SELECT string_agg(channel || ' ' || state, ', ' ORDER BY channel) FROM notification.deliveries WHERE notification_id = '$n'" \
                "email sent, inapp sent, mqtt sent" 20)" \
   "email sent, inapp sent, mqtt sent" "deliveries: in-app stored, MQTT queued, email delivered by its sender"
is "$(ls "$TMP/mail" | grep -c "^it64-$run@example.com\.[0-9]*\.eml$")" 2 \
   "the SMTP server received two emails for her: welcome back (security: by email too), then this one"
mail="$TMP/mail/it64-$run@example.com.2.eml"
is "$(/usr/bin/python3 "$(dirname "$0")/smtp_sink.py" show "$mail" | jq -r '.subject + " | " + .to_name + " <" + .to_addr + ">"')" \
   "Ihr Guthaben ist niedrig: 500 Tokens | Zoë Müller <it64-$run@example.com>" "its German subject and her name, decoded as a mail reader shows them"
is "$(sql "SELECT payload->>'to' || ' | ' || (payload->>'to_name') || ' | ' || (payload->>'subject') FROM notification.deliveries WHERE notification_id = '$n' AND channel = 'email'")" \
   "it64-$run@example.com | Zoë Müller | Ihr Guthaben ist niedrig: 500 Tokens" "the email's address, name and German subject"
wait "${PIDS[-1]}"
is "$(jq -r '.command + " | " + .args.notification_id + " | " + .args.title' <"$TMP/cmd" 2>/dev/null)" \
   "notification.show | $n | Ihr Guthaben ist niedrig: 500 Tokens" \
   "the frame received notification.show over MQTT (isa/devices/<id>/commands)"
call GET "/v1/notifications?unread_only=true" -H "$(auth "$tok")"
is "$ST $(jq -r '[.[].kind] | join(",")' <<<"$BODY")" "200 wallet.balance_low,auth.welcome_back" "both are unread in-app, newest first"
call GET /v1/notifications/unread-count -H "$(auth "$tok")"
is "$ST $BODY" "200 2" "the unread count"
is "$(wait_for "SELECT count(*) FROM notification.outbox WHERE event_type = 'notification.sent' AND data->>'notification_id' = '$n' AND published_at IS NOT NULL" 3 20)" 3 \
   "notification.sent for in-app, MQTT and email is published"

# ---------------------------------------------------------------- the same event again
env=$(sql "SELECT isa.event_to_json(ROW(id, event_type, source, version, occurred_at, data, metadata)::isa.event)
             FROM wallet.outbox WHERE id = '$ev'")
d0=$(dups)
$NATS pub wallet_service.wallet.balance.low --id "it64-again-$run" --data "$env" >/dev/null
is "$(wait_for "SELECT $d0 < (SELECT coalesce(sum(value), 0) FROM isa.metrics() WHERE metric = 'event_processed_total'
                  AND labels->>'service' = 'notification' AND labels->>'status' = 'duplicate')" t 20)" t \
   "the same envelope published again (another NATS message) reached the notification service's consumer as a duplicate"
is "$(sql "SELECT count(*) FROM notification.notifications WHERE event_id = '$ev'") $(sql "SELECT count(*) FROM notification.deliveries WHERE notification_id = '$n'")" \
   "1 3" "and made nothing more: one notification, three deliveries"
is "$(ls "$TMP/mail" | grep -c "^it64-$run@example.com\.[0-9]*\.eml$")" 2 "and no third email"
is "$(sql "SELECT count(*) FROM device.commands WHERE device_id = '$dev' AND command = 'notification.show'")" 1 \
   "one notification.show for the frame"
is "$(sql "SELECT count(*) FROM isa.inbox WHERE service = 'notification' AND event_id = '$ev'")" 1 "the inbox has the event once"

done_testing
