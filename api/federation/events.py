"""Federation event reads: ``/event``, ``/state``, ``/state_ids``, ``/event_auth``,
``/backfill`` and ``/get_missing_events`` (server-server API "Retrieving events",
"Retrieving event authorisation information", "Backfilling and retrieving missing
events"; events.yaml, event_auth.yaml, backfill.yaml).

Theory of operation
-------------------
Every view is a :func:`~api.federation.x_matrix.federation_route` (X-Matrix first:
401 ``M_UNAUTHORIZED``) and then applies the same room access rule, in this order,
to the room named in the path (for ``/event``, the event's room)::

    m.room.server_acl denies the origin  ─► 403 M_FORBIDDEN   (s2s "Server ACLs": MUST)
    origin has no joined user now        ─► 403 M_FORBIDDEN   ("Host not in room")
    event unknown / not in this room     ─► 404 M_NOT_FOUND

"Host not in room" is Synapse's rule for all of these endpoints (events.yaml names
the 403 for ``/state_ids``: "The requesting host is not in the room"). An unknown room
has no joined users, so it answers the same 403 and its existence is not revealed.
The ACL is applied to ``/event`` too although the spec's MUST list leaves it out: a
denied server gains nothing by fetching the events one at a time.

Reads come from committed rows (``storage.federation_reads``, one ``db.read`` each),
except the state before an event, which the room's actor computes
(``GetStateBefore``: it resolves over the prev events' states and keeps state maps in
memory). Events are served as stored (PDUs in the room version's format), with the
content of an event an accepted ``m.room.redaction`` targets stripped (redaction
algorithm), as other servers would hold it.

**History visibility for servers** (``roomactors.protocol.server_visibility``):
``/event``, ``/backfill`` and ``/get_missing_events`` serve an event the origin may
not see *redacted* rather than dropping it (Synapse's behaviour), so the receiver's
DAG has no holes. ``/state``, ``/state_ids`` and ``/event_auth`` are not filtered:
state and auth chains are what a server in the room needs to authorise events.

Limits: ``/backfill`` serves at most :data:`MAX_BACKFILL` events (Synapse's cap),
``/get_missing_events`` at most :data:`MAX_MISSING_EVENTS`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Blueprint, request

from api.body import json_body
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, forbidden, not_found
from api.federation.x_matrix import federation_route
from api.responses import json_response
from api.rooms_service import ask_room
from roomactors.protocol.redaction import redact
from roomactors.protocol.server_acl import server_acl_allows
from roomactors.protocol.server_visibility import event_visible_to_server
from roomactors.room.messages import GetStateBefore, StateAt, UnknownEvent, UnknownRoom
from storage import federation_reads as fr
from storage import timeline
from storage.rooms import StoredEvent, get_events

__all__ = ["blueprint", "MAX_BACKFILL", "MAX_MISSING_EVENTS", "check_room_access", "served_pdus"]

blueprint = Blueprint("federation_events", __name__)

#: Most events one ``/backfill`` answer holds (Synapse caps ``limit`` at 100).
MAX_BACKFILL = 100
#: Most events one ``/get_missing_events`` answer holds (its default is 10).
MAX_MISSING_EVENTS = 100
_DEFAULT_MISSING_LIMIT = 10


# ------------------------------------------------------------------ access rules


def room_access(conn: sa.Connection, room_id: str, origin: str) -> tuple[bool, bool]:
    """(the ACL allows ``origin``, ``origin`` has a joined user) for the room now."""
    acl = fr.get_current_state_content(conn, room_id, "m.room.server_acl")
    allowed = acl is None or server_acl_allows(acl, origin)
    return allowed, fr.server_in_room(conn, room_id, origin)


async def check_room_access(d: Deps, room_id: str, origin: str) -> None:
    """403 unless the room's server ACL allows ``origin`` and it is in the room."""
    allowed, in_room = await d.db.read(room_access, room_id, origin)
    if not allowed:
        # s2s "Server ACLs": "403 HTTP status code and an errcode of M_FORBIDDEN".
        raise forbidden(f"server {origin} is denied by the room's server ACL")
    if not in_room:
        raise forbidden("Host not in room.")


