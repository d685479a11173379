"""Every errcode the client API answers with, and a fuzz that no garbage reaches a 500.

Each errcode is produced through the real app (quart's test client against
``open_homeserver``) and its HTTP status, JSON shape and extra fields
(``soft_logout``, ``retry_after_ms`` plus ``Retry-After``) are checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from quart_trio import QuartTrio

from api.app import create_app
from api.services import open_homeserver
from roomactors.clock import ManualClock
from tests.helpers.client import PASSWORD, Api, Reply, make_settings, register

UNRECOGNIZED = {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)


def assert_error(reply: Reply, status: int, errcode: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict), reply.body
    assert reply.body["errcode"] == errcode, reply.body
    assert isinstance(reply.body["error"], str)
    assert reply.headers["Content-Type"] == "application/json"


# ------------------------------------------------------------------------ M_UNRECOGNIZED


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/v3/keys/no_such_endpoint",
        "/_matrix/client/v3/no/such/endpoint",
        "/_matrix/client/v4/sync",
        "/static/anything",
    ],
)
async def test_unknown_endpoints_are_404_unrecognized(app: QuartTrio, method: str, path: str) -> None:
    reply = await Api(app).request(method, path, token="whatever")
    assert reply.status == 404
    assert reply.body == UNRECOGNIZED


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_matrix/client/v3/createRoom"),
        ("DELETE", "/_matrix/client/v3/sync"),
        ("POST", "/_matrix/client/v3/account/whoami"),
        ("GET", "/_matrix/client/v3/rooms/!r:localhost/send/m.room.message/1"),
        ("PATCH", "/_matrix/client/v3/login"),
        ("GET", "/_matrix/client/r0/logout"),
    ],
)
async def test_known_endpoint_with_wrong_method_is_405_unrecognized(app: QuartTrio, method: str, path: str) -> None:
    reply = await Api(app).request(method, path)
    assert reply.status == 405
    assert reply.body == UNRECOGNIZED
    assert reply.headers["Allow"]


# ------------------------------------------------------------------------ body errors


async def test_invalid_json_is_m_not_json(app: QuartTrio) -> None:
    alice = await register(app, "alice")
    room = await alice.create_room()
    for path, method in [("/createRoom", "POST"), (f"/rooms/{room}/send/m.room.message/a", "PUT"),
                         ("/login", "POST"), ("/register", "POST"), (f"/rooms/{room}/state/m.room.topic", "PUT")]:
        for data in (b"{", b'{"a":', b"\xff\xfe", b"{'single': 1}", b"nul"):
            assert_error(await alice.request(method, path, data=data), 400, "M_NOT_JSON")


async def test_non_object_json_and_wrong_types_are_m_bad_json(app: QuartTrio) -> None:
    alice = await register(app, "alice")
    room = await alice.create_room()
    for data in (b"[]", b'"x"', b"1", b"null", b"true"):
        assert_error(await alice.request("POST", "/createRoom", data=data), 400, "M_BAD_JSON")
        assert_error(await alice.request("PUT", f"/rooms/{room}/send/m.room.message/{data.hex()}", data=data),
                     400, "M_BAD_JSON")
    assert_error(await alice.post("/createRoom", {"name": 5}), 400, "M_BAD_JSON")
    assert_error(await alice.post("/createRoom", {"preset": "party"}), 400, "M_BAD_JSON")
    assert_error(await alice.post(f"/rooms/{room}/invite", {"user_id": ["@bob:localhost"]}), 400, "M_BAD_JSON")
    assert_error(await alice.put(f"/rooms/{room}/typing/{alice.user_id}", {"typing": "yes"}), 400, "M_BAD_JSON")
    assert_error(await alice.post(f"/rooms/{room}/leave", {"reason": 1}), 400, "M_BAD_JSON")


async def test_body_over_max_request_size_is_413(tmp_path: Path) -> None:
    async with open_homeserver(make_settings(tmp_path, http={"max_request_size": 4096})) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        room = await alice.create_room()
        big = {"msgtype": "m.text", "body": "x" * 5000}
        reply = await alice.put(f"/rooms/{room}/send/m.room.message/big", big)
        assert reply.status == 413 and reply.body == {"errcode": "M_TOO_LARGE", "error": "Request body too large"}
        small = await alice.put(f"/rooms/{room}/send/m.room.message/small", {"msgtype": "m.text", "body": "x"})
        assert small.status == 200


async def test_event_over_65536_bytes_is_413_too_large(app: QuartTrio) -> None:
    alice = await register(app, "alice")
    room = await alice.create_room()
    reply = await alice.put(f"/rooms/{room}/send/m.room.message/huge", {"msgtype": "m.text", "body": "x" * 70_000})
    assert_error(reply, 413, "M_TOO_LARGE")


# ------------------------------------------------------------------------ tokens


async def test_missing_token_on_every_authenticated_endpoint(app: QuartTrio) -> None:
    api = Api(app)
    for method, path in [("GET", "/sync"), ("POST", "/createRoom"), ("GET", "/account/whoami"),
                         ("PUT", "/rooms/!r:localhost/send/m.room.message/1"), ("GET", "/joined_rooms"),
                         ("POST", "/logout"), ("GET", "/devices"), ("POST", "/join/!r:localhost")]:
        assert_error(await api.request(method, path, {}), 401, "M_MISSING_TOKEN")
        assert_error(await api.request(method, path, {}, token="ra_unknown"), 401, "M_UNKNOWN_TOKEN")


async def test_expired_refreshable_token_is_soft_logout(tmp_path: Path) -> None:
    clock = ManualClock()
    async with open_homeserver(make_settings(tmp_path), clock=clock) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        session = await alice.login(refresh_token=True)
        assert (await session.ok("GET", "/account/whoami"))["user_id"] == alice.user_id
        clock.advance(int(deps.settings.auth.refresh_access_token_lifetime_s * 1000))
        reply = await session.get("/account/whoami")
        assert_error(reply, 401, "M_UNKNOWN_TOKEN")
        assert reply.body["soft_logout"] is True
        # A revoked (not expired) token is a hard logout.
        await alice.ok("POST", "/logout")
        gone = await alice.get("/account/whoami")
        assert_error(gone, 401, "M_UNKNOWN_TOKEN")
        assert gone.body.get("soft_logout", False) is False


# ------------------------------------------------------------------------ M_FORBIDDEN


async def test_forbidden(app: QuartTrio) -> None:
    alice = await register(app, "alice")
    bob = await register(app, "bob")
    room = await alice.create_room(preset="public_chat")
    # Sending to a room you are not in.
    assert_error(await bob.put(f"/rooms/{room}/send/m.room.message/1", {"body": "hi", "msgtype": "m.text"}),
                 403, "M_FORBIDDEN")
    assert_error(await bob.put(f"/rooms/{room}/state/m.room.topic", {"topic": "x"}), 403, "M_FORBIDDEN")
    await bob.join(room)
    # Kicking, banning and state changes without power.
    assert_error(await bob.post(f"/rooms/{room}/kick", {"user_id": alice.user_id}), 403, "M_FORBIDDEN")
    assert_error(await bob.post(f"/rooms/{room}/ban", {"user_id": alice.user_id}), 403, "M_FORBIDDEN")
    assert_error(await bob.put(f"/rooms/{room}/state/m.room.name", {"name": "mine"}), 403, "M_FORBIDDEN")
    # Typing and receipts need membership too; typing for someone else is refused.
    private = await alice.create_room()
    assert_error(await bob.put(f"/rooms/{private}/typing/{bob.user_id}", {"typing": True}), 403, "M_FORBIDDEN")
    assert_error(await bob.put(f"/rooms/{room}/typing/{alice.user_id}", {"typing": True}), 403, "M_FORBIDDEN")
    # Joining an invite-only room.
    assert_error(await bob.post(f"/join/{private}", {}), 403, "M_FORBIDDEN")
    # Filters of another user.
    assert_error(await bob.post(f"/user/{alice.user_id}/filter", {}), 403, "M_FORBIDDEN")


async def test_unknown_room_is_404(app: QuartTrio) -> None:
    alice = await register(app, "alice")
    assert_error(await alice.put("/rooms/!nowhere:localhost/send/m.room.message/1", {"body": "x"}), 404,
                 "M_NOT_FOUND")
    assert_error(await alice.post("/join/!nowhere:localhost", {}), 404, "M_NOT_FOUND")
    assert_error(await alice.post("/join/#nowhere:localhost", {}), 404, "M_NOT_FOUND")


# ------------------------------------------------------------------------ M_LIMIT_EXCEEDED


async def test_message_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ratelimit={"enabled": True, "message_per_second": 0.001, "message_burst": 2})
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        room = await alice.create_room()
        for txn in ("a", "b"):
            assert (await alice.put(f"/rooms/{room}/send/m.room.message/{txn}", {"body": txn})).status == 200
        third = await alice.put(f"/rooms/{room}/send/m.room.message/c", {"body": "c"})
        assert_error(third, 429, "M_LIMIT_EXCEEDED")
        retry_ms = third.body["retry_after_ms"]
        assert isinstance(retry_ms, int) and 900_000 <= retry_ms <= 1_000_000
        assert int(third.headers["Retry-After"]) == -(-retry_ms // 1000)
        assert third.headers["Access-Control-Allow-Origin"] == "*"
        # The bucket is per user: someone else may still send.
        bob = await register(app, "bob")
        await alice.invite(room, bob.user_id)
        await bob.join(room)
        assert (await bob.put(f"/rooms/{room}/send/m.room.message/x", {"body": "x"})).status == 200


async def test_login_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ratelimit={"enabled": True, "login_per_second": 0.001, "login_burst": 1})
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        await register(app, "alice")
        body = {"type": "m.login.password", "user": "alice", "password": "wrong"}
        assert_error(await Api(app).post("/login", body), 403, "M_FORBIDDEN")
        limited = await Api(app).post("/login", {**body, "password": PASSWORD})
        assert_error(limited, 429, "M_LIMIT_EXCEEDED")
        assert "Retry-After" in limited.headers


# ------------------------------------------------------------------------ account errcodes


async def test_account_errcodes(app: QuartTrio) -> None:
    api = Api(app)
    alice = await register(app, "alice")
    assert_error(await api.post("/register", {"username": "alice", "password": PASSWORD}), 400, "M_USER_IN_USE")
    assert_error(await api.get("/register/available", query={"username": "alice"}), 400, "M_USER_IN_USE")
    assert_error(await api.post("/register", {"username": "Not Valid"}), 400, "M_INVALID_USERNAME")
    assert_error(await api.get("/register/available", query={"username": "a@b"}), 400, "M_INVALID_USERNAME")
    assert_error(await api.post("/register", {}, query={"kind": "guest"}), 403, "M_GUEST_ACCESS_FORBIDDEN")
    first = await alice.post("/account/deactivate", {})
    await alice.ok("POST", "/account/deactivate", {"auth": {"type": "m.login.password", "user": "alice",
                                                            "password": PASSWORD, "session": first.body["session"]}})
    assert_error(await api.post("/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD}),
                 403, "M_USER_DEACTIVATED")


# ------------------------------------------------------------------------ fuzz: never a 500

#: Every endpoint of the blueprints this suite covers (checked against the app's map below).
FUZZED: list[tuple[str, str]] = [
    ("POST", "/_matrix/client/v3/register"),
    ("GET", "/_matrix/client/v3/register/available"),
    ("GET", "/_matrix/client/v3/register/m.login.registration_token/validity"),
    ("GET", "/_synapse/admin/v1/register"),
    ("POST", "/_synapse/admin/v1/register"),
    ("GET", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/refresh"),
    ("POST", "/_matrix/client/v3/logout"),
    ("POST", "/_matrix/client/v3/logout/all"),
    ("GET", "/_matrix/client/v3/account/whoami"),
    ("POST", "/_matrix/client/v3/account/password"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("GET", "/_matrix/client/v3/devices"),
    ("GET", "/_matrix/client/v3/devices/<device_id>"),
    ("PUT", "/_matrix/client/v3/devices/<device_id>"),
    ("DELETE", "/_matrix/client/v3/devices/<device_id>"),
    ("POST", "/_matrix/client/v3/delete_devices"),
    ("POST", "/_matrix/client/v3/createRoom"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/send/<event_type>/<txn_id>"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/state/<event_type>"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/state/<event_type>/"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/state/<event_type>/<path:state_key>"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/redact/<path:event_id>/<txn_id>"),
    ("POST", "/_matrix/client/v3/join/<path:room_id_or_alias>"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/join"),
    ("POST", "/_matrix/client/v3/knock/<path:room_id_or_alias>"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/leave"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/invite"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/kick"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/ban"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/unban"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/forget"),
    ("GET", "/_matrix/client/v3/joined_rooms"),
    ("GET", "/_matrix/client/v3/sync"),
    ("POST", "/_matrix/client/v3/user/<path:user_id>/filter"),
    ("GET", "/_matrix/client/v3/user/<path:user_id>/filter/<filter_id>"),
    ("PUT", "/_matrix/client/v3/rooms/<room_id>/typing/<path:user_id>"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/receipt/<receipt_type>/<path:event_id>"),
    ("POST", "/_matrix/client/v3/rooms/<room_id>/read_markers"),
    ("PUT", "/_matrix/client/v3/presence/<path:user_id>/status"),
    ("GET", "/_matrix/client/v3/presence/<path:user_id>/status"),
]
FUZZED_BLUEPRINTS = ("account", "rooms", "membership", "sync", "ephemeral")

GARBAGE_BODIES: list[bytes | None] = [
    None, b"", b"[]", b'"x"', b'{"a":', b"{}", b"null", b"1", b"\xff", b"[{}]", b'{"": {}}',
]
#: Wrong-typed values for every field name any of these endpoints reads.
FIELDS = [
    "username", "password", "device_id", "initial_device_display_name", "inhibit_login", "refresh_token", "auth",
    "type", "identifier", "user", "nonce", "mac", "admin", "displayname", "user_type", "new_password",
    "logout_devices", "display_name", "devices", "visibility", "room_alias_name", "name", "topic", "invite",
    "invite_3pid", "room_version", "creation_content", "initial_state", "preset", "is_direct",
    "power_level_content_override", "reason", "user_id", "typing", "timeout", "thread_id", "m.fully_read", "m.read",
    "m.read.private", "presence", "status_msg", "msgtype", "body", "event_fields", "event_format", "room",
    "account_data", "membership", "alias", "alt_aliases", "join_rule", "history_visibility",
]
WRONG_VALUES: list[Any] = [None, 5, -1, 2**70, 1.5, True, "x", "", [], ["x"], [1], {}, {"type": 5}, {"session": 5},
                           {"type": "m.login.password", "session": []}, {"a": {"b": []}}]
GARBAGE_QUERIES = [
    {}, {"since": "garbage"}, {"since": "s-1_0_0"}, {"since": "s99999999999999999999_0_0"}, {"timeout": "abc"},
    {"timeout": "-5"}, {"filter": "{bad"}, {"filter": "[]"}, {"filter": '{"room": 5}'}, {"filter": "999"}, {"filter": "99999999999999999999999"},
    {"filter": '{"room": {"timeline": {"limit": "x"}}}'}, {"full_state": "maybe"}, {"set_presence": "asleep"},
    {"username": ""}, {"username": "\x00"}, {"token": ""}, {"kind": "x"}, {"access_token": "x"},
]


def _fill(rule: str, values: dict[str, str]) -> str:
    return re.sub(r"<(?:path:)?(\w+)>", lambda m: values[m.group(1)], rule)


def _assert_not_500(reply: Reply, what: Any) -> None:
    assert reply.status < 500, (what, reply.status, reply.body)
    assert isinstance(reply.body, dict), (what, reply.body)
    if reply.status >= 400 and not (reply.status == 401 and "flows" in reply.body):  # a UIA challenge
        assert isinstance(reply.body.get("errcode"), str), (what, reply.body)


async def test_fuzz_list_covers_every_endpoint(app: QuartTrio) -> None:
    rules = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in FUZZED_BLUEPRINTS and "/r0/" not in rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert rules == set(FUZZED)


@pytest.mark.parametrize(("method", "rule"), FUZZED, ids=[f"{m} {r}" for m, r in FUZZED])
async def test_fuzz_endpoint_never_answers_500(app: QuartTrio, method: str, rule: str) -> None:
    alice = await register(app, "alice")
    bob = await register(app, "bob")
    room = await alice.create_room(preset="public_chat", room_alias_name="fuzz")
    await bob.join(room)
    event_id = await alice.send(room)
    values = {
        "room_id": room, "room_id_or_alias": room, "event_id": event_id, "user_id": alice.user_id,
        "device_id": alice.device_id, "event_type": "m.room.message", "state_key": "", "txn_id": "fuzz",
        "filter_id": "1", "receipt_type": "m.read",
    }
    path = _fill(rule, values)
    odd_paths = [
        _fill(rule, {**values, "room_id": "!x:localhost", "room_id_or_alias": "#none:localhost",
                     "event_id": "$nope", "user_id": "@x:localhost", "device_id": "X", "filter_id": "abc",
                     "receipt_type": "m.bogus", "event_type": "m.room.member", "state_key": bob.user_id}),
        _fill(rule, {**values, "room_id": "not-a-room", "room_id_or_alias": "nonsense", "event_id": "x",
                     "user_id": "nobody", "filter_id": "99999999999999999999999", "event_type": "x" * 300,
                     "txn_id": "t" * 300, "state_key": "a/b"}),
    ]
    if "<filter_id>" in rule:
        odd_paths.append(_fill(rule, {**values, "filter_id": "99999999999999999999999"}))
        odd_paths.append(_fill(rule, {**values, "filter_id": "-1"}))
    for body in GARBAGE_BODIES:
        for p in (path, *odd_paths):
            _assert_not_500(await alice.request(method, p, data=body), (p, body))
    for field in FIELDS:
        for value in WRONG_VALUES:
            body = json.dumps({field: value}).encode()
            _assert_not_500(await alice.request(method, path, data=body, query={"username": "z"}), (field, value))
    for query in GARBAGE_QUERIES:
        _assert_not_500(await alice.request(method, path, data=b"{}", query=query), query)
    # Unauthenticated and with a garbage token, too.
    _assert_not_500(await alice.request(method, path, data=b"{}", token=None), "no token")
    _assert_not_500(await alice.request(method, path, data=b"{}", token="\u00e9"), "odd token")
