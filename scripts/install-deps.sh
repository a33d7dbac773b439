#!/usr/bin/env bash
# Installs the system packages that Hallmark's demo and tests need and a
# fresh Debian or Ubuntu machine lacks: SoftHSM2, the OpenSSL CLI and the
# Python venv module, and for the tests' fault-injecting PKCS#11 module
# (tests/pkcs11-faults) a C compiler, the C library headers and p11-kit's
# PKCS#11 header. Does nothing when they are already present.
set -euo pipefail

missing=()
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v openssl >/dev/null || missing+=(openssl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v python3 >/dev/null || missing+=(python3)
command -v cc >/dev/null || missing+=(gcc)
[[ -f /usr/include/stdio.h ]] || missing+=(libc6-dev)
[[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ]] || missing+=(libp11-kit-dev)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
if ! command -v apt-get >/dev/null; then
  echo "apt-get not found; install ${missing[*]} with your package manager" >&2
  exit 69
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "run as root or install sudo to install ${missing[*]}" >&2; exit 77; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
