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

How it hooks in: the plugin requires the metadata type and wraps the content
store the metadata plugin exposes (``MetadataInstance.content``) in a
:class:`QuotaContentStore`. The content service takes that store when it
initialises, so this plugin must initialise before
``io.containerd.service.v1.content-service``: nothing requires this plugin's
type, so ctrd orders it by URI among the plugins whose requirements are met,
and ``ctrd.example...`` sorts before every ``io.containerd...`` plugin that
needs the content service. The init checks it and fails with a clear error
otherwise. (A pre-commit hook in the metadata store would remove the ordering
constraint; see ctrd's docs/plugins.md.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ctrd.plugin import InitContext, Registration, types
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["QUOTA_TYPE", "Quota", "QuotaConfig", "QuotaContentStore", "quota"]

log = logging.getLogger("ctrd_plugin_example.quota")

QUOTA_TYPE = "ctrd.example.quota.v1"
CONTENT_SERVICE = "io.containerd.service.v1.content-service"


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
    """The plugin's instance: limits, usage, and the per-namespace commit lock."""

    def __init__(self, config: QuotaConfig, store: Any) -> None:
        self.config = config
        self._store = store  # the metadata store (unwrapped): usage is read from it
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


class QuotaContentStore:
    """The metadata content store with the quota checked on commit; everything else delegates.

    Attribute reads and writes it does not define go to the wrapped store, so
    plugins initialised later (the garbage collector reads ``backend`` and
    ``gate`` and sets ``on_delete``; the content gRPC plugin sets
    ``on_commit``) see the real store through it.
    """

    _own = frozenset({"_inner", "_quota"})

    def __init__(self, inner: Any, quota: Quota) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_quota", quota)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    async def info(self, dgst: str) -> Any:
        return await self._inner.info(dgst)

    async def update(self, info: Any, fieldpaths: Sequence[str] = ()) -> Any:
        return await self._inner.update(info, fieldpaths)

    async def walk(self, *filters: str) -> AsyncIterator[Any]:
        async for info in self._inner.walk(*filters):
            yield info

    async def delete(self, dgst: str) -> None:
        await self._inner.delete(dgst)

    async def reader_at(self, dgst: str) -> Any:
        return await self._inner.reader_at(dgst)

    async def status(self, ref: str) -> Any:
        return await self._inner.status(ref)

    async def list_statuses(self, *filters: str) -> list[Any]:
        return list(await self._inner.list_statuses(*filters))

    async def abort(self, ref: str) -> None:
        await self._inner.abort(ref)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Any:
        from ctrd import namespaces

        w = await self._inner.writer(ref, total, expected)
        return _QuotaWriter(self, w, namespaces.required())


class _QuotaWriter:
    def __init__(self, store: QuotaContentStore, inner: Any, namespace: str) -> None:
        self._store = store
        self._inner = inner
        self._ns = namespace

    def digest(self) -> str:
        return str(self._inner.digest())

    async def status(self) -> Any:
        return await self._inner.status()

    async def write(self, data: bytes | memoryview) -> int:
        return int(await self._inner.write(data))

    async def truncate(self, size: int) -> None:
        await self._inner.truncate(size)

    async def close(self) -> None:
        await self._inner.close()

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        from ctrd import errdefs

        quota = self._store._quota
        limit = quota.limit(self._ns)
        if not limit:
            await self._inner.commit(size, expected, labels)
            return
        async with quota.lock(self._ns):
            st = await self._inner.status()
            adding = size or st.offset
            dgst = expected or self._inner.digest()
            try:
                await self._store.info(dgst)
            except errdefs.NotFound:
                pass
            else:  # already held: the commit reports AlreadyExists and costs nothing
                await self._inner.commit(size, expected, labels)
                return
            used, _ = await quota.usage(self._ns)
            if used + adding > limit:
                raise errdefs.ResourceExhausted(
                    f'quota exceeded in namespace "{self._ns}": committing {dgst} ({adding} bytes) '
                    f"would use {used + adding} of {limit} bytes ({used} in use)"
                )
            await self._inner.commit(size, expected, labels)


async def _init(ic: InitContext) -> Quota:
    from ctrd import errdefs

    cfg = ic.config
    assert isinstance(cfg, QuotaConfig)
    if ic.plugins.get(CONTENT_SERVICE) is not None:
        raise errdefs.FailedPrecondition(
            f"{ic.registration.uri} must initialise before {CONTENT_SERVICE} (it wraps the store the "
            "content service takes); nothing may make the content service initialise earlier"
        )
    md: Any = ic.get_single(types.METADATA)
    inner = md.content
    q = Quota(cfg, inner)
    md.content = QuotaContentStore(inner, q)
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
