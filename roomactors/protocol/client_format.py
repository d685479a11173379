"""Serialising a stored PDU as a client event (client-server API "Room event format":
``ClientEvent`` / ``ClientEventWithoutRoomID``, definitions/client_event.yaml and
client_event_without_room_id.yaml).

Theory of operation
-------------------
Homeservers store events in the room-version-specific federation format (PDU) and
"are responsible for converting events into the format shown below" for clients.
:func:`client_event` builds the client form from an allow-list — ``content``,
``event_id``, ``origin_server_ts``, ``room_id`` (ClientEvent only), ``sender``,
``state_key`` (present iff the PDU is a state event), ``type``, ``unsigned`` — so
PDU-only keys (``auth_events``, ``prev_events``, ``hashes``, ``signatures``,
``depth``, ``origin``, ``prev_state``, ``membership``, the PDU's own federation
``unsigned`` ...) can never leak. ``unsigned`` is generated here from the caller's
knowledge: ``age`` (``now_ms - origin_server_ts``), and when given
``transaction_id``, ``redacted_because``, ``prev_content`` (state events only:
"only returned if the event is a state event"), ``membership`` (v1.11),
``replaces_state`` and any ``extra_unsigned`` (e.g. ``invite_room_state``).

Redactions: when ``redacted_because`` is given the event is served in its redacted
form ("This stripped down event is thereafter returned anytime a client ... requests
it. Servers should include a copy of the m.room.redaction event under unsigned as
redacted_because"), computed with the room version's redaction algorithm
(:func:`~roomactors.protocol.redaction.redact_with_rules`; idempotent, so an
already-redacted stored PDU is fine).

``m.room.redaction`` ``redacts`` (rooms/v11 "Moving the redacts property of
m.room.redaction events to a content property"): the authoritative location is the
top level in v1–v10 and ``content.redacts`` in v11+. The spec asks servers to serve
*both* over the Client-Server API — a top-level ``redacts`` in v11+ rooms "for
backwards-compatibility with older clients", and ``content.redacts`` in older rooms
"for improved compatibility with newer clients" — so both are emitted, copied from
the authoritative location (a client-supplied value in the other location is
overwritten). A redacted redaction event in v1–v10 has lost its ``redacts`` (the
v1 algorithm does not keep it), so neither is emitted then.

Pure and synchronous; inputs are never mutated and the result shares no mutable
containers with them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .redaction import redact_with_rules
from .room_versions import RoomVersionRules

__all__ = ["PDU_ONLY_KEYS", "client_event"]

#: Federation-format keys that are never part of a client event (for reference and
#: tests; :func:`client_event` works from an allow-list, not by deleting these).
PDU_ONLY_KEYS: frozenset[str] = frozenset(
    {"auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state", "membership"}
)

_REDACTION = "m.room.redaction"


def client_event(
    pdu: Mapping[str, Any],
    event_id: str,
    *,
    now_ms: int,
    include_room_id: bool = True,
    transaction_id: str | None = None,
    redacted_because: Mapping[str, Any] | None = None,
    prev_content: Mapping[str, Any] | None = None,
    room_version_rules: RoomVersionRules | None = None,
    room_id: str | None = None,
    membership: str | None = None,
    replaces_state: str | None = None,
    extra_unsigned: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``pdu`` (stored federation format) as a ``ClientEvent`` — or a
    ``ClientEventWithoutRoomID`` when ``include_room_id`` is false (``/sync``).

    ``event_id`` is passed in because v3+ PDUs do not carry it. ``room_id``
    overrides the PDU's (v12 create events have none). ``redacted_because`` is the
    redaction event *in client format* (build it with this function); its
    ``room_id`` is dropped or filled in to match ``include_room_id``, and any
    PDU-only keys in it are dropped. It requires ``room_version_rules`` (raises
    ``ValueError`` without them). Without rules, ``redacts`` is taken from wherever
    the PDU has it (top level first).
    """
    src: Mapping[str, Any] = pdu
    if redacted_because is not None:
        if room_version_rules is None:
            raise ValueError("client_event: serving a redacted event needs room_version_rules")
        src = redact_with_rules(dict(pdu), room_version_rules)

    event_type = src.get("type")
    content = src.get("content")
    content = copy.deepcopy(dict(content)) if isinstance(content, Mapping) else {}

    out: dict[str, Any] = {
        "content": content,
        "event_id": event_id,
        "origin_server_ts": src.get("origin_server_ts"),
        "sender": src.get("sender"),
        "type": event_type,
    }
    if include_room_id:
        rid = room_id if room_id is not None else src.get("room_id")
        if not isinstance(rid, str):
            raise ValueError("client_event: ClientEvent needs a room_id (the PDU has none; pass room_id=)")
        out["room_id"] = rid
    is_state = isinstance(src.get("state_key"), str)
    if is_state:
        out["state_key"] = src["state_key"]

    if event_type == _REDACTION:
        redacts = _redacts(src, room_version_rules)
        if redacts is not None:
            out["redacts"] = redacts
            content["redacts"] = redacts

    unsigned: dict[str, Any] = {}
    if extra_unsigned:
        unsigned.update(copy.deepcopy(dict(extra_unsigned)))
    ts = src.get("origin_server_ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        # "The time in milliseconds that has elapsed since the event was sent" —
        # may be negative with skewed clocks; the spec allows that.
        unsigned["age"] = now_ms - ts
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if redacted_because is not None:
        unsigned["redacted_because"] = _redaction_for_unsigned(redacted_because, include_room_id, out.get("room_id"))
    if prev_content is not None and is_state:
        unsigned["prev_content"] = copy.deepcopy(dict(prev_content))
    if membership is not None:
        unsigned["membership"] = membership
    if replaces_state is not None and is_state:
        unsigned["replaces_state"] = replaces_state
    out["unsigned"] = unsigned
    return out


def _redacts(src: Mapping[str, Any], rules: RoomVersionRules | None) -> str | None:
    top = src.get("redacts")
    content = src.get("content")
    inner = content.get("redacts") if isinstance(content, Mapping) else None
    if rules is None:
        candidates = (top, inner)
    elif rules.redacts_in_content:
        candidates = (inner,)
    else:
        candidates = (top,)
    for value in candidates:
        if isinstance(value, str):
            return value
    return None


def _redaction_for_unsigned(
    redaction: Mapping[str, Any], include_room_id: bool, room_id: Any
) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in redaction.items() if k not in PDU_ONLY_KEYS}
    if include_room_id:
        # ClientEvent's redacted_because is a ClientEvent (has room_id).
        if "room_id" not in out and isinstance(room_id, str):
            out["room_id"] = room_id
    else:
        # ClientEventWithoutRoomID's redacted_because is a ClientEventWithoutRoomID.
        out.pop("room_id", None)
    return out
