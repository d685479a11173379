"""Membership handshakes, joining side: our users join, leave, knock on rooms held
by other servers, and invite other servers' users (server-server API "Joining
Rooms", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room", "Inviting
to a room").

Theory of operation
-------------------
Joining a room we do not hold::

    for each candidate server (via / server_name, the alias's servers, the room
    ID's domain for v1-11, the inviter's server):
        GET  make_join/{room}/{user}?ver=1..12   → {room_version, event template}
        check the template is our user's join in that room; sign it (sign_template)
        PUT  v2/send_join/{room}/{event_id}       → {state, auth_chain, event}
        verify EVERYTHING before storing anything (:func:`verify_room_state`):
          steps 1-3 for every event (format, signatures — keys fetched for the whole
          batch — and hashes), the create event is the room's, then step 4 for each
          event in auth order (an event whose auth events are missing or rejected is
          rejected), then the join itself against the returned state
        the room actor adopts it (AdoptRemoteRoom): one checkpoint

A server that refuses (403), does not answer, or returns something that fails
verification is skipped and the next one is tried. Only if every candidate fails
does the client get an error: the last refusal (403 ``M_FORBIDDEN``), or 404
``M_NOT_FOUND`` when no server could be reached.

Leaving or knocking uses the same make/send pair without state: the resident server
sends our event into the room. Rejecting an invite to a room we do not hold is such
a remote leave. Inviting another server's user: our room actor builds and signs
the invite without committing it (``PrepareEvent``), the invitee's server co-signs
it (``/invite`` v2), then the actor commits the co-signed event (``CommitPrepared``)
and the sender delivers it to the room.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio

from api.deps import Deps
from api.errors import MatrixError, forbidden, not_found
from api.rooms_service import ask_room, raise_for
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.inbound import CheckedPdu, check_pdus, path_segment
from roomactors.protocol.auth import CREATE_KEY
from roomactors.protocol.dag import topo_sort
from roomactors.protocol.ids import RoomId
from roomactors.protocol.pdu import parse_pdu
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS
from roomactors.protocol.visibility import stripped_state_pdus
from roomactors.room.events import event_refs, sign_template
from roomactors.room.messages import AdoptRemoteRoom, ReceiveInvite, SendResult
from roomactors.room.pipeline import KnownEvent, step_4_auth_events

__all__ = ["VerifiedRoom", "verify_room_state", "join_remote", "membership_remote", "candidate_servers"]

log = logging.getLogger(__name__)

_FED = "/_matrix/federation"


class VerifiedRoom:
    """The outcome of :func:`verify_room_state`: events (auth order) with their
    step-4 verdicts, and the state map."""

    __slots__ = ("events", "state")

    def __init__(self, events: dict[str, tuple[dict[str, Any], str | None]], state: dict[tuple[str, str], str]) -> None:
        self.events = events
        self.state = state


async def verify_room_state(
    d: Deps, room_id: str, room_version: str, state: Sequence[Any], auth_chain: Sequence[Any]
) -> VerifiedRoom:
    """Steps 1-4 for a ``/send_join`` answer (see the module docstring); raises
    ``MatrixError`` if the answer cannot give a trustworthy room."""
    if not isinstance(state, list) or not isinstance(auth_chain, list):
        raise MatrixError("M_BAD_JSON", 502, "the resident server's send_join answer has no state/auth_chain")
    checked = await check_pdus([*state, *auth_chain], {room_id: room_version}, d.keys)
    good: dict[str, CheckedPdu] = {}
    for result in checked:
        if isinstance(result, CheckedPdu):
            good.setdefault(result.event_id, result)
        else:
            log.info("send_join for %s: dropped an event: %s", room_id, result.reason)
    # check_pdus keeps the input order: the first len(state) results are the state.
    state_ids = {c.event_id for c in checked[: len(state)] if isinstance(c, CheckedPdu)}
    creates = [c for c in good.values() if c.json.get("type") == "m.room.create" and c.json.get("state_key") == ""]
    if len(creates) != 1:
        raise MatrixError("M_BAD_JSON", 502, "the room state must hold exactly one m.room.create event")
    create = creates[0]
    create_pdu = parse_pdu(create.json, room_version)
    if create_pdu.room_id != room_id:
        raise MatrixError("M_BAD_JSON", 502, f"the m.room.create event is for room {create_pdu.room_id}")
    if (create.json.get("content") or {}).get("room_version", "1") != room_version:
        raise MatrixError("M_BAD_JSON", 502, "the m.room.create event names another room version")

    # Step 4 for thousands of events is pure CPU: a worker thread keeps the loop serving.
    return await trio.to_thread.run_sync(_step_4_all, room_id, room_version, good, create, state_ids)


def _step_4_all(
    room_id: str, room_version: str, good: dict[str, CheckedPdu], create: CheckedPdu, state_ids: set[str]
) -> VerifiedRoom:
    # Step 4, in auth order: each event against its own auth events.
    ordered = topo_sort(list(good.values()), key=lambda c: (c.event_id, event_refs(c.json, "auth_events")))
    verdicts: dict[str, tuple[dict[str, Any], str | None]] = {}
    known: dict[str, KnownEvent] = {}
    for c in ordered:
        pdu = parse_pdu(c.json, room_version)
        missing = [a for a in pdu.auth_events if a not in known]
        if missing:
            reason: str | None = f"step 4: auth events {missing} are missing"
        else:
            rejected = step_4_auth_events(pdu, [known[a] for a in pdu.auth_events], create.json, create.event_id)
            reason = rejected.reason() if rejected is not None else None
        verdicts[c.event_id] = (c.json, reason)
        known[c.event_id] = KnownEvent(
            event_id=c.event_id, room_id=room_id, json=c.json, depth=pdu.depth, stream_ordering=None,
            state_after_ref=None, outlier=True, rejected=reason is not None, soft_failed=False,
        )
    state_map: dict[tuple[str, str], str] = {}
    for event_id in state_ids:
        pdu_json, reason = verdicts[event_id]
        key = (pdu_json["type"], pdu_json["state_key"])
        if reason is not None:
            log.info("send_join for %s: state event %s was rejected: %s", room_id, event_id, reason)
            continue
        if key in state_map:
            raise MatrixError("M_BAD_JSON", 502, f"the room state holds two events for {key}")
        state_map[key] = event_id
    if CREATE_KEY not in state_map:
        raise MatrixError("M_BAD_JSON", 502, "the room state has no valid m.room.create event")
    return VerifiedRoom(verdicts, state_map)


def candidate_servers(d: Deps, room_id: str, via: Iterable[str]) -> list[str]:
    """Servers to ask, in order, never ourselves: the given ones, then the room
    ID's domain (room versions 1-11 name the creating server there)."""
    out = [s for s in dict.fromkeys(via) if s and s != d.server_name]
    if ":" in room_id:
        domain = room_id.split(":", 1)[1]
        if domain != d.server_name and domain not in out:
            out.append(domain)
    return out


