"""Building and signing our own events (server-server API "Adding hashes and
signatures to outgoing events"; each room version's "Event format").

Theory of operation
-------------------
Pure-ish helpers (the only impurities: the injected clock, and random opaque IDs in
room versions 1 and 2, whose event IDs the sending server chooses). The room actor
decides *what* an event cites — ``prev_events`` from its forward extremities,
``auth_events`` from the auth events selection over the state before the event,
``depth`` one past the deepest prev — and :func:`build_event` turns that into a
signed PDU in the room version's shape::

    fields ──► references in the version's shape ──► sign_event (content hash,
               (v1/v2: [id, {"sha256": ref hash}])      signature over redacted form)
                                                     ──► compute_event_id

:func:`build_create_event` makes a room's first event. From v12 the room ID is not
chosen but derived from it (``!`` + the create event's reference hash), and the
create event carries no ``room_id``; before v12 the caller picks the room ID.

The PDU is returned exactly as it will be stored and sent. Callers must treat it
as immutable (every protocol function copies before changing).

:func:`build_pdu` is what the room actor calls for a local send: ``build_event``
followed by ``parse_pdu`` (the client's type, state_key and content must still make
a valid PDU: size, identifier lengths, v6+ numbers), in one pass. Signing already
produced the reference hash (the event ID) and proved the event plain JSON, so the
parse skips re-encoding and re-hashing (``parse_own_pdu``); the result and errors
are those of the two-step path (``tests/protocol/test_fast_paths.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from roomactors.clock import Clock
from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.hashing import event_id_from_reference_hash, reference_hash
from roomactors.protocol.ids import EventId, RoomId, UserId
from roomactors.protocol.pdu import event_refs, Pdu, parse_own_pdu, parse_pdu_with_rules
from roomactors.protocol.room_versions import RoomVersionRules, get_rules
from roomactors.protocol.signing import SignedEvent, sign_event_and_hash

__all__ = [
    "build_create_event",
    "build_event",
    "build_pdu",
    "event_refs",
    "make_refs",
    "sign_template",
]


def make_refs(event_ids: Iterable[str], referenced: Mapping[str, dict], rules: RoomVersionRules) -> list[Any]:
    """``prev_events``/``auth_events`` in the version's shape. For v1/v2 each entry is
    ``[event_id, {"sha256": <reference hash>}]``, so ``referenced`` must hold the
    cited events' PDUs; from v3 it is not consulted."""
    if not rules.event_refs_are_pairs:
        return list(event_ids)
    return [
        [event_id, {"sha256": encode_base64(reference_hash(referenced[event_id], rules))}]
        for event_id in event_ids
    ]


def _server_assigned_event_id(server_name: str) -> str:
    """rooms/v1 "Event IDs": ``$`` + an opaque string unique on this server + ``:server``."""
    return f"${secrets.token_hex(16)}:{server_name}"


def build_create_event(
    room_version: str,
    *,
    creator: UserId,
    server_name: str,
    signing_key: Any,
    clock: Clock,
    content_extra: Mapping[str, Any] | None = None,
    room_id_for_v1_11: RoomId | None = None,
) -> tuple[dict[str, Any], RoomId]:
    """A signed ``m.room.create`` PDU by ``creator`` and the room ID it starts.

    ``content`` is ``{"room_version": …}`` plus ``creator`` where the version wants
    it (v1–v10), plus ``content_extra`` (``m.federate``, ``type``, v12
    ``additional_creators`` …). ``room_id_for_v1_11`` is required exactly for the
    versions whose room IDs are server-assigned (``!opaque:server_name``).
    """
    rules = get_rules(room_version)
    content: dict[str, Any] = {"room_version": room_version}
    if rules.create_event_has_creator:
        content["creator"] = creator
    if content_extra:
        content.update(content_extra)
    event: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "sender": creator,
        "content": content,
        "origin_server_ts": clock.time_ms(),
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    }
    if rules.create_event_has_room_id:
        if room_id_for_v1_11 is None:
            raise ValueError(f"room version {room_version} needs a server-assigned room ID")
        event["room_id"] = room_id_for_v1_11
    elif room_id_for_v1_11 is not None:
        raise ValueError(f"room version {room_version} derives the room ID from the create event")
    if rules.pdu_has_event_id:
        event["event_id"] = _server_assigned_event_id(server_name)
    signed = sign_event_and_hash(event, server_name, signing_key, rules)
    if rules.create_event_has_room_id:
        return signed.event, RoomId(signed.event["room_id"])
    # v12 (compute_room_id): "!" + the create event's reference hash, URL-safe.
    return signed.event, RoomId("!" + event_id_from_reference_hash(signed.reference_hash, rules)[1:])


