"""Inbound PDUs from other servers: the checks that run outside any room, and the
verified fetching of events a room actor is missing.

Theory of operation
-------------------
Server-server API "Checks performed on receipt of a PDU" numbers six checks. The
first three need no room state, so they run here, in parallel, before a room
actor ever sees the PDU (docs/ARCHITECTURE.md, "Data flow: one inbound PDU"):

1. "Is a valid event, otherwise it is dropped": ``parse_pdu`` under the room's
   version rules (format, sizes, IDs; v3+ the event ID is derived, never sent).
2. "Passes signature checks, otherwise it is dropped": every signature the spec
   requires (``required_signers``), with keys from the key service, fetched for
   the whole batch in one call.
3. "Passes hash checks, otherwise it is redacted before being processed further":
   a content-hash mismatch replaces the event by its redacted form.

:func:`check_pdus` returns, per PDU, a :class:`CheckedPdu` or an :class:`Invalid`
(a value: the PDU is dropped and the reason goes into the ``/send`` answer).

:class:`RemoteEvents` is what a room actor uses to fetch what it is missing
(auth events, prev events, state): ``/event_auth``, ``/event``,
``/get_missing_events`` and ``/state_ids``. Every event it returns has passed the
same steps 1-3; anything that fails is left out, so a lying peer can withhold
events but never inject one. It never writes: the actor decides and checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import trio

from roomactors.protocol.errors import InvalidEvent, SignatureError
from roomactors.protocol.hashing import compute_event_id_with_rules
from roomactors.protocol.pdu import parse_pdu
from roomactors.protocol.redaction import redact
from roomactors.protocol.room_versions import get_rules
from roomactors.protocol.signing import Verified, VerifyKeys, required_signers, verify_event

__all__ = ["CheckedPdu", "Invalid", "KeySource", "check_pdus", "RemoteEvents", "path_segment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedPdu:
    """A PDU that passed steps 1-3; ``json`` is redacted if its content hash failed."""

    event_id: str
    room_id: str
    json: dict[str, Any]
    redacted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalid:
    """Dropped at step 1 (format) or 2 (signatures)."""

    event_id: str | None
    reason: str


class KeySource(Protocol):
    async def get_verify_keys(self, wanted: Mapping[str, Mapping[str, int]]) -> VerifyKeys: ...


def path_segment(value: str) -> str:
    """A room or event ID as one URL path segment."""
    return quote(value, safe="")


def _wanted_keys(event: dict[str, Any], rules: Any, into: dict[str, dict[str, int]]) -> None:
    """The (server, key ID) pairs that can verify ``event``'s required signatures."""
    signatures = event.get("signatures")
    if not isinstance(signatures, dict):
        return
    servers = required_signers(event, rules) or {s for s in signatures if isinstance(s, str)}
    ts = event.get("origin_server_ts")
    minimum = ts if rules.enforce_key_validity and isinstance(ts, int) else 0
    for server in servers:
        sigs = signatures.get(server)
        if not isinstance(sigs, dict):
            continue
        for key_id in sigs:
            if isinstance(key_id, str) and key_id.startswith("ed25519:"):
                wanted = into.setdefault(server, {})
                wanted[key_id] = max(wanted.get(key_id, 0), minimum)


async def check_pdus(
    pdus: Sequence[Any], room_versions: Mapping[str, str], keys: KeySource
) -> list[CheckedPdu | Invalid]:
    """Steps 1-3 for each PDU (see the module docstring). ``room_versions`` maps the
    rooms we know to their versions; a PDU for any other room is :class:`Invalid`."""
    parsed: list[tuple[Any, str] | Invalid] = []
    wanted: dict[str, dict[str, int]] = {}
    for raw in pdus:
        if not isinstance(raw, dict):
            parsed.append(Invalid(event_id=None, reason="step 1: a PDU is not a JSON object"))
            continue
        room_id = raw.get("room_id")
        if room_id is None and len(room_versions) == 1:
            # A v12 m.room.create carries no room_id (its hash is the room ID);
            # fetches name the one room they are for.
            (room_id,) = room_versions
        version = room_versions.get(room_id) if isinstance(room_id, str) else None
        if version is None:
            parsed.append(Invalid(event_id=None, reason=f"step 1: room {room_id!r} is not known to this server"))
            continue
        rules = get_rules(version)
        try:
            pdu = parse_pdu(raw, version)  # step 1
            if pdu.room_id != room_id:
                raise InvalidEvent(f"the event belongs to room {pdu.room_id}, not {room_id}", rule="s2s: PDU format")
            _wanted_keys(pdu.json, rules, wanted)
        except InvalidEvent as e:
            event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
            if event_id is None:
                # v3+: name the dropped PDU in the /send answer by its derived ID.
                try:
                    event_id = compute_event_id_with_rules(raw, rules)
                except (InvalidEvent, ValueError, TypeError):
                    event_id = None
            parsed.append(Invalid(event_id=event_id, reason=f"step 1: {e}"))
            continue
        parsed.append((pdu, version))
    verify_keys = await keys.get_verify_keys(wanted) if wanted else {}
    if len(parsed) > _THREAD_VERIFY_PDUS:
        # A send_join answer holds thousands of events: ed25519 verification
        # releases the GIL, so a worker thread keeps the event loop serving.
        return await trio.to_thread.run_sync(_verify_all, parsed, verify_keys)
    return _verify_all(parsed, verify_keys)


#: Batches larger than this are verified in a worker thread.
_THREAD_VERIFY_PDUS = 64


