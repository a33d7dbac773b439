#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time: request
# validation (sign_request), canonical JSON (canonical_json), key set
# parsing (jwks) and signed output verification (signed_output).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Installs cargo-fuzz with `cargo install --locked` when it is missing. The
# targets build with the stable toolchain: without a sanitizer, cargo-fuzz
# passes rustc no unstable flags. Safe Rust needs no AddressSanitizer to
# report what this run looks for (panics, overflows, hangs and runaway
# memory), and without it the build is shorter and each input runs faster.
# HALLMARK_FUZZ_SANITIZER=address selects it anyway, and sets
# RUSTC_BOOTSTRAP=1 so that stable rustc accepts -Zsanitizer.
#
# Targets run side by side, as many at a time as there are CPUs
# (HALLMARK_FUZZ_JOBS overrides it), each for SECONDS_PER_TARGET seconds.
# They read the seed corpus in fuzz/corpus/TARGET but never write to it:
# new inputs go to a temporary directory that is removed at exit. An input
# that panics, runs longer than 10 seconds or needs more than 2 GiB stays
# in fuzz/artifacts/TARGET/, and its path is printed.
#
# Exit status: 0 when no target failed, 1 when one did, 2 for bad usage.
set -euo pipefail

usage="usage: scripts/fuzz.sh [SECONDS_PER_TARGET]"
seconds=${1:-60}
if [[ $# -gt 1 || ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "$usage" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

targets=(sign_request canonical_json jwks signed_output)
json_targets=" canonical_json jwks signed_output "
sanitizer=${HALLMARK_FUZZ_SANITIZER:-none}
jobs=${HALLMARK_FUZZ_JOBS:-$(nproc)}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if [[ $sanitizer != none ]]; then
    export RUSTC_BOOTSTRAP=1
fi
build_options=(--fuzz-dir fuzz --sanitizer "$sanitizer")

echo "==> building the fuzz targets (sanitizer: $sanitizer)"
build_start=$SECONDS
cargo fuzz build "${build_options[@]}"
echo "built in $((SECONDS - build_start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/start"

# Runs one target and writes its exit status to $work/TARGET.status. The
# first corpus directory is the one libFuzzer adds new inputs to.
run_target() {
    local target=$1
    local extra=()
    if [[ $json_targets == *" $target "* ]]; then
        extra+=(-dict=fuzz/json.dict)
    fi
    mkdir -p "$work/$target"
    local status=0
    RUST_BACKTRACE=1 cargo fuzz run "${build_options[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${extra[@]}" >"$work/$target.log" 2>&1 || status=$?
    echo "$status" >"$work/$target.status"
}

# Prints a target's statistics, or its failure and the failing input.
report_target() {
    local target=$1
    local status
    status=$(cat "$work/$target.status")
    local rate runs
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$target.log")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
    if [[ $status == 0 ]]; then
        echo "$target: passed, ${runs:-?} inputs at ${rate:-?} per second"
        return 0
    fi
    echo "$target: FAILED (exit status $status)"
    # Print the panic message and its stack, or libFuzzer's report of a
    # timeout or of the memory limit. Without either, print the log's end.
    local pattern='panicked at|^==[0-9]+== ERROR: libFuzzer'
    if grep -q -E "$pattern" "$work/$target.log"; then
        grep -m 1 -A 60 -E "$pattern" "$work/$target.log" | sed 's/^/    /'
    else
        tail -n 40 "$work/$target.log" | sed 's/^/    /'
    fi
    local artifacts
    artifacts=$(find "fuzz/artifacts/$target" -type f -newer "$work/start" 2>/dev/null || true)
    if [[ -n $artifacts ]]; then
        echo "$target: failing input, kept for reproduction:"
        echo "$artifacts" | sed 's/^/    /'
        echo "$target: reproduce with: cargo fuzz run --sanitizer $sanitizer $target FILE"
    fi
    return 1
}

echo "==> fuzzing ${#targets[@]} targets for $seconds s each, $jobs at a time"
fuzz_start=$SECONDS
for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    echo "started $target"
    run_target "$target" &
done
wait
echo "fuzzed in $((SECONDS - fuzz_start)) s"

echo "==> results"
passed=0
failed=0
for target in "${targets[@]}"; do
    if report_target "$target"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
