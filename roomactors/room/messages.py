"""What goes into a room actor's mailbox, and what comes back.

Theory of operation
-------------------
Every request is a frozen, slotted, keyword-only dataclass carrying ``reply``: the
send end of a channel the asker waits on (``RoomRegistry.ask`` makes a one-slot
one). The actor answers each request exactly once with a *value* — a result noun
(``SendResult``, ``StateView``, ``PduOutcome``) or an expected failure
(``Forbidden``, ``BadEvent``, ``UnknownRoom``) — and then closes ``reply``. If the
actor crashes mid-request it still closes ``reply``, so the asker sees
``trio.EndOfChannel`` instead of waiting for its timeout. Replies that cannot be
delivered (the asker was cancelled and closed its end, or is not waiting on a full
channel) are dropped: the work is done and committed regardless (house rule 7).

Naming: requests are verb-noun (``SendEvent``), results are nouns, ``Stop`` is the
one request without a reply.

::

    asker ──SendEvent(reply=tx)──► mailbox ──► actor: build, check_auth,
      ▲                                         checkpoint (ONE db.write),
      └──────── SendResult | Forbidden ◄─────── apply in memory, reply, close tx
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import trio

from roomactors.protocol.ids import EventId, RoomId, UserId

if TYPE_CHECKING:
    from storage.rooms import TxnRecord

__all__ = [
    "StateKey",
    "StateMap",
    "EventSpec",
    "CreateRoom",
    "SendEvent",
    "IngestPdu",
    "GetState",
    "Stop",
    "RoomMessage",
    "SendResult",
    "Forbidden",
    "BadEvent",
    "UnknownRoom",
    "PduStatus",
    "PduOutcome",
    "StateView",
    "GetStateBefore",
    "StateAt",
    "UnknownEvent",
    "IngestStaged",
    "MakeMembership",
    "MembershipTemplate",
    "SubmitMembership",
    "MembershipAccepted",
    "AdoptRemoteRoom",
    "ReceiveInvite",
    "PrepareEvent",
    "Prepared",
    "CommitPrepared",
    "Backfill",
    "Backfilled",
]

StateKey = tuple[str, str]
#: ``(type, state_key)`` -> event ID.
StateMap = dict[StateKey, str]


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """The event was committed (or had been, for a repeated transaction ID)."""

    event_id: EventId
    stream_ordering: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Forbidden:
    """The authorization rules refuse the event; nothing was written (API: 403)."""

    error: str
    rule: str | None
    errcode: str = "M_FORBIDDEN"


@dataclass(frozen=True, slots=True, kw_only=True)
class BadEvent:
    """The request does not make a valid event (too large, malformed content …)."""

    errcode: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownRoom:
    """The room has no events on this server (API: 404)."""

    room_id: RoomId
    errcode: str = "M_NOT_FOUND"


#: How an inbound PDU ended (server-server API "Checks performed on receipt of a PDU"):
#:
#: * ``accepted`` — passed steps 4–6: in the DAG, may be an extremity, may change state;
#: * ``rejected`` — failed step 4 or 5: stored with the reason, never state or extremity;
#: * ``soft_failed`` — failed step 6 only: stored, hidden from clients, never extremity;
#: * ``outlier`` — passed step 4 but its prev events are unknown: stored without state;
#: * ``duplicate`` — already stored (nothing done);
#: * ``invalid`` — not a valid event of this room (step 1, or another room): dropped;
#: * ``missing_auth_events`` — some listed auth events are unknown, so step 4 cannot
#:   run: nothing stored; fetch them (``PduOutcome.missing``) and ingest again.
PduStatus = Literal[
    "accepted", "rejected", "soft_failed", "outlier", "duplicate", "invalid", "missing_auth_events"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PduOutcome:
    event_id: EventId | None
    status: PduStatus
    #: The failed check, e.g. ``"step 5: auth 4.4.1: sender is not joined"``.
    reason: str | None = None
    #: The unknown events: prev events (``outlier``) or auth events (``missing_auth_events``).
    missing: tuple[EventId, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StateView:
    """The room as the actor holds it right now (read-only snapshots)."""

    room_id: RoomId
    room_version: str
    current_state: Mapping[StateKey, str]
    #: event ID -> PDU JSON, for every event in ``current_state``.
    state_events: Mapping[str, dict]
    forward_extremities: frozenset[str]
    #: The greatest depth among the forward extremities.
    depth: int
    #: Users whose current membership is ``join`` (the membership index).
    joined_members: frozenset[UserId] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateAt:
    """The room state *before* an event (server-server API ``/state``: "prior to
    considering any state changes induced by the requested event")."""

    event_id: EventId
    room_version: str
    state: Mapping[StateKey, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent:
    """The event is not stored in this room, or has no state (an outlier or a
    rejected event): API 404 ``M_NOT_FOUND``."""

    event_id: str
    errcode: str = "M_NOT_FOUND"


# --------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSpec:
    """A local event to build, as in ``SendEvent`` (without transaction ID)."""

    sender: UserId
    type: str
    content: dict[str, Any]
    state_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRoom:
    """Start the room with this signed ``m.room.create`` PDU (see
    ``roomactors.room.events.build_create_event``), then send ``initial_events`` in
    order (the createRoom sequence), stopping at the first refusal. Valid only for
    a room with no events. Replies the last event's ``SendResult``, or the first
    ``BadEvent``/``Forbidden``."""

    create_event: dict[str, Any]
    initial_events: tuple[EventSpec, ...] = ()
    reply: trio.MemorySendChannel[SendResult | BadEvent]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendEvent:
    """Create, sign and commit a local event from ``sender`` (a user of this server,
    already authenticated by the caller). ``state_key`` makes it a state event.
    With ``txn``, a repeat of a committed transaction returns the same event.
    Replies ``SendResult``, ``Forbidden``, ``BadEvent`` or ``UnknownRoom``."""

    sender: UserId
    type: str
    content: dict[str, Any]
    state_key: str | None = None
    txn: TxnRecord | None = None
    reply: trio.MemorySendChannel[SendResult | Forbidden | BadEvent | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestPdu:
    """Run the receipt checks (steps 4–6) on a PDU whose format, signatures and
    hashes the caller already checked (steps 1–3; redacted if its hash failed).
    Replies ``PduOutcome`` or ``UnknownRoom``."""

    pdu: dict[str, Any]
    reply: trio.MemorySendChannel[PduOutcome | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetState:
    """Replies ``StateView`` or ``UnknownRoom``."""

    reply: trio.MemorySendChannel[StateView | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetStateBefore:
    """The state before ``event_id`` (resolved over its prev events' states).
    Replies ``StateAt``, ``UnknownEvent`` or ``UnknownRoom``."""

    event_id: str
    reply: trio.MemorySendChannel[StateAt | UnknownEvent | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestStaged:
    """A coalescing wake: ``inbound_staging`` holds PDUs for this room. The actor
    drains them (checks 4-6, fetching what is missing from ``origin``). No reply."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipTemplate:
    """``/make_join``, ``/make_leave``, ``/make_knock``: an unsigned event for the
    remote server to sign and hand back through the matching ``/send_*``."""

    room_version: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeMembership:
    """Build a ``membership`` template for the remote ``user_id`` on the current
    state, refused (``Forbidden``) if the authorization rules would refuse it.
    Replies ``MembershipTemplate``, ``Forbidden`` or ``UnknownRoom``."""

    user_id: UserId
    membership: Literal["join", "leave", "knock"]
    reply: trio.MemorySendChannel[MembershipTemplate | Forbidden | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipAccepted:
    """A ``/send_*`` membership event was accepted into the room. For joins,
    ``state`` and ``auth_chain`` are the PDUs of the state before the event and
    of their auth chain (``/send_join`` v2)."""

    event_id: EventId
    event: dict[str, Any]
    state: tuple[dict[str, Any], ...] = ()
    auth_chain: tuple[dict[str, Any], ...] = ()
    servers_in_room: tuple[str, ...] = ()
    #: Stripped state for ``/send_knock`` (``knock_room_state``).
    stripped_state: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitMembership:
    """``/send_join``, ``/send_leave``, ``/send_knock``: a remote membership event
    (steps 1-3 already passed) that must be accepted as is, then sent to the other
    servers in the room. Replies ``MembershipAccepted``, ``Forbidden``, ``BadEvent``
    or ``UnknownRoom``."""

    pdu: dict[str, Any]
    origin: str
    membership: Literal["join", "leave", "knock"]
    reply: trio.MemorySendChannel[MembershipAccepted | Forbidden | BadEvent | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptRemoteRoom:
    """Our user joined (or knocked on / was invited to) a room held elsewhere:
    store ``events`` (the verified state and auth chain from ``/send_join``, each
    with its step-4 verdict) as outliers and ``join_event`` on top of ``state``
    as the room's one forward extremity. Valid only while the actor holds no room
    (otherwise the join is ingested as a normal PDU). Replies ``SendResult``,
    ``Forbidden`` or ``BadEvent``."""

    room_version: str
    #: event ID -> (PDU, rejection reason or None), in an order where each
    #: event's auth events come first.
    events: Mapping[str, tuple[dict[str, Any], str | None]]
    state: Mapping[StateKey, str]
    join_event: dict[str, Any]
    reply: trio.MemorySendChannel[SendResult | Forbidden | BadEvent]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveInvite:
    """``/invite``: a remote server invites one of our users; ``pdu`` is checked
    (steps 1-3) and co-signed, with ``unsigned.invite_room_state``. In a room we
    hold it is received like any PDU; otherwise it is stored as an outlier that
    makes the user's membership ``invite``. Replies ``SendResult`` or ``Forbidden``."""

    room_version: str
    pdu: dict[str, Any]
    origin: str
    reply: trio.MemorySendChannel[SendResult | Forbidden]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A local event built, signed and authorised on the current state, not
    committed; ``state_events`` are the current state's PDUs (for
    ``invite_room_state``)."""

    room_version: str
    event_id: EventId
    pdu: dict[str, Any]
    state_events: Mapping[StateKey, dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareEvent:
    """Build and authorise a local event without committing it (an invite of
    another server's user must be co-signed by that server first). Replies
    ``Prepared``, ``Forbidden``, ``BadEvent`` or ``UnknownRoom``."""

    sender: UserId
    type: str
    content: dict[str, Any]
    state_key: str | None = None
    reply: trio.MemorySendChannel[Prepared | Forbidden | BadEvent | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitPrepared:
    """Commit a prepared local event (now carrying other servers' signatures too):
    checks 4-6 run again on the state of the moment, then it is sent to the
    servers in the room. Replies ``SendResult``, ``Forbidden`` or ``UnknownRoom``."""

    pdu: dict[str, Any]
    reply: trio.MemorySendChannel[SendResult | Forbidden | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backfilled:
    """How many older events a ``Backfill`` stored as history (0: none to be had);
    ``extremities``: how many backward extremities the room had."""

    stored: int
    extremities: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Backfill:
    """A client paginates past the history we hold: ask the servers in the room
    for up to ``limit`` events before our backward extremities (``/backfill``),
    check them (steps 1-4) and store them as history (``storage.backfill``).
    Replies ``Backfilled`` or ``UnknownRoom``."""

    limit: int
    reply: trio.MemorySendChannel[Backfilled | UnknownRoom]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """Stop if nothing else is waiting in the mailbox (the registry's memory budget).
    The room reloads from SQLite on its next message. No reply."""


RoomMessage = Union[
    CreateRoom,
    SendEvent,
    IngestPdu,
    GetState,
    GetStateBefore,
    IngestStaged,
    MakeMembership,
    SubmitMembership,
    AdoptRemoteRoom,
    ReceiveInvite,
    PrepareEvent,
    CommitPrepared,
    Backfill,
    Stop,
]
