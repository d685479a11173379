"""Room aliases, directory visibility, /publicRooms and room upgrades over HTTP
(quart's test client on the real services; api/client/directory.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from api.app import create_app
from api.deps import Deps
from api.rooms_service import get_state_view
from api.services import open_homeserver
from api.settings import parse_settings
from storage.schema import users

PREFIX = "/_matrix/client/v3"


class Api:
    """A test client plus the homeserver's services, with small Matrix helpers."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.client = create_app(deps).test_client()

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, *, expect: int = 200
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        response = await self.client.open(PREFIX + path, method=method, **kwargs)
        data = await response.get_json()
        assert response.status_code == expect, (method, path, response.status_code, data)
        return data

    async def register(self, name: str, *, admin: bool = False) -> str:
        body = {"username": name, "auth": {"type": "m.login.dummy"}}  # no password: no argon2
        result = await self.call("POST", "/register", body=body)
        if admin:
            user_id = result["user_id"]
            await self.deps.db.write(
                lambda conn: conn.execute(sa.update(users).where(users.c.user_id == user_id).values(is_admin=True))
            )
        return result["access_token"]

    async def create_room(self, token: str, **body: Any) -> str:
        return (await self.call("POST", "/createRoom", token, body))["room_id"]

    async def join(self, token: str, room: str) -> None:
        await self.call("POST", f"/join/{quote(room, safe='')}", token, {})

    async def put_state(self, token: str, room_id: str, event_type: str, content: dict, state_key: str = "") -> None:
        path = f"/rooms/{room_id}/state/{event_type}" + (f"/{quote(state_key, safe='')}" if state_key else "")
        await self.call("PUT", path, token, content)

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict | None:
        view = await get_state_view(self.deps, room_id)
        event_id = view.current_state.get((event_type, state_key))
        return None if event_id is None else view.state_events[event_id]


def alias_path(alias: str) -> str:
    return f"/directory/room/{quote(alias, safe='')}"


@pytest.fixture
async def api(tmp_path: Path):
    settings = parse_settings(
        {
            "database": {"path": "data/roomactors.db"},
            "registration": {"enabled": True},
            "ratelimit": {"enabled": False},
        },
        base_dir=tmp_path,
    )
    async with open_homeserver(settings) as deps:
        yield Api(deps)


@pytest.fixture
async def alice(api: Api) -> str:
    return await api.register("alice")


@pytest.fixture
async def bob(api: Api) -> str:
    return await api.register("bob")


# ------------------------------------------------------------------------ aliases


async def test_alias_create_resolve_delete(api: Api, alice: str) -> None:
    room_id = await api.create_room(alice)
    assert await api.call("PUT", alias_path("#lobby:localhost"), alice, {"room_id": room_id}) == {}
    # GET needs no access token (the spec's operation has no security).
    assert await api.call("GET", alias_path("#lobby:localhost")) == {"room_id": room_id, "servers": ["localhost"]}
    taken = await api.call("PUT", alias_path("#lobby:localhost"), alice, {"room_id": room_id}, expect=409)
    assert taken["errcode"] == "M_UNKNOWN"
    assert await api.call("DELETE", alias_path("#lobby:localhost"), alice) == {}
    missing = await api.call("GET", alias_path("#lobby:localhost"), expect=404)
    assert missing["errcode"] == "M_NOT_FOUND"
    assert (await api.call("DELETE", alias_path("#lobby:localhost"), alice, expect=404))["errcode"] == "M_NOT_FOUND"


async def test_alias_with_slash_and_unicode_localpart(api: Api, alice: str) -> None:
    room_id = await api.create_room(alice)
    alias = "#café/ünï:localhost"
    await api.call("PUT", alias_path(alias), alice, {"room_id": room_id})
    assert (await api.call("GET", alias_path(alias)))["room_id"] == room_id
    assert await api.call("GET", f"/rooms/{room_id}/aliases", alice) == {"aliases": [alias]}


