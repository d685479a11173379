"""The in-process federation network (``roomactors.testing.open_test_network``):
routing into the destination's app with the target unchanged, the faults, the
request log, settle(), and (once wired) a signed request end to end."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from roomactors.clock import ManualClock
from roomactors.federation_client import FederationRequest, FederationResponse, FederationUnreachable
from roomactors.testing import InProcessNetwork, NetworkRequest, open_test_network
from roomactors.testing import roomactors_network  # noqa: F401  (the fixture, as users import it)

VERSIONS = "/_matrix/client/versions"


def get(destination: str, target: str, **headers: str) -> FederationRequest:
    return FederationRequest(destination=destination, method="GET", target=target, headers=headers, body=None)


async def send(net: InProcessNetwork, origin: str, destination: str, target: str = VERSIONS, **kw) -> FederationResponse:
    return await net.transport_for(origin).send(get(destination, target, **kw), timeout_s=600)


async def test_servers_come_up_with_their_own_names_and_files() -> None:
    async with open_test_network(3) as net:
        assert net.names == ["hs1", "hs2", "hs3"]
        assert [hs.server_name for hs in net] == ["hs1", "hs2", "hs3"]
        assert [hs.deps.server_name for hs in net] == ["hs1", "hs2", "hs3"]
        paths = {hs.settings.database.path for hs in net}
        assert len(paths) == 3 and all(path.is_file() for path in paths)
        assert all(hs.settings.federation.enabled and hs.settings.federation.bind == () for hs in net)
        keys = {hs.deps.signing_key.verify_key.encode() for hs in net}
        assert len(keys) == 3


async def test_a_request_reaches_the_destination_app() -> None:
    async with open_test_network(2) as net:
        response = await send(net, "hs1", "hs2")
        assert response.status == 200
        assert "versions" in orjson.loads(response.body)
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["Content-Type"] == response.headers["content-type"]  # case-insensitive
        assert net.requests == [NetworkRequest("hs1", "hs2", "GET", VERSIONS, 200, None, VERSIONS)]


async def test_the_key_endpoint_answers_for_the_destination() -> None:
    async with open_test_network(2) as net:
        response = await send(net, "hs1", "hs2", "/_matrix/key/v2/server")
        if response.status == 404:
            pytest.skip("GET /_matrix/key/v2/server is not routed yet")
        assert response.status == 200
        assert orjson.loads(response.body)["server_name"] == "hs2"


async def test_the_raw_target_reaches_the_app_unchanged() -> None:
    # X-Matrix signs the URI as sent: percent-encoding must survive the hop.
    seen: list[tuple[str, bytes, bytes, str | None]] = []
    async with open_test_network(2) as net:
        app = net["hs2"].app

        @app.before_request
        async def record() -> None:
            from quart import request

            seen.append(
                (request.path, request.scope["raw_path"], request.scope["query_string"], request.headers.get("Host"))
            )

        target = "/_matrix/federation/v1/state/%21abc%3Ahs1?event_id=%24ev%2Fx%3Ahs1&x=a+b"
        response = await send(net, "hs1", "hs2", target)
        assert response.status in (400, 401, 403, 404)  # unsigned: refused, but it arrived
        assert seen == [
            (
                "/_matrix/federation/v1/state/!abc:hs1",
                b"/_matrix/federation/v1/state/%21abc%3Ahs1",
                b"event_id=%24ev%2Fx%3Ahs1&x=a+b",
                "hs2",
            )
        ]
        assert net.requests[-1].path == "/_matrix/federation/v1/state/%21abc%3Ahs1"
        assert net.requests[-1].target == target


async def test_unknown_destination_is_unreachable() -> None:
    async with open_test_network(2) as net:
        with pytest.raises(FederationUnreachable):
            await send(net, "hs1", "hs9")
        assert net.requests[-1].status is None and net.requests[-1].error == "unknown destination"


async def test_partition_fails_both_ways_and_heal_restores() -> None:
    async with open_test_network(3) as net:
        net.partition({"hs1"}, {"hs2", "hs3"})
        for origin, destination in [("hs1", "hs2"), ("hs2", "hs1"), ("hs3", "hs1"), ("hs1", "hs3")]:
            with pytest.raises(FederationUnreachable):
                await send(net, origin, destination)
        assert (await send(net, "hs2", "hs3")).status == 200  # same side
        assert [r.error for r in net.requests] == ["partitioned"] * 4 + [None]
        net.heal()
        assert (await send(net, "hs1", "hs2")).status == 200
        assert (await send(net, "hs2", "hs1")).status == 200


async def test_partition_rejects_a_server_in_two_groups() -> None:
    async with open_test_network(2) as net:
        with pytest.raises(ValueError):
            net.partition({"hs1", "hs2"}, {"hs2"})


async def test_drop_count_loses_exactly_that_many() -> None:
    async with open_test_network(2) as net:
        rule = net.drop(from_="hs1", to="hs2", count=2)
        assert (await send(net, "hs2", "hs1")).status == 200  # other direction untouched
        for _ in range(2):
            with pytest.raises(FederationUnreachable):
                await send(net, "hs1", "hs2")
        assert (await send(net, "hs1", "hs2")).status == 200
        assert rule.matched == 2 and not rule.active
        assert [r.error for r in net.requests] == [None, "dropped", "dropped", None]


async def test_drop_without_count_lasts_until_cancelled() -> None:
    async with open_test_network(2) as net:
        rule = net.drop(to="hs2")
        for _ in range(3):
            with pytest.raises(FederationUnreachable):
                await send(net, "hs1", "hs2")
        rule.cancel()
        assert (await send(net, "hs1", "hs2")).status == 200


async def test_delay_advances_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_network(2) as net:
        net.delay(30, from_="hs1")
        start = trio.current_time()
        assert (await send(net, "hs1", "hs2")).status == 200
        assert trio.current_time() - start == pytest.approx(30, abs=0.5)
        start = trio.current_time()
        assert (await send(net, "hs2", "hs1")).status == 200  # not delayed
        assert trio.current_time() - start < 1


async def test_a_delay_past_the_timeout_is_a_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_network(2) as net:
        net.delay(120, to="hs2")
        start = trio.current_time()
        with pytest.raises(FederationUnreachable):
            await net.transport_for("hs1").send(get("hs2", VERSIONS), timeout_s=60)
        assert trio.current_time() - start == pytest.approx(60, abs=0.5)
        assert net.requests[-1].error == "timeout"


async def test_a_partition_made_while_a_request_travels_loses_it(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_network(2) as net:
        net.delay(10)
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(FederationUnreachable):
                    await send(net, "hs1", "hs2")

            nursery.start_soon(sender)
            await trio.sleep(5)
            net.partition({"hs1"}, {"hs2"})
        assert net.requests[-1].error == "partitioned"


async def test_intercept_replaces_the_response() -> None:
    async with open_test_network(2) as net:
        seen = []

        def evil(origin: str, request: FederationRequest, response: FederationResponse | None) -> FederationResponse:
            seen.append((origin, request.target, response.status if response else None))
            return FederationResponse(status=200, headers={"content-type": "application/json"}, body=b'{"evil":1}')

        rule = net.intercept(evil, to="hs2")
        response = await send(net, "hs1", "hs2")
        assert orjson.loads(response.body) == {"evil": 1}
        assert seen == [("hs1", VERSIONS, 200)]
        assert net.requests[-1].intercepted

        rule.cancel()
        net.intercept(lambda origin, request, response: None, to="hs2")  # keep the real answer
        assert "versions" in orjson.loads((await send(net, "hs1", "hs2")).body)


async def test_intercept_without_delivery_answers_alone() -> None:
    async with open_test_network(2) as net:
        async def peer(origin, request, response):
            assert response is None
            return FederationResponse(status=503, headers={}, body=b"")

        net.intercept(peer, to="hs2", deliver=False)
        assert (await send(net, "hs1", "hs2")).status == 503


async def test_per_server_clocks_and_overrides() -> None:
    clocks = {"hs1": ManualClock(1_000), "hs2": ManualClock(2_000)}
    async with open_test_network(
        2,
        clock=clocks,
        settings_overrides={"sync": {"default_timeline_limit": 7}},
        server_overrides={"hs2": {"registration": {"shared_secret": ""}}},
    ) as net:
        assert net["hs1"].deps.clock is clocks["hs1"] and net["hs2"].deps.clock is clocks["hs2"]
        assert net["hs1"].settings.sync.default_timeline_limit == 7
        assert net["hs2"].settings.registration.shared_secret == ""


async def test_register_and_client_api_on_each_server() -> None:
    async with open_test_network(
        2, server_overrides={"hs2": {"registration": {"shared_secret": ""}}}  # the m.login.dummy flow
    ) as net:
        alice = await net["hs1"].register("alice", admin=True)
        bob = await net["hs2"].register("bob")
        assert (alice.user_id, bob.user_id) == ("@alice:hs1", "@bob:hs2")
        status, body = await net["hs1"].api("GET", "/_matrix/client/v3/account/whoami", token=alice.access_token)
        assert (status, body["user_id"]) == (200, "@alice:hs1")
        status, body = await net["hs2"].api("POST", "/_matrix/client/v3/createRoom", token=bob.access_token, json={})
        assert status == 200 and body["room_id"].startswith("!")


async def test_settle_waits_for_delayed_requests_and_database_work(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        net.delay(5, to="hs2")
        done = []
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await send(net, "hs1", "hs2")
                done.append("request")

            async def client_work() -> None:
                await net["hs1"].api(
                    "POST", "/_matrix/client/v3/createRoom", token=alice.access_token, json={"name": "x"}
                )
                done.append("room")

            nursery.start_soon(later)
            nursery.start_soon(client_work)
            await net.settle()
            assert sorted(done) == ["request", "room"]
            assert net.busy() == [] and net.in_flight == 0
            assert all(hs.deps.db.statistics().in_flight == 0 for hs in net)


def wire_key_fetching(net: InProcessNetwork) -> None:
    # open_homeserver builds KeyService(client=None) until it wires the client itself.
    for hs in net:
        if hs.deps.keys is not None and hs.deps.keys.client is None:
            hs.deps.keys.client = hs.deps.federation


async def test_x_matrix_verifies_the_percent_encoded_target_through_the_network() -> None:
    from roomactors.federation_client import FederationError
    from roomactors.protocol.x_matrix import sign_request

    async with open_test_network(2) as net:
        if net["hs1"].deps.federation is None or net["hs2"].deps.keys is None:
            pytest.skip("open_homeserver does not wire deps.federation / deps.keys yet")
        wire_key_fetching(net)
        # Signed by hs1, verified by hs2 with the key it fetched from hs1 over the network:
        # past authentication, the room check answers (not 401).
        with pytest.raises(FederationError) as refused:
            await net["hs1"].deps.federation.get_json(
                "hs2", "/_matrix/federation/v1/state_ids/%21abc%3Ahs1", query={"event_id": "$x:hs1"}
            )
        assert refused.value.status == 403, refused.value
        assert [(r.origin, r.destination, r.path, r.status) for r in net.requests] == [
            ("hs2", "hs1", "/_matrix/key/v2/server", 200),
            ("hs1", "hs2", "/_matrix/federation/v1/state_ids/%21abc%3Ahs1", 403),
        ]
        assert net.requests[-1].target == "/_matrix/federation/v1/state_ids/%21abc%3Ahs1?event_id=%24x%3Ahs1"

        # The same signature over a differently spelled URI does not verify.
        signed = "/_matrix/federation/v1/state_ids/%21abc%3Ahs1?event_id=%24x%3Ahs1"
        header = sign_request(
            method="GET", uri=signed, origin="hs1", destination="hs2", content=None,
            signing_key=net["hs1"].deps.signing_key,
        )
        ok = await send(net, "hs1", "hs2", signed, Authorization=header)
        assert ok.status == 403
        respelled = await send(net, "hs1", "hs2", signed.replace("%21", "!"), Authorization=header)
        assert respelled.status == 401


async def test_a_signed_request_end_to_end() -> None:
    async with open_test_network(2) as net:
        client = net["hs1"].deps.federation
        if client is None:
            pytest.skip("open_homeserver does not wire deps.federation yet")
        answer = await client.get_json("hs2", "/_matrix/federation/v1/version")
        assert answer["server"]["name"]
        request = net.requests[-1]
        assert (request.origin, request.destination, request.path, request.status) == (
            "hs1", "hs2", "/_matrix/federation/v1/version", 200
        )


def test_sender_queues_waiting_out_a_backoff_count_as_idle() -> None:
    from types import SimpleNamespace as NS

    from roomactors.testing_network import _sender_busy

    def hub(in_flight: int = 0, **queues: NS) -> NS:
        return NS(statistics=lambda: NS(in_flight=in_flight), queue_statistics=queues.get)

    def queue(
        pdus: int = 0, edus: int = 0, catching_up: bool = False, backing_off: bool = False, in_flight: bool = False
    ) -> NS:
        return NS(pending_pdus=pdus, pending_edus=edus, catching_up=catching_up, backing_off=backing_off,
                  in_flight=in_flight)

    assert _sender_busy(hub(), ["hs2"]) is None
    assert _sender_busy(hub(hs2=queue(in_flight=True)), ["hs2"]) == "a transaction to hs2 is in flight"
    # A transaction held for a retry while the queue waits out its backoff is idle.
    assert _sender_busy(hub(in_flight=1, hs2=queue(in_flight=True, backing_off=True)), ["hs2"]) is None
    assert _sender_busy(hub(hs2=queue(pdus=3)), ["hs2"]) == "queue to hs2 has work"
    assert _sender_busy(hub(hs2=queue(catching_up=True)), ["hs2"]) == "queue to hs2 has work"
    assert _sender_busy(hub(hs2=queue(pdus=3, backing_off=True)), ["hs2"]) is None
    assert _sender_busy(hub(hs2=queue()), ["hs2", "hs3"]) is None


async def test_the_pytest_fixture_gives_two_servers(roomactors_network: InProcessNetwork) -> None:
    assert roomactors_network.names == ["hs1", "hs2"]
    assert (await send(roomactors_network, "hs2", "hs1")).status == 200
