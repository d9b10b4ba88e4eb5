"""Namespace authorization: which client may act in which namespaces (docs/authorization.md).

Off by default, as containerd has no such gate (the socket's permissions are the only
one). When ``[authorization] enabled = true``:

* the gRPC edge identifies each connection's client as a :class:`Peer` (the unix
  socket's peer credentials, or the names of a verified TLS client certificate) and
  asks the :class:`Policy` for its :class:`Access`; a client matching no principal
  is denied every call but the always-allowed ones;
* a uid of :attr:`Policy.superusers` (root; the daemon's own uid) on the unix socket
  may do everything, unless some principal lists that uid in ``uids``: it then gets
  what the principals it matches grant, like anyone else;
* a client matching several principals gets the union: it may act in a namespace any
  of them names, and manage a namespace any principal with ``manage_namespaces``
  names;
* namespace patterns are shell globs (``team-a-*``), matched case-sensitively over
  the whole name (:func:`fnmatch.fnmatchcase`).

Services read the request's access with :func:`current` (``None``: unrestricted, as
for in-process callers) and refuse with :class:`Denied` through :func:`require` and
:func:`require_manage`. This module knows nothing of gRPC or sockets.
"""

from __future__ import annotations

import contextvars
import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from ctrd import errdefs, golang

__all__ = [
    "MAX_IDS",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "MAX_PRINCIPALS",
    "MAX_SUBJECT_LENGTH",
    "MAX_UID",
    "Access",
    "Denied",
    "Peer",
    "Policy",
    "Principal",
    "current",
    "require",
    "require_manage",
    "set_for_request",
    "validate_pattern",
    "visibility",
]

MAX_PRINCIPALS: Final = 1024
"""Principals a policy may hold."""

MAX_PATTERNS: Final = 256
"""Namespace patterns one principal may list."""

MAX_PATTERN_LENGTH: Final = 128
"""Characters of one namespace pattern."""

MAX_IDS: Final = 1024
"""uids, gids or TLS subjects one principal may list (each)."""

MAX_SUBJECT_LENGTH: Final = 255
"""Characters of one TLS subject (a DNS name is at most 253)."""

MAX_UID: Final = (1 << 32) - 2
"""The largest uid/gid (``(uid_t) -1`` means "no id" and is not one)."""

_PATTERN_CHARS: Final = re.compile(r"[A-Za-z0-9._\-*?\[\]!]+")

_DESCRIBE_MAX: Final = 200
_COMPILED_MAX: Final = 256


class Denied(errdefs.PermissionDenied):
    """A call refused by the authorization policy (PERMISSION_DENIED on the wire)."""


def validate_pattern(pattern: str) -> None:
    """Check a namespace pattern: 1..:data:`MAX_PATTERN_LENGTH` characters of a
    namespace name (letters, digits, ``.``, ``_``, ``-``) and glob characters
    (``*``, ``?``, ``[...]``, ``[!...]``).

    :raises ValueError: what is wrong with it.
    """
    if not pattern:
        raise ValueError("a namespace pattern must not be empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"namespace pattern {pattern[:32]!r}... longer than {MAX_PATTERN_LENGTH} characters")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise ValueError(
            f"namespace pattern {pattern!r} may only hold letters, digits, '.', '_', '-' "
            "and the glob characters '*', '?', '[', ']', '!'"
        )


def _compile(patterns: Iterable[str]) -> Callable[[str], bool]:
    """One matcher for all *patterns* (what :func:`fnmatch.fnmatchcase` does for each)."""
    parts = [fnmatch.translate(p) for p in patterns]
    if not parts:
        return lambda name: False
    rx = re.compile("|".join(parts))
    return lambda name: rx.match(name) is not None