@pytest.mark.parametrize(
    "alias",
    ["lobby:localhost", "#lobby", "#lobby:", "#lobby:bad_server!", "#:localhost", "#lob by:localhost",
     "#" + "a" * 250 + ":localhost", "#a\x00b:localhost"],
)
async def test_put_alias_refuses_malformed_aliases(api: Api, alice: str, alias: str) -> None:
    room_id = await api.create_room(alice)
    error = await api.call("PUT", alias_path(alias), alice, {"room_id": room_id}, expect=400)
    assert error["errcode"] == "M_INVALID_PARAM"


async def test_put_alias_errors(api: Api, alice: str, bob: str) -> None:
    room_id = await api.create_room(alice, preset="public_chat")
    remote = await api.call("PUT", alias_path("#x:elsewhere.example"), alice, {"room_id": room_id}, expect=400)
    assert remote["errcode"] == "M_INVALID_PARAM"
    unknown = await api.call("PUT", alias_path("#x:localhost"), alice, {"room_id": "!nope:localhost"}, expect=404)
    assert unknown["errcode"] == "M_NOT_FOUND"
    assert (await api.call("PUT", alias_path("#x:localhost"), alice, {}, expect=400))["errcode"] == "M_MISSING_PARAM"
    assert (await api.call("PUT", alias_path("#x:localhost"), alice, {"room_id": 5}, expect=400))["errcode"] == "M_BAD_JSON"
    bad_id = await api.call("PUT", alias_path("#x:localhost"), alice, {"room_id": "room"}, expect=400)
    assert bad_id["errcode"] == "M_INVALID_PARAM"
    await api.call("PUT", alias_path("#x:localhost"), None, {"room_id": room_id}, expect=401)
    # Not joined (the room is public, but bob has not joined it): no alias squatting.
    outsider = await api.call("PUT", alias_path("#x:localhost"), bob, {"room_id": room_id}, expect=403)
    assert outsider["errcode"] == "M_FORBIDDEN"
    await api.join(bob, room_id)
    await api.call("PUT", alias_path("#x:localhost"), bob, {"room_id": room_id})


async def test_admin_may_alias_a_room_they_are_not_in(api: Api, alice: str) -> None:
    admin = await api.register("root", admin=True)
    room_id = await api.create_room(alice)
    await api.call("PUT", alias_path("#admin-made:localhost"), admin, {"room_id": room_id})
    assert (await api.call("GET", alias_path("#admin-made:localhost")))["room_id"] == room_id


async def test_get_alias_of_another_server_is_an_error_not_a_fake(api: Api) -> None:
    error = await api.call("GET", alias_path("#room:matrix.org"), expect=502)
    assert error["errcode"] == "M_UNKNOWN"
    assert "federation" in error["error"]
    assert (await api.call("GET", alias_path("room:localhost"), expect=400))["errcode"] == "M_INVALID_PARAM"


async def test_delete_alias_permissions(api: Api, alice: str, bob: str) -> None:
    carol = await api.register("carol")
    admin = await api.register("root", admin=True)
    room_id = await api.create_room(alice, preset="public_chat")
    await api.join(bob, room_id)
    await api.join(carol, room_id)
    for name, token in (("a1", alice), ("a2", alice), ("b1", bob), ("b2", bob)):
        await api.call("PUT", alias_path(f"#{name}:localhost"), token, {"room_id": room_id})
    # carol: neither creator nor able to send m.room.canonical_alias (level 50).
    assert (await api.call("DELETE", alias_path("#a1:localhost"), carol, expect=403))["errcode"] == "M_FORBIDDEN"
    assert (await api.call("DELETE", alias_path("#b1:localhost"), carol, expect=403))["errcode"] == "M_FORBIDDEN"
    await api.call("DELETE", alias_path("#b1:localhost"), bob)  # the alias's creator
    await api.call("DELETE", alias_path("#b2:localhost"), alice)  # a room moderator
    await api.call("DELETE", alias_path("#a1:localhost"), admin)  # a server admin
    await api.call("DELETE", alias_path("#a2:localhost"), None, expect=401)
    # Moderator status is measured by the canonical alias level: lower it and carol may.
    pl = (await api.state(room_id, "m.room.power_levels"))["content"]
    pl["events"]["m.room.canonical_alias"] = 0
    await api.put_state(alice, room_id, "m.room.power_levels", pl)
    await api.call("DELETE", alias_path("#a2:localhost"), carol)
    assert await api.call("GET", f"/rooms/{room_id}/aliases", alice) == {"aliases": []}


