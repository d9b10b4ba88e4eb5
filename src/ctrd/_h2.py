"""HTTP/2 settings ctrd advertises on its gRPC connections (server and SDK client).

HTTP/2 starts every connection with 16 KiB frames (``SETTINGS_MAX_FRAME_SIZE``),
and grpclib sends a message as one frame at a time through h2's pure-Python
state machine. A 1 MiB ``WRITE`` is then 64 frames, each costing a round of
h2 bookkeeping on both sides. Advertising larger frames lets a peer that honours
the setting (grpclib/h2, hence the ctrd SDK) send such a message in one frame.
Peers that keep to 16 KiB frames (grpc-go, hence ``ctr``) are unaffected:
the setting only raises what this side *accepts*.

The flow-control windows (grpclib's 4 MiB defaults) still bound how much a
peer may send before we read it, so a larger frame does not change how much
memory a connection may hold.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from grpclib.client import Channel
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from hpack import Decoder, Encoder
from hpack.table import HeaderTable
from hyperframe.frame import DataFrame

__all__ = [
    "DIRECT_BODY_MIN",
    "MAX_FRAME_SIZE",
    "DirectFrameBuffer",
    "DirectSendConnection",
    "LargeFrameChannel",
    "LargeFrameProtocol",
    "large_frames",
    "memoize_hpack",
]

MAX_FRAME_SIZE: Final = 2 << 20
"""The largest HTTP/2 frame we accept: a 1 MiB message fits in one frame (limit: 16 MiB - 1)."""


_MEMO_ENTRIES: Final = 64
_MEMO_MAX_BLOCK: Final = 1024
_TEXT: Final = (str, bytes)


class _VersionedTable(HeaderTable):
    """hpack's dynamic table, counting its changes (every ``add`` and resize)."""

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class _MemoDecoder(Decoder):
    """hpack's decoder, remembering blocks whose decoding left the dynamic table as it was.

    Such a block (indexed fields, literals without indexing) decodes to the same
    headers as long as the table has not changed since; a gRPC client repeating
    a call sends the same block each time. Any change to the table (an insertion
    or a resize) invalidates every remembered block.
    """

    _memo: dict[tuple[bytes, bool, int | None, int], tuple[int, tuple[Any, ...]]]

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table: _VersionedTable = self.header_table  # type: ignore[assignment]
        # The limits the block was checked against are part of the key: a block
        # remembered under larger limits is decoded (and checked) again.
        key = (data, raw, self.max_header_list_size, self.max_allowed_table_size)
        version = table.version
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        headers = super().decode(data, raw)
        if table.version == version and len(data) <= _MEMO_MAX_BLOCK:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (version, tuple(headers))
        return headers


class _MemoEncoder(Encoder):
    """hpack's encoder, remembering header lists whose encoding left the dynamic table as it was.

    Only lists (or tuples) of plain ``(name, value)`` tuples with ``str``/``bytes``
    values are remembered (a never-indexed :class:`hpack.NeverIndexedHeaderTuple`
    compares equal to a plain tuple, ``1 == True == 1.0`` but they encode
    differently), and only when no table-size update was pending.
    """

    _memo: dict[tuple[Any, bool], tuple[int, bytes]]

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table: _VersionedTable = self.header_table  # type: ignore[assignment]
        if type(headers) not in (list, tuple) or table.resized or self.table_size_changes:
            return super().encode(headers, huffman)
        if not all(type(h) is tuple and len(h) == 2 and type(h[1]) in _TEXT for h in headers):
            return super().encode(headers, huffman)
        key = (tuple(headers), huffman)
        version = table.version
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        block = super().encode(headers, huffman)
        if table.version == version and len(block) <= _MEMO_MAX_BLOCK:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (version, block)
        return block


DIRECT_BODY_MIN: Final = 64 << 10
"""DATA frames at least this large are gathered into a buffer of their own (:class:`DirectFrameBuffer`)."""


