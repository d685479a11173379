"""PDU parsing and format validation (server-server API "Checks performed on receipt
of a PDU", step 1; the ``pdu_v1``/``v3``/``v4``/``v6``/``v11``/``v12`` schemas; client-server
API "Size limits"; appendices "Identifier Grammar").

Theory of operation
-------------------
:func:`parse_pdu` is step 1 of receiving a PDU: *is it a valid event for this room
version?* If not, the PDU is dropped, so every failure raises
:class:`~roomactors.protocol.errors.InvalidEvent` whose message names the offending
field and whose ``rule`` names the spec section. The checks run in this order, so
the cheapest global bound comes first and the event ID is derived only from a PDU
already known to be well formed::

    room version known? ─► JSON object? ─► canonical JSON encodable, ≤ 65,536 bytes?
        ─► required keys present? ─► every field's type, size and grammar
        ─► v6+: only integers in the canonical range ─► derive event_id ─► Pdu

What the room version changes (all read from
:class:`~roomactors.protocol.room_versions.RoomVersionRules`, never from the version
string):

* v1/v2 (``event_refs_are_pairs``, ``pdu_has_event_id``): the PDU carries its
  ``event_id`` (``$opaque:domain``) and ``prev_events``/``auth_events`` are
  ``[event_id, {"sha256": …}]`` pairs. :class:`Pdu` normalises both to plain tuples
  of event IDs; the pair hashes are kept only in :attr:`Pdu.json`.
* v3+: ``event_id`` is not sent (a stray one is ignored; it is still covered by the
  reference hash) and the reference lists are plain event IDs in the v3 (standard
  base64) or v4+ (URL-safe base64) hash format.
* v6+ (``strict_canonical_json``): any float, or integer outside
  [-(2**53)+1, (2**53)-1], anywhere in the PDU makes it invalid. Before v6 such
  numbers are tolerated, as the appendix asks, but ``depth`` and
  ``origin_server_ts`` must still fit the schema's int64.
* v11+ (``redacts_in_content``): a redaction names its target in
  ``content.redacts`` instead of the top-level ``redacts``.
* v12 (``create_event_has_room_id`` false): the ``m.room.create`` event has no
  ``room_id``; :attr:`Pdu.room_id` is then derived from its event ID (``!`` in
  place of ``$``). Every other event's ``room_id`` must be in that hash format. A
  create event that *does* carry a (well-formed) ``room_id`` is structurally valid
  here and keeps the ``room_id`` it claims; the authorization rules (v12 rule 1.2)
  reject it.

Deliberately *not* checked here, because the spec puts them in later steps:
signatures and content hashes (steps 2 and 3, :mod:`.signing`), and anything about
which events are referenced or who may send what (steps 4–6, auth). Identifier
grammar is the tolerant historical grammar for ``sender`` (appendices "Historical
User IDs"), because events from such users must still be accepted over federation.
The names inside ``signatures`` are not checked: signatures are not covered by the
reference hash, and verification only looks up the servers it requires.

Invariants: :func:`parse_pdu` never mutates its input. A :class:`Pdu` shares
``content`` and ``json`` with the dict it was parsed from; callers treat them as
read-only (copy before changing, as every protocol function does). Equality and
hashing ignore ``content`` and ``json`` and cover the parsed scalar fields
(including ``event_id``), so a :class:`Pdu` can live in sets and dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

from .canonical import canonical_json, check_json_numbers
from .errors import InvalidEvent
from .hashing import compute_event_id_with_rules
from .ids import MAX_ID_BYTES, EventId, RoomId, UserId, is_valid_event_id, is_valid_room_id, is_valid_user_id
from .room_versions import RoomVersionRules, get_rules

__all__ = [
    "Pdu",
    "event_refs",
    "parse_pdu",
    "parse_pdu_with_rules",
    "parse_own_pdu",
    "MAX_PDU_BYTES",
    "MAX_KEY_BYTES",
    "MAX_PREV_EVENTS",
    "MAX_AUTH_EVENTS",
    "MAX_DEPTH",
]

#: Client-server API "Size limits": the complete event, in the federation format and
#: encoded as canonical JSON, MUST NOT be larger than this many bytes.
MAX_PDU_BYTES = 65536
#: Client-server API "Size limits": ``type`` and ``state_key`` MUST NOT exceed 255 bytes
#: (``sender``, ``room_id`` and ``event_id`` share the identifier limit, also 255).
MAX_KEY_BYTES = 255
#: pdu schemas: ``prev_events`` "Must contain less than or equal to 20 events".
MAX_PREV_EVENTS = 20
#: pdu schemas: ``auth_events`` "Must contain less than or equal to 10 events".
MAX_AUTH_EVENTS = 10
#: pdu_v1/v3/v4 ``depth``: at most the maximum value of an int64, 2**63 - 1.
#: v6+ (components/depth_v6) lowers it to the canonical JSON maximum, 2**53 - 1.
MAX_DEPTH = 2**63 - 1

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_CANONICAL_INT_MAX = 2**53 - 1

_RULE_FORMAT = "s2s: Checks performed on receipt of a PDU, step 1 (event format)"
_RULE_SIZE = "c2s: Size limits"
_RULE_USER_ID = "appendices: User Identifiers"
_RULE_ROOM_ID = "appendices: Room IDs"
_RULE_EVENT_ID = "appendices: Event IDs"
_RULE_REFS = "s2s: PDU prev_events/auth_events"
_RULE_REDACTS = "s2s: PDU redacts (rooms v1-v10)"
_RULE_REDACTS_V11 = "rooms v11: redacts in content"

_CREATE = "m.room.create"
_REDACTION = "m.room.redaction"

#: Keys every PDU needs (components/pdu_base.yaml).
_BASE_REQUIRED = ("type", "sender", "origin_server_ts", "content", "depth", "hashes", "signatures")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """A PDU that passed format validation for its room version (see :func:`parse_pdu`).

    ``prev_events`` and ``auth_events`` are plain event-ID tuples in every room
    version. ``state_key`` is ``None`` exactly for non-state events. ``redacts`` is the
    target of an ``m.room.redaction`` event (top-level in v1–v10, ``content.redacts``
    in v11+), ``None`` for every other event or a redaction naming no target.
    """

    event_id: EventId
    room_id: RoomId
    type: str
    state_key: str | None
    sender: UserId
    origin_server_ts: int
    depth: int
    prev_events: tuple[EventId, ...]
    auth_events: tuple[EventId, ...]
    redacts: EventId | None
    room_version: str
    content: dict[str, Any] = field(compare=False, repr=False)
    json: dict[str, Any] = field(compare=False, repr=False)

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def rules(self) -> RoomVersionRules:
        return get_rules(self.room_version)


def parse_pdu(event: dict, room_version: str) -> Pdu:
    """Validate ``event`` as a PDU of ``room_version`` and return the parsed :class:`Pdu`.

    Raises :class:`UnsupportedRoomVersion` for an unknown version and
    :class:`InvalidEvent` (message naming the field, ``rule`` naming the spec section)
    for anything that is not a valid event of that version.
    """
    return parse_pdu_with_rules(event, get_rules(room_version))


def parse_pdu_with_rules(event: dict, rules: RoomVersionRules) -> Pdu:
    """:func:`parse_pdu` for callers that already hold the rules."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"a PDU must be a JSON object, not {_kind(event)}", rule=_RULE_FORMAT)

    # Global bound first: encodable as canonical JSON at all, and not too large.
    size = len(canonical_json(event))
    _check_size(size)

    is_v12_create = event.get("type") == _CREATE and not rules.create_event_has_room_id
    _check_required(event, rules, needs_room_id=not is_v12_create)
    event_type = _check_type(event)

    state_key = _check_state_key(event)
    sender = _check_sender(event)
    room_id = _check_room_id(event, rules) if "room_id" in event else None
    origin_server_ts = _check_origin_server_ts(event)
    depth = _check_depth(event, rules)
    content = _check_content(event)
    _check_hashes(event)
    _check_signatures(event)
    if "unsigned" in event and not isinstance(event["unsigned"], dict):
        raise InvalidEvent(f"unsigned must be a JSON object, not {_kind(event['unsigned'])}", rule=_RULE_FORMAT)
    prev_events = _check_refs(event, "prev_events", MAX_PREV_EVENTS, rules)
    auth_events = _check_refs(event, "auth_events", MAX_AUTH_EVENTS, rules)
    redacts = _check_redacts(event, event_type, content, rules)
    if rules.pdu_has_event_id:
        _check_event_id_field(event, rules)

    # v6+: integers only, inside the canonical range (fragments/v6-canonical-json).
    check_json_numbers(event, rules.version)

    event_id = EventId(compute_event_id_with_rules(event, rules))
    if room_id is None:
        # v12 create event: the room ID is its event ID with the room sigil.
        room_id = RoomId("!" + event_id[1:])
    return Pdu(
        event_id=event_id,
        room_id=room_id,
        type=event_type,
        state_key=state_key,
        sender=sender,
        origin_server_ts=origin_server_ts,
        depth=depth,
        prev_events=prev_events,
        auth_events=auth_events,
        redacts=redacts,
        room_version=rules.version,
        content=content,
        json=event,
    )


