"""Async client SDK for ctrd and containerd.

::

    from ctrd.client import Client

    async with Client("/run/ctrd/ctrd.sock", namespace="demo") as client:
        info = await client.content.ingest("my-ref", "/path/to/file")
        async for blob in client.content.list():
            print(blob.digest, blob.size)
        image = await client.images.pull("alpine")   # docker.io/library/alpine:latest

The SDK speaks containerd's gRPC API, so the same code works against a real
containerd. It does not import the daemon (``ctrd.server``, ``ctrd.services``,
``ctrd.metadata``, ``ctrd.plugin``). All results are frozen dataclasses and
all errors are :mod:`ctrd.errdefs` classes. See ``docs/sdk.md``.

:class:`RemoteContentStore` is the low-level :class:`ctrd.content.Store` over a
bare grpclib channel, for code written against the store protocol.
"""

from __future__ import annotations

from ctrd.client._client import DEFAULT_LEASE_EXPIRE, Client
from ctrd.client._content_client import ContentClient, ContentWriter, Progress
from ctrd.client._events import (
    ContentCreate,
    ContentDelete,
    Envelope,
    EventPayload,
    EventsClient,
    NamespaceCreate,
    NamespaceDelete,
    NamespaceUpdate,
    RawEvent,
    Subscription,
)
from ctrd.client._images import ImagesClient
from ctrd.client._inspect import ImageCheck
from ctrd.client._registry import (
    Credentials,
    Reference,
    RegistryOptions,
    host_platform,
    parse_platform,
    parse_reference,
)
from ctrd.client._services import LeasesClient, NamespacesClient
from ctrd.client._sources import Source
from ctrd.client._transport import ADDRESS_ENV, default_address
from ctrd.client._types import (
    BLOB_STATUSES,
    GC_EXPIRE_LABEL,
    GC_ROOT_LABEL,
    BlobProgress,
    BlobStatus,
    Lease,
    Namespace,
    Platform,
    Plugin,
    PluginError,
    Resource,
    ServerInfo,
    Version,
)
from ctrd.content import Info, Status
from ctrd.images import Descriptor, Image
from ctrd.remote import Address, RemoteContentStore, RemoteReaderAt, RemoteWriter, parse_address

__all__ = [
    "ADDRESS_ENV",
    "BLOB_STATUSES",
    "DEFAULT_LEASE_EXPIRE",
    "GC_EXPIRE_LABEL",
    "GC_ROOT_LABEL",
    "Address",
    "BlobProgress",
    "BlobStatus",
    "Client",
    "ContentClient",
    "ContentCreate",
    "ContentDelete",
    "ContentWriter",
    "Credentials",
    "Descriptor",
    "Envelope",
    "EventPayload",
    "EventsClient",
    "Image",
    "ImageCheck",
    "ImagesClient",
    "Info",
    "Lease",
    "LeasesClient",
    "Namespace",
    "NamespaceCreate",
    "NamespaceDelete",
    "NamespaceUpdate",
    "NamespacesClient",
    "Platform",
    "Plugin",
    "PluginError",
    "Progress",
    "RawEvent",
    "Reference",
    "RegistryOptions",
    "RemoteContentStore",
    "RemoteReaderAt",
    "RemoteWriter",
    "Resource",
    "ServerInfo",
    "Source",
    "Status",
    "Subscription",
    "Version",
    "default_address",
    "host_platform",
    "parse_address",
    "parse_platform",
    "parse_reference",
]
