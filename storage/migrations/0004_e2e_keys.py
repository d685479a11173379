"""Migration 4: end-to-end encryption keys: device keys, one-time and fallback keys,
cross-signing keys and their uploaded signatures (storage/e2e_keys.py)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.e2e_device_keys,
    schema.e2e_one_time_keys,
    schema.e2e_fallback_keys,
    schema.e2e_cross_signing_keys,
    schema.e2e_cross_signing_signatures,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
