"""User data endpoints through quart-trio's test client: profiles (and their
propagation into rooms), account data, tags, push rules, pushers, user directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from quart_trio import QuartTrio

from api.settings import Settings, parse_settings
from storage import pushers as pusher_store
from storage import timeline

V3 = "/_matrix/client/v3"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The conftest settings without rate limits (tests register many users)."""
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
            "database": {"path": "data/roomactors.db"},
            "registration": {"enabled": True, "shared_secret": "test-shared-secret"},
            "ratelimit": {"enabled": False},
        },
        base_dir=tmp_path,
    )


class User:
    def __init__(self, app: QuartTrio, user_id: str, token: str) -> None:
        self.client = app.test_client()
        self.user_id = user_id
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   auth: bool = True) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        response = await self.client.open(V3 + path, method=method, **kwargs)
        return response.status_code, await response.get_json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, got = await self.call(method, path, body)
        assert status == 200, (method, path, status, got)
        return got

    async def error(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, str]:
        status, got = await self.call(method, path, body, raw=raw)
        assert status != 200, (method, path, got)
        return status, got["errcode"]

    async def create_room(self, **body: Any) -> str:
        return (await self.ok("POST", "/createRoom", body))["room_id"]

    async def join(self, room_id: str) -> None:
        await self.ok("POST", f"/join/{quote(room_id)}", {})

    async def sync(self, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        path = f"/sync?timeout={timeout}" + (f"&since={since}" if since else "")
        return await self.ok("GET", path)


async def register(app: QuartTrio, name: str) -> User:
    response = await app.test_client().post(
        f"{V3}/register", json={"username": name, "auth": {"type": "m.login.dummy"}}
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    return User(app, body["user_id"], body["access_token"])


@pytest.fixture
async def alice(app: QuartTrio) -> User:
    return await register(app, "alice")


@pytest.fixture
async def bob(app: QuartTrio) -> User:
    return await register(app, "bob")


def q(value: str) -> str:
    return quote(value, safe="")


def member_content(members: dict[str, dict[str, Any]], user_id: str) -> dict[str, Any]:
    return members[user_id]["content"]


def global_account_data(sync: dict[str, Any]) -> dict[str, Any]:
    return {e["type"]: e["content"] for e in sync.get("account_data", {}).get("events", [])}


def room_account_data(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return {e["type"]: e["content"] for e in room.get("account_data", {}).get("events", [])}


# --------------------------------------------------------------------------- profiles


async def test_profile_round_trip_and_anonymous_reads(alice: User) -> None:
    me = q(alice.user_id)
    assert await alice.ok("GET", f"/profile/{me}") == {"displayname": "alice"}  # set at registration
    await alice.ok("PUT", f"/profile/{me}/displayname", {"displayname": "  Alice A.  "})
    await alice.ok("PUT", f"/profile/{me}/avatar_url", {"avatar_url": "mxc://example.org/abcDEF_12-3"})
    # GET needs no access token (profile.yaml declares no security for it).
    status, body = await alice.call("GET", f"/profile/{me}", auth=False)
    assert (status, body) == (200, {"displayname": "Alice A.", "avatar_url": "mxc://example.org/abcDEF_12-3"})
    status, body = await alice.call("GET", f"/profile/{me}/displayname", auth=False)
    assert (status, body) == (200, {"displayname": "Alice A."})
    assert await alice.ok("GET", f"/profile/{me}/avatar_url") == {"avatar_url": "mxc://example.org/abcDEF_12-3"}
    # r0 alias.
    response = await alice.client.get(f"/_matrix/client/r0/profile/{me}/displayname")
    assert await response.get_json() == {"displayname": "Alice A."}


async def test_profile_clearing_fields(alice: User) -> None:
    me = q(alice.user_id)
    await alice.ok("PUT", f"/profile/{me}/avatar_url", {"avatar_url": "mxc://example.org/a"})
    await alice.ok("PUT", f"/profile/{me}/avatar_url", {"avatar_url": ""})  # "" clears (as Synapse)
    assert await alice.error("GET", f"/profile/{me}/avatar_url") == (404, "M_NOT_FOUND")
    await alice.ok("DELETE", f"/profile/{me}/displayname")
    assert await alice.error("GET", f"/profile/{me}/displayname") == (404, "M_NOT_FOUND")
    # No field left: "There is no profile information for this user".
    assert await alice.error("GET", f"/profile/{me}") == (404, "M_NOT_FOUND")
    await alice.ok("PUT", f"/profile/{me}/displayname", {"displayname": "back"})
    assert await alice.ok("GET", f"/profile/{me}") == {"displayname": "back"}


async def test_profile_errors(alice: User, bob: User) -> None:
    me, other = q(alice.user_id), q(bob.user_id)
    assert await alice.error("PUT", f"/profile/{other}/displayname", {"displayname": "x"}) == (403, "M_FORBIDDEN")
    assert await alice.error("DELETE", f"/profile/{other}/avatar_url") == (403, "M_FORBIDDEN")
    assert await alice.error("GET", f"/profile/{q('@nobody:' + alice.user_id.split(':')[1])}") == (404, "M_NOT_FOUND")
    assert await alice.error("GET", f"/profile/{q('@carol:remote.example')}/displayname") == (404, "M_NOT_FOUND")
    assert await alice.error("GET", f"/profile/{me}/m.tz") == (404, "M_NOT_FOUND")
    assert await alice.error("PUT", f"/profile/{me}/displayname", raw=b"{not json") == (400, "M_NOT_JSON")
    assert await alice.error("PUT", f"/profile/{me}/displayname", raw=b"[1]") == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"/profile/{me}/displayname", {"displayname": 5}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"/profile/{me}/displayname", {"displayname": None}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"/profile/{me}/displayname", {"avatar_url": "x"}) == (400, "M_MISSING_PARAM")
    too_long = {"displayname": "x" * 257}
    assert await alice.error("PUT", f"/profile/{me}/displayname", too_long) == (400, "M_INVALID_PARAM")
    for bad in ("https://example.org/a.png", "mxc://", "mxc://server", "mxc://server/a/b", 17):
        expected = "M_BAD_JSON" if not isinstance(bad, str) else "M_INVALID_PARAM"
        assert await alice.error("PUT", f"/profile/{me}/avatar_url", {"avatar_url": bad}) == (400, expected), bad
    assert await alice.error("PUT", f"/profile/{me}/Bad.Key", {"Bad.Key": 1}) == (400, "M_INVALID_PARAM")
    long_key = "org.example." + "a" * 250
    assert await alice.error("PUT", f"/profile/{me}/{long_key}", {long_key: 1}) == (400, "M_KEY_TOO_LARGE")
    # Valid keys this server does not let clients change (m.profile_fields: displayname, avatar_url).
    assert await alice.error("PUT", f"/profile/{me}/m.tz", {"m.tz": "Europe/London"}) == (403, "M_FORBIDDEN")
    assert await alice.error("PUT", f"/profile/{me}/org.example.x", {"org.example.x": 1}) == (403, "M_FORBIDDEN")
    status, body = await alice.call("PUT", f"/profile/{me}/displayname", {"displayname": "x"}, auth=False)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    # Nothing above changed the profile.
    assert await alice.ok("GET", f"/profile/{me}") == {"displayname": "alice"}


async def test_displayname_change_updates_member_events(homeserver, alice: User, bob: User) -> None:
    shared = await alice.create_room(preset="public_chat")
    await bob.join(shared)
    solo = await alice.create_room(preset="private_chat")
    left = await alice.create_room(preset="public_chat")
    await bob.join(left)
    await alice.ok("POST", f"/rooms/{q(left)}/leave", {})
    since = (await bob.sync())["next_batch"]

    me = q(alice.user_id)
    await alice.ok("PUT", f"/profile/{me}/displayname", {"displayname": "Alice Cooper"})
    await alice.ok("PUT", f"/profile/{me}/avatar_url", {"avatar_url": "mxc://example.org/face"})
    for room_id in (shared, solo):
        members = await homeserver.db.read(timeline.get_room_members, room_id)
        assert member_content(members, alice.user_id) == {
            "membership": "join", "displayname": "Alice Cooper", "avatar_url": "mxc://example.org/face",
        }
    # The room alice left is not re-joined.
    members = await homeserver.db.read(timeline.get_room_members, left)
    assert member_content(members, alice.user_id)["membership"] == "leave"
    # Bob sees the new member events in his sync.
    got = await bob.sync(since)
    timeline_events = got["rooms"]["join"][shared]["timeline"]["events"]
    changes = [e["content"] for e in timeline_events
               if e["type"] == "m.room.member" and e["state_key"] == alice.user_id]
    assert changes[-1]["displayname"] == "Alice Cooper" and changes[-1]["avatar_url"] == "mxc://example.org/face"
    assert left not in got["rooms"].get("join", {}) or not any(
        e["state_key"] == alice.user_id for e in got["rooms"]["join"][left]["timeline"]["events"]
        if e["type"] == "m.room.member"
    )
    # Repeating the same value sends no new event.
    before = await homeserver.db.read(timeline.max_stream_ordering)
    await alice.ok("PUT", f"/profile/{me}/displayname", {"displayname": "Alice Cooper"})
    assert await homeserver.db.read(timeline.max_stream_ordering) == before


async def test_profile_propagation_is_best_effort(homeserver, alice: User) -> None:
    refusing = await alice.create_room(preset="public_chat")
    # An undefined join rule: the auth rules then refuse every join, also join -> join.
    await alice.ok("PUT", f"/rooms/{q(refusing)}/state/m.room.join_rules", {"join_rule": "private"})
    fine = await alice.create_room(preset="public_chat")
    await alice.ok("PUT", f"/profile/{q(alice.user_id)}/displayname", {"displayname": "New"})
    assert (await alice.ok("GET", f"/profile/{q(alice.user_id)}/displayname")) == {"displayname": "New"}
    members = await homeserver.db.read(timeline.get_room_members, fine)
    assert member_content(members, alice.user_id)["displayname"] == "New"
    members = await homeserver.db.read(timeline.get_room_members, refusing)
    assert member_content(members, alice.user_id)["displayname"] == "alice"


# ----------------------------------------------------------------------- account data


async def test_account_data_round_trip_and_sync(alice: User) -> None:
    me = q(alice.user_id)
    room_id = await alice.create_room(preset="private_chat")
    since = (await alice.sync())["next_batch"]
    await alice.ok("PUT", f"/user/{me}/account_data/org.example.config", {"theme": "dark"})
    await alice.ok("PUT", f"/user/{me}/rooms/{q(room_id)}/account_data/org.example.room", {"muted": True})
    assert await alice.ok("GET", f"/user/{me}/account_data/org.example.config") == {"theme": "dark"}
    assert await alice.ok("GET", f"/user/{me}/rooms/{q(room_id)}/account_data/org.example.room") == {"muted": True}
    # No inheritance between global and room data ("Client Config").
    assert await alice.error("GET", f"/user/{me}/account_data/org.example.room") == (404, "M_NOT_FOUND")
    assert await alice.error("GET", f"/user/{me}/rooms/{q(room_id)}/account_data/org.example.config") == (
        404, "M_NOT_FOUND")
    got = await alice.sync(since)
    assert global_account_data(got) == {"org.example.config": {"theme": "dark"}}
    assert room_account_data(got, room_id) == {"org.example.room": {"muted": True}}
    # Overwrite: latest value wins.
    await alice.ok("PUT", f"/user/{me}/account_data/org.example.config", {"theme": "light"})
    assert await alice.ok("GET", f"/user/{me}/account_data/org.example.config") == {"theme": "light"}


async def test_account_data_errors(alice: User, bob: User) -> None:
    me, other = q(alice.user_id), q(bob.user_id)
    room = q("!room:" + alice.user_id.split(":")[1])
    assert await alice.error("PUT", f"/user/{other}/account_data/x.y", {}) == (403, "M_FORBIDDEN")
    assert await alice.error("GET", f"/user/{other}/account_data/x.y") == (403, "M_FORBIDDEN")
    assert await alice.error("PUT", f"/user/{other}/rooms/{room}/account_data/x.y", {}) == (403, "M_FORBIDDEN")
    assert await alice.error("GET", f"/user/{other}/rooms/{room}/account_data/x.y") == (403, "M_FORBIDDEN")
    assert await alice.error("GET", f"/user/{me}/account_data/x.y") == (404, "M_NOT_FOUND")
    assert await alice.error("PUT", f"/user/{me}/account_data/x.y", raw=b"nope") == (400, "M_NOT_JSON")
    assert await alice.error("PUT", f"/user/{me}/account_data/x.y", raw=b'"str"') == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"/user/{me}/rooms/not-a-room/account_data/x.y", {}) == (400, "M_INVALID_PARAM")
    assert await alice.error("GET", f"/user/{me}/rooms/not-a-room/account_data/x.y") == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"/user/{me}/account_data/{'t' * 256}", {}) == (400, "M_INVALID_PARAM")
    # Server-managed types: 405 M_BAD_JSON, global and per room ("Server Behaviour").
    for data_type in ("m.fully_read", "m.push_rules"):
        assert await alice.error("PUT", f"/user/{me}/account_data/{data_type}", {}) == (405, "M_BAD_JSON")
        assert await alice.error("PUT", f"/user/{me}/rooms/{room}/account_data/{data_type}", {}) == (405, "M_BAD_JSON")


