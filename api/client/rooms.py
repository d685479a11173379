"""Room writes: createRoom, send, state, redact (reads live in ``room_reads``).

Theory of operation
-------------------
Views are thin (house rule 4): authenticate, validate, rate-limit, then ask the
room's actor through ``api.rooms_service`` and answer. The actor builds, signs and
authorises each event against the room's state (the auth rules are the
permission check for writes — no view re-implements them, redactions aside, see
below), commits it, and only then replies, so a 200 means the event is durable.

* ``/createRoom`` plans the whole sequence purely (``roomactors.room.plans``:
  presets, overrides, v12 creators, and a dry run through the auth rules), checks
  that every invitee can be invited (a local, existing user: the same rule as
  ``/invite``) before anything exists, reserves the alias, then sends the create
  event and the initial events to the new room's actor in ONE mailbox message
  (``CreateRoom.initial_events``), then the invites.
* ``PUT /state/{type}`` and ``PUT /state/{type}/`` both mean the empty state key
  ("the trailing slash on this endpoint is optional").
* ``PUT /send/{type}/{txnId}`` and ``PUT /redact/{eventId}/{txnId}`` carry the
  transaction ID to the actor (``TxnRecord``, scoped to user, device, room and
  txnId), which answers a repeat with the original event — idempotent across
  restarts because the mapping commits with the event. ``{eventId}`` uses a
  ``path`` converter: rooms/v3 event IDs are standard base64 and may hold ``/``
  (percent-encoded by clients, decoded before routing).
* Redactions are the one permission check a view makes itself: from v3 the auth
  rules accept a redaction of anyone's event and leave "only the sender or a user
  with the redact level" to the serving side, so ``redact`` refuses (403) before
  sending what it would never apply; the target must be an event of the room (404).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from api.auth import requester
from api.body import json_body
from api.deps import Deps, deps
from api.client.membership import check_invitee, invite_remote_user
from api.errors import MatrixError, forbidden, not_found
from api.responses import json_response
from api.rooms_service import create_room_events, get_state_view, send_event
from api.routes import client_route
from roomactors.protocol.auth import get_power_level
from roomactors.protocol.ids import RoomId, UserId
from roomactors.protocol.room_versions import DEFAULT_ROOM_VERSION, get_rules
from roomactors.room.events import build_create_event
from roomactors.room.messages import EventSpec
from roomactors.room.plans import PlanError, plan_create_room
from storage import accounts, directory, timeline
from storage.rooms import TxnRecord

__all__ = ["blueprint", "membership_of", "user_power", "required_power"]

blueprint = Blueprint("rooms", __name__)


def membership_of(event: dict[str, Any] | None) -> str | None:
    content = event.get("content") if event else None
    value = content.get("membership") if isinstance(content, dict) else None
    return value if isinstance(value, str) else None


def user_power(view: Any, user_id: str) -> int | float:
    """The user's power level in the room's current state (v12 creators: infinite)."""
    rules = get_rules(view.room_version)
    pl_id = view.current_state.get(("m.room.power_levels", ""))
    create_id = view.current_state.get(("m.room.create", ""))
    return get_power_level(
        user_id,
        view.state_events[pl_id] if pl_id else None,
        view.state_events[create_id] if create_id else None,
        rules,
    )


def required_power(view: Any, key: str, default: int) -> int | float:
    """A top-level level of the room's power levels (``redact``, ``invite`` …)."""
    pl_id = view.current_state.get(("m.room.power_levels", ""))
    content = view.state_events[pl_id].get("content", {}) if pl_id else {}
    value = content.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _event_type(value: str) -> str:
    if not value or len(value.encode()) > 255:
        raise MatrixError("M_INVALID_PARAM", 400, "event type must be 1-255 bytes")
    return value


# --------------------------------------------------------------------- createRoom


class _CreateClock:
    """``origin_server_ts`` for create events: the wall clock, but strictly
    increasing within the process. In room version 12 the room ID is the create
    event's hash, and the create event of two rooms made by one user in the same
    millisecond would otherwise be identical (same room ID: the second create
    fails with M_ROOM_IN_USE — seen with concurrent createRoom calls)."""

    last_ms = 0

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def time_ms(self) -> int:
        now = max(self._clock.time_ms(), _CreateClock.last_ms + 1)
        _CreateClock.last_ms = now
        return now



