"""In-memory gRPC serving for servicer tests, with ctrd's real call handling.

:func:`serve` is an in-memory channel to the server a
:class:`ctrd.wire.server.GrpcListener` builds (:meth:`~ctrd.wire.server.GrpcListener.in_memory`),
so the handlers see the ``containerd-namespace``/``containerd-lease`` headers as context variables and
their :mod:`ctrd.errdefs` errors become gRPC statuses, exactly as over a real
socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from grpclib.client import Channel

from ctrd.wire.server import GrpcListener

__all__ = ["Serve", "serve"]

Serve = Callable[..., contextlib.AbstractAsyncContextManager[Channel]]


@contextlib.asynccontextmanager
async def _serve(*services: Any, **listener_args: Any) -> AsyncIterator[Channel]:
    listener = GrpcListener(services, max_recv=16 << 20, max_send=16 << 20, **listener_args)
    async with listener.in_memory() as channel:
        yield channel


@pytest.fixture
def serve() -> Serve:
    """``async with serve(service, ..., **listener_args) as channel``: an in-memory channel to the
    services (*listener_args*: ``observer``, ``authorizer``, ``identify`` of :class:`GrpcListener`)."""
    return _serve
