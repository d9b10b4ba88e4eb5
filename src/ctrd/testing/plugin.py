"""pytest fixtures for ctrd users and plugin authors (loaded through the ``pytest11`` entry point).

* ``ctrd_daemon`` — a ctrd daemon in a subprocess on a temp unix socket; the
  fixture's value is the socket path (the address for :class:`ctrd.client.Client`).
* ``ctrd_daemon_factory`` — ``ctrd_daemon_factory(config="", env=None)`` starts
  more daemons, e.g. with plugin config tables or a ``PYTHONPATH`` holding
  your plugin package; returns a started :class:`ctrd.testing.Ctrd`.
* ``ctrd_client`` — an async fixture: a :class:`ctrd.client.Client` connected
  to ``ctrd_daemon`` in a fresh namespace (needs pytest-asyncio).
* ``ctrd_registry`` — a private OCI registry (Debian's ``docker-registry``, see
  :mod:`ctrd.testing.registry`) on a free loopback port; skipped when it is not
  installed. Push test images to it with :class:`ctrd.testing.images.ImageBuilder`.
* ``containerd_daemon`` — a private real containerd (Debian's
  ``/usr/bin/containerd``, run as root) on a temp socket; the test is skipped
  when it is not installed. Its garbage collector is live: hold what you write
  under a lease or the ``containerd.io/gc.root`` label.

Every daemon is stopped and its directory removed after the test; a failing
test gets the daemon's log in its report (section "ctrd daemon log").
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import pytest

from ctrd.client import Client
from ctrd.testing import Ctrd, DaemonProcess, containerd_available, start_containerd, start_ctrd

if TYPE_CHECKING:
    from ctrd.testing.registry import Registry

__all__ = ["containerd_daemon", "ctrd_client", "ctrd_daemon", "ctrd_daemon_factory", "ctrd_registry"]

_counter = itertools.count(1)


def _report(request: pytest.FixtureRequest, daemons: Sequence[DaemonProcess]) -> None:
    for d in daemons:
        request.node.add_report_section("teardown", f"{d.kind} daemon log", d.log())


@pytest.fixture
def ctrd_daemon_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Ctrd]]:
    """``factory(config: str = "", env: Mapping[str, str] | None = None) -> Ctrd``."""
    started: list[Ctrd] = []

    def factory(config: str = "", env: Mapping[str, str] | None = None) -> Ctrd:
        d = start_ctrd(config, env=env)
        started.append(d)
        return d

    try:
        yield factory
    finally:
        _report(request, started)
        for d in started:
            d.stop()


@pytest.fixture
def ctrd_daemon(ctrd_daemon_factory: Callable[..., Ctrd]) -> str:
    """The socket path of a fresh ctrd daemon (default config)."""
    return ctrd_daemon_factory().address


@pytest.fixture
def containerd_daemon(request: pytest.FixtureRequest) -> Iterator[str]:
    """The socket path of a fresh private containerd; skips when containerd is not installed."""
    if not containerd_available():
        pytest.skip("containerd is not installed (apt-get install containerd) or not running as root")
    d = start_containerd()
    try:
        yield d.address
    finally:
        _report(request, [d])
        d.stop()


@pytest.fixture
def ctrd_registry(request: pytest.FixtureRequest) -> Iterator[Registry]:
    """A fresh private registry (:class:`ctrd.testing.registry.Registry`); skips when Debian's
    docker-registry is not installed."""
    from ctrd.testing.registry import registry_available, start_registry

    if not registry_available():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry()
    try:
        yield reg
    finally:
        _report(request, [reg])
        reg.stop()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - ctrd_client needs pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def ctrd_client(ctrd_daemon: str) -> AsyncIterator[Client]:
        """A :class:`ctrd.client.Client` on ``ctrd_daemon``, in namespace ``test-<n>``, 30 s timeout."""
        async with Client(ctrd_daemon, namespace=f"test-{next(_counter)}", timeout=30) as client:
            yield client
