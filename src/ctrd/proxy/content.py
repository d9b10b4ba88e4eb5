"""The content proxy: a :class:`ctrd.content.Store` served by another daemon's Content service.

``[proxy_plugins.<name>] type = "content"`` registers
``io.containerd.content.v1.<name>`` with a :class:`ProxyContentStore` as its
instance. It is a backend store like the local one: the metadata plugin uses
it (``content_plugin``, or as the single content plugin) and keeps its own
per-namespace records, so the remote sees only blobs and ingests, under
backend refs that already carry ctrd's namespaces (``<ns>/<seq>/<ref>``).

* Every call acts in **one remote namespace** (the proxy's ``namespace`` key,
  default ``ctrd``), whatever namespace or lease the ctrd request carries: the
  remote calls run in a context holding that namespace and no lease.
* What it commits is labelled ``containerd.io/gc.root`` (RFC 3339 time, as
  containerd's own tools do), so the remote daemon's garbage collector keeps it
  until ctrd deletes it (ctrd's collector deletes blobs no namespace holds).
  Ingests need no label: containerd expires an unleased ingest after 24 h.
* Calls go through a shared :class:`~ctrd.proxy.connection.Connection`: dialled
  lazily, bounded by timeouts (every unary call, every step of a Write stream,
  every ``read_at``), UNAVAILABLE naming the address when the remote cannot be
  reached.

The remote namespace should be dedicated to this ctrd: ctrd's garbage collector
deletes whatever blob in it no ctrd namespace references.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence

from ctrd import errdefs, namespaces
from ctrd import labels as _labels
from ctrd.content import Info, ReaderAt, Status, Writer
from ctrd.content import digest as _digest
from ctrd.proxy.connection import CALL_TIMEOUT
from ctrd.remote import Connection, RemoteContentStore

__all__ = ["ProxyContentStore", "gc_root_value"]


def gc_root_value(now: _dt.datetime | None = None) -> str:
    """The ``containerd.io/gc.root`` value: the commit time in RFC 3339 (``2024-01-02T03:04:05Z``)."""
    t = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def _remote_context(namespace: str) -> Iterator[None]:
    """The context of a remote call: the proxy's namespace, no lease.

    :class:`RemoteContentStore` takes namespace and lease from the current
    context; ctrd's own request namespace and lease mean nothing remotely.
    """
    with namespaces.with_namespace(namespace), namespaces.with_lease(None):
        yield


class ProxyContentStore:
    """Implements :class:`ctrd.content.Store` over a remote ``containerd.services.content.v1.Content``.

    :param conn: the shared connection to the remote daemon.
    :param namespace: the remote namespace every call acts in.
    :param name: how errors name this store (the plugin URI).
    :param timeout: seconds one call (or one Write stream step) may take.
    :param on_close: called once by :meth:`aclose` (the registration releases the connection).
    :param root_label: the label set (to the commit time) on every commit unless the caller
        set it; ``""`` sets none (the remote's garbage collector then decides alone).
    """

    def __init__(
        self,
        conn: Connection,
        namespace: str,
        *,
        name: str = "content proxy",
        timeout: float = CALL_TIMEOUT,
        on_close: Callable[[], None] | None = None,
        root_label: str = _labels.GC_ROOT,
    ) -> None:
        self._conn = conn
        self.root_label = root_label
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._on_close = on_close
        self._remote: RemoteContentStore | None = None

    @property
    def address(self) -> str:
        """The remote address."""
        return self._conn.address

    def _store(self) -> RemoteContentStore:
        # created on first use: the channel object exists from then on (not yet dialled)
        if self._remote is None:
            self._remote = RemoteContentStore(
                self._conn.channel, namespace=self.namespace, timeout=self.timeout
            )
        return self._remote

    @contextlib.asynccontextmanager
    async def _call(self, deadline: float | None) -> AsyncIterator[None]:
        """One remote call, bounded by *deadline* seconds (``None``: unbounded)."""
        async with self._conn.call(self.name, deadline):
            with _remote_context(self.namespace):
                yield

    # -- Store ----------------------------------------------------------------------------

    async def info(self, dgst: str) -> Info:
        async with self._call(self.timeout):
            return await self._store().info(dgst)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        async with self._call(self.timeout):
            return await self._store().update(info, fieldpaths)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        # Step the remote listing inside the remote context, but yield outside it: the
        # consumer's code between items must keep its own namespace. The store's
        # timeout bounds the wait for each message.
        gen = self._store().walk(*filters)
        try:
            while True:
                async with self._call(None):
                    try:
                        info = await anext(gen)
                    except StopAsyncIteration:
                        return
                yield info
        finally:
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def delete(self, dgst: str) -> None:
        async with self._call(self.timeout):
            await self._store().delete(dgst)

    async def reader_at(self, dgst: str) -> ReaderAt:
        async with self._call(self.timeout):
            info = await self._store().info(dgst)
        return _ProxyReaderAt(self, dgst, info.size)

    async def status(self, ref: str) -> Status:
        async with self._call(self.timeout):
            return await self._store().status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        async with self._call(self.timeout):
            return await self._store().list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        async with self._call(self.timeout):
            await self._store().abort(ref)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Open or resume the remote ingest *ref* (resuming keeps the remote's offset).

        *expected* is validated here: containerd 1.6 does not check it when a
        Write stream opens, ctrd's store contract does (InvalidArgument).
        """
        if expected:
            _digest.validate(expected)
        async with self._call(self.timeout):
            # the writer keeps the headers of the context it was opened in
            w = await self._store().writer(ref, total, expected)
        return _ProxyWriter(self, w)

    async def aclose(self) -> None:
        """Release the connection (the daemon calls this at shutdown)."""
        cb, self._on_close = self._on_close, None
        if cb is not None:
            cb()


class _ProxyReaderAt:
    """Reads through one remote ``Read`` call per :meth:`read_at`, each bounded in time."""

    def __init__(self, store: ProxyContentStore, dgst: str, size: int) -> None:
        self._store = store
        self._dgst = dgst
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, n: int) -> bytes:
        if offset >= self._size or n <= 0:
            return b""
        n = min(n, self._size - offset)
        s = self._store
        async with s._call(s.timeout):
            parts = [c async for c in s._store().read(self._dgst, offset, n)]
        return b"".join(parts)

    async def close(self) -> None:
        return None


class _ProxyWriter:
    """A remote writer whose every step is bounded in time and whose commit adds ``gc.root``."""

    def __init__(self, store: ProxyContentStore, inner: Writer) -> None:
        self._store = store
        self._inner = inner

    def digest(self) -> str:
        return self._inner.digest()

    async def status(self) -> Status:
        s = self._store
        async with s._conn.call(s.name, s.timeout):
            return await self._inner.status()

    async def write(self, data: bytes | memoryview) -> int:
        s = self._store
        async with s._conn.call(s.name, s.timeout):
            return await self._inner.write(data)

    async def truncate(self, size: int) -> None:
        s = self._store
        async with s._conn.call(s.name, s.timeout):
            await self._inner.truncate(size)

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        merged = dict(labels or {})
        s = self._store
        if s.root_label:
            merged.setdefault(s.root_label, gc_root_value())
        async with s._conn.call(s.name, s.timeout):
            await self._inner.commit(size, expected, merged)

    async def close(self) -> None:
        # quiet and bounded: never dials, never raises for a remote that went away
        with contextlib.suppress(TimeoutError, errdefs.Error):
            async with asyncio.timeout(self._store.timeout):
                await self._inner.close()
