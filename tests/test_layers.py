"""The layer rule, checked on the import graph of ``src/ctrd`` (docs/architecture.md, "Layers").

A module imports only modules of its own layer or of lower ones, and the domain
layers (everything below the transport) import neither a transport library
(grpclib, h2, hpack, hyperframe, betterproto2), nor aiohttp, nor the generated
API, nor :mod:`ctrd.wire`. Every ``import`` counts, wherever it is in a module
(inside functions, under ``TYPE_CHECKING``): a dependency is a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: lowest first; a module belongs to the first prefix it matches (longest prefixes listed first)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "errors",
        (
            "ctrd.errdefs",
            "ctrd.limits",
            "ctrd.identifiers",
            "ctrd.golang",
            "ctrd.labels",
            "ctrd.namespaces",
            "ctrd.filters",
            "ctrd.authz",
            "ctrd._aio",
            "ctrd._faults",
            "ctrd._logging",
        ),
    ),
    ("plugin core", ("ctrd.plugin",)),
    ("content", ("ctrd.content", "ctrd.images")),
    ("metadata", ("ctrd.metadata", "ctrd.gc", "ctrd.events")),
    ("transport", ("ctrd.wire", "ctrd.api")),
    ("remote", ("ctrd.remote",)),
    ("services", ("ctrd.services", "ctrd.proxy")),
    ("server", ("ctrd.server",)),
    ("client and cli", ("ctrd.client", "ctrd.ctl", "ctrd.testing", "ctrd.__main__")),
)

DOMAIN = ("errors", "plugin core", "content", "metadata")
"""Layers that never touch the transport."""

FORBIDDEN_IN_DOMAIN = (
    "grpclib",
    "h2",
    "hpack",
    "hyperframe",
    "betterproto2",
    "aiohttp",
    "ctrd.wire",
    "ctrd.api",
)


def layer_of(module: str) -> int | None:
    """The index of *module*'s layer (``None``: not ctrd's, or ``ctrd`` itself)."""
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every module *path* imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base
            for alias in node.names:  # ``from ctrd import wire`` imports ctrd.wire
                yield f"{base}.{alias.name}"


def violations(graph: Iterable[tuple[str, str]]) -> list[str]:
    """The edges ``(importer, imported)`` of *graph* that break the layer rule."""
    out = []
    for importer, imported in graph:
        src = layer_of(importer)
        if src is None:
            continue
        name = LAYERS[src][0]
        if name in DOMAIN and any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN):
            out.append(f"{importer} ({name}) imports {imported}: the domain never touches the transport")
            continue
        dst = layer_of(imported)
        if dst is not None and dst > src:
            out.append(f"{importer} ({name}) imports {imported} ({LAYERS[dst][0]}), a higher layer")
    return sorted(set(out))


def graph() -> list[tuple[str, str]]:
    edges = []
    for path in sorted((SRC / "ctrd").rglob("*.py")):
        if "api" in path.relative_to(SRC / "ctrd").parts[:1]:
            continue  # generated code
        module = _module_name(path)
        edges.extend((module, imported) for imported in imports_of(path))
    return edges


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(
        {
            _module_name(p)
            for p in (SRC / "ctrd").rglob("*.py")
            if layer_of(_module_name(p)) is None and _module_name(p) not in ("ctrd", "ctrd.__main__")
        }
    )
    assert not unplaced, f"place these modules in a layer (tests/test_layers.py): {unplaced}"


def test_layers_hold() -> None:
    found = violations(graph())
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("edge", "why"),
    [
        (("ctrd.metadata.content", "ctrd.services.content"), "a higher layer"),
        (("ctrd.content.helpers", "ctrd.client"), "a higher layer"),
        (("ctrd.wire.server", "ctrd.server.metrics"), "a higher layer"),
        (("ctrd.proxy.connection", "ctrd.server.config"), "a higher layer"),
        (("ctrd.services.plugin", "ctrd.server.daemon"), "a higher layer"),
        (("ctrd.metadata.gc", "grpclib.const"), "never touches the transport"),
        (("ctrd.filters", "ctrd.wire.status"), "never touches the transport"),
        (("ctrd.events.exchange", "betterproto2"), "never touches the transport"),
    ],
)
def test_an_upward_import_is_caught(edge: tuple[str, str], why: str) -> None:
    """The checker itself: each of these edges, added to the real graph, is reported."""
    found = violations([*graph(), edge])
    assert any(why in v and v.startswith(edge[0]) for v in found), found


TRANSPORT_LIBRARIES = ("grpclib", "h2", "hpack", "hyperframe", "betterproto2")


def private_transport_imports() -> list[str]:
    """Imports of private names (``_x``) or private modules of the transport libraries outside ctrd.wire."""
    found = []
    for path in sorted((SRC / "ctrd").rglob("*.py")):
        parts = path.relative_to(SRC / "ctrd").parts
        if parts[0] in ("wire", "api"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                lib = node.module.split(".")[0]
                if lib not in TRANSPORT_LIBRARIES:
                    continue
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(p.startswith("_") for p in node.module.split(".")):
                    found.append(
                        f"{_module_name(path)}: from {node.module} import {', '.join(private) or '...'}"
                    )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in TRANSPORT_LIBRARIES and "._" in alias.name:
                        found.append(f"{_module_name(path)}: import {alias.name}")
    return found


def test_only_wire_touches_transport_internals() -> None:
    """Outside ctrd.wire, the transport libraries are used through their public names only."""
    found = private_transport_imports()
    assert not found, "\n".join(found)