async def _make(d: Deps, server: str, room_id: str, user_id: str, membership: str) -> tuple[str, dict[str, Any]]:
    query = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership in ("join", "knock") else None
    body = await d.federation.get_json(
        server, f"{_FED}/v1/make_{membership}/{path_segment(room_id)}/{path_segment(user_id)}", query=query
    )
    version = body.get("room_version", "1") if isinstance(body, dict) else None
    template = body.get("event") if isinstance(body, dict) else None
    if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS or not isinstance(template, dict):
        raise FederationError(502, "M_BAD_JSON", f"bad make_{membership} answer")
    content = template.get("content")
    if (
        template.get("type") != "m.room.member"
        or template.get("state_key") != user_id
        or template.get("sender") != user_id
        or template.get("room_id", room_id) != room_id
        or not isinstance(content, dict)
        or content.get("membership") != membership
    ):
        raise FederationError(502, "M_BAD_JSON", f"the make_{membership} template is not {user_id}'s {membership}")
    return version, template


async def join_remote(d: Deps, room_id: str, user_id: str, servers: Sequence[str], content: Mapping[str, Any]) -> str:
    """Join ``room_id`` through one of ``servers`` (see the module docstring)."""
    if d.federation is None:
        raise not_found(f"room {room_id} is not known to this server (federation is disabled)")
    last: MatrixError | None = None
    for server in servers:
        try:
            version, template = await _make(d, server, room_id, user_id, "join")
            template = {**template, "content": {**content, "membership": "join"}}
            event_id, event = sign_template(
                template, room_version=version, server_name=d.server_name, signing_key=d.signing_key,
                origin_server_ts=d.clock.time_ms(),
            )
            answer = await d.federation.put_json(
                server, f"{_FED}/v2/send_join/{path_segment(room_id)}/{path_segment(event_id)}", event
            )
            if not isinstance(answer, dict):
                raise FederationError(502, "M_BAD_JSON", "bad send_join answer")
            returned = answer.get("event")
            if isinstance(returned, dict):
                # Restricted joins: the resident server's co-signed copy of our event.
                (checked,) = await check_pdus([returned], {room_id: version}, d.keys)
                if isinstance(checked, CheckedPdu) and checked.event_id == event_id and not checked.redacted:
                    event = checked.json
            verified = await verify_room_state(d, room_id, version, answer.get("state"), answer.get("auth_chain"))
        except FederationError as e:
            log.info("join %s via %s refused: %s %s", room_id, server, e.status, e.errcode)
            last = MatrixError("M_FORBIDDEN" if e.status == 403 else "M_UNKNOWN", 403 if e.status == 403 else 502,
                               f"{server} refused the join: {e.error or e.errcode or e.status}")
            continue
        except FederationUnreachable as e:
            log.info("join %s via %s: unreachable: %s", room_id, server, e)
            continue
        except MatrixError as e:
            last = e
            continue
        result = await ask_room(
            d, room_id,
            lambda reply: AdoptRemoteRoom(
                room_version=version, events=verified.events, state=verified.state, join_event=event, reply=reply
            ),
        )
        if isinstance(result, SendResult):
            return room_id
        raise_for(result, room_id)
    if last is not None:
        raise last
    raise not_found(f"no server could be reached to join {room_id}")


