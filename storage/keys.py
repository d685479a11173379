"""Remote servers' verify keys (table ``server_keys``). Synchronous repository
functions for ``db.write``/``db.read``.

Theory of operation
-------------------
One row per ``(server_name, key_id)``: the key (unpadded base64), how long it may
be relied on (``valid_until_ts``; for an old key its ``expired_ts``), when we
fetched it, and the whole self-signed ``/_matrix/key/v2/server`` response it came
from (``response_json``), which is what our notary endpoint serves back.

:func:`upsert_server_keys` never lets an older view of a key replace a newer one: a
row is replaced only when the incoming key newly reports the key as retired
(``expired_ts`` set where it was not), or is valid at least as long without
un-retiring it (a key once seen in ``old_verify_keys`` stays old). So a stale notary
copy cannot roll back what a direct fetch stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from .schema import server_keys

__all__ = ["KeyRow", "StoredServerKey", "upsert_server_keys", "get_server_keys"]


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One key to store (what :func:`upsert_server_keys` takes)."""

    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    expired_ts: int | None = None


@dataclass(frozen=True, slots=True)
class StoredServerKey:
    server_name: str
    key_id: str
    verify_key: str
    valid_until_ts: int
    expired_ts: int | None
    fetched_ts: int
    response_json: str


_upsert = sqlite.insert(server_keys)
_UPSERT = _upsert.on_conflict_do_update(
    index_elements=["server_name", "key_id"],
    set_={
        "verify_key": _upsert.excluded.verify_key,
        "valid_until_ts": _upsert.excluded.valid_until_ts,
        "expired_ts": _upsert.excluded.expired_ts,
        "fetched_ts": _upsert.excluded.fetched_ts,
        "response_json": _upsert.excluded.response_json,
    },
    where=sa.or_(
        # newly retired
        sa.and_(_upsert.excluded.expired_ts.is_not(None), server_keys.c.expired_ts.is_(None)),
        # valid at least as long, and not un-retiring a retired key
        sa.and_(
            _upsert.excluded.valid_until_ts >= server_keys.c.valid_until_ts,
            sa.or_(_upsert.excluded.expired_ts.is_not(None), server_keys.c.expired_ts.is_(None)),
        ),
    ),
)


def upsert_server_keys(
    conn: sa.Connection, server_name: str, keys: Iterable[KeyRow], *, fetched_ts: int, response_json: str
) -> None:
    """Store the keys of one checked response (see the module docstring for which wins)."""
    rows = [
        {
            "server_name": server_name,
            "key_id": k.key_id,
            "verify_key": k.verify_key,
            "valid_until_ts": k.valid_until_ts,
            "expired_ts": k.expired_ts,
            "fetched_ts": fetched_ts,
            "response_json": response_json,
        }
        for k in keys
    ]
    if rows:
        conn.execute(_UPSERT, rows)


def get_server_keys(
    conn: sa.Connection, server_names: Iterable[str], key_ids: Sequence[str] | None = None
) -> list[StoredServerKey]:
    """Every stored key of ``server_names`` (only ``key_ids`` when given), ordered by
    server then key ID."""
    names = sorted(set(server_names))
    if not names:
        return []
    query = sa.select(server_keys).where(server_keys.c.server_name.in_(names))
    if key_ids is not None:
        if not key_ids:
            return []
        query = query.where(server_keys.c.key_id.in_(list(key_ids)))
    query = query.order_by(server_keys.c.server_name, server_keys.c.key_id)
    return [
        StoredServerKey(
            r.server_name, r.key_id, r.verify_key, r.valid_until_ts, r.expired_ts, r.fetched_ts, r.response_json
        )
        for r in conn.execute(query)
    ]
