"""``ctrd.wire._h2.memoize_hpack``: memoizing hpack coders are byte-for-byte hpack's own.

Differential tests: a plain :class:`hpack.Encoder`/:class:`hpack.Decoder` and the
coders of an :class:`h2.connection.H2Connection` given to :func:`memoize_hpack`
go through the same pseudo-random sequences (repeated lists, new indexed fields,
fields larger than the table, never-indexed fields, other iterables, table-size
changes, huffman on and off) and must agree on every block, every header list
and the dynamic table after each step. Memo hits are counted by wrapping the
base class's ``encode``/``decode`` (what the memoizing subclasses call on a miss).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import h2.connection
import h2.events
import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple

from ctrd.wire._h2 import CtrdConnection
from ctrd.wire._hpack import (
    _MEMO_ENTRIES,
    _MEMO_MAX_BLOCK,
    _MemoDecoder,
    _MemoEncoder,
    _VersionedTable,
    memoize_hpack,
)

from ._h2config import grpclib_h2_config

GET = (":method", "GET")  # static table entry 2: one byte (0x82), leaves the dynamic table alone
GET_BLOCK = b"\x82"


def memo_coders() -> tuple[Any, Any]:
    """The encoder and decoder of a fresh h2 connection, after :func:`memoize_hpack`."""
    conn = h2.connection.H2Connection()
    memoize_hpack(conn)
    return conn.encoder, conn.decoder


class Calls:
    """Counts the calls of hpack's own ``encode``/``decode`` made for memoizing coders (misses)."""

    def __init__(self) -> None:
        self.encode = 0
        self.decode = 0


