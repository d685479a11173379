"""Two and three in-process servers: joins, messages both ways, invites, leave
(server-server API "Joining Rooms", "Transactions", "Inviting to a room",
"Leaving Rooms"), through the real composition on each side."""

from __future__ import annotations

from typing import Any

import pytest

from roomactors.testing import open_test_network

pytestmark = pytest.mark.parametrize("room_version", ["12", "10", "1"])


async def _sync_timeline(hs: Any, token: str, room_id: str) -> list[dict[str, Any]]:
    status, body = await hs.api("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    assert status == 200, body
    room = body["rooms"]["join"].get(room_id)
    return room["timeline"]["events"] if room else []


async def _messages(hs: Any, token: str, room_id: str) -> list[str]:
    status, body = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50", token=token)
    assert status == 200, body
    return [e["content"].get("body") for e in reversed(body["chunk"]) if e["type"] == "m.room.message"]


async def _state(hs: Any, token: str, room_id: str) -> dict[tuple[str, str], str]:
    status, body = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state", token=token)
    assert status == 200, body
    return {(e["type"], e["state_key"]): e["event_id"] for e in body}


async def test_join_and_talk_both_ways(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api(
            "POST", "/_matrix/client/v3/createRoom", token=alice.access_token,
            json={"preset": "public_chat", "room_version": room_version, "name": "fed"},
        )
        assert status == 200, body
        room_id = body["room_id"]
        status, body = await hs2.api(
            "POST", f"/_matrix/client/v3/join/{room_id}?via=hs1", token=bob.access_token, json={}
        )
        assert status == 200, body
        await net.settle()
        # hs1 sees bob's join
        state1 = await _state(hs1, alice.access_token, room_id)
        assert ("m.room.member", bob.user_id) in state1
        # messages both ways
        status, _ = await hs1.api("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                                  token=alice.access_token, json={"msgtype": "m.text", "body": "hi bob"})
        assert status == 200
        await net.settle()
        status, _ = await hs2.api("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                                  token=bob.access_token, json={"msgtype": "m.text", "body": "hi alice"})
        assert status == 200
        await net.settle()
        assert await _messages(hs1, alice.access_token, room_id) == ["hi bob", "hi alice"]
        assert await _messages(hs2, bob.access_token, room_id) == ["hi bob", "hi alice"]
        assert await _state(hs1, alice.access_token, room_id) == await _state(hs2, bob.access_token, room_id)
