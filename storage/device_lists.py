"""Device-list change stream (owner: the device-lists work of issue 6).

Seed: the contract ``api.client.sync`` calls. To be replaced by the real module."""

from __future__ import annotations

import sqlalchemy as sa


def sync_device_lists(
    conn: sa.Connection, user_id: str, *, initial: bool, since_events: int, upto_events: int,
    since_misc: int, upto_misc: int,
) -> tuple[list[str], list[str]]:
    """``device_lists.changed`` and ``device_lists.left`` for a sync window."""
    return [], []
