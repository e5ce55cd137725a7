# The libFuzzer target of the OTA service's parsers (test/fuzz/fuzz_ota.c):
# the release manifest and SemVer 2.0.0 (ota/manifest.c, ota/semver.c), built
# with AddressSanitizer and UBSan and run from the seed corpus for a fixed
# number of inputs with a fixed seed, so a run is repeatable.  Any crash,
# leak, undefined behaviour or broken ordering property aborts it.
# FUZZ_RUNS=N for a longer run.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=${FUZZ_RUNS:-1000000}

ok "clang builds the OTA fuzz target with ASan and UBSan" \
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/ota" "$root/test/fuzz/fuzz_ota.c" "$root/ota/manifest.c" "$root/ota/semver.c" -o "$work/fuzz_ota"

mkdir -p "$work/corpus"
cp "$root"/test/fuzz/corpus_ota/* "$work/corpus/"
"$work/fuzz_ota" -runs="$runs" -max_len=1024 -seed=20261127 -print_final_stats=1 \
  "$work/corpus" >"$work/log" 2>&1
rc=$?
is "$rc" 0 "$runs inputs: no crash, leak, undefined behaviour or broken ordering property"
[ "$rc" = 0 ] || tail -n 30 "$work/log" | sed 's/^/#   /'
done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
is "${done_runs:-0}" "$runs" "libFuzzer executed every input"
cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n 1 | cut -d' ' -f2)
ok "the run covers the parsers (cov ${cov:-0} edges, more than 150)" test "${cov:-0}" -gt 150

done_testing
