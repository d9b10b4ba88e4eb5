"""``google.protobuf.Any`` for containerd event messages, with containerd's bare type URLs.

The helpers live in :mod:`ctrd._typeurl` (shared with the client SDK, which must
not import :mod:`ctrd.services`); this module re-exports them for the services.
"""

from __future__ import annotations

from ctrd._typeurl import GOOGLE_PREFIX, pack_event, type_url, unpack_event

__all__ = ["GOOGLE_PREFIX", "pack_event", "type_url", "unpack_event"]
