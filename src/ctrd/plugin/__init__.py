"""The generic plugin mechanism: registrations, ordering, init context.

Knows nothing about content or gRPC. Plugins are discovered from the
``ctrd.plugins`` entry-point group (see :mod:`ctrd.plugin._discovery`).
"""

from __future__ import annotations

from ctrd.plugin import types
from ctrd.plugin._context import GrpcSettings, InitContext, InitFn, Plugin, PluginSet
from ctrd.plugin._discovery import GROUP, Discovered, discover
from ctrd.plugin._graph import DependencyCycle, order
from ctrd.plugin._registration import (
    ConfigT,
    InvalidRegistration,
    Registration,
    SkipPlugin,
    split_uri,
)

__all__ = [
    "GROUP",
    "ConfigT",
    "DependencyCycle",
    "Discovered",
    "GrpcSettings",
    "InitContext",
    "InitFn",
    "InvalidRegistration",
    "Plugin",
    "PluginSet",
    "Registration",
    "SkipPlugin",
    "discover",
    "order",
    "split_uri",
    "types",
]
