# The notification senders deliver for real (issue 14,
# docs/services/notification.md, "Delivery"): email to a real SMTP server
# (Debian's aiosmtpd, with test/integration/smtp_sink.py: STARTTLS offered)
# and webhooks to a receiver written here (Node's http and its own HMAC).
# Each delivery is queued as the notification service queues it (a row of
# notification.deliveries and notification._wake in one transaction); the
# senders claim it, deliver it outside any transaction and record the
# outcome.  The email that arrives has the right headers (From, To with an
# encoded non-ASCII name, Subject encoded, Message-ID, Date) and its UTF-8
# body; a payload cannot inject a header; 451 twice then accepted is one email
# after three attempts; 550 fails at once; a signed webhook verifies, a 500 is
# retried, a 400 is final; an SMTP server that hangs delays no webhook; a dead
# SMTP server fails the email after the last attempt; the password never
# shows.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

run="$$$(date +%s)"
DIR=$(mktemp -d /tmp/isa-it65.XXXXXX)
chmod 755 "$DIR"		# the server (user postgres) reads the CA file
MAIL=$DIR/mail
HOOKS=$DIR/hooks.jsonl
SECRET="whsec_it65_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PASSWORD="smtp-pw-it65-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
LOG="$ISA_PGDATA/../postgresql.log"
log_from=$(($(wc -l <"$LOG") + 1))

# The test's servers, a few ports above the stack's PostgreSQL (below the
# ephemeral range on the test stack: docs/configuration.md)
SMTP_PORT=${ISA_TEST_SMTP_PORT:-$((PGPORT + 10))}
HOOK_PORT=${ISA_TEST_HOOK_PORT:-$((PGPORT + 11))}

SETTINGS="isa.smtp_url isa.smtp_from isa.smtp_timeout isa.smtp_ca_file isa.smtp_username isa.smtp_password
          isa.webhook_timeout isa.notification_max_attempts isa.notification_retry_base isa.notification_webhook_private
          isa.notification_senders"
smtp_pid=
hook_pid=
cleanup() {
  [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null
  [ -n "$hook_pid" ] && kill "$hook_pid" 2>/dev/null
  for s in $SETTINGS; do sql "ALTER SYSTEM RESET $s" >/dev/null 2>&1; done
  sql "SELECT pg_reload_conf()" >/dev/null 2>&1
  sql "DROP TRIGGER IF EXISTS it65_refuse ON notification.deliveries; DROP FUNCTION IF EXISTS public.it65_refuse()" >/dev/null 2>&1
  sql "DELETE FROM notification.deliveries WHERE idempotency_key LIKE 'it65-$run-%'" >/dev/null 2>&1
  rm -rf "$DIR"
}
trap cleanup EXIT

# set NAME VALUE...: ALTER SYSTEM, then one reload
set_conf() {
  while [ $# -ge 2 ]; do sql "ALTER SYSTEM SET $1 = '$2'" >/dev/null; shift 2; done
  sql "SELECT pg_reload_conf()" >/dev/null
}
newlog() { tail -n "+$log_from" "$LOG"; }
# wait_log FIXED_TEXT SECONDS: until a line of the server log since the start has it
wait_log() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    newlog | grep -qF -- "$1" && { echo found; return; }
    sleep 0.1
  done
  echo "not found: $1"
}
sender_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'isa notification sender' AND application_name = 'isa notification sender $1'"; }

# deliver CHANNEL PAYLOAD [USER_ID]: one delivery queued as the notification
# service's handlers queue it, with its notification (a wallet alert to an
# address, or to the user given: then a failure falls back to another
# channel), row and wake-up in one transaction; prints its id
deliver() {
  sql "WITH n AS (INSERT INTO notification.notifications (notification_id, event_id, recipient, user_id, email, kind,
                                                          category, locale, title, body)
                  VALUES (isa.uuid_v7(), isa.uuid_v7(), coalesce(NULLIF('${3:-}', ''), 'email:it65-$run-' || gen_random_uuid() || '@example.com'),
                          NULLIF('${3:-}', '')::uuid, 'it65@example.com', 'wallet.balance_low', 'wallet', 'en', 'it65', 'it65')
                  RETURNING notification_id),
       d AS (INSERT INTO notification.deliveries (delivery_id, notification_id, user_id, channel, state, attempts,
                                                  next_attempt_at, idempotency_key, payload)
             SELECT isa.uuid_v7(), n.notification_id, NULLIF('${3:-}', '')::uuid, '$1', 'pending', 0,
                    now(), 'it65-$run-' || gen_random_uuid() || ':$1', \$it65\$$2\$it65\$::jsonb
               FROM n
             RETURNING delivery_id)
       SELECT d.delivery_id FROM d, notification._wake('$1')"
}
state() { sql "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$1'"; }
last_error() { sql "SELECT last_error FROM notification.deliveries WHERE delivery_id = '$1'"; }
email() { # TO TO_NAME SUBJECT TEXT [USER_ID]
  deliver email "$(jq -nc --arg to "$1" --arg n "$2" --arg s "$3" --arg t "$4" '{to: $to, to_name: $n, subject: $s, text: $t, locale: "de"}')" "${5:-}"
}
webhook() { # PATH BODY_JSON
  deliver webhook "$(jq -nc --arg u "http://127.0.0.1:$HOOK_PORT/hooks/$1" --arg s "$SECRET" --argjson b "$2" '{url: $u, secret: $s, body: $b}')"
}
mails() { ls "$MAIL" 2>/dev/null | grep -c "^$1\.[0-9]*\.eml$"; }
show() { /usr/bin/python3 "$HERE/smtp_sink.py" show "$MAIL/$1.1.eml"; }
hooks() { [ -f "$HOOKS" ] && jq -c "select(.path == \"/hooks/$1\")" "$HOOKS"; }

