"""containerd 1.6's own content conformance suite, over gRPC, against ctrd (and containerd).

``tests/interop/gosuite`` is a Go test of ours that runs containerd's
``content/testsuite`` (``ContentSuite`` and the cross-namespace suite of the
daemon's sharing policy) through ``content/proxy.NewContentStore`` -- the client
containerd itself uses when ctrd is its proxy content plugin -- with a leased
namespace per test. It is built once per session in GOPATH mode against
Debian's Go sources (``golang-go``, ``golang-github-containerd-containerd-dev``;
``.ci/run`` installs them), with its build cache in a temp directory, and run
against a real ctrd under each policy. Every subtest must pass. The same binary
against a private containerd 1.6 shows the harness itself holds (it passes
there too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrd.testing import running_containerd

pytestmark = pytest.mark.interop

HARNESS = Path(__file__).resolve().parent / "gosuite"
GOPATH_SYSTEM = Path("/usr/share/gocode")
CONTAINERD_SRC = GOPATH_SYSTEM / "src/github.com/containerd/containerd"

#: ContentSuite's subtests in containerd 1.6, then the cross-namespace one(s) of each policy
CONTENT_SUITE = (
    "Writer",
    "UpdateStatus",
    "CommitExists",
    "Resume",
    "ResumeTruncate",
    "ResumeDiscard",
    "ResumeCopy",
    "ResumeCopySeeker",
    "ResumeCopyReaderAt",
    "SmallBlob",
    "Labels",
    "CommitErrorState",
)
CROSS_NS = {
    "shared": ("CrossNamespaceAppend", "CrossNamespaceShare"),
    "isolated": ("CrossNamespaceIsolate",),
}

_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestContentSuite/(\S+) \(", re.MULTILINE)


@pytest.fixture(scope="session")
def gosuite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness's test binary, built once (nothing is written into the repository)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH: install Debian's golang-go (CI does)")
    if not (CONTAINERD_SRC / "content" / "testsuite").is_dir():
        pytest.skip(f"{CONTAINERD_SRC} is missing: install golang-github-containerd-containerd-dev (CI does)")
    tmp = tmp_path_factory.mktemp("gosuite")
    binary = tmp / "gosuite.test"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GO111MODULE": "off",  # GOPATH mode: Debian ships sources, not modules
        "GOPATH": f"{tmp / 'gopath'}:{GOPATH_SYSTEM}",
        "GOCACHE": str(tmp / "cache"),
        "GOENV": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",  # no C compiler needed
        "TMPDIR": str(tmp),
    }
    built = subprocess.run(
        [go, "test", "-c", "-o", str(binary), "."],
        cwd=HARNESS,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, f"building {HARNESS} failed:\n{built.stdout}{built.stderr}"
    return binary


def run_suite(binary: Path, socket: str, policy: str) -> None:
    """Run the suite against *socket*; assert every subtest (ContentSuite and *policy*'s) passed."""
    proc = subprocess.run(
        [str(binary), "-test.v", "-test.count=1", "-test.timeout=5m"],
        env={
            **os.environ,
            "CTRD_GOSUITE_ADDRESS": socket,
            "CTRD_GOSUITE_POLICY": policy,
        },
        cwd=binary.parent,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = proc.stdout + proc.stderr
    results: dict[str, str] = {}
    for verdict, name in _RESULT.findall(out):
        results[name] = verdict
    expected = (*CONTENT_SUITE, *CROSS_NS[policy])
    missing = [n for n in expected if n not in results]
    bad = sorted(f"{n}: {v}" for n, v in results.items() if v != "PASS")
    passed = sum(v == "PASS" for v in results.values())
    why = (
        f"{passed} of {len(results)} subtests passed under {policy}; "
        f"not passed: {bad}; never reported: {missing}; exit {proc.returncode}\n--- go test output ---\n{out}"
    )
    assert not missing, why
    assert not bad, why
    assert proc.returncode == 0, why


@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_content_suite_against_ctrd(gosuite: Path, daemon: Callable[..., Any], policy: str) -> None:
    d = daemon(f'[plugins."io.containerd.metadata.v1.sqlite"]\n  content_sharing_policy = "{policy}"\n')
    run_suite(gosuite, d.socket, policy)


@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_content_suite_against_containerd(gosuite: Path, policy: str) -> None:
    """The harness against the reference: what the ctrd runs are held to."""
    with running_containerd(policy=policy, wait_for_startup_gc=True) as c:
        run_suite(gosuite, c.socket, policy)
