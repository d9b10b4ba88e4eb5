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

from typing import Any, Final

from grpclib.client import Channel
from grpclib.protocol import H2Protocol
from h2.settings import SettingCodes

__all__ = ["MAX_FRAME_SIZE", "LargeFrameChannel", "LargeFrameProtocol", "large_frames"]

MAX_FRAME_SIZE: Final = 2 << 20
"""The largest HTTP/2 frame we accept: a 1 MiB message fits in one frame (limit: 16 MiB - 1)."""


class LargeFrameProtocol(H2Protocol):
    """grpclib's protocol, advertising :data:`MAX_FRAME_SIZE` once the connection is made."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.connection._connection.update_settings({SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE})
        self.connection.flush()


def large_frames(protocol: H2Protocol) -> H2Protocol:
    """Make a protocol grpclib just built a :class:`LargeFrameProtocol` (same state, one setting more)."""
    protocol.__class__ = LargeFrameProtocol
    return protocol


class LargeFrameChannel(Channel):
    """A grpclib :class:`~grpclib.client.Channel` whose connections advertise :data:`MAX_FRAME_SIZE`."""

    def _protocol_factory(self) -> H2Protocol:
        return large_frames(super()._protocol_factory())
