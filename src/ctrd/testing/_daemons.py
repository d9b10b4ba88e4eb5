"""Daemon processes for tests and benchmarks: ctrd, or a private real containerd.

A :class:`DaemonProcess` is built unstarted (a directory, a command line, an
environment), started with :meth:`~DaemonProcess.start` (spawn, then wait until
``Version`` answers on its socket) and stopped with :meth:`~DaemonProcess.stop`
(SIGTERM, SIGKILL after a grace period; only the process it started is ever
signalled). :class:`Ctrd` runs ``python -m ctrd``; :class:`Containerd` runs
Debian's containerd 1.6 confined to its directory. :func:`start_ctrd`,
:func:`start_containerd` and the ``running_*`` context managers are the short
forms.

Every daemon lives in its own directory (by default a fresh one under ``/tmp``:
short, because unix socket paths are limited to 107 bytes) holding its config,
``root``, ``state``, socket and log, and listens only on a unix socket there.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Self

__all__ = [
    "CONTAINERD",
    "GC_DEFAULTS",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Containerd",
    "Ctrd",
    "DaemonError",
    "DaemonProcess",
    "containerd_available",
    "containerd_config",
    "ctrd_config",
    "running_containerd",
    "running_ctrd",
    "short_tmpdir",
    "start_containerd",
    "start_ctrd",
    "toml_str",
]

CONTAINERD: Final = "/usr/bin/containerd"
"""Debian's containerd binary (``apt-get install containerd``)."""

START_TIMEOUT: Final = 30.0
"""Seconds a daemon has to answer ``Version`` after it is spawned."""

STOP_TIMEOUT: Final = 15.0
"""Seconds a daemon has to exit after SIGTERM before it is killed."""

CONTENT_PLUGIN: Final = "io.containerd.content.v1.content"

GC_DEFAULTS: Final[Mapping[str, float | int | str]] = {
    "pause_threshold": 0.02,
    "deletion_threshold": 0,
    "mutation_threshold": 0,
    "schedule_delay": "0s",
    "startup_delay": "100ms",
}
"""The private containerd's collector: after every deletion (paced), never for mutations alone."""


class DaemonError(RuntimeError):
    """A daemon exited before serving, or did not answer in time; the message holds its log."""


def short_tmpdir(prefix: str = "ctrd-") -> Path:
    """A fresh directory under ``/tmp`` with a short name (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def toml_str(s: str | os.PathLike[str]) -> str:
    """*s* as a TOML basic string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _version(address: str, timeout: float) -> str:
    from ctrd.client import Client

    async with Client(address, timeout=timeout) as client:
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


# -- ctrd -------------------------------------------------------------------------------------


def ctrd_config(directory: Path, extra: str = "") -> str:
    """A ctrd config keeping ``root`` and ``state`` in *directory*, followed by *extra* TOML."""
    return f"root = {toml_str(directory / 'root')}\nstate = {toml_str(directory / 'state')}\n{extra}\n"


class Ctrd(DaemonProcess):
    """``python -m ctrd --config <dir>/config.toml --address <dir>/ctrd.sock [args]``.

    :param directory: default: a fresh directory under ``/tmp``, removed on :meth:`stop`
        (a directory given is kept unless *keep* says otherwise).
    :param config: TOML appended to the generated config (:func:`ctrd_config`), e.g. plugin
        tables. A config file already in *directory* is kept as it is (a restart).
    :param env: extra environment (e.g. ``PYTHONPATH`` for plugin packages).
    :param python: the interpreter (another virtual environment's, to test an installation).
    :param args: more command-line arguments.
    """

    kind = "ctrd"

    def __init__(
        self,
        directory: Path | None = None,
        config: str = "",
        *,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        args: Sequence[str] = (),
        address: str | None = None,
        log_path: Path | None = None,
        keep: bool | None = None,
        popen: Mapping[str, Any] | None = None,
    ) -> None:
        owned = directory is None
        directory = short_tmpdir("ctrd-t-") if directory is None else directory
        address = str(directory / "ctrd.sock") if address is None else address
        config_path = directory / "config.toml"
        super().__init__(
            directory,
            [python, "-m", "ctrd", "--config", str(config_path), "--address", address, *args],
            address,
            env={"PYTHONUNBUFFERED": "1", **(env or {})},
            log_path=log_path,
            config_path=config_path,
            keep=not owned if keep is None else keep,
            popen=popen,
        )
        self.config = config

    def prepare(self) -> None:
        super().prepare()
        assert self.config_path is not None
        if not self.config_path.exists():
            self.config_path.write_text(ctrd_config(self.directory, self.config))


