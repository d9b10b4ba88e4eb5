# ruff: noqa: RUF009
"""TEMPORARY: containerd's ``containerd.services.images.v1`` messages, written by hand.

!!! To be replaced at merge by the generated ``ctrd.api.containerd.services.images.v1``
(the Images service's helper generates it from proto/): switch the import in
``ctrd.client._images`` and delete this module. The classes below are field for field
what betterproto2 generates from containerd 1.6's ``api/services/images/v1/images.proto``
(the same numbers and types), without registration in the message pool.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import betterproto2

from ctrd.api.containerd.types import Descriptor
from ctrd.api.google import protobuf as _pb

__all__ = [
    "CreateImageRequest",
    "CreateImageResponse",
    "DeleteImageRequest",
    "GetImageRequest",
    "GetImageResponse",
    "Image",
    "ListImagesRequest",
    "ListImagesResponse",
    "UpdateImageRequest",
    "UpdateImageResponse",
]


@dataclass(eq=False, repr=False)
class Image(betterproto2.Message):
    name: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    labels: dict[str, str] = betterproto2.field(
        2,
        betterproto2.TYPE_MAP,
        map_meta=betterproto2.map_meta(betterproto2.TYPE_STRING, betterproto2.TYPE_STRING),
    )
    target: Descriptor | None = betterproto2.field(3, betterproto2.TYPE_MESSAGE, optional=True)
    created_at: datetime.datetime | None = betterproto2.field(
        7, betterproto2.TYPE_MESSAGE, unwrap=lambda: _pb.Timestamp, optional=True
    )
    updated_at: datetime.datetime | None = betterproto2.field(
        8, betterproto2.TYPE_MESSAGE, unwrap=lambda: _pb.Timestamp, optional=True
    )


@dataclass(eq=False, repr=False)
class GetImageRequest(betterproto2.Message):
    name: str = betterproto2.field(1, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class GetImageResponse(betterproto2.Message):
    image: Image | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)


@dataclass(eq=False, repr=False)
class CreateImageRequest(betterproto2.Message):
    image: Image | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)


@dataclass(eq=False, repr=False)
class CreateImageResponse(betterproto2.Message):
    image: Image | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)


@dataclass(eq=False, repr=False)
class UpdateImageRequest(betterproto2.Message):
    image: Image | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)
    update_mask: _pb.FieldMask | None = betterproto2.field(2, betterproto2.TYPE_MESSAGE, optional=True)


@dataclass(eq=False, repr=False)
class UpdateImageResponse(betterproto2.Message):
    image: Image | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)


@dataclass(eq=False, repr=False)
class ListImagesRequest(betterproto2.Message):
    filters: list[str] = betterproto2.field(1, betterproto2.TYPE_STRING, repeated=True)


@dataclass(eq=False, repr=False)
class ListImagesResponse(betterproto2.Message):
    images: list[Image] = betterproto2.field(1, betterproto2.TYPE_MESSAGE, repeated=True)


@dataclass(eq=False, repr=False)
class DeleteImageRequest(betterproto2.Message):
    name: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    sync: bool = betterproto2.field(2, betterproto2.TYPE_BOOL)