async def test_delete_alias_updates_canonical_alias(api: Api, alice: str) -> None:
    room_id = await api.create_room(alice, room_alias_name="main")
    await api.call("PUT", alias_path("#alt:localhost"), alice, {"room_id": room_id})
    await api.call("PUT", alias_path("#alt2:localhost"), alice, {"room_id": room_id})
    content = {"alias": "#main:localhost", "alt_aliases": ["#alt:localhost", "#alt2:localhost"]}
    await api.put_state(alice, room_id, "m.room.canonical_alias", content)
    await api.call("DELETE", alias_path("#main:localhost"), alice)
    assert (await api.state(room_id, "m.room.canonical_alias"))["content"] == {
        "alt_aliases": ["#alt:localhost", "#alt2:localhost"]
    }
    await api.call("DELETE", alias_path("#alt:localhost"), alice)
    assert (await api.state(room_id, "m.room.canonical_alias"))["content"] == {"alt_aliases": ["#alt2:localhost"]}
    await api.call("DELETE", alias_path("#alt2:localhost"), alice)
    assert (await api.state(room_id, "m.room.canonical_alias"))["content"] == {}


async def test_delete_alias_succeeds_when_the_canonical_alias_cannot_be_updated(api: Api, alice: str, bob: str) -> None:
    room_id = await api.create_room(alice, preset="public_chat")
    await api.join(bob, room_id)
    await api.call("PUT", alias_path("#bobs:localhost"), bob, {"room_id": room_id})
    await api.put_state(alice, room_id, "m.room.canonical_alias", {"alt_aliases": ["#bobs:localhost"]})
    # bob created the alias, so he may delete it, but he may not send m.room.canonical_alias.
    await api.call("DELETE", alias_path("#bobs:localhost"), bob)
    assert (await api.call("GET", alias_path("#bobs:localhost"), expect=404))["errcode"] == "M_NOT_FOUND"
    assert (await api.state(room_id, "m.room.canonical_alias"))["content"] == {"alt_aliases": ["#bobs:localhost"]}


