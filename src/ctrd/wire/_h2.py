"""ctrd's HTTP/2 connections (server and SDK client) on grpclib and h2.

* **Large frames.** HTTP/2 starts every connection with 16 KiB frames
  (``SETTINGS_MAX_FRAME_SIZE``), and grpclib sends a message a frame at a time
  through h2's pure-Python state machine: a 1 MiB ``WRITE`` is 64 frames, each a
  round of h2 bookkeeping on both sides. ctrd advertises 2 MiB frames, so a peer
  that honours the setting (grpclib/h2, hence the ctrd SDK) sends such a message
  in one frame. Peers that keep to 16 KiB frames (grpc-go, hence ``ctr``) are
  unaffected: the setting only raises what this side *accepts*. The flow-control
  windows (grpclib's 4 MiB defaults) still bound how much a peer may send before
  we read it, so a connection holds no more memory than before.
* **Fewer copies** of large DATA frames, received here and sent by
  :mod:`ctrd.wire._reply` (:class:`CtrdConnection`).
* **Repeated header blocks** are coded once per state of the hpack tables
  (:mod:`ctrd.wire._hpack`).
* **Per-call frames by hand**: a reply's frames (:mod:`ctrd.wire._reply`), and the
  DATA, flow-control and ping frames a peer sends, without h2's frame objects.
"""

from __future__ import annotations

from typing import Any, Final

from grpclib.client import Channel
from grpclib.client import Handler as ClientHandler
from grpclib.protocol import Connection, EventsProcessor, H2Protocol, _set_nodelay
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.events import PingAckReceived, PingReceived, WindowUpdated
from h2.exceptions import FrameTooLargeError, ProtocolError, StreamClosedError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from h2.stream import StreamState
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PushPromiseFrame

from ctrd.wire._hpack import memoize_hpack
from ctrd.wire._reply import DIRECT_BODY_MIN, FRAME_HEADER, ReplyingConnection

__all__ = [
    "DIRECT_BODY_MIN",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BLOCK",
    "BoundedFrameBuffer",
    "CtrdConnection",
    "LargeFrameChannel",
    "LargeFrameProtocol",
    "events_processor",
]

MAX_FRAME_SIZE: Final = 2 << 20
"""The largest HTTP/2 frame we accept: a 1 MiB message fits in one frame (limit: 16 MiB - 1)."""


_END_STREAM: Final = 0x1
_DATA: Final = 0x0
_PADDED: Final = 0x8
_SETTINGS: Final = 0x4
_PING: Final = 0x6
_WINDOW_UPDATE: Final = 0x8
_ACK: Final = 0x1
_MAX_WINDOW: Final = (1 << 31) - 1
_OPEN_STATES: Final = (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
_RECEIVING: Final = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)


MAX_HEADER_BLOCK: Final = 128 << 10
"""The largest encoded header block accepted (HEADERS plus its CONTINUATIONs): twice the
64 KiB of decoded headers h2 allows, far above what a gRPC request carries."""


class BoundedFrameBuffer(FrameBuffer):
    """h2's frame buffer, refusing header blocks larger than :data:`MAX_HEADER_BLOCK`.

    h2 gathers up to 64 CONTINUATION frames of a header block before decoding it:
    with 2 MiB frames (:data:`MAX_FRAME_SIZE`) that is 128 MiB per connection. A
    larger block is a protocol error here (the connection ends with GOAWAY, as h2
    ends it for too many CONTINUATION frames).
    """

    def _update_header_buffer(self, f: Any) -> Any:
        if isinstance(f, (HeadersFrame, PushPromiseFrame, ContinuationFrame)):
            size = len(f.data) + sum(len(x.data) for x in self._headers_buffer)
            if size > MAX_HEADER_BLOCK:
                raise ProtocolError(f"header block of more than {MAX_HEADER_BLOCK} bytes")
        return super()._update_header_buffer(f)


