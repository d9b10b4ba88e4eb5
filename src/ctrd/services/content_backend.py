"""ctrd's content store served to another daemon's content proxy (``proxy_backend_address``).

containerd can use an outside content store: ``[proxy_plugins.<name>] type =
"content"`` in *its* config, with its own content plugin disabled. Its proxy
then calls the Content service for every backend operation -- and containerd
1.6 sends most of those calls (Write, Info, Status, Abort, and its garbage
collector's Walk and Delete) **without** a ``containerd-namespace`` header,
while Commit carries the namespace of the client request. ctrd's main socket
would refuse the former (``namespace is required``) and scatter the latter.

So the content gRPC plugin can serve a second socket::

    [plugins."io.containerd.grpc.v1.content"]
      proxy_backend_address = "/run/ctrd/content-backend.sock"
      proxy_backend_namespace = "proxy-backend"      # the default

where :class:`BackendContentService` handles every call in that one namespace,
whatever header (and lease) it carries. It is never a global view: the host
daemon's garbage collector walks and deletes through it, and must see only
what it stored. Commits are labelled ``containerd.io/gc.root`` so ctrd's own
collector keeps them until the host daemon deletes them (containerd's proxy
commits with no labels: it keeps labels in its own database).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from ctrd import errdefs, namespaces
from ctrd import labels as _labels
from ctrd.content import Info, ReaderAt, Status, Store, Writer
from ctrd.events import Publisher
from ctrd.proxy.content import gc_root_value
from ctrd.services.content import ContentService
from ctrd.wire.server import Method, rebind

__all__ = ["BackendContentService", "ContentServiceWithBackend", "RootingStore"]

log = logging.getLogger("ctrd.proxy")


class RootingStore:
    """A :class:`Store` that labels every commit ``containerd.io/gc.root``; all else delegates."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def info(self, dgst: str) -> Info:
        return await self._store.info(dgst)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._store.update(info, fieldpaths)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        walk = self._store.walk(*filters)
        try:
            async for info in walk:
                yield info
        finally:
            aclose = getattr(walk, "aclose", None)
            if aclose is not None:
                await aclose()

    async def delete(self, dgst: str) -> None:
        await self._store.delete(dgst)

    async def reader_at(self, dgst: str) -> ReaderAt:
        return await self._store.reader_at(dgst)

    async def status(self, ref: str) -> Status:
        return await self._store.status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        return await self._store.list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        await self._store.abort(ref)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        return _RootingWriter(await self._store.writer(ref, total, expected))


class _RootingWriter:
    def __init__(self, inner: Writer) -> None:
        self._inner = inner

    def digest(self) -> str:
        return self._inner.digest()

    async def status(self) -> Status:
        return await self._inner.status()

    async def write(self, data: bytes | memoryview) -> int:
        return await self._inner.write(data)

    async def truncate(self, size: int) -> None:
        await self._inner.truncate(size)

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> None:
        merged = dict(labels or {})
        merged.setdefault(_labels.GC_ROOT, gc_root_value())
        await self._inner.commit(size, expected, merged)

    async def close(self) -> None:
        await self._inner.close()


async def _in_namespace(
    namespace: str, method: str, func: Callable[[Any], Awaitable[None]], stream: Any
) -> None:
    # runs inside the listener's wrapper, which set the namespace from the header: override it
    if log.isEnabledFor(logging.DEBUG):
        md = getattr(stream, "metadata", None) or {}
        log.debug(
            "proxy backend %s: header namespace %r, lease %r -> namespace %s",
            method,
            md.get(namespaces.GRPC_HEADER),
            md.get(namespaces.LEASE_HEADER),
            namespace,
        )
    namespaces.set_for_request(namespace, None)
    await func(stream)


class BackendContentService(ContentService):
    """The Content service acting in *namespace* for every call, whatever its headers say.

    The lease header is dropped too: a lease of the host daemon means nothing here.
    """

    def __init__(self, store: Store, namespace: str, publisher: Publisher | None = None) -> None:
        super().__init__(RootingStore(store), publisher)
        self.namespace = namespace

    def __mapping__(self) -> dict[str, Method]:
        return {
            path: rebind(h, functools.partial(_in_namespace, self.namespace, path.rpartition("/")[2], h.func))
            for path, h in super().__mapping__().items()
        }


class ContentServiceWithBackend(ContentService):
    """The content gRPC plugin's instance when ``proxy_backend_address`` is set.

    Serves the main socket like a plain :class:`ContentService`, and owns the
    listener on the backend socket (closed by :meth:`aclose`, at shutdown).
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher | None,
        listener: Any,
        address: str,
        *,
        early_write_ack: bool = False,
    ) -> None:
        super().__init__(store, publisher, early_write_ack=early_write_ack)
        self._listener = listener
        self.backend_address = address

    @classmethod
    async def start(
        cls,
        store: Store,
        publisher: Publisher | None,
        *,
        address: str,
        namespace: str,
        max_recv: int,
        max_send: int,
        early_write_ack: bool = False,
    ) -> ContentServiceWithBackend:
        """Listen on *address* with a :class:`BackendContentService` in *namespace*.

        *early_write_ack* applies to the main socket's service (as :class:`ContentService`).

        :raises errdefs.AlreadyExists: a live daemon holds *address*.
        :raises errdefs.FailedPrecondition: *address* exists and is not a socket.
        """
        from ctrd.wire.server import GrpcListener

        listener = GrpcListener(
            [BackendContentService(store, namespace, publisher)], max_recv=max_recv, max_send=max_send
        )
        try:
            await listener.start_unix(address)
        except OSError as exc:
            with contextlib.suppress(Exception):
                await listener.stop(0)
            raise errdefs.FailedPrecondition(f"proxy backend: cannot listen on {address}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await listener.stop(0)
            raise
        log.info("serving content proxy backend... address=%s namespace=%s", address, namespace)
        return cls(store, publisher, listener, address, early_write_ack=early_write_ack)

    async def aclose(self) -> None:
        """Stop the backend listener (in-flight calls get a few seconds to finish)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop(5.0)