# ---------------------------------------------------------------- the servers
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$DIR/smtp.key" -out "$DIR/smtp.crt" 2>/dev/null
chmod 644 "$DIR/smtp.crt"
SINK_AUTH="isa-it65:$PASSWORD" PYTHONPATH=$HERE /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" \
  --tlscert "$DIR/smtp.crt" --tlskey "$DIR/smtp.key" --no-requiretls -c smtp_sink.Sink "$MAIL" \
  >"$DIR/smtp.log" 2>&1 &
smtp_pid=$!
cat >"$DIR/receiver.mjs" <<'JS'
// The webhook receiver: checks Isa-Signature with its own HMAC (Node's
// crypto), logs each request as a JSON line, answers by the path's last
// part: flaky-… 500 the first time then 200, bad-… 400, else 200; hold-…
// waits until eight hold-… requests are in, then all eight are answered.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
const [port, secret, log] = process.argv.slice(2);
const seen = new Map();
const held = [];
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(req.headers['isa-signature'] || '');
    let verified = false;
    let fresh = false;
    if (m) {
      const want = crypto.createHmac('sha256', secret).update(`${m[1]}.`).update(raw).digest();
      verified = crypto.timingSafeEqual(want, Buffer.from(m[2], 'hex'));
      fresh = Math.abs(Date.now() / 1000 - Number(m[1])) <= 300;
    }
    const n = (seen.get(req.url) || 0) + 1;
    seen.set(req.url, n);
    const name = req.url.split('/').pop();
    const status = name.startsWith('bad-') ? 400 : name.startsWith('flaky-') && n === 1 ? 500 : 200;
    fs.appendFileSync(log, JSON.stringify({
      path: req.url, method: req.method, n, status, delivery: req.headers['isa-delivery'],
      type: req.headers['content-type'], verified, fresh, body: raw.toString('utf8'),
    }) + '\n');
    const answer = () => { res.writeHead(status, { 'content-type': 'text/plain' }); res.end(status === 200 ? 'thanks' : 'no'); };
    if (!name.startsWith('hold-')) return answer();
    held.push(answer);
    if (held.length >= 8) held.splice(0).forEach((f) => f());
  });
}).listen(Number(port), '127.0.0.1');
JS
node "$DIR/receiver.mjs" "$HOOK_PORT" "$SECRET" "$HOOKS" >"$DIR/receiver.log" 2>&1 &
hook_pid=$!
for p in "$SMTP_PORT" "$HOOK_PORT"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done

# ---------------------------------------------------------------- the senders
is "$(sql "SELECT string_agg(application_name, ', ' ORDER BY application_name) FROM pg_stat_activity
            WHERE backend_type = 'isa notification sender'")" \
   "isa notification sender email, isa notification sender webhook" \
   "two sender workers run, one per channel that leaves the database"
