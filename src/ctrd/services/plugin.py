"""Registrations of the service and gRPC plugins (containerd's ids)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ctrd.plugin import InitContext, Registration, types

if TYPE_CHECKING:  # imported when a plugin initialises, not when the registrations are discovered
    from ctrd.content import Store
    from ctrd.events import Publisher
    from ctrd.images import ImageStore
    from ctrd.metadata import LeaseManager, MetadataStores, NamespaceStore

__all__ = [
    "ContentGrpcConfig",
    "content_grpc",
    "content_service",
    "events_grpc",
    "health_grpc",
    "images_grpc",
    "images_service",
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


def _publisher(ic: InitContext[Any]) -> Publisher | None:
    """The event exchange, if one works (the gRPC plugins publish through it)."""
    from ctrd.events import Publisher

    return next(iter(ic.get_by_type(types.EVENT, Publisher).values()), None)


def _stores(ic: InitContext[Any]) -> MetadataStores:
    from ctrd.metadata import MetadataStores

    return ic.get_single(types.METADATA, MetadataStores)


async def _content_service(ic: InitContext[None]) -> Store:
    return _stores(ic).content


async def _namespaces_service(ic: InitContext[None]) -> NamespaceStore:
    return _stores(ic).namespaces


async def _leases_service(ic: InitContext[None]) -> LeaseManager:
    """The metadata plugin's lease store; with a GC scheduler, ``delete(sync=True)`` waits for it."""
    from ctrd.gc import Scheduler
    from ctrd.metadata import CollectingLeaseManager

    leases = _stores(ic).leases
    scheduler = next(iter(ic.get_by_type(types.GC, Scheduler).values()), None)
    if scheduler is None:
        return leases
    return CollectingLeaseManager(leases, scheduler.schedule_and_wait)


async def _images_service(ic: InitContext[None]) -> ImageStore:
    """The metadata plugin's image store; with a GC scheduler, ``delete(sync=True)`` waits for it."""
    from ctrd.gc import Scheduler
    from ctrd.metadata import CollectingImageStore

    images = _stores(ic).images
    scheduler = next(iter(ic.get_by_type(types.GC, Scheduler).values()), None)
    if scheduler is None:
        return images
    return CollectingImageStore(images, scheduler.schedule_and_wait)


async def _content_grpc(ic: InitContext[ContentGrpcConfig]) -> Any:
    from ctrd.content import Store
    from ctrd.metadata import ContentHooks
    from ctrd.services.content import ContentService

    cfg = ic.config
    store = ic.get_by_id(types.SERVICE, "content-service", Store)
    publisher = _publisher(ic)
    if publisher is not None and isinstance(store, ContentHooks):
        from ctrd.api.containerd.events import ContentCreate
        from ctrd.services.content import TOPIC_CREATE

        async def content_created(namespace: str, digest: str, size: int) -> None:
            await publisher.publish(namespace, TOPIC_CREATE, ContentCreate(digest=digest, size=size))

        store.observe_commits(content_created)
    if not cfg.proxy_backend_address:
        return ContentService(store, publisher, early_write_ack=cfg.early_write_ack)
    from ctrd.services.content_backend import ContentServiceWithBackend

    if cfg.proxy_backend_address == ic.grpc.address:
        from ctrd import errdefs

        raise errdefs.InvalidArgument("proxy_backend_address must differ from the [grpc] address")
    svc = await ContentServiceWithBackend.start(
        store,
        publisher,
        address=cfg.proxy_backend_address,
        namespace=cfg.proxy_backend_namespace,
        max_recv=ic.grpc.max_recv_message_size,
        max_send=ic.grpc.max_send_message_size,
        early_write_ack=cfg.early_write_ack,
    )
    ic.exports["proxy_backend_address"] = cfg.proxy_backend_address
    ic.exports["proxy_backend_namespace"] = cfg.proxy_backend_namespace
    return svc


async def _namespaces_grpc(ic: InitContext[None]) -> Any:
    from ctrd.metadata import NamespaceStore
    from ctrd.services.namespaces import NamespacesService

    return NamespacesService(
        ic.get_by_id(types.SERVICE, "namespaces-service", NamespaceStore), _publisher(ic)
    )


async def _leases_grpc(ic: InitContext[None]) -> Any:
    from ctrd.metadata import LeaseManager
    from ctrd.services.leases import LeasesService

    return LeasesService(ic.get_by_id(types.SERVICE, "leases-service", LeaseManager))


async def _images_grpc(ic: InitContext[None]) -> Any:
    from ctrd.images import ImageStore
    from ctrd.services.images import ImagesService

    return ImagesService(ic.get_by_id(types.SERVICE, "images-service", ImageStore), _publisher(ic))


async def _events_grpc(ic: InitContext[None]) -> Any:
    from ctrd.events.exchange import Exchange
    from ctrd.services.events import EventsService

    return EventsService(ic.get_single(types.EVENT, Exchange))


async def _introspection(ic: InitContext[None]) -> Any:
    from ctrd.services.introspection import IntrospectionService, load_uuid

    return IntrospectionService(ic.plugins, load_uuid(ic.root))


async def _version(ic: InitContext[None]) -> Any:
    from ctrd.services.version import VersionService

    return VersionService()


async def _health(ic: InitContext[None]) -> Any:
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
#: as containerd's: the images service needs the GC type for a synchronous Delete (ignored
#: when no GC plugin is registered).
images_service = Registration(
    type=types.SERVICE, id="images-service", requires=(types.METADATA, types.GC), init=_images_service
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
images_grpc = Registration(
    type=types.GRPC, id="images", requires=(types.SERVICE, types.EVENT), init=_images_grpc
)
events_grpc = Registration(type=types.GRPC, id="events", requires=(types.EVENT,), init=_events_grpc)
introspection_grpc = Registration(
    type=types.GRPC, id="introspection", requires=(types.ALL,), init=_introspection
)
version_grpc = Registration(type=types.GRPC, id="version", init=_version)
health_grpc = Registration(type=types.GRPC, id="healthcheck", init=_health)
