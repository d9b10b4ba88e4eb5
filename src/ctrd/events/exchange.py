"""In-process event exchange (containerd's ``events/exchange``): fan-out to subscribers.

* :meth:`Exchange.publish` stamps an event server-side (aware UTC) in a namespace
  under a topic, after validating both with containerd's messages;
  :meth:`Exchange.forward` delivers an envelope built elsewhere, validated the same
  way (and its timestamp must be set).
* :meth:`Exchange.subscribe` returns a :class:`Subscription`, registered at once: it
  sees every event published from then on, in every namespace, unless filtered
  (and only in the namespaces its ``visible`` predicate accepts, when given: what
  namespace authorization lets the subscriber see).
  Filters use containerd's language (:mod:`ctrd.filters`) on the fields
  ``namespace``, ``topic`` and ``event.<field>`` (the payload's own fields: a string
  attribute, ``event.labels.<key>`` on a mapping, nested objects; anything else is
  absent); several filter strings are OR-ed.
* Publishers never wait for subscribers. Each subscription has a bounded queue.
  When it is full, the subscriber is **disconnected**: it is sent nothing more, the
  events it misses from then on are only counted (no memory grows), a warning names
  it, and once it has consumed what was queued its iterator raises
  :class:`~ctrd.errdefs.ResourceExhausted` saying how many events it missed (a
  second warning logs the final figure). containerd queues without bound instead.

Payloads are opaque objects here (this package never imports grpclib, betterproto2
or :mod:`ctrd.api`); a payload received encoded (Events.Publish/Forward) travels as
:class:`RawEvent`, its bytes unchanged, with the decoded message alongside when the
type is known (else it has no fields for ``event.<field>`` filters).

Counters for metrics: :attr:`Exchange.published`, :attr:`Exchange.dropped`
(deliveries lost to slow subscribers), :attr:`Exchange.disconnected` and
:attr:`Exchange.subscribers`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as _dt
import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from ctrd import errdefs, filters, golang, identifiers

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Envelope",
    "Exchange",
    "RawEvent",
    "Subscription",
    "event_field",
    "validate_envelope",
    "validate_topic",
]

log = logging.getLogger("ctrd.events")

DEFAULT_QUEUE_SIZE: Final = 1024
"""Events a subscriber may have pending before it is disconnected."""


@dataclasses.dataclass(frozen=True, slots=True)
class RawEvent:
    """A payload received already encoded (an ``Any``), passed on byte for byte.

    ``decoded`` is the message when the daemon knows the type (``event.<field>``
    filters read it), else ``None`` (no fields).
    """

    type_url: str
    value: bytes
    decoded: object = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One published event.

    ``timestamp`` is aware UTC. ``event`` is the payload: a message object, or a
    :class:`RawEvent`.
    """

    timestamp: _dt.datetime
    namespace: str
    topic: str
    event: Any


def validate_topic(topic: str) -> None:
    """containerd's ``validateTopic``: ``/`` then one or more identifier components.

    :raises errdefs.InvalidArgument: ``envelope topic "<t>": <reason>``.
    """
    prefix = f"envelope topic {golang.quote(topic)}"
    if not topic:
        raise errdefs.InvalidArgument(f"{prefix}: must not be empty")
    if topic[0] != "/":
        raise errdefs.InvalidArgument(f"{prefix}: must start with '/'")
    if len(topic) == 1:
        raise errdefs.InvalidArgument(f"{prefix}: must have at least one component")
    for component in topic[1:].split("/"):
        try:
            identifiers.validate(component)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(
                f"{prefix}: failed validation on component {golang.quote(component)}: {exc.context}"
            ) from exc


def validate_envelope(namespace: str, topic: str, timestamp: _dt.datetime | None) -> None:
    """containerd's ``validateEnvelope`` (what :meth:`Exchange.forward` checks).

    :raises errdefs.InvalidArgument: bad namespace or topic, or no timestamp.
    """
    _validate_namespace(namespace, "event envelope has invalid namespace")
    validate_topic(topic)
    if timestamp is None:
        raise errdefs.InvalidArgument("timestamp must be set on forwarded event")


def event_field(event: object, fieldpath: Sequence[str]) -> tuple[str, bool]:
    """The filter adaptor over a payload's own fields (containerd's generated ``Field``).

    A string attribute is present when non-empty; a mapping attribute takes the
    rest of the path, joined with ``.``, as its key (absent when empty); a bool reads
    ``true``/``false``; another object is descended into. Private names, numbers
    and bytes are absent; a :class:`RawEvent` has the fields of its decoded message.
    """
    if isinstance(event, RawEvent):
        event = event.decoded
    if not fieldpath or event is None:
        return "", False
    name, rest = fieldpath[0], fieldpath[1:]
    if not name or name.startswith("_"):
        return "", False
    value = getattr(event, name, None)
    if isinstance(value, str):
        return (value, bool(value)) if not rest else ("", False)
    if isinstance(value, bool):
        return ("true" if value else "false", True) if not rest else ("", False)
    if isinstance(value, Mapping):
        if not value:
            return "", False
        found = value.get(".".join(rest))
        return (found, True) if isinstance(found, str) else ("", False)
    if value is None or isinstance(value, (int, float, bytes, bytearray, memoryview)) or not rest:
        return "", False
    return event_field(value, rest)


