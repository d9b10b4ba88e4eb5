"""hpack coders that remember repeated header blocks (ctrd's h2 connections use them).

A gRPC client repeating a call sends the same header block each time, and a
server answers with the same response headers and trailers: coding a block costs
hpack's pure-Python Huffman coder far more than looking it up. A block is
remembered with the version of the dynamic table it was coded against; any change
of the table (an insertion, a resize) makes every remembered block stale.
"""

from __future__ import annotations

from typing import Any, Final

from hpack import Decoder, Encoder
from hpack.table import HeaderTable

__all__ = ["memoize_hpack"]

_MEMO_ENTRIES: Final = 64
_MEMO_MAX_BLOCK: Final = 1024
_TEXT: Final = (str, bytes)


class _VersionedTable(HeaderTable):
    """hpack's dynamic table, counting its changes (every ``add`` and resize)."""

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class _MemoDecoder(Decoder):
    """hpack's decoder, remembering blocks whose decoding left the dynamic table as it was.

    Such a block (indexed fields, literals without indexing) decodes to the same
    headers as long as the table has not changed since; a gRPC client repeating
    a call sends the same block each time. Any change to the table (an insertion
    or a resize) invalidates every remembered block.
    """

    _memo: dict[tuple[bytes, bool, int | None, int], tuple[int, tuple[Any, ...]]]

    def __init__(self, max_header_list_size: int = 1 << 16) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _VersionedTable()
        self._memo = {}

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table: _VersionedTable = self.header_table  # type: ignore[assignment]
        # The limits the block was checked against are part of the key: a block
        # remembered under larger limits is decoded (and checked) again.
        key = (data, raw, self.max_header_list_size, self.max_allowed_table_size)
        version = table.version
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        headers = super().decode(data, raw)
        if table.version == version and len(data) <= _MEMO_MAX_BLOCK:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (version, tuple(headers))
        return headers


class _MemoEncoder(Encoder):
    """hpack's encoder, remembering header lists whose encoding left the dynamic table as it was.

    Only lists (or tuples) of plain ``(name, value)`` tuples with ``str``/``bytes``
    values are remembered (a never-indexed :class:`hpack.NeverIndexedHeaderTuple`
    compares equal to a plain tuple, ``1 == True == 1.0`` but they encode
    differently), and only when no table-size update was pending.
    """

    _memo: dict[tuple[Any, bool], tuple[int, bytes]]

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _VersionedTable()
        self._memo = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table: _VersionedTable = self.header_table  # type: ignore[assignment]
        if type(headers) not in (list, tuple) or table.resized or self.table_size_changes:
            return super().encode(headers, huffman)
        if not all(type(h) is tuple and len(h) == 2 and type(h[1]) in _TEXT for h in headers):
            return super().encode(headers, huffman)
        key = (tuple(headers), huffman)
        version = table.version
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        block = super().encode(headers, huffman)
        if table.version == version and len(block) <= _MEMO_MAX_BLOCK:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (version, block)
        return block


def memoize_hpack(h2_connection: Any) -> None:
    """Give an h2 connection memoizing hpack coders with the settings of its current ones.

    Must run before the connection has coded any header block.
    """
    encoder, decoder = h2_connection.encoder, h2_connection.decoder
    if encoder.header_table.dynamic_entries or decoder.header_table.dynamic_entries:
        raise ValueError("the connection has already coded header blocks")
    memo_encoder = _MemoEncoder()
    memo_encoder.header_table.maxsize = encoder.header_table.maxsize
    memo_encoder.header_table.resized = encoder.header_table.resized
    memo_encoder.table_size_changes = list(encoder.table_size_changes)
    memo_decoder = _MemoDecoder(max_header_list_size=decoder.max_header_list_size)
    memo_decoder.max_allowed_table_size = decoder.max_allowed_table_size
    memo_decoder.header_table.maxsize = decoder.header_table.maxsize
    memo_decoder.header_table.resized = decoder.header_table.resized
    h2_connection.encoder, h2_connection.decoder = memo_encoder, memo_decoder
