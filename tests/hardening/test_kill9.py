"""kill -9 under load: acknowledged content survives, nothing is half-visible after a restart.

``tests/gc/test_crash.py`` kills a quiet daemon at each fault point. Here four
clients work concurrently while the collector runs often (``mutation_threshold``
small), and the daemon dies in the middle of it:

* **random SIGKILL** (:func:`test_kill9_at_random_times_under_load`): the test
  kills the daemon at a random moment of each load phase;
* **fault points** (:func:`test_fault_points_hit_under_load`): the daemon runs
  with ``CTRD_FAULT_POINT=<point>`` and a random ``CTRD_FAULT_SKIP``, so it dies
  at that point of a commit, a delete or a collection somewhere in the stream.

The clients, each alone in its namespace (so each knows what its namespace
must hold), share one pool of payloads (so blob files are shared across
namespaces, and commits, deletes and collections race on the same digests) and
each has a few of its own (whose commits write new files and whose deletes free
them):

* ``k-root`` (SDK :class:`~ctrd.client.Client`): ingests with a
  ``containerd.io/gc.root`` label, reads, relabels, removes the root label,
  deletes, leaves half-written ingests;
* ``k-lease`` (SDK): ingests held by a lease, deletes, half-written leased
  ingests, and lease cycles (create, ingest in it, list its resources, delete
  it, sometimes with ``sync``);
* ``k-raw`` (:class:`~ctrd.client.RemoteContentStore` on a bare channel):
  writer/commit with labels, reads, label updates, deletes, ingests aborted;
* ``k-ctr`` (the real ``ctr content ingest`` / ``ctr content rm``): blobs kept by
  references from a root "index" blob.

Every client records what the daemon **acknowledged**: a key (namespace, digest)
is *MUST* (commit acknowledged, protected from the collector), *GONE* (delete
acknowledged, or known absent) or *MAYBE* (unprotected, or its last operation was
in flight when the daemon died). After each death the daemon restarts on the same
root, a collection runs (``Leases.Delete`` with ``sync``), and the test checks:

* the invariants of ``tests/_store_check.py`` (no row without its file, no file or
  ingest directory without its row, every file's bytes match its digest);
* every MUST key is present, its label as last acknowledged, and reading it back
  through the client gives the right bytes; every GONE key is absent;
* every ingest left is one the client started, holds a prefix of the payload and
  at least the bytes acknowledged; then it is resumed (``ctr`` resumes its own)
  to a commit, or aborted.

In-flight and unprotected keys are then settled from what the quiet database
shows, and the next load phase starts. No client error is allowed while the
daemon is up but NOT_FOUND on a MAYBE key and ALREADY_EXISTS opening a writer
for a blob present. Figures: cycles tried, acknowledged commits checked, and the
three that must be 0: acknowledged blobs lost, corrupt, half-visible.
``CTRD_KILL9_SEED`` replays a run's choices (not its timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from _daemon import CTR, DaemonProc, Launcher, version_of
from _store_check import Snapshot, ingest_data, problems, snapshot
from grpclib.client import Channel

from ctrd import _faults, errdefs
from ctrd.client import Client, RemoteContentStore, Resource
from ctrd.content import Info, sha256_of
from ctrd.content.helpers import copy, read_blob
from ctrd.wire.convert import EPOCH

from ._figures import Figures

LONG = os.environ.get("CTRD_LONG") == "1"
pytestmark = pytest.mark.timeout(3600 if LONG else 240)

ROOT = "containerd.io/gc.root"
REF = "containerd.io/gc.ref.content"
SEQ = "t.seq"
MiB = 1 << 20

#: the collector runs often: the next tick after 8 write transactions, up to half the time
CONFIG = """
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.5
  mutation_threshold = 8
  startup_delay = "100ms"
