"""The durable outbound EDU outbox: EDUs owed to remote servers that must never be lost.

Theory of operation
-------------------
Most EDUs are ephemeral (typing, receipts, presence): the sender keeps them in memory
and may drop them. Some are not: an ``m.direct_to_device`` message (server-server API
"Send-to-device messaging") or an ``m.device_list_update`` / ``m.signing_key_update``
("Device Management") that is lost breaks end-to-end encryption. Those go through
this table instead.

* **Written with the change.** :func:`add_edu` / :func:`add_edus` run inside the
  writer transaction that makes the change they report (a ``/sendToDevice``, a key
  upload), so the EDU is durable exactly when the change is. After the commit the
  caller wakes the sender: ``SenderHub.wake_outbox(destinations)``.
* **Read in order.** :func:`get_edus` returns a destination's rows oldest first
  (``outbox_id`` is AUTOINCREMENT, so it is the commit order and is never reused).
* **Deleted after the peer answers.** The sender deletes exactly the rows a
  transaction carried (:func:`delete_edus`) in the write that records the peer's
  answer; a crash before that sends them again (under a new txn ID), so receivers
  deduplicate (``message_id`` for to-device, ``stream_id`` for device lists).
* **Startup.** :func:`list_destinations` names the destinations with rows, so the
  sender restarts their queues.

Contents are stored as JSON text (``storage.rooms`` encoding: integers beyond 64
bits survive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .rooms import _dump_json, _load_json
from .schema import federation_outbox

__all__ = [
    "OutboxEdu",
    "add_edu",
    "add_edus",
    "get_edus",
    "delete_edus",
    "list_destinations",
    "count_edus",
]


@dataclass(frozen=True, slots=True)
class OutboxEdu:
    outbox_id: int
    edu_type: str
    content: dict[str, Any]


def add_edu(conn: sa.Connection, destination: str, edu_type: str, content: dict[str, Any]) -> None:
    """Owe ``destination`` this EDU; call inside the transaction that makes the change."""
    add_edus(conn, [(destination, edu_type, content)])


def add_edus(conn: sa.Connection, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """Many :func:`add_edu` at once: ``rows`` of (destination, edu_type, content), kept in this order."""
    values = [
        {"destination": destination, "edu_type": edu_type, "content_json": _dump_json(content)}
        for destination, edu_type, content in rows
    ]
    if values:
        conn.execute(sa.insert(federation_outbox), values)


def get_edus(conn: sa.Connection, destination: str, *, limit: int) -> list[OutboxEdu]:
    """The ``limit`` oldest EDUs owed to ``destination``, oldest first."""
    rows = conn.execute(
        sa.select(federation_outbox.c.outbox_id, federation_outbox.c.edu_type, federation_outbox.c.content_json)
        .where(federation_outbox.c.destination == destination)
        .order_by(federation_outbox.c.outbox_id)
        .limit(limit)
    )
    return [OutboxEdu(r.outbox_id, r.edu_type, _load_json(r.content_json)) for r in rows]


def delete_edus(conn: sa.Connection, destination: str, outbox_ids: Iterable[int]) -> int:
    """Delete these rows of ``destination`` (the peer answered the transaction that
    carried them). Returns how many were deleted."""
    ids = list(outbox_ids)
    if not ids:
        return 0
    result = conn.execute(
        sa.delete(federation_outbox).where(
            federation_outbox.c.destination == destination, federation_outbox.c.outbox_id.in_(ids)
        )
    )
    return result.rowcount


def list_destinations(conn: sa.Connection) -> list[str]:
    """Destinations that are owed at least one EDU (sorted)."""
    return list(
        conn.execute(
            sa.select(federation_outbox.c.destination).distinct().order_by(federation_outbox.c.destination)
        ).scalars()
    )


def count_edus(conn: sa.Connection, destination: str | None = None) -> int:
    """EDUs pending in the outbox (for one destination, or all)."""
    query = sa.select(sa.func.count()).select_from(federation_outbox)
    if destination is not None:
        query = query.where(federation_outbox.c.destination == destination)
    return conn.execute(query).scalar() or 0