email_pid=$(sender_pid email)
set_conf isa.notification_max_attempts 3 isa.notification_retry_base 1s isa.notification_webhook_private on \
  isa.smtp_url "smtp://127.0.0.1:$SMTP_PORT" isa.smtp_from "isa Notifications <noreply@isa.test>" \
  isa.smtp_ca_file "$DIR/smtp.crt" isa.smtp_timeout 1500ms isa.webhook_timeout 3s \
  isa.smtp_username isa-it65 isa.smtp_password "$PASSWORD"
is "$(wait_log "isa notification sender (email): delivering through smtp://127.0.0.1:$SMTP_PORT from isa Notifications <noreply@isa.test> (STARTTLS when offered, timeout 1500 ms)" 15)" \
   found "the email sender finds the notification service and logs where it delivers"
is "$(wait_log "isa notification sender (webhook): delivering with internal addresses allowed (isa.notification_webhook_private), timeout 3000 ms" 15)" \
   found "the webhook sender too"

# ---------------------------------------------------------------- email
to="zoe.mueller.$run@example.com"
subject="Ihr Guthaben ist niedrig – nur noch 5 Tokens übrig, Zoë"
text=$'Hallo Zoë,\n\nIhr Guthaben ist auf 5 Tokens gesunken. Grüße aus Köln — ½ € ✓\n.\nEine Zeile, die mit einem Punkt beginnt.'
id=$(email "$to" "Zoë Müller" "$subject" "$text")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "sent 1" 10)" "sent 1" \
   "an email delivery is sent at the first attempt"
is "$(mails "$to")" 1 "one message arrives at the SMTP server"
m=$(show "$to")
is "$(jq -r '[.from_name, .from_addr, .to_name, .to_addr] | join(" | ")' <<<"$m")" "isa Notifications | noreply@isa.test | Zoë Müller | $to" \
   "From is isa.smtp_from; To carries the recipient's name"
is "$(jq -r .subject <<<"$m")" "$subject" "the Subject decodes to the payload's subject"
is "$(jq -r '[.raw_ascii, .raw_to_encoded, .raw_subject_encoded, .raw_lines_ok] | join(" ")' <<<"$m")" "true true true true" \
   "on the wire the message is ASCII: the non-ASCII name and subject are RFC 2047 encoded-words, no line too long"
is "$(jq -r .message_id <<<"$m")" "<$id@isa>" "Message-ID is <delivery_id@isa>"
is "$(jq -r '(.date_age_s < 300) and .mime_version == "1.0"' <<<"$m")" true "Date is now and MIME-Version 1.0"
is "$(jq -r '[.content_type, .charset, .transfer_encoding, .language] | join(" ")' <<<"$m")" "text/plain utf-8 base64 de" \
   "plain text in UTF-8, base64, Content-Language from the payload's locale"
is "$(jq -r .body <<<"$m")" "$text" "the body decodes to the payload's text, byte for byte (a line of a lone dot included)"
is "$(jq -c '[.mail_from, .rcpt_tos, .tls, .authenticated]' "$MAIL/$to.1.json")" "[\"noreply@isa.test\",[\"$to\"],true,true]" \
   "the envelope: MAIL FROM the sender's address, RCPT TO the recipient only, over STARTTLS (offered, so taken), after AUTH with isa.smtp_username and isa.smtp_password"

to2="mallory.$run@example.com"
id=$(email "$to2" $'Mallory\r\nBcc: victim@example.com' $'Hello\r\nBcc: victim@example.com' "hi")
is "$(wait_for "SELECT state FROM notification.deliveries WHERE delivery_id = '$id'" sent 10)" sent "a payload with line breaks in name and subject is sent"
m=$(show "$to2")
is "$(jq -c '[(.headers | index("bcc")), .subject, (.to_name | test("^Mallory +Bcc: victim@example.com$"))]' <<<"$m") $(jq -c .rcpt_tos "$MAIL/$to2.1.json")" \
   "[null,\"Hello  Bcc: victim@example.com\",true] [\"$to2\"]" \
   "but injects no header and no recipient: its line breaks are blanks inside encoded-words"

id=$(email "not an address" "Nobody" "s" "t")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "a payload whose recipient is no address fails at once, without retries"
like "$(last_error "$id")" "recipient address" "and says why"

