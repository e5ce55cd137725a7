#!/usr/bin/env bash
# bench/run.sh — every benchmark (bench/*/run), each on the private bench
# stack (.isa/bench, its own ports) and each printing one comparable line.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
tools/stack.sh bench stop >/dev/null 2>&1 || true
trap 'tools/stack.sh bench stop >/dev/null 2>&1 || true' EXIT
tools/stack.sh bench start --fresh >/dev/null || { echo "bench stack did not start"; exit 1; }
eval "$(tools/stack.sh bench env)"

rc=0
for b in bench/*/run; do
  "$b" || rc=1
done
exit $rc
