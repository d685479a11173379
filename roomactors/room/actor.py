"""RoomActor: the one task that owns a room's DAG, state and rows.

Theory of operation
-------------------
The registry runs one ``RoomActor.run(inbox)`` per loaded room. It loads the room
from SQLite (``storage.rooms.load_room``), reports ``started``, then handles its
mailbox one message at a time — so nothing about a room needs a lock: one room,
one owner (house rule 2). Every change follows **commit, then apply, then
answer** (house rule 3)::

    message ─► compute (pure: build/sign, check_auth, state, extremities)
            ─► ONE await db.write(checkpoint, Checkpoint(...))     ← durable here
            ─► swap the in-memory room (synchronous: cannot fail half-way)
            ─► reply.send_nowait(result), then reply.close()

Everything that may need I/O (a state map, an event's PDU) is fetched *before*
the checkpoint, so the apply step is plain assignments. If anything raises, the
actor dies, its memory is discarded, and the supervisor's next incarnation
reloads the committed truth from SQLite.

What the actor holds
~~~~~~~~~~~~~~~~~~~~
* the room version's rules and its create event;
* the **forward extremities**, with each one's depth and state ref;
* the **current state** ``(type, state_key) -> event ID`` and the PDU of every
  current state event (what local auth checks read), plus the **membership
  index** derived from it;
* an LRU of **state maps by ref** (a ref names the ``state_snapshots`` row of the
  state after some event; see docs/ROOM-ACTORS.md) — anything else is read with
  ``db.read(get_state, ref)``;
* an LRU **DAG index** of events it has seen (PDU, depth, state ref, flags),
  which doubles as the auth chain cache state resolution draws on; misses are
  read with ``db.read(get_events, ...)``;
* an LRU of answered transaction IDs (``storage`` has all of them).

Invariants
~~~~~~~~~~
* The current state is the resolution of the states after the forward
  extremities (spec "Soft failure": "the resolved state across all forward
  extremities"). A linear event (its prevs are exactly the extremities) makes its
  own state after the current state; anything else re-resolves over the new
  extremities' states. State maps are never changed in place (copy on write), so
  identity (``is``) means "same state" and snapshots handed out stay valid.
* Rejected, soft-failed and outlier events are stored but never become
  extremities and never change the current state.
* The actor never closes ``inbox`` (the registry owns it) and returns normally
  only when ``inbox`` is empty, with no checkpoint between that check and the
  return — what makes the registry's idle stop race-free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import trio

from roomactors.clock import Clock
from roomactors.protocol.auth import CREATE_KEY, auth_types_for_event, check_auth
from roomactors.protocol.dag import next_depth, select_prev_events, topo_sort, update_forward_extremities
from roomactors.protocol.errors import AuthError, InvalidEvent
from roomactors.protocol.ids import EventId, RoomId, UserId, server_name_of
from roomactors.protocol.pdu import Pdu, parse_pdu
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersionRules, get_rules
from roomactors.protocol.state_res import MissingEventError, resolve_state
from roomactors.registry import RegistrySettings
from roomactors.room.events import build_pdu, event_refs
from roomactors.room.messages import (
    BadEvent,
    CreateRoom,
    Forbidden,
    GetState,
    AdoptRemoteRoom,
    GetStateBefore,
    IngestPdu,
    IngestStaged,
    MakeMembership,
    MembershipAccepted,
    MembershipTemplate,
    ReceiveInvite,
    PrepareEvent,
    Prepared,
    CommitPrepared,
    Backfill,
    Backfilled,
    SubmitMembership,
    PduOutcome,
    SendEvent,
    SendResult,
    StateAt,
    StateKey,
    StateMap,
    StateView,
    Stop,
    UnknownEvent,
    UnknownRoom,
)
from roomactors.room.pipeline import (
    KnownEvent,
    receive_pdu,
    select_auth_state,
    step_1_valid_for_room,
    step_4_auth_events,
)
from storage import rooms as store
from storage import backfill as history
from storage import staging
from storage.rooms import Checkpoint, NewEvent, RoomRecord, StoredEvent, TxnRecord

__all__ = ["RoomActor"]

K = TypeVar("K")
V = TypeVar("V")

_MEMBER = "m.room.member"
#: A resolution drawing on more events than this runs in a worker thread.
_THREAD_RESOLUTION_EVENTS = 2000


class _Lru(Generic[K, V]):
    """A bounded least-recently-used map."""

    __slots__ = ("_data", "_capacity")

    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _reply(reply: trio.MemorySendChannel[Any], value: object) -> None:
    """Answer; an asker that has gone (cancelled, closed its end, not waiting on a
    full channel) is no error — the work is committed either way (house rule 7)."""
    try:
        reply.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass


def _known_from_stored(stored: StoredEvent) -> KnownEvent:
    return KnownEvent(
        event_id=stored.event_id,
        room_id=stored.room_id,
        json=stored.json,
        depth=stored.depth,
        stream_ordering=stored.stream_ordering,
        state_after_ref=stored.state_after_ref,
        outlier=bool(stored.outlier),
        rejected=stored.rejection_reason is not None,
        soft_failed=bool(stored.soft_failed),
    )


def _membership(event: dict[str, Any]) -> str | None:
    content = event.get("content")
    membership = content.get("membership") if isinstance(content, dict) else None
    return membership if isinstance(membership, str) else None


def _diff(old: Mapping[StateKey, str], new: Mapping[StateKey, str]) -> dict[StateKey, str | None]:
    """Upserts (and, as ``None``, removals) turning ``old`` into ``new``."""
    if old is new:
        return {}
    delta: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    delta.update((k, None) for k in old if k not in new)
    return delta


class RoomActor:
    """One room's owner; see the module docstring. Built by the registry's factory,
    run once per incarnation (a crash discards it and a new one reloads)."""

    def __init__(
        self,
        room_id: RoomId,
        *,
        db: Any,
        server_name: str,
        signing_key: Any,
        clock: Clock,
        settings: RegistrySettings,
        event_cache_size: int = 512,
        state_cache_size: int = 16,
        txn_cache_size: int = 256,
        on_commit: Callable[[RoomId, int, dict[str, Any]], None] | None = None,
        on_outbound: Callable[[RoomId, int, dict[str, Any], frozenset[str]], None] | None = None,
        remote: Any = None,
        staging_flags: set[RoomId] | None = None,
        poison_after: int = 3,
    ) -> None:
        self._room_id = room_id
        self._db = db
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock
        self._settings = settings
        # Called after every event commit and apply (the notifier, the sender): it
        # must not block or raise.
        self._on_commit = on_commit
        # Called after a commit of an event other servers must receive (our users'
        # events; memberships submitted through /send_*), with the destinations.
        self._on_outbound = on_outbound
        # roomactors.inbound.RemoteEvents: verified fetching of missing events.
        self._remote = remote
        # Rooms whose staging area has rows (set by /send when our mailbox is full).
        self._staging_flags = staging_flags if staging_flags is not None else set()
        self._poison_after = poison_after
        # Servers with a joined member in the current state (None: recompute from
        # the per-server join counts).
        self._joined_servers: frozenset[str] | None = None
        self._server_joins: dict[str, int] = {}
        # The room (None until it exists: loaded, created or joined).
        self._version: str | None = None
        self._rules: RoomVersionRules | None = None
        self._create_event: dict[str, Any] = {}
        self._create_id = ""
        self._extremities: frozenset[str] = frozenset()
        self._ext_depth: dict[str, int] = {}
        self._ext_ref: dict[str, str] = {}
        self._current: StateMap = {}
        self._current_events: dict[str, dict[str, Any]] = {}
        self._members: dict[str, str] = {}
        # Caches (bounded).
        self._events: _Lru[str, KnownEvent] = _Lru(event_cache_size)
        self._states: _Lru[str, StateMap] = _Lru(state_cache_size)
        self._txns: _Lru[TxnRecord, SendResult] = _Lru(txn_cache_size)

    # ----------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------

    async def run(
        self, inbox: trio.MemoryReceiveChannel[Any], *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        record = await self._db.read(store.load_room, self._room_id)
        if record is not None:
            self._load(record)
        task_status.started()
        if record is not None and self._remote is not None:
            await self._drain_staged()  # PDUs staged before a restart
        idle = self._settings.idle_timeout_s
        while True:
            msg = None
            with trio.move_on_after(idle):
                try:
                    msg = await inbox.receive()
                except trio.EndOfChannel:
                    return  # the registry is shutting down and the mailbox is drained
            if msg is None or isinstance(msg, Stop):
                # Idle (or asked to stop): leave only if nothing is queued. No
                # checkpoint between this check and the return (see the registry).
                if inbox.statistics().current_buffer_used == 0:
                    return
                continue
            try:
                await self._handle(msg)
            finally:
                reply = getattr(msg, "reply", None)
                if reply is not None:
                    reply.close()
            if self._room_id in self._staging_flags:
                await self._drain_staged()

    async def _handle(self, msg: object) -> None:
        match msg:
            case SendEvent():
                _reply(msg.reply, await self._on_send_event(msg))
            case IngestPdu():
                _reply(msg.reply, await self._on_ingest_pdu(msg))
            case GetState():
                _reply(msg.reply, self._on_get_state())
            case GetStateBefore():
                _reply(msg.reply, await self._on_get_state_before(msg))
            case IngestStaged():
                await self._drain_staged()
            case MakeMembership():
                _reply(msg.reply, await self._on_make_membership(msg))
            case SubmitMembership():
                _reply(msg.reply, await self._on_submit_membership(msg))
            case AdoptRemoteRoom():
                _reply(msg.reply, await self._on_adopt_remote_room(msg))
            case ReceiveInvite():
                _reply(msg.reply, await self._on_receive_invite(msg))
            case PrepareEvent():
                _reply(msg.reply, await self._send(msg.sender, msg.type, msg.content, msg.state_key, None, prepare_only=True))
            case CommitPrepared():
                _reply(msg.reply, await self._on_commit_prepared(msg))
            case Backfill():
                _reply(msg.reply, await self._on_backfill(msg))
            case CreateRoom():
                _reply(msg.reply, await self._on_create_room(msg))
            case _:
                raise TypeError(f"room {self._room_id}: unexpected message {msg!r}")

    # ----------------------------------------------------------------------------------
    # Loading and starting the room
    # ----------------------------------------------------------------------------------

    def _load(self, record: RoomRecord) -> None:
        if CREATE_KEY not in record.current_state and not record.forward_extremities:
            return  # only an invite/knock/leave outlier is held: not a room we are in
        self._version = record.room_version
        self._rules = get_rules(record.room_version)
        self._current = dict(record.current_state)
        self._current_events = dict(record.current_state_events)
        self._create_id = self._current[CREATE_KEY]
        self._create_event = self._current_events[self._create_id]
        self._extremities = frozenset(record.forward_extremities)
        self._ext_depth = {e: record.extremity_depths[e] for e in self._extremities}
        self._ext_ref = {e: record.extremity_state_refs[e] for e in self._extremities}
        self._members = {
            key[1]: m
            for key, eid in self._current.items()
            if key[0] == _MEMBER and (m := _membership(self._current_events[eid])) is not None
        }
        self._server_joins = {}
        for user_id, membership in self._members.items():
            if membership == "join":
                server = user_id.split(":", 1)[1] if ":" in user_id else user_id
                self._server_joins[server] = self._server_joins.get(server, 0) + 1
        self._joined_servers = None
        if len(self._extremities) == 1:
            # One extremity: its state *is* the current state; share the object so
            # the next event's snapshot delta is found without comparing maps.
            (only,) = self._extremities
            self._states.put(self._ext_ref[only], self._current)

    async def _start_room(self, create_event: dict[str, Any]) -> SendResult | BadEvent | Forbidden:
        """Validate, commit and adopt the room's ``m.room.create`` event."""
        content = create_event.get("content") if isinstance(create_event, dict) else None
        version = content.get("room_version", "1") if isinstance(content, dict) else None
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            return BadEvent(errcode="M_UNSUPPORTED_ROOM_VERSION", error=f"unsupported room version {version!r}")
        try:
            pdu = parse_pdu(create_event, version)
        except InvalidEvent as e:
            return BadEvent(errcode=_errcode(e), error=str(e))
        if pdu.type != "m.room.create" or pdu.state_key != "":
            return BadEvent(errcode="M_BAD_JSON", error="the room must start with an m.room.create event")
        if pdu.room_id != self._room_id:
            return BadEvent(errcode="M_BAD_JSON", error=f"the create event is for room {pdu.room_id}, not {self._room_id}")
        try:
            check_auth(pdu.json, {}, version)
        except AuthError as e:
            return Forbidden(error=e.message, rule=e.rule)
        state = {CREATE_KEY: pdu.event_id}
        cp = Checkpoint(
            room_id=self._room_id,
            room_version=version,
            events=(self._new_event(pdu, state_base_ref=None, state_delta=state),),
            forward_extremities=frozenset({pdu.event_id}),
            current_state_delta=state,
        )
        orderings = await self._db.write(store.checkpoint, cp)
        # Apply.
        self._version = version
        self._rules = get_rules(version)
        self._create_event = pdu.json
        self._create_id = pdu.event_id
        self._extremities = frozenset({pdu.event_id})
        self._ext_depth = {pdu.event_id: pdu.depth}
        self._ext_ref = {pdu.event_id: pdu.event_id}
        self._current = state
        self._current_events = {pdu.event_id: pdu.json}
        self._states.put(pdu.event_id, state)
        stream_ordering = orderings[pdu.event_id]
        self._events.put(pdu.event_id, self._known(pdu, stream_ordering, pdu.event_id))
        if self._on_commit is not None:
            self._on_commit(self._room_id, stream_ordering, pdu.json)
        return SendResult(event_id=pdu.event_id, stream_ordering=stream_ordering)

    # ----------------------------------------------------------------------------------
    # Handlers
    # ----------------------------------------------------------------------------------

    async def _on_create_room(self, msg: CreateRoom) -> SendResult | BadEvent | Forbidden | UnknownRoom:
        if self._version is not None:
            return BadEvent(errcode="M_ROOM_IN_USE", error=f"room {self._room_id} already exists")
        result: SendResult | BadEvent | Forbidden | UnknownRoom = await self._start_room(msg.create_event)
        # The createRoom sequence, each event its own commit, stopping at the first
        # refusal (the caller validated the plan, so a refusal is a bad request).
        for spec in msg.initial_events:
            if not isinstance(result, SendResult):
                break
            result = await self._send(spec.sender, spec.type, spec.content, spec.state_key, None)
        return result

    def _on_get_state(self) -> StateView | UnknownRoom:
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        return StateView(
            room_id=self._room_id,
            room_version=self._version,
            current_state=MappingProxyType(self._current),
            state_events=MappingProxyType(self._current_events),
            forward_extremities=self._extremities,
            depth=max(self._ext_depth.values()),
            joined_members=frozenset(UserId(u) for u, m in self._members.items() if m == "join"),
        )

    async def _on_get_state_before(self, msg: GetStateBefore) -> StateAt | UnknownEvent | UnknownRoom:
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        known = (await self.known_events([msg.event_id])).get(msg.event_id)
        if known is None or known.room_id != self._room_id or known.outlier or known.rejected:
            return UnknownEvent(event_id=msg.event_id)
        prevs = event_refs(known.json, "prev_events")
        if known.json.get("type") == "m.room.create" and not prevs:
            state: Mapping[StateKey, str] = {}
        else:
            try:
                state = await self.state_before(prevs)
            except LookupError:  # a prev event is an outlier: we hold no state before it
                return UnknownEvent(event_id=msg.event_id)
        return StateAt(event_id=EventId(msg.event_id), room_version=self.room_version, state=MappingProxyType(dict(state)))

    async def _on_send_event(self, msg: SendEvent) -> SendResult | Forbidden | BadEvent | UnknownRoom:
        return await self._send(msg.sender, msg.type, msg.content, msg.state_key, msg.txn)

    async def _send(
        self,
        sender: UserId,
        type: str,
        content: dict[str, Any],
        state_key: str | None,
        txn: TxnRecord | None,
        *,
        prepare_only: bool = False,
    ) -> Any:
        """Build, sign, authorise and commit one local event (SendEvent and CreateRoom)."""
        if self._version is None or self._rules is None:
            return UnknownRoom(room_id=self._room_id)
        version, rules = self._version, self._rules
        if txn is not None:
            earlier = await self._txn_result(txn)
            if earlier is not None:
                return earlier
        try:
            if server_name_of(sender) != self._server_name:
                return Forbidden(error=f"{sender} is not a user of {self._server_name}", rule=None)
        except InvalidEvent as e:
            return BadEvent(errcode="M_INVALID_PARAM", error=str(e))

        # prev_events: the forward extremities, deepest first, capped.
        prevs = select_prev_events(self._extremities, self._ext_depth)
        state_before = await self.state_before(prevs)
        # auth_events: the auth events selection over the state before the event.
        shape: dict[str, Any] = {"type": type, "sender": sender, "content": content}
        if state_key is not None:
            shape["state_key"] = state_key
        auth_ids = [state_before[k] for k in sorted(auth_types_for_event(shape, version)) if k in state_before]
        referenced = await self._events_json([*prevs, *auth_ids]) if rules.event_refs_are_pairs else None
        try:
            pdu = build_pdu(
                room_version=version,
                room_id=self._room_id,
                sender=sender,
                type=type,
                content=content,
                state_key=state_key,
                prev_events=prevs,
                auth_events=auth_ids,
                depth=next_depth((self._ext_depth[p] for p in prevs), strict_canonical_json=rules.strict_canonical_json),
                origin_server_ts=self._clock.time_ms(),
                server_name=self._server_name,
                signing_key=self._signing_key,
                referenced=referenced,
            )
        except InvalidEvent as e:
            return BadEvent(errcode=_errcode(e), error=str(e))
        event_id, event = pdu.event_id, pdu.json

        # The event must pass against the state before it (what every server checks,
        # step 5) and against the current state (step 6; the same map when linear).
        for state in (state_before,) if state_before is self._current else (state_before, self._current):
            try:
                check_auth(event, await self.auth_state(event, state), version, create_event_id=self._create_hint())
            except AuthError as e:
                return Forbidden(error=e.message, rule=e.rule)
        if prepare_only:
            return Prepared(
                room_version=version,
                event_id=EventId(event_id),
                pdu=event,
                state_events={key: pdu_json for key, e in self._current.items() if (pdu_json := self._current_events.get(e))},
            )

        own = {(pdu.type, pdu.state_key): event_id} if pdu.state_key is not None else {}
        joined_before = self._joined()
        stream_ordering = await self._commit_event(
            pdu,
            state_before=state_before,
            own_change=own,
            becomes_extremity=True,
            txn=txn,
        )
        if self._on_outbound is not None:
            # Every server in the room before or after the event (a leaving or
            # kicked server still hears of it); our own server is not a destination.
            destinations = (joined_before | self._joined()) - {self._server_name}
            if destinations:
                self._on_outbound(self._room_id, stream_ordering, event, destinations)
        result = SendResult(event_id=EventId(event_id), stream_ordering=stream_ordering)
        if txn is not None:
            self._txns.put(txn, result)
        return result

    async def _on_ingest_pdu(self, msg: IngestPdu) -> PduOutcome | UnknownRoom:
        if self._version is None:
            if isinstance(msg.pdu, dict) and msg.pdu.get("type") == "m.room.create":
                started = await self._start_room(msg.pdu)
                if isinstance(started, SendResult):
                    return PduOutcome(event_id=started.event_id, status="accepted")
                return PduOutcome(event_id=None, status="invalid", reason=f"step 1/4: {started.error}")
            return UnknownRoom(room_id=self._room_id)
        decision = await receive_pdu(self, msg.pdu)
        await self._store_decision(decision)
        return decision.outcome

    # ----------------------------------------------------------------------------------
    # Federation: staged PDUs, membership handshakes, adopting a remote room
    # ----------------------------------------------------------------------------------

    async def _drain_staged(self) -> None:
        """Process every staged PDU of this room (docs/ARCHITECTURE.md "Data flow: one
        inbound PDU", step 5). A batch's attempts are counted durably *before* it is
        processed, so a PDU that crashes the actor is retried by the next
        incarnation and poisoned after ``poison_after`` tries — no catch-all here."""
        self._staging_flags.discard(self._room_id)
        if self._version is None:
            return
        while True:
            rows = await self._db.read(staging.next_staged, self._room_id, 50)
            if not rows:
                return
            await self._db.write(_count_attempts, [r.staging_id for r in rows], self._poison_after)
            ordered = topo_sort(rows, key=lambda r: (r.event_id, event_refs(r.json, "prev_events")))
            done: list[int] = []
            for row in ordered:
                outcome = await self._receive_remote(row.json, row.origin, staging_ids=(row.staging_id,))
                if outcome.status not in ("accepted", "rejected", "soft_failed", "outlier"):
                    done.append(row.staging_id)  # not stored: nothing else consumes the row
            if done:
                await self._db.write(staging.delete_staged, done)

    async def _receive_remote(
        self, event: dict[str, Any], origin: str, *, staging_ids: tuple[int, ...] = (), fill_gaps: bool = True
    ) -> PduOutcome:
        """Checks 4-6 on a PDU from ``origin`` (steps 1-3 passed), fetching from
        ``origin`` what the pipeline reports missing: auth events (then step 4 can
        run), prev events (``/get_missing_events``, bounded), and failing those, the
        state at the prev events (``/state_ids``). Stores the outcome."""
        decision = await receive_pdu(self, event)
        outcome = decision.outcome
        if outcome.status == "missing_auth_events" and self._remote is not None and outcome.event_id:
            await self._fetch_auth_chain(origin, outcome.event_id, outcome.missing)
            decision = await receive_pdu(self, event)
            outcome = decision.outcome
        if outcome.status == "outlier" and fill_gaps and self._remote is not None and decision.pdu is not None:
            pdu = decision.pdu
            await self._fill_gap(origin, pdu)
            decision = await receive_pdu(self, event)
            outcome = decision.outcome
            if outcome.status == "outlier":
                state = await self._state_from_peer(origin, pdu)
                if state is not None:
                    decision = await receive_pdu(self, event, state_before=state)
                    outcome = decision.outcome
        await self._store_decision(decision, staging_ids=staging_ids)
        return outcome

    async def _store_decision(self, decision: Any, *, staging_ids: tuple[int, ...] = ()) -> None:
        outcome = decision.outcome
        if not decision.store:
            return
        pdu = decision.pdu
        assert pdu is not None
        if decision.state_before is None:  # an outlier (rejected or not): no state
            await self._commit_event(
                pdu,
                state_before=None,
                own_change={},
                becomes_extremity=False,
                outlier=True,
                rejection_reason=outcome.reason if outcome.status == "rejected" else None,
                staging_ids=staging_ids,
            )
        elif outcome.status == "rejected":
            # "not updating [the state] with the rejected event": its state after is
            # the state before it.
            await self._commit_event(
                pdu,
                state_before=decision.state_before,
                own_change={},
                becomes_extremity=False,
                rejection_reason=outcome.reason,
                staging_ids=staging_ids,
            )
        else:
            await self._commit_event(
                pdu,
                state_before=decision.state_before,
                own_change={(pdu.type, pdu.state_key): pdu.event_id} if pdu.state_key is not None else {},
                becomes_extremity=outcome.status == "accepted",
                soft_failed=outcome.status == "soft_failed",
                staging_ids=staging_ids,
            )

    async def _store_outliers(self, events: Sequence[dict[str, Any]]) -> None:
        """Store fetched auth/state events as outliers, each after its auth events
        (step 4 decides "rejected"); events whose auth events cannot be found are
        skipped (never stored unchecked)."""
        ordered = topo_sort(list(events), key=lambda e: (str(e.get("event_id", id(e))), event_refs(e, "auth_events")))
        for event in ordered:
            try:
                checked = parse_pdu(event, self.room_version)
            except InvalidEvent:
                continue
            if checked.room_id != self._room_id or await self.known_events([checked.event_id]):
                continue
            listed = await self.known_events(checked.auth_events)
            if any(a not in listed for a in checked.auth_events):
                continue
            if checked.type == "m.room.create" and checked.state_key == "" and checked.event_id != self._create_id:
                continue
            rejected = step_4_auth_events(checked, [listed[a] for a in checked.auth_events], self._create_event, self._create_id)
            await self._commit_event(
                checked,
                state_before=None,
                own_change={},
                becomes_extremity=False,
                outlier=True,
                rejection_reason=rejected.reason() if rejected is not None else None,
            )

    async def _fetch_auth_chain(self, origin: str, event_id: str, missing: Sequence[str]) -> None:
        chain = await self._remote.event_auth(origin, self._room_id, event_id, self.room_version)
        if not any(c.event_id in missing for c in chain):
            chain = await self._remote.events(origin, self._room_id, missing, self.room_version)
        await self._store_outliers([c.json for c in chain])

    async def _fill_gap(self, origin: str, pdu: Pdu) -> None:
        """Spec "Checks performed on receipt of a PDU", step 5 prerequisite: fetch the
        missing prev events with a bounded ``/get_missing_events`` (limit 10,
        never below our extremities' depth) and receive them oldest first."""
        if not self._extremities:
            return
        fetched = await self._remote.missing_events(
            origin,
            self._room_id,
            earliest_events=sorted(self._extremities),
            latest_events=[pdu.event_id],
            limit=10,
            min_depth=min(self._ext_depth.values()),
            room_version=self.room_version,
        )
        for checked in sorted(fetched, key=lambda c: c.json.get("depth", 0)):
            if checked.event_id == pdu.event_id:
                continue
            await self._receive_remote(checked.json, origin, fill_gaps=False)

    async def _state_from_peer(self, origin: str, pdu: Pdu) -> Mapping[StateKey, str] | None:
        """The state before ``pdu`` when some prev events are missing or have no
        state here: for each such prev event, ``/state_ids`` at it (the state before
        it) plus the prev event itself; then resolved with the states we hold."""
        maps: list[StateMap] = []
        for prev in dict.fromkeys(pdu.prev_events):
            known = (await self.known_events([prev])).get(prev)
            if known is not None and known.state_after_ref is not None and known.room_id == self._room_id:
                maps.append(await self._state_map(known.state_after_ref))
                continue
            ids = await self._remote.state_ids(origin, self._room_id, prev)
            if ids is None:
                return None
            state_ids, auth_ids = ids
            wanted = [e for e in dict.fromkeys([*auth_ids, *state_ids, prev])]
            have = await self.known_events(wanted)
            missing = [e for e in wanted if e not in have]
            if missing:
                fetched = await self._remote.events(origin, self._room_id, missing, self.room_version)
                await self._store_outliers([c.json for c in fetched])
                have = await self.known_events(wanted)
            if any(e not in have for e in [*state_ids, prev]):
                return None
            state: StateMap = {}
            for event_id in state_ids:
                j = have[event_id].json
                if isinstance(j.get("state_key"), str):
                    state[(j["type"], j["state_key"])] = event_id
            prev_json = have[prev].json
            if isinstance(prev_json.get("state_key"), str) and not have[prev].rejected:
                state[(prev_json["type"], prev_json["state_key"])] = prev
            maps.append(state)
        if not maps:
            return None
        if len(maps) == 1:
            return maps[0]
        return await self._resolve(maps)

    async def _on_make_membership(self, msg: MakeMembership) -> MembershipTemplate | Forbidden | UnknownRoom:
        """``/make_join``, ``/make_leave``, ``/make_knock`` (server-server API "Joining
        Rooms" etc.): the event we would accept now, minus what the joining server
        adds (hashes, signatures, its own timestamp). We build it as if it were ours
        and dry-run the authorization rules on it, so a template is only offered if
        the membership would be allowed on the current state."""
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        version = self._version
        content: dict[str, Any] = {"membership": msg.membership}
        prevs = select_prev_events(self._extremities, self._ext_depth)
        state = self._current
        shape = {"type": _MEMBER, "sender": msg.user_id, "state_key": msg.user_id, "content": content}
        auth_ids = [state[k] for k in sorted(auth_types_for_event(shape, version)) if k in state]
        referenced = await self._events_json([*prevs, *auth_ids]) if self._rules and self._rules.event_refs_are_pairs else None
        try:
            pdu = build_pdu(
                room_version=version,
                room_id=self._room_id,
                sender=msg.user_id,
                type=_MEMBER,
                content=content,
                state_key=msg.user_id,
                prev_events=prevs,
                auth_events=auth_ids,
                depth=next_depth((self._ext_depth[p] for p in prevs), strict_canonical_json=self._rules.strict_canonical_json if self._rules else True),
                origin_server_ts=self._clock.time_ms(),
                server_name=self._server_name,
                signing_key=self._signing_key,
                referenced=referenced,
            )
            check_auth(pdu.json, await self.auth_state(pdu.json, state), version, create_event_id=self._create_hint())
        except InvalidEvent as e:
            return Forbidden(error=str(e), rule=e.rule)
        except AuthError as e:
            return Forbidden(error=e.message, rule=e.rule)
        template = {k: v for k, v in pdu.json.items() if k not in ("signatures", "hashes", "unsigned", "event_id")}
        template["origin"] = server_name_of(msg.user_id)
        return MembershipTemplate(room_version=version, event=template)

    async def _on_submit_membership(self, msg: SubmitMembership) -> MembershipAccepted | Forbidden | BadEvent | UnknownRoom:
        """``/send_join``, ``/send_leave``, ``/send_knock``: the signed membership event
        must pass checks 4-6 and become part of the room; then every other server in
        the room gets it from us (the joining server cannot send it yet)."""
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        event = msg.pdu
        content = event.get("content")
        if (
            event.get("type") != _MEMBER
            or event.get("state_key") != event.get("sender")
            or not isinstance(content, dict)
            or content.get("membership") != msg.membership
        ):
            return BadEvent(errcode="M_BAD_JSON", error=f"not an m.room.member {msg.membership} event of its sender")
        joined_before = self._joined()
        outcome = await self._receive_remote(event, msg.origin)
        if outcome.status == "duplicate" and outcome.event_id is not None:
            known = (await self.known_events([outcome.event_id]))[outcome.event_id]
            ok = not (known.outlier or known.rejected or known.soft_failed)
        else:
            ok = outcome.status == "accepted"
        if not ok or outcome.event_id is None:
            return Forbidden(error=f"the {msg.membership} event was not accepted: {outcome.reason or outcome.status}", rule=None)
        event_id = outcome.event_id
        known = (await self.known_events([event_id]))[event_id]
        if outcome.status == "accepted" and self._on_outbound is not None and known.stream_ordering is not None:
            destinations = (joined_before | self._joined()) - {msg.origin, self._server_name}
            self._on_outbound(self._room_id, known.stream_ordering, known.json, frozenset(destinations))
        if msg.membership != "join":
            stripped: tuple[dict[str, Any], ...] = ()
            if msg.membership == "knock":
                stripped = tuple(
                    {k: self._current_events[e][k] for k in ("type", "state_key", "content", "sender")}
                    for key, e in self._current.items()
                    if key[0] in _STRIPPED_TYPES
                )
            return MembershipAccepted(event_id=event_id, event=known.json, stripped_state=stripped)
        state = await self.state_before(event_refs(known.json, "prev_events"))
        lookup: dict[str, dict[str, Any]] = {}
        await self._load_auth_closure(state.values(), lookup, set())
        state_ids = set(state.values())
        return MembershipAccepted(
            event_id=event_id,
            event=known.json,
            state=tuple(lookup[e] for e in state.values() if e in lookup),
            auth_chain=tuple(pdu for e, pdu in lookup.items() if e not in state_ids),
            servers_in_room=tuple(sorted(self._joined())),
        )

    async def _on_adopt_remote_room(self, msg: AdoptRemoteRoom) -> SendResult | Forbidden | BadEvent:
        """Our join through ``/send_join`` (server-server API "Joining Rooms"): the
        caller verified the returned state and auth chain (steps 1-4 for each
        event); the join must pass the authorization rules on that state. One
        checkpoint stores the events as outliers and the join as the room's one
        forward extremity with that state, then the room is loaded from it."""
        version = msg.room_version
        try:
            join = parse_pdu(msg.join_event, version)
        except InvalidEvent as e:
            return BadEvent(errcode="M_BAD_JSON", error=str(e))
        if self._version is not None:
            # We hold the room already (a rejoin): the join is an ordinary PDU whose
            # state before it comes from the resident server.
            await self._store_outliers([pdu for pdu, reason in msg.events.values() if reason is None])
            decision = await receive_pdu(self, join.json, state_before=dict(msg.state))
            await self._store_decision(decision)
            if decision.outcome.status not in ("accepted", "duplicate"):
                return Forbidden(error=decision.outcome.reason or decision.outcome.status, rule=None)
            known = (await self.known_events([join.event_id]))[join.event_id]
            assert known.stream_ordering is not None
            return SendResult(event_id=EventId(join.event_id), stream_ordering=known.stream_ordering)
        create_id = msg.state.get(CREATE_KEY)
        if create_id is None or create_id not in msg.events:
            return BadEvent(errcode="M_BAD_JSON", error="the room state has no m.room.create event")
        state_events = {key: msg.events[e][0] for key, e in msg.state.items() if e in msg.events}
        if len(state_events) != len(msg.state):
            return BadEvent(errcode="M_BAD_JSON", error="the room state cites events that were not returned")
        rules = get_rules(version)
        auth_state = {key: pdu for key, pdu in state_events.items() if key in select_auth_state(join.json, msg.state, version)}
        try:
            check_auth(join.json, auth_state, version, create_event_id=None if not rules.create_event_in_auth_events else create_id)
        except AuthError as e:
            return Forbidden(error=e.message, rule=e.rule)
        new_events: list[NewEvent] = []
        # An invite or knock of ours may already be stored (an outlier): keep it.
        held = await self.known_events(list(msg.events))
        for event_id, (pdu_json, reason) in msg.events.items():
            if event_id == join.event_id or event_id in held:
                continue
            pdu = parse_pdu(pdu_json, version)
            new_events.append(
                NewEvent(
                    event_id=pdu.event_id, room_id=self._room_id, json=pdu.json, depth=pdu.depth, type=pdu.type,
                    state_key=pdu.state_key, sender=pdu.sender, origin_server_ts=pdu.origin_server_ts,
                    prev_events=tuple(pdu.prev_events), auth_events=tuple(pdu.auth_events), outlier=True,
                    rejection_reason=reason, state_base_ref=None, state_delta={},
                )
            )
        state_after: StateMap = {**msg.state, (join.type, join.state_key or ""): join.event_id}
        new_events.append(self._new_event(join, state_base_ref=None, state_delta=state_after))
        cp = Checkpoint(
            room_id=self._room_id,
            room_version=version,
            events=tuple(new_events),
            forward_extremities=frozenset({join.event_id}),
            current_state_delta=state_after,
        )
        orderings = await self._db.write(store.checkpoint, cp)
        record = await self._db.read(store.load_room, self._room_id)
        self._load(record)
        stream_ordering = orderings[join.event_id]
        if self._on_commit is not None:
            self._on_commit(self._room_id, stream_ordering, join.json)
        return SendResult(event_id=EventId(join.event_id), stream_ordering=stream_ordering)

    async def _on_receive_invite(self, msg: ReceiveInvite) -> SendResult | Forbidden:
        """An invite of one of our users from another server (``/invite``)."""
        try:
            pdu = parse_pdu(msg.pdu, msg.room_version)
        except InvalidEvent as e:
            return Forbidden(error=str(e), rule=e.rule)
        if self._version is not None:
            if self._version != msg.room_version:
                return Forbidden(error=f"room {self._room_id} has version {self._version}", rule=None)
            outcome = await self._receive_remote(msg.pdu, msg.origin)
            known = (await self.known_events([pdu.event_id])).get(pdu.event_id)
            if known is None or known.rejected or known.stream_ordering is None:
                return Forbidden(error=f"the invite was not accepted: {outcome.reason or outcome.status}", rule=None)
            return SendResult(event_id=EventId(pdu.event_id), stream_ordering=known.stream_ordering)
        existing = (await self.known_events([pdu.event_id])).get(pdu.event_id)
        if existing is not None and existing.stream_ordering is not None:
            return SendResult(event_id=EventId(pdu.event_id), stream_ordering=existing.stream_ordering)
        # A room we do not hold: the invite alone, as an outlier that is the
        # invitee's membership (what /sync shows, with its invite_room_state).
        assert pdu.state_key is not None
        cp = Checkpoint(
            room_id=self._room_id,
            room_version=msg.room_version,
            events=(NewEvent(
                event_id=pdu.event_id, room_id=self._room_id, json=pdu.json, depth=pdu.depth, type=pdu.type,
                state_key=pdu.state_key, sender=pdu.sender, origin_server_ts=pdu.origin_server_ts,
                prev_events=tuple(pdu.prev_events), auth_events=tuple(pdu.auth_events), outlier=True,
            ),),
            forward_extremities=None,
            current_state_delta={(pdu.type, pdu.state_key): pdu.event_id},
        )
        orderings = await self._db.write(store.checkpoint, cp)
        if self._on_commit is not None:
            self._on_commit(self._room_id, orderings[pdu.event_id], pdu.json)
        return SendResult(event_id=EventId(pdu.event_id), stream_ordering=orderings[pdu.event_id])

    async def _on_commit_prepared(self, msg: CommitPrepared) -> SendResult | Forbidden | UnknownRoom:
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        joined_before = self._joined()
        outcome = await self._receive_remote(msg.pdu, self._server_name, fill_gaps=False)
        if outcome.status != "accepted" or outcome.event_id is None:
            return Forbidden(error=f"the event was not accepted: {outcome.reason or outcome.status}", rule=None)
        known = (await self.known_events([outcome.event_id]))[outcome.event_id]
        assert known.stream_ordering is not None
        if self._on_outbound is not None:
            destinations = (joined_before | self._joined()) - {self._server_name}
            if destinations:
                self._on_outbound(self._room_id, known.stream_ordering, known.json, destinations)
        return SendResult(event_id=outcome.event_id, stream_ordering=known.stream_ordering)

    async def _on_backfill(self, msg: Backfill) -> Backfilled | UnknownRoom:
        """Server-server API "Backfilling and retrieving missing events": ask the
        other servers in the room for the events before our backward extremities
        and store what passes steps 1-4 as history (``storage.backfill``)."""
        if self._version is None:
            return UnknownRoom(room_id=self._room_id)
        extremities = await self._db.read(history.backward_extremities, self._room_id, 20)
        if not extremities or self._remote is None:
            return Backfilled(stored=0, extremities=len(extremities))
        limit = max(1, min(msg.limit, 100))
        for destination in sorted(self._joined() - {self._server_name}):
            fetched = await self._remote.backfill(destination, self._room_id, extremities, limit, self.room_version)
            stored = await self._store_history(destination, fetched) if fetched else 0
            if stored:
                return Backfilled(stored=stored, extremities=len(extremities))
        return Backfilled(stored=0, extremities=len(extremities))

    async def _store_history(self, origin: str, fetched: Sequence[Any]) -> int:
        """Steps 4 on backfilled events (steps 1-3 passed in ``RemoteEvents``),
        fetching unknown auth events from ``origin``; then ONE write stores them as
        history, newest first (negative stream orderings: never new to /sync, never
        extremities or state). Outliers we held are promoted. Returns how many."""
        by_depth = sorted(fetched, key=lambda c: (c.json.get("depth", 0), c.json.get("origin_server_ts", 0)))
        ordered = topo_sort(
            by_depth,
            key=lambda c: (c.event_id, [*event_refs(c.json, "prev_events"), *event_refs(c.json, "auth_events")]),
        )
        pending: dict[str, KnownEvent] = {}  # decided here, not stored yet
        chosen: list[Pdu] = []
        for checked in ordered:
            pdu = step_1_valid_for_room(checked.json, self._room_id, self.room_version, self._create_id)
            if isinstance(pdu, str) or pdu.event_id in pending:
                continue
            known = (await self.known_events([pdu.event_id])).get(pdu.event_id)
            if known is not None:
                if known.outlier and not known.rejected and known.room_id == self._room_id:
                    chosen.append(pdu)  # promoted below
                continue
            listed: dict[str, KnownEvent] = {a: pending[a] for a in pdu.auth_events if a in pending}
            listed.update(await self.known_events([a for a in pdu.auth_events if a not in listed]))
            missing = [a for a in pdu.auth_events if a not in listed]
            if missing:
                await self._fetch_auth_chain(origin, pdu.event_id, missing)
                listed.update(await self.known_events(missing))
                if any(a not in listed for a in pdu.auth_events):
                    continue  # never stored unchecked
            rejected = step_4_auth_events(pdu, [listed[a] for a in pdu.auth_events], self._create_event, self._create_id)
            if rejected is not None:
                await self._commit_event(
                    pdu, state_before=None, own_change={}, becomes_extremity=False, outlier=True,
                    rejection_reason=rejected.reason(),
                )
                continue
            pending[pdu.event_id] = self._known(pdu, 0, None)
            chosen.append(pdu)
        if not chosen:
            return 0
        # Fetching auth chains may have stored some chosen events as outliers meanwhile.
        now = await self.known_events([p.event_id for p in chosen])
        items: list[NewEvent | str] = []
        for pdu in reversed(chosen):  # newest first
            held = now.get(pdu.event_id)
            if held is None:
                items.append(self._new_event(pdu, state_base_ref=None, state_delta={}))
            elif held.outlier and not held.rejected:
                items.append(pdu.event_id)
        orderings = await self._db.write(history.store_backfill, self._room_id, self.room_version, items)
        for pdu in chosen:
            stream_ordering = orderings.get(pdu.event_id)
            if stream_ordering is not None:
                self._events.put(pdu.event_id, self._known(pdu, stream_ordering, None))
        return len(orderings)

    def _joined(self) -> frozenset[str]:
        """Servers with a joined member in the current state (cached until a server
        gains its first or loses its last joined member)."""
        if self._joined_servers is None:
            self._joined_servers = frozenset(s for s, n in self._server_joins.items() if n > 0)
        return self._joined_servers

    def _set_member(self, user_id: str, membership: str | None) -> None:
        """Update the membership index and the per-server join counts."""
        before = self._members.get(user_id)
        if membership is None:
            self._members.pop(user_id, None)
        else:
            self._members[user_id] = membership
        if (before == "join") == (membership == "join"):
            return
        server = user_id.split(":", 1)[1] if ":" in user_id else user_id
        count = self._server_joins.get(server, 0) + (1 if membership == "join" else -1)
        if count > 0:
            self._server_joins[server] = count
        else:
            self._server_joins.pop(server, None)
        if count in (0, 1):
            self._joined_servers = None

    # ----------------------------------------------------------------------------------
    # RoomView (what the pipeline reads)
    # ----------------------------------------------------------------------------------

    @property
    def room_id(self) -> RoomId:
        return self._room_id

    @property
    def room_version(self) -> str:
        assert self._version is not None
        return self._version

    @property
    def create_event(self) -> dict[str, Any]:
        return self._create_event

    @property
    def create_event_id(self) -> str:
        return self._create_id

    @property
    def current_state(self) -> Mapping[StateKey, str]:
        return self._current

    async def known_events(self, event_ids: Collection[str]) -> dict[str, KnownEvent]:
        found: dict[str, KnownEvent] = {}
        missing: list[str] = []
        for event_id in dict.fromkeys(event_ids):
            known = self._events.get(event_id)
            if known is None:
                missing.append(event_id)
            else:
                found[event_id] = known
        if missing:
            stored = await self._db.read(store.get_events, missing)
            for event_id, row in stored.items():
                known = _known_from_stored(row)
                self._events.put(event_id, known)
                found[event_id] = known
        return found

    async def state_before(self, prev_events: Sequence[str]) -> Mapping[StateKey, str]:
        if not prev_events:
            return {}
        if frozenset(prev_events) == self._extremities:
            return self._current
        refs = await self._state_refs(prev_events)
        maps: list[StateMap] = []
        for ref in dict.fromkeys(refs):
            maps.append(await self._state_map(ref))
        if len(maps) == 1:
            return maps[0]
        return await self._resolve(maps)

    async def auth_state(self, event: dict[str, Any], state: Mapping[StateKey, str]) -> dict[StateKey, dict]:
        selected = select_auth_state(event, state, self.room_version)
        pdus = await self._events_json(selected.values())
        return {key: pdus[event_id] for key, event_id in selected.items()}

    # ----------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------

    async def _state_refs(self, event_ids: Sequence[str]) -> list[str]:
        refs: list[str] = []
        unknown = [e for e in event_ids if e not in self._ext_ref]
        known = await self.known_events(unknown) if unknown else {}
        for event_id in event_ids:
            ref = self._ext_ref.get(event_id)
            if ref is None:
                ref = known[event_id].state_after_ref
            if ref is None:
                raise LookupError(f"room {self._room_id}: event {event_id} has no state (an outlier)")
            refs.append(ref)
        return refs

    async def _state_map(self, ref: str) -> StateMap:
        state = self._states.get(ref)
        if state is None:
            state = await self._db.read(store.get_state, ref)
            self._states.put(ref, state)
        return state

    async def _events_json(self, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """PDUs of events that must exist (state and auth events): a miss is a bug."""
        out: dict[str, dict[str, Any]] = {}
        rest: list[str] = []
        for event_id in event_ids:
            pdu = self._current_events.get(event_id)
            if pdu is None:
                rest.append(event_id)
            else:
                out[event_id] = pdu
        if rest:
            known = await self.known_events(rest)
            for event_id in rest:
                out[event_id] = known[event_id].json
        return out

    async def _resolve(self, state_sets: list[StateMap], pending: Mapping[str, dict[str, Any]] | None = None) -> StateMap:
        """``resolve_state`` over ``state_sets``, loading the events it needs;
        ``pending`` holds events not stored yet (the one being checkpointed).

        The conflicted events and their auth chains are loaded up front. The
        kernel may also look at unconflicted events (the auth difference, the
        iterative auth checks' partial state); on its first miss every event of
        every state set is loaded with its auth chain, and any later miss loads
        just what was missing.
        """
        conflicted: set[str] = set()
        for key in set().union(*state_sets):
            ids = {state.get(key) for state in state_sets}
            if len(ids) > 1:
                conflicted.update(i for i in ids if i is not None)
        if not conflicted:
            return state_sets[0]
        lookup: dict[str, dict[str, Any]] = {self._create_id: self._create_event, **(pending or {})}
        wanted = set(conflicted)
        for pdu in (pending or {}).values():
            wanted.update(event_refs(pdu, "auth_events"))
        rejected: set[str] = set()
        await self._load_auth_closure(wanted, lookup, rejected)
        escalated = False
        while True:
            resolve = partial(resolve_state, self.room_version, state_sets, lookup, rejected=rejected)
            try:
                if len(lookup) > _THREAD_RESOLUTION_EVENTS:
                    resolved = await trio.to_thread.run_sync(resolve)
                else:
                    resolved = resolve()
            except MissingEventError as e:
                wanted = {e.event_id}
                if not escalated:
                    escalated = True
                    for state in state_sets:
                        wanted.update(state.values())
                await self._load_auth_closure(wanted, lookup, rejected)
                if e.event_id not in lookup:
                    raise LookupError(f"room {self._room_id}: event {e.event_id} is not stored") from None
                continue
            return resolved

    async def _load_auth_closure(self, event_ids: Iterable[str], lookup: dict[str, dict], rejected: set[str]) -> None:
        """Put ``event_ids`` and their auth chains into ``lookup`` (breadth first, one
        ``get_events`` per level for what is not in memory)."""
        frontier = {e for e in event_ids if e not in lookup}
        absent: set[str] = set()
        while frontier:
            rest = []
            parents: set[str] = set()
            for event_id in frontier:
                pdu = self._current_events.get(event_id)
                if pdu is None:
                    rest.append(event_id)
                else:
                    lookup[event_id] = pdu
                    parents.update(event_refs(pdu, "auth_events"))
            known = await self.known_events(rest) if rest else {}
            for event_id in rest:
                entry = known.get(event_id)
                if entry is None:
                    absent.add(event_id)
                    continue
                lookup[event_id] = entry.json
                if entry.rejected:
                    rejected.add(event_id)
                parents.update(event_refs(entry.json, "auth_events"))
            frontier = parents - lookup.keys() - absent

    async def _snapshot(
        self,
        event_id: str,
        state_before: Mapping[StateKey, str],
        own_change: Mapping[StateKey, str],
        state_after: Mapping[StateKey, str],
        prev_events: Sequence[str],
    ) -> tuple[str | None, dict[StateKey, str | None], str | None]:
        """How to store the state after ``event_id``: ``(base_ref, delta, ref)``.

        The base is the prev event's snapshot giving the smallest delta (a ``None``
        value removes a key); with no prev the snapshot is full (base None). The
        ref is the base's when the delta is empty (the state is shared).
        """
        best: tuple[str, dict[StateKey, str | None]] | None = None
        try:
            refs = await self._state_refs(prev_events)
        except LookupError:  # a prev event has no state here (state came from a peer)
            refs = []
        for ref in dict.fromkeys(refs):
            base = await self._state_map(ref)
            delta: dict[StateKey, str | None]
            if base is state_before:
                delta = {k: v for k, v in own_change.items() if base.get(k) != v}
            else:
                delta = _diff(base, state_after)
            if best is None or len(delta) < len(best[1]):
                best = (ref, delta)
            if not delta:
                break
        if best is None:  # no prev events: a full snapshot (or no state at all)
            return (None, dict(state_after), event_id) if state_after else (None, {}, None)
        ref, delta = best
        return ref, delta, (ref if not delta else event_id)

    async def _current_after(self, new_extremities: frozenset[str], pdu: Pdu, state_after: StateMap) -> StateMap:
        """The current state once ``pdu`` (with ``state_after``) joined the DAG and
        the extremities became ``new_extremities``: their resolved state."""
        if new_extremities == {pdu.event_id}:
            return state_after
        maps = [state_after]
        for extremity in sorted(new_extremities - {pdu.event_id}):
            maps.append(await self._state_map(self._ext_ref[extremity]))
        resolved = await self._resolve(maps, {pdu.event_id: pdu.json})
        return self._current if resolved == self._current else resolved

    # ----------------------------------------------------------------------------------
    # Commit, then apply
    # ----------------------------------------------------------------------------------

    async def _commit_event(
        self,
        pdu: Pdu,
        *,
        state_before: Mapping[StateKey, str] | None,
        own_change: Mapping[StateKey, str],
        becomes_extremity: bool,
        outlier: bool = False,
        rejection_reason: str | None = None,
        soft_failed: bool = False,
        txn: TxnRecord | None = None,
        staging_ids: tuple[int, ...] = (),
    ) -> int:
        """Checkpoint one event (ONE ``db.write``), then apply it in memory.
        Returns its stream ordering."""
        event_id = pdu.event_id
        # --- compute (may read; writes nothing) -----------------------------------
        state_after: StateMap | None = None
        base_ref: str | None = None
        delta: dict[StateKey, str | None] = {}
        ref: str | None = None
        if state_before is not None:
            state_after = {**state_before, **own_change} if own_change else state_before  # type: ignore[assignment]
            base_ref, delta, ref = await self._snapshot(event_id, state_before, own_change, state_after, pdu.prev_events)
        new_extremities: frozenset[str] | None = None
        new_current: StateMap | None = None
        current_delta: dict[StateKey, str | None] = {}
        new_state_events: dict[str, dict[str, Any]] = {}
        if becomes_extremity:
            assert state_after is not None and ref is not None
            new_extremities = update_forward_extremities(self._extremities, event_id, pdu.prev_events)
            new_current = await self._current_after(new_extremities, pdu, state_after)
            if state_before is self._current and new_current is state_after:
                # Linear: the current state changes by the event's own change only.
                current_delta = {k: v for k, v in own_change.items() if self._current.get(k) != v}
            else:
                current_delta = _diff(self._current, new_current)
            added = {v for v in current_delta.values() if v is not None and v not in self._current_events}
            if event_id in added:
                added.discard(event_id)
                new_state_events[event_id] = pdu.json
            new_state_events.update(await self._events_json(added))
        cp = Checkpoint(
            room_id=self._room_id,
            room_version=self.room_version,
            events=(
                self._new_event(
                    pdu,
                    outlier=outlier,
                    rejection_reason=rejection_reason,
                    soft_failed=soft_failed,
                    state_base_ref=base_ref,
                    state_delta=delta,
                ),
            ),
            forward_extremities=new_extremities,
            current_state_delta=current_delta,
            txn=txn,
            staging_ids=staging_ids,
        )
        # --- commit ---------------------------------------------------------------
        orderings = await self._db.write(store.checkpoint, cp)
        stream_ordering = orderings[event_id]
        # --- apply (synchronous from here on) -------------------------------------
        self._events.put(
            event_id,
            self._known(pdu, stream_ordering, ref, outlier=outlier, rejected=rejection_reason is not None, soft_failed=soft_failed),
        )
        if ref is not None and state_after is not None:
            self._states.put(ref, state_after)
        if new_extremities is not None:
            self._ext_depth = {e: self._ext_depth[e] for e in new_extremities if e != event_id}
            self._ext_depth[event_id] = pdu.depth
            self._ext_ref = {e: self._ext_ref[e] for e in new_extremities if e != event_id}
            assert ref is not None
            self._ext_ref[event_id] = ref
            self._extremities = new_extremities
        if new_current is not None and new_current is not self._current:
            self._apply_current(new_current, current_delta, new_state_events)
        if self._on_commit is not None:
            self._on_commit(self._room_id, stream_ordering, pdu.json)
        return stream_ordering

    def _apply_current(
        self,
        new_current: StateMap,
        delta: Mapping[StateKey, str | None],
        new_state_events: Mapping[str, dict[str, Any]],
    ) -> None:
        # O(size of the change), not of the room: a 10,000-member room pays only one
        # C-level dict copy per change (the copy keeps StateViews handed out valid).
        events = dict(self._current_events)
        for key, event_id in delta.items():
            old = self._current.get(key)
            if old is not None and old != event_id:
                events.pop(old, None)  # an event ID is the value of exactly one key
        events.update(new_state_events)
        for (event_type, state_key), event_id in delta.items():
            if event_type != _MEMBER:
                continue
            membership = None if event_id is None else _membership(events[event_id])
            self._set_member(state_key, membership)
        self._current = new_current
        self._current_events = events

    def _new_event(
        self,
        pdu: Pdu,
        *,
        outlier: bool = False,
        rejection_reason: str | None = None,
        soft_failed: bool = False,
        state_base_ref: str | None,
        state_delta: Mapping[StateKey, str | None],
    ) -> NewEvent:
        return NewEvent(
            event_id=pdu.event_id,
            room_id=self._room_id,
            json=pdu.json,
            depth=pdu.depth,
            type=pdu.type,
            state_key=pdu.state_key,
            sender=pdu.sender,
            origin_server_ts=pdu.origin_server_ts,
            prev_events=tuple(pdu.prev_events),
            auth_events=tuple(pdu.auth_events),
            outlier=outlier,
            rejection_reason=rejection_reason,
            soft_failed=soft_failed,
            state_base_ref=state_base_ref,
            state_delta=state_delta,
            redacts=None if outlier else self._redacts(pdu),
        )

    def _redacts(self, pdu: Pdu) -> str | None:
        """The event an m.room.redaction targets (top-level ``redacts``, or
        ``content.redacts`` where the rules moved it there: room version 11)."""
        if pdu.type != "m.room.redaction" or self._rules is None:
            return None
        source = pdu.json.get("content") if self._rules.redacts_in_content else pdu.json
        target = source.get("redacts") if isinstance(source, dict) else None
        return target if isinstance(target, str) else None

    def _known(
        self,
        pdu: Pdu,
        stream_ordering: int,
        state_after_ref: str | None,
        *,
        outlier: bool = False,
        rejected: bool = False,
        soft_failed: bool = False,
    ) -> KnownEvent:
        return KnownEvent(
            event_id=pdu.event_id,
            room_id=pdu.room_id,
            json=pdu.json,
            depth=pdu.depth,
            stream_ordering=stream_ordering,
            state_after_ref=state_after_ref,
            outlier=outlier,
            rejected=rejected,
            soft_failed=soft_failed,
        )

    # ----------------------------------------------------------------------------------
    # Small helpers
    # ----------------------------------------------------------------------------------

    async def _txn_result(self, txn: TxnRecord) -> SendResult | None:
        """The answer to an earlier send with the same transaction ID, if any."""
        earlier = self._txns.get(txn)
        if earlier is not None:
            return earlier
        event_id = await self._db.read(store.get_txn_event, self._room_id, txn)
        if event_id is None:
            return None
        known = (await self.known_events([event_id]))[event_id]
        assert known.stream_ordering is not None
        result = SendResult(event_id=EventId(event_id), stream_ordering=known.stream_ordering)
        self._txns.put(txn, result)
        return result

    def _create_hint(self) -> str | None:
        assert self._rules is not None
        return None if self._rules.create_event_in_auth_events else self._create_id


#: Stripped state for knocks and invites (client-server API "Stripped state").
_STRIPPED_TYPES = frozenset(
    {"m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules",
     "m.room.canonical_alias", "m.room.encryption"}
)


def _count_attempts(conn: Any, staging_ids: list[int], poison_after: int) -> None:
    for staging_id in staging_ids:
        staging.record_attempt(conn, staging_id, poison_after=poison_after)


def _errcode(error: InvalidEvent) -> str:
    if error.rule == "c2s: Size limits":
        return "M_TOO_LARGE"
    return error.errcode
