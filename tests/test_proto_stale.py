"""The committed bindings in src/ctrd/api must match what scripts/genproto.sh produces.

If this fails after editing proto/, regenerate with:

    PYTHON=<venv>/bin/python scripts/genproto.sh
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "genproto.sh"
COMMITTED = ROOT / "src" / "ctrd" / "api"

# Module needed by genproto.sh -> distribution providing it.
_GENERATOR_MODULES = {
    "grpc_tools": "grpcio-tools",
    "betterproto2_compiler": "betterproto2-compiler",
}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _tree(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or path.suffix in {".pyc", ".pyo"}:
            continue
        if path.is_file():
            files[rel.as_posix()] = path.read_bytes()
    return files


def test_generated_api_is_up_to_date(tmp_path: Path) -> None:
    missing = [dist for mod, dist in _GENERATOR_MODULES.items() if not _importable(mod)]
    if missing:
        pytest.fail(
            f"cannot check src/ctrd/api for staleness: {', '.join(missing)} not installed in "
            f"{sys.executable}; install the `proto` extra (pip install -e '.[proto]')",
            pytrace=False,
        )

    out = tmp_path / "api"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, f"genproto.sh failed:\n{proc.stdout}\n{proc.stderr}"

    expected = _tree(out)
    actual = _tree(COMMITTED)
    assert expected, "genproto.sh produced no files"

    hint = "src/ctrd/api is stale; run: PYTHON=<venv>/bin/python scripts/genproto.sh"
    only_generated = sorted(expected.keys() - actual.keys())
    only_committed = sorted(actual.keys() - expected.keys())
    assert not only_generated, f"{hint}\nmissing from src/ctrd/api: {only_generated}"
    assert not only_committed, f"{hint}\nnot produced by genproto.sh: {only_committed}"
    changed = sorted(name for name in expected if expected[name] != actual[name])
    assert not changed, f"{hint}\ncontent differs: {changed}"
