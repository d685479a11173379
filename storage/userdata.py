"""Per-user data and the "misc" stream: account data, filters, receipts, push
rules, presence.

Theory of operation
-------------------
Synchronous repository functions. Every write that /sync must deliver takes a new
position from the shared ``misc`` counter (``accounts.next_stream_id``) in the
same transaction and stores it on the row, so "what changed since token X" is a
range query on ``stream_id``. Rows are upserted (latest value wins), which is what
the spec's account data, receipts and presence semantics want.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from .accounts import next_stream_id
from .schema import account_data, filters, presence, push_rules, receipts

__all__ = [
    "set_account_data",
    "get_account_data",
    "get_account_data_since",
    "add_filter",
    "get_filter",
    "set_receipt",
    "get_receipts_since",
    "get_receipt",
    "get_push_rules_doc",
    "get_push_rules_version",
    "set_push_rules_doc",
    "set_presence",
    "get_presence",
    "get_presence_since",
    "get_presence_changes",
]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# -------------------------------------------------------------------- account data


def set_account_data(conn: sa.Connection, user_id: str, room_id: str, type: str, content: dict[str, Any]) -> int:
    """Upsert (room_id "" = global); returns the new stream position."""
    pos = next_stream_id(conn)
    conn.execute(
        sa.delete(account_data).where(
            account_data.c.user_id == user_id, account_data.c.room_id == room_id, account_data.c.type == type
        )
    )
    conn.execute(
        sa.insert(account_data).values(user_id=user_id, room_id=room_id, type=type, content=_dumps(content), stream_id=pos)
    )
    return pos


def get_account_data(conn: sa.Connection, user_id: str, room_id: str, type: str) -> dict[str, Any] | None:
    text = conn.execute(
        sa.select(account_data.c.content).where(
            account_data.c.user_id == user_id, account_data.c.room_id == room_id, account_data.c.type == type
        )
    ).scalar()
    return None if text is None else orjson.loads(text)


def get_account_data_since(
    conn: sa.Connection, user_id: str, since: int, upto: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """(room_id, type, content) changed in ``(since, upto]`` (room_id "" = global)."""
    query = sa.select(account_data.c.room_id, account_data.c.type, account_data.c.content).where(
        account_data.c.user_id == user_id, account_data.c.stream_id > since, account_data.c.stream_id <= upto
    )
    return [(r, t, orjson.loads(c)) for r, t, c in conn.execute(query)]


# ------------------------------------------------------------------------- filters


def add_filter(conn: sa.Connection, user_id: str, filter_json: dict[str, Any]) -> int:
    last = conn.execute(sa.select(sa.func.max(filters.c.filter_id)).where(filters.c.user_id == user_id)).scalar()
    filter_id = (last or 0) + 1
    conn.execute(sa.insert(filters).values(user_id=user_id, filter_id=filter_id, json=_dumps(filter_json)))
    return filter_id


def get_filter(conn: sa.Connection, user_id: str, filter_id: int) -> dict[str, Any] | None:
    text = conn.execute(
        sa.select(filters.c.json).where(filters.c.user_id == user_id, filters.c.filter_id == filter_id)
    ).scalar()
    return None if text is None else orjson.loads(text)


# ------------------------------------------------------------------------ receipts


def set_receipt(
    conn: sa.Connection, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, ts: int
) -> int:
    pos = next_stream_id(conn)
    where = (
        receipts.c.room_id == room_id,
        receipts.c.receipt_type == receipt_type,
        receipts.c.user_id == user_id,
        receipts.c.thread_id == thread_id,
    )
    conn.execute(sa.delete(receipts).where(*where))
    conn.execute(
        sa.insert(receipts).values(
            room_id=room_id, receipt_type=receipt_type, user_id=user_id, thread_id=thread_id,
            event_id=event_id, ts=ts, stream_id=pos,
        )
    )
    return pos


def get_receipt(conn: sa.Connection, room_id: str, user_id: str, receipt_types: tuple[str, ...]) -> str | None:
    """The event ID of the user's newest receipt of those types (any thread)."""
    return conn.execute(
        sa.select(receipts.c.event_id)
        .where(receipts.c.room_id == room_id, receipts.c.user_id == user_id, receipts.c.receipt_type.in_(receipt_types))
        .order_by(receipts.c.stream_id.desc())
        .limit(1)
    ).scalar()


