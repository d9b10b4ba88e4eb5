"""Daemon lifecycle: plugin init in-process with explicit registrations, and the real process.

In-process tests drive :class:`ctrd.server.daemon.Daemon` with hand-made
registrations. Subprocess tests start ``python -m ctrd`` (see ``conftest.py``):
start without a config file, socket permission, stale and live sockets, graceful
shutdown with an in-flight call, and the receive-size limit measured against
the daemon's memory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _daemon import Launcher, base_env, rss_kib, run_sync, short_tmpdir, version_of
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from pydantic import BaseModel, ConfigDict

from ctrd import __version__, errdefs
from ctrd.api.google.protobuf import Empty
from ctrd.plugin import InitContext, Registration, SkipPlugin
from ctrd.server.config import Config, ConfigError, GrpcConfig
from ctrd.server.daemon import Daemon, StartupError
from ctrd.services.introspection import init_err

MiB = 1 << 20

# -- in-process: plugin loading ------------------------------------------------------------


class Log:
    """Records what the fake plugins did, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def reg(
        self,
        type_: str,
        id_: str,
        *requires: str,
        fail: BaseException | None = None,
        closer: str = "aclose",
        config: type[BaseModel] | None = None,
    ) -> Registration:
        log = self

        class Instance:
            def __init__(self, uri: str, cfg: Any) -> None:
                self.uri = uri
                self.cfg = cfg

        if closer == "aclose":

            async def aclose(self: Any) -> None:
                log.events.append(f"close {self.uri}")

            Instance.aclose = aclose  # type: ignore[attr-defined]
        elif closer == "close":

            def close(self: Any) -> None:
                log.events.append(f"close {self.uri}")

            Instance.close = close  # type: ignore[attr-defined]
        elif closer == "raise":

            def bad_close(self: Any) -> None:
                log.events.append(f"close {self.uri}")
                raise RuntimeError("close failed")

            Instance.close = bad_close  # type: ignore[attr-defined]

        async def init(ic: InitContext) -> Any:
            log.events.append(f"init {ic.registration.uri}")
            if fail is not None:
                raise fail
            return Instance(ic.registration.uri, ic.config)

        return Registration(type=type_, id=id_, requires=tuple(requires), init=init, config=config)

    def inits(self) -> list[str]:
        return [e.removeprefix("init ") for e in self.events if e.startswith("init ")]

    def closes(self) -> list[str]:
        return [e.removeprefix("close ") for e in self.events if e.startswith("close ")]


def make_config(tmp_path: Path, **kw: Any) -> Config:
    sock = str(tmp_path / "s.sock")
    return Config(
        root=str(tmp_path / "root"), state=str(tmp_path / "state"), grpc=GrpcConfig(address=sock), **kw
    )


A, B, C, D = "io.t.a.v1", "io.t.b.v1", "io.t.c.v1", "io.t.d.v1"


async def test_init_order_follows_requires(tmp_path: Path) -> None:
    log = Log()
    regs = [log.reg(C, "c", B), log.reg(A, "a"), log.reg(B, "b", A), log.reg(D, "star", "*")]
    d = Daemon(make_config(tmp_path), regs)
    await d.load_plugins()
    assert log.inits() == ["io.t.a.v1.a", "io.t.b.v1.b", "io.t.c.v1.c", "io.t.d.v1.star"]
    assert [p.uri for p in d.plugins] == log.inits()
    assert all(p.ok for p in d.plugins)
    await d.close_plugins()


async def test_init_failure_is_recorded_not_fatal(tmp_path: Path) -> None:
    log = Log()
    boom = RuntimeError("boom")
    d = Daemon(make_config(tmp_path), [log.reg(A, "bad", fail=boom), log.reg(B, "good")])
    await d.load_plugins()
    bad, good = d.plugins.get("io.t.a.v1.bad"), d.plugins.get("io.t.b.v1.good")
    assert bad is not None
    assert good is not None
    assert bad.error is boom
    assert bad.instance is None
    assert not bad.ok
    assert not bad.skipped
    assert good.ok
    assert good.instance is not None
    st = init_err(bad)
    assert st is not None
    assert st.code == Status.UNKNOWN.value
    assert st.message == "boom"
    assert init_err(good) is None
    await d.close_plugins()
    assert log.closes() == ["io.t.b.v1.good"]  # a failed plugin has nothing to close


