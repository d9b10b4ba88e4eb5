"""Crash consistency between SQLite and the blob files: kill the daemon at every fault point.

For each point of :data:`ctrd._faults.POINTS` (local store commit, metadata commit
and delete, GC sweep):

1. **seed** a root with a daemon that does not collect on its own: acknowledged
   content (``gc.root`` blobs, a reference chain, a blob shared into two
   namespaces, a leased blob, an open ingest, an acknowledged delete) plus
   garbage (unrooted blobs, a file and an ingest directory without records);
2. **crash**: start the daemon with ``CTRD_FAULT_POINT=<point>``, perform the
   operation that reaches it (a commit, a delete; for the sweep points the
   start-up collection itself) and see it die with status 137 at that point;
3. **recover**: restart without the fault on the same root, wait for the start-up
   collection, and check on disk and in the database (``tests/_store_check.py``):
   every blob row's file exists with the right bytes; every blob file is referenced
   (garbage collected); every ingest directory has a record and every record its data; all
   acknowledged content is intact and acknowledged deletes stay deleted;
   the interrupted operation is all-or-nothing;
4. **retry** the operation through the client, force a collection
   (``Leases.Delete`` with ``sync=true``) and check everything again.

Figures (cases run, blobs checked, nothing lost) are printed (``pytest -s``)
and summarised in the assertion messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import DaemonProc
from _store_check import CONTENT, Snapshot, problems, snapshot
from grpclib.client import Channel

from ctrd import _faults, errdefs, namespaces
from ctrd.api.containerd.services.leases import v1 as leases_api
from ctrd.client import RemoteContentStore
from ctrd.content import read_blob, sha256_of, write_blob

ROOT = "containerd.io/gc.root"
REF = "containerd.io/gc.ref.content"

#: seeding: no start-up collection and no mutation-count trigger (deletes still collect)
QUIET = '[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "1h"\n  mutation_threshold = 0\n'
#: crash and recovery: containerd's defaults (first collection 100 ms after start)
DEFAULTS = ""

ARGS = ["--log-level", "debug"]


def payload(tag: str, size: int = 3000) -> tuple[bytes, str]:
    data = (f"[{tag}]".encode() * (size // (len(tag) + 2) + 1))[:size]
    return data, sha256_of(data)


@dataclasses.dataclass
class Figures:
    cases: int = 0
    blobs_checked: int = 0
    files_checked: int = 0
    acknowledged_checked: int = 0
    lost: int = 0
    garbage_collected: int = 0
    points: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        return (
            f"crash cases run={self.cases} blobs checked={self.blobs_checked} "
            f"files checked={self.files_checked} acknowledged checked={self.acknowledged_checked} "
            f"garbage collected={self.garbage_collected} lost={self.lost}"
            + (" (nothing lost)" if not self.lost else "")
        )


FIGURES = Figures()


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    print(f"\n{FIGURES.line()}\npoints: {', '.join(FIGURES.points)}")


# -- the world the test knows about -------------------------------------------------------------


@dataclasses.dataclass
class Ledger:
    #: acknowledged and protected: (namespace, digest) -> bytes; must survive everything
    kept: dict[tuple[str, str], bytes] = dataclasses.field(default_factory=dict)
    #: acknowledged deletes: must never come back
    deleted: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: unprotected content: must be collected
    garbage: set[str] = dataclasses.field(default_factory=set)
    #: the operation in flight at the crash: (namespace, digest) -> bytes, all-or-nothing
    in_flight: dict[tuple[str, str], bytes] = dataclasses.field(default_factory=dict)
    lease: str = ""


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


@contextlib.contextmanager
def ns(name: str, lease: str | None = None) -> Iterator[None]:
    with namespaces.with_namespace(name), namespaces.with_lease(lease):
        yield


@contextlib.asynccontextmanager
async def connect(d: DaemonProc) -> Any:
    ch = Channel(path=d.socket)
    try:
        yield RemoteContentStore(ch), leases_api.LeasesStub(ch)
    finally:
        ch.close()


def seed(d: DaemonProc) -> Ledger:
    led = Ledger()
    tmp = Path(d.root)

    async def go() -> None:
        async with connect(d) as (store, leases):
            resp = await leases.create(
                leases_api.CreateRequest(id="keep"), metadata={namespaces.GRPC_HEADER: "a"}
            )
            led.lease = resp.lease.id
            (r1, d1), (r2, d2), (c1, dc1), (c2, dc2), (sh, dsh), (le, dle), (gone, dgone) = (
                payload(t) for t in ("root1", "root2", "child", "grandchild", "shared", "leased", "deleted")
            )
            with ns("a"):
                await write_blob(store, "r1", r1, labels={ROOT: "1"})
                await write_blob(store, "c2", c2)
                await write_blob(store, "c1", c1, labels={f"{REF}.next": dc2})
                await write_blob(store, "r2", r2, labels={ROOT: "1", f"{REF}/child": dc1})
                await write_blob(store, "sh", sh, labels={ROOT: "1"})
                await write_blob(store, "gone", gone, labels={ROOT: "1"})
                # an acknowledged delete (it triggers a collection, with nothing else to collect)
                await store.delete(dgone)
            with ns("b"):
                await write_blob(store, "sh", sh, expected=dsh, labels={ROOT: "b"})
            with ns("a", lease=led.lease):
                await write_blob(store, "le", le)
                w = await store.writer("partial", total=9000)
                await w.write(b"p" * 4500)
                await w.close()
            for key, data in (
                (("a", d1), r1),
                (("a", d2), r2),
                (("a", dc1), c1),
                (("a", dc2), c2),
                (("a", dsh), sh),
                (("b", dsh), sh),
                (("a", dle), le),
            ):
                led.kept[key] = data
            led.deleted.add(("a", dgone))
            # wait for the delete-triggered collection, then add garbage that nothing collects yet
            d.wait_for_log(r"garbage collected .*blobs=0 files=1")
            with ns("g"):
                for i in range(3):
                    data, dg = payload(f"garbage-{i}")
                    await write_blob(store, f"g{i}", data)
                    led.garbage.add(dg)

    run(go)
    # a file and an ingest directory with no record at all (crash leftovers of an earlier life)
    orphan, dorphan = payload("orphan file")
    blobs = tmp / CONTENT / "blobs" / "sha256"
    (blobs / dorphan.split(":")[1]).write_bytes(orphan)
    led.garbage.add(dorphan)
    odir = tmp / CONTENT / "ingest" / hashlib.sha256(b"x/0/leftover").hexdigest()
    odir.mkdir()
    (odir / "ref").write_bytes(b"x/0/leftover")
    (odir / "data").write_bytes(b"leftover")
    return led


# -- the operations that reach each fault point -------------------------------------------------

NEW = payload("new commit", 200_000)
DELETED_IN_FLIGHT = ("a", payload("root1")[1])


async def op_commit(store: RemoteContentStore, _led: Ledger) -> None:
    data, dgst = NEW
    with ns("a"):
        await write_blob(store, "new", data, expected=dgst, labels={ROOT: "new"})


async def op_delete(store: RemoteContentStore, _led: Ledger) -> None:
    with ns(DELETED_IN_FLIGHT[0]):
        await store.delete(DELETED_IN_FLIGHT[1])


async def op_none(_store: RemoteContentStore, _led: Ledger) -> None:
    """The sweep points are reached by the start-up collection of the garbage seeded."""


def operation(point: str) -> tuple[Callable[[RemoteContentStore, Ledger], Any], str]:
    if point.startswith(("content.commit", "metadata.commit")):
        return op_commit, "commit"
    if point.startswith("metadata.delete"):
        return op_delete, "delete"
    return op_none, "sweep"


# -- invariants on disk and in the database -------------------------------------------------------


def check(root: Path, led: Ledger, stage: str, *, in_flight_done: bool | None = None) -> Snapshot:
    """Assert every invariant; return the snapshot. *in_flight_done*: None = either way."""
    s = snapshot(root)
    where = f"[{stage}]"
    p = problems(s)
    FIGURES.blobs_checked += p.rows_checked
    FIGURES.files_checked += p.files_checked
    assert not p, f"{where} {p}; {FIGURES.line()}"
    lost = [k for k, data in led.kept.items() if k not in s.rows or s.files.get(k[1]) != data]
    FIGURES.acknowledged_checked += len(led.kept)
    FIGURES.lost += len(lost)
    assert not lost, f"{where} acknowledged content lost: {lost}; {FIGURES.line()}"
    back = [k for k in led.deleted if k in s.rows]
    assert not back, f"{where} acknowledged deletes came back: {back}"
    left = sorted(led.garbage & s.files.keys())
    assert not left, f"{where} garbage not collected: {left}"
    assert ("a", "partial") in {(n, r) for n, r, _, _ in s.ingests}, f"{where} the live ingest was lost"
    for key, data in led.in_flight.items():
        present = key in s.rows
        if present:
            assert s.files.get(key[1]) == data, f"{where} interrupted operation left {key} half done"
        if in_flight_done is not None:
            assert present == in_flight_done, f"{where} {key} present={present}, expected {in_flight_done}"
    return s


def wait_collected(d: DaemonProc, count: int = 1, timeout: float = 20.0) -> None:
    d.wait_for(lambda: d.log().count("garbage collected") >= count, timeout, "a garbage collection")


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", _faults.POINTS)
def test_crash_at_fault_point_converges(daemon: Callable[..., DaemonProc], point: str) -> None:
    # 1. seed
    d0 = daemon(QUIET, args=ARGS)
    led = seed(d0)
    assert d0.stop() == 0
    root = Path(d0.root)
    assert d0.config_path is not None
    d0.config_path.write_text(d0.config_path.read_text().replace(QUIET, DEFAULTS))

    # 2. crash at the point
    op, kind = operation(point)
    if kind == "commit":
        led.in_flight[("a", NEW[1])] = NEW[0]
    elif kind == "delete":
        led.in_flight[DELETED_IN_FLIGHT] = led.kept.pop(DELETED_IN_FLIGHT)
    # the sweep points are hit by the start-up collection, possibly before the socket answers
    d1 = daemon(tmp=d0.tmp, env={"CTRD_FAULT_POINT": point}, args=ARGS, wait=kind != "sweep")
    outcome: list[BaseException] = []

    async def crash() -> None:
        async with connect(d1) as (store, _):
            try:
                await op(store, led)
            except Exception as exc:
                outcome.append(exc)

    if kind != "sweep":
        run(crash)
    rc = d1.proc.wait(30)
    log1 = d1.log()
    assert rc == _faults.EXIT_CODE, f"daemon exited {rc}, not at the fault point\n{log1}"
    assert f"fault point {point} reached" in log1, log1
    if kind != "sweep":
        assert outcome, f"the {kind} was acknowledged although the daemon died in it"

    # 3. recover: restart on the same root, let the start-up collection run, check
    blobs = root / CONTENT / "blobs" / "sha256"
    garbage_left = led.garbage & {f"sha256:{p.name}" for p in blobs.iterdir()}
    d2 = daemon(tmp=d0.tmp, env={"CTRD_FAULT_POINT": ""}, args=ARGS)
    wait_collected(d2)
    s = check(root, led, f"{point}: after restart")
    FIGURES.garbage_collected += len(garbage_left)

    # 4. retry the interrupted operation through the client, collect, check again
    async def retry() -> None:
        async with connect(d2) as (store, leases):
            with contextlib.suppress(errdefs.AlreadyExists, errdefs.NotFound):
                await op(store, led)
            for (n, dg), data in led.kept.items():
                with ns(n):
                    assert await read_blob(store, dg) == data, f"{point}: {n}/{dg} unreadable after restart"
            lid = (
                await leases.create(
                    leases_api.CreateRequest(id="sync"), metadata={namespaces.GRPC_HEADER: "t"}
                )
            ).lease.id
            await leases.delete(
                leases_api.DeleteRequest(id=lid, sync=True), metadata={namespaces.GRPC_HEADER: "t"}
            )

    run(retry)
    if kind == "commit":
        led.kept.update(led.in_flight)
    elif kind == "delete":
        led.deleted.update(led.in_flight)
    led.in_flight.clear()
    check(root, led, f"{point}: after retry and collection")
    assert d2.stop() == 0
    FIGURES.cases += 1
    FIGURES.points.append(point)
    print(
        f"\n[{point}] op={kind} died as injected; after restart rows={len(s.rows)} files={len(s.files)} "
        f"ingests={len(s.ingests)}; {FIGURES.line()}"
    )


def test_crash_figures() -> None:
    """All points ran (when the whole module runs) and nothing acknowledged was lost."""
    if FIGURES.cases == 0:
        pytest.skip("no crash case ran in this session")
    print(f"\n{FIGURES.line()}")
    assert FIGURES.lost == 0, FIGURES.line()
    assert FIGURES.blobs_checked > 0, FIGURES.line()
    assert FIGURES.acknowledged_checked > 0, FIGURES.line()
    if FIGURES.cases == len(_faults.POINTS):
        assert sorted(FIGURES.points) == sorted(_faults.POINTS), FIGURES.line()
