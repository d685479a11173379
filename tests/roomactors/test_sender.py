"""roomactors/sender: SenderHub and its DestinationQueues, on a real SQLite database,
with a recording peer at the network boundary (``put_json``) and ``autojump_clock``.

The peer is a test double for the *remote server*, not for our code: it records
every ``/send`` attempt (destination, txn ID, body, trio time) and answers 2xx or
raises what ``FederationClient`` raises (``FederationUnreachable``,
``FederationError``), as told. Rooms and events are real rows written through
``storage.rooms.checkpoint``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from roomactors.clock import ManualClock
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.sender import SEND_PATH, SenderHub
from storage import outbound
from storage import rooms as R
from storage.db import Database
from tests.storage.rooms import ROOM_VERSION, make_event

LOCAL = "local.example"
ALICE = "@alice:local.example"
B = "b.example"
C = "c.example:8448"


# ------------------------------------------------------------------ the peer


@dataclass(frozen=True)
class Attempt:
    destination: str
    txn_id: str
    body: dict[str, Any]
    at: float


class RecordingPeer:
    """Remote servers as the sender sees them: ``put_json`` records and answers."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.delivered: list[Attempt] = []
        #: destination -> exception raised by every attempt until removed
        self.failing: dict[str, BaseException] = {}
        #: raised once by the next attempt (then removed)
        self.fail_once: dict[str, BaseException] = {}
        self.hold: trio.Event | None = None
        self.hang: set[str] = set()
        self.active: dict[str, int] = defaultdict(int)
        self.max_active: dict[str, int] = defaultdict(int)
        self.pdu_results: dict[str, dict[str, Any]] = {}
        #: called with each attempt as it starts (tests read the sender's statistics there)
        self.on_attempt: Callable[[Attempt], None] | None = None

    async def put_json(self, destination: str, path: str, body: Any) -> Any:
        assert path.startswith(SEND_PATH)
        attempt = Attempt(destination, path[len(SEND_PATH) :], body, trio.current_time())
        self.attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        self.active[destination] += 1
        self.max_active[destination] = max(self.max_active[destination], self.active[destination])
        try:
            await trio.lowlevel.checkpoint()
            if self.hold is not None:
                await self.hold.wait()
            if destination in self.hang:
                await trio.sleep_forever()
            if destination in self.fail_once:
                raise self.fail_once.pop(destination)
            if destination in self.failing:
                raise self.failing[destination]
            self.delivered.append(attempt)
            return {"pdus": {p.get("event_id", "?"): self.pdu_results.get(p.get("event_id", "?"), {}) for p in body["pdus"]}}
        finally:
            self.active[destination] -= 1

    def to(self, destination: str) -> list[Attempt]:
        return [a for a in self.delivered if a.destination == destination]

    def pdus_to(self, destination: str) -> list[dict[str, Any]]:
        return [p for a in self.to(destination) for p in a.body["pdus"]]


async def eventually(predicate: Callable[[], bool], *, step: float = 0.01, limit: int = 200_000) -> None:
    """Poll ``predicate``.

    Under ``autojump_clock`` virtual time also moves while a database thread works
    (every task is blocked then, and this poll's sleep is the next deadline), so
    tests assert waits as lower bounds plus what the sender says it scheduled, never
    as exact gaps."""
    for _ in range(limit):
        if predicate():
            return
        await trio.sleep(step)
    raise AssertionError("condition never became true")


# ----------------------------------------------------------- stored rooms


