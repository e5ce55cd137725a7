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
