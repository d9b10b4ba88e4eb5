"""Event publishing interface (the exchange itself is a plugin)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Publisher"]


@runtime_checkable
class Publisher(Protocol):
    """Publishes an event message on *topic* in *namespace*."""

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Deliver *event* (a containerd.events message) to subscribers."""
        ...
