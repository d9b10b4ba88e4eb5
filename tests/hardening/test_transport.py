"""Hostile and unusual clients at the transport: long echoed strings, frame headers that promise
megabytes, grpcio's first call in large frames, malformed protobuf bodies."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from typing import Any

import grpc
import pytest
from _daemon import Launcher, rss_kib, version_of
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ctrd import limits
from ctrd.api.containerd.services.content import v1 as content_api

from ._figures import Figures
from ._probe import (
    DATA,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    Victim,
    flood,
    frame,
    grpc_request,
    pushing_writers,
    raw_connection,
    silent_readers,
)

MiB = 1 << 20
NS = (("containerd-namespace", "hardening"),)


async def _status(sock: str, ref: str) -> tuple[float, GRPCError]:
    ch = Channel(path=sock)
    try:
        t0 = time.monotonic()
        with pytest.raises(GRPCError) as ei:
            await content_api.ContentStub(ch).status(
                content_api.StatusRequest(ref=ref), metadata=dict(NS), timeout=30
            )
        return time.monotonic() - t0, ei.value
    finally:
        ch.close()


def test_long_ref_is_answered_fast_and_echoed_short(daemon: Launcher, figures: Figures) -> None:
    """A 256 KiB ref: NOT_FOUND within 5 s, its message short; another client stays under 1 s."""
    d = daemon()
    ref = "a" * (256 << 10)
    with Victim(d.socket) as victim:
        elapsed, err = asyncio.run(_status(d.socket, ref))
        time.sleep(0.2)
    assert err.status is Status.NOT_FOUND, err
    assert err.message is not None
    assert len(err.message) <= limits.MAX_STATUS_MESSAGE
    assert "characters)" in err.message  # the ref is echoed cut, with its length
    assert elapsed < 5.0
    assert victim.worst < 1.0
    assert not victim.errors
    figures.add("stall probes", "256 KiB ref: answer (ms)", elapsed * 1000)
    figures.add("stall probes", "256 KiB ref: max victim latency (ms)", victim.worst * 1000)
    assert "Traceback" not in d.log()


async def _write(sock: str, ref: str, data: bytes) -> Any:
    ch = Channel(path=sock)
    try:
        request = content_api.WriteContentRequest(action=content_api.WriteAction.COMMIT, ref=ref, data=data)
        return [r async for r in content_api.ContentStub(ch).write([request], metadata=dict(NS), timeout=30)]
    finally:
        ch.close()


def test_ingest_of_an_overlong_ref_is_refused(daemon: Launcher) -> None:
    d = daemon()
    with pytest.raises(GRPCError) as ei:
        asyncio.run(_write(d.socket, "r" * (limits.MAX_REF_BYTES + 1), b"x"))
    assert ei.value.status is Status.INVALID_ARGUMENT
    assert f"maximum of {limits.MAX_REF_BYTES} bytes" in (ei.value.message or "")
    assert asyncio.run(_write(d.socket, "r" * limits.MAX_REF_BYTES, b"x"))[0].offset == 1


def test_frame_headers_promising_megabytes_allocate_nothing(daemon: Launcher, figures: Figures) -> None:
    """200 connections each send a DATA header announcing 2 MiB - 1 bytes on a stream never
    opened, and one byte: the daemon's RSS grows by less than 64 MiB (it was 2 MiB each)."""
    d = daemon()
    before = rss_kib(d.pid)
    conns = []
    try:
        for _ in range(200):
            sock = raw_connection(d.socket)
            sock.sendall(frame(DATA, 0, 1, b"x", length=(2 * MiB) - 1))
            conns.append(sock)
        time.sleep(1.0)
        grown = (rss_kib(d.pid) - before) / 1024
    finally:
        for sock in conns:
            sock.close()
    figures.add("memory bounds", "200 x 10-byte 2 MiB DATA headers: RSS growth (MiB)", grown)
    assert grown < 64, f"RSS grew by {grown:.1f} MiB"


def _grpcio_write(sock: str, ref: str, data: bytes) -> content_api.WriteContentResponse:
    """One Write (COMMIT with all the data) as the first call of a fresh grpcio channel."""
    channel = grpc.insecure_channel(f"unix:{sock}")
    try:
        write = channel.stream_stream(
            "/containerd.services.content.v1.Content/Write",
            request_serializer=bytes,
            response_deserializer=content_api.WriteContentResponse.parse,
        )
        request = content_api.WriteContentRequest(
            action=content_api.WriteAction.COMMIT,
            ref=ref,
            data=data,
            total=len(data),
            expected="sha256:" + hashlib.sha256(data).hexdigest(),
        )
        replies = list(write(iter([request]), metadata=NS, timeout=30))
        return replies[0]
    finally:
        channel.close()


