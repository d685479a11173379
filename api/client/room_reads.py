"""Room reads: ``/state``, ``/members``, ``/joined_members``, ``/event``, ``/context``
and ``/messages`` (client-server API "Getting events for a room", rooms.yaml,
event_context.yaml, message_pagination.yaml).

Theory of operation
-------------------
Each view authenticates, parses its parameters (every bad value is a 400, never a
500), then runs ONE synchronous ``compute_*`` function in one ``db.read`` — one WAL
snapshot, so access checks, visibility and the answer agree — and formats the events
with ``api.client.sync.format_events`` (redacted events are served redacted, with
``unsigned.redacted_because``; house rule 4: the views stay thin).

**Who may read a room** (rooms.yaml, "If the user has left the room then the state
is taken from the state of the room when they left"; history_visibility module,
"After a user has left a room, they may see any events which they were allowed to
see before they left the room, but no events received after they left"). A
:class:`Viewer` is the requester's relation to the room:

* ``join`` — the room as it is now: current state, every position.
* *departed* — current membership ``leave`` or ``ban`` and the room not forgotten:
  the room as it was when they left. State is the snapshot after their leave event
  (its ``state_after_ref``), and every read is capped at that event's stream
  ordering (``Viewer.cap``, inclusive, so they see their own leave). The cap applies
  to every event, even one that is ``world_readable``: the module's "no events
  received after they left" (as Synapse clamps ``/messages``).
* anyone else (never joined, invited, knocking, or forgot the room) — may read the
  room-wide endpoints only while its *current* ``m.room.history_visibility`` is
  ``world_readable`` ("may be shared ... with any authenticated user, regardless of
  whether they have ever joined the room"); otherwise 403 ``M_FORBIDDEN`` (also for
  an unknown room, which is not told apart). ``/event`` and ``/context`` decide per
  event instead and answer 404 ``M_NOT_FOUND`` ("The event was not found or you do
  not have permission to read this event").

``/joined_members`` needs a current join (rooms.yaml: "The current user must be in
the room for it to work"), or a ``world_readable`` room; a departed user gets 403.

**History visibility** of every returned timeline event is decided by
``storage.timeline.filter_visible_events_with_join``: the spec's five steps with the
room state at the event, where step 3 ("the user joined the room at any point after
the event was sent") is answered exactly from the user's latest join, so a departed
user still sees the ``shared`` history from before they joined.

**Tokens and positions.** Events are ordered by ``stream_ordering`` (the server's
arrival order: "Events are ordered in this API according to the arrival time of the
event on the homeserver", "Syncing"). A *position* ``p`` is the gap just after
ordering ``p``: events ``<= p`` are before it, events ``> p`` after it. Tokens name
positions:

* ``t<N>`` (pagination tokens; sync's ``prev_batch``) is the gap just *before*
  ordering ``N``, i.e. position ``N - 1``. ``/sync`` emits
  ``prev_batch = t<first timeline event>``, so ``dir=b`` from it returns exactly the
  events before the timeline, and ``t<upto + 1>`` for an empty timeline;
* ``s<E>_<misc>_<typing>`` (sync's ``next_batch``) is position ``E`` (after event
  ``E``); only ``E`` matters here.

We emit only ``t`` tokens, ``t<p + 1>`` for position ``p``. Anything else, or a
number SQLite cannot hold, is 400 ``M_INVALID_PARAM``.

``/messages`` walks the served rows of the room from ``from``: ``dir=b`` takes
orderings ``to < o <= from`` newest first, ``dir=f`` ``from < o <= to`` oldest first
(``from`` absent: the end of the room for ``b`` — or the viewer's cap — and its
start for ``f``, message_pagination.yaml "from", v1.3). Rows are read in batches
and each batch goes through the filter (``types``, ``senders``, ``contains_url``,
``not_*``, ``rooms``) and history visibility, until ``limit`` events passed or a
bound on rows scanned (``MAX_SCAN``) is met. ``end`` is the position after the last
*row examined*, not the last event returned, so paging always advances even past a
run of events the user may not see (the response then has an empty ``chunk`` and an
``end``: "an empty chunk does not necessarily imply that no more events are
available"). ``end`` is omitted when no row is left in the walk's direction: at the
room's start for ``b``, at ``to`` or the departed viewer's cap for ``f``; an
unbounded ``dir=f`` walk keeps returning an ``end`` after the newest row it read so
a client can resume later, and omits it once there is nothing newer.
``start`` echoes ``from``.

``/context`` splits ``limit`` between before (``limit // 2``) and after, walks both
ways the same way from the event, and returns ``start``/``end`` positioned at the
last rows examined, and ``state`` = the room state after the last event returned
(filtered by the filter, "The filter is only applied to events_before,
events_after, and state").

**Lazy-loading members** ("Lazy-loading room members"): with ``lazy_load_members``
``/messages`` returns in ``state`` the ``m.room.member`` event of each sender of the
chunk as of that sender's last event in the chunk, and ``/context`` trims its state
to the senders of the returned events. Redundant members are always sent
("it is valid for the server to send redundant membership events").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from quart import Blueprint, request

from api.auth import requester
from api.body import query_int
from api.client.sync import format_events
from api.deps import deps
from api.errors import MatrixError, forbidden, invalid_param, not_found
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol.filters import (
    DEFAULT_ROOM_EVENT_FILTER,
    FilterError,
    RoomEventFilter,
    event_allowed,
    parse_room_event_filter_param,
)
from roomactors.protocol.visibility import history_visibility_of
from storage import timeline
from storage.rooms import StoredEvent, get_events, get_state

__all__ = [
    "blueprint",
    "Viewer",
    "parse_position",
    "position_token",
    "compute_messages",
    "compute_context",
]

blueprint = Blueprint("room_reads", __name__)

_MEMBER = "m.room.member"
_MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")  # rooms.yaml members enum
#: ``/messages`` "limit": "Default: 10"; our cap per request.
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
#: The most rows one walk examines looking for visible events before it answers
#: with what it has (and an ``end`` to go on from).
MAX_SCAN = 5000
_MAX_POSITION = 2**63 - 2  # t<p + 1> must still fit SQLite's signed 64-bit integers
#: Below every stream ordering: backfilled history has negative orderings
#: (storage/backfill.py), so a walk with no lower bound starts here, not at 0.
_MIN_POSITION = -(2**62)

_T_TOKEN = re.compile(r"t(-?[0-9]{1,19})\Z")
_S_TOKEN = re.compile(r"s([0-9]{1,19})_[0-9]{1,19}_[0-9]{1,19}(?:_[0-9]{1,19})?\Z")  # a /sync token, 3 or 4 parts


# --------------------------------------------------------------------------- tokens


def parse_position(text: str, name: str) -> int:
    """The position a ``t`` or ``s`` token names (module docstring, "Tokens")."""
    m = _T_TOKEN.match(text)
    if m is not None:
        value = int(m.group(1)) - 1
    else:
        m = _S_TOKEN.match(text)
        if m is None:
            raise invalid_param(f"invalid {name} token {text!r}")
        value = int(m.group(1))
    if value > _MAX_POSITION or value < _MIN_POSITION:
        raise invalid_param(f"invalid {name} token {text!r}")
    return value


def position_token(position: int) -> str:
    """The ``t`` token of ``position``: the gap before ordering ``position + 1``."""
    return f"t{position + 1}"


# --------------------------------------------------------------------------- access


@dataclass(frozen=True, slots=True, kw_only=True)
class Viewer:
    """The requester's relation to one room (module docstring, "Who may read")."""

    user_id: str
    device_id: str
    membership: str | None  # current; None when none or the room is forgotten
    last_join: int | None  # ordering of their latest join (step 3 of visibility)
    cap: int | None = None  # departed: their leave's stream ordering (inclusive)
    leave_ref: str | None = None  # departed: state snapshot after their leave

    @property
    def departed(self) -> bool:
        return self.cap is not None


