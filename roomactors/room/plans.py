"""Theory of operation
-------------------
Pure planning for ``POST /createRoom`` and ``POST /rooms/{roomId}/upgrade``: the
request (and, for an upgrade, the old room's current state) goes in, a frozen plan
of *what* to send comes out. No I/O, no clock, no signing: the room actor turns a
plan into PDUs (``room/events.py``) and the API layer maps :class:`PlanError` to
``{"errcode", "error"}`` with :attr:`PlanError.status`.

Creating a room (client-server API "Creation", ``create_room.yaml``)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
:func:`plan_create_room` validates the body, then lays out the events in the order
the endpoint's description requires::

    1 m.room.create              RoomPlan.create_content (the room actor builds it)
    2 creator's join             {"membership": "join"} + the creator's profile
    3 m.room.power_levels        preset defaults, then power_level_content_override
    4 m.room.canonical_alias     if room_alias_name
    5 preset state               join_rules, history_visibility, guest_access
    6 initial_state              in the order listed
    7 m.room.name, m.room.topic  from name / topic
    8 invites                    RoomPlan.invites (sent through the membership path)

*Last writer wins, earlier writers are not sent.* ``initial_state`` "takes precedence
over events set by preset, but gets overridden by name and topic". When a later step
sets the same ``(type, state_key)`` as an earlier one, only the later event is
planned, at its own step's position: an ``initial_state`` entry suppresses the
step-3/4/5 event it overrides, ``name``/``topic`` suppress an ``initial_state``
``m.room.name``/``m.room.topic``, and of repeated ``initial_state`` entries the last
is kept. The resulting state is the same as sending every event in order (and as
Synapse's, which also drops the overridden step 3–5 events), but no transient state
ever exists — e.g. a ``public_chat`` room whose ``initial_state`` says
``join_rule: invite`` is never public, not even at one point of its DAG.
Consequence: an ``initial_state`` ``m.room.power_levels`` replaces the generated one
entirely, so ``power_level_content_override`` (which the spec applies to *the
generated* content) and the ``trusted_private_chat`` invitee levels do not apply.

Default power levels. The spec leaves them to the server except for the v1.16 rules
below; we use the values Synapse sends (a fact about the ecosystem clients are
tested against): ``users_default``/``events_default`` 0, ``state_default``/``ban``/
``kick``/``redact`` 50, ``invite`` 0 for the private presets and 50 for
``public_chat``, and ``events`` raising ``m.room.name``/``canonical_alias``/
``avatar`` to 50 and ``power_levels``/``history_visibility``/``server_acl``/
``encryption``/``tombstone`` to 100. Synapse's non-spec ``historical`` key is not
sent. ``power_level_content_override`` is merged at the top level ("applied on top of
the generated content": an overriding ``events`` replaces the whole map).

Creators (``rooms/v12``; ``m.room.power_levels`` schema; ``create_room.yaml`` step 3):

* without ``rules.explicit_creators`` (v1–v11) the creator is listed with 100, and
  for ``trusted_private_chat`` so is every invitee ("same power level as the room
  creator");
* with ``rules.explicit_creators`` (v12) creators have infinite power and MUST NOT
  be listed in ``users``: the generated map is empty; ``trusted_private_chat``
  invitees are appended to ``content.additional_creators`` (deduplicated — the
  server "SHOULD combine" them) and ``m.room.tombstone`` is set to 150, above
  ``state_default`` as the v1.16 text requires.

``creation_content`` keys ``creator`` and ``room_version`` are overwritten by the
server (spec: "The server will overwrite the following keys"): ``room_version`` is
always set; ``creator`` is set where ``rules.create_event_has_creator`` (v1–v10) and
removed elsewhere. ``additional_creators`` is validated only where the rules give it
meaning (v12 auth rule 1.4); elsewhere it "serves no purpose and is not validated".

Dry run. Before returning, the plan is walked through :func:`roomactors.protocol.auth.check_auth`
with synthetic events (a placeholder room ID, no signatures): create, join, each
state event, each invite, every one against the state the previous ones produced.
A request whose events the authorization rules would reject (the creator's power
set too low by the override, creators listed in v12 ``users``, a member event for
someone else in ``initial_state``…) fails here with ``M_INVALID_ROOM_STATE`` — the
spec's code for this — before anything is persisted, instead of half-way through
building the room. Every content is also checked against the version's canonical
JSON number rules (v6+, ``M_BAD_JSON``).

Error codes. A body that is not the shape ``create_room.yaml`` describes (wrong JSON
type, value outside an enum, missing required key) is ``M_BAD_JSON`` (the 400 list's
"request body is malformed"); a well-typed identifier that fails its grammar
(``invite`` user IDs, ``room_alias_name``, ``additional_creators``) is
``M_INVALID_PARAM``; an unknown version ``M_UNSUPPORTED_ROOM_VERSION``; ``invite_3pid``
entries ``M_INVALID_PARAM`` (this server talks to no identity server). Alias
uniqueness (``M_ROOM_IN_USE``) needs the directory and is the caller's check. A
top-level field that is JSON ``null`` counts as not given.

Upgrading a room (client-server API "Room upgrades", "Server behaviour")
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
:func:`plan_upgrade` covers the pure parts of the six server steps:

1. permission: the user must be joined and able to send ``m.room.tombstone`` in the
   old room (else ``M_FORBIDDEN``, status 403);
2. the new create content: ``room_version``, ``predecessor`` (``room_id``, plus
   ``event_id`` when the caller passes one — deprecated since v1.16 and MAY be
   omitted for v12 targets), the old ``type`` copied, ``m.federate: false`` kept
   (Synapse fact), ``creator`` where the new rules have it, and the request's
   ``additional_creators`` where the new rules give them meaning (they are *not*
   carried over from the old room; spec note, v1.16);
3. the transferred state: the spec's recommended list (``server_acl``,
   ``encryption``, ``name``, ``avatar``, ``topic``, ``guest_access``,
   ``history_visibility``, ``join_rules``, ``power_levels``), plus for spaces the
   non-empty ``m.space.child`` events and, for every user, the bans (Synapse facts;
   bans are sent by the upgrading user, so no impersonation is involved). Event
   order in the new room: join, power levels, bans, the rest — bans before
   ``join_rules``, so a banned user never has a window to join;
4. moving aliases is the caller's (it needs the directory);
   :attr:`UpgradePlan.canonical_alias_content` hands over the old canonical alias;
5. the tombstone: :func:`tombstone_content` once the new room ID is known;
6. :attr:`UpgradePlan.old_room_power_levels`: ``events_default`` and ``invite``
   raised to ``max(50, users_default + 1)``, or ``None`` if nothing changes or the
   user could not send it ("if possible").

Power levels in the new room are the old content normalised for the new version
(each level parsed under the *old* rules — stringy/floaty values become integers,
invalid ones are dropped), with the new creators removed from ``users`` when the
new rules have explicit creators. Where the user is not a new-room creator and their
level is below what the transferred events need (each type's required level, the
ban level and above every banned user's level), the first power-levels event raises
them and a last one restores the old content (Synapse fact). A user who was an
explicit (infinite) creator of the old room but cannot be one in the new room keeps
at least 100, what is needed and every level the power levels mention (so they can
still change anything, tombstone included): restoring "infinite" is impossible and
restoring nothing would leave them powerless in the room they just made. The upgrade plan is dry-run like a
creation; a failure there means the old state cannot be replicated (``M_UNKNOWN``).
"""