def test_grpcio_first_call_large_write(daemon: Launcher, figures: Figures) -> None:
    """20 fresh grpcio channels whose first call is an 80 KB Write all succeed.

    grpcio sends frames as large as the server's SETTINGS allow as soon as it reads
    them, possibly before its ACK: the server accepts them from the start.
    """
    d = daemon()
    failures = []
    for i in range(20):
        data = bytes([i]) * (80 * 1000)
        try:
            reply = _grpcio_write(d.socket, f"grpcio-{i}", data)
            assert reply.offset == len(data)
        except grpc.RpcError as exc:
            failures.append(f"{i}: {exc.code()} {exc.details()}")
    figures.add("grpcio first calls", "80 KB Writes tried", 20)
    figures.add("grpcio first calls", "failures", len(failures))
    assert not failures, failures


MALFORMED = {
    "invalid UTF-8 in a string": b"\x0a\x02\xff\xfe",
    "overlong varint": b"\x10" + b"\xff" * 11,
    "wire type mismatch": b"\x0d\x01\x02\x03\x04",
    "truncated length": b"\x0a\x05ab",
}
METHODS = {
    "/containerd.services.content.v1.Content/Info": content_api.InfoResponse,
    "/containerd.services.content.v1.Content/Status": content_api.StatusResponse,
    "/containerd.services.namespaces.v1.Namespaces/Create": bytes,
    "/containerd.services.leases.v1.Leases/Create": bytes,
}


@pytest.mark.parametrize("method", list(METHODS))
def test_malformed_protobuf_is_invalid_argument(daemon: Launcher, method: str) -> None:
    d = daemon()
    channel = grpc.insecure_channel(f"unix:{d.socket}")
    try:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        for name, body in MALFORMED.items():
            with pytest.raises(grpc.RpcError) as ei:
                call(body, metadata=NS, timeout=10)
            err: Any = ei.value
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), (name, err)
    finally:
        channel.close()
    assert "Traceback" not in d.log()
    assert d.log().count("malformed") >= len(MALFORMED)


