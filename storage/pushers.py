"""Pushers (client-server "Push Notifications", ``POST /pushers/set``,
``GET /pushers``). Synchronous repository functions for ``db.write``/``db.read``.

Theory of operation
-------------------
A pusher is keyed by ``(user_id, app_id, pushkey)`` (the ``pushers`` table's
primary key) and stored as one JSON document: the fields of pusher.yaml's
``Pusher`` object plus ``device_id``, the device whose access token set it (kept so
that deleting a device can delete its pushers, as Synapse does; not served).

Setting a pusher replaces the document with the same key. Unless ``append`` is
true, the spec also requires removing "any other pushers with the same App ID and
pushkey for different users" (pusher.yaml, ``append``); :func:`set_pusher` does
both in the caller's transaction, so the swap is atomic.

This module only stores pushers: nothing delivers notifications to push gateways
yet (that belongs to the push-gateway issue).
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from .schema import pushers

__all__ = ["set_pusher", "delete_pusher", "get_pushers", "delete_device_pushers"]


def set_pusher(
    conn: sa.Connection, user_id: str, app_id: str, pushkey: str, pusher: dict[str, Any], *, append: bool = False
) -> None:
    """Create or replace the pusher ``(user_id, app_id, pushkey)``; without
    ``append``, drop the pushers of *other* users with the same app ID and pushkey."""
    same_key = (pushers.c.app_id == app_id, pushers.c.pushkey == pushkey)
    if not append:
        conn.execute(sa.delete(pushers).where(*same_key, pushers.c.user_id != user_id))
    conn.execute(sa.delete(pushers).where(*same_key, pushers.c.user_id == user_id))
    conn.execute(
        sa.insert(pushers).values(user_id=user_id, app_id=app_id, pushkey=pushkey, json=orjson.dumps(pusher).decode())
    )


def delete_pusher(conn: sa.Connection, user_id: str, app_id: str, pushkey: str) -> bool:
    """Delete one pusher; True if it existed."""
    result = conn.execute(
        sa.delete(pushers).where(pushers.c.user_id == user_id, pushers.c.app_id == app_id, pushers.c.pushkey == pushkey)
    )
    return result.rowcount > 0


def get_pushers(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    """The user's pushers (stored documents, ``device_id`` included), by app ID then pushkey."""
    rows = conn.execute(
        sa.select(pushers.c.json).where(pushers.c.user_id == user_id).order_by(pushers.c.app_id, pushers.c.pushkey)
    ).scalars()
    return [orjson.loads(text) for text in rows]


def delete_device_pushers(conn: sa.Connection, user_id: str, device_ids: list[str]) -> int:
    """Delete the pushers the given devices set (for device deletion); returns how many."""
    wanted = set(device_ids)
    doomed = [
        (app_id, pushkey)
        for app_id, pushkey, text in conn.execute(
            sa.select(pushers.c.app_id, pushers.c.pushkey, pushers.c.json).where(pushers.c.user_id == user_id)
        )
        if orjson.loads(text).get("device_id") in wanted
    ]
    for app_id, pushkey in doomed:
        delete_pusher(conn, user_id, app_id, pushkey)
    return len(doomed)
