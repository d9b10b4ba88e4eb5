"""ctrd's SDK as the benchmark uses it.

The bench drives both daemons through :class:`ctrd.client.RemoteContentStore`
on the SDK's channel. Its writers send COMMIT with ``END_STREAM`` (containerd 1.6
resets a stream still open from the client side after answering a commit, and
grpclib would then drop the buffered replies) and, as ``Client.content.ingest``
does, keep :data:`ctrd.remote.PIPELINE` WRITEs in flight. Runs recorded before
2026-11-28 07:30 UTC used a lock-step writer of the bench's own (one reply
awaited per 1 MiB WRITE); their SDK-ingest numbers are not comparable with later
ones.
"""

from __future__ import annotations

from typing import Any

from ctrd.client import RemoteContentStore
from ctrd.remote import PIPELINE

__all__ = ["BenchStore"]


class BenchStore(RemoteContentStore):
    """The SDK's :class:`RemoteContentStore` with writers keeping :data:`PIPELINE` WRITEs in
    flight, as ``Client.content.ingest`` does."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("pipeline", PIPELINE)
        super().__init__(*args, **kw)