def parse_own_pdu(event: dict, rules: RoomVersionRules, *, event_id: str, canonical_size: int) -> Pdu:
    """:func:`parse_pdu_with_rules` for a PDU this server has just built and signed
    (``roomactors.room.events.build_pdu``), given what signing computed.

    Preconditions, which the builder guarantees: ``event`` is plain JSON
    (:func:`~.canonical.is_plain_json`, so the v6+ number rules hold);
    ``canonical_size`` is ``len(canonical_json(event))`` and ``event_id`` is
    ``compute_event_id_with_rules(event, rules)``; the fields the server fills in —
    ``room_id``, ``origin_server_ts``, ``depth``, ``prev_events``, ``auth_events``,
    ``hashes``, ``signatures`` and (v1/v2) ``event_id`` — are present and valid for the
    room version (the room's own ID, its clock, and IDs of events it holds).

    So only what a client chooses is checked — the size, ``type``, ``state_key``,
    ``sender``, ``content`` and ``redacts`` — with :func:`parse_pdu`'s checks, in its
    order: the result, a :class:`Pdu` or the :class:`InvalidEvent` raised, is the one
    :func:`parse_pdu` gives (``tests/protocol/test_fast_paths.py``), without
    re-encoding, re-walking or re-hashing the event.
    """
    _check_size(canonical_size)
    event_type = _check_type(event)
    state_key = _check_state_key(event)
    sender = _check_sender(event)
    content = _check_content(event)
    redacts = _check_redacts(event, event_type, content, rules)
    if rules.event_refs_are_pairs:
        prev_events = tuple(EventId(ref[0]) for ref in event["prev_events"])
        auth_events = tuple(EventId(ref[0]) for ref in event["auth_events"])
    else:
        prev_events = tuple(event["prev_events"])
        auth_events = tuple(event["auth_events"])
    return Pdu(
        event_id=EventId(event_id),
        room_id=RoomId(event["room_id"]),
        type=event_type,
        state_key=state_key,
        sender=sender,
        origin_server_ts=event["origin_server_ts"],
        depth=event["depth"],
        prev_events=prev_events,
        auth_events=auth_events,
        redacts=redacts,
        room_version=rules.version,
        content=content,
        json=event,
    )