async def test_room_aliases_visibility(api: Api, alice: str, bob: str) -> None:
    admin = await api.register("root", admin=True)
    room_id = await api.create_room(alice, room_alias_name="secret")
    await api.call("PUT", alias_path("#another:localhost"), alice, {"room_id": room_id})
    expected = {"aliases": ["#another:localhost", "#secret:localhost"]}
    assert await api.call("GET", f"/rooms/{room_id}/aliases", alice) == expected
    assert (await api.call("GET", f"/rooms/{room_id}/aliases", bob, expect=403))["errcode"] == "M_FORBIDDEN"
    assert await api.call("GET", f"/rooms/{room_id}/aliases", admin) == expected
    await api.call("GET", f"/rooms/{room_id}/aliases", expect=401)
    await api.put_state(alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"})
    assert await api.call("GET", f"/rooms/{room_id}/aliases", bob) == expected
    assert (await api.call("GET", "/rooms/!unknown:localhost/aliases", bob, expect=403))["errcode"] == "M_FORBIDDEN"
    assert (await api.call("GET", "/rooms/nonsense/aliases", bob, expect=400))["errcode"] == "M_INVALID_PARAM"


async def test_join_by_alias_and_create_room_alias(api: Api, alice: str, bob: str) -> None:
    room_id = await api.create_room(alice, preset="public_chat", room_alias_name="town-square")
    assert await api.call("GET", alias_path("#town-square:localhost")) == {"room_id": room_id, "servers": ["localhost"]}
    assert await api.call("POST", f"/join/{quote('#town-square:localhost', safe='')}", bob, {}) == {"room_id": room_id}
    assert bob and "@bob:localhost" in (await get_state_view(api.deps, room_id)).joined_members
    # createRoom reserves the alias: a second room cannot take it.
    taken = await api.call("POST", "/createRoom", alice, {"room_alias_name": "town-square"}, expect=400)
    assert taken["errcode"] == "M_ROOM_IN_USE"


# ----------------------------------------------------------- directory visibility


async def test_directory_visibility(api: Api, alice: str, bob: str) -> None:
    admin = await api.register("root", admin=True)
    private_room = await api.create_room(alice, preset="public_chat")
    public_room = await api.create_room(alice, preset="public_chat", visibility="public")
    assert await api.call("GET", f"/directory/list/room/{private_room}") == {"visibility": "private"}
    assert await api.call("GET", f"/directory/list/room/{public_room}") == {"visibility": "public"}
    assert (await api.call("GET", "/directory/list/room/!nope:localhost", expect=404))["errcode"] == "M_NOT_FOUND"
    missing = await api.call("PUT", "/directory/list/room/!nope:localhost", alice, {"visibility": "public"}, expect=404)
    assert missing["errcode"] == "M_NOT_FOUND"

    # bob is not joined; once joined he is still no moderator.
    await api.call("PUT", f"/directory/list/room/{private_room}", bob, {"visibility": "public"}, expect=403)
    await api.join(bob, private_room)
    await api.call("PUT", f"/directory/list/room/{private_room}", bob, {"visibility": "public"}, expect=403)
    await api.call("PUT", f"/directory/list/room/{private_room}", None, {"visibility": "public"}, expect=401)
    bad = await api.call("PUT", f"/directory/list/room/{private_room}", alice, {"visibility": "secret"}, expect=400)
    assert bad["errcode"] == "M_BAD_JSON"

    await api.call("PUT", f"/directory/list/room/{private_room}", alice, {})  # defaults to public
    assert await api.call("GET", f"/directory/list/room/{private_room}") == {"visibility": "public"}
    await api.call("PUT", f"/directory/list/room/{public_room}", admin, {"visibility": "private"})
    assert await api.call("GET", f"/directory/list/room/{public_room}") == {"visibility": "private"}


async def test_v12_creator_may_publish(api: Api, alice: str) -> None:
    room_id = await api.create_room(alice, room_version="12")
    await api.call("PUT", f"/directory/list/room/{room_id}", alice, {"visibility": "public"})
    assert await api.call("GET", f"/directory/list/room/{room_id}") == {"visibility": "public"}


# -------------------------------------------------------------------- publicRooms


async def test_public_rooms_entries_and_filters(api: Api, alice: str, bob: str) -> None:
    carol = await api.register("carol")
    big = await api.create_room(
        alice, preset="public_chat", visibility="public", name="Big Room", topic="Everything", room_alias_name="big"
    )
    await api.join(bob, big)
    await api.join(carol, big)
    small = await api.create_room(alice, preset="public_chat", visibility="public", name="Small")
    await api.put_state(alice, small, "m.room.avatar", {"url": "mxc://localhost/abc"})
    await api.put_state(alice, small, "m.room.guest_access", {"guest_access": "can_join"})
    await api.put_state(alice, small, "m.room.history_visibility", {"history_visibility": "world_readable"})
    space = await api.create_room(
        alice, preset="public_chat", visibility="public", name="A Space", creation_content={"type": "m.space"}
    )
    await api.join(bob, space)
    # Published but invite-only and not world readable: not listed (Synapse's filter).
    await api.create_room(alice, preset="private_chat", visibility="public", name="Hidden")
    # Not published at all.
    await api.create_room(alice, preset="public_chat", name="Unpublished")
    # Invite-only but world readable: listed.
    readable = await api.create_room(
        alice, preset="private_chat", visibility="public", name="Readable",
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}],
    )

    listing = await api.call("GET", "/publicRooms")  # no access token needed
    assert [e["room_id"] for e in listing["chunk"]] == [big, space] + sorted([small, readable])
    assert listing["total_room_count_estimate"] == 4
    assert "next_batch" not in listing and "prev_batch" not in listing
    entries = {e["room_id"]: e for e in listing["chunk"]}
    assert entries[big] == {
        "room_id": big, "num_joined_members": 3, "world_readable": False, "guest_can_join": False,
        "name": "Big Room", "topic": "Everything", "canonical_alias": "#big:localhost", "join_rule": "public",
    }
    assert entries[small] == {
        "room_id": small, "num_joined_members": 1, "world_readable": True, "guest_can_join": True,
        "name": "Small", "avatar_url": "mxc://localhost/abc", "join_rule": "public",
    }
    assert entries[space]["room_type"] == "m.space"
    assert entries[readable]["join_rule"] == "invite" and entries[readable]["world_readable"] is True

    async def search(body: dict) -> list[str]:
        return [e["room_id"] for e in (await api.call("POST", "/publicRooms", bob, body))["chunk"]]

    assert await search({}) == [e["room_id"] for e in listing["chunk"]]
    assert await search({"filter": {"generic_search_term": "big"}}) == [big]
    assert await search({"filter": {"generic_search_term": "EVERYTHING"}}) == [big]  # topic, any case
    assert await search({"filter": {"generic_search_term": "#big:local"}}) == [big]  # canonical alias
    assert await search({"filter": {"generic_search_term": "nothing like it"}}) == []
    assert await search({"filter": {"room_types": ["m.space"]}}) == [space]
    assert await search({"filter": {"room_types": [None]}}) == [big] + sorted([small, readable])
    assert await search({"filter": {"room_types": [None, "m.space"]}}) == [e["room_id"] for e in listing["chunk"]]
    assert await search({"filter": {"generic_search_term": "a", "room_types": ["m.space"]}}) == [space]
    assert await search({"include_all_networks": True, "limit": 1}) == [big]
    assert await search({"third_party_instance_id": "irc"}) == []

    # Leaving empties a room: rooms with no joined member are not listed.
    await api.call("POST", f"/rooms/{small}/leave", alice, {})
    assert small not in [e["room_id"] for e in (await api.call("GET", "/publicRooms"))["chunk"]]


