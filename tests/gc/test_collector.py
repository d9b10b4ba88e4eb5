"""Mark and sweep (:mod:`ctrd.metadata.gc`) over a real SQLite database and local store."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import Info, read_blob, sha256_of, utcnow, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import DB, NamespacedContentStore, SharingPolicy
from ctrd.metadata.db import labels_to_json, to_us
from ctrd.metadata.gc import GarbageCollector, GCStats, parse_expire

ROOT = "containerd.io/gc.root"
REF = "containerd.io/gc.ref.content"
EXPIRE = "containerd.io/gc.expire"


class Clock:
    """An injectable clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = _dt.timedelta()

    def __call__(self) -> _dt.datetime:
        return utcnow() + self.offset


class Env:
    def __init__(self, root: Path, db: DB, backend: LocalStore, store: NamespacedContentStore) -> None:
        self.root = root
        self.db = db
        self.backend = backend
        self.store = store
        self.clock = Clock()
        self.gc = GarbageCollector(db, backend, store.gate, clock=self.clock)

    async def collect(self) -> GCStats:
        return await self.gc.collect()

    def files(self) -> set[str]:
        d = self.root / "content" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in d.glob("*")} if d.exists() else set()

    def ingest_dirs(self) -> set[str]:
        return {p.name for p in (self.root / "content" / "ingest").iterdir()}

    async def rows(self, ns: str) -> set[str]:
        return {
            str(r[0]) for r in await self.db.view_all("SELECT digest FROM blobs WHERE namespace = ?", (ns,))
        }

    async def ingests(self) -> set[tuple[str, str]]:
        rows = await self.db.view_all("SELECT namespace, ref FROM ingests")
        return {(str(a), str(b)) for a, b in rows}

    async def add_lease(self, ns: str, lease: str, labels: dict[str, str] | None = None) -> None:
        async with self.db.update() as tx:
            await tx.ensure_namespace(ns, to_us(utcnow()))
            await tx.run(
                "INSERT INTO leases(namespace, id, created_at, labels) VALUES (?, ?, ?, ?)",
                (ns, lease, to_us(utcnow()), labels_to_json(labels or {})),
            )

    async def drop_lease(self, ns: str, lease: str) -> None:
        async with self.db.update() as tx:
            await tx.run("DELETE FROM lease_resources WHERE namespace = ? AND lease = ?", (ns, lease))
            await tx.run("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, lease))


@contextlib.contextmanager
def ns(name: str, lease: str | None = None) -> Iterator[None]:
    with namespaces.with_namespace(name), namespaces.with_lease(lease):
        yield


async def _env(tmp_path: Path, policy: SharingPolicy) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    backend = LocalStore(tmp_path / "content")
    try:
        yield Env(tmp_path, db, backend, NamespacedContentStore(db, backend, policy))
    finally:
        await db.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, SharingPolicy.SHARED):
        yield e


@pytest.fixture
async def isolated(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, SharingPolicy.ISOLATED):
        yield e


def blob(tag: str) -> tuple[bytes, str]:
    data = f"blob {tag} ".encode() * 7
    return data, sha256_of(data)


# -- what is live -------------------------------------------------------------------------------


async def test_unreferenced_blob_goes_with_its_file(env: Env) -> None:
    data, d = blob("loose")
    with ns("a"):
        await write_blob(env.store, "r", data)
    assert d in env.files()
    stats = await env.collect()
    assert (stats.blobs, stats.files, stats.bytes) == (1, 1, len(data))
    assert d not in env.files()
    with ns("a"), pytest.raises(errdefs.NotFound):
        await env.store.info(d)
    again = await env.collect()
    assert not again.removed_anything()


