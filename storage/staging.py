"""Inbound federation: answered transactions and the staging area of received PDUs.

Theory of operation
-------------------
``PUT /_matrix/federation/v1/send/{txnId}`` checks each PDU's format, signatures and
hashes (server-server API "Checks performed on receipt of a PDU", steps 1-3) outside
any room, then calls :func:`stage_transaction`: in ONE transaction it writes every
accepted PDU into ``inbound_staging`` and records the answer under
``(origin, txnId)``. Only then does the endpoint answer 200, so a crash after the
answer loses nothing: the staging row is the durable mailbox, and the room actor
drains it (:func:`next_staged`) and deletes each row in the checkpoint that stores
its event (``storage.rooms.Checkpoint.staging_ids``), or with
:func:`delete_staged` when the PDU ends without being stored (a duplicate, an
invalid one). A row whose processing raised is retried (:func:`record_attempt`)
and after ``poison_after`` attempts is marked ``poisoned`` and skipped.

A retried transaction (same origin and txnId) is answered from
``received_transactions`` (:func:`get_received_transaction`) and not staged again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

__all__ = [
    "StagedPdu",
    "ToStage",
    "get_received_transaction",
    "stage_transaction",
    "next_staged",
    "delete_staged",
    "record_attempt",
    "rooms_with_staged",
    "room_versions",
    "server_acls",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToStage:
    room_id: str
    event_id: str
    json: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedPdu:
    staging_id: int
    room_id: str
    origin: str
    event_id: str
    json: dict[str, Any]
    attempts: int


def _raw(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection


def get_received_transaction(conn: sa.Connection, origin: str, txn_id: str) -> dict[str, Any] | None:
    row = _raw(conn).execute(
        "SELECT response_json FROM received_transactions WHERE origin = ? AND txn_id = ?", (origin, txn_id)
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def stage_transaction(
    conn: sa.Connection,
    *,
    origin: str,
    txn_id: str,
    pdus: Sequence[ToStage],
    response: dict[str, Any],
    now_ms: int,
) -> dict[str, Any]:
    """Stage ``pdus`` and record ``response`` for ``(origin, txn_id)``, in the
    caller's transaction. If the transaction was recorded meanwhile (a concurrent
    retry), stage nothing and return the recorded response."""
    raw = _raw(conn)
    earlier = get_received_transaction(conn, origin, txn_id)
    if earlier is not None:
        return earlier
    raw.executemany(
        "INSERT INTO inbound_staging (room_id, origin, event_id, json, received_ts, attempts, poisoned) "
        "VALUES (?, ?, ?, ?, ?, 0, 0)",
        [(p.room_id, origin, p.event_id, orjson.dumps(p.json).decode(), now_ms) for p in pdus],
    )
    raw.execute(
        "INSERT INTO received_transactions (origin, txn_id, response_json, received_ts) VALUES (?, ?, ?, ?)",
        (origin, txn_id, orjson.dumps(response).decode(), now_ms),
    )
    return response


def next_staged(conn: sa.Connection, room_id: str, limit: int) -> list[StagedPdu]:
    """The oldest ``limit`` staged PDUs of ``room_id`` that are not poisoned."""
    rows = _raw(conn).execute(
        "SELECT staging_id, origin, event_id, json, attempts FROM inbound_staging "
        "WHERE room_id = ? AND poisoned = 0 ORDER BY staging_id LIMIT ?",
        (room_id, limit),
    ).fetchall()
    return [
        StagedPdu(staging_id=r[0], room_id=room_id, origin=r[1], event_id=r[2], json=orjson.loads(r[3]), attempts=r[4])
        for r in rows
    ]


def delete_staged(conn: sa.Connection, staging_ids: Iterable[int]) -> None:
    _raw(conn).executemany("DELETE FROM inbound_staging WHERE staging_id = ?", [(i,) for i in staging_ids])


def record_attempt(conn: sa.Connection, staging_id: int, *, poison_after: int) -> bool:
    """Count a failed attempt; returns True if the row is now poisoned."""
    raw = _raw(conn)
    raw.execute(
        "UPDATE inbound_staging SET attempts = attempts + 1, poisoned = (attempts + 1 >= ?) WHERE staging_id = ?",
        (poison_after, staging_id),
    )
    row = raw.execute("SELECT poisoned FROM inbound_staging WHERE staging_id = ?", (staging_id,)).fetchone()
    return bool(row and row[0])


def rooms_with_staged(conn: sa.Connection) -> list[str]:
    """Rooms with PDUs waiting (at startup: wake their actors)."""
    rows = _raw(conn).execute("SELECT DISTINCT room_id FROM inbound_staging WHERE poisoned = 0").fetchall()
    return [r[0] for r in rows]


def room_versions(conn: sa.Connection, room_ids: Iterable[str]) -> dict[str, str]:
    """``room_id -> room_version`` for the rooms among ``room_ids`` we hold."""
    raw = _raw(conn)
    out: dict[str, str] = {}
    for room_id in set(room_ids):
        row = raw.execute("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
        if row is not None:
            out[room_id] = row[0]
    return out


def server_acls(conn: sa.Connection, room_ids: Iterable[str]) -> dict[str, Any]:
    """``room_id -> content`` of each room's current ``m.room.server_acl`` (rooms
    without one are left out)."""
    raw = _raw(conn)
    out: dict[str, Any] = {}
    for room_id in set(room_ids):
        row = raw.execute(
            "SELECT e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id "
            "WHERE cs.room_id = ? AND cs.type = 'm.room.server_acl' AND cs.state_key = ''",
            (room_id,),
        ).fetchone()
        if row is not None:
            out[room_id] = orjson.loads(row[0]).get("content")
    return out
