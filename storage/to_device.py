"""To-device messages: each local device's inbox, the /sendToDevice transaction IDs
and the (origin, message_id) record that makes federated delivery exactly-once.

Theory of operation
-------------------
Client-server API "Send-to-Device messaging", "Server behaviour": messages are
stored per device "until they are successfully delivered", listed by ``/sync``
"in order of arrival", at most 100 per response, and deleted when the client
syncs again with the ``next_batch`` of the response that carried them.

* **Inbox.** One ``device_inbox`` row per (message, target device). ``stream_id``
  (AUTOINCREMENT, never reused) is the to-device stream position; the sync token's
  fourth part is the ``stream_id`` of the last message delivered.
* **Delivery** (:func:`sync_to_device`): the device's rows with ``stream_id > after``,
  oldest first, at most :data:`SYNC_LIMIT`; the returned position is the last one's
  ``stream_id`` (or ``after``), so a bounded batch never skips a message.
* **Acknowledgement** (:func:`delete_acknowledged`): a sync whose ``since`` carries
  position P proves the client has every message ≤ P: those rows go.
* **Writes** (:func:`send_local_messages`, :func:`receive_remote_batch`) are
  whole-transaction functions: ``*`` is expanded, and unknown devices and users are
  skipped (Synapse does the same), against the ``devices`` table in the same
  transaction. :func:`send_local_messages` records the client's txnId and writes
  the remote EDUs to ``storage.outbox`` in the same transaction;
  :func:`receive_remote_batch` records (origin, message_id) in the same
  transaction as the inbox rows, so a repeated EDU is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import outbox
from .compiled import compiled, raw
from .rooms import _dump_json, _load_json
from .schema import device_inbox, devices, to_device_received, to_device_txns

__all__ = [
    "SYNC_LIMIT",
    "TXN_RETENTION_MS",
    "RECEIVED_RETENTION_MS",
    "Delivery",
    "sync_to_device",
    "has_acknowledged",
    "delete_acknowledged",
    "delete_device_inbox",
    "send_local_messages",
    "RemoteMessage",
    "receive_remote_batch",
    "count_inbox",
]

#: "100 messages is recommended as a reasonable limit" (Send-to-Device, Server behaviour).
SYNC_LIMIT = 100
#: /sendToDevice txnIds are remembered this long (a client retries within minutes).
TXN_RETENTION_MS = 24 * 3600 * 1000
#: (origin, message_id) pairs are remembered this long (a peer's sender retries, with
#: backoff, for far less; Synapse also keeps a week).
RECEIVED_RETENTION_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a write delivered: the local users with new inbox rows (to notify) and the
    destinations given outbox EDUs (to wake)."""

    users: tuple[str, ...]
    destinations: tuple[str, ...]
    duplicate: bool = False  # the txnId / message_id was seen before: nothing was done


# ---------------------------------------------------------------------------- reads


_SELECT_INBOX = compiled(  # every /sync: compiled once (storage.compiled)
    sa.select(device_inbox.c.stream_id, device_inbox.c.sender, device_inbox.c.type, device_inbox.c.content_json)
    .where(
        device_inbox.c.user_id == sa.bindparam("user_id"),
        device_inbox.c.device_id == sa.bindparam("device_id"),
        device_inbox.c.stream_id > sa.bindparam("after"),
    )
    .order_by(device_inbox.c.stream_id),
    "user_id", "device_id", "after",
) + " LIMIT :limit"


