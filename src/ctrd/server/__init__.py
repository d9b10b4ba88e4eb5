"""Daemon lifecycle, configuration and listeners. Knows plugins only by type."""

from __future__ import annotations

from ctrd.server.config import Config, ConfigError, load
from ctrd.server.daemon import Daemon, StartupError

__all__ = ["Config", "ConfigError", "Daemon", "StartupError", "load"]