flaky="flaky-$run@example.com"
id=$(email "$flaky" "Flaky" "Retry me" "third time lucky")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "sent 3" 20)" "sent 3" \
   "an SMTP server that answers 451 twice, then accepts: sent at the third attempt"
is "$(mails "$flaky") $(wc -l <"$MAIL/$flaky.attempts")" "1 3" "one message delivered, after three DATA attempts"

id=$(email "reject-$run@example.com" "Nobody" "No" "never")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "a 550 is final: failed at the first attempt"
like "$(last_error "$id")" "refused the message \(550\)" "last_error has the server's reply code"

# ---------------------------------------------------------------- webhooks
body='{"kind": "wallet.balance.low", "balance": 5, "name": "Zoë", "nested": {"a": [1, 2.5, null, true]}}'
id=$(webhook "ok-$run" "$body")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "sent 1" 10)" "sent 1" \
   "a webhook delivery is sent at the first attempt"
h=$(hooks "ok-$run")
is "$(jq -s 'length' <<<"$h")" 1 "the receiver got one POST"
is "$(jq -r '[.method, .type, .delivery, .verified, .fresh] | join(" ")' <<<"$h")" "POST application/json $id true true" \
   "a JSON POST whose Isa-Signature verifies with the secret (HMAC-SHA256 over t.body), fresh, Isa-Delivery = the delivery id"
is "$(jq -cS '.body | fromjson' <<<"$h")" "$(jq -cS . <<<"$body")" "the body posted (and signed) is the payload's body (as JSON: jsonb orders the keys)"

# The commit wakes the sender: a delivery leaves within milliseconds, not at
# the sender's next look (up to a second later).  Ten in a row, so that
# luck with the timer cannot pass for the wake-up.
ids=
for i in $(seq 10); do
  id=$(webhook "ok-wake-$i-$run" '{"kind": "wake"}')
  wait_for "SELECT state FROM notification.deliveries WHERE delivery_id = '$id'" sent 5 >/dev/null
  ids="$ids${ids:+,}'$id'"
done
is "$(sql "SELECT count(*) FILTER (WHERE state = 'sent') || ' ' || (percentile_cont(0.5) WITHIN GROUP (ORDER BY sent_at - created_at) < interval '200 ms')
             FROM notification.deliveries WHERE delivery_id IN ($ids)")" "10 true" \
   "ten webhooks queued one after the other are sent, the median within 200 ms of the commit that queued them: woken at commit"

# The outcomes of transfers that end together are recorded in one
# transaction (one commit), each in a subtransaction: eight webhooks queued
# together, their receiver answering all eight at once, are recorded with one
# now() (sent_at) or a few, not eight; one whose outcome cannot be recorded
# (a trigger of this test refuses it) loses only its own: the seven others
# are sent, it stays sending (claimed again when its lease ends).
sql "CREATE FUNCTION public.it65_refuse() RETURNS trigger LANGUAGE plpgsql AS
       \$\$ BEGIN RAISE EXCEPTION 'it65 refuses to record delivery %', NEW.delivery_id; END \$\$;
     CREATE TRIGGER it65_refuse BEFORE UPDATE ON notification.deliveries FOR EACH ROW
       WHEN (NEW.state = 'sent' AND NEW.payload -> 'body' ->> 'kind' = 'it65-unrecordable') EXECUTE FUNCTION public.it65_refuse()" >/dev/null
hold=$(sql "WITH n AS (INSERT INTO notification.notifications (notification_id, event_id, recipient, kind, category, locale, title, body)
                       SELECT isa.uuid_v7(), isa.uuid_v7(), 'email:it65-hold-$run-' || g || '@example.com', 'wallet.balance_low',
                              'wallet', 'en', 'it65', 'it65' FROM generate_series(1, 8) g
                       RETURNING notification_id)
            INSERT INTO notification.deliveries (delivery_id, notification_id, channel, state, next_attempt_at, idempotency_key, payload)
            SELECT isa.uuid_v7(), notification_id, 'webhook', 'pending', now(), 'it65-$run-hold-' || notification_id || ':webhook',
                   jsonb_build_object('url', 'http://127.0.0.1:$HOOK_PORT/hooks/hold-' || notification_id, 'secret', '$SECRET',
                                      'body', jsonb_build_object('kind', CASE WHEN row_number() OVER (ORDER BY notification_id) = 3
                                                                              THEN 'it65-unrecordable' ELSE 'it65-hold' END))
              FROM n, notification._wake('webhook')
            RETURNING delivery_id" | paste -sd ' ')
