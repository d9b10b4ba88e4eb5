"""``grpc.health.v1.Health``: SERVING while the daemon runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpclib.const import Status as GStatus
from grpclib.exceptions import GRPCError

from ctrd.api.grpc.health import v1 as api

__all__ = ["HealthService"]

_SERVING = api.HealthCheckResponseServingStatus.SERVING


class HealthService(api.HealthBase):
    """Overall status (service ``""``) and each served gRPC service are SERVING."""

    def __init__(self, services: set[str] | None = None) -> None:
        self._services = services if services is not None else set()

    def _known(self, name: str) -> bool:
        return name == "" or not self._services or name in self._services

    async def check(self, message: api.HealthCheckRequest) -> api.HealthCheckResponse:
        if not self._known(message.service):
            raise GRPCError(GStatus.NOT_FOUND, f"unknown service {message.service}")
        return api.HealthCheckResponse(status=_SERVING)

    async def watch(self, message: api.HealthCheckRequest) -> AsyncIterator[api.HealthCheckResponse]:
        if not self._known(message.service):
            yield api.HealthCheckResponse(status=api.HealthCheckResponseServingStatus.SERVICE_UNKNOWN)
        else:
            yield api.HealthCheckResponse(status=_SERVING)
        await asyncio.Event().wait()