async def test_skip_plugin_is_recorded_as_skipped(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path), [log.reg(A, "skipper", fail=SkipPlugin("not on this host"))])
    await d.load_plugins()
    p = d.plugins.get("io.t.a.v1.skipper")
    assert p is not None
    assert p.skipped
    assert not p.ok
    assert p.instance is None
    st = init_err(p)
    assert st is not None
    assert st.code == 2  # what ctr shows as "skip" (with the message below)
    assert "skip plugin" in st.message
    assert st.message == "skip plugin: not on this host"


async def test_failure_propagates_to_dependants_naming_the_type(tmp_path: Path) -> None:
    log = Log()
    regs = [
        log.reg(A, "bad", fail=RuntimeError("boom")),
        log.reg(B, "needs-a", A),
        log.reg(C, "needs-b", B),  # transitively
        log.reg(D, "indep"),
    ]
    d = Daemon(make_config(tmp_path), regs)
    await d.load_plugins()
    # dependants are not even initialised
    assert log.inits() == ["io.t.a.v1.bad", "io.t.d.v1.indep"]
    for uri, lacked in (("io.t.b.v1.needs-a", A), ("io.t.c.v1.needs-b", B)):
        p = d.plugins.get(uri)
        assert p is not None
        assert isinstance(p.error, errdefs.FailedPrecondition)
        assert str(p.error) == f"no working plugin of required type {lacked}: failed precondition"
        st = init_err(p)
        assert st is not None
        assert st.code == Status.FAILED_PRECONDITION.value
        assert lacked in st.message
    indep = d.plugins.get("io.t.d.v1.indep")
    assert indep is not None
    assert indep.ok


async def test_skipped_only_provider_fails_dependant(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path), [log.reg(A, "skip", fail=SkipPlugin("no")), log.reg(B, "user", A)])
    await d.load_plugins()
    user = d.plugins.get("io.t.b.v1.user")
    assert user is not None
    assert not user.ok
    assert A in str(user.error)


async def test_one_working_provider_is_enough(tmp_path: Path) -> None:
    log = Log()
    regs = [log.reg(A, "bad", fail=RuntimeError("x")), log.reg(A, "good"), log.reg(B, "user", A)]
    d = Daemon(make_config(tmp_path), regs)
    await d.load_plugins()
    user = d.plugins.get("io.t.b.v1.user")
    assert user is not None
    assert user.ok


async def test_requirement_on_absent_type_does_not_fail(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path), [log.reg(A, "a", "io.nobody.v1")])
    await d.load_plugins()
    p = d.plugins.get("io.t.a.v1.a")
    assert p is not None
    assert p.ok


async def test_star_plugin_loads_when_others_fail(tmp_path: Path) -> None:
    log = Log()
    regs = [
        log.reg(A, "bad", fail=RuntimeError("boom")),
        log.reg(B, "skip", fail=SkipPlugin("x")),
        log.reg(C, "needs-a", A),
        log.reg(D, "introspection", "*"),
    ]
    d = Daemon(make_config(tmp_path), regs)
    await d.load_plugins()
    star = d.plugins.get("io.t.d.v1.introspection")
    assert star is not None
    assert star.ok
    assert [p.uri for p in d.plugins][-1] == "io.t.d.v1.introspection"
    assert log.inits()[-1] == "io.t.d.v1.introspection"


async def test_required_plugin_missing(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path, required_plugins=["io.t.z.v1.absent"]), [log.reg(A, "a")])
    with pytest.raises(StartupError, match=r"required plugin \['io.t.z.v1.absent'\] not included"):
        await d.load_plugins()


async def test_required_plugin_disabled_is_missing(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, required_plugins=["io.t.a.v1.a"], disabled_plugins=["io.t.a.v1.a"])
    d = Daemon(cfg, [log.reg(A, "a"), log.reg(B, "b")])
    with pytest.raises(StartupError, match=r"io\.t\.a\.v1\.a.*not included"):
        await d.load_plugins()
    assert "io.t.a.v1.a" not in log.inits()


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (RuntimeError("boom"), "load required plugin io.t.a.v1.a: boom"),
        (SkipPlugin("nope"), "load required plugin io.t.a.v1.a: skip plugin: nope"),
    ],
)
async def test_required_plugin_failed_or_skipped(tmp_path: Path, fail: BaseException, message: str) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path, required_plugins=["io.t.a.v1.a"]), [log.reg(A, "a", fail=fail)])
    with pytest.raises(StartupError) as ei:
        await d.load_plugins()
    assert str(ei.value) == message