async def test_root_and_reference_chains_survive(env: Env) -> None:
    blobs = {t: blob(t) for t in ("root", "child", "dot", "slash", "grand", "cycle", "loose", "dangling-ref")}
    dg = {t: d for t, (_, d) in blobs.items()}
    labels = {
        "root": {ROOT: "2020-01-01T00:00:00Z", f"{REF}.config": dg["child"], f"{REF}/layer": dg["slash"]},
        "child": {REF: dg["dot"]},
        "dot": {f"{REF}.x": dg["grand"]},
        "grand": {f"{REF}.back": dg["root"], f"{REF}.c": dg["cycle"]},
        "cycle": {REF: dg["grand"]},
        # not live: nothing reaches it, although it references live content
        "dangling-ref": {REF: dg["root"]},
        # a label that only looks like a reference keeps nothing
        "slash": {f"{REF}x": dg["loose"], "containerd.io/gc.ref.contentx": dg["loose"]},
    }
    with ns("a"):
        for tag, (data, _) in blobs.items():
            await write_blob(env.store, tag, data, labels=labels.get(tag))
    stats = await env.collect()
    assert await env.rows("a") == {dg[t] for t in ("root", "child", "dot", "slash", "grand", "cycle")}
    assert stats.blobs == 2
    assert dg["loose"] not in env.files()
    assert dg["dangling-ref"] not in env.files()
    # dropping the root label lets the whole chain go
    with ns("a"):
        await env.store.update(
            Info(digest=dg["root"], size=0, created_at=utcnow(), updated_at=utcnow()), ["labels"]
        )
    stats = await env.collect()
    assert stats.blobs == 6
    assert await env.rows("a") == set()
    assert env.files() == set()


async def test_references_stay_in_their_namespace(env: Env) -> None:
    (pdata, parent), (cdata, child) = blob("parent"), blob("child")
    with ns("a"):
        await write_blob(env.store, "p", pdata, labels={ROOT: "x", REF: child})
    with ns("b"):
        await write_blob(env.store, "c", cdata)
    await env.collect()
    # a's reference does not keep b's blob: b's row goes, and with it the file
    assert await env.rows("b") == set()
    assert child not in env.files()
    assert parent in env.files()


async def test_leased_content_survives_until_the_lease_goes(env: Env) -> None:
    data, d = blob("leased")
    await env.add_lease("a", "l1")
    with ns("a", lease="l1"):
        await write_blob(env.store, "r", data)
    stats = await env.collect()
    assert not stats.removed_anything()
    assert await env.rows("a") == {d}
    assert d in env.files()
    await env.drop_lease("a", "l1")
    stats = await env.collect()
    assert (stats.blobs, stats.files) == (1, 1)
    assert d not in env.files()


async def test_lease_resource_in_other_namespace_keeps_nothing(env: Env) -> None:
    data, d = blob("victim")
    with ns("a"):
        await write_blob(env.store, "r", data)
    await env.add_lease("b", "l")
    async with env.db.update() as tx:
        await tx.run("INSERT INTO lease_resources VALUES ('b', 'l', 'content', ?)", (d,))
    await env.collect()
    assert d not in env.files()


@pytest.mark.parametrize(
    ("expire", "survives"),
    [
        ("2000-01-01T00:00:00Z", False),
        ("2000-01-01T00:00:00.123456789+02:00", False),
        ("2999-01-01T00:00:00Z", True),
        ("not a time", True),  # unparsable: ignored, the lease never expires (containerd)
        ("2024-13-01T00:00:00Z", True),
        ("", True),  # empty labels are never stored: no expiry at all
    ],
)
async def test_lease_expiry(env: Env, expire: str, survives: bool) -> None:
    data, d = blob("exp")
    await env.add_lease("a", "l", {EXPIRE: expire, "other": "x"})
    with ns("a", lease="l"):
        await write_blob(env.store, "r", data)
    stats = await env.collect()
    leases = await env.db.view_all("SELECT id FROM leases")
    resources = await env.db.view_all("SELECT id FROM lease_resources")
    if survives:
        assert (stats.leases, stats.blobs) == (0, 0)
        assert len(leases) == 1
        assert len(resources) == 1
        assert d in env.files()
    else:
        assert (stats.leases, stats.blobs, stats.files) == (1, 1, 1)
        assert leases == []
        assert resources == []
        assert d not in env.files()


