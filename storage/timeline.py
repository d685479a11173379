"""Client reads: memberships, timelines, state deltas and visibility lookups.

Theory of operation
-------------------
What /sync, /messages, /context, /members and friends read, as synchronous
repository functions for ``Database.read`` (one consistent WAL snapshot per call).
Only *served* events are returned by the timeline functions: never outliers,
rejected or soft-failed events (spec: soft-failed events are not served to
clients).

Positions are ``events.stream_ordering`` values (global, gap-free in commit
order because one writer thread assigns them).

* A user's rooms come from ``current_state`` (their ``m.room.member`` rows) and
  their membership *changes* since a position from ``current_state_deltas``
  (indexed by ``state_key``).
* History visibility (``filter_visible_events``) needs, per event, the
  ``m.room.history_visibility`` value and the user's membership *before* it. They
  are read from the event's state snapshot (the prev event's, for an event that
  itself changes one of those two keys) with a query that walks the snapshot chain
  for just those two keys, cached per snapshot within the call, and decided by the
  pure ``roomactors.protocol.visibility.event_visible``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.visibility import event_visible

from .rooms import StoredEvent, _chain_cte, _load_json, _sql, _stored_event, _STORED_EVENT_COLUMNS, get_events
from .schema import current_state, current_state_deltas, events, redactions, state_deltas, txn_ids

__all__ = [
    "Membership",
    "max_stream_ordering",
    "get_memberships",
    "get_membership_changes",
    "get_membership_at",
    "get_timeline",
    "get_state_deltas",
    "get_current_state_ids",
    "get_room_members",
    "get_redactions",
    "get_txn_ids",
    "get_state_subset",
    "filter_visible_events",
    "rooms_with_events_since",
    "get_event",
]

_MEMBER = "m.room.member"
_HISTORY_VISIBILITY = "m.room.history_visibility"


@dataclass(frozen=True, slots=True)
class Membership:
    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    event: dict[str, Any]


def max_stream_ordering(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(events.c.stream_ordering))).scalar() or 0)


def _membership_rows(rows: Iterable[Any]) -> list[Membership]:
    out = []
    for room_id, event_id, stream_ordering, text in rows:
        event = _load_json(text)
        content = event.get("content")
        membership = content.get("membership") if isinstance(content, dict) else None
        if isinstance(membership, str):
            out.append(Membership(room_id, membership, event_id, stream_ordering, event))
    return out


def get_memberships(conn: sa.Connection, user_id: str) -> dict[str, Membership]:
    """The user's current membership in every room this server knows of."""
    query = (
        sa.select(current_state.c.room_id, events.c.event_id, events.c.stream_ordering, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.type == _MEMBER, current_state.c.state_key == user_id)
    )
    return {m.room_id: m for m in _membership_rows(conn.execute(query))}


def get_membership_changes(conn: sa.Connection, user_id: str, since: int, upto: int) -> set[str]:
    """Rooms where the user's current membership changed in ``(since, upto]``."""
    d = current_state_deltas
    query = sa.select(d.c.room_id).where(
        d.c.state_key == user_id, d.c.type == _MEMBER, d.c.stream_ordering > since, d.c.stream_ordering <= upto
    )
    return set(conn.execute(query).scalars())


def get_membership_at(conn: sa.Connection, room_id: str, user_id: str, position: int) -> str | None:
    """The user's current-state membership in the room as of stream ``position``."""
    d = current_state_deltas
    event_id = conn.execute(
        sa.select(d.c.event_id)
        .where(d.c.state_key == user_id, d.c.type == _MEMBER, d.c.room_id == room_id, d.c.stream_ordering <= position)
        .order_by(d.c.stream_ordering.desc())
        .limit(1)
    ).scalar()
    if event_id is None:
        return None
    text = conn.execute(sa.select(events.c.json).where(events.c.event_id == event_id)).scalar()
    content = _load_json(text).get("content") if text else None
    membership = content.get("membership") if isinstance(content, dict) else None
    return membership if isinstance(membership, str) else None


