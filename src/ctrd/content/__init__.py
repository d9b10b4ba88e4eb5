"""Content-addressed storage: interfaces, digests and helpers.

Blobs are addressed by digest (:mod:`ctrd.content.digest`). Bytes arrive
through a :class:`Writer` opened on a *ref* (an ingest); until the writer
commits, they are visible only as a :class:`Status`, never as an
:class:`Info` or through :meth:`Store.reader_at`. A committed blob is
immutable. Implementations: :mod:`ctrd.content.local` (a directory),
the namespaced metadata store, and the remote client store.
"""

from __future__ import annotations

from ctrd.content._store import (
    CommitChecker,
    Info,
    InfoProvider,
    InfoRecord,
    Ingester,
    IngestManager,
    Manager,
    Provider,
    ReaderAt,
    RecordWalker,
    Status,
    Store,
    Writer,
    utcnow,
)
from ctrd.content.digest import EMPTY_SHA256, parse, sha256_of, validate
from ctrd.content.helpers import copy, open_writer, read_blob, write_blob

__all__ = [
    "EMPTY_SHA256",
    "CommitChecker",
    "Info",
    "InfoProvider",
    "InfoRecord",
    "IngestManager",
    "Ingester",
    "Manager",
    "Provider",
    "ReaderAt",
    "RecordWalker",
    "Status",
    "Store",
    "Writer",
    "copy",
    "open_writer",
    "parse",
    "read_blob",
    "sha256_of",
    "utcnow",
    "validate",
    "write_blob",
]
