"""The local content store: blobs and ingests in a directory, containerd's layout.

See :mod:`ctrd.content.local._store` for the on-disk layout. This package has
no namespaces and no labels; the metadata store layers those on top.
"""

from __future__ import annotations

from ctrd.content.local._reader import LocalReaderAt
from ctrd.content.local._store import LocalStore
from ctrd.content.local._writer import LocalWriter

__all__ = ["LocalReaderAt", "LocalStore", "LocalWriter"]