@pytest.fixture
def misses(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()
    encode, decode = hpack.Encoder.encode, hpack.Decoder.decode

    def counting_encode(self: hpack.Encoder, *args: Any, **kw: Any) -> bytes:
        if isinstance(self, _MemoEncoder):
            calls.encode += 1
        return encode(self, *args, **kw)

    def counting_decode(self: hpack.Decoder, *args: Any, **kw: Any) -> Any:
        if isinstance(self, _MemoDecoder):
            calls.decode += 1
        return decode(self, *args, **kw)

    monkeypatch.setattr(hpack.Encoder, "encode", counting_encode)
    monkeypatch.setattr(hpack.Decoder, "decode", counting_decode)
    return calls


def table_state(coder: Any) -> tuple[Any, ...]:
    t = coder.header_table
    return tuple(t.dynamic_entries), t._current_size, t.maxsize


# -- pseudo-random workloads ---------------------------------------------------------------

NAMES = [":method", ":path", ":status", "content-type", "user-agent", "grpc-status", "te", "x-a", "x-b"]
VALUES = ["GET", "POST", "200", "/a", "/containerd.services.content.v1.Content/Read", "application/grpc", ""]

Build = Callable[[], Any]
"""Makes a fresh header collection (each encoder gets its own, generators are single-use)."""


def _field(rng: random.Random) -> Any:
    name = rng.choice(NAMES) if rng.random() < 0.8 else f"x-new-{rng.randrange(10_000)}"
    r = rng.random()
    if r < 0.05:
        value = "v" * rng.choice([300, 2000, 5000])  # larger than small tables, or than any table
    elif r < 0.25:
        value = f"value-{rng.randrange(100_000)}"  # new: gets indexed
    else:
        value = rng.choice(VALUES)
    if rng.random() < 0.2:
        name, value = name.encode(), value.encode()
    kind = rng.random()
    if kind < 0.04:
        return NeverIndexedHeaderTuple(name, value)
    if kind < 0.06:
        return HeaderTuple(name, value)
    if kind < 0.08:
        return (name, value, rng.random() < 0.5)  # hpack's (name, value, sensitive)
    return (name, value)


def _builder(rng: random.Random, fields: list[Any]) -> Build:
    r = rng.random()
    if r < 0.75:
        return lambda: list(fields)
    if r < 0.85:
        return lambda: tuple(fields)
    if r < 0.95:
        return lambda: (f for f in fields)
    plain = {f[0]: f[1] for f in fields if type(f) is tuple and len(f) == 2}
    return lambda: dict(plain)


def workload(seed: int, steps: int) -> Iterator[tuple[str, Any]]:
    """Steps: ``("size", [sizes])`` (set before the next encode) or ``("encode", (build, huffman))``."""
    rng = random.Random(seed)
    seen: list[tuple[Build, bool]] = []
    last: int | None = None  # the last size set since the previous encode
    for _ in range(steps):
        r = rng.random()
        if r < 0.06:
            sizes = []
            for _ in range(rng.choice([1, 1, 2])):
                # Never the size just set while it is pending: hpack itself then forgets the
                # update (``resized`` goes back to False) and the peer's table falls out of step.
                size = rng.choice([s for s in (0, 64, 256, 1024, 4096, 8192) if s != last])
                sizes.append(size)
                last = size
            yield "size", sizes
            continue
        last = None
        if r < 0.3 and seen:
            yield "encode", rng.choice(seen[-8:])  # a repeat of a recent list (same fields, same huffman)
        elif r < 0.5 and seen:
            item = rng.choice(seen[-4:])
            for _ in range(rng.randrange(2, 7)):  # a burst, as a client repeating a call
                yield "encode", item
        else:
            fields = [_field(rng) for _ in range(rng.randrange(0, 8))]
            item = (_builder(rng, fields), rng.random() < 0.7)
            seen.append(item)
            yield "encode", item


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_encoder_blocks_match_hpack(seed: int, misses: Calls) -> None:
    plain = hpack.Encoder()
    memo, _ = memo_coders()
    calls = 0
    for op, arg in workload(seed, 1500):
        if op == "size":
            for size in arg:
                plain.header_table_size = size
                memo.header_table_size = size
            continue
        build, huffman = arg
        want = plain.encode(build(), huffman=huffman)
        got = memo.encode(build(), huffman=huffman)
        calls += 1
        assert got == want, (seed, calls)
        assert table_state(memo) == table_state(plain)
        assert memo.table_size_changes == plain.table_size_changes
        assert memo.header_table.resized == plain.header_table.resized
        assert len(memo._memo) <= _MEMO_ENTRIES
    hits = calls - misses.encode
    assert hits > calls // 10, (hits, calls)  # the memo really answered a good share of the repeats


@pytest.mark.parametrize("raw", [True, False, "mixed"])
@pytest.mark.parametrize("seed", [4, 5])
def test_decoder_results_match_hpack(seed: int, raw: bool | str, misses: Calls) -> None:
    rng = random.Random(seed * 7)
    encoder = hpack.Encoder()
    plain = hpack.Decoder()
    _, memo = memo_coders()
    for d in (plain, memo):
        d.max_allowed_table_size = 8192  # as if SETTINGS_HEADER_TABLE_SIZE 8192 were acked
    blocks = 0
    repeated = 0
    seen: set[tuple[bytes, bool]] = set()
    for op, arg in workload(seed, 1500):
        if op == "size":
            for size in arg:
                encoder.header_table_size = size
            continue
        build, huffman = arg
        block = encoder.encode(build(), huffman=huffman)
        as_raw = rng.random() < 0.5 if raw == "mixed" else bool(raw)
        want = plain.decode(block, raw=as_raw)
        got = memo.decode(block, raw=as_raw)
        blocks += 1
        assert got == want, (seed, blocks)
        assert [type(h) for h in got] == [type(h) for h in want]  # never-indexed fields stay never-indexed
        assert table_state(memo) == table_state(plain)
        assert len(memo._memo) <= _MEMO_ENTRIES
        repeated += (block, as_raw) in seen
        seen.add((block, as_raw))
    hits = blocks - misses.decode
    assert repeated > blocks // 10
    assert hits > repeated // 4, (hits, repeated, blocks)  # repeated blocks were served from the memo


# -- deterministic behaviour -----------------------------------------------------------------


def test_memoize_hpack_replaces_the_coders_keeping_their_settings() -> None:
    conn = h2.connection.H2Connection()
    encoder, decoder = conn.encoder, conn.decoder
    encoder.header_table_size = 1234  # a pending size change survives the replacement
    decoder.max_allowed_table_size = 8192
    memoize_hpack(conn)
    assert conn.encoder is not encoder
    assert conn.decoder is not decoder
    encoder, decoder = conn.encoder, conn.decoder
    assert type(encoder) is _MemoEncoder
    assert type(decoder) is _MemoDecoder
    assert isinstance(encoder, hpack.Encoder)
    assert isinstance(decoder, hpack.Decoder)
    assert type(encoder.header_table) is _VersionedTable
    assert type(decoder.header_table) is _VersionedTable
    assert encoder.header_table.maxsize == 1234
    assert encoder.table_size_changes == [1234]
    assert decoder.header_table.maxsize == 4096
    assert decoder.max_allowed_table_size == 8192
    assert decoder.max_header_list_size == h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
    assert encoder._memo == {}
    assert decoder._memo == {}
    plain = hpack.Encoder()
    plain.header_table_size = 1234
    fields = [(":method", "POST"), ("x-a", "1")]
    assert encoder.encode(fields) == plain.encode(fields)  # the size update is emitted


def test_memoize_hpack_refuses_a_connection_that_coded_headers() -> None:
    conn = h2.connection.H2Connection()
    conn.encoder.encode([("x-a", "1")])  # inserted into the dynamic table
    with pytest.raises(ValueError, match="already coded"):
        memoize_hpack(conn)


def test_ctrd_connections_are_built_with_memoizing_coders() -> None:
    conn = CtrdConnection()
    assert type(conn) is CtrdConnection
    assert type(conn.encoder) is _MemoEncoder
    assert type(conn.decoder) is _MemoDecoder


def test_versioned_table_counts_adds_and_resizes() -> None:
    conn = h2.connection.H2Connection()
    memoize_hpack(conn)
    table = conn.encoder.header_table
    v0 = table.version
    table.add(b"x-a", b"1")
    assert table.version == v0 + 1
    table.add(b"x-big", b"v" * 5000)  # larger than the table: clears it, still a change
    assert table.version == v0 + 2
    assert len(table.dynamic_entries) == 0
    table.maxsize = 4096  # same size: counted anyway (cheap and safe)
    assert table.version == v0 + 3
    table.maxsize = 100
    assert table.version == v0 + 4
    assert table.maxsize == 100
    assert table.resized


def test_encoder_hits_only_while_the_table_is_unchanged(misses: Calls) -> None:
    plain = hpack.Encoder()
    memo, _ = memo_coders()
    fields = [(":method", "POST"), (":path", "/x"), ("content-type", "application/grpc"), ("x-c", "v")]

    def both(headers: Any, huffman: bool = True) -> bytes:
        want = plain.encode(list(headers), huffman=huffman)
        got = memo.encode(list(headers), huffman=huffman)
        assert got == want
        return got

    first = both(fields)  # inserts: not remembered
    assert misses.encode == 1
    assert memo._memo == {}
    second = both(fields)  # all indexed now: remembered
    assert second != first
    assert misses.encode == 2
    assert len(memo._memo) == 1
    both(fields)
    both(fields)
    assert misses.encode == 2  # two hits
    both(fields, huffman=False)  # another key
    assert misses.encode == 3
    both([("x-d", "new")])  # an insertion invalidates the block: indices moved
    assert misses.encode == 4
    both(fields)
    assert misses.encode == 5
    both(fields)
    assert misses.encode == 5
    # the key is the list's content, not its identity
    mutable = list(fields)
    both(mutable)
    mutable[1] = (":path", "/y")
    both(mutable)
    assert misses.encode == 6
    # a resize to the same size changes nothing in the output but is a (counted) change
    plain.header_table_size = memo.header_table_size = 4096
    both(fields)
    assert misses.encode == 7
    # a real resize is pending until the next block: no memo for that block
    plain.header_table_size = memo.header_table_size = 2048
    block = both(fields)
    assert block[0] & 0xE0 == 0x20  # starts with a dynamic table size update
    assert misses.encode == 8
    assert both(fields) == block[3:]  # no second size update (3F E1 0F): that block was not remembered
    assert misses.encode == 9
    both(fields)
    assert misses.encode == 9
    # a tuple of fields is remembered like a list
    for _ in range(2):
        assert memo.encode((GET,)) == plain.encode((GET,))
    before = misses.encode
    assert memo.encode((GET,)) == plain.encode((GET,))
    assert misses.encode == before
    # never-indexed fields, header tuples, 3-tuples and non-text values always go to hpack
    for headers in (
        [NeverIndexedHeaderTuple("authorization", "secret")],
        [HeaderTuple(":method", "GET")],
        [("x-e", "1", True)],
        [("x-n", 1)],
    ):
        for _ in range(3):
            before = misses.encode
            assert memo.encode(headers) == plain.encode(headers)
            assert misses.encode == before + 1
    gen_fields = [GET, (":path", "/")]
    assert memo.encode(f for f in gen_fields) == plain.encode(f for f in gen_fields)


def test_decoder_hits_repeated_blocks(misses: Calls) -> None:
    encoder = hpack.Encoder()
    plain = hpack.Decoder()
    _, memo = memo_coders()
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("x-c", "v")]
    inserting = encoder.encode(fields)
    indexed = encoder.encode(fields)
    assert encoder.encode(fields) == indexed
    assert memo.decode(inserting) == plain.decode(inserting)  # it inserts: not remembered
    assert misses.decode == 1
    assert memo._memo == {}
    for raw in (True, False):
        for _ in range(3):
            assert memo.decode(indexed, raw=raw) == plain.decode(indexed, raw=raw)
    assert misses.decode == 3  # one miss per raw, then hits
    assert len(memo._memo) == 2
    # an insertion (by some other block) invalidates every remembered block
    other = encoder.encode([("x-d", "1")])
    assert memo.decode(other) == plain.decode(other)
    assert misses.decode == 4
    again = encoder.encode(fields)  # indices moved by one
    assert again != indexed
    assert memo.decode(again) == plain.decode(again) == [(":status", "200"), *fields[1:]]
    assert misses.decode == 5
    assert memo.decode(again) == plain.decode(again)
    assert misses.decode == 5