def _sign(
    rules: RoomVersionRules,
    *,
    room_id: RoomId,
    sender: UserId,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None,
    prev_events: Sequence[str],
    auth_events: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: Any,
    referenced: Mapping[str, dict] | None,
) -> SignedEvent:
    refs = referenced or {}
    event: dict[str, Any] = {
        "room_id": room_id,
        "type": type,
        "sender": sender,
        "content": dict(content),
        "origin_server_ts": origin_server_ts,
        "depth": depth,
        "prev_events": make_refs(prev_events, refs, rules),
        "auth_events": make_refs(auth_events, refs, rules),
    }
    if state_key is not None:
        event["state_key"] = state_key
    if type == "m.room.redaction" and not rules.redacts_in_content and "redacts" in event["content"]:
        # Room versions 1-10 carry the target as a top-level key; callers always
        # pass it as content.redacts (the v11 place), and it moves here.
        event["redacts"] = event["content"].pop("redacts")
    if rules.pdu_has_event_id:
        event["event_id"] = _server_assigned_event_id(server_name)
    return sign_event_and_hash(event, server_name, signing_key, rules)


def _event_id(signed: SignedEvent, rules: RoomVersionRules) -> EventId:
    """compute_event_id of the signed event, from the hash signing computed."""
    if rules.pdu_has_event_id:
        return EventId(signed.event["event_id"])
    return EventId(event_id_from_reference_hash(signed.reference_hash, rules))


def build_event(
    *,
    room_version: str,
    room_id: RoomId,
    sender: UserId,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_events: Sequence[str],
    auth_events: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: Any,
    referenced: Mapping[str, dict] | None = None,
) -> tuple[EventId, dict[str, Any]]:
    """A signed PDU and its event ID. ``referenced`` (event ID -> PDU) must hold the
    prev and auth events in v1/v2, whose references carry their hashes."""
    rules = get_rules(room_version)
    signed = _sign(
        rules,
        room_id=room_id,
        sender=sender,
        type=type,
        content=content,
        state_key=state_key,
        prev_events=prev_events,
        auth_events=auth_events,
        depth=depth,
        origin_server_ts=origin_server_ts,
        server_name=server_name,
        signing_key=signing_key,
        referenced=referenced,
    )
    return _event_id(signed, rules), signed.event


def build_pdu(
    *,
    room_version: str,
    room_id: RoomId,
    sender: UserId,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_events: Sequence[str],
    auth_events: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: Any,
    referenced: Mapping[str, dict] | None = None,
) -> Pdu:
    """``parse_pdu(build_event(...)[1], room_version)`` in one pass (see the module
    docstring): the parsed, signed PDU, or the :class:`InvalidEvent` either step
    raises."""
    rules = get_rules(room_version)
    signed = _sign(
        rules,
        room_id=room_id,
        sender=sender,
        type=type,
        content=content,
        state_key=state_key,
        prev_events=prev_events,
        auth_events=auth_events,
        depth=depth,
        origin_server_ts=origin_server_ts,
        server_name=server_name,
        signing_key=signing_key,
        referenced=referenced,
    )
    if signed.plain:
        try:
            size = len(orjson.dumps(signed.event, option=orjson.OPT_SORT_KEYS))  # its canonical JSON
        except orjson.JSONEncodeError:
            pass  # a string orjson refuses: parse_pdu raises the reference error
        else:
            return parse_own_pdu(signed.event, rules, event_id=_event_id(signed, rules), canonical_size=size)
    return parse_pdu_with_rules(signed.event, rules)


def sign_template(
    template: Mapping[str, Any], *, room_version: str, server_name: str, signing_key: Any, origin_server_ts: int
) -> tuple[EventId, dict[str, Any]]:
    """Our signed PDU from a resident server's ``/make_join``, ``/make_leave`` or
    ``/make_knock`` template (server-server API "Joining Rooms": the joining server
    "signs the event" and sends it back). Whatever the template says about hashes,
    signatures, ``unsigned`` or (v1/v2) the event ID is replaced; ``origin_server_ts``
    is ours."""
    rules = get_rules(room_version)
    event = {k: v for k, v in template.items() if k not in ("signatures", "hashes", "unsigned", "event_id")}
    event["origin_server_ts"] = origin_server_ts
    if "origin" in event:
        event["origin"] = server_name
    if rules.pdu_has_event_id:
        event["event_id"] = _server_assigned_event_id(server_name)
    signed = sign_event_and_hash(event, server_name, signing_key, rules)
    return _event_id(signed, rules), signed.event
