"""The remote device-list cache: what we hold of remote users' devices, device keys
and cross-signing keys (server-server "Device Management", client-server "Tracking
the device list for a user").

Theory of operation
-------------------
One ``remote_device_users`` row per remote user we track, with their devices in
``remote_devices``. A row holds:

* ``stream_id``: the last ``m.device_list_update`` / ``/user/devices`` stream ID of
  theirs that the cache reflects (``None``: filled from ``/user/keys/query``,
  which carries none, so the next update cannot be chained and resyncs);
* ``stale``: a gap was seen (an update whose ``prev_id`` we do not hold): the cache
  must be replaced through ``/user/devices`` before it is served
  (``roomactors.device_lists`` resyncs stale users, also after a restart);
* ``master_key`` / ``self_signing_key``: the user's public cross-signing keys.

Writers: :func:`replace_user_cache` (a resync, or a ``/user/keys/query`` answer when
no row exists), :func:`apply_device_update` (an incremental update whose
``prev_id`` chains), :func:`set_signing_keys` (``m.signing_key_update``),
:func:`mark_stale`, and :func:`delete_user_cache` (invalidation: we share no room
with the user any more, so we will not hear of their changes; a later re-share
starts from nothing). Callers decide *whether* (room sharing, origin checks); this
module only stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .rooms import _dump_json, _load_json
from .schema import remote_device_users, remote_devices

__all__ = [
    "CacheState",
    "CachedUser",
    "get_cache_states",
    "get_cached_users",
    "replace_user_cache",
    "apply_device_update",
    "set_signing_keys",
    "mark_stale",
    "get_stale_users",
    "delete_user_cache",
    "get_cached_user_ids",
]

_u = remote_device_users
_dv = remote_devices


@dataclass(frozen=True, slots=True)
class CacheState:
    stream_id: int | None
    stale: bool


@dataclass(slots=True)
class CachedUser:
    user_id: str
    stream_id: int | None
    #: device ID -> (display name, signed device keys or None)
    devices: dict[str, tuple[str | None, dict[str, Any] | None]]
    master_key: dict[str, Any] | None
    self_signing_key: dict[str, Any] | None


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def get_cache_states(conn: sa.Connection, user_ids: Iterable[str]) -> dict[str, CacheState]:
    """The cache row (stream ID, stale) of each user that has one."""
    out: dict[str, CacheState] = {}
    for chunk in _chunks(list(dict.fromkeys(user_ids))):
        rows = conn.execute(sa.select(_u.c.user_id, _u.c.stream_id, _u.c.stale).where(_u.c.user_id.in_(chunk)))
        out.update({u: CacheState(s, bool(st)) for u, s, st in rows})
    return out


def get_cached_users(conn: sa.Connection, user_ids: Iterable[str]) -> dict[str, CachedUser]:
    """The cached devices and keys of each user that has a row (stale ones included:
    the caller decides whether to serve them)."""
    out: dict[str, CachedUser] = {}
    wanted = list(dict.fromkeys(user_ids))
    for chunk in _chunks(wanted):
        for row in conn.execute(sa.select(_u).where(_u.c.user_id.in_(chunk))):
            out[row.user_id] = CachedUser(
                row.user_id, row.stream_id, {},
                _load_json(row.master_key) if row.master_key else None,
                _load_json(row.self_signing_key) if row.self_signing_key else None,
            )
        found = [u for u in chunk if u in out]
        if found:
            rows = conn.execute(
                sa.select(_dv.c.user_id, _dv.c.device_id, _dv.c.display_name, _dv.c.keys_json)
                .where(_dv.c.user_id.in_(found))
            )
            for user_id, device_id, name, keys in rows:
                out[user_id].devices[device_id] = (name, _load_json(keys) if keys else None)
    return out


def replace_user_cache(
    conn: sa.Connection,
    user_id: str,
    *,
    devices: Iterable[tuple[str, str | None, dict[str, Any] | None]],
    master_key: dict[str, Any] | None,
    self_signing_key: dict[str, Any] | None,
    stream_id: int | None,
    now_ms: int,
    stale: bool = False,
) -> None:
    """Replace everything held for the user: ``devices`` of (device ID, display name,
    keys)."""
    conn.execute(sa.delete(_dv).where(_dv.c.user_id == user_id))
    values = [
        {"user_id": user_id, "device_id": d, "display_name": n, "keys_json": _dump_json(k) if k else None}
        for d, n, k in devices
    ]
    if values:
        conn.execute(sa.insert(_dv), values)
    row = {
        "stream_id": stream_id, "stale": stale, "updated_ts": now_ms,
        "master_key": _dump_json(master_key) if master_key else None,
        "self_signing_key": _dump_json(self_signing_key) if self_signing_key else None,
    }
    if conn.execute(sa.update(_u).where(_u.c.user_id == user_id).values(**row)).rowcount == 0:
        conn.execute(sa.insert(_u).values(user_id=user_id, **row))


def apply_device_update(
    conn: sa.Connection,
    user_id: str,
    device_id: str,
    *,
    display_name: str | None,
    keys: dict[str, Any] | None,
    deleted: bool,
    stream_id: int,
    now_ms: int,
) -> None:
    """One incremental ``m.device_list_update`` on an existing cache row."""
    where = (_dv.c.user_id == user_id, _dv.c.device_id == device_id)
    conn.execute(sa.delete(_dv).where(*where))
    if not deleted:
        conn.execute(sa.insert(_dv).values(
            user_id=user_id, device_id=device_id, display_name=display_name,
            keys_json=_dump_json(keys) if keys else None,
        ))
    conn.execute(sa.update(_u).where(_u.c.user_id == user_id).values(
        stream_id=sa.func.max(sa.func.coalesce(_u.c.stream_id, 0), stream_id), updated_ts=now_ms,
    ))


def set_signing_keys(
    conn: sa.Connection, user_id: str, *, master_key: dict[str, Any] | None,
    self_signing_key: dict[str, Any] | None, now_ms: int,
) -> bool:
    """Replace the cross-signing keys given (``None``: keep) on an existing row.
    Returns False if the user has no row."""
    values: dict[str, Any] = {"updated_ts": now_ms}
    if master_key is not None:
        values["master_key"] = _dump_json(master_key)
    if self_signing_key is not None:
        values["self_signing_key"] = _dump_json(self_signing_key)
    return conn.execute(sa.update(_u).where(_u.c.user_id == user_id).values(**values)).rowcount > 0


def mark_stale(conn: sa.Connection, user_id: str, *, now_ms: int) -> None:
    """Mark the user's cache stale (creating an empty stale row if none)."""
    if conn.execute(sa.update(_u).where(_u.c.user_id == user_id).values(stale=True)).rowcount == 0:
        conn.execute(sa.insert(_u).values(user_id=user_id, stream_id=None, stale=True, updated_ts=now_ms))


def get_stale_users(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(_u.c.user_id).where(_u.c.stale.is_(True)).order_by(_u.c.user_id)).scalars())


def get_all_cached_user_ids(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(_u.c.user_id).order_by(_u.c.user_id)).scalars())


def get_cached_user_ids(conn: sa.Connection, user_ids: Iterable[str]) -> set[str]:
    return set(get_cache_states(conn, user_ids))


def delete_user_cache(conn: sa.Connection, user_id: str) -> bool:
    """Forget the user (invalidation). Returns True if a row was held."""
    conn.execute(sa.delete(_dv).where(_dv.c.user_id == user_id))
    return conn.execute(sa.delete(_u).where(_u.c.user_id == user_id)).rowcount > 0
