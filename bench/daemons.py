"""Start and stop the two daemons under test: ctrd and a private containerd.

Both live in sub-directories of one benchmark directory (same filesystem), listen
only on unix sockets there, and are stopped by their own PID (SIGTERM, then
SIGKILL). containerd's config follows ``start-containerd.sh`` from the reference
notes, with ``mutation_threshold = 0`` so the garbage collector does not collect
benchmark blobs, and the debug/metrics TCP endpoints off (other engineers run
daemons on this machine, fixed ports would collide).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

__all__ = [
    "CONTENT_PLUGIN",
    "BenchError",
    "Containerd",
    "Ctrd",
    "Daemon",
    "find_binary",
    "toml_str",
]

CONTENT_PLUGIN = "io.containerd.content.v1.content"
# The garbage collector's schedule, the same for both daemons: collect after every
# deletion (paced), never because of mutations alone. Everything a benchmark keeps
# carries ``containerd.io/gc.root``; ctrd's default ``mutation_threshold = 100``
# would run a full collection every 100 blobs of the small-ingest and list setups.
GC_SCHEDULER = """  [plugins."io.containerd.gc.v1.scheduler"]
    pause_threshold = 0.02
    deletion_threshold = 0
    mutation_threshold = 0
    schedule_delay = "0s"
    startup_delay = "100ms"
"""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the user can act on (missing binary, daemon that does not start...)."""


def toml_str(s: str | os.PathLike[str]) -> str:
    """*s* as a TOML basic string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


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


class Daemon:
    """One daemon process under test."""

    name: ClassVar[str]

    def __init__(self, directory: Path, ctr: str, policy: str) -> None:
        self.dir = directory
        self.ctr = ctr
        self.policy = policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "log"

    # -- layout -------------------------------------------------------------------------
    @property
    def socket(self) -> str:
        raise NotImplementedError

    @property
    def root(self) -> Path:
        return self.dir / "root"

    def blob_path(self, dgst: str) -> Path:
        """Where the daemon keeps the committed blob *dgst* (both use containerd's layout)."""
        algo, _, hexa = dgst.partition(":")
        return self.root / CONTENT_PLUGIN / "blobs" / algo / hexa

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def write_config(self) -> None:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------
    def sibling(self, directory: Path) -> Daemon:
        """A daemon of the same kind and configuration in *directory* (its own root, state, socket)."""
        raise NotImplementedError

    def start(self) -> None:
        """:meth:`spawn`, then wait until ``ctr version`` answers."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Write the config and start the process; does not wait for it to serve."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=str(self.dir),
                env=self.env(),
                start_new_session=True,  # a Ctrl-C reaches the benchmark, which stops us in order
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``ctr version`` answers on the socket (as start-containerd.sh does)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self.proc.returncode} before serving; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if os.path.exists(self.socket):
                p = subprocess.run(
                    [self.ctr, "--address", self.socket, "version"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                if p.returncode == 0:
                    return
            time.sleep(0.05)
        raise BenchError(
            f"{self.name} did not answer on {self.socket} within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM our own process, SIGKILL after :data:`STOP_TIMEOUT`. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"bench: {self.name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait(5)
        return proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- accounting -----------------------------------------------------------------------
    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the daemon process so far, all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK

    def minor_faults(self) -> int:
        """Minor page faults of the daemon process so far (fresh pages the kernel had to zero-fill)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[7])

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


class Ctrd(Daemon):
    """``python -m ctrd --config <dir>/config.toml`` with the interpreter running the benchmark."""

    name = "ctrd"

    def __init__(
        self,
        directory: Path,
        ctr: str,
        policy: str,
        extra_env: dict[str, str] | None = None,
        extra_toml: str = "",
    ) -> None:
        super().__init__(directory, ctr, policy)
        self.extra_env = dict(extra_env or {})
        self.extra_toml = extra_toml

    @property
    def socket(self) -> str:
        return str(self.dir / "ctrd.sock")

    def sibling(self, directory: Path, extra_toml: str | None = None) -> Ctrd:
        toml = self.extra_toml if extra_toml is None else extra_toml
        return Ctrd(directory, self.ctr, self.policy, self.extra_env, toml)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ctrd", "--config", str(self.dir / "config.toml")]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def write_config(self) -> None:
        (self.dir / "config.toml").write_text(
            "version = 2\n"
            f"root = {toml_str(self.root)}\n"
            f"state = {toml_str(self.dir / 'state')}\n"
            "\n[grpc]\n"
            f"  address = {toml_str(self.socket)}\n"
            f"  uid = {os.getuid()}\n"
            f"  gid = {os.getgid()}\n"
            "\n[debug]\n"
            '  level = "info"\n'
            "\n[plugins]\n" + GC_SCHEDULER + '  [plugins."io.containerd.metadata.v1.sqlite"]\n'
            f"    content_sharing_policy = {toml_str(self.policy)}\n" + self.extra_toml
        )


class Containerd(Daemon):
    """A private containerd configured like ``start-containerd.sh`` (GC_MUTATION_THRESHOLD=0)."""

    name = "containerd"

    def __init__(self, directory: Path, ctr: str, policy: str, binary: str) -> None:
        super().__init__(directory, ctr, policy)
        self.binary = binary

    @property
    def socket(self) -> str:
        return str(self.dir / "containerd.sock")

    def sibling(self, directory: Path) -> Containerd:
        return Containerd(directory, self.ctr, self.policy, self.binary)

    def command(self) -> list[str]:
        return [self.binary, "--config", str(self.dir / "config.toml")]

    def write_config(self) -> None:
        d = self.dir
        (d / "tmp").mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket + ".ttrpc")
        (d / "config.toml").write_text(
            f"""version = 2
root = {toml_str(self.root)}
state = {toml_str(d / "state")}
temp = {toml_str(d / "tmp")}
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
  address = {toml_str(self.socket)}
  uid = {os.getuid()}
  gid = {os.getgid()}

[ttrpc]
  address = {toml_str(self.socket + ".ttrpc")}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""
  grpc_histogram = false

[plugins]
{GC_SCHEDULER}  [plugins."io.containerd.metadata.v1.bolt"]
    content_sharing_policy = {toml_str(self.policy)}
"""
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        super().wait_ready(timeout)
        log = self.log_path.read_text(errors="replace")
        if f"policy={self.policy}" not in log:
            raise BenchError(f"containerd did not report policy={self.policy}; log:\n{self.log_tail()}")
