"""The gRPC edge of namespace authorization (:mod:`ctrd.authz`, docs/authorization.md).

:func:`peer_of` identifies the client of a connection from its transport (unix
socket peer credentials, or the verified TLS client certificate); an
:class:`Authorizer` caches the client's :class:`~ctrd.authz.Access` on the connection
(once per connection) and checks each call before its handler runs:

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
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from ctrd import authz
from ctrd.authz import Access, Denied, Peer, Policy

__all__ = ["ALWAYS_ALLOWED", "HEADER_EXEMPT", "Authorizer", "peer_of", "tls_names"]

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

_CREDS: Final = struct.Struct("3i")
_MAX_TLS_NAMES: Final = 32
_ATTR: Final = "ctrd_access"
_LOG_MAX: Final = 300

_ALWAYS, _EXEMPT, _NAMESPACED = 0, 1, 2


def tls_names(cert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The subject common names and DNS subject-alternative names of a decoded
    certificate (:meth:`ssl.SSLSocket.getpeercert`), in order, without duplicates;
    names longer than :data:`~ctrd.authz.MAX_SUBJECT_LENGTH` are left out."""
    if not cert:
        return ()
    found: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                found.append(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            found.append(value)
    out: list[str] = []
    for name in found:
        if isinstance(name, str) and 0 < len(name) <= authz.MAX_SUBJECT_LENGTH and name not in out:
            out.append(name)
    return tuple(out[:_MAX_TLS_NAMES])


def _address(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = str(peername[0])
        return f"[{host}]:{peername[1]}" if ":" in host else f"{host}:{peername[1]}"
    return ""


def peer_of(transport: Any) -> Peer:
    """Who is on the other end of an asyncio *transport*.

    :raises OSError: the peer credentials of a unix socket cannot be read.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        pid, uid, gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
        return Peer("unix", uid=uid, gid=gid, pid=pid)
    address = _address(transport.get_extra_info("peername"))
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return Peer("tcp", address=address)
    # a dict only when the certificate was verified (verify_mode CERT_REQUIRED)
    return Peer("tls", tls_names=tls_names(ssl_object.getpeercert()), address=address)


class Authorizer:
    """Checks each call against a :class:`~ctrd.authz.Policy`.

    :param policy: the principals.
    :param identify: the peer of a transport (:func:`peer_of`; tests give their own).
    """

    def __init__(self, policy: Policy, *, identify: Callable[[Any], Peer] = peer_of) -> None:
        self.policy = policy
        self._identify = identify
        self._kinds: dict[str, int] = {}

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

    def access_of(self, connection: Any) -> Access:
        """The access of a grpclib connection's client, worked out once and kept on it."""
        access: Access | None = getattr(connection, _ATTR, None)
        if access is None:
            transport = getattr(connection, "_transport", None)
            try:
                peer = self._identify(transport)
            except Exception as exc:  # never a reason to fail open
                log.warning("authorization: cannot identify a client (%s); it matches no principal", exc)
                peer = Peer("unknown")
            access = self.policy.access(peer)
            setattr(connection, _ATTR, access)
        return access

    def authorize(self, method: str, connection: Any, namespace: str | None) -> None:
        """Check a call of *method* with the namespace header *namespace*, and set its
        access for the services (:func:`ctrd.authz.current`).

        :raises Denied: the client matches no principal, or may not act in *namespace*.
        """
        kind = self._kind(method)
        if kind == _ALWAYS:
            authz.set_for_request(None)
            return
        access = self.access_of(connection)
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