def _matchers(principals: Iterable[Principal]) -> tuple[Callable[[str], bool], Callable[[str], bool]]:
    """(may act in, may manage) predicates of the union of *principals*."""
    principals = tuple(principals)
    sees = _compile(p for pr in principals for p in pr.namespaces)
    manages = _compile(p for pr in principals if pr.manage_namespaces for p in pr.namespaces)
    return sees, manages


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection, as far as the transport can tell.

    ``transport`` is ``"unix"`` (``uid``/``gid``/``pid`` from the socket's peer
    credentials), ``"tls"`` (``tls_names``: the subject CN and DNS SANs of a
    verified client certificate; empty when the client sent none) or ``"tcp"``
    (nothing known). ``address`` is for logs only.
    """

    transport: str
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    tls_names: tuple[str, ...] = ()
    address: str = ""

    def describe(self) -> str:
        """A short, bounded description for logs."""
        parts = [self.transport]
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        if self.gid is not None:
            parts.append(f"gid={self.gid}")
        if self.pid is not None:
            parts.append(f"pid={self.pid}")
        if self.address:
            parts.append(f"address={self.address}")
        if self.tls_names:
            parts.append("tls=" + ",".join(self.tls_names))
        text = " ".join(parts)
        return text if len(text) <= _DESCRIBE_MAX else text[: _DESCRIBE_MAX - 3] + "..."


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """One ``[[authorization.principals]]`` entry: who it is, and what it grants.

    A peer matches when its uid is in ``uids``, its gid in ``gids`` (the primary gid
    the socket reports; supplementary groups are not seen) or one of its TLS names
    in ``tls_subjects`` (exact, case-sensitive). Limits are checked by
    :class:`Policy`.
    """

    name: str
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    tls_subjects: frozenset[str] = frozenset()
    namespaces: tuple[str, ...] = ()
    manage_namespaces: bool = False

    def matches(self, peer: Peer) -> bool:
        """Whether *peer* is this principal."""
        if peer.uid is not None and peer.uid in self.uids:
            return True
        if peer.gid is not None and peer.gid in self.gids:
            return True
        return any(n in self.tls_subjects for n in peer.tls_names)


class Access:
    """What one peer may do: the union of the principals it matched, or everything.

    :param peer: the client.
    :param principals: the principals it matched (none for an unrestricted access).
    :param unrestricted: a superuser: every namespace, managing included.
    :param matchers: the compiled (sees, manages) predicates of *principals*, when
        known already (:class:`Policy` shares them between connections).
    """

    __slots__ = ("_manages", "_sees", "peer", "principals", "unrestricted")

    def __init__(
        self,
        peer: Peer,
        principals: Sequence[Principal] = (),
        *,
        unrestricted: bool = False,
        matchers: tuple[Callable[[str], bool], Callable[[str], bool]] | None = None,
    ) -> None:
        self.peer = peer
        self.principals = tuple(principals)
        self.unrestricted = unrestricted
        self._sees, self._manages = matchers if matchers is not None else _matchers(self.principals)

    @property
    def matched(self) -> bool:
        """Whether the peer is anyone: a superuser, or at least one principal."""
        return self.unrestricted or bool(self.principals)

    def describe(self) -> str:
        """The peer, and which principal(s) it is, for logs."""
        if self.unrestricted:
            who = "superuser"
        else:
            who = (
                "principal " + ",".join(p.name for p in self.principals)
                if self.principals
                else "no principal"
            )
        text = f"{self.peer.describe()} ({who})"
        return text if len(text) <= 2 * _DESCRIBE_MAX else text[: 2 * _DESCRIBE_MAX - 3] + "..."

    def sees(self, namespace: str) -> bool:
        """Whether the peer may act in (and see) *namespace*."""
        return self.unrestricted or self._sees(namespace)

    def manages(self, namespace: str) -> bool:
        """Whether the peer may create, update (labels) or delete *namespace*."""
        return self.unrestricted or self._manages(namespace)


class Policy:
    """The principals of ``[authorization]``, and who is unrestricted.

    :param principals: in configuration order.
    :param superusers: uids unrestricted on the unix socket unless a principal lists
        them in ``uids``.
    :raises ValueError: more principals than :data:`MAX_PRINCIPALS`, or a principal
        over a limit or with a bad pattern.
    """

    def __init__(self, principals: Sequence[Principal], *, superusers: Iterable[int] = (0,)) -> None:
        if len(principals) > MAX_PRINCIPALS:
            raise ValueError(f"at most {MAX_PRINCIPALS} principals, got {len(principals)}")
        for pr in principals:
            for what, items in (("uids", pr.uids), ("gids", pr.gids), ("tls_subjects", pr.tls_subjects)):
                if len(items) > MAX_IDS:
                    raise ValueError(f"principal {pr.name}: at most {MAX_IDS} {what}")
            if len(pr.namespaces) > MAX_PATTERNS:
                raise ValueError(f"principal {pr.name}: at most {MAX_PATTERNS} namespace patterns")
            for pattern in pr.namespaces:
                validate_pattern(pattern)
        self.principals = tuple(principals)
        listed = {uid for pr in principals for uid in pr.uids}
        #: uids unrestricted on the unix socket
        self.superusers = frozenset(superusers) - listed
        # compiled predicates by set of matched principals: connections of the same
        # client(s) share them (bounded: cleared when full)
        self._compiled: dict[tuple[int, ...], tuple[Callable[[str], bool], Callable[[str], bool]]] = {}

    def access(self, peer: Peer) -> Access:
        """What *peer* may do (:attr:`Access.matched` is false when no principal matches)."""
        if peer.transport == "unix" and peer.uid is not None and peer.uid in self.superusers:
            return Access(peer, unrestricted=True)
        key = tuple(i for i, pr in enumerate(self.principals) if pr.matches(peer))
        matched = [self.principals[i] for i in key]
        matchers = self._compiled.get(key)
        if matchers is None:
            if len(self._compiled) >= _COMPILED_MAX:
                self._compiled.clear()
            matchers = self._compiled[key] = _matchers(matched)
        return Access(peer, matched, matchers=matchers)


_ACCESS: contextvars.ContextVar[Access | None] = contextvars.ContextVar("ctrd_access", default=None)


def current() -> Access | None:
    """The access of the current request; ``None`` when unrestricted (authorization
    off, or an in-process caller)."""
    return _ACCESS.get()


def set_for_request(access: Access | None) -> None:
    """Set the access for the rest of the current task (gRPC edge only)."""
    _ACCESS.set(access)


def visibility() -> Callable[[str], bool] | None:
    """The current request's namespace predicate; ``None`` when it sees everything."""
    access = _ACCESS.get()
    if access is None or access.unrestricted:
        return None
    return access.sees


def require(namespace: str) -> None:
    """Refuse unless the current request may act in *namespace*.

    :raises Denied: ``namespace "<n>" is not permitted``.
    """
    access = _ACCESS.get()
    if access is not None and not access.sees(namespace):
        raise Denied(f"namespace {golang.quote(namespace[:128])} is not permitted")


def require_manage(namespace: str) -> None:
    """Refuse unless the current request may create/update/delete *namespace*.

    :raises Denied: ``managing namespace "<n>" is not permitted``.
    """
    access = _ACCESS.get()
    if access is not None and not access.manages(namespace):
        raise Denied(f"managing namespace {golang.quote(namespace[:128])} is not permitted")