async def test_server_managed_account_data_reads_as_normal(alice: User) -> None:
    me = q(alice.user_id)
    # m.push_rules exists before any change: it is the effective ruleset.
    rules = await alice.ok("GET", f"/user/{me}/account_data/m.push_rules")
    assert rules == await alice.ok("GET", "/pushrules/")
    room_id = await alice.create_room(preset="private_chat")
    event_id = (await alice.ok("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "hi"}))["event_id"]
    await alice.ok("POST", f"/rooms/{q(room_id)}/read_markers", {"m.fully_read": event_id})
    assert await alice.ok("GET", f"/user/{me}/rooms/{q(room_id)}/account_data/m.fully_read") == {"event_id": event_id}


async def test_account_data_write_wakes_a_long_poll(alice: User) -> None:
    since = (await alice.sync())["next_batch"]
    result: dict[str, Any] = {}

    async def poll() -> None:
        result["sync"] = await alice.sync(since, timeout=30_000)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.2)
            await alice.ok("PUT", f"/user/{q(alice.user_id)}/account_data/org.example.ping", {"n": 1})
    assert global_account_data(result["sync"]) == {"org.example.ping": {"n": 1}}


# ------------------------------------------------------------------------------- tags


async def test_tags(alice: User, bob: User) -> None:
    me = q(alice.user_id)
    room_id = await alice.create_room(preset="private_chat")
    base = f"/user/{me}/rooms/{q(room_id)}/tags"
    assert await alice.ok("GET", base) == {"tags": {}}
    since = (await alice.sync())["next_batch"]
    await alice.ok("PUT", f"{base}/m.favourite", {"order": 0.25})
    await alice.ok("PUT", f"{base}/u.work", {})
    await alice.ok("PUT", f"{base}/u.edge", {"order": 1})
    assert await alice.ok("GET", base) == {
        "tags": {"m.favourite": {"order": 0.25}, "u.work": {}, "u.edge": {"order": 1}}
    }
    got = await alice.sync(since)
    assert room_account_data(got, room_id)["m.tag"]["tags"]["m.favourite"] == {"order": 0.25}
    await alice.ok("DELETE", f"{base}/u.work")
    await alice.ok("DELETE", f"{base}/u.never-set")  # absent: still 200
    assert await alice.ok("GET", base) == {"tags": {"m.favourite": {"order": 0.25}, "u.edge": {"order": 1}}}
    # Stored as room account data m.tag.
    assert await alice.ok("GET", f"/user/{me}/rooms/{q(room_id)}/account_data/m.tag") == {
        "tags": {"m.favourite": {"order": 0.25}, "u.edge": {"order": 1}}
    }
    assert await alice.error("PUT", f"{base}/u.bad", {"order": 1.5}) == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"{base}/u.bad", {"order": -0.1}) == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"{base}/u.bad", {"order": "0.5"}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"{base}/u.bad", {"order": True}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"{base}/u.bad", raw=b"{") == (400, "M_NOT_JSON")
    assert await alice.error("PUT", f"{base}/{'t' * 256}", {}) == (400, "M_INVALID_PARAM")
    other = f"/user/{q(bob.user_id)}/rooms/{q(room_id)}/tags"
    assert await alice.error("GET", other) == (403, "M_FORBIDDEN")
    assert await alice.error("PUT", f"{other}/u.x", {}) == (403, "M_FORBIDDEN")
    assert await alice.error("DELETE", f"{other}/u.x") == (403, "M_FORBIDDEN")
    assert await alice.error("GET", f"/user/{me}/rooms/nonsense/tags") == (400, "M_INVALID_PARAM")


