"""Registrations of the service and gRPC plugins (containerd's ids)."""

from __future__ import annotations

from typing import Any

from ctrd.plugin import InitContext, Registration, types

__all__ = [
    "content_grpc",
    "content_service",
    "health_grpc",
    "introspection_grpc",
    "namespaces_grpc",
    "namespaces_service",
    "version_grpc",
]


def _publisher(ic: InitContext) -> Any:
    ex = ic.get_by_type(types.EVENT)
    return next(iter(ex.values()), None)


async def _content_service(ic: InitContext) -> Any:
    md: Any = ic.get_single(types.METADATA)
    return md.content


async def _namespaces_service(ic: InitContext) -> Any:
    md: Any = ic.get_single(types.METADATA)
    return md.namespaces


async def _content_grpc(ic: InitContext) -> Any:
    from ctrd.services.content import ContentService

    return ContentService(ic.get_by_id(types.SERVICE, "content-service"), _publisher(ic))


async def _namespaces_grpc(ic: InitContext) -> Any:
    from ctrd.services.namespaces import NamespacesService

    return NamespacesService(ic.get_by_id(types.SERVICE, "namespaces-service"), _publisher(ic))


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
content_grpc = Registration(
    type=types.GRPC, id="content", requires=(types.SERVICE, types.EVENT), init=_content_grpc
)
namespaces_grpc = Registration(
    type=types.GRPC, id="namespaces", requires=(types.SERVICE, types.EVENT), init=_namespaces_grpc
)
introspection_grpc = Registration(
    type=types.GRPC, id="introspection", requires=(types.ALL,), init=_introspection
)
version_grpc = Registration(type=types.GRPC, id="version", init=_version)
health_grpc = Registration(type=types.GRPC, id="healthcheck", init=_health)
