"""The SQLite database behind the metadata store (aiosqlite, WAL).

Connections:

* a writer, used under an ``asyncio.Lock`` for whole transactions
  (``async with db.update() as tx``). Its statements normally run in
  aiosqlite's thread, one thread hop (about 0.1 ms of CPU) per ``await``.
  ``db.update(inline=True)`` runs them on the calling (event loop) thread
  instead, with no hop at all: for short transactions of a few point
  statements (the content store's writer open and commit), where the hops cost
  ten times the SQL. The lock serialises both kinds, so the connection is never
  used by two threads at once;
* a reader in aiosqlite's thread for multi-row reads of committed data
  (:meth:`DB.view_all`);
* a reader on the event loop thread for single-row point lookups of committed
  data (:meth:`DB.view_one`; a WAL reader never waits for the writer).

A full disk (``SQLITE_FULL``, or an I/O error while the filesystem has no space)
becomes :class:`errdefs.ResourceExhausted`. SQLite rolls back a transaction
whose COMMIT failed for lack of space, so it cannot be retried; with a
:class:`~ctrd.metadata._reserve.SpaceReserve`, every write transaction first
checks the free space (one ``statvfs``) and gives the reserve back when less than
:data:`HEADROOM` is left, so deletions and the collector still commit on a full
disk. A transaction that failed anyway gives it back too (the next one then
succeeds). A database that cannot open for lack of space at start-up gets the
whole reserve.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiosqlite

from ctrd import errdefs
from ctrd.metadata._reserve import SpaceReserve
from ctrd.metadata._schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["DB", "HEADROOM", "Tx", "from_us", "labels_from_json", "labels_to_json", "to_us"]

log = logging.getLogger("ctrd.metadata")

_CLOSE_WAIT = 5.0
"""Seconds :meth:`DB.close` waits for a transaction in progress."""

HEADROOM: Final = 4 << 20
"""Free bytes below which a write transaction first takes the space of the reserve."""


def to_us(t: _dt.datetime) -> int:
    """Microseconds since the epoch."""
    return int(t.timestamp() * 1_000_000) if t.tzinfo else int(t.replace(tzinfo=_dt.UTC).timestamp() * 1e6)


def from_us(v: int) -> _dt.datetime:
    """Aware UTC datetime from microseconds since the epoch."""
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(microseconds=int(v))


def labels_to_json(labels: Mapping[str, str]) -> str:
    """Serialise labels, dropping empty values (containerd never stores them)."""
    return json.dumps({k: v for k, v in sorted(labels.items()) if v}, separators=(",", ":"))


def labels_from_json(s: str) -> dict[str, str]:
    """Parse stored labels."""
    out = json.loads(s) if s and s != "{}" else {}
    assert isinstance(out, dict)
    return out


class Tx:
    """An open write transaction (only valid inside ``db.update()``)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.after_commit: list[Any] = []
        #: set when a statement deleted or updated blob rows (invalidates read caches)
        self.blobs_changed = False

    def _watch(self, sql: str) -> None:
        head = sql.lstrip()[:18].upper()
        if head.startswith(("DELETE FROM BLOBS", "UPDATE BLOBS")):
            self.blobs_changed = True

    async def one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """First row or ``None``."""
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """All rows."""
        return list(await self.conn.execute_fetchall(sql, tuple(params)))

    async def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Execute; returns the number of changed rows."""
        self._watch(sql)
        async with self.conn.execute(sql, tuple(params)) as cur:
            return cur.rowcount

    async def many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        """executemany."""
        self._watch(sql)
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def next_sequence(self, name: str) -> int:
        """Increment and return counter *name*."""
        await self.run(
            "INSERT INTO sequences(name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )
        row = await self.one("SELECT value FROM sequences WHERE name = ?", (name,))
        return int(row[0])

    async def ensure_namespace(self, ns: str, now_us: int) -> bool:
        """Create *ns* implicitly (first write in it); whether it was created now."""
        n = await self.run("INSERT OR IGNORE INTO namespaces(name, created_at) VALUES (?, ?)", (ns, now_us))
        return n > 0

    async def _begin(self) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")

    async def _commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def _rollback(self) -> None:
        await self.conn.execute("ROLLBACK")

    @property
    def _active(self) -> bool:
        """Whether the transaction is still open (SQLite may roll it back by itself on a full disk)."""
        return bool(self.conn.in_transaction)


class _InlineTx(Tx):
    """A :class:`Tx` whose statements run synchronously on the calling thread (no thread hop)."""

    def __init__(self, conn: aiosqlite.Connection, raw: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._raw = raw

    async def one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        cur = self._raw.execute(sql, tuple(params))
        try:
            return cur.fetchone()
        finally:
            cur.close()

    async def all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        cur = self._raw.execute(sql, tuple(params))
        try:
            return cur.fetchall()
        finally:
            cur.close()

    async def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        self._watch(sql)
        cur = self._raw.execute(sql, tuple(params))
        try:
            return cur.rowcount
        finally:
            cur.close()

    async def many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self._watch(sql)
        self._raw.executemany(sql, [tuple(r) for r in rows]).close()

    async def _begin(self) -> None:
        self._raw.execute("BEGIN IMMEDIATE").close()

    async def _commit(self) -> None:
        self._raw.execute("COMMIT").close()

    async def _rollback(self) -> None:
        self._raw.execute("ROLLBACK").close()

    @property
    def _active(self) -> bool:
        return self._raw.in_transaction


class _Update:
    """The context manager of :meth:`DB.update` (a class: it is on every write's path)."""

    __slots__ = ("_db", "_inline", "_tx")

    def __init__(self, db: DB, inline: bool) -> None:
        self._db = db
        self._inline = inline

    async def __aenter__(self) -> Tx:
        db = self._db
        await db._lock.acquire()
        try:
            w = db._w
            if w is None:
                raise errdefs.Unavailable("metadata database is closed")
            reserve = db.reserve
            if reserve is not None and reserve.held:
                reserve.headroom(HEADROOM)
            tx = _InlineTx(w, w._conn) if self._inline else Tx(w)
            await tx._begin()
        except BaseException:
            db._lock.release()
            raise
        self._tx = tx
        return tx

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        db, tx = self._db, self._tx
        try:
            if exc_type is not None:
                if tx._active:
                    await tx._rollback()
                if isinstance(exc, sqlite3.Error) and db._disk_full(exc):
                    db._out_of_space()
                    raise db._exhausted(exc) from exc
                return
            await self._commit(db, tx)
            db.mutations += 1
            if tx.blobs_changed:
                db.blob_epoch += 1
        finally:
            db._lock.release()
        for fn in tx.after_commit:
            fn()

    @staticmethod
    async def _commit(db: DB, tx: Tx) -> None:
        """COMMIT; a failed one is rolled back (unless SQLite did), a full disk is ResourceExhausted."""
        try:
            await tx._commit()
        except BaseException as exc:
            if tx._active:
                with contextlib.suppress(sqlite3.Error):
                    await tx._rollback()
            if isinstance(exc, sqlite3.Error) and db._disk_full(exc):
                db._out_of_space()  # for the next transaction
                raise db._exhausted(exc) from exc
            raise


class DB:
    """The metadata database."""

    def __init__(self, path: Path, reserve: SpaceReserve | None = None) -> None:
        self.path = path
        #: headroom for commits on a full disk (see :mod:`ctrd.metadata._reserve`)
        self.reserve = reserve
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._ri: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        #: number of mutations since start (the GC scheduler watches it)
        self.mutations = 0
        #: bumped after every commit that deleted or updated blob rows; read caches
        #: remember the epoch they were filled in and are stale once it moves
        self.blob_epoch = 0

    async def open(self) -> None:
        """Open (creating and migrating as needed).

        The database is private: it is created 0600 (SQLite gives its ``-wal`` and
        ``-shm`` files the database's mode), and a database an older ctrd left
        0644 is set to 0600, with its ``-wal`` and ``-shm``.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.reserve is not None:
            self.reserve.startup()
        try:
            await self._open()
        except sqlite3.Error as exc:
            await self._close_connections()
            if not self._disk_full(exc):
                raise
            # e.g. no room for the -shm and -wal files: the floor of the reserve is for this
            if self.reserve is None or not self.reserve.release_all():
                raise self._exhausted(exc) from exc
            try:
                await self._open()
            except sqlite3.Error as exc2:
                await self._close_connections()
                if self._disk_full(exc2):
                    raise self._exhausted(exc2) from exc2
                raise

    async def _open(self) -> None:
        _private_files(self.path)
        # check_same_thread=False: inline transactions use the connection from the loop
        # thread (never at the same time as aiosqlite's thread: see update())
        self._w = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await self._w.execute(f"PRAGMA {pragma}")
        await self._migrate()
        self._r = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        await self._r.execute("PRAGMA busy_timeout=5000")
        self._ri = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._ri.execute("PRAGMA busy_timeout=5000").close()

    async def _migrate(self) -> None:
        w = self._w
        assert w is not None
        await w.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = list(await w.execute_fetchall("SELECT version FROM schema_version"))
        version = int(rows[0][0]) if rows else 0
        if version > SCHEMA_VERSION:
            raise errdefs.FailedPrecondition(
                f"metadata database {self.path.name} has schema version {version}, "
                f"newer than this ctrd supports ({SCHEMA_VERSION})"
            )
        for i in range(version, SCHEMA_VERSION):
            log.info("migrating metadata schema to version %d", i + 1)
            await w.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _split(MIGRATIONS[i]):
                    await w.execute(stmt)
                await w.execute("DELETE FROM schema_version")
                await w.execute("INSERT INTO schema_version(version) VALUES (?)", (i + 1,))
                await w.execute("COMMIT")
            except BaseException:
                await w.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        """Close the connections.

        Waits (briefly) for a transaction in progress: an inline one uses the writer
        from the loop thread, and aiosqlite closes it in its own thread.
        """
        ri, self._ri = self._ri, None
        if ri is not None:
            with contextlib.suppress(Exception):
                ri.close()
        async with contextlib.AsyncExitStack() as stack:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await stack.enter_async_context(self._lock)
            await self._close_connections()

    async def _close_connections(self) -> None:
        ri, self._ri = self._ri, None
        if ri is not None:
            with contextlib.suppress(Exception):
                ri.close()
        w, r = self._w, self._r
        self._r = self._w = None
        for c in (r, w):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()

    def _disk_full(self, exc: sqlite3.Error) -> bool:
        """Whether *exc* means the disk is full: ``SQLITE_FULL``, or an I/O error with no space left."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return "database or disk is full" in str(exc)
        primary = code & 0xFF
        if primary == sqlite3.SQLITE_FULL:
            return True
        if primary != sqlite3.SQLITE_IOERR:
            return False
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < _IOERR_FULL

    def _out_of_space(self) -> bool:
        """Tell the reserve the disk is full; whether it gave space back (a retry may succeed)."""
        reserve = self.reserve
        if reserve is None:
            return False
        if reserve.full():
            return True
        return reserve.low and reserve.release_all()  # the floor too: freeing space comes first

    @staticmethod
    def _exhausted(exc: sqlite3.Error) -> errdefs.ResourceExhausted:
        return errdefs.ResourceExhausted(f"metadata database: no space left on device ({exc})")

    def update(self, *, inline: bool = False) -> _Update:
        """A serialised write transaction; commits on success, rolls back on error.

        Use as ``async with db.update() as tx``. With *inline*, every statement
        (and BEGIN/COMMIT) runs synchronously on the calling thread instead of
        aiosqlite's: use it for short transactions only, as each statement blocks
        the event loop while it runs. The body may still await other things (it
        holds the write lock meanwhile, as always). Callbacks the body added to
        ``tx.after_commit`` run after a successful commit, outside the lock.
        """
        return _Update(self, inline)

    async def view_one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """One row from committed data, or ``None``.

        Runs on the calling thread (no thread hop): meant for point lookups.
        """
        r = self._ri
        if r is None:
            raise errdefs.Unavailable("metadata database is closed")
        cur = r.execute(sql, tuple(params))
        try:
            return cur.fetchone()
        finally:
            cur.close()

    def view_batch(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """All rows from committed data, fetched on the calling thread (no thread hop).

        For bounded batches on primary-key ranges (``List`` pages of 1,000 rows,
        about a millisecond each): cheaper than :meth:`view_all`'s hop to
        aiosqlite's thread and back, and the event loop serves other calls
        between batches.
        """
        r = self._ri
        if r is None:
            raise errdefs.Unavailable("metadata database is closed")
        return r.execute(sql, tuple(params)).fetchall()

    async def view_all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """All rows from committed data."""
        r = self._r
        if r is None:
            raise errdefs.Unavailable("metadata database is closed")
        return list(await r.execute_fetchall(sql, tuple(params)))


_FILE_MODE: Final = 0o600

_IOERR_FULL: Final = 1 << 20
"""An SQLite I/O error while fewer bytes than this are free counts as a full disk."""


def _private_files(path: Path) -> None:
    """Create *path* 0600 if missing; set it and its ``-wal``/``-shm`` to 0600 if they are not."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != _FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            if stat.S_IMODE(os.stat(side).st_mode) != _FILE_MODE:
                os.chmod(side, _FILE_MODE)
        except FileNotFoundError:
            pass


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
