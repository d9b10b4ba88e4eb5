"""The hostile-client suite: every test here carries the ``hardening`` marker.

Tests record what they measured with the ``figures`` fixture
(``figures.add("stall probes", "max victim latency (ms)", 12.3)``); the figures are
printed after the run, so a closing note can quote them. The long variants run
when ``CTRD_LONG=1`` is set (outside CI); the quick ones are part of every run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ._figures import FIGURES, Figures

LONG = os.environ.get("CTRD_LONG") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.hardening)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = FIGURES.render()
    if lines:
        terminalreporter.section("hostile-client suite: figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def figures() -> Figures:
    """Where a test records a measured figure (printed at the end of the run)."""
    return FIGURES


@pytest.fixture
def long_run() -> bool:
    """Whether the long variants run (``CTRD_LONG=1``)."""
    return LONG
