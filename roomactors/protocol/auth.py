"""Authorization rules for room versions 1–12 (spec "Room Versions" → each ``rooms/vN``
"Authorization rules"; server-server API "Auth events selection", "Checks performed on
receipt of a PDU", "Definitions").

Theory of operation
-------------------
The spec gives each room version one numbered list of rules, walked top to bottom;
the first rule that says *allow* or *reject* decides. This module walks the same
list once, for every version, and asks :class:`RoomVersionRules` flags (never the
version number) which rules exist:

* ``create_event_has_creator`` — v1–v10 rule 1.4 (``content.creator`` required); the
  creator is ``content.creator`` there and the create ``sender`` from v11;
* ``create_room_id_domain_check`` / ``create_event_has_room_id`` — rule 1.2 (v1–v11:
  room_id domain is the sender's; v12: no room_id at all);
* ``explicit_creators`` — v12 rule 1.4 (``additional_creators``), infinite creator
  power, rule 10.4 (creators never listed in PL ``users``);
* ``room_id_format`` (``CREATE_EVENT_HASH``) — v12 rule 2: ``room_id`` is the create's ID;
* ``create_event_in_auth_events`` — create selected, and required (v1–v11 rule 2.4);
* ``special_case_aliases_auth`` — v1–v5 rule 4 (``m.room.aliases``);
* ``restricted_join_allowed`` — v8+ ``join_authorised_via_users_server`` and the
  ``restricted`` join rule; ``knock_allowed`` (v7+) and ``knock_restricted_join_allowed``
  (v10+) — knocking;
* ``integer_power_levels`` — v10+ PL rules 1–2 and no stringy values;
  ``strict_canonical_json`` — v6+: no floaty power levels (floats are not valid
  numbers there at all); ``limit_notifications_power_levels`` — v6+ ``notifications``;
* ``redaction_auth_rule`` — v1/v2 rule 11 (redact level or same server).

Because rules appear and disappear, the *numbers* differ per version (the member
rule is 5 in v1–v5, 4 in v6–v11, 5 in v12). :data:`_NUMBERS` derives every
version's numbering from the same flags, so each :class:`AuthError` names the
rule as the spec for *that* version numbers it, e.g. ``rule="auth 4.3.5.2"`` in
v9. Numbers are the rendered ones: the Markdown source of v12 numbers its rule 3
list "1, 2, 3, 5" and its last PL item "10" twice, which render (and are cited
here) as 3.4 and 10.11.

Two entry points split the spec's rules by what they need:

* :func:`check_auth_events_list` — the parts of the "auth_events" rule (v1–v11
  rule 2, v12 rule 3) that look only at the event and the events it *lists*:
  duplicates, entries outside the selection, a missing create (v1–v11), and
  ``room_id`` mismatches. Whether a listed event was itself rejected (2.3 / 3.3)
  is known only to the caller, which must check it.
* :func:`check_auth` — every rule, against a *state* keyed by
  ``(type, state_key)``: the event's own auth events (receipt step 4), the state
  before it (step 5), the current state (step 6), or the partial state of state
  resolution's iterative auth checks. Only the keys the auth events selection
  names for this event (plus the create event) are consulted, and each of those
  must belong to the event's room. In v12 the create event is never *listed*
  but must still be in the state passed here, under ``("m.room.create", "")``;
  rule 2 matches it through its computed event ID.

Invariants and choices:

* Pure and synchronous; inputs are never mutated. Malformed input (wrong JSON
  types anywhere) is an :class:`AuthError`, never a ``KeyError``/``TypeError``.
* Power-level values: v1–v9 accept integer strings (fragments/v1-stringy-power-levels:
  ASCII whitespace, one optional sign, decimal digits); v1–v5 also accept finite
  floats, truncated toward zero (fragments/v1-floaty-power-levels); v10+ accept JSON
  integers only; booleans never. Values are read leniently from *state* (an
  unparseable one counts as absent, so the default applies). A new PL event must
  pass the rules as written (``users`` always; v10+ every level), and any value it
  adds or changes must parse, since the rules compare it with the sender's level;
  in v1–v9 an unparseable value the rules never look at (e.g. in the room's first
  PL event) is tolerated, as the spec does.
* With no ``m.room.join_rules`` event in the state, or one whose content has no
  ``join_rule`` property, the join rule is taken to be ``invite``. The spec gives no
  default for either; Synapse reads both as ``invite`` (``event_auth``:
  ``content.get("join_rule", JoinRules.INVITE)``), and differing from it on who may
  join would split rooms, so we do the same. A ``join_rule`` that is present but is
  not one of the spec's values — including ``null`` and non-strings — is taken as
  is, as Synapse does: it matches no rule, so joins (even an invited user's) and
  knocks are refused.
* Hashing the create event to learn its ID (v12 rule 2, and the creator's first
  join in v3–v11) would dominate state resolution, so IDs are memoised by object
  identity in a small bounded cache (:func:`_create_event_id`); events are
  treated as immutable. Callers that know the ID may pass ``create_event_id``.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Any, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .b64 import decode_base64
from .canonical import canonical_json
from .errors import AuthError, ProtocolError
from .hashing import compute_event_id_with_rules
from .ids import is_valid_user_id, server_name_of
from .room_versions import KNOWN_ROOM_VERSIONS, RoomIdFormat, RoomVersionRules, get_rules

__all__ = [
    "StateKey",
    "AuthEvents",
    "CREATE_KEY",
    "POWER_LEVELS_KEY",
    "JOIN_RULES_KEY",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events_list",
    "creators",
    "get_power_level",
    "parse_power_level_value",
    "is_power_event",
]

StateKey = tuple[str, str]
#: The state an event is checked against: ``(type, state_key)`` -> event JSON.
AuthEvents = Mapping[StateKey, dict]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

_MEMBER = "m.room.member"
_TPI = "m.room.third_party_invite"
_JAUVS = "join_authorised_via_users_server"

#: Top-level PL properties compared by PL rule "3"/"5"/"6" (s2s "Definitions" defaults).
_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "redact": 50,
    "kick": 50,
    "invite": 0,
}
#: With no PL event at all, the creator(s) have 100 (m.room.power_levels schema).
_CREATOR_DEFAULT_LEVEL = 100

# fragments/v1-stringy-power-levels: optional surrounding whitespace, one optional
# sign, base-10 digits (leading zeroes allowed).
_STRINGY_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*")


# --------------------------------------------------------------------------------------
# Rule numbering, derived from the flags
# --------------------------------------------------------------------------------------


class _Seq:
    """Numbers the items of one (sub)list, skipping those absent in a version."""

    def __init__(self, out: dict[str, str], name: str, prefix: str) -> None:
        self.out, self.name, self.prefix, self.i = out, name, prefix, 0

    def add(self, name: str, present: bool = True) -> _Seq:
        full = f"{self.name}.{name}" if self.name else name
        if not present:
            return _Seq({}, full, "?.")
        self.i += 1
        number = f"{self.prefix}{self.i}"
        self.out[full] = number
        return _Seq(self.out, full, number + ".")


def _build_numbers(r: RoomVersionRules) -> dict[str, str]:
    n: dict[str, str] = {}
    top = _Seq(n, "", "")

    c = top.add("create")
    c.add("prev_events")
    c.add("room_id")  # v1–v11: room_id domain; v12: has no room_id
    c.add("room_version")
    c.add("creator", r.create_event_has_creator)
    c.add("additional_creators", r.explicit_creators)
    c.add("allow")

    top.add("room_id", r.room_id_format is RoomIdFormat.CREATE_EVENT_HASH)

    a = top.add("auth_events")
    a.add("duplicates")
    a.add("selection")
    a.add("rejected")
    a.add("no_create", r.create_event_in_auth_events)
    a.add("room_id")

    top.add("federate")

    al = top.add("aliases", r.special_case_aliases_auth)
    al.add("no_state_key")
    al.add("domain")
    al.add("allow")

    m = top.add("member")
    m.add("shape")
    m.add("jauvs", r.restricted_join_allowed).add("unsigned")
    j = m.add("join")
    j.add("only_create")
    j.add("sender")
    j.add("banned")
    j.add("invite")
    jr = j.add("restricted", r.restricted_join_allowed)
    jr.add("member")
    jr.add("authoriser")
    jr.add("allow")
    j.add("public")
    j.add("reject")
    i = m.add("invite")
    t = i.add("tpi")
    for name in ("banned", "no_signed", "signed_fields", "mxid", "no_event", "sender", "signature", "reject"):
        t.add(name)
    i.add("sender")
    i.add("target")
    i.add("allow")
    i.add("reject")
    lv = m.add("leave")
    for name in ("self", "sender", "banned_target", "allow", "reject"):
        lv.add(name)
    b = m.add("ban")
    for name in ("sender", "allow", "reject"):
        b.add(name)
    k = m.add("knock", r.knock_allowed)
    for name in ("join_rule", "sender", "allow", "reject"):
        k.add(name)
    m.add("unknown")

    top.add("sender_joined")
    top.add("third_party_invite").add("allow")
    top.add("required_power_level")
    top.add("state_key")

    p = top.add("power_levels")
    p.add("integers", r.integer_power_levels)
    p.add("maps", r.integer_power_levels)
    p.add("users")
    p.add("creators", r.explicit_creators)
    p.add("no_previous")
    pp = p.add("props")
    pp.add("current")
    pp.add("new")
    p.add("events_old").add("current")
    p.add("events_new").add("new")
    p.add("users_old").add("current")
    p.add("users_new").add("new")
    p.add("allow")

    rd = top.add("redaction", r.redaction_auth_rule)
    rd.add("level")
    rd.add("domain")
    rd.add("reject")

    top.add("allow")
    return n


#: version -> symbolic rule name -> the spec's number for it in that version.
_NUMBERS: Mapping[str, Mapping[str, str]] = {v: _build_numbers(r) for v, r in KNOWN_ROOM_VERSIONS.items()}

_FORMAT_RULE = "s2s: PDU format"


# --------------------------------------------------------------------------------------
# Small readers (never raise on malformed JSON)
# --------------------------------------------------------------------------------------


def _content(event: object) -> dict:
    if isinstance(event, dict):
        content = event.get("content")
        if isinstance(content, dict):
            return content
    return {}


def _domain(identifier: object) -> str | None:
    if not isinstance(identifier, str):
        return None
    try:
        return server_name_of(identifier)
    except ProtocolError:
        return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_power_level_value(value: object, rules: RoomVersionRules) -> int | None:
    """The integer a power-level value stands for under ``rules``, or ``None`` if it is
    not a valid power level there.

    * Any version: a JSON integer (``bool`` is not one).
    * v1–v9 (not ``integer_power_levels``): a string holding an integer
      (fragments/v1-stringy-power-levels).
    * v1–v5 (not ``strict_canonical_json``): a finite float, truncated toward zero
      (fragments/v1-floaty-power-levels); infinities and NaN are invalid.
    """
    if _is_int(value):
        return int(value)  # type: ignore[arg-type]
    if rules.integer_power_levels:
        return None
    if isinstance(value, str):
        match = _STRINGY_INT.fullmatch(value)
        if match is None:
            return None
        try:
            return int(match.group(1))
        except ValueError:  # more digits than int() will convert
            return None
    if isinstance(value, float) and not rules.strict_canonical_json:
        if not math.isfinite(value):
            return None
        return math.trunc(value)
    return None


def creators(create_event: dict | None, rules: RoomVersionRules) -> frozenset[str]:
    """The room's creators as the rules define them.

    v12 (``explicit_creators``): the create ``sender`` plus valid ``additional_creators``;
    v1–v10: ``content.creator``; v11: the create ``sender``.
    """
    if not isinstance(create_event, dict):
        return frozenset()
    sender = create_event.get("sender")
    content = _content(create_event)
    if rules.explicit_creators:
        out = {sender} if isinstance(sender, str) else set()
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            out.update(u for u in extra if is_valid_user_id(u))
        return frozenset(out)
    if rules.create_event_has_creator:
        creator = content.get("creator")
        return frozenset({creator}) if isinstance(creator, str) else frozenset()
    return frozenset({sender}) if isinstance(sender, str) else frozenset()


def _original_creator(create_event: dict, rules: RoomVersionRules) -> object:
    """Whose join may directly follow the create (join rule 1): v1–v10 ``content.creator``,
    v11+ the create ``sender`` (v12: not the additional creators)."""
    if rules.create_event_has_creator:
        return _content(create_event).get("creator")
    return create_event.get("sender")


def get_power_level(
    user_id: str,
    power_levels_event: dict | None,
    create_event: dict | None,
    rules: RoomVersionRules,
) -> int | float:
    """``user_id``'s power level (``math.inf`` for v12 creators).

    With a PL event: ``users[user_id]`` if valid, else ``users_default`` (default 0).
    Without one: 100 for the creator(s), 0 for everyone else.
    """
    if not isinstance(user_id, str):
        return _named_level(power_levels_event, "users_default", rules)
    if rules.explicit_creators and user_id in creators(create_event, rules):
        return math.inf
    if not isinstance(power_levels_event, dict):
        return _CREATOR_DEFAULT_LEVEL if user_id in creators(create_event, rules) else 0
    content = _content(power_levels_event)
    users = content.get("users")
    if isinstance(users, dict) and user_id in users:
        level = parse_power_level_value(users[user_id], rules)
        if level is not None:
            return level
    return _named_level(power_levels_event, "users_default", rules)


def _named_level(power_levels_event: dict | None, name: str, rules: RoomVersionRules) -> int:
    """``invite``/``kick``/``ban``/``redact``/``*_default`` with the spec's defaults."""
    content = _content(power_levels_event)
    if name in content:
        level = parse_power_level_value(content[name], rules)
        if level is not None:
            return level
    return _LEVEL_DEFAULTS[name]