def get_receipts_since(
    conn: sa.Connection, room_ids: list[str], since: int, upto: int, *, viewer: str
) -> dict[str, dict[str, Any]]:
    """room_id -> ``m.receipt`` content of the receipts changed in ``(since, upto]``.
    Private receipts (``m.read.private``) are only shown to their owner."""
    if not room_ids:
        return {}
    query = sa.select(
        receipts.c.room_id, receipts.c.receipt_type, receipts.c.user_id, receipts.c.thread_id,
        receipts.c.event_id, receipts.c.ts,
    ).where(receipts.c.room_id.in_(room_ids), receipts.c.stream_id > since, receipts.c.stream_id <= upto)
    out: dict[str, dict[str, Any]] = {}
    for room_id, rtype, user_id, thread_id, event_id, ts in conn.execute(query):
        if rtype == "m.read.private" and user_id != viewer:
            continue
        data: dict[str, Any] = {"ts": ts}
        if thread_id:
            data["thread_id"] = thread_id
        out.setdefault(room_id, {}).setdefault(event_id, {}).setdefault(rtype, {})[user_id] = data
    return out


# ---------------------------------------------------------------------- push rules


def get_push_rules_doc(conn: sa.Connection, user_id: str) -> dict[str, Any] | None:
    text = conn.execute(sa.select(push_rules.c.doc).where(push_rules.c.user_id == user_id)).scalar()
    return None if text is None else orjson.loads(text)


def set_push_rules_doc(conn: sa.Connection, user_id: str, doc: dict[str, Any]) -> int:
    pos = next_stream_id(conn)
    conn.execute(sa.delete(push_rules).where(push_rules.c.user_id == user_id))
    conn.execute(sa.insert(push_rules).values(user_id=user_id, doc=_dumps(doc), stream_id=pos))
    return pos


# ------------------------------------------------------------------------ presence


def set_presence(conn: sa.Connection, user_id: str, state: str, status_msg: str | None, ts: int) -> int:
    pos = next_stream_id(conn)
    conn.execute(sa.delete(presence).where(presence.c.user_id == user_id))
    conn.execute(
        sa.insert(presence).values(user_id=user_id, presence=state, status_msg=status_msg, last_active_ts=ts, stream_id=pos)
    )
    return pos


def get_presence(conn: sa.Connection, user_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(presence).where(presence.c.user_id == user_id)).first()
    if row is None:
        return None
    return {"presence": row.presence, "status_msg": row.status_msg, "last_active_ts": row.last_active_ts}


def get_presence_since(conn: sa.Connection, user_ids: list[str], since: int, upto: int) -> list[dict[str, Any]]:
    if not user_ids:
        return []
    query = sa.select(presence).where(
        presence.c.user_id.in_(user_ids), presence.c.stream_id > since, presence.c.stream_id <= upto
    )
    return [
        {"user_id": r.user_id, "presence": r.presence, "status_msg": r.status_msg, "last_active_ts": r.last_active_ts}
        for r in conn.execute(query)
    ]


def get_push_rules_version(conn: sa.Connection, user_id: str) -> int:
    """The stream position of the user's last push-rule change (0: never changed)."""
    value = conn.execute(sa.select(push_rules.c.stream_id).where(push_rules.c.user_id == user_id)).scalar()
    return int(value or 0)


def get_presence_changes(conn: sa.Connection, since: int, upto: int) -> list[dict[str, Any]]:
    """Every presence row changed in ``(since, upto]`` (the caller keeps its peers')."""
    query = sa.select(presence).where(presence.c.stream_id > since, presence.c.stream_id <= upto)
    return [
        {"user_id": r.user_id, "presence": r.presence, "status_msg": r.status_msg, "last_active_ts": r.last_active_ts}
        for r in conn.execute(query)
    ]
