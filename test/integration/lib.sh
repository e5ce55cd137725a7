# test/integration/lib.sh — TAP helpers for integration tests (bash).
# A test file sources this, makes assertions, and calls `done_testing`.
# The environment of the test stack (tools/stack.sh test env) is set by run.

_n=0
_failed=0

_report() { # status description [diagnostics]
  _n=$((_n + 1))
  if [ "$1" = ok ]; then
    echo "ok $_n - $2"
  else
    _failed=$((_failed + 1))
    echo "not ok $_n - $2"
    [ -n "${3:-}" ] && printf '%s\n' "$3" | sed 's/^/#   /'
  fi
  return 0
}

# is GOT WANT DESCRIPTION
is() {
  if [ "$1" = "$2" ]; then _report ok "$3"; else _report fail "$3" "got:  '$1'
want: '$2'"; fi
}

# ok DESCRIPTION COMMAND... : passes when the command succeeds
ok() {
  local d=$1; shift
  local out
  if out=$("$@" 2>&1); then _report ok "$d"; else _report fail "$d" "$out"; fi
}

# note TEXT…: a TAP comment, one line per line of TEXT
note() { printf '%s\n' "$@" | sed 's/^/# /'; }

# like GOT REGEX DESCRIPTION
like() {
  if [[ $1 =~ $2 ]]; then _report ok "$3"; else _report fail "$3" "got:  '$1'
want match: '$2'"; fi
}

# sql QUERY [psql args]: one value per line, unaligned; stops on the first error
sql() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$@"; }

# sqlstate QUERY: the SQLSTATE the query fails with (empty if it succeeds)
sqlstate() {
  psql -X -A -t -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c '\set VERBOSITY verbose' -c "$1" 2>&1 >/dev/null |
    sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -n 1
}

# wait_for QUERY WANT SECONDS: polls QUERY (every 0.1 s) until it prints WANT;
# prints the last value either way, so `is "$(wait_for ...)" WANT ...` asserts.
wait_for() {
  local q=$1 want=$2 secs=${3:-10} got i
  for ((i = 0; i < secs * 10; i++)); do
    got=$(sql "$q" 2>/dev/null) && [ "$got" = "$want" ] && break
    sleep 0.1
  done
  printf '%s' "$got"
}

# subs_running [WHERE]: waits (10 s) until the bridge runs as many consumers as
# isa.subscriptions has rows (matching WHERE), the services' own included;
# prints "running/wanted" for an assertion against subs_want.
subs_want() { sql "SELECT count(*) FROM isa.subscriptions ${1:+WHERE $1}"; }
subs_running() {
  local want
  want=$(subs_want "${1:-}")
  printf '%s' "$(wait_for "SELECT subscriptions FROM isa.bridge_status()" "$want" "${2:-10}")/$want"
}

# pause_service NAME: the bridge stops applying NAME's subscriptions
# (isa.services = every other service; their events wait on the stream) until
# resume_services.  For tests that count what any committed event moves: the
# bridge's wake-ups (the event store announces each batch it stores, and that
# commit wakes the bridge too).
pause_service() {
  sql "ALTER SYSTEM SET isa.services = '$(sql "SELECT string_agg(name, ',') FROM isa.services WHERE schema_name IS NOT NULL AND name <> '$1'")'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  wait_for "SELECT subscriptions FROM isa.bridge_status()" "$(subs_want "service <> '$1'")" 20 >/dev/null
}
resume_services() {
  sql "ALTER SYSTEM RESET isa.services" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  subs_running >/dev/null
}

done_testing() {
  echo "1..$_n"
  [ "$_failed" = 0 ]
}
