"""Rooms over HTTP: createRoom (presets, every room version, options, errors),
send with transaction IDs, state, redactions, membership changes, joined_rooms."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote
from typing import Any

import pytest
from quart_trio import QuartTrio

from api.app import create_app
from api.services import open_homeserver
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS
from storage import timeline
from tests.helpers.client import Api, make_settings, register, room_events


@pytest.fixture
def settings(tmp_path: Path):
    # Federation off: inviting other servers' users is then refused (403) before anything is built.
    return make_settings(tmp_path, federation={"enabled": False})  # rate limits off; `alice`/`bob` come from conftest


async def current_state(api: Api, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The room's current state as ``api`` sees it in an initial /sync (state plus
    the timeline's state events): ``(type, state_key)`` -> event."""
    sync = await api.sync(full_state="true")
    section = sync["rooms"]["join"][room_id]
    out = {}
    for event in section["state"]["events"] + section["timeline"]["events"]:
        if "state_key" in event:
            out[(event["type"], event["state_key"])] = event
    return out


def membership(state: dict[tuple[str, str], dict[str, Any]], user_id: str) -> str | None:
    event = state.get(("m.room.member", user_id))
    return event["content"]["membership"] if event else None


# ------------------------------------------------------------------------ createRoom


@pytest.mark.parametrize("version", sorted(KNOWN_ROOM_VERSIONS, key=int))
async def test_create_room_in_every_version(app: QuartTrio, alice: Api, bob: Api, version: str) -> None:
    room = await alice.create_room(room_version=version, name="Room " + version, topic="About " + version,
                                   invite=[bob.user_id])
    if version == "12":
        assert room.startswith("!") and ":" not in room  # the create event's reference hash
    else:
        assert room.startswith("!") and room.endswith(":localhost")
    state = await current_state(alice, room)
    create = state[("m.room.create", "")]
    assert create["content"]["room_version"] == version
    assert create["sender"] == alice.user_id
    if int(version) <= 10:
        assert create["content"]["creator"] == alice.user_id
    else:
        assert "creator" not in create["content"]
    power = state[("m.room.power_levels", "")]["content"]
    if version == "12":
        assert alice.user_id not in power["users"]  # creators are infinite, never listed
    else:
        assert power["users"][alice.user_id] == 100
    assert state[("m.room.name", "")]["content"]["name"] == "Room " + version
    assert state[("m.room.topic", "")]["content"]["topic"] == "About " + version
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert membership(state, alice.user_id) == "join"
    assert membership(state, bob.user_id) == "invite"
    event_id = await alice.send(room, "hi in v" + version)
    if int(version) <= 2:
        assert event_id.startswith("$") and event_id.endswith(":localhost")
    else:
        assert event_id.startswith("$") and ":" not in event_id
    await bob.join(room)
    events = room_events(await bob.sync(), room)
    assert [e["content"].get("body") for e in events if e["type"] == "m.room.message"] == ["hi in v" + version]
    assert not any("room_id" in e for e in events)  # sync events carry no room_id


async def test_create_room_presets(app: QuartTrio, alice: Api, bob: Api) -> None:
    private = await alice.create_room(preset="private_chat")
    public = await alice.create_room(preset="public_chat")
    trusted = await alice.create_room(preset="trusted_private_chat", invite=[bob.user_id], room_version="11")
    trusted12 = await alice.create_room(preset="trusted_private_chat", invite=[bob.user_id], room_version="12")
    by_visibility = await alice.create_room(visibility="public")
    default = await alice.create_room()

    def rules(state: dict) -> tuple[str, str, str]:
        return (state[("m.room.join_rules", "")]["content"]["join_rule"],
                state[("m.room.history_visibility", "")]["content"]["history_visibility"],
                state[("m.room.guest_access", "")]["content"]["guest_access"])

    assert rules(await current_state(alice, private)) == ("invite", "shared", "can_join")
    assert rules(await current_state(alice, public)) == ("public", "shared", "forbidden")
    assert rules(await current_state(alice, by_visibility)) == ("public", "shared", "forbidden")
    assert rules(await current_state(alice, default)) == ("invite", "shared", "can_join")
    trusted_state = await current_state(alice, trusted)
    assert rules(trusted_state) == ("invite", "shared", "can_join")
    assert trusted_state[("m.room.power_levels", "")]["content"]["users"][bob.user_id] == 100
    trusted12_state = await current_state(alice, trusted12)
    assert trusted12_state[("m.room.create", "")]["content"]["additional_creators"] == [bob.user_id]
    assert bob.user_id not in trusted12_state[("m.room.power_levels", "")]["content"]["users"]
    # Public rooms can be joined without an invite; private ones cannot.
    await bob.join(public)
    assert (await bob.post(f"/join/{private}", {})).err() == (403, "M_FORBIDDEN")


