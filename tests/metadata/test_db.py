"""The metadata database: inline transactions (no thread hop) next to aiosqlite's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctrd import errdefs
from ctrd.metadata import DB


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[DB]:
    d = DB(tmp_path / "meta.db")
    await d.open()
    try:
        yield d
    finally:
        await d.close()


async def _names(db: DB) -> list[str]:
    return [str(r[0]) for r in await db.view_all("SELECT name FROM namespaces ORDER BY name")]


@pytest.mark.parametrize("inline", [False, True])
async def test_commit_and_rollback(db: DB, inline: bool) -> None:
    before = db.mutations
    async with db.update(inline=inline) as tx:
        assert await tx.ensure_namespace("a", 1) is True
        assert await tx.ensure_namespace("a", 1) is False
        assert await tx.one("SELECT name FROM namespaces") == ("a",)  # sees its own write
        assert await db.view_one("SELECT name FROM namespaces") is None  # readers see committed data
        assert await tx.next_sequence("s") == 1
        assert await tx.next_sequence("s") == 2
        await tx.many("INSERT INTO namespaces(name, created_at) VALUES (?, ?)", [("b", 1), ("c", 2)])
        assert [r[0] for r in await tx.all("SELECT name FROM namespaces ORDER BY name")] == ["a", "b", "c"]
    assert db.mutations == before + 1
    assert await db.view_one("SELECT name FROM namespaces WHERE name = ?", ("b",)) == ("b",)

    async def failing_update() -> None:
        async with db.update(inline=inline) as tx:
            await tx.run("DELETE FROM namespaces WHERE name = ?", ("a",))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_update()
    assert await _names(db) == ["a", "b", "c"]
    assert db.mutations == before + 1


@pytest.mark.parametrize("inline", [False, True])
async def test_blob_epoch_moves_on_blob_delete_or_update(db: DB, inline: bool) -> None:
    async with db.update(inline=inline) as tx:
        await tx.ensure_namespace("n", 1)
        await tx.run(
            "INSERT INTO blobs(namespace, digest, size, created_at, updated_at) VALUES ('n', 'd', 1, 1, 1)"
        )
    epoch = db.blob_epoch
    assert epoch == 0  # an insert leaves cached Info valid
    async with db.update(inline=inline) as tx:
        await tx.run("UPDATE blobs SET labels = '{}' WHERE digest = 'd'")
    assert db.blob_epoch == epoch + 1
    async with db.update(inline=inline) as tx:
        await tx.run("DELETE FROM blobs WHERE digest = 'd'")
    assert db.blob_epoch == epoch + 2


async def test_inline_and_threaded_transactions_are_serialised(db: DB) -> None:
    async def bump(inline: bool) -> None:
        async with db.update(inline=inline) as tx:
            await tx.next_sequence("n")
            await asyncio.sleep(0)  # yield inside the transaction
            await tx.next_sequence("n")

    await asyncio.gather(*(bump(i % 2 == 0) for i in range(40)))
    assert await db.view_one("SELECT value FROM sequences WHERE name = 'n'") == (80,)


async def test_close_waits_for_an_inline_transaction(tmp_path: Path) -> None:
    db = DB(tmp_path / "meta.db")
    await db.open()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def tx_body() -> None:
        async with db.update(inline=True) as tx:
            await tx.ensure_namespace("kept", 1)
            entered.set()
            await release.wait()

    task = asyncio.create_task(tx_body())
    await entered.wait()
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await task
    await closing
    with pytest.raises(errdefs.Unavailable):
        async with db.update(inline=True):
            pass
    db = DB(tmp_path / "meta.db")
    await db.open()
    try:
        assert await _names(db) == ["kept"]
    finally:
        await db.close()
