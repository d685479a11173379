"""Room rows: the repository functions behind the room actors (docs/ROOM-ACTORS.md).

Theory of operation
-------------------
Every function here is synchronous, ``def verb_noun(conn, ...)``, and takes a
SQLAlchemy ``Connection`` that already has a transaction open: ``Database.write``
runs it on the writer connection inside the group commit's ``BEGIN IMMEDIATE`` and
the job's own ``SAVEPOINT``; ``Database.read`` runs it on a reader connection in a
read transaction (a consistent WAL snapshot). Tests call them on a plain connection
inside ``with conn.begin():``.

:func:`checkpoint` is the room actor's one write. It stores, in the caller's
transaction, in this order (each parent row before the rows that reference it, so
every foreign key is checked immediately)::

    rooms (first time) → state snapshots → events → prev_events / auth_events edges
      → forward_extremities (replaced) → current_state (upserts) → txn_ids

It is the hot path of the server, so it runs statements that SQLAlchemy Core
compiled once at import (``_sql``) straight on the sqlite3 connection inside the
same transaction: a Core ``execute`` costs ~45 µs of Python, a compiled statement on
the driver ~3 µs, and a message event is about eight statements.

State storage: skip deltas
~~~~~~~~~~~~~~~~~~~~~~~~~~
The state *after* an event is a *snapshot* named by a ref, the ID of the event it
was first written for (``events.state_after_ref``). The actor hands over the
*logical* base (``NewEvent.state_base_ref``, usually the state after the prev
event) and the keys that differ (``state_delta``; a ``None`` value removes a key).
An empty delta shares the base's ref, so a message event writes no state row.

Storing every snapshot as "logical base + delta" would give chains as long as the
room's history; cutting them with a full snapshot every ``MAX_CHAIN`` hops stores
``|state| / MAX_CHAIN`` rows per state event, which grows with the room (Synapse's
``state_groups_state`` problem: 10,000 members ⇒ 300 rows per join). Instead each
snapshot carries ``seq`` = its logical base's ``seq`` + 1, and is stored as a delta
against the ancestor whose ``seq`` is ``seq & (seq - 1)`` (its lowest set bit
cleared), as Subversion's FSFS skip-deltas do::

    seq:   0 ── 1 ── 2 ── 3 ── 4 ── 5 ── 6 ── 7 ── 8      (logical chain)
    base:       0    0    2    0    4    4    6    0      (stored base_ref)

That ancestor is always on the stored chain of the logical base (the bits of
``seq - 1`` cleared one by one pass through ``seq & (seq - 1)``), so one recursive
query over at most ``log2(seq)`` rows finds it, and the stored delta is the
logical delta merged over the deltas skipped on the way. Then:

* reading any state walks ``chain_length`` = popcount(``seq``) ≤ log2(``seq``)
  snapshots (≤ 14 for 10,000 state changes), and
* storage is ``Σ lowbit(seq)`` ≈ ½·log2(n) rows per state change, capped by the
  state's size, independent of how many members the room has.

``MAX_CHAIN`` still bounds every chain: if the skip base's chain would make the new
snapshot's ``chain_length`` exceed it, a **full** snapshot (``base_ref`` NULL,
``seq`` 0, every row) is written instead, computed in SQL by walking the logical
base's chain. A snapshot with no base given (the room's first state) is also full.

Invariants: a stored snapshot's ``base_ref`` has ``seq`` = ``seq & (seq - 1)`` and
``chain_length`` one less; full snapshots have ``seq`` = ``chain_length`` = 0 and no
NULL delta rows; ``chain_length`` ≤ ``MAX_CHAIN``.

JSON is stored as orjson text. orjson cannot encode integers beyond 64 bits (legal
in room versions 1–5) and would decode them as floats, so such events are written
by the stdlib encoder behind one leading space (still valid JSON; orjson never
emits it), and text with that mark is decoded by the stdlib too.
"""

from __future__ import annotations

