"""/sync long-polls against a REAL served instance (hypercorn on a loopback socket,
httpx clients): a waiting poll answers within 100 ms of a send completing, an idle
poll costs no CPU and no database reads, and every kind of change wakes it.

The ``served`` fixture runs what ``api.server.serve`` runs (``open_homeserver`` plus
hypercorn with the guards) but keeps the ``Deps`` so the test can read the
database's and the notifier's statistics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio

from api import hypercorn_guard
from api.app import create_app
from api.deps import Deps
from api.server import hypercorn_config
from api.services import open_homeserver
from tests.helpers.client import PASSWORD, make_settings

CS = "/_matrix/client/v3"


@dataclass
class Served:
    deps: Deps
    base_url: str


@dataclass
class User:
    client: httpx.AsyncClient
    user_id: str
    token: str

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        response = await self.client.request(
            method, CS + path, json=body, params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    settings = make_settings(tmp_path)
    settings.database.path.parent.mkdir(parents=True, exist_ok=True)
    hypercorn_guard.install()
    config = hypercorn_config(settings.http)
    async with open_homeserver(settings) as deps, trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(
            partial(hypercorn.trio.serve, create_app(deps), config, shutdown_trigger=stop.wait, mode="asgi")
        )
        yield Served(deps, binds[0])
        stop.set()


async def _register(served: Served, localpart: str) -> User:
    # One client (one connection pool) per user: a long poll of one never delays another's requests.
    client = httpx.AsyncClient(base_url=served.base_url, timeout=30)
    body = {"username": localpart, "password": PASSWORD}
    first = await client.post(CS + "/register", json=body)
    assert first.status_code == 401
    second = await client.post(CS + "/register", json={**body, "auth": {"type": "m.login.dummy",
                                                                         "session": first.json()["session"]}})
    assert second.status_code == 200, second.text
    return User(client, second.json()["user_id"], second.json()["access_token"])


@pytest.fixture
async def pair(served: Served) -> AsyncIterator[tuple[User, User, str]]:
    alice = await _register(served, "alice")
    bob = await _register(served, "bob")
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.call("POST", f"/join/{room}", {})
    try:
        yield alice, bob, room
    finally:
        await alice.client.aclose()
        await bob.client.aclose()


async def _poll_started(served: Served, listeners: int = 1) -> None:
    """Wait until the server holds ``listeners`` long-poll listeners (real time)."""
    with trio.fail_after(5):
        while served.deps.notifier.statistics().listeners < listeners:
            await trio.sleep(0.01)


async def test_long_poll_returns_right_after_a_send(served: Served, pair: tuple[User, User, str]) -> None:
    alice, bob, room = pair
    since = (await bob.call("GET", "/sync"))["next_batch"]
    done: dict[str, Any] = {}

    async def long_poll() -> None:
        done["body"] = await bob.call("GET", "/sync", since=since, timeout=10_000)
        done["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(long_poll)
        await trio.sleep(0.2)
        assert "at" not in done  # still waiting: nothing happened yet
        event_id = (await alice.call("PUT", f"/rooms/{room}/send/m.room.message/lp1",
                                     {"msgtype": "m.text", "body": "wake up"}))["event_id"]
        sent_at = trio.current_time()
    events = done["body"]["rooms"]["join"][room]["timeline"]["events"]
    assert [e["event_id"] for e in events] == [event_id]
    assert done["at"] - sent_at < 0.1, f"sync answered {1000 * (done['at'] - sent_at):.0f} ms after the send"
    assert done["at"] - started < 5
    assert served.deps.notifier.statistics().listeners == 0


async def test_idle_long_poll_costs_no_cpu_and_no_reads(served: Served, pair: tuple[User, User, str]) -> None:
    alice, bob, room = pair
    since = (await bob.call("GET", "/sync"))["next_batch"]
    result: dict[str, Any] = {}

    async def long_poll() -> None:
        result["body"] = await bob.call("GET", "/sync", since=since, timeout=10_000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await _poll_started(served)
        await trio.sleep(0.1)  # let the request finish setting up
        reads_before = served.deps.db.statistics().reads
        cpu_before = time.process_time()
        await trio.sleep(1.0)
        cpu = time.process_time() - cpu_before
        reads = served.deps.db.statistics().reads - reads_before
        assert "body" not in result  # still waiting
        await alice.call("PUT", f"/rooms/{room}/send/m.room.message/idle", {"msgtype": "m.text", "body": "end"})
    assert cpu < 0.1, f"an idle long poll burnt {cpu:.3f} s of CPU in 1 s"
    assert reads <= 2, f"an idle long poll made {reads} database reads in 1 s"
    assert room in result["body"]["rooms"]["join"]


async def test_long_poll_times_out_empty(served: Served, pair: tuple[User, User, str]) -> None:
    _, bob, _ = pair
    first = await bob.call("GET", "/sync")
    start = trio.current_time()
    body = await bob.call("GET", "/sync", since=first["next_batch"], timeout=500)
    elapsed = trio.current_time() - start
    assert 0.45 <= elapsed < 3
    assert body["rooms"] == {} and isinstance(body["next_batch"], str)
    assert "presence" not in body and "account_data" not in body


async def _woken_by(served: Served, bob: User, since: str, act: Any) -> dict[str, Any]:
    """Start bob's long poll from ``since``, wait until it sleeps, ``act()``, and
    return the poll's answer (which must come quickly)."""
    result: dict[str, Any] = {}

    async def long_poll() -> None:
        result["body"] = await bob.call("GET", "/sync", since=since, timeout=10_000)
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await _poll_started(served)
        await trio.sleep(0.05)
        assert "body" not in result
        await act()
        acted = trio.current_time()
    assert result["at"] - acted < 1
    return result["body"]