async def test_lease_expires_by_the_injected_clock(env: Env) -> None:
    data, _ = blob("soon")
    at = (utcnow() + _dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await env.add_lease("a", "l", {EXPIRE: at})
    with ns("a", lease="l"):
        await write_blob(env.store, "r", data)
    assert (await env.collect()).leases == 0
    env.clock.offset = _dt.timedelta(hours=2)
    stats = await env.collect()
    assert (stats.leases, stats.blobs) == (1, 1)


def test_parse_expire() -> None:
    utc = _dt.UTC
    assert parse_expire("2024-05-06T07:08:09Z") == _dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=utc)
    assert parse_expire("2024-05-06T07:08:09.5-01:30") == _dt.datetime(
        2024, 5, 6, 8, 38, 9, 500000, tzinfo=utc
    )
    for bad in ("2024-05-06", "2024-05-06 07:08:09Z", "2024-05-06T07:08:09", "2024-02-30T00:00:00Z", "x"):
        assert parse_expire(bad) is None, bad


async def test_blob_shared_into_two_namespaces_keeps_its_file_until_both_drop_it(env: Env) -> None:
    data, d = blob("shared")
    for name in ("a", "b"):
        with ns(name):
            await write_blob(env.store, "r", data, expected=d, labels={ROOT: "1"})
    assert env.store.stats.admissions == 1
    with ns("a"):
        await env.store.delete(d)
    # deletion no longer touches the file; collection keeps it while b holds it
    assert d in env.files()
    stats = await env.collect()
    assert stats.files == 0
    assert d in env.files()
    with ns("b"):
        assert await read_blob(env.store, d) == data
        await env.store.delete(d)
    assert d in env.files()
    stats = await env.collect()
    assert (stats.files, stats.bytes) == (1, len(data))
    assert env.files() == set()


async def test_isolated_policy_same_rules(isolated: Env) -> None:
    env = isolated
    data, d = blob("iso")
    for name in ("a", "b"):
        with ns(name):
            await write_blob(env.store, "r", data, expected=d)
    with ns("a"):
        await env.store.update(Info(d, 0, utcnow(), utcnow(), {ROOT: "y"}), ["labels"])
    await env.collect()
    assert await env.rows("a") == {d}
    assert await env.rows("b") == set()
    assert d in env.files()


# -- ingests ------------------------------------------------------------------------------------


async def test_expired_ingest_goes_after_24h(env: Env) -> None:
    with ns("a"):
        w = await env.store.writer("partial")
        await w.write(b"half of something")
        await w.close()
    assert len(env.ingest_dirs()) == 1
    env.clock.offset = _dt.timedelta(hours=23, minutes=59)
    assert not (await env.collect()).removed_anything()
    assert await env.ingests() == {("a", "partial")}
    env.clock.offset = _dt.timedelta(hours=24, seconds=1)
    stats = await env.collect()
    assert (stats.ingests, stats.backend_ingests) == (1, 1)
    assert await env.ingests() == set()
    assert env.ingest_dirs() == set()
    with ns("a"), pytest.raises(errdefs.NotFound):
        await env.store.status("partial")


async def test_leased_ingest_lives_with_its_lease(env: Env) -> None:
    await env.add_lease("a", "l")
    with ns("a", lease="l"):
        w = await env.store.writer("held")
        await w.write(b"abc")
        await w.close()
    env.clock.offset = _dt.timedelta(days=30)
    assert not (await env.collect()).removed_anything()
    await env.drop_lease("a", "l")
    env.clock.offset = _dt.timedelta()
    stats = await env.collect()
    assert (stats.ingests, stats.backend_ingests) == (1, 1)
    assert env.ingest_dirs() == set()


