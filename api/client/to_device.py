"""``PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`` and the /sync
acknowledgement of to-device messages (client-server API "Send-to-Device
messaging"; server-server API "Send-to-device messaging").

Theory of operation
-------------------
::

    body {"messages": {user_id: {device_id | "*": content}}}   ─► else 400 M_BAD_JSON / M_INVALID_PARAM
    each content ≤ 64 KiB (it must fit a federation EDU)      ─► else 413 M_TOO_LARGE
    split: local users ─► inbox rows; remote users ─► one m.direct_to_device EDU
           per destination {sender, type, message_id, messages} (split further only
           when it would exceed 64 KiB, as Synapse does)
    ONE db.write (storage.to_device.send_local_messages):
        txnId (user, device, eventType) seen?  ─► 200 {}, nothing enqueued
        record txnId + inbox rows (``*`` expanded, unknown devices skipped)
        + storage.outbox rows for the EDUs                            ─► durable from here
    then: sender.wake_outbox(destinations), notifier.notify(target users), 200 {}

The transaction ID's scope is one device and one endpoint path ("Transaction
identifiers"), so the key includes ``eventType``. Unknown local users and devices
are skipped silently (Synapse does the same). Without federation remote targets
are dropped (logged): nothing could ever deliver them.

Acknowledgement (:func:`acknowledge`, called by ``/sync``): a sync whose ``since``
has to-device position P deletes the device's rows ≤ P in one write. A per-process
high-water mark per device (keyed by the Database, so test homeservers sharing a
process stay apart) skips the write when P was already handled; the first time a
device is seen after a start, a one-row read decides whether a write is needed.
"""

from __future__ import annotations

import logging
import secrets
import weakref
from collections import OrderedDict
from functools import partial
from typing import Any

import orjson
from quart import Blueprint

from api.auth import requester
from api.body import json_body
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, invalid_param
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol.ids import is_valid_user_id
from storage import to_device

__all__ = ["blueprint", "acknowledge", "build_edus", "MAX_CONTENT_BYTES", "MAX_EDU_BYTES"]

log = logging.getLogger(__name__)

blueprint = Blueprint("to_device", __name__)

#: Synapse's MAX_TO_DEVICE_CONTENT_SIZE and SOFT_MAX_EDU_SIZE: a message must fit an
#: EDU, and an EDU must leave a transaction a sane size.
MAX_CONTENT_BYTES = 65536
MAX_EDU_BYTES = 65536
_MAX_ACK_MARKS = 100_000


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def _message_id() -> str:
    # m.direct_to_device: "Unique ID for the message ... maximum length 32 codepoints".
    return secrets.token_urlsafe(12)


def build_edus(sender: str, event_type: str, messages: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``m.direct_to_device`` contents for one destination: users packed into EDUs of at
    most :data:`MAX_EDU_BYTES` (a user whose devices alone exceed it is split by device),
    each with its own ``message_id``."""
    base = _size({"sender": sender, "type": event_type, "message_id": "x" * 16, "messages": {}})
    edus: list[dict[str, Any]] = []
    batch: dict[str, dict[str, Any]] = {}
    size = base

    def flush() -> None:
        nonlocal batch, size
        if batch:
            edus.append({"sender": sender, "type": event_type, "message_id": _message_id(), "messages": batch})
        batch, size = {}, base

    for user_id, by_device in messages.items():
        entry = _size({user_id: by_device})
        if base + entry <= MAX_EDU_BYTES:
            if size + entry > MAX_EDU_BYTES:
                flush()
            batch[user_id] = by_device
            size += entry
            continue
        flush()
        for device_id, content in by_device.items():  # one user too big for one EDU
            entry = _size({user_id: {device_id: content}})
            if size + entry > MAX_EDU_BYTES:
                flush()
            batch.setdefault(user_id, {})[device_id] = content
            size += entry
        flush()
    flush()
    return edus


def _parse_messages(body: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    if "messages" not in body:
        raise MatrixError("M_MISSING_PARAM", 400, "'messages' is required")
    messages = body["messages"]
    if not isinstance(messages, dict):
        raise bad_json("'messages' must be an object of user IDs to device maps")
    for user_id, by_device in messages.items():
        # to_device.yaml: keys are user IDs (patternProperties "^@", mx-user-id).
        if not is_valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a valid user ID")
        if not isinstance(by_device, dict):
            raise bad_json(f"messages[{user_id!r}] must be an object of device IDs to contents")
        for device_id, content in by_device.items():
            if not device_id:
                raise invalid_param(f"messages[{user_id!r}] has an empty device ID")
            if not isinstance(content, dict):
                raise bad_json(f"messages[{user_id!r}][{device_id!r}] must be an object (EventContent)")
            if _size(content) > MAX_CONTENT_BYTES:
                raise MatrixError(
                    "M_TOO_LARGE", 413, f"the message for {user_id} {device_id} exceeds {MAX_CONTENT_BYTES} bytes"
                )
    return messages


@client_route(blueprint, "/sendToDevice/<event_type>/<txn_id>", ["PUT"])
async def send_to_device(event_type: str, txn_id: str):
    d = deps()
    who = await requester()
    if not event_type or len(event_type) > 255:
        raise invalid_param("eventType must be 1-255 characters")
    if not txn_id or len(txn_id) > 255:
        raise invalid_param("txnId must be 1-255 characters")
    messages = _parse_messages(await json_body())
    local: dict[str, dict[str, dict[str, Any]]] = {}
    remote: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for user_id, by_device in messages.items():
        if not by_device:
            continue
        server = user_id.split(":", 1)[1]
        if server == d.server_name:
            local[user_id] = by_device
        else:
            remote.setdefault(server, {})[user_id] = by_device
    if remote and d.sender is None:
        log.info("sendToDevice from %s: federation is disabled, dropping messages for %s", who.user_id, sorted(remote))
        remote = {}
    remote_edus = [(server, edu) for server, users in remote.items() for edu in build_edus(who.user_id, event_type, users)]
    delivery = await d.db.write(
        partial(
            to_device.send_local_messages,
            sender=who.user_id,
            sender_device=who.device_id,
            event_type=event_type,
            txn_id=txn_id,
            local=local,
            remote_edus=remote_edus,
            now_ms=d.clock.time_ms(),
        )
    )
    if delivery.destinations and d.sender is not None:
        d.sender.wake_outbox(delivery.destinations)
    if delivery.users:
        d.notifier.notify(*delivery.users)
    return json_response({})


# ------------------------------------------------------------------- acknowledgement

_ack_marks: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, str], int]] = weakref.WeakKeyDictionary()


async def acknowledge(d: Deps, user_id: str, device_id: str, position: int) -> None:
    """``/sync`` was called with a ``since`` whose to-device position is ``position``:
    delete the device's messages up to there (Send-to-Device, "Server behaviour")."""
    if position <= 0:
        return
    marks = _ack_marks.get(d.db)
    if marks is None:
        marks = _ack_marks[d.db] = OrderedDict()
    key = (user_id, device_id)
    done = marks.get(key)
    if done is not None and position <= done:
        return
    # Without a mark (first ack since start-up) one read decides whether there is
    # anything at or below ``position`` to delete; with one, there is (it advanced).
    if done is not None or await d.db.read(
        partial(to_device.has_acknowledged, user_id=user_id, device_id=device_id, upto=position)
    ):
        await d.db.write(partial(to_device.delete_acknowledged, user_id=user_id, device_id=device_id, upto=position))
    marks[key] = max(position, done or 0)
    marks.move_to_end(key)
    while len(marks) > _MAX_ACK_MARKS:
        marks.popitem(last=False)