held="delivery_id IN ($(sed "s/[^ ]*/'&'/g; s/ /,/g" <<<"$hold"))"
is "$(wait_for "SELECT count(*) FILTER (WHERE state = 'sent') FROM notification.deliveries WHERE $held" 7 10)" 7 \
   "eight webhooks answered at once: the seven recordable ones are sent"
is "$(sql "SELECT state || ' ' || attempts FROM notification.deliveries WHERE $held AND payload -> 'body' ->> 'kind' = 'it65-unrecordable'")" \
   "sending 1" "the one whose outcome the trigger refused stays sending (its lease brings it back): no other outcome was lost with it"
bad=$(sql "SELECT delivery_id FROM notification.deliveries WHERE $held AND payload -> 'body' ->> 'kind' = 'it65-unrecordable'")
is "$(wait_log "isa notification sender (webhook): recording the outcome of delivery $bad failed: it65 refuses to record delivery $bad" 10)" found \
   "the sender logs the outcome it could not record"
is "$(sql "SELECT count(DISTINCT sent_at) < 7 FROM notification.deliveries WHERE $held AND state = 'sent'")" t \
   "outcomes that ended together were recorded in one transaction: the seven have fewer than seven sent_at (now() of the recording transaction)"
sql "DROP TRIGGER it65_refuse ON notification.deliveries; DROP FUNCTION public.it65_refuse()" >/dev/null

id=$(webhook "flaky-$run" '{"kind": "retry"}')
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "sent 2" 20)" "sent 2" \
   "a webhook answered 500 is tried again and sent at the second attempt"
is "$(hooks "flaky-$run" | jq -r '[.n, .status, .verified, .delivery] | join(" ")' | paste -sd ',')" "1 500 true $id,2 200 true $id" \
   "the receiver saw both attempts, signed, under the same Isa-Delivery"

id=$(webhook "bad-$run" '{"kind": "refused"}')
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "a webhook answered 400 fails at once"
like "$(last_error "$id")" "HTTP 400" "last_error has the status"

set_conf isa.notification_webhook_private off
is "$(wait_log "isa notification sender (webhook): delivering with internal addresses refused, timeout 3000 ms" 10)" found \
   "with isa.notification_webhook_private off the webhook sender refuses internal addresses"
id=$(webhook "ok-private-$run" '{"kind": "ssrf"}')
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "a webhook whose host resolves to 127.0.0.1 fails at once"
is "$(last_error "$id") / $(hooks "ok-private-$run" | wc -l)" \
   "the webhook's host is 127.0.0.1, an internal address (isa.notification_webhook_private is off) / 0" \
   "and says why; the receiver got nothing"
id=$(deliver webhook "$(jq -nc --arg s "$SECRET" '{url: "http://localhost:9/hooks/x", secret: $s, body: {}}')")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "so does one to localhost, before connecting (nothing listens there: a connection would be refused, and tried again)"
like "$(last_error "$id")" "host is (127\.0\.0\.1|::1), an internal address" "for the same reason"
set_conf isa.notification_webhook_private on
is "$(wait_log "isa notification sender (webhook): delivering with internal addresses allowed (isa.notification_webhook_private), timeout 3000 ms" 10)" found \
   "on again"

# ---------------------------------------------------------------- a hanging SMTP server holds up no webhook
slow="slow-$run@example.com"
sid=$(email "$slow" "Slow" "Hang" "the server sleeps in DATA")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$sid'" "sending 1" 10)" "sending 1" \
   "an email to an SMTP server that hangs is being sent"
id=$(webhook "ok-while-slow-$run" '{"kind": "meanwhile"}')
is "$(wait_for "SELECT state FROM notification.deliveries WHERE delivery_id = '$id'" sent 5)/$(state "$sid")" "sent/sending 1" \
   "a webhook queued meanwhile is delivered while the email attempt still hangs"
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$sid'" "failed 3" 30)" "failed 3" \
   "the hanging email times out at each attempt (isa.smtp_timeout) and fails after the last"
like "$(last_error "$sid")" "[Tt]ime.*out" "last_error says it timed out"

# ---------------------------------------------------------------- a dead SMTP server
kill "$smtp_pid"; wait "$smtp_pid" 2>/dev/null; smtp_pid=
uid=$(sql "SELECT user_id FROM account.create_user('it65-down-$run@example.com', 'Down')")
id=$(email "down-$run@example.com" "Down" "Nobody listens" "nothing" "$uid")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 3" 20)" "failed 3" \
   "with the SMTP server down, an email is tried isa.notification_max_attempts times and fails"
like "$(last_error "$id")" "[Cc]onnect" "last_error says the connection failed"
fallback=$(sql "SELECT channel FROM notification.deliveries WHERE fallback_of = '$id'")
is "$(sql "SELECT data ->> 'fallback_channel' FROM notification.outbox
            WHERE event_type = 'notification.failed' AND data ->> 'delivery_id' = '$id'")/$([ -n "$fallback" ] && echo some)" \
   "$fallback/some" "record_delivery published notification.failed and the user's next channel ($fallback) is tried"

# ---------------------------------------------------------------- switched off
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }	# the process's CPU time, in ticks
webhook_pid=$(sender_pid webhook)
set_conf isa.notification_senders off
is "$(wait_log "isa notification sender (webhook): switched off (isa.notification_senders): deliveries wait" 10)" found \
   "isa.notification_senders off: the senders say they deliver nothing"
