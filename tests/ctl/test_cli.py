"""``ctrdctl`` against ctrd: formats, errors, progress bars, completion, events, the console script.

Most commands run in this process through :func:`ctrd.ctl.main` (fast); the
console script itself runs as a subprocess where the process boundary matters
(exit status and stderr of a real process, signals, pipes, a terminal).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ctrd import errdefs
from ctrd.client import Client, ContentDelete
from ctrd.ctl import _commands
from ctrd.ctl import main as ctl_main
from ctrd.ctl._commands import parse_duration, parse_labels
from ctrd.ctl._output import human_duration, human_size
from ctrd.ctl._progress import ProgressBar
from ctrd.testing import DaemonProcess

from .conftest import CTRDCTL, run_tool

BIN = Path(sys.executable).parent


class Result:
    def __init__(self, rc: int, out: bytes, err: str) -> None:
        self.rc, self.raw, self.err = rc, out, err

    @property
    def out(self) -> str:
        return self.raw.decode()

    def json(self) -> object:
        return json.loads(self.raw)


@pytest.fixture
def ctl_in(ctrd_proc: DaemonProcess) -> Callable[..., Result]:
    """``ctl_in(*args, namespace="default", stdin=b"")``: ctrdctl's main in this process."""

    def run(*args: str, namespace: str = "default", stdin: bytes = b"", address: str | None = None) -> Result:
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        err = io.StringIO()
        argv = ["--address", address or ctrd_proc.address, "--namespace", namespace, *args]
        rc = ctl_main(argv, stdin=io.BytesIO(stdin), out=out, err=err)
        out.flush()
        return Result(rc, raw.getvalue(), err.getvalue())

    return run


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- helpers without a daemon ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "want"),
    [(0, "0B"), (7, "7B"), (999, "999B"), (1000, "1kB"), (4321, "4.321kB"), (1_000_000, "1MB"),
     (3 * 1024 * 1024 + 17, "3.146MB"), (64 * 1024 * 1024, "67.11MB"), (1 << 30, "1.074GB")],
)  # fmt: skip
def test_human_size(n: int, want: str) -> None:
    assert human_size(n) == want