class StoredRoom:
    """A room written straight through ``storage.rooms.checkpoint``, one event per commit."""

    counter = 0

    def __init__(self, db: Database, room_id: str) -> None:
        self.db = db
        self.room_id = room_id
        self.depth = 0
        self.extremity: str | None = None
        self.create_id: str | None = None
        self.ref: str | None = None

    @classmethod
    async def create(cls, db: Database, room_id: str) -> StoredRoom:
        room = cls(db, room_id)
        await room._commit("m.room.create", "", {"creator": ALICE}, ALICE)
        return room

    async def _commit(self, type: str, state_key: str | None, content: dict[str, Any], sender: str) -> tuple[int, dict[str, Any]]:
        StoredRoom.counter += 1
        self.depth += 1
        ev = make_event(
            f"{self.room_id}/{StoredRoom.counter}",
            self.room_id,
            type=type,
            state_key=state_key,
            depth=self.depth,
            prev_events=(self.extremity,) if self.extremity else (),
            auth_events=(self.create_id,) if self.create_id else (),
            content=content,
            sender=sender,
        )
        delta = {(type, state_key): ev.event_id} if state_key is not None else {}
        ev = R.NewEvent(**{**{f: getattr(ev, f) for f in ev.__dataclass_fields__}, "state_base_ref": self.ref, "state_delta": delta})
        cp = R.Checkpoint(
            room_id=self.room_id,
            room_version=ROOM_VERSION,
            events=(ev,),
            forward_extremities=frozenset({ev.event_id}),
            current_state_delta=delta,
        )
        orderings = await self.db.write(R.checkpoint, cp)
        self.extremity = ev.event_id
        if self.create_id is None:
            self.create_id = ev.event_id
        if delta:
            self.ref = ev.event_id
        pdu = dict(ev.json, event_id=ev.event_id)
        return orderings[ev.event_id], pdu

    async def join(self, user_id: str, membership: str = "join") -> tuple[int, dict[str, Any]]:
        return await self._commit("m.room.member", user_id, {"membership": membership}, user_id)

    async def message(self, body: str, sender: str = ALICE) -> tuple[int, dict[str, Any]]:
        return await self._commit("m.room.message", None, {"msgtype": "m.text", "body": body}, sender)


# --------------------------------------------------------------- fixtures


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sender.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    async with Database.open(db_path) as database:
        yield database


@pytest.fixture
def peer() -> RecordingPeer:
    return RecordingPeer()


def make_hub(db: Database, peer: RecordingPeer, **overrides: Any) -> SenderHub:
    kwargs: dict[str, Any] = dict(
        db=db,
        client=peer,
        server_name=LOCAL,
        clock=ManualClock(step_ms=1),
        backoff_initial_s=1.0,
        backoff_max_s=8.0,
    )
    kwargs.update(overrides)
    return SenderHub(**kwargs)


@pytest.fixture
async def hub(nursery: trio.Nursery, db: Database, peer: RecordingPeer) -> SenderHub:
    h = make_hub(db, peer)
    await nursery.start(h.run)
    return h


def fake_pdu(n: int, room_id: str = "!r:local.example") -> dict[str, Any]:
    return {"event_id": f"$e{n}", "room_id": room_id, "type": "m.room.message", "content": {"n": n}}


def send(hub: SenderHub, n: int, *destinations: str, room_id: str = "!r:local.example") -> None:
    hub.send_pdu(room_id=room_id, stream_ordering=n, pdu=fake_pdu(n, room_id), destinations=destinations)


async def row(db: Database, destination: str) -> outbound.DestinationRow | None:
    return await db.read(outbound.get_destination, destination)


async def idle(hub: SenderHub) -> None:
    """Wait until no queue has anything to send (and its last answer is recorded)."""

    def done() -> bool:
        s = hub.statistics()
        return s.pending_pdus == 0 and s.pending_edus == 0 and s.in_flight == 0 and s.catching_up == 0

    await eventually(done)
    await trio.sleep(1)  # let the success write land


# ------------------------------------------------------------------ tests


async def test_transactions_carry_at_most_50_pdus_and_100_edus_in_order(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer, db: Database
) -> None:
    for n in range(1, 121):
        send(hub, n, B)
    for n in range(250):
        hub.send_edu(destination=B, edu_type="m.test", content={"n": n})
    await idle(hub)
    txns = peer.to(B)
    assert [len(t.body["pdus"]) for t in txns] == [50, 50, 20]
    assert [len(t.body["edus"]) for t in txns] == [100, 100, 50]
    assert [p["content"]["n"] for p in peer.pdus_to(B)] == list(range(1, 121))
    assert [e["content"]["n"] for t in txns for e in t.body["edus"]] == list(range(250))
    assert all(t.body["origin"] == LOCAL and isinstance(t.body["origin_server_ts"], int) for t in txns)
    ids = [int(t.txn_id) for t in txns]
    assert ids == sorted(set(ids))
    stored = await row(db, B)
    assert stored is not None and stored.last_successful_stream_ordering == 120
    assert stored.next_txn_seq > ids[-1]
    stats = hub.statistics()
    assert (stats.queues, stats.txns_sent, stats.txns_failed, stats.pending_pdus) == (1, 3, 0, 0)
    q = hub.queue_statistics(B)
    assert q is not None and (q.pdus_sent, q.edus_sent, q.position) == (120, 250, 120)


