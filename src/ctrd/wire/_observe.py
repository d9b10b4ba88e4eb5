"""What the server tells an observer about its calls (the metrics implement it).

Kinds and codes are plain strings, grpc-go's names, so an observer needs nothing
from the transport: a call's kind is ``unary``, ``client_stream``,
``server_stream`` or ``bidi_stream``; its code one of :data:`CODE_NAMES`
(``OK``, ``Canceled``, ``NotFound``...).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CallObserver", "CallRecord"]


class CallRecord(Protocol):
    """One call being observed."""

    def received(self) -> None:
        """A request message was received."""

    def sent(self) -> None:
        """A reply message was sent."""

    def finished(self, code: str) -> None:
        """The call ended with the status *code* (grpc-go's name of it)."""


class CallObserver(Protocol):
    """Told about every call of the server (``[metrics]``)."""

    def method(self, path: str, kind: str) -> None:
        """The server serves *path* (``/<service>/<method>``), a call of *kind*."""

    def started(self, path: str) -> CallRecord | None:
        """A call of *path* starts; ``None``: not observed."""

    def denied(self, path: str) -> None:
        """A call of *path* was refused by authorization."""
