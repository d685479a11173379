"""Device lists over federation on the in-process network (server-server "Device
Management"): m.device_list_update EDUs with stream_id / prev_id through the
durable outbox, the remote cache answering /keys/query, a lost EDU → a gap →
resync through /user/devices, invalidation when no room is shared any more,
remote /keys/claim, m.signing_key_update, and forged EDUs ignored."""

from __future__ import annotations

from typing import Any

import orjson

from roomactors.federation_client import FederationResponse
from roomactors.testing import open_test_network
from storage import remote_devices
from tests.helpers.e2e_keys import CrossSigning, Device
from tests.helpers.federation import alice_and_bob_in_a_room, create_room, join

V3 = "/_matrix/client/v3"
USER_DEVICES = "/_matrix/federation/v1/user/devices/"
USER_KEYS_QUERY = "/_matrix/federation/v1/user/keys/query"
USER_KEYS_CLAIM = "/_matrix/federation/v1/user/keys/claim"


async def sync(hs: Any, user: Any, since: str | None = None) -> dict[str, Any]:
    query = "?timeout=0" + (f"&since={since}" if since else "")
    status, body = await hs.api("GET", f"{V3}/sync{query}", token=user.access_token)
    assert status == 200, body
    return body


def changed_left(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    dl = body.get("device_lists", {})
    return dl.get("changed", []), dl.get("left", [])


async def upload(hs: Any, user: Any, device: Device, **extra: Any) -> dict[str, Any]:
    status, body = await hs.api("POST", f"{V3}/keys/upload", token=user.access_token,
                                json={"device_keys": device.device_keys(), **extra})
    assert status == 200, body
    return body


async def query(hs: Any, user: Any, wanted: dict[str, list[str]]) -> dict[str, Any]:
    status, body = await hs.api("POST", f"{V3}/keys/query", token=user.access_token, json={"device_keys": wanted})
    assert status == 200, body
    return body


async def login(hs: Any, user: Any, device_id: str) -> dict[str, Any]:
    status, body = await hs.api("POST", f"{V3}/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": "password", "device_id": device_id})
    assert status == 200, body
    return body


async def new_device(hs: Any, user: Any, device_id: str, *, keys: bool = True) -> Any:
    """Log ``user`` in on a new device (and upload its keys): the session."""
    from roomactors.testing import RegisteredUser

    body = await login(hs, user, device_id)
    session = RegisteredUser(user.user_id, body["access_token"], device_id, "password")
    if keys:
        await upload(hs, session, Device(user.user_id, device_id))
    return session


def count(net: Any, origin: str, destination: str, prefix: str) -> int:
    return sum(1 for r in net.requests_between(origin, destination) if r.path.startswith(prefix))


class EduLog:
    """Records the EDUs of every /send from one server to another (intercept, delivered)."""

    def __init__(self, net: Any, origin: str, destination: str) -> None:
        self.edus: list[dict[str, Any]] = []
        net.intercept(self._see, from_=origin, to=destination)

    def _see(self, origin: str, request: Any, response: Any) -> None:
        if request.target.startswith("/_matrix/federation/v1/send/") and request.body:
            self.edus.extend(orjson.loads(request.body).get("edus", []))
        return None

    def of(self, edu_type: str) -> list[dict[str, Any]]:
        return [e["content"] for e in self.edus if e.get("edu_type") == edu_type]


async def cached(hs: Any, user_id: str) -> remote_devices.CachedUser | None:
    return (await hs.deps.db.read(remote_devices.get_cached_users, [user_id])).get(user_id)


async def test_a_new_device_reaches_the_remote_room_mate_and_is_cached() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        log = EduLog(net, "hs1", "hs2")
        since = (await sync(hs2, bob))["next_batch"]

        laptop = Device(alice.user_id, alice.device_id)
        await upload(hs1, alice, laptop)
        await net.settle()
        got = await sync(hs2, bob, since)
        assert changed_left(got) == ([alice.user_id], [])
        since = got["next_batch"]
        first = log.of("m.device_list_update")
        assert len(first) == 1
        edu = first[0]
        assert edu["user_id"] == alice.user_id and edu["device_id"] == alice.device_id
        assert isinstance(edu["stream_id"], int) and edu["deleted"] is False
        assert edu["keys"]["keys"] == laptop.device_keys()["keys"]
        # The first EDU hs2 sees names a prev_id it never saw: a resync, through /user/devices.
        assert edu["prev_id"] and count(net, "hs2", "hs1", USER_DEVICES) == 1

        answer = await query(hs2, bob, {alice.user_id: []})
        assert set(answer["device_keys"][alice.user_id]) == {alice.device_id}
        assert answer["failures"] == {}
        assert count(net, "hs2", "hs1", USER_KEYS_QUERY) == 0  # from the cache

        # A new device: an incremental update chained on the last one.
        phone = Device(alice.user_id, "PHONE")
        alice_phone = await new_device(hs1, alice, "PHONE", keys=False)
        await upload(hs1, alice_phone, phone)
        await net.settle()
        updates = log.of("m.device_list_update")[1:]
        assert [u["device_id"] for u in updates] == ["PHONE", "PHONE"]
        assert updates[0]["prev_id"] == [edu["stream_id"]]
        assert updates[1]["prev_id"] == [updates[0]["stream_id"]] and updates[1]["stream_id"] > updates[0]["stream_id"]
        assert count(net, "hs2", "hs1", USER_DEVICES) == 1  # no gap, no resync
        got = await sync(hs2, bob, since)
        assert changed_left(got) == ([alice.user_id], [])

        before = len(net.requests)
        answer = await query(hs2, bob, {alice.user_id: []})
        assert set(answer["device_keys"][alice.user_id]) == {alice.device_id, "PHONE"}
        assert answer["device_keys"][alice.user_id]["PHONE"]["keys"] == phone.device_keys()["keys"]
        answer = await query(hs2, bob, {alice.user_id: ["PHONE"]})
        assert set(answer["device_keys"][alice.user_id]) == {"PHONE"}
        assert len(net.requests) == before  # served from hs2's cache: nothing on the network

        # Deleting a device: deleted=True, no keys.
        status, _ = await hs1.api("POST", f"{V3}/logout", token=alice_phone.access_token, json={})
        assert status == 200
        await net.settle()
        last = log.of("m.device_list_update")[-1]
        assert last["device_id"] == "PHONE" and last["deleted"] is True and "keys" not in last
        answer = await query(hs2, bob, {alice.user_id: []})
        assert set(answer["device_keys"][alice.user_id]) == {alice.device_id}


