"""``containerd.services.version.v1.Version``."""

from __future__ import annotations

from ctrd import __version__
from ctrd.api.containerd.services.version import v1 as api
from ctrd.api.google import protobuf as pb

__all__ = ["REVISION", "VersionService"]

REVISION = "ctrd"


class VersionService(api.VersionBase):
    """Answers with ctrd's version (no namespace needed)."""

    async def version(self, message: pb.Empty) -> api.VersionResponse:
        return api.VersionResponse(version=__version__, revision=REVISION)
