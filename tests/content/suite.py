"""Content store conformance suites (port of containerd's ``content/testsuite``).

How to use: subclass a suite in a ``Test*`` class and override the hooks.

``ContentStoreSuite`` (containerd ``ContentSuite`` plus the local store's extra cases):

* ``store`` — an **async pytest fixture** (method on the class) returning a fresh
  :class:`ctrd.content.Store` per test; do cleanup in it (``yield`` style is fine).
* ``namespace(k)`` — sync method returning a context manager that makes
  namespace ``n<k>`` current. Default: :func:`contextlib.nullcontext`. Every test
  body runs inside ``self.namespace(1)``.
* ``supports_labels`` — class attribute, default ``True``. With ``False`` (the
  local store) commits ignore labels, ``info`` must report no labels, and the
  Labels case asserts that ``update`` raises :class:`errdefs.FailedPrecondition`.

``CrossNSSharedSuite``, ``CrossNSIsolatedSuite``, ``SharedNSIsolatedSuite``
(containerd ``ContentCrossNSSharedSuite`` / ``ContentCrossNSIsolatedSuite`` /
``ContentSharedNSIsolatedSuite``): the same ``store`` fixture, and
``namespace(k)`` **must** be overridden (k = 1, 2). ``SharedNSIsolatedSuite``
also needs ``async make_shareable(k)``, which labels namespace ``n<k>`` with
``containerd.io/namespace.shareable=true``; it is called outside any
``namespace()`` context, before anything is written.

Writers are opened through :func:`ctrd.content.open_writer` (which retries
:class:`errdefs.Unavailable`), except where a test expects Unavailable.
Time windows allow :data:`SLACK` for clock and filesystem granularity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import ClassVar, Final

import pytest

from ctrd import errdefs
from ctrd.content import (
    EMPTY_SHA256,
    CommitChecker,
    Info,
    ReaderAt,
    Status,
    Store,
    Writer,
    copy,
    open_writer,
    read_blob,
    sha256_of,
    utcnow,
    write_blob,
)

__all__ = [
    "LABELS",
    "SLACK",
    "BytesReaderAt",
    "ContentStoreSuite",
    "CrossNSIsolatedSuite",
    "CrossNSSharedSuite",
    "SharedNSIsolatedSuite",
    "assert_time_in",
    "check_content",
    "check_info",
    "check_newly_created",
    "check_ref_not_available",
    "check_status",
    "create_content",
]

SLACK: Final = _dt.timedelta(seconds=1)
"""Tolerance added to both ends of every time window."""

GC_ROOT: Final = "containerd.io/gc.root"

LABELS: Final[Mapping[str, str]] = {GC_ROOT: utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
"""containerd's package-level ``labels``: a gc root stamped with the import time (RFC 3339)."""

_seed = itertools.count(1)


def create_content(size: int) -> tuple[bytes, str]:
    """Deterministic pseudo-random bytes (seed incremented per call) and their digest."""
    data = random.Random(next(_seed)).randbytes(size)
    return data, sha256_of(data)


def assert_time_in(what: str, t: _dt.datetime, lo: _dt.datetime, hi: _dt.datetime) -> None:
    """Assert ``lo - SLACK <= t <= hi + SLACK`` and that *t* is timezone-aware."""
    assert t.tzinfo is not None, f"{what} {t!r} is naive"
    assert lo - SLACK <= t <= hi + SLACK, (
        f"{what} {t.isoformat()} not in [{lo.isoformat()}, {hi.isoformat()}]"
    )


async def check_status(
    w: Writer,
    expected: Status,
    dgst: str,
    pre_start: _dt.datetime,
    post_start: _dt.datetime,
    pre_update: _dt.datetime,
    post_update: _dt.datetime,
) -> Status:
    """containerd ``checkStatus``: ref/offset/total, digest and time windows (``expected`` unchecked)."""
    st = await w.status()
    assert w.digest() == dgst, "unexpected writer digest"
    assert (st.ref, st.offset, st.total) == (expected.ref, expected.offset, expected.total)
    assert_time_in("started_at", st.started_at, pre_start, post_start)
    assert_time_in("updated_at", st.updated_at, pre_update, post_update)
    return st


