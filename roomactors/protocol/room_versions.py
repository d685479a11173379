"""Room-version rules: the one table that says how each room version behaves.

Theory of operation
-------------------
Every difference between room versions 1–12 that the spec lists (spec.matrix.org,
"Room Versions" and each ``/rooms/vN`` page) is a field of :class:`RoomVersionRules`.
Version 1 is written out in full; every later version is ``replace(previous, ...)``
naming only what that version changed, so the table reads like the spec's own
"changes since the previous version" sections. Code elsewhere asks the rules
(``rules.knock_allowed``), never compares version numbers.

Invariants: the table is immutable; unknown versions are not guessed at —
:func:`get_rules` raises :class:`UnsupportedRoomVersion`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Mapping

from .errors import UnsupportedRoomVersion

__all__ = [
    "EventIdFormat",
    "RoomIdFormat",
    "StateResAlgorithm",
    "RoomVersionRules",
    "KNOWN_ROOM_VERSIONS",
    "DEFAULT_ROOM_VERSION",
    "get_rules",
]


class EventIdFormat(Enum):
    #: v1/v2 ("Event IDs", rooms/v1): ``$opaque:domain`` chosen by the origin server,
    #: carried in the PDU's ``event_id`` field.
    SERVER_ASSIGNED = "v1"
    #: v3 (rooms/v3 "Event IDs"): ``$`` + reference hash, standard unpadded base64.
    REFERENCE_HASH_BASE64 = "v3"
    #: v4+ (fragments/v4-event-ids): ``$`` + reference hash, URL-safe unpadded base64.
    REFERENCE_HASH_URLSAFE = "v4"


class RoomIdFormat(Enum):
    #: v1–v11 (appendices "Room IDs"): ``!opaque:server_name``.
    SERVER_ASSIGNED = "server"
    #: v12 (rooms/v12 "Event format"): ``!`` + the create event's reference hash,
    #: URL-safe unpadded base64, no domain.
    CREATE_EVENT_HASH = "create_hash"


class StateResAlgorithm(Enum):
    V1 = "v1"  # rooms/v1 "State resolution"
    V2 = "v2"  # fragments/v2-state-res
    V2_1 = "v2.1"  # rooms/v12 "State resolution": empty start + conflicted state subgraph


def _frozen_map(d: Mapping[str, frozenset[str] | None]) -> Mapping[str, frozenset[str] | None]:
    return MappingProxyType(dict(d))


#: Redaction: top-level keys that survive (fragments/v1-redactions).
_V1_REDACTION_KEYS = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
        "origin_server_ts", "membership",
    }
)
#: fragments/v11-redactions: ``origin``, ``membership`` and ``prev_state`` are no longer kept.
_V11_REDACTION_KEYS = _V1_REDACTION_KEYS - {"prev_state", "origin", "membership"}

_PL_KEYS = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

#: Redaction: content keys kept per event type; ``None`` means "all keys".
_V1_REDACTION_CONTENT = _frozen_map(
    {
        "m.room.member": frozenset({"membership"}),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset({"join_rule"}),
        "m.room.power_levels": _PL_KEYS,
        "m.room.aliases": frozenset({"aliases"}),
        "m.room.history_visibility": frozenset({"history_visibility"}),
    }
)
#: fragments/v6-redactions: ``m.room.aliases`` loses its special case.
_V6_REDACTION_CONTENT = _frozen_map(
    {k: v for k, v in _V1_REDACTION_CONTENT.items() if k != "m.room.aliases"}
)
#: rooms/v8 "Redactions": join_rules keeps ``allow`` (restricted joins).
_V8_REDACTION_CONTENT = _frozen_map(
    {**_V6_REDACTION_CONTENT, "m.room.join_rules": frozenset({"join_rule", "allow"})}
)
#: fragments/v9-redactions: member also keeps ``join_authorised_via_users_server``
#: (the case v8 missed).
_V9_REDACTION_CONTENT = _frozen_map(
    {
        **_V8_REDACTION_CONTENT,
        "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    }
)
#: fragments/v11-redactions: create keeps all keys, power_levels keeps ``invite``,
#: redaction keeps ``redacts``; member additionally keeps ``third_party_invite.signed``
#: (see :attr:`RoomVersionRules.redaction_keeps_third_party_invite_signed`).
_V11_REDACTION_CONTENT = _frozen_map(
    {
        **_V9_REDACTION_CONTENT,
        "m.room.create": None,
        "m.room.power_levels": _PL_KEYS | {"invite"},
        "m.room.redaction": frozenset({"redacts"}),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomVersionRules:
    """Everything that differs between room versions, as data."""

    version: str
    #: Stable per the spec's room-version table (all of 1–12 are).
    stable: bool = True

    # --- Event format and identifiers ---------------------------------------------
    event_id_format: EventIdFormat
    room_id_format: RoomIdFormat = RoomIdFormat.SERVER_ASSIGNED
    #: v1/v2: ``prev_events``/``auth_events`` are ``[event_id, {hashes}]`` pairs (pdu_v1);
    #: v3+: plain event-ID lists (pdu_v3).
    event_refs_are_pairs: bool
    #: v1/v2 PDUs carry ``event_id``; v3+ must not (it is derived).
    pdu_has_event_id: bool
    #: v12: the create event carries no ``room_id`` (rooms/v12 auth rule 1.2).
    create_event_has_room_id: bool = True

    # --- JSON --------------------------------------------------------------------
    #: v6+ (fragments/v6-canonical-json): integers only, in [-(2**53)+1, 2**53-1].
    strict_canonical_json: bool = False

    # --- Signatures --------------------------------------------------------------
    #: v1/v2 (fragments/v3-auth-rules note): events also need a signature from the
    #: domain of ``event_id``.
    require_event_id_domain_signature: bool
    #: v5+ (fragments/v5-signing-requirements): ``valid_until_ts`` >= ``origin_server_ts``.
    enforce_key_validity: bool = False

    # --- Redaction ---------------------------------------------------------------
    redaction_keys: frozenset[str]
    redaction_content_keys: Mapping[str, frozenset[str] | None]
    #: v11: ``m.room.member`` keeps ``content.third_party_invite.signed``.
    redaction_keeps_third_party_invite_signed: bool = False
    #: v11: ``redacts`` lives in ``content`` of ``m.room.redaction`` (rooms/v11).
    redacts_in_content: bool = False

    # --- Authorization rules -------------------------------------------------------
    #: v1/v2 auth rule 11: redactions need the redact level or the same event-ID domain.
    #: v3+ moved this out of auth into "Handling redactions".
    redaction_auth_rule: bool
    #: v1–v5 auth rule 4 for ``m.room.aliases`` (removed in v6).
    special_case_aliases_auth: bool = True
    #: v6+: ``notifications`` in power levels are checked by rule 10 (rooms/v6).
    limit_notifications_power_levels: bool = False
    #: v7+: ``knock`` membership and join rule.
    knock_allowed: bool = False
    #: v8+: ``restricted`` join rule with ``join_authorised_via_users_server``.
    restricted_join_allowed: bool = False
    #: v10+: ``knock_restricted`` join rule.
    knock_restricted_join_allowed: bool = False
    #: v10+: power-level values must be JSON integers (no stringy/floaty values).
    integer_power_levels: bool = False
    #: v1–v10: the create event's ``content.creator`` names the creator and is required;
    #: v11+: the creator is the create event's ``sender``.
    create_event_has_creator: bool = True
    #: v1–v11 rule 1.2: the create event's ``room_id`` domain must match its sender's.
    create_room_id_domain_check: bool = True
    #: v12: creators are the create sender plus ``additional_creators``, with infinite power.
    explicit_creators: bool = False
    #: v12: the create event is never listed in ``auth_events``; ``room_id`` implies it.
    create_event_in_auth_events: bool = True

    # --- State resolution ----------------------------------------------------------
    state_res: StateResAlgorithm


_V1 = RoomVersionRules(
    version="1",
    event_id_format=EventIdFormat.SERVER_ASSIGNED,
    event_refs_are_pairs=True,
    pdu_has_event_id=True,
    require_event_id_domain_signature=True,
    redaction_auth_rule=True,
    redaction_keys=_V1_REDACTION_KEYS,
    redaction_content_keys=_V1_REDACTION_CONTENT,
    state_res=StateResAlgorithm.V1,
)
# rooms/v2: state resolution v2.
_V2 = replace(_V1, version="2", state_res=StateResAlgorithm.V2)
# rooms/v3: reference-hash event IDs, plain event-ID lists, redaction rule leaves auth.
_V3 = replace(
    _V2,
    version="3",
    event_id_format=EventIdFormat.REFERENCE_HASH_BASE64,
    event_refs_are_pairs=False,
    pdu_has_event_id=False,
    require_event_id_domain_signature=False,
    redaction_auth_rule=False,
)
# rooms/v4: URL-safe event IDs.
_V4 = replace(_V3, version="4", event_id_format=EventIdFormat.REFERENCE_HASH_URLSAFE)
# rooms/v5: enforce signing-key validity periods.
_V5 = replace(_V4, version="5", enforce_key_validity=True)
# rooms/v6: strict canonical JSON, aliases rule removed, notifications checked,
# aliases no longer special-cased by redaction.
_V6 = replace(
    _V5,
    version="6",
    strict_canonical_json=True,
    special_case_aliases_auth=False,
    limit_notifications_power_levels=True,
    redaction_content_keys=_V6_REDACTION_CONTENT,
)
# rooms/v7: knocking.
_V7 = replace(_V6, version="7", knock_allowed=True)
# rooms/v8: restricted joins; redaction keeps join_rules ``allow``.
_V8 = replace(_V7, version="8", restricted_join_allowed=True, redaction_content_keys=_V8_REDACTION_CONTENT)
# rooms/v9: redaction also keeps member ``join_authorised_via_users_server``.
_V9 = replace(_V8, version="9", redaction_content_keys=_V9_REDACTION_CONTENT)
# rooms/v10: knock_restricted, integer-only power levels.
_V10 = replace(_V9, version="10", knock_restricted_join_allowed=True, integer_power_levels=True)
# rooms/v11: creator removed from create content, new redaction algorithm, redacts in content.
_V11 = replace(
    _V10,
    version="11",
    redaction_keys=_V11_REDACTION_KEYS,
    redaction_content_keys=_V11_REDACTION_CONTENT,
    redaction_keeps_third_party_invite_signed=True,
    redacts_in_content=True,
    create_event_has_creator=False,
)
# rooms/v12: hashed room IDs, explicit creators with infinite power, state res v2.1.
_V12 = replace(
    _V11,
    version="12",
    room_id_format=RoomIdFormat.CREATE_EVENT_HASH,
    create_event_has_room_id=False,
    create_room_id_domain_check=False,
    explicit_creators=True,
    create_event_in_auth_events=False,
    state_res=StateResAlgorithm.V2_1,
)

KNOWN_ROOM_VERSIONS: Mapping[str, RoomVersionRules] = MappingProxyType(
    {r.version: r for r in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)}
)

#: rooms/_index: "servers SHOULD default to" version 12.
DEFAULT_ROOM_VERSION = "12"


def get_rules(room_version: str) -> RoomVersionRules:
    """The rules for ``room_version``; raises :class:`UnsupportedRoomVersion` if unknown."""
    try:
        return KNOWN_ROOM_VERSIONS[room_version]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(f"unsupported room version {room_version!r}") from None
