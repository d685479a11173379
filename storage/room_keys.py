"""Server-side key backups: backup versions and the backed-up room keys
(client-server "Server-side key backups", key_backup.yaml).

Theory of operation
-------------------
Synchronous repository functions over ``room_key_versions`` and ``room_keys``
(``storage/schema.py``, "key backup"). Every write is one function handed whole to
``Database.write``, so the check that a version is current and the merge of the
uploaded keys happen in one transaction on the single writer thread: no lock is
needed to stop a concurrent ``POST /room_keys/version`` from slipping between them
(Synapse takes a per-user lock for the same reason), and a 200 means it is durable.

Versions are opaque strings to clients (key_backup.yaml); ours are per-user
integers, the largest so far + 1, served in canonical decimal. A version string
that is not canonical decimal names no backup (:func:`parse_version`). The
*current* backup is the largest non-deleted version, as in Synapse: deleting the
current one makes the previous non-deleted one current again.

Refusals are raised as :class:`UnknownBackupVersion` (404 ``M_NOT_FOUND``) and
:class:`WrongBackupVersion` (403 ``M_WRONG_ROOM_KEYS_VERSION`` with
``current_version``); ``api.client.room_keys`` maps them. Raised inside a write,
they roll the job's savepoint back, so nothing is half-written.

Replacement ("Server-side key backups", the three rules): :func:`should_replace`.
The ``etag`` is a per-version change counter, bumped in the transaction that
changes the version's keys (insert, replacement, deletion) and left alone when an
upload changes nothing, so an unchanged etag means unchanged keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from .schema import room_key_versions, room_keys

__all__ = [
    "BackupVersion",
    "KeyBackupData",
    "AlgorithmMismatch",
    "UnknownBackupVersion",
    "WrongBackupVersion",
    "parse_version",
    "should_replace",
    "create_version",
    "get_version",
    "update_version",
    "delete_version",
    "put_keys",
    "get_keys",
    "delete_keys",
    "delete_all_for_user",
]

#: The largest version number we ever allocate or look up (SQLite INTEGER range).
_MAX_VERSION = 2**63 - 1


class UnknownBackupVersion(LookupError):
    """No such (non-deleted) backup version, or the user has no backup at all."""


class AlgorithmMismatch(ValueError):
    """``PUT /room_keys/version/{version}`` named another algorithm than the backup's."""


class WrongBackupVersion(Exception):
    """A write named an existing backup version that is not the current one."""

    def __init__(self, current_version: str) -> None:
        super().__init__(f"the current backup version is {current_version}")
        self.current_version = current_version


@dataclass(frozen=True, slots=True)
class BackupVersion:
    """One backup version, shaped for ``GET /room_keys/version[/{version}]``."""

    version: str
    algorithm: str
    auth_data: dict[str, Any]
    count: int
    etag: str

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "auth_data": self.auth_data,
            "count": self.count,
            "etag": self.etag,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class KeyBackupData:
    """key_backup_data.yaml: one backed-up Megolm session key (already validated)."""

    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }


def parse_version(version: str) -> int | None:
    """Our integer for an opaque version string, or None if it cannot be one of ours
    (not canonical decimal: ``"01"``, ``"+1"``, ``"x"``, or out of range)."""
    if not version.isascii() or not version.isdigit() or len(version) > 19:
        return None
    number = int(version)
    if str(number) != version or not 1 <= number <= _MAX_VERSION:
        return None
    return number


def should_replace(existing: KeyBackupData, new: KeyBackupData) -> bool:
    """Whether an uploaded key replaces the stored one for the same session
    ("Server-side key backups", in the spec's order):

    1. different ``is_verified``: keep the one with ``is_verified`` true;
    2. else different ``first_message_index``: keep the lower;
    3. else keep the lower ``forwarded_count``.

    A full tie keeps the existing key. (Synapse's ``_should_replace_room_key`` tests
    the rules independently, so a lower index replaces a verified key with an
    unverified one; we follow the spec's ordering.)"""
    if new.is_verified != existing.is_verified:
        return new.is_verified
    if new.first_message_index != existing.first_message_index:
        return new.first_message_index < existing.first_message_index
    return new.forwarded_count < existing.forwarded_count


# ------------------------------------------------------------------------- versions


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _current_version(conn: sa.Connection, user_id: str) -> int | None:
    v = room_key_versions.c
    return conn.execute(
        sa.select(sa.func.max(v.version)).where(v.user_id == user_id, v.deleted == sa.false())
    ).scalar()


