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
    "stream_positions",
    "users",
    "devices",
    "access_tokens",
    "refresh_tokens",
    "profiles",
    "account_data",
    "filters",
    "push_rules",
    "pushers",
    "receipts",
    "presence",
    "room_aliases",
    "room_directory",
    "registration_tokens",
    "forgotten_rooms",
    "current_state_deltas",
    "redactions",
    "server_keys",
    "received_transactions",
    "inbound_staging",
    "destinations",
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


# ------------------------------------------------------------------------------------
# Client-server API (migration 0002). Rows below are not room DAG rows: accounts,
# sessions and per-user data are written by the API's services through db.write;
# `current_state_deltas` and `redactions` are written by the room actor's checkpoint.
# ------------------------------------------------------------------------------------

# Monotonic counters shared by the non-event streams (name "misc": account data,
# receipts, push rules, presence). Bumped only on the writer thread, so race-free.
stream_positions = sa.Table(
    "stream_positions",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    # argon2id PHC string; NULL: the account cannot log in with a password.
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("deactivated", sa.Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.user_id"), primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("last_seen_ts", sa.BigInteger, nullable=True),
    sa.Column("last_seen_ip", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)

# Tokens are stored as SHA-256 digests (hex) of the random token: a database leak
# yields no usable token. Lookup is by digest; the digest is then compared again in
# constant time (api.auth).
access_tokens = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    # NULL: never expires. Set when the session uses refresh tokens.
    sa.Column("expires_ts", sa.BigInteger, nullable=True),
    sa.Index("access_tokens_device", "user_id", "device_id"),
    sqlite_with_rowid=False,
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Index("refresh_tokens_device", "user_id", "device_id"),
    sqlite_with_rowid=False,
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("displayname", sa.Text, nullable=True),
    sa.Column("avatar_url", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)

# Global account data has room_id "" (a room ID is never empty).
account_data = sa.Table(
    "account_data",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("room_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, primary_key=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("stream_id", sa.BigInteger, nullable=False),
    sa.Index("account_data_stream", "user_id", "stream_id"),
    sqlite_with_rowid=False,
)

filters = sa.Table(
    "filters",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("filter_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("json", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

# One JSON document per user: their custom push rules and overrides of the
# server-default ones (roomactors.protocol.push_rules).
push_rules = sa.Table(
    "push_rules",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("stream_id", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

pushers = sa.Table(
    "pushers",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("app_id", sa.Text, primary_key=True),
    sa.Column("pushkey", sa.Text, primary_key=True),
    sa.Column("json", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

# thread_id "" is the unthreaded receipt; "main" is the main timeline.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("room_id", sa.Text, primary_key=True),
    sa.Column("receipt_type", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("thread_id", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("stream_id", sa.BigInteger, nullable=False),
    sa.Index("receipts_stream", "stream_id"),
    sqlite_with_rowid=False,
)

presence = sa.Table(
    "presence",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("presence", sa.Text, nullable=False),
    sa.Column("status_msg", sa.Text, nullable=True),
    sa.Column("last_active_ts", sa.BigInteger, nullable=False),
    sa.Column("stream_id", sa.BigInteger, nullable=False),
    sa.Index("presence_stream", "stream_id"),
    sqlite_with_rowid=False,
)

room_aliases = sa.Table(
    "room_aliases",
    metadata,
    sa.Column("room_alias", sa.Text, primary_key=True),
    sa.Column("room_id", sa.Text, nullable=False),
    sa.Column("creator", sa.Text, nullable=False),
    sa.Index("room_aliases_room", "room_id"),
    sqlite_with_rowid=False,
)

room_directory = sa.Table(
    "room_directory",
    metadata,
    sa.Column("room_id", sa.Text, primary_key=True),
    sa.Column("visibility", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

registration_tokens = sa.Table(
    "registration_tokens",
    metadata,
    sa.Column("token", sa.Text, primary_key=True),
    sa.Column("uses_allowed", sa.Integer, nullable=True),
    sa.Column("pending", sa.Integer, nullable=False, default=0),
    sa.Column("completed", sa.Integer, nullable=False, default=0),
    sa.Column("expiry_time", sa.BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

forgotten_rooms = sa.Table(
    "forgotten_rooms",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("room_id", sa.Text, primary_key=True),
    sqlite_with_rowid=False,
)

# Every change to a room's current state, in stream order (written by checkpoint,
# with the stream ordering of the checkpoint's last event). /sync reads it for
# "state since the token" and, through the member index, for a user's membership
# changes; event_id NULL means the key left the state.
current_state_deltas = sa.Table(
    "current_state_deltas",
    metadata,
    sa.Column("stream_ordering", sa.Integer, nullable=False),
    sa.Column("room_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("state_key", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=True),
    sa.Index("current_state_deltas_room", "room_id", "stream_ordering"),
    sa.Index("current_state_deltas_key", "state_key", "type", "stream_ordering"),
)

# m.room.redaction events that were accepted, by target (written by checkpoint).
# Serving an event applies the redaction algorithm if a row names it.
redactions = sa.Table(
    "redactions",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("redacts", sa.Text, nullable=False),
    sa.Index("redactions_redacts", "redacts"),
    sqlite_with_rowid=False,
)

# --- federation (migration 3) -----------------------------------------------------

# Remote servers' verify keys, as fetched (directly or through a notary) and checked
# (roomactors/keys). ``valid_until_ts`` bounds what the key may verify (room versions
# with key validity enforcement); ``expired_ts`` is set for an ``old_verify_keys``
# entry. ``response_json`` is the self-signed ``/_matrix/key/v2/server`` response the
# key came from (what our notary endpoint serves back, with our signature added).
server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("server_name", sa.Text, primary_key=True),
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("verify_key", sa.Text, nullable=False),
    sa.Column("valid_until_ts", sa.BigInteger, nullable=False),
    sa.Column("expired_ts", sa.BigInteger, nullable=True),
    sa.Column("fetched_ts", sa.BigInteger, nullable=False),
    sa.Column("response_json", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

# Inbound /send transactions already answered: (origin, txnId) -> the response.
# A retried transaction gets the same answer and is not processed again.
received_transactions = sa.Table(
    "received_transactions",
    metadata,
    sa.Column("origin", sa.Text, primary_key=True),
    sa.Column("txn_id", sa.Text, primary_key=True),
    sa.Column("response_json", sa.Text, nullable=False),
    sa.Column("received_ts", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# The durable mailbox of inbound PDUs (server-server "Checks performed on receipt of
# a PDU", steps 1-3 passed): written by /send before it answers, drained by the room
# actor, which deletes a row in the checkpoint that stores its event. ``attempts``
# counts unexpected failures; a row that keeps failing is ``poisoned`` and skipped.
inbound_staging = sa.Table(
    "inbound_staging",
    metadata,
    sa.Column("staging_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("room_id", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("json", sa.Text, nullable=False),
    sa.Column("received_ts", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("poisoned", sa.Boolean, nullable=False, server_default="0"),
    sa.Index("inbound_staging_room", "room_id", "staging_id"),
    sqlite_autoincrement=True,
)

# Outbound federation, one row per remote server (roomactors/sender): how far it has
# acknowledged our events (``last_successful_stream_ordering``: catch-up sends what
# came after), the transaction counter (txn IDs are never reused), and the backoff.
destinations = sa.Table(
    "destinations",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("last_successful_stream_ordering", sa.Integer, nullable=True),
    sa.Column("next_txn_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_last_ts", sa.BigInteger, nullable=True),
    sa.Column("retry_interval_ms", sa.BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

# Sync's transaction_id lookup: which device sent an event.
txn_ids_event = sa.Index("txn_ids_event", txn_ids.c.event_id)
# A user's memberships (/sync, /joined_rooms): current_state rows by state_key.
current_state_member = sa.Index("current_state_member", current_state.c.state_key, current_state.c.type)