async def membership_remote(
    d: Deps, room_id: str, user_id: str, membership: str, servers: Sequence[str], content: Mapping[str, Any]
) -> str:
    """Leave or knock through a resident server: make_*, sign, send_*. A knock's
    answer (``knock_room_state``) is stored with the event so ``/sync`` shows it."""
    if d.federation is None:
        raise not_found(f"room {room_id} is not known to this server (federation is disabled)")
    last: MatrixError | None = None
    for server in servers:
        try:
            version, template = await _make(d, server, room_id, user_id, membership)
            template = {**template, "content": {**content, "membership": membership}}
            event_id, event = sign_template(
                template, room_version=version, server_name=d.server_name, signing_key=d.signing_key,
                origin_server_ts=d.clock.time_ms(),
            )
            api_version = "v1" if membership == "knock" else "v2"
            answer = await d.federation.put_json(
                server, f"{_FED}/{api_version}/send_{membership}/{path_segment(room_id)}/{path_segment(event_id)}", event
            )
        except FederationError as e:
            last = MatrixError("M_FORBIDDEN" if e.status == 403 else "M_UNKNOWN", 403 if e.status == 403 else 502,
                               f"{server} refused the {membership}: {e.error or e.errcode or e.status}")
            continue
        except FederationUnreachable:
            continue
        stored = dict(event)
        if membership == "knock" and isinstance(answer, dict) and isinstance(answer.get("knock_room_state"), list):
            stored["unsigned"] = {"knock_room_state": answer["knock_room_state"]}
        # Record our membership locally: in a room we hold it arrives as a PDU (the
        # resident server sends it to us too); otherwise it replaces the stub.
        result = await ask_room(
            d, room_id, lambda reply: ReceiveInvite(room_version=version, pdu=stored, origin=server, reply=reply)
        )
        if not isinstance(result, SendResult):
            log.info("%s of %s: stored locally failed: %r", membership, room_id, result)
        return event_id
    if last is not None:
        raise last
    raise not_found(f"no server could be reached to {membership} {room_id}")


def invite_state(state_events: Mapping[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """``invite_room_state`` for ``/invite``: full PDUs of the stripped-state selection."""
    return stripped_state_pdus(dict(state_events))


async def invite_remote(
    d: Deps, room_id: str, room_version: str, event: dict[str, Any], state_events: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """``PUT /_matrix/federation/v2/invite``: the invitee's server co-signs our
    invite; returns the co-signed event (checked: same event, both signatures)."""
    invitee = event["state_key"]
    server = invitee.split(":", 1)[1]
    event_id = event.get("event_id") or parse_pdu(event, room_version).event_id
    try:
        answer = await d.federation.put_json(
            server,
            f"{_FED}/v2/invite/{path_segment(room_id)}/{path_segment(event_id)}",
            {"room_version": room_version, "event": event, "invite_room_state": invite_state(state_events)},
        )
    except FederationError as e:
        raise MatrixError("M_FORBIDDEN", 403, f"{server} refused the invite: {e.error or e.errcode or e.status}") from None
    except FederationUnreachable:
        raise MatrixError("M_UNKNOWN", 502, f"{server} could not be reached to deliver the invite") from None
    signed = answer.get("event") if isinstance(answer, dict) else None
    if not isinstance(signed, dict):
        raise MatrixError("M_UNKNOWN", 502, f"{server} answered the invite without the event")
    (checked,) = await check_pdus([signed], {room_id: room_version}, d.keys)
    if not isinstance(checked, CheckedPdu) or checked.redacted or checked.event_id != event_id:
        raise MatrixError("M_UNKNOWN", 502, f"{server} returned an invalid invite event")
    if server not in (signed.get("signatures") or {}):
        raise forbidden(f"{server} did not sign the invite")
    return checked.json
