"""Direct appends of the local store (``LocalStore(direct_write=True)``).

The conformance suite runs against the direct store; the tests below check what
only the direct path does: which bytes go which way, alignment of every direct
write, the fallback when the filesystem refuses ``O_DIRECT``, errors and short
writes, resumption, truncation, and that fds and staging buffers are given back.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrd import errdefs
from ctrd.content import Store, open_writer, read_blob
from ctrd.content.local import LocalStore, _direct
from ctrd.content.local._direct import ALIGN, DIRECT_MIN, STAGE_SIZE
from ctrd.content.local._fs import INLINE_MAX
from ctrd.testing.content_suite import ContentStoreSuite

pytestmark = pytest.mark.skipif(_direct.O_DIRECT == 0, reason="no O_DIRECT on this platform")

# the tests that count direct writes need a filesystem that takes them; the fallback tests do not
needs_direct_io = pytest.mark.skipif(
    not _direct.supported_in(tempfile.gettempdir()), reason="the temp filesystem refuses O_DIRECT"
)


class TestLocalDirectSuite(ContentStoreSuite):
    """The conformance suite against the local store writing large chunks directly."""

    supports_labels = False

    @pytest.fixture
    async def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "content", direct_write=True)


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content", direct_write=True)


class _Spy:
    """Records every direct write (offset, length) and can make the n-th one fail or write short."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[tuple[int, int]] = []
        self.fail: dict[int, OSError] = {}
        self.short: dict[int, int] = {}
        real = _direct._put

        def put(fd: int, stage: Any, piece: memoryview, offset: int) -> int:
            i = len(self.writes)
            self.writes.append((offset, piece.nbytes))
            if i in self.fail:
                raise self.fail[i]
            if i in self.short:
                return real(fd, stage, piece[: self.short[i]], offset)
            return real(fd, stage, piece, offset)

        monkeypatch.setattr(_direct, "_put", put)

    @property
    def direct_bytes(self) -> int:
        return sum(n for _, n in self.writes)


def _refuse_direct_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``open`` with ``O_DIRECT`` fail with EINVAL, as on a filesystem without direct I/O."""
    real_open: Callable[..., int] = os.open

    def refuse(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & _direct.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(_direct.os, "open", refuse)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    return _Spy(monkeypatch)


def _data(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"direct-{seed}-{n}".encode()).digest(n)


def _dgst(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _open_fds(store: LocalStore) -> int:
    """This process's open fds on the store's files, less its cache of committed blobs' fds."""
    root = str(store.root.resolve())
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(root + "/")
    return n - len(store._fds)


async def _ingest(store: LocalStore, ref: str, chunks: list[bytes]) -> str:
    data = b"".join(chunks)
    dgst = _dgst(data)
    w = await open_writer(store, ref, total=len(data))
    for c in chunks:
        assert await w.write(c) == len(c)
    assert w.digest() == dgst
    await w.commit(len(data), dgst)
    assert await read_blob(store, dgst) == data
    return dgst


@needs_direct_io
@pytest.mark.parametrize(
    "sizes",
    [
        [1 << 20] * 3,  # every chunk aligned: all direct
        [100, 1 << 20, 1 << 20],  # an unaligned start: each later chunk has a buffered head
        [DIRECT_MIN, DIRECT_MIN - 1, DIRECT_MIN + 1, 3 * STAGE_SIZE + 5],  # the threshold; several pieces
        [ALIGN - 1, 5 * ALIGN + 7, STAGE_SIZE + ALIGN + 1, 17],  # unaligned heads and tails
        [DIRECT_MIN - 1] * 3,  # nothing reaches the threshold: all buffered
    ],
)
async def test_bytes_and_alignment(local: LocalStore, spy: _Spy, sizes: list[int]) -> None:
    chunks = [_data(n, i) for i, n in enumerate(sizes)]
    await _ingest(local, "ref", chunks)
    for offset, n in spy.writes:
        assert offset % ALIGN == 0, (offset, n)
        assert n % ALIGN == 0, (offset, n)
        assert 0 < n <= STAGE_SIZE, (offset, n)
    # every chunk of DIRECT_MIN or more sent all of its aligned middle directly
    expected, offset = 0, 0
    for n in sizes:
        if n >= DIRECT_MIN:
            head = -offset % ALIGN
            expected += (n - head) // ALIGN * ALIGN
        offset += n
    assert spy.direct_bytes == expected


