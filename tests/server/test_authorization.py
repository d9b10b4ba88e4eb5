"""``[authorization]`` against real daemon processes: clients of other uids on the unix socket
(SO_PEERCRED), TLS clients with certificates made here (openssl), the real ``ctr`` as a
non-root user, the denial log lines and the ``ctrd_authorization_denied_total`` counter.

The test process is root (unrestricted); other uids run ``_authz_client.py`` in a
subprocess with ``user=``/``group=``. The scenario is the one of the issue: under the
``isolated`` policy, a client that may act in team-a only must not read, commit or list
team-b's content, nor make a namespace shareable.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import site
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _daemon import CTR, DaemonProc, Launcher, base_env, run_sync
from grpclib.client import Channel
from prometheus_client.parser import text_string_to_metric_families

import ctrd
from ctrd import errdefs
from ctrd.api.containerd.services.version.v1 import VersionStub
from ctrd.client import RemoteContentStore
from ctrd.content.helpers import read_blob

from ._authz_client import digest, run_ops

CLIENT = Path(__file__).with_name("_authz_client.py")
TEAM_A_UID, STRANGER_UID = 1000, 1001
SECRET = "team-b's secret layer"
METRICS_ADDR = re.compile(r'serving\.\.\. address=([0-9.]+:\d+)" module=ctrd\.metrics')

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: clients run as other uids")

AUTHZ = """
[plugins."io.containerd.metadata.v1.sqlite"]
  content_sharing_policy = "isolated"
[metrics]
  address = "127.0.0.1:0"
[authorization]
  enabled = true
  [[authorization.principals]]
    name = "team-a"
    uids = [1000]
    namespaces = ["team-a", "team-a-*"]
  [[authorization.principals]]
    name = "tls-b"
    tls_subjects = ["client-b.example"]
    namespaces = ["team-b"]
