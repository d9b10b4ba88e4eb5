"""The sending half of ctrd's h2 connection: replies framed by hand, large DATA sent as it is.

:class:`ReplyingConnection` is h2's connection with

* a server stream's reply, whole or in parts (headers, messages, trailers),
  framed by hand and written at once (:meth:`~ReplyingConnection.send_reply`),
  h2's state moved as its own calls would;
* a large DATA frame's payload sent as it is: h2 serialises a frame into new
  bytes, appends them to its output buffer and copies that buffer out again
  (three copies of every byte sent). For an unpadded DATA frame of at least
  :data:`DIRECT_BODY_MIN` bytes, what h2 had queued so far plus the 9-byte frame
  header, then the payload object itself, go to :attr:`~ReplyingConnection.transport`
  in order. Stream state and flow-control windows stay h2's own.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any, Final

from h2.connection import ConnectionState, H2Connection
from h2.stream import StreamClosedBy, StreamState
from hyperframe.frame import DataFrame

__all__ = ["DIRECT_BODY_MIN", "FRAME_HEADER", "ReplyingConnection"]

DIRECT_BODY_MIN: Final = 64 << 10
"""DATA frames at least this large are received into and sent from their own buffer."""

FRAME_HEADER: Final = struct.Struct(">HBBBL")
"""An HTTP/2 frame header: length (24 bits, as 16 + 8), type, flags, stream id."""

_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4


class ReplyingConnection(H2Connection):
    """h2's connection with replies framed by hand and large DATA payloads sent as they are."""

    transport: Any = None  # where replies and large DATA payloads go (:meth:`use_transport`)
    _joins_lines = False  # the transport's writelines is asyncio's b"".join + write

    def use_transport(self, transport: Any) -> None:
        """Send replies and large DATA payloads straight to *transport*."""
        self.transport = transport
        self._joins_lines = type(transport).writelines is asyncio.WriteTransport.writelines

    def send_reply(
        self,
        stream_id: int,
        headers: Sequence[tuple[str, str]] | None,
        body: bytes,
        trailers: Sequence[tuple[str, str]] | None,
    ) -> bool:
        """Send on a server stream in one write: *headers* (if any), *body* as DATA, *trailers* (if any).

        Built here instead of through h2's frame objects: the header blocks come
        from the (memoizing) hpack encoder in the order h2 would code them, the
        frames are packed by hand, and h2's bookkeeping moves exactly as its
        ``send_headers``, ``send_data`` (a frame of at most
        ``max_outbound_frame_size`` at a time) and ``send_headers(end_stream=True)``
        would move it: the stream notes its response headers and trailers sent,
        the trailers close it (closed by us), and both outbound flow-control
        windows shrink by ``len(body)``. A header block larger than a frame
        continues in CONTINUATION frames, as h2 splits it. Whatever h2 had queued
        is written first. The header lists must be valid response headers and
        trailers; they are not validated again (grpclib's h2 configuration does not
        validate or normalise them either).

        Returns ``False``, having changed nothing, unless: this is an open server
        connection with a transport attached; the stream is open or half closed by
        the peer (and with *trailers*, half closed by the peer: its request is
        complete); *headers* are given exactly when no response headers were sent
        yet, and are not an informational (1xx) response; nothing follows trailers;
        and the flow-control windows take *body*.
        """
        stream = self._reply_stream(stream_id, headers, len(body), trailers is not None)
        if stream is None:
            return False
        # h2's connection state machine maps SEND_HEADERS and SEND_DATA in SERVER_OPEN
        # to SERVER_OPEN with no events; the stream's maps SEND_HEADERS to "response
        # headers sent" (then "trailers sent"), SEND_DATA to the same state, and
        # END_STREAM in HALF_CLOSED_REMOTE to CLOSED, closed by us.
        machine = stream.state_machine
        parts: list[Any] = []
        queued = self._data_to_send
        if queued:
            parts.append(bytes(queued))
            self._data_to_send = bytearray()
        block_step = stream.max_outbound_frame_size or self.max_outbound_frame_size  # h2 splits blocks by it
        head = b""
        if headers is not None:
            head = _header_frames(self.encoder.encode(headers), 0, stream_id, block_step)
            machine.headers_sent = True
        if body:
            self._data_frames(parts, head, stream_id, body)
            self.outbound_flow_control_window -= len(body)
            stream.outbound_flow_control_window -= len(body)
        elif head:
            parts.append(head)
        if trailers is not None:
            machine.trailers_sent = True
            machine.state = StreamState.CLOSED
            machine.stream_closed_by = StreamClosedBy.SEND_END_STREAM
            parts.append(_header_frames(self.encoder.encode(trailers), _END_STREAM, stream_id, block_step))
        if parts:
            if self._joins_lines:
                self.transport.write(b"".join(parts))
            else:
                self.transport.writelines(parts)
        return True

    def _reply_stream(
        self, stream_id: int, headers: Sequence[tuple[str, str]] | None, size: int, ends: bool
    ) -> Any:
        """The h2 stream :meth:`send_reply` may send on now, else ``None`` (see its conditions)."""
        stream = self.streams.get(stream_id)
        if (
            self.transport is None
            or stream is None
            or self.state_machine.state is not ConnectionState.SERVER_OPEN
        ):
            return None
        machine = stream.state_machine
        state = machine.state
        if (
            machine.client is not False
            or machine.trailers_sent
            or (headers is None) is not bool(machine.headers_sent)
            or not (state is StreamState.HALF_CLOSED_REMOTE or (state is StreamState.OPEN and not ends))
        ):
            return None
        if headers is not None and _informational(headers):
            return None  # a 1xx: h2 keeps the final response's headers to come
        if size > self.outbound_flow_control_window or size > stream.outbound_flow_control_window:
            return None
        return stream

    def _data_frames(self, parts: list[Any], head: bytes, stream_id: int, body: bytes) -> None:
        """*body* as DATA frames of at most the peer's frame size, after *head* (the header frames)."""
        pack = FRAME_HEADER.pack
        size = len(body)
        step = self.max_outbound_frame_size
        if size <= step:
            parts.append(head + pack(size >> 8, size & 0xFF, DataFrame.type, 0, stream_id))
            parts.append(body)
            return
        view = memoryview(body)
        for pos in range(0, size, step):
            n = min(step, size - pos)
            parts.append(head + pack(n >> 8, n & 0xFF, DataFrame.type, 0, stream_id))
            parts.append(view[pos : pos + n])
            head = b""

    def _prepare_for_sending(self, frames: Any) -> None:
        transport = self.transport
        if transport is not None and len(frames) == 1 and type(frames[0]) is DataFrame:
            frame = frames[0]
            data = frame.data
            size = len(data)
            if size >= DIRECT_BODY_MIN and "PADDED" not in frame.flags:
                frame.body_len = size
                flags = 0x1 if "END_STREAM" in frame.flags else 0
                header = FRAME_HEADER.pack(size >> 8, size & 0xFF, DataFrame.type, flags, frame.stream_id)
                queued = self._data_to_send
                if queued:
                    header = bytes(queued) + header
                    self._data_to_send = bytearray()
                if self._joins_lines:
                    # asyncio's writelines joins its arguments (a copy); two writes do not, and
                    # a view lets the transport keep what the socket did not take without a copy.
                    transport.write(header)
                    transport.write(memoryview(data))
                else:
                    transport.writelines((header, data))
                return
        super()._prepare_for_sending(frames)


def _informational(headers: Sequence[tuple[Any, Any]]) -> bool:
    """Whether *headers* are an informational (1xx) response, as h2 tells."""
    for name, value in headers:
        if name in (":status", b":status"):
            return value[:1] in ("1", b"1")
    return False


def _header_frames(block: bytes, flags: int, stream_id: int, step: int) -> bytes:
    """A header block as h2 frames it: HEADERS (with *flags*), CONTINUATIONs, END_HEADERS on the last."""
    size = len(block)
    if size <= step:
        return FRAME_HEADER.pack(size >> 8, size & 0xFF, _HEADERS, flags | _END_HEADERS, stream_id) + block
    out = bytearray()
    kind = _HEADERS
    for pos in range(0, size, step):
        piece = block[pos : pos + step]
        n = len(piece)
        last = _END_HEADERS if pos + step >= size else 0
        out += FRAME_HEADER.pack(n >> 8, n & 0xFF, kind, flags | last, stream_id)
        out += piece
        kind, flags = _CONTINUATION, 0
    return bytes(out)
