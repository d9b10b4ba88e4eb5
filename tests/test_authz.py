"""The namespace authorization policy (:mod:`ctrd.authz`) and its edge helpers, without a daemon."""

from __future__ import annotations

import contextvars
import ssl
from typing import Any

import pytest

from ctrd import authz, errdefs
from ctrd.authz import Access, Denied, Peer, Policy, Principal
from ctrd.server.authz import Authorizer
from ctrd.wire.peer import peer_of, tls_names

TEAM_A = Principal("team-a", uids=frozenset({1000}), namespaces=("team-a", "team-a-*"))
ADMIN_A = Principal("admin-a", gids=frozenset({2000}), namespaces=("team-a*",), manage_namespaces=True)
TLS_B = Principal("tls-b", tls_subjects=frozenset({"b.example"}), namespaces=("team-b",))


def unix(uid: int, gid: int = 65534) -> Peer:
    return Peer("unix", uid=uid, gid=gid, pid=42)


def policy(*principals: Principal, superusers: tuple[int, ...] = (0,)) -> Policy:
    return Policy(principals or (TEAM_A, ADMIN_A, TLS_B), superusers=superusers)


def test_a_uid_matches_its_principal_and_globs_match_whole_names() -> None:
    a = policy().access(unix(1000))
    assert a.matched
    assert not a.unrestricted
    assert [p.name for p in a.principals] == ["team-a"]
    assert a.sees("team-a")
    assert a.sees("team-a-ci")
    assert a.sees("team-a-")
    for other in ("team-b", "team-ab", "xteam-a", "TEAM-A", "team-a\n", "", "default"):
        assert not a.sees(other), other
    assert not a.manages("team-a")  # manage_namespaces = false


def test_gid_and_tls_names_match_and_grants_are_united() -> None:
    both = policy().access(unix(1000, gid=2000))
    assert [p.name for p in both.principals] == ["team-a", "admin-a"]
    assert both.sees("team-abc")  # only admin-a's pattern
    # managing comes only from the principal that has it, with its own patterns
    assert both.manages("team-a")
    assert both.manages("team-abc")
    assert not both.manages("team-b")
    tls = policy().access(Peer("tls", tls_names=("x.example", "b.example")))
    assert [p.name for p in tls.principals] == ["tls-b"]
    assert tls.sees("team-b")
    assert not tls.sees("team-a")


@pytest.mark.parametrize(
    "peer",
    [
        unix(1001),
        Peer("tcp", address="10.0.0.1:5000"),
        Peer("tls"),  # no (verified) certificate
        Peer("tls", tls_names=("B.example",)),  # exact match only
        Peer("unknown"),
        # a TLS client is never a superuser, whatever it claims
        Peer("tls", uid=0, tls_names=("root",)),
    ],
)
def test_unmatched_clients_match_nothing(peer: Peer) -> None:
    a = policy().access(peer)
    assert not a.matched
    assert not a.unrestricted
    assert not a.sees("team-a")
    assert not a.manages("team-a")


