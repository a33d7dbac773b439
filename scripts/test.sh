#!/usr/bin/env bash
# Runs Hallmark's whole test suite on this machine:
#   1. Rust unit and integration tests; each integration test creates its
#      own SoftHSM token and starts a real `hallmark serve`;
#   2. Python interop tests, which check the service's signatures with
#      Python `cryptography`, the `openssl` CLI and `jwcrypto`;
#   3. the Python client package's tests, against real servers.
#
# Installs what a fresh Debian machine lacks (SoftHSM2, OpenSSL, the Python
# venv module), creates the virtual environment in .venv, and unpacks the
# Prometheus server and promtool that tests/prometheus.rs runs into
# target/deploy-tools/bin (scripts/prometheus-tools.sh).
#
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

echo "==> checking system packages"
scripts/install-deps.sh

echo "==> Prometheus and promtool"
scripts/prometheus-tools.sh

echo "==> Python environment"
scripts/python-env.sh >/dev/null

echo "==> Rust tests"
cargo build --locked --bin hallmark
# The verifier must build, and pass its tests, without the PKCS#11 stack.
cargo test --locked --lib --no-default-features
# The JCS tests cross-check against the rfc8785 package in the venv.
HALLMARK_RFC8785_PYTHON="$repo/.venv/bin/python" cargo test --locked --all-targets

echo "==> Python interop tests"
HALLMARK_BIN="$repo/target/debug/hallmark" "$repo/.venv/bin/python" -m pytest tests/interop "$@"

# A separate run, because both test folders have a conftest.py module.
echo "==> Python client package tests"
HALLMARK_BIN="$repo/target/debug/hallmark" "$repo/.venv/bin/python" -m pytest clients/python/tests "$@"
