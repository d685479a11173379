"""A tiny room builder for authorization-rule tests (a Dendrite ``test.NewRoom`` in spirit).

Events are plain PDU dicts in the shape of their room version:

* v1/v2: ``event_id`` ``$N:domain`` in the PDU, ``prev_events``/``auth_events`` as
  ``[[event_id, {"sha256": ...}], ...]`` pairs;
* v3+: no ``event_id`` (it is the reference hash), plain ID lists;
* v12: the create event has no ``room_id``; the room ID is ``!`` + its hash.

``Room.state`` is the current state keyed by ``(type, state_key)``, the shape
:func:`roomactors.protocol.auth.check_auth` takes. Events are not signed; the tests
that need signatures (third-party invites, restricted joins) add them.
"""

from __future__ import annotations

import copy
from typing import Any

from roomactors.protocol.auth import auth_types_for_event, check_auth
from roomactors.protocol.hashing import compute_event_id, compute_room_id
from roomactors.protocol.room_versions import get_rules

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"

_MISSING = object()


class Room:
    def __init__(
        self,
        version: str,
        creator: str = ALICE,
        *,
        create_content: dict | None = None,
        room_domain: str | None = None,
    ) -> None:
        self.version = version
        self.rules = get_rules(version)
        self.creator = creator
        self.state: dict[tuple[str, str], dict] = {}
        self.by_id: dict[str, dict] = {}
        self.last_id: str | None = None
        self._counter = 0
        self._ts = 1_700_000_000_000
        content: dict[str, Any] = {"room_version": version}
        if self.rules.create_event_has_creator:
            content["creator"] = creator
        if create_content is not None:
            content.update(create_content)
        create: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": self._next_ts(),
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        if self.rules.create_event_has_room_id:
            create["room_id"] = f"!room:{room_domain or creator.split(':', 1)[1]}"
        if self.rules.pdu_has_event_id:
            create["event_id"] = self._next_event_id(creator)
        self.create = create
        self.room_id = create["room_id"] if "room_id" in create else compute_room_id(create, version)
        self.add(create)

    # --- plumbing ------------------------------------------------------------------

    def _next_ts(self) -> int:
        self._ts += 1
        return self._ts

    def _next_event_id(self, sender: str) -> str:
        self._counter += 1
        return f"${self._counter}:{sender.split(':', 1)[1]}"

    def event_id(self, event: dict) -> str:
        return compute_event_id(event, self.version)

    def ref(self, event_id: str) -> Any:
        return [event_id, {"sha256": "AAAA"}] if self.rules.event_refs_are_pairs else event_id

    # --- building ------------------------------------------------------------------

    def make(
        self,
        type: str,
        sender: str,
        content: dict | None = None,
        state_key: Any = _MISSING,
        *,
        prev: list[str] | None = None,
        **extra: Any,
    ) -> dict:
        """A new event (not added) whose auth_events are selected from the current state."""
        event: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "room_id": self.room_id,
            "content": {} if content is None else content,
            "origin_server_ts": self._next_ts(),
            "depth": len(self.by_id) + 1,
            "prev_events": [self.ref(i) for i in (prev if prev is not None else [self.last_id])],
            "hashes": {"sha256": "AAAA"},
            "signatures": {sender.split(":", 1)[1]: {"ed25519:1": "sig"}},
        }
        if state_key is not _MISSING:
            event["state_key"] = state_key
        if self.rules.pdu_has_event_id:
            event["event_id"] = self._next_event_id(sender)
        event.update(extra)
        selected = auth_types_for_event(event, self.version) if isinstance(event.get("content"), dict) else set()
        event["auth_events"] = [
            self.ref(self.event_id(self.state[k])) for k in sorted(selected) if k in self.state
        ]
        return event

    def add(self, event: dict) -> dict:
        event_id = self.event_id(event)
        self.by_id[event_id] = event
        self.last_id = event_id
        if "state_key" in event:
            self.state[(event["type"], event["state_key"])] = event
        return event

    def send(self, *args: Any, **kwargs: Any) -> dict:
        """Make, check against the current state, and add an event."""
        event = self.make(*args, **kwargs)
        check_auth(event, self.state, self.version)
        return self.add(event)

    def force(self, *args: Any, **kwargs: Any) -> dict:
        """Make and add an event without checking it (to set up odd states)."""
        return self.add(self.make(*args, **kwargs))

    def check(self, event: dict, state: dict | None = None) -> None:
        check_auth(event, self.state if state is None else state, self.version)

    def listed_auth_events(self, event: dict) -> list[dict]:
        ids = [r[0] if isinstance(r, list) else r for r in event["auth_events"]]
        return [self.by_id[i] for i in ids]

    # --- shorthands ----------------------------------------------------------------

    def member(self, sender: str, membership: str, target: str | None = None, **content: Any) -> dict:
        return self.make("m.room.member", sender, {"membership": membership, **content}, target or sender)

    def join(self, user: str) -> dict:
        return self.send("m.room.member", user, {"membership": "join"}, user)

    def set_membership(self, user: str, membership: str, sender: str | None = None) -> dict:
        return self.force("m.room.member", sender or user, {"membership": membership}, user)

    def power_levels(self, content: dict, sender: str | None = None) -> dict:
        return self.make("m.room.power_levels", sender or self.creator, copy.deepcopy(content), "")

    def set_power_levels(self, content: dict, sender: str | None = None) -> dict:
        return self.force("m.room.power_levels", sender or self.creator, copy.deepcopy(content), "")

    def set_join_rule(self, join_rule: str, **content: Any) -> dict:
        return self.force("m.room.join_rules", self.creator, {"join_rule": join_rule, **content}, "")


def default_power_levels(room: Room, users: dict | None = None, **overrides: Any) -> dict:
    """The power levels a createRoom would send: the creator at 100 (not listed in v12)."""
    listed = {} if room.rules.explicit_creators else {room.creator: 100}
    listed.update(users or {})
    content = {
        "users": listed,
        "users_default": 0,
        "events": {"m.room.name": 50, "m.room.power_levels": 100},
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    content.update(overrides)
    return content


def new_room(version: str, join_rule: str = "public", users: dict | None = None, **kwargs: Any) -> Room:
    """create → creator joins → power levels → join rules."""
    room = Room(version, **kwargs)
    room.join(room.creator)
    room.send("m.room.power_levels", room.creator, default_power_levels(room, users), "")
    room.send("m.room.join_rules", room.creator, {"join_rule": join_rule}, "")
    return room
