"""containerd's ``[plugins."io.containerd.metadata.v1.bolt"]`` configures ctrd's metadata plugin.

An existing containerd config saying ``content_sharing_policy = "isolated"`` under the
bolt section must never leave ctrd running ``shared``: the section is read as the
sqlite plugin's, and a contradiction between the two stops start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _daemon import Launcher, run_ctr

from ctrd.server.config import ConfigError, load

BOLT = "io.containerd.metadata.v1.bolt"
SQLITE = "io.containerd.metadata.v1.sqlite"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'root = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n{text}')
    return path


def test_bolt_section_is_read_as_sqlite(tmp_path: Path) -> None:
    cfg = load(_file(tmp_path, f'[plugins."{BOLT}"]\ncontent_sharing_policy = "isolated"\n'))
    assert cfg.plugins == {SQLITE: {"content_sharing_policy": "isolated"}}
    assert cfg.plugin_sources[SQLITE] == str(tmp_path / "config.toml")


def test_bolt_and_sqlite_agreeing_merge(tmp_path: Path) -> None:
    text = (
        f'[plugins."{BOLT}"]\ncontent_sharing_policy = "isolated"\n'
        f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "isolated"\ncontent_plugin = ""\n'
    )
    cfg = load(_file(tmp_path, text))
    assert cfg.plugins[SQLITE] == {"content_sharing_policy": "isolated", "content_plugin": ""}


def test_bolt_contradicting_sqlite_is_an_error(tmp_path: Path) -> None:
    text = (
        f'[plugins."{BOLT}"]\ncontent_sharing_policy = "isolated"\n'
        f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "shared"\n'
    )
    with pytest.raises(ConfigError, match=r"content_sharing_policy = 'isolated' contradicts"):
        load(_file(tmp_path, text))


def test_bolt_in_plugin_lists_names_sqlite(tmp_path: Path) -> None:
    cfg = load(_file(tmp_path, f'required_plugins = ["{BOLT}"]\n'))
    assert cfg.required_plugins == [SQLITE]


@pytest.mark.interop
def test_daemon_with_containerd_bolt_section_runs_isolated(daemon: Launcher) -> None:
    d = daemon(f'[plugins."{BOLT}"]\n  content_sharing_policy = "isolated"\n')
    plugins = run_ctr(d.socket, "plugins", "ls", "--detailed", "id==sqlite")
    assert plugins.returncode == 0, plugins.stderr
    assert "policy isolated" in " ".join(plugins.stdout.split()), plugins.stdout
    assert "names no registered plugin" not in d.log()


def test_daemon_refuses_contradiction(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    path = _file(
        tmp,
        f'[plugins."{BOLT}"]\ncontent_sharing_policy = "isolated"\n'
        f'[plugins."{SQLITE}"]\ncontent_sharing_policy = "shared"\n',
    )
    r = daemon.run("--config", str(path), "--address", str(tmp / "s.sock"))
    assert r.returncode != 0
    assert "contradicts" in r.stderr
