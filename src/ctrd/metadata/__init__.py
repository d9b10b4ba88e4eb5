"""Namespaced metadata over SQLite: blobs, ingests, namespaces, leases, images.

Never imports grpclib, aiohttp, betterproto2 or :mod:`ctrd.api`.
"""

from __future__ import annotations

from ctrd.metadata._types import (
    Collector,
    CommitGuard,
    CommitObserver,
    ContentHooks,
    DeletionObserver,
    GarbageCollection,
    MetadataStores,
    NamespaceStore,
)
from ctrd.metadata.content import NamespacedContentStore, SharingStats
from ctrd.metadata.db import DB
from ctrd.metadata.images import CollectingImageStore, SqliteImageStore
from ctrd.metadata.leases import CollectingLeaseManager, Lease, LeaseManager, Resource, SqliteLeaseStore
from ctrd.metadata.namespaces import SqliteNamespaceStore
from ctrd.metadata.policy import SharingPolicy

__all__ = [
    "DB",
    "CollectingImageStore",
    "CollectingLeaseManager",
    "Collector",
    "CommitGuard",
    "CommitObserver",
    "ContentHooks",
    "DeletionObserver",
    "GarbageCollection",
    "Lease",
    "LeaseManager",
    "MetadataStores",
    "NamespaceStore",
    "NamespacedContentStore",
    "Resource",
    "SharingPolicy",
    "SharingStats",
    "SqliteImageStore",
    "SqliteLeaseStore",
    "SqliteNamespaceStore",
]