async def test_a_lost_edu_makes_a_gap_and_a_resync() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        await upload(hs1, alice, Device(alice.user_id, alice.device_id))
        await net.settle()
        assert count(net, "hs2", "hs1", USER_DEVICES) == 1
        assert (await cached(hs2, alice.user_id)) is not None

        # The next transaction hs1 -> hs2 is "answered" but never delivered: lost.
        def lose(origin: str, request: Any, response: Any) -> FederationResponse:
            return FederationResponse(200, {"content-type": "application/json"}, b'{"pdus": {}}')

        rule = net.intercept(lose, from_="hs1", to="hs2", deliver=False)
        await new_device(hs1, alice, "LOST")
        await net.settle()
        rule.cancel()
        assert set((await cached(hs2, alice.user_id)).devices) == {alice.device_id}

        await new_device(hs1, alice, "AFTER")  # prev_id names a lost EDU: a gap
        await net.settle()
        # A resync (or two: an update arriving while the user is stale resyncs again).
        assert count(net, "hs2", "hs1", USER_DEVICES) >= 2
        held = await cached(hs2, alice.user_id)
        assert set(held.devices) == {alice.device_id, "LOST", "AFTER"}
        state = (await hs2.deps.db.read(remote_devices.get_cache_states, [alice.user_id]))[alice.user_id]
        assert not state.stale


async def test_resync_retries_after_failure() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        rule = net.drop(from_="hs2", to="hs1")  # hs2 cannot reach hs1 (hs1 still reaches hs2)
        await new_device(hs1, alice, "NEW")
        await net.settle()
        state = (await hs2.deps.db.read(remote_devices.get_cache_states, [alice.user_id]))[alice.user_id]
        assert state.stale
        assert hs2.deps.device_lists.resyncs_failed >= 1
        rule.cancel()
        hs2.deps.device_lists.retry_now("hs1")  # as the backoff running out would
        await net.settle()
        state = (await hs2.deps.db.read(remote_devices.get_cache_states, [alice.user_id]))[alice.user_id]
        assert not state.stale
        # /user/devices lists the devices with keys (user_devices.yaml: keys required).
        assert set((await cached(hs2, alice.user_id)).devices) == {"NEW"}


async def test_leaving_the_last_shared_room_invalidates_the_cache() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        second = await create_room(hs1, alice, preset="public_chat")
        status, body = await join(hs2, bob, second, via="hs1")
        assert status == 200, body
        await upload(hs1, alice, Device(alice.user_id, alice.device_id))
        await net.settle()
        assert (await cached(hs2, alice.user_id)) is not None
        since = (await sync(hs2, bob))["next_batch"]

        status, _ = await hs1.api("POST", f"{V3}/rooms/{room}/leave", token=alice.access_token, json={})
        assert status == 200
        await net.settle()
        assert (await cached(hs2, alice.user_id)) is not None  # still one shared room
        status, _ = await hs1.api("POST", f"{V3}/rooms/{second}/leave", token=alice.access_token, json={})
        assert status == 200
        await net.settle()
        assert (await cached(hs2, alice.user_id)) is None
        assert changed_left(await sync(hs2, bob, since)) == ([], [alice.user_id])

        # A later query goes to hs1 every time (nothing cached for a stranger).
        for n in (1, 2):
            answer = await query(hs2, bob, {alice.user_id: []})
            assert set(answer["device_keys"][alice.user_id]) == {alice.device_id}
            assert count(net, "hs2", "hs1", USER_KEYS_QUERY) == n
        assert (await cached(hs2, alice.user_id)) is None


