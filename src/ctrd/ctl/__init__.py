"""``ctrdctl``: the command line client for ctrd and containerd.

``ctr``'s verbs where they exist (``version``, ``plugins ls``, ``namespaces``,
``images``, ``content`` (``fetch`` included), ``leases``, ``events``) over
:mod:`ctrd.client`, with ``--format json`` on listings, progress bars and per-blob
transfer tables, one-line errors and shell completion (``ctrdctl completion
bash|zsh``). See ``docs/cli.md``.

Exit status: 0 success, 1 an error (printed as one ``ctrdctl: ...`` line on
stderr, never a traceback), 2 a usage error, 130 interrupted, 141 stdout
closed early (``| head``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import IO

from ctrd import errdefs

__all__ = ["main"]


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ctrd.client import Client
    from ctrd.ctl._commands import COMMANDS, parse_duration

    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise errdefs.InvalidArgument(str(exc)) from None
    handler = COMMANDS[args.command]

    async def go() -> int:
        async with Client(args.address, namespace=args.namespace, timeout=timeout or None) as client:
            return await handler(client, args, out, err)

    return asyncio.run(go())


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[bytes] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Entry point of the ``ctrdctl`` console script; returns the exit status.

    *stdin*, *out* and *err* default to the process's streams; blob bytes go to
    ``out.buffer`` (pass an :class:`io.TextIOWrapper` to capture them).
    """
    from ctrd.ctl._parser import build_parser

    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    args.stdin_bytes = stdin if stdin is not None else sys.stdin.buffer
    args.stdout_bytes = getattr(out, "buffer", None) or sys.stdout.buffer
    if args.command == "completion":
        from ctrd.ctl._completion import bash_script, zsh_script

        out.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
        return 0
    try:
        return _run(args, out, err)
    except errdefs.Error as exc:
        err.write(f"ctrdctl: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): no message; point stdout at /dev/null so
        # the interpreter's final flush does not fail again; 141 as a SIGPIPE death would be
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        err.write(f"ctrdctl: {exc.strerror or exc}\n")
        return 1
