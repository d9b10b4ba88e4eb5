"""ctrd: containerd's content core as a Python asyncio daemon.

The daemon speaks containerd's gRPC API, so containerd's own tools (``ctr``) work
against it. See ``docs/architecture.md`` for the layers.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