async def test_one_transaction_in_flight_per_destination(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer
) -> None:
    peer.hold = trio.Event()
    send(hub, 1, B, C)
    await eventually(lambda: len(peer.attempts) == 2)
    for n in range(2, 80):
        send(hub, n, B, C)
    await trio.sleep(5)
    assert len(peer.attempts) == 2  # one per destination, both waiting for an answer
    stats = hub.statistics()
    assert stats.in_flight == 2 and stats.pending_pdus == 2 * 78
    peer.hold.set()
    peer.hold = None
    await idle(hub)
    assert peer.max_active == {B: 1, C: 1}
    for dest in (B, C):
        assert [p["content"]["n"] for p in peer.pdus_to(dest)] == list(range(1, 80))
        assert [len(t.body["pdus"]) for t in peer.to(dest)] == [1, 50, 28]


async def test_our_own_server_is_never_a_destination(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer
) -> None:
    send(hub, 1, LOCAL, B, LOCAL, B)
    hub.send_edu(destination=LOCAL, edu_type="m.typing", content={"room_id": "!r", "user_id": ALICE, "typing": True})
    hub.wake(LOCAL)
    await idle(hub)
    assert {a.destination for a in peer.attempts} == {B}
    assert [p["content"]["n"] for p in peer.pdus_to(B)] == [1]  # listed twice, sent once
    assert hub.statistics().queues == 1
    assert hub.queue_statistics(LOCAL) is None


async def test_failed_txn_is_retried_with_the_same_id_and_body_and_capped_backoff(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer, db: Database
) -> None:
    peer.failing[B] = FederationUnreachable("connection refused")
    waited: list[float | None] = []
    peer.on_attempt = lambda _: waited.append(hub.queue_statistics(B).retry_interval_s)  # type: ignore[union-attr]
    send(hub, 1, B)
    await eventually(lambda: len(peer.attempts) == 6, step=0.1)
    # 1, 2, 4, 8, then capped at 8
    assert waited == [None, 1.0, 2.0, 4.0, 8.0, 8.0]
    gaps = [b.at - a.at for a, b in zip(peer.attempts, peer.attempts[1:])]
    assert all(gap >= interval - 1e-6 for gap, interval in zip(gaps, waited[1:]))  # type: ignore[operator]
    peer.on_attempt = None
    assert len({a.txn_id for a in peer.attempts}) == 1
    assert all(a.body == peer.attempts[0].body for a in peer.attempts)
    send(hub, 2, B)  # queued behind the stuck transaction, not added to it
    await trio.sleep(0.5)
    stored = await row(db, B)
    assert stored is not None and stored.retry_interval_ms == 8000 and stored.retry_last_ts is not None
    assert stored.last_successful_stream_ordering == 0  # the floor: nothing acknowledged yet
    q = hub.queue_statistics(B)
    assert q is not None and q.in_flight and q.backing_off and q.pending_pdus == 1
    assert q.txns_failed == q.in_flight_attempts == len(peer.attempts) >= 6
    assert hub.statistics().backing_off == 1

    # 5xx and 429 are failures too; then the peer recovers
    peer.failing[B] = FederationError(502)
    n = len(peer.attempts)
    await eventually(lambda: len(peer.attempts) == n + 1)
    peer.failing[B] = FederationError(429, "M_LIMIT_EXCEEDED")
    await eventually(lambda: len(peer.attempts) == n + 2)
    del peer.failing[B]
    await idle(hub)
    first, second = peer.to(B)
    assert first.txn_id == peer.attempts[0].txn_id and first.body == peer.attempts[0].body
    assert int(second.txn_id) > int(first.txn_id)
    assert [p["content"]["n"] for p in second.body["pdus"]] == [2]
    stored = await row(db, B)
    assert stored is not None
    assert (stored.last_successful_stream_ordering, stored.retry_last_ts, stored.retry_interval_ms) == (2, None, None)
    q = hub.queue_statistics(B)
    assert q is not None and not q.backing_off and q.retry_interval_s is None and q.txns_failed == n + 2


