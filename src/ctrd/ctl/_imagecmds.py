"""The ``ctrdctl images`` verbs and ``ctrdctl content fetch``, over ``client.images``.

Columns and sizes follow ``ctr images``: ``ls`` prints ``REF TYPE DIGEST SIZE PLATFORMS
LABELS``, ``check`` prints ``REF TYPE DIGEST STATUS SIZE UNPACKED`` (``complete (N/N)``),
sizes as containerd's ``progress.Bytes`` (``6.3 MiB``). Pulls, fetches and pushes show
each blob's progress on stderr (:class:`~ctrd.ctl._progress.TransferDisplay`) and print
``NAME@DIGEST`` on stdout. Registry credentials come from ``--user NAME[:PASSWORD]`` (the
password, when not given there, from ``$CTRDCTL_PASSWORD``; never a prompt), else from
Docker's ``config.json``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import IO, TYPE_CHECKING, Any, Final

from ctrd import errdefs
from ctrd.ctl._output import binary_size, format_labels, print_json, print_table, to_jsonable
from ctrd.ctl._progress import TransferDisplay, progress_mode

if TYPE_CHECKING:
    from ctrd.client import Client, Image, RegistryOptions

__all__ = ["IMAGE_COMMANDS", "PASSWORD_ENV", "parse_user"]

PASSWORD_ENV: Final = "CTRDCTL_PASSWORD"
"""Where ``--user NAME`` finds its password."""

Handler = Callable[["Client", argparse.Namespace, "IO[str]", "IO[str]"], Coroutine[Any, Any, int]]


def _json(args: argparse.Namespace) -> bool:
    return getattr(args, "format", "table") == "json"


def parse_user(value: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """``NAME:PASSWORD``, or ``NAME`` with the password in ``$CTRDCTL_PASSWORD``.

    :raises errdefs.InvalidArgument: no name, or no password anywhere.
    """
    name, sep, password = value.partition(":")
    if not name:
        raise errdefs.InvalidArgument("--user needs a user name: --user NAME[:PASSWORD]")
    if not sep:
        password = (env if env is not None else dict(os.environ)).get(PASSWORD_ENV, "")
        if not password:
            raise errdefs.InvalidArgument(
                f"--user {name}: no password: give --user {name}:PASSWORD or set {PASSWORD_ENV}"
            )
    return name, password


def _registry(args: argparse.Namespace) -> RegistryOptions:
    from ctrd.client import RegistryOptions

    credentials = None
    if args.user:
        user = parse_user(args.user)

        def credentials(host: str) -> tuple[str, str]:
            return user

    return RegistryOptions(
        hosts_dir=args.hosts_dir or None,
        credentials=credentials,
        plain_http=True if args.plain_http else None,
        skip_verify=args.skip_verify,
    )


def _display(args: argparse.Namespace, err: IO[str], title: str) -> TransferDisplay:
    mode = "none" if args.no_progress else args.progress
    return TransferDisplay(err, title, progress_mode(err, mode))


def _pinned(image: Image) -> str:
    return f"{image.name}@{image.target.digest}"


def _image_json(image: Image, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = to_jsonable(image)
    d.update(extra)
    return d


# -- records ------------------------------------------------------------------------------------


async def cmd_images_ls(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images ls [-q] [FILTER...]``."""
    from ctrd.client._inspect import image_platforms, image_size
    from ctrd.client._registry._platforms import host_platform, only

    images = await client.images.list(*args.filters)
    if args.quiet:
        for image in images:
            out.write(image.name + "\n")
        return 0
    matcher = only(host_platform())
    rows, docs = [], []
    for image in images:
        size, error = await image_size(client.content, image.target, matcher)
        if error is not None:
            err.write(f"ctrdctl: failed calculating size for image {image.name}: {error}\n")
        try:
            plats = sorted({str(p) for p in await image_platforms(client.content, image.target)})
        except errdefs.Error as exc:
            err.write(f"ctrdctl: failed resolving platform for image {image.name}: {exc}\n")
            plats = []
        docs.append(_image_json(image, size=size, platforms=plats))
        rows.append(
            [
                image.name,
                image.target.media_type,
                image.target.digest,
                binary_size(size),
                ",".join(plats) or "-",
                format_labels(image.labels),
            ]
        )
    if _json(args):
        print_json(out, docs)
    else:
        print_table(out, ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"], rows)
    return 0


async def cmd_images_check(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images check [-q] [FILTER...]``: is each image's content all there?"""
    status = 0
    rows, docs = [], []
    for image in await client.images.list(*args.filters):
        try:
            check = await client.images.check(image)
        except errdefs.Error as exc:
            err.write(f"ctrdctl: unable to check {image.name}: {exc}\n")
            status = 1
            rows.append([image.name, image.target.media_type, image.target.digest, "error", "-", "false"])
            docs.append(_image_json(image, status="error", error=str(exc), unpacked=False))
            continue
        if check.available:
            size = f"{binary_size(check.present_size)}/{binary_size(check.required_size)}"
        else:
            size = f"{binary_size(check.present_size)}/?"
        rows.append([image.name, image.target.media_type, image.target.digest, check.status, size, "false"])
        docs.append(
            _image_json(
                image,
                status=check.status,
                complete=check.complete,
                present_size=check.present_size,
                required_size=check.required_size,
                missing=[d.digest for d in check.missing],
                unpacked=False,
            )
        )
        if args.quiet and check.complete:
            out.write(image.name + "\n")
    if _json(args):
        print_json(out, docs)
    elif not args.quiet and rows:
        print_table(out, ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"], rows)
    return status


async def cmd_images_tag(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images tag [--force] SOURCE TARGET...``: prints each target."""
    for target in args.targets:
        await client.images.tag(args.source, target, force=args.force)
        out.write(target + "\n")
    return 0


async def cmd_images_rm(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images rm [--sync] NAME...``: prints each removed name; an unknown one is a
    warning (as ``ctr``); ``--sync`` waits for the collection after the last."""
    status = 0
    for i, name in enumerate(args.names):
        try:
            await client.images.delete(name, sync=args.sync and i == len(args.names) - 1)
        except errdefs.NotFound:
            err.write(f"ctrdctl: {name}: image not found\n")
            continue
        except errdefs.Error as exc:
            err.write(f"ctrdctl: unable to delete {name}: {exc}\n")
            status = 1
            continue
        out.write(name + "\n")
    return status


# -- registries -----------------------------------------------------------------------------------


def _fetch_platforms(args: argparse.Namespace) -> list[str] | None:
    """``content fetch``'s: every platform with ``--all-platforms``, else those named, else
    this machine's (as ``ctr content fetch``)."""
    from ctrd.client import host_platform

    if args.all_platforms:
        return None
    return list(args.platform) or [str(host_platform())]


async def cmd_images_pull(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images pull REF``: fetch and record (no unpacking yet)."""
    display = _display(args, err, args.ref)
    try:
        image = await client.images.pull(
            args.ref,
            platforms=args.platform or None,
            all_platforms=args.all_platforms,
            labels=_labels(args.label),
            registry=_registry(args),
            progress=display.update,
        )
    finally:
        display.finish()
    _print_image(args, out, image)
    return 0


async def cmd_content_fetch(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl content fetch REF``: ``ctr content fetch``."""
    display = _display(args, err, args.ref)
    try:
        image = await client.images.fetch(
            args.ref,
            platforms=_fetch_platforms(args),
            labels=_labels(args.label),
            registry=_registry(args),
            progress=display.update,
        )
    finally:
        display.finish()
    _print_image(args, out, image)
    return 0


async def cmd_images_push(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images push REF [LOCAL]``: prints ``REF@DIGEST``."""
    display = _display(args, err, args.ref)
    try:
        desc = await client.images.push(
            args.ref, args.local, registry=_registry(args), progress=display.update
        )
    finally:
        display.finish()
    if _json(args):
        print_json(out, {"ref": args.ref, "target": desc})
    else:
        out.write(f"{args.ref}@{desc.digest}\n")
    return 0


def _labels(items: Sequence[str]) -> dict[str, str] | None:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise errdefs.InvalidArgument(f"invalid label {item!r}: empty key")
        labels[key] = value if sep else "true"
    return labels or None


def _print_image(args: argparse.Namespace, out: IO[str], image: Image) -> None:
    if _json(args):
        print_json(out, image)
    else:
        out.write(_pinned(image) + "\n")


# -- archives -------------------------------------------------------------------------------------


async def cmd_images_export(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images export FILE NAME...`` (``-``: stdout)."""
    target: Any = args.file
    if args.file == "-":
        target = args.stdout_bytes
        if target.isatty():
            raise errdefs.InvalidArgument(
                "refusing to write an archive to a terminal: give a FILE or redirect"
            )
    await client.images.export(
        target, *args.names, platforms=args.platform or None, all_platforms=args.all_platforms
    )
    return 0


async def cmd_images_import(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``ctrdctl images import FILE`` (``-``: stdin): prints the names recorded."""
    source: Any = args.file
    if args.file == "-":
        source = args.stdin_bytes
        if source.isatty():
            raise errdefs.InvalidArgument(
                "refusing to read an archive from a terminal: give a FILE or redirect"
            )
    images = await client.images.import_(
        source,
        platforms=args.platform or None,
        all_platforms=args.all_platforms,
        base_name=args.base_name or None,
    )
    if _json(args):
        print_json(out, images)
    else:
        for image in images:
            out.write(image.name + "\n")
    return 0


IMAGE_COMMANDS: dict[str, Handler] = {
    "images ls": cmd_images_ls,
    "images check": cmd_images_check,
    "images tag": cmd_images_tag,
    "images rm": cmd_images_rm,
    "images pull": cmd_images_pull,
    "images push": cmd_images_push,
    "images export": cmd_images_export,
    "images import": cmd_images_import,
    "content fetch": cmd_content_fetch,
}
"""Canonical command path -> handler (merged into :data:`ctrd.ctl._commands.COMMANDS`)."""
