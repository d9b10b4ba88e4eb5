"""``[debug]``/``[metrics] address`` without a host is refused (it would listen on every interface)."""

from __future__ import annotations

import pytest
from _daemon import Launcher, toml_str

from ctrd.server.config import ConfigError, from_mapping

pytestmark = pytest.mark.hardening


@pytest.mark.parametrize("section", ["debug", "metrics"])
def test_empty_host_is_refused_at_load(section: str) -> None:
    with pytest.raises(ConfigError) as ei:
        from_mapping({section: {"address": ":1338"}})
    msg = str(ei.value)
    assert f"{section}.address: ':1338' has no host" in msg
    assert "0.0.0.0:1338" in msg
    assert "[::]:1338" in msg


@pytest.mark.parametrize("address", ["0.0.0.0:1338", "[::]:1338", "127.0.0.1:1338", "[::1]:0"])
@pytest.mark.parametrize("section", ["debug", "metrics"])
def test_explicit_hosts_are_accepted(section: str, address: str) -> None:
    cfg = from_mapping({section: {"address": address}})
    assert getattr(cfg, section).address == address


def test_daemon_with_an_empty_metrics_host_does_not_start(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    config = tmp / "config.toml"
    config.write_text(
        f"root = {toml_str(tmp / 'root')}\nstate = {toml_str(tmp / 'state')}\n[metrics]\naddress = ':0'\n"
    )
    res = daemon.run("--config", str(config), "--address", str(tmp / "ctrd.sock"))
    assert res.returncode == 1
    assert "metrics.address: ':0' has no host" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp / "ctrd.sock").exists()
