"""Helpers for tests that run a real ``ctrd`` process (used by ``conftest.py``).

The processes are :mod:`ctrd.testing`'s (:class:`ctrd.testing.Ctrd`); this module adds
what ctrd's own tests need on top: the test plugins (``tests/testplugins``) and what
they record, one :class:`Launcher` per test that cleans up after it, ``ctr``.

Kept out of ``conftest.py`` so test modules can import the helpers directly
(``from _daemon import ...``); ``tests/`` is on ``sys.path`` because it holds the
root ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from grpclib.client import Channel

from ctrd.api.containerd.services.version.v1 import VersionStub
from ctrd.testing import Ctrd, DaemonProcess, short_tmpdir, toml_str

__all__ = [
    "CTR",
    "TESTPLUGINS",
    "DaemonProc",
    "Launcher",
    "base_env",
    "rss_kib",
    "run_ctr",
    "run_sync",
    "short_tmpdir",
    "toml_str",
    "version_of",
]

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TESTPLUGINS = TESTS / "testplugins"
CTR = "/usr/bin/ctr"

START_TIMEOUT = 20.0


def run_sync(coro_fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
    """Run a coroutine to completion on a private loop in another thread.

    Works from sync tests and from inside a running event loop (async tests).
    """
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro_fn()).result(timeout)


async def version_of(sock: str, timeout: float = 2.0) -> str:
    """``Version.Version`` over the unix socket *sock*."""
    ch = Channel(path=sock)
    try:
        resp = await VersionStub(ch).version(timeout=timeout)
        return resp.version
    finally:
        ch.close()


def base_env(extra: Mapping[str, str] | None = None, *, plugins: bool = False) -> dict[str, str]:
    """The environment for a ctrd subprocess (optionally with the test plugins on PYTHONPATH)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CTRD_TEST_RECORD", None)
    if plugins:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTPLUGINS), env.get("PYTHONPATH", "")) if p)
    if extra:
        env.update(extra)
    return env


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``...) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class DaemonProc(Ctrd):
    """A ctrd of the ``daemon`` fixture: a :class:`ctrd.testing.Ctrd` whose directory the
    :class:`Launcher` owns, with what the test plugins record (``ctrd_testplugins.record``)."""

    def __init__(
        self,
        tmp: Path,
        extra_config: str,
        *,
        env: Mapping[str, str],
        args: Sequence[str],
        socket: str | None,
        log_path: Path,
    ) -> None:
        self.record_path = tmp / "record.txt"
        super().__init__(
            tmp,
            extra_config,
            env={**env, "CTRD_TEST_RECORD": str(self.record_path)},
            args=args,
            address=socket,
            log_path=log_path,
            keep=True,
        )

    @property
    def tmp(self) -> Path:
        """The daemon's directory (:attr:`directory`)."""
        return self.directory

    def records(self) -> list[str]:
        """Lines the test plugins recorded (see ``ctrd_testplugins.record``)."""
        try:
            return self.record_path.read_text().splitlines()
        except FileNotFoundError:
            return []


class Launcher:
    """Starts ``ctrd`` processes for one test and cleans up after it.

    Calling it starts a daemon (:class:`DaemonProc`) on a fresh temp root/state/socket
    with a config file made of ``root``/``state`` plus *extra_config*; the socket is
    given with ``--address``. ``plugins=True`` puts the test plugin package on
    PYTHONPATH; ``tmp=d.tmp`` restarts in the directory (and with the config) of ``d``.
    """

    def __init__(self) -> None:
        self.daemons: list[DaemonProcess] = []
        self.tmpdirs: list[Path] = []

    def tmpdir(self) -> Path:
        d = short_tmpdir()
        self.tmpdirs.append(d)
        return d

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ctrd", *args]

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        prefix: Sequence[str] = (),
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``ctrd <args>`` with stdout+stderr to *log_path* (extra Popen arguments in *popen*)."""
        d = DaemonProcess(
            log_path.parent,
            [*prefix, *self.command(*args)],
            "",
            env=env,
            log_path=log_path,
            popen=popen,
        )
        d.spawn()
        self.daemons.append(d)
        return d.proc

    def __call__(
        self,
        extra_config: str = "",
        *,
        env: Mapping[str, str] | None = None,
        plugins: bool = False,
        args: Sequence[str] = (),
        wait: bool = True,
        tmp: Path | None = None,
        socket: str | None = None,
    ) -> DaemonProc:
        tmp = tmp or self.tmpdir()
        n = sum(1 for d in self.daemons if d.directory == tmp)
        d = DaemonProc(
            tmp,
            extra_config,
            env=base_env(env, plugins=plugins),
            args=args,
            socket=socket,
            log_path=tmp / (f"ctrd.{n}.log" if n else "ctrd.log"),
        )
        self.daemons.append(d)
        d.spawn()
        if wait:
            d.wait_ready(START_TIMEOUT)
        return d

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        plugins: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctrd <args>`` to completion (config commands, start-up failures)."""
        return subprocess.run(
            self.command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=base_env(env, plugins=plugins),
            timeout=timeout,
            check=False,
        )

    def cleanup(self, failed: bool) -> None:
        for d in self.daemons:
            rc = d.stop()
            if failed and d.kind == "ctrd":
                print(f"--- ctrd log {d.log_path} (exit {rc}) ---\n{d.log()}")
        for t in self.tmpdirs:
            shutil.rmtree(t, ignore_errors=True)


def run_ctr(
    sock: str, *args: str, timeout: float = 30.0, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``ctr --address <sock> [-n ns] <args>``."""
    if not os.path.exists(CTR):
        raise AssertionError(f"{CTR} is missing: install Debian's containerd package (CI does)")
    cmd = [CTR, "--address", sock]
    if namespace:
        cmd += ["--namespace", namespace]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
