# The libFuzzer target for isa-httpd's request-to-arguments mapping
# (test/fuzz/fuzz_routes.c): built with AddressSanitizer and UBSan, run from
# the seed corpus for a fixed number of inputs with a fixed seed, so a run is
# repeatable.  Any crash, leak, undefined behaviour or SQL that carries a byte
# of the request aborts it.  FUZZ_RUNS=N for a longer run.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=${FUZZ_RUNS:-1000000}

ok "clang builds the fuzz target with ASan and UBSan" \
  clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/httpd" $(pkg-config --cflags jansson) \
    "$root/test/fuzz/fuzz_routes.c" "$root/httpd/routes.c" "$root/httpd/util.c" \
    $(pkg-config --libs jansson) -o "$work/fuzz_routes"

mkdir -p "$work/corpus"
cp "$root"/test/fuzz/corpus/* "$work/corpus/"
"$work/fuzz_routes" -runs="$runs" -max_len=2048 -seed=20261127 -print_final_stats=1 \
  "$work/corpus" >"$work/log" 2>&1
rc=$?
is "$rc" 0 "$runs inputs: no crash, leak, undefined behaviour or request bytes in SQL"
[ "$rc" = 0 ] || tail -n 30 "$work/log" | sed 's/^/#   /'
done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
is "${done_runs:-0}" "$runs" "libFuzzer executed every input"
cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n 1 | cut -d' ' -f2)
ok "the run covers the mapping code (cov ${cov:-0} edges, more than 150)" test "${cov:-0}" -gt 150

done_testing