def viewer_of(conn: sa.Connection, room_id: str, user_id: str, device_id: str) -> Viewer:
    m = timeline.get_membership(conn, room_id, user_id)
    if m is None:
        return Viewer(user_id=user_id, device_id=device_id, membership=None, last_join=None)
    if m.membership == "join":
        return Viewer(user_id=user_id, device_id=device_id, membership="join", last_join=m.stream_ordering)
    if m.membership in ("leave", "ban") and timeline.is_forgotten(conn, user_id, room_id):
        # leaving.yaml /forget: "a user will no longer be able to retrieve history".
        return Viewer(user_id=user_id, device_id=device_id, membership=None, last_join=None)
    last_join = timeline.get_last_join_ordering(conn, room_id, user_id)
    if m.membership in ("leave", "ban"):
        leave = timeline.get_event(conn, m.event_id)
        return Viewer(
            user_id=user_id,
            device_id=device_id,
            membership=m.membership,
            last_join=last_join,
            cap=m.stream_ordering,
            leave_ref=leave.state_after_ref if leave is not None else None,
        )
    return Viewer(user_id=user_id, device_id=device_id, membership=m.membership, last_join=last_join)


def world_readable_now(conn: sa.Connection, room_id: str) -> bool:
    event_id = timeline.get_current_state_event_id(conn, room_id, "m.room.history_visibility", "")
    event = timeline.get_event(conn, event_id) if event_id is not None else None
    content = event.json.get("content") if event is not None else None
    return history_visibility_of(content if isinstance(content, dict) else None) == "world_readable"


