"""A private, throw-away containerd (Debian's 1.6.20) for the proxy interop tests.

The config follows ``shared/reference/scripts/start-containerd.sh``: everything
under one short directory in /tmp, CRI and ``internal.v1.opt`` disabled (they
write outside it), the snapshotters that cannot work here disabled, **native**
(and overlayfs) kept -- the metadata plugin needs a snapshotter and the snapshot
proxy test uses native. No debug or metrics listener (no ports). The caller
adds disabled plugins and config text (e.g. ``[proxy_plugins.x]``).

Only the PID this helper started is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"

BASE_DISABLED = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)


class Containerd:
    """One running containerd: ``.dir``, ``.socket``, ``.root``, ``.proc``, ``.log()``."""

    def __init__(self, directory: Path, proc: subprocess.Popen[bytes]) -> None:
        self.dir = directory
        self.proc = proc
        self.socket = str(directory / "containerd.sock")
        self.root = directory / "root"

    def log(self) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def blobs(self) -> list[str]:
        """Digests of the blob files in containerd's local content store."""
        d = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        return sorted("sha256:" + p.name for p in d.glob("*")) if d.is_dir() else []

    def ctr(
        self, *args: str, namespace: str = "default", stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CTR, "--address", self.socket, "--namespace", namespace, *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


#: containerd's collector as the reference script sets it, except that mutations never trigger it
GC_DEFAULT = {
    "pause_threshold": 0.02,
    "deletion_threshold": 0,
    "mutation_threshold": 0,
    "schedule_delay": '"0s"',
    "startup_delay": '"100ms"',
}
#: no collection at all during a test (nothing deleted behind the test's back)
GC_OFF = {**GC_DEFAULT, "deletion_threshold": 1_000_000_000, "startup_delay": '"1h"'}


def config_text(
    directory: Path, *, disabled: Sequence[str] = (), extra: str = "", gc: Mapping[str, object] | None = None
) -> str:
    dis = ",\n".join(f'  "{p}"' for p in (*BASE_DISABLED, *disabled))
    gc_lines = "\n".join(f"    {k} = {v}" for k, v in (gc or GC_DEFAULT).items())
    return f"""version = 2
root = "{directory}/root"
state = "{directory}/state"
temp = "{directory}/tmp"
oom_score = 0
disabled_plugins = [
{dis},
]

[grpc]
  address = "{directory}/containerd.sock"
  uid = {os.getuid()}
  gid = {os.getgid()}

[ttrpc]
  address = "{directory}/containerd.sock.ttrpc"

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
{gc_lines}

{extra}
"""


def start(
    *,
    disabled: Sequence[str] = (),
    extra: str = "",
    gc: Mapping[str, object] | None = None,
    directory: Path | None = None,
    timeout: float = 20.0,
) -> Containerd:
    """Start containerd and wait until ``ctr version`` answers."""
    if not os.path.exists(CONTAINERD):
        raise AssertionError(f"{CONTAINERD} is missing: install Debian's containerd package")
    d = directory or Path(tempfile.mkdtemp(prefix="ctrd-ct-", dir="/tmp"))
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    cfg = d / "config.toml"
    cfg.write_text(config_text(d, disabled=disabled, extra=extra, gc=gc))
    with (d / "log").open("wb") as logf:
        proc = subprocess.Popen(
            [CONTAINERD, "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(d),
        )
    c = Containerd(d, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"containerd exited with {proc.returncode}\n--- log ---\n{c.log()}")
        if os.path.exists(c.socket):
            r = subprocess.run(
                [CTR, "--address", c.socket, "version"], capture_output=True, timeout=10, check=False
            )
            if r.returncode == 0:
                if (gc or GC_DEFAULT).get("startup_delay") in ('"100ms"', '"0s"'):
                    _wait_startup_collection(c, deadline)
                return c
        time.sleep(0.05)
    c.stop()
    raise AssertionError(f"containerd did not answer on {c.socket}\n--- log ---\n{c.log()}")


def _wait_startup_collection(c: Containerd, deadline: float) -> None:
    """Wait for containerd's start-up collection (logged at debug level as ``garbage collected``).

    Blobs a test writes without a lease or a ``gc.root`` label are garbage to
    containerd; its first collection runs ``startup_delay`` after boot and would
    otherwise race the test's first ingest.
    """
    while time.monotonic() < deadline:
        if "garbage collected" in c.log():
            return
        if c.proc.poll() is not None:
            raise AssertionError(f"containerd exited with {c.proc.returncode}\n--- log ---\n{c.log()}")
        time.sleep(0.02)
    c.stop()
    raise AssertionError(f"containerd's start-up collection did not run\n--- log ---\n{c.log()}")


@contextlib.contextmanager
def running(
    *, disabled: Sequence[str] = (), extra: str = "", gc: Mapping[str, object] | None = None
) -> Iterator[Containerd]:
    """Start containerd for the body; stop it and remove its directory afterwards (log printed on failure)."""
    c = start(disabled=disabled, extra=extra, gc=gc)
    ok = False
    try:
        yield c
        ok = True
    finally:
        c.stop()
        if not ok:
            print(f"--- containerd log {c.dir}/log ---\n{c.log()}")
        shutil.rmtree(c.dir, ignore_errors=True)