import json as stdlib_json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from roomactors.protocol.auth import StateKey

from .schema import (
    current_state,
    current_state_deltas,
    event_auth_edges,
    event_edges,
    events,
    forward_extremities,
    redactions,
    rooms,
    state_deltas,
    state_snapshots,
    txn_ids,
)

__all__ = [
    "MAX_CHAIN",
    "StateMap",
    "NewEvent",
    "TxnRecord",
    "Checkpoint",
    "RoomRecord",
    "StoredEvent",
    "DuplicateEventError",
    "DuplicateTxnError",
    "RoomVersionMismatchError",
    "UnknownStateRefError",
    "checkpoint",
    "load_room",
    "get_events",
    "get_room_events",
    "get_state",
    "get_txn_event",
    "room_exists",
    "list_room_ids",
    "count_bytes",
    "count_bytes_by_table",
]

MAX_CHAIN = 32
"""The most snapshots a state read walks past its own (``chain_length`` bound)."""

StateMap = dict[StateKey, str]

_EVENT_ID_CHUNK = 500  # ids per IN (...) list; far below SQLite's variable limit


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """One event for :func:`checkpoint`; see the module docstring for the state fields."""

    event_id: str
    room_id: str
    json: dict[str, Any]
    depth: int
    type: str
    state_key: str | None
    sender: str
    origin_server_ts: int
    prev_events: tuple[str, ...]
    auth_events: tuple[str, ...]
    outlier: bool = False
    rejection_reason: str | None = None  # rejected: never in state or extremities
    soft_failed: bool = False
    state_base_ref: str | None = None  # None: no state after, or a full snapshot of state_delta
    state_delta: Mapping[StateKey, str | None] = field(default_factory=dict)  # None removes a key
    # For an accepted m.room.redaction: the event it redacts (written to `redactions`).
    redacts: str | None = None
    # An explicit stream ordering (backfilled history: negative, below every other
    # event; see storage/backfill.py). None: the next AUTOINCREMENT value.
    stream_ordering: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnRecord:
    user_id: str
    device_id: str
    txn_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    room_id: str
    room_version: str  # written to `rooms` on the room's first checkpoint
    events: tuple[NewEvent, ...]
    forward_extremities: frozenset[str] | None  # the complete new set; None = unchanged
    current_state_delta: Mapping[StateKey, str | None] = field(default_factory=dict)  # None deletes
    txn: TxnRecord | None = None  # maps (user, device, room, txn) -> events[-1].event_id
    # inbound_staging rows this checkpoint consumes (deleted in the same transaction).
    staging_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRecord:
    room_id: str
    room_version: str
    forward_extremities: frozenset[str]
    current_state: StateMap
    current_state_events: dict[str, dict[str, Any]]
    extremity_depths: dict[str, int]
    extremity_state_refs: dict[str, str | None]
    max_stream_ordering: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    event_id: str
    room_id: str
    json: dict[str, Any]
    depth: int
    stream_ordering: int
    outlier: bool
    rejection_reason: str | None
    soft_failed: bool
    state_after_ref: str | None


class DuplicateEventError(ValueError):
    """A checkpoint named an event that is already stored, or named one twice (an actor bug)."""


class DuplicateTxnError(ValueError):
    """A checkpoint's (user_id, device_id, room_id, txn_id) is already mapped to an event."""


class RoomVersionMismatchError(ValueError):
    """A checkpoint's room_version differs from the one stored for the room."""


class UnknownStateRefError(KeyError):
    """A state ref that names no stored snapshot."""


# ------------------------------------------------------------------ compiled SQL

_DIALECT = sqlite.dialect(paramstyle="named")


def _sql(stmt: sa.Executable, *column_keys: str) -> str:
    """Compile a Core statement once to sqlite3 SQL with ``:name`` parameters."""
    compiled = stmt.compile(dialect=_DIALECT, column_keys=list(column_keys) or None)
    return compiled.string


