"""Protobuf and gRPC wire-format pieces shared by the hand-written codecs of the server and the SDK.

See ``ctrd.wire.codecs`` (hot Content replies) and ``ctrd.client._content``
(WRITE requests); both are tested byte for byte against betterproto2.
"""

from __future__ import annotations

import datetime as _dt
import struct
from typing import Any, Final

__all__ = [
    "GRPC_PREFIX",
    "SMALL",
    "MalformedMessage",
    "check_message",
    "decode",
    "micros",
    "strip_unknown",
    "uvarint",
]

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


# -- strict checking of received messages -------------------------------------------------

_VARINT_TYPES: Final = frozenset(("bool", "enum", "int32", "int64", "uint32", "uint64", "sint32", "sint64"))
_FIXED64_TYPES: Final = frozenset(("fixed64", "sfixed64", "double"))
_FIXED32_TYPES: Final = frozenset(("fixed32", "sfixed32", "float"))
_MAX_DEPTH: Final = 64


class MalformedMessage(ValueError):
    """Received bytes that are not a well-formed protobuf message of the expected type."""


def _read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise MalformedMessage("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
    raise MalformedMessage("varint longer than 10 bytes")


def check_message(data: bytes | memoryview, cls: type) -> bool:
    """Check *data* as protobuf's reference decoders (Go's, C++'s) would before decoding it as *cls*.

    betterproto2's decoder is lenient where the reference decoders refuse: a
    length running past the end is cut short, a field of the wrong wire type is
    decoded anyway (a string field can come back an ``int``), a group field fails
    with a ``KeyError``. This walks the bytes once: every tag and varint within 10
    bytes, field numbers above 0, no groups, lengths inside the message, each
    known field with the wire type of its declared type (packed repeated scalars
    included), strings valid UTF-8, nested messages and map entries the same way,
    at most 64 levels deep; unknown fields are skipped as protobuf does.

    :returns: whether *data* holds fields *cls* does not declare (at any level):
        betterproto2 keeps them by appending each to a ``bytes`` object, which takes
        time quadratic in their number (a 2 MiB request of one-byte unknown fields
        took half a minute), so a decoder drops them first (:func:`strip_unknown`).
    :raises MalformedMessage: what is wrong, in a few words.
    """
    with memoryview(data) as view:
        return _check(view, 0, len(view), cls, 0)


def strip_unknown(data: bytes | memoryview, cls: type) -> bytes:
    """*data*, which :func:`check_message` accepted, without the fields *cls* does not
    declare, at every level (nested messages are re-encoded with their new lengths).
    Takes time linear in the size of *data*."""
    out = bytearray()
    with memoryview(data) as view:
        _strip(view, 0, len(view), cls, out)
    return bytes(out)


def decode(data: bytes | memoryview, cls: Any) -> Any:
    """*data* checked (:func:`check_message`), its unknown fields dropped, then parsed as *cls*
    (a betterproto2 message class), in time linear in its size.

    :raises MalformedMessage: as :func:`check_message`.
    """
    if check_message(data, cls):
        data = strip_unknown(data, cls)
    return cls.parse(bytes(data))


def _fields_of(cls: type) -> dict[int, tuple[Any, Any]] | None:
    """``number -> (FieldMetadata, class of its values)`` of a betterproto2 message class."""
    meta = getattr(cls, "_betterproto", None)
    if meta is None:
        return None
    cached: dict[int, tuple[Any, Any]] | None = getattr(cls, "_ctrd_wire_fields", None)
    if cached is None:
        cached = {m.number: (m, meta.cls_by_field.get(name)) for name, m in meta.meta_by_field_name.items()}
        cls._ctrd_wire_fields = cached  # type: ignore[attr-defined]
    return cached


def _nested(meta: Any, value_cls: Any) -> Any:
    """The message class of a message or map field's values (a wrapped type's own class)."""
    if _fields_of(value_cls) is None:
        return meta.unwrap() if meta.unwrap is not None else None
    return value_cls


def _check(data: memoryview, pos: int, end: int, cls: Any, depth: int) -> bool:
    """:func:`check_message` of ``data[pos:end]``; whether it holds unknown fields."""
    if depth > _MAX_DEPTH:
        raise MalformedMessage(f"messages nested more than {_MAX_DEPTH} deep")
    fields = _fields_of(cls) if cls is not None else None
    unknown = False
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        start, pos = _skip(data, pos, end, number, wire)
        known = fields.get(number) if fields is not None else None
        if known is None:
            unknown = unknown or fields is not None  # (a class it cannot see into keeps all)
        elif _check_field(data, start, pos, number, wire, known, depth):
            unknown = True
    return unknown


def _skip(data: memoryview, pos: int, end: int, number: int, wire: int) -> tuple[int, int]:
    """Skip the value of field *number* (wire type *wire*) at *pos*: (where it starts, where it ends)."""
    if wire == 0:
        _, after = _read_varint(data, pos, end)
        return pos, after
    if wire == 1 or wire == 5:
        after = pos + (8 if wire == 1 else 4)
        if after > end:
            raise MalformedMessage(f"truncated field {number}")
        return pos, after
    if wire == 2:
        length, start = _read_varint(data, pos, end)
        if length > end - start:
            raise MalformedMessage(f"field {number} runs past the end of the message")
        return start, start + length
    raise MalformedMessage(f"field {number}: wire type {wire} is not supported")


def _check_field(
    data: memoryview, start: int, end: int, number: int, wire: int, known: tuple[Any, Any], depth: int
) -> bool:
    """Check the value ``data[start:end]`` of the known field *number* against its declared type;
    whether a message in it holds unknown fields."""
    meta, value_cls = known
    kind = meta.proto_type
    if kind in _VARINT_TYPES or kind in _FIXED64_TYPES or kind in _FIXED32_TYPES:
        scalar = 0 if kind in _VARINT_TYPES else 1 if kind in _FIXED64_TYPES else 5
        if wire == scalar:
            return False
        if wire == 2 and meta.repeated:  # packed
            _check_packed(data, start, end, scalar, number)
            return False
    elif wire == 2:
        if kind == "string":
            try:
                str(data[start:end], "utf-8")
            except UnicodeDecodeError:
                raise MalformedMessage(f"field {number}: invalid UTF-8 in a string") from None
        elif kind in ("message", "map"):
            return _check(data, start, end, _nested(meta, value_cls), depth + 1)
        return False
    raise MalformedMessage(f"field {number}: wire type {wire} does not match its type {kind}")


def _strip(data: memoryview, pos: int, end: int, cls: Any, out: bytearray) -> None:
    """Append ``data[pos:end]`` (well-formed, as checked) to *out* without its unknown fields."""
    fields = _fields_of(cls) if cls is not None else None
    if fields is None:
        out += data[pos:end]
        return
    while pos < end:
        begin = pos
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        start, pos = _skip(data, pos, end, number, wire)
        known = fields.get(number)
        if known is None:
            continue
        meta, value_cls = known
        nested = _nested(meta, value_cls) if wire == 2 and meta.proto_type in ("message", "map") else None
        if nested is None:
            out += data[begin:pos]
            continue
        inner = bytearray()
        _strip(data, start, pos, nested, inner)
        out += uvarint(key)
        out += uvarint(len(inner))
        out += inner


def _check_packed(data: memoryview, pos: int, end: int, scalar: int, number: int) -> None:
    if scalar == 0:
        while pos < end:
            _, pos = _read_varint(data, pos, end)
        return
    if (end - pos) % (8 if scalar == 1 else 4):
        raise MalformedMessage(f"field {number}: packed fixed-size values of a wrong length")
