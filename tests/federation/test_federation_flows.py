"""Federation flows across two and three in-process servers (server-server API
"Joining Rooms", "Inviting to a room", "Leaving Rooms (Rejecting Invites)",
"Knocking upon a room", "Transactions"), through the client-server API on each side."""

from __future__ import annotations

import pytest

from roomactors.testing import open_test_network
from tests.helpers.federation import (
    alice_and_bob_in_a_room,
    create_room,
    join,
    messages,
    send_state,
    send_text,
    state,
    sync,
)

pytestmark = pytest.mark.parametrize("room_version", ["12", "10"])


async def test_three_servers_messages_reach_all(room_version: str) -> None:
    async with open_test_network(3) as net:
        hs1, hs2, hs3 = net["hs1"], net["hs2"], net["hs3"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        carol = await hs3.register("carol")
        room_id = await create_room(hs1, alice, preset="public_chat", room_version=room_version)
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        status, body = await join(hs3, carol, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        await send_text(hs1, alice, room_id, "from hs1")
        await net.settle()
        await send_text(hs2, bob, room_id, "from hs2")
        await net.settle()
        await send_text(hs3, carol, room_id, "from hs3")
        await net.settle()
        expected = ["from hs1", "from hs2", "from hs3"]
        assert await messages(hs1, alice, room_id) == expected
        assert await messages(hs2, bob, room_id) == expected
        assert await messages(hs3, carol, room_id) == expected
        s1 = await state(hs1, alice, room_id)
        assert s1 == await state(hs2, bob, room_id) == await state(hs3, carol, room_id)
        assert {("m.room.member", u.user_id) for u in (alice, bob, carol)} <= set(s1)
        # hs2 learnt about carol's join from hs1 (hs1 sends to every server in the room)
        assert any(r.origin == "hs1" and r.destination == "hs3" and r.path.startswith("/_matrix/federation/v1/send/")
                   for r in net.requests)


async def test_remote_invite_join_leave(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await create_room(hs1, alice, preset="private_chat", room_version=room_version, name="secret")
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", token=alice.access_token,
            json={"user_id": bob.user_id},
        )
        assert status == 200, body
        await net.settle()
        # bob sees the invite with stripped state
        invites = (await sync(hs2, bob))["rooms"].get("invite", {})
        assert room_id in invites
        stripped = invites[room_id]["invite_state"]["events"]
        kinds = {(e["type"], e.get("state_key")) for e in stripped}
        assert ("m.room.name", "") in kinds
        assert ("m.room.member", bob.user_id) in kinds
        invite = next(e for e in stripped if e["type"] == "m.room.member" and e["state_key"] == bob.user_id)
        assert invite["content"]["membership"] == "invite"
        assert "event_id" not in invite or invite.get("sender") == alice.user_id
        # bob joins (no via: the inviter's server)
        status, body = await join(hs2, bob, room_id)
        assert status == 200, body
        await net.settle()
        s1 = await state(hs1, alice, room_id)
        assert ("m.room.member", bob.user_id) in s1
        await send_text(hs2, bob, room_id, "thanks")
        await net.settle()
        assert await messages(hs1, alice, room_id) == ["thanks"]
        # bob leaves; hs1 sees it
        status, body = await hs2.api("POST", f"/_matrix/client/v3/rooms/{room_id}/leave", token=bob.access_token, json={})
        assert status == 200, body
        await net.settle()
        status, member = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice.access_token
        )
        assert status == 200 and member["membership"] == "leave", member
        assert room_id not in (await sync(hs2, bob))["rooms"].get("join", {})


async def test_reject_remote_invite(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await create_room(hs1, alice, preset="private_chat", room_version=room_version)
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", token=alice.access_token,
            json={"user_id": bob.user_id},
        )
        assert status == 200, body
        await net.settle()
        assert room_id in (await sync(hs2, bob))["rooms"].get("invite", {})
        # rejecting: bob leaves while only invited -> make_leave/send_leave on hs1
        status, body = await hs2.api("POST", f"/_matrix/client/v3/rooms/{room_id}/leave", token=bob.access_token, json={})
        assert status == 200, body
        await net.settle()
        paths = {r.path.split("/")[4] for r in net.requests_between("hs2", "hs1") if r.status == 200}
        assert {"make_leave", "send_leave"} <= paths, paths
        status, member = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice.access_token
        )
        assert status == 200 and member["membership"] == "leave", member
        rooms = (await sync(hs2, bob))["rooms"]
        assert room_id not in rooms.get("invite", {})
        # and bob cannot join without a new invite
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 403, body


