"""Protobuf and gRPC wire-format pieces shared by the hand-written codecs of the server and the SDK.

See ``ctrd.services._wire`` (hot Content replies) and ``ctrd.client._content``
(WRITE requests); both are tested byte for byte against betterproto2.
"""

from __future__ import annotations

import datetime as _dt
import struct
from typing import Final

__all__ = ["GRPC_PREFIX", "SMALL", "micros", "uvarint"]

GRPC_PREFIX: Final = struct.Struct(">BI")
"""gRPC's 5-byte message prefix: compressed flag, then the message length (big-endian)."""

SMALL: Final = tuple(bytes((i,)) for i in range(0x80))
"""The one-byte varints, ``SMALL[n]`` for ``n < 128``."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def uvarint(v: int) -> bytes:
    """The base-128 varint of a non-negative integer.

    Values below 2**35 (sizes, offsets, a timestamp's seconds and nanos) are
    built in one ``bytes`` call; larger ones byte by byte.
    """
    if v < 0x80:
        return SMALL[v]
    if v < 0x4000:
        return bytes((v & 0x7F | 0x80, v >> 7))
    if v < 0x200000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14))
    if v < 0x10000000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14 & 0x7F | 0x80, v >> 21))
    if v < 0x800000000:
        return bytes(
            (v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14 & 0x7F | 0x80, v >> 21 & 0x7F | 0x80, v >> 28)
        )
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def micros(t: _dt.datetime) -> int:
    """Microseconds since the Unix epoch, exactly (a naive datetime is taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    d = t - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
