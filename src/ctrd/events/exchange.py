"""In-process event exchange: publish to every subscriber, never block publishers.

Subscribers get a bounded queue; when it is full the event is dropped for that
subscriber and counted (a slow reader cannot stall the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ctrd import errdefs, identifiers

__all__ = ["Envelope", "Exchange"]

log = logging.getLogger("ctrd.events")


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One published event."""

    timestamp: _dt.datetime
    namespace: str
    topic: str
    event: Any


def validate_topic(topic: str) -> None:
    """Topics look like ``/a/b``: leading slash, identifier components."""
    if not topic:
        raise errdefs.InvalidArgument("must not be empty for topic")
    if not topic.startswith("/"):
        raise errdefs.InvalidArgument(f'must start with "/" for topic {topic!r}')
    parts = topic[1:].split("/")
    if not parts or parts == [""]:
        raise errdefs.InvalidArgument(f"must have at least one component for topic {topic!r}")
    for p in parts:
        try:
            identifiers.validate(p)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"failed validation on component {p!r}: {exc.context}") from exc


class Exchange:
    """Fan-out of events to subscribers."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._subs: set[asyncio.Queue[Envelope]] = set()
        self._queue_size = queue_size
        self.dropped = 0
        self.published = 0

    @property
    def subscribers(self) -> int:
        """Current number of subscribers."""
        return len(self._subs)

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Publish *event*; validates namespace and topic."""
        identifiers.validate(namespace)
        validate_topic(topic)
        await self.forward(Envelope(_dt.datetime.now(_dt.UTC), namespace, topic, event))

    async def forward(self, env: Envelope) -> None:
        """Deliver an already-stamped envelope."""
        self.published += 1
        for q in list(self._subs):
            try:
                q.put_nowait(env)
            except asyncio.QueueFull:
                self.dropped += 1

    async def subscribe(self, match: Callable[[Envelope], bool] | None = None) -> AsyncIterator[Envelope]:
        """Yield envelopes (matching *match*) until the consumer stops."""
        q: asyncio.Queue[Envelope] = asyncio.Queue(self._queue_size)
        self._subs.add(q)
        try:
            while True:
                env = await q.get()
                if match is None or match(env):
                    yield env
        finally:
            with contextlib.suppress(KeyError):
                self._subs.remove(q)
