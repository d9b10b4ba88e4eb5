"""Debian's ``ctr`` 1.6.20 against ctrd: ``version``, ``plugins ls`` (plain, ``-d``, filters),
unknown services.

These tests FAIL (never skip) when ``/usr/bin/ctr`` is missing (see ``conftest.py``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from _daemon import TESTPLUGINS, DaemonProc, Launcher

from ctrd import __version__
from ctrd.plugin import discover, order

pytestmark = pytest.mark.interop

Ctr = Callable[..., Any]

INTROSPECTION_URI = "io.containerd.grpc.v1.introspection"

#: what the test plugin package must show (everything else must be "ok")
TEST_PLUGIN_STATUS = {
    "io.ctrd.test.skip.v1.skipper": "skip",
    "io.ctrd.test.fail.v1.broken": "error",
    "io.ctrd.test.import.v1.nomodule": "error",
    "io.ctrd.test.dependant.v1.needs-broken": "error",
    "io.ctrd.test.dependant.v1.needs-nomodule": "error",
    "io.ctrd.test.config.v1.configured": "ok",
    "io.ctrd.test.z.v1.first": "ok",
    "io.ctrd.test.a.v1.second": "ok",
    "io.containerd.grpc.v1.slow": "ok",
}

BUILTINS = [
    "io.containerd.content.v1.content",
    "io.containerd.event.v1.exchange",
    "io.containerd.metadata.v1.sqlite",
    "io.containerd.service.v1.content-service",
    "io.containerd.service.v1.namespaces-service",
    "io.containerd.grpc.v1.content",
    "io.containerd.grpc.v1.namespaces",
    "io.containerd.grpc.v1.version",
    "io.containerd.grpc.v1.healthcheck",
    INTROSPECTION_URI,
]


def tabwriter(rows: Sequence[Sequence[str]], *, minwidth: int = 4, padding: int = 4) -> str:
    """Go's ``text/tabwriter`` as ctr's ``plugins ls`` uses it (every cell tab-terminated, space padded)."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]))]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + "\n" for r in rows)


def expected_uris(monkeypatch: pytest.MonkeyPatch, *, with_test_plugins: bool) -> list[str]:
    """Every discoverable plugin, in init order (the order introspection reports)."""
    if with_test_plugins:
        monkeypatch.syspath_prepend(str(TESTPLUGINS))
    return [r.uri for r in order(d.registration for d in discover())]


def split(uri: str) -> tuple[str, str]:
    t, _, i = uri.rpartition(".")
    return t, i


def server_uuid(out: str) -> str:
    m = re.search(r"^Server:\n  Version:  (\S+)\n  Revision: (\S+)\n  UUID: (\S+)\n", out, re.M)
    assert m, out
    assert m.group(1) == __version__
    assert m.group(2) == "ctrd"
    return m.group(3)


# -- version ---------------------------------------------------------------------------------