# -- containerd -------------------------------------------------------------------------------


def containerd_available(binary: str = CONTAINERD) -> bool:
    """Whether a containerd binary is installed (and we are root, which it needs)."""
    return os.path.exists(binary) and os.geteuid() == 0


def _toml_value(v: float | int | str) -> str:
    return toml_str(v) if isinstance(v, str) else str(v)


def containerd_config(
    directory: Path,
    *,
    policy: str = "shared",
    gc_mutation_threshold: int = 0,
    gc: Mapping[str, float | int | str] | None = None,
    disabled: Sequence[str] = (),
    extra: str = "",
    log_level: str = "info",
) -> str:
    """A private containerd 1.6 config (version 2) confined to *directory*.

    As the reference ``start-containerd.sh``: CRI, ``opt`` and the snapshotters that need
    special filesystems are disabled (nothing is written outside *directory*; ``native``
    and ``overlayfs`` stay), debug and metrics listeners are off. The collector runs as
    :data:`GC_DEFAULTS` says, with *gc_mutation_threshold* and then *gc* over it.

    :param policy: the metadata store's ``content_sharing_policy`` (``shared``, ``isolated``).
    :param disabled: more plugins to disable.
    :param extra: TOML appended (``[proxy_plugins.x]``, more ``[plugins."..."]`` tables).
    """
    d = directory
    gc_table = {**GC_DEFAULTS, "mutation_threshold": gc_mutation_threshold, **(gc or {})}
    disabled_plugins = (
        "io.containerd.grpc.v1.cri",
        "io.containerd.internal.v1.opt",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
        *disabled,
    )
    gc_lines = "".join(f"    {k} = {_toml_value(v)}\n" for k, v in gc_table.items())
    return f"""version = 2
root = {toml_str(d / "root")}
state = {toml_str(d / "state")}
temp = {toml_str(d / "tmp")}
oom_score = 0
disabled_plugins = [
{"".join(f"  {toml_str(p)},{chr(10)}" for p in disabled_plugins)}]

[grpc]
  address = {toml_str(d / "containerd.sock")}
  uid = {os.getuid()}
  gid = {os.getgid()}

[ttrpc]
  address = {toml_str(d / "containerd.sock.ttrpc")}

[debug]
  address = ""
  level = {toml_str(log_level)}

[metrics]
  address = ""
  grpc_histogram = false

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
{gc_lines}  [plugins."io.containerd.metadata.v1.bolt"]
    content_sharing_policy = {toml_str(policy)}

{extra}
"""


