"""Rendering for ``ctrdctl``: tables, JSON, human-readable sizes and ages."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Final

__all__ = [
    "binary_size",
    "format_labels",
    "human_duration",
    "human_size",
    "iso",
    "print_json",
    "print_table",
    "to_jsonable",
]

_DECIMAL_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_size(n: float) -> str:
    """Decimal size with 4 significant digits, as ``ctr`` (go-units ``HumanSize``):
    ``7B``, ``3.146MB``, ``1MB`` for 1,000,000 bytes."""
    size = float(n)
    i = 0
    while size >= 1000 and i < len(_DECIMAL_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{_DECIMAL_UNITS[i]}"


def binary_size(n: float) -> str:
    """Binary size with one decimal, as ``ctr images ls|check`` print sizes (containerd's
    ``progress.Bytes``): ``118.0 B``, ``6.3 MiB``."""
    size = float(n)
    i = 0
    while size >= 1024 and i < len(_BINARY_UNITS) - 1:
        size /= 1024
        i += 1
    return f"{size:.1f} {_BINARY_UNITS[i]}"


def human_duration(d: _dt.timedelta) -> str:
    """An age as ``ctr`` prints it (go-units ``HumanDuration``): ``Less than a second``,
    ``28 seconds``, ``About a minute``, ``3 hours``, ``2 weeks``..."""
    seconds = int(d.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(d.total_seconds() / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d.total_seconds() // 3600) // 24 // 365} years"


def format_labels(labels: Mapping[str, str]) -> str:
    """``k=v`` pairs sorted by key and joined by ``,``; ``-`` when there are none."""
    if not labels:
        return "-"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def iso(t: _dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (fractional seconds kept)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def print_table(out: IO[str], headers: Sequence[str], rows: Iterable[Sequence[str]], gap: int = 3) -> None:
    """Columns padded with spaces (at least *gap* between columns), no trailing spaces."""
    all_rows = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    for r in all_rows:
        cells = [c.ljust(widths[i] + gap) for i, c in enumerate(r[:-1])] + [r[-1]]
        out.write("".join(cells).rstrip() + "\n")


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, sequences and datetimes as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, _dt.datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_json(out: IO[str], value: Any, *, indent: int | None = 2) -> None:
    """*value* (see :func:`to_jsonable`) as JSON, one document."""
    out.write(json.dumps(to_jsonable(value), indent=indent, sort_keys=False) + "\n")
