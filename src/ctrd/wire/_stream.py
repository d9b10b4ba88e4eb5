"""The server side of one gRPC call, as ctrd's handlers get it (:class:`CallStream`).

grpclib's server stream, plus what ctrd needs of a call: the message-size limit
enforced from the length prefix, strict decoding, memory budgets for received
messages and replies (:mod:`ctrd.wire._budget`), hand-framed replies on ctrd's
h2 connection (:mod:`ctrd.wire._h2`) and counts for the call's observer.
Handlers see it through :class:`ctrd.wire.Call`.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import grpclib.server as _gs
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import AckedData as _AckedData
from h2.exceptions import StreamClosedError as H2StreamClosedError

from ctrd import limits
from ctrd.wire import _budget
from ctrd.wire._h2 import DIRECT_BODY_MIN, CtrdConnection
from ctrd.wire._proto import GRPC_PREFIX, check_message, strip_unknown
from ctrd.wire.peer import peer_of

if TYPE_CHECKING:
    from ctrd.wire._observe import CallRecord

__all__ = ["CallStream", "ConnectionRooms", "ServerRooms"]

log = logging.getLogger("ctrd.grpc")


_OK_TRAILERS: Final = (("grpc-status", "0"),)
_REPLY_FRAMING: Final = 64
"""Bytes a reply adds to its data (gRPC prefix, protobuf keys and lengths, an offset), at most."""
_SMALLEST_REPLY: Final = 16 << 10
"""The least data :meth:`CallStream.reply_room` waits for the windows to take (or all that is left)."""
_SEND_EVENTS: Final = ("send_initial_metadata", "send_message", "send_trailing_metadata")


async def _read_view(buffer: Any, size: int) -> bytes | memoryview:
    """*size* bytes from a grpclib stream buffer, as a view when one received frame holds them.

    grpclib's ``Buffer.read`` joins what it returns into new bytes even when a
    single frame holds all of it; a large message (a 1 MiB ``WRITE``) would be
    copied once more for nothing. This is the same read (the same flow-control
    acknowledgements), without the join in that case.
    """
    if not buffer._eof or not buffer._unacked.empty():
        while buffer._acked_size < size:
            data, data_size, ack_size = await buffer._unacked.get()
            if not ack_size:
                break
            buffer._acked.append(_AckedData(memoryview(data), data_size))
            buffer._acked_size += data_size
            buffer._ack_callback(ack_size)
    acked = buffer._acked
    if buffer._acked_size >= size and acked and acked[0].data_size >= size:
        first = acked[0]
        if first.data_size == size:
            acked.popleft()
        else:
            acked[0] = _AckedData(first.data[size:], first.data_size - size)
        buffer._acked_size -= size
        return first.data[:size]  # type: ignore[no-any-return]
    return await buffer.read(size)  # type: ignore[no-any-return]


class CallStream(_gs.Stream):  # type: ignore[type-arg]
    """grpclib's server stream as ctrd's handlers get it.

    * :meth:`recv_message` enforces :attr:`recv_limit` from the 5-byte length
      prefix, before the body is buffered (grpclib would buffer up to 4 GiB);
    * the call's :class:`~ctrd.wire.CallRecord` (if any) counts messages, without
      grpclib's per-message events;
    * messages, and OK trailers after a response, go out through
      :meth:`ctrd.wire._h2.CtrdConnection.send_reply` when nobody listens to grpclib's
      send events and grpclib would not have to wait (connection writable,
      flow-control windows open): the first message with the headers in one write;
    * :meth:`send_last` sends a call's final message with the OK trailers (and
      the headers if not sent yet) in one write;
    * :meth:`request_ended` tells whether the client has ended its side of the call.
    """

    recv_limit: int = 4 << 20
    fast: bool = True  # ctrd's h2 paths (views of received frames, hand-framed replies)
    rooms: ConnectionRooms | None = None  # the connection's memory budgets
    record: CallRecord | None = None  # counts the call's messages

    @functools.cached_property
    def _strict(self) -> bool:
        """Whether received messages are checked before decoding (:func:`check_message`):
        those of generated classes; the hand-written decoders check as they go."""
        return hasattr(self._recv_type, "_betterproto")

    _recv_held = 0  # bytes of the received-message budgets this call holds
    _send_held: list[int] | None = None  # reply budget taken, per reply not sent yet

    async def recv_message(self) -> Any:
        if self._recv_held:
            self._release_recv()  # the previous message has been handled: it is asked for the next
        meta = await self._stream.recv_data(5)
        if not meta:
            return None
        compressed, length = GRPC_PREFIX.unpack(meta)
        if compressed:
            raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
        if length > self.recv_limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"grpc: received message larger than max ({length} vs. {self.recv_limit})",
            )
        if length >= DIRECT_BODY_MIN:
            rooms = self._rooms()
            if rooms is not None:
                if not _budget.try_take(length, rooms.recv, rooms.server.recv):
                    # waiting could deadlock: the messages holding the room may need the
                    # connection window this one's unread data fills
                    full = rooms.recv if not rooms.recv.fits(length) else rooms.server.recv
                    holder = "connection" if full is rooms.recv else "server"
                    raise GRPCError(
                        Status.RESOURCE_EXHAUSTED,
                        f"message of {length} bytes refused: the {holder} holds {full.held} bytes "
                        f"of received messages (limit {full.limit})",
                    )
                self._recv_held = length
        if length >= DIRECT_BODY_MIN and self.fast and getattr(self._recv_type, "DECODES_VIEWS", False):
            data: bytes | memoryview = await _read_view(self._stream.buffer, length)
        else:
            data = await self._stream.recv_data(length)
        if len(data) != length:
            raise GRPCError(Status.INTERNAL, "incomplete message")
        try:
            if self._strict and check_message(data, self._recv_type):
                data = strip_unknown(data, self._recv_type)  # betterproto2 keeps them in quadratic time
            msg = self._codec.decode(data, self._recv_type)  # type: ignore[arg-type]  # views: DECODES_VIEWS
        except Exception as exc:  # malformed protobuf: the caller's error, not ours
            reason = limits.echo(str(exc) or type(exc).__name__)
            log.info("malformed %s request: %s", self._method_name, reason)
            raise GRPCError(Status.INVALID_ARGUMENT, f"grpc: error unmarshalling request: {reason}") from None
        (msg,) = await self._dispatch.recv_message(msg)
        record = self.record
        if record is not None:
            record.received()
        self._messages_received += 1
        conn = self._stream.connection
        conn.messages_received += 1
        conn.last_message_received = time.monotonic()
        return msg

    def _rooms(self) -> ConnectionRooms | None:
        return self.rooms

    def _release_recv(self) -> None:
        held, self._recv_held = self._recv_held, 0
        rooms = self._rooms()
        if rooms is not None:
            rooms.recv.release(held)
            rooms.server.recv.release(held)

    def _release_send(self, count: int | None = None) -> None:
        held = self._send_held
        if not held:
            return
        rooms = self._rooms()
        taken = held[:count] if count is not None else list(held)
        del held[: len(taken)]
        if rooms is not None:
            size = sum(taken)
            rooms.send.release(size)
            rooms.server.send.release(size)

    async def reply_room(self, limit: int) -> int:
        """Wait until a reply carrying up to *limit* bytes of data could leave now; how many it may carry.

        A handler that builds large replies (a ``Read`` reading chunks from the
        disk) calls this before building each one and puts at most the returned
        number of bytes (at least 1) in it. It returns when the connection is
        writable, the call's flow-control windows take such a reply, and the
        connection's reply budget (:mod:`ctrd.wire._budget`) has room for it; the
        room taken is given back when the next message is sent or the call ends.
        So a client that reads nothing, or not this call, makes the handler wait
        instead of the daemon holding its replies, and a reply never waits for a
        window while holding budget other calls need.
        """
        rooms = self._rooms()
        if rooms is None:
            return limit
        h2s = self._stream
        conn = h2s.connection
        h2c = h2s._h2_connection
        while True:
            try:
                window = h2c.local_flow_control_window(h2s.id or 0) - _REPLY_FRAMING
            except (KeyError, H2StreamClosedError):
                return limit  # the call is over: sending fails as it would have
            size = min(limit, window)
            if size < min(limit, _SMALLEST_REPLY):
                h2s.window_updated.clear()
                await h2s.window_updated.wait()
            elif not conn.write_ready.is_set():
                await rooms.send.until_woken()
            elif not rooms.send.fits(size) or not (rooms.send.held == 0 or rooms.server.send.fits(size)):
                await (rooms.send if not rooms.send.fits(size) else rooms.server.send).until_woken()
            else:
                rooms.send.held += size
                rooms.server.send.held += size
                if self._send_held is None:
                    self._send_held = []
                self._send_held.append(size)
                return size

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool | None:
        try:
            return await super().__aexit__(exc_type, exc_val, exc_tb)
        finally:
            if self._recv_held:
                self._release_recv()
            self._release_send()

    def peer_description(self) -> str:
        """Who the client is, for logs: ``pid=<n>`` on a unix socket, ``peer=<host>:<port>`` on TCP."""
        try:
            peer = peer_of(self._stream._transport)
        except Exception:  # best effort: only logs use it
            return ""
        if peer.transport == "unix":
            return f"pid={peer.pid}"
        return f"peer={peer.address}" if peer.address else ""

    def request_ended(self) -> bool:
        """Whether the client will send nothing more on this call.

        True once the request's END_STREAM has been received (a half-close),
        or once the call was cancelled (reset by the client, deadline, lost
        connection). A connection's frames are processed in order, so a
        half-close sent before a later call's HEADERS is seen here before that
        call's handler starts. Handlers use it to tell a call that is finishing
        from a live one.
        """
        h2s = self._stream
        if h2s.buffer._eof:
            return True
        wrapper = h2s.wrapper
        return wrapper is not None and bool(wrapper.cancelled)

    async def send_message(self, message: Any) -> None:
        """grpclib's ``send_message``; one direct write (with the headers the first time) if it can."""
        if self._send_direct(message, last=False):
            if self._send_held:
                self._release_send(1)
            return
        await super().send_message(message)
        if self._send_held:
            self._release_send(1)
        record = self.record
        if record is not None:
            record.sent()

    async def send_last(self, message: Any, repeat: int = 1) -> None:
        """Send *message* (*repeat* times) as the call's last message(s) and end the call with status OK.

        When the request is complete, no listener watches sends and the
        flow-control windows take the whole message, the headers (unless sent
        already), the message(s) and the OK trailers leave in one write, framed by
        :meth:`ctrd.wire._h2.CtrdConnection.send_reply`; otherwise this is
        :meth:`send_message` (*repeat* times) and the trailers follow when the
        handler returns. The handler must not send or fail after this.
        """
        if not self._send_direct(message, last=True, repeat=repeat):
            for _ in range(repeat):
                await self.send_message(message)
        elif self._send_held:
            self._release_send(1)

    async def send_trailing_metadata(
        self,
        *,
        status: Status = Status.OK,
        status_message: str | None = None,
        status_details: Any = None,
        metadata: Any = None,
    ) -> None:
        """grpclib's ``send_trailing_metadata``; plain OK trailers after a response go directly.

        A status message longer than :data:`ctrd.limits.MAX_STATUS_MESSAGE` is cut:
        hpack's Huffman coding of a header value costs time quadratic in its length,
        on the event loop.
        """
        if status_message is not None and len(status_message) > limits.MAX_STATUS_MESSAGE:
            status_message = status_message[: limits.MAX_STATUS_MESSAGE - 1] + "…"
        if (
            status is Status.OK
            and status_message is None
            and status_details is None
            and not metadata
            and self._trailers_direct()
        ):
            return
        await super().send_trailing_metadata(
            status=status, status_message=status_message, status_details=status_details, metadata=metadata
        )

    def _direct(self) -> tuple[CtrdConnection, int] | None:
        """The call's h2 connection and stream id if a direct send may go now, else ``None``.

        A direct send skips grpclib's send events, so it is only taken when nobody
        listens to them, and only when grpclib would not wait: the connection is
        writable and the stream still known to h2.
        """
        handlers = self._dispatch.__dict__
        if any(name not in handlers for name in _SEND_EVENTS):
            return None  # somebody listens to grpclib's send events: take grpclib's path
        h2s = self._stream
        h2c = h2s._h2_connection
        sid = h2s.id
        if (
            sid is None
            or not h2s.connection.write_ready.is_set()
            or h2s._transport.is_closing()
            or sid not in h2c.streams
            or not isinstance(h2c, CtrdConnection)
        ):
            return None
        return h2c, sid

    def _send_direct(self, message: Any, last: bool, repeat: int = 1) -> bool:
        if self._send_trailing_metadata_done or self._cancel_done:
            return False
        if self._send_message_done and not self._cardinality.server_streaming:
            return False  # grpclib's error
        direct = self._direct()
        if direct is None:
            return False
        h2c, sid = direct
        payload = self._codec.encode(message, self._send_type)
        framed = GRPC_PREFIX.pack(0, len(payload)) + payload
        if repeat != 1:
            if repeat < 1 or not self._cardinality.server_streaming:
                return False  # grpclib's path (and its errors)
            framed *= repeat
        size = len(framed)
        headers = None
        if not self._send_initial_metadata_done:
            headers = ((":status", "200"), ("content-type", self._content_type))
        if not h2c.send_reply(sid, headers, framed, _OK_TRAILERS if last else None):
            return False
        self._send_initial_metadata_done = self._send_message_done = True
        if last:
            self._send_trailing_metadata_done = True
        h2s = self._stream
        conn = h2s.connection
        h2s.data_sent += size
        conn.data_sent += size
        conn.data_send_process()
        self._messages_sent += repeat
        conn.messages_sent += repeat
        conn.last_message_sent = time.monotonic()
        record = self.record
        if record is not None:
            for _ in range(repeat):
                record.sent()
        return True

    def _trailers_direct(self) -> bool:
        if self._send_trailing_metadata_done or self._cancel_done or not self._send_initial_metadata_done:
            return False  # a trailers-only reply (or grpclib's error) takes grpclib's path
        if not self._send_message_done and not self._cardinality.server_streaming:
            return False  # grpclib's error
        direct = self._direct()
        if direct is None or not direct[0].send_reply(direct[1], None, b"", _OK_TRAILERS):
            return False
        self._send_trailing_metadata_done = True
        return True


class ServerRooms:
    """The server's memory budgets (:mod:`ctrd.wire._budget`), shared by its connections."""

    __slots__ = ("recv", "send")

    def __init__(self) -> None:
        self.recv = _budget.Room(_budget.SERVER_RECV)
        self.send = _budget.Room(_budget.SERVER_SEND)


class ConnectionRooms:
    """One connection's memory budgets, and the server's."""

    __slots__ = ("recv", "send", "server")

    def __init__(self, server: ServerRooms) -> None:
        self.server = server
        self.recv = _budget.Room(_budget.CONNECTION_RECV)
        self.send = _budget.Room(_budget.CONNECTION_SEND)
