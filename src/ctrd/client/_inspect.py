"""What an image's content amounts to, read from the content store as containerd's
``images`` package reads it: its size for a platform (``ctr images ls``' SIZE), the
platforms it has (PLATFORMS), and whether the content of a platform's manifest is all
present (``ctr images check``)."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import TYPE_CHECKING, Any

from ctrd import errdefs
from ctrd.client._registry._manifests import (
    CONFIG_TYPES,
    MAX_MANIFEST_SIZE,
    MAX_NESTING,
    Child,
    children,
    is_index,
    is_manifest,
)
from ctrd.client._registry._platforms import Matcher, normalize
from ctrd.client._types import Platform
from ctrd.images import Descriptor

if TYPE_CHECKING:
    from ctrd.client._content_client import ContentClient

__all__ = ["ImageCheck", "check_image", "image_platforms", "image_size"]


@dataclasses.dataclass(frozen=True, slots=True)
class ImageCheck:
    """Whether an image's content is present for a platform (containerd's ``images.Check``)."""

    available: bool
    """The platform's manifest was found: :attr:`required` is then the whole set."""
    required: tuple[Descriptor, ...]
    """The manifest's config and layers (the target itself when not :attr:`available`)."""
    present: tuple[Descriptor, ...]
    missing: tuple[Descriptor, ...]

    @property
    def complete(self) -> bool:
        """Everything required is present."""
        return self.available and not self.missing

    @property
    def status(self) -> str:
        """``ctr images check``'s STATUS: ``complete (N/N)``, ``incomplete (M/N)``,
        ``unavailable (M/?)``."""
        if not self.available:
            return f"unavailable ({len(self.present)}/?)"
        word = "incomplete" if self.missing else "complete"
        return f"{word} ({len(self.present)}/{len(self.required)})"

    @property
    def present_size(self) -> int:
        return sum(d.size for d in self.present)

    @property
    def required_size(self) -> int:
        return sum(d.size for d in self.required)


async def _document(content: ContentClient, desc: Descriptor) -> bytes:
    if desc.size > MAX_MANIFEST_SIZE:
        raise errdefs.ResourceExhausted(f"{desc.media_type} {desc.digest}: over {MAX_MANIFEST_SIZE} bytes")
    try:
        return await content.read_all(desc.digest)
    except errdefs.NotFound:
        raise errdefs.NotFound(f"content digest {desc.digest}: not found") from None


def _sorted(kids: list[Child], matcher: Matcher) -> list[Child]:
    def cmp(a: Child, b: Child) -> int:
        if a.platform is None:
            return 0 if b.platform is None else 1
        if b.platform is None:
            return -1
        if matcher.less(a.platform, b.platform):
            return -1
        return 1 if matcher.less(b.platform, a.platform) else 0

    return sorted(kids, key=functools.cmp_to_key(cmp))


def _matching(kids: list[Child], matcher: Matcher) -> list[Child]:
    return [k for k in kids if k.platform is None or matcher.match(k.platform)]


async def image_size(
    content: ContentClient, target: Descriptor, matcher: Matcher
) -> tuple[int, errdefs.Error | None]:
    """The bytes of *target* and what it references for the best platform of *matcher*
    (from each index, the one best matching manifest), and the error that stopped the walk
    (the size is then what was counted so far, as ``ctr images ls`` prints it)."""
    total = 0

    async def walk(desc: Descriptor, depth: int) -> None:
        nonlocal total
        total += desc.size
        if depth > MAX_NESTING or not (is_index(desc.media_type) or is_manifest(desc.media_type)):
            return
        kids = children(desc, await _document(content, desc))
        if is_index(desc.media_type):
            kids = _sorted(_matching(kids, matcher), matcher)
            if not kids:
                raise errdefs.NotFound(f"no match for platform in manifest {desc.digest}")
            kids = kids[:1]
        for kid in kids:
            await walk(kid.descriptor, depth + 1)

    try:
        await walk(target, 0)
    except errdefs.Error as exc:
        return total, exc
    return total, None


def _config_platform(data: bytes) -> Platform:
    try:
        doc: Any = json.loads(data)
    except ValueError:
        raise errdefs.InvalidArgument("image config is not valid JSON") from None
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument("image config is not a JSON object")
    os_name, arch = doc.get("os", ""), doc.get("architecture", "")
    return normalize(
        Platform(os_name if isinstance(os_name, str) else "", arch if isinstance(arch, str) else "")
    )


async def image_platforms(content: ContentClient, target: Descriptor) -> list[Platform]:
    """The platforms *target* has: those an index gives its manifests, or an image config's
    (``os``/``architecture``, normalised), in walk order (containerd's ``images.Platforms``)."""
    out: list[Platform] = []

    async def walk(desc: Descriptor, platform: Platform | None, depth: int) -> None:
        if platform is not None:
            out.append(platform)
            return
        if depth > MAX_NESTING:
            return
        if desc.media_type in CONFIG_TYPES:
            out.append(_config_platform(await _document(content, desc)))
        elif is_index(desc.media_type) or is_manifest(desc.media_type):
            for kid in children(desc, await _document(content, desc)):
                await walk(kid.descriptor, kid.platform, depth + 1)

    await walk(target, None, 0)
    return out


async def _manifest(content: ContentClient, target: Descriptor, matcher: Matcher) -> dict[str, Any]:
    """The platform's manifest of *target* (containerd's ``images.Manifest``)."""
    found: list[tuple[Descriptor, bytes]] = []
    was_index = False

    async def walk(desc: Descriptor, platform: Platform | None, depth: int) -> None:
        nonlocal was_index
        if depth > MAX_NESTING:
            raise errdefs.InvalidArgument(f"manifests nested deeper than {MAX_NESTING} levels")
        data = await _document(content, desc)
        if is_manifest(desc.media_type):
            if depth > 0:
                if platform is not None and not matcher.match(platform):
                    return
                if platform is None:
                    config = next(c for c in children(desc, data) if c.role == "config")
                    if not matcher.match(_config_platform(await _document(content, config.descriptor))):
                        return
            found.append((desc, data))
            return
        if is_index(desc.media_type):
            was_index = True
            for kid in _sorted(_matching(children(desc, data), matcher), matcher)[:1]:
                await walk(kid.descriptor, kid.platform, depth + 1)
            return
        raise errdefs.NotFound(f"unexpected media type {desc.media_type} for {desc.digest}")

    await walk(target, None, 0)
    if not found:
        if was_index:
            raise errdefs.NotFound(f"no match for platform in manifest {target.digest}")
        raise errdefs.NotFound(f"manifest {target.digest}")
    desc, data = found[0]
    kids = children(desc, data)
    return {"config": kids[0].descriptor, "layers": [k.descriptor for k in kids[1:]]}


async def check_image(content: ContentClient, target: Descriptor, matcher: Matcher) -> ImageCheck:
    """Which of the config and layers of *target*'s manifest for *matcher* are present."""
    try:
        manifest = await _manifest(content, target, matcher)
    except errdefs.NotFound:
        return ImageCheck(False, (target,), (), (target,))
    required = (manifest["config"], *manifest["layers"])
    present, missing = [], []
    for desc in required:
        try:
            await content.info(desc.digest)
        except errdefs.NotFound:
            missing.append(desc)
            continue
        present.append(desc)
    return ImageCheck(True, required, tuple(present), tuple(missing))
