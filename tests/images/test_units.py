"""The registry client's pure parts: references, platforms, hosts configuration,
credentials, challenges, manifests and labels, the cycle guard, the status table."""

from __future__ import annotations

import base64
import json
import types
from pathlib import Path
from typing import Any

import pytest

from ctrd import errdefs
from ctrd.client import Platform, RegistryOptions, host_platform, parse_platform, parse_reference
from ctrd.client._registry._hosts import Capability, docker_config_credentials, is_localhost, resolve_hosts
from ctrd.client._registry._http import parse_challenges, status_error
from ctrd.client._registry._manifests import Child, children, gc_labels, merge_sources, ref_key
from ctrd.client._registry._platforms import ALL, exactly, only
from ctrd.client._registry._pull import MAX_NESTING, Puller, _plan
from ctrd.images import Descriptor, mediatypes

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("alpine", "docker.io/library/alpine:latest"),
        ("alpine:3.19", "docker.io/library/alpine:3.19"),
        ("library/alpine", "docker.io/library/alpine:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/user/app:1", "docker.io/user/app:1"),
        ("ghcr.io/o/r/app:v1.2-rc_3", "ghcr.io/o/r/app:v1.2-rc_3"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        (f"127.0.0.1:5000/a@{D1}", f"127.0.0.1:5000/a@{D1}"),
        (f"app:tag@{D1}", f"docker.io/library/app:tag@{D1}"),
        ("[::1]:5000/a", "[::1]:5000/a:latest"),
    ],
)
def test_reference_normalisation(ref: str, full: str) -> None:
    assert str(parse_reference(ref)) == full


def test_reference_parts() -> None:
    r = parse_reference(f"127.0.0.1:5000/a/b:t@{D1}")
    assert (r.domain, r.path, r.tag, r.digest, r.hostname, r.object) == (
        "127.0.0.1:5000",
        "a/b",
        "t",
        D1,
        "127.0.0.1",
        D1,
    )
    assert parse_reference("[::1]:5000/a").hostname == "::1"
    assert str(parse_reference("a").with_tag("x")) == "docker.io/library/a:x"


