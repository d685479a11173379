"""Accounts and sessions: users, devices, access and refresh tokens, profiles.

Theory of operation
-------------------
Synchronous repository functions, ``def verb_noun(conn, ...)``, run by
``Database.write`` (one transaction each) or ``Database.read``. Secrets never
reach this module in the clear: passwords arrive as argon2id PHC strings and
tokens as SHA-256 hex digests (``api.auth`` does the hashing), so the database
holds nothing a thief could log in with.

A *session* is a device plus its tokens. Logging a device out deletes its tokens
(and, for ``delete_device``, the device); a deactivated account keeps its row so
its user ID is never reused, with no password, devices or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import device_lists, e2e_keys, room_keys, to_device
from .compiled import compiled, raw
from .schema import access_tokens, devices, profiles, refresh_tokens, stream_positions, users

__all__ = [
    "Session",
    "UserRecord",
    "DeviceRecord",
    "UserExistsError",
    "next_stream_id",
    "current_stream_id",
    "create_user",
    "get_user",
    "user_exists",
    "set_password_hash",
    "deactivate_user",
    "upsert_device",
    "get_devices",
    "get_device",
    "update_device",
    "delete_devices",
    "add_access_token",
    "get_session",
    "delete_access_token",
    "delete_user_tokens",
    "add_refresh_token",
    "take_refresh_token",
    "get_profile",
    "set_profile",
]


class UserExistsError(ValueError):
    """The user ID is taken (also by a deactivated account)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    created_ts: int
    is_admin: bool
    deactivated: bool


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass(frozen=True, slots=True)
class Session:
    """Who an access token belongs to."""

    token_hash: str
    user_id: str
    device_id: str
    expires_ts: int | None
    is_admin: bool
    deactivated: bool


# ------------------------------------------------------------------ stream ids


def next_stream_id(conn: sa.Connection, name: str = "misc") -> int:
    """Bump and return the counter ``name`` (writer thread only, so race-free)."""
    pos = conn.execute(
        sa.update(stream_positions)
        .where(stream_positions.c.name == name)
        .values(pos=stream_positions.c.pos + 1)
        .returning(stream_positions.c.pos)
    ).scalar()
    if pos is None:
        conn.execute(sa.insert(stream_positions).values(name=name, pos=1))
        pos = 1
    return int(pos)


_CURRENT_POSITION = compiled(  # every /sync: compiled once (storage.compiled)
    sa.select(stream_positions.c.pos).where(stream_positions.c.name == sa.bindparam("name")), "name"
)


def current_stream_id(conn: sa.Connection, name: str = "misc") -> int:
    row = raw(conn).execute(_CURRENT_POSITION, {"name": name}).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# ------------------------------------------------------------------------ users


def create_user(
    conn: sa.Connection, user_id: str, password_hash: str | None, *, created_ts: int, is_admin: bool = False
) -> None:
    if user_exists(conn, user_id):
        raise UserExistsError(user_id)
    conn.execute(
        sa.insert(users).values(
            user_id=user_id, password_hash=password_hash, created_ts=created_ts, is_admin=is_admin, deactivated=False
        )
    )