def _adaptor(env: Envelope) -> filters.Adaptor:
    def adapt(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        head = fieldpath[0]
        if head == "namespace":
            return env.namespace, bool(env.namespace)
        if head == "topic":
            return env.topic, bool(env.topic)
        if head == "event":
            return event_field(env.event, fieldpath[1:])
        return "", False

    return adapt


def _validate_namespace(namespace: str, prefix: str) -> None:
    try:
        identifiers.validate(namespace)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"{prefix}: {exc.context}") from exc


class Subscription:
    """A registered subscriber: an async iterator of :class:`Envelope`.

    Close it (``close()``, ``aclose()``, ``with``/``async with``) when done; the
    iterator then ends. After a disconnection for slowness it raises
    :class:`~ctrd.errdefs.ResourceExhausted` once the queued events are consumed.
    """

    def __init__(
        self,
        exchange: Exchange,
        flt: filters.Filter,
        name: str,
        queue_size: int,
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        self._exchange = exchange
        self._filter = flt
        self._visible = visible
        self.name = name
        self._max = queue_size
        self._queue: collections.deque[Envelope] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        #: events this subscriber missed since its queue overflowed (0: never overflowed)
        self.missed = 0

    @property
    def pending(self) -> int:
        """Events queued, not yet consumed."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """Closed by its consumer, or by the exchange."""
        return self._closed

    def _offer(self, env: Envelope, adaptor: filters.Adaptor) -> None:
        """Called by the exchange for every event (never blocks)."""
        if self._closed or (self._visible is not None and not self._visible(env.namespace)):
            return
        if not self._filter.match(adaptor):
            return
        if self.missed:
            self.missed += 1
            self._exchange.dropped += 1
            return
        if len(self._queue) >= self._max:
            self.missed = 1
            self._exchange.dropped += 1
            self._exchange.disconnected += 1
            log.warning(
                "event subscriber %s is too slow: %d events pending; disconnecting it "
                "(it gets what is queued, then an error)",
                self.name,
                len(self._queue),
            )
            self._ready.set()
            return
        self._queue.append(env)
        self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.missed and not self._closed:
                self.close()  # logs the final count
                raise errdefs.ResourceExhausted(
                    f"event subscriber {self.name} disconnected: too slow, missed {self.missed} events"
                )
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Unregister; the iterator ends (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._exchange._remove(self)
        self._ready.set()
        if self.missed:
            log.warning(
                "event subscriber %s disconnected: too slow, missed %d events", self.name, self.missed
            )

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        self.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Exchange:
    """Fan-out of events to subscribers; implements :class:`ctrd.events.Publisher`.

    :param queue_size: events a subscriber may have pending before it is disconnected.
    """

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise errdefs.InvalidArgument("queue_size must be at least 1")
        self._subs: dict[Subscription, None] = {}
        self._queue_size = queue_size
        self._next_id = 0
        #: events accepted by publish/forward
        self.published = 0
        #: deliveries lost because a subscriber was too slow
        self.dropped = 0
        #: subscribers disconnected for slowness
        self.disconnected = 0

    @property
    def subscribers(self) -> int:
        """Current number of subscribers."""
        return len(self._subs)

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Stamp *event* (UTC, now) and deliver it.

        :raises errdefs.FailedPrecondition: empty *namespace* (``namespace is required``).
        :raises errdefs.InvalidArgument: invalid namespace or topic.
        """
        if not namespace:
            raise errdefs.FailedPrecondition("failed publishing event: namespace is required")
        _validate_namespace(namespace, "failed publishing event: namespace validation")
        validate_topic(topic)
        self._deliver(Envelope(_dt.datetime.now(_dt.UTC), namespace, topic, event))

    async def forward(self, env: Envelope) -> None:
        """Deliver an envelope built elsewhere, keeping its timestamp (a naive one is taken as UTC).

        :raises errdefs.InvalidArgument: invalid namespace or topic.
        """
        validate_envelope(env.namespace, env.topic, env.timestamp)
        if env.timestamp.tzinfo is None:
            env = dataclasses.replace(env, timestamp=env.timestamp.replace(tzinfo=_dt.UTC))
        self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        self.published += 1
        if not self._subs:
            return
        adaptor = _adaptor(env)
        for sub in list(self._subs):
            sub._offer(env, adaptor)

    def subscribe(
        self, *filter_strings: str, name: str = "", visible: Callable[[str], bool] | None = None
    ) -> Subscription:
        """Register a subscriber now; it sees events published from here on.

        *name* identifies it in logs (a number is added). With *visible*, only events
        whose namespace it accepts are offered (the others are not queued, counted or
        matched).
        :raises errdefs.InvalidArgument: ``failed parsing subscription filters: ...``.
        """
        try:
            flt = filters.parse_all(*filter_strings)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"failed parsing subscription filters: {exc.context}") from exc
        self._next_id += 1
        label = f"#{self._next_id}" + (f" ({name})" if name else "")
        sub = Subscription(self, flt, label, self._queue_size, visible)
        self._subs[sub] = None
        log.debug("event subscriber %s subscribed filters=%s", label, list(filter_strings))
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for sub in list(self._subs):
            sub.close()
