"""``containerd.services.introspection.v1.Introspection``."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from grpclib.const import Status as GStatus

from ctrd import errdefs, filters
from ctrd.api.containerd.services.introspection import v1 as api
from ctrd.api.containerd.types import Platform
from ctrd.api.google import protobuf as pb
from ctrd.api.google.rpc import Status
from ctrd.plugin import Plugin, PluginSet
from ctrd.wire.status import status_for

__all__ = ["IntrospectionService", "init_err", "load_uuid"]

log = logging.getLogger("ctrd.introspection")


def init_err(p: Plugin) -> Status | None:
    """``init_err`` for a plugin: None when ok; skip/unknown errors are code 2."""
    if p.error is None:
        return None
    if isinstance(p.error, errdefs.Error):
        g = status_for(p.error)
        return Status(code=int(g.status.value), message=g.message or "")
    return Status(code=int(GStatus.UNKNOWN.value), message=str(p.error))


def _platform(s: str) -> Platform:
    parts = s.split("/")
    return Platform(
        os=parts[0],
        architecture=parts[1] if len(parts) > 1 else "",
        variant=parts[2] if len(parts) > 2 else "",
    )


def load_uuid(root: Path) -> str:
    """The daemon's persistent UUID, created on first use under *root*."""
    path = root / "uuid"
    try:
        value = path.read_text().strip()
        uuid.UUID(value)
        return value
    except (OSError, ValueError):
        value = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n")
        os.replace(tmp, path)
        return value


class IntrospectionService(api.IntrospectionBase):
    """Reports every plugin (failed and skipped ones included) and the server identity."""

    def __init__(self, plugins: PluginSet, server_uuid: str) -> None:
        self._plugins = plugins
        self._uuid = server_uuid

    async def plugins(self, message: api.PluginsRequest) -> api.PluginsResponse:
        flt = filters.parse_all(*message.filters)
        out = []
        for p in self._plugins:
            fields = {"type": p.registration.type, "id": p.registration.id}
            if not flt.match(filters.adaptor_from_mapping(fields, {})):
                continue
            out.append(
                api.Plugin(
                    type=p.registration.type,
                    id=p.registration.id,
                    requires=list(p.registration.requires),
                    platforms=[_platform(x) for x in p.platforms],
                    exports=dict(p.exports),
                    capabilities=list(p.capabilities),
                    init_err=init_err(p),
                )
            )
        return api.PluginsResponse(plugins=out)

    async def server(self, message: pb.Empty) -> api.ServerResponse:
        return api.ServerResponse(uuid=self._uuid, pid=os.getpid())
