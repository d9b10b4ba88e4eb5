"""ctrd.testing's in-memory store through the conformance suites, and the suite as a third party runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import Store, open_writer, read_blob, sha256_of, write_blob
from ctrd.testing import MemoryStore
from ctrd.testing.content_suite import ContentStoreSuite, CrossNSIsolatedSuite

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


class TestMemoryStore(ContentStoreSuite):
    @pytest.fixture
    async def store(self) -> Store:
        return MemoryStore()


class TestNamespacedMemoryStore(ContentStoreSuite):
    @pytest.fixture
    async def store(self) -> Store:
        return MemoryStore(namespaced=True)

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        return namespaces.with_namespace(f"n{k}")


class TestMemoryStoreCrossNamespace(CrossNSIsolatedSuite):
    @pytest.fixture
    async def store(self) -> Store:
        return MemoryStore(namespaced=True)

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        return namespaces.with_namespace(f"n{k}")


async def test_namespaced_store_needs_a_namespace_and_keeps_them_apart() -> None:
    store = MemoryStore(namespaced=True)
    with pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
        await store.writer("r")
    dgst = sha256_of(b"in a")
    with namespaces.with_namespace("a"):
        await write_blob(store, "r", b"in a")
    with namespaces.with_namespace("b"):
        with pytest.raises(errdefs.NotFound):
            await store.info(dgst)
        assert [i async for i in store.walk()] == []
    assert list(store.blobs["a"]) == [dgst]
    assert store.blobs["b"] == {}


async def test_failed_commit_releases_the_lock_and_keeps_the_data() -> None:
    store = MemoryStore()
    w = await store.writer("r", total=3)
    await w.write(b"abc")
    with pytest.raises(errdefs.FailedPrecondition, match='"r" failed size validation: 3 != 4'):
        await w.commit(4, "")
    assert not store.ingests[""]["r"].locked
    w = await open_writer(store, "r")
    assert (await w.status()).offset == 3
    assert w.digest() == sha256_of(b"abc")
    await w.commit(3, sha256_of(b"abc"), {"k": "v"})
    assert "r" not in store.ingests[""]
    assert store.blobs[""][sha256_of(b"abc")].labels == {"k": "v"}
    assert await read_blob(store, sha256_of(b"abc")) == b"abc"


async def test_update_refuses_other_fields_and_oversized_labels() -> None:
    store = MemoryStore()
    await write_blob(store, "r", b"x", labels={"a": "1"})
    info = await store.info(sha256_of(b"x"))
    with pytest.raises(errdefs.InvalidArgument, match='cannot update "size" field'):
        await store.update(info, ["size"])
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum size"):
        await store.update(dataclasses.replace(info, labels={"big": "x" * 5000}))
    assert (await store.info(info.digest)).labels == {"a": "1"}


def _snippet(name: str) -> str:
    text = DOCS.read_text()
    m = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", text, re.S)
    assert m, f"no snippet {name!r} in {DOCS}"
    return m.group(1)


def test_the_documented_snippet_runs_as_a_third_party_would(tmp_path: Path) -> None:
    """docs/plugins.md's suite snippet, alone, under pytest-asyncio's default (strict) mode."""
    (tmp_path / "test_my_store.py").write_text(_snippet("content-suite"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-rfEs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert re.search(r"asyncio: mode=(Mode\.)?strict", out, re.I), out
    # nothing but passes (strict mode skips an unmarked coroutine case: none may be)
    passed = re.search(r"^=+ (\d+) passed(, \d+ warnings?)? in ", out, re.M)
    assert passed, out
    assert int(passed.group(1)) > 60, out
