"""Re-export of :mod:`ctrd.protobuf` for the servicers."""

from __future__ import annotations

from ctrd.protobuf import EPOCH, info_from_proto, info_to_proto, status_from_proto, status_to_proto, to_utc

__all__ = ["EPOCH", "info_from_proto", "info_to_proto", "status_from_proto", "status_to_proto", "to_utc"]
