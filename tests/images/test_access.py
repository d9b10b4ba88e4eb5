"""Reaching registries: basic and bearer auth, credentials, TLS with a CA, hosts.toml mirrors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from ctrd import errdefs
from ctrd.client import Client, Credentials, RegistryOptions
from ctrd.testing import short_tmpdir
from ctrd.testing.images import ImageBuilder, PushedImage, gzip_layer, tar_layer
from ctrd.testing.registry import Registry, start_registry

from ._token import TokenServer
from .conftest import Backend, pull

USERS = {"alice": "s3cret"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def small_image(builder: ImageBuilder, repo: str = "auth/app", tag: str = "v1") -> PushedImage:
    return builder.push_image(repo, tag, [gzip_layer(tar_layer({"f": repo.encode()}))])


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def basic_registry() -> Iterator[Registry]:
    reg = start_registry(htpasswd=USERS)
    try:
        yield reg
    finally:
        reg.stop()


async def test_basic_auth(client: Client, backend: Backend, basic_registry: Registry, tmp: Path) -> None:
    reg = basic_registry
    img = small_image(ImageBuilder(reg.url, authorization=_basic("alice", "s3cret")))
    ref = f"{reg.host}/auth/app:v1"
    async with client.lease():
        with pytest.raises(errdefs.PermissionDenied, match="no credentials"):
            await pull(client, backend, ref, registry=RegistryOptions(docker_config=""))
        with pytest.raises(errdefs.PermissionDenied, match="401"):
            await pull(
                client, backend, ref, registry=RegistryOptions(credentials=lambda host: ("alice", "wrong"))
            )

        asked: list[str] = []

        async def creds(host: str) -> Credentials:
            asked.append(host)
            return Credentials("alice", "s3cret")

        got = await pull(client, backend, ref, registry=RegistryOptions(credentials=creds))
        assert got.target.digest == img.manifest.digest
        assert asked == [reg.host]  # asked once per pull and host

        # the same from Docker's config file (auths, base64 user:password)
        config = tmp / "config.json"
        config.write_text(
            json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}})
        )
        other = client.with_namespace(client.namespace + "-cfg")
        async with other.lease():
            got = await pull(other, backend, ref, registry=RegistryOptions(docker_config=config))
            assert got.target.digest == img.manifest.digest
    assert any(e.status == 401 for e in reg.access_log())


async def test_bearer_token_auth(client: Client, backend: Backend, tmp: Path) -> None:
    server = TokenServer(tmp, USERS)
    await server.start()
    reg = start_registry(token=server.auth())
    try:
        push_token = server.mint("alice", ["repository:auth/app:pull,push"])
        img = small_image(ImageBuilder(reg.url, authorization=f"Bearer {push_token}"))
        ref = f"{reg.host}/auth/app:v1"
        async with client.lease():
            with pytest.raises(errdefs.PermissionDenied, match="token"):
                await pull(
                    client, backend, ref, registry=RegistryOptions(credentials=lambda h: ("alice", "no"))
                )
            server.requests.clear()
            opts = RegistryOptions(credentials=lambda h: Credentials("alice", "s3cret"))
            got = await pull(client, backend, ref, registry=opts)
            assert got.target.digest == img.manifest.digest
            # one token for the pull's scope, reused by every request of the pull
            assert server.requests == [("alice", ["repository:auth/app:pull"])]
            assert await client.content.read_all(img.layers[0].digest) == img.layers[0].data
            # push to another repository: a token for pull,push there (and pull on the source to mount)
            await client.images.tag(ref, f"{reg.host}/auth/copy:v1")
            await client.images.push(f"{reg.host}/auth/copy:v1", registry=opts)
            scopes = {s for _, ss in server.requests for s in ss}
            assert "repository:auth/copy:pull,push" in scopes
            assert "repository:auth/app:pull" in scopes
    finally:
        reg.stop()
        await server.stop()


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_registry(tls_ca: trustme.CA) -> Iterator[tuple[Registry, Path]]:
    d = short_tmpdir("tls-")
    cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    tls_ca.cert_pem.write_to_path(str(d / "ca.pem"))
    reg = start_registry(tls=(str(d / "server.pem"), str(d / "server.pem")))
    try:
        yield reg, d / "ca.pem"
    finally:
        reg.stop()
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


async def test_tls_with_a_ca_file(
    client: Client, backend: Backend, tls_registry: tuple[Registry, Path], tmp: Path
) -> None:
    reg, ca = tls_registry
    img = small_image(ImageBuilder(reg.url, cafile=str(ca)))
    ref = f"{reg.host}/auth/app:v1"
    async with client.lease():
        # loopback defaults to plain HTTP: the TLS port does not speak it
        with pytest.raises((errdefs.Unavailable, errdefs.InvalidArgument, errdefs.Unknown)):
            await pull(client, backend, ref, registry=RegistryOptions(retries=0))
        with pytest.raises(errdefs.Unavailable, match="certificate"):
            await pull(client, backend, ref, registry=RegistryOptions(plain_http=False, retries=0))
        got = await pull(client, backend, ref, registry=RegistryOptions(plain_http=False, ca_file=ca))
        assert got.target.digest == img.manifest.digest

        # the same through hosts.toml: server and a CA path relative to the host's directory
        hosts = tmp / "certs.d"
        host_dir = hosts / f"127.0.0.1_{reg.port}_"
        host_dir.mkdir(parents=True)
        (host_dir / "ca.pem").write_bytes(ca.read_bytes())
        (host_dir / "hosts.toml").write_text(f'server = "https://{reg.host}"\nca = "ca.pem"\n')
        other = client.with_namespace(client.namespace + "-hosts")
        async with other.lease():
            got = await pull(other, backend, ref, registry=RegistryOptions(hosts_dir=hosts))
            assert got.target.digest == img.manifest.digest
        (host_dir / "hosts.toml").write_text(f'server = "https://{reg.host}"\nskip_verify = true\n')
        third = client.with_namespace(client.namespace + "-skip")
        async with third.lease():
            got = await pull(third, backend, ref, registry=RegistryOptions(hosts_dir=hosts))
            assert got.target.digest == img.manifest.digest


async def test_hosts_toml_mirror(client: Client, backend: Backend, registry: Registry, tmp: Path) -> None:
    """``mirror.test`` is served by the test registry: a dead ``[host]`` first, then the
    mirror; requests carry ``ns=mirror.test``; labels and the record name the reference's
    registry, not the mirror."""
    small_image(ImageBuilder(registry.url), "mirrored/app", "v1")
    hosts = tmp / "certs.d"
    (hosts / "mirror.test").mkdir(parents=True)
    (hosts / "mirror.test" / "hosts.toml").write_text(
        'server = "https://mirror.test.invalid"\n'
        '[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n'
        f'[host."http://{registry.host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    since = registry.sync()
    async with client.lease():
        got = await pull(
            client,
            backend,
            "mirror.test/mirrored/app:v1",
            registry=RegistryOptions(hosts_dir=hosts, retries=0),
        )
        assert got.name == "mirror.test/mirrored/app:v1"
        infos = {i.digest: dict(i.labels) async for i in client.content.list()}
        assert all(
            v["containerd.io/distribution.source.mirror.test"] == "mirrored/app" for v in infos.values()
        )
    registry.sync()
    served = registry.requests(since=since)
    assert served
    assert all("ns=mirror.test" in e.uri for e in served if "/mirrored/app/" in e.path)
    (hosts / "mirror.test" / "hosts.toml").write_text('[host."http://x"]\n  capabilities = ["fly"]\n')
    with pytest.raises(errdefs.InvalidArgument, match="unknown capability"):
        await pull(client, backend, "mirror.test/mirrored/app:v1", registry=RegistryOptions(hosts_dir=hosts))