def rooms_with_events_since(conn: sa.Connection, room_ids: Iterable[str], since: int, upto: int) -> set[str]:
    wanted = list(room_ids)
    if not wanted:
        return set()
    query = (
        sa.select(events.c.room_id)
        .where(events.c.stream_ordering > since, events.c.stream_ordering <= upto, events.c.room_id.in_(wanted))
        .distinct()
    )
    return set(conn.execute(query).scalars())


def _served() -> list[sa.ColumnElement[bool]]:
    return [events.c.outlier.is_(False), events.c.rejection_reason.is_(None), events.c.soft_failed.is_(False)]


def get_timeline(
    conn: sa.Connection,
    room_id: str,
    *,
    after: int = 0,
    upto: int | None = None,
    limit: int,
    backwards: bool = True,
) -> list[StoredEvent]:
    """Served events with ``after < stream_ordering <= upto``, at most ``limit``.
    ``backwards``: the *latest* ``limit`` of them (what a sync timeline wants),
    ``False``: the earliest. Always returned in stream order (oldest first)."""
    query = sa.select(*_STORED_EVENT_COLUMNS).where(events.c.room_id == room_id, events.c.stream_ordering > after, *_served())
    if upto is not None:
        query = query.where(events.c.stream_ordering <= upto)
    order = events.c.stream_ordering.desc() if backwards else events.c.stream_ordering
    rows = [_stored_event(r) for r in conn.execute(query.order_by(order).limit(limit))]
    if backwards:
        rows.reverse()
    return rows


def get_event(conn: sa.Connection, event_id: str) -> StoredEvent | None:
    return get_events(conn, [event_id]).get(event_id)


def get_state_deltas(conn: sa.Connection, room_id: str, since: int, upto: int) -> dict[tuple[str, str], str | None]:
    """The room's current-state changes in ``(since, upto]``, last one per key."""
    d = current_state_deltas
    query = (
        sa.select(d.c.type, d.c.state_key, d.c.event_id)
        .where(d.c.room_id == room_id, d.c.stream_ordering > since, d.c.stream_ordering <= upto)
        .order_by(d.c.stream_ordering)
    )
    return {(t, k): e for t, k, e in conn.execute(query)}


def get_current_state_ids(conn: sa.Connection, room_id: str) -> dict[tuple[str, str], str]:
    query = sa.select(current_state.c.type, current_state.c.state_key, current_state.c.event_id).where(
        current_state.c.room_id == room_id
    )
    return {(t, k): e for t, k, e in conn.execute(query)}


def get_room_members(conn: sa.Connection, room_id: str) -> dict[str, dict[str, Any]]:
    """user ID -> current m.room.member event JSON."""
    query = (
        sa.select(current_state.c.state_key, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.room_id == room_id, current_state.c.type == _MEMBER)
    )
    return {k: _load_json(text) for k, text in conn.execute(query)}


