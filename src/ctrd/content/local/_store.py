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

Here: :class:`LocalStore` itself. Readers and the cache of open blob fds are
:mod:`ctrd.content.local._reader`, one ingest directory (status, create, resume)
:mod:`ctrd.content.local._ingest`, the writer :mod:`ctrd.content.local._writer`,
and the filesystem primitives they share :mod:`ctrd.content.local._fs`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ctrd import _aio, errdefs, filters
from ctrd.content import digest as _digest
from ctrd.content._store import Info, Status
from ctrd.content.local._fs import DIR_MODE, datetime_from_ns, map_os_error, run_blocking
from ctrd.content.local._ingest import close_ingest, open_ingest, read_status
from ctrd.content.local._locks import RefLocks
from ctrd.content.local._reader import BlobFds, LocalReaderAt, OpenBlob
from ctrd.content.local._writer import LocalWriter

__all__ = ["LocalStore"]


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
        self._fds = BlobFds()
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
        return LocalReaderAt(fds.add(OpenBlob(dgst, fd, st.st_size)), fds)

    # -- ingests -----------------------------------------------------------

    async def status(self, ref: str) -> Status:
        """Status of the ingest *ref* as recorded on disk.

        ``offset`` is the size of ``data``; ``total`` comes from ``total`` (0 if
        absent or unreadable); ``updated_at`` is the later of ``updatedat`` and
        the data's mtime; ``expected`` is always empty.

        :raises errdefs.NotFound: ``reference <ref>``.
        """
        st = read_status(self._ingest_dir(ref))
        if st is None or st.ref != ref:
            raise errdefs.NotFound(f"reference {ref}")
        return st

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
                st = read_status(Path(entry.path))
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
        :raises errdefs.FailedPrecondition: ``provided total differs from status: <total> != <stored>``
            (containerd: Unknown; the caller's mistake, not the store's).
        :raises errdefs.Unknown: the stored ref differs (``ref key does not match``).
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
            ingest = await run_blocking(open_ingest, ref, total, ingest_dir, discard=close_ingest)
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


def _private_dirs(paths: Sequence[Path]) -> None:
    """Set existing directories among *paths* to :data:`DIR_MODE` (an older ctrd made them 0755)."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(path, DIR_MODE)