async def test_required_dependant_that_lacked_its_type(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, required_plugins=["io.t.b.v1.b"])
    d = Daemon(cfg, [log.reg(A, "a", fail=RuntimeError("boom")), log.reg(B, "b", A)])
    with pytest.raises(StartupError, match=f"load required plugin io.t.b.v1.b: .*{A}"):
        await d.load_plugins()


async def test_start_failure_closes_what_was_initialised(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, required_plugins=["io.t.c.v1.c"])
    regs = [log.reg(A, "a"), log.reg(B, "b", A), log.reg(C, "c", B, fail=RuntimeError("boom"))]
    d = Daemon(cfg, regs)
    with pytest.raises(StartupError, match=r"load required plugin io\.t\.c\.v1\.c: boom"):
        await d.start()
    assert log.closes() == ["io.t.b.v1.b", "io.t.a.v1.a"]
    assert not os.path.exists(cfg.grpc.address)


async def test_close_in_reverse_init_order(tmp_path: Path) -> None:
    log = Log()
    regs = [
        log.reg(C, "c", B, closer="close"),  # sync close()
        log.reg(B, "b", A, closer="raise"),  # a failing close does not stop the others
        log.reg(A, "a"),  # async aclose()
        log.reg(D, "none", closer="none"),  # nothing to close
        log.reg("io.t.e.v1", "star", "*"),
    ]
    d = Daemon(make_config(tmp_path), regs)
    await d.load_plugins()
    inits = log.inits()
    await d.close_plugins()
    closable = [u for u in inits if u != "io.t.d.v1.none"]
    assert log.closes() == list(reversed(closable))
    await d.close_plugins()  # idempotent
    assert len(log.closes()) == len(closable)


async def test_disabled_plugins_are_not_initialised(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, disabled_plugins=["io.t.a.v1.a", "io.nobody.v1.x"])
    d = Daemon(cfg, [log.reg(A, "a"), log.reg(B, "b")])
    await d.load_plugins()
    assert log.inits() == ["io.t.b.v1.b"]
    assert d.plugins.get("io.t.a.v1.a") is None


async def test_dependency_cycle_is_a_startup_error(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path), [log.reg(A, "a", B), log.reg(B, "b", A)])
    with pytest.raises(StartupError) as ei:
        await d.load_plugins()
    assert str(ei.value) == "circular plugin dependency: io.t.a.v1.a -> io.t.b.v1.b -> io.t.a.v1.a"
    assert log.inits() == []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = 1
    name: str = "x"


async def test_plugin_config_is_validated_and_passed(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, plugins={"io.t.a.v1.a": {"size": 7}})
    d = Daemon(cfg, [log.reg(A, "a", config=_Model), log.reg(B, "b", config=_Model)])
    await d.load_plugins()
    a, b = d.plugins.get("io.t.a.v1.a"), d.plugins.get("io.t.b.v1.b")
    assert a is not None
    assert b is not None
    assert a.instance.cfg == _Model(size=7)
    assert a.config == _Model(size=7)
    assert b.instance.cfg == _Model()  # defaults when no section


async def test_plugin_config_errors_name_file_section_and_key(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, plugins={"io.t.a.v1.a": {"size": "big", "bogus": 1}}).model_copy(
        update={"plugin_sources": {"io.t.a.v1.a": "/etc/ctrd/extra.toml"}}
    )
    d = Daemon(cfg, [log.reg(A, "a", config=_Model)])
    with pytest.raises(ConfigError) as ei:
        await d.load_plugins()
    msg = str(ei.value)
    assert '/etc/ctrd/extra.toml: [plugins."io.t.a.v1.a"] bogus: unknown key' in msg
    assert '/etc/ctrd/extra.toml: [plugins."io.t.a.v1.a"] size:' in msg
    assert log.inits() == []


async def test_section_for_plugin_without_config_model(tmp_path: Path) -> None:
    log = Log()
    d = Daemon(make_config(tmp_path, plugins={"io.t.a.v1.a": {"x": 1}}), [log.reg(A, "a")])
    with pytest.raises(ConfigError, match=r'\[plugins."io.t.a.v1.a"\]: this plugin takes no configuration'):
        await d.load_plugins()


