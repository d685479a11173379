"""Migration 9: ``user_signature_changes``, the signer-only stream of signatures made
with a user-signing key of other users' master keys (storage/device_lists.py)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (schema.user_signature_changes,)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
