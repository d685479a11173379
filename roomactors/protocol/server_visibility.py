"""History visibility for servers: may a remote server see a room event?

Theory of operation
-------------------
The spec defines history visibility for *users* (client-server "Room History
Visibility" → "Server behaviour", :mod:`roomactors.protocol.visibility`). A server
asking for events over federation (``/event``, ``/backfill``,
``/get_missing_events``) acts for its users, so a server may see an event when **at
least one of its users** may see it by that algorithm. Applied to the set of the
server's users, the five steps become (with the state *before* the event):

1. ``world_readable``: allow.
2. some user of the server had membership ``join`` at the event: allow.
3. ``shared``, and some user of the server joined after the event: allow. The
   callers only answer servers that have a joined user *now* (Synapse's
   "Host not in room" precondition, checked first), and a user who is joined now and
   was not joined at the event joined after it; so ``shared`` allows whenever
   ``server_joined_now`` is true. That is the same approximation
   :func:`roomactors.protocol.visibility.user_may_see_event` makes for a user.
4. ``invited``, and some user of the server had membership ``invite``: allow.
5. otherwise deny.

This agrees with Synapse's ``filter_events_for_server`` as observed: ``shared`` and
``world_readable`` events are served to any server in the room; ``invited`` and
``joined`` ones only to a server with a user invited (for ``invited``) or joined at
that point.

The user algorithm's two boundary rules carry over:

* an ``m.room.history_visibility`` event is visible if the visibility before *or*
  after it allows it;
* an ``m.room.member`` event for one of the server's users is visible if that user's
  membership before *or* after it allows it.

What happens to an event the server may not see is the caller's choice; the
federation read endpoints serve it *redacted* (Synapse's behaviour for
``/backfill``, ``/get_missing_events`` and ``/event``), so the DAG stays walkable.

Everything is pure: the caller passes the state before the event (``(type,
state_key)`` -> event JSON; only the history visibility and the server's members
are read) and whether the server has a joined user now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .visibility import HISTORY_VISIBILITY_VALUES, history_visibility_of, membership_of

__all__ = [
    "server_of_user",
    "server_memberships",
    "server_may_see_event",
    "event_visible_to_server",
]

_HISTORY_VISIBILITY = "m.room.history_visibility"
_MEMBER = "m.room.member"

StateMap = Mapping[tuple[str, str], Mapping[str, Any]]


def server_of_user(user_id: object) -> str | None:
    """The server name of a user ID (everything after the first ``:``; a port stays),
    or ``None`` for something that is not ``@localpart:server``."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return None
    _, sep, server = user_id.partition(":")
    return server if sep and server else None


def server_memberships(state: StateMap, server_name: str) -> list[str | None]:
    """The memberships, in ``state``, of every user of ``server_name``."""
    return [
        membership_of(event)
        for (event_type, state_key), event in state.items()
        if event_type == _MEMBER and server_of_user(state_key) == server_name
    ]


def server_may_see_event(
    *, history_visibility: str, memberships_at_event: Iterable[str | None], server_joined_now: bool
) -> bool:
    """Steps 1-5 of the module docstring for one server, from plain values."""
    visibility = (
        history_visibility if history_visibility in HISTORY_VISIBILITY_VALUES else "shared"
    )
    memberships = list(memberships_at_event)
    # 1. "If the history_visibility was set to world_readable, allow."
    if visibility == "world_readable":
        return True
    # 2. "If the user's membership was join, allow." (any of the server's users)
    if "join" in memberships:
        return True
    # 3. "If history_visibility was set to shared, and the user joined the room at
    #    any point after the event was sent, allow."
    if visibility == "shared" and server_joined_now:
        return True
    # 4. "If the user's membership was invite, and the history_visibility was set
    #    to invited, allow."
    if visibility == "invited" and "invite" in memberships:
        return True
    # 5. "Otherwise, deny."
    return False


def _content(event: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not isinstance(event, Mapping):
        return None
    content = event.get("content")
    return content if isinstance(content, Mapping) else None


def event_visible_to_server(
    event: Mapping[str, Any], state_before: StateMap, server_name: str, *, server_joined_now: bool
) -> bool:
    """Whether ``server_name`` may see ``event`` given the room state before it
    (see the module docstring, including the before-or-after boundary rules)."""
    visibility = history_visibility_of(_content(state_before.get((_HISTORY_VISIBILITY, ""))))
    memberships = server_memberships(state_before, server_name)
    if server_may_see_event(
        history_visibility=visibility, memberships_at_event=memberships, server_joined_now=server_joined_now
    ):
        return True
    event_type = event.get("type")
    state_key = event.get("state_key")
    if event_type == _HISTORY_VISIBILITY and state_key == "":
        # "For m.room.history_visibility events themselves, the user should be
        # allowed to see the event if the history_visibility before *or* after the
        # event would allow them to see it."
        return server_may_see_event(
            history_visibility=history_visibility_of(_content(event)),
            memberships_at_event=memberships,
            server_joined_now=server_joined_now,
        )
    if event_type == _MEMBER and isinstance(state_key, str) and server_of_user(state_key) == server_name:
        # "Likewise, for the user's own m.room.member events, the user should be
        # allowed to see the event if their membership before *or* after the event
        # would allow them to see it."
        return server_may_see_event(
            history_visibility=visibility,
            memberships_at_event=[*memberships, membership_of(event)],
            server_joined_now=server_joined_now,
        )
    return False