async def test_shared_writer_expectation_keeps_the_file(env: Env) -> None:
    data, d = blob("expected")
    with ns("a"):
        await write_blob(env.store, "r", data, expected=d)
    with ns("b"):
        w = await env.store.writer("admit", expected=d)
        assert (await w.status()).offset == len(data)
    with ns("a"):
        await env.store.delete(d)
    stats = await env.collect()
    assert stats.files == 0
    assert d in env.files()
    with ns("b"):
        await w.commit(len(data), d, {ROOT: "z"})
        assert await read_blob(env.store, d) == data
    # once the shared ingest expires and nothing holds the digest, the file goes too
    with ns("c"):
        w2 = await env.store.writer("late", expected=d)
        assert w2.digest() == d
    with ns("b"):
        await env.store.delete(d)
    assert (await env.collect()).files == 0
    env.clock.offset = _dt.timedelta(days=2)
    stats = await env.collect()
    assert (stats.ingests, stats.files) == (1, 1)
    assert env.files() == set()


async def test_live_ingest_marks_its_expected_blob_in_its_namespace(env: Env) -> None:
    data, d = blob("own")
    with ns("a"):
        await write_blob(env.store, "r", data)
    async with env.db.update() as tx:
        # an ingest of namespace a expecting a digest a holds (containerd: ingest -> expected)
        await tx.run(
            "INSERT INTO ingests(namespace, ref, backend_ref, expected, expected_size, created_at, "
            "expires_at) VALUES ('a', 'x', 'a/99/x', ?, ?, ?, ?)",
            (d, len(data), to_us(utcnow()), to_us(utcnow() + _dt.timedelta(hours=1))),
        )
    assert (await env.collect()).blobs == 0
    assert await env.rows("a") == {d}


# -- crash leftovers and reconciliation ----------------------------------------------------------


async def test_file_without_record_is_deleted(env: Env) -> None:
    data, d = blob("orphan file")
    await write_blob(env.backend, "direct", data)
    assert d in env.files()
    stats = await env.collect()
    assert (stats.blobs, stats.files, stats.bytes) == (0, 1, len(data))
    assert env.files() == set()


async def test_orphan_backend_ingests_are_aborted(env: Env) -> None:
    w = await env.backend.writer("no-row")
    await w.write(b"x")
    await w.close()
    # a crash between the commit's rename and the removal of the ingest directory
    w = await env.backend.writer("no-data")
    await w.write(b"y")
    await w.close()
    no_data = env.root / "content" / "ingest" / hashlib.sha256(b"no-data").hexdigest()
    os.unlink(no_data / "data")
    assert await env.backend.walk_status_refs() == ["no-data", "no-row"]
    stats = await env.collect()
    assert stats.backend_ingests == 2
    assert env.ingest_dirs() == set()


