"""Cases beyond containerd's suite that hold for every store (first written for the local store)."""

from __future__ import annotations

import hashlib

import pytest

from ctrd import errdefs
from ctrd.content import EMPTY_SHA256, Store, open_writer, read_blob, sha256_of, utcnow, write_blob
from ctrd.testing.content_suite._checks import (
    BAD_DIGESTS,
    SuiteHooks,
    assert_time_in,
    check_committed,
    check_content,
    check_ref_not_available,
    create_content,
    write_chunked,
)

__all__ = ["StoreCases"]


class StoreCases(SuiteHooks):
    """Reads past the end, walks and their filters, malformed digests, locks, aborts, deletes."""

    async def test_content_writer(self, store: Store) -> None:
        """TestContentWriter: reopen, lock, list_statuses, 4 MiB commit, same bytes under another ref."""
        with self.namespace(1):
            w = await open_writer(store, "myref")
            await w.close()
            w = await open_writer(store, "myref")
            await check_ref_not_available(store, "myref")
            statuses = await store.list_statuses()
            assert [(s.ref, s.offset, s.total) for s in statuses] == [("myref", 0, 0)]
            assert [s.ref for s in await store.list_statuses("")] == ["myref"]

            p, expected = create_content(4 << 20)
            await write_chunked(w, p, 1 << 20)
            await w.commit(len(p), expected)
            await w.close()
            assert await store.list_statuses() == []

            w = await open_writer(store, "aref")
            await write_chunked(w, p, 1 << 20)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(len(p), expected)
            await w.close()
            assert await read_blob(store, expected) == p

    async def test_writer_truncate_recovers_from_incomplete_write(self, store: Store) -> None:
        """TestWriterTruncateRecoversFromIncompleteWrite: bad data, close, reopen, truncate, rewrite."""
        with self.namespace(1):
            ref = "ref"
            content = b"this is the content"
            total = len(content)
            w = await open_writer(store, ref, total=total)
            await w.write(b"bad data")
            await w.close()

            w = await open_writer(store, ref, total=total)
            assert (await w.status()).offset == len(b"bad data")
            await w.truncate(0)
            assert (await w.status()).offset == 0
            assert w.digest() == EMPTY_SHA256
            await w.write(content)
            dgst = sha256_of(content)
            await w.commit(total, dgst)
            await w.close()
            assert await read_blob(store, dgst) == content

    async def test_write_read_empty_blob(self, store: Store) -> None:
        """TestWriteReadEmptyFileTimestamp: an empty blob commits, has sane timestamps, reads back empty."""
        with self.namespace(1):
            pre_commit = utcnow()
            w = await open_writer(store, "empty", expected=EMPTY_SHA256)
            await w.commit(0, EMPTY_SHA256)
            post_commit = utcnow()
            await check_content(store, EMPTY_SHA256, 0, {}, pre_commit, post_commit, pre_commit, post_commit)

    async def test_read_past_end(self, store: Store) -> None:
        """Reads are clipped at the end of the blob; a read at the end returns nothing."""
        with self.namespace(1):
            data, dgst = create_content(100_000)
            await write_blob(store, "past-end", data, total=len(data), expected=dgst)
            ra = await store.reader_at(dgst)
            try:
                assert ra.size == len(data)
                assert await ra.read_at(len(data) - 10, 100) == data[-10:]
                assert await ra.read_at(len(data), 10) == b""
                assert await ra.read_at(0, len(data) + 1000) == data
                assert await ra.read_at(1000, 70_000) == data[1000:71_000]
                assert await ra.read_at(5, 0) == b""
            finally:
                await ra.close()

    async def test_walk_sorted(self, store: Store) -> None:
        """Walk yields every blob once, sorted by digest, and honours ``digest==`` filters."""
        with self.namespace(1):
            digests = []
            for i in range(6):
                data, dgst = create_content(100 + i)
                await write_blob(store, f"walk-{i}", data, expected=dgst)
                digests.append(dgst)
            infos = [info async for info in store.walk()]
            assert [i.digest for i in infos] == sorted(digests)
            assert {i.digest: i.size for i in infos} == {d: 100 + n for n, d in enumerate(digests)}
            picked = [info.digest async for info in store.walk(f"digest=={digests[3]}")]
            assert picked == [digests[3]]
            picked = [
                info.digest async for info in store.walk(f"digest=={digests[1]}", f"digest=={digests[4]}")
            ]
            assert picked == sorted([digests[1], digests[4]])
            assert [info async for info in store.walk("digest==sha256:nothing")] == []
            with pytest.raises(errdefs.InvalidArgument):
                _ = [info async for info in store.walk("digest==")]

    @pytest.mark.parametrize("bad", BAD_DIGESTS)
    async def test_bad_digest_invalid_argument(self, store: Store, bad: str) -> None:
        """Malformed digests are rejected with InvalidArgument by every digest-taking method."""
        with self.namespace(1):
            with pytest.raises(errdefs.InvalidArgument):
                await store.info(bad)
            with pytest.raises(errdefs.InvalidArgument):
                await store.reader_at(bad)
            with pytest.raises(errdefs.InvalidArgument):
                await store.delete(bad)
            await check_committed(store, bad, False)

    @pytest.mark.parametrize("bad", [d for d in BAD_DIGESTS if d])
    async def test_writer_bad_expected_digest(self, store: Store, bad: str) -> None:
        """A malformed expected digest is rejected by ``writer`` with InvalidArgument (and takes no lock)."""
        with self.namespace(1):
            with pytest.raises(errdefs.InvalidArgument):
                await open_writer(store, "bad-expected", expected=bad)
            w = await open_writer(store, "bad-expected")
            await w.close()

    @pytest.mark.parametrize(("algorithm", "length"), [("sha256", 64), ("sha384", 96), ("sha512", 128)])
    async def test_unknown_digest_not_found(self, store: Store, algorithm: str, length: int) -> None:
        """Well-formed digests (sha256/sha384/sha512) of absent blobs are NotFound, never InvalidArgument."""
        with self.namespace(1):
            dgst = f"{algorithm}:{hashlib.new(algorithm, b'absent').hexdigest()}"
            assert len(dgst) == len(algorithm) + 1 + length
            with pytest.raises(errdefs.NotFound):
                await store.info(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.reader_at(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.delete(dgst)
            await check_committed(store, dgst, False)

    async def test_second_writer_unavailable(self, store: Store) -> None:
        """A ref with an open writer is Unavailable until that writer closes or commits."""
        with self.namespace(1):
            w = await open_writer(store, "locked")
            with pytest.raises(errdefs.Unavailable):
                await store.writer("locked")
            other = await open_writer(store, "other")
            await other.close()
            await w.close()
            w = await open_writer(store, "locked")
            await check_ref_not_available(store, "locked")
            await w.write(b"x")
            await w.commit(1, sha256_of(b"x"))
            w = await open_writer(store, "locked")
            await w.close()

    async def test_writer_empty_ref(self, store: Store) -> None:
        """``writer("")`` is InvalidArgument."""
        with self.namespace(1), pytest.raises(errdefs.InvalidArgument):
            await open_writer(store, "")

    async def test_writer_expected_exists(self, store: Store) -> None:
        """Opening a writer for a committed expected digest is AlreadyExists; write_blob treats it as done."""
        with self.namespace(1):
            data, dgst = create_content(300)
            await write_blob(store, "exists", data, total=300, expected=dgst)
            with pytest.raises(errdefs.AlreadyExists):
                await open_writer(store, "exists-2", 300, dgst)
            await write_blob(store, "exists-3", data, total=300, expected=dgst)
            assert await store.list_statuses() == []

    async def test_status_and_abort(self, store: Store) -> None:
        """Status/abort of unknown refs are NotFound; abort discards the ingest."""
        with self.namespace(1):
            with pytest.raises(errdefs.NotFound):
                await store.status("nope")
            with pytest.raises(errdefs.NotFound):
                await store.abort("nope")
            pre_start = utcnow()
            w = await open_writer(store, "abort-me", total=10)
            post_start = utcnow()
            await w.write(b"12345")
            post_update = utcnow()
            await w.close()
            st = await store.status("abort-me")
            assert (st.ref, st.offset, st.total) == ("abort-me", 5, 10)
            assert_time_in("started_at", st.started_at, pre_start, post_start)
            assert_time_in("updated_at", st.updated_at, post_start, post_update)
            assert [s.ref for s in await store.list_statuses("ref==abort-me")] == ["abort-me"]
            assert await store.list_statuses("ref==other") == []
            await store.abort("abort-me")
            with pytest.raises(errdefs.NotFound):
                await store.status("abort-me")
            with pytest.raises(errdefs.NotFound):
                await store.abort("abort-me")
            w = await open_writer(store, "abort-me")
            assert (await w.status()).offset == 0
            assert w.digest() == EMPTY_SHA256
            await w.close()

    async def test_list_statuses_filters(self, store: Store) -> None:
        """list_statuses filters on ``ref``; several filters are OR-ed."""
        with self.namespace(1):
            for ref in ("a-1", "a-2", "b-1"):
                w = await open_writer(store, ref)
                await w.write(ref.encode())
                await w.close()
            assert sorted(s.ref for s in await store.list_statuses()) == ["a-1", "a-2", "b-1"]
            assert sorted(s.ref for s in await store.list_statuses("ref~=^a-")) == ["a-1", "a-2"]
            assert sorted(s.ref for s in await store.list_statuses("ref==a-1", "ref==b-1")) == ["a-1", "b-1"]
            with pytest.raises(errdefs.InvalidArgument):
                await store.list_statuses("ref==")

    async def test_delete(self, store: Store) -> None:
        """Delete removes a blob; afterwards info/reader_at/delete are NotFound."""
        with self.namespace(1):
            data, dgst = create_content(1000)
            await write_blob(store, "del", data, expected=dgst)
            assert await read_blob(store, dgst) == data
            await store.info(dgst)  # (fills any cache)
            await check_committed(store, dgst, True)
            await store.delete(dgst)
            await check_committed(store, dgst, False)
            with pytest.raises(errdefs.NotFound):
                await store.info(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.reader_at(dgst)
            with pytest.raises(errdefs.NotFound):
                await store.delete(dgst)
            assert [i async for i in store.walk()] == []
            await write_blob(store, "del", data, expected=dgst)
            assert await read_blob(store, dgst) == data

    async def test_write_blob_resumes(self, store: Store) -> None:
        """write_blob resumes a partial ingest of the same ref, and restarts when the ingest is longer."""
        with self.namespace(1):
            data, dgst = create_content(3000)
            w = await open_writer(store, "wb", total=3000)
            await w.write(data[:1234])
            await w.close()
            await write_blob(store, "wb", data, total=3000, expected=dgst)
            assert await read_blob(store, dgst) == data

            small = b"short"
            w = await open_writer(store, "wb2")
            await w.write(b"x" * 100)
            await w.close()
            await write_blob(store, "wb2", small, expected=sha256_of(small))
            assert await read_blob(store, sha256_of(small)) == small

    async def test_commit_mismatch_keeps_ingest(self, store: Store) -> None:
        """A size or digest mismatch raises FailedPrecondition and keeps the ingest for resumption."""
        with self.namespace(1):
            data, dgst = create_content(500)
            w = await open_writer(store, "mismatch", total=500)
            await w.write(data)
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(499, dgst)
            st = await store.status("mismatch")
            assert st.offset == 500
            w = await open_writer(store, "mismatch", total=500)
            assert w.digest() == dgst
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(500, sha256_of(b"other"))
            w = await open_writer(store, "mismatch", total=500)
            await w.commit(500, dgst)
            with pytest.raises(errdefs.NotFound):
                await store.status("mismatch")
