"""Run throw-away daemons for tests: ctrd, or a private real containerd.

Plain helpers (no pytest needed here); the pytest fixtures built on them live
in :mod:`ctrd.testing.plugin`, which pytest loads automatically once ctrd is
installed (entry point ``pytest11``)::

    async def test_roundtrip(ctrd_client):
        info = await ctrd_client.content.ingest("ref", b"hello")
        assert await ctrd_client.content.read_all(info.digest) == b"hello"

Outside pytest::

    with ctrd.testing.running_ctrd() as daemon:
        async with Client(daemon.address) as client: ...

Every daemon lives in a fresh directory under ``/tmp`` (short, because unix
socket paths are limited to 107 bytes), listens only on a unix socket there,
and is stopped (SIGTERM, SIGKILL after a grace period) and removed on exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

__all__ = [
    "CONTAINERD",
    "DaemonProcess",
    "containerd_available",
    "containerd_config",
    "running_containerd",
    "running_ctrd",
    "start_containerd",
    "start_ctrd",
]

CONTAINERD: Final = "/usr/bin/containerd"
"""Debian's containerd binary (``apt-get install containerd``)."""

_START_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 10.0


@dataclasses.dataclass
class DaemonProcess:
    """A daemon started by :func:`start_ctrd` or :func:`start_containerd`."""

    kind: str
    """``ctrd`` or ``containerd``."""
    address: str
    """The unix socket path; pass it to :class:`ctrd.client.Client`."""
    directory: Path
    """The private directory (config, root, state, socket, log)."""
    proc: subprocess.Popen[bytes]
    log_path: Path
    keep: bool = False
    """Keep :attr:`directory` when stopping."""

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.proc.pid

    @property
    def root(self) -> Path:
        """The daemon's root (persistent) directory."""
        return self.directory / "root"

    def log(self) -> str:
        """What the daemon logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after *timeout*; remove the directory. Returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        return self.proc.returncode


def _short_tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _toml_str(s: str | os.PathLike[str]) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _version(address: str, timeout: float) -> str:
    from ctrd.client import Client

    async with Client(address, timeout=timeout) as client:
        return (await client.version()).version


def _answers(address: str) -> bool:
    """Whether ``Version`` answers on *address* (run on a private loop in a thread, so
    this works from sync code and from inside a running loop)."""
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            ex.submit(asyncio.run, _version(address, 1.0)).result(5.0)
        return True
    except Exception:
        return False


def _wait_ready(d: DaemonProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            log = d.log()
            d.stop()
            raise RuntimeError(f"{d.kind} exited with {d.proc.returncode} before serving:\n{log}")
        if os.path.exists(d.address) and _answers(d.address):
            return
        time.sleep(0.02)
    log = d.log()
    d.stop()
    raise RuntimeError(f"{d.kind} did not answer on {d.address} within {timeout}s:\n{log}")


def _spawn(kind: str, argv: list[str], directory: Path, env: Mapping[str, str] | None) -> DaemonProcess:
    log_path = directory / "log"
    full_env = dict(os.environ)
    full_env.pop("CONTAINERD_ADDRESS", None)
    full_env.update(env or {})
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(directory),
        )
    sock = directory / ("ctrd.sock" if kind == "ctrd" else "containerd.sock")
    return DaemonProcess(kind=kind, address=str(sock), directory=directory, proc=proc, log_path=log_path)


def start_ctrd(
    config: str = "",
    *,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    timeout: float = _START_TIMEOUT,
) -> DaemonProcess:
    """Start ``python -m ctrd`` on a temp socket and wait until it answers.

    :param config: extra TOML appended to the generated config (which sets only
        ``root`` and ``state``), e.g. plugin tables.
    :param env: extra environment (e.g. ``PYTHONPATH`` for plugin packages).
    :raises RuntimeError: the daemon exited or did not answer in time (the log is in the message).
    """
    d = _short_tmpdir("ctrd-t-")
    cfg = d / "config.toml"
    cfg.write_text(f"root = {_toml_str(d / 'root')}\nstate = {_toml_str(d / 'state')}\n{config}\n")
    env = {"PYTHONUNBUFFERED": "1", **(env or {})}
    daemon = _spawn(
        "ctrd", [python, "-m", "ctrd", "--config", str(cfg), "--address", str(d / "ctrd.sock")], d, env
    )
    _wait_ready(daemon, timeout)
    return daemon


def containerd_available(binary: str = CONTAINERD) -> bool:
    """Whether a containerd binary is installed (and we are root, which it needs)."""
    return os.path.exists(binary) and os.geteuid() == 0


def containerd_config(directory: Path, *, policy: str = "shared", gc_mutation_threshold: int = 0) -> str:
    """A private containerd 1.6 config (version 2) confined to *directory*.

    As the reference ``start-containerd.sh``: CRI, ``opt`` and the snapshotters
    that need special filesystems are disabled (nothing is written outside
    *directory*), debug and metrics listeners are off, and the garbage
    collector runs on deletions only when *gc_mutation_threshold* is 0.
    """
    d = directory
    return f"""version = 2
root = {_toml_str(d / "root")}
state = {_toml_str(d / "state")}
temp = {_toml_str(d / "tmp")}
oom_score = 0
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {_toml_str(d / "containerd.sock")}
  uid = {os.getuid()}
  gid = {os.getgid()}

[ttrpc]
  address = {_toml_str(d / "containerd.sock.ttrpc")}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
    pause_threshold = 0.02
    deletion_threshold = 0
    mutation_threshold = {gc_mutation_threshold}
    schedule_delay = "0s"
    startup_delay = "100ms"
  [plugins."io.containerd.metadata.v1.bolt"]
    content_sharing_policy = "{policy}"
"""


def start_containerd(
    *,
    policy: str = "shared",
    gc_mutation_threshold: int = 0,
    binary: str = CONTAINERD,
    timeout: float = _START_TIMEOUT,
) -> DaemonProcess:
    """Start a private containerd (see :func:`containerd_config`) and wait until it answers.

    Its garbage collector is real: hold what a test writes under a lease or the
    ``containerd.io/gc.root`` label.

    :raises RuntimeError: containerd is missing, exited, or did not answer in time.
    """
    if not containerd_available(binary):
        raise RuntimeError(f"{binary} is not installed (apt-get install containerd) or not running as root")
    d = _short_tmpdir("ctd-t-")
    (d / "tmp").mkdir()
    cfg = d / "config.toml"
    cfg.write_text(containerd_config(d, policy=policy, gc_mutation_threshold=gc_mutation_threshold))
    daemon = _spawn("containerd", [binary, "--config", str(cfg)], d, None)
    _wait_ready(daemon, timeout)
    return daemon


@contextlib.contextmanager
def running_ctrd(config: str = "", *, env: Mapping[str, str] | None = None) -> Iterator[DaemonProcess]:
    """:func:`start_ctrd` as a context manager (stopped and removed on exit)."""
    daemon = start_ctrd(config, env=env)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def running_containerd(
    *, policy: str = "shared", gc_mutation_threshold: int = 0, binary: str = CONTAINERD
) -> Iterator[DaemonProcess]:
    """:func:`start_containerd` as a context manager (stopped and removed on exit)."""
    daemon = start_containerd(policy=policy, gc_mutation_threshold=gc_mutation_threshold, binary=binary)
    try:
        yield daemon
    finally:
        daemon.stop()