def test_decoder_resize_invalidates(misses: Calls) -> None:
    """A shrink that evicts an entry a remembered block refers to: hpack's error, not the old headers.

    (hpack's own encoder never sends such a block again; a peer may.)
    """
    encoder = hpack.Encoder()
    plain = hpack.Decoder()
    _, memo = memo_coders()
    inserting = encoder.encode([("x-a", "1"), ("x-b", "2")])  # dynamic table: 62 x-b, 63 x-a
    assert memo.decode(inserting) == plain.decode(inserting)
    block = b"\xbf"  # indexed field 63: x-a
    for _ in range(2):
        assert memo.decode(block) == plain.decode(block) == [("x-a", "1")]
    assert misses.decode == 2  # remembered
    encoder.header_table_size = 40  # room for one 36-byte entry: x-a (the older) goes
    resize = encoder.encode([])
    assert resize == b"\x3f\x09"
    assert memo.decode(resize) == plain.decode(resize) == []
    with pytest.raises(hpack.InvalidTableIndex):
        plain.decode(block)
    with pytest.raises(hpack.InvalidTableIndex):
        memo.decode(block)
    assert memo.decode(b"\xbe") == plain.decode(b"\xbe") == [("x-b", "2")]


def test_decoded_list_is_the_callers_own(misses: Calls) -> None:
    _, memo = memo_coders()
    block = GET_BLOCK + b"\x84"  # static entries 2 and 4
    want = [HeaderTuple(":method", "GET"), HeaderTuple(":path", "/")]
    first = memo.decode(block)  # remembered
    assert first == want
    first.append(("x", "y"))
    first[0] = ("x", "z")
    second = memo.decode(block)  # a hit
    assert misses.decode == 1
    assert second == want
    second.clear()
    third = memo.decode(block)
    assert third == want
    assert third is not second
    third.reverse()
    assert memo.decode(block) == want
    assert misses.decode == 1


