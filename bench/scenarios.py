"""The benchmark scenarios.

Every scenario goes through the same client against both daemons: Debian's
``ctr`` (a fresh process per command, as in real use) or ctrd's SDK
(:class:`ctrd.client.RemoteContentStore` over one grpclib connection per daemon).

A scenario is a class with:

* ``setup(ctx)`` once before its rounds (un-timed), ``prepare(ctx, rnd)`` once per
  round before the daemons take their turn (un-timed, e.g. a fresh payload);
* ``run(ctx, daemon, rnd)`` which does its own un-timed preparation, wraps only the
  measured operation in a :class:`~bench.probe.Probe`, verifies the result and cleans
  up, and returns the :class:`~bench.probe.Sample`;
* ``work``: units of work per run (bytes, blobs or operations) and ``unit``, how a
  median is shown: ``MB/s`` (10^6 bytes), ``blobs/s`` or ``ms`` per operation.

Round 0 is a warm-up (discarded); it also does the expensive checks (digest of
what was read, the shared-admission shortcut actually taken).

Garbage collection: containerd collects content that has no lease and no
``containerd.io/gc.root`` label after every deletion (``mutation_threshold = 0``
stops the mutation-triggered runs). The ingest scenarios delete their blob after
each run, so every blob another scenario needs later carries that label.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from grpclib.client import Channel

from bench.daemons import BenchError, Daemon
from bench.data import LargeBlob, small_blobs
from bench.probe import Probe, Sample, hash_only, write_hash_fsync
from bench.sdk import BenchStore
from ctrd.api.containerd.services.namespaces.v1 import CreateNamespaceRequest, Namespace, NamespacesStub
from ctrd.content import write_blob
from ctrd.namespaces import GRPC_HEADER

__all__ = ["SCENARIOS", "Context", "Params", "Scenario"]

GC_ROOT = {"containerd.io/gc.root": "bench"}
SOURCE_NS = "bench-src"
SMALL_SIZE = 4096
GONE_TIMEOUT = 15.0
SETTLE = 0.5  # after a deletion, let containerd's GC (and ctrd) finish before the next timed run


@dataclass
class Params:
    runs: int
    large_size: int
    small_count: int
    concurrency: int
    admissions: int
    policy: str


@dataclass
class Context:
    """What scenarios share: parameters, payloads, daemons, SDK connections."""

    params: Params
    work: Path
    ctr: str
    large: LargeBlob
    daemons: Sequence[Daemon]
    channels: dict[str, Channel] = field(default_factory=dict)
    sources: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (digest, size)

    def store(self, daemon: Daemon, ns: str) -> BenchStore:
        return BenchStore(self.channels[daemon.name], namespace=ns, timeout=600)

    async def connect(self) -> None:
        for d in self.daemons:
            ch = Channel(path=d.socket)
            self.channels[d.name] = ch
            # open the connection now, so no timed run pays for it
            await BenchStore(ch, namespace=SOURCE_NS).list_statuses()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()

    async def ensure_sources(self) -> None:
        """Blobs the read and admission scenarios use, labelled gc.root, in every daemon."""
        if self.sources:
            return
        dgst = self.large.stamp("bench-source-large")
        small = small_blobs(1, SMALL_SIZE)[0]
        for d in self.daemons:
            st = self.store(d, SOURCE_NS)
            await write_blob(
                st, "src-large", self.large.view(), total=self.large.size, expected=dgst, labels=GC_ROOT
            )
            await write_blob(st, "src-small", small[0], total=SMALL_SIZE, expected=small[1], labels=GC_ROOT)
            for dg, size in ((dgst, self.large.size), (small[1], SMALL_SIZE)):
                info = await st.info(dg)
                if info.size != size:
                    raise BenchError(f"{d.name}: source blob {dg} has size {info.size}, expected {size}")
        self.sources = {"large": (dgst, self.large.size), "small": (small[1], SMALL_SIZE)}


def ctr(
    ctx: Context,
    daemon: Daemon,
    ns: str,
    *args: str,
    stdin: object = subprocess.DEVNULL,
    stdout: object = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    """``ctr --address <sock> --namespace <ns> <args>``; :class:`BenchError` on failure."""
    p = subprocess.run(
        [ctx.ctr, "--address", daemon.socket, "--namespace", ns, *args],
        stdin=stdin,  # type: ignore[arg-type]
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        timeout=600,
        check=False,
    )
    if p.returncode == -signal.SIGINT:  # Ctrl-C reached ctr first (same process group)
        raise KeyboardInterrupt
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        raise BenchError(f"{daemon.name}: ctr {' '.join(args)} failed ({p.returncode}): {err}")
    return p


async def wait_gone(daemon: Daemon, dgst: str) -> bool:
    """Wait until the daemon removed the blob file (containerd: its GC, after the delete)."""
    path = daemon.blob_path(dgst)
    deadline = time.monotonic() + GONE_TIMEOUT
    while path.exists():
        if time.monotonic() > deadline:
            print(f"bench: warning: {daemon.name} still holds {dgst} {GONE_TIMEOUT:.0f} s after the delete")
            return False
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE)
    return True


class Scenario:
    key: str
    unit: ClassVar[str]  # "MB/s", "blobs/s" or "ms"
    machine: ClassVar[bool] = False  # runs without a daemon (machine limits)

    def title(self, p: Params) -> str:
        raise NotImplementedError

    def work(self, p: Params) -> float:
        raise NotImplementedError

    def skip_reason(self, p: Params) -> str | None:
        return None

    async def setup(self, ctx: Context) -> None:
        return None

    async def prepare(self, ctx: Context, rnd: int) -> None:
        return None

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        raise NotImplementedError


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


# -- machine limits -----------------------------------------------------------------------


class LimitWriteHashFsync(Scenario):
    key = "limit-write-sha256-fsync"
    unit = "MB/s"
    machine = True

    def title(self, p: Params) -> str:
        return f"machine: Python write+sha256+fsync {_mib(p.large_size)} (1 MiB chunks, 1 thread)"

    def work(self, p: Params) -> float:
        return p.large_size

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        path = ctx.work / "limit.bin"
        try:
            with Probe(None) as p:
                write_hash_fsync(ctx.large.view(), path)
        finally:
            path.unlink(missing_ok=True)
        assert p.sample is not None
        return p.sample


class LimitHash(Scenario):
    key = "limit-sha256"
    unit = "MB/s"
    machine = True

    def title(self, p: Params) -> str:
        return f"machine: Python sha256 of {_mib(p.large_size)} in memory (1 MiB chunks)"

    def work(self, p: Params) -> float:
        return p.large_size

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        with Probe(None) as p:
            hash_only(ctx.large.view())
        assert p.sample is not None
        return p.sample


# -- large ingest ---------------------------------------------------------------------------


class IngestCtr(Scenario):
    """``ctr content ingest ref < file``: lock-step 1 MiB WRITEs, fresh namespace and ref."""

    key = "ingest-ctr"
    unit = "MB/s"

    def title(self, p: Params) -> str:
        return f"ingest {_mib(p.large_size)}, ctr content ingest"

    def work(self, p: Params) -> float:
        return p.large_size

    async def prepare(self, ctx: Context, rnd: int) -> None:
        ctx.large.stamp(f"{self.key}-{rnd}")

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ns = ref = f"{self.key}-r{rnd}"
        dgst = ctx.large.digest
        with ctx.large.path.open("rb") as f, Probe(daemon) as p:
            ctr(ctx, daemon, ns, "content", "ingest", ref, stdin=f)
        assert p.sample is not None
        info = await ctx.store(daemon, ns).info(dgst)
        if info.size != ctx.large.size:
            raise BenchError(f"{daemon.name}: ingested {info.size} bytes, expected {ctx.large.size}")
        ctr(ctx, daemon, ns, "content", "rm", dgst)
        await wait_gone(daemon, dgst)
        return p.sample


class IngestSdk(Scenario):
    """``write_blob`` through :class:`RemoteContentStore`: 1 MiB WRITEs in lock step."""

    key = "ingest-sdk"
    unit = "MB/s"

    def title(self, p: Params) -> str:
        return f"ingest {_mib(p.large_size)}, SDK write_blob (1 MiB lock-step)"

    def work(self, p: Params) -> float:
        return p.large_size

    async def prepare(self, ctx: Context, rnd: int) -> None:
        ctx.large.stamp(f"{self.key}-{rnd}")

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ns = ref = f"{self.key}-r{rnd}"
        st = ctx.store(daemon, ns)
        dgst = ctx.large.digest
        with Probe(daemon) as p:
            await write_blob(st, ref, ctx.large.view(), total=ctx.large.size, expected=dgst)
        assert p.sample is not None
        info = await st.info(dgst)
        if info.size != ctx.large.size:
            raise BenchError(f"{daemon.name}: ingested {info.size} bytes, expected {ctx.large.size}")
        await st.delete(dgst)
        await wait_gone(daemon, dgst)
        return p.sample


# -- small ingest ---------------------------------------------------------------------------


class SmallIngest(Scenario):
    """N x 4 KiB ``write_blob`` (STAT, STAT, WRITE, COMMIT per blob) on one connection."""

    unit = "blobs/s"

    def __init__(self, concurrent: bool) -> None:
        self.concurrent = concurrent
        self.key = "small-concurrent" if concurrent else "small-sequential"
        self.blobs: list[tuple[bytes, str]] = []

    def title(self, p: Params) -> str:
        how = f"{p.concurrency} concurrent writers" if self.concurrent else "sequential"
        return f"{p.small_count} x 4 KiB, SDK, {how}"

    def work(self, p: Params) -> float:
        return p.small_count

    async def prepare(self, ctx: Context, rnd: int) -> None:
        # fresh content per round: every commit is a first-time blob in its daemon
        self.blobs = small_blobs(ctx.params.small_count, SMALL_SIZE)

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ns = f"{self.key}-r{rnd}"
        st = ctx.store(daemon, ns)
        blobs = self.blobs
        width = ctx.params.concurrency if self.concurrent else 1

        async def worker(start: int) -> None:
            for i in range(start, len(blobs), width):
                data, dgst = blobs[i]
                await write_blob(st, f"blob-{i}", data, total=SMALL_SIZE, expected=dgst, labels=GC_ROOT)

        with Probe(daemon) as p:
            if width == 1:
                await worker(0)
            else:
                await asyncio.gather(*(worker(k) for k in range(width)))
        assert p.sample is not None
        n = 0
        async for _ in st.walk():
            n += 1
        if n != len(blobs):
            raise BenchError(f"{daemon.name}: namespace {ns} lists {n} blobs, expected {len(blobs)}")
        return p.sample


# -- read -----------------------------------------------------------------------------------


class ReadSdk(Scenario):
    """One ``Read`` stream for the whole blob (the server picks the chunk size)."""

    key = "read-sdk"
    unit = "MB/s"

    def title(self, p: Params) -> str:
        return f"read {_mib(p.large_size)}, SDK (one Read stream)"

    def work(self, p: Params) -> float:
        return p.large_size

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_sources()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        dgst, size = ctx.sources["large"]
        st = ctx.store(daemon, SOURCE_NS)
        h = hashlib.sha256() if rnd == 0 else None  # the warm-up checks the bytes
        n = 0
        with Probe(daemon) as p:
            async for chunk in st.read(dgst):
                n += len(chunk)
                if h is not None:
                    h.update(chunk)
        assert p.sample is not None
        if n != size or (h is not None and "sha256:" + h.hexdigest() != dgst):
            raise BenchError(f"{daemon.name}: read {n} bytes of {dgst} with a wrong size or digest")
        return p.sample


class ReadCtr(Scenario):
    """``ctr content get``: Info, then one Read RPC per 32 KiB."""

    key = "read-ctr"
    unit = "MB/s"

    def title(self, p: Params) -> str:
        return f"read {_mib(p.large_size)}, ctr content get (32 KiB Reads)"

    def work(self, p: Params) -> float:
        return p.large_size

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_sources()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        dgst, size = ctx.sources["large"]
        if rnd == 0:  # warm-up: check what ctr gets
            out = ctx.work / "get.out"
            try:
                with out.open("wb") as f, Probe(daemon) as p:
                    ctr(ctx, daemon, SOURCE_NS, "content", "get", dgst, stdout=f)
                data = memoryview(out.read_bytes())
                if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != dgst:
                    raise BenchError(f"{daemon.name}: ctr content get returned wrong bytes for {dgst}")
            finally:
                out.unlink(missing_ok=True)
        else:
            with open(os.devnull, "wb") as f, Probe(daemon) as p:
                ctr(ctx, daemon, SOURCE_NS, "content", "get", dgst, stdout=f)
        assert p.sample is not None
        return p.sample


# -- cross-namespace admission ----------------------------------------------------------------


class SharedAdmission(Scenario):
    """Shared policy: writer in a new namespace with the expected digest, COMMIT with no data."""

    unit = "ms"

    def __init__(self, which: str) -> None:
        self.which = which
        self.key = f"admit-{which}"

    def _size(self, p: Params) -> int:
        return SMALL_SIZE if self.which == "small" else p.large_size

    def title(self, p: Params) -> str:
        return f"shared admission of a {_mib(self._size(p))} blob, SDK (per blob)"

    def work(self, p: Params) -> float:
        return p.admissions

    def skip_reason(self, p: Params) -> str | None:
        if p.policy != "shared":
            return "needs content_sharing_policy = shared (isolated uploads every byte)"
        return None

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_sources()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        dgst, size = ctx.sources[self.which]
        names = [f"{self.key}-r{rnd}-{k}" for k in range(ctx.params.admissions)]
        nsapi = NamespacesStub(ctx.channels[daemon.name])
        for name in names:  # create the namespaces up front: only the admission is timed
            # ctr always sends the header; containerd needs it to publish the create event
            await nsapi.create(
                CreateNamespaceRequest(namespace=Namespace(name=name)), metadata={GRPC_HEADER: name}
            )
        stores = [ctx.store(daemon, name) for name in names]
        if rnd == 0:  # warm-up: check the shortcut is taken (STAT offset == size)
            w = await stores[0].writer("probe", total=size, expected=dgst)
            try:
                st = await w.status()
            finally:
                await w.close()
            if st.offset != size:
                raise BenchError(
                    f"{daemon.name}: shared writer for {dgst} reports offset {st.offset}, expected {size}"
                )
        with Probe(daemon) as p:
            for st_ in stores:
                w = await st_.writer("admit", total=size, expected=dgst)
                await w.commit(size, dgst, GC_ROOT)
        assert p.sample is not None
        for st_ in stores[:: max(len(stores) // 4, 1)]:
            info = await st_.info(dgst)
            if info.size != size:
                raise BenchError(f"{daemon.name}: admitted blob has size {info.size}, expected {size}")
        return p.sample


SCENARIOS: list[Scenario] = [
    LimitWriteHashFsync(),
    LimitHash(),
    IngestCtr(),
    IngestSdk(),
    SmallIngest(concurrent=False),
    SmallIngest(concurrent=True),
    ReadSdk(),
    ReadCtr(),
    SharedAdmission("small"),
    SharedAdmission("large"),
]


def keys() -> list[str]:
    """Scenario keys in run order (for ``--only``)."""
    return [s.key for s in SCENARIOS]