from __future__ import annotations

import copy
import math
import string
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomactors.protocol.auth import check_auth, get_power_level, parse_power_level_value
from roomactors.protocol.canonical import CANONICAL_INT_MAX, CANONICAL_INT_MIN, check_json_numbers
from roomactors.protocol.errors import AuthError, InvalidEvent
from roomactors.protocol.ids import MAX_ID_BYTES, is_valid_user_id, server_name_of
from roomactors.protocol.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    RoomVersionRules,
    get_rules,
)

__all__ = [
    "PlanError",
    "PlannedEvent",
    "RoomPlan",
    "UpgradePlan",
    "PRESETS",
    "DEFAULT_TOMBSTONE_BODY",
    "plan_create_room",
    "plan_upgrade",
    "tombstone_content",
]

#: create_room.yaml ``preset`` enum.
PRESETS = ("private_chat", "public_chat", "trusted_private_chat")
_VISIBILITIES = ("public", "private")
#: The body Synapse uses for the tombstone (``m.room.tombstone`` schema: "A server-defined message").
DEFAULT_TOMBSTONE_BODY = "This room has been replaced"

_CREATE = "m.room.create"
_MEMBER = "m.room.member"
_PL = "m.room.power_levels"
_PL_KEY = (_PL, "")
_LEVEL_NAMES = ("users_default", "events_default", "state_default", "ban", "kick", "redact", "invite")
_LEVEL_DEFAULTS = {"users_default": 0, "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}
_LEVEL_MAPS = ("events", "notifications")

#: Preset table (create_room.yaml): join_rules, history_visibility, guest_access.
_PRESET_STATE: Mapping[str, tuple[str, str, str]] = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}

