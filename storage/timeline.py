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

Compiled reads
~~~~~~~~~~~~~~
An incremental /sync runs ~25 of these small reads, so the ones on its path are
run as ``storage.rooms`` runs the write path: each statement is compiled ONCE at
import from a Core statement (:func:`_compile`, which also checks that it binds
exactly the parameters it is given, so no literal is left behind as an unbound
parameter) and executed on the sqlite3 connection under the SQLAlchemy
``Connection`` (:func:`_raw`), inside the caller's read transaction, with named
parameters. That skips Core's per-call statement construction, cache-key
generation and result wrapping (hundreds of µs of Python per query on the
profiled host; the raw call is a few µs). Rows come back as plain tuples; Boolean
columns are converted with ``bool()`` as Core's result processor would.

An ``IN`` list is expanded into ``:name_0, :name_1, …`` by :class:`_InQuery`, in
chunks of at most ``_CHUNK`` values (as ``storage.rooms.get_events`` chunks), each
chunk padded (repeating its last value, which an ``IN`` ignores) to the next of a
few bucket sizes, so a statement has a handful of renderings, each built once and
then reused from sqlite3's statement cache.

Member events are not decoded to read a membership: SQL reads it with
``json_extract`` and :class:`Membership` keeps the event's JSON text, decoding it
only when ``.event`` is used.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import FrozenInstanceError
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.visibility import event_visible

from .compiled import compiled, raw
from .rooms import _STORED_EVENT_COLUMNS, StoredEvent, _chain_cte, _load_json, _sql
from .schema import current_state, current_state_deltas, events, redactions, rooms, state_deltas, txn_ids

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


# ------------------------------------------------------------------ compiled SQL


# ``storage.compiled``: statements compiled once, run on the raw sqlite3 connection
# (a Python literal would compile to a bind parameter of its own: use :func:`_text`).
_raw = raw
_compile = compiled


def _text(value: str) -> sa.ColumnElement[str]:
    """A string literal compiled into the SQL (not a bind parameter)."""
    return sa.literal_column("'" + value.replace("'", "''") + "'", sa.Text)


_CHUNK = 500  # values per IN (...) list, far below SQLite's variable limit


def _bucket(n: int) -> int:
    """The bucket size for a chunk of ``n`` (1 ≤ n ≤ _CHUNK) values: a power of two, or _CHUNK."""
    return min(1 << (n - 1).bit_length(), _CHUNK)


