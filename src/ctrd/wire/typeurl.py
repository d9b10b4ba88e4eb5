"""``google.protobuf.Any`` for containerd event messages, with containerd's bare type URLs.

containerd's typeurl registry names event types by their bare proto message
name (``containerd.events.ContentDelete``), without the
``type.googleapis.com/`` prefix that :meth:`Any.pack` adds; ``ctr events``
cannot decode the prefixed form. :func:`pack_event` builds the bare form and
:func:`unpack_event` reads both. The image events keep containerd 1.6's package,
``containerd.services.images.v1.ImageCreate`` and so on.

Pure helpers over the generated API (no server code): the daemon's Events
service and the client SDK both use them.
"""

from __future__ import annotations

from typing import Final

import betterproto2

# imported to register the event messages in the pool (the image events are in containerd 1.6's
# package of the images service)
import ctrd.api.containerd.events
import ctrd.api.containerd.services.images.v1  # noqa: F401
from ctrd.api.google import protobuf as pb
from ctrd.api.message_pool import default_message_pool
from ctrd.wire._proto import decode

__all__ = ["GOOGLE_PREFIX", "message_type", "pack_event", "type_url", "unpack_event"]

GOOGLE_PREFIX: Final = "type.googleapis.com/"
"""The prefix betterproto2's message pool (and ``Any.pack``) puts on type URLs."""


def type_url(message_type: type[betterproto2.Message]) -> str:
    """The bare type URL of a registered message class, e.g. ``containerd.events.ContentDelete``.

    :raises TypeError: the class is not registered in the message pool.
    """
    try:
        url = default_message_pool.type_to_url[message_type]
    except KeyError:
        raise TypeError(f"message type {message_type.__name__} is not registered") from None
    return url.removeprefix(GOOGLE_PREFIX)


def pack_event(event: betterproto2.Message) -> pb.Any:
    """Wrap *event* in an ``Any`` with a bare type URL.

    An ``Any`` is returned unchanged, so callers may pass either form.
    """
    if isinstance(event, pb.Any):
        return event
    return pb.Any(type_url=type_url(type(event)), value=bytes(event))


def message_type(url: str) -> type[betterproto2.Message] | None:
    """The registered message class for a bare or prefixed type URL, or ``None``."""
    found = default_message_pool.url_to_type.get(url)
    if found is None:
        found = default_message_pool.url_to_type.get(GOOGLE_PREFIX + url)
    return found


def unpack_event(any_: pb.Any) -> betterproto2.Message:
    """Decode the message inside *any_* (bare or ``type.googleapis.com/`` URL), checked and
    in linear time (:func:`ctrd.wire._proto.decode`: a client's payload is untrusted).

    :raises TypeError: the type URL names no registered message.
    :raises ctrd.wire._proto.MalformedMessage: the payload is not a well-formed message of it.
    """
    url = any_.type_url
    found = message_type(url)
    if found is None:
        raise TypeError(f"cannot unpack unregistered type {url!r}")
    message: betterproto2.Message = decode(any_.value, found)
    return message
