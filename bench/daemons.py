"""The two daemons under test, ctrd and a private containerd, on :mod:`ctrd.testing`'s launcher.

Both live in sub-directories of one benchmark directory (same filesystem), listen
only on unix sockets there, and are stopped by their own PID (SIGTERM, then
SIGKILL). containerd's config is :func:`ctrd.testing.containerd_config` (the
reference ``start-containerd.sh``, debug and metrics TCP endpoints off: other
engineers run daemons on this machine, fixed ports would collide). Both collectors
run on :data:`ctrd.testing.GC_DEFAULTS` (``mutation_threshold = 0``), so they do
not collect benchmark blobs. This module adds what the benchmark needs on top:
process accounting from ``/proc``, siblings (a daemon like another in a fresh
directory) and :class:`BenchError` for a daemon that does not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Final

from ctrd import testing
from ctrd.testing import GC_DEFAULTS, START_TIMEOUT, toml_str

__all__ = [
    "BenchError",
    "Containerd",
    "Ctrd",
    "Daemon",
    "find_binary",
    "toml_str",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the user can act on (missing binary, daemon that does not start...)."""


def find_binary(name: str, explicit: str | None, hint: str) -> str:
    """Absolute path of *explicit* or of *name* on PATH; :class:`BenchError` with *hint* if missing."""
    path = shutil.which(explicit or name)
    if path is None:
        raise BenchError(f"{explicit or name} not found: {hint}")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM the child if the benchmark process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_POPEN: Final[dict[str, Any]] = {
    "start_new_session": True,  # a Ctrl-C reaches the benchmark, which stops the daemons in order
    "preexec_fn": _die_with_parent,
}


class Daemon(testing.DaemonProcess):
    """A daemon under test: :class:`ctrd.testing.DaemonProcess` plus accounting and siblings."""

    ctr: str
    policy: str

    def sibling(self, directory: Path) -> Daemon:
        """A daemon of the same kind and configuration in *directory* (its own root, state, socket)."""
        raise NotImplementedError

    def start(self, timeout: float = START_TIMEOUT) -> Any:
        """Spawn, then wait until ``Version`` answers; :class:`BenchError` when it does not."""
        try:
            return super().start(timeout)
        except testing.DaemonError as exc:
            raise BenchError(str(exc)) from None

    # -- accounting -----------------------------------------------------------------------
    def _stat(self) -> list[str]:
        return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the daemon process so far, all threads."""
        fields = self._stat()
        return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK

    def minor_faults(self) -> int:
        """Minor page faults of the daemon process so far (fresh pages the kernel had to zero-fill)."""
        return int(self._stat()[7])

    def environ(self, name: str) -> str | None:
        """*name* in the running process's environment (``None`` when unset)."""
        try:
            raw = Path(f"/proc/{self.pid}/environ").read_bytes()
        except OSError:
            return None
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep and key.decode(errors="replace") == name:
                return value.decode(errors="replace")
        return None

    def memory(self) -> dict[str, int]:
        """Resident memory in KiB: ``VmRSS`` and ``VmHWM`` (peak), and ``RssAnon`` (heap, stacks)
        against ``RssFile`` (file pages mapped in, e.g. containerd's bolt database)."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
        return out

    def memory_kib(self, field: str = "VmHWM") -> int:
        """A ``/proc/<pid>/status`` field in KiB (``VmHWM`` = peak RSS, ``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0


def _ctrd_config(policy: str, extra_toml: str) -> str:
    gc = "".join(f"    {k} = {toml_str(v) if isinstance(v, str) else v}\n" for k, v in GC_DEFAULTS.items())
    return (
        "version = 2\n"
        "\n[grpc]\n"
        f"  uid = {os.getuid()}\n"
        f"  gid = {os.getgid()}\n"
        "\n[debug]\n"
        '  level = "info"\n'
        '\n[plugins]\n  [plugins."io.containerd.gc.v1.scheduler"]\n'
        + gc
        + '  [plugins."io.containerd.metadata.v1.sqlite"]\n'
        f"    content_sharing_policy = {toml_str(policy)}\n" + extra_toml
    )


class Ctrd(Daemon, testing.Ctrd):
    """``python -m ctrd`` with the interpreter running the benchmark."""

    def __init__(
        self,
        directory: Path,
        ctr: str,
        policy: str,
        extra_env: dict[str, str] | None = None,
        extra_toml: str = "",
    ) -> None:
        testing.Ctrd.__init__(
            self, directory, _ctrd_config(policy, extra_toml), env=extra_env, keep=True, popen=_POPEN
        )
        self.ctr = ctr
        self.policy = policy
        self.extra_env = dict(extra_env or {})
        self.extra_toml = extra_toml

    def sibling(self, directory: Path, extra_toml: str | None = None) -> Ctrd:
        toml = self.extra_toml if extra_toml is None else extra_toml
        return Ctrd(directory, self.ctr, self.policy, self.extra_env, toml)


class Containerd(Daemon, testing.Containerd):
    """A private containerd configured like ``start-containerd.sh`` (GC_MUTATION_THRESHOLD=0)."""

    def __init__(self, directory: Path, ctr: str, policy: str, binary: str) -> None:
        testing.Containerd.__init__(self, directory, policy=policy, binary=binary, keep=True, popen=_POPEN)
        self.ctr = ctr
        self.binary = binary

    def sibling(self, directory: Path) -> Containerd:
        return Containerd(directory, self.ctr, self.policy, self.binary)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        super().wait_ready(timeout)
        if f"policy={self.policy}" not in self.log():
            raise BenchError(f"containerd did not report policy={self.policy}; log:\n{self.log_tail()}")
