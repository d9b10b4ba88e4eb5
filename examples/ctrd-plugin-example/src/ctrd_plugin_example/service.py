"""``io.containerd.grpc.v1.example``: a gRPC service plugin with its own proto and config.

Config::

    [plugins."io.containerd.grpc.v1.example"]
      greeting = "Hello"        # 1..64 characters, no line breaks
      max_name_length = 64      # Hello rejects longer names with INVALID_ARGUMENT

The instance is a :class:`ExampleService` (a subclass of the generated
``ExampleBase``): any working ``io.containerd.grpc.v1`` plugin whose instance
has grpclib's ``__mapping__`` is served on ctrd's socket. Errors raised as
:mod:`ctrd.errdefs` classes reach the client as the matching gRPC status;
the namespace of the call is :func:`ctrd.namespaces.required`.

``Quota`` reports the caller's usage through the quota plugin when that plugin
is loaded (looked up per call, so this plugin does not require it and works
without it: FAILED_PRECONDITION then).
"""

from __future__ import annotations

from typing import Any

from ctrd.plugin import InitContext, PluginSet, Registration, types
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd_plugin_example.api.ctrd_example import v1 as api

__all__ = ["SERVICE", "ExampleConfig", "ExampleService", "example"]

SERVICE = "ctrd_example.v1.Example"
QUOTA_URI = "ctrd.example.quota.v1.content"


class ExampleConfig(BaseModel):
    """``[plugins."io.containerd.grpc.v1.example"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    greeting: str = Field(default="Hello", min_length=1, max_length=64, description="first word of Hello")
    max_name_length: int = Field(default=64, ge=1, le=4096, description="longest name Hello accepts")

    @field_validator("greeting")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if "\n" in v or "\r" in v:
            raise ValueError("must be a single line")
        return v


class ExampleService(api.ExampleBase):
    """``ctrd_example.v1.Example``."""

    def __init__(self, config: ExampleConfig, plugins: PluginSet) -> None:
        self._config = config
        self._plugins = plugins

    async def hello(self, message: api.HelloRequest) -> api.HelloResponse:
        from ctrd import errdefs

        name = message.name or "world"
        if len(name) > self._config.max_name_length:
            raise errdefs.InvalidArgument(
                f"name is {len(name)} characters, longer than max_name_length {self._config.max_name_length}"
            )
        return api.HelloResponse(message=f"{self._config.greeting}, {name}!")

    async def quota(self, message: api.QuotaRequest) -> api.QuotaResponse:
        from ctrd import errdefs, namespaces

        ns = namespaces.required()
        p = self._plugins.get(QUOTA_URI)
        if p is None or not p.ok:
            why = "not installed" if p is None else f"failed: {p.error}"
            raise errdefs.FailedPrecondition(f"quota plugin {QUOTA_URI} {why}")
        q: Any = p.instance
        used, blobs = await q.usage(ns)
        return api.QuotaResponse(namespace=ns, used_bytes=used, limit_bytes=q.limit(ns), blobs=blobs)


async def _init(ic: InitContext[ExampleConfig]) -> ExampleService:
    cfg = ic.config  # typed: the registration's config model
    ic.exports["service"] = SERVICE
    ic.exports["greeting"] = cfg.greeting
    return ExampleService(cfg, ic.plugins)


example = Registration(type=types.GRPC, id="example", config=ExampleConfig, init=_init)
