#!/usr/bin/env bash
# test/run.sh — every test of isa on a private stack (.isa/test, its own ports):
# the pgTAP suite (test/pgtap/) through pg_prove, then the integration tests
# (test/integration/).  Prints both summaries and a total; exits non-zero on
# any failure.  The stack is stopped at the end whatever happens.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

tools/stack.sh test stop >/dev/null 2>&1 || true
trap 'tools/stack.sh test stop >/dev/null 2>&1 || true' EXIT
tools/stack.sh test start --fresh || { echo "test stack did not start"; exit 1; }
eval "$(tools/stack.sh test env)"

psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS pgtap' || exit 1
# The bridge restarts once when --fresh recreates its database: tests start
# when it is connected to NATS (or say why not).
for _ in $(seq 1 300); do
  [ "$(psql -X -A -t -c 'SELECT connected FROM isa.bridge_status()' 2>/dev/null)" = t ] && break
  sleep 0.1
done
psql -X -A -t -c 'SELECT connected, last_error FROM isa.bridge_status()' | grep -q '^t|' ||
  echo "warning: the isa bridge is not connected: $(psql -X -A -t -c 'SELECT last_error FROM isa.bridge_status()')"

echo
echo "== pgTAP (test/pgtap)"
# One pg_prove per file, so that each file's duration is printed and a file
# that runs past ISA_TEST_FILE_TIMEOUT seconds (180) fails.
limit=${ISA_TEST_FILE_TIMEOUT:-180}
tap_total=0 tap_failed=0 prove_rc=0
for f in test/pgtap/*/*.sql; do
  out=$(mktemp)
  t0=$(date +%s.%N)
  PGOPTIONS='-c client_min_messages=warning' timeout "$limit" pg_prove --failures --ext .sql "$f" >"$out" 2>&1
  rc=$?
  secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  n=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
  bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$out" | awk '{split($2, a, "/"); s += a[1]} END {print s + 0}')
  if [ "$rc" = 124 ]; then echo "not ok - $f ran past ${limit} s"; bad=$((bad + 1)); fi
  if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then bad=1; fi      # a file that died counts
  [ "$rc" != 0 ] && { sed 's/^/    /' "$out"; prove_rc=1; }
  echo "$( [ "$bad" = 0 ] && echo ok || echo 'not ok') - $f (${n:-0} tests, ${secs} s)"
  tap_total=$((tap_total + ${n:-0})); tap_failed=$((tap_failed + bad))
  rm -f "$out"
done
echo "pgTAP: $((tap_total - tap_failed)) passed, $tap_failed failed"

echo
echo "== integration (test/integration)"
test/integration/run
int_rc=$?
int_counts=$(cat "$ISA_STACK_DIR/integration.counts" 2>/dev/null || echo "0 1")
int_passed=${int_counts% *}
int_failed=${int_counts#* }

passed=$((tap_total - tap_failed + int_passed))
failed=$((tap_failed + int_failed))
echo
echo "total: $passed passed, $failed failed"
[ "$prove_rc" = 0 ] && [ "$int_rc" = 0 ] && [ "$failed" = 0 ]
