"""A Write that half-closes, then the same ref reopened at once on the same channel, against a real daemon.

This is what containerd's Go content client does (``content/proxy``: ``Close`` is
a gRPC half-close) in containerd's own resume tests: the first call still holds
the ref while its writer closes (fsync, ``updatedat``), so the reopening call
must wait for it rather than answer UNAVAILABLE ``ref ... locked``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

from ctrd import namespaces
from ctrd.api.containerd.services.content import v1 as api

WRITE = "/containerd.services.content.v1.Content/Write"
MD = {namespaces.GRPC_HEADER: "reopen"}
ROUNDS = 50


def _open(channel: Channel) -> Any:
    return channel.request(
        WRITE, Cardinality.STREAM_STREAM, api.WriteContentRequest, api.WriteContentResponse, metadata=MD
    )


@pytest.mark.parametrize("early_ack", [False, True], ids=["lockstep", "early-ack"])
async def test_reopen_right_after_half_close(daemon: Callable[..., Any], early_ack: bool) -> None:
    extra = '[plugins."io.containerd.grpc.v1.content"]\n  early_write_ack = true\n' if early_ack else ""
    d = daemon(extra)
    channel = Channel(path=d.socket)
    try:
        for i in range(ROUNDS):
            ref = f"reopen-{i}"
            data = hashlib.shake_256(ref.encode()).digest(4096 + i)
            half = len(data) // 2
            async with contextlib.AsyncExitStack() as stack:
                first = await stack.enter_async_context(_open(channel))
                await first.send_request()
                await first.send_message(
                    api.WriteContentRequest(action=api.WriteAction.WRITE, ref=ref, data=data[:half])
                )
                reply = await first.recv_message()
                assert reply is not None
                assert reply.offset == half
                await first.end()  # half-close; its last reply and trailers are read later

                second = await stack.enter_async_context(_open(channel))
                await second.send_request()
                await second.send_message(api.WriteContentRequest(action=api.WriteAction.STAT, ref=ref))
                stat = await second.recv_message()  # UNAVAILABLE "ref ... locked" before the fix
                assert stat is not None, f"round {i}"
                assert stat.offset == half, f"round {i}"
                await second.send_message(
                    api.WriteContentRequest(
                        action=api.WriteAction.COMMIT,
                        offset=half,
                        data=data[half:],
                        total=len(data),
                        expected="sha256:" + hashlib.sha256(data).hexdigest(),
                    )
                )
                with contextlib.suppress(StreamTerminatedError):
                    await second.end()
                done = [m async for m in second]
                assert [m.offset for m in done] == [len(data), len(data)]
                await second.recv_trailing_metadata()
                assert [m.offset async for m in first] == [half]
                await first.recv_trailing_metadata()
    finally:
        channel.close()