async def test_wake_retries_at_once_and_resets_the_backoff(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer
) -> None:
    peer.failing[B] = FederationUnreachable("down")
    send(hub, 1, B)
    await eventually(lambda: len(peer.attempts) == 4 and hub.statistics().backing_off == 1)  # waiting 8 s
    del peer.failing[B]
    waited: list[float | None] = []
    peer.on_attempt = lambda _: waited.append(hub.queue_statistics(B).retry_interval_s)  # type: ignore[union-attr]
    hub.wake(B)
    assert hub.statistics().backing_off == 0
    hub.wake("never-seen.example")  # no queue: nothing to do
    await eventually(lambda: len(peer.delivered) == 1)
    assert waited == [None]  # the backoff was forgotten, not waited out
    assert hub.statistics().queues == 1


async def test_a_4xx_for_the_whole_txn_drops_the_batch_and_advances(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer, db: Database
) -> None:
    peer.hold = trio.Event()
    send(hub, 1, B)
    await eventually(lambda: len(peer.attempts) == 1)
    send(hub, 2, B)
    peer.fail_once[B] = FederationError(400, "M_BAD_JSON")
    peer.hold.set()
    peer.hold = None
    await idle(hub)
    assert [[p["content"]["n"] for p in a.body["pdus"]] for a in peer.attempts] == [[1], [2]]
    assert len(peer.delivered) == 1
    stored = await row(db, B)
    assert stored is not None and stored.last_successful_stream_ordering == 2
    q = hub.queue_statistics(B)
    assert q is not None and (q.txns_dropped, q.txns_sent, q.txns_failed) == (1, 1, 0)


async def test_per_pdu_errors_are_logged_not_retried(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer
) -> None:
    peer.pdu_results["$e1"] = {"error": "not allowed"}
    send(hub, 1, B)
    send(hub, 2, B)
    await idle(hub)
    assert len(peer.attempts) == 1
    q = hub.queue_statistics(B)
    assert q is not None and q.pdu_errors == 1 and q.txns_sent == 1


async def test_request_timeout_is_a_failure(autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer) -> None:
    hub = make_hub(db, peer, request_timeout_s=30.0)
    await nursery.start(hub.run)
    peer.hang.add(B)
    send(hub, 1, B)
    await eventually(lambda: len(peer.attempts) == 2, step=0.25)
    assert peer.attempts[1].at - peer.attempts[0].at >= 31.0  # timeout + first backoff
    q = hub.queue_statistics(B)
    assert q is not None and q.txns_failed == 1 and q.retry_interval_s == 1.0
    assert peer.attempts[0].txn_id == peer.attempts[1].txn_id
    peer.hang.clear()
    await idle(hub)
    assert len(peer.delivered) == 1


async def test_edus_coalesce_by_key_and_are_bounded(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer, edu_queue_limit=5)
    await nursery.start(hub.run)
    peer.hold = trio.Event()
    hub.send_edu(destination=B, edu_type="m.test", content={"n": -1})
    await eventually(lambda: len(peer.attempts) == 1)
    typing = {"room_id": "!r", "user_id": ALICE}
    hub.send_edu(destination=B, edu_type="m.typing", content={**typing, "typing": True})
    hub.send_edu(destination=B, edu_type="m.receipt", content={"n": 0}, key="!r")
    hub.send_edu(destination=B, edu_type="m.typing", content={**typing, "typing": False})  # replaces, moves last
    hub.send_edu(destination=B, edu_type="m.receipt", content={"n": 1}, key="!r")
    q = hub.queue_statistics(B)
    assert q is not None and q.pending_edus == 2 and q.edus_coalesced == 2
    for n in range(2, 8):
        hub.send_edu(destination=B, edu_type="m.test", content={"n": n})
    q = hub.queue_statistics(B)
    assert q is not None and q.pending_edus == 5 and q.edus_dropped == 3
    peer.hold.set()
    peer.hold = None
    await idle(hub)
    contents = [e["content"] for e in peer.delivered[1].body["edus"]]
    assert contents == [{"n": 3}, {"n": 4}, {"n": 5}, {"n": 6}, {"n": 7}]
    assert hub.statistics().edus_dropped == 3