async def test_create_room_is_direct_alias_initial_state_and_power_override(
    app: QuartTrio, alice: Api, bob: Api
) -> None:
    room = await alice.create_room(
        is_direct=True,
        invite=[bob.user_id],
        room_alias_name="lobby",
        initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}},
            {"type": "com.example.setting", "state_key": "k", "content": {"v": 1}},
            {"type": "m.room.name", "content": {"name": "overridden by name"}},
        ],
        name="The Lobby",
        power_level_content_override={"users_default": 5, "events": {"m.room.message": 10}},
    )
    state = await current_state(alice, room)
    assert state[("m.room.canonical_alias", "")]["content"]["alias"] == "#lobby:localhost"
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == "public"
    assert state[("com.example.setting", "k")]["content"] == {"v": 1}
    assert state[("m.room.name", "")]["content"]["name"] == "The Lobby"
    power = state[("m.room.power_levels", "")]["content"]
    assert power["users_default"] == 5 and power["events"] == {"m.room.message": 10}
    # The invite carries is_direct, and the invitee sees it in their sync.
    invite = (await bob.sync())["rooms"]["invite"][room]["invite_state"]["events"]
    own = [e for e in invite if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert own[0]["content"]["is_direct"] is True and own[0]["sender"] == alice.user_id
    # The alias resolves: bob joins by it.
    assert (await bob.ok("POST", "/join/%23lobby:localhost", {}))["room_id"] == room
    # users_default 5 < 10: bob may not send messages; alice may.
    assert (await bob.put(f"/rooms/{room}/send/m.room.message/1", {"body": "x"})).err() == (403, "M_FORBIDDEN")
    await alice.send(room)
    # The alias is taken now.
    taken = await alice.post("/createRoom", {"room_alias_name": "lobby"})
    assert taken.err() == (400, "M_ROOM_IN_USE")


async def test_create_room_errors(app: QuartTrio, alice: Api, homeserver: Any) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": 12}, 400, "M_BAD_JSON"),
        ({"preset": "party"}, 400, "M_BAD_JSON"),
        ({"visibility": "secret"}, 400, "M_BAD_JSON"),
        ({"invite": "@bob:localhost"}, 400, "M_BAD_JSON"),
        ({"invite": ["not a user"]}, 400, "M_INVALID_PARAM"),
        ({"invite_3pid": [{"medium": "email", "address": "a@b.c", "id_server": "x", "id_access_token": "y"}]},
         400, "M_INVALID_PARAM"),
        ({"initial_state": {"type": "x"}}, 400, "M_BAD_JSON"),
        ({"initial_state": [{"type": 5, "content": {}}]}, 400, "M_BAD_JSON"),
        ({"creation_content": []}, 400, "M_BAD_JSON"),
        ({"power_level_content_override": "all"}, 400, "M_BAD_JSON"),
        ({"power_level_content_override": {"users": {"@alice:localhost": 1}}, "room_version": "11"},
         400, "M_INVALID_ROOM_STATE"),
        ({"room_alias_name": "has space"}, 400, "M_INVALID_PARAM"),
        ({"name": 5}, 400, "M_BAD_JSON"),
        ({"topic": ["x"]}, 400, "M_BAD_JSON"),
        ({"is_direct": "yes"}, 400, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.member", "state_key": "@bob:localhost",
                             "content": {"membership": "join"}}]}, 400, "M_INVALID_ROOM_STATE"),
        ({"creation_content": {"n": 1.5}}, 400, "M_BAD_JSON"),
    ]
    for body, status, errcode in cases:
        assert (await alice.post("/createRoom", body)).err() == (status, errcode), body
    # Nothing was created by any of them.
    assert await alice.ok("GET", "/joined_rooms") == {"joined_rooms": []}
    assert (await homeserver.db.read(timeline.get_memberships, alice.user_id)) == {}


