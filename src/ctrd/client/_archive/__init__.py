"""Image archives: OCI image layout tars (``ctr images export``'s) and ``docker save`` tars.

:func:`export_images` writes, :func:`import_images` reads (:mod:`._export`,
:mod:`._import`); :mod:`._tar` streams tar archives without touching the filesystem.
"""

from __future__ import annotations

from ctrd.client._archive._export import ExportTarget, export_images
from ctrd.client._archive._import import MAX_ARCHIVE_ENTRIES, import_images
from ctrd.client._archive._names import IMAGE_NAME, REF_NAME
from ctrd.client._archive._tar import MAX_EXTENDED_HEADER, ArchiveSource

__all__ = [
    "IMAGE_NAME",
    "MAX_ARCHIVE_ENTRIES",
    "MAX_EXTENDED_HEADER",
    "REF_NAME",
    "ArchiveSource",
    "ExportTarget",
    "export_images",
    "import_images",
]