#: Room upgrades, "Server behaviour" step 3: the recommended state to transfer, in the
#: order it is sent after the power levels and bans.
_UPGRADE_COPIED_TYPES = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)


class PlanError(Exception):
    """The request cannot be planned: answer ``status`` with ``{"errcode", "error"}``."""

    def __init__(self, errcode: str, error: str, *, status: int = 400) -> None:
        super().__init__(f"{errcode}: {error}")
        self.errcode = errcode
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedEvent:
    """One event to send as the room's creator/upgrader; ``state_key`` ``None`` for a
    non-state event (plans only hold state events today)."""

    type: str
    state_key: str | None
    content: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomPlan:
    """What ``/createRoom`` will send, in order (see the module docstring)."""

    room_version: str
    preset: str
    #: Content of the ``m.room.create`` event (step 1).
    create_content: dict
    #: Steps 2–7: the creator's join first.
    events: tuple[PlannedEvent, ...]
    #: Step 8: user IDs to invite, deduplicated, in request order.
    invites: tuple[str, ...]
    alias_localpart: str | None
    #: ``#alias_localpart:server_name`` when ``room_alias_name`` was given.
    room_alias: str | None
    visibility: str
    is_direct: bool

    def invite_content(self) -> dict:
        """Content of each step-8 invite: ``is_direct`` set only when requested."""
        content: dict[str, Any] = {"membership": "invite"}
        if self.is_direct:
            content["is_direct"] = True
        return content


@dataclass(frozen=True, slots=True, kw_only=True)
class UpgradePlan:
    """What a room upgrade sends (see the module docstring, "Upgrading a room")."""

    old_version: str
    new_version: str
    #: Content of the new room's ``m.room.create`` (with ``predecessor``).
    create_content: dict
    #: New-room events after the create: join, power levels, bans, copied state,
    #: and the restoring power levels when the user was raised.
    events: tuple[PlannedEvent, ...]
    #: Step 6: content of the old room's restricting ``m.room.power_levels``, or None.
    old_room_power_levels: dict | None
    #: The old room's ``m.room.canonical_alias`` content, for the caller's alias move (step 4).
    canonical_alias_content: dict | None


def tombstone_content(replacement_room: str, *, body: str = DEFAULT_TOMBSTONE_BODY) -> dict:
    """``m.room.tombstone`` content (both keys required by its schema)."""
    return {"body": body, "replacement_room": replacement_room}


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------


def _field(body: dict, key: str, default: Any) -> Any:
    """``body[key]``; an absent key and JSON ``null`` both mean "not given"."""
    value = body.get(key)
    return default if value is None else value


def _bad_json(error: str) -> PlanError:
    return PlanError("M_BAD_JSON", error)


def _invalid_param(error: str) -> PlanError:
    return PlanError("M_INVALID_PARAM", error)


def _content_of(event: object) -> dict:
    if isinstance(event, Mapping):
        content = event.get("content")
        if isinstance(content, dict):
            return content
    return {}


def _rules_for(version: object, known_versions: Container[str], what: str) -> RoomVersionRules:
    if not isinstance(version, str):
        raise _bad_json(f"{what} must be a string")
    if version not in known_versions:
        raise PlanError("M_UNSUPPORTED_ROOM_VERSION", f"this server does not support room version {version!r}")
    try:
        return get_rules(version)
    except InvalidEvent:  # a caller-supplied known_versions naming a version we cannot run
        raise PlanError("M_UNSUPPORTED_ROOM_VERSION", f"this server does not support room version {version!r}") from None


def _user_id_list(value: object, what: str) -> list[str]:
    """A JSON array of valid user IDs (appendices "User Identifiers", the tolerant
    grammar applied to ``sender``), deduplicated in order."""
    if not isinstance(value, list):
        raise _bad_json(f"{what} must be an array of user IDs")
    out: list[str] = []
    for user_id in value:
        if not isinstance(user_id, str):
            raise _bad_json(f"{what} must be an array of user IDs")
        if not is_valid_user_id(user_id):
            raise _invalid_param(f"{what}: {user_id!r} is not a valid user ID")
        if user_id not in out:
            out.append(user_id)
    return out


