"""A tiny token server for bearer auth (Docker's token protocol), on aiohttp, for tests.

It signs RS256 JWTs with a key whose certificate (in the token's ``x5c`` header) is issued
by a trustme test CA; docker-registry trusts that CA (``auth.token.rootcertbundle``).
``GET /token?service=…&scope=repository:<name>:<actions>`` answers ``{"token": …}`` for the
user in the Basic ``Authorization`` header when the password matches, 401 otherwise.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ctrd.testing.registry import TokenAuth

SERVICE = "ctrd-test-registry"
ISSUER = "ctrd-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues tokens for *users* (name -> password); :attr:`requests` records each request's
    (user, scopes)."""

    def __init__(self, directory: Path, users: dict[str, str]) -> None:
        self.users = users
        self.requests: list[tuple[str, list[str]]] = []
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        leaf = ca.issue_cert("token-signer", key_type=trustme.KeyType.RSA)
        self.root_bundle = directory / "token-ca.pem"
        ca.cert_pem.write_to_path(str(self.root_bundle))
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def mint(self, user: str, scopes: list[str]) -> str:
        """A signed token granting *scopes* (``repository:<name>:<a,b>``) to *user*."""
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
        sig = self._key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing.decode()}.{_b64(sig)}"

    async def _token(self, request: web.Request) -> web.Response:
        scopes = request.query.getall("scope", [])
        auth = request.headers.get("Authorization", "")
        user = ""
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(name) == password:
                user = name
        self.requests.append((user, list(scopes)))
        if not user:
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401
            )
        if request.query.get("service") != SERVICE:
            return web.json_response({"errors": [{"code": "DENIED", "message": "wrong service"}]}, status=400)
        return web.json_response({"token": self.mint(user, scopes), "expires_in": 300})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets: Any = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def auth(self) -> TokenAuth:
        """The registry's ``auth.token`` settings for this server."""
        return TokenAuth(
            realm=f"http://127.0.0.1:{self.port}/token",
            service=SERVICE,
            issuer=ISSUER,
            root_cert_bundle=str(self.root_bundle),
        )
