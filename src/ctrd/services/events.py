"""``containerd.services.events.v1.Events`` over the :class:`~ctrd.events.exchange.Exchange`.

A port of containerd's ``services/events/service.go``:

* ``Publish`` needs the ``containerd-namespace`` header (FAILED_PRECONDITION
  ``failed publishing event: namespace is required``) and a valid topic
  (INVALID_ARGUMENT ``envelope topic "<t>": ...``); the server stamps the time. The
  ``Any`` payload is passed on byte for byte (type URL included); when its type
  is registered it is also decoded, so ``event.<field>`` filters see its fields.
* ``Forward`` delivers an envelope as given; namespace, topic and timestamp must be
  valid/set.
* ``Subscribe`` streams every event from the moment of the call, in all
  namespaces, matching any of the filters (``namespace``, ``topic``,
  ``event.<field>``). Payloads go out as ``Any`` with containerd's bare type URLs
  (:func:`~ctrd.wire.typeurl.pack_event`), which ``ctr events`` decodes.
  A subscriber that cannot keep up is disconnected by the exchange: the stream
  delivers what was queued, then ends with RESOURCE_EXHAUSTED ``event subscriber
  <name> disconnected: too slow, missed <n> events``.

With ``[authorization]`` (:mod:`ctrd.authz`), a subscriber gets only the events of
namespaces it may act in, and ``Forward`` only into such a namespace (``Publish``'s
header namespace is checked at the gRPC edge).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, Final

from ctrd import authz, errdefs, namespaces
from ctrd.api.containerd.services.events import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.events.exchange import Envelope, Exchange, RawEvent, validate_envelope
from ctrd.wire.convert import to_utc
from ctrd.wire.server import Method, rebind
from ctrd.wire.typeurl import pack_event, unpack_event

__all__ = ["EventsService", "envelope_to_proto", "payload_from_any"]

log = logging.getLogger("ctrd.services.events")

_SUBSCRIBE: Final = "/containerd.services.events.v1.Events/Subscribe"


def payload_from_any(any_: pb.Any | None) -> RawEvent | None:
    """The exchange payload for a received ``Any``: its bytes as they came (passed on
    unchanged, as containerd does), with the decoded message when the type is registered."""
    if any_ is None:
        return None
    try:
        decoded: object = unpack_event(any_)
    except Exception:
        decoded = None
    return RawEvent(type_url=any_.type_url, value=bytes(any_.value), decoded=decoded)


def _payload_to_any(event: object) -> pb.Any | None:
    if event is None:
        return None
    if isinstance(event, RawEvent):
        return pb.Any(type_url=event.type_url, value=event.value)
    return pack_event(event)  # type: ignore[arg-type]


def envelope_to_proto(env: Envelope) -> api.Envelope | None:
    """The wire envelope; ``None`` (logged) when the payload cannot be encoded."""
    try:
        payload = _payload_to_any(env.event)
    except Exception:
        log.warning("cannot encode %s event of type %s; not sent", env.topic, type(env.event).__name__)
        return None
    return api.Envelope(
        timestamp=to_utc(env.timestamp), namespace=env.namespace, topic=env.topic, event=payload
    )


def _describe(stream: Any, filters: list[str]) -> str:
    """A subscriber name for logs: peer (address or unix pid), user agent, filters."""
    parts: list[str] = []
    who = stream.peer_description() if hasattr(stream, "peer_description") else ""
    if who:
        parts.append(who)
    agent = stream.metadata.get("user-agent") if getattr(stream, "metadata", None) else None
    if isinstance(agent, str):
        parts.append(f"agent={agent}")
    if filters:
        parts.append(f"filters={filters!r}")
    return " ".join(parts)


class EventsService(api.EventsBase):
    """The Events gRPC service.

    :param exchange: the event exchange plugin.
    """

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def __mapping__(self) -> dict[str, Method]:
        """The generated mapping, with Subscribe served by :meth:`_serve_subscribe`."""
        mapping: dict[str, Method] = dict(super().__mapping__())
        mapping[_SUBSCRIBE] = rebind(mapping[_SUBSCRIBE], self._serve_subscribe)
        return mapping

    async def publish(self, message: api.PublishRequest) -> pb.Empty:
        """Publish in the caller's namespace; the server sets the timestamp."""
        await self._exchange.publish(
            namespaces.current() or "", message.topic, payload_from_any(message.event)
        )
        return pb.Empty()

    async def forward(self, message: api.ForwardRequest) -> pb.Empty:
        """Deliver an envelope built elsewhere, unchanged."""
        env = message.envelope if message.envelope is not None else api.Envelope()
        validate_envelope(env.namespace, env.topic, env.timestamp)
        assert env.timestamp is not None
        authz.require(env.namespace)
        await self._exchange.forward(
            Envelope(
                timestamp=to_utc(env.timestamp),
                namespace=env.namespace,
                topic=env.topic,
                event=payload_from_any(env.event),
            )
        )
        return pb.Empty()

    async def subscribe(
        self, message: api.SubscribeRequest, *, name: str = ""
    ) -> AsyncGenerator[api.Envelope, None]:
        """Events from now on, in every namespace the caller may see, matching any filter."""
        sub = self._exchange.subscribe(*message.filters, name=name, visible=authz.visibility())
        with sub:
            async for env in sub:
                msg = envelope_to_proto(env)
                if msg is not None:
                    yield msg

    async def _serve_subscribe(self, stream: Any) -> None:
        request = await stream.recv_message()
        if request is None:
            raise errdefs.InvalidArgument("missing request message")
        name = _describe(stream, list(request.filters))
        async with contextlib.aclosing(self.subscribe(request, name=name)) as responses:
            async for response in responses:
                await stream.send_message(response)
