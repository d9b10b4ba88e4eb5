"""Plugin types, named as containerd names them."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALL",
    "CONTENT",
    "EVENT",
    "GC",
    "GRPC",
    "INTERNAL",
    "LEASE",
    "METADATA",
    "SERVICE",
    "SNAPSHOTTER",
]

CONTENT: Final = "io.containerd.content.v1"
METADATA: Final = "io.containerd.metadata.v1"
SERVICE: Final = "io.containerd.service.v1"
GRPC: Final = "io.containerd.grpc.v1"
EVENT: Final = "io.containerd.event.v1"
GC: Final = "io.containerd.gc.v1"
LEASE: Final = "io.containerd.lease.v1"
SNAPSHOTTER: Final = "io.containerd.snapshotter.v1"
INTERNAL: Final = "io.containerd.internal.v1"
#: In ``requires``: every other plugin (orders only; never propagates failures).
ALL: Final = "*"