@pytest.mark.parametrize(
    "ref",
    [
        "",
        " alpine",
        "Alpine/x/Y",
        "1" * 64,
        "app@sha256:xyz",
        "app:-bad",
        "a//b",
        "a/B",
        "x" * 300,
        "ho$t.io/a",
        "app@sha256:" + "1" * 63,
    ],
)
def test_reference_errors(ref: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_reference(ref)


def test_platform_parsing() -> None:
    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert parse_platform("Linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("linux/aarch64/v8") == Platform("linux", "arm64")
    assert parse_platform("linux/arm") == Platform("linux", "arm", "v7")
    assert parse_platform("linux/armhf") == Platform("linux", "arm", "v7")
    assert parse_platform("linux/arm/6") == Platform("linux", "arm", "v6")
    assert parse_platform("windows").os == "windows"
    assert parse_platform("arm64") == Platform(host_platform().os, "arm64")
    for bad in ["", "linux/", "a/b/c/d", "plan10"]:
        with pytest.raises(errdefs.InvalidArgument):
            parse_platform(bad)
    assert host_platform().os == "linux"


def test_platform_matchers() -> None:
    amd = only("linux/amd64")
    assert amd.match(Platform("linux", "amd64"))
    assert amd.match(Platform("linux", "386"))
    assert amd.less(Platform("linux", "amd64"), Platform("linux", "386"))
    assert not amd.match(Platform("linux", "arm64"))
    arm64 = only("linux/arm64")
    assert arm64.match(Platform("linux", "arm64", "v8"))
    assert all(arm64.match(Platform("linux", "arm", v)) for v in ("v8", "v7", "v6", "v5"))
    assert arm64.less(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"))
    v7 = only("linux/arm/v7")
    assert v7.match(Platform("linux", "arm", "v6"))
    assert not v7.match(Platform("linux", "arm", "v8"))
    v3 = only(Platform("linux", "amd64", "v3"))
    assert v3.match(Platform("linux", "amd64", "v2"))
    assert v3.match(Platform("linux", "amd64"))
    ex = exactly(["linux/amd64", "linux/arm64"])
    assert ex.match(Platform("linux", "arm64"))
    assert not ex.match(Platform("linux", "386"))
    assert ALL.match(Platform("plan9", "mips"))
    # pull: host (limit 1); one platform: only (limit 1); several: exactly (no limit); fetch: no limit
    assert _plan(None, False, True)[1] == 1
    assert _plan(["linux/arm64"], False, True)[1] == 1
    assert _plan(["linux/arm64", "linux/amd64"], False, True)[1] == 0
    assert _plan(["linux/arm64"], False, False)[1] == 0
    assert _plan(None, True, True) == (ALL, 0)


def test_default_hosts() -> None:
    opts = RegistryOptions()
    (hub,) = resolve_hosts("docker.io", opts)
    assert (hub.scheme, hub.host, hub.path) == ("https", "registry-1.docker.io", "/v2")
    assert not hub.is_mirror_for("docker.io")
    (local,) = resolve_hosts("127.0.0.1:5000", opts)
    assert (local.scheme, local.base_url) == ("http", "http://127.0.0.1:5000/v2")
    assert resolve_hosts("localhost:1", RegistryOptions(plain_http=False))[0].scheme == "https"
    assert resolve_hosts("ghcr.io", opts)[0].scheme == "https"
    assert resolve_hosts("ghcr.io", RegistryOptions(plain_http=True))[0].scheme == "http"
    assert is_localhost("[::1]:80")
    assert is_localhost("localhost")
    assert not is_localhost("10.0.0.1:5000")


def test_hosts_toml(tmp_path: Path) -> None:
    d = tmp_path / "reg.example_5000_"
    d.mkdir()
    (d / "hosts.toml").write_text(
        'server = "https://reg.example:5000"\n'
        'capabilities = ["pull", "resolve", "push"]\n'
        '[host."https://mirror-b.example"]\n  capabilities = ["pull"]\n  ca = "b.pem"\n  skip_verify = true\n'
        '[host."http://mirror-a.example:8080/custom/api"]\n  override_path = true\n'
        '  header = { X-Token = "t", X-Multi = ["a", "b"] }\n  client = [["c.pem", "k.pem"]]\n'
    )
    hosts = resolve_hosts("reg.example:5000", RegistryOptions(hosts_dir=tmp_path))
    assert [h.base_url for h in hosts] == [
        "https://mirror-b.example/v2",
        "http://mirror-a.example:8080/custom/api",
        "https://reg.example:5000/v2",
    ]
    b, a, server = hosts
    assert b.capabilities == Capability.PULL
    assert b.ca_files == (str(d / "b.pem"),)
    assert b.skip_verify
    assert a.headers == {"X-Token": ("t",), "X-Multi": ("a", "b")}
    assert a.client_pairs == ((str(d / "c.pem"), str(d / "k.pem")),)
    assert server.capabilities == Capability.ALL
    assert b.is_mirror_for("reg.example:5000")
    assert not server.is_mirror_for("reg.example:5000")

    # a directory without hosts.toml: Docker's certificate files; _default for other hosts
    default = tmp_path / "_default"
    default.mkdir()
    (default / "ca.crt").write_text("x")
    (default / "me.cert").write_text("x")
    (default / "me.key").write_text("x")
    (h,) = resolve_hosts("other.example", RegistryOptions(hosts_dir=tmp_path))
    assert (h.host, h.ca_files, h.client_pairs) == (
        "other.example",
        (str(default / "ca.crt"),),
        ((str(default / "me.cert"), str(default / "me.key")),),
    )
    # no server key: the domain itself, after the hosts
    (default / "hosts.toml").write_text('[host."http://m.example"]\n')
    assert [x.host for x in resolve_hosts("other.example", RegistryOptions(hosts_dir=tmp_path))] == [
        "m.example",
        "other.example",
    ]
    for bad in [
        "server = 1\n",
        '[host."x"]\ncapabilities = ["fly"]\n',
        "not toml = = \n",
        'skip_verify = "yes"\n',
    ]:
        (default / "hosts.toml").write_text(bad)
        with pytest.raises(errdefs.InvalidArgument):
            resolve_hosts("other.example", RegistryOptions(hosts_dir=tmp_path))


def test_docker_config_credentials(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                    "reg.example:5000": {"username": "u", "password": "p"},
                    "https://tok.example": {"identitytoken": "refresh"},
                }
            }
        )
    )
    got = docker_config_credentials("registry-1.docker.io", cfg)
    assert got is not None
    assert (got.username, got.secret) == ("hub", "pw")
    u = docker_config_credentials("reg.example:5000", cfg)
    assert u is not None
    assert (u.username, u.secret) == ("u", "p")
    t = docker_config_credentials("tok.example", cfg)
    assert t is not None
    assert (t.username, t.secret) == ("", "refresh")
    assert docker_config_credentials("nope.example", cfg) is None
    assert docker_config_credentials("x", tmp_path / "missing.json") is None
    assert "p'" not in repr(u)


def test_challenges() -> None:
    (c,) = parse_challenges(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'
    )
    assert c.scheme == "bearer"
    assert dict(c.params) == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull",
    }
    both = parse_challenges('Basic realm="x y", Bearer realm="r",error="insufficient_scope"')
    assert [x.scheme for x in both] == ["basic", "bearer"]
    assert both[1].params["error"] == "insufficient_scope"
    assert parse_challenges("") == []


