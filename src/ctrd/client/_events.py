"""``client.events``: publish events and subscribe to decoded envelopes.

containerd's events travel as ``google.protobuf.Any`` with bare type URLs
(``containerd.events.ContentDelete``). The SDK decodes the known ones into the
dataclasses below; any other registered message becomes a :class:`RawEvent`
with its fields as a dict, and an unknown type a :class:`RawEvent` with only
its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, TypeAlias

import betterproto2
from grpclib.const import Cardinality

from ctrd.api.containerd import events as events_api
from ctrd.api.containerd.services.events import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.remote import Scope
from ctrd.wire import typeurl as _typeurl
from ctrd.wire.convert import to_utc

__all__ = [
    "ContentCreate",
    "ContentDelete",
    "Envelope",
    "EventPayload",
    "EventsClient",
    "NamespaceCreate",
    "NamespaceDelete",
    "NamespaceUpdate",
    "RawEvent",
    "Subscription",
]

_EVENTS: Final = "/containerd.services.events.v1.Events/"


@dataclasses.dataclass(frozen=True, slots=True)
class ContentCreate:
    """``/content/create``: a blob was committed (not sent by containerd 1.6)."""

    digest: str
    size: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ContentDelete:
    """``/content/delete``: a blob was removed from the envelope's namespace."""

    digest: str


@dataclasses.dataclass(frozen=True, slots=True)
class NamespaceCreate:
    """``/namespaces/create``."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class NamespaceUpdate:
    """``/namespaces/update``."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class NamespaceDelete:
    """``/namespaces/delete`` (the envelope's namespace is the deleted one)."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class RawEvent:
    """An event the SDK has no dataclass for.

    *fields* holds the decoded message (proto field names) when the type is
    registered in ctrd's message pool, else it is empty and only *value* (the
    encoded message) is known. Publishing a ``RawEvent`` sends *type_url* and
    *value* unchanged.
    """

    type_url: str
    value: bytes = b""
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


EventPayload: TypeAlias = (
    ContentCreate | ContentDelete | NamespaceCreate | NamespaceUpdate | NamespaceDelete | RawEvent
)
"""What :attr:`Envelope.event` holds."""

_TYPED: Final[dict[type[Any], type[betterproto2.Message]]] = {
    ContentCreate: events_api.ContentCreate,
    ContentDelete: events_api.ContentDelete,
    NamespaceCreate: events_api.NamespaceCreate,
    NamespaceUpdate: events_api.NamespaceUpdate,
    NamespaceDelete: events_api.NamespaceDelete,
}
_FROM_PROTO: Final = {proto: sdk for sdk, proto in _TYPED.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One event as a subscriber receives it."""

    timestamp: _dt.datetime
    """When the daemon published it (aware UTC)."""
    namespace: str
    """The namespace it happened in."""
    topic: str
    """E.g. ``/content/delete``."""
    event: EventPayload | None
    """The decoded payload (``None``: the envelope carried none)."""

    @property
    def type_url(self) -> str:
        """The payload's type, e.g. ``containerd.events.ContentDelete`` (``""``: none)."""
        if self.event is None:
            return ""
        if isinstance(self.event, RawEvent):
            return self.event.type_url
        return _typeurl.type_url(_TYPED[type(self.event)])

    @property
    def fields(self) -> dict[str, Any]:
        """The payload's fields as a dict (what ``ctr events`` prints as JSON)."""
        if self.event is None:
            return {}
        if isinstance(self.event, RawEvent):
            return dict(self.event.fields)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self.event):
            v = getattr(self.event, f.name)
            out[f.name] = dict(v) if isinstance(v, Mapping) else v
        return out


def decode_payload(any_: pb.Any | None) -> EventPayload | None:
    """The SDK payload for a wire ``Any``."""
    if any_ is None or not any_.type_url:
        return None
    cls = _typeurl.message_type(any_.type_url)
    if cls is None:
        return RawEvent(type_url=any_.type_url, value=bytes(any_.value))
    try:
        msg = cls.parse(any_.value)
    except Exception:
        return RawEvent(type_url=any_.type_url, value=bytes(any_.value))
    sdk = _FROM_PROTO.get(cls)
    if sdk is not None:
        kwargs = {f.name: _plain(getattr(msg, f.name)) for f in dataclasses.fields(sdk)}
        payload: EventPayload = sdk(**kwargs)
        return payload
    fields = msg.to_dict(casing=betterproto2.Casing.SNAKE, include_default_values=True)
    return RawEvent(type_url=any_.type_url, value=bytes(any_.value), fields=fields)