async def test_public_rooms_pagination(api: Api, alice: str, bob: str) -> None:
    room_ids = [await api.create_room(alice, preset="public_chat", visibility="public") for _ in range(5)]
    await api.join(bob, room_ids[3])
    order = [room_ids[3]] + sorted(r for r in room_ids if r != room_ids[3])

    first = await api.call("GET", "/publicRooms?limit=2")
    assert [e["room_id"] for e in first["chunk"]] == order[:2]
    assert "prev_batch" not in first and first["total_room_count_estimate"] == 5
    second = await api.call("GET", f"/publicRooms?limit=2&since={first['next_batch']}")
    assert [e["room_id"] for e in second["chunk"]] == order[2:4]
    third = await api.call("POST", "/publicRooms", alice, {"limit": 2, "since": second["next_batch"]})
    assert [e["room_id"] for e in third["chunk"]] == order[4:]
    assert "next_batch" not in third
    back = await api.call("GET", f"/publicRooms?limit=2&since={third['prev_batch']}")
    assert [e["room_id"] for e in back["chunk"]] == order[2:4]
    back = await api.call("GET", f"/publicRooms?limit=3&since={back['prev_batch']}")
    assert [e["room_id"] for e in back["chunk"]] == order[:2]
    assert "prev_batch" not in back and back["next_batch"]
    # Searching pages the matches only.
    page = await api.call("POST", "/publicRooms", alice, {"limit": 1, "filter": {"generic_search_term": "nothing"}})
    assert page["chunk"] == [] and "next_batch" not in page


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "errcode"),
    [
        ("GET", "/publicRooms?since=garbage", None, 400, "M_INVALID_PARAM"),
        ("GET", "/publicRooms?limit=-1", None, 400, "M_INVALID_PARAM"),
        ("GET", "/publicRooms?limit=ten", None, 400, "M_INVALID_PARAM"),
        ("GET", "/publicRooms?server=matrix.org", None, 502, "M_UNKNOWN"),
        ("GET", "/publicRooms?server=not%20a%20server", None, 400, "M_INVALID_PARAM"),
        ("POST", "/publicRooms?server=matrix.org", {}, 502, "M_UNKNOWN"),
        ("POST", "/publicRooms", {"limit": "10"}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"limit": -3}, 400, "M_INVALID_PARAM"),
        ("POST", "/publicRooms", {"since": 3}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"since": "n-1"}, 400, "M_INVALID_PARAM"),
        ("POST", "/publicRooms", {"filter": []}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"filter": {"generic_search_term": 1}}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"filter": {"room_types": "m.space"}}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"filter": {"room_types": [1]}}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"include_all_networks": "yes"}, 400, "M_BAD_JSON"),
        ("POST", "/publicRooms", {"include_all_networks": True, "third_party_instance_id": "irc"}, 400,
         "M_INVALID_PARAM"),
        ("POST", "/publicRooms", [], 400, "M_BAD_JSON"),
    ],
)
async def test_public_rooms_bad_requests(
    api: Api, alice: str, method: str, path: str, body: Any, status: int, errcode: str
) -> None:
    await api.create_room(alice, preset="public_chat", visibility="public")
    assert (await api.call(method, path, alice if method == "POST" else None, body, expect=status))["errcode"] == errcode


