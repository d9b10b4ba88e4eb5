"""The content conformance suite against the SQLite metadata store, under both policies."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ctrd import errdefs, namespaces
from ctrd.content import Store, open_writer, read_blob, sha256_of, write_blob
from ctrd.content.local import LocalStore
from ctrd.metadata import DB, NamespacedContentStore, SharingPolicy, SqliteNamespaceStore
from ctrd.testing.content_suite import (
    ContentStoreSuite,
    CrossNSIsolatedSuite,
    CrossNSSharedSuite,
    SharedNSIsolatedSuite,
)


class _MetadataHarness:
    policy = SharingPolicy.SHARED
    prefix = "metadata"

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        db = DB(tmp_path / "meta.db")
        await db.open()
        self.backend = LocalStore(tmp_path / "content")
        self.ns_store = SqliteNamespaceStore(db, self.backend)
        try:
            yield NamespacedContentStore(db, self.backend, self.policy)
        finally:
            await db.close()

    def namespace(self, k: int) -> contextlib.AbstractContextManager[None]:
        return namespaces.with_namespace(f"{self.prefix}-n{k}")

    async def make_shareable(self, k: int) -> None:
        await self.ns_store.update_labels(
            f"{self.prefix}-n{k}", {"containerd.io/namespace.shareable": "true"}, replace=False
        )


class TestMetadataShared(_MetadataHarness, ContentStoreSuite):
    policy = SharingPolicy.SHARED


class TestMetadataIsolated(_MetadataHarness, ContentStoreSuite):
    policy = SharingPolicy.ISOLATED


class TestCrossNSShared(_MetadataHarness, CrossNSSharedSuite):
    policy = SharingPolicy.SHARED


class TestCrossNSIsolated(_MetadataHarness, CrossNSIsolatedSuite):
    policy = SharingPolicy.ISOLATED


class TestSharedNSIsolated(_MetadataHarness, SharedNSIsolatedSuite):
    policy = SharingPolicy.ISOLATED


# -- metadata-specific behaviour ----------------------------------------------------------


@contextlib.contextmanager
def ns(name: str) -> Iterator[None]:
    with namespaces.with_namespace(name):
        yield


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[DB, LocalStore, Path]]:
    db = DB(tmp_path / "meta.db")
    await db.open()
    try:
        yield db, LocalStore(tmp_path / "content"), tmp_path
    finally:
        await db.close()


def _blob_files(root: Path) -> list[Path]:
    return sorted((root / "content" / "blobs" / "sha256").glob("*"))


@pytest.mark.parametrize("policy", list(SharingPolicy))
async def test_namespace_required(env: tuple[DB, LocalStore, Path], policy: SharingPolicy) -> None:
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, policy)
    with pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
        await store.info(sha256_of(b"x"))
    with pytest.raises(errdefs.FailedPrecondition, match="namespace is required"):
        await store.writer("ref")
    with ns("bad/name"), pytest.raises(errdefs.InvalidArgument, match="namespace validation"):
        await store.info(sha256_of(b"x"))
    with pytest.raises(errdefs.InvalidArgument, match="ref must not be empty"):
        await store.writer("")


async def test_isolated_other_namespace_invisible_by_every_call(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, root = env
    store = NamespacedContentStore(db, backend, SharingPolicy.ISOLATED)
    data = b"secret layer" * 1000
    d = sha256_of(data)
    with ns("alice"):
        await write_blob(store, "a-ref", data, expected=d)
        w = await store.writer("alice-partial")
        await w.write(b"partial")
        await w.close()
    with ns("mallory"):
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
        with pytest.raises(errdefs.NotFound):
            await store.reader_at(d)
        with pytest.raises(errdefs.NotFound):
            await store.delete(d)
        from ctrd.content import Info

        with pytest.raises(errdefs.NotFound):
            await store.update(
                Info(digest=d, size=0, created_at=_now(), updated_at=_now(), labels={"a": "b"})
            )
        assert [i async for i in store.walk()] == []
        with pytest.raises(errdefs.NotFound):
            await store.status("alice-partial")
        with pytest.raises(errdefs.NotFound):
            await store.abort("alice-partial")
        assert await store.list_statuses() == []
        # knowing the digest: the writer starts empty, and a commit without the bytes fails
        w = await store.writer("steal", total=len(data), expected=d)
        st = await w.status()
        assert st.offset == 0
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(len(data), d)
        await w.close()
        w = await open_writer(store, "steal", total=len(data), expected=d)
        await w.write(data[:-1] + b"X")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(len(data), d)
        await w.close()
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
    with ns("alice"):
        assert (await store.info(d)).size == len(data)
        assert (await store.status("alice-partial")).offset == 7
    assert len(_blob_files(root)) == 1


async def test_isolated_full_upload_admits_without_second_copy(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, root = env
    store = NamespacedContentStore(db, backend, SharingPolicy.ISOLATED)
    data = b"layer" * 5000
    d = sha256_of(data)
    with ns("a"):
        await write_blob(store, "r", data, expected=d)
    with ns("b"):
        w = await store.writer("r", total=len(data), expected=d)
        await w.write(data)
        await w.commit(len(data), d)
        assert await read_blob(store, d) == data
    assert len(_blob_files(root)) == 1
    assert store.stats.isolated_reuploads == 1
    assert store.stats.admissions == 0


async def test_shared_admission_without_bytes(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, root = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    data = b"base image" * 3000
    d = sha256_of(data)
    with ns("a"):
        await write_blob(store, "r", data, expected=d)
    with ns("b"):
        w = await store.writer("r2", total=len(data), expected=d)
        st = await w.status()
        assert (st.offset, st.total, w.digest()) == (len(data), len(data), d)
        # no ingest status for a shared writer (containerd quirk)
        with pytest.raises(errdefs.NotFound):
            await store.status("r2")
        assert await store.list_statuses() == []
        with pytest.raises(errdefs.NotFound):
            await store.info(d)
        await w.commit(0, "")
        assert (await store.info(d)).size == len(data)
    assert store.stats.admissions == 1
    assert store.stats.saved_bytes == len(data)
    assert len(_blob_files(root)) == 1


async def test_shared_size_mismatch_does_not_share(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    data = b"abc" * 100
    d = sha256_of(data)
    with ns("a"):
        await write_blob(store, "r", data, expected=d)
    with ns("b"):
        w = await store.writer("r", total=len(data) + 1, expected=d)
        assert (await w.status()).offset == 0
        await w.close()


async def test_expected_in_own_namespace_already_exists(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, _ = env
    for policy in SharingPolicy:
        store = NamespacedContentStore(db, backend, policy)
        data = f"x-{policy}".encode()
        d = sha256_of(data)
        with ns(f"own-{policy}"):
            await write_blob(store, "r", data, expected=d)
            with pytest.raises(errdefs.AlreadyExists, match=f"content {d}"):
                await store.writer("other", expected=d)


async def test_info_cache_drops_entries_the_epoch_invalidated(env: tuple[DB, LocalStore, Path]) -> None:
    """Entries filled before a delete or label update can never hit again: the next fill drops
    them. Kept, they piled up to the cache's bound (65536 entries, ~1 KiB each): the daemon's
    RSS grew by ~0.4 KiB a call under the hardening load test, ~40 MiB in 5 minutes."""
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    blobs = [f"blob {i}".encode() for i in range(20)]
    with ns("n"):
        for i, data in enumerate(blobs):
            await write_blob(store, f"r{i}", data, labels={"containerd.io/gc.root": "1"})
        infos = [await store.info(sha256_of(data)) for data in blobs]
        assert len(store._info_cache) == len(blobs)
        assert await store.info(sha256_of(blobs[0])) is infos[0]  # a hit within the epoch
        await store.update(dataclasses.replace(infos[0], labels={"k": "v"}), ["labels.k"])
        fresh = await store.info(sha256_of(blobs[1]))
        assert fresh == infos[1]
        assert fresh is not infos[1]
        assert len(store._info_cache) == 1  # ...and the first fill after it dropped them
        assert (await store.info(sha256_of(blobs[0]))).labels == {"containerd.io/gc.root": "1", "k": "v"}


async def test_delete_leaves_the_file_to_gc_until_unreferenced(env: tuple[DB, LocalStore, Path]) -> None:
    from ctrd.metadata.gc import GarbageCollector

    db, backend, root = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    deletions: list[int] = []
    store.observe_deletions(lambda: deletions.append(1))
    gc = GarbageCollector(db, backend, store.gate)
    data = b"shared bytes"
    d = sha256_of(data)
    for name in ("a", "b"):
        with ns(name):
            await write_blob(store, "r", data, expected=d, labels={"containerd.io/gc.root": "t"})
    with ns("a"):
        await store.delete(d)
        with pytest.raises(errdefs.NotFound):
            await store.delete(d)
    assert deletions == [1]
    await gc.collect()
    assert len(_blob_files(root)) == 1
    with ns("b"):
        assert await read_blob(store, d) == data
        await store.delete(d)
    # the delete itself never touches the file (containerd: the collector removes it)
    assert len(_blob_files(root)) == 1
    await gc.collect()
    assert _blob_files(root) == []


async def test_labels_empty_values_dropped_and_oversize_rejected(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, _ = env
    store = NamespacedContentStore(db, backend)
    data = b"labels"
    d = sha256_of(data)
    with ns("l"):
        w = await store.writer("r")
        await w.write(data)
        with pytest.raises(errdefs.InvalidArgument):
            await w.commit(0, "", {"k": "v" * 4096})
        await w.close()
        w = await open_writer(store, "r")
        await w.commit(0, "", {"k": "v", "empty": ""})
        assert dict((await store.info(d)).labels) == {"k": "v"}


async def test_namespace_store(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, _ = env
    nss = SqliteNamespaceStore(db, backend)
    store = NamespacedContentStore(db, backend)
    await nss.create("one", {"a": "1"})
    with pytest.raises(errdefs.AlreadyExists, match='namespace "one"'):
        await nss.create("one", {})
    with pytest.raises(errdefs.InvalidArgument):
        await nss.create("bad name", {})
    assert await nss.labels("nope") == {}
    assert await nss.update_labels("one", {"b": "2", "a": ""}, replace=False) == {"b": "2"}
    assert await nss.update_labels("one", {"c": "3"}, replace=True) == {"c": "3"}
    with ns("two"):
        await write_blob(store, "r", b"keep me")
    assert await nss.list() == ["one", "two"]
    with pytest.raises(errdefs.FailedPrecondition, match='namespace "two" must be empty'):
        await nss.delete("two")
    with pytest.raises(errdefs.NotFound, match='namespace "zzz"'):
        await nss.delete("zzz")
    await nss.delete("one")
    assert await nss.list() == ["two"]


async def test_reopen_database_keeps_state(tmp_path: Path) -> None:
    data = b"persist"
    d = sha256_of(data)
    for attempt in range(2):
        db = DB(tmp_path / "meta.db")
        await db.open()
        store = NamespacedContentStore(db, LocalStore(tmp_path / "content"))
        with ns("p"):
            if attempt == 0:
                await write_blob(store, "r", data, expected=d)
                w = await store.writer("partial")
                await w.write(b"12345")
                await w.close()
            else:
                assert await read_blob(store, d) == data
                w = await open_writer(store, "partial")
                assert (await w.status()).offset == 5
                await w.write(b"678")
                await w.commit(8, "")
        await db.close()


def _now():  # type: ignore[no-untyped-def]
    from ctrd.content import utcnow

    return utcnow()


# -- List: filters pushed into SQL select exactly what the Python matcher selects ---------

_LABEL_SETS = [
    {},
    {"a": "1"},
    {"a": "2", "b": "x"},
    {"containerd.io/gc.root": "now"},
    {"containerd.io/gc.ref.content.l.0": "sha256:" + "1" * 64, "a": "1"},
    {"k.with.dots": "v", "ü": "ä"},
    {'q"uote': "1", "back\\slash": "2"},
    {"a": ""},  # empty values are never stored
    {"b": "x y,z"},
]

_FILTERS = [
    (),
    ("",),
    ("labels.a",),
    ("labels.a==1",),
    ("labels.a!=1",),
    ("labels.a==2,labels.b==x",),
    ("labels.a==1", "labels.b"),
    ('labels."containerd.io/gc.root"',),
    ('labels."containerd.io/gc.root"==now',),
    ('labels."containerd.io/gc.ref.content.l.0"',),
    ("labels.k.with.dots==v",),
    ('labels."k.with.dots"==v',),
    ('labels."ü"==ä',),
    ('labels."q\\"uote"==1',),
    ('labels."back\\\\slash"==2',),
    ("labels.a~=^[12]$",),
    ("labels.b~=/y,z/",),
    ('labels.b=="x y,z"',),
    ("labels",),
    ("labels.missing",),
    ("labels.missing!=x",),
    ("size",),
    ("size==1",),
    ("name!=x",),
    ("digest",),
    ("labels.a==1", ""),
]


async def test_walk_records_filters_match_python_matcher(env: tuple[DB, LocalStore, Path]) -> None:
    from ctrd import filters
    from ctrd.content import RecordWalker

    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    assert isinstance(store, RecordWalker)
    digests: list[str] = []
    with ns("lister"):
        for i, labels in enumerate(_LABEL_SETS * 3):
            data = f"blob {i}".encode()
            digests.append(sha256_of(data))
            await write_blob(store, f"r{i}", data, expected=digests[-1], labels=labels)
    with ns("other"):  # another namespace's blobs never show up
        await write_blob(store, "o", b"other", expected=sha256_of(b"other"), labels={"a": "1"})
    with ns("lister"):
        everything = [i async for i in store.walk()]
        assert [i.digest for i in everything] == sorted(digests)
        extra = [f"digest=={digests[0]}", f"digest!={digests[0]}", f"digest=={digests[1]}", "labels.a==1"]
        for flt in [*_FILTERS, (extra[0],), (extra[1],), (extra[2], extra[3]), (f"{extra[0]},{extra[3]}",)]:
            parsed = filters.parse_all(*flt)
            want = [
                i.digest
                for i in everything
                if parsed.match(filters.adaptor_from_mapping({"digest": i.digest}, i.labels))
            ]
            got = [r.digest for batch in [b async for b in store.walk_records(*flt)] for r in batch]
            assert got == want, flt
            assert [i.digest async for i in store.walk(*flt)] == want, flt
        # a stored record carries what Info carries
        recs = [r for batch in [b async for b in store.walk_records("labels.b")] for r in batch]
        info = await store.info(recs[0].digest)
        assert recs[0].labels == info.labels
        assert recs[0].size == info.size
        assert recs[0].created_us == int(info.created_at.timestamp() * 1_000_000)


def test_sql_prefilter_pushes_simple_selectors_down() -> None:
    from ctrd import filters
    from ctrd.metadata._prefilter import sql_prefilter

    where, params = sql_prefilter(filters.parse_all('labels."containerd.io/gc.root"==x,labels.a'))
    assert "json_extract" in where
    assert "json_type" in where
    assert params == ('$."containerd.io/gc.root"', "x", '$."a"')
    # an alternative with nothing translatable: nothing pushed down
    assert sql_prefilter(filters.parse_all("labels.a==1", "labels.b~=x")) == ("", ())
    # keys SQLite's JSON paths would read differently stay in Python
    assert sql_prefilter(filters.parse_all('labels."ü"==1')) == ("", ())
    assert sql_prefilter(filters.parse_all('labels."q\\"q"==1')) == ("", ())


async def test_walk_records_pages(env: tuple[DB, LocalStore, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of ``_WALK_BATCH`` rows: every blob once, in order, with and without a pushed-down
    filter, full and partial last pages; a walk left after its first page closes cleanly."""
    import ctrd.metadata.content as mc

    monkeypatch.setattr(mc, "_WALK_BATCH", 7)
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    digests: list[str] = []
    labelled: list[str] = []
    with ns("pages"):
        for i in range(30):  # 4 full pages and a partial one; 21 exactly fills 3 pages (below)
            data = f"page blob {i}".encode()
            digests.append(sha256_of(data))
            labels = {"k": "v"} if i % 3 == 0 else {}
            if labels:
                labelled.append(digests[-1])
            await write_blob(store, f"p{i}", data, expected=digests[-1], labels=labels)
        batches = [b async for b in store.walk_records()]
        assert [r.digest for b in batches for r in b] == sorted(digests)
        assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
        got = [r.digest for b in [b async for b in store.walk_records("labels.k==v")] for r in b]
        assert got == sorted(labelled)
        # leaving after the first page: nothing leaks or fails, the next walk sees everything
        walk = store.walk_records()
        first = await anext(walk)
        assert [r.digest for r in first] == sorted(digests)[:7]
        await walk.aclose()
        assert [i.digest async for i in store.walk()] == sorted(digests)
    with ns("exact"):
        for i in range(21):
            data = f"exact blob {i}".encode()
            await write_blob(store, f"e{i}", data, expected=sha256_of(data))
        assert [len(b) async for b in store.walk_records()] == [7, 7, 7]


