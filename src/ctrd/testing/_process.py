"""One daemon process in its own directory: spawned, awaited, observed and stopped by its own pid.

:class:`DaemonProcess` runs any command; :mod:`ctrd.testing._daemons` builds ctrd
and containerd on it.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Self

__all__ = [
    "CONTENT_PLUGIN",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "DaemonError",
    "DaemonProcess",
    "short_tmpdir",
    "toml_str",
]

START_TIMEOUT: Final = 30.0
"""Seconds a daemon has to answer ``Version`` after it is spawned."""

STOP_TIMEOUT: Final = 15.0
"""Seconds a daemon has to exit after SIGTERM before it is killed."""

CONTENT_PLUGIN: Final = "io.containerd.content.v1.content"


class DaemonError(RuntimeError):
    """A daemon exited before serving, or did not answer in time; the message holds its log."""


def short_tmpdir(prefix: str = "ctrd-") -> Path:
    """A fresh directory under ``/tmp`` with a short name (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def toml_str(s: str | os.PathLike[str]) -> str:
    """*s* as a TOML basic string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _version(address: str, limit: float) -> str:
    from ctrd.client import Client

    async with Client(address, timeout=limit) as client:
        return (await client.version()).version


def _answers(address: str) -> bool:
    """Whether ``Version`` answers on *address* (asked on a private loop in a thread, so this
    works from sync code and from inside a running loop)."""
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            ex.submit(asyncio.run, _version(address, 1.0)).result(5.0)
        return True
    except Exception:
        return False


class DaemonProcess:
    """One daemon process in its own directory.

    :param directory: the daemon's directory; its log goes to *log_path* (default ``<directory>/log``).
    :param argv: the command line.
    :param address: the unix socket the daemon serves on (``""``: do not wait for one).
    :param env: added to this process's environment (``CONTAINERD_ADDRESS`` is left out).
    :param keep: keep *directory* when stopping (else it is removed).
    :param popen: more :class:`subprocess.Popen` arguments (``start_new_session``, ``user``...).
    """

    kind: ClassVar[str] = "daemon"
    """``ctrd``, ``containerd``, or ``daemon`` for another command."""

    def __init__(
        self,
        directory: Path,
        argv: Sequence[str],
        address: str,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        config_path: Path | None = None,
        keep: bool = True,
        popen: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        """The private directory (config, root, state, socket, log)."""
        self.argv = list(argv)
        self.address = address
        """The unix socket path; pass it to :class:`ctrd.client.Client`."""
        self.env = dict(env or {})
        self.log_path = log_path or directory / "log"
        self.config_path = config_path
        """The config file written at start (``None`` when there is none)."""
        self.keep = keep
        """Keep :attr:`directory` when stopping."""
        self.popen = dict(popen or {})
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "unstarted" if self._proc is None else f"pid {self._proc.pid}"
        return f"<{type(self).__name__} {state} on {self.address or self.directory}>"

    # -- layout ---------------------------------------------------------------------------

    @property
    def socket(self) -> str:
        """The same as :attr:`address`."""
        return self.address

    @property
    def root(self) -> Path:
        """The daemon's root (persistent) directory."""
        return self.directory / "root"

    @property
    def state(self) -> Path:
        """The daemon's state (runtime) directory."""
        return self.directory / "state"

    def blob_path(self, dgst: str) -> Path:
        """Where the daemon keeps the committed blob *dgst* (ctrd and containerd share the layout)."""
        algorithm, _, encoded = dgst.partition(":")
        return self.root / CONTENT_PLUGIN / "blobs" / algorithm / encoded

    def blobs(self) -> list[str]:
        """The sha256 digests of the blob files in the daemon's content store, sorted."""
        d = self.root / CONTENT_PLUGIN / "blobs" / "sha256"
        return sorted("sha256:" + p.name for p in d.glob("*")) if d.is_dir() else []

    # -- life cycle -----------------------------------------------------------------------

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The process (once spawned)."""
        if self._proc is None:
            raise RuntimeError(f"{self.kind} was not started")
        return self._proc

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process was spawned and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def prepare(self) -> None:
        """Write what the daemon needs before it starts (subclasses write their config)."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def spawn(self) -> None:
        """:meth:`prepare`, then start the process (stdout and stderr to :attr:`log_path`); no wait."""
        if self.alive():
            raise RuntimeError(f"{self.kind} is running already (pid {self.pid})")
        self.prepare()
        env = {k: v for k, v in os.environ.items() if k != "CONTAINERD_ADDRESS"}
        env.update(self.env)
        with self.log_path.open("wb") as logf:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.directory),
                **self.popen,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``Version`` answers on :attr:`address`.

        :raises DaemonError: the process exited first, or did not answer within *timeout*
            seconds (it keeps running: :meth:`stop` it).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"{self.kind} exited with {self.proc.returncode} before serving:\n{self.log()}"
                )
            if os.path.exists(self.address) and _answers(self.address):
                return
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{self.kind} did not answer on {self.address} within {timeout}s:\n{self.log()}"
                )
            time.sleep(0.02)

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """:meth:`spawn`, then :meth:`wait_ready`; returns ``self``.

        :raises DaemonError: as :meth:`wait_ready` (the daemon is stopped then).
        """
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def send_signal(self, sig: int) -> None:
        """Send *sig* to the daemon process."""
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send *sig* (SIGKILL after *timeout* seconds) and wait; remove the directory unless :attr:`keep`.

        Returns the exit status (``None`` if never spawned). Stopping twice is harmless.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.kind} (pid {proc.pid}) ignored signal {sig}; killing it", file=sys.stderr)
                proc.kill()
                proc.wait(5)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        return None if proc is None else proc.returncode

    # -- observation ----------------------------------------------------------------------

    def log(self) -> str:
        """What the daemon wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last *lines* lines of :meth:`log`."""
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Poll *predicate* until it holds.

        :raises TimeoutError: after *timeout* seconds (the message holds the log).
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}\n--- {self.kind} log ---\n{self.log()}")
            time.sleep(0.02)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches the regexp *pattern*; return the match."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            m = re.search(pattern, self.log())
            if m:
                found.append(m)
            return m is not None

        self.wait_for(check, timeout, f"log line matching {pattern!r}")
        return found[0]