def sync_to_device(
    conn: sa.Connection, user_id: str, device_id: str, *, after: int, limit: int = SYNC_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """The device's to-device messages after position ``after`` (oldest first, at most
    ``limit``) as ``{sender, type, content}``, and the position to put in ``next_batch``:
    the last one's stream ID, or ``after`` when there are none."""
    rows = raw(conn).execute(
        _SELECT_INBOX, {"user_id": user_id, "device_id": device_id, "after": after, "limit": limit}
    ).fetchall()
    events = [{"sender": sender, "type": type_, "content": _load_json(content)} for _, sender, type_, content in rows]
    return events, (rows[-1][0] if rows else after)


_ANY_AT_OR_BELOW = compiled(
    sa.select(device_inbox.c.stream_id)
    .where(
        device_inbox.c.user_id == sa.bindparam("user_id"),
        device_inbox.c.device_id == sa.bindparam("device_id"),
        device_inbox.c.stream_id <= sa.bindparam("upto"),
    ),
    "user_id", "device_id", "upto",
) + " LIMIT 1"


def has_acknowledged(conn: sa.Connection, user_id: str, device_id: str, *, upto: int) -> bool:
    """Whether the device has any inbox row at or below ``upto`` (one index seek)."""
    found = raw(conn).execute(_ANY_AT_OR_BELOW, {"user_id": user_id, "device_id": device_id, "upto": upto})
    return found.fetchone() is not None


def count_inbox(conn: sa.Connection, user_id: str, device_id: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(device_inbox).where(device_inbox.c.user_id == user_id)
    if device_id is not None:
        query = query.where(device_inbox.c.device_id == device_id)
    return conn.execute(query).scalar() or 0


# --------------------------------------------------------------------------- writes


def delete_acknowledged(conn: sa.Connection, user_id: str, device_id: str, *, upto: int) -> int:
    """The device synced with ``since`` at position ``upto``: it has every message up to
    there ("the server should infer that any send-to-device messages in that response
    have been delivered successfully, and delete them"). Returns the rows deleted."""
    return conn.execute(
        sa.delete(device_inbox).where(
            device_inbox.c.user_id == user_id,
            device_inbox.c.device_id == device_id,
            device_inbox.c.stream_id <= upto,
        )
    ).rowcount


def delete_device_inbox(
    conn: sa.Connection, user_id: str, device_ids: Iterable[str] | None = None, *, except_device: str | None = None
) -> int:
    """Devices were deleted: so are their pending messages. ``device_ids`` None means
    every device of the user (but ``except_device``, if given)."""
    where = [device_inbox.c.user_id == user_id]
    if device_ids is not None:
        ids = list(device_ids)
        if not ids:
            return 0
        where.append(device_inbox.c.device_id.in_(ids))
    if except_device is not None:
        where.append(device_inbox.c.device_id != except_device)
    return conn.execute(sa.delete(device_inbox).where(*where)).rowcount


def _expand(
    conn: sa.Connection, messages: Mapping[str, Mapping[str, dict[str, Any]]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(user, device, content) for each existing target device, in request order; ``*``
    means every current device of the user (a specific device named too gets the
    ``*`` content once, not twice)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for user_id, by_device in messages.items():
        if not by_device:
            continue
        known = [d for (d,) in raw(conn).execute(_USER_DEVICES, {"user_id": user_id})]
        if not known:
            continue  # not a user of ours, or no devices: ignored
        if "*" in by_device:
            content = by_device["*"]
            out.extend((user_id, device_id, content) for device_id in known)
        else:
            existing = set(known)
            out.extend((user_id, device_id, c) for device_id, c in by_device.items() if device_id in existing)
    return out


def _insert_inbox(conn: sa.Connection, sender: str, event_type: str, targets: list[tuple[str, str, dict[str, Any]]]) -> None:
    if targets:
        raw(conn).executemany(
            _INSERT_INBOX,
            [
                {"user_id": user_id, "device_id": device_id, "sender": sender, "type": event_type,
                 "content_json": _dump_json(content)}
                for user_id, device_id, content in targets
            ],
        )


# Every /sendToDevice runs these: compiled once (storage.compiled).
_USER_DEVICES = compiled(
    sa.select(devices.c.device_id).where(devices.c.user_id == sa.bindparam("user_id")).order_by(devices.c.device_id),
    "user_id",
)
_INSERT_INBOX = compiled(
    sa.insert(device_inbox).values(
        user_id=sa.bindparam("user_id"), device_id=sa.bindparam("device_id"), sender=sa.bindparam("sender"),
        type=sa.bindparam("type"), content_json=sa.bindparam("content_json"),
    ),
    "user_id", "device_id", "sender", "type", "content_json",
)
_TXN_SEEN = compiled(
    sa.select(to_device_txns.c.created_ts).where(
        to_device_txns.c.user_id == sa.bindparam("user_id"),
        to_device_txns.c.device_id == sa.bindparam("device_id"),
        to_device_txns.c.event_type == sa.bindparam("event_type"),
        to_device_txns.c.txn_id == sa.bindparam("txn_id"),
    ),
    "user_id", "device_id", "event_type", "txn_id",
)
_TXN_EXPIRE = compiled(
    sa.delete(to_device_txns).where(to_device_txns.c.created_ts < sa.bindparam("before")), "before"
)
_TXN_INSERT = compiled(
    sa.insert(to_device_txns).values(
        user_id=sa.bindparam("user_id"), device_id=sa.bindparam("device_id"), event_type=sa.bindparam("event_type"),
        txn_id=sa.bindparam("txn_id"), created_ts=sa.bindparam("created_ts"),
    ),
    "user_id", "device_id", "event_type", "txn_id", "created_ts",
)


def send_local_messages(
    conn: sa.Connection,
    *,
    sender: str,
    sender_device: str,
    event_type: str,
    txn_id: str,
    local: Mapping[str, Mapping[str, dict[str, Any]]],
    remote_edus: Iterable[tuple[str, dict[str, Any]]],
    now_ms: int,
) -> Delivery:
    """One ``/sendToDevice`` request, in one transaction: unless (sender, device, type,
    txnId) was seen, record it, fill the local inboxes and owe each remote
    destination its ``m.direct_to_device`` EDUs (``remote_edus``: (destination,
    content), written to ``storage.outbox`` in order)."""
    db = raw(conn)
    key = {"user_id": sender, "device_id": sender_device, "event_type": event_type, "txn_id": txn_id}
    if db.execute(_TXN_SEEN, key).fetchone() is not None:
        return Delivery((), (), duplicate=True)
    # Forget expired txnIds while we are here (an index range: empty, one seek, most times).
    db.execute(_TXN_EXPIRE, {"before": now_ms - TXN_RETENTION_MS})
    db.execute(_TXN_INSERT, {**key, "created_ts": now_ms})
    targets = _expand(conn, local)
    _insert_inbox(conn, sender, event_type, targets)
    edus = list(remote_edus)
    outbox.add_edus(conn, [(destination, "m.direct_to_device", content) for destination, content in edus])
    return Delivery(
        tuple(dict.fromkeys(u for u, _, _ in targets)), tuple(dict.fromkeys(d for d, _ in edus))
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteMessage:
    """One inbound ``m.direct_to_device`` EDU, checked: ``messages`` names local users only."""

    message_id: str
    sender: str
    event_type: str
    messages: Mapping[str, Mapping[str, dict[str, Any]]]


def receive_remote_batch(conn: sa.Connection, *, origin: str, edus: Iterable[RemoteMessage], now_ms: int) -> Delivery:
    """Inbound ``m.direct_to_device`` EDUs of one transaction, in one transaction: each
    whose (origin, message_id) was not seen before is recorded and fills its targets'
    inboxes (``*`` expanded, unknown devices skipped); the others are no-ops."""
    conn.execute(sa.delete(to_device_received).where(to_device_received.c.received_ts < now_ms - RECEIVED_RETENTION_MS))
    users: dict[str, None] = {}
    duplicate = False
    for edu in edus:
        key = (to_device_received.c.origin == origin, to_device_received.c.message_id == edu.message_id)
        if conn.execute(sa.select(to_device_received.c.received_ts).where(*key)).first() is not None:
            duplicate = True
            continue
        conn.execute(sa.insert(to_device_received).values(origin=origin, message_id=edu.message_id, received_ts=now_ms))
        targets = _expand(conn, edu.messages)
        _insert_inbox(conn, edu.sender, edu.event_type, targets)
        users.update(dict.fromkeys(u for u, _, _ in targets))
    return Delivery(tuple(users), (), duplicate=duplicate)
