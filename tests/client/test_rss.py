"""A 1 GiB ingest through the SDK keeps the client's memory flat.

The client runs in a process of its own (so pytest's memory does not blur the
numbers) and ingests a 1 GiB file by path into a ctrd subprocess. It samples
its own ``VmRSS`` at every progress callback (once per MiB sent) and reports
the resident size before the ingest, the peak during it, and ``VmHWM``. The
size can be lowered with ``CTRD_RSS_INGEST_MIB`` (default 1024).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctrd.remote import PIPELINE
from ctrd.testing import running_ctrd

MiB = 1 << 20
SIZE_MIB = int(os.environ.get("CTRD_RSS_INGEST_MIB", "1024"))
#: the flatness bound: growth of the peak RSS over the pre-ingest RSS
MAX_GROWTH_MIB = 48

CLIENT = r"""
import asyncio, json, sys, time

def rss(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

async def main(address, path, expected):
    from ctrd.client import Client, GC_ROOT_LABEL
    samples = []
    async with Client(address, namespace="rss", timeout=60) as c:
        await c.version()
        # warm up the write path (imports, connection, buffers) before the baseline
        await c.content.ingest("warm", b"x" * (2 << 20), labels={GC_ROOT_LABEL: "w"})
        base = rss()
        t = time.monotonic()
        info = await c.content.ingest(
            "rss", path, expected, labels={GC_ROOT_LABEL: "r"}, progress=lambda o, n: samples.append(rss())
        )
        secs = time.monotonic() - t
        await c.content.delete(info.digest)
    print(json.dumps({"base_kib": base, "peak_kib": max(samples), "hwm_kib": rss("VmHWM"),
                      "samples": len(samples), "seconds": secs, "size": info.size}))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_client_rss_flat_during_1gib_ingest(tmp_path: Path, record_property: object) -> None:
    path = tmp_path / "big"
    block = os.urandom(MiB)
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(SIZE_MIB):
            chunk = block[i % MiB :] + block[: i % MiB]
            f.write(chunk)
            h.update(chunk)
    dgst = "sha256:" + h.hexdigest()
    try:
        with running_ctrd('[plugins."io.containerd.gc.v1.scheduler"]\n  mutation_threshold = 0\n') as d:
            p = subprocess.run(
                [sys.executable, "-c", CLIENT, d.address, str(path), dgst],
                capture_output=True,
                text=True,
                timeout=280,
                check=False,
            )
    finally:
        path.unlink()
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    growth_mib = (r["peak_kib"] - r["base_kib"]) / 1024
    report = (
        f"client RSS during a {SIZE_MIB} MiB ingest: before {r['base_kib'] / 1024:.1f} MiB, "
        f"peak {r['peak_kib'] / 1024:.1f} MiB (+{growth_mib:.1f} MiB), VmHWM {r['hwm_kib'] / 1024:.1f} MiB, "
        f"{r['seconds']:.1f} s ({SIZE_MIB * MiB / r['seconds'] / 1e6:.0f} MB/s)"
    )
    print(report)
    assert callable(record_property)
    record_property("client_rss", report)
    # a progress call whenever a WRITE reply moved the offset: one per MiB, but the
    # last PIPELINE replies arrive together in the final flush
    assert r["size"] == SIZE_MIB * MiB
    assert r["samples"] >= SIZE_MIB + 1 - PIPELINE
    assert growth_mib < MAX_GROWTH_MIB, report
