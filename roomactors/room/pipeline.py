"""The checks on receipt of a PDU (server-server API "Checks performed on receipt of
a PDU"), one function per step, for PDUs arriving over federation.

Theory of operation
-------------------
Steps 1–3 (format, signatures, hashes) run in the API layer, outside any room and
in parallel; a PDU whose content hash failed arrives here already redacted. The
room actor runs the rest, one PDU at a time, through :func:`receive_pdu`::

    step 1 again (cheap; and is it *this* room?) ── no ──► invalid   (dropped)
    already stored? ─────────────────────────────── yes ─► duplicate (nothing done)
    auth events all known? ───────────────────────── no ──► missing_auth_events
    step 4: auth against its own auth_events ─────── no ──► rejected ┐
    prerequisite: prev_events known, with state? ─── no ──► outlier  │ (stored)
    step 5: auth against the state before it ─────── no ──► rejected │
    step 6: auth against the current state ───────── no ──► soft_failed
    ────────────────────────────────────────────────────► accepted ──┘

* **Step 4** is ruma's order: the state-independent list checks
  (``check_auth_events_list``), then "no listed auth event was itself rejected"
  (which only storage knows), then ``check_auth`` with the listed events as the
  state (plus the create event in v12, where it is implied, never listed).
* **Missing prev events** make the PDU an *outlier*: stored, with no state, never
  an extremity. Fetching them (``get_missing_events``, ``state_ids``) is the
  federation layer's job; ``PduOutcome.missing`` says what is absent. Outliers
  that fail step 4 are stored as rejected outliers.
* **Step 5**: the state before the event is the state after its prev event, or
  ``resolve_state`` over the states after each when it has several (the room
  supplies it: :meth:`RoomView.state_before`).
* **Step 6**: the same check against the room's current state; failing it is a
  *soft failure*. When the state before the event *is* the current state (the
  usual, linear case) step 6 cannot fail differently and is skipped.

A rejected event's state after it is the state before it (spec "Rejection": state
is "calculated as normal, except not updating with the rejected event"); a
soft-failed event's is updated as usual — it may enter state later through state
resolution, if another event cites it. Neither is ever a forward extremity.

This module decides; it writes nothing. :func:`receive_pdu` returns a
:class:`Decision` and the actor turns it into one checkpoint. The step functions
are pure and synchronous; only :func:`receive_pdu` awaits, for lookups through the
:class:`RoomView` the actor implements.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from roomactors.protocol.auth import CREATE_KEY, auth_types_for_event, check_auth, check_auth_events_list
from roomactors.protocol.errors import AuthError, InvalidEvent
from roomactors.protocol.ids import EventId, RoomId
from roomactors.protocol.pdu import Pdu, parse_pdu
from roomactors.room.messages import PduOutcome, StateKey

__all__ = [
    "KnownEvent",
    "RoomView",
    "Rejected",
    "SoftFailed",
    "Decision",
    "step_1_valid_for_room",
    "step_4_auth_events",
    "step_5_state_before",
    "step_6_current_state",
    "select_auth_state",
    "receive_pdu",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownEvent:
    """One entry of the room's DAG index: a stored event and its flags."""

    event_id: str
    room_id: str
    json: dict[str, Any]
    depth: int
    stream_ordering: int | None
    #: Ref of the state after the event (a ``state_snapshots`` key); None: no state (outlier).
    state_after_ref: str | None
    outlier: bool
    rejected: bool
    soft_failed: bool


