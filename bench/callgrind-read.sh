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
. "$HERE/bench/_callgrind.sh"
cg_start "$SRC"
head -c $((4 << 20)) /dev/urandom > "$WORK/blob"
DG=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
CTR=(ctr -a "$SOCK" -n default)
"${CTR[@]}" content ingest --expected-digest "$DG" --expected-size $((4 << 20)) blob < "$WORK/blob"
"${CTR[@]}" content get "$DG" > /dev/null
cg_zero
for _ in $(seq 1 "$GETS"); do "${CTR[@]}" content get "$DG" > /dev/null; done
IR=$(cg_total)
echo "instructions per Read RPC: $(( IR / (GETS * 128) )) ($IR over $((GETS * 128)) RPCs)"