def test_memo_stays_bounded(misses: Calls) -> None:
    plain_e, plain_d = hpack.Encoder(), hpack.Decoder()
    memo_e, memo_d = memo_coders()
    for k in range(1, 300):
        fields = [GET] * k
        assert memo_e.encode(fields) == plain_e.encode(fields)
        block = GET_BLOCK * k
        assert memo_d.decode(block, raw=True) == plain_d.decode(block, raw=True)
        assert 1 <= len(memo_e._memo) <= _MEMO_ENTRIES
        assert 1 <= len(memo_d._memo) <= _MEMO_ENTRIES
    assert misses.encode == misses.decode == 299
    # still correct (and still remembering) after the clears
    for k in (299, 298, 1):
        fields = [GET] * k
        assert memo_e.encode(fields) == plain_e.encode(fields)
        assert memo_e.encode(fields) == plain_e.encode(fields)
        assert memo_d.decode(GET_BLOCK * k, raw=True) == plain_d.decode(GET_BLOCK * k, raw=True)
        assert memo_d.decode(GET_BLOCK * k, raw=True) == plain_d.decode(GET_BLOCK * k, raw=True)
    # the memo was cleared at k = 65, 129, 193, 257: 257..299 are remembered, 1 is not
    assert misses.encode == misses.decode == 299 + 1