@pytest.mark.parametrize(
    ("seconds", "want"),
    [(0.5, "Less than a second"), (1, "1 second"), (28, "28 seconds"), (60, "About a minute"),
     (300, "5 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
     (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years")],
)  # fmt: skip
def test_human_duration(seconds: float, want: str) -> None:
    assert human_duration(_dt.timedelta(seconds=seconds)) == want


def test_parse_duration_and_labels() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("1m30s") == 90
    assert parse_duration("24h") == 86400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2.5") == 2.5
    assert parse_duration("0") == 0
    for bad in ("", "1x", "s", "1h-"):
        with pytest.raises(ValueError, match=r"^time: (invalid duration|unknown unit)"):
            parse_duration(bad)
    assert parse_labels(["a=b", "c", "d=", "e=x=y"]) == {"a": "b", "c": "true", "d": "", "e": "x=y"}
    with pytest.raises(errdefs.InvalidArgument):
        parse_labels(["=v"])


def test_progress_bar_render() -> None:
    bar = ProgressBar(io.StringIO(), "ref", 100_000_000)
    bar.update(0)
    bar._start = 0.0  # pin the clock for the rendering
    bar.update(25_000_000)
    line = bar.render(1.0, 100)
    assert line.startswith("ref [")
    assert "25MB/100MB" in line
    assert "25MB/s" in line
    assert "ETA 0:03" in line
    assert "=" * 5 in line
    assert ">" in line
    final = bar.render(4.0, 100, final=True)
    assert "ETA" not in final
    assert "in 4.0s" in final
    narrow = bar.render(1.0, 30)
    assert len(narrow) <= 30
    assert "[" not in narrow
    unknown = ProgressBar(io.StringIO(), "s", None)
    unknown.update(0)
    unknown._start = 0.0
    unknown.update(5_000_000)
    assert unknown.render(1.0, 80) == "s 5MB 5MB/s"


# -- listings and formats ----------------------------------------------------------------------------


def test_listings_table_and_json(ctl_in: Callable[..., Result]) -> None:
    ns = "fmt"
    data = os.urandom(2 * 1024 * 1024)
    d = sha(data)
    r = ctl_in(
        "content",
        "ingest",
        "r1",
        "--label",
        "containerd.io/gc.root=x",
        "--label",
        "a=b",
        namespace=ns,
        stdin=data,
    )
    assert (r.rc, r.out.strip()) == (0, d)
    r = ctl_in("content", "ls", namespace=ns)
    header, row = r.out.splitlines()
    assert header.split() == ["DIGEST", "SIZE", "AGE", "LABELS"]
    assert row.split()[:2] == [d, "2.097MB"]
    assert row.endswith("a=b,containerd.io/gc.root=x")
    docs = ctl_in("content", "ls", "--format", "json", namespace=ns).json()
    assert isinstance(docs, list)
    assert len(docs) == 1
    assert {k: docs[0][k] for k in ("digest", "size", "labels")} == {
        "digest": d, "size": len(data), "labels": {"containerd.io/gc.root": "x", "a": "b"}
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", docs[0]["created_at"])
    assert ctl_in("content", "ls", "-q", "labels.a==b", namespace=ns).out == d + "\n"
    assert ctl_in("content", "ls", "-q", "labels.a==c", namespace=ns).out == ""

    # content label, get -o, active, abort
    assert ctl_in("content", "label", d, "a=", "n", namespace=ns).out == "containerd.io/gc.root=x,n=true\n"
    assert ctl_in("content", "label", d, "--format", "json", namespace=ns).json() == {
        "containerd.io/gc.root": "x", "n": "true"
    }  # fmt: skip
    out_file = Path(f"/tmp/ctl-get-{os.getpid()}")
    try:
        assert ctl_in("content", "get", d, "-o", str(out_file), namespace=ns).rc == 0
        assert out_file.read_bytes() == data
    finally:
        out_file.unlink(missing_ok=True)
    assert ctl_in("content", "get", d, namespace=ns).raw == data
    bad = ctl_in("content", "ingest", "part", "--expected-digest", sha(b"x"), namespace=ns, stdin=b"partial")
    assert bad.rc == 1
    assert "unexpected commit digest" in bad.err
    act = ctl_in("content", "active", namespace=ns).out.splitlines()
    assert act[0].split() == ["REF", "SIZE", "TOTAL", "AGE"]
    assert act[1].split()[:3] == ["part", "7B", "7B"]
    [st] = ctl_in("content", "active", "--format", "json", namespace=ns).json()  # type: ignore[misc]
    assert (st["ref"], st["offset"], st["total"]) == ("part", 7, 7)
    assert ctl_in("content", "active", "-q", "ref==nope", namespace=ns).out == ""
    assert ctl_in("content", "abort", "part", namespace=ns).out == "part\n"
    assert ctl_in("content", "active", "-q", namespace=ns).out == ""
    failed = ctl_in("ns", "rm", ns)
    assert failed.rc == 1
    assert failed.err.startswith(f"ctrdctl: unable to delete {ns}: ")
    assert failed.out == ""
    assert ctl_in("content", "rm", d, namespace=ns).out == d + "\n"


def test_namespace_and_lease_listings(ctl_in: Callable[..., Result]) -> None:
    # namespaces
    assert ctl_in("namespaces", "create", "fmt2", "k=v").rc == 0
    assert ctl_in("ns", "label", "fmt2", "z=1").rc == 0
    lines = ctl_in("namespaces", "ls").out.splitlines()
    assert lines[0].split() == ["NAME", "LABELS"]
    assert ["fmt2", "k=v,z=1"] in [line.split() for line in lines]
    assert {"name": "fmt2", "labels": {"k": "v", "z": "1"}} in ctl_in("ns", "list", "--format", "json").json()  # type: ignore[operator]
    assert "fmt2" in ctl_in("ns", "ls", "-q").out.split()
    assert ctl_in("ns", "rm", "fmt2").out == "fmt2\n"

    # leases
    assert ctl_in("leases", "create", "--id", "LX", "-x", "0", "k=v").out == "LX\n"
    made = ctl_in("leases", "create", "--format", "json").json()
    assert isinstance(made, dict)
    assert made["labels"]["containerd.io/gc.expire"].endswith("Z")
    lines = ctl_in("leases", "ls").out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "AT", "LABELS"]
    assert [line.split()[2] for line in lines[1:] if line.startswith("LX ")] == ["k=v"]
    assert {x["id"] for x in ctl_in("leases", "ls", "--format", "json").json()} == {"LX", made["id"]}  # type: ignore[union-attr, index]
    assert ctl_in("leases", "ls", "-q", "id==LX").out == "LX\n"
    assert ctl_in("leases", "rm", "--sync", "LX", made["id"]).out == f"LX\n{made['id']}\n"


def test_plugin_listings_and_version(ctl_in: Callable[..., Result]) -> None:
    plugins = ctl_in("plugins", "ls").out.splitlines()
    assert plugins[0].split() == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    assert ["io.containerd.grpc.v1", "content", "-", "ok"] in [p.split() for p in plugins]
    detailed = ctl_in("plugins", "ls", "-d", "id==content").out
    assert "ID:            content" in detailed
    assert "Requires:" in detailed
    pj = ctl_in("plugins", "ls", "--format", "json", "type==io.containerd.grpc.v1").json()
    assert isinstance(pj, list)
    assert all(p["type"] == "io.containerd.grpc.v1" and p["status"] == "ok" for p in pj)
    assert ctl_in("plugins", "ls", "-q", "id==leases").out.split() == ["leases"]
    v = ctl_in("version").out
    assert v.startswith("Client:\n  Version:  ")
    assert "\nServer:\n  Version:  0.1.0\n" in v
    assert "UUID: " in v
    vj = ctl_in("version", "--format", "json").json()
    assert isinstance(vj, dict)
    assert vj["server"]["revision"] == "ctrd"


# -- errors ------------------------------------------------------------------------------------------


def test_daemon_errors_are_one_line(ctl_in: Callable[..., Result], tmp_path: Path) -> None:
    cases = [
        (("content", "get", "sha256:" + "0" * 64), "content digest sha256:" + "0" * 64 + ": not found"),
        (("content", "get", "nodigest"), "invalid checksum digest format"),
        (("content", "ls", "labels.=="), "invalid argument"),
        (("namespaces", "create", "Bad Name"), "invalid argument"),
        (("leases", "rm", "nosuch"), 'lease "nosuch": not found'),
        (("content", "abort", "nosuch"), "not found"),
        (("--timeout", "soon", "version"), "invalid duration"),
    ]
    for args, want in cases:
        r = ctl_in(*args)
        assert r.rc == 1, args
        assert r.err.startswith("ctrdctl: "), (args, r.err)
        assert r.err.count("\n") == 1, (args, r.err)
        assert want in r.err, (args, r.err)
    assert ctl_in("namespaces", "create", "dup").rc == 0
    r = ctl_in("namespaces", "create", "dup")
    assert (r.rc, r.err) == (1, 'ctrdctl: namespace "dup": already exists\n')
    r = ctl_in("version", address=str(tmp_path / "nope.sock"))
    assert r.rc == 1
    assert (
        r.err
        == f"ctrdctl: cannot connect to {tmp_path / 'nope.sock'}: No such file or directory: unavailable\n"
    )


async def _silent_server(path: str, stop: asyncio.Event) -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_unix_server(hold, path)
    await stop.wait()
    for w in held:
        w.close()
    server.close()


def test_deadline_error(tmp_path: Path) -> None:
    import threading

    sock = str(tmp_path / "silent.sock")
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_until_complete, args=(_silent_server(sock, stop),))
    t.start()
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        err = io.StringIO()
        rc = ctl_main(["-a", sock, "--timeout", "300ms", "namespaces", "ls"], out=io.StringIO(), err=err)
        assert (rc, err.getvalue()) == (1, "ctrdctl: deadline exceeded\n")
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(5)
        loop.close()


@pytest.mark.parametrize("cls", errdefs.ALL_ERRORS)
def test_every_error_class_is_one_line(
    cls: type[errdefs.Error], ctl_in: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_a: object) -> int:
        raise cls("something went wrong")

    monkeypatch.setitem(_commands.COMMANDS, "namespaces ls", boom)
    r = ctl_in("namespaces", "ls")
    assert (r.rc, r.out, r.err) == (1, "", f"ctrdctl: something went wrong: {cls.suffix}\n")


def test_usage_errors_exit_2(ctl_in: Callable[..., Result]) -> None:
    for args in (("content",), ("content", "get"), ("nosuch",), ("content", "ls", "--format", "xml")):
        err = io.StringIO()
        assert ctl_main(list(args), out=io.StringIO(), err=err) == 2


# -- the console script as a process -----------------------------------------------------------------


def test_console_script_end_to_end(ctrd_proc: DaemonProcess, tmp_path: Path) -> None:
    script = shutil.which("ctrdctl", path=str(BIN)) or shutil.which("ctrdctl")
    assert script, "the ctrdctl console script is not installed"
    env = dict(os.environ, CONTAINERD_ADDRESS=ctrd_proc.address, CONTAINERD_NAMESPACE="script")
    blob = tmp_path / "b"
    blob.write_bytes(b"via the console script\n")
    with blob.open("rb") as f:
        p = subprocess.run(
            [script, "content", "ingest", "s1"], stdin=f, capture_output=True, env=env, timeout=60
        )
    assert p.returncode == 0
    assert p.stdout.decode().strip() == sha(blob.read_bytes())
    p = subprocess.run([script, "content", "ls", "-q"], capture_output=True, env=env, timeout=60)
    assert p.stdout.decode().split() == [sha(blob.read_bytes())]
    p = subprocess.run(
        [script, "content", "get", "sha256:" + "0" * 64], capture_output=True, env=env, timeout=60
    )
    assert p.returncode == 1
    assert p.stderr.decode().count("\n") == 1
    assert b"Traceback" not in p.stderr
    p = subprocess.run([script, "content"], capture_output=True, env=env, timeout=60)
    assert p.returncode == 2
    assert b"usage: ctrdctl content" in p.stderr
    p = subprocess.run([script, "-a", str(tmp_path / "x.sock"), "version"], capture_output=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith(b"ctrdctl: cannot connect to ")
    p = subprocess.run(
        [script, "content", "ingest", "tty"],
        capture_output=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0  # /dev/null is an (empty) file, not a terminal


def test_broken_pipe_is_quiet(ctrd_proc: DaemonProcess) -> None:
    data = os.urandom(8 * 1024 * 1024)

    async def put() -> str:
        async with Client(ctrd_proc.address, namespace="pipe") as c:
            return (await c.content.ingest("p", data, labels={"containerd.io/gc.root": "x"})).digest

    d = asyncio.run(put())
    proc = subprocess.Popen(
        [*CTRDCTL, "-a", ctrd_proc.address, "-n", "pipe", "content", "get", d],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()  # as `| head -c 10` does
    err = proc.stderr.read()
    assert proc.wait(30) == 141
    assert err == b""


def test_progress_bar_on_a_terminal(ctrd_proc: DaemonProcess, tmp_path: Path) -> None:
    blob = tmp_path / "big"
    blob.write_bytes(os.urandom(16 * 1024 * 1024))
    for args in (
        ["content", "ingest", "bar", "-f", str(blob)],
        ["content", "get", sha(blob.read_bytes()), "-o", str(tmp_path / "out")],
    ):
        master, slave = pty.openpty()
        try:
            p = subprocess.run(
                [*CTRDCTL, "-a", ctrd_proc.address, "-n", "tty", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=slave,
                timeout=60,
                env=dict(os.environ, COLUMNS="100", TERM="xterm"),
            )
            os.close(slave)
            slave = -1
            shown = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        assert p.returncode == 0, shown
        text = shown.decode()
        final = text.rstrip().split("\r")[-1]
        assert re.search(r"\[=+\] 16\.78MB/16\.78MB [\d.]+[kMG]?B/s in \d+\.\ds", final), text
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    # no terminal: no bar
    p = run_tool(CTRDCTL, ctrd_proc.address, "content", "ingest", "nobar", "-f", str(blob), namespace="tty")
    assert p.returncode == 0
    assert p.stderr == b""


def test_events_command(ctrd_proc: DaemonProcess) -> None:
    proc = subprocess.Popen(
        [*CTRDCTL, "-a", ctrd_proc.address, "events", "namespace==evcli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        os.set_blocking(proc.stdout.fileno(), False)

        async def publish_until_seen() -> str:
            async with Client(ctrd_proc.address, namespace="evcli") as c:
                for _ in range(300):
                    await c.events.publish("/test/cli", ContentDelete(digest="sha256:abc"))
                    await asyncio.sleep(0.05)
                    line = proc.stdout.readline() if proc.stdout else ""
                    if line:
                        return line
            raise AssertionError("no event printed")

        line = asyncio.run(publish_until_seen())
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC"
        assert re.fullmatch(stamp + r' evcli /test/cli \{"digest":"sha256:abc"\}\n', line), line
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
    assert rc == 130
    assert "Traceback" not in proc.stderr.read()


# -- completion --------------------------------------------------------------------------------------


_SCRIPT: list[str] = []


def _complete(words: list[str], env: dict[str, str]) -> list[str]:
    """Run the generated bash function on a command line (the script is generated once)."""
    if not _SCRIPT:
        raw = io.StringIO()
        assert ctl_main(["completion", "bash"], out=raw) == 0
        _SCRIPT.append(raw.getvalue())
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    call = f"COMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n_ctrdctl\n"
    prog = _SCRIPT[0] + "\n" + call + "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    p = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return sorted(x for x in p.stdout.splitlines() if x)


def test_bash_completion(ctrd_proc: DaemonProcess, tmp_path: Path) -> None:
    # a ctrdctl on PATH for the dynamic completions
    shim = tmp_path / "ctrdctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m ctrd.ctl "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert _complete(["ctrdctl", "con"], env) == ["content"]
    assert _complete(["ctrdctl", "ns", "l"], env) == ["label", "list", "ls"]
    assert "--expected-digest" in _complete(["ctrdctl", "content", "ingest", "--ex"], env)
    assert _complete(["ctrdctl", "-n", "x", "content", "ls", "--format", ""], env) == ["json", "table"]
    assert _complete(["ctrdctl", "completion", ""], env) == ["bash", "zsh"]
    # from the daemon: namespaces and digests (with the -a/-n given on the line)
    asyncio.run(_put(ctrd_proc.address, "compl", b"complete me"))
    assert "compl" in _complete(["ctrdctl", "-a", ctrd_proc.address, "-n", ""], env)
    assert _complete(["ctrdctl", "-a", ctrd_proc.address, "-n", "compl", "content", "get", "sha"], env) == [
        sha(b"complete me")
    ]
    zsh = subprocess.run([*CTRDCTL, "completion", "zsh"], capture_output=True, text=True, check=True).stdout
    assert zsh.endswith(_SCRIPT[0])
    assert "bashcompinit" in zsh
    assert "complete -o default -F _ctrdctl ctrdctl" in zsh
    if shutil.which("zsh"):
        p = subprocess.run(["zsh", "-n", "-c", zsh], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr


async def _put(address: str, ns: str, data: bytes) -> None:
    async with Client(address, namespace=ns) as c:
        await c.content.ingest("c", data, labels={"containerd.io/gc.root": "x"})
