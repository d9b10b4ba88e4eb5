"""The daemon's event loop choice (``ctrd.server.cli._loop_factory``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from ctrd.server import cli


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("CTRD_UVLOOP", raising=False)
    factory = cli._loop_factory()
    assert factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_opt_out_gives_the_default_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRD_UVLOOP", "0")
    assert cli._loop_factory() is None
    with asyncio.Runner(loop_factory=cli._loop_factory()) as runner:
        assert type(runner.get_loop()).__module__.startswith("asyncio")


def test_without_uvloop_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTRD_UVLOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes ``import uvloop`` raise ImportError
    assert cli._loop_factory() is None
