"""Conversions between the content domain types and the ``containerd.services.content.v1`` messages.

containerd's ``infoToGRPC``/``infoFromGRPC`` and the status equivalents. Every
datetime handed to a message is timezone-aware UTC (betterproto2 rejects naive
datetimes); an unset timestamp read from a message becomes the Unix epoch.
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

from ctrd.api.containerd.services.content import v1 as api
from ctrd.content import Info, Status

__all__ = [
    "EPOCH",
    "info_from_proto",
    "info_to_proto",
    "status_from_proto",
    "status_to_proto",
    "to_utc",
]

EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
"""What an unset ``google.protobuf.Timestamp`` converts to."""


def to_utc(value: _dt.datetime | None) -> _dt.datetime:
    """Return *value* as an aware UTC datetime.

    A naive datetime is taken to be UTC already; ``None`` becomes :data:`EPOCH`.
    """
    if value is None:
        return EPOCH
    if value.tzinfo is _dt.UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC)


def info_to_proto(info: Info) -> api.Info:
    """The ``Info`` message for a committed blob (``updated_at`` included)."""
    return api.Info(
        digest=info.digest,
        size=info.size,
        created_at=to_utc(info.created_at),
        updated_at=to_utc(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_proto(msg: api.Info | None) -> Info:
    """The domain :class:`Info` for an ``Info`` message (``None`` reads as an empty one)."""
    if msg is None:
        return Info(digest="", size=0, created_at=EPOCH, updated_at=EPOCH, labels={})
    return Info(
        digest=msg.digest,
        size=msg.size,
        created_at=to_utc(msg.created_at),
        updated_at=to_utc(msg.updated_at),
        labels=dict(msg.labels),
    )


def status_to_proto(status: Status) -> api.Status:
    """The ``Status`` message for an ingest."""
    return api.Status(
        started_at=to_utc(status.started_at),
        updated_at=to_utc(status.updated_at),
        ref=status.ref,
        offset=status.offset,
        total=status.total,
        expected=status.expected,
    )


def status_from_proto(msg: api.Status | None) -> Status:
    """The domain :class:`Status` for a ``Status`` message (``None`` reads as an empty one)."""
    if msg is None:
        return Status(ref="", offset=0, total=0, started_at=EPOCH, updated_at=EPOCH)
    return Status(
        ref=msg.ref,
        offset=msg.offset,
        total=msg.total,
        started_at=to_utc(msg.started_at),
        updated_at=to_utc(msg.updated_at),
        expected=msg.expected,
    )
