"""Tar archives as streams: a bounded reader that never touches the filesystem, and the
headers of the writer.

:class:`TarReader` reads entries from an async byte source one after the other: headers
(ustar, GNU and v7; pax ``x``/``g`` extended headers and GNU long names, each bounded),
then the entry's data as chunks the caller consumes or skips. Nothing is extracted: names
are only strings, checked by :func:`safe_name`, and links are only names of other entries.
A gzip'd archive is decompressed on the fly. :func:`header` and :func:`END` are what the
exporter writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os
import posixpath
import tarfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Final, TypeAlias

from ctrd import errdefs
from ctrd.limits import echo

__all__ = [
    "BLOCK",
    "CHUNK",
    "END",
    "MAX_EXTENDED_HEADER",
    "ArchiveSource",
    "ByteSource",
    "Entry",
    "Kind",
    "TarReader",
    "header",
    "open_source",
    "resolve_link",
    "safe_name",
]

BLOCK: Final = 512
CHUNK: Final = 1 << 20
END: Final = b"\0" * (2 * BLOCK)
"""The end of an archive: two zero blocks."""

MAX_EXTENDED_HEADER: Final = 1 << 20
"""The largest pax extended header or GNU long name read, in bytes."""

ArchiveSource: TypeAlias = str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]
"""A tar archive: a file path, a binary file object (read from its position) or an async
iterable of byte chunks; gzip'd or not."""

_GZIP_MAGIC: Final = b"\x1f\x8b"


class ByteSource:
    """Exact reads from a source; skips seek when the source is a seekable file."""

    def __init__(self, source: ArchiveSource) -> None:
        self._file: IO[bytes] | None = None
        self._owned = False
        self._it: AsyncIterator[bytes] | None = None
        self._seekable = False
        if isinstance(source, str | os.PathLike):
            self._file = open(source, "rb")  # noqa: SIM115 -- closed by close()
            self._owned = True
        elif hasattr(source, "read"):
            self._file = source  # type: ignore[assignment]
        elif hasattr(source, "__aiter__"):
            self._it = aiter(source)
        else:
            raise TypeError(f"unsupported archive source: {type(source).__name__}")
        if self._file is not None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                self._seekable = self._file.seekable()
        self._buf = bytearray()
        self._eof = False
        self._inflate: zlib._Decompress | None = None
        self._pending = b""
        self._sniffed = False
        self.consumed = 0
        """Bytes of the (decompressed) archive read or skipped so far."""

    async def _raw(self) -> bytes:
        if self._file is not None:
            return await asyncio.to_thread(self._file.read, CHUNK)
        assert self._it is not None
        try:
            return bytes(await anext(self._it))
        except StopAsyncIteration:
            return b""

    async def _fill(self) -> bool:
        """Append more (decompressed) bytes to the buffer, at most :data:`CHUNK` at a time
        (a gzip bomb inflates only as far as it is read); false at the end."""
        while True:
            inflate = self._inflate
            if inflate is not None and self._pending:
                if inflate.eof:
                    if self._pending[:2] != _GZIP_MAGIC:
                        self._pending = b""  # trailing bytes after the last member: ignored, as gzip does
                        continue
                    inflate = self._inflate = zlib.decompressobj(wbits=31)  # a concatenated member
                try:
                    out = inflate.decompress(self._pending, CHUNK)
                except zlib.error as exc:
                    raise errdefs.InvalidArgument(f"archive: corrupt gzip data ({exc})") from None
                self._pending = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
                if out:
                    self._buf += out
                    return True
                continue
            if self._eof:
                return False
            raw = await self._raw()
            if not self._sniffed:
                self._sniffed = True
                if raw[:2] == _GZIP_MAGIC:
                    self._inflate = zlib.decompressobj(wbits=31)
                    self._seekable = False
            if not raw:
                self._eof = True
                if self._inflate is not None and not self._inflate.eof:
                    raise errdefs.InvalidArgument("archive: the gzip stream is truncated")
                return False
            if self._inflate is None:
                self._buf += raw
                return True
            self._pending = raw

    async def read(self, n: int) -> bytes:
        """Up to *n* bytes (fewer only at the end)."""
        while len(self._buf) < n and await self._fill():
            pass
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.consumed += len(out)
        return out

    async def read_some(self, n: int) -> bytes:
        """Between 1 and *n* bytes (``b""`` only at the end), without waiting for more."""
        if not self._buf:
            await self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.consumed += len(out)
        return out

    async def skip(self, n: int) -> int:
        """Skip *n* bytes (seeking a plain file); returns how many there were."""
        take = min(n, len(self._buf))
        del self._buf[:take]
        left = n - take
        if left and self._seekable and self._file is not None:
            f = self._file
            here = await asyncio.to_thread(f.tell)
            end = await asyncio.to_thread(f.seek, 0, os.SEEK_END)
            moved = min(left, end - here)
            await asyncio.to_thread(f.seek, here + moved)
            left -= moved
            if left:
                self._eof = True
        while left:
            part = await self.read_some(min(left, CHUNK))
            if not part:
                break
            left -= len(part)
            self.consumed -= len(part)
        self.consumed += n - left
        return n - left

    async def close(self) -> None:
        if self._owned and self._file is not None:
            self._file.close()