def _one(value: int) -> sa.ColumnElement[Any]:
    return sa.literal_column(str(value), sa.Integer)


def _chain_cte(*, stop_at_skip_base: bool) -> sa.CTE:
    """Snapshots from ``:ref`` along ``base_ref``, with ``hop`` 0, 1, … from ``:ref``.

    ``target`` is the ``seq`` of the skip base a child of ``:ref`` would get,
    ``(seq + 1) & seq``. With ``stop_at_skip_base`` the walk stops at the first
    snapshot whose ``seq`` is ``<= target`` (that skip base is the last row);
    otherwise it runs to the full snapshot.
    """
    s = state_snapshots
    anchor = sa.select(
        s.c.event_id.label("ref"),
        s.c.base_ref.label("base"),
        s.c.chain_length.label("chain_length"),
        s.c.seq.label("seq"),
        _one(0).label("hop"),
        (s.c.seq + _one(1)).self_group().op("&")(s.c.seq).label("target"),
    ).where(s.c.event_id == sa.bindparam("ref"))
    chain = anchor.cte("chain", recursive=True)
    parent = s.alias("parent")
    step = sa.select(
        parent.c.event_id,
        parent.c.base_ref,
        parent.c.chain_length,
        parent.c.seq,
        chain.c.hop + _one(1),
        chain.c.target,
    ).join_from(chain, parent, parent.c.event_id == chain.c.base)
    if stop_at_skip_base:
        step = step.where(chain.c.seq > chain.c.target)
    return chain.union_all(step)


def _merged_rows(chain: sa.CTE, *, skipped_only: bool) -> sa.Subquery:
    """Each state key's newest row over the chain's deltas (lowest ``hop`` wins).

    SQLite gives a bare column in a ``min()`` aggregate query the value from the
    row holding the minimum ("Bare columns in an aggregate query", SQLite docs).
    """
    d = state_deltas
    query = sa.select(
        d.c.type, d.c.state_key, d.c.event_id, sa.func.min(chain.c.hop).label("hop")
    ).join_from(chain, d, d.c.snapshot_ref == chain.c.ref)
    if skipped_only:
        query = query.where(chain.c.seq > chain.c.target)
    return query.group_by(d.c.type, d.c.state_key).subquery("merged")


def _state_query() -> sa.Select:
    """Every delta row on the chain, oldest snapshot first (applied in order in Python:
    cheaper than the GROUP BY of :func:`_merged_rows` when the rows are wanted anyway)."""
    chain = _chain_cte(stop_at_skip_base=False)
    d = state_deltas
    return (
        sa.select(d.c.type, d.c.state_key, d.c.event_id)
        .join_from(chain, d, d.c.snapshot_ref == chain.c.ref)
        .order_by(chain.c.hop.desc())
    )


def _insert_merged(*, full: bool) -> str:
    chain = _chain_cte(stop_at_skip_base=not full)
    merged = _merged_rows(chain, skipped_only=not full)
    select = sa.select(
        sa.bindparam("snapshot_ref", type_=sa.Text), merged.c.type, merged.c.state_key, merged.c.event_id
    )
    if full:
        select = select.where(merged.c.event_id.is_not(None))
    columns = ["snapshot_ref", "type", "state_key", "event_id"]
    return _sql(sa.insert(state_deltas).from_select(columns, select))


_SKIP_CHAIN_CTE = _chain_cte(stop_at_skip_base=True)
_SELECT_SKIP_CHAIN = _sql(
    sa.select(_SKIP_CHAIN_CTE.c.ref, _SKIP_CHAIN_CTE.c.chain_length, _SKIP_CHAIN_CTE.c.seq).order_by(
        _SKIP_CHAIN_CTE.c.hop
    )
)
_INSERT_SKIPPED_DELTAS = _insert_merged(full=False)
_INSERT_FULL_STATE = _insert_merged(full=True)
_STATE_QUERY = _state_query()

