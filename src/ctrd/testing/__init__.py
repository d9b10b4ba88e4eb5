"""The test kit: throw-away daemons, an in-memory content store, the content conformance suite.

- Daemons (no pytest needed): :class:`Ctrd` (``python -m ctrd``) and :class:`Containerd`
  (a private real containerd) in their own directories, started and stopped by their
  own process id; :func:`start_ctrd`, :func:`running_ctrd`, :func:`start_containerd`,
  :func:`running_containerd` are the short forms::

      with ctrd.testing.running_ctrd() as daemon:
          async with Client(daemon.address) as client: ...

- pytest fixtures on them (``ctrd_daemon``, ``ctrd_daemon_factory``, ``ctrd_client``,
  ``containerd_daemon``) live in :mod:`ctrd.testing.plugin`, which pytest loads
  automatically once ctrd is installed (entry point ``pytest11``)::

      async def test_roundtrip(ctrd_client):
          info = await ctrd_client.content.ingest("ref", b"hello")
          assert await ctrd_client.content.read_all(info.digest) == b"hello"

- :class:`MemoryStore` (:mod:`ctrd.testing.memory`): a complete content store in memory,
  to test code that uses a :class:`ctrd.content.Store`.
- :mod:`ctrd.testing.content_suite`: containerd's content store conformance suite, for
  any store (it needs pytest and pytest-asyncio; import it from your tests).
"""

from __future__ import annotations

from ctrd.testing._daemons import (
    CONTAINERD,
    GC_DEFAULTS,
    Containerd,
    Ctrd,
    containerd_available,
    containerd_config,
    ctrd_config,
    running_containerd,
    running_ctrd,
    start_containerd,
    start_ctrd,
)
from ctrd.testing._process import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    DaemonError,
    DaemonProcess,
    short_tmpdir,
    toml_str,
)
from ctrd.testing.memory import MemoryStore

__all__ = [
    "CONTAINERD",
    "GC_DEFAULTS",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Containerd",
    "Ctrd",
    "DaemonError",
    "DaemonProcess",
    "MemoryStore",
    "containerd_available",
    "containerd_config",
    "ctrd_config",
    "running_containerd",
    "running_ctrd",
    "short_tmpdir",
    "start_containerd",
    "start_ctrd",
    "toml_str",
]