async def test_public_rooms_own_server_name_and_auth(api: Api, alice: str) -> None:
    room_id = await api.create_room(alice, preset="public_chat", visibility="public")
    listing = await api.call("GET", "/publicRooms?server=localhost")
    assert [e["room_id"] for e in listing["chunk"]] == [room_id]
    await api.call("POST", "/publicRooms", None, {}, expect=401)


# ------------------------------------------------------------------- room upgrade


@pytest.mark.parametrize("old_version", ["10", "11", "12"])
async def test_upgrade_to_v12(api: Api, alice: str, bob: str, old_version: str) -> None:
    carol = await api.register("carol")
    old = await api.create_room(
        alice, room_version=old_version, preset="public_chat", visibility="public",
        name="Old Room", topic="t", room_alias_name="hq",
    )
    await api.call("PUT", alias_path("#hq-alt:localhost"), alice, {"room_id": old})
    await api.put_state(
        alice, old, "m.room.canonical_alias",
        {"alias": "#hq:localhost", "alt_aliases": ["#hq-alt:localhost", "#remote:elsewhere.example"]},
    )
    await api.join(bob, old)
    await api.join(carol, old)
    await api.call("POST", f"/rooms/{old}/ban", alice, {"user_id": "@carol:localhost", "reason": "spam"})

    new = (await api.call("POST", f"/rooms/{old}/upgrade", alice, {"new_version": "12"}))["replacement_room"]
    assert new != old

    tombstone = await api.state(old, "m.room.tombstone")
    assert tombstone["sender"] == "@alice:localhost"
    assert tombstone["content"] == {"body": "This room has been replaced", "replacement_room": new}

    create = (await api.state(new, "m.room.create"))["content"]
    assert create["room_version"] == "12"
    assert create["predecessor"]["room_id"] == old
    assert create["predecessor"]["event_id"].startswith("$")
    assert "creator" not in create

    # The old room is restricted (step 6): ordinary members can no longer speak or invite.
    old_pl = (await api.state(old, "m.room.power_levels"))["content"]
    assert old_pl["events_default"] == 50 and old_pl["invite"] == 50
    await api.call("PUT", f"/rooms/{old}/send/m.room.message/t1", bob, {"msgtype": "m.text", "body": "hi"}, expect=403)

    # State and bans were replicated; alice is a v12 creator, not listed in users.
    assert (await api.state(new, "m.room.name"))["content"] == {"name": "Old Room"}
    assert (await api.state(new, "m.room.join_rules"))["content"]["join_rule"] == "public"
    assert (await api.state(new, "m.room.member", "@carol:localhost"))["content"]["membership"] == "ban"
    new_pl = (await api.state(new, "m.room.power_levels"))["content"]
    assert "@alice:localhost" not in new_pl.get("users", {})
    view = await get_state_view(api.deps, new)
    assert view.joined_members == frozenset({"@alice:localhost"})

    # Local aliases moved, the canonical alias too; the remote one stays in the old room.
    assert (await api.call("GET", alias_path("#hq:localhost")))["room_id"] == new
    assert (await api.call("GET", alias_path("#hq-alt:localhost")))["room_id"] == new
    assert await api.call("GET", f"/rooms/{new}/aliases", alice) == {"aliases": ["#hq-alt:localhost", "#hq:localhost"]}
    assert await api.call("GET", f"/rooms/{old}/aliases", alice) == {"aliases": []}
    assert (await api.state(new, "m.room.canonical_alias"))["content"] == {
        "alias": "#hq:localhost", "alt_aliases": ["#hq-alt:localhost"]
    }
    assert (await api.state(old, "m.room.canonical_alias"))["content"] == {"alt_aliases": ["#remote:elsewhere.example"]}

    # The directory entry moved to the new room.
    assert await api.call("GET", f"/directory/list/room/{old}") == {"visibility": "private"}
    assert await api.call("GET", f"/directory/list/room/{new}") == {"visibility": "public"}
    assert [e["room_id"] for e in (await api.call("GET", "/publicRooms"))["chunk"]] == [new]

    # Others follow the tombstone; carol stays banned.
    await api.join(bob, new)
    await api.call("POST", f"/rooms/{new}/join", carol, {}, expect=403)


