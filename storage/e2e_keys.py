"""End-to-end encryption keys (owner: the keys work of issue 6).

Seed: the contract ``api.client.sync`` calls. To be replaced by the real module."""

from __future__ import annotations

import sqlalchemy as sa


def one_time_key_counts(conn: sa.Connection, user_id: str, device_id: str) -> dict[str, int]:
    """``device_one_time_keys_count``: unclaimed one-time keys per algorithm."""
    return {}


def unused_fallback_key_types(conn: sa.Connection, user_id: str, device_id: str) -> list[str]:
    """``device_unused_fallback_key_types``: algorithms with an unused fallback key."""
    return []
