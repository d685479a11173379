"""Federation with a real Synapse (the pinned release from PyPI) on loopback, over TLS.

Our server runs for real (``roomactors.testing.homeserver_in_thread``: hypercorn,
the federation TLS listener with a self-signed certificate, SQLite) with server
name ``localhost:<port>``; Synapse runs as a subprocess (``synapse_peer.py``).
Both are told to accept self-signed certificates and to allow loopback addresses
(ours: ``ip_range_allowlist``; Synapse: ``ip_range_whitelist``). Each side is
driven through its own client-server API.

For room versions 12 and 10, in both directions (a room created on ours that a
Synapse user joins, and a room created on Synapse that our user joins):
messages flow both ways and show in each side's ``/sync``; name, topic and power
level changes flow both ways; a ban on either side is enforced on the other; and
at the end both servers' ``/state`` for the room are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from roomactors.testing import ThreadedHomeserver

ROOM_VERSIONS = ["12", "10"]


class Ours:
    """Thin sync client-server API helper for our server (httpx)."""

    def __init__(self, base_url: str, server_name: str, register: Callable[..., Any]) -> None:
        self.base_url = base_url
        self.server_name = server_name
        self._register = register
        self._http = httpx.Client(base_url=base_url, timeout=60, trust_env=False)

    def register_user(self, localpart: str) -> tuple[str, str]:
        user = self._register(localpart)
        return user.user_id, user.access_token

    def request(self, method: str, path: str, token: str, json: Any = None, params: Any = None) -> Any:
        r = self._http.request(method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"})
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def status(self, method: str, path: str, token: str, json: Any = None) -> tuple[int, Any]:
        r = self._http.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"})
        return r.status_code, r.json()

    def get_state(self, token: str, room_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state", token)

    def sync(self, token: str, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        params = {"timeout": str(timeout)}
        if since:
            params["since"] = since
        return self.request("GET", "/_matrix/client/v3/sync", token, params=params)


def _state_map(events: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    """Poll ``predicate`` (each probe is a real request to a real server; federation
    delivery between two processes has no event we could wait on instead)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def ours(ours_federating: ThreadedHomeserver) -> Ours:
    """Our server federating with Synapse (``ours_federating``, conftest.py)."""
    return Ours(ours_federating.base_url, ours_federating.server_name, ours_federating.register_user)


def _messages(side: Any, token: str, room_id: str) -> list[str]:
    if isinstance(side, Ours):
        body = side.request("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", token, params={"dir": "b", "limit": "50"})
    else:
        body = side.request("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", token=token, params={"dir": "b", "limit": "50"})
    return [e["content"].get("body") for e in reversed(body["chunk"]) if e["type"] == "m.room.message"]


def _state_of(side: Any, token: str, room_id: str) -> dict[tuple[str, str], str]:
    return _state_map(side.get_state(token, room_id))


def _content(side: Any, token: str, room_id: str, key: tuple[str, str]) -> dict[str, Any] | None:
    for e in side.get_state(token, room_id):
        if (e["type"], e["state_key"]) == key:
            return e["content"]
    return None


def _send(side: Any, token: str, room_id: str, body: str) -> str:
    if isinstance(side, Ours):
        txn = f"t{time.monotonic_ns()}"
        return side.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}", token,
                            json={"msgtype": "m.text", "body": body})["event_id"]
    return side.send_message(token, room_id, body)


def _put_state(side: Any, token: str, room_id: str, type_: str, content: dict[str, Any], state_key: str = "") -> None:
    if isinstance(side, Ours):
        side.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/{type_}/{state_key}", token, json=content)
    else:
        side.send_state(token, room_id, type_, state_key, content)


def _create(side: Any, token: str, room_version: str, invite_power_to: str) -> str:
    body = {"preset": "public_chat", "room_version": room_version, "name": "interop"}
    if isinstance(side, Ours):
        return side.request("POST", "/_matrix/client/v3/createRoom", token, json=body)["room_id"]
    return side.create_room(token, **body)


def _join(side: Any, token: str, room_id: str, via: str) -> None:
    if isinstance(side, Ours):
        side.request("POST", f"/_matrix/client/v3/join/{room_id}", token, json={}, params={"via": via})
    else:
        side.join(token, room_id, server_name=[via])