class CtrdConnection(ReplyingConnection):
    """h2's connection as ctrd's server and SDK use it.

    * hpack coders that remember repeated header blocks (:func:`~ctrd.wire._hpack.memoize_hpack`);
    * large DATA frames received with one copy (:meth:`receive_data`);
    * replies framed by hand and large DATA payloads sent as they are
      (:class:`~ctrd.wire._reply.ReplyingConnection`);
    * WINDOW_UPDATE and PING frames, most of what a gRPC peer sends besides
      requests (``ctr`` sends four and one per ``Read``), and complete unpadded
      DATA frames (``ctr`` sends a 1 MiB ``WRITE`` as 64), taken without h2's
      frame objects (:meth:`_control`, :meth:`_data`); errors and unusual cases
      stay h2's.

    Built as this class rather than given it afterwards: CPython specialises
    attribute access per class, and an object whose class was swapped loses that
    on h2's hot paths.
    """

    #: How many closed streams h2 remembers (h2: 65536), to answer a late frame on a stream
    #: it reset with RST_STREAM rather than end the connection. Each costs ~150 bytes for
    #: the connection's life: with h2's number, a long-lived connection grew by ~10 MiB over
    #: its first 65536 calls. Late frames arrive within a round trip, not 1024 streams later.
    MAX_CLOSED_STREAMS = 1024

    _frame: DataFrame | None = None  # a large DATA frame whose body is arriving
    _body: bytearray
    _filled = 0
    _refused = 0  # the length of an overlong frame whose header arrived: the next read ends the connection

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        memoize_hpack(self)
        self.incoming_buffer = BoundedFrameBuffer(server=not self.config.client_side)

    def receive_data(self, data: Any) -> list[Any]:
        """h2's ``receive_data``; the body of a large DATA frame is gathered with one copy.

        h2 appends every read to one buffer, then slices a frame's body out of it
        and copies that slice again: three copies of every received byte. When
        what h2 leaves buffered after a read is the start of an unpadded DATA frame
        of at least :data:`DIRECT_BODY_MIN` bytes, its body gets a buffer of its own,
        which the following reads fill; the frame then goes through h2's own
        processing with that buffer as its data. Nothing changes for small frames.
        """
        if self._refused:
            self._refuse()
        if self._frame is not None:
            return self._fill(data)
        buf = self.incoming_buffer
        if buf._data or buf._preamble_len:
            return self._receive_h2(data)
        controls = _frames_to_take(data)
        if not controls:
            return self._receive_h2(data)
        size = len(data)
        events: list[Any] = []
        start = 0
        rest = size  # where what h2 has not been given starts
        try:
            for pos, end, kind in controls:
                if start < pos:
                    rest = pos
                    events.extend(self._receive_h2(memoryview(data)[start:pos]))
                    start = pos
                rest = end
                if (
                    self._data(data, pos, end, events)
                    if kind == _DATA
                    else self._control(data, pos, kind, events)
                ):
                    start = end
                else:
                    rest = pos
            rest = size
            if start < size:
                events.extend(self._receive_h2(memoryview(data)[start:]))
        except ProtocolError:
            # h2 would keep what follows the failing frame buffered (the connection is over)
            self.incoming_buffer._data += memoryview(data)[rest:]
            raise
        return events

    def _receive_h2(self, data: Any) -> list[Any]:
        events: list[Any] = super().receive_data(data)
        pending = self.incoming_buffer._data
        if len(pending) >= 9:
            length = (pending[0] << 16) | (pending[1] << 8) | pending[2]
            if length > self.max_inbound_frame_size:
                # h2 refuses a frame over the limit once it has all of it (up to 16 MiB
                # gathered for nothing); the limit cannot change before this frame is
                # complete, so it is refused as soon as its header is here
                self._refused = length
                if not events:
                    self._refuse()
            elif len(pending) > 9 and pending[3] == DataFrame.type and not pending[4] & 0x08:
                self._start(pending)
        return events

    def _refuse(self) -> None:
        """End the connection for the overlong frame :meth:`_receive_h2` found, as h2 would."""
        length, self._refused = self._refused, 0
        self._terminate_connection(ErrorCodes.FRAME_SIZE_ERROR)
        raise FrameTooLargeError(
            f"Received overlong frame: length {length}, max {self.max_inbound_frame_size}"
        )

    def _data(self, data: Any, pos: int, end: int, events: list[Any]) -> bool:
        """Take the DATA frame at *pos* as h2 would; ``False``: leave it to h2.

        Only an unpadded frame within the frame-size limit, on a stream h2 holds
        open for receiving (no content-length to track) whose and the connection's
        windows take it, on an open connection (where h2's RECV_DATA changes no
        state) with no header block in progress. The connection's window is
        consumed here and the stream's own code does the rest (its window, its
        state, the events), as in h2; the frame's data is copied once.
        """
        if self.state_machine.state not in _OPEN_STATES or self.incoming_buffer._headers_buffer:
            return False
        flags = data[pos + 4]
        length = end - pos - 9
        if flags & _PADDED or length > self.max_inbound_frame_size:
            return False
        stream = self.streams.get(int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF)
        if (
            stream is None
            or stream.state_machine.state not in _RECEIVING
            or stream._expected_content_length is not None
        ):
            return False
        window = self._inbound_flow_control_window_manager
        if length > window.current_window_size or length > stream._inbound_window_manager.current_window_size:
            return False
        window.window_consumed(length)
        frames, stream_events = stream.receive_data(
            bytes(memoryview(data)[pos + 9 : end]), bool(flags & _END_STREAM), length
        )
        if frames:
            self._prepare_for_sending(frames)
        events.extend(stream_events)
        return True

    def _control(self, data: Any, pos: int, kind: int, events: list[Any]) -> bool:
        """Take the WINDOW_UPDATE or PING frame at *pos* as h2 would; ``False``: leave it to h2.

        Only the cases h2 answers without an error are taken: an open connection
        (whose state machine maps both inputs to the same state, with no events)
        with no header block in progress; a PING on stream 0; a WINDOW_UPDATE
        with a non-zero increment that keeps the connection's window in range, or
        for a stream h2 knows (its own stream code applies it) or has closed
        (ignored, as h2 does). Everything else (errors included) goes to h2.
        """
        if self.state_machine.state not in _OPEN_STATES or self.incoming_buffer._headers_buffer:
            return False
        stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if kind == _PING:
            if stream_id:
                return False
            opaque = bytes(data[pos + 9 : pos + 17])
            if data[pos + 4] & _ACK:
                events.append(PingAckReceived(ping_data=opaque))
            else:
                events.append(PingReceived(ping_data=opaque))
                self._data_to_send += FRAME_HEADER.pack(0, 8, _PING, _ACK, 0) + opaque
            return True
        increment = int.from_bytes(data[pos + 9 : pos + 13], "big")  # hyperframe: 1 .. 2**31 - 1
        if not 0 < increment <= _MAX_WINDOW:
            return False
        if not stream_id:
            window = self.outbound_flow_control_window + increment
            if window > _MAX_WINDOW:
                return False
            self.outbound_flow_control_window = window
            events.append(WindowUpdated(stream_id=0, delta=increment))
            return True
        stream = self.streams.get(stream_id)
        if stream is None:
            outbound = self._stream_id_is_outbound(stream_id)
            highest = self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id
            # a stream h2 has forgotten is ignored; an idle one is h2's error
            return stream_id <= highest
        try:
            frames, stream_events = stream.receive_window_update(increment)
        except StreamClosedError:
            return True
        except ProtocolError as exc:  # a stream in a state h2 refuses it in: h2's answer
            self._terminate_connection(exc.error_code)
            raise
        if frames:
            self._prepare_for_sending(frames)
        events.extend(stream_events)
        return True

    def _start(self, pending: bytearray) -> None:
        """Gather the body of the large DATA frame starting *pending* in a buffer of its own.

        Only a frame h2 would accept: within the frame-size limit, outside a header
        block, on a stream h2 holds open for receiving whose and the connection's
        flow-control windows take the whole body. The buffer is the frame's full
        length, so the check comes before it is allocated: a peer announcing a
        large frame it never sends (on an unknown stream, over its window) gets
        nothing allocated; h2 gathers such bytes as they arrive and refuses the frame.
        """
        length = int.from_bytes(pending[:3], "big")
        stream_id = int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
        if (
            length < DIRECT_BODY_MIN
            or length > self.max_inbound_frame_size
            or len(pending) >= 9 + length
            or not stream_id
            or self.incoming_buffer._headers_buffer
            or length > self._inbound_flow_control_window_manager.current_window_size
        ):
            return  # h2 deals with it (including the errors)
        stream = self.streams.get(stream_id)
        if (
            stream is None
            or stream.state_machine.state not in _RECEIVING
            or length > stream._inbound_window_manager.current_window_size
        ):
            return
        frame = DataFrame(stream_id)
        frame.parse_flags(pending[4])
        body = bytearray(length)
        with memoryview(pending) as view:
            body[: len(pending) - 9] = view[9:]
        self._filled = len(pending) - 9
        del pending[:]
        self._frame, self._body = frame, body

    def _fill(self, data: Any) -> list[Any]:
        view = memoryview(data)
        body = self._body
        take = min(len(body) - self._filled, len(view))
        body[self._filled : self._filled + take] = view[:take]
        self._filled += take
        if self._filled < len(body):
            return []
        frame = self._frame
        assert frame is not None
        frame.data = body  # type: ignore[assignment]  # h2 and grpclib take any buffer
        frame.body_len = len(body)
        self._frame, self._body = None, bytearray()
        try:
            events = list(self._receive_frame(frame))
        except ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            raise
        if take < len(view):
            events.extend(self.receive_data(view[take:]))
        return events

    def accept_raised_settings(self) -> None:
        """Act now on the local settings sent but not yet acknowledged that only raise a limit.

        A peer may use a setting from the moment it reads our SETTINGS frame, and
        may send frames that rely on it before its ACK reaches us (grpcio does: a
        large first message in 2 MiB frames, its ACK after them). h2 keeps the old
        limits until the ACK and would refuse those frames as a connection error.
        A larger frame size or initial window only lets this side accept more, so
        both take effect here at once; the ACK then changes nothing. Anything
        lowering a limit still waits for its ACK, as the protocol requires.
        """
        pending = self.local_settings._settings
        for code in (SettingCodes.MAX_FRAME_SIZE, SettingCodes.INITIAL_WINDOW_SIZE):
            values = pending.get(code)
            if values is not None and len(values) > 1 and values[-1] >= values[0]:
                # no stream exists yet whose window the change would have to move
                assert code is not SettingCodes.INITIAL_WINDOW_SIZE or not self.streams
                newest = values[-1]
                values.clear()
                values.append(newest)
        self.max_inbound_frame_size = self.local_settings.max_frame_size