def require_room_access(conn: sa.Connection, room_id: str, viewer: Viewer) -> None:
    """403 unless joined, departed, or the room is world-readable now."""
    if viewer.membership == "join" or viewer.departed or world_readable_now(conn, room_id):
        return
    raise forbidden("you are not a member of this room and it is not world-readable")


def viewer_state_ids(conn: sa.Connection, room_id: str, viewer: Viewer) -> dict[tuple[str, str], str]:
    """Current state, or for a departed viewer the state when they left."""
    if viewer.departed:
        if viewer.leave_ref is not None:
            return dict(get_state(conn, viewer.leave_ref))
        return timeline.get_state_ids_at(conn, room_id, viewer.cap or 0)
    return timeline.get_current_state_ids(conn, room_id)


def visible_events(conn: sa.Connection, viewer: Viewer, evs: list[StoredEvent]) -> list[StoredEvent]:
    """History visibility (exact step 3) and, for a departed viewer, the cap."""
    if viewer.cap is not None:
        evs = [e for e in evs if e.stream_ordering <= viewer.cap]
    return timeline.filter_visible_events_with_join(conn, viewer.user_id, evs, viewer.membership, viewer.last_join)


def _served(ev: StoredEvent | None, room_id: str) -> bool:
    return (
        ev is not None
        and ev.room_id == room_id
        and not ev.outlier
        and ev.rejection_reason is None
        and not ev.soft_failed
    )


def _formatter(
    conn: sa.Connection, room_id: str, viewer: Viewer, now_ms: int
) -> Callable[[list[StoredEvent]], list[dict[str, Any]]]:
    room_version = timeline.get_room_version(conn, room_id) or "1"

    def fmt(evs: list[StoredEvent]) -> list[dict[str, Any]]:
        return format_events(conn, evs, user_id=viewer.user_id, device_id=viewer.device_id,
                             room_version=room_version, now_ms=now_ms, include_room_id=True)

    return fmt


# ------------------------------------------------------------------------- walking


@dataclass(slots=True)
class Walk:
    events: list[StoredEvent]  # kept events, in walk order
    last: StoredEvent | None  # the last row examined
    more: bool  # rows remain beyond ``last`` within the bounds


