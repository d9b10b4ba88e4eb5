#!/usr/bin/env bash
# Regenerate the betterproto2 bindings in src/ctrd/api/ from proto/.
#
# Usage: [PYTHON=/path/to/python] scripts/genproto.sh [OUTPUT_DIR]
#   OUTPUT_DIR defaults to src/ctrd/api (relative paths are taken from the
#   repository root). PYTHON must have the `proto` extra installed
#   (betterproto2-compiler, grpcio-tools); default python3.
#
# Whatever this script produces is the reference: tests/test_proto_stale.py
# runs it into a temporary directory and requires src/ctrd/api to match it
# byte for byte.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_ARG="${1:-src/ctrd/api}"
case "$OUT_ARG" in
  /*) DEST="$OUT_ARG" ;;
  *) DEST="$ROOT/$OUT_ARG" ;;
esac

PY="${PYTHON:-python3}"
# protoc-gen-python_betterproto2 and the ruff it shells out to are installed
# next to the interpreter. Use sys.executable's directory rather than
# resolving symlinks so that virtualenvs keep working.
PYBIN="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')"
export PATH="$PYBIN:$PATH"
for tool in protoc-gen-python_betterproto2 ruff; do
  command -v "$tool" >/dev/null || {
    echo "genproto: '$tool' not found next to $PY; install the 'proto' extra" \
         "(pip install -e '.[proto]')" >&2
    exit 1
  }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/out" "$TMP/work"

# The compiler formats its output with `ruff check --fix` + `ruff format`
# run in protoc's working directory, so ruff would pick up whatever config it
# finds there (e.g. the project's pyproject.toml). Run from a scratch dir with
# a fixed config so the output only depends on proto/ and the tool versions.
cat > "$TMP/work/ruff.toml" <<'TOML'
line-length = 110
target-version = "py311"
TOML

# Deterministic input order; absolute paths that protoc maps back onto the
# proto/ root given with -I.
mapfile -t PROTOS < <(cd "$ROOT/proto" && find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
(
  cd "$TMP/work"
  "$PY" -m grpc_tools.protoc -I"$ROOT/proto" \
    --python_betterproto2_out="$TMP/out" \
    --python_betterproto2_opt=client_generation=async,server_generation=async \
    "${PROTOS[@]/#/$ROOT/proto/}" \
    > "$TMP/protoc.log" 2>&1
) || { cat "$TMP/protoc.log" >&2; exit 1; }

# betterproto2-compiler 0.10.1 keeps this import in any module that defines a
# message called Descriptor (containerd.types.Descriptor). It would shadow
# nothing useful and drag in the protobuf runtime, so strip it.
find "$TMP/out" -name '*.py' -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' f; do
  sed -i '/^from google\.protobuf\.descriptor import Descriptor$/d' "$f"
done
if grep -rqE '^(import|from) google\.protobuf' "$TMP/out"; then
  echo "genproto: generated code imports the protobuf runtime:" >&2
  grep -rnE '^(import|from) google\.protobuf' "$TMP/out" >&2
  exit 1
fi
find "$TMP/out" -name '__pycache__' -prune -exec rm -rf {} +

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -R "$TMP/out" "$DEST"
echo "genproto: wrote $DEST"
