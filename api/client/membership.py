"""Membership: join (by ID or alias), leave, invite, kick, ban, unban, forget,
knock, joined_rooms.

Theory of operation
-------------------
Every membership change is an ``m.room.member`` state event sent through the
room's actor, so the auth rules decide (join rules, bans, power levels for kick
and ban …): the views only shape the content (``reason``, the profile's
``displayname``/``avatar_url`` on joins, ``is_direct``) and map the answer.

Rooms this server is not in (unknown, or only an invite/knock is held, or no
local user is joined) are joined, left or knocked upon over federation
(``api.federation.perform``: make/send handshakes through the ``via`` servers, the
alias's servers, the inviter's server and the room ID's domain). An invite of
another server's user is co-signed by that server (``/invite``) before it enters
the room; a local invitee must exist (404 otherwise).
``forget`` records the room in ``forgotten_rooms`` once the user has left, which
hides it from ``/sync``'s ``leave`` section.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Blueprint, request

from api.auth import requester
from api.body import get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, not_found
from api.responses import json_response
from api.federation.perform import candidate_servers, invite_remote, join_remote, membership_remote
from api.rooms_service import ask_room, raise_for, send_event
from api.routes import client_route
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.inbound import path_segment
from roomactors.protocol.ids import is_valid_user_id
from roomactors.room.messages import CommitPrepared, GetState, PrepareEvent, Prepared, SendResult, StateView
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


async def resolve_room(d: Deps, room_id_or_alias: str, servers: list[str] | None = None) -> str:
    """A room ID, or the room an alias names (a remote alias through the alias's
    server, ``/query/directory``); the alias's servers are appended to ``servers``."""
    if room_id_or_alias.startswith("!"):
        return room_id_or_alias
    if room_id_or_alias.startswith("#"):
        domain = room_id_or_alias.split(":", 1)[-1]
        if domain != d.server_name and d.federation is not None:
            try:
                answer = await d.federation.get_json(
                    domain, "/_matrix/federation/v1/query/directory", query={"room_alias": room_id_or_alias}
                )
            except (FederationError, FederationUnreachable):
                answer = None
            room_id = answer.get("room_id") if isinstance(answer, dict) else None
            if not isinstance(room_id, str):
                raise not_found(f"room alias {room_id_or_alias} not found")
            if servers is not None:
                servers.extend(s for s in answer.get("servers") or [] if isinstance(s, str))
                servers.append(domain)
            return room_id
        room_id = await d.db.read(directory.get_alias, room_id_or_alias)
        if room_id is None:
            raise not_found(f"room alias {room_id_or_alias} not found")
        return room_id
    raise MatrixError("M_INVALID_PARAM", 400, f"{room_id_or_alias!r} is neither a room ID nor a room alias")


def _via() -> list[str]:
    """``via`` (v1.12) and the older ``server_name`` query parameters."""
    return [*request.args.getlist("via"), *request.args.getlist("server_name")]


async def _remote_servers(d: Deps, room_id: str, user_id: str, via: list[str]) -> list[str] | None:
    """The servers to go through if this server is not in the room (no local user
    joined), else None. The inviter's server (from a held invite) comes after
    ``via``."""
    if d.federation is None:
        return None
    state = await ask_room(d, room_id, lambda reply: GetState(reply=reply))
    if isinstance(state, StateView) and any(u.split(":", 1)[1] == d.server_name for u in state.joined_members):
        return None
    extra = list(via)
    membership = (await d.db.read(timeline.get_memberships, user_id)).get(room_id)
    if membership is not None and membership.membership in ("invite", "knock"):
        sender = membership.event.get("sender")
        if isinstance(sender, str) and ":" in sender:
            extra.append(sender.split(":", 1)[1])
    servers = candidate_servers(d, room_id, extra)
    return servers or None


async def join_room(
    d: Deps, user_id: str, room_id: str, body: dict[str, Any] | None = None, via: list[str] | None = None
) -> str:
    content: dict[str, Any] = {"membership": "join"}
    content.update(await d.db.read(accounts.get_profile, user_id))
    _reason(body or {}, content)
    servers = await _remote_servers(d, room_id, user_id, via or [])
    if servers:
        return await join_remote(d, room_id, user_id, servers, content)
    await send_event(d, room_id, user_id, "m.room.member", content, user_id)
    return room_id


@client_route(blueprint, "/join/<path:room_id_or_alias>", ["POST"])
async def join_by_id_or_alias(room_id_or_alias: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    via = _via()
    room_id = await resolve_room(d, room_id_or_alias, via)
    await join_room(d, who.user_id, room_id, body, via)
    return json_response({"room_id": room_id})


@client_route(blueprint, "/rooms/<room_id>/join", ["POST"])
async def join_by_id(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    await join_room(d, who.user_id, room_id, body, _via())
    return json_response({"room_id": room_id})


@client_route(blueprint, "/knock/<path:room_id_or_alias>", ["POST"])
async def knock(room_id_or_alias: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    via = _via()
    room_id = await resolve_room(d, room_id_or_alias, via)
    content = _reason(body, {"membership": "knock"})
    content.update(await d.db.read(accounts.get_profile, who.user_id))
    servers = await _remote_servers(d, room_id, who.user_id, via)
    if servers:
        await membership_remote(d, room_id, who.user_id, "knock", servers, content)
    else:
        await send_event(d, room_id, who.user_id, "m.room.member", content, who.user_id)
    return json_response({"room_id": room_id})


@client_route(blueprint, "/rooms/<room_id>/leave", ["POST"])
async def leave(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    content = _reason(body, {"membership": "leave"})
    servers = await _remote_servers(d, room_id, who.user_id, [])
    if servers:
        # Rejecting an invite or rescinding a knock in a room we are not in.
        await membership_remote(d, room_id, who.user_id, "leave", servers, content)
    else:
        await send_event(d, room_id, who.user_id, "m.room.member", content, who.user_id)
    return json_response({})


async def check_invitee(d: Deps, user_id: str) -> None:
    """An invite must reach someone: a local user who exists, or another server's
    user while federation is on (that server co-signs the invite or refuses it)."""
    if user_id.split(":", 1)[1] != d.server_name:
        if d.federation is None:
            raise MatrixError("M_FORBIDDEN", 403, "inviting users of other servers needs federation (disabled)")
        return
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
    if membership == "invite" and target.split(":", 1)[1] != d.server_name:
        await invite_remote_user(d, room_id, who.user_id, target, content)
        return json_response({})
    await send_event(d, room_id, who.user_id, "m.room.member", content, target)
    return json_response({})


async def invite_remote_user(d: Deps, room_id: str, sender: str, target: str, content: dict[str, Any]) -> str:
    """Invite another server's user: prepare (authorised, signed, not committed),
    have the invitee's server co-sign it (``/invite``), then commit and send it."""
    prepared = await ask_room(
        d, room_id,
        lambda reply: PrepareEvent(sender=sender, type="m.room.member", content=content, state_key=target, reply=reply),
    )
    if not isinstance(prepared, Prepared):
        raise_for(prepared, room_id)
        raise MatrixError("M_UNKNOWN", 500, "unexpected answer")
    signed = await invite_remote(d, room_id, prepared.room_version, prepared.pdu, prepared.state_events)
    result = await ask_room(d, room_id, lambda reply: CommitPrepared(pdu=signed, reply=reply))
    if not isinstance(result, SendResult):
        raise_for(result, room_id)
        raise MatrixError("M_UNKNOWN", 500, "unexpected answer")
    return result.event_id


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