async def test_upgrade_v10_to_v11_keeps_creator_power(api: Api, alice: str) -> None:
    old = await api.create_room(alice, room_version="10")
    new = (await api.call("POST", f"/rooms/{old}/upgrade", alice, {"new_version": "11"}))["replacement_room"]
    assert new.endswith(":localhost")
    create = await api.state(new, "m.room.create")
    assert create["content"]["predecessor"]["room_id"] == old
    assert (await api.state(new, "m.room.power_levels"))["content"]["users"]["@alice:localhost"] == 100
    assert (await api.state(old, "m.room.tombstone"))["content"]["replacement_room"] == new
    assert await api.state(new, "m.room.canonical_alias") is None


async def test_upgrade_with_additional_creators(api: Api, alice: str, bob: str) -> None:
    old = await api.create_room(alice, room_version="11", preset="public_chat")
    await api.join(bob, old)
    body = {"new_version": "12", "additional_creators": ["@bob:localhost"]}
    new = (await api.call("POST", f"/rooms/{old}/upgrade", alice, body))["replacement_room"]
    assert (await api.state(new, "m.room.create"))["content"]["additional_creators"] == ["@bob:localhost"]


async def test_upgrade_errors(api: Api, alice: str, bob: str) -> None:
    room_id = await api.create_room(alice, room_version="11", preset="public_chat")
    unsupported = await api.call("POST", f"/rooms/{room_id}/upgrade", alice, {"new_version": "999"}, expect=400)
    assert unsupported["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    assert (await api.call("POST", f"/rooms/{room_id}/upgrade", alice, {}, expect=400))["errcode"] == "M_MISSING_PARAM"
    bad = await api.call("POST", f"/rooms/{room_id}/upgrade", alice, {"new_version": 12}, expect=400)
    assert bad["errcode"] == "M_BAD_JSON"
    bad = await api.call(
        "POST", f"/rooms/{room_id}/upgrade", alice, {"new_version": "12", "additional_creators": "bob"}, expect=400
    )
    assert bad["errcode"] == "M_BAD_JSON"
    # Not joined, then joined without the tombstone level.
    assert (await api.call("POST", f"/rooms/{room_id}/upgrade", bob, {"new_version": "12"}, expect=403))["errcode"] == "M_FORBIDDEN"
    await api.join(bob, room_id)
    assert (await api.call("POST", f"/rooms/{room_id}/upgrade", bob, {"new_version": "12"}, expect=403))["errcode"] == "M_FORBIDDEN"
    missing = await api.call("POST", "/rooms/!nope:localhost/upgrade", alice, {"new_version": "12"}, expect=404)
    assert missing["errcode"] == "M_NOT_FOUND"
    await api.call("POST", f"/rooms/{room_id}/upgrade", None, {"new_version": "12"}, expect=401)
    # Nothing happened to the room.
    assert await api.state(room_id, "m.room.tombstone") is None