def _verify_all(parsed: list[Any], verify_keys: VerifyKeys) -> list[CheckedPdu | Invalid]:
    out: list[CheckedPdu | Invalid] = []
    for entry in parsed:
        if isinstance(entry, Invalid):
            out.append(entry)
            continue
        pdu, version = entry
        try:
            verified = verify_event(pdu.json, version, verify_keys)  # steps 2 and 3
        except (SignatureError, InvalidEvent) as e:
            out.append(Invalid(event_id=pdu.event_id, reason=f"step 2: {e}"))
            continue
        if verified is Verified.SIGNATURES:
            # Step 3: the content hash does not match: process the redacted event.
            out.append(CheckedPdu(event_id=pdu.event_id, room_id=pdu.room_id, json=redact(pdu.json, version), redacted=True))
        else:
            out.append(CheckedPdu(event_id=pdu.event_id, room_id=pdu.room_id, json=pdu.json))
    return out


class RemoteEvents:
    """Verified event fetching for a room actor (see the module docstring).

    ``client`` is a ``FederationClient``; ``keys`` the key service. Every method
    swallows the peer's failures (unreachable, error answers, malformed bodies)
    into an empty or partial result, logging why: a missing event is an expected
    outcome the pipeline handles, never a crash of the room.
    """

    def __init__(self, client: Any, keys: KeySource, *, timeout_s: float = 30.0) -> None:
        self._client = client
        self._keys = keys
        self._timeout_s = timeout_s

    async def _get(self, destination: str, path: str, *, query: Mapping[str, Any] | None = None) -> Any:
        from roomactors.federation_client import FederationError, FederationUnreachable

        try:
            with trio.fail_after(self._timeout_s):
                return await self._client.get_json(destination, path, query=query)
        except (FederationError, FederationUnreachable, trio.TooSlowError) as e:
            log.info("fetch %s from %s failed: %s", path, destination, e)
            return None

    async def _post(self, destination: str, path: str, body: Any) -> Any:
        from roomactors.federation_client import FederationError, FederationUnreachable

        try:
            with trio.fail_after(self._timeout_s):
                return await self._client.post_json(destination, path, body)
        except (FederationError, FederationUnreachable, trio.TooSlowError) as e:
            log.info("fetch %s from %s failed: %s", path, destination, e)
            return None

    async def _checked(self, pdus: Any, room_id: str, room_version: str) -> list[CheckedPdu]:
        if not isinstance(pdus, list):
            return []
        results = await check_pdus(pdus, {room_id: room_version}, self._keys)
        good = [r for r in results if isinstance(r, CheckedPdu)]
        for r in results:
            if isinstance(r, Invalid):
                log.info("dropped a fetched event of %s: %s", room_id, r.reason)
        return good

    async def event_auth(self, destination: str, room_id: str, event_id: str, room_version: str) -> list[CheckedPdu]:
        """``GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}``: the event's full auth chain."""
        body = await self._get(destination, f"/_matrix/federation/v1/event_auth/{path_segment(room_id)}/{path_segment(event_id)}")
        return await self._checked(body.get("auth_chain") if isinstance(body, dict) else None, room_id, room_version)

    async def events(self, destination: str, room_id: str, event_ids: Iterable[str], room_version: str) -> list[CheckedPdu]:
        """``GET /_matrix/federation/v1/event/{eventId}`` for each, concurrently."""
        raw: list[Any] = []

        async def one(event_id: str) -> None:
            body = await self._get(destination, f"/_matrix/federation/v1/event/{path_segment(event_id)}")
            if isinstance(body, dict) and isinstance(body.get("pdus"), list):
                raw.extend(body["pdus"][:1])

        async with trio.open_nursery() as nursery:
            for event_id in dict.fromkeys(event_ids):
                nursery.start_soon(one, event_id)
        wanted = set(event_ids)
        return [c for c in await self._checked(raw, room_id, room_version) if c.event_id in wanted]

    async def missing_events(
        self,
        destination: str,
        room_id: str,
        *,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
        room_version: str,
    ) -> list[CheckedPdu]:
        """``POST /_matrix/federation/v1/get_missing_events/{roomId}`` (oldest first)."""
        body = await self._post(
            destination,
            f"/_matrix/federation/v1/get_missing_events/{path_segment(room_id)}",
            {
                "earliest_events": list(earliest_events),
                "latest_events": list(latest_events),
                "limit": limit,
                "min_depth": min_depth,
            },
        )
        return await self._checked(body.get("events") if isinstance(body, dict) else None, room_id, room_version)

    async def backfill(
        self, destination: str, room_id: str, v: Sequence[str], limit: int, room_version: str
    ) -> list[CheckedPdu]:
        """``GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=…`` (backfill.yaml):
        the ``v`` events and those before them, at most ``limit``, each checked
        (steps 1-3)."""
        body = await self._get(
            destination,
            f"/_matrix/federation/v1/backfill/{path_segment(room_id)}",
            query={"v": list(v), "limit": str(limit)},
        )
        pdus = body.get("pdus") if isinstance(body, dict) else None
        if isinstance(pdus, list):
            pdus = pdus[:limit]
        return await self._checked(pdus, room_id, room_version)

    async def state_ids(self, destination: str, room_id: str, event_id: str) -> tuple[list[str], list[str]] | None:
        """``GET /_matrix/federation/v1/state_ids/{roomId}?event_id=``: the IDs of the
        state before the event and of its auth chain, or None."""
        body = await self._get(
            destination, f"/_matrix/federation/v1/state_ids/{path_segment(room_id)}", query={"event_id": event_id}
        )
        if not isinstance(body, dict):
            return None
        pdu_ids, auth_ids = body.get("pdu_ids"), body.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(auth_ids, list):
            return None
        return [i for i in pdu_ids if isinstance(i, str)], [i for i in auth_ids if isinstance(i, str)]
