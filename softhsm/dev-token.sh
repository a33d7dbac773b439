#!/usr/bin/env bash
# Creates a throwaway SoftHSM2 token in DIR with its own softhsm2.conf, PIN
# file and default signing key, and writes DIR/hallmark.toml, a complete
# configuration that `hallmark serve --config DIR/hallmark.toml` uses as is.
#
# Usage: softhsm/dev-token.sh [--algorithm NAME] [--key-bits N] [--salt digest|max|N] [--no-key] DIR
#
# NAME is one of rsa-pss-sha256 (the default), rsa-pkcs1-sha256,
# ecdsa-p256-sha256, ecdsa-p384-sha384 and ed25519. --key-bits and --salt
# apply to RSA keys.
#
# The token and its PINs are for development and tests only: the PINs are
# random, but they are stored in plain files under DIR.
#
# Environment:
#   HALLMARK_BIN       hallmark binary that creates the key (default: the one
#                      on PATH, else target/release or target/debug here)
#   SOFTHSM2_MODULE    PKCS#11 module (default: the Debian SoftHSM2 path)
set -euo pipefail

usage() {
  echo "usage: $0 [--algorithm NAME] [--key-bits 2048|3072|4096] [--salt digest|max|N] [--no-key] DIR" >&2
  exit 64
}

help() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
}

algorithm=rsa-pss-sha256
key_bits=4096
salt=digest
create_key=1
dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --algorithm) algorithm=${2:?--algorithm needs a value}; shift 2 ;;
    --key-bits) key_bits=${2:?--key-bits needs a value}; shift 2 ;;
    --salt) salt=${2:?--salt needs a value}; shift 2 ;;
    --no-key) create_key=0; shift ;;
    -h|--help) help ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [[ -z "$dir" ]] || usage; dir=$1; shift ;;
  esac
done
[[ -n "$dir" ]] || usage

here=$(cd "$(dirname "$0")/.." && pwd)
module=${SOFTHSM2_MODULE:-}
if [[ -z "$module" ]]; then
  for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
      /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    if [[ -f "$candidate" ]]; then module=$candidate; break; fi
  done
fi
if [[ -z "$module" || ! -f "$module" ]]; then
  echo "SoftHSM2 module not found; install it (apt-get install softhsm2) or set SOFTHSM2_MODULE" >&2
  exit 69
fi
command -v softhsm2-util >/dev/null || { echo "softhsm2-util not found; install softhsm2" >&2; exit 69; }

hallmark=${HALLMARK_BIN:-}
if [[ -z "$hallmark" && $create_key -eq 1 ]]; then
  if command -v hallmark >/dev/null; then hallmark=$(command -v hallmark)
  elif [[ -x "$here/target/release/hallmark" ]]; then hallmark=$here/target/release/hallmark
  elif [[ -x "$here/target/debug/hallmark" ]]; then hallmark=$here/target/debug/hallmark
  else echo "hallmark binary not found; run cargo build or set HALLMARK_BIN" >&2; exit 69
  fi
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -e "$dir/softhsm2.conf" ]]; then
  echo "$dir already contains a token; choose an empty directory" >&2
  exit 73
fi
mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"

cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

umask 077
label="hallmark-dev-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$dir/user.pin"
od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$dir/so.pin"

SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
  --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >/dev/null

cat > "$dir/hallmark.toml" <<TOML
# Development configuration written by softhsm/dev-token.sh.
# See hallmark.example.toml for every setting and its default.

[server]
listen = "127.0.0.1:50051"
metrics_listen = "127.0.0.1:9464"

[hsm]
module = "$module"
token_label = "$label"
pin_file = "$dir/user.pin"

[hsm.module_env]
SOFTHSM2_CONF = "$dir/softhsm2.conf"

[signing]
default_key = "default"

# Every Sign request is recorded here, hash-chained; check it with
# hallmark audit verify $dir/audit/audit-*.jsonl
[audit]
directory = "$dir/audit"

[keys.default]
algorithm = "$algorithm"
TOML
# Key size and salt apply to RSA keys only.
if [[ "$algorithm" == rsa-* ]]; then
  cat >> "$dir/hallmark.toml" <<TOML
bits = $key_bits
salt = $( [[ "$salt" =~ ^[0-9]+$ ]] && echo "$salt" || echo "\"$salt\"" )
TOML
fi

if [[ $create_key -eq 1 ]]; then
  "$hallmark" keys create --config "$dir/hallmark.toml" --name default >/dev/null
fi

echo "token $label ready in $dir"
echo "run: hallmark serve --config $dir/hallmark.toml"