# ------------------------------------------------------------------------- push rules


def rule_ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


async def test_push_rules_defaults(alice: User) -> None:
    everything = await alice.ok("GET", "/pushrules/")
    assert set(everything) == {"global"}
    assert rule_ids(everything["global"], "override")[0] == ".m.rule.master"
    assert await alice.ok("GET", "/pushrules/global/") == everything["global"]
    assert await alice.ok("GET", "/pushrules") == everything
    assert await alice.ok("GET", "/pushrules/global") == everything["global"]
    master = await alice.ok("GET", "/pushrules/global/override/.m.rule.master")
    assert master["default"] is True and master["enabled"] is False
    assert await alice.ok("GET", "/pushrules/global/override/.m.rule.master/enabled") == {"enabled": False}
    assert await alice.ok("GET", "/pushrules/global/override/.m.rule.master/actions") == {"actions": []}
    status, body = await alice.call("GET", "/pushrules/", auth=False)
    assert status == 401


async def test_push_rule_round_trip_and_ordering(alice: User) -> None:
    base = "/pushrules/global/content"
    await alice.ok("PUT", f"{base}/cake", {"pattern": "cake*lie", "actions": ["notify"]})
    assert await alice.ok("GET", f"{base}/cake") == {
        "rule_id": "cake", "default": False, "enabled": True, "actions": ["notify"], "pattern": "cake*lie",
    }
    # Created without before/after: the most important user rule of its kind.
    await alice.ok("PUT", f"{base}/pie", {"pattern": "pie", "actions": []})
    content = (await alice.ok("GET", "/pushrules/global/"))["content"]
    assert [r["rule_id"] for r in content if not r["default"]] == ["pie", "cake"]
    await alice.ok("PUT", f"{base}/tart?after=cake", {"pattern": "tart", "actions": []})
    await alice.ok("PUT", f"{base}/scone?before=pie", {"pattern": "scone", "actions": []})
    content = (await alice.ok("GET", "/pushrules/global/"))["content"]
    assert [r["rule_id"] for r in content if not r["default"]] == ["scone", "pie", "cake", "tart"]
    # Moving an existing rule keeps its enabled flag.
    await alice.ok("PUT", f"{base}/tart/enabled", {"enabled": False})
    await alice.ok("PUT", f"{base}/tart?before=scone", {"pattern": "tart2", "actions": ["notify"]})
    content = (await alice.ok("GET", "/pushrules/global/"))["content"]
    assert [r["rule_id"] for r in content if not r["default"]] == ["tart", "scone", "pie", "cake"]
    assert await alice.ok("GET", f"{base}/tart") == {
        "rule_id": "tart", "default": False, "enabled": False, "actions": ["notify"], "pattern": "tart2",
    }
    # enabled / actions round trips, on a user rule and on a server-default rule.
    actions = {"actions": ["notify", {"set_tweak": "sound", "value": "x"}]}
    await alice.ok("PUT", f"{base}/cake/actions", actions)
    assert await alice.ok("GET", f"{base}/cake/actions") == actions
    await alice.ok("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": True})
    assert await alice.ok("GET", "/pushrules/global/override/.m.rule.master/enabled") == {"enabled": True}
    await alice.ok("PUT", "/pushrules/global/underride/.m.rule.message/actions", {"actions": []})
    assert await alice.ok("GET", "/pushrules/global/underride/.m.rule.message/actions") == {"actions": []}
    # Override rules with conditions; room and sender rules.
    await alice.ok("PUT", "/pushrules/global/override/quiet", {
        "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": []})
    override = rule_ids((await alice.ok("GET", "/pushrules/"))["global"], "override")
    assert override[:2] == [".m.rule.master", "quiet"]  # master outranks user rules
    room_rule = q("!abc:example.org")
    await alice.ok("PUT", f"/pushrules/global/room/{room_rule}", {"actions": ["notify"]})
    assert (await alice.ok("GET", f"/pushrules/global/room/{room_rule}"))["rule_id"] == "!abc:example.org"
    # Delete.
    await alice.ok("DELETE", f"{base}/pie")
    assert await alice.error("GET", f"{base}/pie") == (404, "M_NOT_FOUND")
    assert await alice.error("DELETE", f"{base}/pie") == (404, "M_NOT_FOUND")


