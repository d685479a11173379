"""Migration 2: the client-server API's tables (accounts, sessions, per-user data,
ephemeral streams) plus ``current_state_deltas``/``redactions``, which checkpoints
now write, and the ``txn_ids`` event index.

Rooms checkpointed before this migration have no ``current_state_deltas`` rows;
the baseline rows are backfilled from ``current_state`` at each room's latest
stream ordering so /sync sees their state.
"""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.stream_positions,
    schema.users,
    schema.devices,
    schema.access_tokens,
    schema.refresh_tokens,
    schema.profiles,
    schema.account_data,
    schema.filters,
    schema.push_rules,
    schema.pushers,
    schema.receipts,
    schema.presence,
    schema.room_aliases,
    schema.room_directory,
    schema.registration_tokens,
    schema.forgotten_rooms,
    schema.current_state_deltas,
    schema.redactions,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
    schema.txn_ids_event.create(conn)
    schema.current_state_member.create(conn)
    conn.exec_driver_sql(
        "INSERT INTO current_state_deltas (stream_ordering, room_id, type, state_key, event_id) "
        "SELECT (SELECT max(stream_ordering) FROM events e WHERE e.room_id = cs.room_id), "
        "cs.room_id, cs.type, cs.state_key, cs.event_id FROM current_state cs"
    )
