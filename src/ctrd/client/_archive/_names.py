"""Image names in archives: the annotations ``ctr images export`` writes, Docker's
``RepoTags``, and how ``ctr images import`` turns them back into image names."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Final

from ctrd.client._registry._reference import DEFAULT_DOMAIN, parse_reference

__all__ = [
    "IMAGE_NAME",
    "REF_NAME",
    "RefTranslator",
    "default_prefix",
    "familiar",
    "image_name",
    "name_annotations",
    "normalize_docker",
    "oci_ref_name",
    "translator",
]

IMAGE_NAME: Final = "io.containerd.image.name"
"""The annotation holding an image's full name in an archive's ``index.json``."""
REF_NAME: Final = "org.opencontainers.image.ref.name"
"""The OCI annotation: the tag (``ctr`` writes the reference's object; other tools a name)."""

RefTranslator = Callable[[str], str]


def oci_ref_name(name: str) -> str:
    """The ``org.opencontainers.image.ref.name`` ``ctr`` writes for *name*: the part after the
    repository (``1`` for ``example.com/app:1``, ``@sha256:…`` for a digest reference; empty
    for a name without one), or *name* itself when it does not read as ``host/path``."""
    if "://" in name:
        return name
    host, sep, path = name.partition("/")
    if not host:
        return name
    if ":" in host and not host.startswith("["):
        port = host.rsplit(":", 1)[1]
        if port and not port.isdigit():
            return name  # not a host[:port]: containerd's parser fails and keeps the name
    if not sep:
        return ""
    cut = min((i for i in (path.find(":"), path.find("@")) if i >= 0), default=-1)
    if cut < 0:
        return ""
    obj = path[cut:]
    return obj[1:] if obj.startswith(":") else obj


def name_annotations(name: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """*base* with the two name annotations of *name* (``ctr images export``'s)."""
    out = dict(base or {})
    out[IMAGE_NAME] = name
    out[REF_NAME] = oci_ref_name(name)
    return out


def normalize_docker(ref: str) -> str:
    """A Docker ``RepoTags`` entry as a full name: ``busybox:1`` is
    ``docker.io/library/busybox:1``; no tag means ``latest``; a digest drops the tag.

    :raises errdefs.InvalidArgument: not a reference.
    """
    parsed = parse_reference(ref)
    if parsed.digest:
        parsed = dataclasses.replace(parsed, tag="")
    return str(parsed)


def familiar(name: str) -> str:
    """*name* as Docker writes it in ``RepoTags``: ``docker.io/library/`` dropped, ``latest``
    added when there is neither tag nor digest.

    :raises errdefs.InvalidArgument: *name* is not a reference.
    """
    parsed = parse_reference(name)
    text = str(parsed)
    if parsed.domain == DEFAULT_DOMAIN:
        text = text[len(DEFAULT_DOMAIN) + 1 :]
        rest = text.removeprefix("library/")
        if rest != text and "/" not in parsed.path.removeprefix("library/"):
            text = rest
    return text


def default_prefix(today: _dt.date | None = None) -> str:
    """``import-YYYY-MM-DD`` (local date): ``ctr images import``'s name for tag-only refs."""
    return f"import-{(today or _dt.date.today()).isoformat()}"


def _is_prefixed(ref: str, prefix: str) -> bool:
    if not ref.startswith(prefix):
        return False
    return len(ref) == len(prefix) or ref[len(prefix)] in "/:@"


def translator(base_name: str | None) -> RefTranslator:
    """How ``org.opencontainers.image.ref.name`` values become image names (``ctr``'s rules).

    Without *base_name*: a full reference (with ``/``, ``:`` or ``@``) is kept, a bare tag
    becomes ``import-<date>:<tag>``. With it: a bare tag becomes ``<base_name>:<tag>`` and a
    full reference is kept only when it starts with *base_name* (others give ``""``: skipped).
    """
    prefix = base_name or default_prefix()

    def translate(ref: str) -> str:
        if any(c in ref for c in "/:@"):
            if base_name and not _is_prefixed(ref, base_name):
                return ""
            return ref
        return f"{prefix}:{ref}"

    return translate


def image_name(annotations: Mapping[str, str], translate: RefTranslator) -> str:
    """The image name an ``index.json`` entry gives (``""``: none): its
    ``io.containerd.image.name``, else its translated ``org.opencontainers.image.ref.name``."""
    name = annotations.get(IMAGE_NAME, "")
    if name:
        return name
    ref = annotations.get(REF_NAME, "")
    return translate(ref) if ref else ""
