"""An in-memory content store: a complete :class:`ctrd.content.Store`, nothing on disk.

For tests of code that takes a store (a gRPC service, a wrapping store, a
plugin), and as a reference for store authors: it passes containerd's content
conformance suite (:mod:`ctrd.testing.content_suite`), namespaced or not::

    store = MemoryStore()
    await write_blob(store, "ref", b"hello")

Its behaviour and messages are containerd's metadata store's: blobs carry labels;
a ref is locked while a writer is open (a second writer is
:class:`~ctrd.errdefs.Unavailable`); a failed commit releases the lock and keeps
the data unless the blob exists already; filters are containerd's
(:mod:`ctrd.filters`: ``digest`` and ``labels.*`` for blobs, ``ref`` for ingests).

With ``namespaced=True`` every call needs a namespace
(:func:`ctrd.namespaces.with_namespace`) and each namespace has its own blobs and
ingests (nothing is shared between namespaces). The state is public, for tests
to inspect or arrange: :attr:`MemoryStore.blobs` and :attr:`MemoryStore.ingests`
map a namespace (``""`` when not namespaced) to its blobs by digest and its
ingests by ref.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence

from ctrd import errdefs, filters, labels, namespaces
from ctrd.content import Info, Status, digest, utcnow

__all__ = ["MemoryBlob", "MemoryIngest", "MemoryReader", "MemoryStore", "MemoryWriter"]


@dataclasses.dataclass
class MemoryBlob:
    """A committed blob."""

    data: bytes
    created_at: _dt.datetime
    updated_at: _dt.datetime
    labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def info(self, dgst: str) -> Info:
        """The blob's :class:`~ctrd.content.Info` (a copy of its labels)."""
        return Info(dgst, len(self.data), self.created_at, self.updated_at, dict(self.labels))


@dataclasses.dataclass
class MemoryIngest:
    """An ingest in progress: the bytes written so far, and whether a writer holds it."""

    data: bytearray
    started_at: _dt.datetime
    updated_at: _dt.datetime
    total: int = 0
    locked: bool = False

    def status(self, ref: str) -> Status:
        """The ingest's :class:`~ctrd.content.Status`."""
        return Status(ref, len(self.data), self.total, self.started_at, self.updated_at)


class MemoryReader:
    """A :class:`~ctrd.content.ReaderAt` over a blob's bytes."""

    def __init__(self, dgst: str, data: bytes) -> None:
        self._digest = dgst
        self._data = data
        self._closed = False

    @property
    def size(self) -> int:
        return len(self._data)

    async def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0:
            raise errdefs.InvalidArgument(f"read of {self._digest}: negative offset or size")
        if self._closed:
            raise errdefs.FailedPrecondition(f"read of {self._digest}: reader is closed")
        return self._data[offset : offset + n]

    async def close(self) -> None:
        self._closed = True


class MemoryWriter:
    """A :class:`~ctrd.content.Writer` on a :class:`MemoryIngest`; holds its lock until closed
    or committed."""

    def __init__(self, store: MemoryStore, namespace: str, ref: str, ingest: MemoryIngest) -> None:
        self._store = store
        self._namespace = namespace
        self._ref = ref
        self._ingest = ingest
        self._hash = hashlib.sha256(ingest.data)
        self._done = False

    def _check_open(self, what: str) -> None:
        if self._done:
            raise errdefs.FailedPrecondition(f"cannot {what} on closed writer")

    async def write(self, data: bytes | memoryview) -> int:
        self._check_open("write")
        self._ingest.data += data
        self._hash.update(data)
        self._ingest.updated_at = utcnow()
        return len(data)

    def digest(self) -> str:
        return f"{digest.CANONICAL}:{self._hash.hexdigest()}"

    async def status(self) -> Status:
        return self._ingest.status(self._ref)

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        """Verify and commit; the lock is released whatever happens.

        :raises errdefs.FailedPrecondition: ``"<ref>" failed size validation: <actual> != <size>``
            or ``unexpected commit digest <actual>, expected <expected>`` (the ingest is kept).
        :raises errdefs.AlreadyExists: ``content <digest>`` (the ingest is removed).
        """
        self._check_open("commit")
        self._done = True
        self._ingest.locked = False
        _validate_labels(labels or {})
        actual_size = len(self._ingest.data)
        if size > 0 and size != actual_size:
            raise errdefs.FailedPrecondition(f'"{self._ref}" failed size validation: {actual_size} != {size}')
        actual = self.digest()
        if expected and expected != actual:
            raise errdefs.FailedPrecondition(f"unexpected commit digest {actual}, expected {expected}")
        ingests = self._store.ingests[self._namespace]
        if ingests.get(self._ref) is self._ingest:
            del ingests[self._ref]
        blobs = self._store.blobs[self._namespace]
        if actual in blobs:
            raise errdefs.AlreadyExists(f"content {actual}")
        now = utcnow()
        blobs[actual] = MemoryBlob(
            bytes(self._ingest.data), now, now, {k: v for k, v in (labels or {}).items()}
        )

    async def truncate(self, size: int) -> None:
        """Start the ingest over (only ``0`` is supported, as by containerd's local store)."""
        self._check_open("truncate")
        if size != 0:
            raise errdefs.InvalidArgument("truncate: unsupported size")
        self._ingest.data.clear()
        self._hash = hashlib.sha256()
        self._ingest.updated_at = utcnow()

    async def close(self) -> None:
        """Release the lock and keep the data for resumption (a no-op after commit or close)."""
        if not self._done:
            self._done = True
            self._ingest.locked = False


