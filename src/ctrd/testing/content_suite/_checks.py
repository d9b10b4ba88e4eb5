"""Helpers of the content conformance suite: containerd's ``check*`` functions, content, sources."""

from __future__ import annotations

import contextlib
import datetime as _dt
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
    read_blob,
    sha256_of,
    utcnow,
)

__all__ = [
    "BAD_DIGESTS",
    "GC_ROOT",
    "LABELS",
    "RESUME_FRACTIONS",
    "RESUME_SIZES",
    "SLACK",
    "BytesReaderAt",
    "ResumeFn",
    "SuiteHooks",
    "assert_time_in",
    "check_committed",
    "check_content",
    "check_info",
    "check_newly_created",
    "check_ref_not_available",
    "check_status",
    "create_content",
    "read_section",
    "resume_copy",
    "resume_copy_reader_at",
    "resume_copy_seeker",
    "resume_discard",
    "resume_truncate",
    "write_chunked",
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


async def resume_truncate(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await w.truncate(0)
    await write_chunked(w, b, 1024)
    await w.commit(size, dgst)


async def resume_discard(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await write_chunked(w, b[limit:], 1024)
    await w.commit(size, dgst)


async def resume_copy(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await copy(w, _stream(b), size, dgst)


async def resume_copy_seeker(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
    await copy(w, b, size, dgst)


async def resume_copy_reader_at(w: Writer, b: bytes, limit: int, size: int, dgst: str) -> None:
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


class SuiteHooks:
    """What every case uses: the ``store`` fixture and the ``namespace(k)`` hook.

    The cases are coroutines run by pytest-asyncio (marked ``asyncio``, so they run
    in its strict mode too).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    supports_labels: ClassVar[bool] = True
    """Whether the store keeps labels (``False`` only for a store like containerd's local one)."""

    @pytest.fixture
    async def store(self) -> Store:
        """Override: return a fresh, empty store for each test."""
        raise NotImplementedError("content suite subclasses must override the `store` fixture")

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        """Override: a context manager making namespace ``n<k>`` current (default: no namespace)."""
        del k
        return contextlib.nullcontext()

    def expected_labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        """The labels ``info`` should report after committing with *labels*."""
        return dict(labels) if self.supports_labels else {}