async def test_push_rule_errors(alice: User) -> None:
    base = "/pushrules/global/content"
    assert await alice.error("GET", f"{base}/nope") == (404, "M_NOT_FOUND")
    assert await alice.error("GET", f"{base}/nope/enabled") == (404, "M_NOT_FOUND")
    assert await alice.error("PUT", f"{base}/nope/enabled", {"enabled": True}) == (404, "M_NOT_FOUND")
    assert await alice.error("PUT", f"{base}/nope/actions", {"actions": []}) == (404, "M_NOT_FOUND")
    assert await alice.error("GET", "/pushrules/global/bogus/x") == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", "/pushrules/global/bogus/x", {"actions": []}) == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"{base}/.reserved", {"pattern": "p", "actions": []}) == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"{base}/x", {"pattern": "p", "actions": ["explode"]}) == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", f"{base}/x", {"pattern": "p", "actions": "notify"}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", f"{base}/x", {"actions": []}) == (400, "M_BAD_JSON")  # content needs pattern
    assert await alice.error("PUT", f"{base}/x", {"pattern": "p"}) == (400, "M_BAD_JSON")  # actions required
    assert await alice.error("PUT", f"{base}/x?before=missing", {"pattern": "p", "actions": []}) == (400, "M_UNKNOWN")
    assert await alice.error("PUT", f"{base}/x?after=.m.rule.contains_user_name",
                             {"pattern": "p", "actions": []}) == (400, "M_UNKNOWN")
    assert await alice.error("PUT", f"{base}/x", raw=b"{") == (400, "M_NOT_JSON")
    assert await alice.error("DELETE", "/pushrules/global/override/.m.rule.master") == (400, "M_INVALID_PARAM")
    assert await alice.error("PUT", "/pushrules/global/override/.m.rule.master/enabled", {}) == (400, "M_MISSING_PARAM")
    assert await alice.error("PUT", "/pushrules/global/override/.m.rule.master/enabled",
                             {"enabled": "yes"}) == (400, "M_BAD_JSON")
    assert await alice.error("PUT", "/pushrules/global/override/.m.rule.master/actions", {}) == (400, "M_MISSING_PARAM")
    # Only the global scope exists (it is part of the v1.17 path).
    assert await alice.error("GET", "/pushrules/device/content/x") == (404, "M_UNRECOGNIZED")
    assert await alice.error("PUT", "/pushrules/device/content/x", {"pattern": "p", "actions": []}) == (
        404, "M_UNRECOGNIZED")
    # Nothing above was stored.
    content = (await alice.ok("GET", "/pushrules/global/"))["content"]
    assert all(r["default"] for r in content)