# --- helpers -----------------------------------------------------------------------


def _kind(value: object) -> str:
    """A JSON-flavoured name for ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf8_len(text: str) -> int:
    # canonical_json already rejected strings that are not valid Unicode scalar values.
    return len(text.encode("utf-8"))


def _check_required(event: dict, rules: RoomVersionRules, *, needs_room_id: bool) -> None:
    required = list(_BASE_REQUIRED)
    if needs_room_id:
        required.append("room_id")
    if rules.pdu_has_event_id:
        required.append("event_id")
    required += ["prev_events", "auth_events"]
    missing = [k for k in required if k not in event]
    if missing:
        listed = ", ".join(missing)
        raise InvalidEvent(
            f"PDU is missing required key{'s' if len(missing) > 1 else ''}: {listed} "
            f"(room version {rules.version})",
            rule=_RULE_FORMAT,
        )


def _check_size(size: int) -> None:
    if size > MAX_PDU_BYTES:
        raise InvalidEvent(
            f"PDU is {size} bytes as canonical JSON; the limit is {MAX_PDU_BYTES}", rule=_RULE_SIZE
        )


def _check_content(event: dict) -> dict:
    content = event["content"]
    if not isinstance(content, dict):
        raise InvalidEvent(f"content must be a JSON object, not {_kind(content)}", rule=_RULE_FORMAT)
    return content


def _bounded_str(value: Any, name: str, limit: int, limit_of: str = "") -> str:
    """``value`` as a string of at most ``limit`` UTF-8 bytes, or :class:`InvalidEvent`."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, not {_kind(value)}", rule=_RULE_FORMAT)
    n = _utf8_len(value)
    if n > limit:
        raise InvalidEvent(f"{name} is {n} bytes; the limit{limit_of} is {limit}", rule=_RULE_SIZE)
    return value


