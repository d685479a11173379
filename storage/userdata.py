"""Per-user data and the "misc" stream: account data, filters, receipts, push
rules, presence.

Theory of operation
-------------------
Synchronous repository functions. Every write that /sync must deliver takes a new
position from the shared ``misc`` counter (``accounts.next_stream_id``) in the
same transaction and stores it on the row, so "what changed since token X" is a
range query on ``stream_id``. Rows are upserted (latest value wins), which is what
the spec's account data, receipts and presence semantics want.

The reads on the /sync path are compiled once at import and run on the sqlite3
connection under the caller's transaction, as ``storage.timeline`` does (see its
"Compiled reads"; the helpers are shared from there).
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from .accounts import next_stream_id
from .schema import account_data, events, filters, presence, push_rules, receipts
from .timeline import _compile, _InQuery, _raw, _text

__all__ = [
    "set_account_data",
    "get_account_data",
    "get_account_data_since",
    "add_filter",
    "get_filter",
    "set_receipt",
    "get_receipts_since",
    "get_receipt",
    "get_read_position",
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


_ACCOUNT_DATA_SINCE = _compile(
    sa.select(account_data.c.room_id, account_data.c.type, account_data.c.content).where(
        account_data.c.user_id == sa.bindparam("user_id"),
        account_data.c.stream_id > sa.bindparam("since"),
        account_data.c.stream_id <= sa.bindparam("upto"),
    ),
    "user_id",
    "since",
    "upto",
)


def get_account_data_since(
    conn: sa.Connection, user_id: str, since: int, upto: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """(room_id, type, content) changed in ``(since, upto]`` (room_id "" = global)."""
    rows = _raw(conn).execute(_ACCOUNT_DATA_SINCE, {"user_id": user_id, "since": since, "upto": upto})
    return [(r, t, orjson.loads(c)) for r, t, c in rows]


# ------------------------------------------------------------------------- filters


def add_filter(conn: sa.Connection, user_id: str, filter_json: dict[str, Any]) -> int:
    last = conn.execute(sa.select(sa.func.max(filters.c.filter_id)).where(filters.c.user_id == user_id)).scalar()
    filter_id = (last or 0) + 1
    conn.execute(sa.insert(filters).values(user_id=user_id, filter_id=filter_id, json=_dumps(filter_json)))
    return filter_id


_SELECT_FILTER = _compile(
    sa.select(filters.c.json).where(
        filters.c.user_id == sa.bindparam("user_id"), filters.c.filter_id == sa.bindparam("filter_id")
    ),
    "user_id",
    "filter_id",
)


def get_filter(conn: sa.Connection, user_id: str, filter_id: int) -> dict[str, Any] | None:
    row = _raw(conn).execute(_SELECT_FILTER, {"user_id": user_id, "filter_id": filter_id}).fetchone()
    return None if row is None else orjson.loads(row[0])


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


_RECEIPTS_OF_TYPES = _InQuery(
    sa.select(receipts.c.event_id, receipts.c.stream_id).where(
        receipts.c.room_id == sa.bindparam("room_id"),
        receipts.c.user_id == sa.bindparam("user_id"),
        receipts.c.receipt_type.in_(sa.bindparam("types", expanding=True)),
    ),
    ("types",),
    ("room_id", "user_id"),
)


def get_receipt(conn: sa.Connection, room_id: str, user_id: str, receipt_types: tuple[str, ...]) -> str | None:
    """The event ID of the user's newest receipt of those types (any thread)."""
    types = list(dict.fromkeys(receipt_types))
    if not types:
        return None
    rows = _RECEIPTS_OF_TYPES.rows(_raw(conn), (types,), {"room_id": room_id, "user_id": user_id})
    return max(rows, key=lambda r: r[1])[0] if rows else None


_READ_POSITION = _compile(
    sa.select(
        receipts.c.event_id,
        sa.select(events.c.stream_ordering).where(events.c.event_id == receipts.c.event_id).scalar_subquery(),
    )
    .where(
        receipts.c.room_id == sa.bindparam("room_id"),
        receipts.c.user_id == sa.bindparam("user_id"),
        receipts.c.receipt_type.in_([_text("m.read"), _text("m.read.private")]),
    )
    .order_by(receipts.c.stream_id.desc()),
    "room_id",
    "user_id",
) + "\n LIMIT 1"


def get_read_position(conn: sa.Connection, room_id: str, user_id: str) -> tuple[str | None, int | None]:
    """The user's newest ``m.read``/``m.read.private`` receipt in the room (any thread)
    and its event's stream ordering, in one query: ``(get_receipt(…, ("m.read",
    "m.read.private")), that event's stream_ordering)``; ``(None, None)`` without a
    receipt, ``(event_id, None)`` if its event is not stored."""
    row = _raw(conn).execute(_READ_POSITION, {"room_id": room_id, "user_id": user_id}).fetchone()
    return (None, None) if row is None else (row[0], row[1])


