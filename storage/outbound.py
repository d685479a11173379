"""Outbound federation rows: one ``destinations`` row per remote server, and the
catch-up reads behind ``roomactors/sender``.

Theory of operation
-------------------
A row is created the first time we build a transaction for a server
(:func:`reserve_txn_seq`); a server we never tried to reach has no row, and so no
catch-up. Its columns:

* ``last_successful_stream_ordering`` — the *position*: every PDU of ours with a
  stream ordering at or below it has been answered by the peer (2xx, or a 4xx for
  the whole transaction, which will never succeed) or was never due. It only grows
  (:func:`record_success` takes the max). When the row is created it starts at the
  *floor* the sender passes (the first queued PDU's stream ordering minus one), so a
  server that was never reached is still caught up after a restart.
* ``next_txn_seq`` — transaction IDs are never reused: a sequence number is
  reserved durably *before* its transaction is first sent (:func:`reserve_txn_seq`,
  or ahead of time by the write that records the previous success), so a restarted
  server can never send a different body under an ID the peer may have seen. A new
  row starts at the wall-clock milliseconds passed in (Synapse's trick), so a wiped
  database does not replay the IDs of its predecessor either.
* ``retry_last_ts`` / ``retry_interval_ms`` — the backoff after a failed
  transaction (wall-clock ms), cleared by the next success.

Catch-up (:func:`get_catch_up_events`) sends, for every room the destination is
*joined* to (a ``join`` member event in ``current_state`` whose user's server name —
everything after the first ``:`` — equals the destination exactly, ports included),
only the latest event sent by one of *our* users after the position: the peer
fetches the gap with ``/get_missing_events`` (Synapse's federation sender does the
same). Server names are compared exactly on the part after the first ``:``, never
with a suffix match (``@u:evil-example.org`` is not on ``example.org``, and
``@u:example.org:8448`` is not on ``example.org``).

Finding a destination's rooms scans the member rows of ``current_state`` (the
``current_state_member`` index is keyed by user ID, so a server-name match cannot
seek); that runs once per catch-up pass and once at startup, never per PDU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .rooms import _load_json
from .schema import current_state, destinations, events

__all__ = [
    "DestinationRow",
    "CatchUpEvent",
    "server_part",
    "get_destination",
    "reserve_txn_seq",
    "record_success",
    "record_failure",
    "get_joined_rooms",
    "get_catch_up_events",
    "list_destinations_behind",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationRow:
    destination: str
    last_successful_stream_ordering: int | None
    next_txn_seq: int
    retry_last_ts: int | None
    retry_interval_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUpEvent:
    stream_ordering: int
    room_id: str
    event_id: str
    json: dict[str, Any]


def server_part(user_id: str) -> str | None:
    """The server name of a user ID: everything after the first ``:`` (None if absent)."""
    _, sep, server = user_id.partition(":")
    return server if sep and server else None


def _server_of(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # substr(x, instr(x, ':') + 1): the part after the first ':' (whole string if none).
    return sa.func.substr(column, sa.func.instr(column, ":") + 1)


def _row(row: sa.Row[Any] | None) -> DestinationRow | None:
    if row is None:
        return None
    return DestinationRow(
        destination=row.destination,
        last_successful_stream_ordering=row.last_successful_stream_ordering,
        next_txn_seq=row.next_txn_seq,
        retry_last_ts=row.retry_last_ts,
        retry_interval_ms=row.retry_interval_ms,
    )


def get_destination(conn: sa.Connection, destination: str) -> DestinationRow | None:
    return _row(conn.execute(sa.select(destinations).where(destinations.c.destination == destination)).first())


def reserve_txn_seq(
    conn: sa.Connection, destination: str, *, initial_seq: int, position_floor: int | None = None
) -> tuple[int, DestinationRow]:
    """Reserve the next transaction sequence number for ``destination``, creating its row.

    A new row starts its sequence at ``initial_seq`` and its position at
    ``position_floor``; an existing row with no position takes the floor. Returns the
    reserved number and the row as it is now (its ``next_txn_seq`` already past it).
    """
    current = get_destination(conn, destination)
    if current is None:
        seq = initial_seq
        conn.execute(
            destinations.insert().values(
                destination=destination,
                last_successful_stream_ordering=position_floor,
                next_txn_seq=seq + 1,
            )
        )
    else:
        seq = current.next_txn_seq
        values: dict[str, Any] = {"next_txn_seq": seq + 1}
        if current.last_successful_stream_ordering is None and position_floor is not None:
            values["last_successful_stream_ordering"] = position_floor
        conn.execute(destinations.update().where(destinations.c.destination == destination).values(**values))
    row = get_destination(conn, destination)
    assert row is not None
    return seq, row


def record_success(
    conn: sa.Connection, destination: str, *, stream_ordering: int | None, reserve_next: bool = True
) -> int | None:
    """The peer answered a transaction: raise the position to ``stream_ordering`` (never
    lower it), clear the backoff and, with ``reserve_next``, reserve the next sequence
    number in the same write (returned; None otherwise). The row must exist."""
    current = get_destination(conn, destination)
    if current is None:
        raise LookupError(f"no destinations row for {destination}")
    values: dict[str, Any] = {"retry_last_ts": None, "retry_interval_ms": None}
    if stream_ordering is not None:
        old = current.last_successful_stream_ordering
        values["last_successful_stream_ordering"] = stream_ordering if old is None else max(old, stream_ordering)
    reserved = None
    if reserve_next:
        reserved = current.next_txn_seq
        values["next_txn_seq"] = reserved + 1
    conn.execute(destinations.update().where(destinations.c.destination == destination).values(**values))
    return reserved


def record_failure(conn: sa.Connection, destination: str, *, retry_last_ts: int, retry_interval_ms: int) -> None:
    """A transaction failed: remember when, and how long the sender now waits."""
    conn.execute(
        destinations.update()
        .where(destinations.c.destination == destination)
        .values(retry_last_ts=retry_last_ts, retry_interval_ms=retry_interval_ms)
    )


_JOINED_MEMBERS = (
    sa.select(current_state.c.room_id, current_state.c.state_key)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(
        current_state.c.type == "m.room.member",
        sa.func.json_extract(events.c.json, "$.content.membership") == "join",
    )
)


def get_joined_rooms(conn: sa.Connection, server_name: str) -> list[str]:
    """Rooms in which some user of ``server_name`` is currently joined (sorted)."""
    query = (
        _JOINED_MEMBERS.with_only_columns(current_state.c.room_id)
        .where(_server_of(current_state.c.state_key) == server_name, current_state.c.state_key.startswith("@"))
        .distinct()
        .order_by(current_state.c.room_id)
    )
    return list(conn.execute(query).scalars())


def _latest_local_query(*, with_json: bool) -> sa.Select:
    columns = [events.c.stream_ordering, events.c.event_id] + ([events.c.json] if with_json else [])
    return (
        sa.select(*columns)
        .where(
            events.c.room_id == sa.bindparam("room_id"),
            events.c.stream_ordering > sa.bindparam("after"),
            _server_of(events.c.sender) == sa.bindparam("server_name"),
            events.c.outlier == sa.false(),
            events.c.soft_failed == sa.false(),
            events.c.rejection_reason.is_(None),
        )
        .order_by(events.c.stream_ordering.desc())
        .limit(1)
    )


_LATEST_LOCAL = _latest_local_query(with_json=True)
_LATEST_LOCAL_ORDERING = _latest_local_query(with_json=False)


def get_catch_up_events(
    conn: sa.Connection, destination: str, *, server_name: str, after: int, limit: int
) -> list[CatchUpEvent]:
    """Per room joined by ``destination``, the latest event sent by a user of
    ``server_name`` with ``stream_ordering > after``; the ``limit`` oldest of those,
    in stream order (so sending them and advancing the position to the last one's
    ordering leaves exactly the rest for the next call)."""
    found: list[CatchUpEvent] = []
    for room_id in get_joined_rooms(conn, destination):
        row = conn.execute(_LATEST_LOCAL, {"room_id": room_id, "after": after, "server_name": server_name}).first()
        if row is not None:
            found.append(
                CatchUpEvent(
                    stream_ordering=row.stream_ordering, room_id=room_id, event_id=row.event_id, json=_load_json(row.json)
                )
            )
    found.sort(key=lambda e: e.stream_ordering)
    return found[:limit]


def list_destinations_behind(conn: sa.Connection, server_name: str) -> list[DestinationRow]:
    """Destinations with a position that some room they are joined to has passed with
    an event of ours: the ones to catch up at startup (sorted by name)."""
    rows = [
        r
        for r in map(_row, conn.execute(sa.select(destinations).order_by(destinations.c.destination)))
        if r is not None and r.last_successful_stream_ordering is not None
    ]
    if not rows:
        return []
    wanted = {r.destination for r in rows}
    rooms_of: dict[str, set[str]] = defaultdict(set)
    for room_id, state_key in conn.execute(_JOINED_MEMBERS):
        server = server_part(state_key) if state_key.startswith("@") else None
        if server in wanted:
            rooms_of[server].add(room_id)
    latest: dict[str, int] = {}

    def latest_local(room_id: str) -> int:
        if room_id not in latest:
            so = conn.execute(
                _LATEST_LOCAL_ORDERING, {"room_id": room_id, "after": 0, "server_name": server_name}
            ).scalar()
            latest[room_id] = so or 0
        return latest[room_id]

    behind = []
    for r in rows:
        position = r.last_successful_stream_ordering
        assert position is not None
        if any(latest_local(room_id) > position for room_id in sorted(rooms_of.get(r.destination, ()))):
            behind.append(r)
    return behind