async def test_disabled_plugin_section_is_not_validated(tmp_path: Path) -> None:
    log = Log()
    cfg = make_config(tmp_path, plugins={"io.t.a.v1.a": {"bogus": 1}}, disabled_plugins=["io.t.a.v1.a"])
    d = Daemon(cfg, [log.reg(A, "a", config=_Model), log.reg(B, "b")])
    await d.load_plugins()
    assert log.inits() == ["io.t.b.v1.b"]


async def test_unregistered_section_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    cfg = make_config(tmp_path, plugins={"io.containerd.snapshotter.v1.overlayfs": {"root_path": "/x"}})
    d = Daemon(cfg, [log.reg(A, "a")])
    await d.load_plugins()
    assert "io.containerd.snapshotter.v1.overlayfs" in caplog.text
    assert log.inits() == ["io.t.a.v1.a"]


async def test_plugin_dirs_are_root_and_state_per_uri(tmp_path: Path) -> None:
    seen: dict[str, Path] = {}

    async def init(ic: InitContext) -> None:
        seen["root"], seen["state"] = ic.root, ic.state
        ic.exports["root"] = str(ic.root)

    d = Daemon(make_config(tmp_path), [Registration(type=A, id="dirs", init=init)])
    await d.load_plugins()
    assert seen["root"] == tmp_path / "root" / "io.t.a.v1.dirs"
    assert seen["state"] == tmp_path / "state" / "io.t.a.v1.dirs"
    assert seen["root"].is_dir()
    assert seen["state"].is_dir()
    p = d.plugins.get("io.t.a.v1.dirs")
    assert p is not None
    assert p.exports == {"root": str(tmp_path / "root" / "io.t.a.v1.dirs")}