"""
ARGS = ("--log-level", "debug")

MUST, GONE, MAYBE = "must", "gone", "maybe"


SHARED = 20
PRIVATE = 10


def make_pool(rng: random.Random, workers: int) -> list[tuple[bytes, str]]:
    """The payloads: :data:`SHARED` that every client uses (two over 1 MiB, written in several
    messages so that a death lands mid-ingest, a few of hundreds of KB, the rest small), then
    :data:`PRIVATE` small ones per client (their commits write new files, their deletes free
    files: the shared ones are seldom absent from every namespace)."""
    sizes = [2 * MiB + 4321, MiB + 777, 700_000, 300_000, 260_000, 100_000]
    sizes += [rng.randint(1, 40_000) for _ in range(SHARED - len(sizes))]
    sizes += [rng.randint(1, 20_000) for _ in range(PRIVATE * workers)]
    pool = []
    for size in sizes:
        data = rng.randbytes(size)
        pool.append((data, sha256_of(data)))
    return pool


class Dead(Exception):
    """The daemon died under the client: the load phase is over for it."""


@dataclasses.dataclass
class Key:
    """What the daemon acknowledged about one (namespace, digest)."""

    state: str = GONE
    #: values the label ``t.seq`` may have while MUST (None: not checked)
    seqs: set[str] | None = None


@dataclasses.dataclass
class Tally:
    """What every check found (the figures)."""

    cycles: int = 0
    checks: int = 0
    acked_commits_checked: int = 0
    acked_deletes_checked: int = 0
    lost: int = 0
    corrupt: int = 0
    half_visible: int = 0
    resurrected: int = 0
    ingests_checked: int = 0
    resumed: int = 0
    aborted: int = 0
    acks: Counter[str] = dataclasses.field(default_factory=Counter)
    expected_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    failures: list[str] = dataclasses.field(default_factory=list)
    deaths: Counter[str] = dataclasses.field(default_factory=Counter)
    #: seconds spent starting daemons, in load phases, in checks
    seconds: Counter[str] = dataclasses.field(default_factory=Counter)

    def fail(self, what: str) -> None:
        self.failures.append(what)


class World:
    """The daemon of the current life, how it ended, and the shared tally."""

    def __init__(self, launcher: Launcher, rng: random.Random) -> None:
        self.launcher = launcher
        self.rng = rng
        self.tmp = launcher.tmpdir()
        self.pool = make_pool(rng, len(WORKERS))
        #: the payloads as files: ctr reads its stdin from them (an ingest it resumes seeks its input)
        self.files = []
        for j, (data, _) in enumerate(self.pool):
            path = self.tmp / f"payload-{j}"
            path.write_bytes(data)
            self.files.append(path)
        self.tally = Tally()
        self.seq = itertools.count(1)
        self.d: DaemonProc | None = None
        self.fault = False
        self.killed_at: float | None = None
        self.stopping = False

    @property
    def daemon(self) -> DaemonProc:
        assert self.d is not None
        return self.d

    @property
    def root(self) -> Path:
        return Path(self.daemon.root)

    @property
    def sock(self) -> str:
        return self.daemon.socket

    def start(self, fault: tuple[str, int] | None = None) -> bool:
        """Start a life on the same root; False if it died (at its fault point) before serving."""
        env = {"CTRD_FAULT_POINT": "", "CTRD_FAULT_SKIP": ""}
        if fault is not None:
            env = {"CTRD_FAULT_POINT": fault[0], "CTRD_FAULT_SKIP": str(fault[1])}
        self.fault = fault is not None
        t0 = time.monotonic()
        try:
            return self._start(fault, env)
        finally:
            self.tally.seconds["start"] += time.monotonic() - t0

    def _start(self, fault: tuple[str, int] | None, env: dict[str, str]) -> bool:
        self.killed_at = None
        self.stopping = False
        self.d = self.launcher(CONFIG, tmp=self.tmp, env=env, args=ARGS, wait=fault is None)
        if fault is None:
            return True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.daemon.proc.poll() is not None:
                return False
            if os.path.exists(self.sock):
                with contextlib.suppress(Exception):
                    asyncio.run(version_of(self.sock, 1.0))
                    return True
            time.sleep(0.02)
        raise AssertionError(f"ctrd did not answer\n{self.daemon.log()}")

    async def dead(self) -> bool:
        """After a failed call: did the daemon die (rather than answer with an error)?"""
        if self.killed_at is not None:
            return True
        deadline = time.monotonic() + (5.0 if self.fault else 0.0)
        while True:
            if self.daemon.proc.poll() is not None:
                self.stopping = True
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)


# -- the clients ----------------------------------------------------------------------------------


class Worker:
    """One client, alone in its namespace."""

    ns = ""

    def __init__(self, world: World, index: int) -> None:
        self.w = world
        self.rng = random.Random(world.rng.random())
        #: the payloads this client uses: the shared ones and its own
        self.indices = [*range(SHARED), *range(SHARED + PRIVATE * index, SHARED + PRIVATE * (index + 1))]
        self.keys = {j: Key() for j in self.indices}
        #: ingest ``w-<j>`` -> bytes the daemon acknowledged holding (0: it may exist)
        self.partial: dict[int, int] = {}
        #: keys whose presence is unknown (an operation in flight when the daemon died)
        self.uncertain: set[int] = set()
        self.c: Client | None = None

    # -- per life

    async def connect(self) -> None:
        self.c = Client(self.w.sock, namespace=self.ns, timeout=20)

    async def close(self) -> None:
        if self.c is not None:
            await self.c.close()
            self.c = None

    @property
    def client(self) -> Client:
        assert self.c is not None
        return self.c

    async def setup(self) -> None:
        """First life: whatever the client needs once."""

    async def run(self) -> None:
        try:
            while not self.w.stopping:
                await self.step(self.rng.choice(self.indices))
        except Dead:
            pass

    async def step(self, j: int) -> None:
        raise NotImplementedError

    # -- bookkeeping

    def data(self, j: int) -> bytes:
        return self.w.pool[j][0]

    def dg(self, j: int) -> str:
        return self.w.pool[j][1]

    def ack(self, what: str) -> None:
        self.w.tally.acks[f"{self.ns} {what}"] += 1

    def expected(self, what: str) -> None:
        self.w.tally.expected_errors[f"{self.ns} {what}"] += 1

    async def failed(
        self, exc: BaseException, op: str, j: int, *, keeps: bool = False, ingest: str = ""
    ) -> None:
        """A call failed other than as the op expects: in flight at a death (raises :class:`Dead`),
        or a real error (recorded). Either way the key's state is unknown until the next check;
        with *keeps*, the operation could not have removed the blob (a label update). *ingest*:
        the operation ``writes`` to the ingest ``w-<j>`` (it may now exist) or may have ``ends``
        it (committed or aborted: what was acknowledged of it need not be there any more)."""
        if not keeps:
            self.keys[j].state = MAYBE
            self.uncertain.add(j)
        if ingest == "writes":
            self.partial.setdefault(j, 0)
        elif ingest == "ends":
            self.partial[j] = 0
        if await self.w.dead():
            raise Dead from exc
        self.w.tally.fail(f"{self.ns}: {op} of #{j} failed while the daemon was up: {exc!r}")

    def not_found(self, op: str, j: int) -> None:
        """NOT_FOUND for key *j*: expected unless it was acknowledged and protected."""
        k = self.keys[j]
        if k.state == MUST:
            self.w.tally.lost += 1
            self.w.tally.fail(f"{self.ns}: {op} of #{j} ({self.dg(j)}) found nothing: acknowledged blob lost")
        else:
            self.expected(f"{op}: NOT_FOUND")
        k.state = GONE
        self.uncertain.discard(j)

    def verify(self, op: str, j: int, got: bytes) -> None:
        if got != self.data(j):
            self.w.tally.corrupt += 1
            self.w.tally.fail(f"{self.ns}: {op} of #{j} read {len(got)} wrong bytes")

    def seq(self) -> str:
        return str(next(self.w.seq))

    # -- checks after a restart

    def protected(self, snap: Snapshot, j: int) -> bool:
        """Whether the row of key *j* in *snap* is kept by what this client acknowledged."""
        return ROOT in snap.labels.get((self.ns, self.dg(j)), {})

    async def read_back(self, j: int) -> bytes:
        return await self.client.content.read_all(self.dg(j))

    async def check(self, snap: Snapshot) -> None:
        """The acknowledged state against the database, and MUST blobs read back."""
        t = self.w.tally
        for j, k in self.keys.items():
            if j in self.uncertain:
                continue
            key = (self.ns, self.dg(j))
            if k.state == MUST:
                t.acked_commits_checked += 1
                if key not in snap.rows:
                    t.lost += 1
                    t.fail(f"{self.ns}: acknowledged #{j} {self.dg(j)} lost")
                    continue
                value = snap.labels[key].get(SEQ)
                if k.seqs is not None and value not in k.seqs:
                    t.fail(f"{self.ns}: #{j} label {SEQ}={value!r}, acknowledged {sorted(k.seqs)}")
                try:
                    self.verify("read back", j, await self.read_back(j))
                except errdefs.NotFound:
                    t.lost += 1
                    t.fail(f"{self.ns}: acknowledged #{j} {self.dg(j)} unreadable")
            elif k.state == GONE:
                t.acked_deletes_checked += 1
                if key in snap.rows:
                    t.resurrected += 1
                    t.fail(f"{self.ns}: #{j} {self.dg(j)} is back after an acknowledged delete")

    def settle(self, snap: Snapshot) -> None:
        """Keys left unknown by the death, and unprotected ones, take the state the database
        shows (the daemon is quiet, and nobody else writes in this namespace)."""
        for j, k in self.keys.items():
            if j not in self.uncertain and k.state != MAYBE:
                if k.state == MUST and k.seqs is not None and len(k.seqs) > 1:
                    k.seqs = None  # a label update was in flight: either value was right
                continue
            key = (self.ns, self.dg(j))
            if key not in snap.rows:
                k.state, k.seqs = GONE, None
            elif self.protected(snap, j):
                k.state, k.seqs = MUST, {snap.labels[key].get(SEQ, "")} - {""} or None
            else:
                k.state, k.seqs = MAYBE, None
        self.uncertain.clear()

    async def resolve_ingests(self, snap: Snapshot) -> None:
        """Every ingest left holds a prefix of its payload and what was acknowledged; each is
        then resumed to a commit or aborted."""
        t = self.w.tally
        rows = {r: (bref, e) for n, r, bref, e in snap.ingests if n == self.ns}
        listed = {st.ref: st for st in await self.client.content.list_statuses()}
        seen = set()
        for ref in sorted(rows.keys() | listed.keys()):
            m = re.fullmatch(r"w-(\d+)", ref)
            if m is None or int(m.group(1)) not in self.partial:
                t.fail(f"{self.ns}: unknown ingest {ref!r} after restart")
                continue
            j = int(m.group(1))
            seen.add(j)
            t.ingests_checked += 1
            data = self.data(j)
            bref, expected = rows.get(ref, ("", ""))
            if expected:
                # a shared writer (the blob is committed elsewhere): no data of its own, and
                # invisible to Status and ListStatuses, as in containerd
                if expected != self.dg(j) or ref in listed:
                    t.fail(f"{self.ns}: shared ingest {ref} expects {expected}, listed: {ref in listed}")
                continue
            try:
                st = await self.client.content.status(ref)
            except errdefs.NotFound:
                t.fail(f"{self.ns}: ingest {ref} is in the database, Status finds nothing")
                continue
            if ref not in listed:
                t.fail(f"{self.ns}: ListStatuses misses the ingest {ref}")
            held = ingest_data(snap.root, bref) if bref else None
            if held is None or held != data[: len(held)] or len(held) != st.offset:
                t.corrupt += 1
                t.fail(f"{self.ns}: ingest {ref} holds no prefix of its payload (offset {st.offset})")
            if st.offset < self.partial[j]:
                t.lost += 1
                t.fail(
                    f"{self.ns}: ingest {ref} holds {st.offset} bytes, {self.partial[j]} were acknowledged"
                )
        for j, acked in sorted(self.partial.items()):
            if j not in seen and acked > 0:
                t.lost += 1
                t.fail(f"{self.ns}: acknowledged ingest w-{j} ({acked} bytes) is gone")
        self.partial = {j: v for j, v in self.partial.items() if j in seen}
        for j in sorted(seen):
            if self.rng.random() < 0.5:
                await self.resume(j)
                t.resumed += 1
            ref = f"w-{j}"
            try:
                await self.client.content.abort(ref)
                t.aborted += 1
            except errdefs.NotFound:
                pass
            try:
                await self.client.content.status(ref)
                t.fail(f"{self.ns}: ingest {ref} still there after its abort")
            except errdefs.NotFound:
                pass
            self.partial.pop(j, None)

    async def resume(self, j: int) -> None:
        """Finish the ingest ``w-<j>`` as this client commits (no death expected here)."""
        raise NotImplementedError


class RootWorker(Worker):
    """SDK client; what it keeps carries ``containerd.io/gc.root``."""

    ns = "k-root"

    async def step(self, j: int) -> None:
        k = self.keys[j]
        r = self.rng.random()
        if k.state == MUST:
            if r < 0.25:
                await self.read(j)
            elif r < 0.5:
                await self.label(j)
            elif r < 0.6:
                await self.unroot(j)
            elif r < 0.9:
                await self.delete(j)
            else:
                await self.ingest(j)
        elif r < 0.2:
            await self.partial_ingest(j)
        elif k.state == MAYBE and r < 0.5:
            await self.delete(j)
        else:
            await self.ingest(j)

    async def ingest(self, j: int) -> None:
        n = self.seq()
        try:
            await self.client.content.ingest(f"w-{j}", self.data(j), self.dg(j), labels={ROOT: "1", SEQ: n})
        except errdefs.NotFound:  # it existed unprotected, and was collected before it was labelled
            self.not_found("ingest", j)
        except Exception as exc:
            await self.failed(exc, "ingest", j, ingest="ends")
        else:
            self.keys[j] = Key(MUST, {n})
            self.partial.pop(j, None)
            self.ack("commit")

    async def partial_ingest(self, j: int) -> None:
        data = self.data(j)
        try:
            async with self.client.content.writer(f"w-{j}", len(data), self.dg(j)) as w:
                if w.offset < len(data) // 2:
                    await w.write(data[w.offset : len(data) // 2])
                held = w.offset
        except errdefs.AlreadyExists:
            if self.keys[j].state == GONE:
                self.w.tally.fail(f"{self.ns}: #{j} exists although it was deleted")
            self.expected("writer: ALREADY_EXISTS")
        except Exception as exc:
            await self.failed(exc, "partial ingest", j, keeps=True, ingest="writes")
        else:
            self.partial[j] = max(self.partial.get(j, 0), held)
            self.ack("partial ingest")

    async def delete(self, j: int) -> None:
        try:
            await self.client.content.delete(self.dg(j))
        except errdefs.NotFound:
            self.not_found("delete", j)
        except Exception as exc:
            await self.failed(exc, "delete", j)
        else:
            self.keys[j] = Key(GONE)
            self.ack("delete")

    async def read(self, j: int) -> None:
        try:
            got = await self.client.content.read_all(self.dg(j))
        except errdefs.NotFound:
            self.not_found("read", j)
        except Exception as exc:
            await self.failed(exc, "read", j, keeps=True)
        else:
            self.verify("read", j, got)

    async def label(self, j: int) -> None:
        k = self.keys[j]
        n = self.seq()
        try:
            await self.client.content.update(self.dg(j), {SEQ: n})
        except errdefs.NotFound:
            self.not_found("label", j)
        except Exception as exc:
            if k.seqs is not None:
                k.seqs.add(n)
            await self.failed(exc, "label", j, keeps=True)
        else:
            k.seqs = {n}
            self.ack("label")

    async def unroot(self, j: int) -> None:
        try:
            await self.client.content.update(self.dg(j), {ROOT: None})
        except errdefs.NotFound:
            self.not_found("unroot", j)
        except Exception as exc:
            await self.failed(exc, "unroot", j)
        else:
            self.keys[j] = Key(MAYBE)
            self.ack("unroot")

    async def resume(self, j: int) -> None:
        try:
            await self.client.content.ingest(f"w-{j}", self.data(j), self.dg(j), labels={ROOT: "1"})
            self.keys[j] = Key(MUST)
        except errdefs.NotFound:
            self.not_found("resume", j)


class LeaseWorker(Worker):
    """SDK client; what it keeps is held by its lease ``keep``, plus short lease cycles."""

    ns = "k-lease"
    LEASE = "keep"

    def __init__(self, world: World, index: int) -> None:
        super().__init__(world, index)
        #: temporary leases whose deletion was not acknowledged -> the keys each was made for
        self.stale: dict[str, list[int]] = {}

    @property
    def held(self) -> Client:
        return self.client.with_lease(self.LEASE)

    async def setup(self) -> None:
        await self.client.leases.create(self.LEASE)

    async def step(self, j: int) -> None:
        k = self.keys[j]
        r = self.rng.random()
        if k.state == MUST:
            if r < 0.3:
                await self.read(j)
            elif r < 0.45:
                await self.label(j)
            else:
                await self.delete(j)
        elif k.state == MAYBE:
            await self.delete(j)
        elif r < 0.2:
            await self.partial_ingest(j)
        elif r < 0.45:
            await self.lease_cycle(j)
        else:
            await self.ingest(j)

    async def ingest(self, j: int) -> None:
        try:
            await self.held.content.ingest(f"w-{j}", self.data(j), self.dg(j))
        except Exception as exc:
            await self.failed(exc, "ingest", j, ingest="ends")
        else:
            self.keys[j] = Key(MUST)
            self.partial.pop(j, None)
            self.ack("commit")

    async def partial_ingest(self, j: int) -> None:
        data = self.data(j)
        try:
            async with self.held.content.writer(f"w-{j}", len(data), self.dg(j)) as w:
                if w.offset < len(data) // 2:
                    await w.write(data[w.offset : len(data) // 2])
                held = w.offset
        except errdefs.AlreadyExists:
            self.w.tally.fail(f"{self.ns}: #{j} exists although it was deleted")
        except Exception as exc:
            await self.failed(exc, "partial ingest", j, keeps=True, ingest="writes")
        else:
            self.partial[j] = max(self.partial.get(j, 0), held)
            self.ack("partial ingest")

    async def delete(self, j: int) -> None:
        try:
            await self.held.content.delete(self.dg(j))
        except errdefs.NotFound:
            self.not_found("delete", j)
        except Exception as exc:
            await self.failed(exc, "delete", j)
        else:
            self.keys[j] = Key(GONE)
            self.ack("delete")

    async def read(self, j: int) -> None:
        try:
            got = await self.client.content.read_all(self.dg(j))
        except errdefs.NotFound:
            self.not_found("read", j)
        except Exception as exc:
            await self.failed(exc, "read", j, keeps=True)
        else:
            self.verify("read", j, got)

    async def label(self, j: int) -> None:
        try:
            await self.client.content.update(self.dg(j), {SEQ: self.seq()})
        except errdefs.NotFound:
            self.not_found("label", j)
        except Exception as exc:
            await self.failed(exc, "label", j, keeps=True)
        else:
            self.ack("label")

    async def lease_cycle(self, j: int) -> None:
        """A lease of its own for up to three absent payloads (*j* and private ones): created,
        checked to hold them, deleted (their rows and files become garbage at once)."""
        lid = f"t{self.seq()}"
        absent = [i for i in self.indices[SHARED:] if self.keys[i].state == GONE and i != j]
        batch = [j, *self.rng.sample(absent, min(len(absent), self.rng.randint(0, 2)))]
        self.stale[lid] = batch
        try:
            await self.client.leases.create(lid)
        except Exception as exc:
            await self.failed(exc, "lease create", j, keeps=True)
            return
        self.ack("lease create")
        for i in batch:
            try:
                await self.client.with_lease(lid).content.ingest(f"w-{i}", self.data(i), self.dg(i))
            except Exception as exc:
                await self.failed(exc, "ingest in a lease", i, ingest="ends")
                return
            self.keys[i] = Key(MUST)
            self.partial.pop(i, None)
            self.ack("commit")
        try:
            held = await self.client.leases.list_resources(lid)
        except Exception as exc:
            await self.failed(exc, "lease resources", j, keeps=True)
            return
        for i in batch:
            if Resource(id=self.dg(i), type="content") not in held:
                self.w.tally.fail(f"{self.ns}: lease {lid} does not hold #{i} it ingested: {held}")
        try:
            await self.client.leases.delete(lid, sync=self.rng.random() < 0.2)
        except Exception as exc:
            for i in batch:
                self.keys[i] = Key(MAYBE)
            await self.failed(exc, "lease delete", j)
            return
        del self.stale[lid]
        for i in batch:
            self.keys[i] = Key(MAYBE)  # nothing keeps them any more
        self.ack("lease delete")

    def protected(self, snap: Snapshot, j: int) -> bool:
        return (self.ns, self.LEASE, "content", self.dg(j)) in snap.lease_resources

    async def check(self, snap: Snapshot) -> None:
        if (self.ns, self.LEASE) not in snap.leases:
            self.w.tally.fail(f"{self.ns}: the acknowledged lease {self.LEASE} is gone")
        await super().check(snap)

    async def resolve_ingests(self, snap: Snapshot) -> None:
        for lid, batch in sorted(self.stale.items()):
            with contextlib.suppress(errdefs.NotFound):
                await self.client.leases.delete(lid)
            for j in batch:
                if self.keys[j].state == MUST:
                    self.keys[j] = Key(MAYBE)  # that lease may have been all that kept it
        self.stale.clear()
        await super().resolve_ingests(snap)

    async def resume(self, j: int) -> None:
        before = self.keys[j].state
        await self.held.content.ingest(f"w-{j}", self.data(j), self.dg(j))
        if before != MAYBE:  # a new commit in the lease (an existing blob stays as it was)
            self.keys[j] = Key(MUST)


class RawWorker(Worker):
    """:class:`RemoteContentStore` on a bare grpclib channel (writer, commit, abort)."""

    ns = "k-raw"

    async def connect(self) -> None:
        await super().connect()
        self.channel = Channel(path=self.w.sock)
        self.store = RemoteContentStore(self.channel, namespace=self.ns, timeout=20)

    async def close(self) -> None:
        self.channel.close()
        await super().close()

    async def step(self, j: int) -> None:
        k = self.keys[j]
        r = self.rng.random()
        if k.state == MUST:
            if r < 0.3:
                await self.read(j)
            elif r < 0.55:
                await self.label(j)
            else:
                await self.delete(j)
        elif k.state == MAYBE:
            await self.delete(j)
        elif r < 0.25:
            await self.partial_ingest(j, abort=r < 0.12)
        else:
            await self.commit(j)

    async def commit(self, j: int) -> None:
        data, dg = self.data(j), self.dg(j)
        n = self.seq()
        try:
            w = await self.store.writer(f"w-{j}", len(data), dg)
        except errdefs.AlreadyExists:
            self.w.tally.fail(f"{self.ns}: #{j} exists although it was deleted")
            return
        except Exception as exc:
            await self.failed(exc, "open writer", j, ingest="writes")
            return
        try:
            await copy(w, data, len(data), dg, {ROOT: "1", SEQ: n})
        except Exception as exc:
            await self.failed(exc, "commit", j, ingest="ends")
            return
        finally:
            with contextlib.suppress(Exception):
                await w.close()
        self.keys[j] = Key(MUST, {n})
        self.partial.pop(j, None)
        self.ack("commit")

    async def partial_ingest(self, j: int, abort: bool) -> None:
        data, ref = self.data(j), f"w-{j}"
        try:
            w = await self.store.writer(ref, len(data), self.dg(j))
            try:
                offset = (await w.status()).offset
                if offset < len(data) // 2:
                    await w.write(data[offset : len(data) // 2])
                held = (await w.status()).offset
            finally:
                await w.close()
        except errdefs.AlreadyExists:
            self.w.tally.fail(f"{self.ns}: #{j} exists although it was deleted")
            return
        except Exception as exc:
            await self.failed(exc, "partial ingest", j, keeps=True, ingest="writes")
            return
        self.partial[j] = max(self.partial.get(j, 0), held)
        self.ack("partial ingest")
        if not abort:
            return
        try:
            await self.store.abort(ref)
        except Exception as exc:
            await self.failed(exc, "abort", j, keeps=True, ingest="ends")
            return
        self.partial.pop(j, None)
        self.ack("abort")
        try:
            await self.store.status(ref)
            self.w.tally.fail(f"{self.ns}: ingest {ref} still there after an acknowledged abort")
        except errdefs.NotFound:
            pass
        except Exception as exc:
            await self.failed(exc, "status", j, keeps=True)

    async def delete(self, j: int) -> None:
        try:
            await self.store.delete(self.dg(j))
        except errdefs.NotFound:
            self.not_found("delete", j)
        except Exception as exc:
            await self.failed(exc, "delete", j)
        else:
            self.keys[j] = Key(GONE)
            self.ack("delete")

    async def read(self, j: int) -> None:
        try:
            got = await read_blob(self.store, self.dg(j))
        except errdefs.NotFound:
            self.not_found("read", j)
        except Exception as exc:
            await self.failed(exc, "read", j, keeps=True)
        else:
            self.verify("read", j, got)

    async def label(self, j: int) -> None:
        k = self.keys[j]
        n = self.seq()
        info = Info(digest=self.dg(j), size=0, created_at=EPOCH, updated_at=EPOCH, labels={SEQ: n})
        try:
            await self.store.update(info, [f"labels.{SEQ}"])
        except errdefs.NotFound:
            self.not_found("label", j)
        except Exception as exc:
            if k.seqs is not None:
                k.seqs.add(n)
            await self.failed(exc, "label", j, keeps=True)
        else:
            k.seqs = {n}
            self.ack("label")

    async def read_back(self, j: int) -> bytes:
        return await read_blob(self.store, self.dg(j))

    async def resume(self, j: int) -> None:
        await self.client.content.ingest(f"w-{j}", self.data(j), self.dg(j), labels={ROOT: "1"})
        self.keys[j] = Key(MUST)


class CtrWorker(Worker):
    """The real ``ctr``: ``content ingest`` and ``content rm``; a root blob references every
    payload of the pool, so whatever is committed here is kept."""

    ns = "k-ctr"

    async def setup(self) -> None:
        index = b"index of k-ctr"
        labels = {ROOT: "index"} | {f"{REF}.p{j}": dg for j, (_, dg) in enumerate(self.w.pool)}
        await self.client.content.ingest("index", index, sha256_of(index), labels=labels)

    async def ctr(self, *args: str, stdin: Path | None = None) -> tuple[int, str, str]:
        with contextlib.ExitStack() as stack:
            source = (
                stack.enter_context(stdin.open("rb")) if stdin is not None else asyncio.subprocess.DEVNULL
            )
            proc = await asyncio.create_subprocess_exec(
                CTR,
                "--address",
                self.w.sock,
                "--namespace",
                self.ns,
                *args,
                stdin=source,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        talk = asyncio.ensure_future(proc.communicate())
        deadline = time.monotonic() + 30
        while not talk.done():
            await asyncio.wait({talk}, timeout=0.1)
            if self.w.stopping and self.w.daemon.proc.poll() is not None:
                deadline = min(deadline, time.monotonic() + 1.0)  # ctr retries connecting for 10 s
            if not talk.done() and time.monotonic() > deadline:
                proc.kill()
        out, err = talk.result()
        return proc.returncode or 0, out.decode(), err.decode()

    async def ctr_ingest(self, j: int) -> tuple[int, str, str]:
        size, dg = str(len(self.data(j))), self.dg(j)
        args = ("content", "ingest", "--expected-size", size, "--expected-digest", dg, f"w-{j}")
        return await self.ctr(*args, stdin=self.w.files[j])

    async def step(self, j: int) -> None:
        if self.keys[j].state == MUST and self.rng.random() < 0.6:
            await self.delete(j)
        else:
            await self.ingest(j)

    async def ingest(self, j: int) -> None:
        rc, _, err = await self.ctr_ingest(j)
        if rc != 0:
            await self.failed(
                RuntimeError(f"ctr content ingest: exit {rc}: {err.strip()}"), "ingest", j, ingest="ends"
            )
            return
        self.keys[j] = Key(MUST)
        self.partial.pop(j, None)
        self.ack("commit")

    async def delete(self, j: int) -> None:
        rc, out, err = await self.ctr("content", "rm", self.dg(j))
        if rc != 0:
            await self.failed(RuntimeError(f"ctr content rm: exit {rc}: {err.strip()}"), "delete", j)
        elif self.dg(j) not in out:  # ctr says nothing about a digest it did not find
            self.not_found("delete", j)
        else:
            self.keys[j] = Key(GONE)
            self.ack("delete")

    def protected(self, snap: Snapshot, j: int) -> bool:
        return True  # the index references every payload

    async def resume(self, j: int) -> None:
        rc, _, err = await self.ctr_ingest(j)
        if rc != 0:
            self.w.tally.fail(f"{self.ns}: resuming w-{j} with ctr failed: {err.strip()}")
        else:
            self.keys[j] = Key(MUST)


# -- lives, load phases, checks -------------------------------------------------------------------

WORKERS: tuple[type[Worker], ...] = (RootWorker, LeaseWorker, RawWorker, CtrWorker)


class Run:
    """A root, its clients, and the lives of the daemon on it."""

    def __init__(self, launcher: Launcher) -> None:
        if not os.path.exists(CTR):
            pytest.fail(f"{CTR} is missing: install Debian's containerd package", pytrace=False)
        self.seed = int(os.environ.get("CTRD_KILL9_SEED") or random.randrange(1 << 32))
        print(f"\nkill -9 suite: CTRD_KILL9_SEED={self.seed}")
        self.launcher = launcher
        self.w = World(launcher, random.Random(self.seed))
        self.workers = [cls(self.w, i) for i, cls in enumerate(WORKERS)]

    @property
    def tally(self) -> Tally:
        return self.w.tally

    async def _connect(self) -> None:
        for wk in self.workers:
            await wk.connect()

    async def _close(self) -> None:
        for wk in self.workers:
            await wk.close()

    def setup(self) -> None:
        assert self.w.start()

        async def go() -> None:
            await self._connect()
            try:
                for wk in self.workers:
                    await wk.setup()
            finally:
                await self._close()

        asyncio.run(go())

    def load(self, kill_after: float | None, cap: float = 15.0) -> int:
        """Run every client until the daemon dies: killed after *kill_after* seconds, or (None)
        by itself at its fault point (killed after *cap* seconds if it does not get there).
        Returns the exit status."""
        proc = self.w.daemon.proc

        async def go() -> None:
            await self._connect()
            try:
                tasks = [asyncio.create_task(wk.run()) for wk in self.workers]
                deadline = time.monotonic() + (kill_after if kill_after is not None else cap)
                while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 (a process, no event)
                    await asyncio.sleep(0.02)
                self.w.stopping = True
                if proc.poll() is None:
                    self.w.killed_at = time.monotonic()
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.gather(*tasks)
            finally:
                await self._close()

        t0 = time.monotonic()
        asyncio.run(go())
        rc = proc.wait(30)
        self.tally.seconds["load"] += time.monotonic() - t0
        self.tally.cycles += 1
        return rc

    def check(self) -> None:
        """After a restart: collect, check the root and every client's acknowledged state,
        settle what was in flight, resume or abort the ingests left."""
        t = self.tally

        async def go() -> None:
            async with Client(self.w.sock, namespace="k-barrier", timeout=60) as c:
                lease = await c.leases.create()
                await c.leases.delete(lease.id, sync=True)  # returns after a whole collection
            snap = snapshot(self.w.root)
            p = problems(snap)
            t.half_visible += p.half_visible
            t.corrupt += len(p.corrupt)
            if p:
                t.fail(f"after restart {t.checks}: {p}")
            await self._connect()
            try:
                for wk in self.workers:
                    await wk.check(snap)
                for wk in self.workers:
                    wk.settle(snap)
                for wk in self.workers:
                    await wk.resolve_ingests(snap)
            finally:
                await self._close()

        t0 = time.monotonic()
        asyncio.run(go())
        t.seconds["check"] += time.monotonic() - t0
        t.checks += 1

    def report(self, figures: Figures, group: str, cycles: str) -> None:
        t = self.tally
        figures.add(group, cycles, t.cycles)
        figures.add(group, "acknowledged commits checked", t.acked_commits_checked)
        figures.add(group, "acknowledged deletes checked", t.acked_deletes_checked)
        figures.add(group, "acknowledged blobs lost", t.lost)
        figures.add(group, "corrupt", t.corrupt)
        figures.add(group, "half-visible", t.half_visible)
        figures.add(group, "ingests left checked", t.ingests_checked)
        figures.add(group, "operations acknowledged", sum(t.acks.values()))
        print(
            f"\n{group}: seed {self.seed}, {t.cycles} cycles, {t.checks} checks, deaths {dict(t.deaths)}\n"
            f"  seconds: {', '.join(f'{k} {v:.1f}' for k, v in t.seconds.items())}\n"
            f"  acknowledged: {dict(t.acks)}\n  expected errors: {dict(t.expected_errors)}\n"
            f"  checked: commits {t.acked_commits_checked}, deletes {t.acked_deletes_checked}, "
            f"ingests {t.ingests_checked} (resumed {t.resumed}, aborted {t.aborted}); "
            f"lost {t.lost}, corrupt {t.corrupt}, half-visible {t.half_visible}, resurrected {t.resurrected}"
        )
        for d in self.launcher.daemons:
            if "Traceback" in d.log():
                t.fail(f"Traceback in {d.log_path}:\n{d.log()[-3000:]}")
        assert not t.failures, f"seed {self.seed}: " + "\n".join(t.failures[:40])
        assert t.lost == t.corrupt == t.half_visible == t.resurrected == 0
        assert t.checks >= t.cycles > 0
        for wk in self.workers:
            assert t.acks[f"{wk.ns} commit"] > 0, dict(t.acks)
            assert t.acks[f"{wk.ns} delete"] > 0, dict(t.acks)
        assert t.acked_commits_checked > 0
        assert t.acked_deletes_checked > 0


def test_kill9_at_random_times_under_load(daemon: Launcher, figures: Figures, long_run: bool) -> None:
    """SIGKILL at a random moment of each load phase (5 cycles; 60 with ``CTRD_LONG=1``)."""
    run = Run(daemon)
    run.setup()
    for _ in range(60 if long_run else 5):
        rc = run.load(kill_after=run.w.rng.uniform(0.5, 5.0))
        run.tally.deaths["SIGKILL" if rc == -signal.SIGKILL else f"exit {rc}"] += 1
        if rc != -signal.SIGKILL:
            run.tally.fail(
                f"the daemon died by itself (exit {rc}) before the kill:\n{run.w.daemon.log()[-3000:]}"
            )
        assert run.w.start()
        run.check()
    assert run.w.daemon.stop() == 0
    run.report(figures, "kill -9 under load", "kill -9 cycles tried")


#: a random CTRD_FAULT_SKIP in [0, n] per point: hits to let pass, so that the crash lands
#: after some seconds of load (commits are frequent, collections with something to sweep rarer)
SKIPS = {
    "content.commit.before_rename": 40,
    "content.commit.after_rename": 30,
    "metadata.commit.before_tx": 60,
    "metadata.commit.in_tx": 60,
    "metadata.delete.in_tx": 40,
    "metadata.delete.after_tx": 40,
    "gc.sweep.in_tx": 5,
    "gc.sweep.after_db": 5,
    "gc.sweep.between_files": 5,
}


def test_fault_points_hit_under_load(daemon: Launcher, figures: Figures, long_run: bool) -> None:
    """Each fault point (three times with ``CTRD_LONG=1``) reached during the concurrent load."""
    assert sorted(SKIPS) == sorted(_faults.POINTS)
    run = Run(daemon)
    run.setup()
    assert run.w.daemon.stop() == 0
    points = list(_faults.POINTS) * (3 if long_run else 1)
    run.w.rng.shuffle(points)
    reached: Counter[str] = Counter()
    for point in points:
        # a random number of hits let pass, then (a busy machine may not get there within the
        # cap) the first hit, twice, with a longer cap
        for attempt, skip in enumerate((run.w.rng.randint(0, SKIPS[point]), 0, 0)):
            up = run.w.start((point, skip))
            t0, acks = time.monotonic(), run.tally.acks.total()
            cap = 15.0 if attempt == 0 else 40.0
            rc = run.load(kill_after=None, cap=cap) if up else run.w.daemon.proc.wait(30)
            hit = f"fault point {point} reached" in run.w.daemon.log()
            secs, acks = time.monotonic() - t0, run.tally.acks.total() - acks
            how = f"{point} (skip {skip}, {secs:.1f} s, {acks} acks{'' if up else ', at start-up'})"
            run.tally.deaths[how if hit else f"not reached: {how}"] += 1
            if hit and rc != _faults.EXIT_CODE:
                run.tally.fail(f"{point}: exit {rc}, not {_faults.EXIT_CODE}")
            assert run.w.start()
            run.check()
            assert run.w.daemon.stop() == 0
            if hit:
                reached[point] += 1
                break
    run.report(figures, "kill -9 at fault points under load", "fault points tried")
    assert sorted(reached) == sorted(_faults.POINTS), f"points never reached under load: {reached}"