_SELECT_ROOM_VERSION = _sql(sa.select(rooms.c.room_version).where(rooms.c.room_id == sa.bindparam("room_id")))
_INSERT_ROOM = _sql(sa.insert(rooms), "room_id", "room_version", "created_ts")
_EVENT_COLUMNS = (
    "event_id",
    "room_id",
    "depth",
    "type",
    "state_key",
    "sender",
    "origin_server_ts",
    "json",
    "outlier",
    "rejection_reason",
    "soft_failed",
    "state_after_ref",
)
_INSERT_EVENT = _sql(sa.insert(events), *_EVENT_COLUMNS)
_INSERT_EVENT_AT = _sql(sa.insert(events), *_EVENT_COLUMNS, "stream_ordering")
_INSERT_EDGE = _sql(sa.insert(event_edges), "event_id", "prev_event_id")
_INSERT_AUTH_EDGE = _sql(sa.insert(event_auth_edges), "event_id", "auth_event_id")
_INSERT_SNAPSHOT = _sql(sa.insert(state_snapshots), "event_id", "room_id", "base_ref", "chain_length", "seq")
_INSERT_DELTA = _sql(sa.insert(state_deltas), "snapshot_ref", "type", "state_key", "event_id")
_upsert_delta = sqlite.insert(state_deltas)
_UPSERT_DELTA = _sql(
    _upsert_delta.on_conflict_do_update(
        index_elements=["snapshot_ref", "type", "state_key"],
        set_={"event_id": _upsert_delta.excluded.event_id},
    ),
    "snapshot_ref",
    "type",
    "state_key",
    "event_id",
)
_DELETE_DELTA = _sql(
    sa.delete(state_deltas).where(
        state_deltas.c.snapshot_ref == sa.bindparam("snapshot_ref"),
        state_deltas.c.type == sa.bindparam("type"),
        state_deltas.c.state_key == sa.bindparam("state_key"),
    )
)
_DELETE_EXTREMITIES = _sql(
    sa.delete(forward_extremities).where(forward_extremities.c.room_id == sa.bindparam("room_id"))
)
_INSERT_EXTREMITY = _sql(sa.insert(forward_extremities), "room_id", "event_id")
_upsert_current = sqlite.insert(current_state)
_UPSERT_CURRENT = _sql(
    _upsert_current.on_conflict_do_update(
        index_elements=["room_id", "type", "state_key"],
        set_={"event_id": _upsert_current.excluded.event_id},
    ),
    "room_id",
    "type",
    "state_key",
    "event_id",
)
_DELETE_CURRENT = _sql(
    sa.delete(current_state).where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == sa.bindparam("type"),
        current_state.c.state_key == sa.bindparam("state_key"),
    )
)
_INSERT_TXN = _sql(sa.insert(txn_ids), "user_id", "device_id", "txn_id", "room_id", "event_id")
_INSERT_STATE_DELTA = _sql(
    sa.insert(current_state_deltas),
    "stream_ordering",
    "room_id",
    "type",
    "state_key",
    "event_id",
)
_INSERT_REDACTION = _sql(sa.insert(redactions).prefix_with("OR IGNORE"), "event_id", "redacts")
_MAX_ORDERING = "SELECT max(stream_ordering) FROM events WHERE room_id = :room_id"


def _max_ordering(raw: sqlite3.Connection, room_id: str) -> int:
    return raw.execute(_MAX_ORDERING, {"room_id": room_id}).fetchone()[0] or 0



# ------------------------------------------------------------------------- JSON

_STDLIB_MARK = " "  # leading whitespace: still valid JSON, and never orjson's output


def _dump_json(value: dict[str, Any]) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits (room versions 1-5 allow them): the stdlib writes them
        # exactly, and the mark sends the text back through the stdlib on reading.
        return _STDLIB_MARK + stdlib_json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _load_json(text: str) -> dict[str, Any]:
    if text.startswith(_STDLIB_MARK):
        return stdlib_json.loads(text)
    return orjson.loads(text)  # only integers orjson wrote, all within 64 bits: exact