async def test_push_rule_changes_reach_sync_as_m_push_rules(alice: User) -> None:
    since = (await alice.sync())["next_batch"]
    await alice.ok("PUT", "/pushrules/global/content/cake", {"pattern": "cake", "actions": ["notify"]})
    got = await alice.sync(since)
    event = global_account_data(got)["m.push_rules"]
    assert event == await alice.ok("GET", "/pushrules/")
    assert "cake" in rule_ids(event["global"], "content")
    since = got["next_batch"]
    await alice.ok("DELETE", "/pushrules/global/content/cake")
    got = await alice.sync(since)
    assert "cake" not in rule_ids(global_account_data(got)["m.push_rules"]["global"], "content")
    # And it reads back through the account data API.
    event = await alice.ok("GET", f"/user/{q(alice.user_id)}/account_data/m.push_rules")
    assert event == await alice.ok("GET", "/pushrules/")


# ---------------------------------------------------------------------------- pushers


def http_pusher(**overrides: Any) -> dict[str, Any]:
    body = {
        "kind": "http",
        "app_id": "com.example.app.ios",
        "pushkey": "APA91bHPRgkF3JUikC4",
        "app_display_name": "Mat Rix",
        "device_display_name": "iPhone 9",
        "profile_tag": "xxyyzz",
        "lang": "en",
        "data": {"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"},
    }
    body.update(overrides)
    return body


