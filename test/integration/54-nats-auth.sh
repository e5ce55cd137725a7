# NATS user/password authentication: the bridge refuses to run on a wrong
# password, connects with the right one after a reload (no restart), and the
# password appears in no log line, no status and no setting other roles see.
source "$(dirname "$0")/lib.sh"
PORT=24281                       # below the ephemeral range, apart from the cluster's 2424x
DIR="$ISA_STACK_DIR/nats-auth"
PASS="s3cret-$$-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
ET="it.authed$$"
rm -rf "$DIR"; mkdir -p "$DIR"
nats-server -a 127.0.0.1 -p "$PORT" -js -sd "$DIR/js" --user isa --pass "$PASS" -l "$DIR/nats.log" -P "$DIR/pid" >/dev/null 2>&1 &
cleanup() {
  sql "ALTER SYSTEM RESET isa.nats_url" >/dev/null; sql "ALTER SYSTEM RESET isa.nats_user" >/dev/null
  sql "ALTER SYSTEM RESET isa.nats_password" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  kill "$(cat "$DIR/pid" 2>/dev/null)" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
sql "SELECT isa.register_event_type('$ET', 'audit_service', '1.0.0', 'integration test event')" >/dev/null

reload() { sql "SELECT pg_reload_conf()" >/dev/null; }
sql "ALTER SYSTEM SET isa.nats_url = 'nats://127.0.0.1:$PORT'" >/dev/null
sql "ALTER SYSTEM SET isa.nats_user = 'isa'" >/dev/null
sql "ALTER SYSTEM SET isa.nats_password = 'wrong-$$'" >/dev/null
reload
is "$(wait_for "SELECT connected FROM isa.bridge_status()" f 20)" f "with a wrong password the bridge is not connected"
sleep 2
is "$(sql "SELECT connected FROM isa.bridge_status()")" f "and stays disconnected"
like "$(sql "SELECT last_error FROM isa.bridge_status()")" '.+' "bridge_status().last_error says why"

sql "ALTER SYSTEM SET isa.nats_password = '$PASS'" >/dev/null
reload
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "the right password, applied by a reload: connected, no restart"
is "$(sql "SELECT server FROM isa.bridge_status()")" "nats://127.0.0.1:$PORT" "bridge_status().server shows the URL without credentials"
id=$(sql "SELECT isa.publish_event('$ET', 'audit_service', '{\"n\": 1}')")
is "$(wait_for "SELECT published_at IS NOT NULL FROM isa.outbox WHERE id = '$id'" t 20)" t \
   "an event is published through the authenticated connection"

is "$(sqlstate "SET ROLE isa_app; SHOW isa.nats_password")" 42501 "isa_app may not SHOW the password"
is "$(sql "SELECT count(*) FROM pg_settings WHERE name = 'isa.nats_password'")" 0 "pg_settings does not list it"
log="$ISA_PGDATA/../postgresql.log"
is "$(grep -c -F "$PASS" "$log")" 0 "no line of the server log carries the password"
is "$(grep -c -F 'parameter "isa.nats_password" changed (value hidden)' "$log" | awk '{print ($1 >= 2)}')" 1 \
   "both reloads are logged without the value"
is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%$PASS%' AND pid <> pg_backend_pid()")" 0 \
   "no session shows it in its query"

cleanup; trap - EXIT
is "$(wait_for "SELECT connected FROM isa.bridge_status()" t 20)" t "back on the stack's own NATS server"
done_testing