def _version_row(conn: sa.Connection, user_id: str, version: int, *, include_deleted: bool = False) -> Any:
    v = room_key_versions.c
    query = sa.select(room_key_versions).where(v.user_id == user_id, v.version == version)
    if not include_deleted:
        query = query.where(v.deleted == sa.false())
    return conn.execute(query).first()


def _existing(conn: sa.Connection, user_id: str, version: str) -> Any:
    """The non-deleted version row named by ``version``, or UnknownBackupVersion."""
    number = parse_version(version)
    row = None if number is None else _version_row(conn, user_id, number)
    if row is None:
        raise UnknownBackupVersion(f"unknown backup version {version!r}")
    return row


def create_version(conn: sa.Connection, user_id: str, algorithm: str, auth_data: Mapping[str, Any]) -> str:
    """POST /room_keys/version: a new backup, which becomes the current one."""
    v = room_key_versions.c
    largest = conn.execute(sa.select(sa.func.max(v.version)).where(v.user_id == user_id)).scalar() or 0
    number = largest + 1
    conn.execute(
        sa.insert(room_key_versions).values(
            user_id=user_id, version=number, algorithm=algorithm, auth_data=_dumps(auth_data),
            etag=0, key_count=0, deleted=False,
        )
    )
    return str(number)


def get_version(conn: sa.Connection, user_id: str, version: str | None = None) -> BackupVersion:
    """GET /room_keys/version[/{version}]: the named (non-deleted) version, or the
    current one when ``version`` is None; UnknownBackupVersion if there is none."""
    if version is None:
        number = _current_version(conn, user_id)
        row = None if number is None else _version_row(conn, user_id, number)
        if row is None:
            raise UnknownBackupVersion("no current backup version")
    else:
        row = _existing(conn, user_id, version)
    return BackupVersion(
        version=str(row.version),
        algorithm=row.algorithm,
        auth_data=orjson.loads(row.auth_data),
        count=row.key_count,
        etag=str(row.etag),
    )


def update_version(conn: sa.Connection, user_id: str, version: str, algorithm: str, auth_data: Mapping[str, Any]) -> None:
    """PUT /room_keys/version/{version}: replace ``auth_data`` (only it can change).

    Raises UnknownBackupVersion, or AlgorithmMismatch if ``algorithm`` is not the
    backup's (key_backup.yaml: "Must be the same as the algorithm currently used")."""
    row = _existing(conn, user_id, version)
    if row.algorithm != algorithm:
        raise AlgorithmMismatch(f"the backup's algorithm is {row.algorithm}")
    v = room_key_versions.c
    conn.execute(
        sa.update(room_key_versions)
        .where(v.user_id == user_id, v.version == row.version)
        .values(auth_data=_dumps(auth_data))
    )


def delete_version(conn: sa.Connection, user_id: str, version: str) -> None:
    """DELETE /room_keys/version/{version}: mark it deleted and delete its keys.
    Deleting a deleted version does nothing (key_backup.yaml: "the call should
    succeed"); a version that never existed raises UnknownBackupVersion."""
    number = parse_version(version)
    row = None if number is None else _version_row(conn, user_id, number, include_deleted=True)
    if row is None:
        raise UnknownBackupVersion(f"unknown backup version {version!r}")
    if row.deleted:
        return
    k, v = room_keys.c, room_key_versions.c
    conn.execute(sa.delete(room_keys).where(k.user_id == user_id, k.version == number))
    conn.execute(
        sa.update(room_key_versions)
        .where(v.user_id == user_id, v.version == number)
        .values(deleted=True, key_count=0, etag=v.etag + 1)
    )


def delete_all_for_user(conn: sa.Connection, user_id: str) -> None:
    """Every backup and key of ``user_id`` (account deactivation, as Synapse does)."""
    conn.execute(sa.delete(room_keys).where(room_keys.c.user_id == user_id))
    conn.execute(sa.delete(room_key_versions).where(room_key_versions.c.user_id == user_id))


# ----------------------------------------------------------------------------- keys


def _bump(conn: sa.Connection, user_id: str, number: int, *, added: int) -> tuple[str, int]:
    """Record a change to the version's keys: etag + 1, key_count + ``added``."""
    v = room_key_versions.c
    row = conn.execute(
        sa.update(room_key_versions)
        .where(v.user_id == user_id, v.version == number)
        .values(etag=v.etag + 1, key_count=v.key_count + added)
        .returning(v.etag, v.key_count)
    ).one()
    return str(row.etag), row.key_count