def _check_type(event: dict) -> str:
    return _bounded_str(event["type"], "type", MAX_KEY_BYTES)


def _check_state_key(event: dict) -> str | None:
    if "state_key" not in event:
        return None
    return _bounded_str(event["state_key"], "state_key", MAX_KEY_BYTES)


def _check_sender(event: dict) -> UserId:
    sender = _bounded_str(event["sender"], "sender", MAX_ID_BYTES, " for user IDs")
    if not is_valid_user_id(sender):
        raise InvalidEvent(f"sender {sender!r} is not a valid user ID", rule=_RULE_USER_ID)
    return UserId(sender)


def _check_room_id(event: dict, rules: RoomVersionRules) -> RoomId:
    room_id = _bounded_str(event["room_id"], "room_id", MAX_ID_BYTES, " for room IDs")
    if not is_valid_room_id(room_id, rules):
        shape = "!opaque:server_name" if rules.create_event_has_room_id else "! + 43 URL-safe base64 characters"
        raise InvalidEvent(
            f"room_id {room_id!r} is not a valid room ID for room version {rules.version} (expected {shape})",
            rule=_RULE_ROOM_ID,
        )
    return RoomId(room_id)


def _check_origin_server_ts(event: dict) -> int:
    ts = event["origin_server_ts"]
    if not _is_int(ts):
        raise InvalidEvent(f"origin_server_ts must be an integer, not {_kind(ts)}", rule=_RULE_FORMAT)
    if not _INT64_MIN <= ts <= _INT64_MAX:
        # pdu_base: "format: int64". v6+ also gets the narrower canonical range later.
        raise InvalidEvent(f"origin_server_ts {ts} does not fit in an int64", rule=_RULE_FORMAT)
    return ts


def _check_depth(event: dict, rules: RoomVersionRules) -> int:
    depth = event["depth"]
    if not _is_int(depth):
        raise InvalidEvent(f"depth must be an integer, not {_kind(depth)}", rule=_RULE_FORMAT)
    if depth < 0:
        raise InvalidEvent(f"depth {depth} is negative", rule=_RULE_FORMAT)
    limit = _CANONICAL_INT_MAX if rules.strict_canonical_json else MAX_DEPTH
    if depth > limit:
        raise InvalidEvent(
            f"depth {depth} exceeds the room version {rules.version} maximum {limit}", rule=_RULE_FORMAT
        )
    return depth


def _check_hashes(event: dict) -> None:
    hashes = event["hashes"]
    if not isinstance(hashes, dict):
        raise InvalidEvent(f"hashes must be a JSON object, not {_kind(hashes)}", rule=_RULE_FORMAT)
    if "sha256" not in hashes:
        raise InvalidEvent("hashes has no sha256 content hash", rule=_RULE_FORMAT)
    if not isinstance(hashes["sha256"], str):
        raise InvalidEvent(f"hashes.sha256 must be a string, not {_kind(hashes['sha256'])}", rule=_RULE_FORMAT)


