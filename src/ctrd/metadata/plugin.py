"""Registration of the SQLite metadata plugin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd.plugin import InitContext, Registration, types

__all__ = ["MetadataInstance", "SqliteConfig", "sqlite"]


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
    """What the metadata plugin provides to its dependants."""

    def __init__(self, db: Any, content: Any, namespaces: Any, leases: Any = None) -> None:
        self.db = db
        self.content = content
        self.namespaces = namespaces
        #: :class:`ctrd.metadata.SqliteLeaseStore`; the GC plugin sets its ``on_delete``/``collector``
        self.leases = leases

    async def aclose(self) -> None:
        """Close the database."""
        await self.db.close()


async def _init(ic: InitContext) -> MetadataInstance:
    from ctrd import errdefs
    from ctrd.content import Store
    from ctrd.metadata import (
        DB,
        NamespacedContentStore,
        SharingPolicy,
        SqliteLeaseStore,
        SqliteNamespaceStore,
    )
    from ctrd.metadata._reserve import SpaceReserve

    cfg = ic.config
    assert isinstance(cfg, SqliteConfig)
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
    import logging

    logging.getLogger("ctrd.metadata").info("metadata content store policy set policy=%s", policy.value)
    return MetadataInstance(db, content, SqliteNamespaceStore(db, backend), SqliteLeaseStore(db))


sqlite = Registration(
    type=types.METADATA,
    id="sqlite",
    requires=(types.CONTENT, types.SNAPSHOTTER),
    config=SqliteConfig,
    init=_init,
)
