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
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from bench.daemons import BenchError, Ctrd, Daemon
from bench.data import FileBlob, LargeBlob, list_blob, small_blobs
from bench.probe import Probe, Sample, hash_only, write_hash_fsync
from bench.sdk import BenchStore
from ctrd.api.containerd.services.content import v1 as content_api
from ctrd.api.containerd.services.namespaces.v1 import CreateNamespaceRequest, Namespace, NamespacesStub
from ctrd.api.containerd.services.version.v1 import VersionStub
from ctrd.content import write_blob
from ctrd.namespaces import GRPC_HEADER
from ctrd.wire._h2 import LargeFrameChannel

__all__ = ["SCENARIOS", "Context", "Params", "Scenario", "disk_estimate"]

GC_ROOT = {"containerd.io/gc.root": "bench"}
SOURCE_NS = "bench-src"
LIST_NS = "bench-list"
LIST_LABEL = "bench.match"
# a quoted key, as real label keys (containerd.io/gc.root) need
LIST_FILTER = f'labels."{LIST_LABEL}"==yes'
SMALL_SIZE = 4096
MIB = 1 << 20
CHART_SIZES = (1 * MIB, 16 * MIB)  # the SDK ingests between 4 KiB (small) and the large blob
GONE_TIMEOUT = 15.0
SETTLE = 0.5  # after a deletion, let containerd's GC (and ctrd) finish before the next timed run
POLL = 0.005  # cold start: interval between Version calls
_WRITE = "/containerd.services.content.v1.Content/Write"
_LIST = "/containerd.services.content.v1.Content/List"


@dataclass
class Params:
    runs: int
    large_size: int  # large ingest and read
    small_count: int
    concurrency: int
    admissions: int
    policy: str
    admit_large_size: int = 1 << 30  # shared admission of the large blob
    rss_size: int = 1 << 30  # peak-RSS ingest (after one of large_size on the same fresh daemon)
    rss_runs: int = 3  # fresh daemons per kind for the peak-RSS ingest
    list_count: int = 100_000
    list_match: int = 1_000  # blobs carrying the filtered label
    list_writers: int = 64  # concurrent Write streams filling the List daemons
    starts: int = 10  # cold starts per daemon (after one warm-up start)
    chart_bytes: int = 64 * MIB  # bytes per run of the 1 MiB and 16 MiB SDK ingests


