"""The ``ctrdctl`` argument parser (argparse; the completion scripts are generated from it)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

from ctrd import __version__
from ctrd.client import ADDRESS_ENV, default_address
from ctrd.namespaces import DEFAULT, ENV_VAR

__all__ = ["build_parser"]

#: canonical group name -> aliases (as ctr accepts them)
ALIASES: Final = {"namespaces": ["namespace", "ns"], "plugins": ["plugin"], "leases": [], "content": []}
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
        description="Command line client for ctrd and containerd (content, namespaces, leases, events).",
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
