"""ServerDiscovery (roomactors.discovery): each step of s2s "Resolving server names"
with an injected resolver and well-known fetcher, the caches on trio's mock clock,
and the deny-list on resolved addresses."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from roomactors.discovery import AddressDenied, DiscoveryError, ServerDiscovery, WellKnownResponse
from roomactors.protocol.server_discovery import Endpoint, IpFilter, Resolution, SrvRecord
from tests.federation.test_federation_client import FakeResolver


class FakeWellKnown:
    """Injected fetcher: ``answers[hostname]`` is a WellKnownResponse, None (unreachable)
    or missing (404)."""

    def __init__(self, answers: dict[str, WellKnownResponse | None] | None = None) -> None:
        self.answers = answers or {}
        self.fetched: list[str] = []
        self.gate: trio.Event | None = None

    async def __call__(self, hostname: str) -> WellKnownResponse | None:
        self.fetched.append(hostname)
        if self.gate is not None:
            await self.gate.wait()
        return self.answers.get(hostname, WellKnownResponse(404, {}, b""))


def ok(body: str, **headers: str) -> WellKnownResponse:
    return WellKnownResponse(200, {k.replace("_", "-"): v for k, v in headers.items()}, body.encode())


def discovery(resolver: FakeResolver, well_known: FakeWellKnown, *, deny=(), allow=()) -> ServerDiscovery:
    return ServerDiscovery(
        resolver=resolver, well_known=well_known, ip_filter=IpFilter(deny, allow), rng=random.Random(0)
    )


async def test_step_1_and_2_need_no_lookups() -> None:
    resolver, wk = FakeResolver(), FakeWellKnown()
    d = discovery(resolver, wk)
    r = await d.resolve("[2001:db8::1]")
    assert (r.endpoints, r.host_header, r.tls_name, r.sni, r.step) == (
        (Endpoint("2001:db8::1", 8448),), "[2001:db8::1]", "2001:db8::1", None, "1"
    )
    r = await d.resolve("example.test:1234")
    assert (r.endpoints, r.host_header, r.sni, r.step) == ((Endpoint("example.test", 1234),), "example.test:1234", "example.test", "2")
    assert resolver.queries == [] and wk.fetched == []


@pytest.mark.parametrize(
    ("m_server", "srv", "expected"),
    [
        ("10.1.2.3:99", {}, Resolution("example.test", (Endpoint("10.1.2.3", 99),), "10.1.2.3:99", "10.1.2.3", "3.1")),
        ("[::2]", {}, Resolution("example.test", (Endpoint("::2", 8448),), "[::2]", "::2", "3.1")),
        ("m.example.test:443", {}, Resolution("example.test", (Endpoint("m.example.test", 443),), "m.example.test:443", "m.example.test", "3.2")),
        (
            "m.example.test",
            {"_matrix-fed._tcp.m.example.test": [SrvRecord(0, 0, 8000, "t1.example.net.")],
             "_matrix._tcp.m.example.test": [SrvRecord(0, 0, 9000, "old.example.net.")]},
            Resolution("example.test", (Endpoint("t1.example.net", 8000),), "m.example.test", "m.example.test", "3.3"),
        ),
        (
            "m.example.test",
            {"_matrix._tcp.m.example.test": [SrvRecord(0, 0, 9000, "old.example.net.")]},
            Resolution("example.test", (Endpoint("old.example.net", 9000),), "m.example.test", "m.example.test", "3.4"),
        ),
        ("m.example.test", {}, Resolution("example.test", (Endpoint("m.example.test", 8448),), "m.example.test", "m.example.test", "3.5")),
    ],
    ids=["3.1-ipv4", "3.1-ipv6", "3.2", "3.3", "3.4", "3.5"],
)
async def test_step_3_delegation(m_server: str, srv: dict, expected: Resolution) -> None:
    resolver = FakeResolver(srv=srv)
    wk = FakeWellKnown({"example.test": ok(f'{{"m.server": "{m_server}"}}')})
    assert await discovery(resolver, wk).resolve("example.test") == expected
    assert wk.fetched == ["example.test"]


@pytest.mark.parametrize(
    ("answer", "srv", "step", "endpoint"),
    [
        (WellKnownResponse(404, {}, b""), {"_matrix-fed._tcp.example.test": [SrvRecord(0, 0, 8443, "fed.example.test")]}, "4", Endpoint("fed.example.test", 8443)),
        (ok("not json"), {"_matrix._tcp.example.test": [SrvRecord(0, 0, 8444, "old.example.test")]}, "5", Endpoint("old.example.test", 8444)),
        (ok('{"m.server": 5}'), {}, "6", Endpoint("example.test", 8448)),
        (None, {}, "6", Endpoint("example.test", 8448)),  # unreachable
        (ok('{"m.server": "x"}', cache_control="max-age=10"), {"_matrix-fed._tcp.example.test": [SrvRecord(0, 0, 0, ".")]}, "3.5", Endpoint("x", 8448)),
    ],
    ids=["4", "5", "6-invalid", "6-unreachable", "srv-dot-means-none"],
)
async def test_steps_4_to_6(answer, srv, step: str, endpoint: Endpoint) -> None:
    wk = FakeWellKnown({"example.test": answer})
    r = await discovery(FakeResolver(srv=srv), wk).resolve("example.test")
    assert (r.step, r.endpoints) == (step, (endpoint,))
    if step in ("4", "5", "6"):
        assert r.host_header == r.tls_name == "example.test"


async def test_invalid_server_name() -> None:
    with pytest.raises(DiscoveryError):
        await discovery(FakeResolver(), FakeWellKnown()).resolve("bad name")


async def test_well_known_cache_follows_headers(mock_clock: trio.testing.MockClock) -> None:
    wk = FakeWellKnown({"example.test": ok('{"m.server": "m.example.test:443"}', cache_control="max-age=3600")})
    d = discovery(FakeResolver(), wk)
    await d.resolve("example.test")
    mock_clock.jump(3599)
    assert (await d.resolve("example.test")).step == "3.2"
    assert wk.fetched == ["example.test"]
    # After expiry the host answers 404: the delegation is gone (steps 4-6).
    mock_clock.jump(2)
    wk.answers.clear()
    assert (await d.resolve("example.test")).step == "6"
    assert wk.fetched == ["example.test"] * 2


async def test_errors_are_cached_with_backoff(mock_clock: trio.testing.MockClock) -> None:
    wk = FakeWellKnown()
    d = discovery(FakeResolver(), wk)
    await d.resolve("example.test")
    mock_clock.jump(299)
    await d.resolve("example.test")
    assert len(wk.fetched) == 1  # cached for 5 min
    mock_clock.jump(2)
    await d.resolve("example.test")
    assert len(wk.fetched) == 2  # second failure: cached for 10 min
    mock_clock.jump(599)
    await d.resolve("example.test")
    assert len(wk.fetched) == 2
    mock_clock.jump(2)
    await d.resolve("example.test")
    assert len(wk.fetched) == 3


async def test_unreachable_well_known_keeps_a_known_delegation(mock_clock: trio.testing.MockClock) -> None:
    wk = FakeWellKnown({"example.test": ok('{"m.server": "m.example.test:443"}', cache_control="max-age=600")})
    d = discovery(FakeResolver(), wk)
    await d.resolve("example.test")
    mock_clock.jump(601)
    wk.answers["example.test"] = None  # a network blip
    assert (await d.resolve("example.test")).step == "3.2"
    mock_clock.jump(301)
    wk.answers["example.test"] = WellKnownResponse(404, {}, b"")  # now definitely gone
    assert (await d.resolve("example.test")).step == "6"


async def test_srv_results_are_reused_for_a_while(mock_clock: trio.testing.MockClock) -> None:
    resolver = FakeResolver(srv={"_matrix-fed._tcp.example.test": [SrvRecord(0, 0, 1, "t.example.test")]})
    d = discovery(resolver, FakeWellKnown())
    await d.resolve("example.test")
    await d.resolve("example.test")
    assert resolver.queries == ["SRV _matrix-fed._tcp.example.test"]
    mock_clock.jump(301)
    await d.resolve("example.test")
    assert resolver.queries == ["SRV _matrix-fed._tcp.example.test"] * 2


async def test_concurrent_lookups_share_one_fetch() -> None:
    wk = FakeWellKnown({"example.test": ok('{"m.server": "m.example.test:443"}')})
    wk.gate = trio.Event()
    d = discovery(FakeResolver(), wk)
    results: list[Resolution] = []

    async def lookup() -> None:
        results.append(await d.resolve("example.test"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(lookup)
        await trio.testing.wait_all_tasks_blocked()
        wk.gate.set()
    assert wk.fetched == ["example.test"]
    assert len(results) == 5 and len(set(results)) == 1


async def test_addresses_apply_the_denylist() -> None:
    resolver = FakeResolver({"mixed.test": ["127.0.0.1", "93.184.216.34", "::1"], "local.test": ["127.0.0.1", "::1"]})
    d = discovery(resolver, FakeWellKnown(), deny=["127.0.0.0/8", "::1/128"], allow=["127.0.0.2/32"])
    assert await d.addresses(Endpoint("mixed.test", 8448)) == ["93.184.216.34"]
    with pytest.raises(AddressDenied):
        await d.addresses(Endpoint("local.test", 8448))
    with pytest.raises(AddressDenied):
        await d.addresses(Endpoint("127.0.0.1", 8448))
    assert await d.addresses(Endpoint("127.0.0.2", 8448)) == ["127.0.0.2"]  # allowlist wins
    with pytest.raises(DiscoveryError):
        await d.addresses(Endpoint("nowhere.test", 8448))
    assert "A 127.0.0.1" not in resolver.queries  # IP literals are not looked up


async def test_system_resolver_addresses_use_the_system_lookup() -> None:
    from roomactors.discovery import SystemResolver

    resolver = SystemResolver()
    assert "127.0.0.1" in await resolver.addresses("localhost")
    assert await resolver.addresses("does-not-exist.invalid") == []
