"""SDK pieces that need no daemon: addresses, sources, event payloads, errors, import hygiene."""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ctrd.client
from ctrd import errdefs
from ctrd.api.google import protobuf as pb
from ctrd.client import (
    Address,
    Client,
    ContentCreate,
    ContentDelete,
    Lease,
    NamespaceCreate,
    Plugin,
    PluginError,
    RawEvent,
    parse_address,
)
from ctrd.client._events import decode_payload, encode_payload
from ctrd.client._services import expire_label
from ctrd.client._sources import CHUNK_SIZE, open_source


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/run/ctrd/ctrd.sock", Address(path="/run/ctrd/ctrd.sock")),
        ("unix:///tmp/x.sock", Address(path="/tmp/x.sock")),
        ("./rel.sock", Address(path="./rel.sock")),
        ("plain.sock", Address(path="plain.sock")),
        ("localhost:1234", Address(host="localhost", port=1234)),
        ("tcp://10.0.0.1:80", Address(host="10.0.0.1", port=80)),
        ("[::1]:5000", Address(host="::1", port=5000)),
        (":7000", Address(host="127.0.0.1", port=7000)),
    ],
)
def test_parse_address(text: str, want: Address) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["", "unix://", "ftp://h:1", "host:port", "host:0", "[::1]5000", "h:70000"])
def test_parse_address_errors(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_address(text)


def test_address_str() -> None:
    assert str(Address(host="::1", port=5)) == "[::1]:5"
    assert str(Address(path="/x")) == "/x"


def test_default_address_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERD_ADDRESS", "/tmp/from-env.sock")
    assert Client().address == "/tmp/from-env.sock"
    monkeypatch.delenv("CONTAINERD_ADDRESS")
    assert Client().address.endswith("ctrd.sock")


def test_views_share_connection() -> None:
    c = Client("/tmp/none.sock", namespace="a", timeout=3)
    v = c.with_namespace("b")
    assert (c.namespace, v.namespace, v.timeout) == ("a", "b", 3)
    assert v.with_lease("L").lease_id == "L"
    assert v.lease_id is None
    assert v._conn is c._conn
    assert "namespace='b'" in repr(v)


async def test_closing_a_view_keeps_the_connection() -> None:
    c = Client("/tmp/none.sock")
    v = c.with_namespace("b")
    await v.close()
    assert not c.closed
    await c.close()
    assert v.closed
    with pytest.raises(errdefs.FailedPrecondition):
        await v.content.info("sha256:" + "0" * 64)
    with pytest.raises(errdefs.FailedPrecondition):
        async with c:
            pass


async def test_deadline_exceeded_and_unavailable(tmp_path: Path) -> None:
    """A socket that accepts and never answers: the deadline hits; a refused one: Unavailable."""
    sock = str(tmp_path / "silent.sock")
    conns: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)

    server = await asyncio.start_unix_server(hold, sock)
    try:
        async with Client(sock, timeout=0.3) as c:
            with pytest.raises(errdefs.DeadlineExceeded):
                await c.version()
            with pytest.raises(errdefs.DeadlineExceeded):
                _ = [i async for i in c.content.list()]
    finally:
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()
    async with Client("127.0.0.1:1", timeout=2) as c:
        with pytest.raises(errdefs.Unavailable, match=r"cannot connect to 127\.0\.0\.1:1"):
            await c.version()


# -- sources -----------------------------------------------------------------------------------------


async def _drain(reader: object) -> bytes:
    out = bytearray()
    async for chunk in reader.chunks():  # type: ignore[attr-defined]
        assert len(chunk) <= CHUNK_SIZE
        out += chunk
    return bytes(out)