@client_route(blueprint, "/createRoom", ["POST"])
async def create_room():
    d = deps()
    who = await requester()
    d.ratelimiter.check("room_create", who.user_id)
    body = await json_body()
    profile = await d.db.read(accounts.get_profile, who.user_id)
    try:
        plan = plan_create_room(body, creator=who.user_id, server_name=d.server_name, profile=profile,
                                default_version=DEFAULT_ROOM_VERSION)
    except PlanError as e:
        raise MatrixError(e.errcode, e.status, e.error) from None
    for invitee in plan.invites:
        await check_invitee(d, invitee)  # before anything exists: no half-made rooms
    rules = get_rules(plan.room_version)
    content_extra = {k: v for k, v in plan.create_content.items() if k not in ("room_version", "creator")}
    server_assigned = None
    if rules.create_event_has_room_id:
        import secrets

        server_assigned = RoomId(f"!{secrets.token_urlsafe(18)}:{d.server_name}")
    create_event, room_id = build_create_event(
        plan.room_version,
        creator=UserId(who.user_id),
        server_name=d.server_name,
        signing_key=d.signing_key,
        clock=_CreateClock(d.clock),
        content_extra=content_extra,
        room_id_for_v1_11=server_assigned,
    )
    if plan.room_alias is not None:
        try:
            await d.db.write(directory.create_alias, plan.room_alias, room_id, who.user_id)
        except directory.AliasExistsError:
            raise MatrixError("M_ROOM_IN_USE", 400, f"the alias {plan.room_alias} is already in use") from None
    specs = tuple(
        EventSpec(sender=UserId(who.user_id), type=e.type, content=e.content, state_key=e.state_key)
        for e in plan.events
    )
    try:
        await create_room_events(d, room_id, create_event, specs)
    except MatrixError:
        if plan.room_alias is not None:
            await d.db.write(directory.delete_alias, plan.room_alias)
        raise
    if plan.visibility == "public":
        await d.db.write(directory.set_visibility, room_id, "public")
    for invitee in plan.invites:
        if invitee.split(":", 1)[1] != d.server_name:
            await invite_remote_user(d, room_id, who.user_id, invitee, plan.invite_content())
        else:
            await send_event(d, room_id, who.user_id, "m.room.member", plan.invite_content(), invitee)
    return json_response({"room_id": room_id})


# ------------------------------------------------------------------------ sending


def _txn(who: Any, txn_id: str) -> TxnRecord:
    if not txn_id or len(txn_id) > 255:
        raise MatrixError("M_INVALID_PARAM", 400, "txnId must be 1-255 characters")
    return TxnRecord(user_id=who.user_id, device_id=who.device_id, txn_id=txn_id)


@client_route(blueprint, "/rooms/<room_id>/send/<event_type>/<txn_id>", ["PUT"])
async def send_message(room_id: str, event_type: str, txn_id: str):
    d = deps()
    who = await requester()
    d.ratelimiter.check("message", who.user_id)
    content = await json_body()
    result = await send_event(d, room_id, who.user_id, _event_type(event_type), content, txn=_txn(who, txn_id))
    return json_response({"event_id": result.event_id})


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>", ["PUT"])
async def put_state_empty_key(room_id: str, event_type: str):
    return await _put_state(room_id, event_type, "")


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>/", ["PUT"])
async def put_state_empty_key_slash(room_id: str, event_type: str):
    # "If the state key is empty, the trailing slash on this endpoint is optional":
    # clients send both forms.
    return await _put_state(room_id, event_type, "")


@client_route(blueprint, "/rooms/<room_id>/state/<event_type>/<path:state_key>", ["PUT"])
async def put_state(room_id: str, event_type: str, state_key: str):
    return await _put_state(room_id, event_type, state_key)


async def _put_state(room_id: str, event_type: str, state_key: str):
    d = deps()
    who = await requester()
    d.ratelimiter.check("message", who.user_id)
    content = await json_body()
    event_type = _event_type(event_type)
    if event_type == "m.room.canonical_alias":
        await _check_canonical_alias(d, room_id, content)
    result = await send_event(d, room_id, who.user_id, event_type, content, state_key)
    return json_response({"event_id": result.event_id})


async def _check_canonical_alias(d: Deps, room_id: str, content: dict[str, Any]) -> None:
    """client-server "m.room.canonical_alias": the server MUST check that each local
    alias exists and points at this room (M_BAD_ALIAS otherwise)."""
    aliases = []
    if "alias" in content and content["alias"] is not None:
        aliases.append(content["alias"])
    alt = content.get("alt_aliases", [])
    if not isinstance(alt, list):
        raise MatrixError("M_INVALID_PARAM", 400, "alt_aliases must be a list")
    aliases.extend(alt)
    for alias in aliases:
        if not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias:
            raise MatrixError("M_INVALID_PARAM", 400, f"{alias!r} is not a room alias")
        if alias.split(":", 1)[1] == d.server_name:
            if await d.db.read(directory.get_alias, alias) != room_id:
                raise MatrixError("M_BAD_ALIAS", 400, f"{alias} does not point to this room")


@client_route(blueprint, "/rooms/<room_id>/redact/<path:event_id>/<txn_id>", ["PUT"])
async def redact(room_id: str, event_id: str, txn_id: str):
    d = deps()
    who = await requester()
    d.ratelimiter.check("message", who.user_id)
    body = await json_body(allow_empty=True)
    content: dict[str, Any] = {}
    if "reason" in body:
        if not isinstance(body["reason"], str):
            raise MatrixError("M_BAD_JSON", 400, "'reason' must be a string")
        content["reason"] = body["reason"]
    view = await get_state_view(d, room_id)
    target = await d.db.read(timeline.get_event, event_id)
    if target is None or target.room_id != room_id:
        raise not_found("event not found")
    # A user may always redact their own events; otherwise the auth rules' power
    # check applies (v1-v2 check it in the auth rules, v3+ only at serving time, so
    # we check the redact level here before sending: client-server "Redactions").
    if target.json.get("sender") != who.user_id:
        if user_power(view, who.user_id) < required_power(view, "redact", 50):
            raise forbidden("you do not have permission to redact other users' events")
    content["redacts"] = event_id  # moved top-level for room versions 1-10 (room.events)
    result = await send_event(d, room_id, who.user_id, "m.room.redaction", content, txn=_txn(who, txn_id))
    return json_response({"event_id": result.event_id})
