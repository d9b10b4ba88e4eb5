"""The SDK's side of a call: channels, and sends and statuses grpclib's client does not offer.

* :func:`open_channel`: a grpclib channel over ctrd's h2 connection (2 MiB frames
  accepted from the start; :mod:`ctrd.wire._h2`), or grpclib's own with
  ``CTRD_H2=stock``;
* :func:`send_encoded`: an already-encoded request (:class:`ctrd.wire.codecs.EncodedRequest`)
  sent as it is; one built with its gRPC prefix goes to the HTTP/2 stream without
  the copy grpclib's codec makes;
* :func:`status_after_reset`: the status a server sent before it reset the stream.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ctrd.wire import _mode
from ctrd.wire._h2 import LargeFrameChannel
from ctrd.wire.codecs import EncodedRequest

__all__ = ["dial", "is_connected", "open_channel", "send_encoded", "status_after_reset"]


def open_channel(
    *,
    path: str | None = None,
    host: str | None = None,
    port: int | None = None,
    ssl: ssl.SSLContext | None = None,
) -> Channel:
    """A channel to a unix socket *path* or to *host*:*port* (TLS with *ssl*); it connects on first use."""
    cls = LargeFrameChannel if _mode.prepare() else Channel
    if path is not None:
        return cls(path=path, ssl=ssl)
    return cls(host, port, ssl=ssl)


def _sends_framed(stream: Any) -> bool:
    """Whether grpclib's client *stream* can take a framed message past ``send_message``:
    ctrd's h2 paths, request headers sent, a client-streaming call not ended, nobody
    listening to sends."""
    return bool(
        isinstance(stream._channel, LargeFrameChannel)
        and stream._send_request_done
        and not stream._end_done
        and stream._cardinality.client_streaming
        and "send_message" in stream._dispatch.__dict__
    )


async def send_encoded(stream: Any, message: EncodedRequest, end: bool) -> None:
    """Send *message* on grpclib's client *stream* as ``send_message`` would."""
    framed = message.framed
    if framed is None or not _sends_framed(stream):
        await stream.send_message(message, end=end)
        return
    with stream._wrapper:
        await stream._stream.send_data(framed, end_stream=end)
        stream._send_message_done = True
        stream._messages_sent += 1
        conn = stream._stream.connection
        conn.messages_sent += 1
        conn.last_message_sent = time.monotonic()
        if end:
            stream._end_done = True


def status_after_reset(stream: Any) -> GRPCError | None:
    """The error status the server sent on grpclib's client *stream* before resetting it, if any.

    A server may send its status trailers and then reset the stream (it does so
    while the client's side is still open); grpclib then reports the reset, not
    the status.
    """
    h2 = getattr(stream, "_stream", None)
    if h2 is None:
        return None
    if h2.trailers_received.is_set() and h2.trailers is not None:
        hdrs = dict(h2.trailers)
    elif h2.headers_received.is_set() and h2.headers is not None:
        hdrs = dict(h2.headers)  # a Trailers-Only reply
    else:
        return None
    if "grpc-status" not in hdrs:
        return None
    status, message, _ = stream._process_grpc_status(hdrs)
    if status is Status.OK:
        return None
    return GRPCError(status, message)


def is_connected(channel: Channel) -> bool:
    """Whether *channel* has a live HTTP/2 connection now."""
    return bool(channel._connected)


async def dial(channel: Channel, limit: float) -> None:
    """Connect *channel* now, within *limit* seconds. :raises TimeoutError, OSError:"""
    await asyncio.wait_for(channel.__connect__(), limit)
