#!/usr/bin/env bash
# Regenerates the gRPC and protobuf stubs that hallmark_client ships, from the
# .proto files in the repository's proto/ folder, with grpcio-tools.
#
# Usage: clients/python/regenerate.sh [--out DIR]
#
# The stubs go to hallmark_client/_proto/ beside this script, or to
# DIR/_proto/ with --out (tests use that to compare a fresh generation with
# the committed files). The generated imports of `hallmark.v1` are rewritten
# to `hallmark_client._proto.hallmark.v1`, so the package needs no other
# `hallmark` folder on sys.path.
#
# The generated code requires a grpcio and a protobuf runtime at least as new
# as the grpcio-tools that made it; pyproject.toml pins those lower bounds.
# After a regeneration with another grpcio-tools, update them to match the
# grpcio-tools version in hallmark_client/_proto/GENERATED_BY and the
# "Protobuf Python Version" in the header of the generated *_pb2.py files.
#
# Environment:
#   PYTHON   interpreter with grpcio-tools (default: the repository's
#            .venv/bin/python, else python3)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$here/hallmark_client

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (usage: $0 [--out DIR])" >&2; exit 64 ;;
  esac
done

python=${PYTHON:-}
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
if ! "$python" -c 'import grpc_tools.protoc' 2>/dev/null; then
  echo "grpcio-tools is not installed for $python; run scripts/python-env.sh or set PYTHON" >&2
  exit 69
fi

mkdir -p "$out"
staging=$(mktemp -d "$out/.proto.XXXXXX")
trap 'rm -rf "$staging"' EXIT

protos=()
while IFS= read -r -d '' file; do protos+=("${file#"$repo/proto/"}"); done \
  < <(find "$repo/proto" -name '*.proto' -print0 | sort -z)
(cd "$repo/proto" && "$python" -m grpc_tools.protoc -I . \
  --python_out="$staging" --pyi_out="$staging" --grpc_python_out="$staging" "${protos[@]}")

# Absolute imports of the generated packages point into this package instead.
find "$staging" -name '*.py' -print0 | xargs -0 sed -i -E \
  's/^from hallmark\.v1 import /from hallmark_client._proto.hallmark.v1 import /'
find "$staging" -type d -print0 | while IFS= read -r -d '' dir; do
  printf '"""Generated from proto/ by clients/python/regenerate.sh; do not edit."""\n' > "$dir/__init__.py"
done
"$python" - "$staging/GENERATED_BY" <<'EOF'
import importlib.metadata as metadata
import sys

with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.write(f"grpcio-tools=={metadata.version('grpcio-tools')}\n")
EOF

rm -rf "$out/_proto"
mv "$staging" "$out/_proto"
trap - EXIT
echo "regenerate.sh: wrote $out/_proto from ${protos[*]}" >&2
