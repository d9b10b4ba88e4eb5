"""``examples/ctrd-plugin-example`` installed for real, and broken plugin packages.

The example is pip-installed into a throw-away virtual environment whose base
packages (ctrd, grpclib, pytest...) come from the test interpreter's
environment through a ``site.addsitedir`` ``.pth`` line, so no registry is
needed. Daemons run with that environment's python (``ctrd.testing.start_ctrd(python=...)``).

* both plugins show in ``ctr plugins ls`` with their exports; ``pip uninstall`` removes them;
* the quota answers ``ctr content ingest`` with RESOURCE_EXHAUSTED and a precise message;
* the example's own test suite passes from that installation;
* a bad value in a plugin's config section stops start-up;
* broken packages (import error, init error, failed dependency) show as ``error``
  with their message while the daemon serves content.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctrd.content import sha256_of
from ctrd.testing import DaemonProcess, start_ctrd

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ctrd-plugin-example"
BROKEN = Path(__file__).resolve().parent / "brokenplugins"
CTR = "/usr/bin/ctr"

QUOTA = '[plugins."ctrd.example.quota.v1.content"]\n  default_limit_bytes = 100\n'
ROOTED = '[plugins."io.containerd.gc.v1.scheduler"]\n  startup_delay = "1h"\n'


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = str(path / "bin" / "python")

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [self.python, "-m", "pip", "--disable-pip-version-check", "-q", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return p


def make_venv() -> Venv:
    """A venv seeing the current environment's packages, with the example pip-installed."""
    d = Path(tempfile.mkdtemp(prefix="ctrd-venv-", dir="/tmp"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(d / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bases = [p for p in site.getsitepackages() if os.path.isdir(p)]
    Path(purelib, "zz_ctrd_base.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in bases)
    )
    v = Venv(d)
    v.pip("install", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    return v


@pytest.fixture(scope="module")
def venv() -> Iterator[Venv]:
    v = make_venv()
    try:
        yield v
    finally:
        shutil.rmtree(v.path, ignore_errors=True)


@pytest.fixture
def ctrd_in(request: pytest.FixtureRequest) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(venv: Venv | None, config: str = "", env: dict[str, str] | None = None) -> DaemonProcess:
        d = start_ctrd(config, python=venv.python if venv else sys.executable, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"--- ctrd log ---\n{d.log()}")
        d.stop()


def ctr(sock: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CTR, "--address", sock, *args], input=data or b"", capture_output=True, timeout=60, check=False
    )


def rows(sock: str) -> dict[str, str]:
    """``ctr plugins ls`` as {"<type> <id>": status}."""
    p = ctr(sock, "plugins", "ls")
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.decode().splitlines()[1:]:
        f = line.split()
        out[f"{f[0]} {f[1]}"] = f[-1]
    return out


def test_installed_plugins_in_ctr_plugins_ls(venv: Venv, ctrd_in: Callable[..., DaemonProcess]) -> None:
    d = ctrd_in(venv, QUOTA + '[plugins."io.containerd.grpc.v1.example"]\n  greeting = "Servus"\n')
    r = rows(d.address)
    assert r["io.containerd.grpc.v1 example"] == "ok"
    assert r["ctrd.example.quota.v1 content"] == "ok"
    detail = ctr(d.address, "plugins", "ls", "-d", "id==example").stdout.decode()
    assert "service" in detail
    assert "ctrd_example.v1.Example" in detail
    assert "Servus" in detail
    detail = ctr(d.address, "plugins", "ls", "-d", "type==ctrd.example.quota.v1").stdout.decode()
    assert "default_limit_bytes" in detail
    assert "100" in detail
    assert "io.containerd.metadata.v1" in detail


def test_quota_error_through_ctr(venv: Venv, ctrd_in: Callable[..., DaemonProcess]) -> None:
    d = ctrd_in(venv, QUOTA + ROOTED)
    small = os.urandom(80)
    assert ctr(d.address, "content", "ingest", "a", data=small).returncode == 0
    p = ctr(d.address, "content", "ingest", "b", data=os.urandom(30))
    err = p.stderr.decode()
    # on the wire: RESOURCE_EXHAUSTED; containerd 1.6's client has no class for it and prints
    # "<message>: resource exhausted: unknown"
    assert p.returncode != 0, err
    assert "resource exhausted" in err, err
    assert 'quota exceeded in namespace "default"' in err
    assert "(30 bytes) would use 110 of 100 bytes (80 in use)" in err
    # the daemon goes on serving; another namespace has its own quota
    assert ctr(d.address, "-n", "other", "content", "ingest", "b", data=os.urandom(30)).returncode == 0
    assert ctr(d.address, "content", "get", sha256_of(small)).stdout == small


def test_example_tests_pass_from_the_installation(venv: Venv) -> None:
    p = subprocess.run(
        [venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=str(EXAMPLE),
    )
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-2000:]
    assert " passed" in p.stdout
    assert "failed" not in p.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[plugins."ctrd.example.quota.v1.content"]\n  default_limit_bytes = -5\n', "default_limit_bytes"),
        ('[plugins."io.containerd.grpc.v1.example"]\n  max_name_length = "long"\n', "max_name_length"),
    ],
)
def test_bad_config_value_stops_startup(venv: Venv, config: str, message: str) -> None:
    with pytest.raises(RuntimeError) as ei:
        start_ctrd(config, python=venv.python)
    text = str(ei.value)
    assert "exited with 1" in text, text
    assert message in text, text
    assert "[plugins." in text


def test_uninstall_removes_them(ctrd_in: Callable[..., DaemonProcess]) -> None:
    v = make_venv()
    try:
        d = ctrd_in(v)
        assert "io.containerd.grpc.v1 example" in rows(d.address)
        d.stop()
        v.pip("uninstall", "-y", "ctrd-plugin-example")
        d = ctrd_in(v)
        r = rows(d.address)
        assert "io.containerd.grpc.v1 example" not in r
        assert "ctrd.example.quota.v1 content" not in r
        assert r["io.containerd.grpc.v1 content"] == "ok"
    finally:
        shutil.rmtree(v.path, ignore_errors=True)


def serves_content(sock: str) -> None:
    data = os.urandom(1000)
    assert ctr(sock, "content", "ingest", "still-serving", data=data).returncode == 0
    assert ctr(sock, "content", "get", sha256_of(data)).stdout == data


def test_broken_packages_show_errors_and_content_still_serves(ctrd_in: Callable[..., DaemonProcess]) -> None:
    d = ctrd_in(None, ROOTED, env={"PYTHONPATH": str(BROKEN)})
    r = rows(d.address)
    for name in ("broken-import", "broken-init", "broken-dependant"):
        assert r[f"io.containerd.grpc.v1 {name}"] == "error", r
    assert r["ctrd.broken.v1 provider"] == "error"
    assert r["io.containerd.grpc.v1 content"] == "ok"
    detail = ctr(d.address, "plugins", "ls", "-d", "id==broken-import").stdout.decode()
    assert "No module named 'ctrd_example_dependency_that_is_not_installed'" in detail, detail
    detail = ctr(d.address, "plugins", "ls", "-d", "id==broken-init").stdout.decode()
    assert "cannot reach the license server" in detail, detail
    detail = ctr(d.address, "plugins", "ls", "-d", "id==broken-dependant").stdout.decode()
    assert "no working plugin of required type ctrd.broken.v1" in detail, detail
    serves_content(d.address)


def test_example_missing_its_generated_code(
    venv: Venv, ctrd_in: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """A damaged installation of the example: its gRPC plugin cannot import; the quota plugin still works."""
    site_dir = Path(
        subprocess.run(
            [
                venv.python,
                "-c",
                "import ctrd_plugin_example, os; print(os.path.dirname(ctrd_plugin_example.__path__[0]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copytree(site_dir / "ctrd_plugin_example", damaged / "ctrd_plugin_example")
    for dist in site_dir.glob("ctrd_plugin_example-*.dist-info"):
        shutil.copytree(dist, damaged / dist.name)
    shutil.rmtree(damaged / "ctrd_plugin_example" / "api")
    d = ctrd_in(None, QUOTA.replace("100", "100000") + ROOTED, env={"PYTHONPATH": str(damaged)})
    r = rows(d.address)
    assert r["io.containerd.grpc.v1 example"] == "error"
    assert r["ctrd.example.quota.v1 content"] == "ok"
    detail = ctr(d.address, "plugins", "ls", "-d", "id==example").stdout.decode()
    assert "No module named 'ctrd_plugin_example.api'" in detail, detail
    serves_content(d.address)
