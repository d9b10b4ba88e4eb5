"""Stores and calls over a gRPC daemon's API: what the SDK and the proxy plugins share.

* :class:`Address`, :func:`parse_address`: unix socket paths and TCP host:port;
* :class:`Connection`: one lazily dialled, backed-off channel to a daemon;
* :class:`Scope`, :class:`ChannelScope`: what a call needs besides its request
  (channel, headers, deadline, error translation);
* :class:`RemoteContentStore`: a :class:`ctrd.content.Store` over the Content
  service of ctrd or containerd (containerd's ``content/proxy``), with its
  :class:`RemoteReaderAt` and :class:`RemoteWriter`.
"""

from __future__ import annotations

from ctrd.remote._address import Address, parse_address
from ctrd.remote._connection import BACKOFF_BASE, BACKOFF_MAX, DIAL_TIMEOUT, Connection
from ctrd.remote._content import RemoteContentStore, RemoteReaderAt
from ctrd.remote._scope import ChannelScope, Scope
from ctrd.remote._writer import PIPELINE, RemoteWriter

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "DIAL_TIMEOUT",
    "PIPELINE",
    "Address",
    "ChannelScope",
    "Connection",
    "RemoteContentStore",
    "RemoteReaderAt",
    "RemoteWriter",
    "Scope",
    "parse_address",
]
