"""Migration 3: federation's tables: remote server keys, answered inbound
transactions, the inbound PDU staging area and outbound destinations."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.server_keys,
    schema.received_transactions,
    schema.inbound_staging,
    schema.destinations,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