def test_status_errors() -> None:
    body = json.dumps({"errors": [{"code": "DENIED", "message": "nope"}]}).encode()
    assert isinstance(status_error(401, "Unauthorized", "w"), errdefs.PermissionDenied)
    err = status_error(403, "Forbidden", "w", body)
    assert isinstance(err, errdefs.PermissionDenied)
    assert "DENIED: nope" in str(err)
    assert isinstance(status_error(404, "", "w"), errdefs.NotFound)
    assert isinstance(status_error(503, "", "w"), errdefs.Unavailable)
    assert isinstance(status_error(405, "", "w"), errdefs.Unimplemented)
    assert isinstance(status_error(416, "", "w"), errdefs.OutOfRange)
    assert isinstance(status_error(418, "", "w"), errdefs.InvalidArgument)


def _manifest(**extra: Any) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": D1, "size": 2},
        "layers": [
            {"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": D2, "size": 3},
            {"mediaType": mediatypes.OCI_LAYER, "digest": D3, "size": 4},
        ],
        **extra,
    }
    return json.dumps(doc).encode()


def test_children_and_labels() -> None:
    m = Descriptor(mediatypes.OCI_MANIFEST, D1, 1)
    kids = children(m, _manifest())
    assert [k.role for k in kids] == ["config", "layer", "layer"]
    assert gc_labels(kids) == {
        "containerd.io/gc.ref.content.config": D1,
        "containerd.io/gc.ref.content.l.0": D2,
        "containerd.io/gc.ref.content.l.1": D3,
    }
    idx = Descriptor(mediatypes.OCI_INDEX, D1, 1)
    doc = {
        "manifests": [
            {
                "mediaType": mediatypes.OCI_MANIFEST,
                "digest": D2,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {"mediaType": mediatypes.DOCKER_MANIFEST, "digest": D3, "size": 1},
        ]
    }
    ikids = children(idx, json.dumps(doc).encode())
    assert ikids[0].platform == Platform("linux", "amd64")
    assert ikids[1].platform is None
    assert gc_labels(ikids) == {
        "containerd.io/gc.ref.content.m.0": D2,
        "containerd.io/gc.ref.content.m.1": D3,
    }
    for bad in [
        _manifest(mediaType=mediatypes.DOCKER_MANIFEST),
        _manifest(manifests=[]),
        json.dumps({"config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}, "layers": []}).encode(),
        json.dumps({"config": {"mediaType": "x", "digest": D1, "size": -1}, "layers": []}).encode(),
        b"[]",
    ]:
        with pytest.raises(errdefs.InvalidArgument):
            children(m, bad)
    with pytest.raises(errdefs.Unimplemented):
        children(Descriptor("text/plain", D1, 1), b"{}")
    assert merge_sources("b,a", "c") == "a,b,c"
    assert merge_sources("a", "a") == "a"
    assert ref_key(Descriptor(mediatypes.OCI_LAYER_GZIP, D1, 1)) == f"layer-{D1}"
    assert ref_key(Descriptor(mediatypes.DOCKER_MANIFEST_LIST, D1, 1)) == f"index-{D1}"
    assert ref_key(Descriptor(mediatypes.OCI_CONFIG, D1, 1)) == f"config-{D1}"


def _puller(fetch: Any) -> Puller:
    client: Any = types.SimpleNamespace(content=None)
    p = Puller(client, None, parse_reference("r.example/a:b"), [], ALL, 0, RegistryOptions())  # type: ignore[arg-type]
    p.fetch_manifest = fetch  # type: ignore[method-assign]
    return p


async def test_cycle_and_depth_guards() -> None:
    """A chain of manifests that comes back to one of its own (content no registry can
    serve verified, but a store could hold) is refused, as is one nested too deep."""
    root = Descriptor(mediatypes.OCI_INDEX, D1, 1)
    child = Descriptor(mediatypes.OCI_INDEX, D2, 1)

    async def cyclic(desc: Descriptor) -> list[Child]:
        return [Child(child if desc.digest == D1 else root, None, "manifest")]

    with pytest.raises(errdefs.InvalidArgument, match="references itself"):
        await _puller(cyclic).handle(root)

    depth = iter(range(1, 100))

    async def deep(desc: Descriptor) -> list[Child]:
        n = next(depth)
        return [Child(Descriptor(mediatypes.OCI_INDEX, "sha256:" + f"{n:064x}", 1), None, "manifest")]

    with pytest.raises(errdefs.InvalidArgument, match=f"deeper than {MAX_NESTING}"):
        await _puller(deep).handle(root)


def test_ctrd_registry_fixture(ctrd_registry: Any) -> None:
    """The pytest plugin's registry fixture: a started registry whose log is parsed."""
    from ctrd.testing.images import ImageBuilder, raw_layer, tar_layer

    img = ImageBuilder(ctrd_registry.url).push_image("fixture/app", "v1", [raw_layer(tar_layer({"a": b"a"}))])
    ctrd_registry.sync()
    puts = [e for e in ctrd_registry.requests("PUT") if e.status == 201]
    assert len(puts) == 3  # config, layer, manifest
    assert puts[-1].path == "/v2/fixture/app/manifests/v1"
    assert img.manifest.digest
