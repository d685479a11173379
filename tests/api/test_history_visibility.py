"""The history visibility matrix over every read path (client-server API, module
"Room History Visibility"), through the HTTP API.

For each ``history_visibility`` alice creates a room, sets it, and then::

    msg1 · invite bob · msg2 · bob joins · msg3 · bob leaves · msg4

Bob's view (the spec's five steps, with the room state *at* each event):

==============  ====  ==========  ====  ========  ====  =========  ====
value           msg1  bob invite  msg2  bob join  msg3  bob leave  msg4
==============  ====  ==========  ====  ========  ====  =========  ====
world_readable  yes   yes         yes   yes       yes   yes        no*
shared          yes   yes         yes   yes       yes   yes        no
invited         no    yes         yes   yes       yes   yes        no
joined          no    no          no    yes       yes   yes        no
==============  ====  ==========  ====  ========  ====  =========  ====

* "After a user has left a room, they may see any events which they were allowed to
  see before they left the room, but no events received after they left": a
  departed user's reads stop at their leave, also in a world-readable room.

``shared``/msg1: step 3, "the user joined the room at any point after the event was
sent" — bob did, so he keeps it after leaving. His own member events follow "before
*or* after" (the invite is invisible under ``joined``: neither no-membership nor
``invite`` allows it). Charlie, who never joined, sees everything only when the room
is ``world_readable`` and is refused otherwise (403 on room-wide reads, 404 per event).
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_room_reads import Api, User, q, settings  # noqa: F401  (settings: the fixture)

VALUES = ("world_readable", "shared", "invited", "joined")
TIMELINE = ("msg1", "bob:invite", "msg2", "bob:join", "msg3", "bob:leave", "msg4")

BOB_SEES = {
    "world_readable": ("msg1", "bob:invite", "msg2", "bob:join", "msg3", "bob:leave"),
    "shared": ("msg1", "bob:invite", "msg2", "bob:join", "msg3", "bob:leave"),
    "invited": ("bob:invite", "msg2", "bob:join", "msg3", "bob:leave"),
    "joined": ("bob:join", "msg3", "bob:leave"),
}
CHARLIE_SEES = {"world_readable": TIMELINE, "shared": (), "invited": (), "joined": ()}


def labels(events: list[dict[str, Any]], bob: User) -> list[str]:
    """The scenario's events among ``events``, by label, in the given order."""
    out = []
    for e in events:
        if e["type"] == "m.room.message":
            out.append(e["content"]["body"])
        elif e["type"] == "m.room.member" and e["state_key"] == bob.user_id:
            out.append(f"bob:{e['content']['membership']}")
    return out


@pytest.fixture
async def api(app) -> Api:
    return Api(app)


async def run_scenario(api: Api, value: str) -> tuple[User, User, User, str, dict[str, str], list[str]]:
    alice = await api.register("alice")
    bob = await api.register("bob")
    charlie = await api.register("charlie")
    room = await api.create_room(alice)
    await api.put_state(alice, room, "m.room.history_visibility", {"history_visibility": value})
    ids: dict[str, str] = {}
    ids["msg1"] = await api.send(alice, room, "msg1")
    await api.invite(alice, room, bob)
    ids["msg2"] = await api.send(alice, room, "msg2")
    await api.join(bob, room)
    ids["msg3"] = await api.send(alice, room, "msg3")
    # While joined: the initial sync's timeline, /messages and /event.
    sync = await api.sync(bob, filter={"room": {"timeline": {"limit": 50}}})
    joined_view = labels(sync["rooms"]["join"][room]["timeline"]["events"], bob)
    events, _ = await api.page_all(bob, room, dir="b", limit=4)
    assert labels(events, bob)[::-1] == joined_view
    await api.leave(bob, room)
    ids["msg4"] = await api.send(alice, room, "msg4")
    return alice, bob, charlie, room, ids, joined_view


@pytest.mark.parametrize("value", VALUES)
async def test_history_visibility_matrix(api: Api, value: str) -> None:
    alice, bob, charlie, room, ids, joined_view = await run_scenario(api, value)
    expected = list(BOB_SEES[value])

    # /sync while bob was joined: the same, minus his leave (not sent yet).
    assert joined_view == [x for x in expected if x != "bob:leave"]

    # /messages after leaving, both directions.
    back, _ = await api.page_all(bob, room, dir="b", limit=3)
    assert labels(back, bob) == expected[::-1]
    forward, _ = await api.page_all(bob, room, dir="f", limit=3)
    assert labels(forward, bob) == expected

    # /event and /context per message: 200 iff visible, else 404 M_NOT_FOUND.
    for label, event_id in ids.items():
        event_path = f"/rooms/{q(room)}/event/{q(event_id)}"
        context_path = f"/rooms/{q(room)}/context/{q(event_id)}"
        if label in expected:
            event = await api.call("GET", event_path, bob)
            assert event["content"]["body"] == label
            context = await api.call("GET", context_path, bob, query={"limit": 20})
            around = labels(context["events_before"][::-1], bob) + [label] + labels(context["events_after"], bob)
            assert around == expected, (label, around)
        else:
            for path in (event_path, context_path):
                body = await api.call("GET", path, bob, expect=404)
                assert body["errcode"] == "M_NOT_FOUND", (label, path)

    # Charlie never joined.
    charlie_sees = list(CHARLIE_SEES[value])
    if value == "world_readable":
        back, _ = await api.page_all(charlie, room, dir="b", limit=3)
        assert labels(back, bob) == charlie_sees[::-1]
        forward, _ = await api.page_all(charlie, room, dir="f", limit=3)
        assert labels(forward, bob) == charlie_sees
        context = await api.call("GET", f"/rooms/{q(room)}/context/{q(ids['msg2'])}", charlie, query={"limit": 20})
        around = labels(context["events_before"][::-1], bob) + ["msg2"] + labels(context["events_after"], bob)
        assert around == charlie_sees
    else:
        body = await api.messages(charlie, room, expect=403, dir="b")
        assert body["errcode"] == "M_FORBIDDEN"
    for label, event_id in ids.items():
        if label in charlie_sees:
            assert (await api.call("GET", f"/rooms/{q(room)}/event/{q(event_id)}", charlie))["content"]["body"] == label
        else:
            for kind in ("event", "context"):
                body = await api.call("GET", f"/rooms/{q(room)}/{kind}/{q(event_id)}", charlie, expect=404)
                assert body["errcode"] == "M_NOT_FOUND"

    # Alice, joined throughout, sees everything.
    everything, _ = await api.page_all(alice, room, dir="b", limit=10)
    assert labels(everything, bob) == list(TIMELINE)[::-1]


async def test_rejoining_user_sees_shared_history_again(api: Api) -> None:
    """Step 3 again: bob left, alice talked, bob rejoined — the gap is shared history
    he joined after, so it is visible now (and was not while he was away)."""
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.create_room(alice, preset="public_chat")
    await api.put_state(alice, room, "m.room.history_visibility", {"history_visibility": "shared"})
    await api.join(bob, room)
    await api.leave(bob, room)
    gap = await api.send(alice, room, "gap")
    assert (await api.call("GET", f"/rooms/{q(room)}/event/{q(gap)}", bob, expect=404))["errcode"] == "M_NOT_FOUND"
    await api.join(bob, room)
    assert (await api.call("GET", f"/rooms/{q(room)}/event/{q(gap)}", bob))["content"]["body"] == "gap"
