"""Typing, receipts, read markers and presence (client-server "Typing
Notifications", "Receipts", "Fully read markers", "Presence").

Theory of operation
-------------------
Typing lives only in memory (``roomactors.typing.TypingService``). Receipts and
presence are rows on the misc stream (``storage.userdata``), written in one
transaction each and then announced with ``notifier.notify(room_id)`` (receipts)
or the user's own key plus every joined room (presence), so long polls wake.
Only joined members may send typing notifications or receipts; a receipt must
name an event of that room, and a ``thread_id`` must be a non-empty string on a
receipt type that can be threaded (else 400 ``M_INVALID_PARAM``, receipts.yaml).
User and event IDs in paths use ``path`` converters (localparts and rooms/v3 event
IDs may hold ``/``). ``note_presence`` runs on every ``/sync`` too (default
``online``); ``currently_active`` means online and seen in the last five minutes.

Presence federates (server-server API "Presence"): every presence row
``note_presence`` writes (a change, or the once-a-minute refresh of an unchanged
state) goes as an ``m.presence`` EDU ``{"push": [{user_id, presence,
last_active_ago, currently_active, status_msg?}]}`` to every other server with a
joined member in a room where the user is joined
(``federation_reads.servers_sharing_rooms``), keyed ``("presence", user_id)`` so
the sender keeps only the newest pending one per destination. Inbound pushes are
applied by ``api.federation.transactions``.
"""

from __future__ import annotations

from quart import Blueprint

from api.auth import requester
from api.body import get_bool, get_int, get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, forbidden, not_found
from api.responses import json_response
from api.routes import client_route
from storage import accounts, federation_reads, timeline, userdata

__all__ = ["blueprint", "note_presence", "CURRENTLY_ACTIVE_MS"]

blueprint = Blueprint("ephemeral", __name__)

_RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")


async def _federate(d: Deps, room_id: str, edu_type: str, content: dict, key: object) -> None:
    """Send an EDU to every other server with a joined member in the room
    (server-server API "Typing Notifications", "Receipts"); no-op without federation.
    The sender coalesces by ``key``: only the newest pending one goes out."""
    if d.sender is None:
        return
    for server in await d.db.read(federation_reads.joined_servers, room_id):
        if server != d.server_name:
            d.sender.send_edu(destination=server, edu_type=edu_type, content=content, key=key)


async def _require_joined(d: Deps, room_id: str, user_id: str) -> None:
    m = (await d.db.read(timeline.get_memberships, user_id)).get(room_id)
    if m is None or m.membership != "join":
        raise forbidden("you are not joined to this room")


@client_route(blueprint, "/rooms/<room_id>/typing/<path:user_id>", ["PUT"])
async def typing(room_id: str, user_id: str):
    d = deps()
    who = await requester()
    if user_id != who.user_id:
        raise forbidden("you can only set your own typing state")
    body = await json_body()
    is_typing = get_bool(body, "typing", False) if "typing" in body else None
    if is_typing is None:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'typing'")
    timeout = get_int(body, "timeout", 30_000)
    await _require_joined(d, room_id, who.user_id)
    d.typing.set_typing(room_id, who.user_id, is_typing, timeout)
    await _federate(d, room_id, "m.typing", {"room_id": room_id, "user_id": who.user_id, "typing": is_typing},
                    ("m.typing", room_id, who.user_id))
    return json_response({})


async def _set_receipt(d: Deps, room_id: str, user_id: str, receipt_type: str, event_id: str, thread_id: str) -> None:
    if receipt_type == "m.fully_read":
        await d.db.write(userdata.set_account_data, user_id, room_id, "m.fully_read", {"event_id": event_id})
        d.notifier.notify(user_id)
        return
    now = d.clock.time_ms()
    await d.db.write(userdata.set_receipt, room_id, receipt_type, user_id, thread_id, event_id, now)
    d.notifier.notify(room_id)
    if receipt_type == "m.read":  # m.read.private never federates
        data: dict = {"ts": now}
        if thread_id:
            data["thread_id"] = thread_id
        content = {room_id: {"m.read": {user_id: {"data": data, "event_ids": [event_id]}}}}
        await _federate(d, room_id, "m.receipt", content, ("m.receipt", room_id, user_id, thread_id))


