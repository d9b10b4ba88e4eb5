"""Units of the archive code: the tar stream reader (formats, links, bounds, seeking), the
headers the exporter writes (Go's), and the naming rules (``ctr``'s)."""

from __future__ import annotations

import datetime as _dt
import gzip
import io
import tarfile
from collections.abc import AsyncIterator

import pytest

from ctrd import errdefs
from ctrd.client._archive._names import familiar, normalize_docker, oci_ref_name, translator
from ctrd.client._archive._tar import END, Kind, TarReader, header, open_source, resolve_link, safe_name

from ._archives import Member, make_tar

LONG = "d/" + "x" * 150 + "/file"


async def entries(data: bytes | io.BytesIO) -> list[tuple[str, Kind, bytes, str]]:
    src = open_source(data if isinstance(data, io.BytesIO) else io.BytesIO(data))
    reader = TarReader(src)
    out = []
    while (e := await reader.next()) is not None:
        body = b"".join([c async for c in reader.data()]) if e.name.endswith("keep") else b""
        out.append((e.name, e.kind, body, e.linkname))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
async def test_reader_formats(fmt: int) -> None:
    members = [
        Member("a/", type=tarfile.DIRTYPE),
        Member("a/skip", b"s" * 1000),
        Member("a/keep", b"k" * 70000),
        Member("a/l", type=tarfile.SYMTYPE, link="keep"),
        Member("a/h", type=tarfile.LNKTYPE, link="a/keep"),
        Member("f", type=tarfile.FIFOTYPE),
        Member(LONG + "keep" if fmt != tarfile.USTAR_FORMAT else "p" * 90 + "/" + "q" * 60 + "keep", b"long"),
    ]
    got = await entries(make_tar(members, fmt=fmt))
    assert [(n, k) for n, k, _, _ in got][:6] == [
        ("a/", Kind.DIR),
        ("a/skip", Kind.FILE),
        ("a/keep", Kind.FILE),
        ("a/l", Kind.SYMLINK),
        ("a/h", Kind.HARDLINK),
        ("f", Kind.OTHER),
    ]
    assert got[2][2] == b"k" * 70000
    assert got[3][3] == "keep"
    assert got[6][2] == b"long"
    assert got[6][0] == members[6].name


async def test_reader_gzip_seek_and_streams() -> None:
    data = make_tar([Member("big", b"b" * (3 << 20)), Member("zkeep", b"z")])
    assert (await entries(data))[1][2] == b"z"  # skipped by seeking
    assert (await entries(gzip.compress(data)))[1][2] == b"z"  # skipped by reading
    assert (await entries(gzip.compress(data[:5000]) + gzip.compress(data[5000:])))[1][2] == b"z"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    reader = TarReader(open_source(chunks()))
    names = []
    while (e := await reader.next()) is not None:
        names.append(e.name)
    assert names == ["big", "zkeep"]


async def test_reader_bounds_and_damage() -> None:
    with pytest.raises(errdefs.ResourceExhausted, match="GNU long name"):
        await entries(make_tar([Member("n" * (1 << 20 + 1), b"")], fmt=tarfile.GNU_FORMAT))
    data = bytearray(make_tar([Member("a", b"x")]))
    data[0] ^= 0xFF
    with pytest.raises(errdefs.InvalidArgument, match="checksum"):
        await entries(bytes(data))
    with pytest.raises(errdefs.InvalidArgument, match="truncated"):
        await entries(make_tar([Member("a", b"x" * 4000)])[:1000])
    with pytest.raises(errdefs.InvalidArgument, match="truncated tar header"):
        await entries(b"\1" * 100)
    assert await entries(b"") == []


def test_names_and_links() -> None:
    assert safe_name("./blobs//sha256/./x/") == "blobs/sha256/x"
    for bad in ("/etc/passwd", "a/../../b", "..", "a\0b"):
        with pytest.raises(errdefs.InvalidArgument):
            safe_name(bad)
    from ctrd.client._archive._tar import Entry

    assert (
        resolve_link(Entry("b/layer.tar", Kind.SYMLINK, 0, "../a/layer.tar"), "b/layer.tar") == "a/layer.tar"
    )
    assert resolve_link(Entry("h", Kind.HARDLINK, 0, "a/layer.tar"), "h") == "a/layer.tar"
    for target in ("../../x", "/x", "", "a/../.."):
        with pytest.raises(errdefs.InvalidArgument, match="outside the archive"):
            resolve_link(Entry("b/l", Kind.SYMLINK, 0, target), "b/l")


def test_header_is_gos() -> None:
    """The ustar block Go's archive/tar writes (device numbers filled, time 0, root)."""
    block = header("blobs/sha256/" + "a" * 64, 5)
    assert len(block) == 512
    assert block[329:345] == b"0000000\0" * 2
    assert block[100:108] == b"0000444\0"
    info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    assert (info.name, info.size, info.mtime, info.type) == (
        "blobs/sha256/" + "a" * 64,
        5,
        0,
        tarfile.REGTYPE,
    )
    assert tarfile.TarInfo.frombuf(header("blobs/", 0, directory=True), "utf-8", "strict").isdir()
    long = header("blobs/sha512/" + "b" * 128, 1)
    assert len(long) > 512  # a pax record first, as Go writes names over 100 bytes
    assert len(END) == 1024


def test_ctr_naming_rules() -> None:
    assert oci_ref_name("example.com/app:1") == "1"
    assert oci_ref_name("localhost:5000/a/b:v2") == "v2"
    assert oci_ref_name("example.com/app@sha256:" + "1" * 64) == "@sha256:" + "1" * 64
    assert oci_ref_name("example.com/app") == ""
    assert oci_ref_name("app:latest") == "app:latest"  # not host[:port]/…: kept whole
    assert normalize_docker("busybox") == "docker.io/library/busybox:latest"
    assert normalize_docker("user/app:1") == "docker.io/user/app:1"
    assert normalize_docker("example.com/a:1@sha256:" + "2" * 64) == "example.com/a@sha256:" + "2" * 64
    assert familiar("docker.io/library/busybox:1") == "busybox:1"
    assert familiar("docker.io/user/app") == "user/app:latest"
    assert familiar("127.0.0.1:5000/test/app:v1") == "127.0.0.1:5000/test/app:v1"
    with pytest.raises(errdefs.InvalidArgument):
        normalize_docker("Not A Ref")
    today = _dt.date.today().isoformat()
    plain = translator(None)
    assert plain("latest") == f"import-{today}:latest"
    assert plain("example.com/x:1") == "example.com/x:1"
    based = translator("example.com/app")
    assert based("v1") == "example.com/app:v1"
    assert based("example.com/app:2") == "example.com/app:2"
    assert based("example.com/application:2") == ""
    assert based("example.com/other:2") == ""
