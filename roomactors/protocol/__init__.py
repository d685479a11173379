"""roomactors.protocol: the pure, synchronous Matrix protocol kernel (room versions 1–12).

Canonical JSON, identifiers, hashing, signing, redaction, PDU validation,
authorization rules and state resolution. No I/O, no imports from ``api``,
``storage`` or the rest of ``roomactors`` (``tests/test_layering.py`` enforces it).
The names re-exported here are the kernel's public API; their signatures are
relied on by outside acceptance tools, so keep them stable.
"""

from .auth import auth_types_for_event, check_auth, check_auth_events_list
from .canonical import canonical_json, check_json_numbers
from .errors import AuthError, InvalidEvent, ProtocolError, SignatureError, UnsupportedRoomVersion
from .hashing import compute_event_id, compute_room_id, content_hash, reference_hash
from .pdu import Pdu, parse_pdu
from .redaction import redact
from .room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersionRules, get_rules
from .signing import Verified, sign_event, sign_json, verify_event, verify_event_signatures, verify_json
from .state_res import resolve_state

__all__ = [
    "canonical_json",
    "check_json_numbers",
    "content_hash",
    "compute_event_id",
    "compute_room_id",
    "reference_hash",
    "redact",
    "parse_pdu",
    "Pdu",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events_list",
    "resolve_state",
    "sign_json",
    "verify_json",
    "sign_event",
    "verify_event_signatures",
    "verify_event",
    "Verified",
    "InvalidEvent",
    "SignatureError",
    "AuthError",
    "ProtocolError",
    "UnsupportedRoomVersion",
    "RoomVersionRules",
    "KNOWN_ROOM_VERSIONS",
    "DEFAULT_ROOM_VERSION",
    "get_rules",
]