async def test_record_without_file_is_removed_with_a_warning(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    (data, d), (odata, other) = blob("lost"), blob("fine")
    with ns("a"):
        await write_blob(env.store, "r", data, labels={ROOT: "1"})
        await write_blob(env.store, "o", odata, labels={ROOT: "1"})
    with ns("b"):
        await write_blob(env.store, "r", data, expected=d, labels={ROOT: "1"})
    path = env.root / "content" / "blobs" / "sha256" / d.split(":")[1]
    os.chmod(path, 0o644)
    os.unlink(path)
    with caplog.at_level(logging.WARNING, logger="ctrd.gc"):
        stats = await env.collect()
    assert stats.missing == 2
    assert await env.rows("a") == {other}
    assert await env.rows("b") == set()
    assert any(d in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)


async def test_ingest_row_without_backend_data_is_removed(env: Env) -> None:
    with ns("a"):
        w = await env.store.writer("ghost")
        await w.write(b"abc")
        await w.close()
    bref = str((await env.db.view_one("SELECT backend_ref FROM ingests"))[0])
    await env.backend.abort(bref)
    stats = await env.collect()
    assert stats.ingests == 1
    assert await env.ingests() == set()
    with ns("a"):
        # the ref is free again and starts from zero
        w = await env.store.writer("ghost")
        assert (await w.status()).offset == 0
        await w.close()


# -- concurrency ----------------------------------------------------------------------------------


async def test_deletes_no_longer_remove_files_inline(env: Env) -> None:
    data, d = blob("inline")
    called: list[int] = []
    env.store.observe_deletions(lambda: called.append(1))
    with ns("a"):
        await write_blob(env.store, "r", data)
        await env.store.delete(d)
    assert called == [1]
    assert d in env.files()
    assert (await env.collect()).files == 1


async def test_commit_in_flight_protects_its_file(env: Env) -> None:
    data, d = blob("in flight")
    await write_blob(env.backend, "direct", data)  # the file a commit has just renamed into place
    async with env.store.gate.committing(d, "a/1/r"):
        stats = await env.collect()
        assert stats.files == 0
        assert d in env.files()
    assert (await env.collect()).files == 1


async def test_commit_waits_for_a_deletion_in_progress(env: Env) -> None:
    data, d = blob("racing")
    await write_blob(env.backend, "direct", data)
    assert env.store.gate.begin_delete(d)
    with ns("a"):
        w = await env.store.writer("r")
        await w.write(data)
        commit = asyncio.ensure_future(w.commit(len(data), d))
        await asyncio.sleep(0.05)
        assert not commit.done()
        # the collector deletes the file, then releases the digest
        await env.backend.delete(d)
        env.store.gate.end_delete(d)
        await commit
        assert await read_blob(env.store, d) == data
    assert d in env.files()


async def test_a_write_between_mark_and_sweep_is_honoured(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    data, d = blob("late root")
    with ns("a"):
        await write_blob(env.store, "r", data)
    orig = env.gc._mark
    calls: list[int] = []

    async def mark_then_write(*args: object) -> object:
        res = await orig(*args)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:
            with ns("a"):
                await env.store.update(Info(d, 0, utcnow(), utcnow(), {ROOT: "now"}), ["labels"])
        return res

    monkeypatch.setattr(env.gc, "_mark", mark_then_write)
    stats = await env.collect()
    assert len(calls) == 2, "the stale mark must be recomputed under the write lock"
    assert stats.blobs == 0
    assert await env.rows("a") == {d}
    assert d in env.files()


async def test_concurrent_commits_deletes_and_collections_never_lose_a_committed_blob(env: Env) -> None:
    payloads = [blob(f"c{i}") for i in range(6)]
    stop = asyncio.Event()
    errors: list[BaseException] = []

    async def churn(name: str) -> None:
        i = 0
        while not stop.is_set():
            data, d = payloads[i % len(payloads)]
            i += 1
            with ns(name):
                with contextlib.suppress(errdefs.AlreadyExists):
                    await write_blob(env.store, f"r{i}", data, labels={ROOT: "1"})
                # committed and rooted: it must be readable now, whatever the collector does
                assert await read_blob(env.store, d) == data
                await env.store.delete(d)

    async def collector() -> None:
        while not stop.is_set():
            await env.collect()

    tasks = [asyncio.ensure_future(churn(n)) for n in ("a", "b", "c")]
    tasks.append(asyncio.ensure_future(collector()))
    await asyncio.sleep(2.0)
    stop.set()
    for t in tasks:
        try:
            await t
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    assert errors == []
    await env.collect()
    # converged: nothing is held, so nothing is left
    assert env.files() == set()
    assert await env.ingests() == set()


async def test_stats_and_log_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    data, _ = blob("logged")
    with ns("a"):
        await write_blob(env.store, "r", data)
    with caplog.at_level(logging.INFO, logger="ctrd.gc"):
        stats = await env.collect()
    assert stats.duration > 0
    assert stats.lock_duration >= 0
    line = next(r.getMessage() for r in caplog.records if "garbage collected" in r.getMessage())
    assert line.startswith("garbage collected d=")
    assert f"blobs=1 files=1 bytes={len(data)}" in line