@pytest.mark.parametrize("size", [_MEMO_MAX_BLOCK, _MEMO_MAX_BLOCK + 1, 1500])
def test_large_blocks_are_not_remembered(size: int, misses: Calls) -> None:
    memo_e, memo_d = memo_coders()
    plain_e, plain_d = hpack.Encoder(), hpack.Decoder()
    fields = [GET] * size
    block = GET_BLOCK * size
    for _ in range(3):
        assert memo_e.encode(fields) == plain_e.encode(fields) == block
        assert memo_d.decode(block) == plain_d.decode(block)
    remembered = size <= _MEMO_MAX_BLOCK
    assert misses.encode == misses.decode == (1 if remembered else 3)
    assert len(memo_e._memo) == len(memo_d._memo) == int(remembered)


def test_large_never_indexed_block_is_not_remembered(misses: Calls) -> None:
    """A block over the limit that leaves the table alone (a never-indexed literal) is decoded each time."""
    block = hpack.Encoder().encode([NeverIndexedHeaderTuple("x-secret", "s" * 2000)], huffman=False)
    assert len(block) > _MEMO_MAX_BLOCK
    _, memo = memo_coders()
    for _ in range(3):
        (h,) = memo.decode(block)
        assert type(h) is NeverIndexedHeaderTuple
        assert h == ("x-secret", "s" * 2000)
    assert misses.decode == 3
    assert memo._memo == {}
    small = hpack.Encoder().encode([NeverIndexedHeaderTuple("x-secret", "s")])
    for _ in range(3):
        (h,) = memo.decode(small)
        assert type(h) is NeverIndexedHeaderTuple
    assert misses.decode == 4


def test_h2_connections_agree_over_repeated_requests(misses: Calls) -> None:
    """Two memoizing h2 connections configured as grpclib's (headers reach hpack as lists)."""

    client = h2.connection.H2Connection(grpclib_h2_config(client_side=True))
    server = h2.connection.H2Connection(grpclib_h2_config(client_side=False))
    memoize_hpack(client)
    memoize_hpack(server)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    request = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/containerd.services.content.v1.Content/Read"),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("containerd-namespace", "default"),
    ]
    for i in range(6):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, request, end_stream=True)
        events = server.receive_data(client.data_to_send())
        (received,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        assert received.stream_id == sid
        assert received.headers == [(n, v) for n, v in request], i
    assert misses.encode < 6
    assert misses.decode < 6
    assert client.encoder._memo
    assert server.decoder._memo


# -- values that compare equal but encode differently; limits lowered later ------------------


def test_encoder_equal_but_differently_encoded_values() -> None:
    plain = hpack.Encoder()
    memo, _ = memo_coders()
    for value in (1, 1, 1, True, 1.0):
        fields = [("x-n", value)]
        assert memo.encode(fields) == plain.encode(fields), value


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param(("max_header_list_size", 10), id="max_header_list_size"),
        pytest.param(("max_allowed_table_size", 0), id="max_allowed_table_size"),
    ],
)
def test_decoder_limits_lowered_after_a_block_was_remembered(limit: tuple[str, int]) -> None:
    encoder = hpack.Encoder()
    plain = hpack.Decoder()
    _, memo = memo_coders()
    fields = [("x-c", "v"), GET, GET]
    for _ in range(3):
        block = encoder.encode(fields)
        assert memo.decode(block) == plain.decode(block)
    name, value = limit
    setattr(plain, name, value)
    setattr(memo, name, value)
    with pytest.raises(hpack.HPACKError):
        plain.decode(block)
    with pytest.raises(hpack.HPACKError):
        memo.decode(block)