def _profile_join_content(profile: Mapping[str, Any] | None) -> dict:
    content: dict[str, Any] = {"membership": "join"}
    for key in ("displayname", "avatar_url"):
        value = (profile or {}).get(key)
        if isinstance(value, str):
            content[key] = value
    return content


def _required_level(pl_content: Mapping[str, Any] | None, event_type: str, rules: RoomVersionRules) -> int:
    """s2s "Definitions", *required power level* for a state event of ``event_type``."""
    content = pl_content or {}
    events = content.get("events")
    if isinstance(events, dict) and event_type in events:
        level = parse_power_level_value(events[event_type], rules)
        if level is not None:
            return level
    return _named_level(content, "state_default", rules)


def _named_level(pl_content: Mapping[str, Any] | None, name: str, rules: RoomVersionRules) -> int:
    content = pl_content or {}
    if name in content:
        level = parse_power_level_value(content[name], rules)
        if level is not None:
            return level
    return _LEVEL_DEFAULTS[name]


def _check_numbers(value: Any, version: str, what: str) -> None:
    try:
        check_json_numbers(value, version)
    except InvalidEvent as e:
        raise _bad_json(f"{what}: {e.message}") from None


# ---------------------------------------------------------------------------------------
# Dry run through the authorization rules
# ---------------------------------------------------------------------------------------


def _dry_run(
    rules: RoomVersionRules,
    sender: str,
    create_content: dict,
    events: Sequence[PlannedEvent],
    invites: Sequence[str],
    invite_content: dict,
) -> None:
    """Raise :class:`AuthError` unless every planned event passes the authorization
    rules against the state the plan builds before it (see the module docstring)."""
    version = rules.version
    create_id = "$plan-dry-run-create"
    if rules.create_event_has_room_id:
        room_id = f"!plan-dry-run:{server_name_of(sender)}"
    else:
        room_id = "!" + create_id[1:]  # v12 rule 2: the room ID is the create event's ID
    create: dict[str, Any] = {"type": _CREATE, "state_key": "", "sender": sender, "content": create_content}
    if rules.create_event_has_room_id:
        create["room_id"] = room_id
    check_auth(create, {}, version, create_event_id=create_id)
    state: dict[tuple[str, str], dict] = {(_CREATE, ""): create}
    prev: list[Any] = [[create_id, {}]] if rules.event_refs_are_pairs else [create_id]
    first = True
    for planned in (*events, *(PlannedEvent(type=_MEMBER, state_key=u, content=invite_content) for u in invites)):
        event: dict[str, Any] = {
            "type": planned.type,
            "sender": sender,
            "room_id": room_id,
            "content": planned.content,
            "prev_events": prev if first else [],
        }
        if planned.state_key is not None:
            event["state_key"] = planned.state_key
        check_auth(event, state, version, create_event_id=create_id)
        first = False
        if planned.state_key is not None:
            state[(planned.type, planned.state_key)] = event


# ---------------------------------------------------------------------------------------
# /createRoom
# ---------------------------------------------------------------------------------------


def _default_power_levels(
    rules: RoomVersionRules, preset: str, creator: str, invites: Sequence[str]
) -> dict[str, Any]:
    """Step 3 before the override (module docstring, "Default power levels")."""
    users: dict[str, int] = {}
    if not rules.explicit_creators:
        # create_room.yaml step 3: v1–v11, the creator is given the power to send state.
        users[creator] = 100
        if preset == "trusted_private_chat":
            # Preset table: "All invitees are given the same power level as the room creator."
            for invitee in invites:
                users[invitee] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            # v1.16, m.room.power_levels "events": v12+ MUST set it above state_default.
            "m.room.tombstone": 150 if rules.explicit_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
    }