# ------------------------------------------------------------------------ writes


def _driver(conn: sa.Connection) -> sqlite3.Connection:
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        raise TypeError(f"storage.rooms needs an sqlite3 connection, not {type(raw).__name__}")
    if not raw.in_transaction:
        raise RuntimeError("checkpoint must run inside a transaction (Database.write opens one)")
    return raw


def _check(cp: Checkpoint) -> None:
    """Reject checkpoints the room actor can never legitimately send."""
    seen: dict[str, NewEvent] = {}
    for ev in cp.events:
        if ev.room_id != cp.room_id:
            raise ValueError(f"event {ev.event_id} is in room {ev.room_id}, checkpoint is for {cp.room_id}")
        if ev.event_id in seen:
            raise DuplicateEventError(f"event {ev.event_id} appears twice in one checkpoint")
        seen[ev.event_id] = ev
    if cp.txn is not None and not cp.events:
        raise ValueError("a checkpoint with a txn must contain the event it maps to")
    for event_id in cp.forward_extremities or ():
        ev = seen.get(event_id)
        if ev is not None and (ev.outlier or ev.soft_failed or ev.rejection_reason is not None):
            raise ValueError(f"event {event_id} is an outlier, soft-failed or rejected: never a forward extremity")
    for key, event_id in cp.current_state_delta.items():
        ev = seen.get(event_id) if event_id is not None else None
        if ev is not None and (ev.soft_failed or ev.rejection_reason is not None):
            raise ValueError(f"event {event_id} is soft-failed or rejected: never in the current state {key}")


def _delta_rows(snapshot_ref: str, delta: Mapping[StateKey, str | None]) -> list[dict[str, Any]]:
    return [
        {"snapshot_ref": snapshot_ref, "type": type_, "state_key": state_key, "event_id": event_id}
        for (type_, state_key), event_id in delta.items()
    ]


def _write_full_snapshot(
    raw: sqlite3.Connection, room_id: str, ref: str, base_ref: str | None, delta: Mapping[StateKey, str | None]
) -> None:
    raw.execute(
        _INSERT_SNAPSHOT, {"event_id": ref, "room_id": room_id, "base_ref": None, "chain_length": 0, "seq": 0}
    )
    if base_ref is None:
        _execute_many(raw, _INSERT_DELTA, _delta_rows(ref, {k: v for k, v in delta.items() if v is not None}))
        return
    raw.execute(_INSERT_FULL_STATE, {"ref": base_ref, "snapshot_ref": ref})
    _execute_many(raw, _UPSERT_DELTA, _delta_rows(ref, {k: v for k, v in delta.items() if v is not None}))
    _execute_many(raw, _DELETE_DELTA, _delta_rows(ref, {k: v for k, v in delta.items() if v is None}))


def _write_state_after(raw: sqlite3.Connection, room_id: str, ev: NewEvent) -> str | None:
    """Store the state after ``ev`` (if it needs a row) and return its ref."""
    base, delta = ev.state_base_ref, ev.state_delta
    if not delta:
        return base  # shares the base's snapshot (or has no state)
    if base is None:
        _write_full_snapshot(raw, room_id, ev.event_id, None, delta)
        return ev.event_id
    chain = raw.execute(_SELECT_SKIP_CHAIN, {"ref": base}).fetchall()
    if not chain:
        raise UnknownStateRefError(f"event {ev.event_id}: state_base_ref {base} names no stored snapshot")
    base_seq = chain[0][2]
    skip_ref, skip_chain_length, _skip_seq = chain[-1]
    if skip_chain_length + 1 > MAX_CHAIN:
        _write_full_snapshot(raw, room_id, ev.event_id, base, delta)
        return ev.event_id
    raw.execute(
        _INSERT_SNAPSHOT,
        {
            "event_id": ev.event_id,
            "room_id": room_id,
            "base_ref": skip_ref,
            "chain_length": skip_chain_length + 1,
            "seq": base_seq + 1,
        },
    )
    if len(chain) == 1:
        # The logical base is the skip base (odd seq): the delta is stored as given.
        _execute_many(raw, _INSERT_DELTA, _delta_rows(ev.event_id, delta))
    else:
        raw.execute(_INSERT_SKIPPED_DELTAS, {"ref": base, "snapshot_ref": ev.event_id})
        _execute_many(raw, _UPSERT_DELTA, _delta_rows(ev.event_id, delta))
    return ev.event_id


