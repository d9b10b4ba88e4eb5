"""Backends for the SDK tests: a ctrd subprocess and a private real containerd.

``backend`` is module-scoped and parametrized, so a module's tests run once
against each daemon (each daemon started once per module). The containerd
parameter is marked ``interop``: it FAILS when Debian's containerd is missing
(the root conftest), it never skips. containerd's garbage collector is live
(mutation threshold 0, collections on every deletion), so tests hold what they
write under a lease or the ``containerd.io/gc.root`` label.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from ctrd.client import Client
from ctrd.testing import DaemonProcess, start_containerd, start_ctrd

_names = itertools.count(1)


@dataclasses.dataclass
class Backend:
    """A running daemon the SDK talks to."""

    kind: str
    address: str
    proc: DaemonProcess

    @property
    def is_containerd(self) -> bool:
        return self.kind == "containerd"


BACKENDS = ["ctrd", pytest.param("containerd", marks=pytest.mark.interop)]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One daemon per module and parameter."""
    proc = start_ctrd() if request.param == "ctrd" else start_containerd()
    try:
        yield Backend(request.param, proc.address, proc)
    finally:
        proc.stop()


@pytest.fixture
def ns(backend: Backend) -> str:
    """A namespace no other test uses."""
    return f"sdk-{next(_names)}"


@pytest.fixture
async def client(request: pytest.FixtureRequest, backend: Backend, ns: str) -> AsyncIterator[Client]:
    """A client in the test's own namespace, 30 s timeout. A failing test gets the daemon's
    log in its report."""
    async with Client(backend.address, namespace=ns, timeout=30) as c:
        yield c
    rep = getattr(request.node, "rep_call", None)  # set by the root conftest
    if rep is not None and rep.failed:
        request.node.add_report_section("call", f"{backend.kind} log", backend.proc.log()[-20000:])