def _alias_localpart(value: object, server_name: str) -> str:
    """appendices "Room Aliases": any non-surrogate code points but ``:`` and NUL, the
    whole alias at most 255 bytes. Whitespace is refused too (as Synapse does): such
    an alias cannot be typed or shared reliably."""
    if not isinstance(value, str):
        raise _bad_json("room_alias_name must be a string")
    if not value:
        raise _invalid_param("room_alias_name must not be empty")
    if ":" in value:
        raise _invalid_param(
            "':' is not permitted in room_alias_name: give the local part ('foo', not '#foo:example.com')"
        )
    if "\x00" in value or any(ch in string.whitespace for ch in value):
        raise _invalid_param("room_alias_name contains invalid characters")
    try:
        length = len(f"#{value}:{server_name}".encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid_param("room_alias_name contains invalid characters") from None
    if length > MAX_ID_BYTES:
        raise _invalid_param(f"the room alias would be longer than {MAX_ID_BYTES} bytes")
    return value


def _initial_state(value: object, version: str) -> list[PlannedEvent]:
    """``initial_state``: objects with ``type`` and ``content`` (``state_key`` defaults to "")."""
    if not isinstance(value, list):
        raise _bad_json("initial_state must be an array")
    out: list[PlannedEvent] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _bad_json(f"initial_state[{i}] must be an object")
        event_type = entry.get("type")
        if not isinstance(event_type, str):
            raise _bad_json(f"initial_state[{i}].type must be a string")
        state_key = entry.get("state_key", "")
        if not isinstance(state_key, str):
            raise _bad_json(f"initial_state[{i}].state_key must be a string")
        content = entry.get("content")
        if not isinstance(content, dict):
            raise _bad_json(f"initial_state[{i}].content must be an object")
        if event_type == _CREATE:
            # Step 1 is the only create event a room can have.
            raise PlanError("M_INVALID_ROOM_STATE", "initial_state must not contain m.room.create")
        _check_numbers(content, version, f"initial_state[{i}].content")
        out.append(PlannedEvent(type=event_type, state_key=state_key, content=copy.deepcopy(content)))
    return out


def plan_create_room(
    body: Any,
    *,
    creator: str,
    server_name: str,
    profile: Mapping[str, Any] | None = None,
    default_version: str = DEFAULT_ROOM_VERSION,
    known_versions: Container[str] = KNOWN_ROOM_VERSIONS,
) -> RoomPlan:
    """Validate a ``/createRoom`` body and plan the room (module docstring).

    ``creator`` is the requesting user, ``profile`` their ``displayname``/``avatar_url``
    for the join, ``known_versions`` the versions this server offers (anything
    supporting ``in``). Raises :class:`PlanError`.
    """
    if not isinstance(body, dict):
        raise _bad_json("the request body must be a JSON object")

    # room_version: "If provided, the homeserver will return a 400 error with the
    # errcode M_UNSUPPORTED_ROOM_VERSION if it does not support the room version."
    version = _field(body, "room_version", default_version)
    rules = _rules_for(version, known_versions, "room_version")

    visibility = _field(body, "visibility", "private")
    if not isinstance(visibility, str) or visibility not in _VISIBILITIES:
        raise _bad_json("visibility must be 'public' or 'private'")
    # preset: "If unspecified, the server should use the visibility to determine which preset to use."
    preset = _field(body, "preset", "public_chat" if visibility == "public" else "private_chat")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise _bad_json(f"preset must be one of {', '.join(PRESETS)}")

    is_direct = _field(body, "is_direct", False)
    if not isinstance(is_direct, bool):
        raise _bad_json("is_direct must be a boolean")

    invites = _user_id_list(_field(body, "invite", []), "invite")
    if creator in invites:
        # Auth rule "invite": a joined target cannot be invited; refuse before building.
        raise _invalid_param("the room's creator cannot invite themselves")
    invite_3pid = _field(body, "invite_3pid", [])
    if not isinstance(invite_3pid, list) or not all(isinstance(x, dict) for x in invite_3pid):
        raise _bad_json("invite_3pid must be an array of objects")
    if invite_3pid:
        raise _invalid_param("third-party (invite_3pid) invites are not supported: this server uses no identity server")

    alias_localpart = None
    room_alias = None
    if _field(body, "room_alias_name", None) is not None:
        alias_localpart = _alias_localpart(body["room_alias_name"], server_name)
        room_alias = f"#{alias_localpart}:{server_name}"

    name = _field(body, "name", None)
    if name is not None and not isinstance(name, str):
        raise _bad_json("name must be a string")
    topic = _field(body, "topic", None)
    if topic is not None and not isinstance(topic, str):
        raise _bad_json("topic must be a string")

    override = _field(body, "power_level_content_override", None)
    if override is not None and not isinstance(override, dict):
        raise _bad_json("power_level_content_override must be an object")

    # creation_content: extra keys for m.room.create; creator/room_version are the server's.
    creation_content = _field(body, "creation_content", {})
    if not isinstance(creation_content, dict):
        raise _bad_json("creation_content must be an object")
    create_content = copy.deepcopy(creation_content)
    create_content["room_version"] = version
    if rules.create_event_has_creator:
        create_content["creator"] = creator  # v1–v10: content.creator is required (auth 1.4)
    else:
        create_content.pop("creator", None)  # v11+: the creator is the sender
    if rules.explicit_creators:
        additional = (
            _user_id_list(create_content["additional_creators"], "creation_content.additional_creators")
            if "additional_creators" in create_content
            else []
        )
        if preset == "trusted_private_chat":
            # creation_content: "combine additional_creators ... and the invite array, deduplicating".
            additional += [u for u in invites if u not in additional]
        if additional or "additional_creators" in create_content:
            create_content["additional_creators"] = additional
    _check_numbers(create_content, version, "creation_content")

    initial = _initial_state(_field(body, "initial_state", []), version)

    # Steps 6 and 7, last writer wins (module docstring).
    late: list[PlannedEvent] = []
    if name is not None:
        late.append(PlannedEvent(type="m.room.name", state_key="", content={"name": name}))
    if topic is not None:
        # m.room.topic: "topic" plus the v1.15 m.topic block with a text/plain representation.
        late.append(
            PlannedEvent(
                type="m.room.topic",
                state_key="",
                content={"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}},
            )
        )
    late_keys = {(e.type, e.state_key) for e in late}
    kept_initial: list[PlannedEvent] = []
    for i, event in enumerate(initial):
        key = (event.type, event.state_key)
        if key in late_keys or any((e.type, e.state_key) == key for e in initial[i + 1 :]):
            continue
        kept_initial.append(event)
    initial_keys = {(e.type, e.state_key) for e in kept_initial}

    early: list[PlannedEvent] = []
    if _PL_KEY not in initial_keys:
        power_levels = _default_power_levels(rules, preset, creator, invites)
        if override is not None:
            power_levels.update(copy.deepcopy(override))
            _check_numbers(power_levels, version, "power_level_content_override")
        early.append(PlannedEvent(type=_PL, state_key="", content=power_levels))
    if room_alias is not None:
        early.append(PlannedEvent(type="m.room.canonical_alias", state_key="", content={"alias": room_alias}))
    join_rule, history_visibility, guest_access = _PRESET_STATE[preset]
    early.append(PlannedEvent(type="m.room.join_rules", state_key="", content={"join_rule": join_rule}))
    early.append(
        PlannedEvent(
            type="m.room.history_visibility", state_key="", content={"history_visibility": history_visibility}
        )
    )
    early.append(PlannedEvent(type="m.room.guest_access", state_key="", content={"guest_access": guest_access}))
    early = [e for e in early if (e.type, e.state_key) not in initial_keys]

    join = PlannedEvent(type=_MEMBER, state_key=creator, content=_profile_join_content(profile))
    plan = RoomPlan(
        room_version=version,
        preset=preset,
        create_content=create_content,
        events=(join, *early, *kept_initial, *late),
        invites=tuple(invites),
        alias_localpart=alias_localpart,
        room_alias=room_alias,
        visibility=visibility,
        is_direct=is_direct,
    )
    try:
        _dry_run(rules, creator, create_content, plan.events, plan.invites, plan.invite_content())
    except AuthError as e:
        raise PlanError("M_INVALID_ROOM_STATE", f"the requested initial state is invalid: {e}") from None
    return plan


# ---------------------------------------------------------------------------------------
# Room upgrades
# ---------------------------------------------------------------------------------------


def _clamp(value: int) -> int:
    return max(CANONICAL_INT_MIN, min(CANONICAL_INT_MAX, value))


def _normalised_power_levels(content: Mapping[str, Any], old_rules: RoomVersionRules) -> dict[str, Any]:
    """The old power levels as the new room can hold them: levels parsed under the old
    rules and written as integers; values that were not power levels there dropped."""
    out: dict[str, Any] = {}
    for key, value in content.items():
        if key in _LEVEL_NAMES:
            level = parse_power_level_value(value, old_rules)
            if level is not None:
                out[key] = _clamp(level)
        elif key in (*_LEVEL_MAPS, "users"):
            if not isinstance(value, dict):
                continue
            levels: dict[str, int] = {}
            for name, raw in value.items():
                if key == "users" and not is_valid_user_id(name):
                    continue
                level = parse_power_level_value(raw, old_rules)
                if level is not None:
                    levels[name] = _clamp(level)
            out[key] = levels
        else:
            out[key] = copy.deepcopy(value)
    return out


def _all_levels(pl_content: Mapping[str, Any]) -> list[int]:
    """Every integer level in normalised power-levels content."""
    out = [v for k, v in pl_content.items() if k in _LEVEL_NAMES and isinstance(v, int)]
    for key in (*_LEVEL_MAPS, "users"):
        if isinstance(pl_content.get(key), dict):
            out.extend(v for v in pl_content[key].values() if isinstance(v, int))
    return out


def _user_level(pl_content: Mapping[str, Any], user_id: str, rules: RoomVersionRules) -> int:
    users = pl_content.get("users")
    if isinstance(users, dict) and user_id in users:
        level = parse_power_level_value(users[user_id], rules)
        if level is not None:
            return level
    return _named_level(pl_content, "users_default", rules)


def _restricted_old_power_levels(
    old_pl: dict | None, create: dict, user_id: str, rules: RoomVersionRules
) -> dict | None:
    """Step 6: ``events_default`` and ``invite`` to ``max(50, users_default + 1)``."""
    if old_pl is None:
        return None  # no power levels to edit (Synapse skips this step too)
    content = _content_of(old_pl)
    restricted = max(50, _named_level(content, "users_default", rules) + 1)
    new = copy.deepcopy(content)
    changed = False
    for name in ("invite", "events_default"):
        if _named_level(content, name, rules) < restricted:
            new[name] = restricted
            changed = True
    if not changed:
        return None
    sender_level = get_power_level(user_id, old_pl, create, rules)
    if sender_level < max(restricted, _required_level(content, _PL, rules)):
        return None  # auth 10.6.2 would reject it: "if possible"
    return new


def plan_upgrade(
    old_state: Mapping[tuple[str, str], dict],
    *,
    user_id: str,
    new_version: Any,
    old_room_id: str,
    additional_creators: Any = None,
    predecessor_event_id: str | None = None,
    profile: Mapping[str, Any] | None = None,
    known_versions: Container[str] = KNOWN_ROOM_VERSIONS,
) -> UpgradePlan:
    """Plan upgrading ``old_room_id`` (whose current state is ``old_state``: ``(type,
    state_key)`` -> event JSON) to ``new_version`` on behalf of ``user_id``.

    ``additional_creators`` is the request's field (v1.16; ignored where the new
    rules have no explicit creators); ``predecessor_event_id`` the last event the
    caller knows in the old room, if it wants ``predecessor.event_id`` set.
    Raises :class:`PlanError`.
    """
    new_rules = _rules_for(new_version, known_versions, "new_version")
    extra_creators: list[str] = []
    if additional_creators is not None:
        extra_creators = _user_id_list(additional_creators, "additional_creators")

    create = old_state.get((_CREATE, ""))
    if not isinstance(create, dict):
        raise PlanError("M_UNKNOWN", "the old room has no m.room.create event in its state")
    old_create_content = _content_of(create)
    old_version = old_create_content.get("room_version", "1")
    try:
        old_rules = get_rules(old_version)
    except InvalidEvent:
        raise PlanError("M_UNSUPPORTED_ROOM_VERSION", f"the old room's version {old_version!r} is not supported") from None

    # Step 1: "Checks that the user has permission to send m.room.tombstone events".
    old_pl = old_state.get(_PL_KEY)
    old_pl = old_pl if isinstance(old_pl, dict) else None
    if _content_of(old_state.get((_MEMBER, user_id))).get("membership") != "join":
        raise PlanError("M_FORBIDDEN", "you are not joined to the room", status=403)
    user_old_level = get_power_level(user_id, old_pl, create, old_rules)
    if user_old_level < _required_level(_content_of(old_pl), "m.room.tombstone", old_rules):
        raise PlanError("M_FORBIDDEN", "you do not have permission to upgrade this room", status=403)

    # Step 2: the new create content.
    create_content: dict[str, Any] = {"room_version": new_version, "predecessor": {"room_id": old_room_id}}
    if predecessor_event_id is not None:
        create_content["predecessor"]["event_id"] = predecessor_event_id
    if new_rules.create_event_has_creator:
        create_content["creator"] = user_id
    if new_rules.explicit_creators and additional_creators is not None:
        create_content["additional_creators"] = extra_creators
    if old_create_content.get("m.federate", True) is False:
        create_content["m.federate"] = False
    if "type" in old_create_content:
        create_content["type"] = copy.deepcopy(old_create_content["type"])
    new_creators = {user_id, *extra_creators} if new_rules.explicit_creators else set()

    # Step 3: the transferred state.
    copied: list[PlannedEvent] = []
    for event_type in _UPGRADE_COPIED_TYPES:
        event = old_state.get((event_type, ""))
        if isinstance(event, dict) and isinstance(event.get("content"), dict):
            copied.append(PlannedEvent(type=event_type, state_key="", content=copy.deepcopy(event["content"])))
    if old_create_content.get("type") == "m.space":
        children = sorted(
            (key[1], _content_of(ev)) for key, ev in old_state.items() if key[0] == "m.space.child" and _content_of(ev)
        )
        copied.extend(
            PlannedEvent(type="m.space.child", state_key=sk, content=copy.deepcopy(c)) for sk, c in children
        )
    bans: list[PlannedEvent] = []
    for (event_type, target), event in sorted(old_state.items(), key=lambda item: item[0]):
        content = _content_of(event)
        if event_type != _MEMBER or content.get("membership") != "ban" or target in new_creators:
            continue
        if not is_valid_user_id(target):
            continue
        ban: dict[str, Any] = {"membership": "ban"}
        if isinstance(content.get("reason"), str):
            ban["reason"] = content["reason"]
        bans.append(PlannedEvent(type=_MEMBER, state_key=target, content=ban))

    # The new room's power levels (module docstring).
    pl_events: list[PlannedEvent] = []
    restore: PlannedEvent | None = None
    if old_pl is not None:
        levels = _normalised_power_levels(_content_of(old_pl), old_rules)
        if new_creators and isinstance(levels.get("users"), dict):
            levels["users"] = {u: v for u, v in levels["users"].items() if u not in new_creators}
        if user_id not in new_creators:
            needed = _required_level(levels, _PL, new_rules)
            for event in copied:
                needed = max(needed, _required_level(levels, event.type, new_rules))
            if bans:
                needed = max(needed, _named_level(levels, "ban", new_rules))
                needed = max(needed, *(_user_level(levels, b.state_key or "", new_rules) + 1 for b in bans))
            current = _user_level(levels, user_id, new_rules)
            was_infinite = math.isinf(user_old_level)
            if current < needed or was_infinite:
                raised = copy.deepcopy(levels)
                users = raised.setdefault("users", {})
                if was_infinite:
                    # An old explicit creator keeps enough power (module docstring).
                    users[user_id] = max(100, needed, current, *_all_levels(levels))
                    levels = raised
                else:
                    users[user_id] = needed
                    pl_events.append(PlannedEvent(type=_PL, state_key="", content=raised))
                    restore = PlannedEvent(type=_PL, state_key="", content=levels)
        if not pl_events:
            pl_events.append(PlannedEvent(type=_PL, state_key="", content=levels))

    join = PlannedEvent(type=_MEMBER, state_key=user_id, content=_profile_join_content(profile))
    events = (join, *pl_events, *bans, *copied, *((restore,) if restore is not None else ()))
    try:
        for event in events:
            _check_numbers(event.content, new_version, f"{event.type} copied from the old room")
        _check_numbers(create_content, new_version, "m.room.create")
        _dry_run(new_rules, user_id, create_content, events, (), {})
    except (AuthError, PlanError) as e:
        raise PlanError("M_UNKNOWN", f"the old room's state cannot be replicated in the new room: {e}") from None

    canonical_alias = old_state.get(("m.room.canonical_alias", ""))
    return UpgradePlan(
        old_version=old_version,
        new_version=new_version,
        create_content=create_content,
        events=events,
        old_room_power_levels=_restricted_old_power_levels(old_pl, create, user_id, old_rules),
        canonical_alias_content=copy.deepcopy(_content_of(canonical_alias)) if canonical_alias is not None else None,
    )