class _Events(EventsProcessor):
    """grpclib's event processing, ignoring DATA frames that carry nothing.

    grpclib queues an empty, unpadded DATA frame as a stream's end-of-data marker:
    the call's next read then fails with an ``AssertionError`` (a zero-length DATA
    frame without END_STREAM is legal HTTP/2). Such a frame changes nothing: no
    data, no flow control; its END_STREAM, if any, is a separate event.
    """

    def process_data_received(self, event: Any) -> None:
        if event.flow_controlled_length or event.data:
            super().process_data_received(event)


def _frames_to_take(data: Any) -> list[tuple[int, int, int]]:
    """(start, end, type) of the complete frames of a read that :class:`CtrdConnection` takes itself.

    Complete DATA, WINDOW_UPDATE and PING frames are taken by hand (``_data``,
    ``_control``), the frames between them go to h2 in runs, all in their order.
    h2 reads a frame-size limit once per read, which a SETTINGS frame (its ACK) may
    change: a read holding one goes to h2 whole (none is taken).
    """
    size = len(data)
    controls: list[tuple[int, int, int]] = []
    pos = 0
    while size - pos >= 9:
        end = pos + 9 + ((data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2])
        if end > size:
            break
        kind = data[pos + 3]
        if kind == _SETTINGS:
            return []
        if (
            kind == _DATA
            or (kind == _WINDOW_UPDATE and end - pos == 13)
            or (kind == _PING and end - pos == 17)
        ):
            controls.append((pos, end, kind))
        pos = end
    return controls


