"""Daemon configuration: containerd's version-2 TOML layout, imports, validation, and the CLI."""

from __future__ import annotations

import logging
import os
import re
import tomllib
from pathlib import Path

import pytest
from _daemon import Launcher, toml_str

from ctrd.server.config import Config, ConfigError, GrpcConfig, default_paths, from_mapping, load

MiB = 1 << 20
SQLITE = "io.containerd.metadata.v1.sqlite"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def base(tmp_path: Path) -> str:
    return f"root = {toml_str(tmp_path / 'root')}\nstate = {toml_str(tmp_path / 'state')}\n"


# -- parsing and validation ----------------------------------------------------------------


def test_minimal_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path / "c.toml", base(tmp_path) + '[grpc]\naddress = "/tmp/x.sock"\n'))
    assert cfg.version == 2
    assert cfg.root == str(tmp_path / "root")
    assert cfg.state == str(tmp_path / "state")
    assert cfg.grpc.address == "/tmp/x.sock"
    assert cfg.grpc.max_recv_message_size == 16 * MiB
    assert cfg.grpc.max_send_message_size == 16 * MiB
    assert (cfg.disabled_plugins, cfg.required_plugins, cfg.plugins) == ([], [], {})


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", 'root = "/x"\nstate = \n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: invalid TOML: "):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.toml")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", base(tmp_path) + "bogus_key = 1\n")
    with pytest.raises(ConfigError) as ei:
        load(path)
    assert str(ei.value) == f"{path}: bogus_key: unknown key"


