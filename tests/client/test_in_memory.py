"""The SDK over an in-memory channel: ``Client(channel=GrpcListener(...).in_memory())``.

No socket and no daemon process: the calls go through the server's real call
handling (headers, statuses), so SDK code can be tested against services directly.
"""

from __future__ import annotations

import pytest

from ctrd import errdefs
from ctrd.client import Client
from ctrd.content.digest import sha256_of
from ctrd.services.content import ContentService
from ctrd.testing import MemoryStore
from ctrd.wire.server import GrpcListener


async def test_client_on_an_in_memory_channel() -> None:
    listener = GrpcListener(
        [ContentService(MemoryStore(namespaced=True))], max_recv=16 << 20, max_send=16 << 20
    )
    data = b"in memory" * 1000
    async with listener.in_memory() as channel:
        async with Client(channel=channel, namespace="mem") as client:
            info = await client.content.ingest("r", data, expected=sha256_of(data))
            assert info.digest == sha256_of(data)
            assert await client.content.read_all(info.digest) == data
            with pytest.raises(errdefs.NotFound):  # a status through the real call handling
                await client.content.info(sha256_of(b"absent"))
            async with Client(channel=channel, namespace="other") as other:
                with pytest.raises(errdefs.NotFound):
                    await other.content.info(info.digest)
        # the client does not close a channel it was given
        async with Client(channel=channel, namespace="mem") as again:
            assert (await again.content.info(info.digest)).size == len(data)
