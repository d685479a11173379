"""Users and devices for storage tests, written straight through ``storage.accounts``
(no passwords, timestamps 0): ``add_devices(conn, user_id, *device_ids)`` creates the
user if needed and each device, named ``"<device_id> name"``."""

from __future__ import annotations

import sqlalchemy as sa

from storage import accounts


def add_devices(conn: sa.Connection, user_id: str, *device_ids: str) -> None:
    if not accounts.user_exists(conn, user_id):
        accounts.create_user(conn, user_id, None, created_ts=0)
    for device_id in device_ids:
        accounts.upsert_device(conn, user_id, device_id, display_name=f"{device_id} name", ts=0, ip=None)
