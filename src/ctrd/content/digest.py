"""Content digests with go-digest semantics (``github.com/opencontainers/go-digest``).

A digest is ``<algorithm>:<encoded>``, e.g. ``sha256:e3b0c442...``. Only the
algorithms go-digest registers by default are *known* (``sha256``, ``sha384``,
``sha512``); each has a fixed hex length. :func:`validate` reproduces
``digest.Digest.Validate``, error texts included, and raises
:class:`ctrd.errdefs.InvalidArgument` so that the gRPC edge maps it to
``InvalidArgument``.

Every code path that turns a digest into a filesystem path must call
:func:`validate` (or :func:`parse`) first: a validated digest contains no ``/``,
``.`` or ``..`` component in its encoded part.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from ctrd import errdefs

__all__ = [
    "ALGORITHMS",
    "CANONICAL",
    "EMPTY_SHA256",
    "ERR_INVALID_FORMAT",
    "ERR_INVALID_LENGTH",
    "ERR_UNSUPPORTED",
    "parse",
    "sha256_of",
    "validate",
]

CANONICAL: Final = "sha256"
"""The algorithm every ctrd store hashes with."""

ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha384": 96, "sha512": 128}
"""Known algorithms and the length of their hex-encoded part."""

EMPTY_SHA256: Final = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"""Digest of the empty byte string."""

ERR_INVALID_FORMAT: Final = "invalid checksum digest format"
ERR_UNSUPPORTED: Final = "unsupported digest algorithm"
ERR_INVALID_LENGTH: Final = "invalid checksum digest length"

_DIGEST_RE: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_RE: Final = re.compile(r"[a-f0-9]+")


def parse(d: str) -> tuple[str, str]:
    """Validate *d* and split it into ``(algorithm, hex)``.

    :raises errdefs.InvalidArgument: as :func:`validate`.
    """
    validate(d)
    algorithm, _, encoded = d.partition(":")
    return algorithm, encoded


def validate(d: str) -> None:
    """Check that *d* is a well-formed digest of a known algorithm.

    The order of the checks is go-digest's:

    1. no ``:``, nothing before it or nothing after it -> ``invalid checksum digest format``;
    2. unknown algorithm -> ``invalid checksum digest format`` when the whole
       string does not match ``^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$``,
       else ``unsupported digest algorithm``;
    3. known algorithm, wrong encoded length -> ``invalid checksum digest length``;
    4. encoded part not lowercase hex -> ``invalid checksum digest format``.

    :raises errdefs.InvalidArgument: with one of the messages above as context.
    """
    if not isinstance(d, str):
        raise errdefs.InvalidArgument(ERR_INVALID_FORMAT)
    i = d.find(":")
    if i <= 0 or i + 1 == len(d):
        raise errdefs.InvalidArgument(ERR_INVALID_FORMAT)
    algorithm, encoded = d[:i], d[i + 1 :]
    length = ALGORITHMS.get(algorithm)
    if length is None:
        if _DIGEST_RE.fullmatch(d) is None:
            raise errdefs.InvalidArgument(ERR_INVALID_FORMAT)
        raise errdefs.InvalidArgument(ERR_UNSUPPORTED)
    if len(encoded) != length:
        raise errdefs.InvalidArgument(ERR_INVALID_LENGTH)
    if _HEX_RE.fullmatch(encoded) is None:
        raise errdefs.InvalidArgument(ERR_INVALID_FORMAT)


def sha256_of(data: bytes | bytearray | memoryview) -> str:
    """Return the ``sha256:<hex>`` digest of *data*."""
    return f"{CANONICAL}:{hashlib.sha256(data).hexdigest()}"