async def test_backend_errors_name_the_callers_ref(env: tuple[DB, LocalStore, Path]) -> None:
    """A backend error naming its own ref (``<namespace id>/<sequence>/<ref>``) reaches the
    caller naming the caller's ref: backend refs are the store's internals."""
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    with namespaces.with_namespace("ns"):
        w = await open_writer(store, "my-ref")
        bw = w.backend_writer  # type: ignore[attr-defined]
        bref = w.bref  # type: ignore[attr-defined]
        assert bref != "my-ref"

        async def full(data: object) -> int:
            raise errdefs.ResourceExhausted(f"write to ref {bref}: No space left on device")

        bw.write = full
        with pytest.raises(errdefs.ResourceExhausted) as ei:
            await w.write(b"data")
        assert str(ei.value) == "write to ref my-ref: No space left on device: resource exhausted"
        assert bref not in str(ei.value)
        await w.close()


async def test_locked_ref_error_names_the_callers_ref(env: tuple[DB, LocalStore, Path]) -> None:
    db, backend, _ = env
    store = NamespacedContentStore(db, backend, SharingPolicy.SHARED)
    with namespaces.with_namespace("ns"):
        w = await open_writer(store, "held")
        bref = w.bref  # type: ignore[attr-defined]
        try:
            # the metadata layer lets the second open through to the backend, whose lock refuses it
            with pytest.raises(errdefs.Unavailable) as ei:
                await store.writer("held")
            assert "ref held locked" in str(ei.value), str(ei.value)
            assert bref not in str(ei.value)
        finally:
            await w.close()
