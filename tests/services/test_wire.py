"""The hand-written codecs of ctrd.wire.codecs agree with betterproto2 byte for byte."""

from __future__ import annotations

import pytest

from ctrd import errdefs
from ctrd.api.containerd.services.content import v1 as api
from ctrd.wire import codecs


@pytest.mark.parametrize(
    "req",
    [
        api.ReadContentRequest(),
        api.ReadContentRequest(digest="sha256:" + "a" * 64),
        api.ReadContentRequest(digest="sha256:" + "b" * 64, offset=32768, size=32768),
        api.ReadContentRequest(digest="x", offset=-1, size=-5),
        api.ReadContentRequest(digest="x", offset=(1 << 62), size=1),
    ],
)
def test_read_request(req: api.ReadContentRequest) -> None:
    raw = codecs.RawReadRequest.FromString(bytes(req))
    assert (raw.digest, raw.offset, raw.size) == (req.digest, req.offset, req.size)


@pytest.mark.parametrize(
    "req",
    [
        api.WriteContentRequest(ref="r"),
        api.WriteContentRequest(action=api.WriteAction.WRITE, offset=1 << 20, data=b"\x00\xff" * 70000),
        api.WriteContentRequest(
            action=api.WriteAction.COMMIT,
            ref="ns/1/ref",
            total=123,
            expected="sha256:" + "c" * 64,
            offset=123,
            labels={"containerd.io/gc.root": "x", "k": "", "ü": "v"},
        ),
        api.WriteContentRequest(action=api.WriteAction.STAT, total=-1),
    ],
)
def test_write_request(req: api.WriteContentRequest) -> None:
    raw = codecs.RawWriteRequest.FromString(bytes(req))
    assert raw.action == req.action
    assert (raw.ref, raw.total, raw.expected, raw.offset) == (req.ref, req.total, req.expected, req.offset)
    assert bytes(raw.data) == req.data
    assert raw.labels == req.labels


def test_write_request_unknown_fields_and_action() -> None:
    data = bytes(api.WriteContentRequest(ref="r")) + b"\x08\x07" + b"\x98\x06\x01" + b"\xa2\x06\x02hi"
    raw = codecs.RawWriteRequest.FromString(data)
    assert int(raw.action) == 7
    assert raw.ref == "r"


@pytest.mark.parametrize("bad", [b"\x0a\x05ab", b"\x08", b"\x0b", b"\x12\x02\xff\xfe"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        codecs.RawReadRequest.FromString(bad)


@pytest.mark.parametrize("offset", [0, 1, 127, 128, 32768, 1 << 40])
@pytest.mark.parametrize("data", [b"", b"x", b"y" * 300, bytes(range(256)) * 128])
def test_read_response(offset: int, data: bytes) -> None:
    assert codecs.encode_read_response(offset, data).SerializeToString() == bytes(
        api.ReadContentResponse(offset=offset, data=data)
    )


@pytest.mark.parametrize(
    ("size", "created_us", "updated_us", "labels"),
    [
        (0, 0, 0, {}),
        (1, 1, 999_999, {"a": "b"}),
        (
            1 << 40,
            1_764_000_000_123_456,
            1_764_000_001_000_000,
            {"containerd.io/gc.root": "x", "ü": "ä" * 200},
        ),
        (5, -1, -1_000_001, {"k": "v" * 130}),
        (127, 1_000_000, 2_000_000, {f"k{i}": f"v{i}" for i in range(20)}),
    ],
)
def test_info_and_list_response(size: int, created_us: int, updated_us: int, labels: dict[str, str]) -> None:
    from datetime import UTC, datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    digest = "sha256:" + "d" * 64
    want = api.Info(
        digest=digest,
        size=size,
        created_at=epoch + timedelta(microseconds=created_us),
        updated_at=epoch + timedelta(microseconds=updated_us),
        labels=labels,
    )
    raw = codecs.encode_info(digest, size, created_us, updated_us, labels)
    assert raw == bytes(want)
    assert api.Info.parse(raw) == want
    for n in (1, 2, 100):
        reply = codecs.encode_list_response([raw] * n).SerializeToString()
        assert reply == bytes(api.ListContentResponse(info=[want] * n))


def _reference_uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_uvarint_at_every_length_boundary() -> None:
    from ctrd.wire._proto import uvarint

    values = {0, 1, (1 << 64) - 1}
    for bits in range(1, 65):
        values.update({(1 << bits) - 1, 1 << bits, (1 << bits) + 1})
    for v in sorted(x for x in values if x < 1 << 64):
        assert uvarint(v) == _reference_uvarint(v), v


@pytest.mark.parametrize("count", [0, 1, 2, 100])
def test_list_records_equal_list_response_of_infos(count: int) -> None:
    """``encode_list_records`` is ``encode_list_response`` of ``encode_info`` each, byte for byte."""
    from ctrd.content import InfoRecord

    shapes = [
        (0, 0, 0, {}),
        (127, 1_000_000, 1_000_000, {"a": "b"}),
        (128, 1_764_000_000_123_456, 1_764_000_001_000_000, {"containerd.io/gc.root": "x"}),
        (1 << 40, 1, 999_999, {"k": "v" * 200}),
        (5, -1, -1_000_001, {f"k{i}": f"v{i}" for i in range(20)}),
    ]
    records = []
    for i in range(count):
        size, created, updated, labels = shapes[i % len(shapes)]
        records.append(InfoRecord(f"sha256:{i:064x}", size, created, updated, dict(labels)))
    want = codecs.encode_list_response([codecs.encode_info(*r) for r in records]).SerializeToString()
    assert codecs.encode_list_records(records).SerializeToString() == want
    infos = [
        api.Info.parse(codecs.encode_info(*r)) for r in records
    ]  # and what betterproto2 reads back is the same list
    assert api.ListContentResponse.parse(want).info == infos
