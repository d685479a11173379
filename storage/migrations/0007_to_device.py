"""Migration 7: to-device messaging (device inboxes, /sendToDevice txnIds, received
m.direct_to_device message IDs) and the durable outbound EDU outbox."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.federation_outbox,
    schema.device_inbox,
    schema.to_device_txns,
    schema.to_device_received,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
