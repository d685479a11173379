"""Backfill (server-server API "Backfilling and retrieving missing events"): a
server that joined late pages back through the room's history with ``/backfill``
when a client's ``/messages`` runs past what it holds; the history is stored with
negative stream orderings, so ``/sync`` never shows it as new."""

from __future__ import annotations

from typing import Any

import pytest

from roomactors.testing import open_test_network

pytestmark = pytest.mark.parametrize("room_version", ["12", "10", "1"])


async def _page(hs: Any, token: str, room_id: str, from_: str | None, limit: int) -> dict[str, Any]:
    query = f"dir=b&limit={limit}" + (f"&from={from_}" if from_ else "")
    status, body = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?{query}", token=token)
    assert status == 200, body
    return body


async def test_paginate_back_through_history_before_the_join(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api(
            "POST", "/_matrix/client/v3/createRoom", token=alice.access_token,
            json={"preset": "public_chat", "room_version": room_version},
        )
        assert status == 200, body
        room_id = body["room_id"]
        for i in range(30):
            status, _ = await hs1.api(
                "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/m{i}",
                token=alice.access_token, json={"msgtype": "m.text", "body": f"old {i}"},
            )
            assert status == 200
        status, body = await hs2.api(
            "POST", f"/_matrix/client/v3/join/{room_id}?via=hs1", token=bob.access_token, json={}
        )
        assert status == 200, body
        await net.settle()

        status, first = await hs2.api("GET", "/_matrix/client/v3/sync?timeout=0", token=bob.access_token)
        assert status == 200, first
        before_backfill = [e["event_id"] for e in first["rooms"]["join"][room_id]["timeline"]["events"]]

        # Page back 10 at a time: the join, then every message newest first, then
        # the room's creation events, ending at m.room.create.
        seen: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(20):
            page = await _page(hs2, bob.access_token, room_id, token, 10)
            seen.extend(page["chunk"])
            token = page.get("end")
            if token is None:
                break
        assert token is None, "pagination never reached the room's start"
        assert seen[0]["type"] == "m.room.member" and seen[0]["state_key"] == bob.user_id
        bodies = [e["content"]["body"] for e in seen if e["type"] == "m.room.message"]
        assert bodies == [f"old {i}" for i in range(29, -1, -1)]
        assert seen[-1]["type"] == "m.room.create"
        ids = [e["event_id"] for e in seen]
        assert len(ids) == len(set(ids))
        # What hs1 serves, hs2 now serves too, in the same order.
        full1 = await _page(hs1, alice.access_token, room_id, None, 100)
        assert [e["event_id"] for e in full1["chunk"]] == ids
        assert any(r.path.startswith("/_matrix/federation/v1/backfill/") for r in net.requests_between("hs2", "hs1"))

        # /sync after the backfill: nothing old is new.
        status, later = await hs2.api(
            "GET", f"/_matrix/client/v3/sync?timeout=0&since={first['next_batch']}", token=bob.access_token
        )
        assert status == 200, later
        room = later.get("rooms", {}).get("join", {}).get(room_id)
        assert room is None or not room["timeline"]["events"]
        # A fresh initial sync shows the latest events as before, no history mixed in.
        status, again = await hs2.api("GET", "/_matrix/client/v3/sync?timeout=0", token=bob.access_token)
        assert status == 200, again
        assert [e["event_id"] for e in again["rooms"]["join"][room_id]["timeline"]["events"]] == before_backfill

        # The room still works both ways after the backfill.
        status, _ = await hs1.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/new",
            token=alice.access_token, json={"msgtype": "m.text", "body": "new"},
        )
        assert status == 200
        await net.settle()
        page = await _page(hs2, bob.access_token, room_id, None, 1)
        assert page["chunk"][0]["content"]["body"] == "new"
