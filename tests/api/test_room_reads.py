"""Room reads through quart-trio's test client: /state, /members, /joined_members,
/event, /context and /messages (api/client/room_reads.py).

Tokens (module docstring of ``api.client.room_reads``): ``t<N>`` is the gap before
stream ordering ``N``, ``s<E>_…`` the gap after ``E``; sync's ``prev_batch`` is
``t<first timeline event>``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from quart_trio import QuartTrio

from api.client import room_reads
from api.settings import Settings, parse_settings

PREFIX = "/_matrix/client/v3"
_txn = itertools.count()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Registration open and no rate limits: the tests send hundreds of events.
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
            "database": {"path": "data/roomactors.db"},
            "registration": {"enabled": True},
            "ratelimit": {"enabled": False},
        },
        base_dir=tmp_path,
    )


@dataclass(frozen=True)
class User:
    user_id: str
    token: str


def q(segment: str) -> str:
    return quote(segment, safe="")


class Api:
    """A thin client over the test client; ``expect`` asserts the status."""

    def __init__(self, app: QuartTrio) -> None:
        self.client = app.test_client()

    async def call(
        self,
        method: str,
        path: str,
        user: User | None = None,
        *,
        json: Any = None,
        query: dict[str, Any] | None = None,
        expect: int | None = 200,
        prefix: str = PREFIX,
    ) -> Any:
        headers = {"Authorization": f"Bearer {user.token}"} if user else {}
        params = {k: (orjson.dumps(v).decode() if isinstance(v, dict) else str(v)) for k, v in (query or {}).items()}
        response = await self.client.open(prefix + path, method=method, json=json, headers=headers,
                                          query_string=params)
        body = await response.get_json()
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, body)
        return body

    async def register(self, name: str) -> User:
        body = await self.call("POST", "/register", json={
            "username": name, "password": f"{name}-password-1", "auth": {"type": "m.login.dummy"}})
        return User(body["user_id"], body["access_token"])

    async def create_room(self, user: User, **body: Any) -> str:
        return (await self.call("POST", "/createRoom", user, json=body))["room_id"]

    async def send(self, user: User, room: str, body: str, **extra: Any) -> str:
        content = {"msgtype": "m.text", "body": body, **extra}
        path = f"/rooms/{q(room)}/send/m.room.message/txn{next(_txn)}"
        return (await self.call("PUT", path, user, json=content))["event_id"]

    async def put_state(self, user: User, room: str, type_: str, content: dict[str, Any], key: str = "") -> str:
        path = f"/rooms/{q(room)}/state/{q(type_)}" + (f"/{q(key)}" if key else "")
        return (await self.call("PUT", path, user, json=content))["event_id"]

    async def invite(self, user: User, room: str, target: User) -> None:
        await self.call("POST", f"/rooms/{q(room)}/invite", user, json={"user_id": target.user_id})

    async def join(self, user: User, room: str) -> None:
        await self.call("POST", f"/rooms/{q(room)}/join", user, json={})

    async def leave(self, user: User, room: str) -> None:
        await self.call("POST", f"/rooms/{q(room)}/leave", user, json={})

    async def messages(self, user: User, room: str, expect: int | None = 200, **query: Any) -> Any:
        return await self.call("GET", f"/rooms/{q(room)}/messages", user, query=query, expect=expect)

    async def sync(self, user: User, **query: Any) -> Any:
        return await self.call("GET", "/sync", user, query=query)

    async def page_all(
        self, user: User, room: str, *, dir: str, limit: int, **query: Any
    ) -> tuple[list[dict], list[dict]]:
        """Every event paging from ``query``'s ``from`` until ``end`` is omitted;
        returns (events in chunk order, the responses)."""
        events: list[dict] = []
        pages: list[dict] = []
        params = dict(query)
        for _ in range(200):
            page = await self.messages(user, room, dir=dir, limit=limit, **params)
            pages.append(page)
            events.extend(page["chunk"])
            if "end" not in page:
                return events, pages
            params["from"] = page["end"]
        raise AssertionError("pagination did not terminate")


def stable(value: Any) -> Any:
    """``value`` without ``unsigned.age`` (it changes between two reads)."""
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, dict):
        return {
            k: {x: y for x, y in v.items() if x != "age"} if k == "unsigned" and isinstance(v, dict) else stable(v)
            for k, v in value.items()
        }
    return value


def bodies(events: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message" and "body" in e["content"]]


@pytest.fixture
async def api(app: QuartTrio) -> Api:
    return Api(app)


async def room_with_bob(api: Api, **create: Any) -> tuple[User, User, str]:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.create_room(alice, **create)
    await api.invite(alice, room, bob)
    await api.join(bob, room)
    return alice, bob, room


# ---------------------------------------------------------------------------- /state


async def test_state_lists_current_state_as_client_events(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.create_room(alice, name="Kitchen")
    state = await api.call("GET", f"/rooms/{q(room)}/state", alice)
    assert isinstance(state, list)
    by_key = {(e["type"], e["state_key"]): e for e in state}
    assert {("m.room.create", ""), ("m.room.member", alice.user_id), ("m.room.power_levels", ""),
            ("m.room.join_rules", ""), ("m.room.history_visibility", ""), ("m.room.name", "")} <= set(by_key)
    for event in state:
        assert event["room_id"] == room
        assert {"event_id", "sender", "origin_server_ts", "content", "unsigned"} <= set(event)
        assert not {"auth_events", "prev_events", "hashes", "signatures", "depth"} & set(event)
    assert by_key[("m.room.name", "")]["content"] == {"name": "Kitchen"}
    # r0 alias serves the same.
    r0 = await api.call("GET", f"/rooms/{q(room)}/state", alice, prefix="/_matrix/client/r0")
    assert stable(r0) == stable(state)


async def test_state_event_content_and_format_event(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.create_room(alice, name="Kitchen")
    base = f"/rooms/{q(room)}/state/m.room.name"
    assert await api.call("GET", base, alice) == {"name": "Kitchen"}
    assert await api.call("GET", base + "/", alice) == {"name": "Kitchen"}
    assert await api.call("GET", base, alice, query={"format": "content"}) == {"name": "Kitchen"}
    event = await api.call("GET", base, alice, query={"format": "event"})
    assert event["type"] == "m.room.name" and event["state_key"] == "" and event["room_id"] == room
    assert event["content"] == {"name": "Kitchen"} and event["sender"] == alice.user_id
    assert event["event_id"].startswith("$")
    member = await api.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(alice.user_id)}", alice)
    assert member["membership"] == "join"
    # PUT with the optional trailing slash too (room_state.yaml).
    await api.call("PUT", base + "/", alice, json={"name": "Slash"})
    assert await api.call("GET", base, alice) == {"name": "Slash"}
    # A state key with a slash in it.
    await api.put_state(alice, room, "org.example.thing", {"v": 1}, key="a/b")
    assert await api.call("GET", f"/rooms/{q(room)}/state/org.example.thing/a/b", alice) == {"v": 1}


async def test_state_errors(api: Api) -> None:
    alice = await api.register("alice")
    charlie = await api.register("charlie")
    room = await api.create_room(alice)
    topic = await api.call("GET", f"/rooms/{q(room)}/state/m.room.topic", alice, expect=404)
    assert topic["errcode"] == "M_NOT_FOUND"
    bad = await api.call("GET", f"/rooms/{q(room)}/state/m.room.create", alice, query={"format": "pdu"}, expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    assert (await api.call("GET", f"/rooms/{q(room)}/state", None, expect=401))["errcode"] == "M_MISSING_TOKEN"
    for path in ("/state", "/state/m.room.create", "/members"):
        body = await api.call("GET", f"/rooms/{q(room)}{path}", charlie, expect=403)
        assert body["errcode"] == "M_FORBIDDEN"
    unknown = "!nope:localhost"
    assert (await api.call("GET", f"/rooms/{q(unknown)}/state", alice, expect=403))["errcode"] == "M_FORBIDDEN"


async def test_departed_user_sees_state_when_they_left(api: Api) -> None:
    alice, bob, room = await room_with_bob(api, name="Before")
    await api.leave(bob, room)
    await api.put_state(alice, room, "m.room.name", {"name": "After"})
    assert await api.call("GET", f"/rooms/{q(room)}/state/m.room.name", bob) == {"name": "Before"}
    state = await api.call("GET", f"/rooms/{q(room)}/state", bob)
    by_key = {(e["type"], e["state_key"]): e for e in state}
    assert by_key[("m.room.name", "")]["content"] == {"name": "Before"}
    assert by_key[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"
    members = await api.call("GET", f"/rooms/{q(room)}/members", bob)
    assert {e["state_key"]: e["content"]["membership"] for e in members["chunk"]} == {
        alice.user_id: "join", bob.user_id: "leave"}
    # A room forgotten is a room no longer readable (leaving.yaml /forget).
    await api.call("POST", f"/rooms/{q(room)}/forget", bob, json={})
    assert (await api.call("GET", f"/rooms/{q(room)}/state", bob, expect=403))["errcode"] == "M_FORBIDDEN"


async def test_world_readable_room_is_readable_by_anyone(api: Api) -> None:
    alice = await api.register("alice")
    charlie = await api.register("charlie")
    room = await api.create_room(alice, name="Open")
    await api.put_state(alice, room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    assert await api.call("GET", f"/rooms/{q(room)}/state/m.room.name", charlie) == {"name": "Open"}
    assert len(await api.call("GET", f"/rooms/{q(room)}/state", charlie)) >= 5
    joined = await api.call("GET", f"/rooms/{q(room)}/joined_members", charlie)
    assert list(joined["joined"]) == [alice.user_id]


# ------------------------------------------------------------------- /members


async def test_members_filters_and_at(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    dave = await api.register("dave")
    room = await api.create_room(alice)
    first_sync = await api.sync(alice)
    prev_batch = first_sync["rooms"]["join"][room]["timeline"]["prev_batch"]
    next_batch = first_sync["next_batch"]
    await api.invite(alice, room, bob)
    await api.join(bob, room)
    await api.invite(alice, room, carol)
    await api.invite(alice, room, dave)
    await api.call("POST", f"/rooms/{q(room)}/ban", alice, json={"user_id": dave.user_id})
    base = f"/rooms/{q(room)}/members"

    async def members(**query: Any) -> dict[str, str]:
        chunk = (await api.call("GET", base, alice, query=query))["chunk"]
        for event in chunk:
            assert event["type"] == "m.room.member" and event["room_id"] == room
        return {e["state_key"]: e["content"]["membership"] for e in chunk}

    everyone = {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite", dave.user_id: "ban"}
    assert await members() == everyone
    assert await members(membership="join") == {alice.user_id: "join", bob.user_id: "join"}
    assert await members(not_membership="join") == {carol.user_id: "invite", dave.user_id: "ban"}
    # "either the membership *is* the same as membership **or** *is not* the same as not_membership"
    assert await members(membership="invite", not_membership="join") == {
        carol.user_id: "invite", dave.user_id: "ban"}
    assert await members(membership="join", not_membership="ban") == {
        alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"}
    # at: the initial sync's tokens name the room before bob and the others.
    assert await members(at=next_batch) == {alice.user_id: "join"}
    assert await members(at=prev_batch) == {}  # before the timeline: before everything
    for bad in ({"membership": "joined"}, {"not_membership": "x"}, {"at": "nonsense"}, {"at": "t" + "9" * 30}):
        body = await api.call("GET", base, alice, query=bad, expect=400)
        assert body["errcode"] == "M_INVALID_PARAM"


async def test_joined_members(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    charlie = await api.register("charlie")
    await api.call("PUT", f"/profile/{q(alice.user_id)}/avatar_url", alice,
                   json={"avatar_url": "mxc://localhost/abc"}, expect=None)
    body = await api.call("GET", f"/rooms/{q(room)}/joined_members", alice)
    assert body["joined"][alice.user_id]["display_name"] == "alice"
    assert body["joined"][bob.user_id] == {"display_name": "bob"}
    assert set(body["joined"]) == {alice.user_id, bob.user_id}
    assert (await api.call("GET", f"/rooms/{q(room)}/joined_members", charlie, expect=403))["errcode"] == "M_FORBIDDEN"
    await api.leave(bob, room)
    # "The current user must be in the room for it to work."
    assert (await api.call("GET", f"/rooms/{q(room)}/joined_members", bob, expect=403))["errcode"] == "M_FORBIDDEN"
    assert set((await api.call("GET", f"/rooms/{q(room)}/joined_members", alice))["joined"]) == {alice.user_id}


# ---------------------------------------------------------------------- /event


async def test_event_shape_and_not_found(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    other = await api.create_room(alice)
    event_id = await api.send(alice, room, "hello")
    event = await api.call("GET", f"/rooms/{q(room)}/event/{q(event_id)}", bob)
    assert event["event_id"] == event_id and event["room_id"] == room
    assert event["content"] == {"msgtype": "m.text", "body": "hello"} and event["sender"] == alice.user_id
    assert "age" in event["unsigned"] and "transaction_id" not in event["unsigned"]
    own = await api.call("GET", f"/rooms/{q(room)}/event/{q(event_id)}", alice)
    assert own["unsigned"]["transaction_id"].startswith("txn")  # the sender's own device
    for path in (f"/rooms/{q(room)}/event/{q('$unknown')}", f"/rooms/{q(other)}/event/{q(event_id)}"):
        assert (await api.call("GET", path, alice, expect=404))["errcode"] == "M_NOT_FOUND"


async def test_redacted_event_is_served_redacted(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    event_id = await api.send(alice, room, "oops", url="mxc://localhost/x")
    redaction = (await api.call("PUT", f"/rooms/{q(room)}/redact/{q(event_id)}/r1", alice,
                                json={"reason": "typo"}))["event_id"]
    for path in (f"/rooms/{q(room)}/event/{q(event_id)}",):
        event = await api.call("GET", path, bob)
        assert event["content"] == {}
        because = event["unsigned"]["redacted_because"]
        assert because["event_id"] == redaction and because["content"]["reason"] == "typo"
    page = await api.messages(bob, room, dir="b", limit=5)
    target = next(e for e in page["chunk"] if e["event_id"] == event_id)
    assert target["content"] == {} and target["unsigned"]["redacted_because"]["event_id"] == redaction
    context = await api.call("GET", f"/rooms/{q(room)}/context/{q(event_id)}", bob)
    assert context["event"]["content"] == {}


# -------------------------------------------------------------------- /context


async def test_context_shape_tokens_and_filter(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    ids = [await api.send(alice if i % 2 else bob, room, f"m{i}") for i in range(10)]
    base = f"/rooms/{q(room)}/context/{q(ids[5])}"
    body = await api.call("GET", base, bob, query={"limit": 4})
    assert body["event"]["event_id"] == ids[5]
    assert bodies(body["events_before"]) == ["m4", "m3"]  # reverse-chronological
    assert bodies(body["events_after"]) == ["m6", "m7"]  # chronological
    state_keys = {(e["type"], e["state_key"]) for e in body["state"]}
    assert ("m.room.create", "") in state_keys and ("m.room.member", bob.user_id) in state_keys
    # start/end continue with /messages.
    back = await api.messages(bob, room, dir="b", limit=2, **{"from": body["start"]})
    assert bodies(back["chunk"]) == ["m2", "m1"]
    forward = await api.messages(bob, room, dir="f", limit=2, **{"from": body["end"]})
    assert bodies(forward["chunk"]) == ["m8", "m9"]
    # The filter applies to the neighbours and the state, not the event.
    filtered = await api.call("GET", base, bob, query={
        "limit": 4, "filter": {"senders": [bob.user_id], "lazy_load_members": True}})
    assert bodies(filtered["events_before"]) == ["m4", "m2"]
    assert bodies(filtered["events_after"]) == ["m6", "m8"]
    assert filtered["event"]["sender"] == alice.user_id
    # Lazy: the senders' members (alice's and bob's), then the filter (sent by bob).
    assert [(e["type"], e["state_key"]) for e in filtered["state"]] == [("m.room.member", bob.user_id)]
    lazy = await api.call("GET", base, bob, query={"limit": 4, "filter": {"lazy_load_members": True}})
    assert sorted(e["state_key"] for e in lazy["state"]) == sorted([alice.user_id, bob.user_id])
    # limit 0: just the event.
    alone = await api.call("GET", base, bob, query={"limit": 0})
    assert alone["events_before"] == [] and alone["events_after"] == [] and alone["event"]["event_id"] == ids[5]
    assert bodies((await api.messages(bob, room, dir="b", limit=1, **{"from": alone["start"]}))["chunk"]) == ["m4"]
    assert bodies((await api.messages(bob, room, dir="f", limit=1, **{"from": alone["end"]}))["chunk"]) == ["m6"]


async def test_context_errors(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    event_id = await api.send(alice, room, "x")
    base = f"/rooms/{q(room)}/context/{q(event_id)}"
    unknown = await api.call("GET", f"/rooms/{q(room)}/context/{q('$nope')}", bob, expect=404)
    assert unknown["errcode"] == "M_NOT_FOUND"
    assert (await api.call("GET", base, bob, query={"filter": "{not json"}, expect=400))["errcode"] == "M_NOT_JSON"
    assert (await api.call("GET", base, bob, query={"filter": {"types": "x"}}, expect=400))["errcode"] == "M_BAD_JSON"
    assert (await api.call("GET", base, bob, query={"limit": "-1"}, expect=400))["errcode"] == "M_INVALID_PARAM"
    assert (await api.call("GET", base, bob, query={"limit": "ten"}, expect=400))["errcode"] == "M_INVALID_PARAM"


# ------------------------------------------------------------------- /messages


async def test_messages_paginates_back_and_forth_over_30_events(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    sent = [f"msg{i}" for i in range(30)]
    for body in sent:
        await api.send(alice, room, body)
    # Backwards from the end (no from: v1.3), limit 7, until `end` is omitted.
    events, pages = await api.page_all(bob, room, dir="b", limit=7)
    assert bodies(events) == list(reversed(sent))
    assert all(len(p["chunk"]) <= 7 for p in pages)
    assert [len(p["chunk"]) for p in pages[:5]] == [7, 7, 7, 7, 7]  # 30 msgs, then the room's creation
    assert events[-1]["type"] == "m.room.create"
    orderings = [e["event_id"] for e in events]
    assert len(set(orderings)) == len(orderings)  # no event twice across page boundaries
    # Forwards from the start (no from), limit 7: the same events in order.
    forward, fpages = await api.page_all(bob, room, dir="f", limit=7)
    assert [e["event_id"] for e in forward] == list(reversed(orderings))
    assert fpages[-1]["chunk"] == [] and "end" not in fpages[-1]
    # start echoes from.
    page = await api.messages(bob, room, dir="b", limit=7, **{"from": pages[1]["end"]})
    assert page["start"] == pages[1]["end"] and stable(page) == stable(pages[2])
    # Back from a middle token, then forward from that page's end returns to the same spot.
    back = await api.messages(bob, room, dir="b", limit=7, **{"from": pages[1]["end"]})
    again = await api.messages(bob, room, dir="f", limit=7, **{"from": back["end"]})
    assert bodies(again["chunk"]) == list(reversed(bodies(back["chunk"])))
    # The default limit is 10.
    assert len((await api.messages(bob, room, dir="b"))["chunk"]) == 10


async def test_messages_joins_up_with_sync_prev_batch(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    sent = [f"msg{i}" for i in range(30)]
    for body in sent:
        await api.send(alice, room, body)
    sync = await api.sync(bob, filter={"room": {"timeline": {"limit": 5}}})
    timeline = sync["rooms"]["join"][room]["timeline"]
    assert bodies(timeline["events"]) == sent[-5:] and timeline["limited"] is True
    # Backwards from prev_batch: exactly the events before the sync timeline.
    older, _ = await api.page_all(bob, room, dir="b", limit=7, **{"from": timeline["prev_batch"]})
    assert bodies(older) == list(reversed(sent[:-5]))
    # Forwards from prev_batch: the timeline's events, then nothing.
    newer, _ = await api.page_all(bob, room, dir="f", limit=7, **{"from": timeline["prev_batch"]})
    assert [e["event_id"] for e in newer] == [e["event_id"] for e in timeline["events"]]
    # `to`: closing a gap from a sync token to a prev_batch ("Syncing").
    first = await api.sync(bob)
    for body in ("g1", "g2", "g3", "g4"):
        await api.send(alice, room, body)
    later = await api.sync(bob, since=first["next_batch"], filter={"room": {"timeline": {"limit": 1}}})
    gap_end = later["rooms"]["join"][room]["timeline"]["prev_batch"]
    assert bodies(later["rooms"]["join"][room]["timeline"]["events"]) == ["g4"]
    gap, _ = await api.page_all(bob, room, dir="f", limit=2, **{"from": first["next_batch"], "to": gap_end})
    assert bodies(gap) == ["g1", "g2", "g3"]
    gap_back, _ = await api.page_all(bob, room, dir="b", limit=2, **{"from": gap_end, "to": first["next_batch"]})
    assert bodies(gap_back) == ["g3", "g2", "g1"]
    # dir=f from next_batch: nothing new yet, then the new event.
    latest = later["next_batch"]
    empty = await api.messages(bob, room, dir="f", **{"from": latest})
    assert empty["chunk"] == [] and "end" not in empty
    await api.send(alice, room, "new")
    assert bodies((await api.messages(bob, room, dir="f", **{"from": latest}))["chunk"]) == ["new"]


async def test_messages_filter_and_lazy_members(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    await api.send(alice, room, "a1")
    await api.send(bob, room, "b1", url="mxc://localhost/img")
    await api.put_state(alice, room, "m.room.topic", {"topic": "t"})
    await api.send(alice, room, "a2")

    async def chunk(f: dict[str, Any], limit: int = 50) -> list[dict]:
        return (await api.messages(bob, room, dir="b", limit=limit, filter=f))["chunk"]

    assert bodies(await chunk({"senders": [bob.user_id]})) == ["b1"]
    assert bodies(await chunk({"not_senders": [bob.user_id], "types": ["m.room.message"]})) == ["a2", "a1"]
    assert [e["type"] for e in await chunk({"types": ["m.room.t*"]})] == ["m.room.topic"]
    assert bodies(await chunk({"contains_url": True})) == ["b1"]
    assert bodies(await chunk({"contains_url": False, "types": ["m.room.message"]})) == ["a2", "a1"]
    assert await chunk({"not_rooms": [room]}) == []
    # Filter limit applies when the query gives none.
    assert len((await api.messages(bob, room, dir="b", filter={"limit": 2}))["chunk"]) == 2
    lazy = {"lazy_load_members": True, "types": ["m.room.message"]}
    page = await api.messages(bob, room, dir="b", limit=3, filter=lazy)
    assert bodies(page["chunk"]) == ["a2", "b1", "a1"]
    assert sorted(e["state_key"] for e in page["state"]) == sorted([alice.user_id, bob.user_id])
    assert all(e["type"] == "m.room.member" and e["content"]["membership"] == "join" for e in page["state"])
    assert "state" not in await api.messages(bob, room, dir="b", limit=3)


async def test_messages_invisible_run_still_advances(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.create_room(alice)
    await api.put_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
    for i in range(12):
        await api.send(alice, room, f"hidden{i}")
    await api.invite(alice, room, bob)
    await api.join(bob, room)
    await api.send(alice, room, "seen")
    # A scan bound smaller than the invisible run: pages come back empty but with an
    # `end` that moves on, until the room's start.
    monkeypatch.setattr(room_reads, "MAX_SCAN", 3)
    events, pages = await api.page_all(bob, room, dir="b", limit=2)
    assert bodies(events) == ["seen"]
    assert any(p["chunk"] == [] and "end" in p for p in pages)
    ends = [p["end"] for p in pages if "end" in p]
    assert len(ends) == len(set(ends))  # always progressing
    monkeypatch.setattr(room_reads, "MAX_SCAN", 5000)
    whole = await api.messages(bob, room, dir="b", limit=10)
    assert bodies(whole["chunk"]) == ["seen"] and "end" not in whole


async def test_messages_errors(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    charlie = await api.register("charlie")
    path = f"/rooms/{q(room)}/messages"
    assert (await api.call("GET", path, bob, expect=400))["errcode"] == "M_MISSING_PARAM"
    cases = [
        ({"dir": "x"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "garbage"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "t12x"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "t" + "9" * 19}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "s1_2"}, "M_INVALID_PARAM"),
        # Negative positions are backfilled history (storage/backfill.py); out of range is not.
        ({"dir": "b", "to": "t-" + "9" * 19}, "M_INVALID_PARAM"),
        ({"dir": "b", "to": "t--1"}, "M_INVALID_PARAM"),
        ({"dir": "b", "limit": "-1"}, "M_INVALID_PARAM"),
        ({"dir": "b", "limit": "1.5"}, "M_INVALID_PARAM"),
        ({"dir": "b", "filter": "[1]"}, "M_BAD_JSON"),
        ({"dir": "b", "filter": "{"}, "M_NOT_JSON"),
        ({"dir": "b", "filter": '{"senders": ["alice"]}'}, "M_INVALID_PARAM"),
    ]
    for query, errcode in cases:
        body = await api.call("GET", path, bob, query=query, expect=400)
        assert body["errcode"] == errcode, (query, body)
    assert (await api.call("GET", path, charlie, query={"dir": "b"}, expect=403))["errcode"] == "M_FORBIDDEN"
    assert (await api.call("GET", path, None, query={"dir": "b"}, expect=401))["errcode"] == "M_MISSING_TOKEN"
    # Huge limits are capped, tokens from far in the future are fine.
    assert "chunk" in await api.messages(bob, room, dir="b", limit=10**12)
    assert (await api.messages(bob, room, dir="f", **{"from": "t9000000000000000000"}))["chunk"] == []
    assert (await api.messages(bob, room, dir="b", limit=0))["chunk"] == []
    assert "chunk" in await api.messages(bob, room, dir="b", **{"from": "s5_0_0"})


async def test_departed_user_pages_only_up_to_their_leave(api: Api) -> None:
    alice, bob, room = await room_with_bob(api)
    await api.send(alice, room, "while joined")
    await api.leave(bob, room)
    await api.send(alice, room, "after leave")
    events, _ = await api.page_all(bob, room, dir="b", limit=3)
    assert bodies(events) == ["while joined"]
    assert events[0]["type"] == "m.room.member" and events[0]["state_key"] == bob.user_id  # their leave
    forward, _ = await api.page_all(bob, room, dir="f", limit=3)
    assert bodies(forward) == ["while joined"]
    # Even a token from after the leave starts at the leave.
    sync = await api.sync(alice)
    assert bodies((await api.messages(bob, room, dir="b", **{"from": sync["next_batch"]}))["chunk"]) == ["while joined"]


async def test_banned_user_reads_up_to_the_ban(api: Api) -> None:
    alice, bob, room = await room_with_bob(api, name="Before")
    await api.send(bob, room, "bob talks")
    await api.call("POST", f"/rooms/{q(room)}/ban", alice, json={"user_id": bob.user_id, "reason": "spam"})
    await api.send(alice, room, "after ban")
    await api.put_state(alice, room, "m.room.name", {"name": "After"})
    assert await api.call("GET", f"/rooms/{q(room)}/state/m.room.name", bob) == {"name": "Before"}
    ban = await api.call("GET", f"/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", bob,
                         query={"format": "event"})
    assert ban["content"]["membership"] == "ban" and ban["sender"] == alice.user_id
    events, _ = await api.page_all(bob, room, dir="b", limit=5)
    assert bodies(events) == ["bob talks"] and events[0]["event_id"] == ban["event_id"]
    # Members `at` a later token are still the members when bob was banned.
    sync = await api.sync(alice)
    chunk = (await api.call("GET", f"/rooms/{q(room)}/members", bob, query={"at": sync["next_batch"]}))["chunk"]
    assert {e["state_key"]: e["content"]["membership"] for e in chunk} == {alice.user_id: "join", bob.user_id: "ban"}
