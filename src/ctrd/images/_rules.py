"""What makes an image record valid, how an update applies, and what a filter sees of it.

The rules of containerd 1.6's image store (``metadata/images.go``), shared by every
:class:`~ctrd.images.ImageStore`: :func:`validate`, :func:`without_empty`,
:func:`apply_update` and :func:`adaptor`. ctrd adds bounds containerd does not have
(docs/limits.md): the name and the target's media type are at most
:data:`ctrd.limits.MAX_IMAGE_NAME_BYTES` and :data:`ctrd.limits.MAX_MEDIA_TYPE_BYTES`,
and an annotation, like a label, holds at most 4096 bytes of key and value; neither may
have an empty key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from ctrd import errdefs, filters, golang, labels, limits
from ctrd.content import digest as _digest

if TYPE_CHECKING:
    from ctrd.images import Descriptor, Image

__all__ = ["UPDATE_PATHS", "adaptor", "apply_update", "validate", "without_empty"]

UPDATE_PATHS: Final = ("labels", "labels.<key>", "annotations", "annotations.<key>", "target")
"""The field paths an update may name (as documentation; :func:`apply_update` decides)."""

_LABELS: Final = "labels."
_ANNOTATIONS: Final = "annotations."


def _checked_map(what: str, kind: str, values: Mapping[str, str]) -> None:
    if "" in values:  # containerd's bolt refuses it (UNKNOWN "key required")
        raise errdefs.InvalidArgument(f"{what}: {kind} key must not be empty")
    try:
        labels.validate_all(values)
    except errdefs.InvalidArgument as exc:
        context = exc.context if kind == "label" else exc.context.replace("label key", f"{kind} key", 1)
        raise errdefs.InvalidArgument(f"{what}: {context}") from exc


def validate(image: Image) -> None:
    """Refuse a record containerd would refuse, or one over ctrd's bounds.

    In containerd's order: the name (non-empty; ctrd: bounded), the labels, then
    the target's digest, size (> 0) and media type (non-empty; ctrd: bounded).
    Annotations are bounded as labels are (containerd does not check them); an empty
    label or annotation key is refused (containerd fails to store it: UNKNOWN).

    :raises errdefs.InvalidArgument: containerd's messages (``image name must not be
        empty``, ``image.Labels: ...``, ``Target.Digest "<d>" invalid: ...``,
        ``Target.Size must be greater than zero``, ``Target.MediaType must be set``).
    """
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    limits.check_length("image name", image.name, limits.MAX_IMAGE_NAME_BYTES)
    _checked_map("image.Labels", "label", image.labels)
    target = image.target
    _checked_map("image.Target.Annotations", "annotation", target.annotations)
    try:
        _digest.validate(target.digest)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(
            f"Target.Digest {golang.quote(target.digest)} invalid: {exc.context}"
        ) from exc
    if target.size <= 0:
        raise errdefs.InvalidArgument("Target.Size must be greater than zero")
    if not target.media_type:
        raise errdefs.InvalidArgument("Target.MediaType must be set")
    limits.check_length("Target.MediaType", target.media_type, limits.MAX_MEDIA_TYPE_BYTES)


def without_empty(image: Image) -> Image:
    """*image* without the labels and annotations whose value is empty (never stored, as in
    containerd: setting one to ``""`` removes it)."""
    target = image.target
    if all(image.labels.values()) and all(target.annotations.values()):
        return image
    return dataclasses.replace(
        image,
        labels={k: v for k, v in image.labels.items() if v},
        target=dataclasses.replace(target, annotations={k: v for k, v in target.annotations.items() if v}),
    )


def _set(values: Mapping[str, str], key: str, value: str) -> dict[str, str]:
    out = dict(values)
    out[key] = value
    return out


def apply_update(current: Image, change: Image, fieldpaths: Sequence[str]) -> Image:
    """The record *current* becomes when updated with *change* (containerd's ``Update``).

    With *fieldpaths*, each path in turn: ``labels`` and ``annotations`` replace the
    whole map, ``labels.<key>`` and ``annotations.<key>`` set one entry (to ``""``,
    which removes it, when *change* lacks the key), ``target`` replaces the target
    (its annotations included). Without, *change* replaces everything. Either way the
    result keeps *current*'s name and creation time; its update time is the store's to set.

    :raises errdefs.InvalidArgument: ``cannot update "<path>" field on image "<name>"``
        for any other path (``labels.`` and ``annotations.`` with no key included).
    """
    if not fieldpaths:
        return dataclasses.replace(change, name=current.name, created_at=current.created_at)
    new_labels: Mapping[str, str] = current.labels
    target: Descriptor = current.target
    for path in fieldpaths:
        if path.startswith(_LABELS) and len(path) > len(_LABELS):
            key = path[len(_LABELS) :]
            new_labels = _set(new_labels, key, change.labels.get(key, ""))
        elif path.startswith(_ANNOTATIONS) and len(path) > len(_ANNOTATIONS):
            key = path[len(_ANNOTATIONS) :]
            value = change.target.annotations.get(key, "")
            target = dataclasses.replace(target, annotations=_set(target.annotations, key, value))
        elif path == "labels":
            new_labels = change.labels
        elif path == "target":
            target = change.target
        elif path == "annotations":
            target = dataclasses.replace(target, annotations=change.target.annotations)
        else:
            raise errdefs.InvalidArgument(
                f"cannot update {golang.quote(path)} field on image {golang.quote(current.name)}"
            )
    return dataclasses.replace(current, labels=new_labels, target=target)


def _in_map(path: Sequence[str], values: Mapping[str, str]) -> tuple[str, bool]:
    key = ".".join(path)
    if key in values:
        return values[key], True
    return "", False


def adaptor(image: Image) -> filters.Adaptor:
    """What a filter sees of *image* (containerd's ``adaptImage``): ``name``,
    ``target.digest``, ``target.mediatype``, ``labels.<key>``, ``annotations.<key>``
    (the target's); an empty field is absent."""

    def adapt(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        head = fieldpath[0]
        if head == "name":
            return image.name, bool(image.name)
        if head == "target" and len(fieldpath) >= 2:
            if fieldpath[1] == "digest":
                return image.target.digest, bool(image.target.digest)
            if fieldpath[1] == "mediatype":
                return image.target.media_type, bool(image.target.media_type)
            return "", False
        if head == "labels":
            return _in_map(fieldpath[1:], image.labels)
        if head == "annotations":
            return _in_map(fieldpath[1:], image.target.annotations)
        return "", False

    return adapt
