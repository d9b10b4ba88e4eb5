"""Hypothesis strategies of the fuzzing probes: every RPC of the generated API, request
messages built from its betterproto2 classes with hostile field values, and raw protobuf
bodies (random bytes, mutated valid encodings, schema-shaped nonsense).

The RPCs are read from the generated ``*Base`` classes' ``__mapping__()`` (what a servicer
serves), so a service or method added to the protos is fuzzed without editing this file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib
from collections.abc import Callable
from typing import Any

import betterproto2
from betterproto2 import FieldMetadata
from hypothesis import strategies as st

__all__ = [
    "BLOB",
    "BLOB_DIGEST",
    "LEASE",
    "NAMESPACE",
    "REF",
    "Rpc",
    "message",
    "raw_body",
    "rpcs",
    "uvarint",
]

SERVED = (
    "containerd.services.content.v1",
    "containerd.services.namespaces.v1",
    "containerd.services.leases.v1",
    "containerd.services.events.v1",
    "containerd.services.images.v1",
    "containerd.services.introspection.v1",
    "containerd.services.version.v1",
    "grpc.health.v1",
)
"""The generated modules whose services ctrd serves."""

UNSERVED = ("containerd.services.snapshots.v1",)
"""Generated, but not served: every call must be UNIMPLEMENTED."""

NAMESPACE = "fuzz"
"""The namespace the fuzzing daemon is seeded in (and most calls name)."""
BLOB = b"the fuzzing daemon's one blob\n" * 100
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
REF = "fuzz-ref"
"""An ingest left open in :data:`NAMESPACE`."""
LEASE = "fuzz-lease"


@dataclasses.dataclass(frozen=True)
class Rpc:
    """One method: its path, ``unary_unary``/``unary_stream``/``stream_stream``, message classes."""

    path: str
    kind: str
    request: type[betterproto2.Message]
    reply: type[betterproto2.Message]
    served: bool

    @property
    def name(self) -> str:
        """``Service/Method`` (the test id)."""
        service, method = self.path.rsplit("/", 1)
        return f"{service.rsplit('.', 1)[-1]}/{method}"


def rpcs() -> list[Rpc]:
    """Every RPC of the served and unserved generated services, in a stable order."""
    out: list[Rpc] = []
    for module, served in [(m, True) for m in SERVED] + [(m, False) for m in UNSERVED]:
        mod = importlib.import_module("ctrd.api." + module)
        for name, base in sorted(vars(mod).items()):
            if not (isinstance(base, type) and name.endswith("Base") and hasattr(base, "__mapping__")):
                continue
            instance = base.__new__(base)  # only to read the mapping; no handler runs
            for path, handler in instance.__mapping__().items():
                kind = handler.cardinality.name.lower()
                out.append(Rpc(path, kind, handler.request_type, handler.reply_type, served))
    return out


# -- values ---------------------------------------------------------------------------------

_CHARS = st.characters(exclude_categories=("Cs",))  # any code point a str may hold in UTF-8, NUL too
HUGE = (300, 1025, 4097, 70_000, 1 << 20)
"""Lengths of the long strings and byte strings (the daemon's limits: 1 KiB refs, 4 KiB labels...)."""

NASTY = (
    "",
    "\x00",
    "a\x00b",
    " ",
    ".",
    "..",
    "/",
    "../../../etc/passwd",
    "\\",
    '"',
    "'",
    ",",
    "==",
    "~=",
    "%s%n%x",
    "${HOME}",
    "\u202e\u0301",
    "\U0001f600",
    "\uffff",
    "\ufeff",
    "é",
    "\n\r\t",
    "default",
    NAMESPACE,
)


def _long(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda s, n: (s * n)[:n], chars, st.sampled_from(HUGE))


def text(pool: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Strings: from *pool* (values the daemon knows), nasty ones, random unicode, huge ones."""
    parts = [
        st.sampled_from(NASTY),
        st.text(_CHARS, max_size=24),
        _long(st.text(_CHARS, min_size=1, max_size=3)),
    ]
    if pool:
        parts.insert(0, st.sampled_from(pool))
    return st.one_of(*parts)


INT64 = st.one_of(
    st.integers(-8, 5000),
    st.sampled_from([-(1 << 63), (1 << 63) - 1, -1, 1 << 31, -(1 << 31), 1 << 32, 1 << 53, len(BLOB)]),
    st.integers(-(1 << 63), (1 << 63) - 1),
)
INT32 = st.one_of(st.integers(-8, 100), st.integers(-(1 << 31), (1 << 31) - 1))
UINT64 = st.one_of(st.integers(0, 5000), st.integers(0, (1 << 64) - 1))
UINT32 = st.integers(0, (1 << 32) - 1)
BYTES = st.one_of(
    st.binary(max_size=64),
    st.just(BLOB),
    st.builds(lambda n: bytes(n), st.sampled_from(HUGE)),
)
TIMESTAMPS = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(dt.UTC)
)

DIGESTS = (
    BLOB_DIGEST,
    "sha256:" + "0" * 64,
    "sha256:" + "A" * 64,
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha512:" + "0" * 128,
    "sha384:" + "0" * 96,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "sha256:../../../../etc/passwd",
    "sha256:",
    ":" + "0" * 64,
    "SHA256:" + "0" * 64,
)
NAMES = (NAMESPACE, "fuzz-b", "default", "Bad", "a" * 76, "a" * 77, "-a", "a..b", "a/b", "x" * 300)
LABEL_KEYS = (
    "containerd.io/gc.root",
    "containerd.io/gc.expire",
    "containerd.io/gc.flat",
    "containerd.io/gc.ref.content.x",
    "containerd.io/gc.ref.content.l.0",
    "containerd.io/namespace.shareable",
    "containerd.io/uncompressed",
    "a",
    "labels",
)
LABEL_VALUES = (
    "true",
    "false",
    "2000-01-01T00:00:00Z",
    "9999-99-99T99:99:99Z",
    "-1",
    BLOB_DIGEST,
    "sha256:" + "0" * 64,
    "a" * 4096,
    "a" * 4097,
)

# containerd's filter language in pieces: well-formed selectors, broken ones, and regexps
_FIELDS = (
    "digest",
    "size",
    "id",
    "name",
    "ref",
    "topic",
    "namespace",
    "type",
    "labels",
    "labels.a",
    'labels."containerd.io/gc.root"',
    "event.digest",
    "event.name",
    "a.b.c.d.e.f",
    '"quoted"',
    "labels.é",
)
_OPS = ("==", "!=", "~=", "", "=", "!", "~", "===", "=~")
_VALUES = (
    "a",
    '"a"',
    '""',
    "/^sha256:/",
    "/[/",
    "|x|",
    "/(a+)+$/",
    "/(a|aa)*b/",
    "/(x+x+)+y/",
    "/a{1000}{1000}/",
    "/\\p{Greek}/",
    "/(?i)A/",
    "/\\Qa.b\\E/",
    '"\\u00e9"',
    '"\\xff"',
    '"unterminated',
    "a b",
    "`",
    "\\",
    "a,",
    ",",
    " ",
    BLOB_DIGEST,
)


def _selector() -> st.SearchStrategy[str]:
    return st.builds(
        lambda f, o, v: f + o + v, st.sampled_from(_FIELDS), st.sampled_from(_OPS), st.sampled_from(_VALUES)
    )


FILTER = st.one_of(
    st.builds(",".join, st.lists(_selector(), max_size=3)),
    st.builds(
        "".join,
        st.lists(
            st.one_of(
                st.sampled_from(_FIELDS + _OPS + _VALUES + (",", ".", '"', "/")), st.text(_CHARS, max_size=4)
            ),
            max_size=8,
        ),
    ),
    text(),
)
"""One filter string: selectors, fragments of the grammar in any order, or any string."""

TOPICS = ("/content/create", "/x", "no-slash", "//", "/a/" + "b" * 500, "/" + "é" * 10, "/a b", "/a\x00b")
TYPE_URLS = (
    "containerd.events.ContentCreate",
    "containerd.events.ContentDelete",
    "containerd.events.NamespaceUpdate",
    "type.googleapis.com/containerd.events.ContentCreate",
    "types.containerd.io/x",
    "google.protobuf.Empty",
    "",
)

# strings by field name (the same name means the same thing in every message here)
_STRINGS: dict[str, st.SearchStrategy[str]] = {
    "digest": text(DIGESTS),
    "expected": text(DIGESTS),
    "ref": text((REF, "fuzz-ref-2", "r/with/slash", "r" * 1024, "r" * 1025, "r\x00")),
    "id": text((LEASE, "fuzz-lease-2", BLOB_DIGEST, REF)),
    "name": text(NAMES),
    "namespace": text(NAMES),
    "topic": text(TOPICS),
    "type": text(("content", "ingests", "snapshots/overlayfs", "snapshots/", "snapshots", "leases")),
    "type_url": text(TYPE_URLS),
    "filter": FILTER,
    "filters": FILTER,
    "paths": text(
        ("labels", "labels.a", "labels.", "labels.containerd.io/gc.root", "digest", "size", "name")
    ),
    "service": text(("containerd.services.content.v1.Content", "grpc.health.v1.Health")),
    "key": text(("overlayfs", "a")),
    "parent": text(("overlayfs", "a")),
    "snapshotter": text(("overlayfs", "native")),
}
_BYTES: dict[str, st.SearchStrategy[bytes]] = {
    "value": st.one_of(
        BYTES, st.sampled_from([b"\x0a\x47" + BLOB_DIGEST.encode() + b"\x10\x05", b"\x0a\x01a", b"\xff"])
    ),
}


def _labels() -> st.SearchStrategy[dict[str, str]]:
    keys = text(LABEL_KEYS)
    values = text(LABEL_VALUES)
    return st.one_of(
        st.dictionaries(keys, values, max_size=4),
        # many labels (short ones: 5000 long values would be gigabytes)
        st.builds(
            lambda n, v: {f"k{i}": v for i in range(n)},
            st.sampled_from([65, 300, 5000]),
            st.sampled_from(LABEL_VALUES[:-2]),
        ),
    )


def _scalar(name: str, proto_type: str, cls: type | None) -> st.SearchStrategy[Any]:
    if proto_type == betterproto2.TYPE_STRING:
        return _STRINGS.get(name, text())
    if proto_type == betterproto2.TYPE_BYTES:
        return _BYTES.get(name, BYTES)
    if proto_type == betterproto2.TYPE_BOOL:
        return st.booleans()
    if proto_type in (betterproto2.TYPE_INT64, betterproto2.TYPE_SINT64, betterproto2.TYPE_SFIXED64):
        return INT64
    if proto_type in (betterproto2.TYPE_INT32, betterproto2.TYPE_SINT32, betterproto2.TYPE_SFIXED32):
        return INT32
    if proto_type in (betterproto2.TYPE_UINT64, betterproto2.TYPE_FIXED64):
        return UINT64
    if proto_type in (betterproto2.TYPE_UINT32, betterproto2.TYPE_FIXED32):
        return UINT32
    if proto_type == betterproto2.TYPE_ENUM:
        assert cls is not None
        return st.one_of(st.sampled_from(list(cls)), INT32)
    if proto_type in (betterproto2.TYPE_DOUBLE, betterproto2.TYPE_FLOAT):
        return st.floats(allow_nan=True)
    raise AssertionError(f"no strategy for {proto_type} field {name}")


def _field(
    owner: type[betterproto2.Message], name: str, meta: FieldMetadata, depth: int
) -> st.SearchStrategy[Any]:
    cls = owner._betterproto.cls_by_field.get(name)
    if meta.proto_type == betterproto2.TYPE_MAP:
        if name == "labels":
            return _labels()
        assert meta.map_meta is not None
        return st.dictionaries(
            _scalar("", meta.map_meta[0].proto_type, None),
            _scalar("", meta.map_meta[1].proto_type, None),
            max_size=4,
        )
    if meta.proto_type == betterproto2.TYPE_MESSAGE:
        if meta.unwrap is not None:
            inner = meta.unwrap()
            if inner.__name__ == "Timestamp":
                one: st.SearchStrategy[Any] = TIMESTAMPS
            else:
                raise AssertionError(f"no strategy for wrapped {inner.__name__} field {name}")
        elif depth > 3:
            one = st.none()
        else:
            assert cls is not None
            one = message(cls, depth + 1)
    else:
        one = _scalar(name, meta.proto_type, cls)
    if meta.repeated:
        return st.lists(one, max_size=4)
    return one


_MESSAGES: dict[tuple[type[betterproto2.Message], int], st.SearchStrategy[Any]] = {}


def message(cls: type[betterproto2.Message], depth: int = 0) -> st.SearchStrategy[betterproto2.Message]:
    """Instances of *cls*, each field present or not, with hostile values."""
    key = (cls, depth)
    if key not in _MESSAGES:
        fields = {f.name: _field(cls, f.name, FieldMetadata.get(f), depth) for f in dataclasses.fields(cls)}
        _MESSAGES[key] = st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))
    return _MESSAGES[key]


# -- raw bodies -----------------------------------------------------------------------------


def uvarint(n: int) -> bytes:
    """*n* (taken modulo 2**64) as a protobuf varint."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _overlong(n: int, width: int) -> bytes:
    """*n* as a varint padded with continuation bytes to *width* bytes (more than 10 is invalid)."""
    v = bytearray(uvarint(n))
    while len(v) < width:
        v[-1] |= 0x80
        v.append(0)
    return bytes(v)


def _key(number: int, wire: int) -> bytes:
    return uvarint(number << 3 | wire)


def _split(body: bytes) -> list[bytes] | None:
    """The top-level fields of a well-formed *body*, each as its bytes (key included)."""
    out: list[bytes] = []
    pos = 0
    try:
        while pos < len(body):
            start = pos
            key = 0
            shift = 0
            while True:
                b = body[pos]
                pos += 1
                key |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            wire = key & 7
            if wire == 0:
                while body[pos] & 0x80:
                    pos += 1
                pos += 1
            elif wire == 2:
                ln = 0
                shift = 0
                while True:
                    b = body[pos]
                    pos += 1
                    ln |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                pos += ln
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
            if pos > len(body):
                return None
            out.append(body[start:pos])
    except IndexError:
        return None
    return out


def _field_numbers(cls: type[betterproto2.Message]) -> list[tuple[int, str, type | None]]:
    return [
        (
            FieldMetadata.get(f).number,
            FieldMetadata.get(f).proto_type,
            cls._betterproto.cls_by_field.get(f.name),
        )
        for f in dataclasses.fields(cls)
    ]


@st.composite
def _shaped(draw: Callable[..., Any], cls: type[betterproto2.Message], depth: int = 0) -> bytes:
    """Fields of *cls*'s numbers with any wire type and payload: right types with values out of
    range (timestamps, enums), wrong wire types, invalid UTF-8, nested nonsense."""
    out = bytearray()
    numbers = _field_numbers(cls) or [(1, betterproto2.TYPE_STRING, None)]
    for _ in range(draw(st.integers(0, 4))):
        number, proto_type, sub = draw(st.sampled_from([*numbers, (99, "", None)]))
        choice = draw(st.integers(0, 5))
        if choice == 0:  # a varint, of any size, whatever the field's type
            out += _key(number, 0) + uvarint(draw(UINT64))
        elif choice == 1:  # bytes that are not UTF-8 (or are) in a length-delimited field
            data = draw(
                st.one_of(
                    st.binary(max_size=16), st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\x80"])
                )
            )
            out += _key(number, 2) + uvarint(len(data)) + data
        elif choice == 2 and proto_type == betterproto2.TYPE_MESSAGE and depth < 4:
            if sub is not None and isinstance(sub, type) and issubclass(sub, betterproto2.Message):
                inner = draw(_shaped(sub, depth + 1))
            else:  # a timestamp (unwrapped): seconds and nanos of any 64-bit value
                inner = _key(1, 0) + uvarint(draw(INT64)) + _key(2, 0) + uvarint(draw(INT64))
            out += _key(number, 2) + uvarint(len(inner)) + inner
        elif choice == 3:  # fixed-width and group wire types
            wire = draw(st.sampled_from([1, 3, 4, 5, 6, 7]))
            out += _key(number, wire) + {1: bytes(8), 5: bytes(4)}.get(wire, b"")
        elif choice == 4:  # an overlong key or value varint
            out += _overlong(number << 3, draw(st.integers(2, 12))) + _overlong(
                draw(UINT64), draw(st.integers(1, 12))
            )
        else:  # a length beyond the body
            out += _key(number, 2) + uvarint(draw(st.sampled_from([5, 1 << 20, 1 << 62, (1 << 64) - 1])))
    return bytes(out)


@st.composite
def _mutated(draw: Callable[..., Any], cls: type[betterproto2.Message]) -> bytes:
    """A valid encoding of *cls*, then broken: cut, bit-flipped, a key's wire type changed, a key
    made overlong, wrapped in deep nesting, or repeated."""
    body = bytes(draw(message(cls)))
    how = draw(st.sampled_from(["cut", "flip", "wire", "overlong", "nest", "repeat", "append"]))
    if how == "cut" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "flip" and body:
        out = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(out) - 1))
            out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    fields = _split(body) or []
    if how == "wire" and fields:
        i = draw(st.integers(0, len(fields) - 1))
        old = fields[i]
        wire = draw(st.integers(0, 7))
        fields[i] = bytes([(old[0] & ~7) | wire]) + old[1:]
        return b"".join(fields)
    if how == "overlong" and fields:
        i = draw(st.integers(0, len(fields) - 1))
        old = fields[i]
        fields[i] = bytes([old[0] | 0x80]) + b"\x80" * draw(st.integers(1, 10)) + b"\x00" + old[1:]
        return b"".join(fields)
    if how == "nest":
        number = draw(st.sampled_from([n for n, _, _ in _field_numbers(cls)] + [1, 99]))
        inner = body
        for _ in range(draw(st.sampled_from([10, 100, 1000, 5000]))):
            inner = _key(number, 2) + uvarint(len(inner)) + inner
        return inner
    if how == "repeat":  # (at most ~4 MiB: a thousand 1 MiB bodies would be a GiB in the client)
        return body * min(draw(st.sampled_from([2, 3, 1000])), max(2, (4 << 20) // max(len(body), 1)))
    return body + draw(_shaped(cls))


def raw_body(cls: type[betterproto2.Message]) -> st.SearchStrategy[bytes]:
    """A protobuf body that *cls*'s decoder must refuse or take: random bytes, a mutated valid
    encoding, or fields of its numbers with the wrong shapes."""
    return st.one_of(st.binary(max_size=128), _mutated(cls), _shaped(cls))
