# test/integration/stripelib.sh — Stripe's side of a webhook, for the tests
# that drive payment with them (72, 69): a body as Stripe sends it, signed
# with Stripe's scheme by an independent implementation (Node's crypto, not
# isa's), handed to payment.handle_stripe_webhook as isa-httpd hands it over.
# Needs SECRET (the endpoint secret set in isa.stripe_webhook_secret).

# Stripe's signature: hex(HMAC-SHA256(endpoint secret, "<t>.<raw body>")).
sign() { # T BODY [SECRET]
  node -e 'const [secret, t, body] = process.argv.slice(1);
           process.stdout.write(require("crypto").createHmac("sha256", secret).update(t + "." + body, "utf8").digest("hex"))' \
    "${3:-$SECRET}" "$1" "$2"
}
# A Stripe event body as Stripe sends it: pretty-printed JSON, non-ASCII text.
event_body() { # EVENT_ID TYPE OBJECT_JSON
  jq -n --arg id "$1" --arg type "$2" --argjson obj "$3" --argjson created "$(date +%s)" \
    '{id: $id, object: "event", api_version: "2024-06-20", created: $created, livemode: false,
      type: $type, data: {object: ($obj + {description: "Café ☕ frame credits"})}}'
}
# The webhook as the HTTP front hands it over: as isa_app, body and header
# verbatim.  Prints the JSON answer, or "error <SQLSTATE>".
webhook() { # BODY HEADER
  local out
  if out=$(psql -X -A -t -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -v body="$1" -v sig="$2" 2>&1 <<'SQL'
SET ROLE isa_app;
SELECT payment.handle_stripe_webhook(:'body', :'sig');
SQL
  ); then
    printf '%s' "$out"
  else
    printf 'error %s' "$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' <<<"$out" | head -n 1)"
  fi
}
status_of() { jq -r '.status + (if .reason then " " + .reason else "" end)' <<<"$1" 2>/dev/null || printf '%s' "$1"; }
# Signs BODY now and delivers it; prints the outcome (status_of).
deliver() { # BODY
  local t
  t=$(date +%s)
  status_of "$(webhook "$1" "t=$t,v1=$(sign "$t" "$1")")"
}
# The endpoint secret, as an operator sets it (reset when the test ends).
set_webhook_secret() {
  trap 'sql "ALTER SYSTEM RESET isa.stripe_webhook_secret" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null' EXIT
  sql "ALTER SYSTEM SET isa.stripe_webhook_secret = '$SECRET'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  is "$(wait_for "SELECT current_setting('isa.stripe_webhook_secret') = '$SECRET'" t 10)" t \
     "isa.stripe_webhook_secret is set with ALTER SYSTEM and a reload"
}
