"""Membership handshakes, resident side: ``/make_join`` + ``/send_join``,
``/make_leave`` + ``/send_leave``, ``/make_knock`` + ``/send_knock``, and ``/invite``
(server-server API "Joining Rooms", "Knocking upon a room", "Leaving Rooms
(Rejecting Invites)", "Inviting to a room"; joins-v1/v2.yaml, leaving-v2.yaml,
knocks.yaml, invites-v2.yaml).

Theory of operation
-------------------
A remote server cannot build a membership event for a room it is not in: it has no
prev events or auth events. So it asks us (a resident server) for a template::

    remote ── GET make_join/{room}/{user}?ver=… ──► room actor: MakeMembership
           ◄──────── {room_version, event} ───────  (built on the current state,
                                                     auth rules dry-run: 403 if refused)
    remote signs it (its hashes, its signature, event ID)
    remote ── PUT v2/send_join/{room}/{event} ────► steps 1-3 here, then the actor:
           ◄── {state, auth_chain, event, …} ────── SubmitMembership: checks 4-6 must
                                                     accept it; then it is sent on to
                                                     every other server in the room

Every view checks, before asking the room: the user belongs to the requesting
server (a server may only make its own users' memberships), the room's
``m.room.server_acl`` allows it (spec "Server Access Control Lists"), and for
``make_join``/``make_knock`` that the server supports the room version (``ver``;
else 400 ``M_INCOMPATIBLE_ROOM_VERSION``).

``/invite`` is the other direction: a server inviting one of *our* users asks us
to co-sign the invite; we check it (steps 1-3 with the given room version, the
invitee is ours, the sender is the origin's) and answer it with our signature.
The invite is stored so the user sees it (``InviteReceived``).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from api.body import json_body
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, forbidden, not_found
from api.federation.x_matrix import federation_route
from api.responses import json_response
from api.rooms_service import ask_room, raise_for
from roomactors.inbound import CheckedPdu, check_pdus
from roomactors.protocol.ids import UserId
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS
from roomactors.protocol.server_acl import server_acl_allows
from roomactors.protocol.signing import sign_event
from roomactors.room.messages import (
    MakeMembership,
    MembershipAccepted,
    MembershipTemplate,
    ReceiveInvite,
    SendResult,
    SubmitMembership,
)
from storage import staging

__all__ = ["blueprint"]

blueprint = Blueprint("federation_membership", __name__)


def _user_of(origin: str, user_id: str) -> None:
    if not user_id.startswith("@") or user_id.split(":", 1)[-1] != origin:
        raise forbidden(f"{user_id} is not a user of {origin}")


async def _room_checks(d: Deps, room_id: str, origin: str) -> str:
    """The room's version; 404 if we do not hold it, 403 if its ACL denies ``origin``."""
    versions, acls = await d.db.read(_info, room_id)
    version = versions.get(room_id)
    if version is None:
        raise not_found(f"room {room_id} is not known to this server")
    if not server_acl_allows(acls.get(room_id), origin):
        raise forbidden(f"server {origin} is denied by the room's m.room.server_acl")
    return version


def _info(conn: Any, room_id: str) -> tuple[dict[str, str], dict[str, Any]]:
    return staging.room_versions(conn, [room_id]), staging.server_acls(conn, [room_id])


async def _make(origin: str, room_id: str, user_id: str, membership: str, *, check_ver: bool) -> Any:
    d = deps()
    _user_of(origin, user_id)
    version = await _room_checks(d, room_id, origin)
    if check_ver:
        supported = request.args.getlist("ver") or ["1"]  # joins-v1.yaml: absent means "1"
        if version not in supported:
            raise MatrixError(
                "M_INCOMPATIBLE_ROOM_VERSION",
                400,
                f"room version {version} is not among the versions {origin} supports",
                extra={"room_version": version},
            )
    result = await ask_room(
        d, room_id, lambda reply: MakeMembership(user_id=UserId(user_id), membership=membership, reply=reply)
    )
    if not isinstance(result, MembershipTemplate):
        raise_for(result, room_id)
        raise MatrixError("M_UNKNOWN", 500, "unexpected answer")
    return json_response({"room_version": result.room_version, "event": result.event})


async def _send(origin: str, room_id: str, event_id: str, membership: str) -> MembershipAccepted:
    d = deps()
    version = await _room_checks(d, room_id, origin)
    body = await json_body()
    (checked,) = await check_pdus([body], {room_id: version}, d.keys)
    if not isinstance(checked, CheckedPdu):
        raise bad_json(f"invalid {membership} event: {checked.reason}")
    if checked.redacted:
        raise bad_json(f"the {membership} event's content hash does not match")
    if checked.event_id != event_id:
        raise bad_json(f"the event's ID is {checked.event_id}, not {event_id}")
    sender = checked.json.get("sender")
    _user_of(origin, sender if isinstance(sender, str) else "")
    result = await ask_room(
        d, room_id, lambda reply: SubmitMembership(pdu=checked.json, origin=origin, membership=membership, reply=reply)
    )
    if not isinstance(result, MembershipAccepted):
        raise_for(result, room_id)
        raise MatrixError("M_UNKNOWN", 500, "unexpected answer")
    return result


