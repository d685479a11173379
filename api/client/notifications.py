"""Unread notification counts for /sync (client-server "Push Notifications",
"Receiving notifications": ``unread_notifications``).

Theory of operation
-------------------
Counts are computed when a sync asks, not stored at send time: the served events
of the room after the user's newest ``m.read``/``m.read.private`` receipt (or,
never having read, after their own membership event), sent by others and not
redacted, go through the user's push rules (``roomactors.protocol.push_rules``:
defaults merged with the user's stored document); ``notification_count`` counts
the events whose actions notify and ``highlight_count`` those that also
highlight. Counting stops at ``MAX_COUNTED`` (clients show "99+" long before).

**Incremental cache.** A long-polling client syncs after every message, so the
counts are kept per (user, room) in a bounded in-process LRU together with what
they were computed from — the receipt, the membership event, the push-rules
version — and the stream position they cover. The next sync only evaluates the
events after that position. The entry is recomputed from scratch when any of
those inputs changed, or when a new event is a redaction (a redacted event stops
counting, and it may be one already counted). The cache is only an optimisation:
every entry is validated against committed data read in the same transaction,
and readers in two threads at once at worst both compute the same value.

The inputs that are the same for every room — the user's ruleset — are built
once per sync (:class:`SyncPushRules`). Per room, the user's newest read receipt
and its event's stream ordering are one query (``userdata.get_read_position``).
The power levels, the create event and the joined-member count are needed only
if some event needs evaluating, and come from a second bounded per-room cache
keyed by the room's current-state version (``timeline.get_current_state_version``;
see ``_room_inputs`` for the invalidation), so a busy room costs one index probe
per sync instead of two joins over its member rows.

Both caches are shared by the reader threads: every access holds ``_lock``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.auth import get_power_level
from roomactors.protocol.push_rules import PushContext, empty_user_doc, notification_for, ruleset
from roomactors.protocol.room_versions import get_rules
from storage import timeline, userdata

__all__ = ["MAX_COUNTED", "SyncPushRules", "unread_counts"]

MAX_COUNTED = 100
_CACHE_SIZE = 20_000
_ROOM_CACHE_SIZE = 4_096


@dataclass(frozen=True, slots=True)
class _Entry:
    inputs: tuple[Any, ...]
    upto: int
    notify: int
    highlight: int


_cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()


@dataclass(frozen=True, slots=True)
class _RoomInputs:
    """A room's push-rule inputs (shared: read-only) at one current-state version."""

    version: tuple[int, int] | None
    power_levels: dict[str, Any] | None  # the m.room.power_levels event
    create: dict[str, Any] | None  # the m.room.create event
    joined: int


_room_cache: OrderedDict[str, _RoomInputs] = OrderedDict()
_lock = threading.Lock()  # guards _cache and _room_cache (reader threads share them)


class SyncPushRules:
    """The user's merged ruleset and its version, loaded on first use in a sync."""

    def __init__(self, conn: sa.Connection, user_id: str) -> None:
        self._conn = conn
        self._user_id = user_id
        self.version = userdata.get_push_rules_version(conn, user_id)
        self._rules: dict[str, Any] | None = None

    @property
    def rules(self) -> dict[str, Any]:
        if self._rules is None:
            doc = userdata.get_push_rules_doc(self._conn, self._user_id) or empty_user_doc()
            self._rules = ruleset(self._user_id, doc)
        return self._rules


def _put(key: tuple[str, str], entry: _Entry) -> None:
    with _lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _room_inputs(conn: sa.Connection, room_id: str) -> _RoomInputs:
    """The room's power levels, create event and joined-member count, cached.

    Invalidation: an entry is used only while the room's current-state version
    (``timeline.get_current_state_version``: the ``(stream_ordering, rowid)`` of
    its newest ``current_state_deltas`` row) is the one it was read at. All three
    values are functions of the current state: the events it names (stored JSON is
    never rewritten, a redaction is a row of its own) and the memberships in them.
    Every current-state change is written by ``checkpoint`` with a new
    ``current_state_deltas`` row, whose version is greater than any before it, so a
    changed state never matches an old entry. The version is read in the caller's
    transaction, so an entry is right for that snapshot whichever reader stored it.
    """
    version = timeline.get_current_state_version(conn, room_id)
    with _lock:
        cached = _room_cache.get(room_id)
        if cached is not None and cached.version == version:
            _room_cache.move_to_end(room_id)
            return cached
    power_levels, create = timeline.get_power_state(conn, room_id)
    entry = _RoomInputs(version, power_levels, create, timeline.count_joined_members(conn, room_id))
    with _lock:
        _room_cache[room_id] = entry
        _room_cache.move_to_end(room_id)
        while len(_room_cache) > _ROOM_CACHE_SIZE:
            _room_cache.popitem(last=False)
    return entry


def unread_counts(
    conn: sa.Connection,
    user_id: str,
    room_id: str,
    room_version: str,
    *,
    membership_position: int,
    member_event: dict[str, Any] | None,
    upto: int,
    push: SyncPushRules,
) -> dict[str, int]:
    """The room's ``unread_notifications`` for ``user_id`` as of stream ``upto``."""
    receipt, pos = userdata.get_read_position(conn, room_id, user_id)
    after = membership_position
    if receipt is not None:
        after = pos or 0
    inputs = (receipt, membership_position, push.version)
    key = (user_id, room_id)
    with _lock:
        cached = _cache.get(key)
    notify = highlight = 0
    start = after
    if cached is not None and cached.inputs == inputs and cached.upto <= upto:
        notify, highlight, start = cached.notify, cached.highlight, max(after, cached.upto)
    scanned = timeline.get_timeline(conn, room_id, after=start, upto=upto, limit=MAX_COUNTED, backwards=False)
    if start != after and any(e.json.get("type") == "m.room.redaction" for e in scanned):
        notify = highlight = 0  # a redaction may un-count an event already counted
        scanned = timeline.get_timeline(conn, room_id, after=after, upto=upto, limit=MAX_COUNTED, backwards=False)
    # The position these counts cover: the last event scanned when the scan was cut.
    covered = scanned[-1].stream_ordering if len(scanned) == MAX_COUNTED else upto
    candidates = [e for e in scanned if e.json.get("sender") != user_id]
    # A redacted event no longer notifies: its content (a mention, say) is gone.
    if candidates:
        redacted = timeline.get_redactions(conn, [e.event_id for e in candidates])
        candidates = [e for e in candidates if e.event_id not in redacted]
    if candidates and notify < MAX_COUNTED:
        room = _room_inputs(conn, room_id)
        pl_event, create_event, joined = room.power_levels, room.create, room.joined
        rules_v = get_rules(room_version)
        content = (member_event or {}).get("content")
        display = content.get("displayname") if isinstance(content, dict) else None
        levels: dict[str, int | float] = {}
        for ev in candidates:
            sender = ev.json.get("sender", "")
            if sender not in levels:
                levels[sender] = get_power_level(sender, pl_event, create_event, rules_v)
            ctx = PushContext(
                user_id=user_id,
                display_name=display if isinstance(display, str) else None,
                room_member_count=joined,
                power_levels=pl_event.get("content") if pl_event else None,
                sender_power_level=levels[sender],
            )
            n, h = notification_for(push.rules, ev.json, ctx)
            notify += n
            highlight += h
    notify, highlight = min(notify, MAX_COUNTED), min(highlight, MAX_COUNTED)
    _put(key, _Entry(inputs, covered, notify, highlight))
    return {"notification_count": notify, "highlight_count": highlight}
