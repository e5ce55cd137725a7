# The `make run` stack (tools/stack.sh): starts PostgreSQL + NATS on loopback,
# says so and does nothing harmful when started again, stops cleanly.  Run
# under its own name and ports so a developer's `make run` stack is untouched.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
export ISA_PG_PORT=$((PGPORT + 6)) ISA_NATS_PORT=$((${ISA_NATS_URL##*:} + 6)) ISA_NATS_MONITOR_PORT=$((${ISA_NATS_MONITOR##*:} + 6))
stack() { "$root/tools/stack.sh" it-smoke "$@"; }
trap 'stack stop >/dev/null 2>&1; rm -rf "$(readlink -f "$root/.isa/it-smoke/pg")" "$root/.isa/it-smoke"' EXIT

out=$(stack start 2>&1)
like "$out" "psql \"postgresql://postgres@127.0.0.1:$ISA_PG_PORT/isa\"" "start prints the psql connection line"
like "$out" "nats://127.0.0.1:$ISA_NATS_PORT" "start prints the NATS URL"
ok "status reports both servers running" stack status
is "$(psql -X -At -h 127.0.0.1 -p "$ISA_PG_PORT" -U postgres -d isa -c "SELECT extversion FROM pg_extension WHERE extname = 'isa'")" \
  "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$root/isa.control")" "database isa has the extension at the version being built"
is "$(psql -X -At -h 127.0.0.1 -p "$ISA_PG_PORT" -U postgres -d isa -c "SELECT count(*) FILTER (WHERE jobid IS NULL) || ' of ' || count(*) FROM isa.jobs")" \
  "0 of $(psql -X -At -h 127.0.0.1 -p "$ISA_PG_PORT" -U postgres -d isa -c "SELECT count(*) FROM isa.scheduled_jobs")" \
  "every job of isa.scheduled_jobs (retention, wallet reconciliation …) is scheduled with pg_cron"
is "$(curl -s "http://127.0.0.1:$ISA_NATS_MONITOR_PORT/jsz" | grep -c '"config"')" 1 "nats-server runs with JetStream enabled"

psql -X -q -h 127.0.0.1 -p "$ISA_PG_PORT" -U postgres -d isa -c "CREATE TABLE public.keep_me (x int); INSERT INTO keep_me VALUES (42)"
out=$(stack start 2>&1)
like "$out" "already running" "starting again says the stack is already running"
is "$(psql -X -At -h 127.0.0.1 -p "$ISA_PG_PORT" -U postgres -d isa -c "SELECT x FROM keep_me")" 42 \
  "and leaves the data alone"

ok "stop succeeds" stack stop
if stack status >/dev/null 2>&1; then is running stopped "status after stop"; else is stopped stopped "status after stop reports both servers stopped"; fi
ok "a second stop is harmless" stack stop

done_testing