async def test_a_crashing_queue_is_restarted_and_keeps_its_transaction(
    autojump_clock: Any, hub: SenderHub, peer: RecordingPeer
) -> None:
    peer.fail_once[B] = RuntimeError("a bug at the network boundary")
    send(hub, 1, B)
    send(hub, 1, C)
    await idle(hub)
    assert [a.destination for a in peer.delivered].count(C) == 1
    b_attempts = [a for a in peer.attempts if a.destination == B]
    assert len(b_attempts) == 2 and b_attempts[0].txn_id == b_attempts[1].txn_id
    assert hub.statistics().crashes == 1


# -------------------------------------------------------------- catch-up


async def shared_rooms(db: Database) -> tuple[StoredRoom, StoredRoom, StoredRoom]:
    """Three rooms: B joined to one and two (C only to two), three has no remote member."""
    one = await StoredRoom.create(db, "!one:local.example")
    two = await StoredRoom.create(db, "!two:local.example")
    three = await StoredRoom.create(db, "!three:local.example")
    await one.join("@bob:b.example")
    await two.join("@bob:b.example")
    await two.join("@carol:c.example:8448")
    await three.join("@eve:evil-b.example")
    return one, two, three


async def test_overflow_drops_memory_and_catches_up_from_storage(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    one, two, three = await shared_rooms(db)
    hub = make_hub(db, peer, queue_limit=5)
    await nursery.start(hub.run)
    peer.failing[B] = FederationUnreachable("down")
    so, pdu = await one.message("first")
    hub.send_pdu(room_id=one.room_id, stream_ordering=so, pdu=pdu, destinations=[B])
    await eventually(lambda: len(peer.attempts) == 1)
    sent: dict[str, int] = {}
    for i in range(10):  # more than the queue holds: send_pdu never blocks, memory stays bounded
        room = (one, two)[i % 2]
        so, pdu = await room.message(f"m{i}")
        hub.send_pdu(room_id=room.room_id, stream_ordering=so, pdu=pdu, destinations=[B])
        sent[room.room_id] = so
        assert hub.statistics().pending_pdus <= 5
    await two.message("from bob", sender="@bob:b.example")  # theirs: never sent back
    await three.message("not shared")
    q = hub.queue_statistics(B)
    assert q is not None and q.catching_up and q.pdus_dropped == 6 and q.pdus_skipped == 4 and q.pending_pdus == 0
    del peer.failing[B]
    hub.wake(B)
    await idle(hub)
    first, catch_up = peer.to(B)
    assert [p["content"]["body"] for p in first.body["pdus"]] == ["first"]  # the held txn goes first
    assert first.txn_id == peer.attempts[0].txn_id
    # then only the latest event of ours per shared room, oldest first
    assert [(p["room_id"], p["content"]["body"]) for p in catch_up.body["pdus"]] == [
        (one.room_id, "m8"),
        (two.room_id, "m9"),
    ]
    stored = await row(db, B)
    assert stored is not None and stored.last_successful_stream_ordering == sent[two.room_id]
    # out of catch-up mode: new PDUs flow from memory again
    so, pdu = await one.message("after")
    hub.send_pdu(room_id=one.room_id, stream_ordering=so, pdu=pdu, destinations=[B])
    await idle(hub)
    assert [p["content"]["body"] for p in peer.to(B)[-1].body["pdus"]] == ["after"]
    q = hub.queue_statistics(B)
    assert q is not None and not q.catching_up


async def test_restart_catches_up_destinations_that_are_behind(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    one, two, _ = await shared_rooms(db)
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer)
        await nursery.start(hub.run)
        so, pdu = await two.message("before restart")
        hub.send_pdu(room_id=two.room_id, stream_ordering=so, pdu=pdu, destinations=[B, C])
        await idle(hub)
        peer.failing[C] = FederationUnreachable("down")
        so, pdu = await two.message("C never got this")
        hub.send_pdu(room_id=two.room_id, stream_ordering=so, pdu=pdu, destinations=[B, C])
        await eventually(lambda: len(peer.to(B)) == 2 and len(peer.attempts) == 5)
        failed_txn = peer.attempts[-1].txn_id
        nursery.cancel_scope.cancel()
    assert len(peer.to(C)) == 1
    # While we were down: more events of ours, in both rooms
    await one.message("one while down")
    await two.message("two while down")
    latest_one, _ = await one.message("one latest")
    await one.message("theirs", sender="@bob:b.example")
    del peer.failing[C]
    peer.delivered.clear()
    peer.attempts.clear()
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer, backoff_initial_s=1.0, backoff_max_s=1.0)
        await nursery.start(hub.run)
        assert hub.statistics().catching_up == 2
        await idle(hub)
        assert [(p["room_id"], p["content"]["body"]) for p in peer.pdus_to(B)] == [
            (two.room_id, "two while down"),
            (one.room_id, "one latest"),
        ]
        assert [p["content"]["body"] for p in peer.pdus_to(C)] == ["two while down"]
        assert all(int(a.txn_id) > int(failed_txn) for a in peer.attempts if a.destination == C)
        nursery.cancel_scope.cancel()
    stored = await row(db, B)
    assert stored is not None and stored.last_successful_stream_ordering == latest_one