def test_supported_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe leaves nothing behind, and says no where O_DIRECT is refused."""
    _direct.supported_in(tmp_path)
    assert list(tmp_path.iterdir()) == []
    _refuse_direct_open(monkeypatch)
    assert _direct.supported_in(tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_direct_appends_run_off_the_event_loop() -> None:
    """Chunks up to INLINE_MAX are written on the loop; direct appends must never be among them."""
    assert DIRECT_MIN > INLINE_MAX


async def test_direct_off_writes_buffered(tmp_path: Path, spy: _Spy) -> None:
    store = LocalStore(tmp_path / "content")  # direct_write defaults to False
    await _ingest(store, "ref", [_data(2 << 20)])
    assert spy.writes == []


@pytest.mark.parametrize("where", ["open", pytest.param("write", marks=needs_direct_io)])
async def test_refused_falls_back_to_buffered(
    local: LocalStore, spy: _Spy, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "open":
        _refuse_direct_open(monkeypatch)
    else:
        spy.fail[0] = OSError(errno.EINVAL, "Invalid argument")
    fds = _open_fds(local)
    w = await open_writer(local, "ref")
    first, second = _data(1 << 20, 1), _data(1 << 20, 2)
    await w.write(first)
    await w.write(second)
    assert w._direct is None  # refused once: buffered for the rest of the ingest
    await w.commit(2 << 20, _dgst(first + second))
    assert await read_blob(local, _dgst(first + second)) == first + second
    assert len(spy.writes) == (0 if where == "open" else 1)
    assert _open_fds(local) == fds


@needs_direct_io
async def test_error_keeps_what_was_written(local: LocalStore, spy: _Spy) -> None:
    """A failed direct write raises ResourceExhausted; offset and digest cover only what landed."""
    first, second = _data(1 << 20, 1), _data(1 << 20, 2)
    spy.fail[1] = OSError(errno.ENOSPC, "No space left on device")
    w = await open_writer(local, "ref")
    await w.write(first)
    with pytest.raises(errdefs.ResourceExhausted, match="write to ref ref: No space left on device"):
        await w.write(second)
    st = await w.status()
    assert st.offset == len(first)
    assert w.digest() == _dgst(first)
    await w.write(second)  # the same bytes again, now that the disk has room
    await w.commit(2 << 20, _dgst(first + second))
    assert await read_blob(local, _dgst(first + second)) == first + second


@needs_direct_io
async def test_short_write_continues_buffered(local: LocalStore, spy: _Spy) -> None:
    data = _data(3 << 20)
    spy.short[1] = 2 * ALIGN
    w = await open_writer(local, "ref")
    await w.write(data)
    assert (await w.status()).offset == len(data)
    await w.commit(len(data), _dgst(data))
    assert await read_blob(local, _dgst(data)) == data
    # pieces: 1 MiB, then 8 KiB of the second (short); the rest of the chunk went buffered
    assert spy.writes == [(0, STAGE_SIZE), (STAGE_SIZE, STAGE_SIZE)]


@needs_direct_io
async def test_resume_after_direct_writes(local: LocalStore, spy: _Spy) -> None:
    first, second = _data((1 << 20) + 123, 1), _data(1 << 20, 2)
    w = await open_writer(local, "ref")
    await w.write(first)
    await w.close()
    w = await open_writer(local, "ref")
    st = await w.status()
    assert st.offset == len(first)
    assert w.digest() == _dgst(first)
    await w.write(second)
    await w.commit(0, _dgst(first + second))
    assert await read_blob(local, _dgst(first + second)) == first + second
    assert spy.direct_bytes == (1 << 20) + (1 << 20) - ALIGN  # the second chunk's head went buffered


@needs_direct_io
async def test_truncate_after_direct_writes(local: LocalStore, spy: _Spy) -> None:
    w = await open_writer(local, "ref")
    await w.write(_data(2 << 20, 1))
    await w.truncate(0)
    data = _data(1 << 20, 2)
    await w.write(data)
    await w.commit(len(data), _dgst(data))
    assert await read_blob(local, _dgst(data)) == data
    assert spy.writes[-1] == (0, 1 << 20)


async def test_fds_and_stages_given_back(local: LocalStore) -> None:
    fds = _open_fds(local)
    for i in range(6):
        await _ingest(local, f"ref-{i}", [_data(2 << 20, i)])
    w = await open_writer(local, "kept")
    await w.write(_data(1 << 20, 99))
    await w.close()
    assert _open_fds(local) == fds
    assert len(_direct._stages._idle) <= 4


async def test_abandoned_commit_closes_direct_fd(local: LocalStore) -> None:
    """A commit that fails verification still closes both fds (the ingest stays resumable)."""
    fds = _open_fds(local)
    w = await open_writer(local, "ref")
    data = _data(1 << 20)
    await w.write(data)
    with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
        await w.commit(len(data), _dgst(b"other"))
    assert _open_fds(local) == fds
    w = await open_writer(local, "ref")
    assert (await w.status()).offset == len(data)
    await w.commit(len(data), _dgst(data))
