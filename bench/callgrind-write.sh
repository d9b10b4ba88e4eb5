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
. "$HERE/bench/_callgrind.sh"
cg_start "$SRC"
cat > "$WORK/client.py" <<'PYCLIENT'
import asyncio, hashlib, os, sys
from bench.sdk import BenchStore
from ctrd.wire._h2 import LargeFrameChannel
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
PYTHONPATH=$HERE "$PY" "$WORK/client.py" "$SOCK" warm 50
cg_zero
PYTHONPATH=$HERE "$PY" "$WORK/client.py" "$SOCK" measured "$BLOBS"
IR=$(cg_total)
echo "instructions per 4 KiB write_blob: $(( IR / BLOBS )) ($IR over $BLOBS blobs)"
