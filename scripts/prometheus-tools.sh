#!/usr/bin/env bash
# Makes the `prometheus` server and `promtool` binaries available in
# $HALLMARK_DEPLOY_TOOLS/bin (target/deploy-tools/bin by default), for
# scripts/check-deploy.sh and for the integration test tests/prometheus.rs.
#
# Usage: scripts/prometheus-tools.sh
#
# Both binaries come from Debian's prometheus package, fetched with
# `apt-get download` and unpacked with dpkg-deb, so that the package is
# never installed and no Prometheus service is started. When both binaries
# are already there and run, the script does nothing and takes well under a
# second. Binaries are unpacked into a scratch directory beside bin/ and
# renamed into place, so a concurrent run never finds a half-written file.
#
# Environment:
#   HALLMARK_DEPLOY_TOOLS   directory whose bin/ receives the binaries
#                           (default: target/deploy-tools, which git ignores)
#
# Exits 0 when both binaries run, 69 when they cannot be obtained, and 77
# when `apt-get update` is needed but cannot be run as root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=${HALLMARK_DEPLOY_TOOLS:-$repo/target/deploy-tools}
bin=$tools/bin
binaries=(prometheus promtool)

log() { echo "prometheus-tools: $*" >&2; }

all_present() {
  local name
  for name in "${binaries[@]}"; do
    [[ -x "$bin/$name" ]] && "$bin/$name" --version >/dev/null 2>&1 || return 1
  done
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "run as root or install sudo to run: $*"
    exit 77
  fi
}

# Downloads the package into directory $1, running `apt-get update` once
# if the package lists do not list it yet.
download_package() {
  local directory=$1
  if (cd "$directory" && apt-get download prometheus >/dev/null 2>&1); then
    return
  fi
  log "apt-get download prometheus failed; updating the package lists"
  as_root apt-get update -qq >&2
  if ! (cd "$directory" && apt-get download prometheus >&2); then
    log "apt-get download prometheus failed; install Prometheus 2.x and copy" \
      "prometheus and promtool into $bin"
    exit 69
  fi
}

if all_present; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  log "apt-get and dpkg-deb not found; install Prometheus 2.x and copy" \
    "prometheus and promtool into $bin"
  exit 69
fi

mkdir -p "$bin"
scratch=$(mktemp -d "$tools/.prometheus-tools.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# apt-get download runs as the _apt user where it can, which needs to
# write to the directory.
chmod 755 "$scratch"
download_package "$scratch"
package=$(ls "$scratch"/prometheus_*.deb)
log "unpacking ${binaries[*]} from $(basename "$package") into $bin"
dpkg-deb --fsys-tarfile "$package" \
  | tar -x -C "$scratch" "${binaries[@]/#/./usr/bin/}"
for name in "${binaries[@]}"; do
  mv -f "$scratch/usr/bin/$name" "$bin/$name"
done
all_present || { log "the unpacked binaries do not run"; exit 69; }