def _validate_labels(lbls: Mapping[str, str]) -> None:
    try:
        labels.validate_all(lbls)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"info.Labels: {exc.context}") from exc


class MemoryStore:
    """A content store in memory (see the module's documentation).

    :param namespaced: keep blobs and ingests per namespace (every call then needs one).
    """

    def __init__(self, *, namespaced: bool = False) -> None:
        self.namespaced = namespaced
        self.blobs: defaultdict[str, dict[str, MemoryBlob]] = defaultdict(dict)
        """Committed blobs: namespace -> digest -> blob."""
        self.ingests: defaultdict[str, dict[str, MemoryIngest]] = defaultdict(dict)
        """Ingests: namespace -> ref -> ingest."""

    def _namespace(self) -> str:
        return namespaces.required() if self.namespaced else ""

    def _blob(self, dgst: str) -> MemoryBlob:
        digest.validate(dgst)
        blob = self.blobs[self._namespace()].get(dgst)
        if blob is None:
            raise errdefs.NotFound(f"content digest {dgst}")
        return blob

    def _ingest(self, ref: str) -> MemoryIngest:
        ingest = self.ingests[self._namespace()].get(ref)
        if ingest is None:
            raise errdefs.NotFound(f"reference {ref}")
        return ingest

    # -- provider and manager -----------------------------------------------------------

    async def info(self, dgst: str) -> Info:
        return self._blob(dgst).info(dgst)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Replace the labels (no *fieldpaths*, or ``labels``) or set/remove single ones
        (``labels.<key>``; an empty value removes).

        :raises errdefs.InvalidArgument: another field path, or a label over the size bound.
        """
        blob = self._blob(info.digest)
        new = dict(blob.labels)
        if not fieldpaths:
            new = dict(info.labels)
        for path in fieldpaths:
            if path == "labels":
                new = dict(info.labels)
            elif path.startswith("labels.") and len(path) > len("labels."):
                key = path[len("labels.") :]
                new[key] = info.labels.get(key, "")
            else:
                raise errdefs.InvalidArgument(f'cannot update "{path}" field on content info "{info.digest}"')
        new = {k: v for k, v in new.items() if v}
        _validate_labels(new)
        blob.labels = new
        blob.updated_at = utcnow()
        return blob.info(info.digest)

    async def walk(self, *filter_strings: str) -> AsyncIterator[Info]:
        flt = filters.parse_all(*filter_strings)
        blobs = self.blobs[self._namespace()]
        for dgst in sorted(blobs):
            blob = blobs.get(dgst)  # gone if deleted while the caller was busy
            if blob is not None and flt.match(filters.adaptor_from_mapping({"digest": dgst}, blob.labels)):
                yield blob.info(dgst)

    async def delete(self, dgst: str) -> None:
        self._blob(dgst)
        del self.blobs[self._namespace()][dgst]

    async def reader_at(self, dgst: str) -> MemoryReader:
        return MemoryReader(dgst, self._blob(dgst).data)

    # -- ingester -----------------------------------------------------------------------

    async def status(self, ref: str) -> Status:
        return self._ingest(ref).status(ref)

    async def list_statuses(self, *filter_strings: str) -> list[Status]:
        flt = filters.parse_all(*filter_strings)
        ingests = self.ingests[self._namespace()]
        return [
            ingest.status(ref)
            for ref, ingest in sorted(ingests.items())
            if flt.match(filters.adaptor_from_mapping({"ref": ref}, {}))
        ]

    async def abort(self, ref: str) -> None:
        self._ingest(ref)
        del self.ingests[self._namespace()][ref]

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> MemoryWriter:
        """Open (or resume) the ingest *ref* (a resumed ingest keeps its total).

        :raises errdefs.InvalidArgument: empty ref, malformed *expected*.
        :raises errdefs.AlreadyExists: ``content <expected>`` when it is committed.
        :raises errdefs.Unavailable: ``ref <ref> locked`` while another writer holds it.
        """
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        ns = self._namespace()
        if expected:
            digest.validate(expected)
            if expected in self.blobs[ns]:
                raise errdefs.AlreadyExists(f"content {expected}")
        ingest = self.ingests[ns].get(ref)
        if ingest is None:
            now = utcnow()
            ingest = self.ingests[ns][ref] = MemoryIngest(bytearray(), now, now, total)
        if ingest.locked:
            raise errdefs.Unavailable(f"ref {ref} locked")
        ingest.locked = True
        return MemoryWriter(self, ns, ref, ingest)
