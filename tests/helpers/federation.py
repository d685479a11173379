"""Helpers for in-process federation tests (``roomactors.testing_network``).

* Client-API shorthands on a :class:`NetworkHomeserver`: create a room, join over
  federation, send, read ``/messages``, ``/state`` and ``/sync``.
* Playing a rogue peer: :func:`forge_event` builds a PDU on top of the room as a
  server holds it (its extremities and current state, or given prev events and a
  given state), signed with any key (the server's own, or a rogue one), and
  :func:`send_pdus` puts it in a raw ``/send`` transaction from a server's own
  ``FederationClient`` (so the request is X-Matrix signed and the PDU-level
  checks are what gets tested).
* :func:`stored` reads what a server holds of an event (``storage.rooms``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from roomactors.protocol.auth import auth_types_for_event
from roomactors.protocol.ids import RoomId, UserId
from roomactors.room.events import build_event
from storage import rooms as room_storage

__all__ = [
    "create_room",
    "join",
    "send_text",
    "send_state",
    "messages",
    "state",
    "state_events",
    "sync",
    "room_record",
    "stored",
    "forge_event",
    "send_pdus",
    "rogue_key",
]

StateKey = tuple[str, str]

_txn_counter = itertools.count(1)


async def create_room(hs: Any, user: Any, **body: Any) -> str:
    status, answer = await hs.api("POST", "/_matrix/client/v3/createRoom", token=user.access_token, json=body)
    assert status == 200, answer
    return answer["room_id"]


async def alice_and_bob_in_a_room(net: Any, room_version: str) -> tuple[Any, Any, Any, Any, str]:
    """``(hs1, hs2, alice, bob, room_id)``: alice@hs1's public room, joined by bob@hs2
    through hs1, with the network settled."""
    hs1, hs2 = net["hs1"], net["hs2"]
    alice = await hs1.register("alice")
    bob = await hs2.register("bob")
    room_id = await create_room(hs1, alice, preset="public_chat", room_version=room_version)
    status, body = await join(hs2, bob, room_id, via="hs1")
    assert status == 200, body
    await net.settle()
    return hs1, hs2, alice, bob, room_id


async def join(hs: Any, user: Any, room_id: str, via: str | Sequence[str] | None = None) -> tuple[int, Any]:
    query = ""
    if via is not None:
        vias = [via] if isinstance(via, str) else list(via)
        query = "?" + "&".join(f"via={v}" for v in vias)
    return await hs.api("POST", f"/_matrix/client/v3/join/{room_id}{query}", token=user.access_token, json={})


async def send_text(hs: Any, user: Any, room_id: str, body: str) -> str:
    txn = next(_txn_counter)
    status, answer = await hs.api(
        "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/ht{txn}",
        token=user.access_token, json={"msgtype": "m.text", "body": body},
    )
    assert status == 200, answer
    return answer["event_id"]


async def send_state(
    hs: Any, user: Any, room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = ""
) -> tuple[int, Any]:
    return await hs.api(
        "PUT", f"/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}",
        token=user.access_token, json=dict(content),
    )


async def messages(hs: Any, user: Any, room_id: str) -> list[str]:
    """Bodies of the ``m.room.message`` events of ``/messages``, oldest first."""
    status, body = await hs.api(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100", token=user.access_token
    )
    assert status == 200, body
    return [e["content"].get("body") for e in reversed(body["chunk"]) if e["type"] == "m.room.message"]


async def timeline_ids(hs: Any, user: Any, room_id: str) -> list[str]:
    status, body = await hs.api(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=200", token=user.access_token
    )
    assert status == 200, body
    return [e["event_id"] for e in body["chunk"]]


async def state_events(hs: Any, user: Any, room_id: str) -> list[dict[str, Any]]:
    status, body = await hs.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state", token=user.access_token)
    assert status == 200, body
    return body


async def state(hs: Any, user: Any, room_id: str) -> dict[StateKey, str]:
    """``/state`` as a map (type, state_key) -> event ID."""
    return {(e["type"], e["state_key"]): e["event_id"] for e in await state_events(hs, user, room_id)}


async def sync(hs: Any, user: Any) -> dict[str, Any]:
    status, body = await hs.api("GET", "/_matrix/client/v3/sync?timeout=0", token=user.access_token)
    assert status == 200, body
    return body


async def room_record(hs: Any, room_id: str) -> room_storage.RoomRecord:
    record = await hs.deps.db.read(room_storage.load_room, room_id)
    assert record is not None, f"{hs.server_name} holds no room {room_id}"
    return record


async def stored(hs: Any, *event_ids: str) -> dict[str, room_storage.StoredEvent]:
    return await hs.deps.db.read(room_storage.get_events, list(event_ids))


def rogue_key(version: str = "rogue") -> Any:
    from signedjson.key import generate_signing_key

    return generate_signing_key(version)


async def forge_event(
    hs: Any,
    room_id: str,
    *,
    sender: str,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_events: Sequence[str] | None = None,
    auth_state: Mapping[StateKey, str] | None = None,
    depth: int | None = None,
    origin_server_ts: int | None = None,
    server_name: str | None = None,
    signing_key: Any = None,
) -> tuple[str, dict[str, Any]]:
    """A PDU of ``room_id`` built on what ``hs`` holds: prev events default to its
    forward extremities, auth events are picked from ``auth_state`` (default: its
    current state), depth is one more than the deepest prev event. Signed as
    ``server_name`` (default ``hs``) with ``signing_key`` (default ``hs``'s key)."""
    record = await room_record(hs, room_id)
    version = record.room_version
    if prev_events is None:
        prev_events = sorted(record.forward_extremities)
    known = await stored(hs, *prev_events)
    if depth is None:
        depth = max((known[p].depth for p in prev_events if p in known), default=0) + 1
    state = dict(auth_state if auth_state is not None else record.current_state)
    template: dict[str, Any] = {"type": type, "sender": sender, "content": dict(content)}
    if state_key is not None:
        template["state_key"] = state_key
    auth_events = sorted({state[k] for k in auth_types_for_event(template, version) if k in state})
    event_id, pdu = build_event(
        room_version=version,
        room_id=RoomId(room_id),
        sender=UserId(sender),
        type=type,
        content=content,
        state_key=state_key,
        prev_events=list(prev_events),
        auth_events=auth_events,
        depth=depth,
        origin_server_ts=origin_server_ts if origin_server_ts is not None else hs.deps.clock.time_ms(),
        server_name=server_name or hs.server_name,
        signing_key=signing_key if signing_key is not None else hs.deps.signing_key,
    )
    return event_id, pdu


async def send_pdus(
    origin_hs: Any, destination: str, pdus: Sequence[dict[str, Any]], *, txn_id: str | None = None,
    edus: Sequence[dict[str, Any]] = (),
) -> Any:
    """A raw ``PUT /send/{txnId}`` from ``origin_hs``'s own FederationClient (X-Matrix
    signed by it); returns the parsed answer or raises ``FederationError``."""
    txn = txn_id or f"forged-{next(_txn_counter)}"
    return await origin_hs.deps.federation.put_json(
        destination,
        f"/_matrix/federation/v1/send/{txn}",
        {
            "origin": origin_hs.server_name,
            "origin_server_ts": origin_hs.deps.clock.time_ms(),
            "pdus": list(pdus),
            "edus": list(edus),
        },
    )
