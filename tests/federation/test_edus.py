"""Outbound EDUs: a local user's typing and read receipts reach the other servers
in the room (server-server API "Typing Notifications", "Receipts") and show in
their users' ``/sync`` ephemeral events; private receipts never leave the server."""

from __future__ import annotations

from typing import Any

from roomactors.testing import open_test_network


async def _ephemeral(hs: Any, token: str, room_id: str) -> list[dict[str, Any]]:
    status, body = await hs.api("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    assert status == 200, body
    room = body.get("rooms", {}).get("join", {}).get(room_id)
    return room["ephemeral"]["events"] if room else []


def _of(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == event_type]


async def test_typing_and_read_receipts_reach_the_other_server() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api(
            "POST", "/_matrix/client/v3/createRoom", token=alice.access_token, json={"preset": "public_chat"}
        )
        assert status == 200, body
        room_id = body["room_id"]
        status, body = await hs2.api(
            "POST", f"/_matrix/client/v3/join/{room_id}?via=hs1", token=bob.access_token, json={}
        )
        assert status == 200, body
        await net.settle()
        status, body = await hs1.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
            token=alice.access_token, json={"msgtype": "m.text", "body": "hello"},
        )
        assert status == 200, body
        event_id = body["event_id"]
        await net.settle()

        # Typing.
        status, _ = await hs1.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{alice.user_id}",
            token=alice.access_token, json={"typing": True, "timeout": 20_000},
        )
        assert status == 200
        await net.settle()
        typing = _of(await _ephemeral(hs2, bob.access_token, room_id), "m.typing")
        assert typing and typing[-1]["content"]["user_ids"] == [alice.user_id]
        edus = [r for r in net.requests_between("hs1", "hs2") if r.path.startswith("/_matrix/federation/v1/send/")]
        assert edus and all(r.status == 200 for r in edus)

        status, _ = await hs1.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{alice.user_id}",
            token=alice.access_token, json={"typing": False},
        )
        assert status == 200
        await net.settle()
        typing = _of(await _ephemeral(hs2, bob.access_token, room_id), "m.typing")
        assert all(t["content"]["user_ids"] == [] for t in typing)

        # A private receipt stays home; m.read federates.
        sent_before = len(net.requests_between("hs1", "hs2"))
        status, _ = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read.private/{event_id}",
            token=alice.access_token, json={},
        )
        assert status == 200
        await net.settle()
        assert len(net.requests_between("hs1", "hs2")) == sent_before
        receipts = _of(await _ephemeral(hs2, bob.access_token, room_id), "m.receipt")
        assert not any(alice.user_id in str(r["content"]) for r in receipts)

        status, _ = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}",
            token=alice.access_token, json={},
        )
        assert status == 200
        await net.settle()
        receipts = _of(await _ephemeral(hs2, bob.access_token, room_id), "m.receipt")
        assert receipts, "no m.receipt in bob's sync"
        read = receipts[-1]["content"][event_id]["m.read"]
        assert alice.user_id in read and isinstance(read[alice.user_id]["ts"], int)

        # And the other way: bob's typing reaches alice.
        status, _ = await hs2.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{bob.user_id}",
            token=bob.access_token, json={"typing": True, "timeout": 20_000},
        )
        assert status == 200
        await net.settle()
        typing = _of(await _ephemeral(hs1, alice.access_token, room_id), "m.typing")
        assert typing and typing[-1]["content"]["user_ids"] == [bob.user_id]
