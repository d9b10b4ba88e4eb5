"""containerd's ``ContentSuite`` (``content/testsuite``), case by case."""

from __future__ import annotations

import dataclasses

import pytest

from ctrd import errdefs
from ctrd.content import EMPTY_SHA256, Status, Store, open_writer, sha256_of, utcnow, write_blob
from ctrd.testing.content_suite._checks import (
    GC_ROOT,
    LABELS,
    RESUME_FRACTIONS,
    RESUME_SIZES,
    ResumeFn,
    SuiteHooks,
    check_info,
    check_ref_not_available,
    check_status,
    create_content,
    read_section,
    resume_copy,
    resume_copy_reader_at,
    resume_copy_seeker,
    resume_discard,
    resume_truncate,
    write_chunked,
)

__all__ = ["ContainerdCases"]


class ContainerdCases(SuiteHooks):
    """containerd's ``ContentSuite`` cases."""

    async def test_writer(self, store: Store) -> None:
        """Writer: four 256 B writers opened at once with/without size/digest, plus a 32 MiB one."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            c2, d2 = create_content(256)
            c3, d3 = create_content(256)
            c4, d4 = create_content(256)
            c5, d5 = create_content(16 << 21)
            cases = [
                ("c1", await open_writer(store, "c1"), c1, d1, 32),
                ("c2", await open_writer(store, "c2", total=256), c2, d2, 32),
                ("c3", await open_writer(store, "c3", expected=d3), c3, d3, 32),
                ("c4", await open_writer(store, "c4", total=256, expected=d4), c4, d4, 32),
                ("c5", await open_writer(store, "c5", total=len(c5), expected=d5), c5, d5, 1 << 20),
            ]
            for name, w, data, dgst, chunk in cases:
                await write_chunked(w, data, chunk)
                pre_commit = utcnow()
                await w.commit(0, "", LABELS)
                post_commit = utcnow()
                assert w.digest() == dgst, f"{name}: unexpected digest"
                await check_info(
                    store,
                    dgst,
                    len(data),
                    self.expected_labels(LABELS),
                    pre_commit,
                    post_commit,
                    pre_commit,
                    post_commit,
                )
                await w.close()

    async def test_update_status(self, store: Store) -> None:
        """UpdateStatus: offset, digest and updated_at follow each write."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            pre_start = utcnow()
            w = await open_writer(store, "c1", total=256, expected=d1)
            post_start = utcnow()
            expected = Status("c1", 0, 256, pre_start, pre_start)
            await check_status(w, expected, EMPTY_SHA256, pre_start, post_start, pre_start, post_start)
            for start, end in ((0, 64), (64, 192), (192, 256)):
                pre_update = utcnow()
                assert await w.write(c1[start:end]) == end - start
                post_update = utcnow()
                expected = dataclasses.replace(expected, offset=end)
                d_end = sha256_of(c1[:end])
                await check_status(w, expected, d_end, pre_start, post_start, pre_update, post_update)
            pre_commit = utcnow()
            await w.commit(0, "", LABELS)
            post_commit = utcnow()
            await check_info(
                store, d1, 256, self.expected_labels(LABELS), pre_commit, post_commit, pre_commit, post_commit
            )

    async def test_commit_exists(self, store: Store) -> None:
        """CommitExists: committing bytes already committed fails with AlreadyExists."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            await write_blob(store, "c1", c1, expected=d1)
            for i, expected in enumerate((d1, "")):
                w = await open_writer(store, f"c1-commitexists-{i}")
                await w.write(c1)
                with pytest.raises(errdefs.AlreadyExists):
                    await w.commit(256, expected)
                await w.close()

    async def test_resume(self, store: Store) -> None:
        """Resume: close half-way, reopen, status (timestamps included) is preserved."""
        with self.namespace(1):
            ref = "cb"
            cb, dgst = create_content(256)
            first, second = cb[:128], cb[128:]
            pre_start = utcnow()
            w1 = await open_writer(store, ref, total=256, expected=dgst)
            post_start = utcnow()
            pre_update = post_start
            await w1.write(first)
            post_update = utcnow()
            d_first = sha256_of(first)
            expected = Status(ref, 128, 256, pre_start, pre_update)
            st1 = await check_status(w1, expected, d_first, pre_start, post_start, pre_update, post_update)
            await w1.close()

            w2 = await open_writer(store, ref, total=256, expected=dgst)
            st2 = await check_status(w2, expected, d_first, pre_start, post_start, pre_update, post_update)
            assert (st2.started_at, st2.updated_at) == (st1.started_at, st1.updated_at), "timestamps not kept"
            pre_update = utcnow()
            await w2.write(second)
            post_update = utcnow()
            expected = dataclasses.replace(expected, offset=256)
            await check_status(w2, expected, dgst, pre_start, post_start, pre_update, post_update)
            pre_commit = utcnow()
            await w2.commit(0, "")
            post_commit = utcnow()
            await w2.close()
            await check_info(store, dgst, 256, {}, pre_commit, post_commit, pre_commit, post_commit)

    async def _check_resume(self, store: Store, size_index: int, fn: ResumeFn) -> None:
        """containerd ``checkResume(rf)`` for one size and every truncation fraction."""
        size = RESUME_SIZES[size_index]
        with self.namespace(1):
            for j, fraction in enumerate(RESUME_FRACTIONS):
                b, dgst = create_content(size)
                limit = int(size * fraction)
                ref = f"ref-{size_index}-{j}"
                w = await open_writer(store, ref, total=size, expected=dgst)
                await w.write(b[:limit])
                await w.close()
                w = await open_writer(store, ref, total=size, expected=dgst)
                st = await w.status()
                assert st.offset == limit, f"{ref}: resumed at {st.offset}, expected {limit}"
                pre_commit = utcnow()
                await fn(w, b, limit, size, dgst)
                post_commit = utcnow()
                await w.close()
                await check_info(store, dgst, size, {}, pre_commit, post_commit, pre_commit, post_commit)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def testresume_truncate(self, store: Store, size_index: int) -> None:
        """ResumeTruncate: truncate(0), rewrite everything."""
        await self._check_resume(store, size_index, resume_truncate)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def testresume_discard(self, store: Store, size_index: int) -> None:
        """ResumeDiscard: write only the missing tail."""
        await self._check_resume(store, size_index, resume_discard)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def testresume_copy(self, store: Store, size_index: int) -> None:
        """ResumeCopy: ``copy`` from a plain stream, which discards the first ``offset`` bytes."""
        await self._check_resume(store, size_index, resume_copy)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def testresume_copy_seeker(self, store: Store, size_index: int) -> None:
        """ResumeCopySeeker: ``copy`` from bytes, resumed by slicing."""
        await self._check_resume(store, size_index, resume_copy_seeker)

    @pytest.mark.parametrize("size_index", range(len(RESUME_SIZES)))
    async def testresume_copy_reader_at(self, store: Store, size_index: int) -> None:
        """ResumeCopyReaderAt: ``copy`` from a ReaderAt."""
        await self._check_resume(store, size_index, resume_copy_reader_at)

    async def test_small_blob(self, store: Store) -> None:
        """SmallBlob: a 6-byte blob read through a 7-byte section returns exactly the blob."""
        with self.namespace(1):
            blob = b"foobar"
            dgst = sha256_of(blob)
            w = await open_writer(store, "test_small_blob", total=len(blob), expected=dgst)
            await w.write(blob)
            await w.commit(len(blob), dgst)
            await w.close()
            ra = await store.reader_at(dgst)
            try:
                assert ra.size == len(blob)
                data = await read_section(ra, 0, len(blob) + 1)
            finally:
                await ra.close()
            assert data == blob
            assert sha256_of(data) == dgst

    async def test_labels(self, store: Store) -> None:
        """Labels: commit with labels, replace them, update selected keys (or: update unsupported)."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            w = await open_writer(store, "c1-checklabels", total=256, expected=d1)
            await w.write(c1)
            root_time = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            labels = {"k1": "v1", "k2": "v2", GC_ROOT: root_time}
            pre_commit = utcnow()
            await w.commit(0, "", labels)
            post_commit = utcnow()
            await w.close()
            info = await check_info(
                store, d1, 256, self.expected_labels(labels), pre_commit, post_commit, pre_commit, post_commit
            )
            if not self.supports_labels:
                with pytest.raises(errdefs.FailedPrecondition):
                    await store.update(dataclasses.replace(info, labels=labels))
                with pytest.raises(errdefs.FailedPrecondition):
                    await store.update(dataclasses.replace(info, labels=labels), ["labels.k1"])
                return

            labels = {"k1": "newvalue", "k3": "v3", GC_ROOT: root_time}
            pre_update = utcnow()
            updated = await store.update(dataclasses.replace(info, labels=labels))
            post_update = utcnow()
            assert dict(updated.labels) == labels
            await check_info(store, d1, 256, labels, pre_commit, post_commit, pre_update, post_update)

            labels = {"k1": "v1", GC_ROOT: root_time}
            pre_update = utcnow()
            updated = await store.update(dataclasses.replace(info, labels=labels), ["labels.k3", "labels.k1"])
            post_update = utcnow()
            assert dict(updated.labels) == labels
            await check_info(store, d1, 256, labels, pre_commit, post_commit, pre_update, post_update)

    async def test_commit_error_state(self, store: Store) -> None:
        """CommitErrorState: failed commits release the lock; size/digest failures keep the data."""
        with self.namespace(1):
            c1, d1 = create_content(256)
            _, d2 = create_content(256)
            ref = "c1-commiterror-state"
            await write_blob(store, "c1", c1, expected=d1)

            w = await open_writer(store, ref)
            await w.write(c1)
            await check_ref_not_available(store, ref)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, d1)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            await w.write(c1)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, "")

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 0
            await w.write(c1 + b"more")
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(260, d2)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 260, "data kept after a failed digest check"
            with pytest.raises(errdefs.FailedPrecondition):
                await w.commit(256, "")

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            assert (await w.status()).offset == 260, "data kept after a failed size check"
            await w.commit(260, "")
            assert (await store.info(sha256_of(c1 + b"more"))).size == 260

            w = await open_writer(store, ref)
            assert (await w.status()).offset == 0, "a committed ingest is gone"
            await w.write(c1)
            await check_ref_not_available(store, ref)
            with pytest.raises(errdefs.AlreadyExists):
                await w.commit(256, d1)

            w = await open_writer(store, ref)
            await check_ref_not_available(store, ref)
            await w.truncate(0)
            await w.close()

            w = await open_writer(store, ref)
            await w.truncate(0)
            await w.close()
