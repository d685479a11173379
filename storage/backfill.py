"""Backfilled history: the room's backward extremities, and storing older events
fetched with ``/backfill`` (server-server API "Backfilling and retrieving missing
events").

Theory of operation
-------------------
After a remote join we hold a room from the join on (plus its state and auth
chain, as outliers). The served events whose ``prev_events`` we do not hold — or
hold only as outliers — are where history stops: :func:`backward_extremities`
names those missing prev events (what ``/backfill``'s ``v`` asks for).

Backfilled events are *historical*: served by ``/messages`` but never new to
``/sync``, never extremities, never current state. As Synapse does, they get
**negative stream orderings**, each below every ordering in the database: every
``stream_ordering > since`` read (``/sync``, the outbound catch-up) skips them, and
``/messages`` walking orderings downwards reaches them after the newer events.
:func:`store_backfill` assigns the orderings inside the write transaction (the
one writer thread), so two rooms backfilling at once never collide. Its items
come newest first, so a batch keeps its order below what is already held.

A backfilled event has no state (``state_after_ref`` NULL): it is not an outlier
(it is served), but the room actor can never use it as a prev event with state
(``_state_refs`` raises ``LookupError``, the pipeline's "missing prev" path), and
history visibility reads it with no state (the defaults: ``shared``, no
membership). Outliers we already hold (state and auth events from the join) that a
backfill returns are *promoted*: ``outlier`` cleared and a negative ordering given,
so they are served in their place in history (the room's ``m.room.create`` among
them, where backwards pagination ends).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa

from .rooms import Checkpoint, NewEvent, checkpoint

__all__ = ["backward_extremities", "store_backfill"]

_BACKWARD_EXTREMITIES = sa.text(
    """
    SELECT x.prev_id
    FROM (
        SELECT c.stream_ordering AS so,
               CASE j.type WHEN 'array' THEN json_extract(j.value, '$[0]') ELSE j.value END AS prev_id
        FROM events AS c, json_each(c.json, '$.prev_events') AS j
        WHERE c.room_id = :room_id AND c.outlier = 0 AND c.rejection_reason IS NULL
    ) AS x
    LEFT JOIN events AS p ON p.event_id = x.prev_id
    WHERE x.prev_id IS NOT NULL
      AND (p.event_id IS NULL OR (p.outlier = 1 AND p.rejection_reason IS NULL AND p.room_id = :room_id))
    ORDER BY x.so
    LIMIT :limit
    """
)

_OLDEST_SERVED = sa.text(
    "SELECT type, state_key FROM events WHERE room_id = :room_id AND outlier = 0"
    " AND rejection_reason IS NULL ORDER BY stream_ordering LIMIT 1"
)


def backward_extremities(conn: sa.Connection, room_id: str, limit: int = 20) -> list[str]:
    """Prev events of the room's served events that we do not hold, or hold only as
    (non-rejected) outliers — oldest referencing event first, at most ``limit``.

    Empty when the oldest served event is the room's ``m.room.create`` (history is
    complete down to the start: a local room, or one fully backfilled). Otherwise
    the walk follows the room's stream index from the oldest served event and stops
    after ``limit`` hits, so the usual case (history missing below the oldest
    events) reads a few rows, not the room."""
    oldest = conn.execute(_OLDEST_SERVED, {"room_id": room_id}).first()
    if oldest is None or (oldest[0] == "m.room.create" and oldest[1] == ""):
        return []  # nothing served, or history complete down to the room's start
    rows = conn.execute(_BACKWARD_EXTREMITIES, {"room_id": room_id, "limit": limit * 4})
    return list(dict.fromkeys(r[0] for r in rows if isinstance(r[0], str)))[:limit]


_MIN_ORDERING = "SELECT min(stream_ordering) FROM events"
_PROMOTE = (
    "UPDATE events SET outlier = 0, stream_ordering = :so"
    " WHERE event_id = :event_id AND room_id = :room_id AND outlier = 1 AND rejection_reason IS NULL"
)


def store_backfill(
    conn: sa.Connection, room_id: str, room_version: str, items: Sequence[NewEvent | str]
) -> dict[str, int]:
    """Store backfilled events, ``items`` **newest first**: a :class:`NewEvent` is
    inserted (served, no state, no extremity), an event ID promotes that stored
    outlier. Each gets the next ordering below the database's lowest (and below 0).
    Returns ``event_id -> stream_ordering`` for what was stored or promoted."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection) and raw.in_transaction
    low = min(0, raw.execute(_MIN_ORDERING).fetchone()[0] or 0)
    orderings: dict[str, int] = {}
    new: list[NewEvent] = []
    for item in items:
        low -= 1
        if isinstance(item, str):
            cursor = raw.execute(_PROMOTE, {"so": low, "event_id": item, "room_id": room_id})
            if cursor.rowcount:
                orderings[item] = low
        else:
            if item.outlier or item.state_delta or item.state_base_ref is not None:
                raise ValueError(f"backfilled event {item.event_id} must be a served event without state")
            new.append(replace(item, stream_ordering=low))
    if new:
        orderings.update(
            checkpoint(
                conn,
                Checkpoint(room_id=room_id, room_version=room_version, events=tuple(new), forward_extremities=None),
            )
        )
    return orderings