@dataclass
class ListDaemon:
    """A daemon of its own holding the List scenarios' blobs, out of the other scenarios' way."""

    daemon: Daemon
    channel: Channel
    fill_seconds: float = 0.0
    fill_cpu: float = 0.0
    memory_after_fill: dict[str, int] = field(default_factory=dict)  # KiB, Daemon.memory()


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
    # daemons started by scenarios (List, cold start, peak RSS); the CLI stops them on every exit
    spawned: list[Daemon] = field(default_factory=list)
    files: dict[int, FileBlob] = field(default_factory=dict)  # size -> file-only blob
    lists: dict[str, ListDaemon] = field(default_factory=dict)  # main daemon name -> its List daemon
    # group -> a ctrd with other settings (early_write_ack, direct_write) and its channel
    variants: dict[str, tuple[Daemon, Channel]] = field(default_factory=dict)

    def store(self, daemon: Daemon, ns: str) -> BenchStore:
        return BenchStore(self.channels[daemon.kind], namespace=ns, timeout=600)

    async def connect(self) -> None:
        for d in self.daemons:
            # the SDK's channel (ctrd.client.Client uses the same one)
            ch = LargeFrameChannel(path=d.socket)
            self.channels[d.kind] = ch
            # open the connection now, so no timed run pays for it
            await BenchStore(ch, namespace=SOURCE_NS).list_statuses()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()
        self.release("list")

    # -- daemons of their own ------------------------------------------------------------
    def spawn(self, like: Daemon, name: str) -> Daemon:
        """Start (not wait for) a fresh daemon like *like* in ``<work>/<name>``."""
        return self.launch(like.sibling(self.work / name))

    def launch(self, sib: Daemon) -> Daemon:
        """Start (not wait for) *sib* in a fresh directory; stopped with the others on exit."""
        shutil.rmtree(sib.directory, ignore_errors=True)
        self.spawned.append(sib)
        sib.spawn()
        return sib

    async def variant(self, group: str, toml: str) -> tuple[Daemon, Channel]:
        """A ctrd like the main one plus *toml*, in ``<work>/ctrd-<group>``; started once per group."""
        if group not in self.variants:
            like = next(d for d in self.daemons if isinstance(d, Ctrd))
            sib = self.launch(like.sibling(self.work / f"ctrd-{group}", toml))
            await wait_version(sib)
            self.variants[group] = (sib, LargeFrameChannel(path=sib.socket))
        return self.variants[group]

    def retire(self, d: Daemon) -> None:
        """Stop a spawned daemon and delete its directory (blobs included)."""
        d.stop()
        with contextlib.suppress(ValueError):
            self.spawned.remove(d)
        shutil.rmtree(d.directory, ignore_errors=True)

    def release(self, group: str) -> None:
        """Stop the daemons of *group* once no later scenario needs them."""
        variant = self.variants.pop(group, None)
        if variant is not None:
            variant[1].close()
            self.retire(variant[0])
        if group == "list":
            for ld in self.lists.values():
                ld.channel.close()
                self.retire(ld.daemon)
            self.lists.clear()

    # -- payloads --------------------------------------------------------------------------
    def file_blob(self, size: int) -> FileBlob:
        """A blob of *size* bytes kept in a file only (built once per size, deleted with the directory)."""
        if size not in self.files:
            print(f"  (writing a {_mib(size)} payload file)", flush=True)
            self.files[size] = FileBlob(self.work / f"file-{size}.bin", size, self.large.view())
        return self.files[size]

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
                    raise BenchError(f"{d.kind}: source blob {dg} has size {info.size}, expected {size}")
        self.sources = {"large": (dgst, self.large.size), "small": (small[1], SMALL_SIZE)}

    async def ensure_admit_large(self) -> None:
        """The large shared-admission source (1 GiB by default), written once per daemon, un-timed."""
        if "admit-large" in self.sources:
            return
        size = self.params.admit_large_size
        if size == self.large.size:
            await self.ensure_sources()
            self.sources["admit-large"] = self.sources["large"]
            return
        blob = self.file_blob(size)
        for d in self.daemons:
            print(f"  (writing the {_mib(size)} admission source into {d.kind})", flush=True)
            st = self.store(d, SOURCE_NS)
            await write_file(st, "src-admit-large", blob, GC_ROOT)
            info = await st.info(blob.digest)
            if info.size != size:
                raise BenchError(f"{d.kind}: source blob {blob.digest} has size {info.size}, expected {size}")
        await asyncio.sleep(SETTLE)
        self.sources["admit-large"] = (blob.digest, size)

    async def ensure_lists(self) -> None:
        """Start one List daemon per kind and fill both (concurrently) with the List blobs."""
        if self.lists:
            return
        p = self.params
        print(
            f"  (filling a List daemon of each kind with {p.list_count} blobs, {p.list_match} labelled "
            f"{LIST_LABEL}=yes, {p.list_writers} concurrent one-message Write streams; not timed)",
            flush=True,
        )
        for d in self.daemons:
            sib = self.spawn(d, f"list-{d.kind}")
            await wait_version(sib)
            self.lists[d.kind] = ListDaemon(sib, LargeFrameChannel(path=sib.socket))
        await asyncio.gather(*(self._fill(ld) for ld in self.lists.values()))

    async def _fill(self, ld: ListDaemon) -> None:
        p = self.params
        md = {GRPC_HEADER: LIST_NS}
        step = max(p.list_count // p.list_match, 1)
        todo = iter(range(p.list_count))
        done = 0
        report_every = max(p.list_count // 10, 1)
        t0 = time.perf_counter()
        cpu0 = sum(ld.daemon.cpu())

        async def worker() -> None:
            nonlocal done
            for i in todo:
                data, dgst = list_blob(i)
                labels = dict(GC_ROOT)
                if i % step == 0 and i // step < p.list_match:
                    labels[LIST_LABEL] = "yes"
                await put_once(ld.channel, md, f"list-{i}", data, dgst, labels)
                done += 1
                if done % report_every == 0:
                    dt = time.perf_counter() - t0
                    print(
                        f"    {ld.daemon.kind}: {done}/{p.list_count} blobs, {done / dt:.0f} blobs/s",
                        flush=True,
                    )

        await asyncio.gather(*(worker() for _ in range(p.list_writers)))
        ld.fill_seconds = time.perf_counter() - t0
        ld.fill_cpu = sum(ld.daemon.cpu()) - cpu0
        ld.memory_after_fill = ld.daemon.memory()


async def put_once(
    channel: Channel, metadata: Mapping[str, str], ref: str, data: bytes, dgst: str, labels: Mapping[str, str]
) -> None:
    """One Write stream whose single message is a COMMIT carrying all the data (one round trip).

    Both daemons accept it (containerd 1.6 writes ``data`` before committing, for WRITE and COMMIT).
    """
    req = content_api.WriteContentRequest(
        action=content_api.WriteAction.COMMIT,
        ref=ref,
        total=len(data),
        expected=dgst,
        data=data,
        labels=dict(labels),
    )
    async with channel.request(
        _WRITE,
        Cardinality.STREAM_STREAM,
        content_api.WriteContentRequest,
        content_api.WriteContentResponse,
        metadata=dict(metadata),
    ) as stream:
        await stream.send_message(req, end=True)
        resp = await stream.recv_message()
        while await stream.recv_message() is not None:  # the repeated last reply
            pass
    if resp is None or resp.digest != dgst:
        raise BenchError(f"one-message write of {dgst} answered {resp!r}")


async def write_file(store: BenchStore, ref: str, blob: FileBlob, labels: Mapping[str, str]) -> None:
    """Ingest a file-only blob through the SDK writer, 1 MiB at a time (bounded client memory)."""
    w = await store.writer(ref, total=blob.size, expected=blob.digest)
    try:
        buf = bytearray(MIB)
        with blob.path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                await w.write(memoryview(buf)[:n])
        await w.commit(blob.size, blob.digest, labels)
    finally:
        await w.close()


async def wait_version(daemon: Daemon, interval: float = POLL, limit: float = 60.0) -> int:
    """Call Version on the daemon's socket every *interval* seconds until it answers; returns the polls."""
    deadline = time.monotonic() + limit
    polls = 0
    ch: Channel | None = None
    last: BaseException | None = None
    try:
        while True:
            polls += 1
            if not daemon.alive():
                raise BenchError(f"{daemon.kind} exited before serving; last log lines:\n{daemon.log_tail()}")
            if os.path.exists(daemon.socket):
                ch = ch or Channel(path=daemon.socket)
                try:
                    await VersionStub(ch).version(timeout=2.0)
                    return polls
                except (OSError, GRPCError, StreamTerminatedError, TimeoutError) as exc:
                    last = exc  # not listening yet, or not serving yet
                    ch.close()
                    ch = None
            if time.monotonic() > deadline:
                raise BenchError(f"{daemon.kind} did not answer Version within {limit:.0f} s: {last!r}")
            await asyncio.sleep(interval)
    finally:
        if ch is not None:
            ch.close()


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
        raise BenchError(f"{daemon.kind}: ctr {' '.join(args)} failed ({p.returncode}): {err}")
    return p


async def wait_gone(daemon: Daemon, dgst: str, settle: float = SETTLE) -> bool:
    """Wait until the daemon removed the blob file (containerd: its GC, after the delete)."""
    path = daemon.blob_path(dgst)
    deadline = time.monotonic() + GONE_TIMEOUT
    while path.exists():
        if time.monotonic() > deadline:
            print(f"bench: warning: {daemon.kind} still holds {dgst} {GONE_TIMEOUT:.0f} s after the delete")
            return False
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    return True


class Scenario:
    key: str
    unit: ClassVar[str]  # "MB/s", "blobs/s", "ms" or "s" (time per operation), "MiB" (Sample.metric)
    machine: ClassVar[bool] = False  # runs without a daemon (machine limits)
    warmup: ClassVar[bool] = True  # round 0 is a discarded warm-up
    group: ClassVar[str | None] = None  # daemons of its own it shares with other scenarios ("list")
    # TOML added to the config of a second ctrd (in ``group``) that the ctrd runs go to instead
    variant_toml: ClassVar[str | None] = None

    def title(self, p: Params) -> str:
        raise NotImplementedError

    def work(self, p: Params) -> float:
        raise NotImplementedError

    def runs(self, p: Params) -> int:
        """Measured rounds."""
        return p.runs

    def blob_size(self, p: Params) -> int | None:
        """Size of each blob written, for the throughput-against-blob-size chart (None: not charted)."""
        return None

    def disk(self, p: Params) -> int:
        """Rough bytes this scenario adds to the benchmark directory (for the free-space check)."""
        return 0

    def skip_reason(self, p: Params) -> str | None:
        return None

    async def setup(self, ctx: Context) -> None:
        if self.variant_toml is not None:
            assert self.group is not None
            await ctx.variant(self.group, self.variant_toml)

    async def prepare(self, ctx: Context, rnd: int) -> None:
        return None

    def target(self, ctx: Context, daemon: Daemon) -> tuple[Daemon, Channel]:
        """The daemon a run against *daemon* talks to, and a channel to it (the variant for ctrd runs)."""
        if self.variant_toml is not None and isinstance(daemon, Ctrd):
            assert self.group is not None
            return ctx.variants[self.group]
        return daemon, ctx.channels[daemon.kind]

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

    def disk(self, p: Params) -> int:
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

    def disk(self, p: Params) -> int:
        return p.large_size

    async def prepare(self, ctx: Context, rnd: int) -> None:
        ctx.large.stamp(f"{self.key}-{rnd}")

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        target, channel = self.target(ctx, daemon)
        ns = ref = f"{self.key}-r{rnd}"
        dgst = ctx.large.digest
        with ctx.large.path.open("rb") as f, Probe(target) as p:
            ctr(ctx, target, ns, "content", "ingest", ref, stdin=f)
        assert p.sample is not None
        info = await BenchStore(channel, namespace=ns, timeout=600).info(dgst)
        if info.size != ctx.large.size or info.digest != dgst:
            raise BenchError(f"{target.kind}: ingested {info.size} bytes as {info.digest}, expected {dgst}")
        ctr(ctx, target, ns, "content", "rm", dgst)
        await wait_gone(target, dgst)
        return p.sample


EARLY_ACK_TOML = '  [plugins."io.containerd.grpc.v1.content"]\n    early_write_ack = true\n'


class IngestCtrEarly(IngestCtr):
    """:class:`IngestCtr` against a ctrd with ``early_write_ack = true`` (containerd unchanged).

    WRITE replies then go out before the chunk is hashed and written, without a
    digest (issue 8 allows it for "more than 1.3x"); STAT and COMMIT keep it.
    """

    key = "ingest-ctr-early"
    group = "early-ack"
    variant_toml = EARLY_ACK_TOML

    def title(self, p: Params) -> str:
        return f"ingest {_mib(p.large_size)}, ctr content ingest, ctrd with early_write_ack"


class IngestSdk(Scenario):
    """``write_blob`` through :class:`RemoteContentStore`: 1 MiB WRITEs, up to 4 in flight."""

    key = "ingest-sdk"
    unit = "MB/s"

    def title(self, p: Params) -> str:
        return f"ingest {_mib(p.large_size)}, SDK write_blob (1 MiB WRITEs, 4 in flight)"

    def blob_size(self, p: Params) -> int | None:
        return p.large_size

    def work(self, p: Params) -> float:
        return p.large_size

    async def prepare(self, ctx: Context, rnd: int) -> None:
        ctx.large.stamp(f"{self.key}-{rnd}")

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        target, channel = self.target(ctx, daemon)
        ns = ref = f"{self.key}-r{rnd}"
        st = BenchStore(channel, namespace=ns, timeout=600)
        dgst = ctx.large.digest
        with Probe(target) as p:
            await write_blob(st, ref, ctx.large.view(), total=ctx.large.size, expected=dgst)
        assert p.sample is not None
        info = await st.info(dgst)
        if info.size != ctx.large.size:
            raise BenchError(f"{target.kind}: ingested {info.size} bytes, expected {ctx.large.size}")
        await st.delete(dgst)
        await wait_gone(target, dgst)
        return p.sample


BUFFERED_TOML = '  [plugins."io.containerd.content.v1.content"]\n    direct_write = false\n'


class IngestSdkBuffered(IngestSdk):
    """:class:`IngestSdk` against a ctrd with ``direct_write = false`` (containerd unchanged).

    Every byte then goes through the page cache, as in containerd and in the
    machine-limit row; the main row's ctrd writes large chunks with ``O_DIRECT``.
    """

    key = "ingest-sdk-buffered"
    group = "buffered"
    variant_toml = BUFFERED_TOML

    def title(self, p: Params) -> str:
        return f"ingest {_mib(p.large_size)}, SDK write_blob, ctrd with direct_write = false"


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

    def blob_size(self, p: Params) -> int | None:
        return None if self.concurrent else SMALL_SIZE

    def work(self, p: Params) -> float:
        return p.small_count

    def disk(self, p: Params) -> int:
        return (p.runs + 1) * p.small_count * 2 * 3 * SMALL_SIZE  # both daemons; blocks, inodes, metadata

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
            raise BenchError(f"{daemon.kind}: namespace {ns} lists {n} blobs, expected {len(blobs)}")
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

    def disk(self, p: Params) -> int:
        return 2 * p.large_size  # the read source, once per daemon (shared with read-ctr)

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
            raise BenchError(f"{daemon.kind}: read {n} bytes of {dgst} with a wrong size or digest")
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
                    raise BenchError(f"{daemon.kind}: ctr content get returned wrong bytes for {dgst}")
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
        return SMALL_SIZE if self.which == "small" else p.admit_large_size

    def title(self, p: Params) -> str:
        return f"shared admission of a {_mib(self._size(p))} blob, SDK (per blob)"

    def work(self, p: Params) -> float:
        return p.admissions

    def disk(self, p: Params) -> int:
        # the source file and one copy per daemon (admissions share the blob)
        return 0 if self.which == "small" or p.admit_large_size == p.large_size else 3 * p.admit_large_size

    def skip_reason(self, p: Params) -> str | None:
        if p.policy != "shared":
            return "needs content_sharing_policy = shared (isolated uploads every byte)"
        return None

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_sources()
        if self.which == "large":
            await ctx.ensure_admit_large()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        dgst, size = ctx.sources["small" if self.which == "small" else "admit-large"]
        names = [f"{self.key}-r{rnd}-{k}" for k in range(ctx.params.admissions)]
        nsapi = NamespacesStub(ctx.channels[daemon.kind])
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
                    f"{daemon.kind}: shared writer for {dgst} reports offset {st.offset}, expected {size}"
                )
        with Probe(daemon) as p:
            for st_ in stores:
                w = await st_.writer("admit", total=size, expected=dgst)
                await w.commit(size, dgst, GC_ROOT)
        assert p.sample is not None
        for st_ in stores[:: max(len(stores) // 4, 1)]:
            info = await st_.info(dgst)
            if info.size != size:
                raise BenchError(f"{daemon.kind}: admitted blob has size {info.size}, expected {size}")
        return p.sample


# -- throughput against blob size (the chart) -----------------------------------------------


class IngestSdkBlobs(Scenario):
    """N fresh blobs of one size through ``write_blob``, one after another (1 MiB WRITEs, 4 in flight).

    With the 4 KiB small ingest and the large SDK ingest, these give the chart's
    ingest throughput against blob size.
    """

    unit = "MB/s"

    def __init__(self, size: int) -> None:
        self.size = size
        self.key = f"ingest-sdk-{size // MIB}m"
        self.blobs: list[tuple[memoryview, str]] = []

    def count(self, p: Params) -> int:
        return max(p.chart_bytes // self.size, 1)

    def blob_size(self, p: Params) -> int | None:
        return self.size

    def title(self, p: Params) -> str:
        return f"{self.count(p)} x {_mib(self.size)}, SDK write_blob, sequential"

    def work(self, p: Params) -> float:
        return self.count(p) * self.size

    def disk(self, p: Params) -> int:
        return self.count(p) * self.size

    async def prepare(self, ctx: Context, rnd: int) -> None:
        raw = memoryview(os.urandom(self.count(ctx.params) * self.size))
        self.blobs = []
        for off in range(0, len(raw), self.size):
            b = raw[off : off + self.size]
            self.blobs.append((b, "sha256:" + hashlib.sha256(b).hexdigest()))

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ns = f"{self.key}-r{rnd}"
        st = ctx.store(daemon, ns)
        with Probe(daemon) as p:
            for i, (data, dgst) in enumerate(self.blobs):
                # gc.root: a collection triggered by an earlier deletion must not take them mid-run
                await write_blob(st, f"blob-{i}", data, total=self.size, expected=dgst, labels=GC_ROOT)
        assert p.sample is not None
        for _, dgst in self.blobs:
            info = await st.info(dgst)
            if info.size != self.size:
                raise BenchError(f"{daemon.kind}: ingested {info.size} bytes, expected {self.size}")
            await st.delete(dgst)
        for _, dgst in self.blobs:
            await wait_gone(daemon, dgst, settle=0.0)
        await asyncio.sleep(SETTLE)
        return p.sample


# -- list -------------------------------------------------------------------------------------


class ListBlobs(Scenario):
    """``List`` through :meth:`RemoteContentStore.walk` on a daemon holding only the List blobs."""

    unit = "s"
    group = "list"

    def __init__(self, filtered: bool) -> None:
        self.filtered = filtered
        self.key = "list-filtered" if filtered else "list-all"

    def title(self, p: Params) -> str:
        if self.filtered:
            return f"List {p.list_count} blobs, label filter matching {p.list_match}, SDK walk"
        return f"List {p.list_count} blobs, no filter, SDK walk"

    def work(self, p: Params) -> float:
        return 1

    def disk(self, p: Params) -> int:
        return 0 if self.filtered else 2 * p.list_count * 3 * SMALL_SIZE

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_lists()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        p = ctx.params
        ld = ctx.lists[daemon.kind]
        st = BenchStore(ld.channel, namespace=LIST_NS, timeout=600)
        filters = (LIST_FILTER,) if self.filtered else ()
        want = p.list_match if self.filtered else p.list_count
        n = labelled = 0
        with Probe(ld.daemon) as probe:
            async for info in st.walk(*filters):
                n += 1
                if rnd == 0 and info.labels.get(LIST_LABEL) == "yes":
                    labelled += 1
        assert probe.sample is not None
        if n != want or (rnd == 0 and labelled != min(want, p.list_match)):
            raise BenchError(f"{daemon.kind}: List returned {n} blobs ({labelled} labelled), expected {want}")
        return probe.sample


class _CountedList:
    """A ``ListContentResponse`` left undecoded: only its ``Info`` entries (field 1) are counted.

    grpclib's codec calls ``FromString``; skipping betterproto's decoding and the SDK's
    conversion leaves the client a few microseconds per message instead of ~60 us per Info.
    """

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    @classmethod
    def FromString(cls, data: bytes) -> _CountedList:  # the name grpclib's codec calls
        n = i = 0
        end = len(data)
        while i < end:
            if data[i] != 0x0A:  # field 1, length-delimited
                raise BenchError(f"unexpected protobuf tag {data[i]:#x} in ListContentResponse")
            i += 1
            size = shift = 0
            while True:
                b = data[i]
                i += 1
                size |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            i += size
            n += 1
        return cls(n)


class ListBlobsRaw(Scenario):
    """``List`` without a filter through grpclib with undecoded replies: what the daemons cost."""

    key = "list-all-raw"
    unit = "s"
    group = "list"

    def title(self, p: Params) -> str:
        return f"List {p.list_count} blobs, no filter, raw stub (replies counted, not decoded)"

    def work(self, p: Params) -> float:
        return 1

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_lists()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ld = ctx.lists[daemon.kind]
        n = 0
        with Probe(ld.daemon) as probe:
            async with ld.channel.request(
                _LIST,
                Cardinality.UNARY_STREAM,
                content_api.ListContentRequest,
                _CountedList,
                metadata={GRPC_HEADER: LIST_NS},
                timeout=600,
            ) as stream:
                await stream.send_message(content_api.ListContentRequest(), end=True)
                async for msg in stream:
                    n += msg.count
        assert probe.sample is not None
        if n != ctx.params.list_count:
            raise BenchError(f"{daemon.kind}: List returned {n} blobs, expected {ctx.params.list_count}")
        return probe.sample


class RssAfterList(Scenario):
    """RSS of the List daemon after it took the List blobs (and served the List runs)."""

    key = "rss-list"
    unit = "MiB"
    group = "list"
    warmup = False

    def title(self, p: Params) -> str:
        return f"daemon RSS after {p.list_count} blobs (and the List runs)"

    def work(self, p: Params) -> float:
        return 1

    def runs(self, p: Params) -> int:
        return 1

    async def setup(self, ctx: Context) -> None:
        await ctx.ensure_lists()

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        ld = ctx.lists[daemon.kind]
        mem = ld.daemon.memory()
        return Sample(
            seconds=ld.fill_seconds,
            metric=mem["VmRSS"] / 1024,
            extra={
                **{f"{k}_kib": v for k, v in mem.items()},
                **{f"after_fill_{k}_kib": v for k, v in ld.memory_after_fill.items()},
                "fill_seconds": ld.fill_seconds,
                "fill_blobs_per_s": ctx.params.list_count / ld.fill_seconds if ld.fill_seconds else 0.0,
                "fill_daemon_cpu": ld.fill_cpu,
            },
        )


# -- cold start ---------------------------------------------------------------------------------


class ColdStart(Scenario):
    """Spawn a fresh daemon (empty root) and call Version every 5 ms until it answers."""

    key = "cold-start"
    unit = "ms"

    def title(self, p: Params) -> str:
        return "cold start to the first served Version call (fresh root)"

    def work(self, p: Params) -> float:
        return 1

    def runs(self, p: Params) -> int:
        return p.starts

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        sib: Daemon | None = None
        try:
            with Probe(daemon, unborn=True) as p:
                sib = ctx.spawn(daemon, f"cold-{daemon.kind}")
                p.daemon = sib
                polls = await wait_version(sib)
            assert p.sample is not None
            p.sample.extra = {"polls": polls, **{f"{k}_kib": v for k, v in sib.memory().items()}}
        finally:
            if sib is not None:
                ctx.retire(sib)
        return p.sample


# -- peak RSS ---------------------------------------------------------------------------------


class PeakRssIngest(Scenario):
    """A fresh daemon takes a large-blob ``ctr content ingest``, then a 1 GiB one; VmHWM after each."""

    key = "rss-ingest"
    unit = "MiB"
    warmup = False

    def title(self, p: Params) -> str:
        return f"daemon peak RSS (VmHWM) after a {_mib(p.rss_size)} ctr ingest (fresh daemon)"

    def work(self, p: Params) -> float:
        return 1

    def runs(self, p: Params) -> int:
        return p.rss_runs

    def disk(self, p: Params) -> int:
        return 2 * p.rss_size + p.large_size  # the payload file, the blobs of one fresh daemon

    async def setup(self, ctx: Context) -> None:
        ctx.file_blob(ctx.params.rss_size)

    async def run(self, ctx: Context, daemon: Daemon | None, rnd: int) -> Sample:
        assert daemon is not None
        p = ctx.params
        big = ctx.file_blob(p.rss_size)
        sib = ctx.spawn(daemon, f"rss-{daemon.kind}")
        try:
            await wait_version(sib)
            hwm_start = sib.memory_kib("VmHWM")
            ns = "bench-rss"
            small_dgst = ctx.large.stamp(f"{self.key}-{rnd}")
            with ctx.large.path.open("rb") as f:
                ctr(ctx, sib, ns, "content", "ingest", "--expected-digest", small_dgst, "rss-small", stdin=f)
            hwm_small = sib.memory_kib("VmHWM")
            with big.path.open("rb") as f, Probe(sib) as probe:
                ctr(ctx, sib, ns, "content", "ingest", "--expected-digest", big.digest, "rss-big", stdin=f)
            assert probe.sample is not None
            hwm_big = sib.memory_kib("VmHWM")
            mem_end = sib.memory()
            ch = Channel(path=sib.socket)
            try:
                info = await BenchStore(ch, namespace=ns).info(big.digest)
            finally:
                ch.close()
            if info.size != p.rss_size:
                raise BenchError(f"{sib.kind}: ingested {info.size} bytes, expected {p.rss_size}")
        finally:
            ctx.retire(sib)
        probe.sample.metric = hwm_big / 1024
        probe.sample.extra = {
            "hwm_start_kib": hwm_start,
            "hwm_after_large_kib": hwm_small,
            "hwm_after_big_kib": hwm_big,
            "large_size": ctx.large.size,
            "big_size": p.rss_size,
            "growth_kib": hwm_big - hwm_small,
            **{f"end_{k}_kib": v for k, v in mem_end.items()},
        }
        return probe.sample


SCENARIOS: list[Scenario] = [
    LimitWriteHashFsync(),
    LimitHash(),
    IngestCtr(),
    IngestCtrEarly(),
    IngestSdk(),
    IngestSdkBuffered(),
    IngestSdkBlobs(CHART_SIZES[0]),
    IngestSdkBlobs(CHART_SIZES[1]),
    SmallIngest(concurrent=False),
    SmallIngest(concurrent=True),
    ReadSdk(),
    ReadCtr(),
    SharedAdmission("small"),
    SharedAdmission("large"),
    ListBlobs(filtered=False),
    ListBlobsRaw(),
    ListBlobs(filtered=True),
    RssAfterList(),
    ColdStart(),
    PeakRssIngest(),
]


def keys() -> list[str]:
    """Scenario keys in run order (for ``--only``)."""
    return [s.key for s in SCENARIOS]


def disk_estimate(p: Params, scenarios: Sequence[Scenario]) -> int:
    """Rough peak bytes of the benchmark directory for *scenarios* (payload file included)."""
    return p.large_size + sum(s.disk(p) for s in scenarios)
