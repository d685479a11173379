"""History visibility and stripped state (client-server API, "Room History Visibility"
module; client-server API "Stripped state").

Theory of operation
-------------------
Whether a user may see a room event is decided from two facts *at that event*
(the room state just before it) — the ``m.room.history_visibility`` value and the
user's membership — plus one fact about the present: whether the user joined
after the event. :func:`user_may_see_event` is the spec's five-step algorithm
("Room History Visibility" → "Server behaviour") over exactly those facts, as plain
values; it does no lookups. :func:`event_visible` derives the facts from an event
and its ``state_before`` mapping and applies the spec's two boundary rules:

* an ``m.room.history_visibility`` event is visible if the visibility *before or
  after* it allows it;
* the user's own ``m.room.member`` event is visible if their membership *before or
  after* it allows it (the brief's "the membership it sets" is the "after" half;
  the spec's "or before" half is what lets a user see the event that changed their
  membership away from ``join``).

:func:`filter_visible` maps :func:`event_visible` over a list.

Spec reading decisions (each also noted where it is applied):

* Unknown or missing visibility values mean ``shared`` ("By default if no
  ``history_visibility`` is set, or if the value is not understood, the visibility
  is assumed to be ``shared``").
* Step 3, "the user joined the room at any point after the event was sent": read
  literally this includes a user who joined after the event and has since left
  (which matches the module's "After a user has left a room, they may see any
  events which they were allowed to see before they left"). That needs history the
  caller may not have, so callers can pass the exact answer
  (``joined_after_event``); when they don't, it is approximated by "the user is
  joined now". The approximation only ever denies more than the literal reading
  (a currently-joined user who was not joined at the event must have joined after
  it), never less; Synapse makes the same approximation.
* Extension (opt-out, ``own_leave_after_invite_visible``): a user's own ``leave``
  that rejects an invite or rescinds a knock is visible to them. The spec's
  before-or-after rule does not cover it under ``shared``/``joined`` visibility,
  but the user performed the act themselves and needs the event to see the room
  leave their invite/knock list; Synapse likewise always shows a user their own
  leave after ``invite`` (and after ``join``, which the spec already covers).

Stripped state (client-server "Stripped state") is the small, unsigned preview of a
room given with invites and knocks. :func:`stripped_state` picks the spec's listed
event types out of a state map and reduces each to ``{type, state_key, content,
sender}``; :func:`stripped_state_pdus` picks the same events as full PDUs, which is
what federation now wants in ``invite_room_state`` / ``knock_room_state`` (v1.16:
"MUST contain the ``m.room.create`` event", "formatted according to the room
version"); :func:`strip_state_events` prunes events received over federation into
the client schema (v1.16: "Servers cannot pass through what they receive over
federation to clients as stripped state").

Everything here is pure and synchronous; inputs are never mutated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "HISTORY_VISIBILITY_VALUES",
    "DEFAULT_HISTORY_VISIBILITY",
    "STRIPPED_STATE_TYPES",
    "history_visibility_of",
    "membership_of",
    "user_may_see_event",
    "event_visible",
    "filter_visible",
    "strip_state_event",
    "strip_state_events",
    "stripped_state",
    "stripped_state_pdus",
]

#: The four values of ``m.room.history_visibility`` (event schema enum), most
#: permissive first.
HISTORY_VISIBILITY_VALUES: tuple[str, ...] = ("world_readable", "shared", "invited", "joined")
#: "Server behaviour": absent or not-understood visibility is ``shared``.
DEFAULT_HISTORY_VISIBILITY = "shared"

#: "Stripped state": the events stripped state "should contain some or all of", in
#: the spec's order. ``m.room.create`` is required in invite/knock state since v1.16.
STRIPPED_STATE_TYPES: tuple[str, ...] = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)

_HISTORY_VISIBILITY = "m.room.history_visibility"
_MEMBER = "m.room.member"
_KNOWN_MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})

StateMap = Mapping[tuple[str, str], Mapping[str, Any]]


# --------------------------------------------------------------------------------
# History visibility
# --------------------------------------------------------------------------------


def history_visibility_of(content: Mapping[str, Any] | None) -> str:
    """The ``history_visibility`` set by an ``m.room.history_visibility`` event's
    ``content``; ``"shared"`` when there is no event, no value, or a value that is
    not one of the four the spec defines ("Server behaviour")."""
    if isinstance(content, Mapping):
        value = content.get("history_visibility")
        if isinstance(value, str) and value in HISTORY_VISIBILITY_VALUES:
            return value
    return DEFAULT_HISTORY_VISIBILITY


def membership_of(member_event: Mapping[str, Any] | None) -> str | None:
    """The ``content.membership`` of an ``m.room.member`` event, or ``None`` when
    there is no event or it carries no string membership (the user has no
    membership; the algorithm treats that like ``leave``)."""
    if not isinstance(member_event, Mapping):
        return None
    content = member_event.get("content")
    if not isinstance(content, Mapping):
        return None
    membership = content.get("membership")
    return membership if isinstance(membership, str) else None


def user_may_see_event(
    *,
    history_visibility: str,
    membership_at_event: str | None,
    current_membership: str | None,
    joined_after_event: bool | None = None,
) -> bool:
    """The spec algorithm ("Room History Visibility" → "Server behaviour"), steps 1–5.

    ``history_visibility`` and ``membership_at_event`` are the values *at the event*
    (see :func:`event_visible` for how they are derived, including the
    before-or-after boundary rules). ``joined_after_event`` answers step 3 exactly
    when the caller knows it; when it is ``None``, step 3 uses "``current_membership``
    is ``join``" (see the module docstring for why that is a safe reading).
    """
    visibility = (
        history_visibility if history_visibility in HISTORY_VISIBILITY_VALUES else DEFAULT_HISTORY_VISIBILITY
    )
    # 1. "If the history_visibility was set to world_readable, allow."
    if visibility == "world_readable":
        return True
    # 2. "If the user's membership was join, allow."
    if membership_at_event == "join":
        return True
    # 3. "If history_visibility was set to shared, and the user joined the room at
    #    any point after the event was sent, allow."
    if visibility == "shared":
        joined_after = current_membership == "join" if joined_after_event is None else joined_after_event
        if joined_after:
            return True
    # 4. "If the user's membership was invite, and the history_visibility was set
    #    to invited, allow."
    if membership_at_event == "invite" and visibility == "invited":
        return True
    # 5. "Otherwise, deny."
    return False


def event_visible(
    event: Mapping[str, Any],
    state_before: StateMap,
    user_id: str,
    *,
    current_membership: str | None,
    joined_after_event: bool | None = None,
    own_leave_after_invite_visible: bool = True,
) -> bool:
    """Whether ``user_id`` may see ``event``, given the room state before it.

    ``state_before`` maps ``(type, state_key)`` to event JSON; only
    ``("m.room.history_visibility", "")`` and ``("m.room.member", user_id)`` are read
    (a missing entry means "no such state"). ``event`` may be a PDU or a client
    event; only ``type``, ``state_key`` and ``content`` are read.
    """
    visibility_before = history_visibility_of(_content(state_before.get((_HISTORY_VISIBILITY, ""))))
    membership_before = membership_of(state_before.get((_MEMBER, user_id)))

    def allowed(visibility: str, membership: str | None) -> bool:
        return user_may_see_event(
            history_visibility=visibility,
            membership_at_event=membership,
            current_membership=current_membership,
            joined_after_event=joined_after_event,
        )

    if allowed(visibility_before, membership_before):
        return True

    event_type = event.get("type")
    state_key = event.get("state_key")
    if event_type == _HISTORY_VISIBILITY and state_key == "":
        # "For m.room.history_visibility events themselves, the user should be
        # allowed to see the event if the history_visibility before *or* after the
        # event would allow them to see it."
        return allowed(history_visibility_of(_content(event)), membership_before)
    if event_type == _MEMBER and state_key == user_id:
        # "Likewise, for the user's own m.room.member events, the user should be
        # allowed to see the event if their membership before *or* after the event
        # would allow them to see it."
        membership_after = membership_of(event)
        if allowed(visibility_before, membership_after):
            return True
        # Extension (module docstring): a user always sees their own invite
        # rejection / knock rescission.
        if (
            own_leave_after_invite_visible
            and membership_after == "leave"
            and membership_before in ("invite", "knock")
        ):
            return True
    return False


def filter_visible(
    events_with_state: Iterable[tuple[Mapping[str, Any], StateMap]],
    user_id: str,
    *,
    current_membership: str | None,
    joined_after_event: Callable[[Mapping[str, Any]], bool] | None = None,
    own_leave_after_invite_visible: bool = True,
) -> list[Any]:
    """The events (the same objects, in order) from ``(event, state_before)`` pairs
    that ``user_id`` may see; see :func:`event_visible`. ``joined_after_event``, if
    given, answers step 3 exactly for each event."""
    visible: list[Any] = []
    for event, state_before in events_with_state:
        if event_visible(
            event,
            state_before,
            user_id,
            current_membership=current_membership,
            joined_after_event=None if joined_after_event is None else joined_after_event(event),
            own_leave_after_invite_visible=own_leave_after_invite_visible,
        ):
            visible.append(event)
    return visible


def _content(event: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not isinstance(event, Mapping):
        return None
    content = event.get("content")
    return content if isinstance(content, Mapping) else None


# --------------------------------------------------------------------------------
# Stripped state
# --------------------------------------------------------------------------------


def strip_state_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """``event`` reduced to the StrippedStateEvent schema (``type``, ``state_key``,
    ``content``, ``sender`` — all required; "Stripped state events can only have
    the sender, type, state_key and content properties present"), deep-copied.
    ``None`` when ``event`` cannot be expressed in that schema (a required key
    missing or of the wrong type, or a ``sender`` that is not a user ID)."""
    if not isinstance(event, Mapping):
        return None
    event_type = event.get("type")
    state_key = event.get("state_key")
    content = event.get("content")
    sender = event.get("sender")
    if not (
        isinstance(event_type, str)
        and isinstance(state_key, str)
        and isinstance(content, Mapping)
        and isinstance(sender, str)
        and sender.startswith("@")  # schema: pattern "^@"
    ):
        return None
    return {
        "content": copy.deepcopy(dict(content)),
        "sender": sender,
        "state_key": state_key,
        "type": event_type,
    }


def strip_state_events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prune events (e.g. a remote server's ``invite_room_state`` PDUs) into
    stripped state for clients, dropping any that do not fit the schema (v1.16:
    servers "are expected to prune the events into the stripped state schema before
    passing the details onto clients")."""
    out: list[dict[str, Any]] = []
    for event in events:
        stripped = strip_state_event(event)
        if stripped is not None:
            out.append(stripped)
    return out


def _select(state_events: StateMap, extra: Iterable[tuple[str, str]]) -> list[Mapping[str, Any]]:
    keys = [(t, "") for t in STRIPPED_STATE_TYPES]
    for key in extra:
        if key not in keys:
            keys.append(key)
    return [state_events[key] for key in keys if state_events.get(key) is not None]


def stripped_state(
    state_events: StateMap,
    *,
    extra: Iterable[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Client stripped state (``invite_state`` / ``knock_state`` on ``/sync``,
    ``unsigned.invite_room_state`` / ``knock_room_state``) for a room whose current
    state is ``state_events``: the :data:`STRIPPED_STATE_TYPES` present (state key
    ``""``), then any ``extra`` keys (e.g. the inviter's ``m.room.member``; "The
    server might include events not described here as well"), each reduced by
    :func:`strip_state_event`, in that order."""
    return strip_state_events(_select(state_events, extra))


def stripped_state_pdus(
    state_events: StateMap,
    *,
    extra: Iterable[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """The same selection as :func:`stripped_state`, as deep copies of the full
    events, for federation ``invite_room_state`` / ``knock_room_state`` (v1.16:
    entries "MUST additionally be formatted according to the room version
    specification" and MUST include ``m.room.create``). ``state_events`` must hold
    PDUs for this; the receiving server translates them to stripped state."""
    return [copy.deepcopy(dict(event)) for event in _select(state_events, extra)]