"""


def _as(uid: int) -> dict[str, Any]:
    return {"user": uid, "group": uid, "extra_groups": [], "cwd": "/"}


@functools.cache
def uid_python() -> tuple[str, dict[str, str]]:
    """An interpreter other uids can run, and its environment.

    This one, unless it lives where they cannot go (e.g. under root's home): then the
    system's interpreter of the same version, given this one's site-packages and ctrd's
    sources on PYTHONPATH.
    """
    src = str(Path(ctrd.__file__).resolve().parents[1])
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    extra = os.pathsep.join([src, *site.getsitepackages()])
    candidates = [(sys.executable, base_env())]
    candidates += [
        (f"{d}/python{ver}", base_env({"PYTHONPATH": extra})) for d in ("/usr/bin", "/usr/local/bin")
    ]
    for exe, env in candidates:
        try:
            probe = subprocess.run(
                [exe, "-c", "import ctrd.client"],
                env=env,
                capture_output=True,
                check=False,
                **_as(STRANGER_UID),
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return exe, env
    pytest.skip(f"no Python {ver} that uid {STRANGER_UID} may run and that imports ctrd")


def as_uid(d: DaemonProc, uid: int, ops: list[list[Any]], timeout: float = 60) -> list[list[Any]]:
    """Run *ops* as *uid* (and gid *uid*, no supplementary groups)."""
    exe, env = uid_python()
    r = subprocess.run(
        [exe, str(CLIENT), d.socket, json.dumps(ops)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        **_as(uid),
    )
    assert r.returncode == 0, r.stderr
    out: list[list[Any]] = json.loads(r.stdout)
    return out


def as_root(d: DaemonProc, ops: list[list[Any]]) -> list[list[Any]]:
    return run_sync(lambda: run_ops(d.socket, ops))


def open_to_everyone(d: DaemonProc) -> None:
    """Let any uid reach the socket: the gate under test is authorization, not file modes."""
    os.chmod(d.tmp, 0o711)
    os.chmod(d.socket, 0o666)


def scrape(d: DaemonProc) -> dict[tuple[str, str], float]:
    """``ctrd_authorization_denied_total`` by (service, method)."""
    url = f"http://{d.wait_for_log(METRICS_ADDR.pattern).group(1)}/v1/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.labels["grpc_service"], s.labels["grpc_method"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ctrd_authorization_denied_total"
    }


def denial_lines(d: DaemonProc) -> list[str]:
    return [line for line in d.log().splitlines() if "authorization: denied" in line]


def statuses(results: list[list[Any]]) -> list[str]:
    return [r[0] for r in results]


@pytest.fixture
def authz_daemon(daemon: Launcher) -> DaemonProc:
    d = daemon(AUTHZ)
    open_to_everyone(d)
    # root (unrestricted) stores team-b's secret
    assert as_root(d, [["content.ingest", "team-b", SECRET]]) == [["OK", digest(SECRET)]]
    return d


def test_an_unlisted_uid_is_denied_everything_but_version(authz_daemon: DaemonProc) -> None:
    d = authz_daemon
    got = as_uid(
        d,
        STRANGER_UID,
        [
            ["version", "team-a"],
            ["content.list", "team-a"],
            ["content.info", "team-b", digest(SECRET)],
            ["leases.list", "team-a"],
            ["leases.create", "team-a"],
            ["ns.list", "default"],
        ],
    )
    assert got[0][0] == "OK"
    assert statuses(got[1:]) == ["PermissionDenied"] * 5
    assert got[1][1] == "no authorization principal matches this client: permission denied"
    lines = denial_lines(d)
    assert len(lines) == 5
    assert f"to unix uid={STRANGER_UID} gid={STRANGER_UID} pid=" in lines[0]
    assert "Traceback" not in d.log()
    counts = scrape(d)
    assert counts[("containerd.services.content.v1.Content", "List")] == 1
    assert counts[("containerd.services.leases.v1.Leases", "Create")] == 1
    assert counts[("containerd.services.namespaces.v1.Namespaces", "List")] == 1
    assert sum(counts.values()) == 5


def test_a_team_a_client_cannot_reach_team_b_under_isolated(authz_daemon: DaemonProc) -> None:
    d = authz_daemon
    got = as_uid(
        d,
        TEAM_A_UID,
        [
            ["content.ingest", "team-a", "team-a's own"],  # 0
            ["content.list", "team-a"],  # 1
            ["content.list", "team-b"],  # 2
            ["content.info", "team-b", digest(SECRET)],  # 3
            ["content.read", "team-b", digest(SECRET)],  # 4
            ["content.commit_without_bytes", "team-b", SECRET],  # 5
            # the attack of the issue: make team-b shareable, then admit its digest without bytes
            ["ns.label", "team-b", "team-b", "containerd.io/namespace.shareable", "true"],  # 6
            ["ns.label", "team-a", "team-b", "containerd.io/namespace.shareable", "true"],  # 7
            ["ns.label", "team-a", "team-a", "any", "label"],  # 8 (no manage_namespaces)
            ["ns.create", "team-a", "team-a-new"],  # 9
            ["content.commit_without_bytes", "team-a", SECRET],  # 10 isolated: must upload
            ["content.info", "team-a", digest(SECRET)],  # 11
            ["ns.list", "default"],  # 12
            ["leases.create", "team-a-ci"],  # 13
            ["leases.list", "team-b"],  # 14
        ],
    )
    assert got[0] == ["OK", digest("team-a's own")]
    assert got[1] == ["OK", [digest("team-a's own")]]
    assert statuses(got[2:10]) == ["PermissionDenied"] * 8, got
    assert got[2][1] == 'namespace "team-b" is not permitted: permission denied'
    assert got[7][1] == 'managing namespace "team-b" is not permitted: permission denied'
    assert got[10][0] == "FailedPrecondition"  # isolation holds: no bytes, no blob
    assert got[11][0] == "NotFound"
    assert got[12] == ["OK", ["team-a"]]  # team-b and the rest are not listed
    assert got[13] == ["OK", True]
    assert got[14][0] == "PermissionDenied"
    # root sees everything, and team-b is unchanged
    root = as_root(
        d, [["ns.list", "default"], ["content.list", "team-b"], ["content.read", "team-b", digest(SECRET)]]
    )
    assert root[0] == ["OK", ["team-a", "team-a-ci", "team-b"]]
    assert root[1] == ["OK", [digest(SECRET)]]
    assert root[2] == ["OK", SECRET]
    labels = run_sync(lambda: _labels(d.socket, "team-b"))
    assert "containerd.io/namespace.shareable" not in labels
    assert len(denial_lines(d)) == 9
    counts = scrape(d)
    assert counts[("containerd.services.namespaces.v1.Namespaces", "Update")] == 3
    assert counts[("containerd.services.content.v1.Content", "Write")] == 1


async def _labels(sock: str, name: str) -> dict[str, str]:
    from ctrd.client import Client

    async with Client(sock) as c:
        return dict((await c.namespaces.get(name)).labels)


def test_a_team_a_subscriber_sees_only_team_a_events(authz_daemon: DaemonProc) -> None:
    d = authz_daemon
    exe, env = uid_python()
    proc = subprocess.Popen(
        [exe, str(CLIENT), d.socket, json.dumps([["events.collect", "default", 2]])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **_as(TEAM_A_UID),
    )
    try:
        _wait_subscribed(d)
        as_root(
            d,
            [
                ["content.ingest", "team-b", "b1"],
                ["content.ingest", "team-a", "a1"],
                ["content.ingest", "default", "d1"],
                ["content.ingest", "team-a-ci", "a2"],
            ],
        )
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    (result,) = json.loads(out)
    assert result == ["OK", [["team-a", "/content/create"], ["team-a-ci", "/content/create"]]]


def _wait_subscribed(d: DaemonProc) -> None:
    url = f"http://{d.wait_for_log(METRICS_ADDR.pattern).group(1)}/v1/metrics"

    def subscribed() -> bool:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        return any(
            s.name == "ctrd_events_subscribers" and s.value >= 1
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        )

    d.wait_for(subscribed, timeout=20, what="the subscriber")


@pytest.mark.interop
def test_ctr_as_a_non_root_user(authz_daemon: DaemonProc) -> None:
    d = authz_daemon
    if not os.path.exists(CTR):
        pytest.fail(f"{CTR} is missing: install Debian's containerd package", pytrace=False)

    def ctr(uid: int, ns: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CTR, "--address", d.socket, "--namespace", ns, *args],
            **_as(uid),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            input=stdin,
        )

    ingest = ctr(TEAM_A_UID, "team-a", "content", "ingest", "ctr-ref", stdin="from ctr")
    assert ingest.returncode == 0, ingest.stderr
    ok = ctr(TEAM_A_UID, "team-a", "content", "ls", "-q")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [digest("from ctr")], ok.stderr
    denied = ctr(TEAM_A_UID, "team-b", "content", "ls")
    assert denied.returncode != 0
    assert 'namespace "team-b" is not permitted: permission denied' in denied.stderr
    shareable = "containerd.io/namespace.shareable=true"
    label = ctr(TEAM_A_UID, "team-a", "namespaces", "label", "team-b", shareable)
    assert label.returncode != 0
    assert "permission denied" in label.stderr
    ls = ctr(TEAM_A_UID, "team-a", "namespaces", "ls", "-q")
    assert ls.returncode == 0
    assert ls.stdout.split() == ["team-a"]
    version = ctr(STRANGER_UID, "team-a", "version")
    assert version.returncode == 0
    assert "Server:" in version.stdout
    stranger = ctr(STRANGER_UID, "team-a", "content", "ls")
    assert stranger.returncode != 0
    assert "no authorization principal matches" in stranger.stderr
    root = ctr(0, "team-b", "content", "ls")
    assert root.returncode == 0
    assert digest(SECRET) in root.stdout


# -- TLS ---------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def _certs(tmp: Path) -> None:
    """A CA; a server certificate for 127.0.0.1; client certificates by CN and by DNS SAN."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca = ["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca"]
    _openssl("req", "-x509", *ec, *ca, cwd=tmp)
    for name, subj, san in (
        ("server", "/CN=ctrd", "subjectAltName=IP:127.0.0.1"),
        ("client-b", "/CN=client-b.example", ""),
        ("client-san", "/CN=someone-else", "subjectAltName=DNS:client-b.example"),
        ("stranger", "/CN=stranger.example", ""),
    ):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=tmp)
        ext = ["-extfile", f"{name}.ext"] if san else []
        if san:
            (tmp / f"{name}.ext").write_text(san + "\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", *ext, cwd=tmp,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_tls_clients_are_authorized_by_certificate_name(daemon: Launcher) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    tmp = daemon.tmpdir()
    _certs(tmp)
    port = _free_port()
    d = daemon(
        AUTHZ
        + f'[grpc]\n  tcp_address = "127.0.0.1:{port}"\n'
        + f'  tcp_tls_cert = "{tmp / "server.crt"}"\n  tcp_tls_key = "{tmp / "server.key"}"\n'
        + f'  tcp_tls_ca = "{tmp / "ca.crt"}"\n',
        tmp=tmp,
    )
    d.wait_for_log(rf"serving\.\.\. address=127\.0\.0\.1:{port}")
    assert as_root(d, [["content.ingest", "team-b", SECRET]]) == [["OK", digest(SECRET)]]

    async def as_client(name: str) -> list[str]:
        ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
        ctx.load_cert_chain(str(tmp / f"{name}.crt"), str(tmp / f"{name}.key"))
        ctx.set_alpn_protocols(["h2"])
        ch = Channel("127.0.0.1", port, ssl=ctx)
        out: list[str] = []
        try:
            out.append((await VersionStub(ch).version(timeout=10)).version)
            for ns in ("team-b", "team-a"):
                store = RemoteContentStore(ch, namespace=ns, timeout=10)
                try:
                    out.append((await read_blob(store, digest(SECRET))).decode())
                except errdefs.Error as exc:
                    out.append(type(exc).__name__)
        finally:
            ch.close()
        return out

    version = as_root(d, [["version", "default"]])[0][1]
    assert run_sync(lambda: as_client("client-b")) == [version, SECRET, "PermissionDenied"]
    assert run_sync(lambda: as_client("client-san")) == [version, SECRET, "PermissionDenied"]
    assert run_sync(lambda: as_client("stranger")) == [version, "PermissionDenied", "PermissionDenied"]
    lines = denial_lines(d)
    assert len(lines) == 4
    assert any("tls=stranger.example (no principal)" in line for line in lines)
    assert any("tls=someone-else,client-b.example (principal tls-b)" in line for line in lines)
    assert scrape(d)[("containerd.services.content.v1.Content", "Info")] == 4  # read_blob's first call


def test_off_by_default_any_uid_acts_anywhere(daemon: Launcher) -> None:
    d = daemon('[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "isolated"\n')
    open_to_everyone(d)
    as_root(d, [["content.ingest", "team-b", SECRET]])
    got = as_uid(d, STRANGER_UID, [["content.read", "team-b", digest(SECRET)], ["ns.list", "default"]])
    assert got == [["OK", SECRET], ["OK", ["team-b"]]]
    assert "authorization" not in d.log()


def test_start_up_logs_the_policy_and_warns_about_unverified_tcp(daemon: Launcher) -> None:
    port = _free_port()
    d = daemon(AUTHZ + f'[grpc]\n  tcp_address = "127.0.0.1:{port}"\n')
    d.wait_for_log(r"authorization enabled: 2 principal\(s\); unrestricted uids on the unix socket: 0")
    d.wait_for_log(rf"the TCP listener 127\.0\.0\.1:{port} does not verify client certificates")


def test_bad_authorization_config_stops_start_up(daemon: Launcher) -> None:
    d = daemon(
        "[authorization]\n  enabled = true\n  [[authorization.principals]]\n    uids = [1000]\n"
        '    namespaces = ["team/a"]\n',
        wait=False,
    )
    assert d.proc.wait(30) != 0
    assert "authorization.principals.0.namespaces: namespace pattern 'team/a' may only hold" in d.log()
    assert "Traceback" not in d.log()
