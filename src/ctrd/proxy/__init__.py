"""Proxy plugins: content stores and snapshotters served by other gRPC daemons.

* :mod:`ctrd.proxy.connection` -- one lazily dialled, backed-off channel per address;
* :mod:`ctrd.proxy.content` -- :class:`ProxyContentStore`, ``io.containerd.content.v1.<name>``;
* :mod:`ctrd.proxy.snapshots` -- :class:`RemoteSnapshotter`, ``io.containerd.snapshotter.v1.<name>``;
* :mod:`ctrd.services.content_backend` -- the other direction: ctrd's content store served to
  another daemon's content proxy on ``proxy_backend_address``, in one namespace.

The registrations are built from ``[proxy_plugins.<name>]`` by
:func:`ctrd.server.proxy_plugins.proxy_registrations`.
"""

from __future__ import annotations

from ctrd.proxy.connection import ConnectionCache
from ctrd.proxy.content import ProxyContentStore
from ctrd.proxy.snapshots import Kind, Mount, RemoteSnapshotter, SnapshotInfo, Usage

__all__ = [
    "ConnectionCache",
    "Kind",
    "Mount",
    "ProxyContentStore",
    "RemoteSnapshotter",
    "SnapshotInfo",
    "Usage",
]
