"""matrix-nio with encryption (vodozemac) against a real roomactors homeserver.

What a real E2EE client needs from the server, end to end (the server never sees
plaintext; every check is on what nio could decrypt):

* two users in an encrypted room (``initial_state`` ``m.room.encryption``, Megolm)
  each send a message and each decrypts the other's: ``/keys/upload``,
  ``/keys/query``, ``/keys/claim`` (nio opens an Olm session on a claimed one-time
  key), ``/sendToDevice`` of ``m.room.encrypted`` carrying the ``m.room_key``, its
  delivery through ``/sync`` ``to_device``, and ``device_one_time_keys_count``
  going down by one when a key is claimed;
* a second device of one user logs in: the other user sees that user in
  ``device_lists.changed`` (and in ``/keys/changes`` between its sync tokens),
  ``/keys/query`` returns the new device, a message sent
  afterwards is decrypted by the new device (its one-time key claimed), and the new
  device's own message is decrypted by the other user; when the user leaves the
  only shared room, the other side sees them in ``device_lists.left``;
* plain to-device messages: ``*`` reaches every device of the recipient, a repeated
  transaction ID is delivered once, and messages arrive in send order.

nio never re-shares an existing Megolm session with a device that appeared later
(Element does), so before encrypting to a new device the test drops the sender's
outbound session (``invalidate_outbound_session``), which is how nio users rotate.

The server runs in a background thread (``roomactors_homeserver_thread``); each
test is a sync function running its scenario with ``asyncio.run``; every wait is a
bounded loop of long-poll syncs (``tests/helpers/nio_e2ee.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from nio import RoomMessageText, ToDeviceMessage, ToDeviceResponse, UnknownToDeviceEvent

from roomactors.testing import ThreadedHomeserver
from tests.helpers.nio_e2ee import E2EEClient

#: Upper bound on one scenario.
SCENARIO_TIMEOUT_S = 180


def run(scenario: Callable[[str, Path], Awaitable[None]], homeserver: ThreadedHomeserver, tmp_path: Path) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            await scenario(homeserver.base_url, tmp_path)

    asyncio.run(bounded())


def alice_and_bob(base_url: str, tmp_path: Path) -> tuple[E2EEClient, E2EEClient]:
    return E2EEClient(base_url, "alice", tmp_path / "alice"), E2EEClient(base_url, "bob", tmp_path / "bob")


async def encrypted_pair(alice: E2EEClient, bob: E2EEClient) -> str:
    """alice and bob registered (keys uploaded), in an encrypted room alice made."""
    await alice.register("alice")
    await bob.register("bob")
    room_id = await alice.create_encrypted_room(invite=[bob.user_id])
    await bob.join(room_id)
    await alice.sync_until("bob's join", lambda: alice.is_joined(room_id, bob.user_id))
    return room_id


async def exchange(alice: E2EEClient, bob: E2EEClient, room_id: str, tag: str) -> tuple[str, str]:
    """Each sends one encrypted message; each decrypts the other's. Returns the event IDs."""
    a_event = await alice.send_encrypted(room_id, f"{tag}: hello bob")
    await bob.sync_until(f"alice's {tag} message decrypted", lambda: bob.decrypted(room_id, a_event))
    b_event = await bob.send_encrypted(room_id, f"{tag}: hello alice")
    await alice.sync_until(f"bob's {tag} message decrypted", lambda: alice.decrypted(room_id, b_event))
    assert bob.decrypted(room_id, a_event).body == f"{tag}: hello bob"
    assert bob.decrypted(room_id, a_event).sender == alice.user_id
    assert alice.decrypted(room_id, b_event).body == f"{tag}: hello alice"
    assert alice.decrypted(room_id, b_event).sender == bob.user_id
    return a_event, b_event


def test_two_users_each_decrypt_the_others_messages(roomactors_homeserver_thread: ThreadedHomeserver,
                                                     tmp_path: Path) -> None:
    run(_exchange_scenario, roomactors_homeserver_thread, tmp_path)


