#!/bin/bash
# Daemon instructions per `ctr content get` Read RPC, counted with callgrind (docs/performance.md §5).
#
#   bash bench/callgrind-read.sh [SRC_DIR] [GETS]
#
# Starts ctrd from SRC_DIR (default: this tree's src) under valgrind in a scratch directory,
# ingests a 4 MiB random blob with ctr, warms up with one get, zeroes the counters, runs GETS
# (default 3) gets of 128 Read RPCs each, dumps, and prints user-space instructions per RPC.
# The count repeats to about ±0.2 % whatever the machine's load; wall times do not.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC=${1:-$HERE/src}
GETS=${2:-3}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/ctrd-cg.XXXXXX)
trap 'kill "$VG" 2>/dev/null || true; wait "$VG" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/config.toml" <<CFG
version = 2
root = "$WORK/root"
state = "$WORK/state"
[grpc]
  address = "$WORK/ctrd.sock"
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
  mutation_threshold = 0
CFG
head -c $((4 << 20)) /dev/urandom > "$WORK/blob"
DG=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
PYTHONPATH=$SRC valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.%p" \
  "$PY" -m ctrd --config "$WORK/config.toml" > "$WORK/daemon.log" 2>&1 &
VG=$!
for _ in $(seq 1 240); do [ -S "$WORK/ctrd.sock" ] && break; sleep 0.5; done
CTR=(ctr -a "$WORK/ctrd.sock" -n default)
"${CTR[@]}" content ingest --expected-digest "$DG" --expected-size $((4 << 20)) blob < "$WORK/blob"
"${CTR[@]}" content get "$DG" > /dev/null
callgrind_control -z "$VG" > /dev/null
for _ in $(seq 1 "$GETS"); do "${CTR[@]}" content get "$DG" > /dev/null; done
callgrind_control -d "$VG" > /dev/null
sleep 1
IR=$(grep -h -m1 '^summary:\|^totals:' "$WORK"/cg.out.*.1 | awk '{print $2}')
echo "instructions per Read RPC: $(( IR / (GETS * 128) )) ($IR over $((GETS * 128)) RPCs)"
