"""Registrations of the service and gRPC plugins (containerd's ids)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd.plugin import InitContext, Registration, types

__all__ = [
    "ContentGrpcConfig",
    "content_grpc",
    "content_service",
    "events_grpc",
    "health_grpc",
    "introspection_grpc",
    "leases_grpc",
    "leases_service",
    "namespaces_grpc",
    "namespaces_service",
    "version_grpc",
]


class ContentGrpcConfig(BaseModel):
    """``[plugins."io.containerd.grpc.v1.content"]``: the content proxy backend socket (docs/plugins.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proxy_backend_address: str = Field(
        default="",
        description="unix socket where another daemon's content proxy reaches ctrd's store; empty = none",
    )
    proxy_backend_namespace: str = Field(
        default="proxy-backend",
        description="the one namespace every call on proxy_backend_address acts in, whatever its header",
    )
    early_write_ack: bool = Field(
        default=False,
        description=(
            "answer each WRITE as soon as its chunk is queued (no digest in WRITE replies; a failed write "
            "fails the next reply or the commit); false = replies identical to containerd's"
        ),
    )

    @field_validator("proxy_backend_address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v and not os.path.isabs(v):
            raise ValueError(f"must be an absolute unix socket path, got {v!r}")
        return v

    @field_validator("proxy_backend_namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        from ctrd import errdefs, identifiers

        try:
            identifiers.validate(v)
        except errdefs.InvalidArgument as exc:
            raise ValueError(f"not a valid namespace: {exc.context}") from None
        return v


def _publisher(ic: InitContext) -> Any:
    ex = ic.get_by_type(types.EVENT)
    return next(iter(ex.values()), None)


async def _content_service(ic: InitContext) -> Any:
    md: Any = ic.get_single(types.METADATA)
    return md.content


async def _namespaces_service(ic: InitContext) -> Any:
    md: Any = ic.get_single(types.METADATA)
    return md.namespaces


async def _leases_service(ic: InitContext) -> Any:
    md: Any = ic.get_single(types.METADATA)
    leases = getattr(md, "leases", None)
    if leases is None:
        from ctrd import errdefs

        raise errdefs.FailedPrecondition("the metadata plugin provides no lease store")
    return leases


async def _content_grpc(ic: InitContext) -> Any:
    from ctrd.services.content import ContentService

    store: Any = ic.get_by_id(types.SERVICE, "content-service")
    publisher = _publisher(ic)
    if publisher is not None and hasattr(store, "on_commit"):
        from ctrd.api.containerd.events import ContentCreate
        from ctrd.services.content import TOPIC_CREATE

        async def content_created(namespace: str, digest: str, size: int) -> None:
            await publisher.publish(namespace, TOPIC_CREATE, ContentCreate(digest=digest, size=size))

        store.on_commit = content_created
    cfg = ic.config
    if isinstance(cfg, ContentGrpcConfig) and cfg.proxy_backend_address:
        from ctrd.proxy.backend import ContentServiceWithBackend

        grpc_cfg: Any = getattr(ic.properties.get("config"), "grpc", None)
        if cfg.proxy_backend_address == ic.properties.get("grpc.address"):
            from ctrd import errdefs

            raise errdefs.InvalidArgument("proxy_backend_address must differ from the [grpc] address")
        svc = await ContentServiceWithBackend.start(
            store,
            publisher,
            address=cfg.proxy_backend_address,
            namespace=cfg.proxy_backend_namespace,
            max_recv=getattr(grpc_cfg, "max_recv_message_size", 16 << 20),
            max_send=getattr(grpc_cfg, "max_send_message_size", 16 << 20),
        )
        ic.exports["proxy_backend_address"] = cfg.proxy_backend_address
        ic.exports["proxy_backend_namespace"] = cfg.proxy_backend_namespace
        svc.early_write_ack = cfg.early_write_ack
        return svc
    return ContentService(
        store, publisher, early_write_ack=isinstance(cfg, ContentGrpcConfig) and cfg.early_write_ack
    )


async def _namespaces_grpc(ic: InitContext) -> Any:
    from ctrd.services.namespaces import NamespacesService

    return NamespacesService(ic.get_by_id(types.SERVICE, "namespaces-service"), _publisher(ic))


async def _leases_grpc(ic: InitContext) -> Any:
    from ctrd.services.leases import LeasesService

    return LeasesService(ic.get_by_id(types.SERVICE, "leases-service"))


async def _events_grpc(ic: InitContext) -> Any:
    from ctrd.events.exchange import Exchange
    from ctrd.services.events import EventsService

    return EventsService(ic.get_single(types.EVENT, Exchange))


async def _introspection(ic: InitContext) -> Any:
    from ctrd.services.introspection import IntrospectionService, load_uuid

    return IntrospectionService(ic.plugins, load_uuid(ic.root))


async def _version(ic: InitContext) -> Any:
    from ctrd.services.version import VersionService

    return VersionService()


async def _health(ic: InitContext) -> Any:
    from ctrd.services.health import HealthService

    return HealthService()


content_service = Registration(
    type=types.SERVICE, id="content-service", requires=(types.METADATA,), init=_content_service
)
namespaces_service = Registration(
    type=types.SERVICE, id="namespaces-service", requires=(types.METADATA,), init=_namespaces_service
)
#: containerd's leases-service requires the GC type too (sync Delete waits for a collection);
#: with no GC plugin registered the requirement is ignored.
leases_service = Registration(
    type=types.SERVICE, id="leases-service", requires=(types.METADATA, types.GC), init=_leases_service
)
content_grpc = Registration(
    type=types.GRPC,
    id="content",
    requires=(types.SERVICE, types.EVENT),
    config=ContentGrpcConfig,
    init=_content_grpc,
)
namespaces_grpc = Registration(
    type=types.GRPC, id="namespaces", requires=(types.SERVICE, types.EVENT), init=_namespaces_grpc
)
leases_grpc = Registration(type=types.GRPC, id="leases", requires=(types.SERVICE,), init=_leases_grpc)
events_grpc = Registration(type=types.GRPC, id="events", requires=(types.EVENT,), init=_events_grpc)
introspection_grpc = Registration(
    type=types.GRPC, id="introspection", requires=(types.ALL,), init=_introspection
)
version_grpc = Registration(type=types.GRPC, id="version", init=_version)
health_grpc = Registration(type=types.GRPC, id="healthcheck", init=_health)
