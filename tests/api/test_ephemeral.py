"""Typing, receipts, read markers and presence over HTTP, and how they reach /sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from quart_trio import QuartTrio

from tests.helpers.client import Api, make_settings, register


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)  # rate limits off; `alice`/`bob` come from conftest


@pytest.fixture
async def room(alice: Api, bob: Api) -> str:
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    return room_id


def ephemeral(sync: dict[str, Any], room_id: str, kind: str) -> list[dict[str, Any]]:
    section = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in section.get("ephemeral", {}).get("events", []) if e["type"] == kind]


# ------------------------------------------------------------------------ typing


async def test_typing_start_stop_and_sync(app: QuartTrio, homeserver: Any, alice: Api, bob: Api, room: str) -> None:
    since = (await bob.sync())["next_batch"]
    assert await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 30000}) == {}
    sync = await bob.sync(since)
    assert ephemeral(sync, room, "m.typing") == [{"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True})
    both = await alice.sync(since)
    assert ephemeral(both, room, "m.typing")[0]["content"]["user_ids"] == sorted([alice.user_id, bob.user_id])
    # Typing again only refreshes the deadline: no change for syncs.
    serial = homeserver.typing.serial
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 30000})
    assert homeserver.typing.serial == serial
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": False})
    stopped = await bob.sync(sync["next_batch"])
    assert ephemeral(stopped, room, "m.typing")[0]["content"]["user_ids"] == [bob.user_id]
    # Initial syncs show current typing only.
    assert ephemeral(await alice.sync(), room, "m.typing")[0]["content"]["user_ids"] == [bob.user_id]


async def test_typing_times_out(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    since = (await bob.sync())["next_batch"]
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 50})
    first = await bob.sync(since)
    assert ephemeral(first, room, "m.typing")[0]["content"]["user_ids"] == [alice.user_id]
    # A long poll is woken by the expiry.
    with trio.fail_after(5):
        expired = await bob.sync(first["next_batch"], timeout="3000")
    assert ephemeral(expired, room, "m.typing") == [{"type": "m.typing", "content": {"user_ids": []}}]


async def test_typing_errors(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    path = f"/rooms/{room}/typing/{alice.user_id}"
    assert (await alice.put(path, {})).err() == (400, "M_MISSING_PARAM")
    assert (await alice.put(path, {"typing": "yes"})).err() == (400, "M_BAD_JSON")
    assert (await alice.put(path, {"typing": True, "timeout": "soon"})).err() == (400, "M_BAD_JSON")
    assert (await alice.put(path, [])).err() == (400, "M_BAD_JSON")
    assert (await bob.put(path, {"typing": True})).err() == (403, "M_FORBIDDEN")
    outsider = await register(app, "carol")
    assert (await outsider.put(f"/rooms/{room}/typing/{outsider.user_id}", {"typing": True})).err() \
        == (403, "M_FORBIDDEN")


# ------------------------------------------------------------------------ receipts and read markers


async def test_receipts(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    event = await alice.send(room, "read me")
    since = (await alice.sync())["next_batch"]
    assert await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{event}", {}) == {}
    receipts = ephemeral(await alice.sync(since), room, "m.receipt")
    assert list(receipts[0]["content"]) == [event]
    assert set(receipts[0]["content"][event]["m.read"]) == {bob.user_id}
    assert "thread_id" not in receipts[0]["content"][event]["m.read"][bob.user_id]
    # Threaded receipts carry their thread.
    since = (await alice.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{event}", {"thread_id": "main"})
    threaded = ephemeral(await alice.sync(since), room, "m.receipt")
    assert threaded[0]["content"][event]["m.read"][bob.user_id]["thread_id"] == "main"
    # No body at all is fine (the body is optional).
    assert (await bob.request("POST", f"/rooms/{room}/receipt/m.read/{event}")).status == 200


async def test_receipt_errors(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    event = await alice.send(room, "x")
    other_room = await alice.create_room()
    other_event = await alice.send(other_room, "elsewhere")
    base = f"/rooms/{room}/receipt"
    assert (await bob.post(f"{base}/m.bogus/{event}", {})).err() == (400, "M_INVALID_PARAM")
    assert (await bob.post(f"{base}/m.read/$missing", {})).err() == (404, "M_NOT_FOUND")
    assert (await bob.post(f"{base}/m.read/{other_event}", {})).err() == (404, "M_NOT_FOUND")
    for thread_id in ("", 5, None, ["main"]):
        assert (await bob.post(f"{base}/m.read/{event}", {"thread_id": thread_id})).err() == \
            (400, "M_INVALID_PARAM"), thread_id
    assert (await bob.post(f"{base}/m.fully_read/{event}", {"thread_id": "main"})).err() == (400, "M_INVALID_PARAM")
    outsider = await register(app, "carol")
    assert (await outsider.post(f"{base}/m.read/{event}", {})).err() == (403, "M_FORBIDDEN")


async def test_fully_read_and_read_markers(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    first = await alice.send(room, "one")
    second = await alice.send(room, "two")
    since = (await bob.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.fully_read/{first}", {})
    sync = await bob.sync(since)
    account = sync["rooms"]["join"][room]["account_data"]["events"]
    assert account == [{"type": "m.fully_read", "content": {"event_id": first}}]
    since = sync["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/read_markers", {"m.fully_read": second, "m.read": second})
    sync = await bob.sync(since)
    assert sync["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.fully_read", "content": {"event_id": second}}]
    assert bob.user_id in ephemeral(sync, room, "m.receipt")[0]["content"][second]["m.read"]
    assert sync["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0
    assert (await bob.post(f"/rooms/{room}/read_markers", {"m.read": 5})).err() == (400, "M_BAD_JSON")
    assert (await bob.post(f"/rooms/{room}/read_markers", {"m.read": "$missing"})).err() == (404, "M_NOT_FOUND")
    assert await bob.ok("POST", f"/rooms/{room}/read_markers", {}) == {}


async def test_receipt_for_a_v3_event_id_with_a_slash(app: QuartTrio, alice: Api) -> None:
    room = await alice.create_room(room_version="3")
    for _ in range(200):
        event = await alice.send(room, "x")
        if "/" in event:
            break
    else:  # pragma: no cover
        pytest.fail("no event ID with a slash")
    await alice.ok("POST", f"/rooms/{room}/receipt/m.read/{quote(event, safe='')}", {})
    assert event in ephemeral(await alice.sync(), room, "m.receipt")[0]["content"]


# ------------------------------------------------------------------------ presence


async def test_presence(app: QuartTrio, alice: Api, bob: Api, room: str) -> None:
    assert await alice.ok("PUT", f"/presence/{alice.user_id}/status",
                          {"presence": "unavailable", "status_msg": "lunch"}) == {}
    status = await bob.ok("GET", f"/presence/{alice.user_id}/status")
    assert status["presence"] == "unavailable" and status["status_msg"] == "lunch"
    assert isinstance(status["last_active_ago"], int) and status["currently_active"] is False
    since = (await bob.sync(set_presence="offline"))["next_batch"]
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online"})
    sync = await bob.sync(since, set_presence="offline")
    events = {e["sender"]: e for e in sync["presence"]["events"]}
    assert events[alice.user_id]["type"] == "m.presence"
    assert events[alice.user_id]["content"]["presence"] == "online"
    assert "status_msg" not in events[alice.user_id]["content"]  # PUT without status_msg clears it
    assert (await bob.put(f"/presence/{alice.user_id}/status", {"presence": "offline"})).err() == (403, "M_FORBIDDEN")
    assert (await alice.put(f"/presence/{alice.user_id}/status", {"presence": "away"})).err() \
        == (400, "M_INVALID_PARAM")
    assert (await alice.put(f"/presence/{alice.user_id}/status", {})).err() == (400, "M_MISSING_PARAM")
    assert (await alice.put(f"/presence/{alice.user_id}/status", {"presence": "online", "status_msg": 3})).err() \
        == (400, "M_BAD_JSON")
    assert (await alice.get("/presence/@nobody:localhost/status")).err() == (404, "M_NOT_FOUND")
    carol = await register(app, "carol")
    assert (await alice.ok("GET", f"/presence/{carol.user_id}/status"))["presence"] == "offline"