def _send_level(power_levels_event: dict | None, event_type: str, is_state: bool, rules: RoomVersionRules) -> int:
    """The *required power level* (s2s "Definitions")."""
    events = _content(power_levels_event).get("events")
    if isinstance(events, dict) and event_type in events:
        level = parse_power_level_value(events[event_type], rules)
        if level is not None:
            return level
    return _named_level(power_levels_event, "state_default" if is_state else "events_default", rules)


#: Power events by type, when their state_key is "" (a tuple: ``in`` must not hash a
#: malformed, unhashable ``type``).
_POWER_EVENT_TYPES = ("m.room.power_levels", "m.room.join_rules", "m.room.create")


def is_power_event(event: dict) -> bool:
    """A *power event* for state resolution v2/v2.1, as Synapse and ruma define it: a
    state event whose ``(type, state_key)`` is ``("m.room.power_levels", "")``,
    ``("m.room.join_rules", "")`` or ``("m.room.create", "")``, or an ``m.room.member``
    event with ``membership`` ``leave`` or ``ban`` whose ``sender`` is not its
    ``state_key``.

    rooms/fragments/v2-state-res "Power events" names "a state event with type
    ``m.room.power_levels`` or ``m.room.join_rules``" and the member case, without the
    create event or the empty ``state_key``. The deployed implementations
    (Synapse ``_is_power_event``, ruma ``is_power_event``) agree on the reading above,
    and it decides which events step 1 sorts by power rather than by mainline: a
    server that differs from them resolves some rooms differently and splits them.
    So we follow them (see ``state_res``'s module docstring).
    """
    if not isinstance(event, dict) or "state_key" not in event:
        return False
    event_type = event.get("type")
    if event_type in _POWER_EVENT_TYPES:
        return event.get("state_key") == ""
    if event_type == _MEMBER:
        return _content(event).get("membership") in ("leave", "ban") and event.get("sender") != event.get("state_key")
    return False