def get_user(conn: sa.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(sa.select(users).where(users.c.user_id == user_id)).first()
    if row is None:
        return None
    return UserRecord(row.user_id, row.password_hash, row.created_ts, bool(row.is_admin), bool(row.deactivated))


def user_exists(conn: sa.Connection, user_id: str) -> bool:
    return conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None


def set_password_hash(conn: sa.Connection, user_id: str, password_hash: str) -> None:
    conn.execute(sa.update(users).where(users.c.user_id == user_id).values(password_hash=password_hash))


def deactivate_user(conn: sa.Connection, user_id: str) -> None:
    """Keep the row (IDs are never reused); drop the password, devices, tokens, keys
    and key backups."""
    conn.execute(sa.update(users).where(users.c.user_id == user_id).values(password_hash=None, deactivated=True))
    conn.execute(sa.delete(access_tokens).where(access_tokens.c.user_id == user_id))
    conn.execute(sa.delete(refresh_tokens).where(refresh_tokens.c.user_id == user_id))
    device_lists.record_devices_deleted(conn, user_id, None)  # m.device_list_update to room-mates
    conn.execute(sa.delete(devices).where(devices.c.user_id == user_id))
    to_device.delete_device_inbox(conn, user_id)  # their to-device inboxes go with them
    e2e_keys.delete_device_keys(conn, user_id, None)  # and their end-to-end keys
    room_keys.delete_all_for_user(conn, user_id)  # and their key backups (as Synapse does)


# ---------------------------------------------------------------------- devices


def upsert_device(
    conn: sa.Connection, user_id: str, device_id: str, *, display_name: str | None, ts: int, ip: str | None
) -> bool:
    """Create the device, or refresh its last-seen fields (and set the display name
    if one is given). Returns True if it was created."""
    existing = get_device(conn, user_id, device_id)
    if existing is None:
        conn.execute(
            sa.insert(devices).values(
                user_id=user_id, device_id=device_id, display_name=display_name, last_seen_ts=ts, last_seen_ip=ip
            )
        )
        device_lists.record_device_change(conn, user_id, device_id)  # a new device: tell room-mates
        return True
    values: dict[str, Any] = {"last_seen_ts": ts, "last_seen_ip": ip}
    if display_name is not None:
        values["display_name"] = display_name
    conn.execute(
        sa.update(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id).values(**values)
    )
    return False


def _device(row: Any) -> DeviceRecord:
    return DeviceRecord(row.user_id, row.device_id, row.display_name, row.last_seen_ts, row.last_seen_ip)


def get_devices(conn: sa.Connection, user_id: str) -> list[DeviceRecord]:
    rows = conn.execute(sa.select(devices).where(devices.c.user_id == user_id).order_by(devices.c.device_id))
    return [_device(r) for r in rows]


def get_device(conn: sa.Connection, user_id: str, device_id: str) -> DeviceRecord | None:
    row = conn.execute(
        sa.select(devices).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
    ).first()
    return None if row is None else _device(row)


def update_device(conn: sa.Connection, user_id: str, device_id: str, display_name: str | None) -> bool:
    result = conn.execute(
        sa.update(devices)
        .where(devices.c.user_id == user_id, devices.c.device_id == device_id)
        .values(display_name=display_name)
    )
    if result.rowcount > 0:
        device_lists.record_device_change(conn, user_id, device_id)  # renamed: tell room-mates
    return result.rowcount > 0


def delete_devices(conn: sa.Connection, user_id: str, device_ids: list[str]) -> list[str]:
    """Delete the devices and their tokens. Returns the token digests removed (for
    the in-memory token cache)."""
    removed = list(
        conn.execute(
            sa.select(access_tokens.c.token_hash).where(
                access_tokens.c.user_id == user_id, access_tokens.c.device_id.in_(device_ids)
            )
        ).scalars()
    )
    conn.execute(
        sa.delete(access_tokens).where(access_tokens.c.user_id == user_id, access_tokens.c.device_id.in_(device_ids))
    )
    conn.execute(
        sa.delete(refresh_tokens).where(
            refresh_tokens.c.user_id == user_id, refresh_tokens.c.device_id.in_(device_ids)
        )
    )
    device_lists.record_devices_deleted(conn, user_id, device_ids)  # m.device_list_update to room-mates
    conn.execute(sa.delete(devices).where(devices.c.user_id == user_id, devices.c.device_id.in_(device_ids)))
    to_device.delete_device_inbox(conn, user_id, device_ids)  # their to-device inboxes go with them
    e2e_keys.delete_device_keys(conn, user_id, device_ids)  # and their end-to-end keys
    return removed


# ----------------------------------------------------------------------- tokens


def add_access_token(
    conn: sa.Connection, token_hash: str, user_id: str, device_id: str, *, created_ts: int, expires_ts: int | None
) -> None:
    conn.execute(
        sa.insert(access_tokens).values(
            token_hash=token_hash, user_id=user_id, device_id=device_id, created_ts=created_ts, expires_ts=expires_ts
        )
    )


def get_session(conn: sa.Connection, token_hash: str) -> Session | None:
    row = conn.execute(
        sa.select(
            access_tokens.c.token_hash,
            access_tokens.c.user_id,
            access_tokens.c.device_id,
            access_tokens.c.expires_ts,
            users.c.is_admin,
            users.c.deactivated,
        )
        .join_from(access_tokens, users, users.c.user_id == access_tokens.c.user_id)
        .where(access_tokens.c.token_hash == token_hash)
    ).first()
    if row is None:
        return None
    return Session(row.token_hash, row.user_id, row.device_id, row.expires_ts, bool(row.is_admin), bool(row.deactivated))


def delete_access_token(conn: sa.Connection, token_hash: str) -> None:
    conn.execute(sa.delete(access_tokens).where(access_tokens.c.token_hash == token_hash))


def delete_user_tokens(conn: sa.Connection, user_id: str, *, except_device: str | None = None) -> list[str]:
    """Log out every device (``/logout/all``, password change). Returns removed digests."""
    where = [access_tokens.c.user_id == user_id]
    if except_device is not None:
        where.append(access_tokens.c.device_id != except_device)
    removed = list(conn.execute(sa.select(access_tokens.c.token_hash).where(*where)).scalars())
    conn.execute(sa.delete(access_tokens).where(*where))
    rwhere = [refresh_tokens.c.user_id == user_id]
    if except_device is not None:
        rwhere.append(refresh_tokens.c.device_id != except_device)
    conn.execute(sa.delete(refresh_tokens).where(*rwhere))
    device_lists.record_devices_deleted(conn, user_id, None, except_device=except_device)  # tell room-mates
    if except_device is None:
        conn.execute(sa.delete(devices).where(devices.c.user_id == user_id))
    else:
        conn.execute(sa.delete(devices).where(devices.c.user_id == user_id, devices.c.device_id != except_device))
    to_device.delete_device_inbox(conn, user_id, except_device=except_device)  # inboxes go with the devices
    e2e_keys.delete_device_keys(conn, user_id, None, except_device=except_device)  # so do their keys
    return removed


def add_refresh_token(conn: sa.Connection, token_hash: str, user_id: str, device_id: str, *, created_ts: int) -> None:
    conn.execute(
        sa.insert(refresh_tokens).values(token_hash=token_hash, user_id=user_id, device_id=device_id, created_ts=created_ts)
    )


def take_refresh_token(conn: sa.Connection, token_hash: str) -> tuple[str, str, list[str]] | None:
    """Consume a refresh token: returns (user_id, device_id, access digests revoked)
    and deletes it with the device's current access tokens, or None if unknown."""
    row = conn.execute(sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)).first()
    if row is None:
        return None
    conn.execute(sa.delete(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash))
    where = (access_tokens.c.user_id == row.user_id, access_tokens.c.device_id == row.device_id)
    revoked = list(conn.execute(sa.select(access_tokens.c.token_hash).where(*where)).scalars())
    conn.execute(sa.delete(access_tokens).where(*where))
    return row.user_id, row.device_id, revoked


# ---------------------------------------------------------------------- profiles


def get_profile(conn: sa.Connection, user_id: str) -> dict[str, str]:
    row = conn.execute(sa.select(profiles).where(profiles.c.user_id == user_id)).first()
    if row is None:
        return {}
    out = {}
    if row.displayname is not None:
        out["displayname"] = row.displayname
    if row.avatar_url is not None:
        out["avatar_url"] = row.avatar_url
    return out


def set_profile(conn: sa.Connection, user_id: str, **fields: str | None) -> None:
    """Set ``displayname`` and/or ``avatar_url`` (None clears)."""
    current = conn.execute(sa.select(profiles).where(profiles.c.user_id == user_id)).first()
    if current is None:
        conn.execute(sa.insert(profiles).values(user_id=user_id, **fields))
    else:
        conn.execute(sa.update(profiles).where(profiles.c.user_id == user_id).values(**fields))
