"""To-device messages: the per-device inbox (owner: the to-device work of issue 6).

Seed: the contract ``api.client.sync`` calls. To be replaced by the real module."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def sync_to_device(conn: sa.Connection, user_id: str, device_id: str, *, after: int) -> tuple[list[dict[str, Any]], int]:
    """The device's to-device messages after position ``after`` (oldest first, a
    bounded batch) and the position to put in ``next_batch`` (≥ ``after``)."""
    return [], after