# --------------------------------------------------------------------------------------
# Auth events selection (s2s "Auth events selection")
# --------------------------------------------------------------------------------------


def _auth_types(event: dict, rules: RoomVersionRules) -> set[StateKey]:
    if not isinstance(event, dict) or event.get("type") == "m.room.create":
        return set()  # "The auth_events for the m.room.create event in a room is empty"
    types: set[StateKey] = {POWER_LEVELS_KEY}
    if rules.create_event_in_auth_events:
        types.add(CREATE_KEY)
    sender = event.get("sender")
    if isinstance(sender, str):
        types.add((_MEMBER, sender))
    if event.get("type") != _MEMBER:
        return types
    state_key = event.get("state_key")
    if isinstance(state_key, str):
        types.add((_MEMBER, state_key))
    content = _content(event)
    membership = content.get("membership")
    if membership in ("join", "invite", "knock"):
        types.add(JOIN_RULES_KEY)
    if membership == "invite" and "third_party_invite" in content:
        tpi = content["third_party_invite"]
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        token = signed.get("token") if isinstance(signed, dict) else None
        if isinstance(token, str):
            types.add((_TPI, token))
    if membership == "join" and rules.restricted_join_allowed:
        via = content.get(_JAUVS)
        if isinstance(via, str):
            types.add((_MEMBER, via))
    return types


def auth_types_for_event(event: dict, room_version: str) -> set[tuple[str, str]]:
    """The ``(type, state_key)`` pairs the auth events selection picks for ``event``.

    Empty for the create event. Otherwise the power levels event, the sender's member
    event and — only where ``create_event_in_auth_events`` (never v12) — the create
    event; for ``m.room.member`` also the target's member event, the join rules for
    ``join``/``invite``/``knock``, the third-party invite named by
    ``content.third_party_invite.signed.token`` for a third-party invite, and (v8+) the
    member event of ``content.join_authorised_via_users_server`` for a join. Malformed
    optional parts are skipped, never raised on.
    """
    return _auth_types(event, get_rules(room_version))


# --------------------------------------------------------------------------------------
# Create-event IDs (memoised)
# --------------------------------------------------------------------------------------

_CREATE_ID_CACHE_MAX = 64
#: id(create event) -> (the event itself, room version, event ID). Keeping the event
#: in the entry pins its ``id()``; an entry is used only if it is the *same object*.
#: Invalidation: none needed while events are not mutated in place (they never are:
#: the kernel treats event dicts as immutable); the oldest entry is evicted when full.
_create_id_cache: dict[int, tuple[dict, str, str]] = {}
_create_id_lock = threading.Lock()


def _create_event_id(create_event: dict, rules: RoomVersionRules) -> str:
    key = id(create_event)
    with _create_id_lock:
        hit = _create_id_cache.get(key)
    if hit is not None and hit[0] is create_event and hit[1] == rules.version:
        return hit[2]
    event_id = compute_event_id_with_rules(create_event, rules)
    with _create_id_lock:
        if key not in _create_id_cache and len(_create_id_cache) >= _CREATE_ID_CACHE_MAX:
            _create_id_cache.pop(next(iter(_create_id_cache)))
        _create_id_cache[key] = (create_event, rules.version, event_id)
    return event_id


# --------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------