async def check_newly_created(
    w: Writer,
    pre_start: _dt.datetime,
    post_start: _dt.datetime,
    pre_update: _dt.datetime,
    post_update: _dt.datetime,
) -> None:
    """containerd ``checkNewlyCreated``: empty digest, offset 0, started in ``[post_start, post_update]``."""
    del pre_start, pre_update
    st = await w.status()
    assert w.digest() == EMPTY_SHA256
    assert st.offset == 0
    assert_time_in("started_at", st.started_at, post_start, post_update)


async def check_info(
    store: Store,
    dgst: str,
    size: int,
    labels: Mapping[str, str],
    c1: _dt.datetime,
    c2: _dt.datetime,
    u1: _dt.datetime,
    u2: _dt.datetime,
) -> Info:
    """containerd ``checkInfo``: digest, size, exact labels, created/updated in ``[c1,c2]``/``[u1,u2]``."""
    info = await store.info(dgst)
    assert info.digest == dgst
    assert info.size == size
    assert_time_in("created_at", info.created_at, c1, c2)
    assert_time_in("updated_at", info.updated_at, u1, u2)
    assert dict(info.labels) == dict(labels)
    return info


async def check_content(
    store: Store,
    dgst: str,
    size: int,
    labels: Mapping[str, str],
    c1: _dt.datetime,
    c2: _dt.datetime,
    u1: _dt.datetime,
    u2: _dt.datetime,
) -> None:
    """containerd ``checkContent``: :func:`check_info` plus reading the blob back."""
    await check_info(store, dgst, size, labels, c1, c2, u1, u2)
    data = await read_blob(store, dgst)
    assert len(data) == size
    assert sha256_of(data) == dgst


async def check_ref_not_available(store: Store, ref: str) -> None:
    """containerd ``checkRefNotAvailable``: a second ``writer(ref)`` raises Unavailable."""
    try:
        w = await store.writer(ref)
    except errdefs.Unavailable:
        return
    await w.close()
    pytest.fail(f"writer({ref!r}) succeeded while the ref is locked")


async def write_chunked(w: Writer, data: bytes, chunk: int) -> None:
    """Write *data* in pieces of *chunk* bytes (memoryview slices)."""
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        n = await w.write(view[start : start + chunk])
        assert n == len(view[start : start + chunk])


