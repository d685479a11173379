"""``PUT /_matrix/federation/v1/send/{txnId}``: inbound transactions of PDUs and EDUs
(server-server API "Transactions", "Checks performed on receipt of a PDU",
"Ephemeral Data Units"; transactions.yaml).

Theory of operation
-------------------
::

    X-Matrix verified (x_matrix.federation_route)      ─► else 401 M_UNAUTHORIZED
    body: JSON object, ≤ 50 PDUs, ≤ 100 EDUs            ─► else 400 M_NOT_JSON / M_BAD_JSON
    (origin, txnId) answered before?                    ─► the same answer, nothing redone
    per PDU: room known? ACL allows origin? steps 1-3   ─► {"error": …} for that PDU
    m.direct_to_device EDUs: one write, deduplicated by (origin, message_id)
                                  (api/federation/to_device_edu.py; before the answer is recorded)
    m.device_list_update / m.signing_key_update: applied or marked stale for a resync
                                  (api/federation/device_list_edu.py; before the answer is recorded)
    ONE db.write: stage the PDUs + record the answer    ─► durable from here
    wake each room's actor (IngestStaged, coalesced)
    EDUs: typing, receipts, presence (applied now; they are ephemeral)
    200 {"pdus": {event_id: {} | {"error": …}}}

Steps 1-3 (format, signatures, content hash: redact on mismatch) run here in
parallel with one key-service call for the batch (``roomactors.inbound``); steps
4-6 run in the room's actor when it drains the staging area, after the answer, as
the spec allows ("the receiving server ... SHOULD process the transaction
asynchronously"). A PDU accepted into staging is therefore answered ``{}``; a
later rejection is the room's business, not the sender's.

A room whose mailbox is full does not lose the wake: its ID goes into
``deps.staging_flags``, which the actor checks after every message.

``m.presence`` (s2s "Presence"): each well-formed push (``presence`` one of
online/unavailable/offline, ``last_active_ago`` a non-negative integer,
``status_msg`` a string or absent) about a user *of the origin* is kept, the last
push per user winning, at most :data:`MAX_PRESENCE_USERS` users per transaction.
A user's presence is stored only if they are joined to a room where this server
has a joined member (``federation_reads.rooms_shared_with_server``, one indexed
read for the batch): nobody here could see it otherwise, and a server must not be
able to fill our presence table with strangers. It is stored like a local user's
(``userdata.set_presence``, ``last_active_ts = now - last_active_ago``;
``currently_active`` is recomputed from those, as for local users), in one write,
and the shared rooms are notified so the local members' ``/sync`` wakes and
reports it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import trio
from quart import Blueprint

from api.body import json_body
from api.deps import Deps, deps
from api.errors import bad_json
from api.federation.to_device_edu import apply_direct_to_device_edus
from api.federation import device_list_edu
from api.federation.x_matrix import federation_route
from api.responses import json_response
from roomactors.inbound import CheckedPdu, check_pdus
from roomactors.protocol.ids import RoomId
from roomactors.protocol.server_acl import server_acl_allows
from roomactors.registry import MailboxFull, RegistryClosed, RoomQuarantined
from roomactors.room.messages import IngestStaged
from storage import federation_reads, staging, userdata

__all__ = ["blueprint", "MAX_PDUS", "MAX_EDUS", "MAX_PRESENCE_USERS", "wake_room"]

log = logging.getLogger(__name__)

blueprint = Blueprint("federation_transactions", __name__)

#: server-server API "Transactions": "at most 50 PDUs and 100 EDUs".
MAX_PDUS = 50
MAX_EDUS = 100
#: Most users whose presence one transaction may change (the rest are dropped).
MAX_PRESENCE_USERS = 1000
_PRESENCE_STATES = ("online", "unavailable", "offline")


async def wake_room(d: Deps, room_id: str) -> None:
    """Tell the room's actor that staging holds PDUs for it (coalesced, never lost)."""
    d.staging_flags.add(RoomId(room_id))
    try:
        handle = await d.registry.get(RoomId(room_id))
        handle.send_nowait(IngestStaged())
    except (MailboxFull, trio.WouldBlock):
        pass  # the flag above makes the actor drain after its current message
    except (RoomQuarantined, RegistryClosed) as e:
        log.warning("staged PDUs for %s wait: %s", room_id, e)


