"""matrix-nio with encryption (vodozemac) as a test client, for the E2EE client tests.

Used by ``tests/clients/test_nio_e2ee.py`` (two users on our server) and
``tests/interop/test_synapse_e2ee.py`` (one user on ours, one on Synapse).

:class:`E2EEClient` wraps one nio ``AsyncClient`` (one device) with
``AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)`` and its own
store directory (nio keeps the Olm account, sessions and device list in SQLite
there). ``sync()`` runs one ``/sync`` and then the housekeeping nio's own
``sync_forever`` would do: ``/keys/upload`` while the account has unpublished keys,
``/keys/query`` for users whose device list changed, ``/keys/claim`` for wedged
sessions, and any queued to-device messages. Everything seen is recorded across
syncs: room timelines (nio decrypts ``m.room.encrypted`` events in place into
``RoomMessageText``; events that arrive before their room key stay ``MegolmEvent``
and are retried after every sync, as a real client retries when a key turns up
later), to-device events (decrypted Olm payloads become ``RoomKeyEvent``),
``device_lists.changed`` / ``left`` and ``device_one_time_keys_count``.

Every wait is ``sync_until(what, condition)``: long-poll syncs until the condition
holds, within ``wait_s``; never a bare sleep. Failed requests raise
``AssertionError`` carrying nio's error response (errcode and message), so a
missing endpoint reads as ``M_UNRECOGNIZED`` in the test output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinedMembersResponse,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomKeyEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    ToDeviceResponse,
)
from nio.exceptions import EncryptionError

__all__ = ["E2EEClient", "ENCRYPTION_STATE", "LONG_POLL_MS"]

#: Server-side long poll of each sync while waiting (ms); returns early on news.
LONG_POLL_MS = 2_000

#: ``initial_state`` entry of an encrypted room (spec: "Messaging Algorithms",
#: ``m.room.encryption`` with ``m.megolm.v1.aes-sha2``).
ENCRYPTION_STATE: dict[str, Any] = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


def _ok(response: Any, expected: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(response, expected):
        status = getattr(response, "status_code", None)
        message = getattr(response, "message", None)
        raise AssertionError(f"{what} failed: {type(response).__name__} {status} {message!r}")
    return response


class E2EEClient:
    """One nio device with encryption, plus everything its syncs have shown."""

    def __init__(self, base_url: str, user: str, store_dir: Path, *, label: str | None = None,
                 wait_s: float = 30.0) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, max_timeouts=2)
        self.nio = AsyncClient(base_url, user, store_path=str(store_dir), config=config)
        self.label = label or user
        self.wait_s = wait_s
        self.timelines: dict[str, list[Any]] = {}
        self.to_device: list[Any] = []
        #: One entry per sync response: (device_lists.changed, device_lists.left).
        self.device_lists: list[tuple[set[str], set[str]]] = []
        #: ``device_one_time_keys_count.signed_curve25519`` of every sync response.
        self.otk_counts: list[int | None] = []
        self.uploaded_otk_count: int | None = None
        self.syncs = 0

    # ------------------------------------------------------------------ identity

    @property
    def user_id(self) -> str:
        return self.nio.user_id

    @property
    def device_id(self) -> str:
        return self.nio.device_id

    async def register(self, localpart: str, password: str = "password") -> None:
        """``m.login.dummy`` registration (open registration), keys, initial sync."""
        _ok(await self.nio.register(localpart, password, device_name=self.label), RegisterResponse, "register")
        await self._start()

    async def login(self, password: str = "password") -> None:
        """Password login as ``user`` (a new device), keys, initial sync."""
        _ok(await self.nio.login(password, device_name=self.label), LoginResponse, f"login {self.label}")
        await self._start()

    async def _start(self) -> None:
        assert self.nio.olm is not None, "nio has no Olm machine: is the e2e extra (vodozemac) installed?"
        await self.housekeeping()  # publish device keys and one-time keys first
        await self.sync(timeout_ms=0)

    async def close(self) -> None:
        await self.nio.close()

    async def __aenter__(self) -> E2EEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sync

    async def housekeeping(self) -> None:
        """What ``sync_forever`` does after each sync: keys and queued to-device messages."""
        if self.nio.should_upload_keys:
            uploaded = _ok(await self.nio.keys_upload(), KeysUploadResponse, f"{self.label}: /keys/upload")
            self.uploaded_otk_count = uploaded.signed_curve25519_count
        if self.nio.should_query_keys:
            _ok(await self.nio.keys_query(), KeysQueryResponse, f"{self.label}: /keys/query")
        if self.nio.should_claim_keys:
            _ok(await self.nio.keys_claim(self.nio.get_users_for_key_claiming()), KeysClaimResponse,
                f"{self.label}: /keys/claim")
        for sent in await self.nio.send_to_device_messages():
            _ok(sent, ToDeviceResponse, f"{self.label}: /sendToDevice")

    async def sync(self, *, timeout_ms: int = LONG_POLL_MS) -> SyncResponse:
        response = _ok(await self.nio.sync(timeout=timeout_ms), SyncResponse, f"{self.label}: /sync")
        self.syncs += 1
        for room_id, room in response.rooms.join.items():
            self.timelines.setdefault(room_id, []).extend(room.timeline.events)
        self.to_device.extend(response.to_device_events)
        self.device_lists.append((set(response.device_list.changed), set(response.device_list.left)))
        self.otk_counts.append(response.device_key_count.signed_curve25519)
        await self.housekeeping()
        self._retry_decryption()
        return response

    def _retry_decryption(self) -> None:
        store = self.nio.olm.inbound_group_store
        for room_id, events in self.timelines.items():
            for i, event in enumerate(events):
                if isinstance(event, MegolmEvent) and store.get(room_id, event.sender_key, event.session_id):
                    try:
                        events[i] = self.nio.decrypt_event(event)
                    except EncryptionError:
                        pass

    async def sync_until(self, what: str, condition: Callable[[], Any], *, wait_s: float | None = None) -> None:
        """Long-poll /sync until ``condition()`` holds (checked before the first sync too)."""
        limit = wait_s or self.wait_s
        try:
            async with asyncio.timeout(limit):
                while not condition():
                    await self.sync()
        except TimeoutError:
            raise AssertionError(f"{self.label} never saw {what} within {limit} s") from None

    # ------------------------------------------------------------------ rooms

    async def create_encrypted_room(self, *, invite: list[str] = (), **kwargs: Any) -> str:
        created = _ok(await self.nio.room_create(name="secrets", invite=list(invite),
                                                 initial_state=[ENCRYPTION_STATE], **kwargs),
                      RoomCreateResponse, f"{self.label}: createRoom")
        room_id = created.room_id
        await self.sync_until("its new room, encrypted",
                              lambda: room_id in self.nio.rooms and self.nio.rooms[room_id].encrypted)
        return room_id

    async def join(self, room_id: str) -> None:
        await self.sync_until(f"the invite to {room_id}", lambda: room_id in self.nio.invited_rooms)
        _ok(await self.nio.join(room_id), JoinResponse, f"{self.label}: join")
        await self.sync_until(f"{room_id} under join, encrypted",
                              lambda: room_id in self.nio.rooms and self.nio.rooms[room_id].encrypted
                              and room_id not in self.nio.invited_rooms)

    def is_joined(self, room_id: str, user_id: str) -> bool:
        room = self.nio.rooms.get(room_id)
        return room is not None and user_id in room.users and user_id not in room.invited_users

    async def refresh_members(self, room_id: str) -> None:
        """``/joined_members`` (nio then knows whom to share the room key with)."""
        _ok(await self.nio.joined_members(room_id), JoinedMembersResponse, f"{self.label}: joined_members")

    async def send_encrypted(self, room_id: str, body: str) -> str:
        """``room_send`` in an encrypted room: nio queries and claims keys as needed,
        shares the Megolm session over Olm to-device messages, then sends
        ``m.room.encrypted``. Returns the event ID."""
        assert self.nio.rooms[room_id].encrypted, f"{room_id} is not encrypted for {self.label}"
        sent = await self.nio.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                        ignore_unverified_devices=True)
        return _ok(sent, RoomSendResponse, f"{self.label}: encrypted room_send").event_id

    # ------------------------------------------------------------------ what was seen

    def event(self, room_id: str, event_id: str) -> Any:
        for event in self.timelines.get(room_id, []):
            if event.event_id == event_id:
                return event
        return None

    def decrypted(self, room_id: str, event_id: str) -> RoomMessageText | None:
        """The event as a message nio decrypted (None while it is still ``MegolmEvent``)."""
        event = self.event(room_id, event_id)
        return event if isinstance(event, RoomMessageText) and event.decrypted else None

    async def query_keys(self, *user_ids: str) -> dict[str, Any]:
        """A raw ``POST /keys/query`` for all devices of ``user_ids`` (past nio's tracking)."""
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
            r = await http.post(f"{self.nio.homeserver}/_matrix/client/v3/keys/query",
                                json={"device_keys": {u: [] for u in user_ids}},
                                headers={"Authorization": f"Bearer {self.nio.access_token}"})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    async def keys_changes(self, from_token: str, to_token: str) -> dict[str, Any]:
        """``GET /keys/changes?from=&to=`` (nio has no call for it)."""
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            r = await http.get(f"{self.nio.homeserver}/_matrix/client/v3/keys/changes",
                               params={"from": from_token, "to": to_token},
                               headers={"Authorization": f"Bearer {self.nio.access_token}"})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    async def raw_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        """The event as the server stores it (``GET /rooms/{roomId}/event/{eventId}``),
        fetched past nio, which would decrypt it."""
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            r = await http.get(f"{self.nio.homeserver}/_matrix/client/v3/rooms/{quote(room_id, safe='')}"
                               f"/event/{quote(event_id, safe='')}",
                               headers={"Authorization": f"Bearer {self.nio.access_token}"})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def room_keys_from(self, sender: str, room_id: str) -> list[RoomKeyEvent]:
        """Megolm room keys received over Olm (``m.room.encrypted`` to-device events
        that nio decrypted into ``m.room_key``) from ``sender`` for ``room_id``."""
        return [e for e in self.to_device
                if isinstance(e, RoomKeyEvent) and e.sender == sender and e.room_id == room_id]

    def saw_changed(self, user_id: str, after: int = 0) -> bool:
        """``user_id`` in ``device_lists.changed`` of a sync response numbered >= ``after``."""
        return any(user_id in changed for changed, _ in self.device_lists[after:])

    def saw_left(self, user_id: str, after: int = 0) -> bool:
        return any(user_id in left for _, left in self.device_lists[after:])

    def known_devices(self, user_id: str) -> set[str]:
        """Device IDs of ``user_id`` in nio's device store (from ``/keys/query``)."""
        return {d.id for d in self.nio.device_store.active_user_devices(user_id)}
