#!/usr/bin/env bash
# Regenerate src/ctrd_plugin_example/api/ from proto/ (betterproto2, grpclib, async).
# Needs betterproto2-compiler 0.10.* and grpcio-tools next to $PYTHON (ctrd's "proto" extra).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
PYBIN="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')"
export PATH="$PYBIN:$PATH"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/out" "$TMP/work"
printf 'line-length = 110\ntarget-version = "py311"\n' > "$TMP/work/ruff.toml"
(
  cd "$TMP/work"
  "$PY" -m grpc_tools.protoc -I"$ROOT/proto" \
    --python_betterproto2_out="$TMP/out" \
    --python_betterproto2_opt=client_generation=async,server_generation=async \
    "$ROOT/proto/ctrd_example/v1/example.proto"
)
find "$TMP/out" -name '__pycache__' -prune -exec rm -rf {} +
rm -rf "$ROOT/src/ctrd_plugin_example/api"
cp -R "$TMP/out" "$ROOT/src/ctrd_plugin_example/api"
echo "genproto: wrote $ROOT/src/ctrd_plugin_example/api"
