"""Room builders for tests that drive real room actors (a Dendrite ``test.NewRoom``
in spirit).

* :class:`Server`: ``local.example`` — a :class:`RoomRegistry` of real
  :class:`RoomActor` objects on one :class:`Database`. Its helpers go through the
  mailboxes exactly as the API will (``registry.ask``); ``public_room`` makes the
  usual create / join / power levels / public join rule room.
* :class:`RemoteBranch`: events of another server (``remote.example``), signed with
  its own key, built on a state the test tracks — the way a remote homeserver sees
  its own fork of the DAG — to ingest with ``IngestPdu``.

About ``autojump_clock``: it advances virtual time whenever every task is blocked —
including while a task waits for a database thread. A finite ``ask`` timeout would
then expire spuriously, so test settings use ``request_timeout_s = inf``; idle rooms
may hibernate "early" during such waits, which is harmless (they reload).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from signedjson.key import decode_signing_key_base64

from roomactors.clock import ManualClock
from roomactors.protocol.auth import auth_types_for_event
from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.hashing import compute_event_id
from roomactors.protocol.ids import RoomId
from roomactors.protocol.room_versions import get_rules
from roomactors.registry import RegistrySettings, RoomRegistry
from roomactors.room.actor import RoomActor
from roomactors.room.events import build_create_event, build_event, event_refs
from roomactors.room.messages import (
    CreateRoom,
    GetState,
    IngestPdu,
    PduOutcome,
    SendEvent,
    SendResult,
    StateView,
)
from storage import rooms as store
from storage.db import Database
from storage.rooms import StoredEvent, TxnRecord

LOCAL = "local.example"
REMOTE = "remote.example"
ALICE = "@alice:local.example"
BOB = "@bob:local.example"
CAROL = "@carol:remote.example"
DAVE = "@dave:remote.example"

TEST_SETTINGS = RegistrySettings(
    mailbox_size=16,
    idle_timeout_s=600.0,
    restart_backoff_initial_s=1.0,
    restart_backoff_max_s=8.0,
    quarantine_crashes=3,
    quarantine_window_s=100_000.0,
    max_loaded_rooms=1000,
    request_timeout_s=math.inf,
)


def signing_key(server: str) -> Any:
    """A deterministic ed25519 key (version ``1``) for ``server``."""
    return decode_signing_key_base64("ed25519", "1", encode_base64(hashlib.sha256(server.encode()).digest()))


class Server:
    """``local.example``: a registry of RoomActors on one database."""

    def __init__(self, db: Database, settings: RegistrySettings = TEST_SETTINGS) -> None:
        self.db = db
        self.settings = settings
        self.clock = ManualClock(step_ms=1000)
        self.key = signing_key(LOCAL)
        self.actors_started = 0
        self.registry = RoomRegistry(actor_factory=self._make_actor, settings=settings, clock=self.clock)
        self._room_counter = 0

    def _make_actor(self, room_id: RoomId) -> RoomActor:
        self.actors_started += 1
        return RoomActor(
            room_id, db=self.db, server_name=LOCAL, signing_key=self.key, clock=self.clock, settings=self.settings
        )

    # --- asking the rooms --------------------------------------------------------------

    async def create_room(self, version: str, *, creator: str = ALICE, extra: Mapping[str, Any] | None = None) -> RoomId:
        self._room_counter += 1
        room_id = None if not get_rules(version).create_event_has_room_id else RoomId(f"!r{self._room_counter}:{LOCAL}")
        create, room_id = build_create_event(
            version,
            creator=creator,
            server_name=LOCAL,
            signing_key=self.key,
            clock=self.clock,
            content_extra=extra,
            room_id_for_v1_11=room_id,
        )
        result = await self.registry.ask(room_id, lambda reply: CreateRoom(create_event=create, reply=reply))
        assert isinstance(result, SendResult), result
        return room_id

    async def send(
        self,
        room_id: RoomId,
        sender: str,
        type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        txn: TxnRecord | None = None,
    ) -> Any:
        return await self.registry.ask(
            room_id,
            lambda reply: SendEvent(sender=sender, type=type, content=content, state_key=state_key, txn=txn, reply=reply),
        )

    async def send_ok(self, room_id: RoomId, sender: str, type: str, content: dict[str, Any], state_key: str | None = None) -> str:
        result = await self.send(room_id, sender, type, content, state_key)
        assert isinstance(result, SendResult), result
        return result.event_id

    async def state(self, room_id: RoomId) -> StateView:
        view = await self.registry.ask(room_id, lambda reply: GetState(reply=reply))
        assert isinstance(view, StateView), view
        return view

    async def ingest(self, room_id: RoomId, pdu: dict[str, Any]) -> PduOutcome:
        outcome = await self.registry.ask(room_id, lambda reply: IngestPdu(pdu=pdu, reply=reply))
        assert isinstance(outcome, PduOutcome), outcome
        return outcome

    # --- reading storage directly ------------------------------------------------------

    async def stored(self, *event_ids: str) -> dict[str, StoredEvent]:
        return await self.db.read(store.get_events, list(event_ids))

    async def room_events(self, room_id: RoomId) -> list[StoredEvent]:
        return await self.db.read(store.get_room_events, room_id)

    async def all_events(self, room_id: RoomId) -> dict[str, dict[str, Any]]:
        return {e.event_id: e.json for e in await self.room_events(room_id)}

    # --- a standard room ---------------------------------------------------------------

    async def public_room(self, version: str, *, users: Mapping[str, int] | None = None) -> RoomId:
        """create, Alice joins, power levels (Alice 100 and ``users``), public join rule."""
        room_id = await self.create_room(version)
        await self.send_ok(room_id, ALICE, "m.room.member", {"membership": "join"}, ALICE)
        listed = {} if get_rules(version).explicit_creators else {ALICE: 100}
        listed.update(users or {})
        await self.send_ok(room_id, ALICE, "m.room.power_levels", {"users": listed}, "")
        await self.send_ok(room_id, ALICE, "m.room.join_rules", {"join_rule": "public"}, "")
        return room_id


@dataclass
class RemoteBranch:
    """A line of events by ``remote.example``, built on a state the test tracks.

    ``state`` is the state after ``head`` as the remote server sees it and
    ``events`` every PDU it knows; :meth:`add` cites ``head`` as the prev event,
    picks ``auth_events`` from ``state`` by the auth events selection and signs.
    """

    version: str
    room_id: RoomId
    head: list[str]
    depth: int
    state: dict[tuple[str, str], str]
    events: dict[str, dict[str, Any]]
    ts: int = 1_800_000_000_000

    @classmethod
    def at(cls, view: StateView, events: Mapping[str, dict[str, Any]]) -> RemoteBranch:
        return cls(
            version=view.room_version,
            room_id=view.room_id,
            head=sorted(view.forward_extremities),
            depth=view.depth,
            state=dict(view.current_state),
            events=dict(events),
        )

    def fork(self) -> RemoteBranch:
        return replace(self, head=list(self.head), state=dict(self.state), events=dict(self.events))

    def build(
        self,
        sender: str,
        type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        auth_events: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Build (not add) an event; ``auth_events`` overrides the selection."""
        shape: dict[str, Any] = {"type": type, "sender": sender, "content": content}
        if state_key is not None:
            shape["state_key"] = state_key
        if auth_events is None:
            auth_events = [self.state[k] for k in sorted(auth_types_for_event(shape, self.version)) if k in self.state]
        self.ts += 1000
        server = sender.partition(":")[2]
        return build_event(
            room_version=self.version,
            room_id=self.room_id,
            sender=sender,
            type=type,
            content=content,
            state_key=state_key,
            prev_events=self.head if prev is None else prev,
            auth_events=auth_events,
            depth=self.depth + 1,
            origin_server_ts=self.ts,
            server_name=server,
            signing_key=signing_key(server),
            referenced=self.events,
        )

    def add(self, sender: str, type: str, content: dict[str, Any], state_key: str | None = None) -> dict[str, Any]:
        event_id, pdu = self.build(sender, type, content, state_key)
        assert compute_event_id(pdu, self.version) == event_id
        self.events[event_id] = pdu
        self.head = [event_id]
        self.depth += 1
        if state_key is not None:
            self.state[(type, state_key)] = event_id
        return pdu


def pdu_id(pdu: dict[str, Any], version: str) -> str:
    return compute_event_id(pdu, version)


__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "DAVE",
    "LOCAL",
    "REMOTE",
    "TEST_SETTINGS",
    "RemoteBranch",
    "Server",
    "event_refs",
    "pdu_id",
    "signing_key",
]
