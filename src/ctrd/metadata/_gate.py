"""Per-digest exclusion between a commit's backend step and the collector's file deletion.

A commit moves bytes into the backend store (``blobs/sha256/<hex>``) *before*
its metadata transaction inserts the blob row (containerd's order: the file
must exist before a record points at it). In that window the file is
referenced by nothing in the database, so the garbage collector must not
delete it; and while the collector is deleting a file, a commit of the same
digest must not conclude that it "already exists" in the backend.

:class:`BlobGate` is the in-memory agreement between the two (one process owns
the root, and every method here runs on the event loop thread, so each
check-and-set is atomic):

* the content store wraps backend commit + metadata transaction in
  :meth:`BlobGate.committing`, which first waits for any deletion of that digest
  to finish;
* the collector calls :meth:`BlobGate.begin_delete` (refused while a commit of
  the digest is in flight), deletes the file, then :meth:`BlobGate.end_delete`.

The gate also records the backend refs being committed, so the collector does
not mistake the ingest row of a commit in flight (its backend data already
renamed away) for a dangling record; and the backend refs being opened
(:meth:`BlobGate.hold_ref`): a writer's ingest row is committed before its backend
ingest is created, outside the database lock, so for that moment the row has no
backend data either.
"""

from __future__ import annotations

import asyncio

__all__ = ["BlobGate"]


class BlobGate:
    """Digests (and backend refs) being committed, digests being deleted."""

    __slots__ = ("_committing", "_deleting", "_refs")

    def __init__(self) -> None:
        self._committing: dict[str, int] = {}
        self._refs: dict[str, int] = {}
        self._deleting: dict[str, asyncio.Event] = {}

    def committing(self, dgst: str, bref: str = "") -> _Committing:
        """``async with gate.committing(dgst, bref)``: hold *dgst* (and backend ref *bref*)
        as "being committed" for the body, once no deletion of *dgst* is in flight."""
        return _Committing(self, dgst, bref)

    def hold_ref(self, bref: str) -> None:
        """Count backend ref *bref* as in use (being opened) until :meth:`release_ref`."""
        _inc(self._refs, bref)

    def release_ref(self, bref: str) -> None:
        """Undo one :meth:`hold_ref`."""
        _dec(self._refs, bref)

    def is_committing(self, dgst: str) -> bool:
        """Whether a commit of *dgst* is between its backend step and its transaction's end."""
        return dgst in self._committing

    def ref_committing(self, bref: str) -> bool:
        """Whether the ingest with backend ref *bref* is being committed (or opened)."""
        return bref in self._refs

    def begin_delete(self, dgst: str) -> bool:
        """Claim *dgst* for deletion; ``False`` while a commit of it is in flight."""
        if dgst in self._committing or dgst in self._deleting:
            return False
        self._deleting[dgst] = asyncio.Event()
        return True

    def end_delete(self, dgst: str) -> None:
        """Release a claim taken by :meth:`begin_delete` and wake waiting commits."""
        ev = self._deleting.pop(dgst, None)
        if ev is not None:
            ev.set()


def _inc(d: dict[str, int], key: str) -> None:
    d[key] = d.get(key, 0) + 1


def _dec(d: dict[str, int], key: str) -> None:
    n = d.get(key, 0) - 1
    if n > 0:
        d[key] = n
    else:
        d.pop(key, None)


class _Committing:
    """The context manager of :meth:`BlobGate.committing` (a class: it is on every commit's path)."""

    __slots__ = ("_bref", "_dgst", "_gate")

    def __init__(self, gate: BlobGate, dgst: str, bref: str) -> None:
        self._gate = gate
        self._dgst = dgst
        self._bref = bref

    async def __aenter__(self) -> None:
        gate, dgst = self._gate, self._dgst
        while (ev := gate._deleting.get(dgst)) is not None:
            await ev.wait()
        _inc(gate._committing, dgst)
        if self._bref:
            _inc(gate._refs, self._bref)

    async def __aexit__(self, *exc: object) -> None:
        gate = self._gate
        _dec(gate._committing, self._dgst)
        if self._bref:
            _dec(gate._refs, self._bref)
