"""ctrd's own protocol files are wire-identical with containerd 1.6's where they claim to be.

Both are compiled with ``grpc_tools.protoc`` into descriptor sets, and every message of the
packages compared must have the same fields (name, number, type, label, message type) and
every service the same methods (request, response, streaming); gogoproto's options (Go
code generation only) are not compared. containerd's files come from Debian's
``golang-github-containerd-containerd-dev`` (``/usr/share/gocode``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ROOT / "proto"
GOCODE = Path("/usr/share/gocode/src")
CONTAINERD = GOCODE / "github.com/containerd/containerd"

#: (containerd's file under CONTAINERD, ctrd's file under proto/)
PAIRS = (
    ("api/services/images/v1/images.proto", "containerd/services/images/v1/images.proto"),
    ("api/events/image.proto", "containerd/events/image.proto"),
    ("api/types/descriptor.proto", "containerd/types/descriptor.proto"),
)


def _descriptors(includes: list[Path], files: list[Path], out: Path) -> Any:
    from google.protobuf import descriptor_pb2

    cmd = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{p}" for p in includes)]
    cmd += ["--include_imports", f"--descriptor_set_out={out}", *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _shape(fds: Any, packages: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fds.file:
        if f.package not in packages:
            continue
        for m in f.message_type:
            out[f"{f.package}.{m.name}"] = _message(m)
        for s in f.service:
            out[f"{f.package}.{s.name}"] = sorted(
                (x.name, x.input_type, x.output_type, x.client_streaming, x.server_streaming)
                for x in s.method
            )
    return out


def _message(m: Any) -> Any:
    fields = sorted((f.number, f.name, f.type, f.label, f.type_name) for f in m.field)
    nested = {n.name: _message(n) for n in m.nested_type}
    return fields, nested


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail(
            "grpc_tools is missing: install the `proto` extra (pip install -e '.[proto]')", pytrace=False
        )
    missing = [p for p, _ in PAIRS if not (CONTAINERD / p).exists()]
    if missing:
        pytest.skip(
            f"containerd's protocol files are missing ({missing[0]}): "
            "apt-get install golang-github-containerd-containerd-dev"
        )
    tmp = tmp_path_factory.mktemp("protos")
    theirs = _descriptors(
        [GOCODE, GOCODE / "github.com/gogo/protobuf"],
        [CONTAINERD / p for p, _ in PAIRS],
        tmp / "theirs.pb",
    )
    ours = _descriptors([OURS], [OURS / p for _, p in PAIRS], tmp / "ours.pb")
    packages = {"containerd.services.images.v1", "containerd.types"}
    return _shape(ours, packages), _shape(theirs, packages)


def test_images_service_events_and_descriptor_are_containerds(
    shapes: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    ours, theirs = shapes
    assert "containerd.services.images.v1.Images" in theirs
    assert "containerd.services.images.v1.ImageCreate" in theirs
    # ctrd's containerd.types holds more (Platform, Mount) than the files compared bring in
    theirs_names = set(theirs)
    assert theirs_names <= set(ours)
    for name in sorted(theirs_names):
        assert ours[name] == theirs[name], name