class _InQuery:
    """A statement with ``IN`` lists (``sa.bindparam(name, expanding=True)``),
    compiled once; each list is chunked and padded to a bucket size, and the SQL
    for each combination of bucket sizes is rendered once."""

    def __init__(self, stmt: sa.Executable, lists: tuple[str, ...], fixed: tuple[str, ...] = ()) -> None:
        self._template = _compile(stmt, *lists, *fixed)
        self._lists = lists
        self._rendered: dict[tuple[int, ...], tuple[str, tuple[tuple[str, ...], ...]]] = {}

    def _render(self, sizes: tuple[int, ...]) -> tuple[str, tuple[tuple[str, ...], ...]]:
        found = self._rendered.get(sizes)
        if found is None:
            sql = self._template
            names = []
            for name, size in zip(self._lists, sizes):
                these = tuple(f"{name}_{i}" for i in range(size))
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join(":" + n for n in these))
                names.append(these)
            found = self._rendered[sizes] = (sql, tuple(names))
        return found

    def rows(self, raw: sqlite3.Connection, lists: tuple[list[Any], ...], params: Mapping[str, Any] = {}) -> list[Any]:
        """Rows for every combination of chunks of ``lists`` (non-empty, in
        ``self._lists`` order). With one chunk of each list, the statement's own
        rows in its own order; across chunks, the chunks' rows one after the other
        (a row matching two chunks would appear twice)."""
        if len(lists) == 1 and len(lists[0]) <= _CHUNK:  # the usual case
            return raw.execute(*self._bound((lists[0],), params)).fetchall()
        chunked = [[values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)] for values in lists]
        out: list[Any] = []
        for chunks in itertools.product(*chunked):
            out += raw.execute(*self._bound(chunks, params)).fetchall()
        return out

    def _bound(self, chunks: tuple[list[Any], ...], params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        sql, names = self._render(tuple(_bucket(len(c)) for c in chunks))
        bound = dict(params)
        for these, chunk in zip(names, chunks):
            bound.update(zip(these, chunk))
            for name in these[len(chunk) :]:
                bound[name] = chunk[-1]  # padding: a repeated value changes no IN
        return sql, bound


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    """A StoredEvent from a row of ``_STORED_EVENT_COLUMNS`` (``rooms._stored_event``
    for a plain tuple)."""
    event_id, room_id, text, depth, stream_ordering, outlier, rejection_reason, soft_failed, ref = row
    return StoredEvent(
        event_id=event_id,
        room_id=room_id,
        json=_load_json(text),
        depth=depth,
        stream_ordering=stream_ordering,
        outlier=bool(outlier),
        rejection_reason=rejection_reason,
        soft_failed=bool(soft_failed),
        state_after_ref=ref,
    )


_SELECT_EVENTS = _InQuery(
    sa.select(*_STORED_EVENT_COLUMNS).where(events.c.event_id.in_(sa.bindparam("ids", expanding=True))), ("ids",)
)


def _get_events(raw: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
    """``storage.rooms.get_events`` on the raw connection."""
    wanted = list(dict.fromkeys(event_ids))
    if not wanted:
        return {}
    return {row[0]: _stored(row) for row in _SELECT_EVENTS.rows(raw, (wanted,))}


# ------------------------------------------------------------------- memberships


class Membership:
    """A user's current membership in a room: ``Membership(room_id, membership,
    event_id, stream_ordering, event)``, immutable, compared by value.

    ``event`` is the member event's JSON. Readers here build it from the stored
    text instead (``event_json=``), decoded on first use of ``.event``: /sync reads
    every membership of the user and needs the events of few of them."""

    __slots__ = ("room_id", "membership", "event_id", "stream_ordering", "_event", "_event_json")

    room_id: str
    membership: str
    event_id: str
    stream_ordering: int

    def __init__(
        self,
        room_id: str,
        membership: str,
        event_id: str,
        stream_ordering: int,
        event: dict[str, Any] | None = None,
        *,
        event_json: str | None = None,
    ) -> None:
        if (event is None) == (event_json is None):
            raise TypeError("Membership needs exactly one of event and event_json")
        setattr_ = object.__setattr__
        setattr_(self, "room_id", room_id)
        setattr_(self, "membership", membership)
        setattr_(self, "event_id", event_id)
        setattr_(self, "stream_ordering", stream_ordering)
        setattr_(self, "_event", event)
        setattr_(self, "_event_json", event_json)

    @property
    def event(self) -> dict[str, Any]:
        event = self._event
        if event is None:
            event = _load_json(self._event_json)  # type: ignore[arg-type]
            object.__setattr__(self, "_event", event)
        return event

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _key(self) -> tuple[Any, ...]:
        return (self.room_id, self.membership, self.event_id, self.stream_ordering, self.event)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # like the frozen dataclass it was: event is a dict

    def __repr__(self) -> str:
        return (
            f"Membership(room_id={self.room_id!r}, membership={self.membership!r}, event_id={self.event_id!r}, "
            f"stream_ordering={self.stream_ordering!r}, event={self.event!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Membership, (self.room_id, self.membership, self.event_id, self.stream_ordering, self.event))


_new_membership = object.__new__
_SET_MEMBERSHIP_SLOTS = tuple(Membership.__dict__[name].__set__ for name in Membership.__slots__)


def _membership_from_text(room_id: str, membership: str, event_id: str, stream_ordering: int, text: str) -> Membership:
    """``Membership(…, event_json=text)`` without ``__init__``'s checks (a reader of
    every membership of a user builds one per room)."""
    m = _new_membership(Membership)
    set_room_id, set_membership, set_event_id, set_stream_ordering, set_event, set_event_json = _SET_MEMBERSHIP_SLOTS
    set_room_id(m, room_id)
    set_membership(m, membership)
    set_event_id(m, event_id)
    set_stream_ordering(m, stream_ordering)
    set_event(m, None)
    set_event_json(m, text)
    return m


_MAX_ORDERING = _compile(sa.select(sa.func.max(events.c.stream_ordering)))


def max_stream_ordering(conn: sa.Connection) -> int:
    return int(_raw(conn).execute(_MAX_ORDERING).fetchone()[0] or 0)


# content.membership in SQL: a JSON string comes back as str; an object or array
# comes back as its JSON text (a str too, starting with "{" or "["), a number as a
# number, anything else as NULL. See _membership_value.
_MEMBERSHIP_SQL = sa.func.json_extract(events.c.json, _text("$.content.membership"))


def _membership_value(value: Any, text: str) -> str | None:
    """``content.membership`` as ``_membership_rows`` used to decide it on the decoded
    event: the string, or None (not a string, or no such key, or content no object)."""
    if not isinstance(value, str):
        return None
    if value[:1] in ("{", "["):
        # json_extract returns an object or array as JSON text: only decoding the
        # event tells that from a string with that first character (never a valid
        # membership, but the answer must be the same).
        content = _load_json(text).get("content")
        value = content.get("membership") if isinstance(content, dict) else None
        return value if isinstance(value, str) else None
    return value


def _membership_rows(rows: Iterable[Any]) -> list[Membership]:
    """Rows of (room_id, event_id, stream_ordering, membership via SQL, json text)."""
    out = []
    for room_id, event_id, stream_ordering, value, text in rows:
        membership = _membership_value(value, text)
        if membership is not None:
            out.append(_membership_from_text(room_id, membership, event_id, stream_ordering, text))
    return out


def _member_rows_query() -> sa.Select:
    return sa.select(
        current_state.c.room_id, events.c.event_id, events.c.stream_ordering, _MEMBERSHIP_SQL, events.c.json
    ).join_from(current_state, events, events.c.event_id == current_state.c.event_id)


_SELECT_MEMBERSHIPS = _compile(
    _member_rows_query().where(
        current_state.c.type == _text(_MEMBER), current_state.c.state_key == sa.bindparam("user_id")
    ),
    "user_id",
)


def get_memberships(conn: sa.Connection, user_id: str) -> dict[str, Membership]:
    """The user's current membership in every room this server knows of."""
    rows = _raw(conn).execute(_SELECT_MEMBERSHIPS, {"user_id": user_id}).fetchall()
    return {m.room_id: m for m in _membership_rows(rows)}


_d = current_state_deltas
_SELECT_MEMBERSHIP_CHANGES = _compile(
    sa.select(_d.c.room_id).where(
        _d.c.state_key == sa.bindparam("user_id"),
        _d.c.type == _text(_MEMBER),
        _d.c.stream_ordering > sa.bindparam("since"),
        _d.c.stream_ordering <= sa.bindparam("upto"),
    ),
    "user_id",
    "since",
    "upto",
)


def get_membership_changes(conn: sa.Connection, user_id: str, since: int, upto: int) -> set[str]:
    """Rooms where the user's current membership changed in ``(since, upto]``."""
    rows = _raw(conn).execute(_SELECT_MEMBERSHIP_CHANGES, {"user_id": user_id, "since": since, "upto": upto})
    return {r for (r,) in rows}


_SELECT_MEMBER_DELTA_AT = _compile(
    sa.select(_d.c.event_id)
    .where(
        _d.c.state_key == sa.bindparam("user_id"),
        _d.c.type == _text(_MEMBER),
        _d.c.room_id == sa.bindparam("room_id"),
        _d.c.stream_ordering <= sa.bindparam("position"),
    )
    .order_by(_d.c.stream_ordering.desc()),
    "user_id",
    "room_id",
    "position",
) + "\n LIMIT 1"
_SELECT_EVENT_MEMBERSHIP = _compile(
    sa.select(_MEMBERSHIP_SQL, events.c.json).where(events.c.event_id == sa.bindparam("event_id")), "event_id"
)


def get_membership_at(conn: sa.Connection, room_id: str, user_id: str, position: int) -> str | None:
    """The user's current-state membership in the room as of stream ``position``."""
    raw = _raw(conn)
    row = raw.execute(
        _SELECT_MEMBER_DELTA_AT, {"user_id": user_id, "room_id": room_id, "position": position}
    ).fetchone()
    if row is None or row[0] is None:
        return None
    found = raw.execute(_SELECT_EVENT_MEMBERSHIP, {"event_id": row[0]}).fetchone()
    return _membership_value(found[0], found[1]) if found is not None else None


_SELECT_ROOMS_WITH_EVENTS = _InQuery(
    sa.select(rooms.c.room_id).where(
        rooms.c.room_id.in_(sa.bindparam("room_ids", expanding=True)),
        sa.exists().where(
            events.c.room_id == rooms.c.room_id,
            events.c.stream_ordering > sa.bindparam("since"),
            events.c.stream_ordering <= sa.bindparam("upto"),
        ),
    ),
    ("room_ids",),
    ("since", "upto"),
)
_SELECT_ROOMS_IN_RANGE = _compile(
    sa.select(events.c.room_id)
    .where(events.c.stream_ordering > sa.bindparam("since"), events.c.stream_ordering <= sa.bindparam("upto"))
    .distinct(),
    "since",
    "upto",
)


def rooms_with_events_since(conn: sa.Connection, room_ids: Iterable[str], since: int, upto: int) -> set[str]:
    """The rooms among ``room_ids`` with an event in ``(since, upto]``.

    At most ``upto - since`` events lie in the range (orderings are distinct integers):
    when that is small against the number of rooms (a long poll: a few new events)
    the range is read by primary key; otherwise each room is one index probe
    (``EXISTS`` on ``events_room_stream``), whatever its number of events."""
    wanted = list(room_ids)
    if not wanted:
        return set()
    raw = _raw(conn)
    if upto - since <= 4 * len(wanted) + 32:
        found = {r for (r,) in raw.execute(_SELECT_ROOMS_IN_RANGE, {"since": since, "upto": upto})}
        return found.intersection(wanted)
    return {r for (r,) in _SELECT_ROOMS_WITH_EVENTS.rows(raw, (wanted,), {"since": since, "upto": upto})}


def _served() -> list[sa.ColumnElement[bool]]:
    return [events.c.outlier.is_(False), events.c.rejection_reason.is_(None), events.c.soft_failed.is_(False)]


def _timeline_query(*, bounded: bool, backwards: bool) -> str:
    where = [events.c.room_id == sa.bindparam("room_id"), events.c.stream_ordering > sa.bindparam("after"), *_served()]
    params = ["room_id", "after"]
    if bounded:
        where.append(events.c.stream_ordering <= sa.bindparam("upto"))
        params.append("upto")
    order = events.c.stream_ordering.desc() if backwards else events.c.stream_ordering
    return _compile(sa.select(*_STORED_EVENT_COLUMNS).where(*where).order_by(order), *params) + "\n LIMIT :limit"


_TIMELINE = {
    (bounded, backwards): _timeline_query(bounded=bounded, backwards=backwards)
    for bounded in (False, True)
    for backwards in (False, True)
}


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
    sql = _TIMELINE[(upto is not None, bool(backwards))]
    params = {"room_id": room_id, "after": after, "upto": upto, "limit": limit}
    if upto is None:
        del params["upto"]
    rows = [_stored(r) for r in _raw(conn).execute(sql, params)]
    if backwards:
        rows.reverse()
    return rows


def get_event(conn: sa.Connection, event_id: str) -> StoredEvent | None:
    return _get_events(_raw(conn), [event_id]).get(event_id)


_SELECT_STATE_DELTAS = _compile(
    sa.select(_d.c.type, _d.c.state_key, _d.c.event_id)
    .where(
        _d.c.room_id == sa.bindparam("room_id"),
        _d.c.stream_ordering > sa.bindparam("since"),
        _d.c.stream_ordering <= sa.bindparam("upto"),
    )
    .order_by(_d.c.stream_ordering),
    "room_id",
    "since",
    "upto",
)


def get_state_deltas(conn: sa.Connection, room_id: str, since: int, upto: int) -> dict[tuple[str, str], str | None]:
    """The room's current-state changes in ``(since, upto]``, last one per key."""
    rows = _raw(conn).execute(_SELECT_STATE_DELTAS, {"room_id": room_id, "since": since, "upto": upto})
    return {(t, k): e for t, k, e in rows}


_SELECT_CURRENT_STATE = _compile(
    sa.select(current_state.c.type, current_state.c.state_key, current_state.c.event_id).where(
        current_state.c.room_id == sa.bindparam("room_id")
    ),
    "room_id",
)


def get_current_state_ids(conn: sa.Connection, room_id: str) -> dict[tuple[str, str], str]:
    rows = _raw(conn).execute(_SELECT_CURRENT_STATE, {"room_id": room_id})
    return {(t, k): e for t, k, e in rows}


_SELECT_ROOM_MEMBERS = _compile(
    sa.select(current_state.c.state_key, events.c.json)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(current_state.c.room_id == sa.bindparam("room_id"), current_state.c.type == _text(_MEMBER)),
    "room_id",
)


def get_room_members(conn: sa.Connection, room_id: str) -> dict[str, dict[str, Any]]:
    """user ID -> current m.room.member event JSON."""
    rows = _raw(conn).execute(_SELECT_ROOM_MEMBERS, {"room_id": room_id})
    return {k: _load_json(text) for k, text in rows}


_SELECT_REDACTIONS = _InQuery(
    sa.select(redactions.c.redacts, redactions.c.event_id).where(
        redactions.c.redacts.in_(sa.bindparam("ids", expanding=True))
    ),
    ("ids",),
)


def get_redactions(conn: sa.Connection, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
    """target event ID -> the (first stored) redaction event that redacts it."""
    wanted = list(dict.fromkeys(event_ids))
    if not wanted:
        return {}
    raw = _raw(conn)
    pairs = _SELECT_REDACTIONS.rows(raw, (wanted,))
    if not pairs:
        return {}
    found = _get_events(raw, [e for _, e in pairs])
    out: dict[str, StoredEvent] = {}
    for target, redaction_id in pairs:
        if target not in out and redaction_id in found:
            out[target] = found[redaction_id]
    return out


_SELECT_TXN_IDS = _InQuery(
    sa.select(txn_ids.c.event_id, txn_ids.c.txn_id).where(
        txn_ids.c.event_id.in_(sa.bindparam("ids", expanding=True)),
        txn_ids.c.user_id == sa.bindparam("user_id"),
        txn_ids.c.device_id == sa.bindparam("device_id"),
    ),
    ("ids",),
    ("user_id", "device_id"),
)


def get_txn_ids(conn: sa.Connection, event_ids: Iterable[str], user_id: str, device_id: str) -> dict[str, str]:
    """event ID -> txnId, for the events this device sent with a transaction ID."""
    wanted = list(dict.fromkeys(event_ids))
    if not wanted:
        return {}
    rows = _SELECT_TXN_IDS.rows(_raw(conn), (wanted,), {"user_id": user_id, "device_id": device_id})
    return {e: t for e, t in rows}


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
    rows = _raw(conn).execute(_SUBSET_QUERY, {"ref": ref, "user_id": user_id}).fetchall()
    return {(t, k): e for t, k, e, _hop in rows if e is not None}


_SELECT_STATE_REFS = _InQuery(
    sa.select(events.c.event_id, events.c.state_after_ref).where(
        events.c.event_id.in_(sa.bindparam("ids", expanding=True))
    ),
    ("ids",),
)
_SELECT_JSONS = _InQuery(
    sa.select(events.c.event_id, events.c.json).where(events.c.event_id.in_(sa.bindparam("ids", expanding=True))),
    ("ids",),
)


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
        wanted = list(dict.fromkeys(p for p in prev_ids.values() if isinstance(p, str)))
        prev_refs = dict(_SELECT_STATE_REFS.rows(_raw(conn), (wanted,))) if wanted else {}
        for ev in need_prev:
            prev_id = prev_ids[ev.event_id]
            before_refs[ev.event_id] = prev_refs.get(prev_id) if isinstance(prev_id, str) else None
    state_ids: dict[str, dict[tuple[str, str], str]] = {
        ev.event_id: subset(before_refs[ev.event_id]) for ev in candidates
    }
    needed = list({e for s in state_ids.values() for e in s.values()} - jsons.keys())
    if needed:
        for event_id, text in _SELECT_JSONS.rows(_raw(conn), (needed,)):
            jsons[event_id] = _load_json(text)
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


_SELECT_MEMBERSHIP = _compile(
    _member_rows_query().where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == _text(_MEMBER),
        current_state.c.state_key == sa.bindparam("user_id"),
    ),
    "room_id",
    "user_id",
)


def get_membership(conn: sa.Connection, room_id: str, user_id: str) -> Membership | None:
    """The user's current membership in one room (``None``: never had one)."""
    rows = _raw(conn).execute(_SELECT_MEMBERSHIP, {"room_id": room_id, "user_id": user_id}).fetchall()
    found = _membership_rows(rows)
    return found[0] if found else None


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


_SELECT_CURRENT_STATE_KEY = _compile(
    sa.select(current_state.c.event_id).where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == sa.bindparam("type"),
        current_state.c.state_key == sa.bindparam("state_key"),
    ),
    "room_id",
    "type",
    "state_key",
)


def get_current_state_event_id(conn: sa.Connection, room_id: str, type_: str, state_key: str) -> str | None:
    """One key of the room's current state (one primary-key probe)."""
    row = _raw(conn).execute(
        _SELECT_CURRENT_STATE_KEY, {"room_id": room_id, "type": type_, "state_key": state_key}
    ).fetchone()
    return row[0] if row is not None else None


# ---------------------------------------------------------------- member summaries
# Membership read in SQL (json_extract, _MEMBERSHIP_SQL) so no member event is
# decoded in Python: summaries, unread-count contexts and presence peers touch
# every member row.

_MEMBERS_OF_ROOM = (
    sa.select(current_state.c.state_key, _MEMBERSHIP_SQL)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(current_state.c.room_id == sa.bindparam("room_id"), current_state.c.type == _text(_MEMBER))
)
_SELECT_MEMBER_LIST = _compile(_MEMBERS_OF_ROOM, "room_id")


def get_member_list(conn: sa.Connection, room_id: str) -> dict[str, str]:
    """user ID -> current membership, for every member row of the room."""
    rows = _raw(conn).execute(_SELECT_MEMBER_LIST, {"room_id": room_id})
    return {k: m for k, m in rows if isinstance(m, str)}


_COUNT_JOINED = _compile(
    sa.select(sa.func.count())
    .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
    .where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == _text(_MEMBER),
        _MEMBERSHIP_SQL == _text("join"),
    ),
    "room_id",
)


def count_joined_members(conn: sa.Connection, room_id: str) -> int:
    return int(_raw(conn).execute(_COUNT_JOINED, {"room_id": room_id}).fetchone()[0] or 0)


_SELECT_SHARED = _InQuery(
    sa.select(current_state.c.state_key)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(
        current_state.c.type == _text(_MEMBER),
        current_state.c.state_key.in_(sa.bindparam("user_ids", expanding=True)),
        current_state.c.room_id.in_(sa.bindparam("room_ids", expanding=True)),
        _MEMBERSHIP_SQL == _text("join"),
    )
    .distinct(),
    ("user_ids", "room_ids"),
)


def get_rooms_shared_with(conn: sa.Connection, user_ids: Iterable[str], room_ids: Iterable[str]) -> set[str]:
    """The users among ``user_ids`` joined to at least one of ``room_ids``."""
    users, rooms_ = list(dict.fromkeys(user_ids)), list(dict.fromkeys(room_ids))
    if not users or not rooms_:
        return set()
    return {u for (u,) in _SELECT_SHARED.rows(_raw(conn), (users, rooms_))}


_SELECT_POWER_STATE = _compile(
    sa.select(current_state.c.type, events.c.json)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.state_key == _text(""),
        current_state.c.type.in_([_text("m.room.power_levels"), _text("m.room.create")]),
    ),
    "room_id",
)


