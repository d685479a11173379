"""Migration 6: server-side key backups: backup versions and the backed-up room keys
(client-server "Server-side key backups"; storage/room_keys.py)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.room_key_versions,
    schema.room_keys,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