def _execute_many(raw: sqlite3.Connection, sql: str, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        raw.execute(sql, rows[0])  # cheaper than executemany for the common single row
    elif rows:
        raw.executemany(sql, rows)


def _event_row(ev: NewEvent, state_ref: str | None) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "room_id": ev.room_id,
        "depth": ev.depth,
        "type": ev.type,
        "state_key": ev.state_key,
        "sender": ev.sender,
        "origin_server_ts": ev.origin_server_ts,
        "json": _dump_json(ev.json),
        "outlier": ev.outlier,
        "rejection_reason": ev.rejection_reason,
        "soft_failed": ev.soft_failed,
        "state_after_ref": state_ref,
    }


def checkpoint(conn: sa.Connection, cp: Checkpoint) -> dict[str, int]:
    """Store a room actor's checkpoint in the caller's transaction.

    Returns ``event_id -> stream_ordering`` for ``cp.events``. Raises
    :class:`DuplicateEventError` if an event is already stored or listed twice,
    :class:`DuplicateTxnError` if the txn is already mapped,
    :class:`RoomVersionMismatchError`, :class:`UnknownStateRefError`, ``ValueError``
    for a checkpoint no actor may send, and ``sqlite3.IntegrityError`` for a
    foreign key naming a row that is not stored (e.g. an extremity). On any raise the
    caller's transaction (``Database.write``: the job's savepoint) is rolled back.
    """
    raw = _driver(conn)
    _check(cp)
    row = raw.execute(_SELECT_ROOM_VERSION, {"room_id": cp.room_id}).fetchone()
    if row is None:
        created_ts = cp.events[0].origin_server_ts if cp.events else 0
        raw.execute(
            _INSERT_ROOM, {"room_id": cp.room_id, "room_version": cp.room_version, "created_ts": created_ts}
        )
    elif row[0] != cp.room_version:
        raise RoomVersionMismatchError(
            f"room {cp.room_id} is stored with version {row[0]}, checkpoint says {cp.room_version}"
        )
    try:
        state_refs = [_write_state_after(raw, cp.room_id, ev) for ev in cp.events]
    except sqlite3.IntegrityError as exc:
        # A snapshot is keyed by its event's ID: a clash means the event is stored.
        if exc.sqlite_errorname != "SQLITE_CONSTRAINT_PRIMARYKEY":
            raise
        raise DuplicateEventError(f"an event of this checkpoint is already stored: {exc}") from exc

    orderings: dict[str, int] = {}
    edges: list[dict[str, str]] = []
    auth_edges: list[dict[str, str]] = []
    for ev, state_ref in zip(cp.events, state_refs):
        try:
            if ev.stream_ordering is None:
                cursor = raw.execute(_INSERT_EVENT, _event_row(ev, state_ref))
            else:
                cursor = raw.execute(_INSERT_EVENT_AT, {**_event_row(ev, state_ref), "stream_ordering": ev.stream_ordering})
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname != "SQLITE_CONSTRAINT_UNIQUE":
                raise
            raise DuplicateEventError(f"event {ev.event_id} is already stored") from exc
        orderings[ev.event_id] = cursor.lastrowid
        edges.extend({"event_id": ev.event_id, "prev_event_id": p} for p in dict.fromkeys(ev.prev_events))
        auth_edges.extend({"event_id": ev.event_id, "auth_event_id": a} for a in dict.fromkeys(ev.auth_events))
    _execute_many(raw, _INSERT_EDGE, edges)
    _execute_many(raw, _INSERT_AUTH_EDGE, auth_edges)

    if cp.forward_extremities is not None:
        raw.execute(_DELETE_EXTREMITIES, {"room_id": cp.room_id})
        _execute_many(
            raw, _INSERT_EXTREMITY, [{"room_id": cp.room_id, "event_id": e} for e in sorted(cp.forward_extremities)]
        )

    if cp.current_state_delta:
        upserts, deletes = [], []
        for (type_, state_key), event_id in cp.current_state_delta.items():
            row_ = {"room_id": cp.room_id, "type": type_, "state_key": state_key, "event_id": event_id}
            (deletes if event_id is None else upserts).append(row_)
        _execute_many(raw, _UPSERT_CURRENT, upserts)
        _execute_many(raw, _DELETE_CURRENT, deletes)
        # The change log /sync reads, at the checkpoint's last stream ordering.
        position = orderings[cp.events[-1].event_id] if cp.events else _max_ordering(raw, cp.room_id)
        _execute_many(raw, _INSERT_STATE_DELTA, [{**r, "stream_ordering": position} for r in upserts + deletes])

    redaction_rows = [
        {"event_id": ev.event_id, "redacts": ev.redacts}
        for ev in cp.events
        if ev.redacts is not None and ev.rejection_reason is None and not ev.soft_failed
    ]
    _execute_many(raw, _INSERT_REDACTION, redaction_rows)

    if cp.txn is not None:
        try:
            raw.execute(
                _INSERT_TXN,
                {
                    "user_id": cp.txn.user_id,
                    "device_id": cp.txn.device_id,
                    "txn_id": cp.txn.txn_id,
                    "room_id": cp.room_id,
                    "event_id": cp.events[-1].event_id,
                },
            )
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname != "SQLITE_CONSTRAINT_PRIMARYKEY":
                raise
            raise DuplicateTxnError(f"txn {cp.txn} is already mapped to an event") from exc
    if cp.staging_ids:
        raw.executemany("DELETE FROM inbound_staging WHERE staging_id = ?", [(i,) for i in cp.staging_ids])
    return orderings


