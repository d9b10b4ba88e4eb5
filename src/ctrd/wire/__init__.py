"""ctrd's transport: the only package that knows grpclib's, h2's, hpack's, hyperframe's and
betterproto2's internals.

What the rest of ctrd uses (everything else here is private):

* :class:`Call`: a call as a service's handler sees it (receive, send, send the
  last reply with the trailers, wait for room to reply, tell whether the client
  has ended its side);
* :mod:`ctrd.wire.server`: :class:`~ctrd.wire.server.GrpcListener` serves
  servables on unix and TCP sockets, with a :class:`CallObserver` (metrics) and
  an authorizer; :func:`~ctrd.wire.server.prepare_unix_socket`;
* :mod:`ctrd.wire.client`: :func:`~ctrd.wire.client.open_channel` and the SDK's
  encoded sends;
* :mod:`ctrd.wire.status`: :func:`~ctrd.wire.status.status_for` (an
  :mod:`ctrd.errdefs` error as a gRPC status) and :func:`~ctrd.wire.status.error_from`
  (the reverse), the one table between them;
* :mod:`ctrd.wire.codecs`: hand-written codecs of the hot Content messages;
* :mod:`ctrd.wire.convert`: API messages to domain types and back;
* :mod:`ctrd.wire.typeurl`: containerd's type URLs of event messages;
* :mod:`ctrd.wire.peer`: who the client of a connection is.

``CTRD_H2=stock`` runs the libraries' own HTTP/2 paths instead of ctrd's
(:mod:`ctrd.wire._mode`).
"""

from __future__ import annotations

from typing import Any, Protocol

from ctrd.wire._observe import CallObserver, CallRecord

__all__ = ["Call", "CallObserver", "CallRecord"]


class Call(Protocol):
    """One gRPC call, as a service's handler sees it."""

    async def recv_message(self) -> Any:
        """The next request message, ``None`` once the client has ended its side."""

    async def send_message(self, message: Any) -> None:
        """Send a reply message."""

    async def send_last(self, message: Any, repeat: int = 1) -> None:
        """Send *message* (*repeat* times) as the call's last reply, with status OK."""

    async def reply_room(self, limit: int) -> int:
        """Wait until a reply with up to *limit* bytes of data can leave; how many it may carry."""

    def peer_description(self) -> str:
        """Who the client is, for logs (``pid=<n>`` or ``peer=<host>:<port>``; may be empty)."""

    def request_ended(self) -> bool:
        """Whether the client has ended its side of the call (half-close or cancel)."""
