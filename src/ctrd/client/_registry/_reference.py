"""Image references: ``[domain/]path[:tag][@digest]``, normalised as Docker and containerd do.

``alpine`` is ``docker.io/library/alpine:latest``, ``user/app`` is
``docker.io/user/app:latest``, ``index.docker.io`` is ``docker.io``; a first
component with a ``.`` or a ``:`` (or ``localhost``) is a registry host. A
reference without tag or digest gets the tag ``latest``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from ctrd import errdefs
from ctrd.limits import echo

__all__ = ["DEFAULT_DOMAIN", "MAX_NAME_LENGTH", "Reference", "parse_reference"]

DEFAULT_DOMAIN: Final = "docker.io"
"""The registry of references that name none."""

MAX_NAME_LENGTH: Final = 255
"""The longest ``domain/path`` accepted (the distribution spec's bound)."""

_LEGACY_DOMAINS: Final = ("index.docker.io",)
_OFFICIAL_PREFIX: Final = "library/"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE: Final = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG_RE: Final = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_HEX64_RE: Final = re.compile(r"[a-f0-9]{64}")


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised image reference.

    ``str(ref)`` is the full form (``docker.io/library/alpine:latest``), the name an
    image record gets; :attr:`name` is the repository without tag or digest.
    """

    domain: str
    """The registry host as named (``docker.io``, ``localhost:5000``); see :attr:`hostname`."""
    path: str
    """The repository in the registry (``library/alpine``)."""
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path``."""
        return f"{self.domain}/{self.path}"

    @property
    def hostname(self) -> str:
        """The domain without its port (what containerd's ``distribution.source`` label is keyed by)."""
        host = self.domain
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def object(self) -> str:
        """What the registry's manifest endpoint is asked for: the digest when there is one,
        else the tag."""
        return self.digest or self.tag

    def with_tag(self, tag: str) -> Reference:
        """The same repository with *tag* (and no digest)."""
        return dataclasses.replace(self, tag=tag, digest="")

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain in _LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_reference(ref: str, *, default_tag: str = "latest") -> Reference:
    """Parse and normalise *ref* (``alpine``, ``ghcr.io/o/app:1.2``, ``host:5000/x@sha256:…``).

    A reference with neither tag nor digest gets *default_tag* (``""``: none).

    :raises errdefs.InvalidArgument: a malformed reference, an upper-case repository, a
        bare 64-hex id, a malformed digest or tag, a name over 255 characters.
    """
    if not ref or ref != ref.strip():
        raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: empty or surrounded by spaces")
    if _HEX64_RE.fullmatch(ref):
        raise errdefs.InvalidArgument(
            f"invalid reference {ref}: cannot specify a 64-byte hexadecimal string as a repository"
        )
    rest, at, digest = ref.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: malformed digest {echo(digest)!r}")
    tag = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: malformed tag {echo(tag)!r}")
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.fullmatch(domain):
        raise errdefs.InvalidArgument(
            f"invalid reference {echo(ref)!r}: malformed registry host {echo(domain)!r}"
        )
    if path.lower() != path:
        raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: malformed repository name")
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise errdefs.InvalidArgument(
            f"invalid reference {echo(ref)!r}: repository name longer than {MAX_NAME_LENGTH} characters"
        )
    if not tag and not digest:
        tag = default_tag
    if digest:
        algorithm, _, encoded = digest.partition(":")
        digest = f"{algorithm.lower()}:{encoded}"
        if algorithm.lower() == "sha256" and not _HEX64_RE.fullmatch(encoded):
            raise errdefs.InvalidArgument(f"invalid reference {echo(ref)!r}: malformed sha256 digest")
    return Reference(domain=domain, path=path, tag=tag, digest=digest)