def get_redactions(conn: sa.Connection, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
    """target event ID -> the (first stored) redaction event that redacts it."""
    wanted = list(event_ids)
    if not wanted:
        return {}
    pairs = conn.execute(
        sa.select(redactions.c.redacts, redactions.c.event_id).where(redactions.c.redacts.in_(wanted))
    ).all()
    found = get_events(conn, [e for _, e in pairs])
    out: dict[str, StoredEvent] = {}
    for target, redaction_id in pairs:
        if target not in out and redaction_id in found:
            out[target] = found[redaction_id]
    return out


def get_txn_ids(conn: sa.Connection, event_ids: Iterable[str], user_id: str, device_id: str) -> dict[str, str]:
    """event ID -> txnId, for the events this device sent with a transaction ID."""
    wanted = list(event_ids)
    if not wanted:
        return {}
    query = sa.select(txn_ids.c.event_id, txn_ids.c.txn_id).where(
        txn_ids.c.event_id.in_(wanted), txn_ids.c.user_id == user_id, txn_ids.c.device_id == device_id
    )
    return {e: t for e, t in conn.execute(query)}


def _text(value: str) -> sa.ColumnElement[str]:
    """A string literal compiled into the SQL (the compiled statement binds only :ref, :user_id)."""
    return sa.literal_column("'" + value.replace("'", "''") + "'", sa.Text)


def _subset_query() -> str:
    chain = _chain_cte(stop_at_skip_base=False)
    d = state_deltas
    query = (
        sa.select(d.c.type, d.c.state_key, d.c.event_id, sa.func.min(chain.c.hop).label("hop"))
        .join_from(chain, d, d.c.snapshot_ref == chain.c.ref)
        .where(
            sa.or_(
                sa.and_(d.c.type == _text(_HISTORY_VISIBILITY), d.c.state_key == _text("")),
                sa.and_(d.c.type == _text(_MEMBER), d.c.state_key == sa.bindparam("user_id")),
            )
        )
        .group_by(d.c.type, d.c.state_key)
    )
    return _sql(query)


_SUBSET_QUERY = _subset_query()


def get_state_subset(conn: sa.Connection, ref: str, user_id: str) -> dict[tuple[str, str], str]:
    """The history visibility and ``user_id``'s member entries of snapshot ``ref``."""
    raw = conn.connection.driver_connection
    rows = raw.execute(_SUBSET_QUERY, {"ref": ref, "user_id": user_id}).fetchall()
    return {(t, k): e for t, k, e, _hop in rows if e is not None}


def filter_visible_events(
    conn: sa.Connection,
    user_id: str,
    candidates: list[StoredEvent],
    current_membership: str | None,
) -> list[StoredEvent]:
    """The candidates ``user_id`` may see (history visibility), in order."""
    if not candidates:
        return []
    subsets: dict[str, dict[tuple[str, str], str]] = {}
    jsons: dict[str, dict[str, Any]] = {}

    def subset(ref: str | None) -> dict[tuple[str, str], str]:
        if ref is None:
            return {}
        if ref not in subsets:
            subsets[ref] = get_state_subset(conn, ref, user_id)
        return subsets[ref]

    before_refs: dict[str, str | None] = {}
    need_prev: list[StoredEvent] = []
    for ev in candidates:
        key = (ev.json.get("type"), ev.json.get("state_key"))
        if key in ((_HISTORY_VISIBILITY, ""), (_MEMBER, user_id)):
            need_prev.append(ev)
        else:
            before_refs[ev.event_id] = ev.state_after_ref
    if need_prev:
        prev_ids = {}
        for ev in need_prev:
            prevs = ev.json.get("prev_events") or []
            first = prevs[0] if prevs else None
            if isinstance(first, list):  # v1/v2 [event_id, hashes] pairs
                first = first[0] if first else None
            prev_ids[ev.event_id] = first
        prev_rows = get_events(conn, [p for p in prev_ids.values() if isinstance(p, str)])
        for ev in need_prev:
            prev = prev_rows.get(prev_ids[ev.event_id]) if isinstance(prev_ids[ev.event_id], str) else None
            before_refs[ev.event_id] = prev.state_after_ref if prev is not None else None
    state_ids: dict[str, dict[tuple[str, str], str]] = {
        ev.event_id: subset(before_refs[ev.event_id]) for ev in candidates
    }
    needed = {e for s in state_ids.values() for e in s.values()} - jsons.keys()
    for event_id, stored in get_events(conn, needed).items():
        jsons[event_id] = stored.json
    out = []
    for ev in candidates:
        state = {k: jsons[e] for k, e in state_ids[ev.event_id].items() if e in jsons}
        if event_visible(ev.json, state, user_id, current_membership=current_membership):
            out.append(ev)
    return out


# ----------------------------------------------------------------------------------
# Room reads (/state, /members, /event, /context, /messages: api/client/room_reads.py)
# ----------------------------------------------------------------------------------

__all__ += [
    "get_membership",
    "get_last_join_ordering",
    "is_forgotten",
    "get_room_version",
    "get_state_ids_at",
    "get_member_event_ids_at",
    "filter_visible_events_with_join",
]


def get_membership(conn: sa.Connection, room_id: str, user_id: str) -> Membership | None:
    """The user's current membership in one room (``None``: never had one)."""
    query = (
        sa.select(current_state.c.room_id, events.c.event_id, events.c.stream_ordering, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.room_id == room_id,
            current_state.c.type == _MEMBER,
            current_state.c.state_key == user_id,
        )
    )
    rows = _membership_rows(conn.execute(query))
    return rows[0] if rows else None


def get_last_join_ordering(conn: sa.Connection, room_id: str, user_id: str) -> int | None:
    """The stream ordering of the user's latest ``join`` that entered the room's
    current state, or ``None`` if they never joined. Walks the user's membership
    changes newest first (``current_state_deltas_key``); a user has few."""
    d = current_state_deltas
    query = (
        sa.select(events.c.stream_ordering, events.c.json)
        .join_from(d, events, events.c.event_id == d.c.event_id)
        .where(d.c.state_key == user_id, d.c.type == _MEMBER, d.c.room_id == room_id)
        .order_by(d.c.stream_ordering.desc())
    )
    for ordering, text in conn.execute(query):
        content = _load_json(text).get("content")
        if isinstance(content, dict) and content.get("membership") == "join":
            return int(ordering)
    return None


def is_forgotten(conn: sa.Connection, user_id: str, room_id: str) -> bool:
    from .schema import forgotten_rooms

    query = sa.select(forgotten_rooms.c.room_id).where(
        forgotten_rooms.c.user_id == user_id, forgotten_rooms.c.room_id == room_id
    )
    return conn.execute(query).first() is not None


def get_room_version(conn: sa.Connection, room_id: str) -> str | None:
    from .schema import rooms

    return conn.execute(sa.select(rooms.c.room_version).where(rooms.c.room_id == room_id)).scalar()


def get_state_ids_at(conn: sa.Connection, room_id: str, position: int) -> dict[tuple[str, str], str]:
    """The room's state at stream ``position``: the state after the latest served
    event with ``stream_ordering <= position`` (empty before the room's first event)."""
    from .rooms import get_state

    ref = conn.execute(
        sa.select(events.c.state_after_ref)
        .where(
            events.c.room_id == room_id,
            events.c.stream_ordering <= position,
            events.c.state_after_ref.is_not(None),
            *_served(),
        )
        .order_by(events.c.stream_ordering.desc())
        .limit(1)
    ).scalar()
    return dict(get_state(conn, ref)) if ref is not None else {}


_MEMBERS_CHUNK = 500


def _members_query() -> sa.Select:
    chain = _chain_cte(stop_at_skip_base=False)
    d = state_deltas
    return (
        sa.select(d.c.state_key, d.c.event_id, sa.func.min(chain.c.hop).label("hop"))
        .join_from(chain, d, d.c.snapshot_ref == chain.c.ref)
        .where(d.c.type == _MEMBER, d.c.state_key.in_(sa.bindparam("user_ids", expanding=True)))
        .group_by(d.c.state_key)
    )


_MEMBERS_QUERY = _members_query()


def get_member_event_ids_at(conn: sa.Connection, ref: str, user_ids: Iterable[str]) -> dict[str, str]:
    """``user_id -> m.room.member event ID`` in snapshot ``ref``, for just those users
    (lazy-loading members: one walk of the snapshot chain, not the whole state).
    The newest row per key wins (lowest ``hop``; SQLite's bare-column rule, see
    ``rooms._merged_rows``); a NULL row means the key was removed."""
    wanted = sorted(set(user_ids))
    out: dict[str, str] = {}
    for start in range(0, len(wanted), _MEMBERS_CHUNK):
        chunk = wanted[start : start + _MEMBERS_CHUNK]
        for state_key, event_id, _hop in conn.execute(_MEMBERS_QUERY, {"ref": ref, "user_ids": chunk}):
            if event_id is not None:
                out[state_key] = event_id
    return out


def filter_visible_events_with_join(
    conn: sa.Connection,
    user_id: str,
    candidates: list[StoredEvent],
    current_membership: str | None,
    last_join_ordering: int | None,
) -> list[StoredEvent]:
    """:func:`filter_visible_events` with step 3 of the spec algorithm answered
    exactly ("Room History Visibility" → "Server behaviour": "If history_visibility
    was set to shared, and the user joined the room at any point after the event was
    sent, allow"): the user joined after an event iff their latest join
    (``last_join_ordering``) is after it — also when they have left since.

    ``current_membership`` only matters in step 3 (``event_visible`` reads it
    nowhere else), where ``"join"`` means "joined after". So the events before the
    latest join that the plain pass denies get a second pass as if joined.
    """
    visible = filter_visible_events(conn, user_id, candidates, current_membership)
    if current_membership == "join" or last_join_ordering is None:
        return visible
    seen = {e.event_id for e in visible}
    earlier = [e for e in candidates if e.event_id not in seen and e.stream_ordering < last_join_ordering]
    if not earlier:
        return visible
    seen.update(e.event_id for e in filter_visible_events(conn, user_id, earlier, "join"))
    return [e for e in candidates if e.event_id in seen]


__all__ += ["get_current_state_event_id"]


def get_current_state_event_id(conn: sa.Connection, room_id: str, type_: str, state_key: str) -> str | None:
    """One key of the room's current state (one primary-key probe)."""
    query = sa.select(current_state.c.event_id).where(
        current_state.c.room_id == room_id, current_state.c.type == type_, current_state.c.state_key == state_key
    )
    return conn.execute(query).scalar()


# ---------------------------------------------------------------- member summaries
# Membership read in SQL (json_extract) so no member event is decoded in Python:
# summaries, unread-count contexts and presence peers touch every member row.

_MEMBERSHIP_SQL = sa.func.json_extract(events.c.json, "$.content.membership")


def get_member_list(conn: sa.Connection, room_id: str) -> dict[str, str]:
    """user ID -> current membership, for every member row of the room."""
    query = (
        sa.select(current_state.c.state_key, _MEMBERSHIP_SQL)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.room_id == room_id, current_state.c.type == _MEMBER)
    )
    return {k: m for k, m in conn.execute(query) if isinstance(m, str)}


