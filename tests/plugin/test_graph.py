"""Initialisation order from ``requires`` (:func:`ctrd.plugin.order`)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from ctrd.plugin import DependencyCycle, Registration, order, types


async def _init(ic: Any) -> None:
    return None


def reg(type_: str, id_: str, *requires: str) -> Registration:
    return Registration(type=type_, id=id_, requires=tuple(requires), init=_init)


def uris(regs: list[Registration]) -> list[str]:
    return [r.uri for r in regs]


# A graph shaped like ctrd's built-ins plus a snapshotter nobody provides.
CONTENT = reg(types.CONTENT, "content")
EVENTS = reg(types.EVENT, "exchange")
META = reg(types.METADATA, "sqlite", types.CONTENT, types.SNAPSHOTTER)
CSVC = reg(types.SERVICE, "content-service", types.METADATA)
NSVC = reg(types.SERVICE, "namespaces-service", types.METADATA)
GCONTENT = reg(types.GRPC, "content", types.SERVICE, types.EVENT)
GNS = reg(types.GRPC, "namespaces", types.SERVICE, types.EVENT)
INTRO = reg(types.GRPC, "introspection", "*")
VERSION = reg(types.GRPC, "version")
HEALTH = reg(types.GRPC, "healthcheck")
BUILTINS = [CONTENT, EVENTS, META, CSVC, NSVC, GCONTENT, GNS, INTRO, VERSION, HEALTH]


def assert_deps_first(result: list[Registration]) -> None:
    pos = {r.uri: i for i, r in enumerate(result)}
    for r in result:
        for t in r.requires:
            providers = [p for p in result if (t == "*" and "*" not in p.requires) or p.type == t]
            for p in providers:
                if p.uri != r.uri:
                    assert pos[p.uri] < pos[r.uri], f"{p.uri} must come before {r.uri}"


def test_dependencies_before_dependents() -> None:
    result = order(BUILTINS)
    assert sorted(uris(result)) == sorted(uris(BUILTINS))
    assert_deps_first(result)
    pos = {u: i for i, u in enumerate(uris(result))}
    assert pos[CONTENT.uri] < pos[META.uri] < pos[CSVC.uri] < pos[GCONTENT.uri]
    assert pos[EVENTS.uri] < pos[GNS.uri]


def test_exact_order_of_builtins() -> None:
    # deterministic: depth-first post-order, ties broken by URI
    assert uris(order(BUILTINS)) == [
        "io.containerd.content.v1.content",
        "io.containerd.event.v1.exchange",
        "io.containerd.metadata.v1.sqlite",
        "io.containerd.service.v1.content-service",
        "io.containerd.service.v1.namespaces-service",
        "io.containerd.grpc.v1.content",
        "io.containerd.grpc.v1.healthcheck",
        "io.containerd.grpc.v1.namespaces",
        "io.containerd.grpc.v1.version",
        "io.containerd.grpc.v1.introspection",
    ]


def test_deterministic_regardless_of_input_order() -> None:
    expected = uris(order(BUILTINS))
    rng = random.Random(1234)
    for _ in range(50):
        shuffled = BUILTINS[:]
        rng.shuffle(shuffled)
        assert uris(order(shuffled)) == expected
    for perm in itertools.islice(itertools.permutations(BUILTINS[:6]), 200):
        assert uris(order(list(perm))) == uris(order(BUILTINS[:6]))


def test_star_comes_after_every_other_plugin() -> None:
    late = reg("io.x.v1", "zzz-late", types.METADATA)  # sorts last, requires a type
    star2 = reg("io.a.v1", "aaa-star", "*")
    result = uris(order([INTRO, star2, *BUILTINS[:7], late]))
    non_star = [u for u in result if u not in (INTRO.uri, star2.uri)]
    assert result[: len(non_star)] == non_star
    assert set(result[len(non_star) :]) == {INTRO.uri, star2.uri}
    # two "*" plugins do not wait for each other (no cycle); URI order between them
    assert result[-2:] == ["io.a.v1.aaa-star", "io.containerd.grpc.v1.introspection"]


def test_star_alone() -> None:
    assert uris(order([INTRO])) == [INTRO.uri]


def test_cycle_names_the_loop() -> None:
    a = reg("io.t.a.v1", "a", "io.t.b.v1")
    b = reg("io.t.b.v1", "b", "io.t.c.v1")
    c = reg("io.t.c.v1", "c", "io.t.a.v1")
    ok = reg("io.t.ok.v1", "ok")
    with pytest.raises(DependencyCycle) as ei:
        order([ok, c, b, a])
    msg = str(ei.value)
    assert msg.startswith("circular plugin dependency: ")
    loop = msg.removeprefix("circular plugin dependency: ").split(" -> ")
    assert loop[0] == loop[-1]
    assert sorted(loop[:-1]) == ["io.t.a.v1.a", "io.t.b.v1.b", "io.t.c.v1.c"]
    assert "io.t.ok.v1.ok" not in msg


def test_two_plugin_cycle() -> None:
    a = reg("io.t.a.v1", "a", "io.t.b.v1")
    b = reg("io.t.b.v1", "b", "io.t.a.v1")
    with pytest.raises(DependencyCycle, match=r"io\.t\.a\.v1\.a -> io\.t\.b\.v1\.b -> io\.t\.a\.v1\.a"):
        order([b, a])


def test_disabled_cycle_member_breaks_the_cycle() -> None:
    a = reg("io.t.a.v1", "a", "io.t.b.v1")
    b = reg("io.t.b.v1", "b", "io.t.a.v1")
    assert uris(order([a, b], disabled=["io.t.b.v1.b"])) == ["io.t.a.v1.a"]


def test_disabled_plugins_excluded() -> None:
    result = uris(order(BUILTINS, disabled=[HEALTH.uri, CSVC.uri, "io.nobody.v1.nothing"]))
    assert HEALTH.uri not in result
    assert CSVC.uri not in result
    assert len(result) == len(BUILTINS) - 2
    # a disabled provider is not pulled back in by its dependants
    assert GCONTENT.uri in result


def test_disabled_matches_uri_not_id() -> None:
    # ids "content" exist in two types; disabling one URI keeps the other
    result = uris(order(BUILTINS, disabled=["io.containerd.grpc.v1.content"]))
    assert "io.containerd.content.v1.content" in result
    assert "io.containerd.grpc.v1.content" not in result
    assert uris(order(BUILTINS, disabled=["content"])) == uris(order(BUILTINS))


def test_requirement_on_absent_type_is_ignored() -> None:
    # sqlite requires io.containerd.snapshotter.v1, which nobody registers
    result = uris(order([META, CONTENT]))
    assert result == [CONTENT.uri, META.uri]
    lone = reg("io.t.v1", "lone", "io.nothing.v1", "io.also.nothing.v1")
    assert uris(order([lone])) == ["io.t.v1.lone"]


def test_all_providers_of_a_type_come_first() -> None:
    p1 = reg("io.p.v1", "one")
    p2 = reg("io.p.v1", "two")
    user = reg("io.u.v1", "aaa", "io.p.v1")
    assert uris(order([user, p2, p1])) == ["io.p.v1.one", "io.p.v1.two", "io.u.v1.aaa"]


def test_empty() -> None:
    assert order([]) == []
