"""The SDK's side of calls: the default address, the client view's scope (namespace, lease blocks).

The connection, addresses and the generic call scope are :mod:`ctrd.remote`'s,
shared with the proxy plugins.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Mapping
from typing import Final

from grpclib.client import Channel

from ctrd import errdefs, namespaces
from ctrd.remote import Address, Connection, Scope

__all__ = [
    "ADDRESS_ENV",
    "ClientScope",
    "default_address",
    "lease_key",
    "pop_lease",
    "push_lease",
]

ADDRESS_ENV: Final = "CONTAINERD_ADDRESS"
"""The environment variable :class:`~ctrd.client.Client` reads when no address is given."""

#: "<address>\0<namespace>" -> lease id of the innermost ``client.lease()`` block
_ACTIVE_LEASES: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "ctrd_client_leases", default=None
)


def default_address() -> str:
    """``$CONTAINERD_ADDRESS``, else ctrd's default socket.

    ctrd serves on ``/run/ctrd/ctrd.sock`` as root and on
    ``$XDG_RUNTIME_DIR/ctrd/ctrd.sock`` otherwise (the daemon's own defaults).
    """
    env = os.environ.get(ADDRESS_ENV)
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/ctrd/ctrd.sock"
    run = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"ctrd-{os.geteuid()}"
    )
    return os.path.join(run, "ctrd", "ctrd.sock")


class ClientScope(Scope):
    """A :class:`~ctrd.client.Client` view: fixed namespace, optional fixed lease, and the
    lease of the innermost ``client.lease()`` block for this daemon and namespace (from
    any client of the same address)."""

    def __init__(self, conn: Connection, namespace: str, lease: str | None = None) -> None:
        self.conn = conn
        self.namespace = namespace
        self.lease = lease
        self.timeout = conn.timeout

    def channel(self) -> Channel:
        if self.conn.closed:
            raise errdefs.FailedPrecondition("client is closed")
        return self.conn.channel

    def current_lease(self) -> str | None:
        """The lease attached to calls made now."""
        return self.lease or (_ACTIVE_LEASES.get() or {}).get(lease_key(self.conn.address, self.namespace))

    def metadata(self) -> dict[str, str]:
        """``containerd-namespace`` and, when a lease is active, ``containerd-lease``."""
        md = {namespaces.GRPC_HEADER: self.namespace}
        lease = self.current_lease()
        if lease:
            md[namespaces.LEASE_HEADER] = lease
        return md

    def translate(self) -> contextlib.AbstractContextManager[None]:
        return self.conn.translate()


def lease_key(address: Address | str, namespace: str) -> str:
    """The key of a lease block: leases are per daemon and namespace."""
    return f"{address}\0{namespace}"


def push_lease(key: str, lease: str) -> contextvars.Token[Mapping[str, str] | None]:
    """Attach *lease* to calls to *key* (:func:`lease_key`) for the current context;
    see :func:`pop_lease`."""
    active = dict(_ACTIVE_LEASES.get() or {})
    active[key] = lease
    return _ACTIVE_LEASES.set(active)


def pop_lease(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    """Undo :func:`push_lease`."""
    _ACTIVE_LEASES.reset(token)
