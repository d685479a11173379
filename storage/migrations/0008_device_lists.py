"""Migration 8: device lists: the device-list change stream and the remote
device-list cache (storage/device_lists.py, storage/remote_devices.py)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.device_list_changes,
    schema.remote_device_users,
    schema.remote_devices,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
