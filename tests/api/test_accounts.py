"""Accounts and sessions over HTTP (quart's test client): registration with UIA,
registration tokens, login, whoami, logout, refresh, password change, deactivation,
devices, and shared-secret admin registration.

The ``Api`` / ``register`` helpers live in ``tests/helpers/client.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from quart_trio import QuartTrio

from api.app import create_app
from api.services import open_homeserver
from api.settings import Settings
from api.shared_secret import registration_mac
from roomactors.clock import ManualClock
from storage import timeline
from storage.schema import registration_tokens

from tests.helpers.client import PASSWORD, V3, Api, make_settings, register, room_events  # noqa: F401


# ------------------------------------------------------------------------ fixtures


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(step_ms=1)


@pytest.fixture
async def homeserver(settings: Settings, clock: ManualClock) -> AsyncIterator[Any]:
    async with open_homeserver(settings, clock=clock) as deps:
        yield deps


@pytest.fixture
async def app(homeserver: Any) -> QuartTrio:
    return create_app(homeserver)


@pytest.fixture
async def alice(app: QuartTrio) -> Api:
    return await register(app, "alice")


# ------------------------------------------------------------------------ registration


async def test_register_runs_uia_then_creates_the_account(app: QuartTrio) -> None:
    api = Api(app)
    body = {"username": "Alice", "password": PASSWORD, "device_id": "PHONE",
            "initial_device_display_name": "Alice's phone"}
    first = await api.post("/register", body)
    assert first.status == 401
    assert first.body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert first.body["params"] == {}
    assert first.body["completed"] == []
    assert isinstance(first.body["session"], str) and first.body["session"]
    assert "errcode" not in first.body  # the bare challenge has no error
    # A stage of a type the flows do not offer is refused, keeping the session.
    wrong = await api.post("/register", {**body, "auth": {"type": "m.login.password", "session": first.body["session"]}})
    assert wrong.status == 400 and wrong.body["errcode"] == "M_UNRECOGNIZED"
    second = await api.post("/register", {**body, "auth": {"type": "m.login.dummy", "session": first.body["session"]}})
    assert second.status == 200, second.body
    assert second.body["user_id"] == "@alice:localhost"  # mapped onto the grammar (lower case)
    assert second.body["device_id"] == "PHONE"
    assert second.body["access_token"].startswith("ra_")
    assert "refresh_token" not in second.body and "expires_in_ms" not in second.body
    me = Api(app, second.body["access_token"])
    assert await me.ok("GET", "/account/whoami") == {"user_id": "@alice:localhost", "device_id": "PHONE",
                                                      "is_guest": False}
    devices = await me.ok("GET", "/devices")
    assert [(d["device_id"], d["display_name"]) for d in devices["devices"]] == [("PHONE", "Alice's phone")]
    # The completed session is gone: replaying it does not register anyone else.
    replay = await api.post("/register", {"username": "mallory", "password": PASSWORD,
                                          "auth": {"type": "m.login.dummy", "session": first.body["session"]}})
    assert replay.status == 400 and replay.body["errcode"] == "M_UNKNOWN"


async def test_register_without_username_generates_a_valid_user_id(app: QuartTrio) -> None:
    api = Api(app)
    first = await api.post("/register", {"password": PASSWORD})
    second = await api.post("/register", {"password": PASSWORD, "auth": {"type": "m.login.dummy",
                                                                         "session": first.body["session"]}})
    assert second.status == 200
    localpart, _, server = second.body["user_id"][1:].partition(":")
    assert server == "localhost" and localpart and second.body["device_id"]


async def test_register_inhibit_login_and_refresh_token(app: QuartTrio) -> None:
    quiet = await register(app, "quiet", inhibit_login=True)
    assert quiet.token is None and quiet.user_id == "@quiet:localhost"
    assert (await quiet.login()).token
    fresh = await register(app, "fresh", refresh_token=True)
    assert fresh.refresh_token and fresh.refresh_token.startswith("rar_")


async def test_register_errors(app: QuartTrio, alice: Api) -> None:
    api = Api(app)
    taken = await api.post("/register", {"username": "alice", "password": PASSWORD})
    assert taken.err() == (400, "M_USER_IN_USE")
    taken_upper = await api.post("/register", {"username": "ALICE", "password": PASSWORD})
    assert taken_upper.err() == (400, "M_USER_IN_USE")
    for bad in ("not valid", "émile", "a:b", "", "x" * 300):
        reply = await api.post("/register", {"username": bad, "password": PASSWORD})
        assert reply.err() == (400, "M_INVALID_USERNAME"), bad
    guest = await api.post("/register", {}, query={"kind": "guest"})
    assert guest.err() == (403, "M_GUEST_ACCESS_FORBIDDEN")
    kind = await api.post("/register", {}, query={"kind": "robot"})
    assert kind.err() == (400, "M_INVALID_PARAM")
    assert (await api.post("/register", {"username": 5})).err() == (400, "M_BAD_JSON")
    assert (await api.post("/register", {"password": 5})).err() == (400, "M_BAD_JSON")
    assert (await api.post("/register", {"inhibit_login": "yes"})).err() == (400, "M_BAD_JSON")
    assert (await api.post("/register", {"auth": "dummy"})).err() == (400, "M_BAD_JSON")
    assert (await api.post("/register", {"auth": {"session": "nope"}})).err() == (400, "M_UNKNOWN")
    assert (await api.post("/register", [])).err() == (400, "M_BAD_JSON")
    assert (await api.post("/register", data=b"{")).err() == (400, "M_NOT_JSON")


async def test_register_available(app: QuartTrio, alice: Api) -> None:
    api = Api(app)
    assert await api.ok("GET", "/register/available", query={"username": "bob"}) == {"available": True}
    assert (await api.get("/register/available", query={"username": "alice"})).err() == (400, "M_USER_IN_USE")
    assert (await api.get("/register/available", query={"username": "no way"})).err() == (400, "M_INVALID_USERNAME")
    assert (await api.get("/register/available")).err() == (400, "M_MISSING_PARAM")


async def test_registration_disabled_is_403(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration={"enabled": False})
    async with open_homeserver(settings) as deps:
        api = Api(create_app(deps))
        reply = await api.post("/register", {"username": "bob", "password": PASSWORD})
        assert reply.err() == (403, "M_FORBIDDEN")
        # Registration-token validity has no meaning either.
        assert (await api.get("/register/m.login.registration_token/validity",
                              query={"token": "x"})).err() == (403, "M_FORBIDDEN")
        # The shared-secret admin API still works when open registration is off.
        await _admin_register(api, "admin", admin=True)


async def test_registration_token_flow(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration={"enabled": True, "require_token": True})
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        api = Api(app)
        await deps.db.write(lambda conn: conn.execute(sa.insert(registration_tokens).values(
            token="fBVFdqVE", uses_allowed=1, pending=0, completed=0, expiry_time=None)))
        validity = "/register/m.login.registration_token/validity"
        assert await api.ok("GET", validity, query={"token": "fBVFdqVE"}) == {"valid": True}
        assert await api.ok("GET", validity, query={"token": "other"}) == {"valid": False}

        body = {"username": "bob", "password": PASSWORD}
        first = await api.post("/register", body)
        assert first.status == 401
        assert first.body["flows"] == [{"stages": ["m.login.registration_token"]}]
        session = first.body["session"]
        # The dummy stage is not offered.
        dummy = await api.post("/register", {**body, "auth": {"type": "m.login.dummy", "session": session}})
        assert dummy.err() == (400, "M_UNRECOGNIZED")
        wrong = await api.post("/register", {**body, "auth": {"type": "m.login.registration_token",
                                                              "token": "nope", "session": session}})
        assert wrong.status == 401 and wrong.body["errcode"] == "M_FORBIDDEN"
        assert wrong.body["session"] == session and wrong.body["completed"] == []
        ok = await api.post("/register", {**body, "auth": {"type": "m.login.registration_token",
                                                           "token": "fBVFdqVE", "session": session}})
        assert ok.status == 200 and ok.body["user_id"] == "@bob:localhost"
        # One use allowed: the token is now spent.
        assert await api.ok("GET", validity, query={"token": "fBVFdqVE"}) == {"valid": False}
        again = await api.post("/register", {"username": "carol", "password": PASSWORD})
        used = await api.post("/register", {"username": "carol", "password": PASSWORD,
                                            "auth": {"type": "m.login.registration_token", "token": "fBVFdqVE",
                                                     "session": again.body["session"]}})
        assert used.status == 401 and used.body["errcode"] == "M_FORBIDDEN"


async def test_registration_token_is_not_spent_by_a_failed_registration(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration={"enabled": True, "require_token": True})
    async with open_homeserver(settings) as deps:
        api = Api(create_app(deps))
        await deps.db.write(lambda conn: conn.execute(sa.insert(registration_tokens).values(
            token="twice", uses_allowed=2, pending=0, completed=0, expiry_time=None)))
        # Two clients race for the same user name with the same token: both pass the
        # name check and the token stage; one account is created, and the loser must
        # not have spent a use of the token.
        sessions = [(await api.post("/register", {"username": "dave", "password": PASSWORD})).body["session"]
                    for _ in range(2)]
        replies: list[Reply] = []

        async def finish(session: str) -> None:
            replies.append(await api.post("/register", {"username": "dave", "password": PASSWORD, "auth": {
                "type": "m.login.registration_token", "token": "twice", "session": session}}))

        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(finish, session)
        assert sorted(r.err() for r in replies) == [(200, None), (400, "M_USER_IN_USE")]
        row = await deps.db.read(lambda conn: conn.execute(sa.select(registration_tokens)).one())
        assert (row.completed, row.pending) == (1, 0)
        validity = "/register/m.login.registration_token/validity"
        assert await api.ok("GET", validity, query={"token": "twice"}) == {"valid": True}


# ------------------------------------------------------------------------ login


async def test_login_flows_and_password_login(app: QuartTrio, alice: Api) -> None:
    api = Api(app)
    flows = await api.ok("GET", "/login")
    assert {"type": "m.login.password"} in flows["flows"]
    for user in ("alice", "@alice:localhost", "ALICE"):
        reply = await api.post("/login", {"type": "m.login.password",
                                          "identifier": {"type": "m.id.user", "user": user}, "password": PASSWORD})
        assert reply.status == 200, (user, reply.body)
        assert reply.body["user_id"] == "@alice:localhost"
        assert reply.body["access_token"] and reply.body["device_id"]
    # The deprecated top-level "user" still works.
    legacy = await api.post("/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD})
    assert legacy.status == 200
    # Logging in with an existing device_id replaces that device's token.
    first = await alice.login(device_id="LAPTOP", initial_device_display_name="laptop")
    second = await alice.login(device_id="LAPTOP")
    assert first.device_id == second.device_id == "LAPTOP"
    assert (await first.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await second.ok("GET", "/account/whoami"))["device_id"] == "LAPTOP"
    assert (await second.ok("GET", "/devices/LAPTOP"))["display_name"] == "laptop"


async def test_login_errors(app: QuartTrio, alice: Api) -> None:
    api = Api(app)

    async def login(body: Any) -> tuple[int, str | None]:
        return (await api.post("/login", body)).err()

    ident = {"type": "m.id.user", "user": "alice"}
    assert await login({"type": "m.login.password", "identifier": ident, "password": "wrong"}) == (403, "M_FORBIDDEN")
    assert await login({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"},
                        "password": PASSWORD}) == (403, "M_FORBIDDEN")
    assert await login({"type": "m.login.token", "token": "x"}) == (400, "M_UNKNOWN")
    assert (await login({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email",
                                                                    "address": "a@b.c"}, "password": "x"}))[0] == 400
    assert await login({"type": "m.login.password", "identifier": "alice", "password": PASSWORD}) == (400, "M_BAD_JSON")
    assert await login({"type": "m.login.password", "identifier": ident, "password": 5}) == (400, "M_BAD_JSON")
    assert await login({"type": "m.login.password", "identifier": ident, "password": PASSWORD,
                        "device_id": 5}) == (400, "M_BAD_JSON")
    assert await login({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 5},
                        "password": PASSWORD}) == (400, "M_BAD_JSON")
    assert await login({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@a:b:c:"},
                        "password": PASSWORD}) == (403, "M_FORBIDDEN")
    assert await login([]) == (400, "M_BAD_JSON")


async def test_missing_and_unknown_tokens(app: QuartTrio, alice: Api) -> None:
    assert (await alice.get("/account/whoami", token=None)).err() == (401, "M_MISSING_TOKEN")
    reply = await alice.get("/account/whoami", token="ra_nope")
    assert reply.err() == (401, "M_UNKNOWN_TOKEN")
    assert reply.body.get("soft_logout", False) is False
    # The deprecated query parameter is still accepted.
    assert (await alice.ok("GET", "/account/whoami", token=None, query={"access_token": alice.token}))["user_id"] \
        == alice.user_id
    assert (await alice.get("/account/whoami", token=None, headers={"Authorization": "Basic abc"})).err() \
        == (401, "M_MISSING_TOKEN")


# ------------------------------------------------------------------------ logout


async def test_logout_kills_only_that_token(app: QuartTrio, alice: Api) -> None:
    other = await alice.login()
    assert await alice.ok("POST", "/logout", {}) == {}
    assert (await alice.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await alice.post("/logout", {})).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await other.ok("GET", "/account/whoami"))["user_id"] == alice.user_id
    # The logged-out device is gone.
    assert [d["device_id"] for d in (await other.ok("GET", "/devices"))["devices"]] == [other.device_id]


async def test_logout_all(app: QuartTrio, alice: Api) -> None:
    sessions = [await alice.login() for _ in range(3)]
    await sessions[0].ok("POST", "/logout/all")
    for session in [alice, *sessions]:
        assert (await session.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    again = await alice.login()
    assert [d["device_id"] for d in (await again.ok("GET", "/devices"))["devices"]] == [again.device_id]


# ------------------------------------------------------------------------ refresh and soft logout


async def test_refresh_tokens_and_soft_logout(app: QuartTrio, alice: Api, clock: ManualClock,
                                              settings: Settings) -> None:
    api = Api(app)
    session = await alice.login(refresh_token=True)
    assert session.refresh_token
    reply = await api.post("/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                                      "password": PASSWORD, "refresh_token": True})
    lifetime = int(settings.auth.refresh_access_token_lifetime_s * 1000)
    assert reply.body["expires_in_ms"] == lifetime
    assert (await session.ok("GET", "/account/whoami"))["device_id"] == session.device_id

    clock.advance(lifetime + 1)
    expired = await session.get("/account/whoami")
    assert expired.err() == (401, "M_UNKNOWN_TOKEN") and expired.body["soft_logout"] is True

    refreshed = await api.ok("POST", "/refresh", {"refresh_token": session.refresh_token})
    assert set(refreshed) == {"access_token", "refresh_token", "expires_in_ms"}
    assert refreshed["access_token"] != session.token and refreshed["refresh_token"] != session.refresh_token
    # The old access token is revoked at once (a server may choose to).
    assert (await session.get("/account/whoami")).err()[1] == "M_UNKNOWN_TOKEN"
    # The old refresh token stays valid until the new tokens are used: a client that
    # lost the response can repeat the refresh (client-server "Refreshing access tokens").
    retried = await api.ok("POST", "/refresh", {"refresh_token": session.refresh_token})
    new = Api(app, retried["access_token"], refresh_token=retried["refresh_token"])
    # The tokens of the lost response died with the retry.
    assert (await api.post("/refresh", {"refresh_token": refreshed["refresh_token"]})).err() == \
        (401, "M_UNKNOWN_TOKEN")
    # Using the new access token revokes the old refresh token.
    assert (await new.ok("GET", "/account/whoami"))["device_id"] == session.device_id
    dead = await api.post("/refresh", {"refresh_token": session.refresh_token})
    assert dead.err() == (401, "M_UNKNOWN_TOKEN")
    # ...and using the new refresh token works, once it is the newest.
    third = await api.ok("POST", "/refresh", {"refresh_token": new.refresh_token})
    assert (await Api(app, third["access_token"]).ok("GET", "/account/whoami"))["user_id"] == alice.user_id
    assert (await api.post("/refresh", {"refresh_token": new.refresh_token})).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await api.post("/refresh", {})).err() == (400, "M_MISSING_PARAM")
    assert (await api.post("/refresh", {"refresh_token": 1})).err() == (400, "M_BAD_JSON")


async def test_refresh_with_the_new_refresh_token_revokes_the_old_one(app: QuartTrio, alice: Api) -> None:
    api = Api(app)
    session = await alice.login(refresh_token=True)
    first = await api.ok("POST", "/refresh", {"refresh_token": session.refresh_token})
    await api.ok("POST", "/refresh", {"refresh_token": first["refresh_token"]})
    assert (await api.post("/refresh", {"refresh_token": session.refresh_token})).err() == (401, "M_UNKNOWN_TOKEN")


async def test_access_token_lifetime_without_refresh(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = make_settings(tmp_path, auth={"access_token_lifetime_s": 60.0})
    async with open_homeserver(settings, clock=clock) as deps:
        app = create_app(deps)
        alice = await register(app, "alice")
        clock.advance(61_000)
        reply = await alice.get("/account/whoami")
        assert reply.err() == (401, "M_UNKNOWN_TOKEN")


# ------------------------------------------------------------------------ password change


async def test_password_change_with_uia_logs_out_other_devices(app: QuartTrio, alice: Api) -> None:
    other = await alice.login()
    kept = await alice.login()
    first = await alice.post("/account/password", {"new_password": "new secret"})
    assert first.status == 401 and first.body["flows"] == [{"stages": ["m.login.password"]}]
    session = first.body["session"]
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
            "session": session}
    wrong = await alice.post("/account/password", {"new_password": "new secret",
                                                   "auth": {**auth, "password": "wrong"}})
    assert wrong.status == 401 and wrong.body["errcode"] == "M_FORBIDDEN" and wrong.body["session"] == session
    # The session belongs to the user, so another of their devices may complete it.
    assert (await kept.post("/account/password", {"new_password": "x", "auth": {**auth, "password": PASSWORD}})) \
        .status == 200
    assert (await other.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await alice.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await kept.ok("GET", "/account/whoami"))["user_id"] == alice.user_id
    assert (await Api(app).post("/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD})) \
        .err() == (403, "M_FORBIDDEN")
    await alice.login("x")


async def test_password_uia_session_is_bound_to_user_and_endpoint(app: QuartTrio, alice: Api) -> None:
    bob = await register(app, "bob")
    first = await alice.post("/account/password", {"new_password": "n"})
    stolen = await bob.post("/account/password", {"new_password": "n", "auth": {
        "type": "m.login.password", "user": "bob", "password": PASSWORD, "session": first.body["session"]}})
    assert stolen.err() == (403, "M_FORBIDDEN")
    other_endpoint = await alice.post("/account/deactivate", {"auth": {
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "session": first.body["session"]}})
    assert other_endpoint.err() == (403, "M_FORBIDDEN")
    # Claiming another user's identity in the password stage fails.
    claimed = await alice.post("/account/password", {"new_password": "n", "auth": {
        "type": "m.login.password", "user": "bob", "password": PASSWORD, "session": first.body["session"]}})
    assert claimed.status == 401 and claimed.body["errcode"] == "M_FORBIDDEN"


async def test_password_change_keeping_devices(app: QuartTrio, alice: Api) -> None:
    other = await alice.login()
    first = await alice.post("/account/password", {"new_password": "n2", "logout_devices": False})
    await alice.ok("POST", "/account/password", {"new_password": "n2", "logout_devices": False, "auth": {
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "session": first.body["session"]}})
    assert (await other.ok("GET", "/account/whoami"))["user_id"] == alice.user_id
    assert (await alice.post("/account/password", {"new_password": 5})).err() == (400, "M_BAD_JSON")
    assert (await alice.post("/account/password", {})).err() == (400, "M_BAD_JSON")


# ------------------------------------------------------------------------ deactivation


async def test_deactivate_leaves_rooms_and_blocks_login(app: QuartTrio, homeserver: Any, alice: Api) -> None:
    bob = await register(app, "bob")
    room = await bob.create_room(preset="public_chat")
    await alice.join(room)
    own_room = await alice.create_room()
    await alice.ok("POST", f"/rooms/{own_room}/invite", {"user_id": bob.user_id})
    first = await alice.post("/account/deactivate", {})
    assert first.status == 401 and first.body["flows"] == [{"stages": ["m.login.password"]}]
    done = await alice.ok("POST", "/account/deactivate", {"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD,
        "session": first.body["session"]}})
    assert done["id_server_unbind_result"] == "no-support"
    assert (await alice.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    login = await Api(app).post("/login", {"type": "m.login.password", "user": "alice", "password": PASSWORD})
    assert login.err() == (403, "M_USER_DEACTIVATED")
    memberships = await homeserver.db.read(timeline.get_memberships, alice.user_id)
    assert {r: m.membership for r, m in memberships.items()} == {room: "leave", own_room: "leave"}
    # The user ID is never reused.
    again = await Api(app).post("/register", {"username": "alice", "password": PASSWORD})
    assert again.err() == (400, "M_USER_IN_USE")
    # Bob sees the leave.
    sync = await bob.sync()
    members = {e["state_key"]: e["content"]["membership"] for e in room_events(sync, room)
               if e["type"] == "m.room.member"}
    assert members.get(alice.user_id) == "leave"


# ------------------------------------------------------------------------ devices


async def test_devices_list_get_put_delete(app: QuartTrio, alice: Api) -> None:
    phone = await alice.login(device_id="PHONE", initial_device_display_name="phone")
    devices = await alice.ok("GET", "/devices")
    ids = sorted(d["device_id"] for d in devices["devices"])
    assert ids == sorted([alice.device_id, "PHONE"])
    for d in devices["devices"]:
        assert isinstance(d["last_seen_ts"], int)
    assert await alice.ok("GET", "/devices/PHONE") == {
        "device_id": "PHONE", "display_name": "phone", **{k: v for k, v in
                                                           (await alice.ok("GET", "/devices/PHONE")).items()
                                                           if k.startswith("last_seen")}}
    assert (await alice.get("/devices/NOPE")).err() == (404, "M_NOT_FOUND")
    assert await alice.ok("PUT", "/devices/PHONE", {"display_name": "old phone"}) == {}
    assert (await alice.ok("GET", "/devices/PHONE"))["display_name"] == "old phone"
    assert (await alice.put("/devices/NOPE", {"display_name": "x"})).err() == (404, "M_NOT_FOUND")
    assert (await alice.put("/devices/PHONE", {"display_name": 3})).err() == (400, "M_BAD_JSON")
    # "If not given, the display name is unchanged."
    assert await alice.ok("PUT", "/devices/PHONE", {}) == {}
    assert (await alice.ok("GET", "/devices/PHONE"))["display_name"] == "old phone"
    assert (await alice.put("/devices/NOPE", {})).err() == (404, "M_NOT_FOUND")
    # Another user's device is not ours to see.
    bob = await register(app, "bob")
    assert (await bob.get("/devices/PHONE")).err() == (404, "M_NOT_FOUND")

    first = await alice.delete("/devices/PHONE", {})
    assert first.status == 401 and first.body["flows"] == [{"stages": ["m.login.password"]}]
    assert (await phone.ok("GET", "/account/whoami"))["device_id"] == "PHONE"
    await alice.ok("DELETE", "/devices/PHONE", {"auth": {
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "session": first.body["session"]}})
    assert (await phone.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert (await alice.get("/devices/PHONE")).err() == (404, "M_NOT_FOUND")
    assert (await alice.delete("/devices/PHONE", {})).err() == (404, "M_NOT_FOUND")


async def test_delete_devices_bulk(app: QuartTrio, alice: Api) -> None:
    a = await alice.login(device_id="A")
    b = await alice.login(device_id="B")
    assert (await alice.post("/delete_devices", {"devices": "A"})).err() == (400, "M_BAD_JSON")
    first = await alice.post("/delete_devices", {"devices": ["A", "B", "UNKNOWN"]})
    assert first.status == 401
    await alice.ok("POST", "/delete_devices", {"devices": ["A", "B", "UNKNOWN"], "auth": {
        "type": "m.login.password", "user": "alice", "password": PASSWORD, "session": first.body["session"]}})
    for session in (a, b):
        assert (await session.get("/account/whoami")).err() == (401, "M_UNKNOWN_TOKEN")
    assert [d["device_id"] for d in (await alice.ok("GET", "/devices"))["devices"]] == [alice.device_id]


# ------------------------------------------------------------------------ shared-secret admin registration


async def _admin_register(api: Api, username: str, *, admin: bool = False, password: str = PASSWORD,
                          secret: str = "test-shared-secret", **extra: Any) -> Reply:
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    mac = registration_mac(secret, nonce, username, password, admin)
    reply = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": username,
                                                           "password": password, "admin": admin, "mac": mac, **extra})
    return reply


async def test_shared_secret_admin_registration(app: QuartTrio, homeserver: Any) -> None:
    api = Api(app)
    reply = await _admin_register(api, "root", admin=True, displayname="The Admin")
    assert reply.status == 200, reply.body
    assert reply.body["user_id"] == "@root:localhost" and reply.body["access_token"]
    root = Api(app, reply.body["access_token"], reply.body["user_id"])
    assert (await root.ok("GET", "/account/whoami"))["user_id"] == "@root:localhost"
    from storage import accounts

    user = await homeserver.db.read(accounts.get_user, "@root:localhost")
    assert user.is_admin
    assert (await homeserver.db.read(accounts.get_profile, "@root:localhost"))["displayname"] == "The Admin"

    # A wrong MAC is refused, and burns the nonce.
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    bad = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": "eve", "password": PASSWORD,
                                                         "mac": "0" * 40})
    assert bad.err() == (403, "M_FORBIDDEN")
    mac = registration_mac("test-shared-secret", nonce, "eve", PASSWORD, False)
    reused = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": "eve", "password": PASSWORD,
                                                            "mac": mac})
    assert reused.status == 400
    # A nonce is single use.
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    mac = registration_mac("test-shared-secret", nonce, "frank", PASSWORD, False)
    body = {"nonce": nonce, "username": "frank", "password": PASSWORD, "mac": mac}
    assert (await api.post("/_synapse/admin/v1/register", body)).status == 200
    assert (await api.post("/_synapse/admin/v1/register", body)).status == 400
    # A MAC signed for notadmin does not grant admin.
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    mac = registration_mac("test-shared-secret", nonce, "gina", PASSWORD, False)
    escalate = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": "gina",
                                                              "password": PASSWORD, "admin": True, "mac": mac})
    assert escalate.err() == (403, "M_FORBIDDEN")
    # The wrong secret, a taken name, a non-ASCII MAC, wrong types: clean errors.
    assert (await _admin_register(api, "hank", secret="guess")).err() == (403, "M_FORBIDDEN")
    assert (await _admin_register(api, "root")).err() == (400, "M_USER_IN_USE")
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    odd = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": "ivy", "password": PASSWORD,
                                                         "mac": "é" * 40})
    assert odd.err() == (403, "M_FORBIDDEN")
    nonce = (await api.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
    typed = await api.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": 5, "password": PASSWORD,
                                                           "mac": "x"})
    assert typed.err() == (400, "M_BAD_JSON")


async def test_shared_secret_registration_disabled(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration={"shared_secret": ""})
    async with open_homeserver(settings) as deps:
        api = Api(create_app(deps))
        assert (await api.get("/_synapse/admin/v1/register")).status == 400
        assert (await api.post("/_synapse/admin/v1/register", {})).status == 400


async def test_uia_password_guesses_are_rate_limited(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ratelimit={"enabled": True, "login_per_second": 0.001, "login_burst": 3})
    async with open_homeserver(settings) as deps:
        alice = await register(create_app(deps), "alice")
        first = await alice.post("/account/password", {"new_password": "n"})
        replies = []
        for guess in ("a", "b", "c", "d"):
            replies.append(await alice.post("/account/password", {"new_password": "n", "auth": {
                "type": "m.login.password", "user": "alice", "password": guess, "session": first.body["session"]}}))
        assert [r.err() for r in replies] == [(401, "M_FORBIDDEN")] * 3 + [(429, "M_LIMIT_EXCEEDED")]
        assert "Retry-After" in replies[-1].headers
