"""The local content store: containerd's ``content/local`` on-disk layout.

::

    <root>/
      blobs/<alg>/<hex>           committed blob, read-only for its owner (0400)
      ingest/<sha256hex(ref)>/    one directory per ingest in progress
          ref                     the ref string (UTF-8)
          data                    the bytes written so far
          startedat               RFC 3339 (nanosecond-style) text, written atomically
          updatedat               same format; rewritten when a writer closes
          total                   decimal expected size, only when > 0

A root written by containerd can be read and resumed by ctrd and vice versa
(the timestamp files accept any RFC 3339 offset and up to nine fraction digits).

The data is private: directories are made 0700 and files 0600 (blobs 0400),
whatever the umask (containerd makes them 0755, 0644 and 0444 under umask 022
and relies on its 0700 root alone). Opening a store sets the directories it
knows (``<root>``, ``blobs``, ``blobs/<alg>``, ``ingest``) to 0700; files an
older ctrd or containerd wrote keep their modes.

The store has no namespaces and no labels (labels live in the metadata store),
so :meth:`LocalStore.update` always fails. Digests are validated before any
path is built from them, and no error message carries a filesystem path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import os
import shutil
import stat
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

from ctrd import _aio, errdefs, filters
from ctrd.content import digest as _digest
from ctrd.content._store import Info, Status, utcnow
from ctrd.content.local._locks import RefLocks
from ctrd.content.local._writer import (
    DIR_MODE,
    FILE_MODE,
    INLINE_MAX,
    LocalWriter,
    datetime_from_ns,
    format_timestamp,
    map_os_error,
    parse_timestamp,
    run_blocking,
    write_file,
    write_files_atomic,
)

__all__ = ["LocalReaderAt", "LocalStore"]

_REHASH_CHUNK: Final = 1 << 20
#: open blob fds kept for reuse while no reader holds them (see :class:`_BlobFds`)
FD_CACHE_MAX: Final = 64


@dataclasses.dataclass(slots=True)
class _Ingest:
    """What the blocking part of :meth:`LocalStore.writer` hands back."""

    fd: int
    offset: int
    total: int
    hasher: hashlib._Hash
    started_at: _dt.datetime
    updated_at: _dt.datetime


class _OpenBlob:
    """One open read-only fd of a committed blob, shared by its readers."""

    __slots__ = ("digest", "evicted", "fd", "refs", "size")

    def __init__(self, digest: str, fd: int, size: int) -> None:
        self.digest = digest
        self.fd = fd
        self.size = size
        self.refs = 0
        #: out of the cache: closed as soon as the last reader releases it
        self.evicted = False


class _BlobFds:
    """Open fds of committed blobs, reused across readers (LRU, at most *max_idle* kept).

    A committed blob never changes and readers use ``os.pread`` (no file
    position), so every reader of a digest can share one fd: a ``Read`` RPC per
    32 KiB (``ctr content get``) then costs no ``open``/``fstat``/``close``.
    An entry is evicted when its blob is deleted through the store, or when it
    is the least recently used beyond *max_idle*; an evicted fd is closed once
    its last reader releases it, so readers of a deleted blob keep reading the
    unlinked file, as with a private fd. All methods run on the event loop's thread.
    """

    def __init__(self, max_idle: int = FD_CACHE_MAX) -> None:
        self._max = max_idle
        self._open: OrderedDict[str, _OpenBlob] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, dgst: str) -> _OpenBlob | None:
        """The cached entry for *dgst* with one more reference, or ``None``."""
        entry = self._open.get(dgst)
        if entry is None:
            return None
        self._open.move_to_end(dgst)
        entry.refs += 1
        return entry

    def add(self, entry: _OpenBlob) -> _OpenBlob:
        """Cache the freshly opened *entry* and take one reference to it."""
        old = self._open.pop(entry.digest, None)
        if old is not None:
            self._evict(old)
        self._open[entry.digest] = entry
        entry.refs += 1
        while len(self._open) > self._max:
            _, lru = self._open.popitem(last=False)
            self._evict(lru)
        return entry

    def release(self, entry: _OpenBlob) -> None:
        """Drop one reference; closes the fd of an evicted entry when none is left."""
        entry.refs -= 1
        if entry.evicted and entry.refs == 0:
            os.close(entry.fd)

    def discard(self, dgst: str) -> None:
        """Evict *dgst* (its blob is being or was deleted)."""
        entry = self._open.pop(dgst, None)
        if entry is not None:
            self._evict(entry)

    def close(self) -> None:
        """Evict everything (fds in use close when their readers release them)."""
        while self._open:
            _, entry = self._open.popitem()
            self._evict(entry)

    @staticmethod
    def _evict(entry: _OpenBlob) -> None:
        entry.evicted = True
        if entry.refs == 0:
            os.close(entry.fd)


class LocalReaderAt:
    """Random access to one committed blob through a shared fd and ``os.pread``.

    Implements :class:`ctrd.content.ReaderAt`; also an async context manager.
    Reads of up to 64 KiB run inline, larger ones in a worker thread. The fd
    comes from the store's cache of open blobs; :meth:`close` gives it back once
    no read is in flight.
    """

    def __init__(self, blob: _OpenBlob, fds: _BlobFds) -> None:
        self._blob: _OpenBlob | None = blob
        self._fds = fds
        self._fd: int | None = blob.fd
        self._size = blob.size
        self._digest = blob.digest
        self._inflight = 0
        self._closing = False

    @property
    def size(self) -> int:
        """Size of the blob in bytes."""
        return self._size

    @property
    def digest(self) -> str:
        """Digest of the blob."""
        return self._digest

    def __repr__(self) -> str:
        return f"<LocalReaderAt {self._digest} size={self._size}>"

    async def __aenter__(self) -> LocalReaderAt:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read_at(self, offset: int, n: int) -> bytes:
        """Read up to *n* bytes at *offset*.

        Returns fewer bytes only at the end of the blob, and ``b""`` for
        ``offset >= size`` (Go's ``ReadAt`` gives ``io.EOF`` there).

        :raises errdefs.InvalidArgument: negative *offset* or *n*.
        :raises errdefs.FailedPrecondition: the reader is closed.
        """
        if offset < 0:
            raise errdefs.InvalidArgument(f"read of {self._digest}: negative offset {offset}")
        if n < 0:
            raise errdefs.InvalidArgument(f"read of {self._digest}: negative size {n}")
        fd = self._fd
        if fd is None or self._closing:
            raise errdefs.FailedPrecondition(f"read of {self._digest}: reader is closed")
        n = min(n, self._size - offset)
        if n <= 0:
            return b""
        self._inflight += 1
        try:
            if n <= INLINE_MAX:
                return self._pread(fd, offset, n)
            return await run_blocking(self._pread, fd, offset, n)
        finally:
            self._inflight -= 1
            if self._closing and self._inflight == 0:
                self._release()

    def _pread(self, fd: int, offset: int, n: int) -> bytes:
        try:
            data = os.pread(fd, n, offset)
            if len(data) == n or not data:
                return data
            parts = [data]
            got = len(data)
            while got < n:
                chunk = os.pread(fd, n - got, offset + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise map_os_error(exc, f"read of {self._digest}") from None

    async def close(self) -> None:
        """Close the fd (after in-flight reads finish). Idempotent."""
        if self._fd is None or self._closing:
            return
        self._closing = True
        if self._inflight == 0:
            self._release()

    def _release(self) -> None:
        blob, self._blob = self._blob, None
        self._fd = None
        if blob is not None:
            self._fds.release(blob)


class LocalStore:
    """Content store over a directory. Implements :class:`ctrd.content.Store`.

    Creating the store creates ``<root>`` and ``<root>/ingest`` (blocking; do it
    at start-up). Ref locks are per instance and in memory: a second
    :class:`LocalStore` on the same root (a daemon restart) sees the ingests
    but none of the locks.

    Timestamps: a blob's ``created_at`` and ``updated_at`` are both its mtime
    (set at commit); containerd reports atime as ``updated_at``, which is
    unreliable under ``noatime``/``relatime``.

    *direct_write*: writers append the page-aligned part of chunks of
    :data:`~ctrd.content.local._direct.DIRECT_MIN` bytes and more with
    ``O_DIRECT`` (:mod:`ctrd.content.local._direct`), where the filesystem allows it.
    """

    def __init__(self, root: Path | str, *, direct_write: bool = False) -> None:
        self._root = Path(root)
        self._direct_write = direct_write
        self._blobs = self._root / "blobs"
        self._ingest = self._root / "ingest"
        self._ingest_str = os.fspath(self._ingest)
        self._blobs_str = os.fspath(self._blobs)
        self._root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._ingest.mkdir(mode=DIR_MODE, exist_ok=True)
        _private_dirs([self._root, self._ingest, self._blobs, *(self._blobs / a for a in _digest.ALGORITHMS)])
        self._locks = RefLocks()
        self._fds = _BlobFds()
        weakref.finalize(self, self._fds.close)

    @property
    def root(self) -> Path:
        """The store's root directory."""
        return self._root

    def __repr__(self) -> str:
        return f"<LocalStore root={str(self._root)!r}>"

    # -- paths (digests validated first) ---------------------------------

    def _blob_path(self, dgst: str) -> Path:
        algorithm, encoded = _digest.parse(dgst)
        return self._blobs / algorithm / encoded

    def _ingest_dir(self, ref: str) -> Path:
        return self._ingest / hashlib.sha256(ref.encode()).hexdigest()

    def _ingest_path(self, ref: str) -> str:
        """:meth:`_ingest_dir` as a string (the hot paths avoid pathlib's overhead)."""
        return f"{self._ingest_str}/{hashlib.sha256(ref.encode()).hexdigest()}"

    # -- blobs -------------------------------------------------------------

    async def info(self, dgst: str) -> Info:
        """Size and mtime of the blob; labels are always empty.

        :raises errdefs.InvalidArgument: malformed digest.
        :raises errdefs.NotFound: ``content digest <d>``.
        """
        path = self._blob_path(dgst)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise errdefs.NotFound(f"content digest {dgst}") from None
        except OSError as exc:
            raise map_os_error(exc, f"content digest {dgst}") from None
        if not stat.S_ISREG(st.st_mode):
            raise errdefs.NotFound(f"content digest {dgst}")
        t = datetime_from_ns(st.st_mtime_ns)
        return Info(digest=dgst, size=st.st_size, created_at=t, updated_at=t, labels={})

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Always fails: the local store keeps no labels.

        :raises errdefs.FailedPrecondition: ``update not supported on immutable content store``.
        """
        raise errdefs.FailedPrecondition("update not supported on immutable content store")

    async def walk(self, *filters_: str) -> AsyncIterator[Info]:
        """Yield every blob matching any of *filters_* (field ``digest``), sorted by digest.

        :raises errdefs.InvalidArgument: a malformed filter (on first iteration).
        """
        flt = filters.parse_all(*filters_)
        infos = await run_blocking(self._list_blobs_sync)
        slices = _aio.TimeSlice() if flt.has_regexp else None
        for info in infos:
            if slices is not None:
                await slices.tick()
            if flt.match(filters.adaptor_from_mapping({"digest": info.digest}, info.labels)):
                yield info

    def _list_blobs_sync(self) -> list[Info]:
        infos: list[Info] = []
        for algorithm in _digest.ALGORITHMS:
            try:
                entries = list(os.scandir(self._blobs / algorithm))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise map_os_error(exc, "walk blobs") from None
            for entry in entries:
                dgst = f"{algorithm}:{entry.name}"
                try:
                    _digest.validate(dgst)
                    st = entry.stat(follow_symlinks=False)
                except (errdefs.InvalidArgument, FileNotFoundError):
                    continue
                except OSError as exc:
                    raise map_os_error(exc, "walk blobs") from None
                if not stat.S_ISREG(st.st_mode):
                    continue
                t = datetime_from_ns(st.st_mtime_ns)
                infos.append(Info(digest=dgst, size=st.st_size, created_at=t, updated_at=t, labels={}))
        infos.sort(key=lambda i: i.digest)
        return infos

    async def delete(self, dgst: str) -> None:
        """Remove the blob (open readers keep reading the unlinked file).

        :raises errdefs.InvalidArgument: malformed digest.
        :raises errdefs.NotFound: ``content digest <d>``.
        """
        path = self._blob_path(dgst)
        try:
            try:
                await run_blocking(os.unlink, path)
            finally:
                # After the unlink: a reader opened meanwhile may have cached the fd.
                self._fds.discard(dgst)
        except (FileNotFoundError, NotADirectoryError):
            raise errdefs.NotFound(f"content digest {dgst}") from None
        except IsADirectoryError:
            raise errdefs.NotFound(f"content digest {dgst}") from None
        except OSError as exc:
            raise map_os_error(exc, f"delete content digest {dgst}") from None

    async def reader_at(self, dgst: str) -> LocalReaderAt:
        """Open the blob for random reads (sharing a cached fd when one is open).

        :raises errdefs.InvalidArgument: malformed digest.
        :raises errdefs.NotFound: ``content digest <d>``.
        """
        fds = self._fds
        blob = fds.get(dgst)
        if blob is not None:
            return LocalReaderAt(blob, fds)
        path = self._blob_path(dgst)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise errdefs.NotFound(f"content digest {dgst}") from None
        except OSError as exc:
            raise map_os_error(exc, f"content digest {dgst}") from None
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise map_os_error(exc, f"content digest {dgst}") from None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise errdefs.NotFound(f"content digest {dgst}")
        return LocalReaderAt(fds.add(_OpenBlob(dgst, fd, st.st_size)), fds)

    # -- ingests -----------------------------------------------------------

    async def status(self, ref: str) -> Status:
        """Status of the ingest *ref* as recorded on disk.

        ``offset`` is the size of ``data``; ``total`` comes from ``total`` (0 if
        absent or unreadable); ``updated_at`` is the later of ``updatedat`` and
        the data's mtime; ``expected`` is always empty.

        :raises errdefs.NotFound: ``reference <ref>``.
        """
        st = self._status_sync(self._ingest_dir(ref))
        if st is None or st.ref != ref:
            raise errdefs.NotFound(f"reference {ref}")
        return st

    def _status_sync(self, ingest_dir: Path) -> Status | None:
        """Read one ingest directory; ``None`` if it, ``data`` or ``ref`` is missing."""
        try:
            ref = (ingest_dir / "ref").read_bytes().decode("utf-8", errors="replace")
            data_st = os.stat(ingest_dir / "data")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise map_os_error(exc, "read ingest status") from None
        try:
            total = int((ingest_dir / "total").read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            total = 0
        data_mtime = datetime_from_ns(data_st.st_mtime_ns)
        started_at = _read_timestamp(ingest_dir / "startedat") or data_mtime
        updated_at = max(_read_timestamp(ingest_dir / "updatedat") or data_mtime, data_mtime)
        return Status(
            ref=ref,
            offset=data_st.st_size,
            total=total,
            started_at=started_at,
            updated_at=updated_at,
        )

    async def list_statuses(self, *filters_: str) -> list[Status]:
        """Statuses of all ingests matching any of *filters_* (field ``ref``), sorted by ref.

        Ingests that vanish or are half-created while listing are skipped.

        :raises errdefs.InvalidArgument: a malformed filter.
        """
        flt = filters.parse_all(*filters_)
        statuses = await run_blocking(self._list_statuses_sync)
        slices = _aio.TimeSlice() if flt.has_regexp else None
        out = []
        for st in statuses:
            if slices is not None:
                await slices.tick()
            if flt.match(filters.adaptor_from_mapping({"ref": st.ref}, {})):
                out.append(st)
        return out

    def _list_statuses_sync(self) -> list[Status]:
        try:
            entries = list(os.scandir(self._ingest))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise map_os_error(exc, "list ingests") from None
        statuses = []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                st = self._status_sync(Path(entry.path))
            except errdefs.NotFound:
                continue
            if st is not None:
                statuses.append(st)
        statuses.sort(key=lambda s: s.ref)
        return statuses

    async def walk_status_refs(self) -> list[str]:
        """Refs of all ingest directories on disk (for the garbage collector), sorted.

        Unlike :meth:`list_statuses`, this includes directories whose ``data`` is
        missing (a crash between a commit's rename and the directory's removal),
        so the collector can :meth:`abort` them; only directories without a
        readable ``ref`` file cannot be named and are skipped.
        """
        return await run_blocking(self._walk_refs_sync)

    def _walk_refs_sync(self) -> list[str]:
        try:
            entries = list(os.scandir(self._ingest))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise map_os_error(exc, "list ingests") from None
        refs = []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                ref = (Path(entry.path) / "ref").read_bytes().decode("utf-8", errors="replace")
            except OSError:
                continue
            if entry.name == hashlib.sha256(ref.encode()).hexdigest():
                refs.append(ref)
        return sorted(refs)

    async def abort(self, ref: str) -> None:
        """Remove the ingest *ref* and its data.

        Unlike containerd's local store (which ignores a missing ingest), a
        missing ingest is an error here, as in the metadata store. An open
        writer on the ref is not stopped; its commit will then fail.

        :raises errdefs.NotFound: ``reference <ref>``.
        """
        ingest_dir = self._ingest_dir(ref)
        if not ingest_dir.is_dir():
            raise errdefs.NotFound(f"reference {ref}")
        try:
            await run_blocking(shutil.rmtree, ingest_dir)
        except (FileNotFoundError, NotADirectoryError):
            raise errdefs.NotFound(f"reference {ref}") from None
        except OSError as exc:
            raise map_os_error(exc, f"abort reference {ref}") from None

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> LocalWriter:
        """Open the ingest *ref*, resuming it if it exists on disk.

        Takes the ref's lock first (no retry; see
        :func:`ctrd.content.helpers.open_writer`). A resumed ingest re-hashes its
        ``data`` in a worker thread; its offset, total and timestamps come from
        disk. If the stored total is 0 and *total* > 0, *total* is recorded. An
        ingest directory missing ``ref`` or ``data`` (a crash during creation)
        is recreated empty. *expected* is only used for the existence check:
        the writer always hashes with sha256.

        :raises errdefs.InvalidArgument: ``ref must not be empty``; malformed *expected*.
        :raises errdefs.Unavailable: ``ref <ref> locked for <d> (since <t>)``.
        :raises errdefs.AlreadyExists: ``content <expected>`` is committed already.
        :raises errdefs.Unknown: ``provided total differs from status: <total> != <stored>``,
            or the stored ref differs (``ref key does not match``).
        """
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        if expected:
            _digest.validate(expected)
        self._locks.lock(ref)
        ingest_dir = self._ingest_path(ref)
        try:
            if expected:
                algorithm, encoded = _digest.parse(expected)
                # one stat, cheaper inline than a thread hop
                if os.path.exists(f"{self._blobs_str}/{algorithm}/{encoded}"):  # noqa: ASYNC240
                    raise errdefs.AlreadyExists(f"content {expected}")
            ingest = await run_blocking(self._open_ingest_sync, ref, total, ingest_dir, discard=_close_ingest)
        except BaseException:
            self._locks.unlock(ref)
            raise
        return LocalWriter(
            locks=self._locks,
            ref=ref,
            ingest_dir=ingest_dir,
            blobs_dir=self._blobs_str,
            fd=ingest.fd,
            offset=ingest.offset,
            total=ingest.total,
            hasher=ingest.hasher,
            started_at=ingest.started_at,
            updated_at=ingest.updated_at,
            direct=self._direct_write,
        )

    def _open_ingest_sync(self, ref: str, total: int, ingest_dir: str) -> _Ingest:
        try:
            try:
                os.mkdir(ingest_dir, DIR_MODE)
            except FileExistsError:
                st = self._status_sync(Path(ingest_dir))
                if st is not None:
                    return self._resume_sync(Path(ingest_dir), ref, total, st)
            return self._create_sync(ingest_dir, ref, total)
        except OSError as exc:
            raise map_os_error(exc, f"open ref {ref}") from None

    def _resume_sync(self, ingest_dir: Path, ref: str, total: int, st: Status) -> _Ingest:
        if st.ref != ref:
            raise errdefs.Unknown(f"ref key does not match: {ref} != {st.ref}")
        if total > 0 and st.total > 0 and total != st.total:
            raise errdefs.Unknown(f"provided total differs from status: {total} != {st.total}")
        if total > 0 and st.total == 0:
            write_file(os.fspath(ingest_dir / "total"), str(total).encode("ascii"))
        else:
            total = st.total
        fd = os.open(ingest_dir / "data", os.O_RDWR | os.O_CLOEXEC)
        try:
            hasher = hashlib.sha256()
            buf = bytearray(_REHASH_CHUNK)
            view = memoryview(buf)
            offset = 0
            while True:
                n = os.preadv(fd, [buf], offset)
                if n == 0:
                    break
                hasher.update(view[:n])
                offset += n
        except BaseException:
            os.close(fd)
            raise
        return _Ingest(fd, offset, total, hasher, st.started_at, st.updated_at)

    def _create_sync(self, ingest_dir: str, ref: str, total: int) -> _Ingest:
        now = utcnow()
        stamp = format_timestamp(now).encode()
        write_file(f"{ingest_dir}/ref", ref.encode())
        write_files_atomic([(f"{ingest_dir}/startedat", stamp), (f"{ingest_dir}/updatedat", stamp)])
        if total > 0:
            write_file(f"{ingest_dir}/total", str(total).encode("ascii"))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{ingest_dir}/total")
        fd = os.open(f"{ingest_dir}/data", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        return _Ingest(fd, 0, max(total, 0), hashlib.sha256(), now, now)


def _private_dirs(paths: Sequence[Path]) -> None:
    """Set existing directories among *paths* to :data:`DIR_MODE` (an older ctrd made them 0755)."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(path, DIR_MODE)


def _read_timestamp(path: Path) -> _dt.datetime | None:
    try:
        return parse_timestamp(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def _close_ingest(ingest: _Ingest) -> None:
    os.close(ingest.fd)
