"""Conversions between the domain types and the API messages.

Content (``containerd.services.content.v1``): containerd's ``infoToGRPC``/``infoFromGRPC``
and the status equivalents. Images (``containerd.services.images.v1``,
``containerd.types.Descriptor``): containerd's ``imageToProto``/``imageFromProto`` and
``descToProto``/``descFromProto``; an unset target reads as an empty descriptor. Every
datetime handed to a message is timezone-aware UTC (betterproto2 rejects naive
datetimes); an unset timestamp read from a message becomes the Unix epoch.
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

from ctrd.api.containerd import types as api_types
from ctrd.api.containerd.services.content import v1 as api
from ctrd.api.containerd.services.images import v1 as images_api
from ctrd.content import Info, Status
from ctrd.images import Descriptor, Image

__all__ = [
    "EPOCH",
    "descriptor_from_proto",
    "descriptor_to_proto",
    "image_from_proto",
    "image_to_proto",
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


def descriptor_to_proto(desc: Descriptor) -> api_types.Descriptor:
    """The ``containerd.types.Descriptor`` message for *desc*."""
    return api_types.Descriptor(
        media_type=desc.media_type, digest=desc.digest, size=desc.size, annotations=dict(desc.annotations)
    )


def descriptor_from_proto(msg: api_types.Descriptor | None) -> Descriptor:
    """The domain :class:`~ctrd.images.Descriptor` for a message (``None`` reads as an empty one)."""
    if msg is None:
        return Descriptor(media_type="", digest="", size=0)
    return Descriptor(
        media_type=msg.media_type, digest=msg.digest, size=msg.size, annotations=dict(msg.annotations)
    )


def image_to_proto(image: Image) -> images_api.Image:
    """The ``Image`` message for a record (times included)."""
    return images_api.Image(
        name=image.name,
        labels=dict(image.labels),
        target=descriptor_to_proto(image.target),
        created_at=to_utc(image.created_at),
        updated_at=to_utc(image.updated_at),
    )


def image_from_proto(msg: images_api.Image | None) -> Image:
    """The domain :class:`~ctrd.images.Image` for a message (``None`` reads as an empty one)."""
    if msg is None:
        return Image(name="", target=descriptor_from_proto(None))
    return Image(
        name=msg.name,
        target=descriptor_from_proto(msg.target),
        labels=dict(msg.labels),
        created_at=to_utc(msg.created_at),
        updated_at=to_utc(msg.updated_at),
    )
