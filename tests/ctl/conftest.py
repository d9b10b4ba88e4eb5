"""Helpers for the ``ctrdctl`` tests: run the console script (or ``ctr``) as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from ctrd.testing import DaemonProcess, start_ctrd

CTR = "/usr/bin/ctr"
CTRDCTL = [sys.executable, "-m", "ctrd.ctl"]

Run = Callable[..., "subprocess.CompletedProcess[bytes]"]


def run_tool(
    tool: list[str],
    address: str,
    *args: str,
    namespace: str | None = None,
    stdin: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """``<tool> --address A [--namespace N] args`` with stdin from a file (or /dev/null)."""
    cmd = [*tool, "--address", address]
    if namespace is not None:
        cmd += ["--namespace", namespace]
    full_env = dict(os.environ)
    full_env.pop("CONTAINERD_NAMESPACE", None)
    full_env.pop("CONTAINERD_ADDRESS", None)
    full_env["TZ"] = "UTC"
    full_env.update(env or {})
    with open(stdin or os.devnull, "rb") as f:
        return subprocess.run(
            [*cmd, *args], stdin=f, capture_output=True, timeout=timeout, check=False, env=full_env
        )


@pytest.fixture(scope="module")
def ctrd_proc() -> Iterator[DaemonProcess]:
    """One ctrd per module (collections only on deletions, as the containerd fixture)."""
    d = start_ctrd('[plugins."io.containerd.gc.v1.scheduler"]\n  mutation_threshold = 0\n')
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def ctl(ctrd_proc: DaemonProcess) -> Run:
    """``ctl(*args, namespace=None, stdin=None)`` runs ctrdctl against the module's ctrd."""

    def run(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return run_tool(CTRDCTL, ctrd_proc.address, *args, **kw)  # type: ignore[arg-type]

    return run
