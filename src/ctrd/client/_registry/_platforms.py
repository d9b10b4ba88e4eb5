"""Platforms as containerd matches them: parsing, normalisation, the host's platform, matchers.

A matcher says whether an index entry's platform is wanted (:meth:`Matcher.match`) and
which of two is preferred (:meth:`Matcher.less`). :func:`only` is containerd's
``platforms.Only``: the platform and what it can run (``linux/amd64`` also takes
``linux/386``; ``linux/arm64`` takes ``linux/arm/v8`` down to ``v5``; ``arm/v7``
takes ``v6`` and ``v5``), preferred in that order. :func:`exactly` takes any of
several as they are, :data:`ALL` everything.
"""

from __future__ import annotations

import functools
import platform as _platform
import sys
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from ctrd import errdefs
from ctrd.client._types import Platform
from ctrd.limits import echo

__all__ = [
    "ALL",
    "Matcher",
    "PlatformLike",
    "exactly",
    "format_platform",
    "host_platform",
    "normalize",
    "only",
    "parse_platform",
]

PlatformLike = str | Platform
"""A platform as the SDK's calls take it: ``"linux/arm64"``, ``"linux/arm/v7"``, ``"arm64"`` or a
:class:`~ctrd.client.Platform`."""

_KNOWN_OS: Final = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCH: Final = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "ppc64",
        "ppc64le",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """*p* in containerd's canonical form (``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``,
    ``arm`` alone is ``arm/v7``, ``arm64/v8`` is ``arm64``, ``macos`` is ``darwin``)."""
    os_name = p.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(os_name, arch, variant)


def format_platform(p: Platform) -> str:
    """``os/arch[/variant]``."""
    return str(p)


def _cpu_variant(arch: str) -> str:
    if arch not in ("arm", "arm64"):
        return ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == "cpu architecture":
                    v = value.strip()
                    return "v" + v if v.isdigit() else v
    except OSError:
        pass
    return "v8" if arch == "arm64" else ""


@functools.cache
def host_platform() -> Platform:
    """This machine's platform, normalised (``linux/amd64``; on ARM with its CPU's variant)."""
    os_name = "linux" if sys.platform.startswith("linux") else sys.platform
    arch, _ = _normalize_arch(_platform.machine() or "amd64", "")
    return normalize(Platform(os_name, arch, _cpu_variant(arch)))


def parse_platform(spec: PlatformLike) -> Platform:
    """*spec* as a normalised :class:`Platform`: ``os``, ``arch`` (the other part is the
    host's), ``os/arch`` or ``os/arch/variant``.

    :raises errdefs.InvalidArgument: an empty part, more than three parts, or a single word
        that is neither a known operating system nor a known architecture.
    """
    if isinstance(spec, Platform):
        return normalize(spec)
    parts = spec.split("/")
    if not spec or any(not part for part in parts) or len(parts) > 3:
        raise errdefs.InvalidArgument(f"invalid platform {echo(spec)!r}: expected os[/arch[/variant]]")
    if len(parts) == 1:
        word = parts[0].lower()
        host = host_platform()
        if word in _KNOWN_OS:
            return normalize(Platform(word, host.architecture, host.variant))
        arch, variant = _normalize_arch(word, "")
        if arch in _KNOWN_ARCH:
            return normalize(Platform(host.os, arch, variant))
        raise errdefs.InvalidArgument(
            f"invalid platform {echo(spec)!r}: unknown operating system or architecture"
        )
    return normalize(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else ""))


class Matcher(Protocol):
    """Which platforms are wanted, and which is preferred."""

    def match(self, p: Platform) -> bool:
        """Whether *p* is wanted."""
        ...

    def less(self, a: Platform, b: Platform) -> bool:
        """Whether *a* is preferred to *b*."""
        ...


class _Ordered:
    """Any of *platforms*, the earlier preferred."""

    def __init__(self, platforms: Sequence[Platform]) -> None:
        self.platforms = tuple(normalize(p) for p in platforms)

    def _rank(self, p: Platform) -> int:
        n = normalize(p)
        for i, want in enumerate(self.platforms):
            if n == want:
                return i
        return len(self.platforms)

    def match(self, p: Platform) -> bool:
        return self._rank(p) < len(self.platforms)

    def less(self, a: Platform, b: Platform) -> bool:
        return self._rank(a) < self._rank(b)

    def __repr__(self) -> str:
        return f"only({', '.join(map(str, self.platforms))})"


class _All:
    def match(self, p: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False

    def __repr__(self) -> str:
        return "ALL"


ALL: Final[Matcher] = _All()
"""Every platform."""


def _vector(p: Platform) -> list[Platform]:
    """*p* and the platforms it also runs, best first (containerd's ``platformVector``)."""
    out = [p]
    number = p.variant[1:] if p.variant.startswith("v") else p.variant
    if p.architecture == "amd64":
        if number.isdigit():
            out += [Platform(p.os, "amd64", f"v{v}" if v > 1 else "") for v in range(int(number) - 1, 0, -1)]
        out.append(Platform(p.os, "386", ""))
    elif p.architecture == "arm":
        if number.isdigit():
            out += [Platform(p.os, "arm", f"v{v}") for v in range(int(number) - 1, 4, -1)]
    elif p.architecture == "arm64":
        out += _vector(Platform(p.os, "arm", p.variant or "v8"))
    return out


def only(p: PlatformLike) -> Matcher:
    """*p* and the platforms it can run, best first (containerd's ``platforms.Only``)."""
    return _Ordered(_vector(parse_platform(p)))


def exactly(platforms: Iterable[PlatformLike]) -> Matcher:
    """Any of *platforms*, each exactly (after normalisation), the earlier preferred (containerd's
    ``platforms.Any``/``Ordered`` of plain matchers: ``linux/amd64`` does not take ``linux/386``).

    :raises errdefs.InvalidArgument: a malformed platform, or none at all.
    """
    wanted = [parse_platform(p) for p in platforms]
    if not wanted:
        raise errdefs.InvalidArgument("no platform given")
    return _Ordered(wanted)