async def test_create_room_invites_that_cannot_be_delivered_fail_before_creating(
    app: QuartTrio, alice: Api, homeserver: Any
) -> None:
    unknown = await alice.post("/createRoom", {"invite": ["@ghost:localhost"]})
    assert unknown.err() == (404, "M_NOT_FOUND")
    remote = await alice.post("/createRoom", {"invite": ["@carol:elsewhere.example"]})
    assert remote.err() == (403, "M_FORBIDDEN")
    assert await alice.ok("GET", "/joined_rooms") == {"joined_rooms": []}


async def test_create_room_alias_is_released_when_creation_fails(app: QuartTrio, alice: Api) -> None:
    bad = await alice.post("/createRoom", {"room_alias_name": "spot", "invite": ["@ghost:localhost"]})
    assert bad.status >= 400
    room = await alice.create_room(room_alias_name="spot")
    assert room


# ------------------------------------------------------------------------ send and transaction IDs


async def test_send_transaction_ids_are_idempotent(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(preset="public_chat")
    other_room = await alice.create_room(preset="public_chat")
    content = {"msgtype": "m.text", "body": "once"}
    first = await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/txn1", content)
    again = await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/txn1", content)
    assert first == again and set(first) == {"event_id"}
    # The same txnId from another device of the same user is a different request.
    laptop = await alice.login()
    other_device = await laptop.ok("PUT", f"/rooms/{room}/send/m.room.message/txn1", content)
    assert other_device["event_id"] != first["event_id"]
    # ... as is the same txnId in another room, or from another user.
    other = await alice.ok("PUT", f"/rooms/{other_room}/send/m.room.message/txn1", content)
    assert other["event_id"] != first["event_id"]
    await bob.join(room)
    bobs = await bob.ok("PUT", f"/rooms/{room}/send/m.room.message/txn1", content)
    assert bobs["event_id"] not in (first["event_id"], other_device["event_id"])

    sync = await alice.sync()
    messages = [e for e in room_events(sync, room) if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages] == [first["event_id"], other_device["event_id"], bobs["event_id"]]
    # Only the sending device sees its transaction ID.
    by_id = {e["event_id"]: e for e in messages}
    assert by_id[first["event_id"]]["unsigned"]["transaction_id"] == "txn1"
    assert "transaction_id" not in by_id[other_device["event_id"]].get("unsigned", {})
    laptop_view = {e["event_id"]: e for e in room_events(await laptop.sync(), room)}
    assert laptop_view[other_device["event_id"]]["unsigned"]["transaction_id"] == "txn1"
    assert "transaction_id" not in laptop_view[first["event_id"]].get("unsigned", {})


async def test_send_errors(app: QuartTrio, alice: Api) -> None:
    room = await alice.create_room()
    assert (await alice.put(f"/rooms/{room}/send/m.room.message/{'t' * 300}", {"body": "x"})).err() \
        == (400, "M_INVALID_PARAM")
    assert (await alice.put(f"/rooms/{room}/send/{'x' * 300}/t", {"body": "x"})).err() == (400, "M_INVALID_PARAM")
    assert (await alice.put(f"/rooms/{room}/send/m.room.message/t", [])).err() == (400, "M_BAD_JSON")
    assert (await alice.put(f"/rooms/{room}/send/m.room.message/t2", {"n": 1.5})).err() == (400, "M_BAD_JSON")
    # A state event type sent as a message is just a message (no state_key).
    event_id = await alice.send(room, type="m.room.name", content={"name": "not state"})
    state = await current_state(alice, room)
    assert ("m.room.name", "") not in state or state[("m.room.name", "")]["event_id"] != event_id


# ------------------------------------------------------------------------ state


async def test_put_state_and_see_it_in_sync(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    since = (await bob.sync())["next_batch"]
    topic = await alice.ok("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "news"})
    slash = await alice.ok("PUT", f"/rooms/{room}/state/m.room.name/", {"name": "with slash"})
    keyed = await alice.ok("PUT", f"/rooms/{room}/state/com.example.pref/some/key", {"on": True})
    own = await bob.ok("PUT", f"/rooms/{room}/state/m.room.member/{bob.user_id}",
                       {"membership": "join", "displayname": "Bobby"})
    sync = await bob.sync(since)
    events = {e["event_id"]: e for e in room_events(sync, room)}
    assert events[topic["event_id"]]["content"]["topic"] == "news"
    assert events[topic["event_id"]]["state_key"] == ""
    assert events[slash["event_id"]]["state_key"] == "" and events[slash["event_id"]]["type"] == "m.room.name"
    assert events[keyed["event_id"]]["state_key"] == "some/key"
    assert events[own["event_id"]]["content"]["displayname"] == "Bobby"
    state = await current_state(bob, room)
    assert state[("com.example.pref", "some/key")]["content"] == {"on": True}
    # Bob (power 0) cannot change the topic (state_default 50).
    assert (await bob.put(f"/rooms/{room}/state/m.room.topic", {"topic": "mine"})).err() == (403, "M_FORBIDDEN")
    # A canonical alias must point at this room.
    bad_alias = await alice.put(f"/rooms/{room}/state/m.room.canonical_alias", {"alias": "#missing:localhost"})
    assert bad_alias.err() == (400, "M_BAD_ALIAS")
    assert (await alice.put(f"/rooms/{room}/state/m.room.canonical_alias", {"alt_aliases": "x"})).err() \
        == (400, "M_INVALID_PARAM")


# ------------------------------------------------------------------------ redactions


async def test_redactions(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    alices = await alice.send(room, "secret")
    bobs = await bob.send(room, "rude")
    # Bob may not redact alice's event (redact level 50).
    assert (await bob.put(f"/rooms/{room}/redact/{alices}/r1", {})).err() == (403, "M_FORBIDDEN")
    # Everyone may redact their own; alice (100) may redact bob's.
    own = await bob.ok("PUT", f"/rooms/{room}/redact/{bobs}/r1", {"reason": "oops"})
    again = await bob.ok("PUT", f"/rooms/{room}/redact/{bobs}/r1", {"reason": "oops"})
    assert own == again  # idempotent like send
    mod = await alice.ok("PUT", f"/rooms/{room}/redact/{alices}/r2", {})
    sync = await bob.sync()
    events = {e["event_id"]: e for e in room_events(sync, room)}
    for target, redaction in ((bobs, own["event_id"]), (alices, mod["event_id"])):
        assert events[target]["content"] == {}
        assert events[target]["unsigned"]["redacted_because"]["event_id"] == redaction
    assert events[own["event_id"]]["type"] == "m.room.redaction"
    assert events[own["event_id"]]["redacts"] == bobs or events[own["event_id"]]["content"]["redacts"] == bobs
    assert events[own["event_id"]]["content"]["reason"] == "oops"
    assert (await alice.put(f"/rooms/{room}/redact/$nope/r3", {})).err() == (404, "M_NOT_FOUND")
    assert (await alice.put(f"/rooms/{room}/redact/{alices}/r4", {"reason": 5})).err() == (400, "M_BAD_JSON")
    other = await alice.create_room()
    assert (await alice.put(f"/rooms/{other}/redact/{alices}/r5", {})).err() == (404, "M_NOT_FOUND")
    # Outsiders cannot redact at all.
    carol = await register(app, "carol")
    assert (await carol.put(f"/rooms/{room}/redact/{bobs}/r1", {})).status == 403


@pytest.mark.parametrize("version", ["1", "3", "11"])
async def test_redaction_shapes_per_version(app: QuartTrio, alice: Api, version: str) -> None:
    room = await alice.create_room(room_version=version)
    target = await alice.send(room, "x")
    # Clients percent-encode IDs in paths; v3 event IDs may hold "/" (standard base64).
    redaction = (await alice.ok("PUT", f"/rooms/{room}/redact/{quote(target, safe='')}/r", {}))["event_id"]
    event = {e["event_id"]: e for e in room_events(await alice.sync(), room)}[redaction]
    if version == "11":
        assert event["content"]["redacts"] == target  # v11 moved it into content
    else:
        assert event["redacts"] == target


# ------------------------------------------------------------------------ membership


async def test_join_leave_invite_kick_ban_unban_forget(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room()
    assert (await bob.post(f"/rooms/{room}/join", {})).err() == (403, "M_FORBIDDEN")
    await alice.ok("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id, "reason": "welcome"})
    assert (await bob.ok("POST", f"/rooms/{room}/join", {"reason": "hello"}))["room_id"] == room
    state = await current_state(alice, room)
    assert membership(state, bob.user_id) == "join"
    assert state[("m.room.member", bob.user_id)]["content"]["displayname"] == "bob"
    assert state[("m.room.member", bob.user_id)]["content"]["reason"] == "hello"
    assert await bob.ok("GET", "/joined_rooms") == {"joined_rooms": [room]}

    # Bob cannot kick or ban (50 needed).
    assert (await bob.post(f"/rooms/{room}/kick", {"user_id": alice.user_id})).err() == (403, "M_FORBIDDEN")
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "timeout"})
    state = await current_state(alice, room)
    assert membership(state, bob.user_id) == "leave"
    assert state[("m.room.member", bob.user_id)]["content"]["reason"] == "timeout"
    assert state[("m.room.member", bob.user_id)]["sender"] == alice.user_id
    assert await bob.ok("GET", "/joined_rooms") == {"joined_rooms": []}

    await alice.ok("POST", f"/rooms/{room}/ban", {"user_id": bob.user_id, "reason": "spam"})
    assert membership(await current_state(alice, room), bob.user_id) == "ban"
    assert (await alice.post(f"/rooms/{room}/invite", {"user_id": bob.user_id})).err() == (403, "M_FORBIDDEN")
    assert (await bob.post(f"/rooms/{room}/join", {})).err() == (403, "M_FORBIDDEN")
    await alice.ok("POST", f"/rooms/{room}/unban", {"user_id": bob.user_id})
    assert membership(await current_state(alice, room), bob.user_id) == "leave"
    assert (await alice.post(f"/rooms/{room}/unban", {"user_id": bob.user_id})).err() == (403, "M_FORBIDDEN")

    # Forget: only after leaving; then the room disappears from bob's syncs.
    await alice.invite(room, bob.user_id)
    assert (await bob.post(f"/rooms/{room}/forget", {})).err() == (400, "M_UNKNOWN")
    await bob.join(room)
    assert (await bob.post(f"/rooms/{room}/forget", {})).err() == (400, "M_UNKNOWN")
    await bob.ok("POST", f"/rooms/{room}/leave", {})
    leave_sync = await bob.sync(filter='{"room": {"include_leave": true}}')
    assert room in leave_sync["rooms"].get("leave", {})
    await bob.ok("POST", f"/rooms/{room}/forget", {})
    forgotten = await bob.sync(filter='{"room": {"include_leave": true}}')
    assert room not in forgotten["rooms"].get("leave", {})
    assert (await bob.post("/rooms/!never:localhost/forget", {})).err() == (404, "M_NOT_FOUND")


async def test_membership_errors(app: QuartTrio, alice: Api, bob: Api) -> None:
    room = await alice.create_room()
    for action in ("invite", "kick", "ban", "unban"):
        assert (await alice.post(f"/rooms/{room}/{action}", {})).err() == (400, "M_MISSING_PARAM"), action
        assert (await alice.post(f"/rooms/{room}/{action}", {"user_id": "bob"})).err() == (400, "M_INVALID_PARAM")
        assert (await alice.post(f"/rooms/{room}/{action}", {"user_id": bob.user_id, "reason": 1})).err() \
            == (400, "M_BAD_JSON")
    assert (await alice.post(f"/rooms/{room}/invite", {"user_id": "@ghost:localhost"})).err() == (404, "M_NOT_FOUND")
    assert (await alice.post(f"/rooms/{room}/invite", {"user_id": "@carol:remote.example"})).err() \
        == (403, "M_FORBIDDEN")
    assert (await alice.post("/join/nonsense", {})).err() == (400, "M_INVALID_PARAM")
    assert (await bob.post(f"/rooms/{room}/leave", {})).err() == (403, "M_FORBIDDEN")
    # Invite to a room the inviter is not in.
    assert (await bob.post(f"/rooms/{room}/invite", {"user_id": alice.user_id})).err() == (403, "M_FORBIDDEN")


async def test_knock(app: QuartTrio, alice: Api, bob: Api) -> None:
    knock_rule = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
    room = await alice.create_room(room_version="7", initial_state=knock_rule, room_alias_name="door")
    assert (await bob.post(f"/rooms/{room}/join", {})).err() == (403, "M_FORBIDDEN")
    assert (await bob.ok("POST", "/knock/%23door:localhost", {"reason": "let me in"}))["room_id"] == room
    state = await current_state(alice, room)
    assert membership(state, bob.user_id) == "knock"
    assert state[("m.room.member", bob.user_id)]["content"]["reason"] == "let me in"
    # The knocker sees the room in the knock section, with stripped state.
    knock = (await bob.sync())["rooms"]["knock"][room]["knock_state"]["events"]
    assert {(e["type"], e["state_key"]) for e in knock} >= {("m.room.join_rules", ""), ("m.room.member", bob.user_id)}
    # Accepting the knock is an invite.
    await alice.invite(room, bob.user_id)
    await bob.join(room)
    # Knocking needs a knock join rule (and v7+).
    invite_only = await alice.create_room(room_version="7")
    assert (await bob.post(f"/knock/{invite_only}", {})).err() == (403, "M_FORBIDDEN")
    old = await alice.create_room(room_version="6", initial_state=knock_rule)
    assert (await bob.post(f"/knock/{old}", {})).err() == (403, "M_FORBIDDEN")
    assert (await bob.post("/knock/%23nowhere:localhost", {})).err() == (404, "M_NOT_FOUND")


async def test_joined_rooms(app: QuartTrio, alice: Api, bob: Api) -> None:
    assert await alice.ok("GET", "/joined_rooms") == {"joined_rooms": []}
    rooms = sorted([await alice.create_room(preset="public_chat") for _ in range(3)])
    assert await alice.ok("GET", "/joined_rooms") == {"joined_rooms": rooms}
    await alice.invite(rooms[0], bob.user_id)
    assert await bob.ok("GET", "/joined_rooms") == {"joined_rooms": []}  # invited is not joined
    await bob.join(rooms[1])
    assert await bob.ok("GET", "/joined_rooms") == {"joined_rooms": [rooms[1]]}


async def test_actor_restart_keeps_transaction_ids(tmp_path: Path) -> None:
    """A retried send after a restart still answers the original event (the txn
    mapping commits with the event)."""
    settings = make_settings(tmp_path)
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        room = await alice.create_room()
        first = await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/keep", {"body": "x"})
    async with open_homeserver(settings) as deps:
        again = await Api(create_app(deps), alice.token).ok("PUT", f"/rooms/{room}/send/m.room.message/keep",
                                                            {"body": "x"})
        assert again == first


async def test_v3_event_ids_with_a_slash_can_be_redacted(app: QuartTrio, alice: Api) -> None:
    """rooms/v3 event IDs are standard base64, so some hold "/": percent-encoded in
    the path (as clients send them) they must still reach the endpoint."""
    room = await alice.create_room(room_version="3")
    for _ in range(200):
        target = await alice.send(room, "x")
        if "/" in target:
            break
    else:  # pragma: no cover - (63/64)**(43*200) odds
        pytest.fail("no event ID with a slash")
    reply = await alice.ok("PUT", f"/rooms/{room}/redact/{quote(target, safe='')}/slash", {})
    event = {e["event_id"]: e for e in room_events(await alice.sync(), room)}[reply["event_id"]]
    assert event["redacts"] == target


async def test_concurrent_retries_of_one_transaction_make_one_event(app: QuartTrio, alice: Api) -> None:
    import trio

    room = await alice.create_room()
    answers: list[str] = []

    async def send() -> None:
        answers.append((await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/race", {"body": "once"}))["event_id"])

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(send)
    assert len(set(answers)) == 1
    messages = [e for e in room_events(await alice.sync(), room) if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages] == answers[:1]


async def test_default_room_version_is_12(app: QuartTrio, alice: Api) -> None:
    room = await alice.create_room()
    state = await current_state(alice, room)
    assert state[("m.room.create", "")]["content"]["room_version"] == "12"


async def test_concurrent_create_room_in_one_millisecond_gives_distinct_rooms(tmp_path: Path) -> None:
    """Regression (bench/client_api.py, issue 4): v12 room IDs hash the create event,
    so two createRoom calls by one user in the same millisecond collided (the second
    got M_ROOM_IN_USE). A frozen clock makes every call land in one millisecond."""
    import trio

    from roomactors.clock import ManualClock

    async with open_homeserver(make_settings(tmp_path), clock=ManualClock(step_ms=0)) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        replies: list[Any] = []

        async def create(i: int) -> None:
            replies.append(await alice.post("/createRoom", {"name": f"room {i}"}))

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(create, i)
    assert [r.status for r in replies] == [200] * 12, [r.body for r in replies]
    assert len({r.body["room_id"] for r in replies}) == 12


async def test_initial_sync_carries_default_push_rules(alice: Api) -> None:
    sync = await alice.sync()
    rules = [e for e in sync["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(rules) == 1
    override_ids = [r["rule_id"] for r in rules[0]["content"]["global"]["override"]]
    assert override_ids[0] == ".m.rule.master"