async def test_sources_seek_and_skip(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 10)
    p = tmp_path / "f"
    p.write_bytes(data)

    async def stream() -> AsyncIterator[bytes]:
        yield data[:5]
        yield data[5 : CHUNK_SIZE * 2]  # over one chunk: split on the way out
        yield data[CHUNK_SIZE * 2 :]

    for src, size in [(data, len(data)), (str(p), len(data)), (p, len(data)), (stream(), None)]:
        for hashed in (False, True):
            if hashed and not isinstance(src, bytes | str | Path):
                src = stream()
            r = open_source(src)
            assert r.size == size
            assert r.rewindable == (size is not None)
            h = hashlib.sha256() if hashed else None
            await r.skip(7, "ref", h)
            assert await _drain(r) == data[7:]
            if h is not None:
                assert h.digest() == hashlib.sha256(data[:7]).digest()
            if r.rewindable:
                await r.rewind()
                assert await _drain(r) == data
            await r.close()

    with p.open("rb") as f:  # a file read from its current position
        f.seek(100)
        r = open_source(f)
        assert r.size == len(data) - 100
        h = hashlib.sha256()
        await r.skip(1, "ref", h)
        assert await _drain(r) == data[101:]
        assert h.digest() == hashlib.sha256(data[100:101]).digest()
        await r.rewind()
        assert await _drain(r) == data[100:]

    # a non-seekable file: skipped by reading
    rfd, wfd = os.pipe()
    with os.fdopen(rfd, "rb") as rf:
        os.write(wfd, data[:1000])
        os.close(wfd)
        r = open_source(rf)
        assert r.size is None
        assert not r.rewindable
        await r.skip(10, "ref")
        assert await _drain(r) == data[10:1000]

    for src in (stream(), data, str(p)):
        r = open_source(src)
        with pytest.raises(errdefs.FailedPrecondition, match="before the resume offset"):
            await r.skip(len(data) + 1, "ref")
        await r.close()
    with pytest.raises(TypeError):
        open_source(12)  # type: ignore[arg-type]
    assert await _drain(open_source(io.BytesIO(b"abc"))) == b"abc"


# -- events and types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        ContentDelete(digest="sha256:x"),
        ContentCreate(digest="sha256:y", size=3),
        NamespaceCreate(name="n", labels={"a": "b"}),
        RawEvent(type_url="example/unknown", value=b"\x00\x01"),
    ],
)
def test_event_payload_roundtrip(event: object) -> None:
    any_ = encode_payload(event)  # type: ignore[arg-type]
    assert not any_.type_url.startswith("type.googleapis.com/")
    assert decode_payload(any_) == event


def test_decode_other_registered_message() -> None:
    from ctrd.api.containerd.services.version.v1 import VersionResponse

    any_ = pb.Any(
        type_url="containerd.services.version.v1.VersionResponse", value=bytes(VersionResponse("1", "r"))
    )
    got = decode_payload(any_)
    assert isinstance(got, RawEvent)
    assert got.fields == {"version": "1", "revision": "r"}
    assert decode_payload(None) is None
    with pytest.raises(TypeError):
        encode_payload(object())  # type: ignore[arg-type]


def test_result_types() -> None:
    lease = Lease(id="x", created_at=_dt.datetime.now(_dt.UTC), labels={"containerd.io/gc.expire": "bad"})
    assert lease.expires_at is None
    assert expire_label(_dt.datetime(2030, 1, 2, 3, 4, 5, 999)) == "2030-01-02T03:04:05Z"
    skip = Plugin(type="t", id="i", error=PluginError(code=2, message="skip plugin: no address"))
    assert (skip.status, skip.uri) == ("skip", "t.i")
    assert Plugin(type="t", id="i", error=PluginError(code=2, message="boom")).status == "error"


def test_public_api_complete() -> None:
    names = ctrd.client.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(ctrd.client, name) is not None
    public = {n for n in vars(ctrd.client) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(names)


def test_client_imports_no_daemon_code() -> None:
    """The SDK, the CLI and the test helpers load none of the daemon's packages."""
    code = (
        "import sys, ctrd.client, ctrd.ctl, ctrd.ctl._commands, ctrd.testing\n"
        "daemon = ('server', 'services', 'metadata', 'plugin', 'gc', 'events')\n"
        "bad = [m for m in sys.modules if (m.startswith('ctrd.') and m.split('.')[1] in daemon)\n"
        "       or m.split('.')[0] in ('aiohttp', 'aiosqlite', 'prometheus_client')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("offset", [0, 1, 127, 128, 1 << 20, 1 << 40])
@pytest.mark.parametrize("data", [b"", b"x", b"\x00" * 300, bytes(range(256)) * 4096])
def test_write_request_encoding_matches_betterproto(offset: int, data: bytes) -> None:
    from ctrd.api.containerd.services.content import v1 as api
    from ctrd.wire.codecs import encode_write_request as _encode_write

    want = bytes(api.WriteContentRequest(action=api.WriteAction.WRITE, offset=offset, data=data))
    encoded = _encode_write(offset, memoryview(data))
    if encoded.framed is not None:  # the gRPC framing the stream gets directly: flag 0, length, message
        assert encoded.framed == b"\x00" + len(want).to_bytes(4, "big") + want
    assert encoded.SerializeToString() == want
