"""A named-event DAG DSL for state-resolution scenarios.

Each scenario is written as a small picture plus a list of ``dag.add(...)`` calls::

    CREATE ─ IMA ─ IPOWER ─ IJR ─ IMB ─ IMC ─ IMZ ─ START ─┬─ PA ─ MA ─ MB ─┐
                                                           │                 (resolve)
                                                           └─ PB ────────────┘

* ``dag.add(name, type, sender, content, state_key, prev=[...])`` makes a real PDU
  for the room version: v1/v2 carry ``event_id`` (``$NAME:example.org``) and
  ``[event_id, {hashes}]`` pair refs; v3+ use plain ID lists and the event ID is the
  reference hash; v12 has no ``room_id`` on the create event, derives the room ID
  from it, and never lists the create event in ``auth_events``.
* The state *before* an event is the resolution (by the code under test) of the
  states after its ``prev`` events, exactly as the spec defines S(E); its
  ``auth_events`` are picked from that state by the auth events selection, and the
  event is auth-checked against it (so fixtures cannot contain events that would
  be rejected on their own fork, unless ``check=False``).
* ``dag.resolve(*names)`` resolves the states after those events and returns the
  result with event names in place of IDs, for readable assertions.

Timestamps increase by one second per added event unless ``ts`` is given, so
ordering ties rarely fall through to (hash) event IDs.
"""

from __future__ import annotations

from typing import Any

from roomactors.protocol.auth import auth_types_for_event, check_auth
from roomactors.protocol.hashing import compute_event_id, compute_room_id
from roomactors.protocol.room_versions import get_rules
from roomactors.protocol.state_res import resolve_state

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CHARLIE = "@charlie:c.example"
ZARA = "@zara:z.example"
EVE = "@eve:e.example"

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
TOPIC = "m.room.topic"
MESSAGE = "m.room.message"

PL_KEY = (POWER, "")
JR_KEY = (JOIN_RULES, "")
TOPIC_KEY = (TOPIC, "")
CREATE_KEY = (CREATE, "")


def member_key(user: str) -> tuple[str, str]:
    return (MEMBER, user)


class Dag:
    def __init__(self, version: str, creator: str = ALICE) -> None:
        self.version = version
        self.rules = get_rules(version)
        self.creator = creator
        self.events: dict[str, dict] = {}
        self.ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.state_after: dict[str, dict[tuple[str, str], str]] = {}
        self.rejected: set[str] = set()
        self._ts = 1_700_000_000_000
        self.room_id: str | None = None

    # --- building ------------------------------------------------------------------

    def ref(self, event_id: str) -> Any:
        if self.rules.event_refs_are_pairs:
            return [event_id, {"sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}]
        return event_id

    def state_before(self, prev: list[str]) -> dict[tuple[str, str], str]:
        if not prev:
            return {}
        return resolve_state(self.version, [self.state_after[p] for p in prev], self.events, rejected=self.rejected)

    def add(
        self,
        name: str,
        type: str,
        sender: str,
        content: dict | None = None,
        state_key: str | None = None,
        *,
        prev: list[str] | str | None = None,
        ts: int | None = None,
        check: bool = True,
    ) -> str:
        """Add event ``name``; ``prev`` defaults to the last added event."""
        assert name not in self.ids, f"duplicate event name {name}"
        if prev is None:
            prev = [self.names[self._last]] if self.events else []
        elif isinstance(prev, str):
            prev = [prev]
        before = self.state_before(prev)
        if ts is None:
            self._ts += 1000
            ts = self._ts
        event: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": content or {},
            "origin_server_ts": ts,
            "depth": 1 + max((self.events[self.ids[p]]["depth"] for p in prev), default=0),
            "prev_events": [self.ref(self.ids[p]) for p in prev],
            "hashes": {"sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"},
            "signatures": {},
        }
        if state_key is not None:
            event["state_key"] = state_key
        is_create = type == CREATE and state_key == ""
        if not (is_create and not self.rules.create_event_has_room_id):
            event["room_id"] = self.room_id if self.room_id is not None else "!room:a.example"
        if self.rules.pdu_has_event_id:
            event["event_id"] = f"${name}:example.org"
        selected = sorted(auth_types_for_event(event, self.version))
        event["auth_events"] = [self.ref(before[k]) for k in selected if k in before]
        event_id = compute_event_id(event, self.version)
        if is_create:
            self.room_id = event.get("room_id") or compute_room_id(event, self.version)
        if check:
            auth_state = {k: self.events[before[k]] for k in selected if k in before}
            if not self.rules.create_event_in_auth_events and not is_create:
                auth_state[CREATE_KEY] = self.events[before[CREATE_KEY]]
            check_auth(event, auth_state, self.version)
        self.events[event_id] = event
        self.ids[name] = event_id
        self.names[event_id] = name
        after = dict(before)
        if state_key is not None:
            after[(type, state_key)] = event_id
        self.state_after[name] = after
        self._last = event_id
        return event_id

    # --- shorthands ----------------------------------------------------------------

    def power(self, users: dict[str, int] | None = None, **extra: Any) -> dict:
        """Power-levels content: the creator at 100 (unlisted in v12), spec defaults otherwise."""
        listed = {} if self.rules.explicit_creators else {self.creator: 100}
        listed.update(users or {})
        return {"users": listed, **extra}

    def id(self, name: str) -> str:
        return self.ids[name]

    def state(self, name: str) -> dict[tuple[str, str], str]:
        return dict(self.state_after[name])

    def named(self, state: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        return {k: self.names.get(v, v) for k, v in state.items()}

    def resolve(self, *names: str) -> dict[tuple[str, str], str]:
        return self.named(self.state_before(list(names)))

    def resolve_sets(self, *state_sets: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        return self.named(resolve_state(self.version, list(state_sets), self.events, rejected=self.rejected))


def initial_room(version: str) -> Dag:
    """CREATE ─ IMA ─ IPOWER ─ IJR ─ IMB ─ IMC ─ IMZ ─ START.

    Alice creates the room (power 100; v12: creator, infinite), sets power levels with
    spec defaults (state_default, ban, kick 50) and a public join rule; Bob, Charlie
    and Zara join at power 0. START is a message.
    """
    dag = Dag(version)
    content: dict[str, Any] = {"room_version": version}
    if dag.rules.create_event_has_creator:
        content["creator"] = ALICE
    dag.add("CREATE", CREATE, ALICE, content, "")
    dag.add("IMA", MEMBER, ALICE, {"membership": "join"}, ALICE)
    dag.add("IPOWER", POWER, ALICE, dag.power(), "")
    dag.add("IJR", JOIN_RULES, ALICE, {"join_rule": "public"}, "")
    dag.add("IMB", MEMBER, BOB, {"membership": "join"}, BOB)
    dag.add("IMC", MEMBER, CHARLIE, {"membership": "join"}, CHARLIE)
    dag.add("IMZ", MEMBER, ZARA, {"membership": "join"}, ZARA)
    dag.add("START", MESSAGE, ZARA, {"body": "start"})
    return dag
