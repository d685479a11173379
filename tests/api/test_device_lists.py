"""Device lists for local users over HTTP: sync ``device_lists.changed/left`` when a
room-mate uploads keys, adds or deletes a device, or joins, leaves and rejoins a
shared room; ``GET /keys/changes``; a long poll woken by a room-mate's change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from quart_trio import QuartTrio

from tests.helpers.client import PASSWORD, Api, make_settings, register
from tests.helpers.e2e_keys import CrossSigning, Device


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)


def lists(sync: dict[str, Any]) -> tuple[list[str], list[str]]:
    dl = sync.get("device_lists", {})
    return dl.get("changed", []), dl.get("left", [])


async def room_with(alice: Api, *others: Api) -> str:
    room = await alice.create_room(preset="public_chat")
    for other in others:
        await other.join(room)
    return room


async def test_room_mate_device_changes_appear_in_changed(app: QuartTrio, alice: Api, bob: Api) -> None:
    await room_with(alice, bob)
    carol = await register(app, "carol")  # shares no room with bob
    since = (await bob.sync())["next_batch"]
    assert lists(await bob.sync(since)) == ([], [])  # the common empty case

    # alice uploads device keys
    dev = Device(alice.user_id, alice.device_id)
    await alice.ok("POST", "/keys/upload", {"device_keys": dev.device_keys()})
    got = await bob.sync(since)
    assert lists(got) == ([alice.user_id], [])
    since = got["next_batch"]

    # alice logs in a new device; carol (no shared room) does too
    phone = await alice.login(device_id="PHONE")
    await carol.login()
    got = await bob.sync(since)
    assert lists(got) == ([alice.user_id], [])
    since = got["next_batch"]

    # alice deletes it (UIA)
    first = await alice.request("DELETE", "/devices/PHONE", {})
    assert first.status == 401
    await alice.ok("DELETE", "/devices/PHONE", {"auth": {"type": "m.login.password", "session": first.body["session"],
                                                         "identifier": {"type": "m.id.user", "user": alice.user_id},
                                                         "password": PASSWORD}})
    assert (await phone.get("/account/whoami")).status == 401
    got = await bob.sync(since)
    assert lists(got) == ([alice.user_id], [])
    since = got["next_batch"]

    # alice uploads cross-signing keys (a signing-key change)
    cs = CrossSigning(alice.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", cs.upload_body())
    got = await bob.sync(since)
    assert lists(got) == ([alice.user_id], [])
    # nothing more: the next window is empty
    assert lists(await bob.sync(got["next_batch"])) == ([], [])


async def test_own_new_device_is_reported_to_the_user(app: QuartTrio, alice: Api) -> None:
    since = (await alice.sync())["next_batch"]
    await alice.login(device_id="SECOND")
    assert lists(await alice.sync(since)) == ([alice.user_id], [])


async def test_join_leave_rejoin(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await room_with(alice)
    since = (await alice.sync())["next_batch"]

    await bob.join(room)  # bob starts sharing a room with alice
    got = await alice.sync(since)
    assert lists(got) == ([bob.user_id], [])
    since = got["next_batch"]

    await bob.ok("PUT", f"/rooms/{room}/state/m.room.member/{bob.user_id}",
                 {"membership": "join", "displayname": "Bobby"})  # join -> join: nothing
    got = await alice.sync(since)
    assert lists(got) == ([], [])
    since = got["next_batch"]

    await bob.ok("POST", f"/rooms/{room}/leave", {})  # the last shared room
    got = await alice.sync(since)
    assert lists(got) == ([], [bob.user_id])
    since = got["next_batch"]

    await bob.login(device_id="AFTER")  # not sharing: not reported
    got = await alice.sync(since)
    assert lists(got) == ([], [])
    since = got["next_batch"]

    await bob.join(room)
    got = await alice.sync(since)
    assert lists(got) == ([bob.user_id], [])


async def test_leaving_one_of_two_shared_rooms_is_not_left(app: QuartTrio, alice: Api, bob: Api) -> None:
    first = await room_with(alice, bob)
    await room_with(alice, bob)
    since = (await alice.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{first}/leave", {})
    assert lists(await alice.sync(since)) == ([], [])


async def test_the_requester_joining_and_leaving(app: QuartTrio, alice: Api, bob: Api) -> None:
    carol = await register(app, "carol")
    room = await room_with(bob, carol)
    since = (await alice.sync())["next_batch"]
    await alice.join(room)  # alice's new room-mates
    got = await alice.sync(since)
    assert lists(got) == (sorted([bob.user_id, carol.user_id]), [])
    await alice.ok("POST", f"/rooms/{room}/leave", {})
    got2 = await alice.sync(got["next_batch"])
    assert lists(got2) == ([], sorted([bob.user_id, carol.user_id]))


async def test_keys_changes(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await room_with(alice, bob)
    start = (await alice.sync())["next_batch"]
    await bob.login(device_id="NEW")
    middle = (await alice.sync(start))["next_batch"]
    assert await alice.ok("GET", "/keys/changes", query={"from": start, "to": middle}) == {
        "changed": [bob.user_id], "left": []}
    await bob.ok("POST", f"/rooms/{room}/leave", {})
    end = (await alice.sync(middle))["next_batch"]

    assert await alice.ok("GET", "/keys/changes", query={"from": middle, "to": end}) == {
        "changed": [], "left": [bob.user_id]}
    # A window over both: bob no longer shares a room (sharing is judged now, as
    # Synapse does), so only left.
    assert await alice.ok("GET", "/keys/changes", query={"from": start, "to": end}) == {
        "changed": [], "left": [bob.user_id]}
    assert await alice.ok("GET", "/keys/changes", query={"from": end, "to": end}) == {"changed": [], "left": []}
    bad = await alice.get("/keys/changes", query={"from": start})
    assert bad.err() == (400, "M_MISSING_PARAM")
    bad = await alice.get("/keys/changes", query={"from": "nope", "to": end})
    assert bad.err() == (400, "M_INVALID_PARAM")
    assert (await Api(app).get("/keys/changes", query={"from": start, "to": end})).status == 401


async def test_a_room_mates_new_device_wakes_a_long_poll(app: QuartTrio, alice: Api, bob: Api) -> None:
    await room_with(alice, bob)
    since = (await bob.sync())["next_batch"]
    result: dict[str, Any] = {}

    async def poll() -> None:
        result["sync"] = await bob.sync(since, timeout=30_000)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.2)
            await alice.login(device_id="WAKE")
    assert lists(result["sync"]) == ([alice.user_id], [])


async def test_a_user_signing_signature_reaches_the_signers_other_devices_only(
    app: QuartTrio, alice: Api, bob: Api
) -> None:
    # "Key and signature security": alice's signature of bob's master key (by her
    # user-signing key) is visible to alice alone, so only her other devices learn of it.
    carol = await register(app, "carol")
    await room_with(alice, bob, carol)
    phone = await alice.login(device_id="PHONE")
    for api in (alice, phone, bob):
        await api.ok("POST", "/keys/upload", {"device_keys": Device(api.user_id, api.device_id).device_keys()})
    axs, bxs = CrossSigning(alice.user_id), CrossSigning(bob.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", axs.upload_body())
    await bob.ok("POST", "/keys/device_signing/upload", bxs.upload_body())
    tokens = {api.device_id: (await api.sync())["next_batch"] for api in (bob, carol, phone)}
    result: dict[str, Any] = {}

    async def poll() -> None:
        result["sync"] = await phone.sync(tokens[phone.device_id], timeout=30_000)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.2)
            body = await alice.ok("POST", "/keys/signatures/upload", {
                bob.user_id: {bxs.master.version: axs.sign_master_of(bxs.master_key)}})
            assert body == {"failures": {}}
    # The long poll of alice's other device woke with bob in ``changed``.
    assert lists(result["sync"]) == ([bob.user_id], [])
    assert lists(await phone.sync(tokens[phone.device_id])) == ([bob.user_id], [])
    end = result["sync"]["next_batch"]
    assert await phone.ok("GET", "/keys/changes", query={"from": tokens[phone.device_id], "to": end}) == {
        "changed": [bob.user_id], "left": []}
    assert lists(await phone.sync(end)) == ([], [])  # reported once
    # Nobody else gains anything: bob's and carol's windows are empty.
    for api in (bob, carol):
        assert lists(await api.sync(tokens[api.device_id])) == ([], [])
    # The same signature again is nothing new.
    await alice.ok("POST", "/keys/signatures/upload", {
        bob.user_id: {bxs.master.version: axs.sign_master_of(bxs.master_key)}})
    assert lists(await phone.sync(end)) == ([], [])
    # What alice's other device queries then: her signature on bob's master key.
    usk_id = f"ed25519:{axs.user_signing.version}"
    as_alice = await phone.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert usk_id in as_alice["master_keys"][bob.user_id]["signatures"][alice.user_id]
    as_carol = await carol.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert alice.user_id not in as_carol["master_keys"][bob.user_id].get("signatures", {})
