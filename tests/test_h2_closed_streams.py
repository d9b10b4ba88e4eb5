"""A connection remembers a bounded number of closed streams (``CtrdConnection.MAX_CLOSED_STREAMS``).

h2 remembers how each of the last 65536 streams of a connection closed, ~150
bytes each for the connection's life: a long-lived connection grew by ~10 MiB
over its first 65536 calls (the hardening load test saw the daemon's RSS creep
by ~0.15 KiB a call). ctrd's connections remember 1024, enough to answer a late
frame on a stream they reset.
"""

from __future__ import annotations

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes

from ctrd.wire._h2 import CtrdConnection

from .test_h2_direct import REQUEST, RESPONSE, TRAILERS, frames_of, server_config

RST_STREAM = 0x3


def _pair() -> tuple[H2Connection, CtrdConnection]:
    client = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
    server = CtrdConnection(config=server_config())
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _call(client: H2Connection, server: CtrdConnection) -> int:
    """One unary call, request and reply, to the end of both sides."""
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(sid, RESPONSE)
    server.send_headers(sid, TRAILERS, end_stream=True)
    client.receive_data(server.data_to_send())
    return sid


def test_closed_streams_remembered_are_bounded() -> None:
    client, server = _pair()
    limit = CtrdConnection.MAX_CLOSED_STREAMS
    for _ in range(limit + 500):
        _call(client, server)
    assert len(server._closed_streams) <= limit
    assert limit + 500 < H2Connection.MAX_CLOSED_STREAMS  # h2's own number would have kept them all


def test_a_late_frame_on_a_stream_reset_recently_gets_rst_stream() -> None:
    client, server = _pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST)
    server.receive_data(client.data_to_send())
    server.reset_stream(sid, ErrorCodes.CANCEL)
    server.data_to_send()  # the RST_STREAM: the client has not read it when it sends more
    client.send_data(sid, b"\0\0\0\0\0")
    late = client.data_to_send()
    for _ in range(CtrdConnection.MAX_CLOSED_STREAMS - 10):  # other calls meanwhile
        _call(client, server)
    server.receive_data(late)
    answer = [(w.type, w.stream_id) for w in frames_of(server.data_to_send())]
    assert answer == [(RST_STREAM, sid)]  # a stream error, not GOAWAY