def _plain(v: Any) -> Any:
    return dict(v) if isinstance(v, dict) else v


def encode_payload(event: EventPayload | betterproto2.Message) -> pb.Any:
    """The wire ``Any`` (bare type URL) for a payload or a generated message.

    :raises TypeError: a message type not registered in ctrd's message pool.
    """
    if isinstance(event, RawEvent):
        return pb.Any(type_url=event.type_url, value=bytes(event.value))
    if isinstance(event, betterproto2.Message):
        return _typeurl.pack_event(event)
    proto_cls = _TYPED.get(type(event))
    if proto_cls is None:
        raise TypeError(f"cannot publish {type(event).__name__}")
    kwargs = {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return _typeurl.pack_event(proto_cls(**kwargs))


def envelope_from_proto(msg: api.Envelope) -> Envelope:
    """The SDK :class:`Envelope` for a wire envelope."""
    return Envelope(
        timestamp=to_utc(msg.timestamp),
        namespace=msg.namespace,
        topic=msg.topic,
        event=decode_payload(msg.event),
    )


class Subscription:
    """A live ``Subscribe`` stream: ``async for envelope in subscription``.

    Use it as an async context manager (or call :meth:`close`) to end the
    stream as soon as you stop reading; :meth:`close` from another task ends a
    pending iteration too. The client's timeout does not apply: a
    subscription waits for events as long as needed.
    """

    def __init__(self, scope: Scope, filters: tuple[str, ...]) -> None:
        self._scope = scope
        self._filters = filters
        self._cm: Any = None
        self._stream: Any = None
        self._closed = asyncio.Event()

    async def _open(self) -> Any:
        if self._stream is None:
            self._cm = self._scope.channel().request(
                _EVENTS + "Subscribe",
                Cardinality.UNARY_STREAM,
                api.SubscribeRequest,
                api.Envelope,
                metadata=self._scope.metadata(),
            )
            with self._scope.translate():
                self._stream = await self._cm.__aenter__()
                await self._stream.send_message(api.SubscribeRequest(filters=list(self._filters)), end=True)
        return self._stream

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        if self._closed.is_set():
            raise StopAsyncIteration
        try:
            stream = await self._open()
            recv = asyncio.ensure_future(stream.recv_message())
            stop = asyncio.ensure_future(self._closed.wait())
            try:
                with self._scope.translate():
                    done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if recv not in done:
                        raise StopAsyncIteration
                    msg = recv.result()
            finally:
                for fut in (recv, stop):
                    if not fut.done():
                        fut.cancel()
        except BaseException:
            await self.close()
            raise
        if msg is None:  # the daemon ended the stream (its status was OK)
            await self.close()
            raise StopAsyncIteration
        return envelope_from_proto(msg)

    async def close(self) -> None:
        """End the stream (idempotent; wakes a pending iteration, which then stops)."""
        self._closed.set()
        cm, self._cm = self._cm, None
        if cm is not None:
            exc = asyncio.CancelledError()
            with contextlib.suppress(BaseException):
                await cm.__aexit__(type(exc), exc, None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class EventsClient:
    """Events: ``client.events``. Errors are :mod:`ctrd.errdefs` errors."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    async def publish(self, topic: str, event: EventPayload | betterproto2.Message) -> None:
        """Publish *event* on *topic* in the client's namespace (the daemon sets the time).

        *event* is one of this module's dataclasses, a :class:`RawEvent`, or a
        generated message registered in ctrd's message pool.

        :raises errdefs.InvalidArgument: an invalid topic (it must start with ``/``).
        """
        req = api.PublishRequest(topic=topic, event=encode_payload(event))
        await self._scope.unary(_EVENTS + "Publish", req, pb.Empty)

    def subscribe(self, *filters: str) -> Subscription:
        """Events from now on, in every namespace, matching any of *filters*
        (fields ``namespace``, ``topic``, ``event.<field>``; none: everything).

        The stream opens on the first iteration; the daemon starts delivering
        once it has received the request, so an event published at the same
        moment may be missed.
        """
        return Subscription(self._scope, filters)