# ------------------------------------------------------------------------- reads


def _stored_event(row: sa.Row[Any]) -> StoredEvent:
    return StoredEvent(
        event_id=row.event_id,
        room_id=row.room_id,
        json=_load_json(row.json),
        depth=row.depth,
        stream_ordering=row.stream_ordering,
        outlier=row.outlier,
        rejection_reason=row.rejection_reason,
        soft_failed=row.soft_failed,
        state_after_ref=row.state_after_ref,
    )


_STORED_EVENT_COLUMNS = (
    events.c.event_id,
    events.c.room_id,
    events.c.json,
    events.c.depth,
    events.c.stream_ordering,
    events.c.outlier,
    events.c.rejection_reason,
    events.c.soft_failed,
    events.c.state_after_ref,
)


def load_room(conn: sa.Connection, room_id: str) -> RoomRecord | None:
    """What a room actor needs to start: current state with its events, extremities.

    Reads only the room's current-state rows (and those events' JSON), its forward
    extremities and one index probe for the stream ordering, never the whole room.
    Returns None if the room has never been checkpointed.
    """
    room_version = conn.execute(sa.select(rooms.c.room_version).where(rooms.c.room_id == room_id)).scalar()
    if room_version is None:
        return None
    state: StateMap = {}
    state_events: dict[str, dict[str, Any]] = {}
    query = (
        sa.select(current_state.c.type, current_state.c.state_key, current_state.c.event_id, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.room_id == room_id)
    )
    for type_, state_key, event_id, text in conn.execute(query):
        state[(type_, state_key)] = event_id
        state_events[event_id] = _load_json(text)
    depths: dict[str, int] = {}
    refs: dict[str, str | None] = {}
    query = (
        sa.select(forward_extremities.c.event_id, events.c.depth, events.c.state_after_ref)
        .join_from(forward_extremities, events, events.c.event_id == forward_extremities.c.event_id)
        .where(forward_extremities.c.room_id == room_id)
    )
    for event_id, depth, state_after_ref in conn.execute(query):
        depths[event_id] = depth
        refs[event_id] = state_after_ref
    max_stream_ordering = conn.execute(  # one probe at the end of events_room_stream
        sa.select(events.c.stream_ordering)
        .where(events.c.room_id == room_id)
        .order_by(events.c.stream_ordering.desc())
        .limit(1)
    ).scalar()
    return RoomRecord(
        room_id=room_id,
        room_version=room_version,
        forward_extremities=frozenset(depths),
        current_state=state,
        current_state_events=state_events,
        extremity_depths=depths,
        extremity_state_refs=refs,
        max_stream_ordering=max_stream_ordering or 0,
    )


