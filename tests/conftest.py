"""Shared fixtures: real ``ctrd`` daemons in subprocesses, and Debian's ``ctr``.

* ``daemon`` — a factory (:class:`_daemon.Launcher`): ``daemon(extra_config, env=..., plugins=True)``
  starts ``python -m ctrd --config <tmp>/config.toml --address <tmp>/ctrd.sock``, waits until
  ``Version`` answers and returns a :class:`_daemon.DaemonProc` (a :class:`ctrd.testing.Ctrd`:
  ``.socket .root .state .proc .log_path .config_path``). Every daemon is stopped with SIGTERM
  (SIGKILL fallback) after the test; the logs are printed when the test failed.
  ``daemon.run(*args)`` runs ``ctrd`` to completion.
* ``ctr`` — ``ctr(sock, *args)`` runs ``/usr/bin/ctr --address <sock> ...`` and returns the
  ``CompletedProcess`` (text).

Tests marked ``interop`` FAIL (never skip) when ``/usr/bin/ctr`` is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Test modules import the helpers as ``_daemon`` whether or not tests/ is a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import CTR, Launcher, run_ctr


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("CTRD_H2") == "stock":
        skip = pytest.mark.skip(reason="needs ctrd's HTTP/2 paths; CTRD_H2=stock runs the libraries' own")
        for item in items:
            if item.get_closest_marker("fast_h2") is not None:
                item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("interop") is not None and not os.path.exists(CTR):
        pytest.fail(f"{CTR} is missing: interop tests need Debian's containerd package (ctr)", pytrace=False)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, "rep_" + when, None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture
def daemon(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """Factory of real ctrd daemons (see module docstring)."""
    launcher = Launcher()
    try:
        yield launcher
    finally:
        launcher.cleanup(_failed(request))


@pytest.fixture
def ctr() -> Callable[..., Any]:
    """``ctr(sock, *args, namespace=None, timeout=30)`` -> CompletedProcess[str]."""
    if not os.path.exists(CTR):
        pytest.fail(f"{CTR} is missing: install Debian's containerd package", pytrace=False)
    return run_ctr