async def test_every_kind_of_change_wakes_a_long_poll(served: Served, pair: tuple[User, User, str]) -> None:
    alice, bob, room = pair
    since = (await bob.call("GET", "/sync"))["next_batch"]

    # Typing.
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 30_000}))
    ephemeral = body["rooms"]["join"][room]["ephemeral"]["events"]
    assert {"type": "m.typing", "content": {"user_ids": [alice.user_id]}} in ephemeral
    since = body["next_batch"]

    # A read receipt.
    event_id = (await alice.call("PUT", f"/rooms/{room}/send/m.room.message/r", {"body": "x", "msgtype": "m.text"}))[
        "event_id"]
    since = (await bob.call("GET", "/sync", since=since))["next_batch"]
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "POST", f"/rooms/{room}/receipt/m.read/{event_id}", {}))
    assert any(e["type"] == "m.receipt" for e in body["rooms"]["join"][room]["ephemeral"]["events"])
    since = body["next_batch"]

    # An invite to a room bob is not in yet (his user key).
    other = (await alice.call("POST", "/createRoom", {}))["room_id"]
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "POST", f"/rooms/{other}/invite", {"user_id": bob.user_id}))
    assert other in body["rooms"]["invite"]
    since = body["next_batch"]

    # Then, joined during no poll, the new room's messages wake him too.
    await bob.call("POST", f"/join/{other}", {})
    since = (await bob.call("GET", "/sync", since=since))["next_batch"]
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "PUT", f"/rooms/{other}/send/m.room.message/n", {"body": "in the new room", "msgtype": "m.text"}))
    assert [e["content"]["body"] for e in body["rooms"]["join"][other]["timeline"]["events"]] == ["in the new room"]
    since = body["next_batch"]

    # Presence of someone bob shares a room with.
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "PUT", f"/presence/{alice.user_id}/status", {"presence": "unavailable"}))
    assert any(e["sender"] == alice.user_id for e in body["presence"]["events"])
    since = body["next_batch"]

    # Being kicked (a leave section).
    body = await _woken_by(served, bob, since, lambda: alice.call(
        "POST", f"/rooms/{other}/kick", {"user_id": bob.user_id}))
    assert other in body["rooms"]["leave"]


async def test_a_client_hanging_up_releases_its_listener(served: Served, pair: tuple[User, User, str]) -> None:
    _, bob, _ = pair
    since = (await bob.call("GET", "/sync"))["next_batch"]
    with trio.move_on_after(0.5):
        await bob.call("GET", "/sync", since=since, timeout=10_000)
    await bob.client.aclose()  # the connection goes away
    with trio.fail_after(5):
        while served.deps.notifier.statistics().listeners:
            await trio.sleep(0.01)
    assert served.deps.notifier.statistics().keys == 0