class RoomView(Protocol):
    """What the pipeline needs from the room actor."""

    @property
    def room_id(self) -> RoomId: ...
    @property
    def room_version(self) -> str: ...
    @property
    def create_event(self) -> dict[str, Any]: ...
    @property
    def create_event_id(self) -> str: ...
    @property
    def current_state(self) -> Mapping[StateKey, str]: ...

    async def known_events(self, event_ids: Collection[str]) -> dict[str, KnownEvent]:
        """The stored events among ``event_ids`` (any room; absent ones are left out)."""
        ...

    async def state_before(self, prev_events: Sequence[str]) -> Mapping[StateKey, str]:
        """The state before an event citing ``prev_events`` (all known, with state)."""
        ...

    async def auth_state(self, event: dict[str, Any], state: Mapping[StateKey, str]) -> dict[StateKey, dict]:
        """:func:`select_auth_state` for ``event`` over ``state``, with the PDUs loaded."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    step: int
    rule: str | None
    error: str

    def reason(self) -> str:
        return f"step {self.step}: {self.error}" + (f" [{self.rule}]" if self.rule else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftFailed:
    rule: str | None
    error: str

    def reason(self) -> str:
        return f"step 6: {self.error}" + (f" [{self.rule}]" if self.rule else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with a received PDU. ``store`` is False for ``duplicate``,
    ``invalid`` and ``missing_auth_events``. ``state_before`` is None exactly when
    the event gets no state (outliers, and anything not stored)."""

    outcome: PduOutcome
    pdu: Pdu | None = None
    state_before: Mapping[StateKey, str] | None = None

    @property
    def store(self) -> bool:
        return self.outcome.status in ("accepted", "rejected", "soft_failed", "outlier")


# --------------------------------------------------------------------------------------
# The steps (pure)
# --------------------------------------------------------------------------------------


def step_1_valid_for_room(event: dict[str, Any], room_id: RoomId, room_version: str, create_event_id: str) -> Pdu | str:
    """Step 1 (the format, again: the API layer already dropped invalid PDUs) and
    "is it an event of this room?". Returns the parsed PDU or why it is not one."""
    try:
        pdu = parse_pdu(event, room_version)
    except InvalidEvent as e:
        return f"step 1: {e}"
    if pdu.room_id != room_id:
        return f"step 1: the event belongs to room {pdu.room_id}, not {room_id}"
    if pdu.type == "m.room.create" and pdu.state_key == "" and pdu.event_id != create_event_id:
        return "step 1: a room has exactly one m.room.create event"
    return pdu


def step_4_auth_events(
    pdu: Pdu, listed: Sequence[KnownEvent], create_event: dict[str, Any], create_event_id: str
) -> Rejected | None:
    """Step 4: "Passes authorization rules based on the event's auth events"."""
    rules = pdu.rules
    for known in listed:
        if known.rejected:
            # spec: v1–v11 auth rule 2.3, v12 3.3
            return Rejected(step=4, rule="auth events: rejected entry", error=f"auth event {known.event_id} was rejected")
    try:
        check_auth_events_list(pdu.json, [known.json for known in listed], pdu.room_version)
    except AuthError as e:
        return Rejected(step=4, rule=e.rule, error=e.message)
    state: dict[StateKey, dict] = {(k.json["type"], k.json["state_key"]): k.json for k in listed}
    if not rules.create_event_in_auth_events:
        state[CREATE_KEY] = create_event  # v12: implied by room_id, never listed
    try:
        check_auth(pdu.json, state, pdu.room_version, create_event_id=_create_id_hint(pdu, create_event_id))
    except AuthError as e:
        return Rejected(step=4, rule=e.rule, error=e.message)
    return None


def step_5_state_before(pdu: Pdu, auth_state: Mapping[StateKey, dict], create_event_id: str) -> Rejected | None:
    """Step 5: "Passes authorization rules based on the state before the event"."""
    try:
        check_auth(pdu.json, dict(auth_state), pdu.room_version, create_event_id=_create_id_hint(pdu, create_event_id))
    except AuthError as e:
        return Rejected(step=5, rule=e.rule, error=e.message)
    return None


def step_6_current_state(pdu: Pdu, auth_state: Mapping[StateKey, dict], create_event_id: str) -> SoftFailed | None:
    """Step 6: "Passes authorization rules based on the current state of the room"."""
    try:
        check_auth(pdu.json, dict(auth_state), pdu.room_version, create_event_id=_create_id_hint(pdu, create_event_id))
    except AuthError as e:
        return SoftFailed(rule=e.rule, error=e.message)
    return None