def open_source(source: ArchiveSource) -> ByteSource:
    """A :class:`ByteSource` over *source*.

    :raises TypeError: not a path, a file object or an async iterable.
    """
    return ByteSource(source)


class Kind(enum.Enum):
    """What an entry is, as far as an image archive cares."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    OTHER = "other"
    """Devices, FIFOs, sparse files, unknown types: skipped."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One entry: its name as the archive gives it, its kind, size (of its data) and link."""

    name: str
    kind: Kind
    size: int
    linkname: str = ""
    typeflag: str = "0"


_KINDS: Final = {
    b"0": Kind.FILE,
    b"\0": Kind.FILE,
    b"7": Kind.FILE,
    b"1": Kind.HARDLINK,
    b"2": Kind.SYMLINK,
    b"5": Kind.DIR,
}


def _number(field: bytes, what: str) -> int:
    """An octal number, or GNU's base-256 form (first byte 0x80 or 0xff)."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise errdefs.InvalidArgument(f"archive: negative {what} in a tar header")
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise errdefs.InvalidArgument(
            f"archive: malformed {what} {echo(repr(text))} in a tar header"
        ) from None


def _string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum")
    except errdefs.InvalidArgument:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(b for b in block[:148] + block[156:] if b > 127) * 2
    return stored in (unsigned, signed)


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<len> <key>=<value>\\n"`` records."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise errdefs.InvalidArgument("archive: malformed pax header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise errdefs.InvalidArgument("archive: malformed pax record length") from None
        if length <= space - pos or pos + length > len(data):
            raise errdefs.InvalidArgument("archive: malformed pax record length")
        record = data[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise errdefs.InvalidArgument("archive: malformed pax record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


def _entry(
    block: bytes, size: int, pax: dict[str, str], long_name: str | None, long_link: str | None
) -> Entry:
    """The entry a header block describes, with its extended headers applied."""
    typeflag = block[156:157]
    name = _string(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix field
        prefix = _string(block[345:500])
        if prefix:
            name = f"{prefix}/{name}"
    if long_name is not None:
        name = long_name
    linkname = long_link if long_link is not None else _string(block[157:257])
    name = pax.get("path", name)
    linkname = pax.get("linkpath", linkname)
    if "size" in pax:
        try:
            size = int(pax["size"])
        except ValueError:
            raise errdefs.InvalidArgument("archive: malformed pax size") from None
    if size < 0:
        raise errdefs.InvalidArgument("archive: negative entry size")
    kind = _KINDS.get(typeflag, Kind.OTHER)
    if typeflag == b"\0" and name.endswith("/"):
        kind = Kind.DIR  # v7 directories
    if kind in (Kind.SYMLINK, Kind.HARDLINK, Kind.DIR) or typeflag in (b"3", b"4", b"6"):
        size = 0  # no data follows links, directories, devices and FIFOs (tarfile's reading)
    return Entry(name, kind, size, linkname, typeflag.decode("latin-1") or "0")


class TarReader:
    """Entries of a tar stream, in order::

    reader = TarReader(open_source(path))
    while (entry := await reader.next()) is not None:
        async for chunk in reader.data():   # or: nothing, the data is skipped
            ...
    """

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self._left = 0  # data bytes of the current entry not yet consumed
        self._pad = 0  # padding after them
        self.entries = 0

    async def _block(self) -> bytes:
        block = await self.source.read(BLOCK)
        if block and len(block) < BLOCK:
            raise errdefs.InvalidArgument("archive: truncated tar header")
        return block

    async def _extended(self, size: int, what: str) -> bytes:
        if size > MAX_EXTENDED_HEADER:
            raise errdefs.ResourceExhausted(
                f"archive: a {what} of {size} bytes (the limit is {MAX_EXTENDED_HEADER} bytes)"
            )
        data = await self.source.read(size)
        if len(data) < size:
            raise errdefs.InvalidArgument(f"archive: truncated {what}")
        await self.source.skip(-size % BLOCK)
        return data

    async def next(self) -> Entry | None:
        """The next entry (its unread data skipped first); ``None`` at the end."""
        await self._finish_data()
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            block = await self._block()
            if not block or block == b"\0" * BLOCK:
                return None
            if not _checksum_ok(block):
                raise errdefs.InvalidArgument("archive: not a tar archive (bad header checksum)")
            typeflag = block[156:157]
            size = _number(block[124:136], "size")
            if typeflag == b"x":
                pax.update(_pax_records(await self._extended(size, "pax header")))
                continue
            if typeflag == b"g":
                await self._extended(size, "pax global header")  # applies to nothing we read
                continue
            if typeflag in (b"L", b"K"):
                value = (await self._extended(size, "GNU long name")).split(b"\0", 1)[0]
                text = value.decode("utf-8", "replace")
                if typeflag == b"L":
                    long_name = text
                else:
                    long_link = text
                continue
            break
        entry = _entry(block, size, pax, long_name, long_link)
        self._left = entry.size
        self._pad = -entry.size % BLOCK
        self.entries += 1
        return entry

    async def data(self) -> AsyncIterator[bytes]:
        """The current entry's data, in chunks of at most :data:`CHUNK` bytes.

        :raises errdefs.InvalidArgument: the archive ends inside the data.
        """
        while self._left:
            part = await self.source.read_some(min(self._left, CHUNK))
            if not part:
                raise errdefs.InvalidArgument("archive: truncated (an entry's data is cut short)")
            self._left -= len(part)
            yield part

    async def read_all(self, limit: int, what: str) -> bytes:
        """The current entry's data in memory, at most *limit* bytes.

        :raises errdefs.ResourceExhausted: the entry is larger.
        """
        if self._left > limit:
            raise errdefs.ResourceExhausted(
                f"archive: {what} is {self._left} bytes (the limit is {limit} bytes)"
            )
        parts = [chunk async for chunk in self.data()]
        return b"".join(parts)

    async def _finish_data(self) -> None:
        skip = self._left + self._pad
        self._left = self._pad = 0
        if skip and await self.source.skip(skip) < skip:
            raise errdefs.InvalidArgument("archive: truncated (an entry's data is cut short)")


def safe_name(name: str) -> str:
    """*name* as a clean relative path (``./`` and empty components dropped, no trailing ``/``).

    :raises errdefs.InvalidArgument: an absolute name, a ``..`` component, a NUL, or nothing
        left (the archive is refused: nothing is ever extracted, but such a name only comes
        from an archive made to escape a directory).
    """
    if "\0" in name:
        raise errdefs.InvalidArgument(f"archive: entry name {echo(repr(name))} contains a NUL")
    if name.startswith("/"):
        raise errdefs.InvalidArgument(f"archive: absolute entry name {echo(repr(name))}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errdefs.InvalidArgument(f"archive: entry name {echo(repr(name))} has a '..' component")
    return "/".join(parts)


def resolve_link(entry: Entry, name: str) -> str:
    """The archive path a link entry (already named *name*, cleaned) points at.

    A symbolic link is relative to its directory, a hard link to the archive's root.

    :raises errdefs.InvalidArgument: an absolute target, or one leaving the archive.
    """
    target = entry.linkname
    if not target or target.startswith("/") or "\0" in target:
        raise errdefs.InvalidArgument(
            f"archive: link {echo(repr(name))} points at {echo(repr(target))}, outside the archive"
        )
    joined = posixpath.join(posixpath.dirname(name), target) if entry.kind is Kind.SYMLINK else target
    clean = posixpath.normpath(joined)
    if clean == ".." or clean.startswith("../") or clean.startswith("/") or clean == ".":
        raise errdefs.InvalidArgument(
            f"archive: link {echo(repr(name))} points at {echo(repr(target))}, outside the archive"
        )
    return clean


def header(name: str, size: int, *, directory: bool = False, mode: int | None = None) -> bytes:
    """The header block(s) of a regular file or a directory entry, owner root, time 0: the
    block Go's ``archive/tar`` writes for such an entry (``ctr images export``'s)."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = mode if mode is not None else (0o755 if directory else 0o444)
    info.mtime = 0
    info.uname = info.gname = ""
    buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    if len(buf) != BLOCK:
        return buf  # a pax header first (a long name, a huge size): as Go, a pax record
    # Go fills the device numbers of every ustar header; Python leaves them empty
    block = bytearray(buf)
    block[329:345] = b"0000000\0" * 2
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)