async def test_restart_without_anything_owed_sends_nothing(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    _, two, three = await shared_rooms(db)
    await two.message("never queued for anyone")  # B and C were never contacted: no rows
    await three.message("x")
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer)
        await nursery.start(hub.run)
        await trio.sleep(10)
        assert peer.attempts == [] and hub.statistics().queues == 0
        nursery.cancel_scope.cancel()
    assert await row(db, B) is None


async def test_restart_honours_a_persisted_backoff(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    _, two, _ = await shared_rooms(db)
    clock = ManualClock()
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer, clock=clock, backoff_initial_s=60.0, backoff_max_s=600.0)
        await nursery.start(hub.run)
        peer.failing[B] = FederationUnreachable("down")
        so, pdu = await two.message("hello")
        hub.send_pdu(room_id=two.room_id, stream_ordering=so, pdu=pdu, destinations=[B])
        await eventually(lambda: len(peer.attempts) == 1)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    del peer.failing[B]
    clock.advance(20_000)  # 40 s of the 60 s backoff are left
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer, clock=clock, backoff_initial_s=60.0, backoff_max_s=600.0)
        start = trio.current_time()
        await nursery.start(hub.run)
        q = hub.queue_statistics(B)
        assert q is not None and q.backing_off and q.catching_up
        assert q.retry_interval_s == 60.0 and q.retry_in_s == pytest.approx(40.0, abs=0.01)  # the rest, not anew
        await eventually(lambda: len(peer.delivered) == 1, step=0.25)
        assert peer.delivered[0].at - start >= 40.0
        assert [p["content"]["body"] for p in peer.delivered[0].body["pdus"]] == ["hello"]
        nursery.cancel_scope.cancel()


async def test_calls_after_the_hub_stopped_are_dropped_quietly(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer)
    send(hub, 1, B)  # before run: kept, started by run
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await idle(hub)
        nursery.cancel_scope.cancel()
    assert len(peer.delivered) == 1
    send(hub, 2, B)
    hub.send_edu(destination=B, edu_type="m.test", content={})
    assert hub.statistics().dropped_after_stop == 2


def test_hub_rejects_spec_violating_limits() -> None:
    with pytest.raises(ValueError):
        SenderHub(db=None, client=None, server_name=LOCAL, clock=ManualClock(), backoff_initial_s=1, backoff_max_s=2, max_pdus_per_txn=51)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SenderHub(db=None, client=None, server_name=LOCAL, clock=ManualClock(), backoff_initial_s=3, backoff_max_s=2)  # type: ignore[arg-type]
