"""Registrations, entry-point discovery, and the init context."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytest
from _daemon import TESTPLUGINS
from pydantic import BaseModel

from ctrd import errdefs
from ctrd.plugin import (
    GROUP,
    GrpcSettings,
    InitContext,
    InvalidRegistration,
    Plugin,
    PluginSet,
    Registration,
    SkipPlugin,
    discover,
    split_uri,
    types,
)


async def _init(ic: Any) -> None:
    return None


# -- Registration -----------------------------------------------------------------------


def test_uri_is_type_dot_id() -> None:
    r = Registration(type=types.CONTENT, id="content", init=_init)
    assert r.uri == "io.containerd.content.v1.content"
    assert split_uri(r.uri) == (types.CONTENT, "content")
    assert split_uri("io.containerd.service.v1.content-service") == (types.SERVICE, "content-service")


@pytest.mark.parametrize("uri", ["nodot", ".id", "type.", ""])
def test_split_uri_rejects_non_uris(uri: str) -> None:
    with pytest.raises(InvalidRegistration, match="invalid plugin URI"):
        split_uri(uri)


def test_registration_requires_type_and_id() -> None:
    with pytest.raises(InvalidRegistration, match="plugin: no type"):
        Registration(type="", id="x", init=_init)
    with pytest.raises(InvalidRegistration, match="plugin: no id"):
        Registration(type="io.t.v1", id="", init=_init)


def test_star_must_stand_alone() -> None:
    with pytest.raises(InvalidRegistration, match="'\\*' must stand alone"):
        Registration(type="io.t.v1", id="x", requires=("*", types.CONTENT), init=_init)
    assert Registration(type="io.t.v1", id="x", requires=("*",), init=_init).requires == ("*",)


def test_cannot_require_own_type() -> None:
    with pytest.raises(InvalidRegistration, match="cannot require its own type"):
        Registration(type="io.t.v1", id="x", requires=("io.t.v1",), init=_init)


def test_skip_plugin_message_contains_skip_plugin() -> None:
    # ctr shows "skip" when init_err's message contains "skip plugin"
    assert str(SkipPlugin("not on this host")) == "skip plugin: not on this host"
    assert str(SkipPlugin()) == "skip plugin"
    assert SkipPlugin("x").reason == "x"


# -- discovery --------------------------------------------------------------------------


def test_builtins_register_through_the_entry_point_group() -> None:
    found = {d.registration.uri: d for d in discover()}
    expected = {
        "io.containerd.content.v1.content",
        "io.containerd.event.v1.exchange",
        "io.containerd.metadata.v1.sqlite",
        "io.containerd.service.v1.content-service",
        "io.containerd.service.v1.namespaces-service",
        "io.containerd.grpc.v1.content",
        "io.containerd.grpc.v1.namespaces",
        "io.containerd.grpc.v1.introspection",
        "io.containerd.grpc.v1.version",
        "io.containerd.grpc.v1.healthcheck",
    }
    assert expected <= set(found)
    for uri in expected:
        assert found[uri].distribution == "ctrd"
        assert found[uri].registration.uri == uri
    assert GROUP == "ctrd.plugins"


def test_test_plugin_package_is_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTPLUGINS))
    found = {d.registration.uri: d for d in discover()}
    for uri in (
        "io.ctrd.test.skip.v1.skipper",
        "io.ctrd.test.fail.v1.broken",
        "io.ctrd.test.import.v1.nomodule",
        "io.ctrd.test.dependant.v1.needs-broken",
        "io.ctrd.test.config.v1.configured",
        "io.containerd.grpc.v1.slow",
    ):
        assert found[uri].distribution == "ctrd-testplugins", uri
    assert found["io.ctrd.test.dependant.v1.needs-broken"].registration.requires == ("io.ctrd.test.fail.v1",)
    assert found["io.ctrd.test.config.v1.configured"].registration.config is not None


async def test_import_failure_keeps_its_type_and_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTPLUGINS))
    found = {d.registration.uri: d for d in discover()}
    broken = found["io.ctrd.test.import.v1.nomodule"].registration
    assert (broken.type, broken.id) == ("io.ctrd.test.import.v1", "nomodule")
    with pytest.raises(ModuleNotFoundError, match="ctrd_testplugins_no_such_module"):
        await broken.init(None)  # type: ignore[arg-type]


def _dist(tmp_path: Path, group: str, entries: dict[str, str]) -> None:
    info = tmp_path / "ctrd_bad-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ctrd-bad\nVersion: 1.0\n")
    lines = [f"[{group}]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "ctrd_bad_mod.py").write_text(
        "from ctrd.plugin import Registration\n"
        "async def _init(ic):\n    return 42\n"
        "good = Registration(type='io.bad.v1', id='good', init=_init)\n"
        "not_a_registration = object()\n"
    )


async def test_discovery_errors_become_failing_registrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    group = "ctrd.test.discovery"
    _dist(
        tmp_path,
        group,
        {
            "io.bad.v1.good": "ctrd_bad_mod:good",
            "io.bad.v1.renamed": "ctrd_bad_mod:good",  # names a different URI
            "io.bad.v1.notreg": "ctrd_bad_mod:not_a_registration",
            "io.bad.v1.noattr": "ctrd_bad_mod:missing_attribute",
            "not-a-uri": "ctrd_bad_mod:good",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {d.registration.uri: d for d in discover(group)}
    assert set(found) == {"io.bad.v1.good", "io.bad.v1.renamed", "io.bad.v1.notreg", "io.bad.v1.noattr"}
    assert all(d.distribution == "ctrd-bad" for d in found.values())
    assert await found["io.bad.v1.good"].registration.init(None) == 42  # type: ignore[arg-type]
    with pytest.raises(
        InvalidRegistration, match=r"entry point io\.bad\.v1\.renamed names plugin io\.bad\.v1\.good"
    ):
        await found["io.bad.v1.renamed"].registration.init(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRegistration, match="is not a Registration"):
        await found["io.bad.v1.notreg"].registration.init(None)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        await found["io.bad.v1.noattr"].registration.init(None)  # type: ignore[arg-type]
    assert "not-a-uri" in caplog.text


# -- PluginSet and InitContext ------------------------------------------------------------


def _ctx(plugins: PluginSet, reg: Registration, tmp_path: Path) -> InitContext:
    p = Plugin(reg)
    plugins.add(p)
    return InitContext(
        p, plugins, root=tmp_path / "root", state=tmp_path / "state", config=None, properties={"k": "v"}
    )


def test_plugin_set_rejects_duplicates() -> None:
    ps = PluginSet()
    r = Registration(type="io.t.v1", id="x", init=_init)
    ps.add(Plugin(r))
    with pytest.raises(errdefs.AlreadyExists, match=r"plugin io\.t\.v1\.x already initialized"):
        ps.add(Plugin(r))
    assert len(ps) == 1
    assert ps.get("io.t.v1.x") is not None
    assert ps.get("io.t.v1.y") is None


def test_init_context_dirs_are_per_plugin_root_0700_state_0711(tmp_path: Path) -> None:
    ps = PluginSet()
    ic = _ctx(ps, Registration(type="io.t.v1", id="x", init=_init), tmp_path)
    assert not (tmp_path / "root").exists()  # created on first access only
    assert ic.root == tmp_path / "root" / "io.t.v1.x"
    assert ic.state == tmp_path / "state" / "io.t.v1.x"
    for d, mode in ((ic.root, 0o700), (ic.state, 0o711)):
        assert d.is_dir()
        assert stat.S_IMODE(d.stat().st_mode) == mode
    ic.exports["a"] = "b"
    ic.capabilities.append("cap")
    ic.platforms.append("linux/amd64")
    p = ps.get("io.t.v1.x")
    assert p is not None
    assert (p.exports, p.capabilities, p.platforms) == ({"a": "b"}, ["cap"], ["linux/amd64"])
    assert ic.properties == {"k": "v"}
    assert ic.registration.uri == "io.t.v1.x"


def test_init_context_lookups(tmp_path: Path) -> None:
    ps = PluginSet()
    ok = Plugin(Registration(type="io.dep.v1", id="ok", init=_init), instance="OK")
    skipped = Plugin(Registration(type="io.dep.v1", id="skipped", init=_init), error=SkipPlugin("no"))
    failed = Plugin(Registration(type="io.bad.v1", id="failed", init=_init), error=RuntimeError("boom"))
    for p in (ok, skipped, failed):
        ps.add(p)
    ic = _ctx(ps, Registration(type="io.user.v1", id="u", init=_init), tmp_path)

    assert ic.get_single("io.dep.v1") == "OK"  # the skipped one does not count
    assert ic.get_single("io.dep.v1", str) == "OK"
    with pytest.raises(errdefs.FailedPrecondition, match="is not a int"):
        ic.get_single("io.dep.v1", int)
    with pytest.raises(errdefs.NotFound, match=r"no working plugin of type io.bad.v1 .*boom"):
        ic.get_single("io.bad.v1")
    with pytest.raises(errdefs.NotFound, match=r"no plugins registered for io\.none\.v1"):
        ic.get_single("io.none.v1")
    assert ic.get_by_id("io.dep.v1", "ok") == "OK"
    with pytest.raises(errdefs.NotFound, match="not loaded: skip plugin: no"):
        ic.get_by_id("io.dep.v1", "skipped")
    with pytest.raises(errdefs.NotFound):
        ic.get_by_id("io.dep.v1", "absent")
    assert ic.get_by_type("io.dep.v1") == {"ok": "OK"}
    assert ic.get_by_type("io.dep.v1", str) == {"ok": "OK"}
    with pytest.raises(errdefs.FailedPrecondition, match="is not a int"):
        ic.get_by_type("io.dep.v1", int)
    assert ic.get_by_type("io.none.v1") == {}

    ps.add(Plugin(Registration(type="io.dep.v1", id="ok2", init=_init), instance="OK2"))
    with pytest.raises(errdefs.FailedPrecondition, match=r"multiple plugins of type io\.dep\.v1"):
        ic.get_single("io.dep.v1")
    assert [p.registration.id for p in ps.by_type("io.dep.v1")] == ["ok", "skipped", "ok2"]
    assert skipped.skipped
    assert not skipped.ok
    assert not failed.skipped
    assert not failed.ok
    assert ok.ok


class _Cfg(BaseModel):
    greeting: str = "hi"


@runtime_checkable
class _Greeter(Protocol):
    def greet(self) -> str: ...


class _Hello:
    def __init__(self, text: str) -> None:
        self.text = text

    def greet(self) -> str:
        return self.text


async def test_daemon_gives_typed_config_grpc_settings_and_string_properties(tmp_path: Path) -> None:
    from ctrd.server.config import Config, GrpcConfig
    from ctrd.server.daemon import Daemon

    seen: dict[str, Any] = {}

    async def provider(ic: InitContext[_Cfg]) -> _Hello:
        seen["config"] = ic.config
        seen["grpc"] = ic.grpc
        seen["properties"] = dict(ic.properties)
        return _Hello(ic.config.greeting)

    async def user(ic: InitContext[None]) -> str:
        seen["user_config"] = ic.config
        return ic.get_single("io.t.greeter.v1", _Greeter).greet()  # required by a protocol

    regs: list[Registration] = [
        Registration(type="io.t.greeter.v1", id="p", config=_Cfg, init=provider),
        Registration(type="io.t.user.v1", id="u", requires=("io.t.greeter.v1",), init=user),
    ]
    sock = str(tmp_path / "s.sock")
    cfg = Config(
        root=str(tmp_path / "root"),
        state=str(tmp_path / "state"),
        grpc=GrpcConfig(address=sock, max_recv_message_size=1 << 20, max_send_message_size=2 << 20),
        plugins={"io.t.greeter.v1.p": {"greeting": "moin"}},
    )
    daemon = Daemon(cfg, regs)
    await daemon.load_plugins()
    try:
        assert seen["config"] == _Cfg(greeting="moin")
        assert seen["user_config"] is None
        assert seen["grpc"] == GrpcSettings(
            address=sock, max_recv_message_size=1 << 20, max_send_message_size=2 << 20
        )
        # containerd's string properties only: no daemon, no whole config
        assert seen["properties"] == {
            "grpc.address": sock,
            "root": str(tmp_path / "root"),
            "state": str(tmp_path / "state"),
        }
        u = daemon.plugins.get("io.t.user.v1.u")
        assert u is not None
        assert u.instance == "moin"
    finally:
        await daemon.close_plugins()
