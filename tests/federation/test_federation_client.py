"""The outbound federation client over real TLS: HttpsTransport against a hypercorn
TLS server on 127.0.0.1:0 (self-signed certificate from ``api.tls``), with X-Matrix
signing checked end to end, the IP deny-list, certificate verification, SNI and
Host per discovery step, redirects for the well-known, and error mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from signedjson.key import get_verify_key

from api.settings import DEFAULT_IP_RANGE_DENYLIST
from roomactors.discovery import WellKnownResponse
from roomactors.federation_client import (
    FederationClient,
    FederationError,
    FederationRequest,
    FederationUnreachable,
    HttpsTransport,
    encode_target,
)
from roomactors.protocol.server_discovery import SrvRecord
from roomactors.protocol.x_matrix import parse_authorization, verify_request
from tests.federation.tls_server import TlsServer, start_tls_server
from tests.helpers.rooms import signing_key

ORIGIN = "origin.test"
KEY = signing_key(ORIGIN)
LOOPBACK_ALLOWED = ("127.0.0.1/32",)


class FakeResolver:
    """Injected DNS: ``hosts`` name -> addresses, ``srv_records`` SRV name -> records."""

    def __init__(self, hosts: dict[str, list[str]] | None = None, srv: dict[str, list[SrvRecord]] | None = None) -> None:
        self.hosts = hosts or {}
        self.srv_records = srv or {}
        self.queries: list[str] = []

    async def srv(self, name: str) -> list[SrvRecord]:
        self.queries.append(f"SRV {name}")
        return list(self.srv_records.get(name, []))

    async def addresses(self, host: str) -> list[str]:
        self.queries.append(f"A {host}")
        return list(self.hosts.get(host, []))


async def no_well_known(hostname: str) -> WellKnownResponse | None:
    return WellKnownResponse(404, {}, b"")


def https(
    *,
    verify: bool = False,
    server: TlsServer | None = None,
    allow: tuple[str, ...] = LOOPBACK_ALLOWED,
    resolver: FakeResolver | None = None,
    **kwargs: Any,
) -> HttpsTransport:
    return HttpsTransport(
        verify_certificates=verify,
        ip_range_denylist=DEFAULT_IP_RANGE_DENYLIST,
        ip_range_allowlist=allow,
        resolver=resolver or FakeResolver(),
        ssl_context=server.client_context() if server is not None and verify else None,
        **kwargs,
    )


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> TlsServer:
    return await start_tls_server(nursery, tmp_path)


async def test_signed_request_reaches_an_ip_literal_peer(server: TlsServer) -> None:
    destination = f"127.0.0.1:{server.port}"
    async with https() as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        seen = await client.put_json(
            destination,
            "/_matrix/federation/v1/send/t%2F1",
            {"pdus": [], "edus": []},
            query={"a": "x y", "list": ["1", "2&"]},
        )
    assert seen["method"] == "PUT"
    # The path is not re-encoded; the query is %-encoded, repeated keys for lists.
    assert seen["target"] == "/_matrix/federation/v1/send/t%2F1?a=x%20y&list=1&list=2%26"
    assert seen["headers"]["host"] == destination  # step 1: the server name, with its port
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["http_version"] == "1.1"
    assert orjson.loads(seen["body"]) == {"pdus": [], "edus": []}
    assert server.sni == [None]  # no SNI for an IP address
    header = parse_authorization(seen["headers"]["authorization"])
    assert (header.origin, header.destination, header.key_id) == (ORIGIN, destination, "ed25519:1")
    verify_request(
        header=header,
        method="PUT",
        uri=seen["target"],
        destination=destination,
        content=orjson.loads(seen["body"]),
        verify_key=get_verify_key(KEY),
    )


async def test_get_has_no_body_and_signs_without_content(server: TlsServer) -> None:
    destination = f"127.0.0.1:{server.port}"
    async with https() as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        seen = await client.get_json(destination, "/_matrix/key/v2/server")
    assert seen["body"] == "" and "content-type" not in seen["headers"]
    verify_request(
        header=parse_authorization(seen["headers"]["authorization"]),
        method="GET",
        uri="/_matrix/key/v2/server",
        destination=destination,
        content=None,
        verify_key=get_verify_key(KEY),
    )


async def test_verified_certificate_for_an_ip(server: TlsServer) -> None:
    async with https(verify=True, server=server) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        assert (await client.get_json(f"127.0.0.1:{server.port}", "/x"))["target"] == "/x"


async def test_self_signed_certificate_is_refused_when_verifying(server: TlsServer) -> None:
    # System CAs only: the self-signed certificate does not verify.
    async with https(verify=True) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationUnreachable):
            await client.get_json(f"127.0.0.1:{server.port}", "/x")
    assert server.requests == []


async def test_denylist_refuses_loopback_unless_allowlisted(server: TlsServer) -> None:
    async with https(allow=()) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationUnreachable, match="denylist"):
            await client.get_json(f"127.0.0.1:{server.port}", "/x")
        # A hostname resolving to a denied address is refused the same way.
        transport.discovery._resolver.hosts["hs.test"] = ["127.0.0.1"]  # type: ignore[attr-defined]
        with pytest.raises(FederationUnreachable, match="denylist"):
            await client.get_json(f"hs.test:{server.port}", "/x")
    assert server.requests == []


async def test_step_2_hostname_with_port_sends_sni_and_host(server: TlsServer) -> None:
    resolver = FakeResolver({"hs.test": ["127.0.0.1"]})
    async with https(verify=True, server=server, resolver=resolver) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        seen = await client.get_json(f"hs.test:{server.port}", "/x")
    assert seen["headers"]["host"] == f"hs.test:{server.port}"
    assert server.sni == ["hs.test"]
    assert resolver.queries == ["A hs.test"]  # no well-known, no SRV (step 2)


async def test_certificate_must_match_the_name(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_tls_server(nursery, tmp_path)
    resolver = FakeResolver({"other.test": ["127.0.0.1"]})  # not in the certificate
    async with https(verify=True, server=server, resolver=resolver) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationUnreachable):
            await client.get_json(f"other.test:{server.port}", "/x")
    assert server.requests == []


async def test_step_4_srv_connects_to_target_but_verifies_the_server_name(server: TlsServer) -> None:
    resolver = FakeResolver(
        {"fed.example.net": ["127.0.0.1"], "dead.example.net": ["127.0.0.1"]},
        {
            "_matrix-fed._tcp.example.test": [
                SrvRecord(1, 0, _closed_port(), "dead.example.net."),  # tried first, refuses
                SrvRecord(2, 0, server.port, "fed.example.net."),
            ]
        },
    )
    async with https(verify=True, server=server, resolver=resolver, well_known_fetcher=no_well_known) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        seen = await client.get_json("example.test", "/x")
    assert seen["headers"]["host"] == "example.test"
    assert server.sni == ["example.test"]  # the certificate is for the server name, not the SRV target
    assert resolver.queries == ["SRV _matrix-fed._tcp.example.test", "A dead.example.net", "A fed.example.net"]


async def test_well_known_over_https_with_a_redirect(nursery: trio.Nursery, tmp_path: Path) -> None:
    port_box: list[int] = []

    def handler(seen: dict[str, Any], body: bytes) -> Any:
        if seen["target"] == "/.well-known/matrix/server":
            return 302, [(b"location", b"/elsewhere")], b""
        if seen["target"] == "/elsewhere":
            payload = orjson.dumps({"m.server": f"delegated.test:{port_box[0]}"})
            return 200, [(b"cache-control", b"max-age=600")], payload
        return None

    server = await start_tls_server(nursery, tmp_path, handler)
    port_box.append(server.port)
    resolver = FakeResolver({"wk.test": ["127.0.0.1"], "delegated.test": ["127.0.0.1"]})
    async with https(verify=True, server=server, resolver=resolver, well_known_port=server.port) as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        seen = await client.get_json("wk.test", "/x")
        assert seen["headers"]["host"] == f"delegated.test:{server.port}"  # step 3.2
        again = await client.get_json("wk.test", "/y")  # cached: no second well-known fetch
    assert again["target"] == "/y"
    assert [r["target"] for r in server.requests] == ["/.well-known/matrix/server", "/elsewhere", "/x", "/y"]
    assert [r["headers"]["host"] for r in server.requests[:2]] == [f"wk.test:{server.port}"] * 2
    assert server.sni[:1] == ["wk.test"]
    # The signed destination is the original server name, never the delegated one.
    assert parse_authorization(seen["headers"]["authorization"]).destination == "wk.test"


async def test_well_known_redirect_loop_is_an_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    def handler(seen: dict[str, Any], body: bytes) -> Any:
        return 301, [(b"location", b"/.well-known/matrix/server")], b""

    server = await start_tls_server(nursery, tmp_path, handler)
    async with https(resolver=FakeResolver({"wk.test": ["127.0.0.1"]}), well_known_port=server.port) as transport:
        assert (await transport.fetch_well_known("wk.test")) == WellKnownResponse(0, {}, b"")
        assert (await transport.fetch_well_known("nowhere.test")) is None  # does not resolve


async def test_non_2xx_and_non_json(nursery: trio.Nursery, tmp_path: Path) -> None:
    def handler(seen: dict[str, Any], body: bytes) -> Any:
        if seen["target"] == "/forbidden":
            return 403, [], b'{"errcode": "M_FORBIDDEN", "error": "no"}'
        if seen["target"] == "/text":
            return 200, [], b"hello"
        if seen["target"] == "/bad-gateway":
            return 502, [], b"<html>"
        return None

    server = await start_tls_server(nursery, tmp_path, handler)
    destination = f"127.0.0.1:{server.port}"
    async with https() as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationError) as forbidden:
            await client.get_json(destination, "/forbidden")
        assert (forbidden.value.status, forbidden.value.errcode, forbidden.value.error) == (403, "M_FORBIDDEN", "no")
        assert forbidden.value.body == {"errcode": "M_FORBIDDEN", "error": "no"}
        with pytest.raises(FederationError) as text:
            await client.get_json(destination, "/text")
        assert (text.value.status, text.value.errcode) == (200, "M_NOT_JSON")
        with pytest.raises(FederationError) as gateway:
            await client.get_json(destination, "/bad-gateway")
        assert (gateway.value.status, gateway.value.errcode, gateway.value.body) == (502, None, b"<html>")


async def test_timeout_is_unreachable(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_tls_server(nursery, tmp_path, lambda seen, body: (None, [], b""))
    async with https() as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationUnreachable, match="no answer"):
            await client.request(f"127.0.0.1:{server.port}", "GET", "/hang", timeout_s=0.3)


async def test_connection_refused_and_bad_names_are_unreachable() -> None:
    async with https() as transport:
        client = FederationClient(transport, server_name=ORIGIN, signing_key=KEY, request_timeout_s=10)
        with pytest.raises(FederationUnreachable):
            await client.get_json(f"127.0.0.1:{_closed_port()}", "/x")
        with pytest.raises(FederationUnreachable):
            await client.get_json("not a server name", "/x")
        with pytest.raises(FederationUnreachable):  # does not resolve
            await client.get_json("nowhere.test:8448", "/x")
    with pytest.raises(FederationUnreachable, match="closed"):
        await transport.send(FederationRequest("127.0.0.1:1", "GET", "/x", {}, None), timeout_s=1)


async def test_transport_protocol_lets_tests_route_in_process() -> None:
    class Loopback:
        def __init__(self) -> None:
            self.sent: list[FederationRequest] = []

        async def send(self, request: FederationRequest, *, timeout_s: float) -> Any:
            from roomactors.federation_client import FederationResponse

            self.sent.append(request)
            return FederationResponse(200, {}, b'{"ok": true}')

    loop = Loopback()
    client = FederationClient(loop, server_name=ORIGIN, signing_key=KEY, request_timeout_s=5)
    assert await client.post_json("dest.test", "/p", {"a": 1}, query={"q": "1"}) == {"ok": True}
    (request,) = loop.sent
    assert (request.destination, request.method, request.target) == ("dest.test", "POST", "/p?q=1")
    assert request.body == b'{"a":1}'
    assert parse_authorization(request.headers["Authorization"]).destination == "dest.test"


def test_encode_target() -> None:
    assert encode_target("/a/%21b") == "/a/%21b"
    assert encode_target("/a", {}) == "/a"
    assert encode_target("/a", {"v": ["!room:x", "é"], "limit": "10"}) == "/a?v=%21room%3Ax&v=%C3%A9&limit=10"


def _closed_port() -> int:
    """A loopback port with nothing listening (bound then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