def events_processor(handler: Any, connection: Connection) -> EventsProcessor:
    """grpclib's event processing for *connection*, ignoring DATA frames that carry nothing."""
    return _Events(handler, connection)


class LargeFrameProtocol(H2Protocol):
    """grpclib's protocol over a :class:`CtrdConnection`, advertising :data:`MAX_FRAME_SIZE`."""

    def connection_made(self, transport: Any) -> None:
        # grpclib's connection_made, building a CtrdConnection instead of an H2Connection.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        conn = CtrdConnection(config=self.h2_config)
        conn.use_transport(transport)
        conn.initiate_connection()
        initial = conn.local_settings.initial_window_size
        conn_delta = self.config.http2_connection_window_size - initial
        if conn_delta:
            conn.increment_flow_control_window(conn_delta)
        settings: dict[SettingCodes | int, int] = {SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE}
        if self.config.http2_stream_window_size != initial:
            settings[SettingCodes.INITIAL_WINDOW_SIZE] = self.config.http2_stream_window_size
        conn.update_settings(settings)
        conn.accept_raised_settings()
        self.connection = Connection(conn, transport, config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = _Events(self.handler, self.connection)


class LargeFrameChannel(Channel):
    """A grpclib :class:`~grpclib.client.Channel` over :class:`LargeFrameProtocol` connections."""

    def _protocol_factory(self) -> H2Protocol:
        return LargeFrameProtocol(ClientHandler(), self._config, self._h2_config)
