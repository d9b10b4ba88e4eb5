"""Daemon addresses: a unix socket path, or a TCP host and port."""

from __future__ import annotations

import dataclasses
import os

from ctrd import errdefs

__all__ = ["Address", "parse_address"]


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed daemon address: a unix socket *path*, or *host* and *port*."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def display(self) -> str:
        """The address as messages show it (``unix://`` for sockets, as grpc-go does)."""
        return f"unix://{self.path}" if self.path is not None else str(self)


def parse_address(address: str, *, strict: bool = False) -> Address:
    """Parse ``/path/to.sock``, ``unix:///path/to.sock``, ``host:port``, ``tcp://host:port``
    or ``[::1]:port``.

    By default (the SDK, ``ctrdctl``) a relative path or a word without a port is a
    socket path, and an empty host is 127.0.0.1; *strict* (a daemon's
    configuration: proxy plugins) wants an absolute socket path or a host.

    :raises errdefs.InvalidArgument: the address does not parse (the message quotes it).
    """
    addr = address.strip()
    if not addr:
        raise errdefs.InvalidArgument("empty address")
    if addr.startswith("unix://"):
        path = addr[len("unix://") :]
        if not path or (strict and not os.path.isabs(path)):
            raise errdefs.InvalidArgument(f"address {address!r}: a unix:// address needs an absolute path")
        return Address(path=path)
    scheme = ""
    if "://" in addr:
        scheme, _, addr = addr.partition("://")
        if scheme not in ("tcp", "http", "grpc"):
            raise errdefs.InvalidArgument(f"address {address!r}: unsupported scheme {scheme!r}")
    if not scheme and (
        os.path.isabs(addr) or (not strict and (addr.startswith((".", "~")) or ":" not in addr))
    ):
        return Address(path=os.path.expanduser(addr))
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise errdefs.InvalidArgument(f"address {address!r}: expected [host]:port")
        port_s = rest[1:]
    else:
        host, sep, port_s = addr.rpartition(":")
        if not sep:
            raise errdefs.InvalidArgument(
                f"address {address!r} is neither an absolute unix socket path nor a TCP host:port"
            )
    try:
        port = int(port_s)
    except ValueError:
        raise errdefs.InvalidArgument(f"address {address!r}: bad port {port_s!r}") from None
    if not 0 < port < 65536:
        raise errdefs.InvalidArgument(f"address {address!r}: port out of range")
    if not host:
        if strict:
            raise errdefs.InvalidArgument(f"address {address!r}: a TCP address needs a host")
        host = "127.0.0.1"
    return Address(host=host, port=port)