async def read_section(ra: ReaderAt, offset: int, n: int) -> bytes:
    """Go's ``io.ReadAll(io.NewSectionReader(ra, offset, n))``."""
    out = bytearray()
    while len(out) < n:
        chunk = await ra.read_at(offset + len(out), n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


class BytesReaderAt:
    """An in-memory :class:`ReaderAt` (a copy source for the ResumeCopyReaderAt case)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    async def read_at(self, offset: int, n: int) -> bytes:
        return self._data[offset : offset + n]

    async def close(self) -> None:
        return None


async def _stream(data: bytes, chunk: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


ResumeFn = Callable[[Writer, bytes, int, int, str], Awaitable[None]]


async def _resume_truncate(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await w.truncate(0)
    await write_chunked(w, b, 1024)
    await w.commit(size, dgst)


async def _resume_discard(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await write_chunked(w, b[limit:], 1024)
    await w.commit(size, dgst)


async def _resume_copy(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await copy(w, _stream(b), size, dgst)


async def _resume_copy_seeker(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await copy(w, b, size, dgst)


async def _resume_copy_reader_at(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await copy(w, BytesReaderAt(b), size, dgst)


RESUME_SIZES: Final = (500, 5000, 50000)
RESUME_FRACTIONS: Final = (0.0, 0.1, 0.5, 0.9, 1.0)

BAD_DIGESTS: Final = (
    "",
    "sha256",
    "sha256:",
    ":" + "a" * 64,
    "sha256:abc",
    "sha256:" + "A" * 64,
    "sha256:" + "g" * 64,
    "sha256:" + "a" * 65,
    "sha256:../../../../../../etc/passwd",
    "sha256:" + "a" * 62 + "/.",
    "../" + "sha256:" + "a" * 64,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "foo:bar!",
    "SHA256:" + "a" * 64,
    "sha256:" + "a" * 64 + "\n",
)


async def check_committed(store: Store, dgst: str, expected: bool) -> None:
    """A store that answers ``committed`` (:class:`ctrd.content.CommitChecker`) answers as ``info`` does."""
    if isinstance(store, CommitChecker):
        assert await store.committed(dgst) is expected, dgst


class ContentStoreSuite:
    """containerd's ``ContentSuite`` and the local store's implementation-agnostic tests."""

    supports_labels: ClassVar[bool] = True
    """Whether the store keeps labels (``False`` only for the local store)."""

    @pytest.fixture
    async def store(self) -> Store:
        """Override: return a fresh, empty store for each test."""
        raise NotImplementedError("ContentStoreSuite subclasses must override the `store` fixture")

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        """Override: a context manager making namespace ``n<k>`` current (default: no namespace)."""
        del k
        return contextlib.nullcontext()

    def expected_labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        """The labels ``info`` should report after committing with *labels*."""
        return dict(labels) if self.supports_labels else {}

    # -- containerd ContentSuite --------------------------------------------

    async def test_writer(self, store: Store) -> None:
        """Writer: four 256 B writers opened at once with/without size/digest, plus a 32 MiB one."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            c2, d2 = create_content(256)
            c3, d3 = create_content(256)
            c4, d4 = create_content(256)
            c5, d5 = create_content(16 << 21)
            cases = [
                ("c1", await open_writer(store, "c1"), c1, d1, 32),
                ("c2", await open_writer(store, "c2", total=256), c2, d2, 32),
                ("c3", await open_writer(store, "c3", expected=d3), c3, d3, 32),
                ("c4", await open_writer(store, "c4", total=256, expected=d4), c4, d4, 32),
                ("c5", await open_writer(store, "c5", total=len(c5), expected=d5), c5, d5, 1 << 20),
            ]
            for name, w, data, dgst, chunk in cases:
                await write_chunked(w, data, chunk)
                pre_commit = utcnow()
                await w.commit(0, "", LABELS)
                post_commit = utcnow()
                assert w.digest() == dgst, f"{name}: unexpected digest"
                await check_info(
                    store,
                    dgst,
                    len(data),
                    self.expected_labels(LABELS),
                    pre_commit,
                    post_commit,
                    pre_commit,
                    post_commit,
                )
                await w.close()

    async def test_update_status(self, store: Store) -> None:
        """UpdateStatus: offset, digest and updated_at follow each write."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            pre_start = utcnow()
            w = await open_writer(store, "c1", total=256, expected=d1)
            post_start = utcnow()
            expected = Status("c1", 0, 256, pre_start, pre_start)
            await check_status(w, expected, EMPTY_SHA256, pre_start, post_start, pre_start, post_start)
            for start, end in ((0, 64), (64, 192), (192, 256)):
                pre_update = utcnow()
                assert await w.write(c1[start:end]) == end - start
                post_update = utcnow()
                expected = dataclasses.replace(expected, offset=end)
                d_end = sha256_of(c1[:end])
                await check_status(w, expected, d_end, pre_start, post_start, pre_update, post_update)
            pre_commit = utcnow()
            await w.commit(0, "", LABELS)
            post_commit = utcnow()
            await check_info(
                store, d1, 256, self.expected_labels(LABELS), pre_commit, post_commit, pre_commit, post_commit
            )

    async def test_commit_exists(self, store: Store) -> None:
        """CommitExists: committing bytes already committed fails with AlreadyExists."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            await write_blob(store, "c1", c1, expected=d1)
            for i, expected in enumerate((d1, "")):
                w = await open_writer(store, f"c1-commitexists-{i}")
                await w.write(c1)
                with pytest.raises(errdefs.AlreadyExists):
                    await w.commit(256, expected)
                await w.close()

    async def test_resume(self, store: Store) -> None:
        """Resume: close half-way, reopen, status (timestamps included) is preserved."""
        with self.namespace(1):
            ref = "cb"
            cb, dgst = create_content(256)
            first, second = cb[:128], cb[128:]
            pre_start = utcnow()
            w1 = await open_writer(store, ref, total=256, expected=dgst)
            post_start = utcnow()
            pre_update = post_start
            await w1.write(first)
            post_update = utcnow()
            d_first = sha256_of(first)
            expected = Status(ref, 128, 256, pre_start, pre_update)
            st1 = await check_status(w1, expected, d_first, pre_start, post_start, pre_update, post_update)
            await w1.close()

            w2 = await open_writer(store, ref, total=256, expected=dgst)
            st2 = await check_status(w2, expected, d_first, pre_start, post_start, pre_update, post_update)
            assert (st2.started_at, st2.updated_at) == (st1.started_at, st1.updated_at), "timestamps not kept"
            pre_update = utcnow()
            await w2.write(second)
            post_update = utcnow()
            expected = dataclasses.replace(expected, offset=256)
            await check_status(w2, expected, dgst, pre_start, post_start, pre_update, post_update)
            pre_commit = utcnow()
            await w2.commit(0, "")
            post_commit = utcnow()
            await w2.close()
            await check_info(store, dgst, 256, {}, pre_commit, post_commit, pre_commit, post_commit)

    async def _check_resume(self, store: Store, size_index: int, fn: ResumeFn) -> None:
        """containerd ``checkResume(rf)`` for one size and every truncation fraction."""
        size = RESUME_SIZES[size_index]
        with self.namespace(1):
            for j, fraction in enumerate(RESUME_FRACTIONS):
                b, dgst = create_content(size)
                limit = int(size * fraction)
                ref = f"ref-{size_index}-{j}"
                w = await open_writer(store, ref, total=size, expected=dgst)
                await w.write(b[:limit])
                await w.close()
                w = await open_writer(store, ref, total=size, expected=dgst)
                st = await w.status()
                assert st.offset == limit, f"{ref}: resumed at {st.offset}, expected {limit}"
                pre_commit = utcnow()
                await fn(w, b, limit, size, dgst)
                post_commit = utcnow()
                await w.close()
                await check_info(store, dgst, size, {}, pre_commit, post_commit, pre_commit, post_commit)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def test_resume_truncate(self, store: Store, size_index: int) -> None:
        """ResumeTruncate: truncate(0), rewrite everything."""
        await self._check_resume(store, size_index, _resume_truncate)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def test_resume_discard(self, store: Store, size_index: int) -> None:
        """ResumeDiscard: write only the missing tail."""
        await self._check_resume(store, size_index, _resume_discard)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def test_resume_copy(self, store: Store, size_index: int) -> None:
        """ResumeCopy: ``copy`` from a plain stream, which discards the first ``offset`` bytes."""
        await self._check_resume(store, size_index, _resume_copy)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def test_resume_copy_seeker(self, store: Store, size_index: int) -> None:
        """ResumeCopySeeker: ``copy`` from bytes, resumed by slicing."""
        await self._check_resume(store, size_index, _resume_copy_seeker)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def test_resume_copy_reader_at(self, store: Store, size_index: int) -> None:
        """ResumeCopyReaderAt: ``copy`` from a ReaderAt."""
        await self._check_resume(store, size_index, _resume_copy_reader_at)

    async def test_small_blob(self, store: Store) -> None:
        """SmallBlob: a 6-byte blob read through a 7-byte section returns exactly the blob."""
        with self.namespace(1):
            blob = b"foobar"
            dgst = sha256_of(blob)
            w = await open_writer(store, "test_small_blob", total=len(blob), expected=dgst)
            await w.write(blob)
            await w.commit(len(blob), dgst)
            await w.close()
            ra = await store.reader_at(dgst)
            try:
                assert ra.size == len(blob)
                data = await read_section(ra, 0, len(blob) + 1)
            finally:
                await ra.close()
            assert data == blob
            assert sha256_of(data) == dgst

    async def test_labels(self, store: Store) -> None:
        """Labels: commit with labels, replace them, update selected keys (or: update unsupported)."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            w = await open_writer(store, "c1-checklabels", total=256, expected=d1)
            await w.write(c1)
            root_time = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            labels = {"k1": "v1", "k2": "v2", GC_ROOT: root_time}
            pre_commit = utcnow()
            await w.commit(0, "", labels)
            post_commit = utcnow()
            await w.close()
            info = await check_info(
                store, d1, 256, self.expected_labels(labels), pre_commit, post_commit, pre_commit, post_commit
            )
            if not self.supports_labels:
                with pytest.raises(errdefs.FailedPrecondition):
                    await store.update(dataclasses.replace(info, labels=labels))
                with pytest.raises(errdefs.FailedPrecondition):
                    await store.update(dataclasses.replace(info, labels=labels), ["labels.k1"])
                return

            labels = {"k1": "newvalue", "k3": "v3", GC_ROOT: root_time}
            pre_update = utcnow()
            updated = await store.update(dataclasses.replace(info, labels=labels))
            post_update = utcnow()
            assert dict(updated.labels) == labels
            await check_info(store, d1, 256, labels, pre_commit, post_commit, pre_update, post_update)

            labels = {"k1": "v1", GC_ROOT: root_time}
            pre_update = utcnow()
            updated = await store.update(dataclasses.replace(info, labels=labels), ["labels.k3", "labels.k1"])
            post_update = utcnow()
            assert dict(updated.labels) == labels
            await check_info(store, d1, 256, labels, pre_commit, post_commit, pre_update, post_update)

    async def test_commit_error_state(self, store: Store) -> None:
        """CommitErrorState: failed commits release the lock; size/digest failures keep the data."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            _, d2 = create_content(256)
            ref = "c1-commiterror-state"
            await write_blob(store, "c1", c1, expected=d1)

            w = await open_writer(store, ref)
            await w.write(c1)
            await check_ref_not_available(store, ref)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, d1)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            await w.write(c1)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, "")

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 0
            await w.write(c1 + b"more")
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(260, d2)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 260, "data kept after a failed digest check"
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(256, "")

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 260, "data kept after a failed size check"
            await w.commit(260, "")
            assert (await store.info(sha256_of(c1 + b"more"))).size == 260

            w = await open_writer(store, ref)
            assert (await w.status()).offset == 0, "a committed ingest is gone"
            await w.write(c1)
            await check_ref_not_available(store, ref)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, d1)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            await w.truncate(0)
            await w.close()

            w = await open_writer(store, ref)
            await w.truncate(0)
            await w.close()

    # -- local store tests that hold for every store ----------------------

    async def test_content_writer(self, store: Store) -> None:
        """TestContentWriter: reopen, lock, list_statuses, 4 MiB commit, same bytes under another ref."""
        with self.namespace(1):
            w = await open_writer(store, "myref")
            await w.close()
            w = await open_writer(store, "myref")
            await check_ref_not_available(store, "myref")
            statuses = await store.list_statuses()
            assert [(s.ref, s.offset, s.total) for s in statuses] == [("myref", 0, 0)]
            assert [s.ref for s in await store.list_statuses("")] == ["myref"]

            p, expected = create_content(4 << 20)
            await write_chunked(w, p, 1 << 20)
            await w.commit(len(p), expected)
            await w.close()
            assert await store.list_statuses() == []

            w = await open_writer(store, "aref")
            await write_chunked(w, p, 1 << 20)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(len(p), expected)
            await w.close()
            assert await read_blob(store, expected) == p

    async def test_writer_truncate_recovers_from_incomplete_write(self, store: Store) -> None:
        """TestWriterTruncateRecoversFromIncompleteWrite: bad data, close, reopen, truncate, rewrite."""
        with self.namespace(1):
            ref = "ref"
            content = b"this is the content"
            total = len(content)
            w = await open_writer(store, ref, total=total)
            await w.write(b"bad data")
            await w.close()

            w = await open_writer(store, ref, total=total)
            assert (await w.status()).offset == len(b"bad data")
            await w.truncate(0)
            assert (await w.status()).offset == 0
            assert w.digest() == EMPTY_SHA256
            await w.write(content)
            dgst = sha256_of(content)
            await w.commit(total, dgst)
            await w.close()
            assert await read_blob(store, dgst) == content

    async def test_write_read_empty_blob(self, store: Store) -> None:
        """TestWriteReadEmptyFileTimestamp: an empty blob commits, has sane timestamps, reads back empty."""
        with self.namespace(1):
            pre_commit = utcnow()
            w = await open_writer(store, "empty", expected=EMPTY_SHA256)
            await w.commit(0, EMPTY_SHA256)
            post_commit = utcnow()
            await check_content(store, EMPTY_SHA256, 0, {}, pre_commit, post_commit, pre_commit, post_commit)

    async def test_read_past_end(self, store: Store) -> None:
        """Reads are clipped at the end of the blob; a read at the end returns nothing."""
        with self.namespace(1):
            data, dgst = create_content(100_000)
            await write_blob(store, "past-end", data, total=len(data), expected=dgst)
            ra = await store.reader_at(dgst)
            try:
                assert ra.size == len(data)
                assert await ra.read_at(len(data) - 10, 100) == data[-10:]
                assert await ra.read_at(len(data), 10) == b""
                assert await ra.read_at(0, len(data) + 1000) == data
                assert await ra.read_at(1000, 70_000) == data[1000:71_000]
                assert await ra.read_at(5, 0) == b""
            finally:
                await ra.close()

    async def test_walk_sorted(self, store: Store) -> None:
        """Walk yields every blob once, sorted by digest, and honours ``digest==`` filters."""
        with self.namespace(1):
            digests = []
            for i in range(6):
                data, dgst = create_content(100 + i)
                await write_blob(store, f"walk-{i}", data, expected=dgst)
                digests.append(dgst)
            infos = [info async for info in store.walk()]
            assert [i.digest for i in infos] == sorted(digests)
            assert {i.digest: i.size for i in infos} == {d: 100 + n for n, d in enumerate(digests)}
            picked = [info.digest async for info in store.walk(f"digest=={digests[3]}")]
            assert picked == [digests[3]]
            picked = [
                info.digest async for info in store.walk(f"digest=={digests[1]}", f"digest=={digests[4]}")
            ]
            assert picked == sorted([digests[1], digests[4]])
            assert [info async for info in store.walk("digest==sha256:nothing")] == []
            with pytest.raises(errdefs.InvalidArgument):
                _ = [info async for info in store.walk("digest==")]

    @pytest.mark.parametrize("bad", BAD_DIGESTS)
    async def test_bad_digest_invalid_argument(self, store: Store, bad: str) -> None:
        """Malformed digests are rejected with InvalidArgument by every digest-taking method."""
        with self.namespace(1):
            with pytest.raises(errdefs.InvalidArgument):
                await store.info(bad)
            with pytest.raises(errdefs.InvalidArgument):
                await store.reader_at(bad)
            with pytest.raises(errdefs.InvalidArgument):
                await store.delete(bad)
            await check_committed(store, bad, False)

    @pytest.mark.parametrize("bad", [d for d in BAD_DIGESTS if d])
    async def test_writer_bad_expected_digest(self, store: Store, bad: str) -> None:
        """A malformed expected digest is rejected by ``writer`` with InvalidArgument (and takes no lock)."""
        with self.namespace(1):
            with pytest.raises(errdefs.InvalidArgument):
                await open_writer(store, "bad-expected", expected=bad)
            w = await open_writer(store, "bad-expected")
            await w.close()

    @pytest.mark.parametrize(("algorithm", "length"), [("sha256", 64), ("sha384", 96), ("sha512", 128)])
    async def test_unknown_digest_not_found(self, store: Store, algorithm: str, length: int) -> None:
        """Well-formed digests (sha256/sha384/sha512) of absent blobs are NotFound, never InvalidArgument."""
        with self.namespace(1):
            dgst = f"{algorithm}:{hashlib.new(algorithm, b'absent').hexdigest()}"
            assert len(dgst) == len(algorithm) + 1 + length
            with pytest.raises(errdefs.NotFound):
                await store.info(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.reader_at(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.delete(dgst)
            await check_committed(store, dgst, False)

    async def test_second_writer_unavailable(self, store: Store) -> None:
        """A ref with an open writer is Unavailable until that writer closes or commits."""
        with self.namespace(1):
            w = await open_writer(store, "locked")
            with pytest.raises(errdefs.Unavailable):
                await store.writer("locked")
            other = await open_writer(store, "other")
            await other.close()
            await w.close()
            w = await open_writer(store, "locked")
            await check_ref_not_available(store, "locked")
            await w.write(b"x")
            await w.commit(1, sha256_of(b"x"))
            w = await open_writer(store, "locked")
            await w.close()

    async def test_writer_empty_ref(self, store: Store) -> None:
        """``writer("")`` is InvalidArgument."""
        with self.namespace(1), pytest.raises(errdefs.InvalidArgument):
            await open_writer(store, "")

    async def test_writer_expected_exists(self, store: Store) -> None:
        """Opening a writer for a committed expected digest is AlreadyExists; write_blob treats it as done."""
        with self.namespace(1):
            data, dgst = create_content(300)
            await write_blob(store, "exists", data, total=300, expected=dgst)
            with pytest.raises(errdefs.AlreadyExists):
                await open_writer(store, "exists-2", 300, dgst)
            await write_blob(store, "exists-3", data, total=300, expected=dgst)
            assert await store.list_statuses() == []

    async def test_status_and_abort(self, store: Store) -> None:
        """Status/abort of unknown refs are NotFound; abort discards the ingest."""
        with self.namespace(1):
            with pytest.raises(errdefs.NotFound):
                await store.status("nope")
            with pytest.raises(errdefs.NotFound):
                await store.abort("nope")
            pre_start = utcnow()
            w = await open_writer(store, "abort-me", total=10)
            post_start = utcnow()
            await w.write(b"12345")
            post_update = utcnow()
            await w.close()
            st = await store.status("abort-me")
            assert (st.ref, st.offset, st.total) == ("abort-me", 5, 10)
            assert_time_in("started_at", st.started_at, pre_start, post_start)
            assert_time_in("updated_at", st.updated_at, post_start, post_update)
            assert [s.ref for s in await store.list_statuses("ref==abort-me")] == ["abort-me"]
            assert await store.list_statuses("ref==other") == []
            await store.abort("abort-me")
            with pytest.raises(errdefs.NotFound):
                await store.status("abort-me")
            with pytest.raises(errdefs.NotFound):
                await store.abort("abort-me")
            w = await open_writer(store, "abort-me")
            assert (await w.status()).offset == 0
            assert w.digest() == EMPTY_SHA256
            await w.close()

    async def test_list_statuses_filters(self, store: Store) -> None:
        """list_statuses filters on ``ref``; several filters are OR-ed."""
        with self.namespace(1):
            for ref in ("a-1", "a-2", "b-1"):
                w = await open_writer(store, ref)
                await w.write(ref.encode())
                await w.close()
            assert sorted(s.ref for s in await store.list_statuses()) == ["a-1", "a-2", "b-1"]
            assert sorted(s.ref for s in await store.list_statuses("ref~=^a-")) == ["a-1", "a-2"]
            assert sorted(s.ref for s in await store.list_statuses("ref==a-1", "ref==b-1")) == ["a-1", "b-1"]
            with pytest.raises(errdefs.InvalidArgument):
                await store.list_statuses("ref==")

    async def test_delete(self, store: Store) -> None:
        """Delete removes a blob; afterwards info/reader_at/delete are NotFound."""
        with self.namespace(1):
            data, dgst = create_content(1000)
            await write_blob(store, "del", data, expected=dgst)
            assert await read_blob(store, dgst) == data
            await store.info(dgst)  # (fills any cache)
            await check_committed(store, dgst, True)
            await store.delete(dgst)
            await check_committed(store, dgst, False)
            with pytest.raises(errdefs.NotFound):
                await store.info(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.reader_at(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.delete(dgst)
            assert [i async for i in store.walk()] == []
            await write_blob(store, "del", data, expected=dgst)
            assert await read_blob(store, dgst) == data

    async def test_write_blob_resumes(self, store: Store) -> None:
        """write_blob resumes a partial ingest of the same ref, and restarts when the ingest is longer."""
        with self.namespace(1):
            data, dgst = create_content(3000)
            w = await open_writer(store, "wb", total=3000)
            await w.write(data[:1234])
            await w.close()
            await write_blob(store, "wb", data, total=3000, expected=dgst)
            assert await read_blob(store, dgst) == data

            small = b"short"
            w = await open_writer(store, "wb2")
            await w.write(b"x" * 100)
            await w.close()
            await write_blob(store, "wb2", small, expected=sha256_of(small))
            assert await read_blob(store, sha256_of(small)) == small

    async def test_commit_mismatch_keeps_ingest(self, store: Store) -> None:
        """A size or digest mismatch raises FailedPrecondition and keeps the ingest for resumption."""
        with self.namespace(1):
            data, dgst = create_content(500)
            w = await open_writer(store, "mismatch", total=500)
            await w.write(data)
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(499, dgst)
            st = await store.status("mismatch")
            assert st.offset == 500
            w = await open_writer(store, "mismatch", total=500)
            assert w.digest() == dgst
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(500, sha256_of(b"other"))
            w = await open_writer(store, "mismatch", total=500)
            await w.commit(500, dgst)
            with pytest.raises(errdefs.NotFound):
                await store.status("mismatch")


class _NamespacedSuite:
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