ticks=$(cpu "$webhook_pid")
id=$(webhook "ok-off-$run" '{"kind": "off"}')
is "$(wait_for "SELECT state <> 'pending' OR attempts > 0 FROM notification.deliveries WHERE delivery_id = '$id'" t 1)" f \
   "a webhook queued meanwhile stays pending, not even claimed (watched for a second)"
is "$(( $(cpu "$webhook_pid") - ticks < 20 ))" 1 "and its wake-up does not keep the sender busy (less than 0.2 s of CPU in that second)"
sql "ALTER SYSTEM RESET isa.notification_senders" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "sent 1" 10)" "sent 1" \
   "on again, it is sent"

# ---------------------------------------------------------------- settings
set_conf isa.smtp_url ""
is "$(wait_log "isa notification sender (email): email is not configured (isa.smtp_url is empty)" 10)" found \
   "with isa.smtp_url empty the email sender says email is not configured"
id=$(email "$to" "Zoë" "s" "t")
is "$(wait_for "SELECT state || ' ' || attempts FROM notification.deliveries WHERE delivery_id = '$id'" "failed 1" 10)" "failed 1" \
   "and an email delivery fails at once (the next channel is the service's to try)"
is "$(last_error "$id")" "email is not configured: isa.smtp_url is empty" "with that reason"
is "$(sqlstate "ALTER SYSTEM SET isa.smtp_url = 'smtp://user:pw@mail.example.com'")" 22023 \
   "isa.smtp_url refuses credentials in the URL (they would show in pg_settings)"
is "$(sqlstate "ALTER SYSTEM SET isa.smtp_from = 'Evil <a@b.c>, other@d.e'")" 22023 "isa.smtp_from refuses what is not one mailbox"

is "$(sql "SELECT current_setting('isa.smtp_password') = '$PASSWORD'")" t "isa.smtp_password was set by ALTER SYSTEM and a reload"
is "$(sql "SELECT count(*) FROM pg_settings WHERE name = 'isa.smtp_password'")" 0 "it is hidden from pg_settings"
is "$(sqlstate "SET ROLE isa_app; SHOW isa.smtp_password")" 42501 "only superusers may read it"
is "$(grep -c -F "$PASSWORD" "$LOG")" 0 "no line of the server log carries it"
is "$(newlog | grep -c -F 'parameter "isa.smtp_password" changed (value hidden)' | awk '{print ($1 >= 1)}')" 1 \
   "the reload that set it is logged without the value"

is "$(sqlstate "SELECT notification._wake('fax')")" 22023 "notification._wake refuses an unknown channel"
is "$(sqlstate "SELECT notification._wake(NULL)")" 22023 "and a null one"
is "$(sqlstate "SELECT notification._wake('inapp')")" "" "in-app has no sender to wake: nothing to do"

is "$(sender_pid email)" "$email_pid" "the email sender ran the whole test in one process (no failure made it exit)"
sql "SELECT pg_terminate_backend($email_pid)" >/dev/null
is "$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'isa notification sender email' AND pid <> $email_pid" 1 10)" 1 \
   "a terminated sender is started again"

done_testing