def test_readers_that_never_read_hold_bounded_memory(daemon: Launcher, figures: Figures) -> None:
    """5 connections x 100 Read streams of a 32 MiB blob, windows wide open, nothing read:
    the daemon's RSS grows by less than 160 MiB (was ~2.6 MiB per stream, +1.1 GiB), another
    client is served meanwhile, and everything held is given back when they go."""
    d = daemon()
    data = bytes(range(256)) * (32 * MiB // 256)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()

    async def put() -> None:
        from ctrd.client import Client

        async with Client(d.socket, namespace="hardening") as client:
            await client.content.ingest("blob", data, expected=dgst, labels={"containerd.io/gc.root": "x"})

    asyncio.run(put())
    before = rss_kib(d.pid)
    body = bytes(content_api.ReadContentRequest(digest=dgst))
    socks = []
    with Victim(d.socket) as victim:
        try:
            for _ in range(5):
                socks.append(
                    silent_readers(d.socket, "/containerd.services.content.v1.Content/Read", body, 100)
                )
            time.sleep(3.0)
            grown = (rss_kib(d.pid) - before) / 1024
        finally:
            for sock in socks:
                sock.close()
    figures.add("memory bounds", "500 unread Read streams: RSS growth (MiB)", grown)
    figures.add("stall probes", "500 unread Read streams: max victim latency (ms)", victim.worst * 1000)
    assert grown < 160, f"RSS grew by {grown:.1f} MiB"
    assert victim.worst < 1.0
    assert not victim.errors
    assert "Traceback" not in d.log()


def test_many_large_messages_on_one_connection_are_bounded(daemon: Launcher, figures: Figures) -> None:
    """40 Write calls on one connection each send a 16 MiB message and then wait: the daemon
    holds at most its per-connection budget of messages (64 MiB) and refuses a message that
    does not fit with RESOURCE_EXHAUSTED (how many depends on how fast the held ones are
    written); it grew by 570 MiB before. Another client is served meanwhile."""
    d = daemon()
    before = rss_kib(d.pid)
    with Victim(d.socket) as victim:
        sent, statuses = pushing_writers(d.socket, 40, 16 * MiB)
        grown = (rss_kib(d.pid) - before) / 1024
    figures.add("memory bounds", "40 x 16 MiB messages on one connection: RSS growth (MiB)", grown)
    figures.add("stall probes", "40 x 16 MiB messages: max victim latency (ms)", victim.worst * 1000)
    refused = sum(1 for s in statuses.values() if s == str(Status.RESOURCE_EXHAUSTED.value))
    assert refused >= 1, statuses
    assert grown < 160, f"RSS grew by {grown:.1f} MiB (sent {sent >> 20} MiB)"
    assert victim.worst < 1.0
    assert not victim.errors
    assert "Traceback" not in d.log()


def _version_block() -> bytes:
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    enc = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
    headers, _ = grpc_request("/containerd.services.version.v1.Version/Version", b"")
    return enc.encoder.encode(headers)


FLOODS = {
    # a PING (each answered with an ACK the client never reads)
    "ping": lambda i: frame(PING, 0, 0, b"12345678"),
    # an empty SETTINGS (each answered with an ACK)
    "settings": lambda i: frame(SETTINGS, 0, 0),
    # a call opened and reset at once, again and again (CVE-2023-44487)
    "rapid-reset": None,
    # zero-length DATA frames on a stream that stays open (CVE-2019-9518)
    "empty-data": None,
}


@pytest.mark.fast_h2  # with h2's own frame handling a flood costs the loop about three times more
@pytest.mark.parametrize("kind", list(FLOODS))
def test_frame_floods_stall_nobody(daemon: Launcher, figures: Figures, kind: str, long_run: bool) -> None:
    """A connection floods the daemon with one kind of frame for 3 s (20 s in the long run),
    reading nothing back: another client's Version stays under 1 s, the daemon's RSS grows
    by less than 64 MiB, and it answers normally afterwards."""
    d = daemon()
    block = _version_block()
    if kind == "rapid-reset":

        def make(i: int) -> bytes:
            sid = 2 * i + 1
            return frame(HEADERS, 0x4, sid, block) + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))

    elif kind == "empty-data":
        opened = frame(HEADERS, 0x4, 1, block)

        def make(i: int) -> bytes:
            return opened + frame(DATA, 0, 1) if i == 0 else frame(DATA, 0, 1)

    else:
        make = FLOODS[kind]  # type: ignore[assignment]
    before = rss_kib(d.pid)
    with Victim(d.socket) as victim:
        sent, closed = flood(d.socket, make, 20.0 if long_run else 3.0)
        grown = (rss_kib(d.pid) - before) / 1024
    figures.add("frame floods", f"{kind}: frames tried", sent)
    figures.add("frame floods", f"{kind}: RSS growth (MiB)", grown)
    figures.add("stall probes", f"{kind} flood: max victim latency (ms)", victim.worst * 1000)
    assert victim.worst < 1.0, (victim.worst, victim.errors)
    assert not victim.errors, (victim.worst, victim.errors)
    assert grown < 64, f"RSS grew by {grown:.1f} MiB ({sent} frames, closed={closed})"
    assert asyncio.run(version_of(d.socket)) != ""
    assert "Traceback" not in d.log()


def test_overlong_lease_ids_and_resources_are_refused(daemon: Launcher) -> None:
    from ctrd.api.containerd.services.leases import v1 as leases_api

    d = daemon()

    async def calls() -> list[GRPCError]:
        ch = Channel(path=d.socket)
        stub = leases_api.LeasesStub(ch)
        errors = []
        try:
            await stub.create(leases_api.CreateRequest(id="x"), metadata=dict(NS))
            for call in (
                stub.create(leases_api.CreateRequest(id="l" * 5000), metadata=dict(NS)),
                stub.add_resource(
                    leases_api.AddResourceRequest(
                        id="x", resource=leases_api.Resource(id="i" * 5000, type="ingests")
                    ),
                    metadata=dict(NS),
                ),
            ):
                with pytest.raises(GRPCError) as ei:
                    await call
                errors.append(ei.value)
        finally:
            ch.close()
        return errors

    errors = asyncio.run(calls())
    assert [e.status for e in errors] == [Status.INVALID_ARGUMENT] * 2, errors
    assert all(len(e.message or "") < 400 for e in errors)
