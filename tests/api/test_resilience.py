"""Resilience: a real served instance under mixed load, with abusive clients.

``api.server.serve`` runs on an ephemeral loopback port in a nursery of this test.
For a few seconds:

* ``HTTP11_CLIENTS`` well-behaved HTTP/1.1 keep-alive clients (httpx) work the
  server: ``/sync`` long-polls, message sends (alice and bob, into one room) and
  ``/versions``; every one of their responses must be right;
* ``ABUSIVE_CLIENTS`` raw-socket clients keep connecting and vanishing mid-request,
  mostly with a RST (``SO_LINGER 0``): HTTP/2 cleartext (prior-knowledge preface
  with frames, or ``Upgrade: h2c``; the hammer of ``tests/api/test_server.py``,
  which kills an unguarded hypercorn 0.18), and HTTP/1.1 cut off in the headers, in
  the body, or during a long-poll.

Afterwards the server must still answer correctly (register, send, sync), every
syncer must have seen every message sent during the load exactly once and all in
one common order, and ``serve`` must stop cleanly: a crash of hypercorn or of any
service would have been raised by the nursery running it.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from api.client.versions import SUPPORTED_VERSIONS
from api.server import serve
from api.settings import Settings, parse_settings
from tests.api.test_server import _abusive_h2c_client
from tests.helpers.http import LiveServer

HTTP11_CLIENTS = 30  # a third each: syncers, senders, /versions pollers
ABUSIVE_CLIENTS = 30  # two thirds HTTP/2 cleartext, one third HTTP/1.1 cut short
LOAD_SECONDS = 3.0
#: Bound on the whole test; generous, the machine may be busy.
TEST_TIMEOUT_S = 120
CLIENT_TIMEOUT_S = 30
#: Big enough that no sync of the load is ``limited`` (every message is seen).
SYNC_FILTER = orjson.dumps({"room": {"timeline": {"limit": 1000}}}).decode()

CS = "/_matrix/client/v3"


@pytest.fixture
def resilience_settings(tmp_path: Path) -> Settings:
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 2.0},
            "database": {"path": "data/roomactors.db"},
            "registration": {"enabled": True},
            # One client IP sends everything here: limits would only add 429s.
            "ratelimit": {"enabled": False},
        },
        base_dir=tmp_path,
    )


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Load:
    """What the well-behaved clients did and saw."""

    room_id: str
    users: list[User]
    deadline: float
    sent: set[str] = field(default_factory=set)
    #: Per syncer: message event IDs in the order its syncs returned them.
    seen: list[list[str]] = field(default_factory=list)
    senders_running: int = 0
    sent_by_sender: list[int] = field(default_factory=list)
    versions_answered: int = 0
    abusive_connections: int = 0


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, (response.request.method, response.request.url, response.text)
    return response.json()


async def register(client: httpx.AsyncClient, localpart: str) -> User:
    body = _ok(
        await client.post(
            f"{CS}/register",
            json={"username": localpart, "password": f"{localpart}-pw", "auth": {"type": "m.login.dummy"}},
        )
    )
    return User(body["user_id"], body["access_token"])


async def send(client: httpx.AsyncClient, user: User, room_id: str, txn: str, body: str) -> str:
    response = await client.put(
        f"{CS}/rooms/{room_id}/send/m.room.message/{txn}",
        json={"msgtype": "m.text", "body": body},
        headers=user.headers,
    )
    return _ok(response)["event_id"]


async def sync(
    client: httpx.AsyncClient, user: User, since: str | None, timeout_ms: int
) -> tuple[str, list[dict[str, Any]]]:
    params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
    if since is not None:
        params["since"] = since
    body = _ok(await client.get(f"{CS}/sync", params=params, headers=user.headers))
    events = []
    for room in body.get("rooms", {}).get("join", {}).values():
        assert room["timeline"]["limited"] is False or since is None
        events.extend(room["timeline"]["events"])
    return body["next_batch"], events


async def test_server_survives_load_with_abrupt_http2_and_http11_disconnects(
    resilience_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stop = trio.Event()
    with trio.fail_after(TEST_TIMEOUT_S):
        # A crash of hypercorn or of any service would be raised by this nursery.
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, resilience_settings, shutdown_trigger=stop.wait))
            host, _, port = binds[0].removeprefix("http://").rpartition(":")
            await _load_then_check(LiveServer(host=host, port=int(port)), binds[0], caplog)
            stop.set()
            stopping = trio.current_time()
        # serve() returned on its own: a graceful stop, within its grace period.
        assert trio.current_time() - stopping < resilience_settings.http.graceful_timeout_s + 5


async def _load_then_check(server: LiveServer, base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        alice, bob = await register(client, "alice"), await register(client, "bob")
        created = await client.post(f"{CS}/createRoom", json={"preset": "public_chat"}, headers=alice.headers)
        room_id = _ok(created)["room_id"]
        _ok(await client.post(f"{CS}/rooms/{room_id}/join", json={}, headers=bob.headers))

    with caplog.at_level(logging.ERROR):
        load = Load(room_id=room_id, users=[alice, bob], deadline=trio.current_time() + LOAD_SECONDS)
        syncers = senders = HTTP11_CLIENTS // 3
        # Every syncer starts from a sync taken before the first send, so each must
        # end up seeing every message of the load.
        starts = []
        async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
            for i in range(syncers):
                starts.append((await sync(client, load.users[i % 2], None, 0))[0])
        load.senders_running = senders
        async with trio.open_nursery() as nursery:
            for i in range(syncers):
                nursery.start_soon(_syncer, base_url, load, i, starts[i])
            for i in range(senders):
                nursery.start_soon(_sender, base_url, load, i)
            for _ in range(HTTP11_CLIENTS - syncers - senders):
                nursery.start_soon(_versions_poller, base_url, load)
            rng = random.Random(4321)
            for i in range(ABUSIVE_CLIENTS):
                nursery.start_soon(_abuser, server, load, i, random.Random(rng.random()))

        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]

    # The load really happened, and was answered: every client got work done. (No
    # throughput floor: on a busy machine each send wakes every syncer, and that
    # fan-out alone can hold sends to a few a second.)
    assert len(load.sent_by_sender) == senders and min(load.sent_by_sender) >= 1, load.sent_by_sender
    assert len(load.seen) == syncers, load.seen
    assert load.versions_answered >= HTTP11_CLIENTS - syncers - senders, load.versions_answered
    assert load.abusive_connections >= ABUSIVE_CLIENTS, load.abusive_connections
    # Every syncer saw every message exactly once, all in one common order.
    orders = {tuple(seen) for seen in load.seen}
    assert len(orders) == 1, [len(s) for s in load.seen]
    (order,) = orders
    assert len(order) == len(set(order)) and set(order) == load.sent

    # Still correct afterwards: register, join, send, sync.
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        carol = await register(client, "carol")
        _ok(await client.post(f"{CS}/rooms/{room_id}/join", json={}, headers=carol.headers))
        since, _ = await sync(client, bob, None, 0)
        event_id = await send(client, carol, room_id, "after-the-storm", "still here")
        seen: list[dict[str, Any]] = []
        while not any(e["event_id"] == event_id for e in seen):
            since, events = await sync(client, bob, since, 5_000)
            seen.extend(events)
        (message,) = [e for e in seen if e["event_id"] == event_id]
        assert (message["sender"], message["content"]["body"]) == (carol.user_id, "still here")
        versions = _ok(await client.get("/_matrix/client/versions"))
        assert versions["versions"] == list(SUPPORTED_VERSIONS)


async def _syncer(base_url: str, load: Load, index: int, since: str) -> None:
    user = load.users[index % 2]
    seen: list[str] = []
    load.seen.append(seen)
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        # Keep long-polling through the load, then until every sent message arrived
        # (the senders have all finished once the deadline has passed and
        # `load.sent` stops growing; the nursery's fail_after bounds the wait).
        while trio.current_time() < load.deadline or load.senders_running or not load.sent <= set(seen):
            since, events = await sync(client, user, since, 1_000)
            seen.extend(e["event_id"] for e in events if e["type"] == "m.room.message")


async def _sender(base_url: str, load: Load, index: int) -> None:
    user = load.users[index % 2]
    load.sent_by_sender.append(0)
    mine = len(load.sent_by_sender) - 1
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
            n = 0
            while trio.current_time() < load.deadline:
                event_id = await send(client, user, load.room_id, f"s{index}-{n}", f"sender {index} message {n}")
                assert event_id.startswith("$") and event_id not in load.sent
                load.sent.add(event_id)
                load.sent_by_sender[mine] += 1
                n += 1
    finally:
        load.senders_running -= 1


async def _versions_poller(base_url: str, load: Load) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        while trio.current_time() < load.deadline:
            assert _ok(await client.get("/_matrix/client/versions"))["versions"] == list(SUPPORTED_VERSIONS)
            load.versions_answered += 1


async def _abuser(server: LiveServer, load: Load, index: int, rng: random.Random) -> None:
    while trio.current_time() < load.deadline:
        if index % 3:
            await _abusive_h2c_client(server, random.Random(rng.random()))
        else:
            await _abrupt_http11_client(server, load, rng)
        load.abusive_connections += 1


async def _abrupt_http11_client(server: LiveServer, load: Load, rng: random.Random) -> None:
    """An HTTP/1.1 request cut short, then a RST (or, sometimes, a plain FIN)."""
    token = rng.choice(load.users).token
    auth = f"Authorization: Bearer {token}\r\n"
    kind = rng.choice(["headers", "body", "long-poll", "upgrade-body"])
    if kind == "headers":
        data = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nAccept: applic"
    elif kind == "body":
        data = (
            f"PUT {CS}/rooms/{load.room_id}/send/m.room.message/cut{rng.random()} HTTP/1.1\r\nHost: x\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            '{"msgtype": "m.text", "body": "never fin'
        ).encode()
    elif kind == "long-poll":
        data = f"GET {CS}/sync?timeout=20000 HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    else:
        data = (
            f"POST {CS}/rooms/{load.room_id}/read_markers HTTP/1.1\r\nHost: x\r\n{auth}"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            "Content-Length: 100\r\n\r\n{"
        ).encode()
    sock = trio.socket.socket()
    try:
        with trio.move_on_after(2):
            await sock.connect((server.host, server.port))
            await sock.send(data)
            # Let the server get into the request (a long-poll parks), then vanish.
            await trio.sleep(rng.random() * 0.05)
    except OSError:
        pass
    finally:
        if rng.random() < 0.8:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