async def test_pushers_set_list_update_delete(homeserver, alice: User) -> None:
    assert await alice.ok("GET", "/pushers") == {"pushers": []}
    await alice.ok("POST", "/pushers/set", http_pusher())
    expected = {k: v for k, v in http_pusher().items()}
    assert await alice.ok("GET", "/pushers") == {"pushers": [expected]}
    # The stored document remembers the device (for device deletion); it is not served.
    stored = await homeserver.db.read(pusher_store.get_pushers, alice.user_id)
    assert stored[0]["device_id"]
    # Same (app_id, pushkey): updated in place.
    await alice.ok("POST", "/pushers/set", http_pusher(lang="de"))
    assert [p["lang"] for p in (await alice.ok("GET", "/pushers"))["pushers"]] == ["de"]
    await alice.ok("POST", "/pushers/set", http_pusher(pushkey="other", profile_tag=None))
    listed = (await alice.ok("GET", "/pushers"))["pushers"]
    assert [p["pushkey"] for p in listed] == ["APA91bHPRgkF3JUikC4", "other"]
    assert "profile_tag" not in listed[1]
    # kind null deletes (and deleting an absent pusher is fine).
    await alice.ok("POST", "/pushers/set", {"kind": None, "app_id": "com.example.app.ios", "pushkey": "other"})
    await alice.ok("POST", "/pushers/set", {"kind": None, "app_id": "com.example.app.ios", "pushkey": "other"})
    assert [p["pushkey"] for p in (await alice.ok("GET", "/pushers"))["pushers"]] == ["APA91bHPRgkF3JUikC4"]


