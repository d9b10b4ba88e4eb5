"""The ``ctrdctl`` argument parser (argparse; the completion scripts are generated from it)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

from ctrd import __version__
from ctrd.client import ADDRESS_ENV, default_address
from ctrd.ctl._imagecmds import PASSWORD_ENV
from ctrd.namespaces import DEFAULT, ENV_VAR

__all__ = ["build_parser"]

#: canonical group name -> aliases (as ctr accepts them)
ALIASES: Final = {
    "namespaces": ["namespace", "ns"],
    "plugins": ["plugin"],
    "leases": [],
    "content": [],
    "images": ["image", "i"],
}
VERB_ALIASES: Final = {"ls": ["list"], "rm": ["remove", "delete", "del"]}


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format (default: table)"
    )


def _quiet(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=f"print only the {what}")


def _group(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str) -> Any:
    p = sub.add_parser(name, aliases=ALIASES.get(name, []), help=help_, description=help_)
    p.set_defaults(group=name)
    verbs = p.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    return verbs


def _verb(verbs: Any, name: str, help_: str, group: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = verbs.add_parser(
        name, aliases=VERB_ALIASES.get(name, []), help=help_, description=help_
    )
    p.set_defaults(command=f"{group} {name}")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    parser = argparse.ArgumentParser(
        prog="ctrdctl",
        description="Command line client for ctrd and containerd "
        "(images, content, namespaces, leases, events).",
        epilog="Exit status: 0 ok, 1 error (one line on stderr), 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", "-v", action="version", version=f"ctrdctl {__version__}")
    parser.add_argument(
        "--address",
        "-a",
        default=os.environ.get(ADDRESS_ENV) or default_address(),
        help=f"daemon address: socket path, unix://PATH or HOST:PORT (env {ADDRESS_ENV}; "
        f"default: {default_address()})",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get(ENV_VAR) or DEFAULT,
        help=f"namespace (env {ENV_VAR}; default: {DEFAULT})",
    )
    parser.add_argument(
        "--timeout",
        default="0",
        help="deadline per call and idle limit per streamed message, e.g. 10s, 1m (default: none)",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    p = sub.add_parser("version", help="print client and server versions", description="Versions.")
    p.set_defaults(command="version")
    _format(p)

    verbs = _group(sub, "plugins", "plugins of the daemon")
    p = _verb(verbs, "ls", "list plugins", "plugins")
    _quiet(p, "ids")
    p.add_argument("-d", "--detailed", action="store_true", help="print requires, exports, errors")
    p.add_argument("filters", nargs="*", help="filters, e.g. type==io.containerd.grpc.v1")
    _format(p)

    _namespaces(_group(sub, "namespaces", "manage namespaces"))
    _images(_group(sub, "images", "manage images (records, registries, archives)"))
    _content(_group(sub, "content", "manage content"))
    _leases(_group(sub, "leases", "manage leases"))

    p = sub.add_parser("events", help="print events until interrupted", description="Stream events.")
    p.set_defaults(command="events")
    p.add_argument("filters", nargs="*", help="filters, e.g. topic~=/content/ or namespace==x")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (as ctr) or JSON lines")

    p = sub.add_parser("completion", help="print a shell completion script", description="Completion.")
    p.set_defaults(command="completion")
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


def _namespaces(verbs: Any) -> None:
    p = _verb(verbs, "create", "create a namespace", "namespaces")
    p.add_argument("name")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p = _verb(verbs, "ls", "list namespaces", "namespaces")
    _quiet(p, "names")
    _format(p)
    p = _verb(verbs, "label", "set or (with KEY=) remove labels of a namespace", "namespaces")
    p.add_argument("name")
    p.add_argument("labels", nargs="+", metavar="KEY=VALUE")
    _format(p)
    p = _verb(verbs, "rm", "remove namespaces (they must hold no content)", "namespaces")
    p.add_argument("names", nargs="+", metavar="NAME")


def _content(verbs: Any) -> None:
    p = _verb(verbs, "ingest", "upload a blob from stdin or a file (resumes an interrupted ref)", "content")
    p.add_argument("ref")
    p.add_argument("-f", "--file", help="read this file instead of stdin")
    p.add_argument("--expected-size", type=int, help="the blob's size (verified at commit)")
    p.add_argument("--expected-digest", help="the blob's digest (verified; existing blob = success)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the blob")
    p.add_argument("--lease", help="attach the blob to this lease (keeps it from garbage collection)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    _format(p)
    p = _verb(verbs, "ls", "list blobs", "content")
    _quiet(p, "digests")
    p.add_argument("filters", nargs="*", help='filters, e.g. labels."a"==b')
    _format(p)
    p = _verb(verbs, "get", "write a blob to stdout (or -o FILE)", "content")
    p.add_argument("digest")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    p = _verb(verbs, "rm", "remove blobs", "content")
    p.add_argument("digests", nargs="+", metavar="DIGEST")
    p = _verb(verbs, "label", "set or (with KEY=) remove labels of a blob; prints its labels", "content")
    p.add_argument("digest")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    _format(p)
    p = _verb(verbs, "active", "list ingests in progress", "content")
    _quiet(p, "refs")
    p.add_argument("filters", nargs="*", help="filters, e.g. ref~=^img")
    _format(p)
    p = _verb(verbs, "abort", "drop ingests in progress", "content")
    p.add_argument("refs", nargs="+", metavar="REF")
    p = _verb(
        verbs,
        "fetch",
        "fetch an image's content from a registry and record it (ctr content fetch)",
        "content",
    )
    p.add_argument("ref", metavar="REF")
    _platforms(p, "fetch this platform (repeatable; default: this machine's)")
    _registry(p)
    _labels(p)
    _progress(p)
    _format(p)


def _platforms(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT]", help=help_)
    p.add_argument("--all-platforms", action="store_true", help="every platform of an index")


def _registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="HTTP for the registry (default: only for localhost and loopback)",
    )
    p.add_argument(
        "-u",
        "--user",
        metavar="NAME[:PASSWORD]",
        help=f"registry credentials; the password, when not given, from ${PASSWORD_ENV} (never a prompt)",
    )
    p.add_argument(
        "--hosts-dir", metavar="DIR", help="a containerd hosts directory (e.g. /etc/containerd/certs.d)"
    )
    p.add_argument(
        "-k", "--skip-verify", action="store_true", help="do not verify the registry's certificate"
    )


def _labels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the image record")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=["auto", "tty", "plain", "none"],
        default="auto",
        help="per-blob progress on stderr: a live table (tty), a line per blob (plain); "
        "auto: tty on a terminal, else plain",
    )
    p.add_argument("--no-progress", action="store_true", help="same as --progress none")


def _images(verbs: Any) -> None:
    p = _verb(verbs, "ls", "list images (REF TYPE DIGEST SIZE PLATFORMS LABELS)", "images")
    _quiet(p, "names")
    p.add_argument("filters", nargs="*", help='filters, e.g. name~=^docker.io or labels."k"==v')
    _format(p)
    p = _verb(verbs, "pull", "fetch an image from a registry and record it (not unpacked yet)", "images")
    p.add_argument("ref", metavar="REF")
    _platforms(p, "pull this platform (repeatable; default: this machine's best match)")
    _registry(p)
    _labels(p)
    _progress(p)
    _format(p)
    p = _verb(verbs, "push", "push an image to a registry", "images")
    p.add_argument("ref", metavar="REF", help="where to push")
    p.add_argument("local", nargs="?", metavar="LOCAL", help="the image to push (default: REF, normalised)")
    _registry(p)
    _progress(p)
    _format(p)
    p = _verb(verbs, "tag", "give an image more names", "images")
    p.add_argument("-f", "--force", action="store_true", help="repoint a target name that exists")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p = _verb(verbs, "rm", "remove images (their content goes with the next collection)", "images")
    p.add_argument("--sync", action="store_true", help="wait for the garbage collection")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = _verb(
        verbs,
        "check",
        "check that images' content is all present (REF TYPE DIGEST STATUS SIZE UNPACKED)",
        "images",
    )
    _quiet(p, "names of complete images")
    p.add_argument("filters", nargs="*", help="filters, as for ls")
    _format(p)
    p = _verb(verbs, "export", "write images to an OCI layout tar (ctr images export's)", "images")
    p.add_argument("file", metavar="FILE", help="the archive; - for stdout")
    p.add_argument("names", nargs="+", metavar="NAME")
    _platforms(p, "export this platform of an index (repeatable; default: this machine's)")
    p = _verb(verbs, "import", "read images from an OCI layout or docker save tar (never unpacked)", "images")
    p.add_argument("file", metavar="FILE", help="the archive (plain or gzip'd); - for stdin")
    p.add_argument("--base-name", metavar="NAME", help="name bare tags NAME:TAG; skip names not under NAME")
    _platforms(p, "check and label this platform of an index (repeatable; default: this machine's)")
    p.add_argument("--no-unpack", action="store_true", help="accepted for ctr's sake: import never unpacks")
    _format(p)


def _leases(verbs: Any) -> None:
    p = _verb(verbs, "create", "create a lease; prints its id", "leases")
    p.add_argument("--id", help="the lease id (default: chosen by the daemon)")
    p.add_argument("-x", "--expires", default="24h", help="expire after this long; 0: never (default: 24h)")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    _format(p)
    p = _verb(verbs, "ls", "list leases", "leases")
    _quiet(p, "ids")
    p.add_argument("filters", nargs="*", help="filters, e.g. id==mylease or labels.a==b")
    _format(p)
    p = _verb(verbs, "rm", "delete leases", "leases")
    p.add_argument("--sync", action="store_true", help="wait for the garbage collection")
    p.add_argument("ids", nargs="+", metavar="ID")