class _Check:
    """One walk of the rules for one event against one state."""

    __slots__ = (
        "event", "state", "rules", "numbers", "create_event_id",
        "type", "sender", "content", "state_key", "is_state", "room_id", "create", "power_levels",
    )

    def __init__(self, event: dict, state: AuthEvents, rules: RoomVersionRules, create_event_id: str | None) -> None:
        self.event = event
        self.state = state
        self.rules = rules
        self.numbers = _NUMBERS[rules.version]
        self.create_event_id = create_event_id
        self.type: str = ""
        self.sender: str = ""
        self.content: dict = {}
        self.state_key: str | None = None
        self.is_state = False
        self.room_id: object = None
        self.create: dict = {}
        self.power_levels: dict | None = None

    # --- helpers ---------------------------------------------------------------------

    def reject(self, name: str, message: str) -> AuthError:
        return AuthError(message, rule=f"auth {self.numbers[name]}")

    def membership(self, user_id: object) -> str | None:
        if not isinstance(user_id, str):
            return None
        membership = _content(self.state.get((_MEMBER, user_id))).get("membership")
        return membership if isinstance(membership, str) else None

    def level(self, user_id: str) -> int | float:
        return get_power_level(user_id, self.power_levels, self.create, self.rules)

    def named_level(self, name: str) -> int:
        return _named_level(self.power_levels, name, self.rules)

    def join_rule(self) -> object:
        join_rules = self.state.get(JOIN_RULES_KEY)
        if join_rules is None:
            return "invite"  # no m.room.join_rules event: invite-only (see module docstring)
        # No join_rule property: invite-only too. Any other value, even a non-string,
        # is taken as is and matches no rule (see module docstring).
        return _content(join_rules).get("join_rule", "invite")

    def the_create_event_id(self) -> str | None:
        if self.create_event_id is not None:
            return self.create_event_id
        if self.rules.room_id_format is RoomIdFormat.CREATE_EVENT_HASH and isinstance(self.room_id, str):
            return "$" + self.room_id[1:]  # v12 rule 2 has already tied room_id to the create
        try:
            return _create_event_id(self.create, self.rules)
        except ProtocolError:
            return None

    def prev_event_ids(self) -> list[object]:
        prev = self.event.get("prev_events", [])
        if not self.rules.event_refs_are_pairs:
            return list(prev)
        # v1/v2: [[event_id, {"sha256": ...}], ...]
        return [ref[0] if isinstance(ref, list) and ref else None for ref in prev]

    # --- the walk --------------------------------------------------------------------

    def run(self) -> None:
        self.check_format()
        if self.type == "m.room.create":
            return self.rule_create()
        if self.rules.room_id_format is RoomIdFormat.CREATE_EVENT_HASH:
            self.rule_room_id()
        self.rule_auth_events()
        self.rule_federate()
        if self.rules.special_case_aliases_auth and self.type == "m.room.aliases":
            return self.rule_aliases()
        if self.type == _MEMBER:
            return self.rule_member()
        # The sender must be joined.
        if self.membership(self.sender) != "join":
            # spec: v1–v5 6, v6–v11 5, v12 6
            raise self.reject("sender_joined", f"sender {self.sender} is not joined to the room")
        sender_level = self.level(self.sender)
        if self.type == _TPI:
            # m.room.third_party_invite: allow iff the sender has the invite level.
            if sender_level >= self.named_level("invite"):
                return None  # spec: v1–v5 7.1, v6–v11 6.1, v12 7.1
            # spec: v1–v5 7.1, v6–v11 6.1, v12 7.1
            raise self.reject("third_party_invite.allow", "sender's power level is below the invite level")
        # The event type's required power level.
        required = _send_level(self.power_levels, self.type, self.is_state, self.rules)
        if required > sender_level:
            # spec: v1–v5 8, v6–v11 7, v12 8
            raise self.reject(
                "required_power_level",
                f"sending {self.type} needs power level {required}; sender has {sender_level}",
            )
        # "@"-prefixed state keys belong to their user.
        state_key = self.state_key
        if state_key is not None and state_key.startswith("@") and state_key != self.sender:
            # spec: v1–v5 9, v6–v11 8, v12 9
            raise self.reject("state_key", "state_key starting with @ does not match the sender")
        if self.type == "m.room.power_levels":
            return self.rule_power_levels(sender_level)
        if self.rules.redaction_auth_rule and self.type == "m.room.redaction":
            return self.rule_redaction(sender_level)
        return None  # spec: v1–v2 12, v3–v5 11, v6–v11 10, v12 11 — allow

    def check_format(self) -> None:
        """Fields every rule relies on; without them no rule can be evaluated."""
        event = self.event
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise AuthError("event has no string type", rule=_FORMAT_RULE)
        sender = event.get("sender")
        if not is_valid_user_id(sender):
            raise AuthError(f"sender {sender!r} is not a valid user ID", rule=_FORMAT_RULE)
        content = event.get("content")
        if not isinstance(content, dict):
            raise AuthError("event content is not a JSON object", rule=_FORMAT_RULE)
        if "state_key" in event and not isinstance(event["state_key"], str):
            raise AuthError("state_key is not a string", rule=_FORMAT_RULE)
        prev = event.get("prev_events", [])
        if not isinstance(prev, list):
            raise AuthError("prev_events is not a list", rule=_FORMAT_RULE)
        self.type = event_type
        self.sender = sender  # type: ignore[assignment]
        self.content = content
        self.is_state = "state_key" in event
        self.state_key = event.get("state_key")
        self.room_id = event.get("room_id")
        if event_type != "m.room.create" and not isinstance(self.room_id, str):
            raise AuthError("event has no string room_id", rule=_FORMAT_RULE)
        if not isinstance(self.state, Mapping):
            raise AuthError("auth events are not a mapping", rule=_FORMAT_RULE)

    def rule_create(self) -> None:
        event, content, rules = self.event, self.content, self.rules
        # spec: v1–v12 1.1 — any prev_events: reject.
        if event.get("prev_events"):
            raise self.reject("create.prev_events", "the create event has prev_events")
        if rules.create_room_id_domain_check:
            # spec: v1–v11 1.2 — the room_id's domain must match the sender's.
            room_domain = _domain(event.get("room_id"))
            if room_domain is None or room_domain != _domain(self.sender):
                raise self.reject("create.room_id", "the create event's room_id domain does not match its sender's")
        if not rules.create_event_has_room_id and "room_id" in event:
            # spec: v12 1.2 — the room ID is derived from the create event, which has none.
            raise self.reject("create.room_id", "the create event must not have a room_id")
        # spec: v1–v12 1.3 — content.room_version present and not recognised: reject.
        if "room_version" in content:
            version = content["room_version"]
            if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
                raise self.reject("create.room_version", f"unrecognised room_version {version!r}")
        # spec: v1–v10 1.4 — content must have a creator.
        if rules.create_event_has_creator and "creator" not in content:
            raise self.reject("create.creator", "the create event has no content.creator")
        if rules.explicit_creators and "additional_creators" in content:
            # spec: v12 1.4 — an array of strings each passing the sender's user-ID validation.
            extra = content["additional_creators"]
            if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
                raise self.reject("create.additional_creators", "additional_creators is not an array of valid user IDs")
        return None  # spec: v1–v10 1.5, v11 1.4, v12 1.5 — allow

    def rule_room_id(self) -> None:
        # v12 rule 2: room_id is the create event's ID with "!" for "$". That the create
        # event was accepted (not rejected) is the caller's knowledge; it passes only
        # accepted events as state.
        create = self.state.get(CREATE_KEY)
        if not isinstance(create, dict) or create.get("type") != "m.room.create":
            # spec: v12 2
            raise self.reject("room_id", "no m.room.create event in the state to check room_id against")
        event_id = self.create_event_id
        if event_id is None:
            try:
                event_id = _create_event_id(create, self.rules)
            except ProtocolError as e:
                # spec: v12 2
                raise self.reject("room_id", f"cannot compute the create event's ID: {e}") from None
        if self.room_id != "!" + event_id[1:]:
            # spec: v12 2
            raise self.reject("room_id", f"room_id {self.room_id!r} is not the ID of the room's create event")

    def rule_auth_events(self) -> None:
        # Duplicates (2.1/3.1) cannot occur in a mapping; selection (2.2/3.2) and
        # rejected entries (2.3/3.3) concern the *listed* events: see
        # check_auth_events_list. Here: the state entries the rules will read must be
        # what their key says and belong to this room.
        rules = self.rules
        keys = _auth_types(self.event, rules)
        keys.add(CREATE_KEY)
        for key in keys:
            ev = self.state.get(key)
            if ev is None:
                continue
            if not isinstance(ev, dict) or ev.get("type") != key[0] or ev.get("state_key") != key[1]:
                # spec: v1–v11 2.2, v12 3.2
                raise self.reject("auth_events.selection", f"auth event given for {key} is not a {key} state event")
            if key == CREATE_KEY and not rules.create_event_has_room_id:
                continue  # v12: the create has no room_id; rule 2 matched it by event ID
            if ev.get("room_id") != self.room_id:
                # spec: v1–v11 2.5, v12 3.4 (source text: 3.5) — auth event from another room.
                raise self.reject("auth_events.room_id", f"auth event {key} is from a different room")
        create = self.state.get(CREATE_KEY)
        if create is None:
            # spec: v1–v11 2.4 — no create among the auth events (v12: required by rule 2).
            raise self.reject("auth_events.no_create", "no m.room.create event among the auth events")
        self.create = create
        power_levels = self.state.get(POWER_LEVELS_KEY)
        self.power_levels = power_levels if isinstance(power_levels, dict) else None

    def rule_federate(self) -> None:
        # "If content of the create event has m.federate set to false, and the sender
        # domain of the event does not match the sender domain of the create event, reject."
        if _content(self.create).get("m.federate") is False:
            if _domain(self.sender) != _domain(self.create.get("sender")):
                # spec: v1–v11 3, v12 4
                raise self.reject("federate", "the room is not federated and the sender is from another server")

    def rule_aliases(self) -> None:
        # spec: v1–v5 rule 4 (m.room.aliases).
        if not self.is_state:
            # spec: v1–v5 4.1
            raise self.reject("aliases.no_state_key", "m.room.aliases event has no state_key")
        if self.state_key != _domain(self.sender):
            # spec: v1–v5 4.2
            raise self.reject("aliases.domain", "m.room.aliases state_key is not the sender's domain")
        return None  # spec: v1–v5 4.3 — allow

    # --- m.room.member -----------------------------------------------------------------

    def rule_member(self) -> None:
        content, rules = self.content, self.rules
        # member.shape: "no state_key property, or no membership property in content".
        if not self.is_state or "membership" not in content:
            # spec: v1–v5 5.1, v6–v11 4.1, v12 5.1
            raise self.reject("member.shape", "member event has no state_key or no content.membership")
        if rules.restricted_join_allowed and _JAUVS in content:
            # spec: v8–v11 4.2, v12 5.2 — content has join_authorised_via_users_server:
            # "not validly signed by the homeserver of the user ID ... reject". The cryptographic check is
            # signing.verify_event_signatures (required_signers names that server);
            # the auth rules can only insist that a signature from that server is there.
            via = content[_JAUVS]
            server = _domain(via) if is_valid_user_id(via) else None
            signatures = self.event.get("signatures")
            server_sigs = signatures.get(server) if isinstance(signatures, dict) and server is not None else None
            if not isinstance(server_sigs, dict) or not server_sigs:
                # spec: v8–v11 4.2.1, v12 5.2.1
                raise self.reject(
                    "member.jauvs.unsigned",
                    f"join_authorised_via_users_server {via!r}: no signature from that user's homeserver",
                )
        membership = content["membership"]
        if membership == "join":
            return self.rule_join()
        if membership == "invite":
            return self.rule_invite()
        if membership == "leave":
            return self.rule_leave()
        if membership == "ban":
            return self.rule_ban()
        if membership == "knock" and rules.knock_allowed:
            return self.rule_knock()
        # spec: v1–v5 5.6, v6 4.6, v7 4.7, v8–v11 4.8, v12 5.8
        raise self.reject("member.unknown", f"unknown membership {membership!r}")

    def rule_join(self) -> None:
        rules, target = self.rules, self.state_key
        # spec: v1–v5 5.2.1, v6–v7 4.2.1, v8–v11 4.3.1, v12 5.3.1 — the only previous
        # event is the create and state_key is the creator (v1–v10 content.creator;
        # v11+ the create's sender): allow.
        prev_ids = self.prev_event_ids()
        if len(prev_ids) == 1 and target == _original_creator(self.create, rules):
            create_id = self.the_create_event_id()
            if create_id is not None and prev_ids[0] == create_id:
                return None
        if self.sender != target:
            # spec: v1–v5 5.2.2, v6–v7 4.2.2, v8–v11 4.3.2, v12 5.3.2
            raise self.reject("member.join.sender", "join: sender does not match state_key")
        current = self.membership(self.sender)
        if current == "ban":
            # spec: v1–v5 5.2.3, v6–v7 4.2.3, v8–v11 4.3.3, v12 5.3.3
            raise self.reject("member.join.banned", "join: the sender is banned")
        join_rule = self.join_rule()
        # spec: v1–v5 5.2.4, v6–v7 4.2.4, v8–v11 4.3.4, v12 5.3.4 — join rule "invite"
        # (v7+: or "knock"): allow if invited or joined; otherwise no later rule applies.
        invite_like = ("invite", "knock") if rules.knock_allowed else ("invite",)
        if join_rule in invite_like:
            if current in ("invite", "join"):
                return None
            # spec: v1–v5 5.2.6, v6–v7 4.2.6, v8–v11 4.3.7, v12 5.3.7
            raise self.reject("member.join.reject", f"join: the join rule is {join_rule} and the sender is not invited")
        # spec: v8–v11 4.3.5, v12 5.3.5 — "restricted" (v10+: or "knock_restricted").
        restricted_like = ("restricted",) if rules.restricted_join_allowed else ()
        if rules.knock_restricted_join_allowed:
            restricted_like += ("knock_restricted",)
        if join_rule in restricted_like:
            if current in ("join", "invite"):
                return None  # spec: v8–v11 4.3.5.1, v12 5.3.5.1
            # The authorising user must be joined and have the invite level.
            via = self.content.get(_JAUVS)
            if not is_valid_user_id(via):
                # spec: v8–v11 4.3.5.2, v12 5.3.5.2
                raise self.reject(
                    "member.join.restricted.authoriser",
                    "restricted join without a valid join_authorised_via_users_server",
                )
            if self.membership(via) != "join":
                # spec: v8–v11 4.3.5.2, v12 5.3.5.2
                raise self.reject("member.join.restricted.authoriser", f"authorising user {via} is not joined")
            if self.level(via) < self.named_level("invite"):  # type: ignore[arg-type]
                # spec: v8–v11 4.3.5.2, v12 5.3.5.2
                raise self.reject("member.join.restricted.authoriser", f"authorising user {via} cannot invite")
            return None  # spec: v8–v11 4.3.5.3, v12 5.3.5.3
        if join_rule == "public":
            return None  # spec: v1–v5 5.2.5, v6–v7 4.2.5, v8–v11 4.3.6, v12 5.3.6
        # spec: v1–v5 5.2.6, v6–v7 4.2.6, v8–v11 4.3.7, v12 5.3.7
        raise self.reject("member.join.reject", f"join: join rule {join_rule!r} does not allow this join")

    def rule_invite(self) -> None:
        content, target = self.content, self.state_key
        # spec: v1–v5 5.3.1, v6–v7 4.3.1, v8–v11 4.4.1, v12 5.4.1 — third-party invites.
        if "third_party_invite" in content:
            if self.membership(target) == "ban":
                # spec: v1–v5 5.3.1.1, v6–v7 4.3.1.1, v8–v11 4.4.1.1, v12 5.4.1.1
                raise self.reject("member.invite.tpi.banned", "third-party invite: the target is banned")
            tpi = content["third_party_invite"]
            if not isinstance(tpi, dict) or "signed" not in tpi:
                # spec: v1–v5 5.3.1.2, v6–v7 4.3.1.2, v8–v11 4.4.1.2, v12 5.4.1.2
                raise self.reject("member.invite.tpi.no_signed", "third_party_invite has no signed property")
            signed = tpi["signed"]
            if not isinstance(signed, dict) or "mxid" not in signed or "token" not in signed:
                # spec: v1–v5 5.3.1.3, v6–v7 4.3.1.3, v8–v11 4.4.1.3, v12 5.4.1.3
                raise self.reject("member.invite.tpi.signed_fields", "third_party_invite.signed lacks mxid or token")
            if signed["mxid"] != target:
                # spec: v1–v5 5.3.1.4, v6–v7 4.3.1.4, v8–v11 4.4.1.4, v12 5.4.1.4
                raise self.reject("member.invite.tpi.mxid", "third_party_invite.signed.mxid does not match state_key")
            token = signed["token"]
            invite_event = self.state.get((_TPI, token)) if isinstance(token, str) else None
            if not isinstance(invite_event, dict):
                # spec: v1–v5 5.3.1.5, v6–v7 4.3.1.5, v8–v11 4.4.1.5, v12 5.4.1.5
                raise self.reject("member.invite.tpi.no_event", "no m.room.third_party_invite event for the token")
            if self.sender != invite_event.get("sender"):
                # spec: v1–v5 5.3.1.6, v6–v7 4.3.1.6, v8–v11 4.4.1.6, v12 5.4.1.6
                raise self.reject(
                    "member.invite.tpi.sender", "sender does not match the m.room.third_party_invite's sender"
                )
            if _third_party_signature_matches(signed, _content(invite_event)):
                return None  # spec: v1–v5 5.3.1.7, v6–v7 4.3.1.7, v8–v11 4.4.1.7, v12 5.4.1.7
            # spec: v1–v5 5.3.1.8, v6–v7 4.3.1.8, v8–v11 4.4.1.8, v12 5.4.1.8
            raise self.reject("member.invite.tpi.reject", "no signature in signed matches the invite's public keys")
        if self.membership(self.sender) != "join":
            # spec: v1–v5 5.3.2, v6–v7 4.3.2, v8–v11 4.4.2, v12 5.4.2
            raise self.reject("member.invite.sender", "invite: the sender is not joined")
        if self.membership(target) in ("join", "ban"):
            # spec: v1–v5 5.3.3, v6–v7 4.3.3, v8–v11 4.4.3, v12 5.4.3
            raise self.reject("member.invite.target", "invite: the target is joined or banned")
        if self.level(self.sender) >= self.named_level("invite"):
            return None  # spec: v1–v5 5.3.4, v6–v7 4.3.4, v8–v11 4.4.4, v12 5.4.4
        # spec: v1–v5 5.3.5, v6–v7 4.3.5, v8–v11 4.4.5, v12 5.4.5
        raise self.reject("member.invite.reject", "invite: sender's power level is below the invite level")

    def rule_leave(self) -> None:
        target = self.state_key
        if self.sender == target:
            # Own leave: allow iff invited or joined (v7+: or knocking).
            allowed = ("invite", "join", "knock") if self.rules.knock_allowed else ("invite", "join")
            if self.membership(target) in allowed:
                return None
            # spec: v1–v5 5.4.1, v6–v7 4.4.1, v8–v11 4.5.1, v12 5.5.1
            raise self.reject("member.leave.self", "leave: the user is not invited or joined")
        if self.membership(self.sender) != "join":
            # spec: v1–v5 5.4.2, v6–v7 4.4.2, v8–v11 4.5.2, v12 5.5.2
            raise self.reject("member.leave.sender", "kick/unban: the sender is not joined")
        sender_level = self.level(self.sender)
        if self.membership(target) == "ban" and sender_level < self.named_level("ban"):
            # spec: v1–v5 5.4.3, v6–v7 4.4.3, v8–v11 4.5.3, v12 5.5.3
            raise self.reject("member.leave.banned_target", "unban: sender's power level is below the ban level")
        if sender_level >= self.named_level("kick") and self.level(target) < sender_level:  # type: ignore[arg-type]
            return None  # spec: v1–v5 5.4.4, v6–v7 4.4.4, v8–v11 4.5.4, v12 5.5.4
        # spec: v1–v5 5.4.5, v6–v7 4.4.5, v8–v11 4.5.5, v12 5.5.5
        raise self.reject("member.leave.reject", "kick: sender lacks the kick level or does not outrank the target")

    def rule_ban(self) -> None:
        if self.membership(self.sender) != "join":
            # spec: v1–v5 5.5.1, v6–v7 4.5.1, v8–v11 4.6.1, v12 5.6.1
            raise self.reject("member.ban.sender", "ban: the sender is not joined")
        sender_level = self.level(self.sender)
        target_level = self.level(self.state_key)  # type: ignore[arg-type]
        if sender_level >= self.named_level("ban") and target_level < sender_level:
            return None  # spec: v1–v5 5.5.2, v6–v7 4.5.2, v8–v11 4.6.2, v12 5.6.2
        # spec: v1–v5 5.5.3, v6–v7 4.5.3, v8–v11 4.6.3, v12 5.6.3
        raise self.reject("member.ban.reject", "ban: sender lacks the ban level or does not outrank the target")

    def rule_knock(self) -> None:
        allowed = ("knock", "knock_restricted") if self.rules.knock_restricted_join_allowed else ("knock",)
        join_rule = self.join_rule()
        if join_rule not in allowed:
            # spec: v7 4.6.1, v8–v11 4.7.1, v12 5.7.1
            raise self.reject("member.knock.join_rule", f"knock: join rule {join_rule!r} does not allow knocking")
        if self.sender != self.state_key:
            # spec: v7 4.6.2, v8–v11 4.7.2, v12 5.7.2
            raise self.reject("member.knock.sender", "knock: sender does not match state_key")
        if self.membership(self.sender) not in ("ban", "invite", "join"):
            return None  # spec: v7 4.6.3, v8–v11 4.7.3, v12 5.7.3
        # spec: v7 4.6.4, v8–v11 4.7.4, v12 5.7.4
        raise self.reject("member.knock.reject", "knock: the sender is banned, invited or joined")

    # --- m.room.power_levels ---------------------------------------------------------

    def rule_power_levels(self, sender_level: int | float) -> None:
        rules, content = self.rules, self.content
        map_names = ("events", "notifications") if rules.limit_notifications_power_levels else ("events",)
        if rules.integer_power_levels:
            # The named levels must be integers.
            for name in _LEVEL_DEFAULTS:
                if name in content and not _is_int(content[name]):
                    # spec: v10–v11 9.1, v12 10.1
                    raise self.reject("power_levels.integers", f"power levels: {name} is not an integer")
            # events / notifications must be objects of integers.
            for name in ("events", "notifications"):
                if name in content:
                    value = content[name]
                    if not isinstance(value, dict) or not all(_is_int(v) for v in value.values()):
                        # spec: v10–v11 9.2, v12 10.2
                        raise self.reject("power_levels.maps", f"power levels: {name} is not an object of integers")
        # PL "users" rule: an object of valid user IDs -> integers (v1–v9: or integer
        # strings; v1–v5: or floats). An absent users property is read as {} (as
        # Synapse and ruma do).
        users = content.get("users", {})
        if not isinstance(users, dict):
            # spec: v1–v5 10.1, v6–v9 9.1, v10–v11 9.3, v12 10.3
            raise self.reject("power_levels.users", "power levels: users is not an object")
        for user_id, value in users.items():
            if not is_valid_user_id(user_id):
                # spec: v1–v5 10.1, v6–v9 9.1, v10–v11 9.3, v12 10.3
                raise self.reject("power_levels.users", f"power levels: users key {user_id!r} is not a valid user ID")
            if parse_power_level_value(value, rules) is None:
                # spec: v1–v5 10.1, v6–v9 9.1, v10–v11 9.3, v12 10.3
                raise self.reject("power_levels.users", f"power levels: users[{user_id}] is not a valid power level")
        if rules.explicit_creators:
            # Creators cannot appear in users.
            listed = creators(self.create, rules).intersection(users)
            if listed:
                # spec: v12 10.4
                raise self.reject("power_levels.creators", f"power levels list room creator(s) {sorted(listed)}")
        old = self.power_levels
        if old is None:
            return None  # spec: v1–v5 10.2, v6–v9 9.2, v10–v11 9.4, v12 10.5 — no previous PL
        old_content = _content(old)

        def changed(in_old: bool, old_raw: Any, in_new: bool, new_raw: Any) -> bool:
            if in_old != in_new:
                return True
            if not in_old:
                return False
            a, b = parse_power_level_value(old_raw, rules), parse_power_level_value(new_raw, rules)
            if a is not None and b is not None:
                return a != b
            return bool(old_raw != new_raw)

        def new_value(name: str, raw: Any, what: str) -> int:
            value = parse_power_level_value(raw, rules)
            if value is None:
                # The rules compare the new value with the sender's level; a value that
                # is not a power level cannot pass that comparison.
                raise self.reject(name, f"power levels: {what} is not a valid power level")
            return value

        # Top-level levels added, changed or removed.
        for name in _LEVEL_DEFAULTS:
            in_old, in_new = name in old_content, name in content
            if not changed(in_old, old_content.get(name), in_new, content.get(name)):
                continue
            current = parse_power_level_value(old_content[name], rules) if in_old else None
            if current is not None and current > sender_level:
                # spec: v1–v5 10.3.1, v6–v9 9.3.1, v10–v11 9.5.1, v12 10.6.1
                raise self.reject("power_levels.props.current", f"power levels: cannot change {name} from {current}")
            if in_new:
                new = new_value("power_levels.props.new", content[name], name)
                if new > sender_level:
                    # spec: v1–v5 10.3.2, v6–v9 9.3.2, v10–v11 9.5.2, v12 10.6.2
                    raise self.reject("power_levels.props.new", f"power levels: cannot set {name} to {new}")

        # events (v6+: and notifications).
        for map_name in map_names:
            old_map = old_content.get(map_name)
            old_map = old_map if isinstance(old_map, dict) else {}
            new_map = content.get(map_name, {})
            if not isinstance(new_map, dict):
                # spec: v1–v5 10.5.1, v6–v9 9.5.1, v10–v11 9.7.1, v12 10.8.1
                raise self.reject("power_levels.events_new.new", f"power levels: {map_name} is not an object")
            for key, old_raw in old_map.items():
                if changed(True, old_raw, key in new_map, new_map.get(key)):
                    current = parse_power_level_value(old_raw, rules)
                    if current is not None and current > sender_level:
                        # spec: v1–v5 10.4.1, v6–v9 9.4.1, v10–v11 9.6.1, v12 10.7.1
                        raise self.reject(
                            "power_levels.events_old.current",
                            f"power levels: cannot change {map_name}[{key}] from {current}",
                        )
            for key, new_raw in new_map.items():
                if changed(key in old_map, old_map.get(key), True, new_raw):
                    new = new_value("power_levels.events_new.new", new_raw, f"{map_name}[{key}]")
                    if new > sender_level:
                        # spec: v1–v5 10.5.1, v6–v9 9.5.1, v10–v11 9.7.1, v12 10.8.1
                        raise self.reject(
                            "power_levels.events_new.new", f"power levels: cannot set {map_name}[{key}] to {new}"
                        )

        # users: changed or removed (other than the sender's own entry), then added or changed.
        old_users = old_content.get("users")
        old_users = old_users if isinstance(old_users, dict) else {}
        for user_id, old_raw in old_users.items():
            if user_id == self.sender:
                continue
            if changed(True, old_raw, user_id in users, users.get(user_id)):
                current = parse_power_level_value(old_raw, rules)
                if current is not None and current >= sender_level:
                    # spec: v1–v5 10.6.1, v6–v9 9.6.1, v10–v11 9.8.1, v12 10.9.1
                    raise self.reject(
                        "power_levels.users_old.current",
                        f"power levels: cannot change {user_id}'s level from {current}",
                    )
        for user_id, new_raw in users.items():
            if changed(user_id in old_users, old_users.get(user_id), True, new_raw):
                new = new_value("power_levels.users_new.new", new_raw, f"users[{user_id}]")
                if new > sender_level:
                    # spec: v1–v5 10.7.1, v6–v9 9.7.1, v10–v11 9.9.1, v12 10.10.1
                    raise self.reject("power_levels.users_new.new", f"power levels: cannot set {user_id} to {new}")
        return None  # spec: v1–v5 10.8, v6–v9 9.8, v10–v11 9.10, v12 10.11 — allow

    # --- m.room.redaction (v1/v2) ------------------------------------------------------

    def rule_redaction(self, sender_level: int | float) -> None:
        if sender_level >= self.named_level("redact"):
            return None  # spec: v1–v2 11.1
        redacts = self.content.get("redacts") if self.rules.redacts_in_content else self.event.get("redacts")
        redacts_domain = _domain(redacts)
        if redacts_domain is not None and redacts_domain == _domain(self.event.get("event_id")):
            return None  # spec: v1–v2 11.2
        # spec: v1–v2 11.3
        raise self.reject(
            "redaction.reject", "redaction: sender lacks the redact level and the redacted event is from another server"
        )


