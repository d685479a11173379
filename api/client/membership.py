"""Membership: join (by ID or alias), leave, invite, kick, ban, unban, forget,
knock, joined_rooms.

Theory of operation
-------------------
Every membership change is an ``m.room.member`` state event sent through the
room's actor, so the auth rules decide (join rules, bans, power levels for kick
and ban …): the views only shape the content (``reason``, the profile's
``displayname``/``avatar_url`` on joins, ``is_direct``) and map the answer.

Rooms this server does not know (no local events) answer 404 ``M_NOT_FOUND``:
joining over federation belongs to the federation issue and is not faked. For the
same reason an invite (``/invite`` and ``/createRoom``'s ``invite``, through
``check_invitee``) must name an existing local user: 403 for another server's
user, 404 for an unknown one.
``forget`` records the room in ``forgotten_rooms`` once the user has left, which
hides it from ``/sync``'s ``leave`` section.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Blueprint

from api.auth import requester
from api.body import get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, not_found
from api.responses import json_response
from api.rooms_service import send_event
from api.routes import client_route
from roomactors.protocol.ids import is_valid_user_id
from storage import accounts, directory, timeline
from storage.schema import forgotten_rooms

__all__ = ["blueprint", "check_invitee", "join_room", "leave_all_rooms", "resolve_room"]

blueprint = Blueprint("membership", __name__)


def _reason(body: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    reason = body.get("reason")
    if reason is not None:
        if not isinstance(reason, str):
            raise MatrixError("M_BAD_JSON", 400, "'reason' must be a string")
        content["reason"] = reason
    return content


async def resolve_room(d: Deps, room_id_or_alias: str) -> str:
    if room_id_or_alias.startswith("!"):
        return room_id_or_alias
    if room_id_or_alias.startswith("#"):
        room_id = await d.db.read(directory.get_alias, room_id_or_alias)
        if room_id is None:
            raise not_found(f"room alias {room_id_or_alias} not found")
        return room_id
    raise MatrixError("M_INVALID_PARAM", 400, f"{room_id_or_alias!r} is neither a room ID nor a room alias")


async def join_room(d: Deps, user_id: str, room_id: str, body: dict[str, Any] | None = None) -> str:
    content: dict[str, Any] = {"membership": "join"}
    content.update(await d.db.read(accounts.get_profile, user_id))
    _reason(body or {}, content)
    await send_event(d, room_id, user_id, "m.room.member", content, user_id)
    return room_id


@client_route(blueprint, "/join/<path:room_id_or_alias>", ["POST"])
async def join_by_id_or_alias(room_id_or_alias: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    room_id = await resolve_room(d, room_id_or_alias)
    await join_room(d, who.user_id, room_id, body)
    return json_response({"room_id": room_id})


@client_route(blueprint, "/rooms/<room_id>/join", ["POST"])
async def join_by_id(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    await join_room(d, who.user_id, room_id, body)
    return json_response({"room_id": room_id})


@client_route(blueprint, "/knock/<path:room_id_or_alias>", ["POST"])
async def knock(room_id_or_alias: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    room_id = await resolve_room(d, room_id_or_alias)
    content = _reason(body, {"membership": "knock"})
    content.update(await d.db.read(accounts.get_profile, who.user_id))
    await send_event(d, room_id, who.user_id, "m.room.member", content, who.user_id)
    return json_response({"room_id": room_id})


@client_route(blueprint, "/rooms/<room_id>/leave", ["POST"])
async def leave(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    await send_event(d, room_id, who.user_id, "m.room.member", _reason(body, {"membership": "leave"}), who.user_id)
    return json_response({})


async def check_invitee(d: Deps, user_id: str) -> None:
    """An invite must reach someone: a user of this server who exists (inviting
    other servers' users needs federation, which is not built yet)."""
    if user_id.split(":", 1)[1] != d.server_name:
        raise MatrixError("M_FORBIDDEN", 403, "inviting users of other servers needs federation (not supported yet)")
    if await d.db.read(accounts.get_user, user_id) is None:
        raise not_found(f"user {user_id} does not exist")


def _target(body: dict[str, Any]) -> str:
    user_id = get_str(body, "user_id")
    if not is_valid_user_id(user_id):
        raise MatrixError("M_INVALID_PARAM", 400, f"{user_id!r} is not a valid user ID")
    return user_id


async def _member_change(room_id: str, membership: str, *, need_current: str | None = None):
    d = deps()
    who = await requester()
    body = await json_body()
    target = _target(body)
    content = _reason(body, {"membership": membership})
    if membership == "invite":
        if body.get("is_direct") is True:
            content["is_direct"] = True
        await check_invitee(d, target)
    if need_current is not None:
        members = await d.db.read(timeline.get_room_members, room_id)
        current = members.get(target, {}).get("content", {}).get("membership")
        if current != need_current:
            raise MatrixError("M_FORBIDDEN", 403, f"{target} is not {need_current}ned" if need_current == "ban"
                              else f"{target}'s membership is not {need_current}")
    await send_event(d, room_id, who.user_id, "m.room.member", content, target)
    return json_response({})


@client_route(blueprint, "/rooms/<room_id>/invite", ["POST"])
async def invite(room_id: str):
    return await _member_change(room_id, "invite")


@client_route(blueprint, "/rooms/<room_id>/kick", ["POST"])
async def kick(room_id: str):
    return await _member_change(room_id, "leave")


@client_route(blueprint, "/rooms/<room_id>/ban", ["POST"])
async def ban(room_id: str):
    return await _member_change(room_id, "ban")


@client_route(blueprint, "/rooms/<room_id>/unban", ["POST"])
async def unban(room_id: str):
    return await _member_change(room_id, "leave", need_current="ban")


@client_route(blueprint, "/rooms/<room_id>/forget", ["POST"])
async def forget(room_id: str):
    d = deps()
    who = await requester()
    memberships = await d.db.read(timeline.get_memberships, who.user_id)
    current = memberships.get(room_id)
    if current is None:
        raise not_found("you have never been in this room")
    if current.membership in ("join", "invite", "knock"):
        raise MatrixError("M_UNKNOWN", 400, "leave the room before forgetting it")

    def write(conn: sa.Connection) -> None:
        conn.execute(sa.delete(forgotten_rooms).where(
            forgotten_rooms.c.user_id == who.user_id, forgotten_rooms.c.room_id == room_id))
        conn.execute(sa.insert(forgotten_rooms).values(user_id=who.user_id, room_id=room_id))

    await d.db.write(write)
    return json_response({})


@client_route(blueprint, "/joined_rooms", ["GET"])
async def joined_rooms():
    d = deps()
    who = await requester()
    memberships = await d.db.read(timeline.get_memberships, who.user_id)
    return json_response({"joined_rooms": sorted(r for r, m in memberships.items() if m.membership == "join")})


async def leave_all_rooms(d: Deps, user_id: str) -> None:
    """Deactivation: leave every joined room, reject invites, rescind knocks."""
    memberships = await d.db.read(timeline.get_memberships, user_id)
    for room_id, m in memberships.items():
        if m.membership in ("join", "invite", "knock"):
            try:
                await send_event(d, room_id, user_id, "m.room.member", {"membership": "leave"}, user_id)
            except MatrixError:
                continue  # best effort: a room that refuses keeps the membership