_RECEIPT_COLUMNS = (
    receipts.c.room_id, receipts.c.receipt_type, receipts.c.user_id, receipts.c.thread_id,
    receipts.c.event_id, receipts.c.ts,
)
_RECEIPTS_SINCE = _InQuery(
    sa.select(*_RECEIPT_COLUMNS).where(
        receipts.c.room_id.in_(sa.bindparam("room_ids", expanding=True)),
        receipts.c.stream_id > sa.bindparam("since"),
        receipts.c.stream_id <= sa.bindparam("upto"),
    ),
    ("room_ids",),
    ("since", "upto"),
)
_RECEIPTS_IN_RANGE = _compile(  # receipts_stream
    sa.select(*_RECEIPT_COLUMNS).where(
        receipts.c.stream_id > sa.bindparam("since"), receipts.c.stream_id <= sa.bindparam("upto")
    ),
    "since",
    "upto",
)


def get_receipts_since(
    conn: sa.Connection, room_ids: list[str], since: int, upto: int, *, viewer: str
) -> dict[str, dict[str, Any]]:
    """room_id -> ``m.receipt`` content of the receipts changed in ``(since, upto]``.
    Private receipts (``m.read.private``) are only shown to their owner.

    At most ``upto - since`` rows lie in the range (each write takes its own
    position): a short range (a long poll) is read through ``receipts_stream`` and kept
    for ``room_ids``; a long one per room by primary key. Either way rows are
    applied in primary-key order (a user's receipts of one type in two threads on
    the same event: the last thread's wins, as before)."""
    if not room_ids or since >= upto:
        return {}  # (an empty range: no query)
    raw = _raw(conn)
    if upto - since <= 4 * len(room_ids) + 32:
        wanted = set(room_ids)
        rows: Any = [r for r in raw.execute(_RECEIPTS_IN_RANGE, {"since": since, "upto": upto}) if r[0] in wanted]
        rows.sort(key=lambda r: r[:4])  # primary-key order, as the per-room read returns them
    else:
        rows = _RECEIPTS_SINCE.rows(raw, (list(dict.fromkeys(room_ids)),), {"since": since, "upto": upto})
    out: dict[str, dict[str, Any]] = {}
    for room_id, rtype, user_id, thread_id, event_id, ts in rows:
        if rtype == "m.read.private" and user_id != viewer:
            continue
        data: dict[str, Any] = {"ts": ts}
        if thread_id:
            data["thread_id"] = thread_id
        out.setdefault(room_id, {}).setdefault(event_id, {}).setdefault(rtype, {})[user_id] = data
    return out


# ---------------------------------------------------------------------- push rules


_SELECT_PUSH_RULES = _compile(
    sa.select(push_rules.c.doc).where(push_rules.c.user_id == sa.bindparam("user_id")), "user_id"
)


def get_push_rules_doc(conn: sa.Connection, user_id: str) -> dict[str, Any] | None:
    row = _raw(conn).execute(_SELECT_PUSH_RULES, {"user_id": user_id}).fetchone()
    return None if row is None else orjson.loads(row[0])


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


_PUSH_RULES_VERSION = _compile(
    sa.select(push_rules.c.stream_id).where(push_rules.c.user_id == sa.bindparam("user_id")), "user_id"
)


def get_push_rules_version(conn: sa.Connection, user_id: str) -> int:
    """The stream position of the user's last push-rule change (0: never changed)."""
    row = _raw(conn).execute(_PUSH_RULES_VERSION, {"user_id": user_id}).fetchone()
    return int(row[0] or 0) if row is not None else 0


_PRESENCE_CHANGES = _compile(
    sa.select(presence.c.user_id, presence.c.presence, presence.c.status_msg, presence.c.last_active_ts).where(
        presence.c.stream_id > sa.bindparam("since"), presence.c.stream_id <= sa.bindparam("upto")
    ),
    "since",
    "upto",
)


def get_presence_changes(conn: sa.Connection, since: int, upto: int) -> list[dict[str, Any]]:
    """Every presence row changed in ``(since, upto]`` (the caller keeps its peers')."""
    if since >= upto:
        return []  # an empty range: no query
    rows = _raw(conn).execute(_PRESENCE_CHANGES, {"since": since, "upto": upto})
    return [
        {"user_id": u, "presence": p, "status_msg": m, "last_active_ts": ts}
        for u, p, m, ts in rows
    ]