def test_ctr_version_shows_our_version_and_a_stable_uuid(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon()
    r = ctr(d.socket, "version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Client:\n  Version:  ")
    first = server_uuid(r.stdout)
    assert str(uuid.UUID(first)) == first
    # persisted under the introspection plugin's root
    stored = Path(d.root) / INTROSPECTION_URI / "uuid"
    assert stored.read_text().strip() == first
    assert server_uuid(ctr(d.socket, "version").stdout) == first  # same process, same answer

    # same root -> same UUID after a restart
    assert d.stop() == 0
    again = daemon(tmp=d.tmp)
    assert again.root == d.root
    assert server_uuid(ctr(again.socket, "version").stdout) == first

    # another root -> another UUID
    other = daemon()
    assert server_uuid(ctr(other.socket, "version").stdout) != first


# -- plugins ls ------------------------------------------------------------------------------


def test_ctr_plugins_ls_builtins_all_ok(daemon: Launcher, ctr: Ctr, monkeypatch: pytest.MonkeyPatch) -> None:
    d = daemon()
    r = ctr(d.socket, "plugins", "ls")
    assert r.returncode == 0, r.stderr
    uris = expected_uris(monkeypatch, with_test_plugins=False)
    assert set(BUILTINS) <= set(uris)
    rows = [("TYPE", "ID", "PLATFORMS", "STATUS")] + [(*split(u), "-", "ok") for u in uris]
    assert r.stdout == tabwriter(rows)


def test_ctr_plugins_ls_shows_ok_skip_and_error(
    daemon: Launcher, ctr: Ctr, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon(plugins=True)
    r = ctr(d.socket, "plugins", "ls")
    assert r.returncode == 0, r.stderr
    uris = expected_uris(monkeypatch, with_test_plugins=True)
    assert set(TEST_PLUGIN_STATUS) <= set(uris)
    assert set(BUILTINS) <= set(uris)
    rows = [("TYPE", "ID", "PLATFORMS", "STATUS")]
    rows += [(*split(u), "-", TEST_PLUGIN_STATUS.get(u, "ok")) for u in uris]
    assert r.stdout == tabwriter(rows)

    # independent of the graph code: the facts ctr shows
    listed = [line.split() for line in r.stdout.splitlines()[1:]]
    pos = {f"{t}.{i}": n for n, (t, i, _, _) in enumerate(listed)}
    status = {f"{t}.{i}": s for t, i, _, s in listed}
    assert status["io.ctrd.test.skip.v1.skipper"] == "skip"
    assert status["io.ctrd.test.import.v1.nomodule"] == "error"  # listed although its module is missing
    assert status["io.ctrd.test.dependant.v1.needs-nomodule"] == "error"
    assert status[INTROSPECTION_URI] == "ok"  # "*" never inherits a failure
    assert listed[-1][:2] == ["io.containerd.grpc.v1", "introspection"]
    assert (
        pos["io.ctrd.test.z.v1.first"] < pos["io.ctrd.test.a.v1.second"] < pos["io.containerd.grpc.v1.slow"]
    )
    assert pos["io.ctrd.test.fail.v1.broken"] < pos["io.ctrd.test.dependant.v1.needs-broken"]
    assert pos["io.containerd.content.v1.content"] < pos["io.containerd.metadata.v1.sqlite"]
    assert all(status[u] == "ok" for u in BUILTINS)


def test_ctr_plugins_ls_quiet(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon()
    r = ctr(d.socket, "plugins", "ls", "-q")
    assert r.returncode == 0, r.stderr
    ids = r.stdout.splitlines()
    assert ids.count("content") == 2  # content store and content gRPC service
    assert {"exchange", "sqlite", "introspection", "version", "healthcheck", "namespaces"} <= set(ids)


def test_disabled_plugin_is_not_listed(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon('disabled_plugins = ["io.containerd.grpc.v1.healthcheck"]')
    ids = ctr(d.socket, "plugins", "ls", "-q").stdout.splitlines()
    assert "healthcheck" not in ids
    assert "version" in ids


def parse_detailed(out: str) -> dict[str, dict[str, Any]]:
    """``ctr plugins ls -d`` blocks by URI: {"Requires": [...], "Exports": {...}, "Error": {...}, ...}."""
    blocks: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] = {}
    section = ""
    for raw in out.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        m = re.match(r"^(Type|ID|Requires|Exports|Capabilities|Platforms|Error):\s*(.*)$", line)
        if m:
            key, val = m.groups()
            if key == "Type":
                cur = {"Type": val}
            elif key == "ID":
                cur["ID"] = val
                blocks[f"{cur['Type']}.{val}"] = cur
            elif key in ("Requires", "Platforms"):
                cur[key] = [] if not val else [val]
            elif key == "Capabilities":
                cur[key] = val.split(",") if val else []
            else:
                cur[key] = {}
            section = key
            continue
        assert raw.startswith(" "), raw
        item = line.strip()
        if section in ("Requires", "Platforms"):
            cur[section].append(item)
        elif section == "Exports":
            k, v = item.split(None, 1)
            cur["Exports"][k] = v
        elif section == "Error":
            k, v = item.split(":", 1)
            cur["Error"][k] = v.strip()
    return blocks


def test_ctr_plugins_ls_detailed_shows_requires_exports_and_errors(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon(plugins=True)
    r = ctr(d.socket, "plugins", "ls", "-d")
    assert r.returncode == 0, r.stderr
    assert "Requires:" in r.stdout
    assert "Exports:" in r.stdout
    b = parse_detailed(r.stdout)

    meta = b["io.containerd.metadata.v1.sqlite"]
    assert meta["Requires"] == ["io.containerd.content.v1", "io.containerd.snapshotter.v1"]
    assert meta["Exports"] == {
        "path": f"{d.root}/io.containerd.metadata.v1.sqlite/meta.db",
        "policy": "shared",
    }
    assert "Error" not in meta
    assert b["io.containerd.content.v1.content"]["Exports"] == {
        "root": f"{d.root}/io.containerd.content.v1.content"
    }
    assert b["io.containerd.service.v1.content-service"]["Requires"] == ["io.containerd.metadata.v1"]
    assert b["io.containerd.grpc.v1.content"]["Requires"] == [
        "io.containerd.service.v1",
        "io.containerd.event.v1",
    ]
    assert b[INTROSPECTION_URI]["Requires"] == ["*"]
    assert "Requires" not in b["io.containerd.grpc.v1.version"]

    configured = b["io.ctrd.test.config.v1.configured"]
    assert configured["Exports"] == {"greeting": "hello", "level": "1"}
    assert configured["Capabilities"] == ["configurable"]

    assert b["io.ctrd.test.fail.v1.broken"]["Error"] == {"Code": "Unknown", "Message": "broken on purpose"}
    assert b["io.ctrd.test.skip.v1.skipper"]["Error"] == {
        "Code": "Unknown",
        "Message": "skip plugin: not on this host",
    }
    assert b["io.ctrd.test.import.v1.nomodule"]["Error"] == {
        "Code": "Unknown",
        "Message": "No module named 'ctrd_testplugins_no_such_module'",
    }
    dep = b["io.ctrd.test.dependant.v1.needs-broken"]
    assert dep["Requires"] == ["io.ctrd.test.fail.v1"]
    assert dep["Error"] == {
        "Code": "FailedPrecondition",
        "Message": "no working plugin of required type io.ctrd.test.fail.v1: failed precondition",
    }
    assert b["io.ctrd.test.dependant.v1.needs-nomodule"]["Error"]["Message"] == (
        "no working plugin of required type io.ctrd.test.import.v1: failed precondition"
    )


def test_plugin_config_reaches_exports(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon(
        '[plugins."io.containerd.metadata.v1.sqlite"]\ncontent_sharing_policy = "isolated"\n'
        '[plugins."io.ctrd.test.config.v1.configured"]\ngreeting = "bonjour"\nlevel = 7\n',
        plugins=True,
    )
    b = parse_detailed(ctr(d.socket, "plugins", "ls", "-d").stdout)
    assert b["io.containerd.metadata.v1.sqlite"]["Exports"]["policy"] == "isolated"
    assert b["io.ctrd.test.config.v1.configured"]["Exports"] == {"greeting": "bonjour", "level": "7"}


def _listed(d: DaemonProc, ctr: Ctr, *filters: str) -> list[tuple[str, str]]:
    r = ctr(d.socket, "plugins", "ls", *filters)
    assert r.returncode == 0, r.stderr
    return [(line.split()[0], line.split()[1]) for line in r.stdout.splitlines()[1:]]


def test_ctr_plugins_ls_filters(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon(plugins=True)
    grpc = _listed(d, ctr, "type==io.containerd.grpc.v1")
    assert {t for t, _ in grpc} == {"io.containerd.grpc.v1"}
    assert {"content", "namespaces", "introspection", "version", "healthcheck", "slow"} <= {
        i for _, i in grpc
    }
    assert grpc[-1] == ("io.containerd.grpc.v1", "introspection")

    assert _listed(d, ctr, "id==version") == [("io.containerd.grpc.v1", "version")]
    # comma = AND within one filter; separate arguments = OR
    assert _listed(d, ctr, "type==io.containerd.grpc.v1,id==content") == [
        ("io.containerd.grpc.v1", "content")
    ]
    both = _listed(d, ctr, "type==io.containerd.grpc.v1,id==content", "id==sqlite")
    assert sorted(both) == [("io.containerd.grpc.v1", "content"), ("io.containerd.metadata.v1", "sqlite")]
    assert _listed(d, ctr, "id~=^needs-") == [
        ("io.ctrd.test.dependant.v1", "needs-broken"),
        ("io.ctrd.test.dependant.v1", "needs-nomodule"),
    ]
    assert _listed(d, ctr, "id==nothing") == []

    r = ctr(d.socket, "plugins", "ls", "-q", "id==version")
    assert r.stdout == "version\n"

    bad = ctr(d.socket, "plugins", "ls", "type===")
    assert bad.returncode == 1
    assert bad.stderr.startswith("ctr: ")
    assert "invalid argument" in bad.stderr


# -- unknown services --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (["containers", "ls"], "ctr: "),
        (["snapshots", "ls"], "ctr: "),
    ],
)
def test_unregistered_service_is_not_implemented(
    daemon: Launcher, ctr: Ctr, args: list[str], prefix: str
) -> None:
    d = daemon()
    r = ctr(d.socket, *args)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), r.stderr
    assert last.endswith(": not implemented"), r.stderr
    # the daemon is fine afterwards
    assert server_uuid(ctr(d.socket, "version").stdout)
