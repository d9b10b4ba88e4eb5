"""What a remote call needs besides its request: channel, headers, timeout, error translation.

Everything the service clients (content, namespaces, leases, events, introspection)
have in common, so that each of them is only "convert, call, convert back".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality

from ctrd import errdefs, namespaces
from ctrd.wire.status import translate_to_native

__all__ = ["ChannelScope", "Scope"]

_T = TypeVar("_T")


class Scope:
    """What a call needs besides its request: channel, headers, timeout, error translation.

    :class:`ClientScope` serves :class:`~ctrd.client.Client` views; :class:`ChannelScope`
    serves a bare grpclib :class:`Channel` (the low-level
    :class:`~ctrd.client.RemoteContentStore` constructor).
    """

    timeout: float | None
    """Deadline of unary calls and idle limit of streams, in seconds."""

    def channel(self) -> Channel:
        """The channel to call on."""
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """Request headers for a call made now."""
        raise NotImplementedError

    def translate(self) -> contextlib.AbstractContextManager[None]:
        """Context manager turning transport errors into :mod:`ctrd.errdefs` errors."""
        return translate_to_native()

    async def unary(self, path: str, request: Any, reply_type: type[_T]) -> _T:
        """One unary call with the scope's headers and deadline; errors translated."""
        channel = self.channel()
        with self.translate():
            async with channel.request(
                path,
                Cardinality.UNARY_UNARY,
                type(request),
                reply_type,
                timeout=self.timeout,
                metadata=self.metadata(),
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                if reply is None:  # pragma: no cover - grpclib raises the status first
                    raise errdefs.Unknown(f"{path}: no reply")
                return reply

    async def server_stream(self, path: str, request: Any, reply_type: type[_T]) -> AsyncGenerator[_T, None]:
        """A server-streaming call. The timeout bounds the wait for *each* message
        (an idle limit), not the whole stream; errors translated.

        Close the iterator (``contextlib.aclosing``) when stopping early: that
        cancels the stream at once.
        """
        channel = self.channel()
        with self.translate():
            async with channel.request(
                path, Cardinality.UNARY_STREAM, type(request), reply_type, metadata=self.metadata()
            ) as stream:
                await stream.send_message(request, end=True)
                while True:
                    async with asyncio.timeout(self.timeout):
                        msg = await stream.recv_message()
                    if msg is None:
                        break
                    yield msg


class ChannelScope(Scope):
    """A bare channel. Namespace and lease come from the current context
    (:func:`ctrd.namespaces.with_namespace`, :func:`ctrd.namespaces.with_lease`), else
    from the defaults given here."""

    def __init__(
        self,
        channel: Channel,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._channel = channel
        self.namespace = namespace
        self.timeout = timeout
        self.extra = dict(metadata or {})

    def channel(self) -> Channel:
        return self._channel

    def metadata(self) -> dict[str, str]:
        md = dict(self.extra)
        ns = namespaces.current() or self.namespace
        if ns:
            md[namespaces.GRPC_HEADER] = ns
        lease = namespaces.current_lease()
        if lease:
            md[namespaces.LEASE_HEADER] = lease
        return md