def walk(
    conn: sa.Connection,
    room_id: str,
    *,
    after: int,
    upto: int | None,
    backwards: bool,
    want: int,
    keep: Callable[[list[StoredEvent]], set[str]],
    max_scan: int | None = None,
) -> Walk:
    """Served rows with ``after < ordering <= upto`` (``upto`` None: no bound), newest
    first when ``backwards``, until ``want`` of them pass ``keep`` (which answers a
    batch at once) or ``max_scan`` (default :data:`MAX_SCAN`) rows were examined."""
    if max_scan is None:
        max_scan = MAX_SCAN
    out: list[StoredEvent] = []
    last: StoredEvent | None = None
    more = True
    scanned = 0
    lo, hi = after, upto
    if hi is not None and lo >= hi:
        return Walk([], None, False)
    n = 0
    while len(out) < want and scanned < max_scan:
        # The first batch is what is still wanted (all visible: one query); batches
        # then double, so a long invisible stretch costs O(log) queries.
        n = min(max(want - len(out), 2 * n), max_scan - scanned)
        batch = timeline.get_timeline(conn, room_id, after=lo, upto=hi, limit=n + 1, backwards=backwards)
        if backwards:
            batch.reverse()
        has_more = len(batch) > n
        batch = batch[:n]
        if not batch:
            more = False
            break
        kept = keep(batch)
        for index, ev in enumerate(batch):
            scanned += 1
            last = ev
            if ev.event_id in kept:
                out.append(ev)
                if len(out) == want:
                    more = has_more or index < len(batch) - 1
                    break
        else:
            more = has_more
            if not has_more:
                break
        assert last is not None
        if backwards:
            hi = last.stream_ordering - 1
        else:
            lo = last.stream_ordering
    return Walk(out, last, more)


def _keeper(
    conn: sa.Connection, room_id: str, viewer: Viewer, f: RoomEventFilter
) -> Callable[[list[StoredEvent]], set[str]]:
    def keep(batch: list[StoredEvent]) -> set[str]:
        allowed = [e for e in batch if event_allowed(f, e.json, room_id=room_id)]
        return {e.event_id for e in visible_events(conn, viewer, allowed)}

    return keep


def lazy_members(conn: sa.Connection, evs: list[StoredEvent]) -> list[StoredEvent]:
    """Each sender's ``m.room.member`` event as of their last event in ``evs``."""
    ref_of: dict[str, str] = {}
    for ev in sorted(evs, key=lambda e: e.stream_ordering):
        sender = ev.json.get("sender")
        if isinstance(sender, str) and ev.state_after_ref is not None:
            ref_of[sender] = ev.state_after_ref
    by_ref: dict[str, list[str]] = {}
    for sender, ref in ref_of.items():
        by_ref.setdefault(ref, []).append(sender)
    ids: set[str] = set()
    for ref, senders in by_ref.items():
        ids.update(timeline.get_member_event_ids_at(conn, ref, senders).values())
    return sorted(get_events(conn, ids).values(), key=lambda e: e.stream_ordering)


# --------------------------------------------------------------------------- compute


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    room_id: str
    user_id: str
    device_id: str
    now_ms: int


def compute_state(conn: sa.Connection, req: ReadRequest) -> list[dict[str, Any]]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    require_room_access(conn, req.room_id, viewer)
    ids = viewer_state_ids(conn, req.room_id, viewer)
    evs = sorted(get_events(conn, ids.values()).values(), key=lambda e: e.stream_ordering)
    return _formatter(conn, req.room_id, viewer, req.now_ms)(evs)


def compute_state_event(conn: sa.Connection, req: ReadRequest, event_type: str, state_key: str) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    require_room_access(conn, req.room_id, viewer)
    if viewer.departed:
        event_id = viewer_state_ids(conn, req.room_id, viewer).get((event_type, state_key))
    else:
        event_id = timeline.get_current_state_event_id(conn, req.room_id, event_type, state_key)
    ev = timeline.get_event(conn, event_id) if event_id is not None else None
    if ev is None:
        # rooms.yaml 404: "The room has no state with the given type or key."
        raise not_found(f"no {event_type} state with key {state_key!r} in this room")
    return _formatter(conn, req.room_id, viewer, req.now_ms)([ev])[0]


def _membership_wanted(value: str | None, membership: str | None, not_membership: str | None) -> bool:
    # rooms.yaml /members: "When specified alongside not_membership, the two
    # parameters create an 'or' condition: either the membership *is* the same as
    # membership **or** *is not* the same as not_membership."
    if membership is not None and not_membership is not None:
        return value == membership or value != not_membership
    if membership is not None:
        return value == membership
    if not_membership is not None:
        return value != not_membership
    return True