def _third_party_signature_matches(signed: dict, invite_content: dict) -> bool:
    """Member rule invite.1.7: does any ``ed25519`` signature in ``signed`` verify under any
    public key of the ``m.room.third_party_invite`` (``public_key`` and
    ``public_keys[].public_key``; unpadded base64, standard or URL-safe)? The signature
    covers the canonical JSON of ``signed`` without ``signatures`` and ``unsigned``."""
    encoded: list[object] = [invite_content.get("public_key")]
    public_keys = invite_content.get("public_keys")
    if isinstance(public_keys, list):
        encoded.extend(entry.get("public_key") for entry in public_keys if isinstance(entry, dict))
    verify_keys: list[VerifyKey] = []
    for key in encoded:
        if not isinstance(key, str):
            continue
        try:
            verify_keys.append(VerifyKey(decode_base64(key)))
        except (ValueError, TypeError):  # nacl raises a ValueError subclass for bad lengths
            continue
    signatures = signed.get("signatures")
    if not verify_keys or not isinstance(signatures, dict):
        return False
    try:
        message = canonical_json({k: v for k, v in signed.items() if k not in ("signatures", "unsigned")})
    except ProtocolError:
        return False
    for server_sigs in signatures.values():
        if not isinstance(server_sigs, dict):
            continue
        for key_id, sig_b64 in server_sigs.items():
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            try:
                signature = decode_base64(sig_b64)
            except ValueError:
                continue
            for verify_key in verify_keys:
                try:
                    verify_key.verify(message, signature)
                except (BadSignatureError, ValueError, TypeError):
                    continue
                return True
    return False


