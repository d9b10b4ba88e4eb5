"""The local content store: the conformance suite plus layout and restart tests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest

from ctrd import errdefs
from ctrd.content import (
    EMPTY_SHA256,
    Store,
    digest,
    open_writer,
    parse,
    read_blob,
    sha256_of,
    validate,
    write_blob,
)
from ctrd.content.local import LocalStore
from ctrd.content.local._fs import format_timestamp, parse_timestamp
from ctrd.testing.content_suite import BAD_DIGESTS, ContentStoreSuite, create_content


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _ingest_dir(store: LocalStore, ref: str) -> Path:
    return store.root / "ingest" / hashlib.sha256(ref.encode()).hexdigest()


class TestLocal(ContentStoreSuite):
    """containerd's "fs" run of the suite, without a label store."""

    supports_labels = False

    @pytest.fixture
    async def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "content")

    @pytest.fixture
    def local(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "content")

    # -- layout -----------------------------------------------------------

    async def test_ingest_dir_created(self, local: LocalStore) -> None:
        assert (local.root / "ingest").is_dir()

    async def test_blob_layout_and_mode(self, local: LocalStore) -> None:
        data, dgst = create_content(4 << 20)
        w = await open_writer(local, "myref")
        await w.write(data)
        await w.commit(len(data), dgst)
        path = local.root / "blobs" / "sha256" / dgst.removeprefix("sha256:")
        st = path.stat()
        assert stat.S_ISREG(st.st_mode)
        assert st.st_mode & 0o333 == 0, oct(st.st_mode)
        assert path.read_bytes() == data
        assert list((local.root / "ingest").iterdir()) == []
        info = await local.info(dgst)
        assert info.created_at == info.updated_at
        assert int(info.created_at.timestamp()) == int(st.st_mtime)

    async def test_ingest_files(self, local: LocalStore) -> None:
        w = await local.writer("with-total", total=10)
        await w.write(b"12345")
        before = (await w.status()).updated_at
        await w.close()
        d = _ingest_dir(local, "with-total")
        assert sorted(p.name for p in d.iterdir()) == ["data", "ref", "startedat", "total", "updatedat"]
        assert (d / "ref").read_text() == "with-total"
        assert (d / "data").read_bytes() == b"12345"
        assert (d / "total").read_text() == "10"
        started = parse_timestamp((d / "startedat").read_text())
        updated = parse_timestamp((d / "updatedat").read_text())
        assert started is not None
        assert updated is not None
        assert updated == before
        st = await local.status("with-total")
        assert (st.started_at, st.updated_at, st.offset, st.total) == (started, updated, 5, 10)

        w = await local.writer("no-total")
        await w.close()
        assert not (_ingest_dir(local, "no-total") / "total").exists()

    async def test_resume_after_restart(self, local: LocalStore) -> None:
        """A new store on the same root (a daemon restart) resumes the ingest: offset, hash, times."""
        data, dgst = create_content(300_000)
        w = await local.writer("restart", total=len(data), expected=dgst)
        await w.write(data[:200_000])
        before = await w.status()
        # no close(): the process "dies" with the lock held
        restarted = LocalStore(local.root)
        st = await restarted.status("restart")
        assert (st.ref, st.offset, st.total) == ("restart", 200_000, len(data))
        assert st.started_at == before.started_at
        w2 = await restarted.writer("restart", total=len(data), expected=dgst)
        assert w2.digest() == sha256_of(data[:200_000])
        assert (await w2.status()).offset == 200_000
        await w2.write(data[200_000:])
        await w2.commit(len(data), dgst)
        assert await read_blob(restarted, dgst) == data
        assert await read_blob(local, dgst) == data
        await w.close()  # the old writer's close must not break anything

    async def test_locks_are_per_instance(self, local: LocalStore) -> None:
        w = await local.writer("per-instance")
        other = LocalStore(local.root)
        w2 = await other.writer("per-instance")
        await w2.close()
        await w.close()

    async def test_reads_containerd_timestamps(self, local: LocalStore) -> None:
        """Timestamps written by Go (nanoseconds, local offset) are read correctly."""
        w = await local.writer("go")
        await w.write(b"abc")
        await w.close()
        d = _ingest_dir(local, "go")
        (d / "startedat").write_text("2020-01-02T03:04:05.123456789+02:00")
        (d / "updatedat").write_text("2030-01-02T03:04:05Z")
        st = await local.status("go")
        assert format_timestamp(st.started_at) == "2020-01-02T01:04:05.123456Z"
        assert format_timestamp(st.updated_at) == "2030-01-02T03:04:05Z"

    async def test_corrupt_ingest_files(self, local: LocalStore) -> None:
        """Unreadable total/timestamps fall back to 0 / the data mtime."""
        w = await local.writer("corrupt", total=5)
        await w.write(b"abc")
        await w.close()
        d = _ingest_dir(local, "corrupt")
        (d / "total").write_text("garbage")
        (d / "startedat").write_text("yesterday")
        (d / "updatedat").unlink()
        st = await local.status("corrupt")
        assert (st.offset, st.total) == (3, 0)
        assert st.started_at == st.updated_at

    async def test_incomplete_ingest_is_recreated(self, local: LocalStore) -> None:
        """An ingest dir without data (crash during creation) is skipped by listings and recreated."""
        d = _ingest_dir(local, "half")
        d.mkdir()
        (d / "ref").write_text("half")
        with pytest.raises(errdefs.NotFound):
            await local.status("half")
        assert await local.list_statuses() == []
        w = await local.writer("half", total=3)
        await w.write(b"abc")
        await w.commit(3, sha256_of(b"abc"))
        (local.root / "ingest" / "not-a-dir").write_text("x")
        assert await local.list_statuses() == []
        assert await local.walk_status_refs() == []

    async def test_walk_skips_foreign_files(self, local: LocalStore) -> None:
        data, dgst = create_content(10)
        await write_blob(local, "x", data, expected=dgst)
        (local.root / "blobs" / "sha256" / "not-a-digest").write_text("x")
        (local.root / "blobs" / "sha256" / ("b" * 64)).mkdir()
        (local.root / "blobs" / "md5").mkdir()
        (local.root / "blobs" / "md5" / "d41d8cd98f00b204e9800998ecf8427e").write_text("")
        assert [i.digest async for i in local.walk()] == [dgst]

    async def test_walk_status_refs(self, local: LocalStore) -> None:
        for ref in ("r2", "r1"):
            w = await local.writer(ref)
            await w.close()
        assert await local.walk_status_refs() == ["r1", "r2"]

    # -- errors -------------------------------------------------------------

    async def test_error_messages(self, local: LocalStore) -> None:
        absent = sha256_of(b"absent")
        with pytest.raises(errdefs.NotFound) as exc_info:
            await local.info(absent)
        assert str(exc_info.value) == f"content digest {absent}: not found"
        with pytest.raises(errdefs.NotFound) as exc_info:
            await local.reader_at(absent)
        assert str(exc_info.value) == f"content digest {absent}: not found"
        with pytest.raises(errdefs.NotFound) as exc_info:
            await local.status("r")
        assert str(exc_info.value) == "reference r: not found"
        info = await local.info(await _committed(local))
        with pytest.raises(errdefs.FailedPrecondition) as fp_info:
            await local.update(info)
        assert str(fp_info.value) == "update not supported on immutable content store: failed precondition"
        with pytest.raises(errdefs.InvalidArgument) as ia_info:
            await local.writer("")
        assert str(ia_info.value) == "ref must not be empty: invalid argument"

    async def test_no_path_in_error_messages(self, local: LocalStore, tmp_path: Path) -> None:
        dgst = await _committed(local)
        absent = sha256_of(b"absent")
        root = str(tmp_path)
        errors: list[errdefs.Error] = []
        for call in (
            local.info(absent),
            local.reader_at(absent),
            local.delete(absent),
            local.status("nope"),
            local.abort("nope"),
            local.writer("x", expected=dgst),
            local.info("sha256:../../x"),
        ):
            with pytest.raises(errdefs.Error) as exc_info:
                await call
            errors.append(exc_info.value)
        w = await local.writer("mismatch")
        await w.write(b"abc")
        with pytest.raises(errdefs.Error) as exc_info:
            await w.commit(4, "")
        errors.append(exc_info.value)
        w = await local.writer("aborted")
        await w.write(b"abc")
        await local.abort("aborted")
        with pytest.raises(errdefs.Error) as exc_info:
            await w.commit(3, "")
        errors.append(exc_info.value)
        for err in errors:
            assert root not in str(err), str(err)
            assert "/ingest" not in str(err), str(err)
            assert "/blobs" not in str(err), str(err)

    async def test_bad_digest_checked_before_fs_access(
        self, local: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A traversal digest pointing at a real file is still InvalidArgument, with no fs call made."""
        (tmp_path / "outside").write_text("secret")
        bad = "sha256:../../../outside"
        assert (local.root / "blobs" / "sha256" / "../../../outside").resolve() == (tmp_path / "outside")

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("filesystem accessed")

        monkeypatch.setattr(os, "stat", forbidden)
        monkeypatch.setattr(os, "open", forbidden)
        monkeypatch.setattr(os, "unlink", forbidden)
        for bad_digest in (bad, *BAD_DIGESTS):
            for call in (local.info, local.reader_at, local.delete):
                with pytest.raises(errdefs.InvalidArgument):
                    await call(bad_digest)
        monkeypatch.undo()
        assert (tmp_path / "outside").read_text() == "secret"

    async def test_total_mismatch(self, local: LocalStore) -> None:
        w = await local.writer("tot", total=10)
        await w.close()
        with pytest.raises(errdefs.FailedPrecondition) as exc_info:  # containerd: Unknown
            await local.writer("tot", total=20)
        assert str(exc_info.value) == "provided total differs from status: 20 != 10: failed precondition"
        w = await local.writer("tot", total=10)  # the lock was released
        await w.close()
        w = await local.writer("tot")  # total 0: keeps the stored total
        assert (await w.status()).total == 10
        await w.close()

    async def test_total_recorded_on_resume(self, local: LocalStore) -> None:
        w = await local.writer("late-total")
        await w.close()
        w = await local.writer("late-total", total=7)
        assert (await w.status()).total == 7
        await w.close()
        assert (await local.status("late-total")).total == 7

    async def test_unavailable_message(self, local: LocalStore) -> None:
        w = await local.writer("busy")
        with pytest.raises(errdefs.Unavailable) as exc_info:
            await local.writer("busy")
        assert re.fullmatch(r"ref busy locked for \S+ \(since \S+\): unavailable", str(exc_info.value))
        await w.close()

    async def test_writer_state_errors(self, local: LocalStore) -> None:
        w = await local.writer("state")
        await w.write(b"abc")
        with pytest.raises(errdefs.InvalidArgument) as exc_info:
            await w.truncate(1)
        assert str(exc_info.value) == "truncate: unsupported size: invalid argument"
        await w.close()
        await w.close()  # idempotent
        with pytest.raises(errdefs.FailedPrecondition) as fp_info:
            await w.commit(3, "")
        assert str(fp_info.value) == "cannot commit on closed writer: failed precondition"
        with pytest.raises(errdefs.FailedPrecondition):
            await w.write(b"x")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.truncate(0)
        assert w.digest() == sha256_of(b"abc")
        assert (await w.status()).offset == 3

    async def test_commit_closes_writer(self, local: LocalStore) -> None:
        w = await local.writer("cc")
        await w.write(b"abc")
        await w.commit(3, "")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.commit(3, "")
        with pytest.raises(errdefs.FailedPrecondition):
            await w.write(b"x")
        await w.close()

    async def test_abort_under_open_writer(self, local: LocalStore) -> None:
        w = await local.writer("ab")
        await w.write(b"abc")
        await local.abort("ab")
        with pytest.raises(errdefs.NotFound):
            await w.commit(3, "")
        await w.close()
        w = await local.writer("ab")
        assert (await w.status()).offset == 0
        await w.close()

    async def test_reader_edges(self, local: LocalStore) -> None:
        dgst = await _committed(local)
        ra = await local.reader_at(dgst)
        assert await ra.read_at(ra.size + 5, 1) == b""
        with pytest.raises(errdefs.InvalidArgument):
            await ra.read_at(-1, 1)
        with pytest.raises(errdefs.InvalidArgument):
            await ra.read_at(0, -1)
        await ra.close()
        await ra.close()
        with pytest.raises(errdefs.FailedPrecondition):
            await ra.read_at(0, 1)

    async def test_reader_survives_delete_and_concurrent_close(self, local: LocalStore) -> None:
        data, dgst = create_content(3 << 20)
        await write_blob(local, "big", data, expected=dgst)
        ra = await local.reader_at(dgst)
        read = asyncio.ensure_future(ra.read_at(0, len(data)))
        await asyncio.sleep(0)
        await ra.close()
        await local.delete(dgst)
        assert await read == data

    # -- the shared fd cache -------------------------------------------------

    async def test_readers_share_one_cached_fd(self, local: LocalStore) -> None:
        data, dgst = create_content(100_000)
        await write_blob(local, "shared", data, expected=dgst)
        before = _open_fds()
        a = await local.reader_at(dgst)
        b = await local.reader_at(dgst)
        assert _open_fds() == before + 1
        await a.close()
        assert await b.read_at(10, 5) == data[10:15]
        await b.close()
        assert _open_fds() == before + 1  # kept for the next reader
        async with await local.reader_at(dgst) as c:
            assert await c.read_at(0, len(data)) == data
        assert _open_fds() == before + 1

    async def test_delete_closes_the_cached_fd(self, local: LocalStore) -> None:
        data, dgst = create_content(1000)
        await write_blob(local, "gone", data, expected=dgst)
        before = _open_fds()
        await (await local.reader_at(dgst)).close()
        assert _open_fds() == before + 1
        await local.delete(dgst)
        assert _open_fds() == before
        with pytest.raises(errdefs.NotFound):
            await local.reader_at(dgst)

    async def test_delete_under_a_reader_closes_its_fd_at_close(self, local: LocalStore) -> None:
        data, dgst = create_content(1000)
        await write_blob(local, "held", data, expected=dgst)
        before = _open_fds()
        ra = await local.reader_at(dgst)
        await local.delete(dgst)
        assert await ra.read_at(0, len(data)) == data  # the unlinked file
        assert _open_fds() == before + 1
        await ra.close()
        assert _open_fds() == before
        # re-committed content gets a fresh fd, not the deleted file's
        await write_blob(local, "again", data, expected=dgst)
        async with await local.reader_at(dgst) as rb:
            assert await rb.read_at(0, len(data)) == data

    async def test_fd_cache_is_bounded(self, local: LocalStore) -> None:
        from ctrd.content.local._reader import FD_CACHE_MAX

        before = _open_fds()
        blobs = []
        for i in range(FD_CACHE_MAX + 6):
            data = f"blob {i}".encode()
            dgst = sha256_of(data)
            await write_blob(local, f"b{i}", data, expected=dgst)
            blobs.append((dgst, data))
        held = await local.reader_at(blobs[0][0])  # in use while it is evicted
        for dgst, data in blobs[1:]:
            async with await local.reader_at(dgst) as ra:
                assert await ra.read_at(0, 100) == data
        assert _open_fds() == before + FD_CACHE_MAX + 1
        assert await held.read_at(0, 100) == blobs[0][1]
        await held.close()
        assert _open_fds() == before + FD_CACHE_MAX

    async def test_cancelled_write_keeps_state_consistent(self, local: LocalStore) -> None:
        data, _ = create_content(8 << 20)
        w = await local.writer("cancel")
        task = asyncio.ensure_future(w.write(data))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        st = await w.status()
        on_disk = (_ingest_dir(local, "cancel") / "data").read_bytes()
        assert st.offset == len(on_disk)
        assert w.digest() == sha256_of(on_disk)
        await w.write(b"tail")
        await w.commit(len(on_disk) + 4, sha256_of(on_disk + b"tail"))

    async def test_memoryview_writes(self, local: LocalStore) -> None:
        data, dgst = create_content(200_000)
        w = await local.writer("mv")
        buf = bytearray(data)
        assert await w.write(memoryview(buf)[:100_000]) == 100_000
        assert await w.write(memoryview(buf)[100_000:]) == 100_000
        await w.commit(len(data), dgst)
        assert await read_blob(local, dgst) == data


async def _committed(store: LocalStore) -> str:
    data = b"committed"
    dgst = sha256_of(data)
    await write_blob(store, "committed", data, expected=dgst)
    return (await store.info(dgst)).digest


# -- digests and helpers (no store needed) ----------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid checksum digest format"),
        ("sha256", "invalid checksum digest format"),
        ("sha256:", "invalid checksum digest format"),
        (":abc", "invalid checksum digest format"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm"),
        ("foo.bar+baz:ABC=_-", "unsupported digest algorithm"),
        ("Foo:abc", "invalid checksum digest format"),
        ("foo:a/b", "invalid checksum digest format"),
        ("sha256:abc", "invalid checksum digest length"),
        ("sha256:" + "a" * 63 + "/", "invalid checksum digest format"),
        ("sha256:" + "A" * 64, "invalid checksum digest format"),
        ("sha384:" + "a" * 64, "invalid checksum digest length"),
        ("sha256:" + "a" * 64 + "\n", "invalid checksum digest length"),
    ],
)
def test_digest_validate_messages(value: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc_info:
        validate(value)
    assert exc_info.value.context == message


def test_digest_helpers() -> None:
    assert sha256_of(b"") == EMPTY_SHA256
    assert parse(EMPTY_SHA256) == ("sha256", EMPTY_SHA256[7:])
    for algorithm in ("sha256", "sha384", "sha512"):
        validate(f"{algorithm}:{hashlib.new(algorithm, b'x').hexdigest()}")
    assert digest.ALGORITHMS["sha512"] == 128


@pytest.fixture
def fast_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "helpers")


async def test_open_writer_retries_until_released(fast_store: LocalStore) -> None:
    w = await fast_store.writer("retry")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: asyncio.ensure_future(w.close()))
    w2 = await open_writer(fast_store, "retry", timeout=5)
    await w2.close()


async def test_open_writer_times_out(fast_store: LocalStore) -> None:
    w = await fast_store.writer("stuck")
    with pytest.raises(errdefs.Unavailable):
        await open_writer(fast_store, "stuck", timeout=0.1)
    await w.close()


async def test_open_writer_passes_other_errors(fast_store: LocalStore) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        await open_writer(fast_store, "")