def compute_members(
    conn: sa.Connection,
    req: ReadRequest,
    at: int | None,
    membership: str | None,
    not_membership: str | None,
) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    require_room_access(conn, req.room_id, viewer)
    if at is not None and (viewer.cap is None or at < viewer.cap):
        # rooms.yaml "at": "The point in time (pagination token) to return members for".
        ids = timeline.get_state_ids_at(conn, req.room_id, at)
    else:
        ids = viewer_state_ids(conn, req.room_id, viewer)
    member_ids = [v for (t, _k), v in ids.items() if t == _MEMBER]
    evs = []
    for ev in get_events(conn, member_ids).values():
        content = ev.json.get("content")
        value = content.get("membership") if isinstance(content, dict) else None
        if _membership_wanted(value, membership, not_membership):
            evs.append(ev)
    evs.sort(key=lambda e: (e.json.get("state_key") or "", e.stream_ordering))
    return {"chunk": _formatter(conn, req.room_id, viewer, req.now_ms)(evs)}


def compute_joined_members(conn: sa.Connection, req: ReadRequest) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    if viewer.membership != "join" and not world_readable_now(conn, req.room_id):
        # rooms.yaml /joined_members: "The current user must be in the room".
        raise forbidden("you are not joined to this room")
    joined: dict[str, dict[str, str]] = {}
    for user_id, event in timeline.get_room_members(conn, req.room_id).items():
        content = event.get("content")
        if not isinstance(content, dict) or content.get("membership") != "join":
            continue
        entry: dict[str, str] = {}
        if isinstance(content.get("displayname"), str):
            entry["display_name"] = content["displayname"]
        if isinstance(content.get("avatar_url"), str):
            entry["avatar_url"] = content["avatar_url"]
        joined[user_id] = entry
    return {"joined": joined}


def _visible_event(conn: sa.Connection, viewer: Viewer, room_id: str, event_id: str) -> StoredEvent:
    ev = timeline.get_event(conn, event_id)
    if ev is None or not _served(ev, room_id) or not visible_events(conn, viewer, [ev]):
        # rooms.yaml /event 404: "The event was not found or you do not have
        # permission to read this event." Unknown, elsewhere, outliers, rejected and
        # soft-failed events (never served) and invisible ones look the same.
        raise not_found("event not found")
    return ev


def compute_event(conn: sa.Connection, req: ReadRequest, event_id: str) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    ev = _visible_event(conn, viewer, req.room_id, event_id)
    return _formatter(conn, req.room_id, viewer, req.now_ms)([ev])[0]


