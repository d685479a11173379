"""The database schema: every table, declared once, as SQLAlchemy Core ``Table`` objects.

Theory of operation
-------------------
This module is the single declaration of the schema (docs/ARCHITECTURE.md,
"Storage conventions"): ``storage/migrations/0001_initial.py`` creates a fresh
database from :data:`metadata`, and later numbered migrations are deltas that bring
an older database to what this module declares. Nothing else declares a table.

Column names are the spec's field names (``prev_events`` edges, ``auth_events``
edges, ``state_key``, ``origin_server_ts``, ``outlier``, ``soft_failed``,
``forward_extremities``). Tables with a text primary key are ``WITHOUT ROWID``
(SQLite stores the row in the primary-key b-tree itself, so the key is stored once).
Every index serves a query in ``storage/rooms.py``; none is speculative. Indexes keyed
by random event IDs cost the most at commit (each insert dirties its own leaf page,
written whole to the WAL), so a table gets one only for a query that needs it.

State storage (see ``storage/rooms.py`` for the algorithm)::

    events.state_after_ref ──► state_snapshots.event_id   (the snapshot "ref")
                                  │ base_ref ──► state_snapshots.event_id  (NULL: full snapshot)
                                  └─ state_deltas(snapshot_ref, type, state_key, event_id)

A snapshot's state is its base's state overridden by its delta rows; a delta row
with ``event_id`` NULL removes that key. ``chain_length`` counts the hops from a
snapshot to its full snapshot, ``seq`` is its position in the skip-delta numbering.

Foreign keys (``PRAGMA foreign_keys=ON``) are declared only where the parent row is
always written first within a checkpoint, so every check is immediate: no deferred
constraint ever spans the savepoints of a group commit. ``prev_events`` and
``auth_events`` edges name events that may not be stored yet (federation), so
they carry no foreign key on the referenced side.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "metadata",
    "schema_version",
    "rooms",
    "events",
    "event_edges",
    "event_auth_edges",
    "state_snapshots",
    "state_deltas",
    "forward_extremities",
    "current_state",
    "txn_ids",
]

metadata = sa.MetaData()

# One row per applied migration; the database's version is the largest.
schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_ts", sa.BigInteger, nullable=False),
)

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("room_id", sa.Text, primary_key=True),
    sa.Column("room_version", sa.Text, nullable=False),
    # origin_server_ts of the first event of the room's first checkpoint (storage
    # reads no clock of its own; time comes from the caller, house determinism rule).
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

events = sa.Table(
    "events",
    metadata,
    # The rowid alias; AUTOINCREMENT guarantees an ordering is never reused.
    sa.Column("stream_ordering", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("room_id", sa.Text, sa.ForeignKey("rooms.room_id"), nullable=False),
    sa.Column("depth", sa.BigInteger, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("state_key", sa.Text, nullable=True),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("origin_server_ts", sa.BigInteger, nullable=False),
    # The PDU exactly as stored, orjson-encoded.
    sa.Column("json", sa.Text, nullable=False),
    sa.Column("outlier", sa.Boolean, nullable=False),
    sa.Column("rejection_reason", sa.Text, nullable=True),
    sa.Column("soft_failed", sa.Boolean, nullable=False),
    sa.Column("state_after_ref", sa.Text, sa.ForeignKey("state_snapshots.event_id"), nullable=True),
    # load_room's max(stream_ordering) per room; a room's timeline in order.
    sa.Index("events_room_stream", "room_id", "stream_ordering"),
    sqlite_autoincrement=True,
)

# The edges are append-only rowid tables without an index: nothing reads them by SQL
# yet (the actor reads prev_events/auth_events from the JSON), and a b-tree keyed by
# random event IDs would dirty one more page per edge and commit. The first query
# that walks edges (auth chains for federation) adds its index in a migration.
event_edges = sa.Table(
    "event_edges",
    metadata,
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.event_id"), nullable=False),
    sa.Column("prev_event_id", sa.Text, nullable=False),
)

event_auth_edges = sa.Table(
    "event_auth_edges",
    metadata,
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.event_id"), nullable=False),
    sa.Column("auth_event_id", sa.Text, nullable=False),
)

state_snapshots = sa.Table(
    "state_snapshots",
    metadata,
    # The ref: the ID of the event whose state-after this snapshot is.
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("room_id", sa.Text, sa.ForeignKey("rooms.room_id"), nullable=False),
    sa.Column("base_ref", sa.Text, sa.ForeignKey("state_snapshots.event_id"), nullable=True),
    sa.Column("chain_length", sa.Integer, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

state_deltas = sa.Table(
    "state_deltas",
    metadata,
    sa.Column("snapshot_ref", sa.Text, sa.ForeignKey("state_snapshots.event_id"), primary_key=True),
    sa.Column("type", sa.Text, primary_key=True),
    sa.Column("state_key", sa.Text, primary_key=True),
    # NULL: the key is absent from this snapshot although its base has it.
    sa.Column("event_id", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)

forward_extremities = sa.Table(
    "forward_extremities",
    metadata,
    sa.Column("room_id", sa.Text, sa.ForeignKey("rooms.room_id"), primary_key=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.event_id"), primary_key=True),
    sqlite_with_rowid=False,
)

current_state = sa.Table(
    "current_state",
    metadata,
    sa.Column("room_id", sa.Text, sa.ForeignKey("rooms.room_id"), primary_key=True),
    sa.Column("type", sa.Text, primary_key=True),
    sa.Column("state_key", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.event_id"), nullable=False),
    sqlite_with_rowid=False,
)

txn_ids = sa.Table(
    "txn_ids",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    # The spec scopes a transaction ID to the device and the request path, which
    # includes the room: the same txnId in two rooms is two requests.
    sa.Column("room_id", sa.Text, sa.ForeignKey("rooms.room_id"), primary_key=True),
    sa.Column("txn_id", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.event_id"), nullable=False),
    sqlite_with_rowid=False,
)
