#!/usr/bin/env bash
# End-to-end demo: an iris model service signs all 150 predictions through
# Hallmark, backed by a throwaway SoftHSM2 token, with the Python client
# package (hallmark_client.Client). A consumer verifies every signed output
# against the server's JWKS with hallmark_client.Verifier, and shows that
# four kinds of tampering are each rejected for their own reason.
#
# Usage: scripts/demo.sh
#
# On a fresh Debian machine with Rust installed it installs what is missing
# (softhsm2, openssl, python3-venv) with apt-get when run as root, builds
# hallmark in release mode and sets up the Python venv with
# scripts/python-env.sh. Everything it creates at run time lives in one
# temporary directory, which it removes on success and keeps on failure.
# Exits non-zero if any step fails, any genuine output fails to verify or
# any tampered output is not rejected for its expected reason.
#
# Environment:
#   HALLMARK_BIN   run this hallmark binary instead of building
#                  target/release/hallmark with cargo
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
ready_timeout_seconds=30
stop_timeout_seconds=10

step() { echo "==> $*"; }
fail() { echo "demo: $*" >&2; exit 1; }


workdir=""
server_pid=""
succeeded=0

# Stops the server by its PID and removes the work directory, or keeps the
# directory and prints the server log when the demo failed.
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq $((stop_timeout_seconds * 10))); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null || true
  fi
  [[ -n "$workdir" ]] || return 0
  if [[ $succeeded -eq 1 ]]; then
    rm -rf "$workdir"
  else
    if [[ -f "$workdir/server.log" ]]; then
      echo "demo: last lines of the server log ($workdir/server.log):" >&2
      tail -n 40 "$workdir/server.log" >&2
    fi
    echo "demo: kept $workdir for inspection" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls grpc.health.v1 Check("") until the server reports SERVING.
wait_until_serving() {
  "$venv/bin/python" - "$target" "$server_pid" "$ready_timeout_seconds" <<'PY'
import os
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
last = "no answer"
# For unix: targets grpcio sends the socket path as the HTTP/2 :authority,
# which the server's h2 stack rejects, so send "localhost" instead.
options = [("grpc.default_authority", "localhost")] if target.startswith("unix:") else []
with grpc.insecure_channel(target, options=options) as channel:
    health = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"demo: hallmark serve (pid {pid}) exited before it reported SERVING")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                sys.exit(0)
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.1)
sys.exit(f"demo: hallmark serve was not SERVING on {target} within {timeout:g} s (last health check: {last})")
PY
}

# Prints the address that the server logged for its metrics listener, which
# also serves the JWKS, from a line like
#   INFO hallmark::server: listening kind="metrics" addr=127.0.0.1:41235
metrics_address() {
  sed -n '/kind="metrics"/{s/.*addr=\([^[:space:]]*\).*/\1/p;q;}' "$workdir/server.log"
}

# Prints one field of a JSON object stored in a file.
json_field() {
  "$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

"$repo/scripts/install-deps.sh"

step "setting up the Python environment"
venv=$("$repo/scripts/python-env.sh")

if [[ -n "${HALLMARK_BIN:-}" ]]; then
  [[ -x "$HALLMARK_BIN" ]] || fail "HALLMARK_BIN=$HALLMARK_BIN is not an executable file; unset it to build hallmark"
  step "using $HALLMARK_BIN"
else
  step "building hallmark (cargo build --release)"
  (cd "$repo" && cargo build --release)
  export HALLMARK_BIN=$repo/target/release/hallmark
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/hallmark-demo.XXXXXX")
step "creating a SoftHSM2 token and key in $workdir/token"
"$repo/softhsm/dev-token.sh" "$workdir/token"

target="unix:$workdir/hallmark.sock"
step "starting hallmark serve on $target"
"$HALLMARK_BIN" serve --config "$workdir/token/hallmark.toml" --listen "$target" \
  --metrics-listen 127.0.0.1:0 2>"$workdir/server.log" &
server_pid=$!
wait_until_serving
# The listeners are bound, and their addresses logged, before health
# reports SERVING.
metrics_addr=$(metrics_address)
[[ -n "$metrics_addr" ]] || fail "no kind=\"metrics\" listening line in $workdir/server.log"
keys_url="http://$metrics_addr/.well-known/jwks.json"

step "signing every iris prediction"
"$venv/bin/python" "$repo/examples/model_service.py" --target "$target" --out "$workdir/signed.jsonl"

step "verifying every signed output against $keys_url"
"$venv/bin/python" "$repo/examples/consumer.py" --keys "$keys_url" --in "$workdir/signed.jsonl" \
  --report "$workdir/verified.json"

# A second, independent verifier: the Rust one in the hallmark binary. It
# prints one verdict per line and exits 1 if any output is rejected.
step "verifying every signed output again with hallmark verify"
"$HALLMARK_BIN" verify --keys "$keys_url" "$workdir/signed.jsonl" >"$workdir/verdicts.jsonl" \
  || fail "hallmark verify rejected a genuine output; see $workdir/verdicts.jsonl"

step "tampering with one output in four ways"
"$venv/bin/python" "$repo/examples/consumer.py" --keys "$keys_url" --in "$workdir/signed.jsonl" \
  --tamper-demo --report "$workdir/tampered.json"

signed=$(wc -l <"$workdir/signed.jsonl")
verified=$(json_field "$workdir/verified.json" verified)
tampered_rejected=$(json_field "$workdir/tampered.json" tampered_rejected)
rust_verified=$(grep -c '"verdict":"verified"' "$workdir/verdicts.jsonl" || true)
head -n 1 "$workdir/signed.jsonl" >"$workdir/first.json"
key_id=$(json_field "$workdir/first.json" signing_key_id)
key_version=$(json_field "$workdir/first.json" key_version)
algorithm=$(json_field "$workdir/first.json" algorithm)
canonicalization=$(json_field "$workdir/first.json" canonicalization)

[[ $signed -eq 150 ]] || fail "expected 150 signed outputs, got $signed"
[[ $verified -eq $signed ]] || fail "only $verified of $signed signed outputs verified"
[[ $rust_verified -eq $signed ]] || fail "hallmark verify verified only $rust_verified of $signed signed outputs"
[[ $tampered_rejected -eq 4 ]] || fail "only $tampered_rejected of 4 tampered outputs were rejected"

echo
echo "Hallmark demo summary"
echo "  signed:            $signed iris predictions"
echo "  verified:          $verified of $signed (Python client), $rust_verified of $signed (hallmark verify)"
echo "  tampered rejected: $tampered_rejected of 4, each for its expected reason"
echo "  key id:            $key_id"
echo "  key version:       $key_version"
echo "  algorithm:         $algorithm"
echo "  canonicalization:  $canonicalization"
echo "  key set:           $keys_url"
succeeded=1
