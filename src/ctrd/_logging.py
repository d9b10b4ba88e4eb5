"""Log setup in containerd's shape: logfmt text (``time=... level=... msg=...``) or JSON."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Final

__all__ = ["buffer_early", "drop_early", "setup"]

_LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_NAMES: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def _ts(record: logging.LogRecord) -> str:
    return _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="microseconds")


def _quote(v: str) -> str:
    if v and all(c.isalnum() or c in "-._/:@+=" for c in v):
        return v
    return json.dumps(v)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        line = f"time={_quote(_ts(record))} level={_NAMES.get(record.levelno, 'info')} msg={_quote(msg)}"
        if record.name and record.name != "ctrd":
            line += f" module={record.name}"
        if record.exc_info:
            line += " error=" + _quote(self.formatException(record.exc_info))
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _ts(record), "level": _NAMES.get(record.levelno, "info"), "msg": record.getMessage()}
        if record.name and record.name != "ctrd":
            out["module"] = record.name
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _Buffer(logging.Handler):
    """Holds records logged before :func:`setup` (while the config, which sets level and format, loads)."""

    def __init__(self, previous_level: int) -> None:
        super().__init__(logging.DEBUG)
        self.previous_level = previous_level
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_early: _Buffer | None = None


def buffer_early() -> None:
    """Keep log records until :func:`setup` (which replays them) or :func:`drop_early`."""
    global _early
    root = logging.getLogger()
    drop_early()
    _early = _Buffer(root.level)
    root.addHandler(_early)
    root.setLevel(logging.DEBUG)


def drop_early() -> list[logging.LogRecord]:
    """Stop buffering; return what was buffered."""
    global _early
    buf, _early = _early, None
    if buf is None:
        return []
    root = logging.getLogger()
    root.removeHandler(buf)
    root.setLevel(buf.previous_level)
    return buf.records


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger on stderr, then emit what :func:`buffer_early` held."""
    early = drop_early()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level.lower() or "info", logging.INFO))
    for noisy in ("grpclib", "hpack", "h2", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for record in early:
        if logging.getLogger(record.name).isEnabledFor(record.levelno):
            handler.handle(record)
