"""The SDK's result types: frozen dataclasses, never generated protobuf classes.

Content results are :class:`ctrd.content.Info` and :class:`ctrd.content.Status`
(the same types every content store uses); the rest are defined here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from typing import Final

__all__ = [
    "GC_EXPIRE_LABEL",
    "GC_ROOT_LABEL",
    "Lease",
    "Namespace",
    "Platform",
    "Plugin",
    "PluginError",
    "Resource",
    "ServerInfo",
    "Version",
]

GC_EXPIRE_LABEL: Final = "containerd.io/gc.expire"
"""Lease label: RFC 3339 time after which the garbage collector removes the lease."""

GC_ROOT_LABEL: Final = "containerd.io/gc.root"
"""Content label: the garbage collector never removes a blob that has it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    """The daemon's ``Version`` reply."""

    version: str
    revision: str


@dataclasses.dataclass(frozen=True, slots=True)
class ServerInfo:
    """The daemon's ``Introspection.Server`` reply (``pid``/``pidns``: 0 when not reported)."""

    uuid: str
    pid: int = 0
    pidns: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Platform:
    """A plugin platform, ``os/architecture[/variant]``."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class PluginError:
    """Why a plugin did not load: a gRPC status code and message."""

    code: int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Plugin:
    """One plugin as ``Introspection.Plugins`` reports it."""

    type: str
    id: str
    requires: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    exports: Mapping[str, str] = dataclasses.field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    error: PluginError | None = None

    @property
    def uri(self) -> str:
        """``<type>.<id>``, the key of the plugin's config table."""
        return f"{self.type}.{self.id}"

    @property
    def status(self) -> str:
        """``ok``, ``skip`` (the plugin opted out) or ``error``, as ``ctr plugins ls`` shows it."""
        if self.error is None:
            return "ok"
        if "skip plugin" in self.error.message:
            return "skip"
        return "error"


@dataclasses.dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace and its labels."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A resource a lease holds: ``type`` is ``content`` (id: a digest), ``ingests``
    (id: a ref) or ``snapshots/<snapshotter>`` (id: a key)."""

    id: str
    type: str = "content"


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A lease: while it exists, what it references is not garbage collected."""

    id: str
    created_at: _dt.datetime
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def expires_at(self) -> _dt.datetime | None:
        """The ``containerd.io/gc.expire`` time, if the lease has a valid one."""
        raw = self.labels.get(GC_EXPIRE_LABEL)
        if not raw:
            return None
        try:
            return _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