def get_events(conn: sa.Connection, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
    """The stored events among ``event_ids`` (absent ones are simply missing)."""
    wanted = list(dict.fromkeys(event_ids))
    found: dict[str, StoredEvent] = {}
    for start in range(0, len(wanted), _EVENT_ID_CHUNK):
        chunk = wanted[start : start + _EVENT_ID_CHUNK]
        for row in conn.execute(sa.select(*_STORED_EVENT_COLUMNS).where(events.c.event_id.in_(chunk))):
            found[row.event_id] = _stored_event(row)
    return found


def get_room_events(
    conn: sa.Connection, room_id: str, *, after: int = 0, limit: int | None = None
) -> list[StoredEvent]:
    """A room's events with ``stream_ordering > after``, in stream order (recovery, timelines)."""
    query = (
        sa.select(*_STORED_EVENT_COLUMNS)
        .where(events.c.room_id == room_id, events.c.stream_ordering > after)
        .order_by(events.c.stream_ordering)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_stored_event(row) for row in conn.execute(query)]


def get_state(conn: sa.Connection, ref: str) -> StateMap:
    """The state map of snapshot ``ref``: one query walking its chain (≤ MAX_CHAIN hops)."""
    state: StateMap = {}
    for type_, state_key, event_id in conn.execute(_STATE_QUERY, {"ref": ref}):
        if event_id is None:
            state.pop((type_, state_key), None)
        else:
            state[(type_, state_key)] = event_id
    if not state:
        exists = conn.execute(
            sa.select(state_snapshots.c.event_id).where(state_snapshots.c.event_id == ref)
        ).first()
        if exists is None:
            raise UnknownStateRefError(f"state ref {ref} names no stored snapshot")
    return state


def get_txn_event(conn: sa.Connection, room_id: str, txn: TxnRecord) -> str | None:
    """The event ID a client transaction in ``room_id`` was mapped to, if any (send idempotency)."""
    return conn.execute(
        sa.select(txn_ids.c.event_id).where(
            txn_ids.c.user_id == txn.user_id,
            txn_ids.c.device_id == txn.device_id,
            txn_ids.c.room_id == room_id,
            txn_ids.c.txn_id == txn.txn_id,
        )
    ).scalar()


def room_exists(conn: sa.Connection, room_id: str) -> bool:
    return conn.execute(sa.select(rooms.c.room_id).where(rooms.c.room_id == room_id)).first() is not None


def list_room_ids(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(rooms.c.room_id).order_by(rooms.c.room_id)).scalars())


def count_bytes(conn: sa.Connection) -> int:
    """Bytes of the database as its connection sees it: ``page_count * page_size``."""
    page_count = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
    return page_count * page_size


def count_bytes_by_table(conn: sa.Connection) -> dict[str, int]:
    """Bytes per table and index (SQLite's ``dbstat`` virtual table, when compiled in)."""
    rows = conn.exec_driver_sql("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
    return {name: size for name, size in rows}