def compute_context(
    conn: sa.Connection, req: ReadRequest, event_id: str, limit: int, f: RoomEventFilter
) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    ev = _visible_event(conn, viewer, req.room_id, event_id)
    keep = _keeper(conn, req.room_id, viewer, f)
    # event_context.yaml "limit": "The limit applies to the sum of the events_before
    # and events_after arrays."
    before_n = limit // 2
    before = walk(conn, req.room_id, after=_MIN_POSITION, upto=ev.stream_ordering - 1, backwards=True,
                  want=before_n, keep=keep)
    after = walk(conn, req.room_id, after=ev.stream_ordering, upto=viewer.cap, backwards=False,
                 want=limit - before_n, keep=keep)
    start = position_token((before.last.stream_ordering if before.last else ev.stream_ordering) - 1)
    end = position_token(after.last.stream_ordering if after.last else ev.stream_ordering)
    # "state: The state of the room at the last event returned."
    last = after.events[-1] if after.events else ev
    state: list[StoredEvent] = []
    if last.state_after_ref is not None:
        if f.lazy_load_members:
            senders = {e.json.get("sender") for e in [*before.events, ev, *after.events]}
            ids = set(timeline.get_member_event_ids_at(
                conn, last.state_after_ref, [s for s in senders if isinstance(s, str)]).values())
        else:
            ids = set(get_state(conn, last.state_after_ref).values())
        state = sorted(get_events(conn, ids).values(), key=lambda e: e.stream_ordering)
        # "The filter is only applied to events_before, events_after, and state."
        state = [e for e in state if event_allowed(f, e.json, room_id=req.room_id)]
    fmt = _formatter(conn, req.room_id, viewer, req.now_ms)
    return {
        "start": start,
        "end": end,
        "events_before": fmt(before.events),
        "event": fmt([ev])[0],
        "events_after": fmt(after.events),
        "state": fmt(state),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesQuery:
    backwards: bool
    from_token: str | None
    from_pos: int | None
    to_pos: int | None
    limit: int
    filter: RoomEventFilter


def compute_messages(conn: sa.Connection, req: ReadRequest, q: MessagesQuery) -> dict[str, Any]:
    viewer = viewer_of(conn, req.room_id, req.user_id, req.device_id)
    require_room_access(conn, req.room_id, viewer)
    keep = _keeper(conn, req.room_id, viewer, q.filter)
    end: str | None
    if q.backwards:
        top = q.from_pos if q.from_pos is not None else timeline.max_stream_ordering(conn)
        if viewer.cap is not None:
            top = min(top, viewer.cap)
        start = q.from_token if q.from_token is not None else position_token(top)
        after = q.to_pos if q.to_pos is not None else _MIN_POSITION
        result = walk(conn, req.room_id, after=after, upto=top, backwards=True, want=q.limit, keep=keep)
        if result.last is not None:
            end = position_token(result.last.stream_ordering - 1) if result.more else None
        else:
            end = position_token(top) if result.more else None
    else:
        low = q.from_pos if q.from_pos is not None else _MIN_POSITION
        bounds = [b for b in (q.to_pos, viewer.cap) if b is not None]
        high = min(bounds) if bounds else None
        start = q.from_token if q.from_token is not None else position_token(low)
        result = walk(conn, req.room_id, after=low, upto=high, backwards=False, want=q.limit, keep=keep)
        if result.last is not None:
            # Unbounded: the room's end moves on, so a client may resume from here.
            end = position_token(result.last.stream_ordering) if result.more or high is None else None
        else:
            end = position_token(low) if result.more else None
    fmt = _formatter(conn, req.room_id, viewer, req.now_ms)
    body: dict[str, Any] = {"chunk": fmt(result.events), "start": start}
    if end is not None:
        body["end"] = end
    if q.filter.lazy_load_members and result.events:
        body["state"] = fmt(lazy_members(conn, result.events))
    return body


# ----------------------------------------------------------------------------- views


async def _read_request(room_id: str) -> ReadRequest:
    d = deps()
    who = await requester()
    return ReadRequest(room_id=room_id, user_id=who.user_id, device_id=who.device_id, now_ms=d.clock.time_ms())


def _filter_param() -> RoomEventFilter:
    raw = request.args.get("filter")
    if raw is None or raw == "":
        return DEFAULT_ROOM_EVENT_FILTER
    try:
        return parse_room_event_filter_param(raw)
    except FilterError as e:
        raise MatrixError(e.errcode, 400, e.error) from None


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name)
    if value is not None and value not in allowed:
        raise invalid_param(f"query parameter {name!r} must be one of {', '.join(allowed)}")
    return value


@client_route(blueprint, "/rooms/<room_id>/state", ["GET"])
async def get_room_state(room_id: str):
    req = await _read_request(room_id)
    events = await deps().db.read(compute_state, req)
    return json_response(events)  # type: ignore[arg-type]  # rooms.yaml: a JSON array


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>", ["GET"])
async def get_state_event_empty_key(room_id: str, event_type: str):
    return await _get_state_event(room_id, event_type, "")


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>/", ["GET"])
async def get_state_event_empty_key_slash(room_id: str, event_type: str):
    # rooms.yaml stateKey: "When an empty string, the trailing slash on this endpoint
    # is optional." (The PUT spelling lives in api.client.rooms.)
    return await _get_state_event(room_id, event_type, "")


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>/<path:state_key>", ["GET"])
async def get_state_event(room_id: str, event_type: str, state_key: str):
    return await _get_state_event(room_id, event_type, state_key)