def put_keys(
    conn: sa.Connection, user_id: str, version: str, rooms: Mapping[str, Mapping[str, KeyBackupData]]
) -> tuple[str, int]:
    """PUT /room_keys/keys[/{roomId}[/{sessionId}]]: merge ``rooms`` (room ID ->
    session ID -> key) into the backup ``version``; answer ``(etag, count)``.

    Writes go to the current version only (key_backup.yaml, 403 on the ``PUT``s):
    no backup at all, or a version that does not exist (or was deleted), raises
    UnknownBackupVersion; an existing older version raises WrongBackupVersion with
    the current one (Synapse's order of checks). Each session is inserted when new,
    else replaced only if :func:`should_replace` says so."""
    current = _current_version(conn, user_id)
    if current is None:
        raise UnknownBackupVersion(f"unknown backup version {version!r}")
    if parse_version(version) != current:
        _existing(conn, user_id, version)  # unknown -> 404 before 403
        raise WrongBackupVersion(str(current))
    k = room_keys.c
    added = changed = 0
    for room_id, sessions in rooms.items():
        for session_id, key in sessions.items():
            where = (k.user_id == user_id, k.version == current, k.room_id == room_id, k.session_id == session_id)
            row = conn.execute(
                sa.select(k.first_message_index, k.forwarded_count, k.is_verified).where(*where)
            ).first()
            values = dict(
                first_message_index=key.first_message_index,
                forwarded_count=key.forwarded_count,
                is_verified=key.is_verified,
                session_data=_dumps(key.session_data),
            )
            if row is None:
                conn.execute(
                    sa.insert(room_keys).values(
                        user_id=user_id, version=current, room_id=room_id, session_id=session_id, **values
                    )
                )
                added += 1
                changed += 1
            elif should_replace(
                KeyBackupData(row.first_message_index, row.forwarded_count, bool(row.is_verified), {}), key
            ):
                conn.execute(sa.update(room_keys).where(*where).values(**values))
                changed += 1
    if changed:
        return _bump(conn, user_id, current, added=added)
    row = _version_row(conn, user_id, current)
    return str(row.etag), row.key_count


def _key_filter(user_id: str, number: int, room_id: str | None, session_id: str | None) -> list[Any]:
    k = room_keys.c
    where = [k.user_id == user_id, k.version == number]
    if room_id is not None:
        where.append(k.room_id == room_id)
        if session_id is not None:
            where.append(k.session_id == session_id)
    return where


def get_keys(
    conn: sa.Connection, user_id: str, version: str, room_id: str | None = None, session_id: str | None = None
) -> dict[str, dict[str, KeyBackupData]]:
    """GET /room_keys/keys[/{roomId}[/{sessionId}]] from any non-deleted version:
    room ID -> session ID -> key (only rooms with keys appear). Raises
    UnknownBackupVersion if the version does not exist or was deleted."""
    row = _existing(conn, user_id, version)
    k = room_keys.c
    found: dict[str, dict[str, KeyBackupData]] = {}
    query = (
        sa.select(k.room_id, k.session_id, k.first_message_index, k.forwarded_count, k.is_verified, k.session_data)
        .where(*_key_filter(user_id, row.version, room_id, session_id))
        .order_by(k.room_id, k.session_id)
    )
    for key in conn.execute(query):
        found.setdefault(key.room_id, {})[key.session_id] = KeyBackupData(
            key.first_message_index, key.forwarded_count, bool(key.is_verified), orjson.loads(key.session_data)
        )
    return found


def delete_keys(
    conn: sa.Connection, user_id: str, version: str, room_id: str | None = None, session_id: str | None = None
) -> tuple[str, int]:
    """DELETE /room_keys/keys[/{roomId}[/{sessionId}]] from any non-deleted version
    (key_backup.yaml gives the ``DELETE``s no 403, and Synapse allows older
    versions); answers ``(etag, count)``. Raises UnknownBackupVersion."""
    row = _existing(conn, user_id, version)
    deleted = conn.execute(sa.delete(room_keys).where(*_key_filter(user_id, row.version, room_id, session_id))).rowcount
    if deleted:
        return _bump(conn, user_id, row.version, added=-deleted)
    return str(row.etag), row.key_count
