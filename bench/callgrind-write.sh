#!/bin/bash
# Daemon instructions per 4 KiB SDK write_blob, counted with callgrind (docs/performance.md §5).
#
#   bash bench/callgrind-write.sh [SRC_DIR] [BLOBS]
#
# Starts ctrd from SRC_DIR (default: this tree's src) under valgrind in a scratch directory,
# writes 50 blobs to warm up, zeroes the counters, writes BLOBS (default 200) more, one after
# another, as the bench's small-ingest scenario does (STAT, WRITE, COMMIT with a gc.root label),
# dumps, and prints user-space instructions per blob (all the daemon's threads). The client
# runs outside valgrind, with this tree's bench and SDK. Repeats to about ±0.5 %.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC=${1:-$HERE/src}
BLOBS=${2:-200}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/ctrd-cgw.XXXXXX)
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
cat > "$WORK/client.py" <<'PYCLIENT'
import asyncio, hashlib, os, sys
from bench.sdk import BenchStore
from ctrd._h2 import LargeFrameChannel
from ctrd.content import write_blob

async def main(sock: str, ns: str, n: int) -> None:
    ch = LargeFrameChannel(path=sock)
    try:
        st = BenchStore(ch, namespace=ns, timeout=600)
        for i in range(n):
            data = os.urandom(4096)
            dgst = "sha256:" + hashlib.sha256(data).hexdigest()
            await write_blob(st, f"blob-{i}", data, total=4096, expected=dgst, labels={"containerd.io/gc.root": "x"})
    finally:
        ch.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
PYCLIENT
PYTHONPATH=$SRC valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.%p" \
  "$PY" -m ctrd --config "$WORK/config.toml" > "$WORK/daemon.log" 2>&1 &
VG=$!
for _ in $(seq 1 240); do [ -S "$WORK/ctrd.sock" ] && break; sleep 0.5; done
PYTHONPATH=$HERE "$PY" "$WORK/client.py" "$WORK/ctrd.sock" warm 50
callgrind_control -z "$VG" > /dev/null
PYTHONPATH=$HERE "$PY" "$WORK/client.py" "$WORK/ctrd.sock" measured "$BLOBS"
callgrind_control -d "$VG" > /dev/null
sleep 1
IR=$(grep -h -m1 '^summary:\|^totals:' "$WORK"/cg.out.*.1 | awk '{print $2}')
echo "instructions per 4 KiB write_blob: $(( IR / BLOBS )) ($IR over $BLOBS blobs)"
