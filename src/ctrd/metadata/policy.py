"""Content sharing policy between namespaces."""

from __future__ import annotations

import enum

__all__ = ["SharingPolicy"]


class SharingPolicy(enum.StrEnum):
    """How a writer with an expected digest treats blobs held by other namespaces.

    ``SHARED``: knowing the digest admits the blob (no bytes sent).
    ``ISOLATED``: every byte must be uploaded and verified (prove possession),
    except for blobs held by a namespace labelled
    ``containerd.io/namespace.shareable=true``.
    """

    SHARED = "shared"
    ISOLATED = "isolated"
