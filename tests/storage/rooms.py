"""Builders for storage tests: events with realistic shape, and a room that keeps a model.

``make_event`` gives a :class:`storage.rooms.NewEvent` whose JSON looks like a PDU
(IDs, hashes, signatures, content). :class:`LinearRoom` appends events one
checkpoint at a time, the way a room actor would: prev_events = the extremity,
state base = the previous state ref, current-state upserts, and a model dict of the
expected state after every event to compare ``get_state`` against.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.b64 import encode_base64, encode_base64_urlsafe
from storage import rooms as R

ROOM_VERSION = "11"
CREATE = ("m.room.create", "")


def event_id_for(seed: str) -> str:
    return "$" + encode_base64_urlsafe(hashlib.sha256(seed.encode()).digest())


def make_event(
    seed: str,
    room_id: str,
    *,
    type: str = "m.room.message",
    state_key: str | None = None,
    depth: int = 1,
    prev_events: tuple[str, ...] = (),
    auth_events: tuple[str, ...] = (),
    content: Mapping[str, Any] | None = None,
    sender: str = "@alice:a.example",
    **flags: Any,
) -> R.NewEvent:
    event_id = event_id_for(seed)
    pdu: dict[str, Any] = {
        "auth_events": list(auth_events),
        "content": dict(content) if content is not None else {"msgtype": "m.text", "body": f"message {seed}"},
        "depth": depth,
        "hashes": {"sha256": encode_base64(hashlib.sha256(seed.encode() + b"h").digest())},
        "origin_server_ts": 1_700_000_000_000 + depth,
        "prev_events": list(prev_events),
        "room_id": room_id,
        "sender": sender,
        "signatures": {"a.example": {"ed25519:k": encode_base64(hashlib.sha512(seed.encode()).digest())}},
        "type": type,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return R.NewEvent(
        event_id=event_id,
        room_id=room_id,
        json=pdu,
        depth=depth,
        type=type,
        state_key=state_key,
        sender=sender,
        origin_server_ts=pdu["origin_server_ts"],
        prev_events=prev_events,
        auth_events=auth_events,
        **flags,
    )


def run(conn: sa.Connection, fn: Any, *args: Any) -> Any:
    """``fn(conn, *args)`` in one transaction, as ``Database.write`` would run it."""
    with conn.begin():
        return fn(conn, *args)


class LinearRoom:
    """A room grown one event per checkpoint, with the expected state of every ref."""

    def __init__(self, conn: sa.Connection, room_id: str = "!room:a.example") -> None:
        self.conn = conn
        self.room_id = room_id
        self.counter = 0
        self.depth = 0
        self.model: dict[str, dict[tuple[str, str], str]] = {}  # ref -> expected state
        create = self._event("create", type="m.room.create", state_key="", prev_events=())
        create = _with(create, state_delta={CREATE: create.event_id})
        self.create_id = create.event_id
        self.extremity = create.event_id
        self.ref: str | None = None
        self.state: dict[tuple[str, str], str] = {}
        self.commit(create, {CREATE: create.event_id})

    def _event(self, label: str, **kwargs: Any) -> R.NewEvent:
        self.counter += 1
        self.depth += 1
        if "prev_events" not in kwargs:
            kwargs["prev_events"] = (self.extremity,)
        if "auth_events" not in kwargs:
            kwargs["auth_events"] = (self.create_id,) if self.counter > 1 else ()
        return make_event(f"{self.room_id}/{self.counter}/{label}", self.room_id, depth=self.depth, **kwargs)

    def commit(self, ev: R.NewEvent, delta: Mapping[tuple[str, str], str | None]) -> int:
        cp = R.Checkpoint(
            room_id=self.room_id,
            room_version=ROOM_VERSION,
            events=(ev,),
            forward_extremities=frozenset({ev.event_id}),
            current_state_delta=dict(delta),
        )
        orderings = run(self.conn, R.checkpoint, cp)
        self.extremity = ev.event_id
        if delta:
            for key, value in delta.items():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
            self.ref = ev.event_id
            self.model[self.ref] = dict(self.state)
        return orderings[ev.event_id]

    def message(self, body: str = "hello") -> R.NewEvent:
        ev = self._event("msg", content={"msgtype": "m.text", "body": body}, state_base_ref=self.ref)
        self.commit(ev, {})
        return ev

    def set_state(self, type: str, state_key: str, content: Mapping[str, Any] | None = None) -> R.NewEvent:
        ev = self._event(f"{type}/{state_key}", type=type, state_key=state_key, content=content or {})
        ev = _with(ev, state_base_ref=self.ref, state_delta={(type, state_key): ev.event_id})
        self.commit(ev, {(type, state_key): ev.event_id})
        return ev

    def remove_state(self, type: str, state_key: str) -> R.NewEvent:
        """A state change that drops a key (as a resolution can); the event itself is a message."""
        ev = self._event(f"drop/{type}/{state_key}", state_base_ref=self.ref, state_delta={(type, state_key): None})
        self.commit(ev, {(type, state_key): None})
        return ev


def _with(ev: R.NewEvent, **changes: Any) -> R.NewEvent:
    return dataclasses.replace(ev, **changes)
