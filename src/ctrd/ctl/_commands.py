"""The ``ctrdctl`` verbs: each takes the client and the parsed arguments, prints, returns an exit code.

Outputs follow ``ctr`` where it has the verb (same columns, sizes and ages in
go-units format, same "print the name" confirmations, ``rm`` ignoring blobs
and namespaces that are already gone); ``--format json`` prints the typed
results instead. Handlers read blob data from ``args.stdin_bytes`` and write
it to ``args.stdout_bytes`` (both set by :func:`ctrd.ctl.main`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
from collections.abc import Callable, Coroutine, Sequence
from typing import IO, Any

from ctrd import __version__, errdefs, golang
from ctrd.client import Client, Envelope, Info, Lease, Namespace, Plugin, Status
from ctrd.content import digest as digest_mod
from ctrd.ctl._imagecmds import IMAGE_COMMANDS
from ctrd.ctl._output import (
    format_labels,
    human_duration,
    human_size,
    iso,
    print_json,
    print_table,
    to_jsonable,
)
from ctrd.ctl._progress import ProgressBar, wanted

__all__ = ["COMMANDS", "Handler", "parse_duration", "parse_labels"]

Handler = Callable[[Client, argparse.Namespace, "IO[str]", "IO[str]"], Coroutine[Any, Any, int]]


def parse_labels(items: Sequence[str], *, bare: str = "true") -> dict[str, str]:
    """``k=v`` arguments as a dict; ``k`` alone means ``k=<bare>``; ``k=`` keeps the empty value."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise errdefs.InvalidArgument(f"invalid label {item!r}: empty key")
        labels[key] = value if sep else bare
    return labels


def parse_duration(text: str) -> float:
    """Seconds for a Go duration (``10s``, ``1m30s``, ``500ms``, ``24h``) or a plain number.

    :raises ValueError: a malformed or signed duration (Go's message, :func:`ctrd.golang.parse_duration`).
    """
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    if s[:1] in ("-", "+"):
        raise ValueError(f"invalid duration {text!r}: a timeout or an expiry cannot be signed")
    return golang.seconds(s)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _json(args: argparse.Namespace) -> bool:
    return getattr(args, "format", "table") == "json"


# -- version / plugins -----------------------------------------------------------------------------