async def _get_state_event(room_id: str, event_type: str, state_key: str):
    req = await _read_request(room_id)
    # rooms.yaml "format" (added in v1.16): "content (the default) will return only
    # the content of the state event. event will return the entire event".
    fmt = _choice("format", ("content", "event")) or "content"
    event = await deps().db.read(compute_state_event, req, event_type, state_key)
    return json_response(event if fmt == "event" else event["content"])


@client_route(blueprint, "/rooms/<room_id>/members", ["GET"])
async def get_members(room_id: str):
    req = await _read_request(room_id)
    at_raw = request.args.get("at")
    at = parse_position(at_raw, "at") if at_raw else None
    membership = _choice("membership", _MEMBERSHIPS)
    not_membership = _choice("not_membership", _MEMBERSHIPS)
    body = await deps().db.read(compute_members, req, at, membership, not_membership)
    return json_response(body)


@client_route(blueprint, "/rooms/<room_id>/joined_members", ["GET"])
async def get_joined_members(room_id: str):
    req = await _read_request(room_id)
    return json_response(await deps().db.read(compute_joined_members, req))


@client_route(blueprint, "/rooms/<room_id>/event/<event_id>", ["GET"])
async def get_event(room_id: str, event_id: str):
    req = await _read_request(room_id)
    return json_response(await deps().db.read(compute_event, req, event_id))


@client_route(blueprint, "/rooms/<room_id>/context/<event_id>", ["GET"])
async def get_context(room_id: str, event_id: str):
    req = await _read_request(room_id)
    limit = query_int("limit", DEFAULT_LIMIT, minimum=0, maximum=MAX_LIMIT) or 0
    f = _filter_param()
    return json_response(await deps().db.read(compute_context, req, event_id, limit, f))


@client_route(blueprint, "/rooms/<room_id>/messages", ["GET"])
async def get_messages(room_id: str):
    req = await _read_request(room_id)
    direction = request.args.get("dir")
    if direction is None:
        raise MatrixError("M_MISSING_PARAM", 400, "missing query parameter 'dir'")
    if direction not in ("b", "f"):
        raise invalid_param("query parameter 'dir' must be 'b' or 'f'")
    from_raw = request.args.get("from") or None
    to_raw = request.args.get("to") or None
    f = _filter_param()
    limit_raw = request.args.get("limit")
    default = f.limit if f.limit is not None and limit_raw is None else DEFAULT_LIMIT
    limit = query_int("limit", min(default, MAX_LIMIT), minimum=0, maximum=MAX_LIMIT) or 0
    q = MessagesQuery(
        backwards=direction == "b",
        from_token=from_raw,
        from_pos=parse_position(from_raw, "from") if from_raw is not None else None,
        to_pos=parse_position(to_raw, "to") if to_raw is not None else None,
        limit=limit,
        filter=f,
    )
    d = deps()
    body = await d.db.read(compute_messages, req, q)
    # Paging backwards past the history we hold: backfill from the servers in the
    # room (server-server API "Backfilling and retrieving missing events"), then
    # read the page again. Only when the walk ran out of rows (no ``end``), not
    # when ``to`` bounded it.
    rounds = 0
    while (
        q.backwards and q.to_pos is None and limit > 0 and "end" not in body
        and len(body["chunk"]) < limit and rounds < _BACKFILL_ROUNDS
    ):
        rounds += 1
        if not await _backfill(d, room_id, max(limit, _BACKFILL_MIN)):
            break
        body = await d.db.read(compute_messages, req, q)
    return json_response(body)


#: Events asked for per backfill (at least), and backfills per ``/messages`` request.
_BACKFILL_MIN = 20
_BACKFILL_ROUNDS = 3


async def _backfill(d: Any, room_id: str, limit: int) -> bool:
    """Ask the room's actor to backfill; True if it stored any history. A busy or
    unreachable room only means the client gets the history we hold."""
    from api.rooms_service import ask_room
    from roomactors.room.messages import Backfill, Backfilled

    if d.federation is None:
        return False  # no federation: nobody to backfill from
    try:
        result = await ask_room(d, room_id, lambda reply: Backfill(limit=limit, reply=reply))
    except MatrixError:
        return False
    return isinstance(result, Backfilled) and result.stored > 0