async def test_our_last_member_leaving_invalidates_the_cache() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        await upload(hs1, alice, Device(alice.user_id, alice.device_id))
        await net.settle()
        assert (await cached(hs2, alice.user_id)) is not None
        status, _ = await hs2.api("POST", f"{V3}/rooms/{room}/leave", token=bob.access_token, json={})
        assert status == 200
        await net.settle()
        assert (await cached(hs2, alice.user_id)) is None


async def test_query_fills_the_cache_then_serves_it() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        # No EDU has reached hs2 about alice yet (her device predates the room).
        assert (await cached(hs2, alice.user_id)) is None
        answer = await query(hs2, bob, {alice.user_id: []})
        assert answer["device_keys"][alice.user_id] == {}  # no keys uploaded
        assert count(net, "hs2", "hs1", USER_KEYS_QUERY) == 1
        assert (await cached(hs2, alice.user_id)) is not None
        await query(hs2, bob, {alice.user_id: []})
        assert count(net, "hs2", "hs1", USER_KEYS_QUERY) == 1


async def test_remote_claim_and_failures() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        laptop = Device(alice.user_id, alice.device_id)
        otks = laptop.otks(2)
        await upload(hs1, alice, laptop, one_time_keys=otks)
        await net.settle()
        status, body = await hs2.api("POST", f"{V3}/keys/claim", token=bob.access_token, json={
            "one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
        assert status == 200, body
        claimed = body["one_time_keys"][alice.user_id][alice.device_id]
        (key_id, key), = claimed.items()
        assert key_id in otks and key == otks[key_id]
        assert body["failures"] == {}
        assert count(net, "hs2", "hs1", USER_KEYS_CLAIM) == 1

        # An unreachable server is a failure by name, for claim and for an uncached query.
        net.partition({"hs1"}, {"hs2"})
        status, body = await hs2.api("POST", f"{V3}/keys/claim", token=bob.access_token, json={
            "one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}, "timeout": 1000})
        assert status == 200 and "hs1" in body["failures"] and body["one_time_keys"] == {}
        answer = await query(hs2, bob, {"@nobody:hs1": []})
        assert "hs1" in answer["failures"]
        net.heal()


async def test_signing_key_update_reaches_the_remote_cache() -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        log = EduLog(net, "hs1", "hs2")
        await upload(hs1, alice, Device(alice.user_id, alice.device_id))
        await net.settle()
        since = (await sync(hs2, bob))["next_batch"]
        cs = CrossSigning(alice.user_id)
        status, body = await hs1.api("POST", f"{V3}/keys/device_signing/upload", token=alice.access_token,
                                     json=cs.upload_body())
        assert status == 200, body
        await net.settle()
        (edu,) = log.of("m.signing_key_update")
        assert edu == {"user_id": alice.user_id, "master_key": cs.master_key,
                       "self_signing_key": cs.self_signing_key}
        assert changed_left(await sync(hs2, bob, since)) == ([alice.user_id], [])
        before = len(net.requests)
        answer = await query(hs2, bob, {alice.user_id: []})
        assert answer["master_keys"][alice.user_id]["keys"] == cs.master_key["keys"]
        assert answer["self_signing_keys"][alice.user_id]["keys"] == cs.self_signing_key["keys"]
        assert "user_signing_keys" not in answer or alice.user_id not in answer["user_signing_keys"]
        assert len(net.requests) == before


async def test_forged_and_stranger_edus_are_ignored() -> None:
    async with open_test_network(3) as net:
        hs1, hs2, alice, bob, room = await alice_and_bob_in_a_room(net, "10")
        hs3 = net["hs3"]
        await upload(hs1, alice, Device(alice.user_id, alice.device_id))
        await net.settle()
        held = await cached(hs2, alice.user_id)
        since = (await sync(hs2, bob))["next_batch"]
        resyncs = count(net, "hs2", "hs1", USER_DEVICES)
        forged = {"user_id": alice.user_id, "device_id": "EVIL", "stream_id": 10**6, "prev_id": [held.stream_id],
                  "deleted": False}
        stranger = {"user_id": "@carol:hs3", "device_id": "C", "stream_id": 1, "prev_id": [], "deleted": False}
        body = {"origin": "hs3", "origin_server_ts": 1, "pdus": [],
                "edus": [{"edu_type": "m.device_list_update", "content": forged},
                         {"edu_type": "m.device_list_update", "content": stranger},
                         {"edu_type": "m.signing_key_update", "content": {"user_id": alice.user_id,
                                                                         "master_key": CrossSigning(alice.user_id).master_key}}]}
        await hs3.deps.federation.put_json("hs2", "/_matrix/federation/v1/send/forged1", body)
        await net.settle()
        after = await cached(hs2, alice.user_id)
        assert set(after.devices) == set(held.devices) and after.stream_id == held.stream_id
        assert after.master_key is None
        assert count(net, "hs2", "hs1", USER_DEVICES) == resyncs
        assert count(net, "hs2", "hs3", USER_DEVICES) == 0  # carol shares no room: not tracked
        assert (await cached(hs2, "@carol:hs3")) is None
        assert changed_left(await sync(hs2, bob, since)) == ([], [])
