"""``GET /sync`` over HTTP: initial and incremental syncs, limited timelines,
full_state, filters (stored and inline), invite/knock/leave sections, ephemeral
events, unread counts, summaries, account data, presence and token errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from quart_trio import QuartTrio

from storage import userdata
from tests.helpers.client import Api, make_settings, register


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)  # rate limits off; `alice`/`bob` come from conftest


def joined(sync: dict[str, Any]) -> dict[str, Any]:
    return sync.get("rooms", {}).get("join", {})


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def state_keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}


async def shared_room(alice: Api, bob: Api, **create: Any) -> str:
    room = await alice.create_room(preset="public_chat", **create)
    await bob.join(room)
    return room


def inline(filter_json: dict[str, Any]) -> str:
    return json.dumps(filter_json)


# ------------------------------------------------------------------------ initial and incremental


async def test_initial_then_incremental(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob, name="Chat")
    await alice.send(room, "one")
    first = await bob.sync()
    assert isinstance(first["next_batch"], str) and first["next_batch"]
    section = joined(first)[room]
    assert set(section) >= {"timeline", "state", "ephemeral", "account_data", "unread_notifications", "summary"}
    timeline = section["timeline"]
    assert bodies(timeline["events"]) == ["one"]
    assert isinstance(timeline["prev_batch"], str)
    for event in timeline["events"] + section["state"]["events"]:
        assert {"event_id", "sender", "type", "content", "origin_server_ts"} <= set(event)
        assert "room_id" not in event and "auth_events" not in event and "signatures" not in event
    # Timeline and state together hold the whole current state, each event once.
    everything = [e["event_id"] for e in section["state"]["events"] + timeline["events"]]
    assert len(everything) == len(set(everything))
    keys = state_keys([e for e in section["state"]["events"] + timeline["events"] if "state_key" in e])
    assert {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", ""), ("m.room.name", ""),
            ("m.room.member", alice.user_id), ("m.room.member", bob.user_id)} <= keys

    # Nothing new: an incremental sync has no room sections.
    nothing = await bob.sync(first["next_batch"])
    assert joined(nothing) == {}
    # A new message arrives alone.
    await alice.send(room, "two")
    second = await bob.sync(nothing["next_batch"])
    assert bodies(joined(second)[room]["timeline"]["events"]) == ["two"]
    assert joined(second)[room]["timeline"]["limited"] is False
    assert joined(second)[room]["state"]["events"] == []
    # Syncing from an old token again gives the same answer (tokens are stateless).
    again = await bob.sync(nothing["next_batch"])
    assert bodies(joined(again)[room]["timeline"]["events"]) == ["two"]


async def test_invalid_since_and_parameters(app: QuartTrio, alice: Api) -> None:
    for since in ("garbage", "s1_2", "t5", "s1_2_3_4_5", "s-1_0_0", "s99999999999999999999_0_0", ""):
        reply = await alice.get("/sync", query={"since": since})
        if since == "":
            assert reply.status == 200  # an empty since is no since
        else:
            assert reply.err() == (400, "M_INVALID_PARAM"), since
    assert (await alice.get("/sync", query={"timeout": "soon"})).err() == (400, "M_INVALID_PARAM")
    assert (await alice.get("/sync", query={"full_state": "maybe"})).err() == (400, "M_INVALID_PARAM")
    assert (await alice.get("/sync", query={"set_presence": "away"})).err() == (400, "M_INVALID_PARAM")
    assert (await alice.get("/sync", query={"filter": "{nope"})).err() == (400, "M_NOT_JSON")
    assert (await alice.get("/sync", query={"filter": '{"room": {"timeline": {"limit": 0}}}'})).err() \
        == (400, "M_INVALID_PARAM")
    assert (await alice.get("/sync", query={"filter": "12345"})).status == 400


async def test_limited_timeline_with_prev_batch(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    sent = [await alice.send(room, f"m{i}") for i in range(15)]
    sync = await bob.sync(since)
    timeline = joined(sync)[room]["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == sent[-10:]
    # prev_batch continues backwards from the timeline's start.
    page = await bob.ok("GET", f"/rooms/{room}/messages", query={"from": timeline["prev_batch"], "dir": "b",
                                                                 "limit": "5"})
    assert [e["event_id"] for e in page["chunk"]] == list(reversed(sent[:5]))
    # A filter's limit.
    small = await bob.sync(since, filter=inline({"room": {"timeline": {"limit": 3}}}))
    assert [e["event_id"] for e in joined(small)[room]["timeline"]["events"]] == sent[-3:]
    assert joined(small)[room]["timeline"]["limited"] is True
    exact = await bob.sync(since, filter=inline({"room": {"timeline": {"limit": 15}}}))
    assert joined(exact)[room]["timeline"]["limited"] is False


async def test_full_state(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob, name="Full")
    since = (await bob.sync())["next_batch"]
    await alice.send(room, "new")
    full = await bob.sync(since, full_state="true")
    section = joined(full)[room]
    assert bodies(section["timeline"]["events"]) == ["new"]  # the timeline is still incremental
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", bob.user_id)} <= \
        state_keys(section["state"]["events"])
    # Even without changes, full_state returns every room at once.
    quiet = await bob.sync(full["next_batch"], full_state="true", timeout="5000")
    assert ("m.room.create", "") in state_keys(joined(quiet)[room]["state"]["events"])


async def test_state_changes_in_a_gap_are_in_state(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    await alice.ok("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "gap topic"})
    for i in range(12):
        await alice.send(room, f"m{i}")
    section = joined(await bob.sync(since))[room]
    assert section["timeline"]["limited"] is True
    topics = [e for e in section["state"]["events"] if e["type"] == "m.room.topic"]
    assert [e["content"]["topic"] for e in topics] == ["gap topic"]


async def test_use_state_after(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    name = await alice.ok("PUT", f"/rooms/{room}/state/m.room.name", {"name": "after"})
    sync = await bob.sync(since, use_state_after="true")
    section = joined(sync)[room]
    assert "state" not in section
    # state_after holds the state at the END of the timeline, the timeline's own
    # state events included.
    assert [e["event_id"] for e in section["state_after"]["events"]] == [name["event_id"]]
    assert name["event_id"] in [e["event_id"] for e in section["timeline"]["events"]]
    initial = joined(await bob.sync(use_state_after="true"))[room]
    assert "state" not in initial
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", bob.user_id)} <= \
        state_keys(initial["state_after"]["events"])
    plain = joined(await bob.sync(since))[room]
    assert "state_after" not in plain and "state" in plain


# ------------------------------------------------------------------------ filters


async def test_stored_filters(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    body = {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}, "presence": {"types": []},
            "event_fields": ["type", "content.body", "event_id"]}
    created = await bob.ok("POST", f"/user/{bob.user_id}/filter", body)
    filter_id = created["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    assert await bob.ok("GET", f"/user/{bob.user_id}/filter/{filter_id}") == body
    assert (await bob.get(f"/user/{bob.user_id}/filter/999")).err() == (404, "M_NOT_FOUND")
    assert (await bob.get(f"/user/{bob.user_id}/filter/abc")).err() == (404, "M_NOT_FOUND")
    assert (await alice.get(f"/user/{bob.user_id}/filter/{filter_id}")).err() == (403, "M_FORBIDDEN")
    # Another user's filter ID is not usable (it is not theirs).
    assert (await alice.get("/sync", query={"filter": filter_id})).status == 400
    assert (await bob.post(f"/user/{bob.user_id}/filter", {"room": {"timeline": {"limit": "x"}}})).err() \
        == (400, "M_BAD_JSON")

    for i in range(4):
        await alice.send(room, f"m{i}")
    await alice.ok("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "t"})
    sync = await bob.sync(filter=filter_id)
    events = joined(sync)[room]["timeline"]["events"]
    # Filtered before the limit: the last two *messages*, not the last two events.
    assert events == [{"type": "m.room.message", "content": {"body": "m2"}, "event_id": events[0]["event_id"]},
                      {"type": "m.room.message", "content": {"body": "m3"}, "event_id": events[1]["event_id"]}]
    assert joined(sync)[room]["timeline"]["limited"] is True


async def test_inline_filter_types_and_senders(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    await alice.send(room, "from alice")
    await bob.send(room, "from bob")
    await alice.send(room, type="com.example.custom", content={"x": 1})
    only_alice = await bob.sync(since, filter=inline({"room": {"timeline": {"senders": [alice.user_id]}}}))
    assert [e["sender"] for e in joined(only_alice)[room]["timeline"]["events"]] == [alice.user_id] * 2
    no_custom = await bob.sync(since, filter=inline({"room": {"timeline": {"not_types": ["com.example.*"]}}}))
    assert bodies(joined(no_custom)[room]["timeline"]["events"]) == ["from alice", "from bob"]
    assert len(joined(no_custom)[room]["timeline"]["events"]) == 2
    other = await alice.create_room()
    rooms_only = await alice.sync(filter=inline({"room": {"rooms": [other]}}))
    assert set(joined(rooms_only)) == {other}
    not_rooms = await alice.sync(filter=inline({"room": {"not_rooms": [other]}}))
    assert set(joined(not_rooms)) == {room}


async def test_lazy_load_members(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    carol = await register(app, "carol")
    dave = await register(app, "dave")
    await carol.join(room)
    await dave.join(room)
    for i in range(12):
        await carol.send(room, f"c{i}")
    lazy = inline({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 5}}})
    section = joined(await bob.sync(filter=lazy))[room]
    members = {e["state_key"] for e in section["state"]["events"] if e["type"] == "m.room.member"}
    # The timeline's senders (carol) and the syncing user; not alice or dave —
    # unless they are heroes (the summary's members must be loaded too).
    heroes = set(section["summary"]["m.heroes"])
    assert members == {carol.user_id, bob.user_id} | heroes
    assert ("m.room.create", "") in state_keys(section["state"]["events"])
    eager = joined(await bob.sync())[room]
    assert {e["state_key"] for e in eager["state"]["events"] if e["type"] == "m.room.member"} >= \
        {alice.user_id, bob.user_id, carol.user_id, dave.user_id} - {
            e["state_key"] for e in eager["timeline"]["events"] if e["type"] == "m.room.member"}


async def test_state_and_ephemeral_and_account_data_filters(app: QuartTrio, homeserver: Any, alice: Api,
                                                            bob: Api) -> None:
    room = await shared_room(alice, bob)
    event = await alice.send(room, "read me")
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{event}", {})
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000})
    await homeserver.db.write(userdata.set_account_data, bob.user_id, room, "com.example.tag", {"t": 1})
    await homeserver.db.write(userdata.set_account_data, bob.user_id, "", "com.example.global", {"g": 1})
    full = joined(await bob.sync())[room]
    assert {e["type"] for e in full["ephemeral"]["events"]} == {"m.receipt", "m.typing"}
    assert [e["type"] for e in full["account_data"]["events"]] == ["com.example.tag"]
    no_typing = joined(await bob.sync(filter=inline({"room": {"ephemeral": {"not_types": ["m.typing"]}}})))[room]
    assert [e["type"] for e in no_typing["ephemeral"]["events"]] == ["m.receipt"]
    none = await bob.sync(filter=inline({"room": {"ephemeral": {"types": []}, "account_data": {"types": []},
                                                  "state": {"types": ["m.room.name"]}},
                                         "account_data": {"not_types": ["com.example.global"]}}))
    section = joined(none)[room]
    assert section["ephemeral"]["events"] == []
    assert section["account_data"]["events"] == []
    assert all(e["type"] == "m.room.name" for e in section["state"]["events"])
    assert "com.example.global" not in [e["type"] for e in none.get("account_data", {}).get("events", [])]


async def test_event_format_federation(app: QuartTrio, alice: Api) -> None:
    room = await alice.create_room()
    await alice.send(room, "raw")
    sync = await alice.sync(filter=inline({"event_format": "federation"}))
    event = [e for e in joined(sync)[room]["timeline"]["events"] if e["type"] == "m.room.message"][0]
    assert {"auth_events", "prev_events", "hashes", "signatures", "depth", "room_id"} <= set(event)


# ------------------------------------------------------------------------ invite, knock, leave


async def test_invite_section_has_stripped_state(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(name="Secret plans", topic="shh")
    since = (await bob.sync())["next_batch"]
    await alice.invite(room, bob.user_id)
    sync = await bob.sync(since)
    assert room not in joined(sync)
    invite = sync["rooms"]["invite"][room]["invite_state"]["events"]
    by_key = {(e["type"], e["state_key"]): e for e in invite}
    assert by_key[("m.room.name", "")]["content"]["name"] == "Secret plans"
    assert ("m.room.create", "") in by_key and ("m.room.join_rules", "") in by_key
    own = by_key[("m.room.member", bob.user_id)]
    assert own["content"]["membership"] == "invite" and own["sender"] == alice.user_id
    for event in invite:  # stripped: only type, state_key, sender, content
        assert set(event) <= {"type", "state_key", "sender", "content"}
    # Once handled, it is not repeated.
    assert room not in (await bob.sync(sync["next_batch"]))["rooms"].get("invite", {})
    # The initial sync shows pending invites too.
    assert room in (await bob.sync())["rooms"]["invite"]
    # Joining moves it to join.
    await bob.join(room)
    after = await bob.sync(sync["next_batch"])
    assert room in joined(after) and room not in after["rooms"].get("invite", {})
    section = joined(after)[room]
    # A fresh join brings the room's whole state.
    assert ("m.room.create", "") in state_keys(section["state"]["events"] + [
        e for e in section["timeline"]["events"] if "state_key" in e])


async def test_leave_section_after_kick_and_include_leave(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    await alice.send(room, "before")
    since = (await bob.sync())["next_batch"]
    await alice.send(room, "last words")
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "bye"})
    await alice.send(room, "after the kick")
    sync = await bob.sync(since)
    assert room not in joined(sync)
    left = sync["rooms"]["leave"][room]
    events = left["timeline"]["events"]
    assert bodies(events) == ["last words"]  # nothing after the leave
    kick = events[-1]
    assert kick["type"] == "m.room.member" and kick["content"]["membership"] == "leave"
    assert kick["content"]["reason"] == "bye" and kick["sender"] == alice.user_id
    assert isinstance(left["timeline"]["prev_batch"], str)
    # Not repeated; absent from initial syncs unless include_leave.
    assert room not in (await bob.sync(sync["next_batch"]))["rooms"].get("leave", {})
    assert room not in (await bob.sync())["rooms"].get("leave", {})
    with_leave = await bob.sync(filter=inline({"room": {"include_leave": True}}))
    assert bodies(with_leave["rooms"]["leave"][room]["timeline"]["events"]) == ["before", "last words"]


async def test_knock_section(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(room_version="10", initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    since = (await bob.sync())["next_batch"]
    await bob.ok("POST", f"/knock/{room}", {})
    knock = (await bob.sync(since))["rooms"]["knock"][room]["knock_state"]["events"]
    assert ("m.room.member", bob.user_id) in state_keys(knock)
    # The room's members see the knock in their timeline.
    assert any(e["type"] == "m.room.member" and e["content"]["membership"] == "knock"
               for e in joined(await alice.sync())[room]["timeline"]["events"])


# ------------------------------------------------------------------------ ephemeral


async def test_typing_in_sync(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 10000})
    sync = await bob.sync(since)
    typing = [e for e in joined(sync)[room]["ephemeral"]["events"] if e["type"] == "m.typing"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]
    # Unchanged: not sent again.
    quiet = await bob.sync(sync["next_batch"])
    assert room not in joined(quiet)
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": False})
    stopped = await bob.sync(quiet["next_batch"])
    assert [e for e in joined(stopped)[room]["ephemeral"]["events"] if e["type"] == "m.typing"] == \
        [{"type": "m.typing", "content": {"user_ids": []}}]


async def test_receipts_in_sync(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    event = await alice.send(room, "hi")
    since = (await alice.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{event}", {})
    sync = await alice.sync(since)
    receipts = [e for e in joined(sync)[room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert len(receipts) == 1
    read = receipts[0]["content"][event]["m.read"][bob.user_id]
    assert isinstance(read["ts"], int)
    # Private receipts are only for their owner.
    since = sync["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read.private/{event}", {})
    assert room not in joined(await alice.sync(since))
    own = [e for e in joined(await bob.sync())[room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert bob.user_id in own[0]["content"][event]["m.read.private"]


# ------------------------------------------------------------------------ unread counts


async def test_unread_notifications(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    counts = joined(await bob.sync())[room]["unread_notifications"]
    assert counts == {"notification_count": 0, "highlight_count": 0}
    await alice.send(room, "hello there")
    counts = joined(await bob.sync())[room]["unread_notifications"]
    assert counts == {"notification_count": 1, "highlight_count": 0}
    # A mention highlights.
    mention = await alice.send(room, content={"msgtype": "m.text", "body": "bob: look",
                                              "m.mentions": {"user_ids": [bob.user_id]}})
    counts = joined(await bob.sync())[room]["unread_notifications"]
    assert counts == {"notification_count": 2, "highlight_count": 1}
    # The sender's own messages never count.
    await bob.send(room, "my own")
    assert joined(await bob.sync())[room]["unread_notifications"] == {"notification_count": 2,
                                                                       "highlight_count": 1}
    # A read receipt resets the counts.
    since = (await bob.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{mention}", {})
    after = await bob.sync(since)
    assert joined(after)[room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # A private read receipt resets them too.
    latest = await alice.send(room, "more")
    assert joined(await bob.sync())[room]["unread_notifications"]["notification_count"] == 1
    await bob.ok("POST", f"/rooms/{room}/read_markers", {"m.read.private": latest})
    assert joined(await bob.sync())[room]["unread_notifications"]["notification_count"] == 0


async def test_redacted_messages_stop_counting(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    event = await alice.send(room, content={"msgtype": "m.text", "body": "oops",
                                            "m.mentions": {"user_ids": [bob.user_id]}})
    assert joined(await bob.sync())[room]["unread_notifications"] == {"notification_count": 1,
                                                                      "highlight_count": 1}
    await alice.ok("PUT", f"/rooms/{room}/redact/{event}/r", {})
    assert joined(await bob.sync())[room]["unread_notifications"] == {"notification_count": 0,
                                                                      "highlight_count": 0}


# ------------------------------------------------------------------------ summary, account data, presence


async def test_summary_heroes_and_counts(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(preset="public_chat")
    carol = await register(app, "carol")
    await bob.join(room)
    await alice.invite(room, carol.user_id)
    summary = joined(await alice.sync())[room]["summary"]
    assert summary["m.joined_member_count"] == 2
    assert summary["m.invited_member_count"] == 1
    assert set(summary["m.heroes"]) == {bob.user_id, carol.user_id}  # never the user themself
    since = (await alice.sync())["next_batch"]
    await alice.send(room, "no member change")
    assert "summary" not in joined(await alice.sync(since))[room]  # unchanged may be omitted
    await carol.join(room)
    changed = joined(await alice.sync(since))[room]["summary"]
    assert changed["m.joined_member_count"] == 3 and changed["m.invited_member_count"] == 0


async def test_account_data_in_sync(app: QuartTrio, homeserver: Any, alice: Api) -> None:
    room = await alice.create_room()
    since = (await alice.sync())["next_batch"]
    await homeserver.db.write(userdata.set_account_data, alice.user_id, "", "m.direct", {"@b:localhost": [room]})
    await homeserver.db.write(userdata.set_account_data, alice.user_id, room, "m.tag", {"tags": {"u.work": {}}})
    sync = await alice.sync(since)
    assert sync["account_data"]["events"] == [{"type": "m.direct", "content": {"@b:localhost": [room]}}]
    assert joined(sync)[room]["account_data"]["events"] == [{"type": "m.tag", "content": {"tags": {"u.work": {}}}}]
    assert "account_data" not in (await alice.sync(sync["next_batch"]))
    initial = await alice.sync()
    assert {"type": "m.direct", "content": {"@b:localhost": [room]}} in initial["account_data"]["events"]


async def test_presence_via_sync(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    # Syncing marks the user online unless set_presence says otherwise.
    await bob.sync(set_presence="offline")
    assert (await alice.ok("GET", f"/presence/{bob.user_id}/status"))["presence"] == "offline"
    await bob.sync()
    status = await alice.ok("GET", f"/presence/{bob.user_id}/status")
    assert status["presence"] == "online" and status["currently_active"] is True
    sync = await alice.sync()
    presence = {e["sender"]: e["content"]["presence"] for e in sync.get("presence", {}).get("events", [])}
    assert presence.get(bob.user_id) == "online"
    assert room in joined(sync)
    await bob.sync(set_presence="unavailable")
    assert (await alice.ok("GET", f"/presence/{bob.user_id}/status"))["presence"] == "unavailable"
    no_presence = await alice.sync(filter=inline({"presence": {"types": []}}))
    assert "presence" not in no_presence


async def test_rejected_and_rescinded_invites_go_to_leave(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room()
    await alice.invite(room, bob.user_id)
    since = (await bob.sync())["next_batch"]
    await bob.ok("POST", f"/rooms/{room}/leave", {})  # reject
    sync = await bob.sync(since)
    assert room in sync["rooms"]["leave"] and room not in sync["rooms"].get("invite", {})
    events = sync["rooms"]["leave"][room]["timeline"]["events"]
    assert events and events[-1]["type"] == "m.room.member" and events[-1]["state_key"] == bob.user_id
    assert events[-1]["content"]["membership"] == "leave"
    # The inviter rescinds a second invite (a kick of an invitee).
    await alice.invite(room, bob.user_id)
    since = (await bob.sync())["next_batch"]
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": bob.user_id})
    assert room in (await bob.sync(since))["rooms"]["leave"]


async def test_ban_goes_to_leave_and_rejoin_is_fresh(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await shared_room(alice, bob)
    since = (await bob.sync())["next_batch"]
    await alice.ok("POST", f"/rooms/{room}/ban", {"user_id": bob.user_id})
    sync = await bob.sync(since)
    last = sync["rooms"]["leave"][room]["timeline"]["events"][-1]
    assert last["content"]["membership"] == "ban"
    await alice.ok("POST", f"/rooms/{room}/unban", {"user_id": bob.user_id})
    since = sync["next_batch"]
    await bob.join(room)
    await alice.send(room, "welcome back")
    back = joined(await bob.sync(since))[room]
    assert bodies(back["timeline"]["events"]) == ["welcome back"]
    # A (re)join in the window brings the whole state, like an initial sync.
    all_state = back["state"]["events"] + [e for e in back["timeline"]["events"] if "state_key" in e]
    assert {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", alice.user_id)} <= \
        state_keys(all_state)


async def test_account_data_endpoint_reaches_sync(app: QuartTrio, alice: Api) -> None:
    since = (await alice.sync())["next_batch"]
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/com.example.prefs", {"theme": "dark"})
    sync = await alice.sync(since)
    assert {"type": "com.example.prefs", "content": {"theme": "dark"}} in sync["account_data"]["events"]
