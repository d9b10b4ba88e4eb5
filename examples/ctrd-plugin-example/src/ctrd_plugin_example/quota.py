"""``ctrd.example.quota.v1.content``: a per-namespace quota on stored bytes, enforced on commit.

Config::

    [plugins."ctrd.example.quota.v1.content"]
      default_limit_bytes = 0            # every namespace; 0 = no limit
      [plugins."ctrd.example.quota.v1.content".limits]
        tenant-a = 1048576               # per namespace, overrides the default (0 = no limit)

A commit that would take a namespace past its limit fails with
RESOURCE_EXHAUSTED (``errdefs.ResourceExhausted``), naming namespace, digest,
sizes and limit; the ingest is kept (free some space, then commit again). A
blob the namespace already holds costs nothing; a blob admitted from another
namespace (shared policy: no bytes uploaded) counts in full -- the quota is on
what a namespace holds, not on what it uploads.

How it hooks in: the plugin requires the metadata type and registers a commit
guard with the namespaced content store the metadata plugin exposes
(``ic.get_single(types.METADATA, MetadataStores).content``, whose type declares
``guard_commits``: :class:`ctrd.metadata.ContentHooks`). The store enters the
guard around every commit, before anything is committed; the guard takes the
namespace's lock, checks the quota and raises to refuse. Nothing is replaced or
wrapped, so the order in which the plugins initialise does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ctrd.plugin import InitContext, Registration, types
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from ctrd.content import Manager

__all__ = ["QUOTA_TYPE", "Quota", "QuotaConfig", "quota"]

log = logging.getLogger("ctrd_plugin_example.quota")

QUOTA_TYPE = "ctrd.example.quota.v1"


class QuotaConfig(BaseModel):
    """``[plugins."ctrd.example.quota.v1.content"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_limit_bytes: int = Field(default=0, ge=0, description="limit of every namespace; 0 = none")
    limits: dict[str, int] = Field(
        default_factory=dict, description="per-namespace limits in bytes (0 = none), overriding the default"
    )

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: dict[str, int]) -> dict[str, int]:
        from ctrd import errdefs, identifiers

        for ns, limit in v.items():
            try:
                identifiers.validate(ns)
            except errdefs.InvalidArgument as exc:
                raise ValueError(f"{ns!r} is not a valid namespace: {exc.context}") from None
            if limit < 0:
                raise ValueError(f"limit of {ns!r} must be >= 0, got {limit}")
        return v


class Quota:
    """The plugin's instance: limits, usage, and the commit guard it registers with the store."""

    def __init__(self, config: QuotaConfig, store: Manager) -> None:
        self.config = config
        self._store = store  # the namespaced content store: usage is read from it
        self._locks: dict[str, asyncio.Lock] = {}

    def limit(self, namespace: str) -> int:
        """The namespace's limit in bytes (0 = none)."""
        return self.config.limits.get(namespace, self.config.default_limit_bytes)

    async def usage(self, namespace: str) -> tuple[int, int]:
        """(bytes, blobs) the namespace holds."""
        from ctrd import namespaces

        total = count = 0
        with namespaces.with_namespace(namespace):
            async for info in self._store.walk():
                total += info.size
                count += 1
        return total, count

    def lock(self, namespace: str) -> asyncio.Lock:
        """Serialises check-and-commit per namespace, so concurrent commits cannot overshoot."""
        return self._locks.setdefault(namespace, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def guard(self, namespace: str, digest: str, size: int) -> AsyncIterator[None]:
        """The commit guard: the commit runs inside, under the namespace's lock, if the quota allows.

        :raises errdefs.ResourceExhausted: the blob would take the namespace past its limit.
        """
        from ctrd import errdefs

        limit = self.limit(namespace)
        if not limit:
            yield
            return
        async with self.lock(namespace):
            try:
                await self._store.info(digest)
            except errdefs.NotFound:
                used, _ = await self.usage(namespace)
                if used + size > limit:
                    raise errdefs.ResourceExhausted(
                        f'quota exceeded in namespace "{namespace}": committing {digest} ({size} bytes) '
                        f"would use {used + size} of {limit} bytes ({used} in use)"
                    ) from None
            # else already held: the commit reports AlreadyExists and costs nothing
            yield


async def _init(ic: InitContext[QuotaConfig]) -> Quota:
    from ctrd.metadata import ContentHooks, MetadataStores

    cfg = ic.config
    store = ic.get_single(types.METADATA, MetadataStores).content
    if not isinstance(store, ContentHooks):
        from ctrd import errdefs

        raise errdefs.FailedPrecondition("the metadata plugin's content store takes no commit guards")
    q = Quota(cfg, store)
    store.guard_commits(q.guard)
    ic.exports["default_limit_bytes"] = str(cfg.default_limit_bytes)
    ic.exports["limits"] = ",".join(f"{ns}={n}" for ns, n in sorted(cfg.limits.items())) or "-"
    ic.capabilities.append("enforce-on-commit")
    log.info(
        "content quota active: default %d bytes, %d namespace limit(s)",
        cfg.default_limit_bytes,
        len(cfg.limits),
    )
    return q


quota = Registration(
    type=QUOTA_TYPE, id="content", requires=(types.METADATA,), config=QuotaConfig, init=_init
)
