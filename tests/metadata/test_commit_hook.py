"""``NamespacedContentStore.on_commit``: the hook behind the ``/content/create`` event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import sha256_of, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import DB, NamespacedContentStore, SharingPolicy


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[DB]:
    d = DB(tmp_path / "meta.db")
    await d.open()
    try:
        yield d
    finally:
        await d.close()


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_on_commit_once_per_namespace_admission(db: DB, tmp_path: Path, policy: SharingPolicy) -> None:
    calls: list[tuple[str, str, int]] = []

    async def on_commit(ns: str, dgst: str, size: int) -> None:
        calls.append((ns, dgst, size))

    store = NamespacedContentStore(db, LocalStore(tmp_path / "c"), policy, on_commit=on_commit)
    data = b"created" * 10
    d = sha256_of(data)
    with namespaces.with_namespace("a"):
        await write_blob(store, "r1", data, expected=d)
        # already in the namespace: AlreadyExists from the writer or the commit, no event
        with pytest.raises(errdefs.AlreadyExists):
            await store.writer("r2", len(data), d)
        w = await store.writer("r3")
        await w.write(data)
        with pytest.raises(errdefs.AlreadyExists):
            await w.commit(len(data), d)
        await w.close()
    with namespaces.with_namespace("b"):  # admission into a second namespace (shared or re-upload)
        await write_blob(store, "r1", data, expected=d)
    assert calls == [("a", d, len(data)), ("b", d, len(data))]


async def test_failing_hook_does_not_fail_the_commit(
    db: DB, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def on_commit(ns: str, dgst: str, size: int) -> None:
        raise RuntimeError("publisher down")

    store = NamespacedContentStore(db, LocalStore(tmp_path / "c"))
    store.on_commit = on_commit  # settable after construction (the content gRPC plugin does this)
    data = b"x"
    with namespaces.with_namespace("a"), caplog.at_level(logging.WARNING, logger="ctrd.metadata"):
        await write_blob(store, "r", data, expected=sha256_of(data))
        assert (await store.info(sha256_of(data))).size == 1
    assert "commit hook failed" in caplog.text
