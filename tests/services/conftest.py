"""In-memory gRPC serving for servicer tests, with ctrd's real call handling.

:func:`serve` is :class:`grpclib.testing.ChannelFor` over the server a
:class:`ctrd.wire.server.GrpcListener` builds, so the handlers see the
``containerd-namespace``/``containerd-lease`` headers as context variables and
their :mod:`ctrd.errdefs` errors become gRPC statuses, exactly as over a real
socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.testing import ChannelFor, _InMemoryTransport
from grpclib.testing import _Server as _NoServer

from ctrd.wire.server import GrpcListener

__all__ = ["Serve", "serve"]

Serve = Callable[..., contextlib.AbstractAsyncContextManager[Channel]]


class _ChannelForListener(ChannelFor):
    """grpclib's in-memory channel, to the server *listener* builds instead of a plain one."""

    def __init__(self, listener: GrpcListener) -> None:
        super().__init__(())
        self._listener = listener

    async def __aenter__(self) -> Channel:
        self._server = self._listener._new_server()
        self._server._server = _NoServer()
        self._server._server_closed_fut = self._server._loop.create_future()
        self._server_protocol = self._server._protocol_factory()
        self._channel = Channel()
        self._channel._protocol = self._channel._protocol_factory()
        self._channel._protocol.connection_made(_InMemoryTransport(self._server_protocol))
        self._server_protocol.connection_made(_InMemoryTransport(self._channel._protocol))
        return self._channel


@contextlib.asynccontextmanager
async def _serve(*services: Any, **listener_args: Any) -> AsyncIterator[Channel]:
    listener = GrpcListener(services, max_recv=16 << 20, max_send=16 << 20, **listener_args)
    async with _ChannelForListener(listener) as channel:
        yield channel


@pytest.fixture
def serve() -> Serve:
    """``async with serve(service, ..., **listener_args) as channel``: an in-memory channel to the
    services (*listener_args*: ``metrics``, ``authorizer`` of :class:`GrpcListener`)."""
    return _serve
