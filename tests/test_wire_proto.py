"""Checking received messages and dropping their unknown fields (ctrd.wire._proto)."""

from __future__ import annotations

import datetime as dt

import pytest

from ctrd.api.containerd.events import ContentCreate
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.containerd.services.events import v1 as events_api
from ctrd.api.google import protobuf as pb
from ctrd.wire._proto import MalformedMessage, check_message, decode, strip_unknown, uvarint
from ctrd.wire.typeurl import unpack_event

UNKNOWN = b"\x78\x05" + b"\xa2\x06\x02hi" + b"\x7d\x00\x00\x00\x00" + b"\x79" + bytes(8)
"""Unknown fields of every wire type: varint 15, bytes 100, fixed32 15, fixed64 15."""


def _update() -> api.UpdateRequest:
    return api.UpdateRequest(
        info=api.Info(
            digest="sha256:" + "a" * 64,
            size=3,
            created_at=dt.datetime(2020, 1, 2, tzinfo=dt.UTC),
            labels={"k": "v", "ü": "x"},
        ),
        update_mask=pb.FieldMask(paths=["labels.k"]),
    )


def test_a_message_without_unknown_fields_is_kept() -> None:
    body = bytes(_update())
    assert check_message(body, api.UpdateRequest) is False
    assert strip_unknown(body, api.UpdateRequest) == body
    assert decode(body, api.UpdateRequest) == _update()


@pytest.mark.parametrize("where", ["top", "nested", "map entry", "timestamp"])
def test_unknown_fields_are_found_and_dropped_at_every_level(where: str) -> None:
    msg = _update()
    info = bytes(msg.info)
    if where == "top":
        body = bytes(msg) + UNKNOWN
    else:
        if where == "nested":
            info += UNKNOWN
        elif where == "map entry":  # an entry of Info.labels (field 5) with an unknown field
            entry = b"\x0a\x01z\x12\x01y" + UNKNOWN
            info += b"\x2a" + uvarint(len(entry)) + entry
            msg.info.labels["z"] = "y"
        else:  # inside Info.created_at (field 3)
            stamp = bytes(pb.Timestamp(seconds=1577923200)) + UNKNOWN
            info += b"\x1a" + uvarint(len(stamp)) + stamp
        rest = bytes(api.UpdateRequest(update_mask=msg.update_mask))
        body = b"\x0a" + uvarint(len(info)) + info + rest
    assert check_message(body, api.UpdateRequest) is True
    stripped = strip_unknown(body, api.UpdateRequest)
    assert check_message(stripped, api.UpdateRequest) is False
    assert api.UpdateRequest.parse(stripped) == msg
    assert decode(body, api.UpdateRequest) == msg


def test_malformed_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedMessage):
        decode(b"\x0a\x05ab", api.InfoRequest)


@pytest.mark.timeout(30)
def test_many_unknown_fields_decode_in_linear_time() -> None:
    """An event payload with two million one-byte unknown fields (4 MiB): betterproto2 alone
    appends each to a ``bytes`` object (quadratic: minutes here, hours at 16 MiB); dropped
    first, they cost two passes."""
    body = b"\x78\x00" * 2_000_000
    event = events_api.Envelope(
        event=pb.Any(type_url="containerd.events.ContentCreate", value=bytes(ContentCreate(size=1)) + body)
    )
    assert event.event is not None
    assert unpack_event(event.event) == ContentCreate(size=1)