def test_unknown_key_in_grpc(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", base(tmp_path) + '[grpc]\naddress = "/x.sock"\nmax_msg = 3\n')
    with pytest.raises(ConfigError) as ei:
        load(path)
    assert str(ei.value) == f"{path}: grpc.max_msg: unknown key"


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ("[grpc]\nmax_recv_message_size = 0", "grpc.max_recv_message_size"),
        ('[grpc]\nmax_recv_message_size = "big"', "grpc.max_recv_message_size"),
        ('[debug]\nlevel = "loud"', "debug.level"),
        ('[debug]\nformat = "xml"', "debug.format"),
        ('[metrics]\nhost = "x"', "metrics.host: unknown key"),
        ("[proxy_plugins.p]\naddress = '/x.sock'", "proxy_plugins.p.type"),
        ('plugin_sources = {a = "b"}', "plugin_sources: unknown key"),
        ('disabled_plugins = ["nodot"]', "invalid plugin URI 'nodot'"),
        ('required_plugins = ["nodot"]', "invalid plugin URI 'nodot'"),
        ('imports = "other.toml"', "imports: must be a list"),
        ('[authorization]\nenabled = "yes"', "authorization.enabled"),
        ("[authorization]\nprincipals = 3", "authorization.principals"),
        (
            '[[authorization.principals]]\nnamespaces = ["a"]',
            "authorization.principals.0: a principal needs at least one of uids, gids, tls_subjects",
        ),
        ("[[authorization.principals]]\nuids = [-1]", "authorization.principals.0.uids.0"),
        ("[[authorization.principals]]\ngids = [4294967295]", "authorization.principals.0.gids.0"),
        ('[[authorization.principals]]\nuids = [1]\nnamespaces = ["a b"]', "'a b' may only hold"),
        ('[[authorization.principals]]\nuids = [1]\nnamespaces = [""]', "must not be empty"),
        (
            "[[authorization.principals]]\nuids = [1]\nbogus = 1",
            "authorization.principals.0.bogus: unknown key",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, section: str, needle: str) -> None:
    path = write(tmp_path / "c.toml", base(tmp_path) + section + "\n")
    with pytest.raises(ConfigError) as ei:
        load(path)
    assert str(path) in str(ei.value)
    assert needle in str(ei.value)


def test_authorization_is_off_by_default_and_parsed(tmp_path: Path) -> None:
    assert load(write(tmp_path / "a.toml", base(tmp_path))).authorization.enabled is False
    cfg = load(
        write(
            tmp_path / "c.toml",
            base(tmp_path)
            + "[authorization]\nenabled = true\n"
            + '[[authorization.principals]]\nname = "team-a"\nuids = [1000]\ngids = [100]\n'
            + 'namespaces = ["team-a", "team-a-*"]\n'
            + '[[authorization.principals]]\ntls_subjects = ["ci.example"]\nnamespaces = ["ci"]\n'
            + "manage_namespaces = true\n",
        )
    )
    auth = cfg.authorization
    assert auth.enabled
    assert len(auth.principals) == 2
    assert auth.principals[0].uids == [1000]
    assert auth.principals[0].manage_namespaces is False
    policy = auth.policy(superusers=(0, 5))
    assert [p.name for p in policy.principals] == ["team-a", "#2"]
    assert policy.superusers == frozenset({0, 5})
    assert policy.principals[1].manage_namespaces
    assert policy.principals[1].tls_subjects == {"ci.example"}


CONTAINERD_ONLY = """
version = 2
temp = "/var/lib/containerd/tmp"
oom_score = -999
plugin_dir = ""

[grpc]
  address = "/run/containerd/containerd.sock"
  tcp_tls_common_name = ""

[ttrpc]
  address = ""
  uid = 0
  gid = 0

[debug]
  address = ""
  uid = 0
  gid = 0
  level = "info"
  format = "json"

[cgroup]
  path = ""

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.task.state" = "2s"

[stream_processors]
  [stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]
    accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
    returns = "application/vnd.oci.image.layer.v1.tar"
    path = "ctd-decoder"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.gc.v1.scheduler"]
    pause_threshold = 0.02
"""


def test_containerd_only_keys_are_accepted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ctrd.config")
    path = write(tmp_path / "containerd.toml", base(tmp_path) + CONTAINERD_ONLY)
    cfg = load(path)
    assert cfg.debug.level == "info"
    assert cfg.debug.format == "json"
    assert cfg.grpc.address == "/run/containerd/containerd.sock"
    # unknown plugin sections are kept for the daemon (which only warns about them)
    assert set(cfg.plugins) == {"io.containerd.grpc.v1.cri", "io.containerd.gc.v1.scheduler"}
    for key in (
        "temp",
        "oom_score",
        "plugin_dir",
        "ttrpc",
        "cgroup",
        "timeouts",
        "stream_processors",
        "debug.uid",
        "debug.gid",
        "grpc.tcp_tls_common_name",
    ):
        assert f"ignoring containerd config key {key} (not used by ctrd) in {path}" in caplog.text, key


def test_ignored_keys_are_ignored_only_where_containerd_has_them(tmp_path: Path) -> None:
    # "uid" is a containerd key under [debug], not under [metrics]
    path = write(tmp_path / "c.toml", base(tmp_path) + "[metrics]\nuid = 0\n")
    with pytest.raises(ConfigError, match=r"metrics\.uid: unknown key"):
        load(path)


def test_root_equal_to_state_is_refused() -> None:
    cfg = Config(root="/tmp/same", state="/tmp/same/", grpc=GrpcConfig(address="/tmp/x.sock"))
    with pytest.raises(ConfigError, match="root and state must be different paths"):
        cfg.validate_paths()
    Config(root="/tmp/a", state="/tmp/b", grpc=GrpcConfig(address="/tmp/x.sock")).validate_paths()


def test_missing_root_and_state_take_defaults(tmp_path: Path) -> None:
    root, state, sock = default_paths()
    cfg = load(write(tmp_path / "c.toml", "[debug]\nlevel = 'debug'\n"))
    assert (cfg.root, cfg.state, cfg.grpc.address) == (root, state, sock)
    cfg = load(write(tmp_path / "d.toml", f"root = {toml_str(tmp_path)}\n"))
    assert (cfg.root, cfg.state) == (str(tmp_path), state)


def test_default_paths_per_user_and_for_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert default_paths() == (
        str(tmp_path / "data" / "ctrd"),
        str(tmp_path / "run" / "ctrd"),
        str(tmp_path / "run" / "ctrd" / "ctrd.sock"),
    )
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    assert default_paths() == (
        str(tmp_path / "home" / ".local" / "share" / "ctrd"),
        str(tmp_path / "t" / "ctrd-1000" / "ctrd"),
        str(tmp_path / "t" / "ctrd-1000" / "ctrd" / "ctrd.sock"),
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_paths() == ("/var/lib/ctrd", "/run/ctrd", "/run/ctrd/ctrd.sock")


def test_no_file_gives_embedded_defaults() -> None:
    cfg = load(None)
    root, state, sock = default_paths()
    assert (cfg.root, cfg.state, cfg.grpc.address) == (root, state, sock)
    assert cfg.version == 2


@pytest.mark.parametrize(("text", "version"), [("", 2), ("version = 2\n", 2), ("version = 3\n", 3)])
def test_versions_2_and_3_accepted(tmp_path: Path, text: str, version: int) -> None:
    assert load(write(tmp_path / "c.toml", text + base(tmp_path))).version == version


def test_version_4_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "version = 4\n" + base(tmp_path))
    with pytest.raises(ConfigError) as ei:
        load(path)
    assert str(path) in str(ei.value)
    assert "expected containerd config version equal to or less than 3, got 4" in str(ei.value)


def test_version_1_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config version 1 is not supported"):
        load(write(tmp_path / "c.toml", "version = 1\n" + base(tmp_path)))


def test_overrides() -> None:
    cfg = Config(root="/r", state="/s", grpc=GrpcConfig(address="/a.sock", max_recv_message_size=5))
    o = cfg.with_overrides(root="/r2", state="/s2", address="/b.sock")
    assert (o.root, o.state, o.grpc.address, o.grpc.max_recv_message_size) == ("/r2", "/s2", "/b.sock", 5)
    assert cfg.with_overrides() == cfg
    assert cfg.root == "/r"  # the original is unchanged


def test_proxy_plugins_parsed(tmp_path: Path) -> None:
    text = base(tmp_path) + '[proxy_plugins.remote]\ntype = "content"\naddress = "/run/remote.sock"\n'
    cfg = load(write(tmp_path / "c.toml", text))
    p = cfg.proxy_plugins["remote"]
    assert (p.type, p.address, p.exports, p.capabilities) == ("content", "/run/remote.sock", {}, [])


# -- imports -------------------------------------------------------------------------------


def test_imports_merge_relative_glob_and_cycle(tmp_path: Path) -> None:
    main = write(
        tmp_path / "etc" / "main.toml",
        'imports = ["conf.d/*.toml", "extra.toml", "conf.d/none-*.toml"]\n'
        + base(tmp_path)
        + 'disabled_plugins = ["io.a.v1.x"]\n'
        + '[grpc]\naddress = "/tmp/main.sock"\nmax_send_message_size = 1000\n'
        + f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "shared"\n'
        + '[proxy_plugins.p1]\ntype = "content"\naddress = "/p1.sock"\n'
        + 'exports = {a = "1", b = "2"}\n',
    )
    write(
        tmp_path / "etc" / "conf.d" / "10-a.toml",
        'disabled_plugins = ["io.a.v1.x", "io.b.v1.y"]\n[grpc]\nmax_recv_message_size = 1111\n'
        + '[debug]\nlevel = "debug"\n',
    )
    write(
        tmp_path / "etc" / "conf.d" / "20-b.toml",
        '[grpc]\nmax_recv_message_size = 2222\n[proxy_plugins.p1]\ntype = "content"\naddress = "/p2.sock"\n'
        + f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "isolated"\n',
    )
    # imports the main file back: each file is loaded once
    write(tmp_path / "etc" / "extra.toml", 'imports = ["main.toml"]\nrequired_plugins = ["io.c.v1.z"]\n')
    cfg = load(main)
    assert cfg.disabled_plugins == ["io.a.v1.x", "io.b.v1.y"]  # appended, de-duplicated
    assert cfg.required_plugins == ["io.c.v1.z"]
    assert cfg.grpc.address == "/tmp/main.sock"  # tables merge key by key
    assert cfg.grpc.max_send_message_size == 1000
    assert cfg.grpc.max_recv_message_size == 2222  # later files win (glob matches sorted)
    assert cfg.debug.level == "debug"
    assert cfg.plugins[SQLITE] == {"content_sharing_policy": "isolated"}
    assert cfg.plugin_sources[SQLITE] == str(tmp_path / "etc" / "conf.d" / "20-b.toml")
    # proxy plugin entries are replaced whole, not merged
    assert cfg.proxy_plugins["p1"].address == "/p2.sock"
    assert cfg.proxy_plugins["p1"].exports == {}
    assert cfg.imports == []  # consumed


def test_missing_import_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'imports = ["missing.toml"]\n' + base(tmp_path))
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read config"):
        load(path)