def check_auth(
    event: dict,
    auth_events: dict[tuple[str, str], dict],
    room_version: str,
    *,
    create_event_id: str | None = None,
) -> None:
    """Raise :class:`AuthError` unless the authorization rules of ``room_version`` allow
    ``event`` against the state ``auth_events`` (keyed by ``(type, state_key)``).

    ``rule`` on the error is the failing rule's number in that version's list (e.g.
    ``"auth 5.3.2"``), or ``"s2s: PDU format"`` when a field every rule relies on is
    malformed. In v12 ``auth_events`` must hold the room's create event under
    ``("m.room.create", "")`` even though events never list it. ``create_event_id``
    (keyword-only) may supply that create event's ID to skip hashing it.

    Not checked here: whether auth events were themselves rejected (v1–v11 2.3, v12
    3.3: the caller knows), the listed-auth-events parts (:func:`check_auth_events_list`)
    and the cryptographic half of "validly signed" (``signing``).
    """
    rules = get_rules(room_version)
    if not isinstance(event, dict):
        raise AuthError("event is not a JSON object", rule=_FORMAT_RULE)
    _Check(event, auth_events, rules, create_event_id).run()


def check_auth_events_list(event: dict, listed: list[dict], room_version: str) -> None:
    """The state-independent parts of the "auth_events" rule (v1–v11 rule 2, v12 rule 3)
    on the events ``event`` actually lists in its ``auth_events``:

    * 2.1/3.1 — no two entries with the same ``(type, state_key)``;
    * 2.2/3.2 — every entry is one the auth events selection picks (in v12 a listed
      create event is therefore rejected);
    * 2.4 (v1–v11) — the create event is among them;
    * 2.5/3.4 — every entry has the event's ``room_id``.

    Rule 2.3/3.3 ("entries which were themselves rejected") needs rejection status,
    which only the caller has: it must reject the event if any listed event was
    rejected. The create event itself is decided by rule 1, before this rule, so
    nothing is checked for it here.
    """
    rules = get_rules(room_version)
    numbers = _NUMBERS[rules.version]

    def reject(name: str, message: str) -> AuthError:
        return AuthError(message, rule=f"auth {numbers[name]}")

    if not isinstance(event, dict):
        raise AuthError("event is not a JSON object", rule=_FORMAT_RULE)
    if event.get("type") == "m.room.create":
        return None
    if not isinstance(listed, (list, tuple)):
        raise AuthError("auth events are not a list", rule=_FORMAT_RULE)
    seen: list[StateKey] = []
    for ev in listed:
        key = (ev.get("type"), ev.get("state_key")) if isinstance(ev, dict) else None
        if key is None or not isinstance(key[0], str) or not isinstance(key[1], str):
            # spec: v1–v11 2.2, v12 3.2
            raise reject("auth_events.selection", "an auth event is not a state event")
        if key in seen:
            # spec: v1–v11 2.1, v12 3.1
            raise reject("auth_events.duplicates", f"duplicate auth events for {key}")
        seen.append(key)  # type: ignore[arg-type]
    selection = _auth_types(event, rules)
    for key in seen:
        if key not in selection:
            if key == CREATE_KEY and not rules.create_event_in_auth_events:
                # spec: v1–v11 2.2, v12 3.2
                raise reject("auth_events.selection", "the create event must not be listed in auth_events")
            # spec: v1–v11 2.2, v12 3.2
            raise reject("auth_events.selection", f"auth event {key} is not selected for this event")
    if rules.create_event_in_auth_events and CREATE_KEY not in seen:
        # spec: v1–v11 2.4
        raise reject("auth_events.no_create", "no m.room.create event among the auth events")
    room_id = event.get("room_id")
    for ev in listed:
        if ev.get("room_id") != room_id:
            # spec: v1–v11 2.5, v12 3.4
            key = (ev.get("type"), ev.get("state_key"))
            raise reject("auth_events.room_id", f"auth event {key} is from a different room")
    return None
