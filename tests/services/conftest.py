"""In-memory gRPC serving for servicer tests, with ctrd's real request interceptor.

:func:`serve` wraps :class:`grpclib.testing.ChannelFor` and registers
:meth:`ctrd.server.grpc.GrpcListener._intercept` on the in-memory server, so the
handlers see the ``containerd-namespace``/``containerd-lease`` headers as
context variables and their :mod:`ctrd.errdefs` errors become gRPC statuses,
exactly as over a real socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.events import RecvRequest, listen
from grpclib.testing import ChannelFor

from ctrd.server.grpc import GrpcListener

__all__ = ["Serve", "serve"]

Serve = Callable[..., contextlib.AbstractAsyncContextManager[Channel]]


@contextlib.asynccontextmanager
async def _serve(*services: Any) -> AsyncIterator[Channel]:
    listener = GrpcListener(services, max_recv=16 << 20, max_send=16 << 20)
    for_ = ChannelFor(services)
    async with for_ as channel:
        listen(for_._server, RecvRequest, listener._intercept)
        yield channel


@pytest.fixture
def serve() -> Serve:
    """``async with serve(service, ...) as channel``: an in-memory channel to the services."""
    return _serve