class Containerd(DaemonProcess):
    """A private containerd (:func:`containerd_config`): ``containerd --config <dir>/config.toml``.

    Its garbage collector is real: hold what a test writes under a lease or the
    ``containerd.io/gc.root`` label. With *wait_for_startup_gc*, :meth:`wait_ready` also
    waits for the first collection (``startup_delay`` after start; the log level is
    then ``debug``, where containerd reports it), so that it cannot race a test's
    first unreferenced write.

    :param directory: default: a fresh directory under ``/tmp``, removed on :meth:`stop`.
    """

    kind = "containerd"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        policy: str = "shared",
        gc_mutation_threshold: int = 0,
        gc: Mapping[str, float | int | str] | None = None,
        disabled: Sequence[str] = (),
        extra: str = "",
        log_level: str = "info",
        wait_for_startup_gc: bool = False,
        binary: str = CONTAINERD,
        keep: bool | None = None,
        popen: Mapping[str, Any] | None = None,
    ) -> None:
        owned = directory is None
        directory = short_tmpdir("ctd-t-") if directory is None else directory
        config_path = directory / "config.toml"
        super().__init__(
            directory,
            [binary, "--config", str(config_path)],
            str(directory / "containerd.sock"),
            config_path=config_path,
            keep=not owned if keep is None else keep,
            popen=popen,
        )
        self.policy = policy
        self.wait_for_startup_gc = wait_for_startup_gc
        self.config = containerd_config(
            directory,
            policy=policy,
            gc_mutation_threshold=gc_mutation_threshold,
            gc=gc,
            disabled=disabled,
            extra=extra,
            log_level="debug" if wait_for_startup_gc else log_level,
        )

    def prepare(self) -> None:
        super().prepare()
        (self.directory / "tmp").mkdir(exist_ok=True)
        for stale in (self.address, self.address + ".ttrpc"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        assert self.config_path is not None
        self.config_path.write_text(self.config)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        if self.wait_for_startup_gc:
            while "garbage collected" not in self.log():
                if self.proc.poll() is not None:
                    raise DaemonError(f"containerd exited with {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise DaemonError(f"containerd's start-up collection did not run:\n{self.log()}")
                time.sleep(0.02)


# -- short forms ------------------------------------------------------------------------------


def start_ctrd(
    config: str = "",
    *,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    timeout: float = START_TIMEOUT,
) -> Ctrd:
    """Start ``python -m ctrd`` in a fresh directory and wait until it answers (:class:`Ctrd`).

    :raises DaemonError: the daemon exited or did not answer in time (the log is in the message).
    """
    daemon = Ctrd(config=config, env=env, python=python)
    daemon.start(timeout)
    return daemon


def start_containerd(
    *,
    policy: str = "shared",
    gc_mutation_threshold: int = 0,
    binary: str = CONTAINERD,
    timeout: float = START_TIMEOUT,
    **options: Any,
) -> Containerd:
    """Start a private containerd in a fresh directory and wait until it answers (:class:`Containerd`;
    *options* are its other keyword arguments).

    :raises DaemonError: containerd is missing, exited, or did not answer in time.
    """
    if not containerd_available(binary):
        raise DaemonError(f"{binary} is not installed (apt-get install containerd) or not running as root")
    daemon = Containerd(policy=policy, gc_mutation_threshold=gc_mutation_threshold, binary=binary, **options)
    daemon.start(timeout)
    return daemon


@contextlib.contextmanager
def _running(daemon: DaemonProcess) -> Iterator[Any]:
    try:
        yield daemon
    except Exception:
        print(f"--- {daemon.kind} log {daemon.log_path} ---\n{daemon.log()}", file=sys.stderr)
        raise
    finally:
        daemon.stop()


@contextlib.contextmanager
def running_ctrd(config: str = "", *, env: Mapping[str, str] | None = None) -> Iterator[Ctrd]:
    """:func:`start_ctrd` as a context manager: stopped and removed on exit (its log printed
    to stderr when the body raises)."""
    with _running(start_ctrd(config, env=env)) as daemon:
        yield daemon


@contextlib.contextmanager
def running_containerd(
    *, policy: str = "shared", gc_mutation_threshold: int = 0, binary: str = CONTAINERD, **options: Any
) -> Iterator[Containerd]:
    """:func:`start_containerd` as a context manager: stopped and removed on exit (its log
    printed to stderr when the body raises)."""
    daemon = start_containerd(
        policy=policy, gc_mutation_threshold=gc_mutation_threshold, binary=binary, **options
    )
    with _running(daemon) as d:
        yield d