def _transaction(d: Deps, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    """A Transaction body (``single_pdu_transaction`` / ``unlimited_pdu_transaction``)."""
    return {"origin": d.server_name, "origin_server_ts": d.clock.time_ms(), "pdus": pdus}


# ------------------------------------------------------------------ formatting


def served_pdus(
    conn: sa.Connection, evs: list[StoredEvent], *, origin: str | None = None, room_version: str | None = None
) -> list[dict[str, Any]]:
    """The PDUs of ``evs`` as served: redacted where an accepted redaction targets
    them, and (with ``origin``) where ``origin`` may not see them."""
    if not evs:
        return []
    versions: dict[str, str] = {}

    def version_of(room_id: str) -> str:
        if room_version is not None:
            return room_version
        if room_id not in versions:
            versions[room_id] = timeline.get_room_version(conn, room_id) or "1"
        return versions[room_id]

    redacted = set(timeline.get_redactions(conn, [e.event_id for e in evs]))
    states = fr.server_states_before(conn, evs, origin) if origin is not None else {}
    out: list[dict[str, Any]] = []
    for ev in evs:
        pdu = ev.json
        hide = ev.event_id in redacted or (
            origin is not None
            and not event_visible_to_server(pdu, states.get(ev.event_id, {}), origin, server_joined_now=True)
        )
        out.append(redact(pdu, version_of(ev.room_id)) if hide else pdu)
    return out


def _required_arg(name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise MatrixError("M_MISSING_PARAM", 400, f"missing query parameter {name!r}")
    return value


# ------------------------------------------------------------------ /event


def _compute_event(conn: sa.Connection, event_id: str, origin: str) -> tuple[str, list[dict[str, Any]]]:
    ev = get_events(conn, [event_id]).get(event_id)
    if ev is None or ev.rejection_reason is not None:
        raise not_found(f"event {event_id} not found")
    allowed, in_room = room_access(conn, ev.room_id, origin)
    if not allowed:
        raise forbidden(f"server {origin} is denied by the room's server ACL")
    if not in_room:
        raise forbidden("Host not in room.")
    return ev.room_id, served_pdus(conn, [ev], origin=origin)


@federation_route(blueprint, "/event/<event_id>", ["GET"])
async def get_event(origin: str, event_id: str):
    """events.yaml ``GET /event/{eventId}``: "A transaction containing a single PDU"."""
    d = deps()
    _room_id, pdus = await d.db.read(_compute_event, event_id, origin)
    return json_response(_transaction(d, pdus))


# ------------------------------------------------------------------ /state, /state_ids


async def _state_before(d: Deps, room_id: str, event_id: str) -> StateAt:
    result = await ask_room(d, room_id, lambda reply: GetStateBefore(event_id=event_id, reply=reply))
    match result:
        case StateAt():
            return result
        case UnknownEvent() | UnknownRoom():
            # events.yaml 404: "The given event_id was not found or the server doesn't
            # know about the state at that event to return anything useful."
            raise not_found(f"Could not find event {event_id}")
    raise AssertionError(f"unexpected answer to GetStateBefore: {result!r}")


def _state_and_auth(conn: sa.Connection, state_ids: list[str], full: bool) -> dict[str, Any]:
    chain = fr.get_auth_chain(conn, state_ids)
    if not full:
        return {"pdu_ids": state_ids, "auth_chain_ids": [e.event_id for e in chain]}
    found = get_events(conn, state_ids)
    state = sorted(found.values(), key=lambda e: (e.depth, e.stream_ordering))
    return {"pdus": served_pdus(conn, state), "auth_chain": served_pdus(conn, chain)}


async def _state_view(origin: str, room_id: str, *, full: bool):
    d = deps()
    event_id = _required_arg("event_id")
    await check_room_access(d, room_id, origin)
    state_at = await _state_before(d, room_id, event_id)
    body = await d.db.read(_state_and_auth, sorted(state_at.state.values()), full)
    return json_response(body)


@federation_route(blueprint, "/state/<room_id>", ["GET"])
async def get_room_state(origin: str, room_id: str):
    """events.yaml ``GET /state/{roomId}``: "The fully resolved state for the room,
    prior to considering any state changes induced by the requested event. Includes
    the authorisation chain for the events."""
    return await _state_view(origin, room_id, full=True)


@federation_route(blueprint, "/state_ids/<room_id>", ["GET"])
async def get_room_state_ids(origin: str, room_id: str):
    """events.yaml ``GET /state_ids/{roomId}``: the same, as event IDs."""
    return await _state_view(origin, room_id, full=False)


# ------------------------------------------------------------------ /event_auth


def _compute_event_auth(conn: sa.Connection, room_id: str, event_id: str) -> dict[str, Any]:
    ev = get_events(conn, [event_id]).get(event_id)
    if ev is None or ev.room_id != room_id:
        raise not_found(f"event {event_id} not found in {room_id}")
    return {"auth_chain": served_pdus(conn, fr.get_auth_chain(conn, [event_id]))}


@federation_route(blueprint, "/event_auth/<room_id>/<event_id>", ["GET"])
async def get_event_auth(origin: str, room_id: str, event_id: str):
    """event_auth.yaml: "Retrieves the complete auth chain for a given event"."""
    d = deps()
    await check_room_access(d, room_id, origin)
    return json_response(await d.db.read(_compute_event_auth, room_id, event_id))


# ------------------------------------------------------------------ /backfill


def _compute_backfill(conn: sa.Connection, room_id: str, from_ids: list[str], limit: int, origin: str) -> list[dict[str, Any]]:
    evs = fr.backfill(conn, room_id, from_ids, limit)
    return served_pdus(conn, evs, origin=origin, room_version=timeline.get_room_version(conn, room_id))


@federation_route(blueprint, "/backfill/<room_id>", ["GET"])
async def get_backfill(origin: str, room_id: str):
    """backfill.yaml ``GET /backfill/{roomId}?v=…&limit=…``: the ``v`` events and the
    events before them, highest depth first (``storage.federation_reads.backfill``)."""
    d = deps()
    from_ids = [v for v in request.args.getlist("v") if v]
    if not from_ids:
        raise MatrixError("M_MISSING_PARAM", 400, "missing query parameter 'v'")
    raw_limit = _required_arg("limit")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", 400, "query parameter 'limit' must be an integer") from None
    if limit < 0:
        raise MatrixError("M_INVALID_PARAM", 400, "query parameter 'limit' must not be negative")
    await check_room_access(d, room_id, origin)
    pdus = await d.db.read(_compute_backfill, room_id, from_ids, min(limit, MAX_BACKFILL), origin)
    return json_response(_transaction(d, pdus))


# ------------------------------------------------------------------ /get_missing_events


def _event_id_list(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if value is None:
        raise MatrixError("M_MISSING_PARAM", 400, f"missing {field!r}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{field!r} must be an array of event IDs")
    return value


def _int_field(body: dict[str, Any], field: str, default: int) -> int:
    value = body.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"{field!r} must be an integer")
    return value


def _compute_missing(
    conn: sa.Connection, room_id: str, earliest: list[str], latest: list[str], limit: int, min_depth: int, origin: str
) -> list[dict[str, Any]]:
    evs = fr.missing_events(conn, room_id, earliest, latest, limit=limit, min_depth=min_depth)
    return served_pdus(conn, evs, origin=origin, room_version=timeline.get_room_version(conn, room_id))


@federation_route(blueprint, "/get_missing_events/<room_id>", ["POST"])
async def post_get_missing_events(origin: str, room_id: str):
    """backfill.yaml ``POST /get_missing_events/{roomId}``: "a breadth-first walk of
    the prev_events for the latest_events, ignoring any events in earliest_events and
    stopping at the limit"; oldest first."""
    d = deps()
    body = await json_body()
    earliest = _event_id_list(body, "earliest_events")
    latest = _event_id_list(body, "latest_events")
    limit = _int_field(body, "limit", _DEFAULT_MISSING_LIMIT)
    min_depth = _int_field(body, "min_depth", 0)
    await check_room_access(d, room_id, origin)
    events = await d.db.read(
        _compute_missing, room_id, earliest, latest, max(0, min(limit, MAX_MISSING_EVENTS)), min_depth, origin
    )
    return json_response({"events": events})