class DirectFrameBuffer(FrameBuffer):
    """h2's inbound frame buffer; a large DATA frame's body is copied once.

    h2 appends every read to one buffer, then slices a frame's body out of it and
    copies that slice again: three copies of every received byte. Here an unpadded
    DATA frame of at least :data:`DIRECT_BODY_MIN` bytes whose body has not fully
    arrived gets a buffer of its own, which the following reads fill; the frame
    carries that buffer as its data. Frames come out in the order they arrived,
    and every other frame goes through h2's own parsing.
    """

    _frame: DataFrame | None = None
    _body: bytearray
    _filled = 0

    def add_data(self, data: Any) -> None:
        if self._frame is None:
            super().add_data(data)
            return
        view = memoryview(data)
        take = min(len(self._body) - self._filled, len(view))
        self._body[self._filled : self._filled + take] = view[:take]
        self._filled += take
        if take < len(view):
            super().add_data(view[take:])

    def __next__(self) -> Any:
        frame = self._frame
        if frame is not None:
            if self._filled < len(self._body):
                raise StopIteration
            frame.data = self._body  # type: ignore[assignment]  # h2 and grpclib take any buffer
            frame.body_len = len(self._body)
            self._frame = None
            self._body = bytearray()
            return frame
        data = self._data
        if len(data) > 9 and data[3] == DataFrame.type and not data[4] & 0x08 and not self._headers_buffer:
            length = int.from_bytes(data[:3], "big")
            stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
            if length >= DIRECT_BODY_MIN and len(data) < 9 + length and stream_id:
                self._validate_frame_length(length)
                frame = DataFrame(stream_id)
                frame.parse_flags(data[4])
                body = bytearray(length)
                with memoryview(data) as view:
                    body[: len(data) - 9] = view[9:]
                self._filled = len(data) - 9
                del data[:]
                self._frame, self._body = frame, body
                raise StopIteration
        return super().__next__()


_FRAME_HEADER: Final = struct.Struct(">HBBBL")


class DirectSendConnection(H2Connection):
    """h2's connection; a large DATA frame's payload goes to the transport as it is.

    h2 serialises a frame into new bytes, appends them to its output buffer and
    copies that buffer out again when asked for it: three copies of every byte
    sent. For an unpadded DATA frame of at least :data:`DIRECT_BODY_MIN` bytes,
    this writes what h2 had queued so far plus the 9-byte frame header, then the
    payload object itself, to :attr:`transport` (one ``writelines``), keeping the
    order of everything sent. Stream state and flow-control windows are h2's own.
    """

    transport: Any = None

    def _prepare_for_sending(self, frames: Any) -> None:
        transport = self.transport
        if transport is not None and len(frames) == 1 and type(frames[0]) is DataFrame:
            frame = frames[0]
            data = frame.data
            size = len(data)
            if size >= DIRECT_BODY_MIN and not frame.pad_length:
                frame.body_len = size
                flags = 0x1 if "END_STREAM" in frame.flags else 0
                header = _FRAME_HEADER.pack(size >> 8, size & 0xFF, DataFrame.type, flags, frame.stream_id)
                queued = self._data_to_send
                if queued:
                    header = bytes(queued) + header
                    self._data_to_send = bytearray()
                transport.writelines((header, data))
                return
        super()._prepare_for_sending(frames)


def memoize_hpack(h2_connection: Any) -> None:
    """Give an h2 connection's hpack encoder and decoder a memo of unchanged-table blocks.

    Must run before the connection has exchanged any header block (their tables
    are swapped for versioned ones in place, keeping their size).
    """
    for coder, cls in ((h2_connection.encoder, _MemoEncoder), (h2_connection.decoder, _MemoDecoder)):
        coder.__class__ = cls
        coder._memo = {}
        coder.header_table.__class__ = _VersionedTable


class LargeFrameProtocol(H2Protocol):
    """grpclib's protocol, advertising :data:`MAX_FRAME_SIZE` once the connection is made.

    Its hpack coders also remember repeated header blocks (:func:`memoize_hpack`),
    large DATA frames are received with one copy (:class:`DirectFrameBuffer`) and
    sent without any (:class:`DirectSendConnection`).
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        h2_connection: Any = self.connection._connection
        memoize_hpack(h2_connection)
        h2_connection.incoming_buffer = DirectFrameBuffer(server=not h2_connection.config.client_side)
        h2_connection.__class__ = DirectSendConnection
        h2_connection.transport = transport
        h2_connection.update_settings({SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE})
        self.connection.flush()


def large_frames(protocol: H2Protocol) -> H2Protocol:
    """Make a protocol grpclib just built a :class:`LargeFrameProtocol` (same state, one setting more)."""
    protocol.__class__ = LargeFrameProtocol
    return protocol


class LargeFrameChannel(Channel):
    """A grpclib :class:`~grpclib.client.Channel` whose connections advertise :data:`MAX_FRAME_SIZE`."""

    def _protocol_factory(self) -> H2Protocol:
        return large_frames(super()._protocol_factory())
