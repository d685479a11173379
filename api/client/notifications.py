"""Unread notification counts for /sync (client-server "Push Notifications",
"Receiving notifications": ``unread_notifications``).

Theory of operation
-------------------
The counts are computed when a sync asks, not stored at send time: the events of
the room after the user's newest ``m.read``/``m.read.private`` receipt (or, never
read, after their own membership event; at most ``MAX_COUNTED``, newest first),
sent by others, served to clients and not redacted, are run through the user's
push rules (``roomactors.protocol.push_rules``, defaults merged with the user's
stored document); ``notification_count`` counts those whose actions notify and
``highlight_count`` those that also highlight. A room with
thousands of unread events reports at most ``MAX_COUNTED`` — clients show "99+"
long before.
"""

from __future__ import annotations

import sqlalchemy as sa

from roomactors.protocol.auth import get_power_level
from roomactors.protocol.push_rules import PushContext, empty_user_doc, notification_for, ruleset
from roomactors.protocol.room_versions import get_rules
from storage import timeline, userdata
from storage.schema import events

__all__ = ["MAX_COUNTED", "unread_counts"]

MAX_COUNTED = 100


def unread_counts(
    conn: sa.Connection, user_id: str, room_id: str, room_version: str, *, membership_position: int | None = None
) -> dict[str, int]:
    """The room's ``unread_notifications`` for ``user_id``. ``membership_position``
    is the stream ordering of the user's current membership event, if the caller
    has it (``/sync`` does, for every room at once)."""
    receipt = userdata.get_receipt(conn, room_id, user_id, ("m.read", "m.read.private"))
    after = 0
    if receipt is not None:
        pos = conn.execute(sa.select(events.c.stream_ordering).where(events.c.event_id == receipt)).scalar()
        after = pos or 0
    elif membership_position is not None:
        after = membership_position  # never read: count from the user's own join
    else:
        member = timeline.get_memberships(conn, user_id).get(room_id)
        after = member.stream_ordering if member is not None else 0
    candidates = [
        e for e in timeline.get_timeline(conn, room_id, after=after, limit=MAX_COUNTED)
        if e.json.get("sender") != user_id
    ]
    # A redacted event no longer notifies: its content (a mention, say) is gone.
    redacted = timeline.get_redactions(conn, [e.event_id for e in candidates])
    candidates = [e for e in candidates if e.event_id not in redacted]
    if not candidates:
        return {"notification_count": 0, "highlight_count": 0}
    doc = userdata.get_push_rules_doc(conn, user_id) or empty_user_doc()
    rules = ruleset(user_id, doc)
    state = timeline.get_current_state_ids(conn, room_id)
    members = timeline.get_room_members(conn, room_id)
    joined = sum(1 for e in members.values() if e.get("content", {}).get("membership") == "join")
    pl_id = state.get(("m.room.power_levels", ""))
    create_id = state.get(("m.room.create", ""))
    needed = [x for x in (pl_id, create_id) if x]
    from storage.rooms import get_events

    loaded = get_events(conn, needed)
    pl_event = loaded[pl_id].json if pl_id in loaded else None
    create_event = loaded[create_id].json if create_id in loaded else None
    rules_v = get_rules(room_version)
    display = members.get(user_id, {}).get("content", {}).get("displayname")
    notify = highlight = 0
    for ev in candidates:
        sender = ev.json.get("sender", "")
        ctx = PushContext(
            user_id=user_id,
            display_name=display if isinstance(display, str) else None,
            room_member_count=joined,
            power_levels=pl_event.get("content") if pl_event else None,
            sender_power_level=get_power_level(sender, pl_event, create_event, rules_v),
        )
        n, h = notification_for(rules, ev.json, ctx)
        notify += n
        highlight += h
    return {"notification_count": notify, "highlight_count": highlight}