def _sync_has_message(side: Any, token: str, room_id: str, body: str) -> bool:
    if not isinstance(side, Ours):
        # Synapse caches identical /sync requests for a while, so poll it through
        # its own long-polling helper (incremental syncs) instead.
        side.wait_for_event(token, room_id, lambda e: e.get("content", {}).get("body") == body, timeout_s=60)
        return True
    resp = side.sync(token)
    room = resp.get("rooms", {}).get("join", {}).get(room_id)
    return bool(room) and any(e.get("content", {}).get("body") == body for e in room["timeline"]["events"])


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
@pytest.mark.parametrize("host", ["ours", "synapse"])
def test_federation_with_synapse(ours: Ours, synapse_peer: Any, room_version: str, host: str) -> None:
    tag = f"{host}{room_version}"
    o_user, o_token = ours.register_user(f"o{tag}")
    s_user, s_token = synapse_peer.register_user(f"s{tag}")
    o_mallory, o_mtoken = ours.register_user(f"om{tag}")
    s_mallory, s_mtoken = synapse_peer.register_user(f"sm{tag}")
    if host == "ours":
        resident, r_token, joiner, j_token, j_user = ours, o_token, synapse_peer, s_token, s_user
        r_user = o_user
    else:
        resident, r_token, joiner, j_token, j_user = synapse_peer, s_token, ours, o_token, o_user
        r_user = s_user
    room_id = _create(resident, r_token, room_version, j_user)
    _join(joiner, j_token, room_id, resident.server_name)
    wait_until(lambda: ("m.room.member", j_user) in _state_of(resident, r_token, room_id), what="the join on the resident")

    # Messages both ways, visible in each side's /sync.
    _send(resident, r_token, room_id, f"hello from {host}")
    wait_until(lambda: _sync_has_message(joiner, j_token, room_id, f"hello from {host}"), what="resident -> joiner message")
    _send(joiner, j_token, room_id, "hello back")
    wait_until(lambda: _sync_has_message(resident, r_token, room_id, "hello back"), what="joiner -> resident message")

    # Power: the resident's creator gives the joiner 100 so both can change state.
    pl = _content(resident, r_token, room_id, ("m.room.power_levels", ""))
    assert pl is not None
    users = dict(pl.get("users", {}))
    users[j_user] = 100
    _put_state(resident, r_token, room_id, "m.room.power_levels", {**pl, "users": users})
    wait_until(lambda: (_content(joiner, j_token, room_id, ("m.room.power_levels", "")) or {}).get("users", {}).get(j_user) == 100,
               what="power levels on the joiner")
    # Name from the joiner, topic from the resident.
    _put_state(joiner, j_token, room_id, "m.room.name", {"name": f"renamed by {j_user}"})
    _put_state(resident, r_token, room_id, "m.room.topic", {"topic": f"topic by {r_user}"})
    wait_until(lambda: (_content(resident, r_token, room_id, ("m.room.name", "")) or {}).get("name") == f"renamed by {j_user}",
               what="name on the resident")
    wait_until(lambda: (_content(joiner, j_token, room_id, ("m.room.topic", "")) or {}).get("topic") == f"topic by {r_user}",
               what="topic on the joiner")

    # A ban on either side is enforced on the other: each side's mallory joins, then
    # the *other* side bans them; their messages are refused from then on.
    for mal_side, mal_user, mal_token, banner, b_token in (
        (ours, o_mallory, o_mtoken, synapse_peer, s_token),
        (synapse_peer, s_mallory, s_mtoken, ours, o_token),
    ):
        _join(mal_side, mal_token, room_id, resident.server_name if mal_side is not resident else mal_side.server_name)
        wait_until(lambda: ("m.room.member", mal_user) in _state_of(banner, b_token, room_id), what=f"{mal_user} joined")
        if isinstance(banner, Ours):
            banner.request("POST", f"/_matrix/client/v3/rooms/{room_id}/ban", b_token, json={"user_id": mal_user})
        else:
            banner.ban(b_token, room_id, mal_user)
        if isinstance(mal_side, Ours):
            wait_until(
                lambda: (_content(ours, o_token, room_id, ("m.room.member", mal_user)) or {}).get("membership") == "ban",
                what="the ban on the banned user's server",
            )
        else:
            synapse_peer.wait_for_event(
                s_token, room_id,
                lambda e: e.get("type") == "m.room.member" and e.get("state_key") == mal_user
                and e.get("content", {}).get("membership") == "ban",
                timeout_s=60,
            )
        # The banned user's own server refuses their sends.
        if isinstance(mal_side, Ours):
            status, _ = mal_side.status("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/x1", mal_token,
                                        json={"msgtype": "m.text", "body": "let me in"})
            assert status == 403
        else:
            with pytest.raises(Exception):
                mal_side.send_message(mal_token, room_id, "let me in")

    # Identical /state at the end.
    _send(resident, r_token, room_id, "last")
    wait_until(lambda: _sync_has_message(joiner, j_token, room_id, "last"), what="the last message")
    wait_until(lambda: _state_of(resident, r_token, room_id) == _state_of(joiner, j_token, room_id),
               timeout_s=30, what="identical /state")
    assert _messages(joiner, j_token, room_id)[-1] == "last"