def test_superusers_unless_a_principal_lists_them() -> None:
    root = policy().access(unix(0, gid=0))
    assert root.unrestricted
    assert root.sees("anything")
    assert root.manages("anything")
    assert policy(superusers=(0, 1234)).access(unix(1234)).unrestricted
    listed = Principal("root-limited", uids=frozenset({0}), namespaces=("ops",))
    p = policy(TEAM_A, listed, superusers=(0, 1234))
    assert p.superusers == frozenset({1234})
    root = p.access(unix(0, gid=0))
    assert not root.unrestricted
    assert root.sees("ops")
    assert not root.sees("team-a")
    # a gid of 0 does not make a superuser, nor does listing gid 0 restrict root
    assert not policy().access(unix(1001, gid=0)).matched
    gid0 = Principal("gid0", gids=frozenset({0}), namespaces=("x",))
    assert policy(gid0).access(unix(0, gid=0)).unrestricted


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("", "must not be empty"),
        ("a" * 129, "longer than 128"),
        ("a/b", "may only hold"),
        ("team a", "may only hold"),
        ("tëam", "may only hold"),
    ],
)
def test_bad_patterns(pattern: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        authz.validate_pattern(pattern)
    with pytest.raises(ValueError, match=error):
        Policy([Principal("p", uids=frozenset({1}), namespaces=(pattern,))])


def test_glob_classes_and_question_mark() -> None:
    authz.validate_pattern("a" * 128)
    p = Policy([Principal("p", uids=frozenset({1}), namespaces=("ns-[0-9]", "ns-[!0-9]x", "q?"))])
    a = p.access(unix(1))
    assert a.sees("ns-5")
    assert a.sees("ns-ax")
    assert a.sees("qq")
    assert not a.sees("ns-55")
    assert not a.sees("ns-5x")
    assert not a.sees("q")
    assert not a.sees("qqq")


def test_limits() -> None:
    with pytest.raises(ValueError, match="at most 1024 principals"):
        Policy([Principal(f"p{i}", uids=frozenset({i})) for i in range(1025)])
    with pytest.raises(ValueError, match="at most 256 namespace patterns"):
        Policy([Principal("p", uids=frozenset({1}), namespaces=tuple(f"n{i}" for i in range(257)))])
    with pytest.raises(ValueError, match="at most 1024 uids"):
        Policy([Principal("p", uids=frozenset(range(1025)))])


def test_describe_is_bounded() -> None:
    peer = Peer("tls", tls_names=tuple("n" * 250 + str(i) for i in range(10)), address="[::1]:1")
    assert len(peer.describe()) <= 200
    names = [Principal("x" * 60 + str(i), uids=frozenset({7})) for i in range(20)]
    a = Policy(names).access(unix(7))
    assert len(a.describe()) <= 400
    assert unix(7).describe() == "unix uid=7 gid=65534 pid=42"


def _in_context(fn: Any, access: Access | None) -> Any:
    def run() -> Any:
        authz.set_for_request(access)
        return fn()

    return contextvars.copy_context().run(run)


def test_require_and_visibility_follow_the_request_access() -> None:
    a = policy().access(unix(1000))
    assert _in_context(authz.visibility, None) is None
    assert _in_context(authz.visibility, policy().access(unix(0))) is None
    vis = _in_context(authz.visibility, a)
    assert vis is not None
    assert vis("team-a")
    assert not vis("team-b")
    _in_context(lambda: authz.require("team-a"), a)
    with pytest.raises(Denied, match=r'^namespace "team-b" is not permitted: permission denied$'):
        _in_context(lambda: authz.require("team-b"), a)
    with pytest.raises(Denied, match=r'^managing namespace "team-a" is not permitted'):
        _in_context(lambda: authz.require_manage("team-a"), a)
    _in_context(lambda: authz.require_manage("anything"), None)  # in-process caller
    assert issubclass(Denied, errdefs.PermissionDenied)


# -- the edge -----------------------------------------------------------------------------


def test_authorizer_methods_and_the_per_client_cache() -> None:
    computed: list[Peer] = []
    pol = policy()
    access = pol.access

    def counting(peer: Peer) -> Access:
        computed.append(peer)
        return access(peer)

    pol.access = counting  # type: ignore[method-assign]
    az = Authorizer(pol)
    client = unix(1000)

    def call(method: str, ns: str | None, peer: Peer = client) -> Access | None:
        def run() -> Access | None:
            az.authorize(method, peer, ns)
            return authz.current()

        return contextvars.copy_context().run(run)

    # always allowed, without even working out the client's access
    assert call("/containerd.services.version.v1.Version/Version", "team-b") is None
    assert call("/grpc.health.v1.Health/Check", None) is None
    assert computed == []
    got = call("/containerd.services.content.v1.Content/Info", "team-a")
    assert got is not None
    assert got.sees("team-a")
    with pytest.raises(Denied, match='"team-b"'):
        call("/containerd.services.content.v1.Content/Info", "team-b")
    assert call("/containerd.services.content.v1.Content/Info", None) is not None  # the service fails it
    assert call("/containerd.services.content.v1.Content/Info", "") is not None
    # header-exempt methods: the service checks the namespaces they name
    assert call("/containerd.services.namespaces.v1.Namespaces/List", "team-b") is not None
    assert call("/containerd.services.events.v1.Events/Subscribe", "team-b") is not None
    with pytest.raises(Denied):
        call("/containerd.services.events.v1.Events/Publish", "team-b")
    with pytest.raises(Denied):
        call("/containerd.services.namespaces.v1.Namespaces/Update", "team-b")
    with pytest.raises(Denied):
        call("/some.thirdparty.v1.Service/Do", "team-b")
    assert computed == [client]  # worked out once for the client

    with pytest.raises(Denied, match="no authorization principal matches this client"):
        call("/containerd.services.namespaces.v1.Namespaces/List", None, unix(4242))
    # a client the transport could not identify (the server makes it "unknown") never gets in
    with pytest.raises(Denied):
        call("/x.v1.Y/Z", None, Peer("unknown"))


def test_tls_names_from_a_decoded_certificate() -> None:
    cert = {
        "subject": ((("organizationName", "o"),), (("commonName", "ci.example"),)),
        "subjectAltName": (("DNS", "ci.example"), ("IP Address", "10.0.0.1"), ("DNS", "b.example")),
    }
    assert tls_names(cert) == ("ci.example", "b.example")
    assert tls_names(None) == ()
    assert tls_names({}) == ()
    assert tls_names({"subjectAltName": (("DNS", "x" * 300),)}) == ()


class _Transport:
    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


class _SSLObject:
    def __init__(self, cert: Any) -> None:
        self.cert = cert

    def getpeercert(self) -> Any:
        return self.cert


def test_peer_of_tcp_and_tls_transports() -> None:
    assert peer_of(_Transport(peername=("10.1.2.3", 4000))) == Peer("tcp", address="10.1.2.3:4000")
    assert peer_of(_Transport(peername=("::1", 4000, 0, 0))).address == "[::1]:4000"
    cert = {"subject": ((("commonName", "c"),),)}
    assert peer_of(_Transport(ssl_object=_SSLObject(cert))) == Peer("tls", tls_names=("c",))
    assert peer_of(_Transport(ssl_object=_SSLObject({}))) == Peer("tls")
    assert isinstance(ssl.CERT_REQUIRED, ssl.VerifyMode)


def test_peer_of_a_unix_socket_reads_peer_credentials() -> None:
    import os
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer = peer_of(_Transport(socket=a))
    finally:
        a.close()
        b.close()
    assert peer == Peer("unix", uid=os.getuid(), gid=os.getgid(), pid=os.getpid())


def test_connections_of_the_same_principals_share_compiled_patterns() -> None:
    p = policy()
    one, two = p.access(unix(1000, gid=1)), p.access(unix(1000, gid=2))
    assert one.sees is not two.sees  # bound methods differ...
    assert one._sees is two._sees
    assert one._manages is two._manages
    assert p.access(unix(1000, gid=2000))._sees is not one._sees  # another set of principals
