"""containerd's cross-namespace suites: what a namespaced store shares, and what it does not."""

from __future__ import annotations

import contextlib
import datetime as _dt

import pytest

from ctrd import errdefs
from ctrd.content import Status, Store, open_writer, sha256_of, utcnow, write_blob
from ctrd.testing.content_suite._checks import (
    SuiteHooks,
    check_committed,
    check_content,
    check_newly_created,
    check_status,
    create_content,
)

__all__ = ["CrossNSIsolatedSuite", "CrossNSSharedSuite", "SharedNSIsolatedSuite"]


class _NamespacedSuite(SuiteHooks):
    """Hooks shared by the cross-namespace suites."""

    @pytest.fixture
    async def store(self) -> Store:
        """Override: a fresh namespaced store for each test."""
        raise NotImplementedError("subclasses must override the `store` fixture")

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        """Override: a context manager making namespace ``n<k>`` current."""
        raise NotImplementedError("subclasses must override namespace(k)")


class CrossNSSharedSuite(_NamespacedSuite):
    """containerd ``ContentCrossNSSharedSuite`` (metadata store, "shared" policy)."""

    async def _write_in_ns1(self, store: Store) -> tuple[bytes, str, str, _dt.datetime]:
        size = 1000
        ref = f"ref-{size}"
        b, dgst = create_content(size)
        t1 = utcnow()
        with self.namespace(1):
            await write_blob(store, ref, b, total=size, expected=dgst)
        return b, dgst, ref, t1

    async def test_cross_namespace_append(self, store: Store) -> None:
        """CrossNamespaceAppend: ns2 starts with ns1's bytes, appends, commits a new blob."""
        b, dgst, ref, t1 = await self._write_in_ns1(store)
        extra = b"appended bytes"
        size2 = len(b) + len(extra)
        d2 = sha256_of(b + extra)
        with self.namespace(2):
            w = await open_writer(store, ref, total=len(b), expected=dgst)
            t2 = utcnow()
            await check_status(w, Status(ref, len(b), len(b), t1, t1), dgst, t1, t2, t1, t2)
            await w.write(extra)
            await w.commit(size2, d2)
            await w.close()
        t3 = utcnow()
        with self.namespace(1):
            await check_content(store, dgst, len(b), {}, t1, t3, t1, t3)
        with self.namespace(2):
            await check_content(store, d2, size2, {}, t1, t3, t1, t3)

    async def test_cross_namespace_share(self, store: Store) -> None:
        """CrossNamespaceShare: ns2 commits ns1's blob without sending any byte."""
        b, dgst, ref, t1 = await self._write_in_ns1(store)
        with self.namespace(2):
            w = await open_writer(store, ref, total=len(b), expected=dgst)
            t2 = utcnow()
            await check_status(w, Status(ref, len(b), len(b), t1, t1), dgst, t1, t2, t1, t2)
            await w.commit(len(b), dgst)
            await w.close()
        t3 = utcnow()
        with self.namespace(1):
            await check_content(store, dgst, len(b), {}, t1, t3, t1, t3)
            await check_committed(store, dgst, True)
        with self.namespace(2):
            await check_content(store, dgst, len(b), {}, t1, t3, t1, t3)
            await check_committed(store, dgst, True)


class CrossNSIsolatedSuite(_NamespacedSuite):
    """containerd ``ContentCrossNSIsolatedSuite`` (metadata store, "isolated" policy)."""

    async def test_cross_namespace_isolate(self, store: Store) -> None:
        """CrossNamespaceIsolate: ns2 must upload everything; its writer starts empty."""
        size = 1000
        ref = f"ref-{size}"
        b, dgst = create_content(size)
        t1 = utcnow()
        with self.namespace(1):
            await write_blob(store, ref, b, total=size, expected=dgst)
        t2 = utcnow()
        with self.namespace(2):
            t3 = utcnow()
            w = await open_writer(store, ref, total=size, expected=dgst)
            t4 = utcnow()
            try:
                await check_newly_created(w, t1, t2, t3, t4)
                with pytest.raises(errdefs.NotFound):
                    await store.info(dgst)
                await check_committed(store, dgst, False)  # knowing the digest is not enough
            finally:
                await w.close()


class SharedNSIsolatedSuite(_NamespacedSuite):
    """containerd ``ContentSharedNSIsolatedSuite`` (isolated policy, shareable namespace label)."""

    async def make_shareable(self, k: int) -> None:
        """Override: label namespace ``n<k>`` ``containerd.io/namespace.shareable=true``."""
        raise NotImplementedError("SharedNSIsolatedSuite subclasses must override make_shareable(k)")

    async def test_shared_namespace_isolate(self, store: Store) -> None:
        """SharedNamespaceIsolate: content of a shareable namespace is shared even when isolated."""
        size = 1000
        ref = f"ref-{size}"
        b, dgst = create_content(size)
        await self.make_shareable(1)
        t1 = utcnow()
        with self.namespace(1):
            await write_blob(store, ref, b, total=size, expected=dgst)
        with self.namespace(2):
            w = await open_writer(store, ref, total=size, expected=dgst)
            t2 = utcnow()
            await check_status(w, Status(ref, size, size, t1, t1), dgst, t1, t2, t1, t2)
            await w.commit(size, dgst)
            await w.close()
        t3 = utcnow()
        with self.namespace(1):
            await check_content(store, dgst, size, {}, t1, t3, t1, t3)
        with self.namespace(2):
            await check_content(store, dgst, size, {}, t1, t3, t1, t3)
