"""Log setup in containerd's shape: logfmt text (``time=... level=... msg=...``) or JSON."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Final

__all__ = ["setup"]

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


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level.lower() or "info", logging.INFO))
    for noisy in ("grpclib", "hpack", "h2", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
