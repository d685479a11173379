"""Synapse as an oracle: compute with Synapse's own functions, JSON in, JSON out.

Theory of operation
-------------------
This script runs INSIDE ``.venv-synapse`` (``make synapse-venv``), never in our
venv: ``tests/interop/test_synapse_differential.py`` starts it as a subprocess,
writes one JSON document of cases to its stdin and reads one JSON document of
results from its stdout. It imports nothing of ours, and copies no Synapse code:
every answer comes from calling Synapse's installed functions.

Request: ``{"cases": [case, ...]}``; response: ``{"synapse_version": <the installed
matrix-synapse distribution's version>, "results": [result, ...]}``, one result per
case, in order. A case that makes
Synapse raise gets ``{"error": "<ExceptionClass>: <message>"}`` instead of
stopping the batch. Case kinds (``"op"``):

``event``
    ``{"room_version", "event"}`` ->
    ``{"event_id", "reference_hash", "content_hash", "redacted", "redacted_unsigned"}``.
    ``make_event_from_dict(...).event_id`` (v1/v2: the PDU's ``event_id``; v3+:
    derived), ``compute_event_reference_hash`` and ``compute_content_hash``
    (unpadded standard base64), and ``redact_event_dict`` (the redaction used for
    signing). Synapse's redaction also keeps ``unsigned.age_ts`` /
    ``unsigned.replaces_state`` for its own bookkeeping; that part is returned
    separately as ``redacted_unsigned`` (neither hash covers ``unsigned``).

``auth``
    ``{"room_version", "events": {event_id: pdu}, "checks": [{"event", "state",
    "listed", "validate"}]}`` -> ``{"checks": [verdict, ...]}``. ``events`` is a
    table of every PDU the checks name, keyed by *our* event ID; an entry whose ID
    Synapse derives differently fails the whole case. A checked event that
    ``make_event_from_dict`` refuses to parse is denied (``"exception":
    "unparseable"``): Synapse drops such a PDU on receipt. For each check:
    ``validate`` (optional) runs ``validate_event_for_room_version``; then
    ``check_state_independent_auth_rules`` with a store holding the ``listed``
    events (only when ``listed`` is given, or for the create event, whose rule 1
    lives there); then ``check_state_dependent_auth_rules(event, state)``.
    A verdict is ``{"allowed": bool, "exception": class name or None,
    "message": str or None, "crashed": bool}``; ``crashed`` is true when Synapse
    raised something other than ``SynapseError`` (its ``AuthError`` is one),
    i.e. a bug-shaped exception rather than a verdict.

``resolve``
    ``{"room_version", "room_id", "events": {event_id: pdu}, "state_sets":
    [[[type, state_key, event_id], ...], ...], "rejected": [event_id, ...]}`` ->
    ``{"state": [[type, state_key, event_id], ...]}`` (sorted), from
    ``synapse.state.v2.resolve_events_with_store`` with ``event_map=None`` so every
    event comes through :class:`MemoryStateResolutionStore`.

``MemoryStateResolutionStore`` is an in-memory ``StateResolutionStore`` that
answers exactly what Synapse's database answers
(``synapse/storage/databases/main/event_federation.py``,
``get_auth_chain_difference_extended``):

* ``get_events``: the events asked for that it holds (rejected ones included,
  carrying their ``rejected_reason``);
* ``get_auth_chain_difference``: the chain cover's definition — the full auth
  chain of each state set, *including the state set's own events*, and the events
  in some but not all of them; for v2.1 also the conflicted subgraph, i.e. the
  events both backwards-reachable from a conflicted event and forwards-reachable
  from one (conflicted events included), over every event the store holds.

Every Synapse coroutine here completes without waiting on the reactor (the store
answers immediately and ``Clock.sleep`` is a no-op), so
``defer.ensureDeferred(...)`` has its result as soon as it returns; no reactor
is started.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import traceback
from typing import Any, Iterable

from twisted.internet import defer
from unpaddedbase64 import encode_base64

from synapse.api.errors import SynapseError
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import compute_content_hash, compute_event_reference_hash
from synapse.event_auth import (
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
    validate_event_for_room_version,
)
from synapse.events import EventBase, make_event_from_dict
from synapse.state.v2 import resolve_events_with_store
from synapse.storage.databases.main.event_federation import StateDifference
from synapse.synapse_rust.events import redact_event_dict


class OracleCaseError(Exception):
    """The case itself is inconsistent (e.g. Synapse derives another event ID)."""


def _run(coroutine: Any) -> Any:
    """Drive a coroutine that never waits on the reactor; return its result or raise."""
    outcome: list[Any] = []
    d = defer.ensureDeferred(coroutine)
    d.addBoth(outcome.append)
    if not outcome:
        raise OracleCaseError("Synapse coroutine did not complete synchronously")
    result = outcome[0]
    if hasattr(result, "raiseException"):  # a twisted Failure
        result.raiseException()
    return result


class FakeClock:
    async def sleep(self, duration: Any) -> None:
        return None


def _build_events(room_version: Any, pdus: dict[str, dict], rejected: Iterable[str] = ()) -> dict[str, EventBase]:
    rejected = set(rejected)
    out: dict[str, EventBase] = {}
    for our_id, pdu in pdus.items():
        event = make_event_from_dict(pdu, room_version, rejected_reason="auth_error" if our_id in rejected else None)
        if event.event_id != our_id:
            raise OracleCaseError(f"Synapse derives event ID {event.event_id} for the PDU we call {our_id}")
        out[our_id] = event
    return out


# --------------------------------------------------------------------------------------
# event
# --------------------------------------------------------------------------------------


def op_event(case: dict) -> dict:
    room_version = KNOWN_ROOM_VERSIONS[case["room_version"]]
    pdu = case["event"]
    event = make_event_from_dict(pdu, room_version)
    _, reference = compute_event_reference_hash(event)
    _, content = compute_content_hash(pdu, hashlib.sha256)
    redacted = redact_event_dict(room_version, pdu)
    unsigned = redacted.pop("unsigned", None)
    return {
        "event_id": event.event_id,
        "reference_hash": encode_base64(reference),
        "content_hash": encode_base64(content),
        "redacted": redacted,
        "redacted_unsigned": unsigned,
    }


# --------------------------------------------------------------------------------------
# auth
# --------------------------------------------------------------------------------------


class _ListedEventsStore:
    """The store ``check_state_independent_auth_rules`` reads the listed auth events from."""

    def __init__(self, events: dict[str, EventBase]) -> None:
        self._events = events

    async def get_events(
        self, event_ids: Iterable[str], redact_behaviour: Any = None, get_prev_content: bool = False,
        allow_rejected: bool = False,
    ) -> dict[str, EventBase]:
        return {eid: self._events[eid] for eid in event_ids if eid in self._events}


def _verdict(fn: Any) -> dict:
    try:
        fn()
    except SynapseError as e:  # AuthError, and the 400s _check_power_levels raises
        return {"allowed": False, "exception": type(e).__name__, "message": str(e.msg), "crashed": False}
    except Exception as e:  # Synapse bug-shaped failure (ValueError from int(), KeyError, ...)
        return {"allowed": False, "exception": type(e).__name__, "message": repr(e), "crashed": True}
    return {"allowed": True, "exception": None, "message": None, "crashed": False}


def op_auth(case: dict) -> dict:
    room_version = KNOWN_ROOM_VERSIONS[case["room_version"]]
    checked = {check["event"] for check in case["checks"]}
    # Context events (state, listed) must parse; a checked event Synapse refuses to
    # parse at all is denied there and then, as Synapse would drop it on receipt.
    events = _build_events(room_version, {eid: pdu for eid, pdu in case["events"].items() if eid not in checked})
    unparseable: dict[str, str] = {}
    for eid in checked - events.keys():
        try:
            events.update(_build_events(room_version, {eid: case["events"][eid]}))
        except SynapseError as e:
            unparseable[eid] = f"{e.msg}: {e.__context__!r}"
    verdicts = []
    for check in case["checks"]:
        if check["event"] in unparseable:
            verdicts.append({"allowed": False, "exception": "unparseable", "message": unparseable[check["event"]],
                             "crashed": False})
            continue
        event = events[check["event"]]
        state = [events[eid] for eid in check["state"]]
        listed = check.get("listed")

        def run(event: EventBase = event, state: list[EventBase] = state, listed: list[str] | None = listed,
                validate: bool = bool(check.get("validate"))) -> None:
            if validate:
                validate_event_for_room_version(event)
            if listed is not None or event.type == "m.room.create":
                store = _ListedEventsStore({eid: events[eid] for eid in (listed or ())} | {
                    e.event_id: e for e in state
                })
                _run(check_state_independent_auth_rules(store, event))
            check_state_dependent_auth_rules(event, state)

        verdicts.append(_verdict(run))
    return {"checks": verdicts}


# --------------------------------------------------------------------------------------
# resolve
# --------------------------------------------------------------------------------------


class MemoryStateResolutionStore:
    """``synapse.state.v2.StateResolutionStore`` over a dict of events (see module doc)."""

    def __init__(self, events: dict[str, EventBase]) -> None:
        self._events = events
        self._children: dict[str, set[str]] = {}
        for eid, event in events.items():
            for aid in event.auth_event_ids():
                self._children.setdefault(aid, set()).add(eid)

    async def get_events(self, event_ids: Iterable[str], allow_rejected: bool = False) -> dict[str, EventBase]:
        return {
            eid: self._events[eid]
            for eid in event_ids
            if eid in self._events and (allow_rejected or self._events[eid].rejected_reason is None)
        }

    def _closure(self, start: Iterable[str], step: Any) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            eid = stack.pop()
            if eid in seen:
                continue
            seen.add(eid)
            stack.extend(step(eid))
        return seen

    def _auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """The events and all their auth ancestors (what the chain cover reaches)."""
        return self._closure(event_ids, lambda eid: self._events[eid].auth_event_ids() if eid in self._events else ())

    def _descendants(self, event_ids: Iterable[str]) -> set[str]:
        return self._closure(event_ids, lambda eid: self._children.get(eid, ()))

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        chains = [self._auth_chain(s) for s in state_sets]
        union = set().union(*chains)
        common = set(chains[0]).intersection(*chains[1:])
        subgraph: set[str] | None = None
        if conflicted_state is not None:
            backwards = self._auth_chain(set(conflicted_state) | set(additional_backwards_reachable_conflicted_events or ()))
            forwards = self._descendants(conflicted_state)
            subgraph = backwards & forwards
        return StateDifference(auth_difference=union - common, conflicted_subgraph=subgraph)


def op_resolve(case: dict) -> dict:
    room_version = KNOWN_ROOM_VERSIONS[case["room_version"]]
    events = _build_events(room_version, case["events"], case.get("rejected", ()))
    state_sets = [{(t, sk): eid for t, sk, eid in s} for s in case["state_sets"]]
    resolved = _run(
        resolve_events_with_store(
            FakeClock(),
            case["room_id"],
            room_version,
            state_sets,
            None,
            MemoryStateResolutionStore(events),
        )
    )
    return {"state": sorted([t, sk, eid] for (t, sk), eid in resolved.items())}


OPS = {"event": op_event, "auth": op_auth, "resolve": op_resolve}


def main() -> None:
    request = json.load(sys.stdin)
    results = []
    for case in request["cases"]:
        try:
            results.append(OPS[case["op"]](case))
        except Exception as e:
            results.append({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    json.dump({"synapse_version": importlib.metadata.version("matrix-synapse"), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