@federation_route(blueprint, "/send/<txn_id>", ["PUT"])
async def send_transaction(origin: str, txn_id: str) -> Any:
    d = deps()
    body = await json_body()
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise bad_json("pdus and edus must be arrays")
    if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
        raise bad_json(f"a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
    if d.sender is not None:
        d.sender.wake(origin)  # it is up: retry anything queued for it now

    earlier = await d.db.read(staging.get_received_transaction, origin, txn_id)
    if earlier is not None:
        return json_response(earlier)

    room_ids = {p.get("room_id") for p in pdus if isinstance(p, dict) and isinstance(p.get("room_id"), str)}
    # EDU-only transactions (typing, receipts) need their rooms looked up too.
    versions, acls = await d.db.read(_rooms_info, room_ids | _edu_room_ids(edus))
    allowed = {r: v for r, v in versions.items() if r in room_ids and server_acl_allows(acls.get(r), origin)}
    results = await check_pdus(pdus, allowed, d.keys)

    answer: dict[str, dict[str, str]] = {}
    to_stage: list[staging.ToStage] = []
    for raw, result in zip(pdus, results):
        if isinstance(result, CheckedPdu):
            answer[result.event_id] = {}
            to_stage.append(staging.ToStage(room_id=result.room_id, event_id=result.event_id, json=result.json))
            continue
        room_id = raw.get("room_id") if isinstance(raw, dict) else None
        error = result.reason
        if isinstance(room_id, str) and room_id in versions and room_id not in allowed:
            error = f"server {origin} is denied by the room's m.room.server_acl"
        key = result.event_id or (raw.get("event_id") if isinstance(raw, dict) else None)
        if isinstance(key, str):
            answer[key] = {"error": error}
        else:
            log.info("dropped a PDU from %s without an event ID: %s", origin, error)
    response = {"pdus": answer}
    # EDUs that must not be lost are applied, durably, before the answer is recorded:
    # a retried transaction is answered from that record without being processed again.
    await apply_direct_to_device_edus(d, origin, edus)  # deduplicated on message_id: exactly once
    await _apply_device_list_edus(d, origin, edus)
    response = await d.db.write(
        partial(
            staging.stage_transaction,
            origin=origin,
            txn_id=txn_id,
            pdus=to_stage,
            response=response,
            now_ms=d.clock.time_ms(),
        )
    )
    for room_id in dict.fromkeys(p.room_id for p in to_stage):
        await wake_room(d, room_id)
    await _apply_edus(d, origin, edus, allowed_rooms=versions, acls=acls)
    return json_response(response)


def _edu_room_ids(edus: list[Any]) -> set[str]:
    """The rooms the typing and receipt EDUs name (what ``_apply_edus`` reads)."""
    out: set[str] = set()
    for edu in edus:
        content = edu.get("content") if isinstance(edu, dict) else None
        if not isinstance(content, dict):
            continue
        if edu.get("edu_type") == "m.typing" and isinstance(content.get("room_id"), str):
            out.add(content["room_id"])
        elif edu.get("edu_type") == "m.receipt":
            out.update(r for r in content if isinstance(r, str))
    return out


def _rooms_info(conn: Any, room_ids: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
    return staging.room_versions(conn, room_ids), staging.server_acls(conn, room_ids)


async def _apply_edus(d: Deps, origin: str, edus: list[Any], *, allowed_rooms: dict[str, str], acls: dict[str, Any]) -> None:
    """EDUs ("Ephemeral Data Units"): typing and read receipts of the origin's own
    users, in rooms we hold whose ACL allows the origin; presence of the origin's
    users who share a room with ours (module docstring). To-device and device-list
    EDUs were applied before the answer was recorded (``send_transaction``); unknown
    EDU types are dropped."""
    receipts: list[tuple[str, str, str, str, str]] = []
    presence: dict[str, tuple[str, str, str | None, int]] = {}
    for edu in edus:
        if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
            continue
        edu_type, content = edu.get("edu_type"), edu["content"]
        if edu_type == "m.typing":
            room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
            if (
                isinstance(room_id, str)
                and isinstance(user_id, str)
                and isinstance(typing, bool)
                and _from(origin, user_id)
                and room_id in allowed_rooms
                and server_acl_allows(acls.get(room_id), origin)
            ):
                d.typing.set_typing(room_id, user_id, typing, 30_000 if typing else None)
        elif edu_type == "m.receipt":
            for room_id, by_type in content.items():
                if room_id not in allowed_rooms or not server_acl_allows(acls.get(room_id), origin):
                    continue
                if not isinstance(by_type, dict):
                    continue
                for receipt_type, by_user in by_type.items():
                    if receipt_type != "m.read" or not isinstance(by_user, dict):
                        continue  # m.read.private never federates
                    for user_id, receipt in by_user.items():
                        if not _from(origin, user_id) or not isinstance(receipt, dict):
                            continue
                        event_ids = receipt.get("event_ids")
                        data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                        thread = data.get("thread_id") if isinstance(data.get("thread_id"), str) else ""
                        if isinstance(event_ids, list) and event_ids and isinstance(event_ids[0], str):
                            receipts.append((room_id, receipt_type, user_id, thread, event_ids[0]))
        elif edu_type == "m.presence":
            pushes = content.get("push")
            for push in pushes if isinstance(pushes, list) else ():
                parsed = _presence_push(origin, push)
                if parsed is not None and (parsed[0] in presence or len(presence) < MAX_PRESENCE_USERS):
                    presence[parsed[0]] = parsed
    if receipts:
        now = d.clock.time_ms()
        await d.db.write(_store_receipts, receipts, now)
        for room_id in {r[0] for r in receipts}:
            d.notifier.notify(room_id)
    if presence:
        await _apply_presence(d, list(presence.values()))


async def _apply_device_list_edus(d: Deps, origin: str, edus: list[Any]) -> None:
    """``m.device_list_update`` and ``m.signing_key_update`` (api.federation.device_list_edu)."""
    by_type: dict[str, list[Any]] = {"m.device_list_update": [], "m.signing_key_update": []}
    for edu in edus:
        if isinstance(edu, dict) and isinstance(edu.get("content"), dict) and edu.get("edu_type") in by_type:
            by_type[edu["edu_type"]].append(edu["content"])
    if by_type["m.device_list_update"]:
        await device_list_edu.apply_device_list_updates(d, origin, by_type["m.device_list_update"])
    if by_type["m.signing_key_update"]:
        await device_list_edu.apply_signing_key_updates(d, origin, by_type["m.signing_key_update"])


def _presence_push(origin: str, push: Any) -> tuple[str, str, str | None, int] | None:
    """(user ID, presence, status_msg, last_active_ago) of a well-formed push about
    a user of ``origin``, else None."""
    if not isinstance(push, dict) or not _from(origin, push.get("user_id")):
        return None
    state, status_msg, ago = push.get("presence"), push.get("status_msg"), push.get("last_active_ago", 0)
    if state not in _PRESENCE_STATES or not (status_msg is None or isinstance(status_msg, str)):
        return None
    if isinstance(ago, bool) or not isinstance(ago, int) or ago < 0:
        return None
    return push["user_id"], state, status_msg, ago


def _presence_rooms(conn: Any, user_ids: list[str], server_name: str) -> dict[str, list[str]]:
    return {u: federation_reads.rooms_shared_with_server(conn, u, server_name) for u in user_ids}


async def _apply_presence(d: Deps, pushes: list[tuple[str, str, str | None, int]]) -> None:
    shared = await d.db.read(_presence_rooms, [p[0] for p in pushes], d.server_name)
    kept = [p for p in pushes if shared.get(p[0])]
    if not kept:
        return
    now = d.clock.time_ms()
    await d.db.write(_store_presence, kept, now)
    d.notifier.notify(*dict.fromkeys(room for p in kept for room in shared[p[0]]))


def _store_presence(conn: Any, pushes: list[tuple[str, str, str | None, int]], now: int) -> None:
    for user_id, state, status_msg, ago in pushes:
        userdata.set_presence(conn, user_id, state, status_msg, now - min(ago, now))


def _store_receipts(conn: Any, receipts: list[tuple[str, str, str, str, str]], now: int) -> None:
    for room_id, receipt_type, user_id, thread, event_id in receipts:
        userdata.set_receipt(conn, room_id, receipt_type, user_id, thread, event_id, now)


def _from(origin: str, user_id: Any) -> bool:
    return isinstance(user_id, str) and user_id.startswith("@") and user_id.split(":", 1)[-1] == origin
