"""Consistency of a ctrd root between ``meta.db`` and the blob and ingest files on disk.

What a crash test checks after restarting a killed daemon and letting one
collection run (used by ``tests/gc/test_crash.py`` and
``tests/hardening/test_kill9.py``): :func:`snapshot` reads the database (read
only, beside a running daemon) and the content directories; :func:`problems`
lists every broken invariant:

* every blob row's file exists, with the row's size and digest (else *missing*
  or *corrupt*);
* every blob file is named by a row or by a shared ingest's expected digest
  (else *unreferenced*: garbage a collection should have removed);
* every ingest directory belongs to an ingest row (else *orphan ingest dir*);
* every ingest row has its data: a shared one (``expected`` set) the blob file,
  any other its directory's ``data`` file.

A row without its file, or a file or ingest directory without its row, is
*half-visible*: the state an operation interrupted half-way would leave.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

from ctrd.content import sha256_of

__all__ = [
    "CONTENT",
    "META",
    "Problems",
    "Snapshot",
    "ingest_data",
    "ingest_dir_name",
    "problems",
    "snapshot",
]

CONTENT = "io.containerd.content.v1.content"
META = "io.containerd.metadata.v1.sqlite/meta.db"


@dataclasses.dataclass
class Snapshot:
    """A root as found on disk."""

    root: Path
    #: (namespace, digest) -> size
    rows: dict[tuple[str, str], int]
    #: (namespace, digest) -> labels
    labels: dict[tuple[str, str], dict[str, str]]
    #: digest -> bytes of blobs/sha256/<hex>
    files: dict[str, bytes]
    #: (namespace, ref, backend_ref, expected)
    ingests: list[tuple[str, str, str, str]]
    #: ingest directory name -> whether it has a data file
    ingest_dirs: dict[str, bool]
    #: (namespace, lease id)
    leases: set[tuple[str, str]]
    #: (namespace, lease id, type, id)
    lease_resources: set[tuple[str, str, str, str]]


def ingest_dir_name(backend_ref: str) -> str:
    """The name of the local store's directory for the ingest *backend_ref*."""
    return hashlib.sha256(backend_ref.encode()).hexdigest()


def ingest_data(root: Path, backend_ref: str) -> bytes | None:
    """The bytes the ingest *backend_ref* holds on disk (None: no data file)."""
    path = root / CONTENT / "ingest" / ingest_dir_name(backend_ref) / "data"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def snapshot(root: Path) -> Snapshot:
    """Read *root*'s database (read-only) and its content directories."""
    db = sqlite3.connect(f"file:{root / META}?mode=ro", uri=True)
    try:
        rows: dict[tuple[str, str], int] = {}
        labels: dict[tuple[str, str], dict[str, str]] = {}
        for n, d, s, lab in db.execute("SELECT namespace, digest, size, labels FROM blobs"):
            rows[str(n), str(d)] = int(s)
            labels[str(n), str(d)] = dict(json.loads(lab or "{}"))
        ingests = [
            (str(a), str(b), str(c), str(e))
            for a, b, c, e in db.execute("SELECT namespace, ref, backend_ref, expected FROM ingests")
        ]
        leases = {(str(n), str(i)) for n, i in db.execute("SELECT namespace, id FROM leases")}
        resources = {
            (str(n), str(le), str(t), str(i))
            for n, le, t, i in db.execute("SELECT namespace, lease, type, id FROM lease_resources")
        }
    finally:
        db.close()
    blobs = root / CONTENT / "blobs" / "sha256"
    files = {f"sha256:{p.name}": p.read_bytes() for p in blobs.iterdir()} if blobs.exists() else {}
    idir = root / CONTENT / "ingest"
    dirs = {p.name: (p / "data").exists() for p in idir.iterdir()} if idir.exists() else {}
    return Snapshot(root, rows, labels, files, ingests, dirs, leases, resources)


@dataclasses.dataclass
class Problems:
    """The broken invariants of one :class:`Snapshot` (each entry says what and where)."""

    #: blob rows whose file is missing
    missing: list[str] = dataclasses.field(default_factory=list)
    #: blob rows whose file has another size or digest
    corrupt: list[str] = dataclasses.field(default_factory=list)
    #: blob files no row or shared ingest names
    unreferenced: list[str] = dataclasses.field(default_factory=list)
    #: ingest directories without a row
    orphan_dirs: list[str] = dataclasses.field(default_factory=list)
    #: ingest rows without their data (file or directory)
    no_data: list[str] = dataclasses.field(default_factory=list)
    #: blob rows and files checked
    rows_checked: int = 0
    files_checked: int = 0

    @property
    def half_visible(self) -> int:
        """Objects visible on one side only (database or disk)."""
        return len(self.missing) + len(self.unreferenced) + len(self.orphan_dirs) + len(self.no_data)

    def __bool__(self) -> bool:
        return bool(self.half_visible or self.corrupt)

    def __str__(self) -> str:
        parts = [
            f"{name}: {getattr(self, name)}"
            for name in ("missing", "corrupt", "unreferenced", "orphan_dirs", "no_data")
            if getattr(self, name)
        ]
        return "; ".join(parts) or "none"


def problems(s: Snapshot) -> Problems:
    """Every invariant of the module docstring that *s* breaks."""
    p = Problems()
    for (n, dg), size in sorted(s.rows.items()):
        data = s.files.get(dg)
        if data is None:
            p.missing.append(f"record ({n}, {dg}) points at a missing file")
        elif len(data) != size or sha256_of(data) != dg:
            p.corrupt.append(f"file {dg} of ({n}) has {len(data)} bytes, digest {sha256_of(data)}")
    p.rows_checked = len(s.rows)
    referenced = {dg for _, dg in s.rows} | {e for *_, e in s.ingests if e}
    p.unreferenced = [f"file {dg} has no record" for dg in sorted(s.files) if dg not in referenced]
    p.files_checked = len(s.files)
    names = {ingest_dir_name(bref): (n, r, e) for n, r, bref, e in s.ingests}
    p.orphan_dirs = [f"ingest directory {d} has no record" for d in sorted(s.ingest_dirs) if d not in names]
    for name, (n, r, e) in sorted(names.items()):
        if e:
            if e not in s.files:
                p.no_data.append(f"shared ingest ({n}, {r}) expects missing {e}")
        elif not s.ingest_dirs.get(name):
            p.no_data.append(f"ingest record ({n}, {r}) has no data on disk")
    return p
