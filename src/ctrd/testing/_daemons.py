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

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ctrd.testing._process import START_TIMEOUT, DaemonError, DaemonProcess, short_tmpdir, toml_str

__all__ = [
    "CONTAINERD",
    "GC_DEFAULTS",
    "Containerd",
    "Ctrd",
    "containerd_available",
    "containerd_config",
    "ctrd_config",
    "running_containerd",
    "running_ctrd",
    "start_containerd",
    "start_ctrd",
]

CONTAINERD: Final = "/usr/bin/containerd"
"""Debian's containerd binary (``apt-get install containerd``)."""

GC_DEFAULTS: Final[Mapping[str, float | int | str]] = {
    "pause_threshold": 0.02,
    "deletion_threshold": 0,
    "mutation_threshold": 0,
    "schedule_delay": "0s",
    "startup_delay": "100ms",
}
"""The private containerd's collector: after every deletion (paced), never for mutations alone."""


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
