"""The ``ctrd`` command: run the daemon, print or dump its configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

from ctrd import __version__

__all__ = ["main"]

log = logging.getLogger("ctrd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctrd",
        description="containerd's content core as a Python daemon, speaking containerd's gRPC API.",
    )
    p.add_argument("--version", "-v", action="version", version=f"ctrd {__version__}")
    p.add_argument("--config", "-c", help="path to the TOML config (default: embedded defaults)")
    p.add_argument("--log-level", "-l", help="trace|debug|info|warn|error")
    p.add_argument("--address", "-a", help="gRPC unix socket path (overrides [grpc] address)")
    p.add_argument("--root", help="persistent state directory (overrides root)")
    p.add_argument("--state", help="runtime state directory (overrides state)")
    sub = p.add_subparsers(dest="command")
    cfg = sub.add_parser("config", help="print configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("default", help="print a complete commented default config")
    cfg_sub.add_parser("dump", help="print the effective config after merging imports and flags")
    return p


def _load(args: argparse.Namespace) -> object:
    from ctrd.server.config import load

    cfg = load(args.config)
    return cfg.with_overrides(root=args.root, state=args.state, address=args.address)


_M_TRIM_THRESHOLD: Final = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD: Final = -3
MALLOC_MMAP_THRESHOLD: Final = 16 << 20
MALLOC_TRIM_THRESHOLD: Final = 128 << 20


def tune_malloc() -> bool:
    """Keep large buffers on the glibc heap; returns whether the thresholds were set.

    1 MiB gRPC message buffers are allocated and freed per message; by default
    glibc serves them with mmap/munmap, so the kernel zero-fills fresh pages
    every time (~120k minor faults per 256 MiB ingest). ``mallopt`` raises the
    mmap threshold to 16 MiB and the trim threshold to 128 MiB for everything
    allocated from now on (docs/performance.md). ``CTRD_MALLOC_TUNING=0``, or
    glibc's own ``MALLOC_MMAP_THRESHOLD_`` in the environment, leaves malloc alone;
    so does a libc without ``mallopt``.
    """
    if os.environ.get("CTRD_MALLOC_TUNING", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, unless ``CTRD_UVLOOP=0``.

    Every gRPC call costs the loop several callbacks and socket writes, which
    uvloop does with fewer instructions and system calls; it matters for
    ``ctr content get`` (one Read call per 32 KiB; docs/performance.md §5).
    ``None`` means asyncio's default loop.
    """
    if os.environ.get("CTRD_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ctrd`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command is None:
        tune_malloc()
    from ctrd import _logging
    from ctrd.server.config import Config, ConfigError

    _logging.buffer_early()  # config loading logs (ignored keys) before level and format are known
    try:
        cfg = _load(args)
    except ConfigError as exc:
        _logging.setup(args.log_level or "info")
        print(f"ctrd: {exc}", file=sys.stderr)
        return 1
    assert isinstance(cfg, Config)
    if args.command == "config":
        _logging.drop_early()
        from ctrd.server import render

        try:
            if args.config_command == "default":
                sys.stdout.write(render.default_config())
            else:
                sys.stdout.write(render.dump_config(cfg))
        except ConfigError as exc:
            print(f"ctrd: {exc}", file=sys.stderr)
            return 1
        return 0
    _logging.setup(args.log_level or cfg.debug.level or "info", cfg.debug.format or "text")
    from ctrd.server.daemon import Daemon, StartupError

    daemon = Daemon(cfg)
    log.info("starting ctrd version=%s", __version__)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(daemon.run())
    except (StartupError, ConfigError) as exc:
        log.error("%s", exc)
        print(f"ctrd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if daemon.forced_by is not None:
        return 128 + daemon.forced_by  # stopped without waiting for every call: as killed by it
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
