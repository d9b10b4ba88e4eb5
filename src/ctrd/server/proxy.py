"""Proxy plugins from ``[proxy_plugins.<name>]`` (registrations only for now)."""

from __future__ import annotations

from ctrd.plugin import Registration
from ctrd.server.config import Config

__all__ = ["proxy_registrations"]


def proxy_registrations(config: Config) -> list[Registration]:
    """Registrations for the configured proxy plugins."""
    del config
    return []