@client_route(blueprint, "/rooms/<room_id>/receipt/<receipt_type>/<path:event_id>", ["POST"])
async def receipt(room_id: str, receipt_type: str, event_id: str):
    d = deps()
    who = await requester()
    if receipt_type not in _RECEIPT_TYPES:
        raise MatrixError("M_INVALID_PARAM", 400, f"unknown receipt type {receipt_type!r}")
    body = await json_body(allow_empty=True)
    thread_id = ""  # unthreaded
    if "thread_id" in body:
        # receipts.yaml 400: "not a string", "empty", "an incompatible receipt type".
        thread_id = body["thread_id"]
        if not isinstance(thread_id, str) or not thread_id:
            raise MatrixError("M_INVALID_PARAM", 400, "thread_id field must be a non-empty string")
        if receipt_type == "m.fully_read":
            raise MatrixError("M_INVALID_PARAM", 400, "m.fully_read cannot be threaded")
    await _require_joined(d, room_id, who.user_id)
    event = await d.db.read(timeline.get_event, event_id)
    if event is None or event.room_id != room_id:
        raise not_found("event not found in this room")
    await _set_receipt(d, room_id, who.user_id, receipt_type, event_id, thread_id)
    return json_response({})


@client_route(blueprint, "/rooms/<room_id>/read_markers", ["POST"])
async def read_markers(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body()
    await _require_joined(d, room_id, who.user_id)
    for key, receipt_type in (("m.fully_read", "m.fully_read"), ("m.read", "m.read"), ("m.read.private", "m.read.private")):
        event_id = body.get(key)
        if event_id is None:
            continue
        if not isinstance(event_id, str):
            raise MatrixError("M_BAD_JSON", 400, f"{key!r} must be an event ID")
        event = await d.db.read(timeline.get_event, event_id)
        if event is None or event.room_id != room_id:
            raise not_found(f"event {event_id} not found in this room")
        await _set_receipt(d, room_id, who.user_id, receipt_type, event_id, "")
    return json_response({})


_PRESENCE = ("online", "offline", "unavailable")
#: ``currently_active``: online and seen within the last five minutes.
CURRENTLY_ACTIVE_MS = 300_000


async def note_presence(d: Deps, user_id: str, state: str, status_msg: str | None = None, *, keep_msg: bool = True) -> None:
    """Record presence (on /sync's set_presence or PUT /presence) and wake peers."""
    seen = d.presence_seen.get(user_id)
    now = d.clock.time_ms()
    if seen is not None and seen[0] == state and (keep_msg or seen[1] == status_msg) and now - seen[2] < 60_000:
        return  # written by us within the minute, unchanged: no read, no write
    current = await d.db.read(userdata.get_presence, user_id)
    if keep_msg and current is not None and status_msg is None:
        status_msg = current.get("status_msg")
    if current is not None and current["presence"] == state and current.get("status_msg") == status_msg and \
            now - current["last_active_ts"] < 60_000:
        d.presence_seen[user_id] = (state, status_msg, current["last_active_ts"])
        return  # unchanged and recent: no new stream row
    await d.db.write(userdata.set_presence, user_id, state, status_msg, now)
    d.presence_seen[user_id] = (state, status_msg, now)
    rooms = [r for r, m in (await d.db.read(timeline.get_memberships, user_id)).items() if m.membership == "join"]
    d.notifier.notify(user_id, *rooms)
    if d.sender is not None and rooms:
        await _federate_presence(d, user_id, state, status_msg)


async def _federate_presence(d: Deps, user_id: str, state: str, status_msg: str | None) -> None:
    """An ``m.presence`` EDU to the servers sharing a room with the user (module docstring)."""
    push: dict = {"user_id": user_id, "presence": state, "last_active_ago": 0, "currently_active": state == "online"}
    if status_msg is not None:
        push["status_msg"] = status_msg
    for server in await d.db.read(federation_reads.servers_sharing_rooms, user_id):
        if server != d.server_name:
            d.sender.send_edu(destination=server, edu_type="m.presence", content={"push": [push]},
                              key=("presence", user_id))


@client_route(blueprint, "/presence/<path:user_id>/status", ["PUT"])
async def put_presence(user_id: str):
    d = deps()
    who = await requester()
    if user_id != who.user_id:
        raise forbidden("you can only set your own presence")
    body = await json_body()
    state = get_str(body, "presence")
    if state not in _PRESENCE:
        raise MatrixError("M_INVALID_PARAM", 400, "presence must be online, offline or unavailable")
    status_msg = get_str(body, "status_msg", None)
    await note_presence(d, who.user_id, state, status_msg, keep_msg=False)
    return json_response({})


@client_route(blueprint, "/presence/<path:user_id>/status", ["GET"])
async def get_presence(user_id: str):
    d = deps()
    await requester()
    current = await d.db.read(userdata.get_presence, user_id)
    if current is None:
        if await d.db.read(accounts.user_exists, user_id):
            return json_response({"presence": "offline"})
        raise not_found("unknown user")
    out = {"presence": current["presence"], "last_active_ago": max(0, d.clock.time_ms() - current["last_active_ts"])}
    if current.get("status_msg") is not None:
        out["status_msg"] = current["status_msg"]
    out["currently_active"] = current["presence"] == "online" and out["last_active_ago"] < CURRENTLY_ACTIVE_MS
    return json_response(out)
