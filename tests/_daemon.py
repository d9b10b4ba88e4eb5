"""Helpers for tests that run a real ``ctrd`` process (used by ``conftest.py``).

Kept out of ``conftest.py`` so test modules can import the helpers directly
(``from _daemon import ...``); ``tests/`` is on ``sys.path`` because it holds the
root ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from grpclib.client import Channel

from ctrd.api.containerd.services.version.v1 import VersionStub

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TESTPLUGINS = TESTS / "testplugins"
CTR = "/usr/bin/ctr"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


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


def short_tmpdir() -> Path:
    """A fresh directory under /tmp with a short name (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))


def toml_str(s: str | os.PathLike[str]) -> str:
    """*s* as a TOML basic string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


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


class DaemonProc:
    """One running ``ctrd`` subprocess."""

    def __init__(
        self,
        *,
        proc: subprocess.Popen[bytes],
        tmp: Path,
        socket: str,
        root: str,
        state: str,
        log_path: Path,
        config_path: Path | None,
        record_path: Path,
    ) -> None:
        self.proc = proc
        self.tmp = tmp
        self.socket = socket
        self.root = root
        self.state = state
        self.log_path = log_path
        self.config_path = config_path
        self.record_path = record_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """Everything the daemon wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[str]:
        """Lines the test plugins recorded (see ``ctrd_testplugins.record``)."""
        try:
            return self.record_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Poll *predicate* until true; fail (with the log) on timeout or daemon exit."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- daemon log ---\n{self.log()}")
            time.sleep(0.02)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches the regex *pattern*; return the match."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            m = re.search(pattern, self.log())
            if m:
                found.append(m)
            return bool(m)

        self.wait_for(check, timeout, f"log line matching {pattern!r}")
        return found[0]

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the socket answers ``Version``; fail early if the daemon exits."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                raise AssertionError(
                    f"ctrd exited with {rc} before serving\n--- daemon log ---\n{self.log()}"
                )
            if os.path.exists(self.socket):
                try:
                    run_sync(lambda: version_of(self.socket, 1.0), timeout=5.0)
                    return
                except Exception as exc:  # not accepting yet
                    last = exc
            time.sleep(0.02)
        raise AssertionError(
            f"ctrd did not answer on {self.socket} ({last!r})\n--- daemon log ---\n{self.log()}"
        )

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the daemon and wait; SIGKILL if it does not exit. Returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Launcher:
    """Starts ``ctrd`` processes for one test and cleans up after it.

    Calling it starts a daemon on a fresh temp root/state/socket with a config
    file made of ``root``/``state`` plus *extra_config*; the socket is given with
    ``--address``. ``plugins=True`` puts the test plugin package on PYTHONPATH.
    """

    def __init__(self) -> None:
        self.daemons: list[DaemonProc] = []
        self.procs: list[subprocess.Popen[bytes]] = []
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
        with log_path.open("wb") as logf:
            proc = subprocess.Popen(
                [*prefix, *self.command(*args)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=str(log_path.parent),
                **popen,
            )
        self.procs.append(proc)
        return proc

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
        root, state = str(tmp / "root"), str(tmp / "state")
        sock = socket or str(tmp / "ctrd.sock")
        config_path = tmp / "config.toml"
        record_path = tmp / "record.txt"
        if not config_path.exists():
            config_path.write_text(f"root = {toml_str(root)}\nstate = {toml_str(state)}\n{extra_config}\n")
        full_env = base_env(env, plugins=plugins)
        full_env["CTRD_TEST_RECORD"] = str(record_path)
        n = sum(1 for d in self.daemons if d.tmp == tmp)
        log_path = tmp / (f"ctrd.{n}.log" if n else "ctrd.log")
        proc = self.spawn(
            ["--config", str(config_path), "--address", sock, *args], env=full_env, log_path=log_path
        )
        d = DaemonProc(
            proc=proc,
            tmp=tmp,
            socket=sock,
            root=root,
            state=state,
            log_path=log_path,
            config_path=config_path,
            record_path=record_path,
        )
        self.daemons.append(d)
        if wait:
            d.wait_ready()
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
            if failed:
                print(f"--- ctrd log {d.log_path} (exit {rc}) ---\n{d.log()}")
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
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
