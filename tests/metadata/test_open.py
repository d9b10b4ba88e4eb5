"""Opening a writer: the ingest row is committed before the backend ingest is created.

:meth:`NamespacedContentStore.writer` commits its metadata transaction, then
creates the backend ingest outside the database lock. These tests pin down what
that must not change: a failed open leaves the rows as they were, the collector
keeps its hands off an ingest being opened, an abort of the same ref waits for the
open, and other metadata writes are not held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import sha256_of, utcnow, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import DB, NamespacedContentStore, SharingPolicy
from ctrd.metadata.db import to_us
from ctrd.metadata.gc import GarbageCollector


class GatedStore(LocalStore):
    """A local store whose :meth:`writer` can be made to wait or to fail."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail: BaseException | None = None

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Any:
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return await super().writer(ref, total, expected)


class Env:
    def __init__(self, db: DB, backend: GatedStore, store: NamespacedContentStore) -> None:
        self.db = db
        self.backend = backend
        self.store = store

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.db.view_all(sql, params)]

    async def ingest_rows(self) -> list[tuple[Any, ...]]:
        return await self.rows(
            "SELECT namespace, ref, backend_ref, expected, expected_size, created_at, expires_at "
            "FROM ingests ORDER BY namespace, ref"
        )

    async def add_lease(self, ns: str, lease: str) -> None:
        async with self.db.update() as tx:
            await tx.ensure_namespace(ns, to_us(utcnow()))
            await tx.run(
                "INSERT INTO leases(namespace, id, created_at, labels) VALUES (?, ?, ?, '{}')",
                (ns, lease, to_us(utcnow())),
            )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    backend = GatedStore(tmp_path / "content")
    try:
        yield Env(db, backend, NamespacedContentStore(db, backend, SharingPolicy.SHARED))
    finally:
        await db.close()


@contextlib.contextmanager
def ns(name: str, lease: str | None = None) -> Iterator[None]:
    with namespaces.with_namespace(name), namespaces.with_lease(lease):
        yield


async def test_failed_open_in_new_namespace_leaves_nothing(env: Env) -> None:
    env.backend.fail = errdefs.ResourceExhausted("disk full")
    with ns("fresh"), pytest.raises(errdefs.ResourceExhausted):
        await env.store.writer("r", total=3)
    assert await env.ingest_rows() == []
    assert await env.rows("SELECT name FROM namespaces") == []
    assert not env.store.gate.ref_committing("fresh/1/r")
    env.backend.fail = None
    with ns("fresh"):
        await write_blob(env.store, "r", b"abc")
    assert await env.rows("SELECT name FROM namespaces") == [("fresh",)]


async def test_failed_open_detaches_only_what_it_attached(env: Env) -> None:
    await env.add_lease("n", "l1")
    env.backend.fail = errdefs.ResourceExhausted("disk full")
    with ns("n", "l1"), pytest.raises(errdefs.ResourceExhausted):
        await env.store.writer("r")
    assert await env.ingest_rows() == []
    assert await env.rows("SELECT * FROM lease_resources") == []
    assert await env.rows("SELECT name FROM namespaces") == [("n",)]  # it held the lease before


async def test_open_of_a_locked_ref_keeps_the_row_as_it_was(env: Env) -> None:
    with ns("n"):
        w1 = await env.store.writer("r", total=10)
        await w1.write(b"0123")
        before = await env.ingest_rows()
        with pytest.raises(errdefs.Unavailable, match="locked"):
            await env.store.writer("r", total=10)
        assert await env.ingest_rows() == before
        await w1.write(b"456789")
        await w1.commit(10, "")
    assert await env.ingest_rows() == []


async def test_failed_open_of_a_shared_writer_row_restores_it(env: Env) -> None:
    data = b"shared bytes"
    dgst = sha256_of(data)
    with ns("a"):
        await write_blob(env.store, "src", data, expected=dgst)
    with ns("b"):
        w = await env.store.writer("r", total=len(data), expected=dgst)  # shared: no backend ingest
        await w.close()
        before = await env.ingest_rows()
        assert before[0][3] == dgst
        env.backend.fail = errdefs.ResourceExhausted("disk full")
        with pytest.raises(errdefs.ResourceExhausted):
            await env.store.writer("r", total=len(data) + 1, expected=dgst)  # size differs: not shared
        assert await env.ingest_rows() == before


async def test_collector_leaves_an_ingest_being_opened_alone(env: Env) -> None:
    gc = GarbageCollector(env.db, env.backend, env.store.gate)
    env.backend.release = asyncio.Event()
    with ns("n"):
        task = asyncio.create_task(env.store.writer("r", total=3))
    await env.backend.entered.wait()
    rows = await env.ingest_rows()
    assert [r[:2] for r in rows] == [("n", "r")]
    stats = await gc.collect()  # the row has no backend ingest yet
    assert stats.ingests == 0
    assert await env.ingest_rows() == rows
    env.backend.release.set()
    w = await task
    with ns("n"):
        await w.write(b"abc")
        await w.commit(3, "")
        assert (await env.store.info(sha256_of(b"abc"))).size == 3


async def test_abort_waits_for_the_open_of_its_ref(env: Env) -> None:
    env.backend.release = asyncio.Event()
    with ns("n"):
        opening = asyncio.create_task(env.store.writer("r"))
        await env.backend.entered.wait()
        aborting = asyncio.create_task(env.store.abort("r"))
        await asyncio.sleep(0.05)
        assert not aborting.done()
    env.backend.release.set()
    w = await opening
    await aborting
    assert await env.ingest_rows() == []
    with ns("n"), pytest.raises(errdefs.Error):
        await w.commit(0, "")  # its ingest was aborted under it, as before


async def test_metadata_writes_go_on_while_an_ingest_is_created(env: Env) -> None:
    env.backend.release = asyncio.Event()
    with ns("n"):
        opening = asyncio.create_task(env.store.writer("slow"))
        await env.backend.entered.wait()
        env.backend.release = None  # later opens go through
        await asyncio.wait_for(write_blob(env.store, "fast", b"quick"), 5)
        assert (await env.store.info(sha256_of(b"quick"))).size == 5
    assert not opening.done()
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert await env.ingest_rows() == []


async def test_cancelled_open_is_undone(env: Env) -> None:
    env.backend.release = asyncio.Event()
    with ns("n"):
        task = asyncio.create_task(env.store.writer("r"))
    await env.backend.entered.wait()
    assert len(await env.ingest_rows()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await env.ingest_rows() == []
    assert not env.store.gate.ref_committing("n/1/r")