def select_auth_state(event: dict[str, Any], state: Mapping[StateKey, str], room_version: str) -> dict[StateKey, str]:
    """The part of ``state`` the authorization rules consult for ``event``: the auth
    events selection, plus the create event (v12 needs it though never listed)."""
    keys = auth_types_for_event(event, room_version)
    keys.add(CREATE_KEY)
    return {key: state[key] for key in keys if key in state}


def _create_id_hint(pdu: Pdu, create_event_id: str) -> str | None:
    # v12: the create is implied by room_id, which step 1 tied to this room. Earlier
    # versions cite a create event; let the kernel hash whichever one is in the state.
    return None if pdu.rules.create_event_in_auth_events else create_event_id


# --------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------


async def receive_pdu(
    room: RoomView, event: dict[str, Any], *, state_before: Mapping[StateKey, str] | None = None
) -> Decision:
    """Steps 1 and 4–6 for ``event``; see the module docstring for the flow.

    ``state_before`` supplies the state before the event when its prev events are
    not all held with state: the state fetched from a peer at those prev events
    (``/state_ids``) and resolved (spec "Checks performed on receipt of a PDU",
    step 5: the state "may be obtained by ... requesting it from other servers")."""
    checked = step_1_valid_for_room(event, room.room_id, room.room_version, room.create_event_id)
    if isinstance(checked, str):
        return Decision(outcome=PduOutcome(event_id=None, status="invalid", reason=checked))
    pdu = checked
    event_id = pdu.event_id

    if await room.known_events([event_id]):
        return Decision(outcome=PduOutcome(event_id=event_id, status="duplicate"))

    listed = await room.known_events(pdu.auth_events)
    missing_auth = tuple(EventId(a) for a in dict.fromkeys(pdu.auth_events) if a not in listed)
    if missing_auth:
        return Decision(
            outcome=PduOutcome(
                event_id=event_id,
                status="missing_auth_events",
                reason="step 4: some auth events are unknown",
                missing=missing_auth,
            )
        )
    rejected = step_4_auth_events(pdu, [listed[a] for a in pdu.auth_events], room.create_event, room.create_event_id)

    prevs = await room.known_events(pdu.prev_events)
    missing_prev = tuple(
        EventId(p)
        for p in dict.fromkeys(pdu.prev_events)
        if p not in prevs or prevs[p].room_id != room.room_id or prevs[p].state_after_ref is None
    )
    if missing_prev and state_before is None:
        if rejected is not None:
            return Decision(
                outcome=PduOutcome(event_id=event_id, status="rejected", reason=rejected.reason(), missing=missing_prev),
                pdu=pdu,
            )
        return Decision(
            outcome=PduOutcome(
                event_id=event_id, status="outlier", reason="step 5: prev events are unknown", missing=missing_prev
            ),
            pdu=pdu,
        )

    if state_before is None:
        state_before = await room.state_before(pdu.prev_events)
    if rejected is None:
        auth_state = await room.auth_state(pdu.json, state_before)
        rejected = step_5_state_before(pdu, auth_state, room.create_event_id)
    if rejected is not None:
        return Decision(
            outcome=PduOutcome(event_id=event_id, status="rejected", reason=rejected.reason()),
            pdu=pdu,
            state_before=state_before,
        )

    current = room.current_state
    if state_before is not current and select_auth_state(pdu.json, state_before, room.room_version) != select_auth_state(
        pdu.json, current, room.room_version
    ):
        soft = step_6_current_state(pdu, await room.auth_state(pdu.json, current), room.create_event_id)
        if soft is not None:
            return Decision(
                outcome=PduOutcome(event_id=event_id, status="soft_failed", reason=soft.reason()),
                pdu=pdu,
                state_before=state_before,
            )
    return Decision(outcome=PduOutcome(event_id=event_id, status="accepted"), pdu=pdu, state_before=state_before)
