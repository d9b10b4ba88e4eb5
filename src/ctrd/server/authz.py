"""The gRPC edge of namespace authorization (:mod:`ctrd.authz`, docs/authorization.md).

The gRPC server identifies the client of each connection once
(:func:`ctrd.wire.peer.peer_of`: unix socket peer credentials, or the verified
TLS client certificate); an :class:`Authorizer` works out that client's
:class:`~ctrd.authz.Access` (cached per client) and checks each call before its
handler runs:

* Introspection, Version and Health: always allowed, whoever calls;
* every other call needs a client that matches a principal (or a superuser);
* the ``containerd-namespace`` header, when present, must be a namespace the client
  may act in, except for the methods of :data:`HEADER_EXEMPT`, whose services check
  the namespaces their messages name (Namespaces Get/Delete, Events Forward) or
  filter what they return (Namespaces List, Events Subscribe). A call without the
  header goes on to fail as it does without authorization.

Denials are :class:`~ctrd.authz.Denied` errors (PERMISSION_DENIED); :meth:`Authorizer.denied`
logs one line for each.
"""

from __future__ import annotations

import logging
from typing import Final

from ctrd import authz
from ctrd.authz import Access, Denied, Peer, Policy

__all__ = ["ALWAYS_ALLOWED", "HEADER_EXEMPT", "Authorizer"]

log = logging.getLogger("ctrd.authz")

ALWAYS_ALLOWED: Final = frozenset(
    {
        "containerd.services.introspection.v1.Introspection",
        "containerd.services.version.v1.Version",
        "grpc.health.v1.Health",
    }
)
"""Services every client may call (they hold no namespaced data)."""

HEADER_EXEMPT: Final = frozenset(
    {
        "/containerd.services.namespaces.v1.Namespaces/List",
        "/containerd.services.namespaces.v1.Namespaces/Get",
        "/containerd.services.namespaces.v1.Namespaces/Delete",
        "/containerd.services.events.v1.Events/Subscribe",
        "/containerd.services.events.v1.Events/Forward",
    }
)
"""Methods that do not act in the namespace of their header (their services check)."""

_LOG_MAX: Final = 300
_CACHED: Final = 1024  # clients whose access is kept

_ALWAYS, _EXEMPT, _NAMESPACED = 0, 1, 2


class Authorizer:
    """Checks each call against a :class:`~ctrd.authz.Policy`.

    :param policy: the principals.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._kinds: dict[str, int] = {}
        self._access: dict[Peer, Access] = {}

    def _kind(self, method: str) -> int:
        kind = self._kinds.get(method)
        if kind is None:
            service = method.lstrip("/").partition("/")[0]
            if service in ALWAYS_ALLOWED:
                kind = _ALWAYS
            elif method in HEADER_EXEMPT:
                kind = _EXEMPT
            else:
                kind = _NAMESPACED
            if len(self._kinds) < 4096:  # only served methods reach here; bounded anyway
                self._kinds[method] = kind
        return kind

    def access_of(self, peer: Peer) -> Access:
        """The access of the client *peer* (worked out once per client, the last 1024 kept)."""
        access = self._access.get(peer)
        if access is None:
            access = self.policy.access(peer)
            if len(self._access) >= _CACHED:
                self._access.clear()
            self._access[peer] = access
        return access

    def authorize(self, method: str, peer: Peer, namespace: str | None) -> None:
        """Check a call of *method* by *peer* with the namespace header *namespace*, and set
        its access for the services (:func:`ctrd.authz.current`).

        :raises Denied: the client matches no principal, or may not act in *namespace*.
        """
        kind = self._kind(method)
        if kind == _ALWAYS:
            authz.set_for_request(None)
            return
        access = self.access_of(peer)
        authz.set_for_request(access)
        if access.unrestricted:
            return
        if not access.principals:
            raise Denied("no authorization principal matches this client")
        if kind == _NAMESPACED and namespace:
            authz.require(namespace)

    def denied(self, method: str, exc: Denied) -> None:
        """Log one line for a denied call (who, which method, why)."""
        access = authz.current()
        who = access.describe() if access is not None else "unknown client"
        reason = exc.context if len(exc.context) <= _LOG_MAX else exc.context[:_LOG_MAX] + "..."
        log.warning("authorization: denied %s to %s: %s", method[:_LOG_MAX], who, reason)
