# bench/bridge_lib.sh — helpers the bridge benchmarks share (sourced).
# Needs the bench stack environment (bench/run.sh sets it).
: "${PGPORT:?run from bench/run.sh}"
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$@"; }

# set_guc NAME VALUE|DEFAULT: ALTER SYSTEM and reload
set_guc() {
  if [ "$2" = DEFAULT ]; then q "ALTER SYSTEM RESET $1" >/dev/null
  else q "ALTER SYSTEM SET $1 = '$2'" >/dev/null; fi
  q "SELECT pg_reload_conf()" >/dev/null
}

# wait_q QUERY WANT SECONDS: until QUERY prints WANT; fails after SECONDS
wait_q() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    [ "$(q "$1")" = "$2" ] && return 0
    sleep 0.05
  done
  echo "bench: timed out waiting for $1 = $2" >&2
  return 1
}

# recorders_caught_up: until every outbox row is published (tracked tables'
# pending statements rendered first) and the newest is in the event store and
# the audit trail, which record every event: a round that starts then does
# not pay for the rounds before it
recorders_caught_up() {
  local last
  wait_q "SELECT (SELECT count(*) FROM isa.outbox WHERE published_at IS NULL)
                 + (SELECT coalesce(sum(pending_statements), 0) FROM isa.tracked_tables)" 0 120 || return 1
  last=$(q "SELECT id FROM isa.outbox ORDER BY id DESC LIMIT 1")
  [ -n "$last" ] || return 0
  wait_q "SELECT EXISTS (SELECT FROM event.events WHERE id = '$last')
                 AND EXISTS (SELECT FROM audit.entries WHERE event_id = '$last')" t 300
}

bridge_off() { set_guc isa.bridge_enabled off; wait_q "SELECT connected FROM isa.bridge_status()" f 20; }
bridge_on() { set_guc isa.bridge_enabled DEFAULT; wait_q "SELECT connected FROM isa.bridge_status()" t 20; }

# fill N EVENT_TYPE: N events of about 300 bytes in audit_service's outbox
fill() {
  q "SELECT count(isa.publish_event('$2', 'audit_service',
       jsonb_build_object('n', g, 'user_id', 'user-' || (g % 977), 'model', 'gpt-4o-mini',
                          'input_tokens', 1200 + g % 50, 'output_tokens', 300 + g % 70)))
     FROM generate_series(1, $1) g" >/dev/null
}

now() { date +%s.%N; }
rate() { echo "scale=0; $1 / ($3 - $2)" | bc; }

# verdict CONDITION (bc syntax, e.g. "$r >= 0.6"): prints PASS or BELOW-TARGET
# (a run script exits non-zero when a target is missed)
bench_rc=0
verdict() {
  if [ "$(echo "$1" | bc -l)" = 1 ]; then echo PASS; else echo BELOW-TARGET; fi
}