async def test_kick_and_ban_of_remote_user(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room_id = await alice_and_bob_in_a_room(net, room_version)
        # kick
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/kick", token=alice.access_token,
            json={"user_id": bob.user_id, "reason": "out"},
        )
        assert status == 200, body
        await net.settle()
        for hs, user in ((hs1, alice),):
            status, member = await hs.api(
                "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=user.access_token
            )
            assert member["membership"] == "leave", member
        assert room_id not in (await sync(hs2, bob))["rooms"].get("join", {})
        # kicked bob may rejoin a public room
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        # ban
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/ban", token=alice.access_token,
            json={"user_id": bob.user_id, "reason": "bye"},
        )
        assert status == 200, body
        await net.settle()
        status, member = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice.access_token
        )
        assert member["membership"] == "ban", member
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 403, body
        # bob's server cannot put anything into the room for him any more
        status, body = await hs2.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/late",
            token=bob.access_token, json={"msgtype": "m.text", "body": "still here"},
        )
        assert status in (403, 404), body
        await net.settle()
        assert "still here" not in await messages(hs1, alice, room_id)


async def test_name_topic_power_levels_propagate(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room_id = await alice_and_bob_in_a_room(net, room_version)
        status, body = await send_state(hs1, alice, room_id, "m.room.name", {"name": "Lobby"})
        assert status == 200, body
        status, power = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", token=alice.access_token
        )
        assert status == 200, power
        power["users"][bob.user_id] = 50
        power.setdefault("events", {})["m.room.topic"] = 50
        status, body = await send_state(hs1, alice, room_id, "m.room.power_levels", power)
        assert status == 200, body
        await net.settle()
        # bob, now a moderator, sets the topic from hs2
        status, body = await send_state(hs2, bob, room_id, "m.room.topic", {"topic": "fed talk"})
        assert status == 200, body
        await net.settle()
        for hs, user in ((hs1, alice), (hs2, bob)):
            status, name = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/", token=user.access_token)
            assert name == {"name": "Lobby"}
            status, topic = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/", token=user.access_token)
            assert topic["topic"] == "fed talk"
            status, pl = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", token=user.access_token)
            assert pl["users"][bob.user_id] == 50
        assert await state(hs1, alice, room_id) == await state(hs2, bob, room_id)
        # bob may not change the name (default state level 50 ... but raise it first)
        power["events"]["m.room.name"] = 100
        assert (await send_state(hs1, alice, room_id, "m.room.power_levels", power))[0] == 200
        await net.settle()
        status, body = await send_state(hs2, bob, room_id, "m.room.name", {"name": "Bob's"})
        assert status == 403, body


async def test_knock_then_invite(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await create_room(
            hs1, alice, preset="private_chat", room_version=room_version,
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        status, body = await hs2.api(
            "POST", f"/_matrix/client/v3/knock/{room_id}?via=hs1", token=bob.access_token, json={"reason": "let me in"}
        )
        assert status == 200, body
        assert body["room_id"] == room_id
        await net.settle()
        status, member = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice.access_token
        )
        assert status == 200 and member["membership"] == "knock", member
        assert room_id in (await sync(hs2, bob))["rooms"].get("knock", {})
        # alice accepts the knock by inviting bob; bob joins
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", token=alice.access_token,
            json={"user_id": bob.user_id},
        )
        assert status == 200, body
        await net.settle()
        assert room_id in (await sync(hs2, bob))["rooms"].get("invite", {})
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        status, member = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob.user_id}", token=alice.access_token
        )
        assert member["membership"] == "join", member
        assert await state(hs1, alice, room_id) == await state(hs2, bob, room_id)
