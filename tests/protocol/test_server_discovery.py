"""Pure server discovery (s2s "Resolving server names"): parsing, the per-step
decisions, well-known validation and cache lifetimes, SRV ordering, the IP deny-list."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from roomactors.protocol.server_discovery import (
    DEFAULT_PORT,
    Endpoint,
    IpFilter,
    Resolution,
    ServerName,
    SrvRecord,
    delegated_resolution,
    direct_resolution,
    error_cache_seconds,
    fallback_resolution,
    order_srv,
    parse_server_name,
    parse_well_known,
    srv_resolution,
    srv_service_names,
    well_known_cache_seconds,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.org", ServerName("example.org", None, False)),
        ("Example.ORG:8449", ServerName("example.org", 8449, False)),
        ("1.2.3.4", ServerName("1.2.3.4", None, True)),
        ("1.2.3.4:443", ServerName("1.2.3.4", 443, True)),
        ("[::1]", ServerName("::1", None, True)),
        ("[2001:DB8:0::1]:8448", ServerName("2001:db8::1", 8448, True)),
        ("localhost", ServerName("localhost", None, False)),
    ],
)
def test_parse_server_name(name: str, expected: ServerName) -> None:
    assert parse_server_name(name) == expected


@pytest.mark.parametrize("name", ["", "a b", "[::1", "::1", "example.org:0", "example.org:70000", "host:", "[::1]x"])
def test_parse_server_name_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        parse_server_name(name)


def test_netloc_round_trips() -> None:
    for name in ("example.org", "example.org:8449", "1.2.3.4:1", "[::1]:8448", "[::1]"):
        assert parse_server_name(name).netloc() == name


# ---------------------------------------------------------------- the steps


def test_step_1_ip_literal() -> None:
    r = direct_resolution("1.2.3.4", parse_server_name("1.2.3.4"))
    assert r == Resolution("1.2.3.4", (Endpoint("1.2.3.4", DEFAULT_PORT),), "1.2.3.4", "1.2.3.4", "1")
    assert r.sni is None  # no SNI for an IP address (s2s "TLS")
    r6 = direct_resolution("[::1]:8000", parse_server_name("[::1]:8000"))
    assert r6 is not None
    assert r6.endpoints == (Endpoint("::1", 8000),)
    assert r6.host_header == "[::1]:8000"  # "including the port if the server name included one"
    assert r6.tls_name == "::1" and r6.sni is None


def test_step_2_explicit_port() -> None:
    r = direct_resolution("example.org:8449", parse_server_name("example.org:8449"))
    assert r == Resolution(
        "example.org:8449", (Endpoint("example.org", 8449),), "example.org:8449", "example.org", "2"
    )
    assert r.sni == "example.org"


def test_step_3_needed_for_bare_hostname() -> None:
    assert direct_resolution("example.org", parse_server_name("example.org")) is None


def test_step_3_1_delegated_ip() -> None:
    r = delegated_resolution("example.org", parse_server_name("[2001:db8::2]:8000"))
    assert r == Resolution(
        "example.org", (Endpoint("2001:db8::2", 8000),), "[2001:db8::2]:8000", "2001:db8::2", "3.1"
    )
    r = delegated_resolution("example.org", parse_server_name("10.0.0.1"))
    assert r is not None and r.endpoints == (Endpoint("10.0.0.1", 8448),) and r.host_header == "10.0.0.1"


def test_step_3_2_delegated_with_port() -> None:
    r = delegated_resolution("example.org", parse_server_name("matrix.example.org:443"))
    assert r == Resolution(
        "example.org", (Endpoint("matrix.example.org", 443),), "matrix.example.org:443", "matrix.example.org", "3.2"
    )


def test_step_3_3_needs_srv() -> None:
    assert delegated_resolution("example.org", parse_server_name("matrix.example.org")) is None
    assert srv_service_names("matrix.example.org") == (
        "_matrix-fed._tcp.matrix.example.org",
        "_matrix._tcp.matrix.example.org",
    )


def test_srv_resolution_keeps_host_and_certificate_name() -> None:
    r = srv_resolution("example.org", "example.org", [Endpoint("fed1.example.net", 8443)], step="4")
    assert r.endpoints == (Endpoint("fed1.example.net", 8443),)
    assert r.host_header == "example.org" and r.tls_name == "example.org" and r.sni == "example.org"
    with pytest.raises(ValueError):
        srv_resolution("example.org", "example.org", [], step="4")


def test_fallback_is_port_8448() -> None:
    r = fallback_resolution("example.org", "example.org", step="6")
    assert r == Resolution("example.org", (Endpoint("example.org", 8448),), "example.org", "example.org", "6")


# ---------------------------------------------------------------- well-known


def test_parse_well_known() -> None:
    assert parse_well_known(b'{"m.server": "matrix.example.org:443"}') == ServerName("matrix.example.org", 443, False)
    assert parse_well_known('{"m.server": "matrix.example.org", "other": 1}').port is None


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"{}", b'{"m.server": 1}', b'{"m.server": ""}', b'{"m.server": "a b"}',
     b'{"m.server": "host:99999"}', b"\xff\xfe"],
)
def test_parse_well_known_rejects(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_well_known(body)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, 24 * 3600.0),  # default
        ({"cache-control": "max-age=3600"}, 3600.0),
        ({"cache-control": "public, max-age=7200, must-revalidate"}, 7200.0),
        ({"cache-control": 'max-age="4000"'}, 4000.0),
        ({"cache-control": "max-age=999999999"}, 48 * 3600.0),  # capped at 48 h
        ({"cache-control": "max-age=0"}, 300.0),  # our floor
        ({"cache-control": "no-store"}, 300.0),
        ({"expires": "Tue, 14 Nov 2023 22:30:00 GMT"}, 1000.0),  # NOW + 1000 s
        ({"expires": "garbage"}, 300.0),
        ({"cache-control": "max-age=600", "expires": "Tue, 14 Nov 2023 22:30:00 GMT"}, 600.0),
    ],
)
def test_well_known_cache_seconds(headers: dict[str, str], seconds: float) -> None:
    assert well_known_cache_seconds(headers, now=NOW) == seconds


def test_error_cache_backs_off_to_an_hour() -> None:
    assert [error_cache_seconds(n) for n in (1, 2, 3, 4, 5, 50)] == [300.0, 600.0, 1200.0, 2400.0, 3600.0, 3600.0]


# ---------------------------------------------------------------- SRV order


def test_srv_orders_by_priority() -> None:
    records = [SrvRecord(20, 0, 1, "c."), SrvRecord(10, 5, 2, "A.example."), SrvRecord(30, 0, 3, "d")]
    assert order_srv(records, random.Random(0)) == [Endpoint("a.example", 2), Endpoint("c", 1), Endpoint("d", 3)]


def test_srv_weights_within_a_priority() -> None:
    records = [SrvRecord(10, 90, 1, "heavy."), SrvRecord(10, 10, 2, "light."), SrvRecord(5, 0, 3, "first.")]
    rng = random.Random(1234)
    firsts = Counter()
    for _ in range(2000):
        order = order_srv(records, rng)
        assert order[0] == Endpoint("first", 3)
        assert sorted(e.host for e in order[1:]) == ["heavy", "light"]
        firsts[order[1].host] += 1
    assert 0.8 < firsts["heavy"] / 2000 < 0.97


def test_srv_zero_weights_are_uniform_and_dot_means_none() -> None:
    rng = random.Random(7)
    seen = {order_srv([SrvRecord(1, 0, 1, "a"), SrvRecord(1, 0, 2, "b")], rng)[0].host for _ in range(50)}
    assert seen == {"a", "b"}
    assert order_srv([SrvRecord(0, 0, 0, ".")], rng) == []
    assert order_srv([], rng) == []


# ---------------------------------------------------------------- IP filter


def test_ip_filter() -> None:
    f = IpFilter(["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fc00::/7"], ["10.1.0.0/16"])
    assert f.denies("127.0.0.1")
    assert f.denies("::1")
    assert f.denies("::ffff:127.0.0.1")  # IPv4-mapped: checked as IPv4 too
    assert f.denies("fd00::5")
    assert f.denies("10.2.3.4")
    assert not f.denies("10.1.2.3")  # allowlist wins
    assert not f.denies("93.184.216.34")
    assert not f.denies("2606:2800:220:1::1")
    assert not IpFilter([], []).denies("127.0.0.1")
    assert not IpFilter(["127.0.0.0/8"], ["127.0.0.1/32"]).denies("127.0.0.1")
    with pytest.raises(ValueError):
        f.denies("not-an-ip")