async def _exchange_scenario(base_url: str, tmp_path: Path) -> None:
    alice, bob = alice_and_bob(base_url, tmp_path)
    async with alice, bob:
        room_id = await encrypted_pair(alice, bob)
        # /keys/upload took nio's one-time keys; /sync reports them
        # (device_one_time_keys_count, spec "Extensions to /sync").
        assert bob.uploaded_otk_count, "bob's /keys/upload reported no signed_curve25519 keys"
        assert bob.otk_counts[-1] == bob.uploaded_otk_count, (bob.otk_counts, bob.uploaded_otk_count)
        bob_syncs_before = len(bob.otk_counts)

        a_event, b_event = await exchange(alice, bob, room_id, "first")

        # The room key reached bob over Olm: an m.room.encrypted to-device event nio
        # decrypted into m.room_key (nio makes RoomKeyEvent only from Olm payloads).
        assert bob.room_keys_from(alice.user_id, room_id), bob.to_device
        assert alice.room_keys_from(bob.user_id, room_id), alice.to_device
        # alice claimed one of bob's one-time keys to open that Olm session: bob's
        # count went down by one in a sync after the claim (then nio tops it up).
        assert bob.uploaded_otk_count - 1 in bob.otk_counts[bob_syncs_before:], bob.otk_counts

        # The event as stored on the server is ciphertext, not the message.
        raw = await bob.raw_event(room_id, a_event)
        assert raw["type"] == "m.room.encrypted", raw
        assert raw["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
        assert "body" not in raw["content"]

        # A second round reuses the Megolm sessions: no new room keys needed.
        keys_before = len(bob.room_keys_from(alice.user_id, room_id))
        await exchange(alice, bob, room_id, "second")
        assert len(bob.room_keys_from(alice.user_id, room_id)) == keys_before

        def from_(client: E2EEClient, sender: E2EEClient) -> list[str]:
            return [e.body for e in client.timelines[room_id]
                    if isinstance(e, RoomMessageText) and e.decrypted and e.sender == sender.user_id]

        assert from_(bob, alice) == ["first: hello bob", "second: hello bob"]
        assert from_(alice, bob) == ["first: hello alice", "second: hello alice"]


def test_a_new_device_is_seen_and_encrypted_to(roomactors_homeserver_thread: ThreadedHomeserver,
                                               tmp_path: Path) -> None:
    run(_new_device_scenario, roomactors_homeserver_thread, tmp_path)


async def _new_device_scenario(base_url: str, tmp_path: Path) -> None:
    alice, bob = alice_and_bob(base_url, tmp_path)
    async with alice, bob:
        room_id = await encrypted_pair(alice, bob)
        await exchange(alice, bob, room_id, "before")
        assert alice.known_devices(bob.user_id) == {bob.device_id}

        # bob logs in on a second device, which publishes its keys.
        marker = len(alice.device_lists)
        bob2 = E2EEClient(base_url, bob.user_id, tmp_path / "bob2", label="bob's second device")
        async with bob2:
            await _second_device(alice, bob, bob2, room_id, marker)


async def _second_device(alice: E2EEClient, bob: E2EEClient, bob2: E2EEClient, room_id: str, marker: int) -> None:
    token_before = alice.nio.next_batch
    await bob2.login()
    assert bob2.device_id != bob.device_id
    assert bob2.nio.rooms[room_id].encrypted

    # alice's sync names bob in device_lists.changed (spec: "a user ... has added
    # a new device"); nio then /keys/query's bob and learns the new device.
    await alice.sync_until("bob in device_lists.changed", lambda: alice.saw_changed(bob.user_id, marker))
    await alice.sync_until("bob's new device in /keys/query",
                           lambda: bob2.device_id in alice.known_devices(bob.user_id))
    assert alice.known_devices(bob.user_id) == {bob.device_id, bob2.device_id}
    assert not alice.saw_changed(alice.user_id, marker)
    # /keys/changes between alice's sync tokens names bob too (spec: "Tracking the
    # device list for a user", step 4, for a client that was offline).
    changes = await alice.keys_changes(token_before, alice.nio.next_batch)
    assert bob.user_id in changes["changed"], changes

    # A message alice sends now is decryptable by the new device (nio claims its
    # one-time key and shares a fresh Megolm session with both of bob's devices).
    alice.nio.invalidate_outbound_session(room_id)
    after = await alice.send_encrypted(room_id, "after: hello both bobs")
    await bob2.sync_until("alice's message decrypted on the new device", lambda: bob2.decrypted(room_id, after))
    await bob.sync_until("alice's message decrypted on the old device", lambda: bob.decrypted(room_id, after))
    assert bob2.decrypted(room_id, after).body == "after: hello both bobs"
    assert bob2.room_keys_from(alice.user_id, room_id)

    # ... and the new device's message is decryptable by alice.
    await bob2.refresh_members(room_id)
    from_new = await bob2.send_encrypted(room_id, "from the new device")
    await alice.sync_until("the new device's message decrypted", lambda: alice.decrypted(room_id, from_new))
    assert alice.decrypted(room_id, from_new).sender == bob.user_id

    # bob leaves the only room they share: alice sees him in device_lists.left.
    marker = len(alice.device_lists)
    left = await bob.nio.room_leave(room_id)
    assert type(left).__name__ == "RoomLeaveResponse", left
    await alice.sync_until("bob in device_lists.left", lambda: alice.saw_left(bob.user_id, marker))


def test_to_device_wildcard_idempotent_and_in_order(roomactors_homeserver_thread: ThreadedHomeserver,
                                                    tmp_path: Path) -> None:
    run(_to_device_scenario, roomactors_homeserver_thread, tmp_path)


async def _to_device_scenario(base_url: str, tmp_path: Path) -> None:
    alice, bob = alice_and_bob(base_url, tmp_path)
    bob2 = E2EEClient(base_url, "@bob:localhost", tmp_path / "bob2", label="bob's second device")
    async with alice, bob, bob2:
        await alice.register("alice")
        await bob.register("bob")
        bob2.nio.user = bob.user_id
        await bob2.login()

        def pings(client: E2EEClient) -> list[int]:
            return [e.source["content"]["n"] for e in client.to_device
                    if isinstance(e, UnknownToDeviceEvent) and e.type == "org.example.ping"]

        async def send(n: int, device: str, txn: str) -> None:
            message = ToDeviceMessage("org.example.ping", bob.user_id, device, {"n": n})
            sent = await alice.nio.to_device(message, tx_id=txn)
            assert isinstance(sent, ToDeviceResponse), sent

        # `*`: every device of bob (spec: "/sendToDevice", device ID "*").
        await send(0, "*", "t0")
        # The same transaction ID again: the retry is not a second message.
        await send(0, "*", "t0")
        # Then a run to one device, which arrives in order.
        for n in range(1, 6):
            await send(n, bob.device_id, f"t{n}")
        await bob.sync_until("six pings", lambda: len(pings(bob)) >= 6)
        await bob2.sync_until("the wildcard ping", lambda: len(pings(bob2)) >= 1)
        # One more sync each: nothing further (no duplicate of the retried txn).
        await bob.sync(timeout_ms=200)
        await bob2.sync(timeout_ms=200)
        assert pings(bob) == [0, 1, 2, 3, 4, 5]
        assert pings(bob2) == [0]
        assert all(e.sender == alice.user_id for e in bob.to_device if isinstance(e, UnknownToDeviceEvent))
