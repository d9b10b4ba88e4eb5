"""A deliberately broken third-party plugin package (test data; never installed).

``tests/examples`` puts ``tests/examples/brokenplugins`` on the daemon's
``PYTHONPATH``; its dist-info registers three entry points:

* ``io.containerd.grpc.v1.broken-import`` names a module that fails to import
  (a missing dependency), as a package installed without its requirements does;
* ``io.containerd.grpc.v1.broken-init`` imports fine, but its init raises;
* ``io.containerd.grpc.v1.broken-dependant`` requires type ``ctrd.broken.v1``, whose
  only plugin (``ctrd.broken.v1.provider``) fails, so it is not initialised.
"""

from __future__ import annotations

from typing import Any

from ctrd.plugin import InitContext, Registration


async def _init_fails(ic: InitContext) -> Any:
    raise RuntimeError("cannot reach the license server at license.invalid:443")


async def _never(ic: InitContext) -> Any:
    raise AssertionError("must not be initialised")


async def _fails_too(ic: InitContext) -> Any:
    raise ValueError("broken type provider failed")


broken_init = Registration(type="io.containerd.grpc.v1", id="broken-init", init=_init_fails)
broken_provider = Registration(type="ctrd.broken.v1", id="provider", init=_fails_too)
broken_dependant = Registration(
    type="io.containerd.grpc.v1", id="broken-dependant", requires=("ctrd.broken.v1",), init=_never
)
