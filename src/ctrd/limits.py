"""The bounds ctrd puts on what a client sends and on what it repeats back.

Each bound is enforced where the input enters (a precise ``INVALID_ARGUMENT``,
never a stall) and listed in docs/limits.md. Bounds containerd has are kept as
containerd states them (76-byte identifiers in :mod:`ctrd.identifiers`, 4096
bytes per label in :mod:`ctrd.labels`); the others are ctrd's own.

Error messages repeat a client's value (a ref, a digest, a lease id) so the
caller can tell which one failed; :func:`echo` keeps such a repetition short,
so an error for a megabyte of input costs no more to encode and send than one
for a short input.
"""

from __future__ import annotations

from typing import Final

from ctrd import errdefs

__all__ = [
    "ECHO_CHARS",
    "MAX_IMAGE_NAME_BYTES",
    "MAX_MEDIA_TYPE_BYTES",
    "MAX_REF_BYTES",
    "MAX_STATUS_MESSAGE",
    "check_length",
    "check_ref",
    "echo",
]

MAX_REF_BYTES: Final = 1024
"""The longest ingest ref, lease id and lease resource id accepted, in bytes of UTF-8
(containerd has no limit; the refs its clients make, such as ``layer-sha256:<hex>``,
and the lease ids, are under 100)."""

MAX_IMAGE_NAME_BYTES: Final = 1024
"""The longest image name accepted, in bytes of UTF-8 (containerd has no limit; a
distribution reference is at most about 530: a 255-byte name, a 128-byte tag and a
digest)."""

MAX_MEDIA_TYPE_BYTES: Final = 1024
"""The longest media type of an image's target accepted, in bytes of UTF-8 (containerd
has no limit; RFC 6838 allows 127 bytes for each of type and subtype)."""

ECHO_CHARS: Final = 128
"""How many characters of a client's value an error message repeats."""

MAX_STATUS_MESSAGE: Final = 1024
"""The longest ``grpc-message`` sent, in characters (a longer one is cut, marked ``…``)."""


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """*value* as an error message may repeat it: whole when short, else its start and its length."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…({len(value)} characters)"


def check_length(what: str, value: str, limit: int = MAX_REF_BYTES) -> None:
    """Refuse *value* (a *what*, in the message) over *limit* bytes of UTF-8.

    :raises errdefs.InvalidArgument:
    """
    if len(value) > limit // 4 and len(value.encode("utf-8", "surrogatepass")) > limit:
        raise errdefs.InvalidArgument(f"{what} {echo(value)} is longer than the maximum of {limit} bytes")


def check_ref(ref: str) -> None:
    """Refuse an empty ref or one over :data:`MAX_REF_BYTES`. :raises errdefs.InvalidArgument:"""
    if not ref:
        raise errdefs.InvalidArgument("ref must not be empty")
    check_length("ref", ref)
