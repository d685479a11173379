"""End-to-end encryption across federation with a real Synapse, with real clients.

Our server runs for real (``roomactors.testing.homeserver_in_thread``: hypercorn,
the federation TLS listener, SQLite) as ``localhost:<port>``; Synapse (the pinned
release, ``synapse_peer``) runs as a subprocess; they federate over TLS on
loopback exactly as in ``test_synapse_federation.py``. Each side's user is a
matrix-nio client with encryption (vodozemac), talking to its own homeserver's
client API (``tests/helpers/nio_e2ee.py``); nothing is shortcut through either
server's internals.

* An encrypted room on ours; a Synapse user is invited and joins; each side sends
  an encrypted message and each decrypts the other's. Needs, in both directions:
  federated ``/user/keys/query`` (each client learns the other's device keys),
  ``/user/keys/claim`` (each opens an Olm session on the other's one-time key) and
  ``m.direct_to_device`` EDUs (the Megolm room keys, as ``m.room.encrypted``).
* A second device logs in on Synapse: our user sees the Synapse user in
  ``device_lists.changed`` (Synapse's ``m.device_list_update`` EDU, handled by
  ours), ``/keys/query`` through ours returns the new device, and a message sent
  afterwards is decrypted by it.
  When the Synapse user then leaves, ours names them in ``device_lists.left``, and
  a third device logged in after that is in ours' ``/keys/query`` (no stale cache).
* A second device logs in on ours: the Synapse user sees ours in
  ``device_lists.changed`` (our ``m.device_list_update`` EDU, handled by Synapse),
  and the new device decrypts the Synapse user's next message.
* Plain to-device messages each way (one device and ``*``, a retried transaction
  ID) arrive exactly once and in order.

nio never re-shares an existing Megolm session with a device that appeared later,
so the sender drops its outbound session first (``invalidate_outbound_session``).
Every wait is a bounded loop of long-poll syncs; none sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nio import ToDeviceMessage, ToDeviceResponse, UnknownToDeviceEvent

from roomactors.testing import ThreadedHomeserver
from tests.helpers.nio_e2ee import E2EEClient

#: Upper bound on one scenario; and on each wait (federation between two processes).
SCENARIO_TIMEOUT_S = 300
WAIT_S = 60.0


@pytest.fixture(scope="module")
def ours(ours_federating: ThreadedHomeserver) -> ThreadedHomeserver:
    """Our server federating with Synapse (``ours_federating``, conftest.py), open registration."""
    return ours_federating


def run(pair: Pair, scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT_S):
                await pair.start()
                await scenario()
        finally:
            await pair.close()

    asyncio.run(bounded())


class Pair:
    """``o`` (a user of ours) and ``s`` (a user of Synapse), each on one nio device,
    in an encrypted room on ours that ``s`` joined through federation."""

    def __init__(self, ours: ThreadedHomeserver, synapse: Any, tmp_path: Path, tag: str) -> None:
        self.ours, self.synapse, self.tmp_path, self.tag = ours, synapse, tmp_path, tag
        self.o = E2EEClient(ours.base_url, "", tmp_path / "o", label=f"ours:o{tag}", wait_s=WAIT_S)
        s_user, _ = synapse.register_user(f"s{tag}")
        self.s = E2EEClient(synapse.client_url, s_user, tmp_path / "s", label=f"synapse:s{tag}", wait_s=WAIT_S)
        self.extra: list[E2EEClient] = []
        self.room_id = ""

    async def start(self) -> None:
        await self.o.register(f"o{self.tag}")
        await self.s.login()
        self.room_id = await self.o.create_encrypted_room(invite=[self.s.user_id])
        await self.s.join(self.room_id)
        await self.o.sync_until("the Synapse user's join", lambda: self.o.is_joined(self.room_id, self.s.user_id))
        await self.s.sync_until("our user in the room", lambda: self.s.is_joined(self.room_id, self.o.user_id))

    async def new_device(self, base_url: str, user_id: str, label: str) -> E2EEClient:
        client = E2EEClient(base_url, user_id, self.tmp_path / label, label=label, wait_s=WAIT_S)
        self.extra.append(client)
        await client.login()
        return client

    async def close(self) -> None:
        for client in (self.o, self.s, *self.extra):
            await client.close()


async def exchange(sender: E2EEClient, receivers: list[E2EEClient], room_id: str, body: str) -> str:
    event_id = await sender.send_encrypted(room_id, body)
    for receiver in receivers:
        await receiver.sync_until(f"{sender.label}'s {body!r} decrypted", lambda r=receiver: r.decrypted(room_id, event_id))
        message = receiver.decrypted(room_id, event_id)
        assert (message.body, message.sender) == (body, sender.user_id)
    return event_id


def test_ours_and_synapse_users_decrypt_each_other(ours: ThreadedHomeserver, synapse_peer: Any,
                                                   tmp_path: Path) -> None:
    pair = Pair(ours, synapse_peer, tmp_path, "x")

    async def scenario() -> None:
        o, s, room_id = pair.o, pair.s, pair.room_id
        # ours -> Synapse: our user's nio queries and claims the Synapse user's keys
        # through ours (federated /user/keys/query and /user/keys/claim) and sends
        # the room key to Synapse (m.direct_to_device).
        await exchange(o, [s], room_id, "hello from ours")
        assert s.room_keys_from(o.user_id, room_id), s.to_device
        assert o.known_devices(s.user_id) == {s.device_id}
        # Synapse -> ours: the same through Synapse, served by ours.
        s_event = await exchange(s, [o], room_id, "hello from synapse")
        assert o.room_keys_from(s.user_id, room_id), o.to_device
        assert s.known_devices(o.user_id) == {o.device_id}
        assert (await o.raw_event(room_id, s_event))["type"] == "m.room.encrypted"
        # A second round on the established sessions.
        await exchange(o, [s], room_id, "again from ours")
        await exchange(s, [o], room_id, "again from synapse")

    run(pair, scenario)


def test_new_synapse_device_is_seen_by_ours_and_encrypted_to(ours: ThreadedHomeserver, synapse_peer: Any,
                                                             tmp_path: Path) -> None:
    pair = Pair(ours, synapse_peer, tmp_path, "sd")

    async def scenario() -> None:
        o, s, room_id = pair.o, pair.s, pair.room_id
        await exchange(o, [s], room_id, "before the new device")
        marker = len(o.device_lists)
        s2 = await pair.new_device(synapse_peer.client_url, s.user_id, "synapse:second device")
        # Synapse's m.device_list_update reaches ours; our /sync names the user.
        await o.sync_until("the Synapse user in device_lists.changed", lambda: o.saw_changed(s.user_id, marker))
        await o.sync_until("the new Synapse device in /keys/query",
                           lambda: s2.device_id in o.known_devices(s.user_id))
        o.nio.invalidate_outbound_session(room_id)
        await exchange(o, [s2, s], room_id, "after the new device")
        # and the new device's message back to ours.
        await s2.refresh_members(room_id)
        await exchange(s2, [o], room_id, "from the new Synapse device")
        # The Synapse user leaves the only room they share: ours names them in
        # device_lists.left.
        marker = len(o.device_lists)
        left = await s.nio.room_leave(room_id)
        assert type(left).__name__ == "RoomLeaveResponse", left
        await o.sync_until("the Synapse user in device_lists.left", lambda: o.saw_left(s.user_id, marker))
        # With no room shared, Synapse sends ours no more device-list updates for
        # that user, so ours must not answer from a stale cache: a third device
        # logged in now is in ours' /keys/query answer.
        s3 = await pair.new_device(synapse_peer.client_url, s.user_id, "synapse:third device")
        answer = await o.query_keys(s.user_id)
        assert answer.get("failures") == {}, answer
        assert set(answer["device_keys"].get(s.user_id, {})) >= {s.device_id, s2.device_id, s3.device_id}, answer

    run(pair, scenario)


def test_new_ours_device_is_seen_by_synapse_and_encrypted_to(ours: ThreadedHomeserver, synapse_peer: Any,
                                                             tmp_path: Path) -> None:
    pair = Pair(ours, synapse_peer, tmp_path, "od")

    async def scenario() -> None:
        o, s, room_id = pair.o, pair.s, pair.room_id
        await exchange(s, [o], room_id, "before the new device")
        marker = len(s.device_lists)
        o2 = await pair.new_device(ours.base_url, o.user_id, "ours:second device")
        # Our m.device_list_update reaches Synapse; its /sync names our user.
        await s.sync_until("our user in device_lists.changed", lambda: s.saw_changed(o.user_id, marker))
        await s.sync_until("our new device in /keys/query", lambda: o2.device_id in s.known_devices(o.user_id))
        s.nio.invalidate_outbound_session(room_id)
        await exchange(s, [o2, o], room_id, "after the new device")
        await o2.refresh_members(room_id)
        await exchange(o2, [s], room_id, "from the new ours device")

    run(pair, scenario)


def test_to_device_both_ways_exactly_once_in_order(ours: ThreadedHomeserver, synapse_peer: Any,
                                                   tmp_path: Path) -> None:
    """Plain to-device messages over federation (``m.direct_to_device``): to one
    device and to ``*``, with a retried transaction ID, each way; each arrives
    once, in send order."""
    pair = Pair(ours, synapse_peer, tmp_path, "td")

    def pings(client: E2EEClient, sender: E2EEClient) -> list[int]:
        return [e.source["content"]["n"] for e in client.to_device
                if isinstance(e, UnknownToDeviceEvent) and e.type == "org.example.ping" and e.sender == sender.user_id]

    async def send(sender: E2EEClient, recipient: E2EEClient, n: int, device: str, txn: str) -> None:
        sent = await sender.nio.to_device(ToDeviceMessage("org.example.ping", recipient.user_id, device, {"n": n}),
                                          tx_id=txn)
        assert isinstance(sent, ToDeviceResponse), sent

    async def scenario() -> None:
        o, s = pair.o, pair.s
        for sender, recipient in ((o, s), (s, o)):
            await send(sender, recipient, 0, "*", "p0")
            await send(sender, recipient, 0, "*", "p0")  # a retry: the same transaction
            for n in range(1, 5):
                await send(sender, recipient, n, recipient.device_id, f"p{n}")
            await recipient.sync_until(f"five pings from {sender.label}", lambda: len(pings(recipient, sender)) >= 5)
            await recipient.sync(timeout_ms=500)
            assert pings(recipient, sender) == [0, 1, 2, 3, 4]

    run(pair, scenario)