async def test_pusher_append(alice: User, bob: User) -> None:
    await alice.ok("POST", "/pushers/set", http_pusher())
    await bob.ok("POST", "/pushers/set", http_pusher(append=True))
    assert len((await alice.ok("GET", "/pushers"))["pushers"]) == 1
    assert len((await bob.ok("GET", "/pushers"))["pushers"]) == 1
    # Without append, other users' pushers with the same app_id and pushkey go.
    await bob.ok("POST", "/pushers/set", http_pusher())
    assert (await alice.ok("GET", "/pushers"))["pushers"] == []
    assert len((await bob.ok("GET", "/pushers"))["pushers"]) == 1


async def test_pusher_errors(alice: User) -> None:
    body = http_pusher()
    del body["kind"]
    assert await alice.error("POST", "/pushers/set", body) == (400, "M_MISSING_PARAM")
    status, got = await alice.call("POST", "/pushers/set", http_pusher(lang=None, data=None))
    assert (status, got["errcode"], got["error"]) == (400, "M_MISSING_PARAM", "Missing parameters: lang, data")
    body = http_pusher()
    del body["app_id"]
    assert await alice.error("POST", "/pushers/set", body) == (400, "M_MISSING_PARAM")
    assert await alice.error("POST", "/pushers/set", http_pusher(app_id=None)) == (400, "M_BAD_JSON")
    assert await alice.error("POST", "/pushers/set", http_pusher(app_id="a" * 65)) == (400, "M_INVALID_PARAM")
    assert await alice.error("POST", "/pushers/set", http_pusher(pushkey="k" * 513)) == (400, "M_INVALID_PARAM")
    assert await alice.error("POST", "/pushers/set", http_pusher(kind=3)) == (400, "M_BAD_JSON")
    assert await alice.error("POST", "/pushers/set", http_pusher(kind="carrier-pigeon")) == (400, "M_INVALID_PARAM")
    email = http_pusher(kind="email", app_id="m.email", pushkey="a@example.org")
    assert await alice.error("POST", "/pushers/set", email) == (400, "M_THREEPID_NOT_FOUND")
    assert await alice.error("POST", "/pushers/set", http_pusher(data={})) == (400, "M_MISSING_PARAM")
    assert await alice.error("POST", "/pushers/set", http_pusher(data={"url": 7})) == (400, "M_BAD_JSON")
    for url in ("https://push.example.org/notify", "ftp://push.example.org/_matrix/push/v1/notify",
                "/_matrix/push/v1/notify", "http://[::1/_matrix/push/v1/notify"):
        got = await alice.error("POST", "/pushers/set", http_pusher(data={"url": url}))
        assert got == (400, "M_INVALID_PARAM"), url
    assert await alice.error("POST", "/pushers/set", http_pusher(
        data={"url": "https://p.example/_matrix/push/v1/notify", "format": "full"})) == (400, "M_INVALID_PARAM")
    assert await alice.error("POST", "/pushers/set", http_pusher(data=[1])) == (400, "M_BAD_JSON")
    assert await alice.error("POST", "/pushers/set", http_pusher(append="yes")) == (400, "M_BAD_JSON")
    assert await alice.error("POST", "/pushers/set", raw=b"]") == (400, "M_NOT_JSON")
    assert (await alice.ok("GET", "/pushers")) == {"pushers": []}


