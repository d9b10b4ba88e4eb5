"""Registration of the SQLite metadata plugin."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd.plugin import InitContext, Registration, types

if TYPE_CHECKING:  # the modules are imported when the plugin initialises, not when it is discovered
    from ctrd.metadata import (
        DB,
        NamespacedContentStore,
        SqliteImageStore,
        SqliteLeaseStore,
        SqliteNamespaceStore,
    )
    from ctrd.metadata._types import DeletionObserver
    from ctrd.metadata.gc import GarbageCollector

__all__ = ["MetadataInstance", "SqliteConfig", "sqlite"]

log = logging.getLogger("ctrd.metadata")


class SqliteConfig(BaseModel):
    """``[plugins."io.containerd.metadata.v1.sqlite"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content_sharing_policy: str = Field(
        default="shared",
        description='"shared": knowing a digest admits a blob held by another namespace; '
        '"isolated": every byte must be uploaded (see docs/content-sharing.md)',
    )
    content_plugin: str = Field(
        default="",
        description="URI of the content plugin to use; empty = the single enabled content plugin",
    )
    reserve_bytes: int = Field(
        default=16 << 20,
        ge=0,
        description="disk space kept allocated in <root>/io.containerd.metadata.v1.sqlite/reserve and "
        "given back when the disk fills, so deletions and garbage collection still commit; new data "
        "is refused until twice this much is free again (0: no reserve)",
    )

    @field_validator("content_sharing_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in ("shared", "isolated"):
            raise ValueError(f"unknown policy: {v}")
        return v


class MetadataInstance:
    """What the metadata plugin provides to its dependants.

    Its stores (:class:`ctrd.metadata.MetadataStores`, for the service plugins) and
    its own garbage collector (:class:`ctrd.metadata.GarbageCollection`, for the GC
    scheduler plugin, which decides when to run it). Everything is built here, at
    construction; other plugins hook in through the stores' registration methods.
    """

    def __init__(
        self,
        db: DB,
        content: NamespacedContentStore,
        namespaces: SqliteNamespaceStore,
        leases: SqliteLeaseStore,
        images: SqliteImageStore,
    ) -> None:
        self._db = db
        self._content = content
        self._namespaces = namespaces
        self._leases = leases
        self._images = images
        from ctrd.metadata.gc import GarbageCollector

        self._collector = GarbageCollector(db, content.backend, content.gate)

    @property
    def db(self) -> DB:
        """The SQLite database (internal schema: prefer the stores)."""
        return self._db

    @property
    def content(self) -> NamespacedContentStore:
        """The namespaced content store."""
        return self._content

    @property
    def namespaces(self) -> SqliteNamespaceStore:
        """The namespace store."""
        return self._namespaces

    @property
    def leases(self) -> SqliteLeaseStore:
        """The lease store."""
        return self._leases

    @property
    def images(self) -> SqliteImageStore:
        """The image store."""
        return self._images

    @property
    def collector(self) -> GarbageCollector:
        """The garbage collector over this database and its content backend."""
        return self._collector

    def mutations(self) -> int:
        """Write transactions committed so far (the GC scheduler's mutation threshold counts them)."""
        return self._db.mutations

    def observe_deletions(self, callback: DeletionObserver) -> None:
        """Call *callback* after every blob, lease, lease resource or image deletion."""
        self._content.observe_deletions(callback)
        self._leases.observe_deletions(callback)
        self._images.observe_deletions(callback)

    async def aclose(self) -> None:
        """Close the database."""
        await self._db.close()


async def _init(ic: InitContext[SqliteConfig]) -> MetadataInstance:
    from ctrd import errdefs
    from ctrd.content import Store
    from ctrd.metadata import (
        DB,
        NamespacedContentStore,
        SharingPolicy,
        SqliteImageStore,
        SqliteLeaseStore,
        SqliteNamespaceStore,
    )
    from ctrd.metadata._reserve import SpaceReserve

    cfg = ic.config
    if cfg.content_plugin:
        type_, _, id_ = cfg.content_plugin.rpartition(".")
        if type_ != types.CONTENT:
            raise errdefs.InvalidArgument(f"content_plugin {cfg.content_plugin!r} is not a content plugin")
        backend = ic.get_by_id(types.CONTENT, id_, Store)
    else:
        backend = ic.get_single(types.CONTENT, Store)
    path = ic.root / "meta.db"
    db = DB(path, SpaceReserve(ic.root / "reserve", cfg.reserve_bytes))
    await db.open()
    policy = SharingPolicy(cfg.content_sharing_policy)
    content = NamespacedContentStore(db, backend, policy)
    ic.exports["path"] = str(path)
    ic.exports["policy"] = policy.value
    log.info("metadata content store policy set policy=%s", policy.value)
    return MetadataInstance(
        db, content, SqliteNamespaceStore(db, backend), SqliteLeaseStore(db), SqliteImageStore(db)
    )


sqlite = Registration(
    type=types.METADATA,
    id="sqlite",
    requires=(types.CONTENT, types.SNAPSHOTTER),
    config=SqliteConfig,
    init=_init,
)
