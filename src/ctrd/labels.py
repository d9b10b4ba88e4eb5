"""Label validation and the well-known containerd label keys.

Port of containerd's ``pkg/labels``: a label's key and value together may
hold at most 4096 bytes (UTF-8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ctrd import errdefs

__all__ = [
    "GC_EXPIRE",
    "GC_REF_CONTENT",
    "GC_ROOT",
    "KEY_MAX_LEN",
    "MAX_SIZE",
    "SHAREABLE_NAMESPACE",
    "validate",
    "validate_all",
]

MAX_SIZE: Final = 4096
"""Maximum combined size of a label's key and value, in bytes."""

KEY_MAX_LEN: Final = 64
"""How many bytes of an oversized label's key the error message shows."""

GC_ROOT: Final = "containerd.io/gc.root"
"""Marks an object as a garbage-collection root."""

GC_EXPIRE: Final = "containerd.io/gc.expire"
"""RFC 3339 time after which a GC root (e.g. a lease) expires."""

GC_REF_CONTENT: Final = "containerd.io/gc.ref.content"
"""Prefix of labels that reference other content blobs (by digest)."""

SHAREABLE_NAMESPACE: Final = "containerd.io/namespace.shareable"
"""Namespace label (``"true"``) that makes its content shareable across namespaces."""


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def validate(key: str, value: str) -> None:
    """Check that the label ``key=value`` fits in :data:`MAX_SIZE` bytes.

    :raises errdefs.InvalidArgument: ``label key and value length (<n> bytes)
        greater than maximum size (4096 bytes), key: <first 64 bytes of key>``.
    """
    total = _utf8_len(key) + _utf8_len(value)
    if total > MAX_SIZE:
        shown = key.encode("utf-8", "surrogatepass")[:KEY_MAX_LEN].decode("utf-8", "ignore")
        raise errdefs.InvalidArgument(
            f"label key and value length ({total} bytes) greater than maximum size "
            f"({MAX_SIZE} bytes), key: {shown}"
        )


def validate_all(labels: Mapping[str, str]) -> None:
    """Validate every label of ``labels`` with :func:`validate` (first failure wins)."""
    for key, value in labels.items():
        validate(key, value)