@federation_route(blueprint, "/make_join/<path:room_id>/<path:user_id>", ["GET"])
async def make_join(origin: str, room_id: str, user_id: str) -> Any:
    return await _make(origin, room_id, user_id, "join", check_ver=True)


@federation_route(blueprint, "/make_leave/<path:room_id>/<path:user_id>", ["GET"])
async def make_leave(origin: str, room_id: str, user_id: str) -> Any:
    return await _make(origin, room_id, user_id, "leave", check_ver=False)


@federation_route(blueprint, "/make_knock/<path:room_id>/<path:user_id>", ["GET"])
async def make_knock(origin: str, room_id: str, user_id: str) -> Any:
    return await _make(origin, room_id, user_id, "knock", check_ver=True)


def _join_body(d: Deps, accepted: MembershipAccepted) -> dict[str, Any]:
    return {
        "origin": d.server_name,
        "state": list(accepted.state),
        "auth_chain": list(accepted.auth_chain),
        "event": accepted.event,
        "members_omitted": False,
        "servers_in_room": list(accepted.servers_in_room),
    }


@federation_route(blueprint, "/send_join/<path:room_id>/<path:event_id>", ["PUT"], versions=("v2",))
async def send_join_v2(origin: str, room_id: str, event_id: str) -> Any:
    accepted = await _send(origin, room_id, event_id, "join")
    return json_response(_join_body(deps(), accepted))


@federation_route(blueprint, "/send_join/<path:room_id>/<path:event_id>", ["PUT"], versions=("v1",))
async def send_join_v1(origin: str, room_id: str, event_id: str) -> Any:
    # joins-v1.yaml (deprecated): the v2 body wrapped as [200, body].
    accepted = await _send(origin, room_id, event_id, "join")
    return json_response([200, _join_body(deps(), accepted)])


@federation_route(blueprint, "/send_leave/<path:room_id>/<path:event_id>", ["PUT"], versions=("v2",))
async def send_leave_v2(origin: str, room_id: str, event_id: str) -> Any:
    await _send(origin, room_id, event_id, "leave")
    return json_response({})


@federation_route(blueprint, "/send_leave/<path:room_id>/<path:event_id>", ["PUT"], versions=("v1",))
async def send_leave_v1(origin: str, room_id: str, event_id: str) -> Any:
    await _send(origin, room_id, event_id, "leave")
    return json_response([200, {}])


@federation_route(blueprint, "/send_knock/<path:room_id>/<path:event_id>", ["PUT"])
async def send_knock(origin: str, room_id: str, event_id: str) -> Any:
    accepted = await _send(origin, room_id, event_id, "knock")
    return json_response({"knock_room_state": list(accepted.stripped_state)})


@federation_route(blueprint, "/invite/<path:room_id>/<path:event_id>", ["PUT"], versions=("v2",))
async def invite_v2(origin: str, room_id: str, event_id: str) -> Any:
    d = deps()
    body = await json_body()
    version = body.get("room_version")
    if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(
            "M_INCOMPATIBLE_ROOM_VERSION", 400, f"room version {version!r} is not supported", extra={"room_version": version}
        )
    event = body.get("event")
    (checked,) = await check_pdus([event], {room_id: version}, d.keys)
    if not isinstance(checked, CheckedPdu) or checked.redacted:
        raise bad_json(f"invalid invite event: {getattr(checked, 'reason', 'content hash mismatch')}")
    if checked.event_id != event_id:
        raise bad_json(f"the event's ID is {checked.event_id}, not {event_id}")
    pdu = checked.json
    content = pdu.get("content")
    invitee = pdu.get("state_key")
    if (
        pdu.get("type") != "m.room.member"
        or not isinstance(content, dict)
        or content.get("membership") != "invite"
        or not isinstance(invitee, str)
    ):
        raise bad_json("not an m.room.member invite event")
    if invitee.split(":", 1)[-1] != d.server_name:
        raise forbidden(f"{invitee} is not a user of {d.server_name}")
    sender = pdu.get("sender")
    _user_of(origin, sender if isinstance(sender, str) else "")
    versions, acls = await d.db.read(_info, room_id)
    if room_id in versions and not server_acl_allows(acls.get(room_id), origin):
        raise forbidden(f"server {origin} is denied by the room's m.room.server_acl")
    # Our co-signature (invites-v2.yaml: "the event with the invited server's signature added").
    signed = sign_event(pdu, d.server_name, d.signing_key, version)
    invite_state = body.get("invite_room_state")
    stored = dict(signed)
    if isinstance(invite_state, list):
        stored["unsigned"] = {**(pdu.get("unsigned") or {}), "invite_room_state": invite_state}
    result = await ask_room(
        d, room_id, lambda reply: ReceiveInvite(room_version=version, pdu=stored, origin=origin, reply=reply)
    )
    if not isinstance(result, SendResult):
        raise_for(result, room_id)
        raise MatrixError("M_UNKNOWN", 500, "unexpected answer")
    return json_response({"event": signed})