async def test_in_process_start_serve_stop() -> None:
    from ctrd.services.plugin import version_grpc

    tmp = short_tmpdir()
    try:
        log = Log()
        cfg = make_config(tmp)
        d = Daemon(cfg, [version_grpc, log.reg(A, "a")])
        await d.start()
        assert stat.S_IMODE(os.stat(tmp / "root").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tmp / "state").st_mode) == 0o711
        assert await version_of(cfg.grpc.address) == __version__
        await d.stop()
        assert not os.path.exists(cfg.grpc.address)
        assert log.closes() == ["io.t.a.v1.a"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def test_root_equal_to_state_is_refused(tmp_path: Path) -> None:
    cfg = Config(root=str(tmp_path / "x"), state=str(tmp_path / "x/"), grpc=GrpcConfig(address="/tmp/x.sock"))
    with pytest.raises(StartupError, match="root and state must be different paths"):
        await Daemon(cfg, []).start()
    assert not (tmp_path / "x").exists()


# -- subprocess: start-up ------------------------------------------------------------------


NOBODY = 65534


def _unprivileged() -> tuple[list[str], dict[str, Any]] | None:
    """How a root test run can start ctrd as a non-root user: (command prefix, Popen kwargs)."""
    # a user namespace: euid 65534 inside, while files stay ours outside
    userns = ["unshare", "--user"]
    if shutil.which("unshare") and subprocess.run([*userns, "true"], capture_output=True).returncode == 0:
        return userns, {}
    kw: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    try:
        probe = subprocess.run([sys.executable, "-c", "import ctrd"], capture_output=True, check=False, **kw)
    except OSError:  # e.g. the interpreter is not readable for that user
        return None
    return ([], kw) if probe.returncode == 0 else None


def _wait_serving(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 20
    while "serving..." not in log_path.read_text():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.02)
    return log_path.read_text()


def test_version_flag(daemon: Launcher) -> None:
    r = daemon.run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"ctrd {__version__}"


def test_starts_without_a_config_file(daemon: Launcher) -> None:
    """No --config: embedded defaults, per-user paths when not root, socket path printed."""
    tmp = daemon.tmpdir()
    home, data, run = tmp / "home", tmp / "data", tmp / "run"
    for p in (home, data, run):
        p.mkdir()
    env = base_env({"HOME": str(home), "XDG_DATA_HOME": str(data), "XDG_RUNTIME_DIR": str(run)})
    prefix: list[str] = []
    popen: dict[str, Any] = {}
    if os.geteuid() == 0:
        # as root ctrd (rightly) uses /var/lib/ctrd and /run/ctrd; run it as another user
        how = _unprivileged()
        if how is None:
            _start_without_config_as_root(daemon, tmp, env)
            return
        prefix, popen = how
        if popen:
            for p in (tmp, home, data, run):
                os.chown(p, NOBODY, NOBODY)
    log_path = tmp / "noconfig.log"
    proc = daemon.spawn([], env=env, log_path=log_path, prefix=prefix, **popen)
    sock = run / "ctrd" / "ctrd.sock"
    text = _wait_serving(proc, log_path)
    assert f"serving... address={sock}" in text
    assert run_sync(lambda: version_of(str(sock))) == __version__
    assert (data / "ctrd").is_dir()  # root
    assert (run / "ctrd").is_dir()  # state
    assert (data / "ctrd" / "io.containerd.content.v1.content").is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not sock.exists()


def _start_without_config_as_root(daemon: Launcher, tmp: Path, env: dict[str, str]) -> None:
    """Fallback when no unprivileged user can run ctrd here: the system paths, cleaned up after."""
    root, state, sock = Path("/var/lib/ctrd"), Path("/run/ctrd"), Path("/run/ctrd/ctrd.sock")
    assert not sock.exists(), f"{sock} exists: is a ctrd running on this machine?"
    created = [p for p in (root, state) if not p.exists()]
    log_path = tmp / "noconfig.log"
    proc = daemon.spawn([], env=env, log_path=log_path)
    try:
        text = _wait_serving(proc, log_path)
        assert f"serving... address={sock}" in text
        assert run_sync(lambda: version_of(str(sock))) == __version__
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for p in created:
            shutil.rmtree(p, ignore_errors=True)


def test_socket_mode_is_0660(daemon: Launcher) -> None:
    d = daemon()
    st = os.stat(d.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(d.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d.state).st_mode) == 0o711
    assert re.search(rf"serving\.\.\. address={re.escape(d.socket)}", d.log())
    assert d.stop() == 0
    assert not os.path.exists(d.socket)


def test_stale_socket_is_replaced(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    path = str(tmp / "ctrd.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # a socket file nobody listens on, as a killed daemon leaves it
    dead.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    d = daemon(tmp=tmp)
    assert run_sync(lambda: version_of(d.socket)) == __version__
    assert "removing stale socket" in d.log()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


def test_live_socket_is_refused(daemon: Launcher) -> None:
    first = daemon()
    second = daemon(socket=first.socket, wait=False)
    rc = second.proc.wait(20)
    assert rc != 0
    log = second.log()
    assert f"ctrd: failed to listen on {first.socket}: {first.socket} is in use by a running daemon" in log
    # the first daemon is untouched
    assert os.path.exists(first.socket)
    assert run_sync(lambda: version_of(first.socket)) == __version__


def test_non_socket_file_at_address_is_refused(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    (tmp / "ctrd.sock").write_text("not a socket")
    d = daemon(tmp=tmp, wait=False)
    assert d.proc.wait(20) != 0
    assert "exists and is not a socket" in d.log()
    assert (tmp / "ctrd.sock").read_text() == "not a socket"


def test_json_log_format(daemon: Launcher) -> None:
    d = daemon('[debug]\nformat = "json"\nlevel = "debug"')
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    msgs = [x["msg"] for x in lines]
    assert any(m.startswith("serving... address=") for m in msgs)
    assert any(m.startswith("loading plugin ") for m in msgs)  # debug level honoured
    assert all({"time", "level", "msg"} <= set(x) for x in lines)


def test_ignored_containerd_keys_are_logged(daemon: Launcher) -> None:
    d = daemon('oom_score = -999\n[ttrpc]\naddress = "/x"\n[debug]\nuid = 0\nformat = "text"')
    log = d.log()
    assert "ignoring containerd config key oom_score" in log
    assert "ignoring containerd config key ttrpc" in log
    assert "ignoring containerd config key debug.uid" in log


# -- subprocess: graceful shutdown ---------------------------------------------------------


SLEEP = "/ctrd.test.Slow/Sleep"


async def _slow_call(sock: str, seconds: float) -> Empty:
    ch = Channel(path=sock)
    try:
        method = UnaryUnaryMethod(ch, SLEEP, Empty, Empty)
        return await method(Empty(), metadata={"sleep-seconds": str(seconds)}, timeout=30)
    finally:
        ch.close()


def _connect_refused(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        return exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        s.close()
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_with_in_flight_call(daemon: Launcher, sig: int) -> None:
    d = daemon(plugins=True)
    assert d.records() == [
        "init io.ctrd.test.z.v1.first",
        "init io.ctrd.test.a.v1.second",
        "init io.containerd.grpc.v1.slow",
    ]

    async def scenario() -> tuple[Any, GRPCError | None, bool]:
        import asyncio

        # a connection that is open before the signal, idle while it arrives
        idle = Channel(path=d.socket)
        await UnaryUnaryMethod(idle, SLEEP, Empty, Empty)(Empty(), metadata={"sleep-seconds": "0"})
        call = asyncio.create_task(_slow_call(d.socket, 2.5))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: d.wait_for(lambda: d.records().count("sleep-start") == 2, 10, "sleep-start")
        )
        d.send_signal(sig)
        # new connections are refused while the call is still running
        refused = await loop.run_in_executor(None, lambda: _poll(lambda: _connect_refused(d.socket), 2.0))
        refused_while_in_flight = refused and d.records().count("sleep-end") == 1
        # a new call on the already-open connection is turned away
        new_call_err: GRPCError | None = None
        try:
            await UnaryUnaryMethod(idle, SLEEP, Empty, Empty)(
                Empty(), metadata={"sleep-seconds": "0"}, timeout=5
            )
        except GRPCError as exc:
            new_call_err = exc
        idle.close()
        reply = await call  # the in-flight call completes normally
        return reply, new_call_err, refused_while_in_flight

    reply, new_call_err, refused_while_in_flight = run_sync(scenario, timeout=30)
    assert isinstance(reply, Empty)
    assert refused_while_in_flight, "a new connection was accepted while draining"
    assert new_call_err is not None, "a new call on an open connection was served while draining"
    assert new_call_err.status is Status.UNAVAILABLE
    assert new_call_err.message == "server is shutting down"
    assert d.proc.wait(15) == 0
    assert d.records() == [
        "init io.ctrd.test.z.v1.first",
        "init io.ctrd.test.a.v1.second",
        "init io.containerd.grpc.v1.slow",
        "sleep-start",  # the warm-up call on the idle connection
        "sleep-end",
        "sleep-start",  # the in-flight call
        "sleep-end",
        "close io.containerd.grpc.v1.slow",
        "close io.ctrd.test.a.v1.second",
        "close io.ctrd.test.z.v1.first",
    ]
    assert not os.path.exists(d.socket)
    assert "stopping ctrd" in d.log()


def _poll(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


# -- subprocess: max receive size ----------------------------------------------------------


class RawCodec(CodecBase):
    """Sends bytes as they are (grpclib adds the 5-byte length prefix)."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def _empty_with_padding(size: int) -> bytes:
    """A valid encoding of google.protobuf.Empty, *size* bytes long (one unknown bytes field)."""
    body_len = size - 1 - 5  # tag + 5-byte varint
    varint = bytes([(body_len >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])
    msg = b"\x7a" + varint + b"\0" * body_len  # field 15, length-delimited
    assert len(msg) == size
    return msg


async def _send_raw(sock: str, payload: bytes) -> tuple[Status, str | None]:
    """Send *payload* as one unary request to Slow/Sleep; the call's final status."""
    ch = Channel(path=sock, codec=RawCodec())
    try:
        # When the server refuses the message it answers with the status and resets the
        # stream while we are still sending: send_message then raises StreamTerminatedError
        # and leaving the block raises the GRPCError carrying the status the server sent.
        async with ch.request(SLEEP, Cardinality.UNARY_UNARY, bytes, bytes, timeout=60) as stream:
            await stream.send_message(payload, end=True)
            await stream.recv_message()
        return Status.OK, None
    except GRPCError as exc:
        return exc.status, exc.message
    finally:
        ch.close()


def test_max_recv_message_size_is_enforced_before_buffering(daemon: Launcher) -> None:
    d = daemon("[grpc]\nmax_recv_message_size = 1048576", plugins=True)
    run_sync(lambda: _slow_call(d.socket, 0))  # warm up the code path
    before, peak_before = rss_kib(d.pid), rss_kib(d.pid, "VmHWM")
    payload = _empty_with_padding(64 * MiB)
    status, message = run_sync(lambda: _send_raw(d.socket, payload), timeout=60)
    assert status is Status.RESOURCE_EXHAUSTED, (status, message)
    assert message == f"grpc: received message larger than max ({64 * MiB} vs. {MiB})"
    after, peak = rss_kib(d.pid), rss_kib(d.pid, "VmHWM")
    assert after - before < 16 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    # no new high-water mark beyond the allowance (a higher start-up peak is not ours)
    assert peak <= max(peak_before, before + 16 * 1024), f"peak RSS {peak} KiB, {before} KiB before"
    # the daemon still serves, also on a fresh connection
    assert run_sync(lambda: version_of(d.socket)) == __version__
    assert run_sync(lambda: _send_raw(d.socket, _empty_with_padding(MiB - 1)))[0] is Status.OK


def test_message_under_a_raised_limit_is_accepted(daemon: Launcher) -> None:
    """Control for the test above: the same 64 MiB message goes through when the limit allows it."""
    d = daemon("[grpc]\nmax_recv_message_size = 134217728", plugins=True)
    before = rss_kib(d.pid)
    status, message = run_sync(lambda: _send_raw(d.socket, _empty_with_padding(64 * MiB)), timeout=60)
    assert status is Status.OK, (status, message)
    assert rss_kib(d.pid, "VmHWM") - before > 60 * 1024  # the daemon really buffered it


def test_default_limit_is_16_mib(daemon: Launcher) -> None:
    d = daemon(plugins=True)
    status, message = run_sync(lambda: _send_raw(d.socket, _empty_with_padding(16 * MiB + 1)))
    assert status is Status.RESOURCE_EXHAUSTED
    assert message == f"grpc: received message larger than max ({16 * MiB + 1} vs. {16 * MiB})"
    assert run_sync(lambda: _send_raw(d.socket, _empty_with_padding(16 * MiB)))[0] is Status.OK


def test_unknown_method_is_unimplemented(daemon: Launcher) -> None:
    d = daemon()

    async def call() -> GRPCError:
        ch = Channel(path=d.socket)
        try:
            await UnaryUnaryMethod(ch, "/containerd.services.tasks.v1.Tasks/List", Empty, Empty)(Empty())
        except GRPCError as exc:
            return exc
        finally:
            ch.close()
        raise AssertionError("call succeeded")

    err = run_sync(call)
    assert err.status is Status.UNIMPLEMENTED


@pytest.mark.fast_h2
def test_connections_accept_large_frames(daemon: Launcher) -> None:
    """The server advertises ctrd.wire._h2.MAX_FRAME_SIZE to every client; the SDK's channel does too."""
    from ctrd.wire._h2 import MAX_FRAME_SIZE, LargeFrameChannel

    d = daemon(plugins=True)

    async def check() -> None:
        for ch in (
            Channel(path=d.socket, codec=RawCodec()),
            LargeFrameChannel(path=d.socket, codec=RawCodec()),
        ):
            try:
                payload = _empty_with_padding(MiB)
                async with ch.request(SLEEP, Cardinality.UNARY_UNARY, bytes, bytes, timeout=30) as stream:
                    await stream.send_message(payload, end=True)
                    await stream.recv_message()
                h2 = ch._protocol.connection._connection  # type: ignore[union-attr]  # the h2 connection
                assert h2.remote_settings.max_frame_size == MAX_FRAME_SIZE
                assert h2.max_outbound_frame_size == MAX_FRAME_SIZE
                want_local = MAX_FRAME_SIZE if isinstance(ch, LargeFrameChannel) else 16384
                assert h2.max_inbound_frame_size == want_local
            finally:
                ch.close()

    run_sync(check, timeout=60)


def test_malloc_tuning_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc thresholds are set with mallopt (no re-exec); both opt-outs are honoured."""
    from ctrd.server import cli

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("CTRD_MALLOC_TUNING", "0")
    assert cli.tune_malloc() is False
    monkeypatch.delenv("CTRD_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own glibc setting wins
    assert cli.tune_malloc() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert cli.tune_malloc() is True  # Debian's glibc has mallopt


def test_daemon_starts_without_reexec(daemon: Launcher) -> None:
    """One process from exec to serving: the daemon's PID is the one the launcher started."""
    d = daemon(plugins=True)
    cmdline = Path(f"/proc/{d.pid}/cmdline").read_bytes().split(b"\0")
    assert b"ctrd" in b" ".join(cmdline)
    environ = Path(f"/proc/{d.pid}/environ").read_bytes().decode(errors="replace")
    assert "MALLOC_MMAP_THRESHOLD_" not in environ  # what the former re-exec put there
