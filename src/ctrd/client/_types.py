"""The SDK's result types: frozen dataclasses, never generated protobuf classes.

Content results are :class:`ctrd.content.Info` and :class:`ctrd.content.Status`
(the same types every content store uses); the rest are defined here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Final, Literal, TypeAlias

from ctrd.images import Descriptor

__all__ = [
    "BLOB_STATUSES",
    "GC_EXPIRE_LABEL",
    "GC_ROOT_LABEL",
    "BlobProgress",
    "BlobStatus",
    "Lease",
    "Namespace",
    "Platform",
    "Plugin",
    "PluginError",
    "ProgressCallback",
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


BlobStatus: TypeAlias = Literal["waiting", "downloading", "uploading", "exists", "shared", "mounted", "done"]
"""Where a blob of a pull, fetch or push stands:

* ``waiting``: queued (at most ``max_concurrent_downloads`` blobs move at once);
* ``downloading`` / ``uploading``: bytes moving (``offset`` of ``descriptor.size``);
* ``exists``: nothing to move: the namespace (pull) or the repository (push) has it;
* ``shared``: admitted without a byte on the network: another namespace holds it under the
  daemon's ``shared`` policy (or an earlier download of it had finished);
* ``mounted``: a push mounted it from another repository of the registry;
* ``done``: moved and verified.
"""

BLOB_STATUSES: Final[tuple[BlobStatus, ...]] = (
    "waiting",
    "downloading",
    "uploading",
    "exists",
    "shared",
    "mounted",
    "done",
)


@dataclasses.dataclass(frozen=True, slots=True)
class BlobProgress:
    """One step of one blob of a pull, fetch or push (what ``progress`` callbacks get)."""

    ref: str
    """A name for the blob, as containerd names its ingest: ``layer-sha256:…``,
    ``config-…``, ``manifest-…``, ``index-…``."""
    descriptor: Descriptor
    status: BlobStatus
    offset: int = 0
    """Bytes done (``descriptor.size`` once ``exists``, ``shared``, ``mounted`` or ``done``)."""
    resumed_at: int = 0
    """Where the transfer resumed (an earlier, interrupted download's ingest); 0: from the start."""

    @property
    def final(self) -> bool:
        """Whether nothing more will happen to this blob."""
        return self.status in ("exists", "shared", "mounted", "done")


ProgressCallback: TypeAlias = Callable[[BlobProgress], object]
"""``progress(event)``, called in the event loop's thread for every step of every blob."""
