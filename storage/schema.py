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

# ----------------------------------------------------------------------------------
# To-device messaging and the durable outbound EDU outbox (issue 6; migration 0007;
# storage/to_device.py, storage/outbox.py).

# EDUs owed to remote servers that must not be lost (m.direct_to_device,
# m.device_list_update, m.signing_key_update): written in the same transaction as
# the change they report, read oldest first by the destination's sender queue and
# deleted only once the peer has answered the transaction that carried them.
federation_outbox = sa.Table(
    "federation_outbox",
    metadata,
    sa.Column("outbox_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("edu_type", sa.Text, nullable=False),
    sa.Column("content_json", sa.Text, nullable=False),
    sa.Index("federation_outbox_destination", "destination", "outbox_id"),
    sqlite_autoincrement=True,
)

# One row per to-device message waiting for a local device. ``stream_id`` is the
# to-device stream position (AUTOINCREMENT: never reused, so a sync token's position
# can never point past a message that is not delivered yet); rows are deleted once
# the device acknowledges them by syncing with a later ``since``.
device_inbox = sa.Table(
    "device_inbox",
    metadata,
    sa.Column("stream_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("content_json", sa.Text, nullable=False),
    sa.Index("device_inbox_device", "user_id", "device_id", "stream_id"),
    sqlite_autoincrement=True,
)

# /sendToDevice transaction IDs already handled, per sending device (client-server
# API "Transaction identifiers"): a retry is answered 200 and enqueues nothing.
to_device_txns = sa.Table(
    "to_device_txns",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("event_type", sa.Text, primary_key=True),
    sa.Column("txn_id", sa.Text, primary_key=True),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Index("to_device_txns_created", "created_ts"),
    sqlite_with_rowid=False,
)

# m.direct_to_device EDUs already delivered, by (origin, message_id): a retried or
# repeated EDU is never delivered twice. Rows older than a week are pruned.
to_device_received = sa.Table(
    "to_device_received",
    metadata,
    sa.Column("origin", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("received_ts", sa.BigInteger, nullable=False),
    sa.Index("to_device_received_ts", "received_ts"),
    sqlite_with_rowid=False,
)

# ----------------------------------------------------------------------------------
# Device lists (issue 6; migration 0008; storage/device_lists.py, storage/remote_devices.py).

# The device-list change stream: one row per change to a user's devices (device_id
# set) or cross-signing keys (device_id NULL), local or remote, at a position of the
# shared "misc" counter, so a sync token's misc part bounds it. /sync and
# /keys/changes read the users in a window; a local user's newest device row is the
# ``stream_id`` of their m.device_list_update EDUs and of /user/devices.
device_list_changes = sa.Table(
    "device_list_changes",
    metadata,
    sa.Column("stream_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=True),
    sa.Index("device_list_changes_user", "user_id", "stream_id"),
)

# The remote device-list cache, one row per remote user we track: the last
# ``stream_id`` of theirs we hold (the ``prev_id`` an incremental update must name),
# ``stale`` (a gap was seen: resync through /user/devices), and their cross-signing
# keys (JSON). Deleted when we share no room with the user any more.
remote_device_users = sa.Table(
    "remote_device_users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("stream_id", sa.Integer, nullable=True),
    sa.Column("stale", sa.Boolean, nullable=False, server_default="0"),
    sa.Column("master_key", sa.Text, nullable=True),
    sa.Column("self_signing_key", sa.Text, nullable=True),
    sa.Column("updated_ts", sa.BigInteger, nullable=False, server_default="0"),
    sqlite_with_rowid=False,
)

# The cached devices of a tracked remote user: display name and signed device keys
# (JSON; NULL: the device has uploaded none).
remote_devices = sa.Table(
    "remote_devices",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("keys_json", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)

# --- key backup (migration 6) ------------------------------------------------------

# Server-side key backups (client-server "Server-side key backups"): one row per backup
# version a user created. ``version`` is allocated per user as the largest so far + 1
# (deleted ones included, so a number is never reused) and served as its decimal
# string. The current backup is the largest non-deleted version. ``etag`` counts
# changes to the version's keys; ``key_count`` is the number of its ``room_keys``
# rows, kept in the same transactions that change them. A deleted version keeps its
# row (``deleted``) so deleting it again answers 200, as key_backup.yaml asks.
room_key_versions = sa.Table(
    "room_key_versions",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("auth_data", sa.Text, nullable=False),  # JSON object
    sa.Column("etag", sa.Integer, nullable=False, server_default="0"),
    sa.Column("key_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default="0"),
    sqlite_with_rowid=False,
)

# The backed-up keys (KeyBackupData), per (user, version, room, session).
# ``session_data`` is the client's opaque JSON object.
room_keys = sa.Table(
    "room_keys",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("room_id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("first_message_index", sa.Integer, nullable=False),
    sa.Column("forwarded_count", sa.Integer, nullable=False),
    sa.Column("is_verified", sa.Boolean, nullable=False),
    sa.Column("session_data", sa.Text, nullable=False),  # JSON object
    sqlite_with_rowid=False,
)

# --- media repository (migration 5; roomactors/media, storage/media.py) -------------
# One row per mxc:// URI we know: our uploads (``remote`` false) and remote media we
# cached (``remote`` true). The bytes live on disk, content-addressed by ``sha256``
# (roomactors/media/store.py); identical content is stored once. A row made by
# POST /_matrix/media/v1/create has no content yet (``sha256`` NULL) and is pending
# until ``unused_expires_at``; PUT /upload fills it in once.
media = sa.Table(
    "media",
    metadata,
    sa.Column("server_name", sa.Text, primary_key=True),
    sa.Column("media_id", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=True),
    sa.Column("content_type", sa.Text, nullable=True),
    sa.Column("upload_name", sa.Text, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("unused_expires_at", sa.BigInteger, nullable=True),
    sa.Column("remote", sa.Boolean, nullable=False, server_default="0"),
    sqlite_with_rowid=False,
)
# Pending /create reservations per user (the spec's limit on pending uploads).
media_pending_user = sa.Index("media_pending_user", media.c.user_id, media.c.unused_expires_at)

# Thumbnails, keyed by the content they were made from (so identical uploads share
# them) and how they were made; the thumbnail bytes are content-addressed too.
media_thumbnails = sa.Table(
    "media_thumbnails",
    metadata,
    sa.Column("source_sha256", sa.Text, primary_key=True),
    sa.Column("width", sa.Integer, primary_key=True),
    sa.Column("height", sa.Integer, primary_key=True),
    sa.Column("method", sa.Text, primary_key=True),
    sa.Column("animated", sa.Boolean, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# --- end-to-end encryption keys (migration 4; storage/e2e_keys.py) -----------------

# A device's identity keys (client-server "Device keys"): the DeviceKeys object as
# uploaded and checked (roomactors/protocol/e2e_keys.py), canonical JSON, without
# ``unsigned``; signatures added later by /keys/signatures/upload live in
# e2e_cross_signing_signatures and are merged in when read.
e2e_device_keys = sa.Table(
    "e2e_device_keys",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("key_json", sa.Text, nullable=False),
    sa.Column("ts_added_ms", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Unclaimed one-time keys. ``otk_id`` grows with each upload, so claiming the
# smallest one gives keys out in upload order (keys.yaml /keys/claim). A claimed key
# is deleted in the transaction that returns it: each key is given out at most once.
e2e_one_time_keys = sa.Table(
    "e2e_one_time_keys",
    metadata,
    sa.Column("otk_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("key_json", sa.Text, nullable=False),
    sa.Column("ts_added_ms", sa.BigInteger, nullable=False),
    # One key per ID (re-uploads are compared with it); the claim order, and counts.
    sa.Index("e2e_one_time_keys_id", "user_id", "device_id", "algorithm", "key_id", unique=True),
    sa.Index("e2e_one_time_keys_order", "user_id", "device_id", "algorithm", "otk_id"),
    sqlite_autoincrement=True,
)

# Fallback keys: one per (device, algorithm); a claim returns it when no one-time key
# is left and sets ``used`` (it is not deleted); a new upload replaces it and clears
# ``used`` (keys.yaml fallback_keys, "Extensions to /sync").
e2e_fallback_keys = sa.Table(
    "e2e_fallback_keys",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("algorithm", sa.Text, primary_key=True),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("key_json", sa.Text, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, server_default="0"),
    sqlite_with_rowid=False,
)

# Cross-signing keys (client-server "Cross-signing"): ``key_type`` master,
# self_signing or user_signing; ``public_key`` is the key's unpadded base64 (the ID
# signatures of it are stored under).
e2e_cross_signing_keys = sa.Table(
    "e2e_cross_signing_keys",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("key_type", sa.Text, primary_key=True),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("key_json", sa.Text, nullable=False),
    sa.Column("ts_added_ms", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Signatures uploaded with /keys/signatures/upload: ``signer_user_id``'s key
# ``signer_key_id`` signed ``target_user_id``'s key ``target_key_id`` (a device ID,
# or a master key's public key). Merged into /keys/query answers for whoever may see
# them ("Key and signature security").
e2e_cross_signing_signatures = sa.Table(
    "e2e_cross_signing_signatures",
    metadata,
    sa.Column("target_user_id", sa.Text, primary_key=True),
    sa.Column("target_key_id", sa.Text, primary_key=True),
    sa.Column("signer_user_id", sa.Text, primary_key=True),
    sa.Column("signer_key_id", sa.Text, primary_key=True),
    sa.Column("signature", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

# --- user-signing signatures of other users (migration 9; storage/device_lists.py) ---

# One row per other user whose master key ``signer_user_id`` signed with their
# user-signing key through /keys/signatures/upload, at a position of the shared
# ``misc`` counter. Only the signer sees that signature ("Key and signature
# security"), so only the signer's syncs report ``target_user_id`` in
# ``device_lists.changed`` (their other devices must query it again); no EDU.
user_signature_changes = sa.Table(
    "user_signature_changes",
    metadata,
    sa.Column("stream_id", sa.Integer, nullable=False),
    sa.Column("signer_user_id", sa.Text, nullable=False),
    sa.Column("target_user_id", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("stream_id", "target_user_id"),
    sa.Index("user_signature_changes_signer", "signer_user_id", "stream_id"),
)
