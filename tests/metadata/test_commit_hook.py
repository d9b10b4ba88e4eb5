"""``NamespacedContentStore`` hooks: commit observers (``/content/create``), guards, deletion observers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import sha256_of, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import DB, CommitObserver, NamespacedContentStore, SharingPolicy


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
    store.observe_commits(on_commit)  # registered after construction (the content gRPC plugin does this)
    data = b"x"
    with namespaces.with_namespace("a"), caplog.at_level(logging.WARNING, logger="ctrd.metadata"):
        await write_blob(store, "r", data, expected=sha256_of(data))
        assert (await store.info(sha256_of(data))).size == 1
    assert "commit hook failed" in caplog.text


async def test_observers_run_in_registration_order(db: DB, tmp_path: Path) -> None:
    calls: list[str] = []

    def observer(name: str) -> CommitObserver:
        async def observe(ns: str, dgst: str, size: int) -> None:
            calls.append(name)

        return observe

    store = NamespacedContentStore(db, LocalStore(tmp_path / "c"), on_commit=observer("constructor"))
    store.observe_commits(observer("first"))
    store.observe_commits(observer("second"))
    with namespaces.with_namespace("a"):
        await write_blob(store, "r", b"x", expected=sha256_of(b"x"))
    assert calls == ["constructor", "first", "second"]


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_guard_surrounds_the_commit_and_can_refuse_it(
    db: DB, tmp_path: Path, policy: SharingPolicy
) -> None:
    events: list[tuple[str, ...]] = []
    refuse = {"b"}

    @contextlib.asynccontextmanager
    async def guard(ns: str, dgst: str, size: int) -> AsyncIterator[None]:
        events.append(("enter", ns, dgst, str(size)))
        if ns in refuse:
            raise errdefs.ResourceExhausted(f"no room in {ns}")
        yield
        events.append(("exit", ns))

    async def observe(ns: str, dgst: str, size: int) -> None:
        events.append(("committed", ns))

    store = NamespacedContentStore(db, LocalStore(tmp_path / "c"), policy, on_commit=observe)
    store.guard_commits(guard)
    data = b"guarded" * 7
    d = sha256_of(data)
    with namespaces.with_namespace("a"):
        await write_blob(store, "r", data, expected=d)
    assert events == [("enter", "a", d, str(len(data))), ("committed", "a"), ("exit", "a")]
    events.clear()
    with namespaces.with_namespace("b"):  # refused: nothing committed, the ingest is kept
        w = await store.writer("r", len(data), d)
        if (await w.status()).offset == 0:  # isolated: every byte uploaded
            await w.write(data)
        with pytest.raises(errdefs.ResourceExhausted, match="no room in b"):
            await w.commit(len(data), d)
        await w.close()
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
        assert events == [("enter", "b", d, str(len(data)))]
        # the ingest was kept: once the guard allows it, it commits without writing again
        refuse.clear()
        w = await store.writer("r", len(data), d)
        assert (await w.status()).offset == len(data)
        await w.commit(0, d)  # no size given: the guard sees the ingest's
        assert (await store.info(d)).size == len(data)
    assert events[1:] == [("enter", "b", d, str(len(data))), ("committed", "b"), ("exit", "b")]


async def test_deletion_observers_are_called_and_their_errors_logged(
    db: DB, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("scheduler gone")

    store = NamespacedContentStore(db, LocalStore(tmp_path / "c"), on_delete=lambda: calls.append("ctor"))
    store.observe_deletions(broken)
    store.observe_deletions(lambda: calls.append("later"))
    d = sha256_of(b"x")
    with namespaces.with_namespace("a"), caplog.at_level(logging.WARNING, logger="ctrd.metadata"):
        await write_blob(store, "r", b"x", expected=d)
        await store.delete(d)  # the delete stands although an observer failed
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
    assert calls == ["ctor", "later"]
    assert "deletion hook failed" in caplog.text
