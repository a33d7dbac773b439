#!/usr/bin/env bash
# Creates or updates the Python virtual environment that the examples and the
# interop tests run in, and prints its path on stdout.
#
# Usage: scripts/python-env.sh
#
# Steps, each skipped when it is already done:
#   1. create .venv in the repository root with `python3 -m venv`
#      (on Debian, installs python3-venv with apt-get when running as root);
#   2. pip install examples/requirements.txt and tests/interop/requirements.txt,
#      and the client package clients/python in editable mode with its test
#      extras (again whenever one of those files or clients/python/pyproject.toml
#      changes);
#   3. generate Python gRPC stubs from proto/ into .venv/hallmark-stubs/
#      (again whenever a .proto file is newer than the stubs or grpcio-tools
#      changed) and add that folder to the venv's sys.path with a .pth file,
#      so that `from hallmark.v1 import signer_pb2, signer_pb2_grpc` works.
#
# Environment:
#   PYTHON   interpreter that creates the venv (default: python3)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/.venv
python=${PYTHON:-python3}
stubs=$venv/hallmark-stubs
requirements=("$repo/examples/requirements.txt" "$repo/tests/interop/requirements.txt")
client_package=$repo/clients/python

log() { echo "python-env: $*" >&2; }

# Two runs at once (a demo and a test run, say) would race on pip and on the
# stubs folder, so the whole script holds a lock on the repository directory.
if command -v flock >/dev/null; then
  exec 9<"$repo"
  flock 9
fi

ensure_venv_module() {
  if "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    local version
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    log "ensurepip is missing for $python; installing python3-venv and python$version-venv with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python$version-venv" >&2
    return
  fi
  log "$python cannot create virtual environments (ensurepip is missing);" \
    "install python3-venv (apt-get install python3-venv) or set PYTHON to another interpreter"
  exit 69
}

create_venv() {
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    return
  fi
  command -v "$python" >/dev/null || { log "$python not found; install CPython 3.9 or newer or set PYTHON"; exit 69; }
  ensure_venv_module
  if [[ -e "$venv" ]]; then
    log "$venv is incomplete or its interpreter is gone; recreating it"
    rm -rf "$venv"
  fi
  log "creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
}

install_requirements() {
  local stamp=$venv/.hallmark-requirements.sha256 wanted
  wanted=$(cat "${requirements[@]}" "$client_package/pyproject.toml" | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && $(cat "$stamp") == "$wanted" ]]; then
    return
  fi
  log "installing Python packages"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  local args=()
  for file in "${requirements[@]}"; do args+=(-r "$file"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
  log "installing $client_package in editable mode"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$client_package[test]" >&2
  echo "$wanted" > "$stamp"
}

stubs_are_current() {
  local stamp=$stubs/.generated-by
  [[ -f "$stamp" && $(cat "$stamp") == "$1" ]] || return 1
  [[ -z $(find "$repo/proto" -name '*.proto' -newer "$stamp" -print -quit) ]]
}

generate_stubs() {
  local tools_version
  tools_version=grpcio-tools-$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')
  if stubs_are_current "$tools_version"; then
    return
  fi
  log "generating Python stubs from proto/ with $tools_version"
  local staging
  staging=$(mktemp -d "$venv/.hallmark-stubs.XXXXXX")
  local protos=()
  while IFS= read -r -d '' file; do protos+=("${file#"$repo/proto/"}"); done \
    < <(find "$repo/proto" -name '*.proto' -print0 | sort -z)
  (cd "$repo/proto" && "$venv/bin/python" -m grpc_tools.protoc -I . \
    --python_out="$staging" --pyi_out="$staging" --grpc_python_out="$staging" "${protos[@]}")
  # Regular packages rather than namespace packages, so that no other
  # `hallmark` folder on sys.path can shadow or merge with the stubs.
  find "$staging" -mindepth 1 -type d -exec touch {}/__init__.py \;
  echo "$tools_version" > "$staging/.generated-by"
  rm -rf "$stubs"
  mv "$staging" "$stubs"
}

install_pth() {
  local site
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$stubs" > "$site/hallmark-stubs.pth"
}

create_venv
install_requirements
generate_stubs
install_pth
"$venv/bin/python" -c 'from hallmark.v1 import signer_pb2, signer_pb2_grpc' \
  || { log "the generated stubs in $stubs do not import; delete $venv and run this script again"; exit 70; }
"$venv/bin/python" -c 'import hallmark_client' \
  || { log "hallmark_client does not import from $client_package; delete $venv and run this script again"; exit 70; }
echo "$venv"
