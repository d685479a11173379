"""Asking room actors from views: one function per room operation, errors mapped.

Theory of operation
-------------------
Views never touch a room's rows or memory; they send the room's actor a message
through ``RoomRegistry.ask`` and await its answer (docs/ARCHITECTURE.md, "Data
flow: one client send"). This module is that one path, and it maps every answer
that is not a success to the spec's error:

========================  =====  ======================
actor / registry answer   HTTP   errcode
========================  =====  ======================
``Forbidden``             403    ``M_FORBIDDEN``
``BadEvent``              400    its errcode (413 for ``M_TOO_LARGE``)
``UnknownRoom``           404    ``M_NOT_FOUND``
``MailboxFull``           429    ``M_LIMIT_EXCEEDED`` (``retry_after_ms``)
``RoomQuarantined``       503    ``M_UNKNOWN``
``ActorCrashed``          500    ``M_UNKNOWN``
timeout / closed          503    ``M_UNKNOWN``
========================  =====  ======================

A cancelled view (the client hung up) only stops waiting: the actor finishes and
commits anyway (house rule 7), and a retry with the same txnId finds the event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from api.deps import Deps
from api.errors import MatrixError
from roomactors.protocol.ids import RoomId, UserId
from roomactors.registry import ActorCrashed, MailboxFull, RegistryClosed, RoomQuarantined
from roomactors.room.messages import (
    BadEvent,
    CreateRoom,
    EventSpec,
    Forbidden,
    GetState,
    SendEvent,
    SendResult,
    StateView,
    UnknownRoom,
)
from storage.rooms import TxnRecord

__all__ = ["ask_room", "send_event", "get_state_view", "create_room_events", "raise_for"]


def raise_for(result: object, room_id: str) -> None:
    """Raise the MatrixError for a non-success actor answer (see the table)."""
    match result:
        case Forbidden():
            raise MatrixError("M_FORBIDDEN", 403, result.error)
        case BadEvent():
            raise MatrixError(result.errcode, 413 if result.errcode == "M_TOO_LARGE" else 400, result.error)
        case UnknownRoom():
            raise MatrixError("M_NOT_FOUND", 404, f"room {room_id} is not known to this server")


async def ask_room(d: Deps, room_id: str, make_msg: Callable[[Any], Any]) -> Any:
    try:
        return await d.registry.ask(RoomId(room_id), make_msg)
    except MailboxFull:
        raise MatrixError(
            "M_LIMIT_EXCEEDED", 429, f"room {room_id} is busy; retry shortly", extra={"retry_after_ms": 200}
        ) from None
    except RoomQuarantined:
        raise MatrixError("M_UNKNOWN", 503, f"room {room_id} is unavailable (quarantined)") from None
    except ActorCrashed:
        raise MatrixError("M_UNKNOWN", 500, f"room {room_id} failed handling the request") from None
    except (trio.TooSlowError, RegistryClosed):
        raise MatrixError("M_UNKNOWN", 503, f"room {room_id} did not answer in time") from None


async def send_event(
    d: Deps,
    room_id: str,
    sender: str,
    type: str,
    content: dict[str, Any],
    state_key: str | None = None,
    *,
    txn: TxnRecord | None = None,
) -> SendResult:
    result = await ask_room(
        d,
        room_id,
        lambda reply: SendEvent(
            sender=UserId(sender), type=type, content=content, state_key=state_key, txn=txn, reply=reply
        ),
    )
    raise_for(result, room_id)
    assert isinstance(result, SendResult), result
    return result


async def get_state_view(d: Deps, room_id: str) -> StateView:
    result = await ask_room(d, room_id, lambda reply: GetState(reply=reply))
    raise_for(result, room_id)
    assert isinstance(result, StateView), result
    return result


async def create_room_events(
    d: Deps, room_id: str, create_event: dict[str, Any], initial_events: tuple[EventSpec, ...]
) -> SendResult:
    result = await ask_room(
        d, room_id, lambda reply: CreateRoom(create_event=create_event, initial_events=initial_events, reply=reply)
    )
    raise_for(result, room_id)
    assert isinstance(result, SendResult), result
    return result
