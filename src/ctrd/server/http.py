"""Serve an aiohttp application on a TCP ``host:port`` or a unix socket (metrics, debug).

The listener is started before the gRPC socket and cleaned up at shutdown by
:class:`ctrd.server.daemon.Daemon`. A TCP address whose host is not a loopback
address is served, with a warning: these endpoints have no authentication.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from typing import Final

from aiohttp import web

from ctrd.server.config import split_host_port

__all__ = ["SHUTDOWN_TIMEOUT", "HttpListener", "is_loopback"]

SHUTDOWN_TIMEOUT: Final = 1.0
"""Seconds requests in progress get to finish when the daemon stops."""


def is_loopback(host: str) -> bool:
    """Whether *host* only reaches this machine (``""`` means every interface: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpListener:
    """One aiohttp application on one address.

    :param name: what it serves, for messages (``metrics``, ``debug``).
    :param address: ``host:port``, or an absolute path (a unix socket, mode 0660)
        when *unix* is allowed.
    """

    def __init__(self, name: str, app: web.Application, address: str, *, unix: bool = False) -> None:
        self.name = name
        self._log = logging.getLogger(f"ctrd.{name}")
        self.address = address
        self._unix = unix and os.path.isabs(address)
        # a long request (a 30 s profile) must not hold up the daemon's shutdown
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        #: the address actually listened on (the bound port when the configured one is 0)
        self.bound = address

    async def start(self) -> None:
        """Listen. :raises OSError: the address cannot be bound."""
        from ctrd.wire.server import prepare_unix_socket

        await self._runner.setup()
        try:
            site: web.BaseSite
            if self._unix:
                site = web.SockSite(self._runner, prepare_unix_socket(self.address))
            else:
                host, port = split_host_port(self.address)
                if not is_loopback(host):
                    self._log.warning(
                        "%s endpoint address=%s is not a loopback address: anyone who can reach it "
                        "can use it (it has no authentication)",
                        self.name,
                        self.address,
                    )
                site = web.TCPSite(self._runner, host or None, port, reuse_address=True)
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        if not self._unix:
            self.bound = self._bound_tcp()
        self._log.info("serving... address=%s", self.bound)

    def _bound_tcp(self) -> str:
        host, port = split_host_port(self.address)
        for addr in self._runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                port = int(addr[1])
                break
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port}"

    async def cleanup(self) -> None:
        """Stop listening and close open connections; remove the unix socket file."""
        await self._runner.cleanup()
        if self._unix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