def count_joined_members(conn: sa.Connection, room_id: str) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
        .where(current_state.c.room_id == room_id, current_state.c.type == _MEMBER, _MEMBERSHIP_SQL == "join")
    )
    return int(conn.execute(query).scalar() or 0)


def get_rooms_shared_with(conn: sa.Connection, user_ids: Iterable[str], room_ids: Iterable[str]) -> set[str]:
    """The users among ``user_ids`` joined to at least one of ``room_ids``."""
    users, rooms_ = list(user_ids), list(room_ids)
    if not users or not rooms_:
        return set()
    query = (
        sa.select(current_state.c.state_key)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.type == _MEMBER,
            current_state.c.state_key.in_(users),
            current_state.c.room_id.in_(rooms_),
            _MEMBERSHIP_SQL == "join",
        )
        .distinct()
    )
    return set(conn.execute(query).scalars())


def get_power_state(conn: sa.Connection, room_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The room's current (m.room.power_levels, m.room.create) events, or None."""
    query = (
        sa.select(current_state.c.type, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.room_id == room_id,
            current_state.c.state_key == "",
            current_state.c.type.in_(["m.room.power_levels", "m.room.create"]),
        )
    )
    found = {t: _load_json(text) for t, text in conn.execute(query)}
    return found.get("m.room.power_levels"), found.get("m.room.create")


__all__ += ["get_member_list", "count_joined_members", "get_rooms_shared_with", "get_power_state"]
