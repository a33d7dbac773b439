#!/usr/bin/env bash
# Measures signing throughput and latency with `hallmark bench` on a
# throwaway SoftHSM token that contains one key per algorithm: RSA-2048 PSS,
# RSA-4096 PSS, ECDSA P-256 and Ed25519. For each key it signs the same
# digests straight through PKCS#11, with and without the signature
# self-check, and through `hallmark serve` over TCP and a Unix socket, with
# Sign and SignBatch, with the audit log on and off, and with one client.
# It prints one table per key. BENCHMARKS.md explains the configurations
# and records a run.
#
# Usage: scripts/bench.sh [--requests N] [--clients N] [--json-dir DIR]
#                         [KEY...] [-- BENCH-OPTION...]
#
# KEY is one of rsa-2048, rsa-4096, ecdsa-p256 and ed25519 (default: all).
# Each key has its own request count per configuration, chosen so that
# each configuration takes a few seconds on a 2-core machine; --requests N
# sets one count for every key. RSA-4096 runs with 64 gRPC clients and the
# other keys with the bench's default, twice hsm.sessions; --clients N sets
# one count for every key. --json-dir DIR writes DIR/KEY.json. Options
# after -- go to every `hallmark bench` run, such as --batch-size 32 or
# --latency-requests 500.
#
# Environment:
#   HALLMARK_BIN       hallmark binary (default: target/release/hallmark,
#                      built with cargo build --release)
#   SOFTHSM2_MODULE    PKCS#11 module (default: the Debian SoftHSM2 path)
set -euo pipefail

usage() {
  echo "usage: $0 [--requests N] [--clients N] [--json-dir DIR]" \
    "[rsa-2048|rsa-4096|ecdsa-p256|ed25519 ...] [-- BENCH-OPTION...]" >&2
  exit 64
}

help() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
}

# Requests per configuration for each key, so that the slowest service
# configuration of each key takes seconds rather than minutes on a 2-core
# machine. SoftHSM signs with RSA-4096 a few hundred times a second and
# with ECDSA and Ed25519 thousands of times (BENCHMARKS.md).
declare -A default_requests=(
  [rsa-2048]=1000
  [rsa-4096]=600
  [ecdsa-p256]=10000
  [ed25519]=10000
)
# Concurrent gRPC clients for each key; a key without an entry uses the
# bench's default, twice hsm.sessions. RSA-4096 runs with 64 clients so
# that its run shows the service's memory with many slow requests in
# flight, which BENCHMARKS.md compares with the memory target.
declare -A default_clients=(
  [rsa-4096]=64
)
all_keys=(rsa-2048 rsa-4096 ecdsa-p256 ed25519)

requests=""
clients=""
json_dir=""
keys=()
bench_options=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) requests=${2:?--requests needs a value}; shift 2 ;;
    --clients) clients=${2:?--clients needs a value}; shift 2 ;;
    --json-dir) json_dir=${2:?--json-dir needs a value}; shift 2 ;;
    --) shift; bench_options=("$@"); break ;;
    -h|--help) help ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *)
      [[ -n "${default_requests[$1]:-}" ]] || { echo "unknown key: $1" >&2; usage; }
      keys+=("$1"); shift ;;
  esac
done
[[ ${#keys[@]} -gt 0 ]] || keys=("${all_keys[@]}")
for option in requests clients; do
  value=${!option}
  if [[ -n "$value" && ! "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "--$option needs a positive whole number, not $value" >&2
    exit 64
  fi
done

repo=$(cd "$(dirname "$0")/.." && pwd)
hallmark=${HALLMARK_BIN:-}
if [[ -z "$hallmark" ]]; then
  echo "==> cargo build --release" >&2
  (cd "$repo" && cargo build --release --locked --bin hallmark)
  hallmark=$repo/target/release/hallmark
fi
[[ -x "$hallmark" ]] || { echo "hallmark binary not found at $hallmark" >&2; exit 69; }
if [[ -n "$json_dir" ]]; then
  mkdir -p "$json_dir"
  json_dir=$(cd "$json_dir" && pwd)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/hallmark-bench-token.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# The token's default key, ECDSA P-256, signs the audit checkpoints; the
# measured keys are the four below.
echo "==> creating a SoftHSM token in $dir" >&2
HALLMARK_BIN=$hallmark "$repo/softhsm/dev-token.sh" --algorithm ecdsa-p256-sha256 "$dir/token" >/dev/null
config=$dir/token/hallmark.toml
cat >> "$config" <<'TOML'

[keys.rsa-2048]
algorithm = "rsa-pss-sha256"
bits = 2048
salt = "digest"

[keys.rsa-4096]
algorithm = "rsa-pss-sha256"
bits = 4096
salt = "digest"

[keys.ecdsa-p256]
algorithm = "ecdsa-p256-sha256"

[keys.ed25519]
algorithm = "ed25519"
TOML
for key in "${keys[@]}"; do
  echo "==> creating key $key" >&2
  "$hallmark" keys create --config "$config" --name "$key" >/dev/null
done

status=0
for key in "${keys[@]}"; do
  args=(bench --config "$config" --key "$key" --requests "${requests:-${default_requests[$key]}}")
  key_clients=${clients:-${default_clients[$key]:-}}
  [[ -z "$key_clients" ]] || args+=(--clients "$key_clients")
  [[ -z "$json_dir" ]] || args+=(--json "$json_dir/$key.json")
  args+=("${bench_options[@]}")
  echo "==> hallmark ${args[*]}" >&2
  # Logs of the bench itself go to stderr; the table goes to stdout.
  RUST_LOG=${RUST_LOG:-warn} "$hallmark" "${args[@]}" || status=$?
  echo
done
exit "$status"