# --------------------------------------------------------------------- user directory


async def search(user: User, term: str, **extra: Any) -> dict[str, Any]:
    return await user.ok("POST", "/user_directory/search", {"search_term": term, **extra})


def found(result: dict[str, Any]) -> list[str]:
    return [r["user_id"] for r in result["results"]]


async def test_user_directory_visibility(app: QuartTrio, alice: User, bob: User) -> None:
    carol, dave, erin, frank = [await register(app, n) for n in ("carol", "dave", "erin", "frank")]
    # alice and bob share a private room.
    private = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.join(private)
    # carol is alone in a public room; erin alone in a world-readable invite-only room.
    await carol.create_room(preset="public_chat")
    await erin.create_room(preset="private_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}])
    # dave is alone in a private room; frank is in no room at all.
    await dave.create_room(preset="private_chat")
    del frank
    assert found(await search(alice, "bob")) == [bob.user_id]
    assert found(await search(alice, "carol")) == [carol.user_id]
    assert found(await search(alice, "erin")) == [erin.user_id]
    assert found(await search(alice, "dave")) == []
    assert found(await search(alice, "frank")) == []
    # Dave shares no room but still sees users of public / world-readable rooms.
    assert found(await search(dave, "carol")) == [carol.user_id]
    assert found(await search(dave, "bob")) == []
    # After bob leaves, alice no longer shares a room with him.
    await bob.ok("POST", f"/rooms/{q(private)}/leave", {})
    assert found(await search(alice, "bob")) == []


async def test_user_directory_matching_ranking_and_limit(app: QuartTrio, alice: User, bob: User) -> None:
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    others = [await register(app, n) for n in ("bobcat", "xbobx")]
    for user in others:
        await user.join(room_id)
    await bob.ok("PUT", f"/profile/{q(bob.user_id)}/displayname", {"displayname": "Robert Tables"})
    await bob.ok("PUT", f"/profile/{q(bob.user_id)}/avatar_url", {"avatar_url": "mxc://example.org/bob"})
    # Case-insensitive display name match, with the profile in the result.
    result = await search(alice, "TABLES")
    assert result == {"results": [{"user_id": bob.user_id, "display_name": "Robert Tables",
                                   "avatar_url": "mxc://example.org/bob"}], "limited": False}
    # Localpart substring; exact localpart first, then prefix matches, then the rest.
    assert found(await search(alice, "BOB")) == [bob.user_id, others[0].user_id, others[1].user_id]
    assert found(await search(alice, "@bob")) == [bob.user_id, others[0].user_id, others[1].user_id]
    limited = await search(alice, "bob", limit=2)
    assert found(limited) == [bob.user_id, others[0].user_id] and limited["limited"] is True
    assert (await search(alice, "bob", limit=0)) == {"results": [], "limited": True}
    # A full user ID matches too; LIKE wildcards in the term are literal.
    assert found(await search(alice, bob.user_id)) == [bob.user_id]
    assert found(await search(alice, "b%b")) == []
    assert found(await search(alice, "b_b")) == []
    assert found(await search(alice, "nobody-matches")) == []


async def test_user_directory_errors(alice: User) -> None:
    assert await alice.error("POST", "/user_directory/search", {}) == (400, "M_MISSING_PARAM")
    assert await alice.error("POST", "/user_directory/search", {"search_term": 1}) == (400, "M_BAD_JSON")
    body = {"search_term": "a", "limit": "5"}
    assert await alice.error("POST", "/user_directory/search", body) == (400, "M_BAD_JSON")
    assert await alice.error("POST", "/user_directory/search", {"search_term": "a", "limit": -1}) == (
        400, "M_INVALID_PARAM")
    assert await alice.error("POST", "/user_directory/search", raw=b"x") == (400, "M_NOT_JSON")
    status, body = await alice.call("POST", "/user_directory/search", {"search_term": "a"}, auth=False)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