async def cmd_version(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl version``: client and server versions, server UUID."""
    version = await client.version()
    server = await client.server_info()
    if _json(args):
        print_json(
            out,
            {
                "client": {"version": __version__, "python": platform.python_version()},
                "server": {"version": version.version, "revision": version.revision, "uuid": server.uuid},
            },
        )
        return 0
    out.write(
        "Client:\n"
        f"  Version:  {__version__}\n"
        f"  Python version: {platform.python_version()}\n"
        "\n"
        "Server:\n"
        f"  Version:  {version.version}\n"
        f"  Revision: {version.revision}\n"
        f"  UUID: {server.uuid}\n"
    )
    return 0


def _plugin_json(p: Plugin) -> dict[str, Any]:
    d: dict[str, Any] = to_jsonable(p)
    d["platforms"] = [str(x) for x in p.platforms]
    d["status"] = p.status
    return d


async def cmd_plugins_ls(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl plugins ls [-q] [-d] [filter...]``."""
    plugins = await client.plugins(args.filters)
    if _json(args):
        print_json(out, [_plugin_json(p) for p in plugins])
    elif args.quiet:
        for p in plugins:
            out.write(p.id + "\n")
    elif args.detailed:
        _plugins_detailed(out, plugins)
    else:
        rows = [
            [p.type, p.id, ",".join(sorted({str(x) for x in p.platforms})) or "-", p.status] for p in plugins
        ]
        print_table(out, ["TYPE", "ID", "PLATFORMS", "STATUS"], rows, gap=4)
    return 0


def _plugins_detailed(out: IO[str], plugins: Sequence[Plugin]) -> None:
    pad = " " * 15
    for p in plugins:
        out.write(f"Type:          {p.type}\nID:            {p.id}\n")
        if p.requires:
            out.write("Requires:\n" + "".join(f"{pad}{r}\n" for r in p.requires))
        if p.platforms:
            out.write("Platforms:     " + ",".join(str(x) for x in p.platforms) + "\n")
        if p.exports:
            width = max(len(k) for k in p.exports)
            out.write("Exports:\n")
            for k, v in sorted(p.exports.items()):
                out.write(f"{pad}{k.ljust(width)}    {v}\n")
        if p.capabilities:
            out.write("Capabilities:  " + ",".join(p.capabilities) + "\n")
        if p.error is not None:
            out.write(f"Error:\n{pad}Code:        {p.error.code}\n{pad}Message:     {p.error.message}\n")
        out.write("\n")


# -- namespaces -----------------------------------------------------------------------------------


async def cmd_ns_create(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl namespaces create NAME [k=v...]``."""
    await client.namespaces.create(args.name, parse_labels(args.labels))
    return 0


async def cmd_ns_ls(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl namespaces ls [-q]``."""
    nss: list[Namespace] = await client.namespaces.list()
    if _json(args):
        print_json(out, nss)
    elif args.quiet:
        for ns in nss:
            out.write(ns.name + "\n")
    else:
        rows = [[ns.name, format_labels(ns.labels) if ns.labels else ""] for ns in nss]
        print_table(out, ["NAME", "LABELS"], rows)
    return 0


async def cmd_ns_label(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl namespaces label NAME k=v... [k=]``: set (or, with an empty value, remove) labels."""
    labels = parse_labels(args.labels)
    ns = await client.namespaces.update(args.name, dict(labels))
    if _json(args):
        print_json(out, ns)
    return 0


async def cmd_ns_rm(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl namespaces rm NAME...``: prints each name; an unknown one is not an error (as ctr)."""
    status = 0
    for name in args.names:
        try:
            await client.namespaces.delete(name)
        except errdefs.NotFound:
            pass
        except errdefs.Error as exc:
            err.write(f"ctrdctl: unable to delete {name}: {exc}\n")
            status = 1
            continue
        out.write(name + "\n")
    return status


# -- content -------------------------------------------------------------------------------------


def _check_digest(d: str) -> None:
    digest_mod.validate(d)


async def cmd_content_ingest(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content ingest REF [-f FILE] [--expected-size N] [--expected-digest D] [--label k=v]``.

    Reads stdin unless ``-f`` is given; resumes an interrupted ingest of the same
    ref; prints the blob's digest.
    """
    if args.expected_digest:
        _check_digest(args.expected_digest)
    labels = parse_labels(args.label)
    src: Any
    if args.file and args.file != "-":
        src = args.file
        total: int | None = os.path.getsize(args.file)  # noqa: ASYNC240 -- the CLI runs one command
    else:
        stdin: IO[bytes] = args.stdin_bytes
        if stdin.isatty():
            raise errdefs.InvalidArgument(
                "refusing to read blob data from a terminal: use -f FILE or redirect stdin"
            )
        src = stdin
        total = args.expected_size
        try:
            if stdin.seekable():
                total = os.fstat(stdin.fileno()).st_size - stdin.tell()
        except OSError:
            pass
    bar = ProgressBar(err, args.ref, total) if wanted(err, total, disabled=args.no_progress) else None
    view = client.with_lease(args.lease) if args.lease else client
    try:
        info = await view.content.ingest(
            args.ref,
            src,
            expected=args.expected_digest or None,
            labels=labels or None,
            progress=bar.update if bar else None,
            size=args.expected_size,
        )
    finally:
        if bar:
            bar.finish()
    if _json(args):
        print_json(out, info)
    else:
        out.write(info.digest + "\n")
    return 0


async def cmd_content_ls(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content ls [-q] [filter...]``."""
    infos: list[Info] = [i async for i in client.content.list(*args.filters)]
    if _json(args):
        print_json(out, infos)
    elif args.quiet:
        for i in infos:
            out.write(i.digest + "\n")
    else:
        now = _now()
        rows = [
            [i.digest, human_size(i.size), human_duration(now - i.created_at), format_labels(i.labels)]
            for i in infos
        ]
        print_table(out, ["DIGEST", "SIZE", "AGE", "LABELS"], rows)
    return 0


async def cmd_content_get(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content get DIGEST [-o FILE]``: the blob's bytes, streamed."""
    _check_digest(args.digest)
    info = await client.content.info(args.digest)
    bar = (
        ProgressBar(err, args.digest[:19], info.size)
        if wanted(err, info.size, disabled=args.no_progress)
        else None
    )
    to_file = bool(args.output and args.output != "-")
    # the CLI runs one command: its blocking file I/O delays nothing else
    sink: IO[bytes] = open(args.output, "wb") if to_file else args.stdout_bytes  # noqa: SIM115, ASYNC230
    done = 0
    try:
        async for chunk in client.content.read(args.digest):
            sink.write(chunk)
            done += len(chunk)
            if bar:
                bar.update(done, info.size)
        sink.flush()
    finally:
        if bar:
            bar.finish()
        if to_file:
            sink.close()
    if done != info.size:
        raise errdefs.DataLoss(f"content {args.digest}: read {done} of {info.size} bytes")
    return 0


async def cmd_content_rm(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content rm DIGEST...``: prints each removed digest; absent ones are skipped (as ctr)."""
    status = 0
    for d in args.digests:
        try:
            _check_digest(d)
            await client.content.delete(d)
        except errdefs.NotFound:
            continue
        except errdefs.Error as exc:
            err.write(f"ctrdctl: unable to delete {d}: {exc}\n")
            status = 1
            continue
        out.write(d + "\n")
    return status


async def cmd_content_label(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content label DIGEST [k=v...] [k=]``: change labels, print the result."""
    _check_digest(args.digest)
    if args.labels:
        info = await client.content.update(args.digest, dict(parse_labels(args.labels)))
    else:
        info = await client.content.info(args.digest)
    if _json(args):
        print_json(out, info.labels)
    else:
        out.write(",".join(f"{k}={v}" for k, v in sorted(info.labels.items())) + "\n")
    return 0


async def cmd_content_active(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content active [-q] [filter...]``: ingests in progress."""
    statuses: list[Status] = await client.content.list_statuses(*args.filters)
    statuses.sort(key=lambda s: s.ref)
    if _json(args):
        print_json(out, statuses)
    elif args.quiet:
        for s in statuses:
            out.write(s.ref + "\n")
    else:
        now = _now()
        rows = [
            [
                s.ref,
                human_size(s.offset),
                human_size(s.total) if s.total else "-",
                human_duration(now - s.started_at),
            ]
            for s in statuses
        ]
        print_table(out, ["REF", "SIZE", "TOTAL", "AGE"], rows)
    return 0


async def cmd_content_abort(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content abort REF...``: drop ingests in progress; prints each ref."""
    for ref in args.refs:
        await client.content.abort(ref)
        out.write(ref + "\n")
    return 0


# -- leases --------------------------------------------------------------------------------------


async def cmd_leases_create(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl leases create [--id ID] [-x 24h] [k=v...]``: prints the lease id."""
    seconds = parse_duration(args.expires)
    expire = _dt.timedelta(seconds=seconds) if seconds > 0 else None
    lease = await client.leases.create(args.id or "", labels=parse_labels(args.labels), expire=expire)
    if _json(args):
        print_json(out, lease)
    else:
        out.write(lease.id + "\n")
    return 0


async def cmd_leases_ls(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl leases ls [-q] [filter...]``."""
    leases: list[Lease] = await client.leases.list(*args.filters)
    if _json(args):
        print_json(out, leases)
    elif args.quiet:
        for lease in leases:
            out.write(lease.id + "\n")
    else:
        rows = [[x.id, iso(x.created_at.replace(microsecond=0)), format_labels(x.labels)] for x in leases]
        print_table(out, ["ID", "CREATED AT", "LABELS"], rows)
    return 0


async def cmd_leases_rm(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl leases rm [--sync] ID...``: prints each id; an unknown id is an error (as ctr)."""
    for lease_id in args.ids:
        await client.leases.delete(lease_id, sync=args.sync)
        out.write(lease_id + "\n")
    return 0


# -- events --------------------------------------------------------------------------------------


def _event_line(env: Envelope) -> str:
    ts = env.timestamp
    frac = f"{ts.microsecond:06d}".rstrip("0")  # Go's time.String() trims trailing zeros
    stamp = ts.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"
    payload = json.dumps(to_jsonable(env.fields), separators=(",", ":")) if env.event is not None else ""
    return f"{stamp} {env.namespace} {env.topic} {payload}".rstrip()


async def cmd_events(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl events [filter...]``: one line per event until interrupted (``ctr events`` format)."""
    async with client.events.subscribe(*args.filters) as sub:
        async for env in sub:
            if _json(args):
                doc = {
                    "timestamp": iso(env.timestamp),
                    "namespace": env.namespace,
                    "topic": env.topic,
                    "type_url": env.type_url,
                    "event": to_jsonable(env.fields),
                }
                out.write(json.dumps(doc, separators=(",", ":")) + "\n")
            else:
                out.write(_event_line(env) + "\n")
            out.flush()
    return 0


COMMANDS: dict[str, Handler] = {
    "version": cmd_version,
    "plugins ls": cmd_plugins_ls,
    "namespaces create": cmd_ns_create,
    "namespaces ls": cmd_ns_ls,
    "namespaces label": cmd_ns_label,
    "namespaces rm": cmd_ns_rm,
    "content ingest": cmd_content_ingest,
    "content ls": cmd_content_ls,
    "content get": cmd_content_get,
    "content rm": cmd_content_rm,
    "content label": cmd_content_label,
    "content active": cmd_content_active,
    "content abort": cmd_content_abort,
    "leases create": cmd_leases_create,
    "leases ls": cmd_leases_ls,
    "leases rm": cmd_leases_rm,
    "events": cmd_events,
    **IMAGE_COMMANDS,
}
"""Canonical command path -> handler (the parser maps aliases to these)."""