def test_import_error_names_the_imported_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.toml", "[grpc\n")
    path = write(tmp_path / "c.toml", 'imports = ["bad.toml"]\n' + base(tmp_path))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'bad.toml'))}: invalid TOML"):
        load(path)


# -- the daemon process: plugin sections ---------------------------------------------------


def _cfg_file(launcher: Launcher, text: str) -> tuple[Path, Path]:
    tmp = launcher.tmpdir()
    path = tmp / "config.toml"
    path.write_text(base(tmp) + f"[grpc]\naddress = {toml_str(tmp / 'ctrd.sock')}\n" + text)
    return tmp, path


def test_bad_policy_value_stops_start_up(daemon: Launcher) -> None:
    tmp, path = _cfg_file(daemon, f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "bogus"\n')
    r = daemon.run("--config", str(path), timeout=30)
    assert r.returncode == 1, r.stderr
    assert "unknown policy" in r.stderr
    assert f'ctrd: {path}: [plugins."{SQLITE}"] content_sharing_policy: ' in r.stderr
    assert not (tmp / "ctrd.sock").exists()
    # no plugin was initialised
    assert not (tmp / "root" / SQLITE).exists()


def test_plugin_section_unknown_key_names_file_section_and_key(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    write(tmp / "plugins.toml", f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "shared"\nno_sync = true\n')
    path = write(
        tmp / "config.toml",
        'imports = ["plugins.toml"]\n' + base(tmp) + f"[grpc]\naddress = {toml_str(tmp / 'ctrd.sock')}\n",
    )
    r = daemon.run("--config", str(path), timeout=30)
    assert r.returncode == 1
    assert f'ctrd: {tmp / "plugins.toml"}: [plugins."{SQLITE}"] no_sync: unknown key' in r.stderr


def test_test_plugin_config_validated(daemon: Launcher) -> None:
    _, path = _cfg_file(daemon, '[plugins."io.ctrd.test.config.v1.configured"]\nlevel = 12\n')
    r = daemon.run("--config", str(path), plugins=True, timeout=30)
    assert r.returncode == 1
    assert f'{path}: [plugins."io.ctrd.test.config.v1.configured"] level: ' in r.stderr
    assert "less than or equal to 9" in r.stderr


def test_section_for_unregistered_uri_only_warns(daemon: Launcher) -> None:
    d = daemon(
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]\n'
        '[plugins."io.containerd.snapshotter.v1.overlayfs"]\nroot_path = "/x"\n'
    )
    log = d.log()
    assert "io.containerd.snapshotter.v1.overlayfs" in log
    assert "names no registered plugin" in log
    assert "disabled plugin io.containerd.snapshotter.v1.btrfs is not registered" in log
    assert "level=warning" in log


def test_root_equal_to_state_stops_the_daemon(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    same = toml_str(tmp / "same")
    path = write(tmp / "c.toml", f"root = {same}\nstate = {same}\n")
    r = daemon.run("--config", str(path), "--address", str(tmp / "s.sock"), timeout=30)
    assert r.returncode == 1
    assert "ctrd: root and state must be different paths" in r.stderr
    assert not (tmp / "s.sock").exists()


def test_config_error_exit_status_and_message(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    path = write(tmp / "c.toml", "version = 4\n")
    r = daemon.run("--config", str(path))
    assert r.returncode == 1
    assert r.stderr.strip().endswith("expected containerd config version equal to or less than 3, got 4")
    assert r.stderr.startswith(f"ctrd: {path}: version: ")


# -- ctrd config default / dump ------------------------------------------------------------


def test_config_default_is_complete_commented_and_loads(daemon: Launcher) -> None:
    r = daemon.run("config", "default", plugins=True)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.count("#") > 10  # commented
    data = tomllib.loads(text)
    for key in (
        "version",
        "root",
        "state",
        "imports",
        "disabled_plugins",
        "required_plugins",
        "grpc",
        "debug",
    ):
        assert key in data, key
    assert data["grpc"]["max_recv_message_size"] == 16 * MiB
    assert data["plugins"][SQLITE] == {
        "content_sharing_policy": "shared",
        "content_plugin": "",
        "reserve_bytes": 16 << 20,
    }
    assert data["plugins"]["io.ctrd.test.config.v1.configured"] == {"greeting": "hello", "level": 1}
    assert data["authorization"] == {"enabled": False}
    assert "# [[authorization.principals]]" in text  # an example, commented out
    cfg = from_mapping(data)
    assert cfg.root == data["root"]
    assert cfg.grpc.address == data["grpc"]["address"]
    # and the default file really boots a daemon (paths moved by flags)
    tmp = daemon.tmpdir()
    (tmp / "config.toml").write_text(text)
    d = daemon(tmp=tmp, args=["--root", str(tmp / "root"), "--state", str(tmp / "state")], plugins=True)
    assert (tmp / "root" / "io.containerd.content.v1.content").is_dir()
    assert d.stop() == 0


def test_config_dump_reflects_merged_values_and_overrides(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    write(tmp / "conf.d" / "a.toml", "[grpc]\nmax_recv_message_size = 4096\n")
    write(
        tmp / "main.toml",
        'imports = ["conf.d/*.toml"]\n'
        + base(tmp)
        + '[grpc]\naddress = "/tmp/from-file.sock"\n'
        + '[plugins."io.ctrd.test.config.v1.configured"]\ngreeting = "hi"\n'
        + '[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "pause"\n'
        + "[authorization]\nenabled = true\n"
        + '[[authorization.principals]]\nuids = [1000]\nnamespaces = ["team-a-*"]\n'
        + '[[authorization.principals]]\nname = "ci"\ntls_subjects = ["ci.example"]\n'
        + "manage_namespaces = true\n",
    )
    r = daemon.run(
        "--config", str(tmp / "main.toml"), "--root", "/tmp/flag-root", "--address", "/tmp/flag.sock",
        "config", "dump", plugins=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    assert data["root"] == "/tmp/flag-root"  # flag wins
    assert data["state"] == str(tmp / "state")  # from the file
    assert data["grpc"]["address"] == "/tmp/flag.sock"
    assert data["grpc"]["max_recv_message_size"] == 4096  # from the import
    assert data["grpc"]["max_send_message_size"] == 16 * MiB  # default filled in
    assert data["plugins"]["io.ctrd.test.config.v1.configured"] == {"greeting": "hi", "level": 1}
    assert data["plugins"][SQLITE] == {
        "content_sharing_policy": "shared",
        "content_plugin": "",
        "reserve_bytes": 16 << 20,
    }
    assert data["plugins"]["io.containerd.grpc.v1.cri"] == {"sandbox_image": "pause"}
    assert data["authorization"]["enabled"] is True
    assert data["authorization"]["principals"] == [
        {
            "name": "",
            "uids": [1000],
            "gids": [],
            "tls_subjects": [],
            "namespaces": ["team-a-*"],
            "manage_namespaces": False,
        },
        {
            "name": "ci",
            "uids": [],
            "gids": [],
            "tls_subjects": ["ci.example"],
            "namespaces": [],
            "manage_namespaces": True,
        },
    ]
    # the dump is itself a valid config
    again = from_mapping(data)
    assert again.grpc.max_recv_message_size == 4096
    assert again.root == "/tmp/flag-root"
    assert again.authorization == load(tmp / "main.toml").authorization


def test_config_dump_with_bad_plugin_section_is_an_error_not_a_traceback(daemon: Launcher) -> None:
    _, path = _cfg_file(daemon, f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "bogus"\n')
    r = daemon.run("--config", str(path), "config", "dump")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f'ctrd: {path}: [plugins."{SQLITE}"] content_sharing_policy: ' in r.stderr
    assert "unknown policy: bogus" in r.stderr