def _check_signatures(event: dict) -> None:
    signatures = event["signatures"]
    if not isinstance(signatures, dict):
        raise InvalidEvent(f"signatures must be a JSON object, not {_kind(signatures)}", rule=_RULE_FORMAT)
    for entity, entity_sigs in signatures.items():
        if not isinstance(entity_sigs, dict):
            raise InvalidEvent(
                f"signatures[{entity!r}] must be a JSON object, not {_kind(entity_sigs)}", rule=_RULE_FORMAT
            )
        for key_id, sig in entity_sigs.items():
            if not isinstance(sig, str):
                raise InvalidEvent(
                    f"signatures[{entity!r}][{key_id!r}] must be a string, not {_kind(sig)}", rule=_RULE_FORMAT
                )


def _check_event_ref(ref: object, where: str, rules: RoomVersionRules, rule: str = _RULE_REFS) -> EventId:
    if not isinstance(ref, str):
        raise InvalidEvent(f"{where} must be an event ID string, not {_kind(ref)}", rule=rule)
    if not is_valid_event_id(ref, rules):
        raise InvalidEvent(
            f"{where} {ref!r} is not a valid event ID for room version {rules.version}", rule=_RULE_EVENT_ID
        )
    return EventId(ref)


def _check_refs(event: dict, key: str, limit: int, rules: RoomVersionRules) -> tuple[EventId, ...]:
    refs = event[key]
    if not isinstance(refs, list):
        raise InvalidEvent(f"{key} must be an array, not {_kind(refs)}", rule=_RULE_REFS)
    if len(refs) > limit:
        raise InvalidEvent(f"{key} has {len(refs)} entries; the limit is {limit}", rule=_RULE_REFS)
    out: list[EventId] = []
    for i, ref in enumerate(refs):
        where = f"{key}[{i}]"
        if rules.event_refs_are_pairs:
            # pdu_v1: each entry is [event_id, {"sha256": reference hash}].
            if not isinstance(ref, list) or len(ref) != 2:
                raise InvalidEvent(
                    f"{where} must be an [event_id, hashes] pair in room version {rules.version}",
                    rule=_RULE_REFS,
                )
            if not isinstance(ref[1], dict):
                raise InvalidEvent(
                    f"{where}[1] must be an object of hashes, not {_kind(ref[1])}", rule=_RULE_REFS
                )
            out.append(_check_event_ref(ref[0], f"{where}[0]", rules))
        else:
            out.append(_check_event_ref(ref, where, rules))
    return tuple(out)


def _check_redacts(event: dict, event_type: str, content: dict, rules: RoomVersionRules) -> EventId | None:
    if rules.redacts_in_content:
        # rooms/v11: the redaction's target moved into content.
        if event_type != _REDACTION or "redacts" not in content:
            return None
        return _check_event_ref(content["redacts"], "content.redacts", rules, _RULE_REDACTS_V11)
    if "redacts" not in event:
        return None
    # pdu_v1/v3/v4/v6: top-level "redacts" is a string (the redacted event's ID).
    target = _check_event_ref(event["redacts"], "redacts", rules, _RULE_REDACTS)
    return target if event_type == _REDACTION else None


def _check_event_id_field(event: dict, rules: RoomVersionRules) -> None:
    event_id = _bounded_str(event["event_id"], "event_id", MAX_ID_BYTES, " for event IDs")
    if not is_valid_event_id(event_id, rules):
        raise InvalidEvent(
            f"event_id {event_id!r} is not a valid event ID for room version {rules.version}",
            rule=_RULE_EVENT_ID,
        )


def event_refs(event: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """The event IDs in ``event[key]`` (``prev_events`` / ``auth_events``), whether
    plain IDs (v3+) or ``[event_id, {hashes}]`` pairs (v1/v2). Malformed entries
    are skipped (parsed PDUs have none)."""
    out: list[str] = []
    for ref in event.get(key) or ():
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, (list, tuple)) and ref and isinstance(ref[0], str):
            out.append(ref[0])
    return tuple(out)
