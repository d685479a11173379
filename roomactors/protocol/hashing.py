"""Content hashes, reference hashes, event IDs and (v12) room IDs.

Theory of operation
-------------------
* The *content hash* (server-server API "Calculating the content hash for an
  event") covers the whole unredacted event minus ``unsigned``, ``signatures`` and
  ``hashes``; it is stored as ``hashes.sha256`` (unpadded standard base64).
* The *reference hash* ("Calculating the reference hash for an event") is the
  sha256 of the canonical JSON of the *redacted* event without ``signatures`` and
  ``unsigned``. Room versions 3+ derive event IDs from it (rooms/v3, v4 "Event
  IDs"); v12 also derives the room ID from the create event's reference hash
  (rooms/v12 "Event format").
* Room versions 1/2 event IDs are chosen by the sending server and carried in the
  PDU; :func:`compute_event_id` returns that field.
"""

from __future__ import annotations

import hashlib
import hmac

from .b64 import decode_base64, encode_base64, encode_base64_urlsafe
from .canonical import canonical_json
from .errors import InvalidEvent
from .redaction import redact_with_rules
from .room_versions import EventIdFormat, RoomVersionRules, get_rules

__all__ = [
    "content_hash",
    "check_content_hash",
    "reference_hash",
    "compute_event_id",
    "compute_event_id_with_rules",
    "compute_room_id",
    "event_id_from_reference_hash",
]

_CONTENT_HASH_EXCLUDED = ("unsigned", "signatures", "hashes")


def _content_hash_bytes(event: dict) -> bytes:
    stripped = {k: v for k, v in event.items() if k not in _CONTENT_HASH_EXCLUDED}
    return hashlib.sha256(canonical_json(stripped)).digest()


def content_hash(event: dict) -> str:
    """Unpadded standard base64 of the sha256 content hash of ``event``."""
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object", rule="s2s: content hash")
    return encode_base64(_content_hash_bytes(event))


def check_content_hash(event: dict) -> bool:
    """True if ``event['hashes']['sha256']`` matches its content (s2s "Validating hashes")."""
    hashes = event.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        claimed = decode_base64(hashes["sha256"])
    except ValueError:
        return False
    return hmac.compare_digest(claimed, _content_hash_bytes(event))


def reference_hash(event: dict, rules: RoomVersionRules) -> bytes:
    """The raw sha256 reference hash of ``event`` under ``rules``."""
    redacted = redact_with_rules(event, rules)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(canonical_json(redacted)).digest()


def event_id_from_reference_hash(digest: bytes, rules: RoomVersionRules) -> str:
    """v3+: the event ID for an event whose raw reference hash is ``digest`` (``$`` +
    standard base64 in v3, URL-safe base64 from v4). Raises ``ValueError`` for room
    versions 1/2, whose event IDs are server-assigned."""
    if rules.event_id_format is EventIdFormat.REFERENCE_HASH_BASE64:
        return "$" + encode_base64(digest)
    if rules.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        raise ValueError(f"room version {rules.version} event IDs are server-assigned, not hashes")
    return "$" + encode_base64_urlsafe(digest)


def compute_event_id_with_rules(event: dict, rules: RoomVersionRules) -> str:
    if rules.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        event_id = event.get("event_id") if isinstance(event, dict) else None
        if not isinstance(event_id, str):
            raise InvalidEvent("room versions 1 and 2 need an event_id in the PDU", rule="rooms v1: Event IDs")
        return event_id
    return event_id_from_reference_hash(reference_hash(event, rules), rules)


def compute_event_id(event: dict, room_version: str) -> str:
    """The event ID: v1/v2 the PDU's own ``event_id``; v3+ ``$`` + reference hash."""
    return compute_event_id_with_rules(event, get_rules(room_version))


def compute_room_id(create_event: dict, room_version: str) -> str:
    """v12: ``!`` + the create event's reference hash (URL-safe unpadded base64).

    Only meaningful where ``room_id_format`` is ``CREATE_EVENT_HASH``; raises
    :class:`InvalidEvent` otherwise, because earlier room IDs are server-assigned.
    """
    rules = get_rules(room_version)
    if rules.create_event_has_room_id:
        raise InvalidEvent(
            f"room version {room_version} room IDs are server-assigned, not derived",
            rule="appendices: Room IDs",
        )
    return "!" + compute_event_id_with_rules(create_event, rules)[1:]