def get_power_state(conn: sa.Connection, room_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The room's current (m.room.power_levels, m.room.create) events, or None."""
    rows = _raw(conn).execute(_SELECT_POWER_STATE, {"room_id": room_id})
    found = {t: _load_json(text) for t, text in rows}
    return found.get("m.room.power_levels"), found.get("m.room.create")


_ROWID = sa.literal_column("current_state_deltas.rowid", sa.Integer)
_STATE_VERSION = _compile(
    sa.select(_d.c.stream_ordering, _ROWID)
    .where(_d.c.room_id == sa.bindparam("room_id"))
    .order_by(_d.c.stream_ordering.desc(), _ROWID.desc()),
    "room_id",
) + "\n LIMIT 1"


def get_current_state_version(conn: sa.Connection, room_id: str) -> tuple[int, int] | None:
    """A value that changes whenever the room's current state changes: the
    ``(stream_ordering, rowid)`` of its newest ``current_state_deltas`` row (one
    probe at the end of ``current_state_deltas_room``, whose entries end in the
    rowid). ``checkpoint`` writes a row there with every current-state upsert or
    delete, at a stream ordering that never decreases within a room, and no row is
    ever deleted, so a later state has a greater version. ``None``: no change recorded."""
    row = _raw(conn).execute(_STATE_VERSION, {"room_id": room_id}).fetchone()
    return None if row is None else (row[0], row[1])


__all__ += [
    "get_member_list",
    "count_joined_members",
    "get_rooms_shared_with",
    "get_power_state",
    "get_current_state_version",
]
