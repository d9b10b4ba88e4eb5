"""Who is on the other end of a connection: unix peer credentials, or a TLS client certificate."""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from typing import Any, Final

from ctrd import authz
from ctrd.authz import Peer

__all__ = ["peer_of", "tls_names"]

_CREDS: Final = struct.Struct("3i")
_MAX_TLS_NAMES: Final = 32


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
