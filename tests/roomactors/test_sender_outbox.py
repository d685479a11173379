"""roomactors/sender with the durable EDU outbox (storage/outbox.py): order, at most
100 EDUs per transaction, deletion only after the peer's answer, retry with the
backoff, survival across a restart, immunity to the in-memory overflow.

Same harness as ``test_sender.py`` (a real SQLite database, a recording peer at the
``put_json`` boundary, ``autojump_clock``)."""

from __future__ import annotations

from typing import Any

import trio

from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.sender import SenderHub
from storage import outbox
from storage.db import Database
from tests.roomactors.test_sender import (  # noqa: F401 - fixtures
    LOCAL,
    B,
    C,
    RecordingPeer,
    db,
    db_path,
    eventually,
    make_hub,
    peer,
    send,
)


async def owe(db: Database, destination: str, first: int, last: int, edu_type: str = "m.direct_to_device") -> None:
    """Commit outbox rows numbered first..last (inclusive) for ``destination``, in one write."""
    rows = [(destination, edu_type, {"n": n}) for n in range(first, last + 1)]
    await db.write(outbox.add_edus, rows)


async def pending(db: Database, destination: str | None = None) -> int:
    return await db.read(outbox.count_edus, destination)


async def idle(hub: SenderHub) -> None:
    def done() -> bool:
        s = hub.statistics()
        return (
            s.pending_pdus == 0
            and s.pending_edus == 0
            and s.in_flight == 0
            and s.catching_up == 0
            and s.outbox_queues == 0
        )

    await eventually(done)
    await trio.sleep(1)


def outbox_ns(peer: RecordingPeer, destination: str) -> list[int]:
    return [
        e["content"]["n"]
        for a in peer.to(destination)
        for e in a.body["edus"]
        if e["edu_type"] == "m.direct_to_device"
    ]


async def test_outbox_rows_leave_in_order_at_most_100_per_txn_and_are_deleted(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer)
    await nursery.start(hub.run)
    await owe(db, B, 1, 250)
    await owe(db, C, 1, 3)
    hub.wake_outbox([B, C, LOCAL, B])
    await idle(hub)
    assert [len(a.body["edus"]) for a in peer.to(B)] == [100, 100, 50]
    assert outbox_ns(peer, B) == list(range(1, 251))
    assert outbox_ns(peer, C) == [1, 2, 3]
    assert {a.destination for a in peer.attempts} == {B, C}  # never our own server
    assert await pending(db) == 0
    stats = hub.statistics()
    assert stats.outbox_edus_sent == 253 and stats.outbox_queues == 0
    # Idle queues do not poll storage: nothing more is sent
    n = len(peer.attempts)
    await trio.sleep(60)
    assert len(peer.attempts) == n


async def test_outbox_and_memory_edus_share_the_100_edu_budget(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer)
    peer.hold = trio.Event()
    await nursery.start(hub.run)
    send(hub, 1, B)  # holds the queue while both kinds pile up
    await eventually(lambda: len(peer.attempts) == 1)
    await owe(db, B, 1, 150)
    hub.wake_outbox([B])
    for n in range(80):
        hub.send_edu(destination=B, edu_type="m.test", content={"m": n})
    peer.hold.set()
    peer.hold = None
    await idle(hub)
    txns = peer.to(B)[1:]
    assert all(len(a.body["edus"]) <= 100 for a in txns)
    assert len(txns[0].body["edus"]) == 100  # full: half reserved for memory EDUs, the rest outbox
    assert outbox_ns(peer, B) == list(range(1, 151))
    assert [e["content"]["m"] for a in txns for e in a.body["edus"] if e["edu_type"] == "m.test"] == list(range(80))
    assert await pending(db, B) == 0


async def test_rows_are_deleted_only_after_the_peer_answers_and_retried_after_failures(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer)
    await nursery.start(hub.run)
    peer.failing[B] = FederationUnreachable("down")
    await owe(db, B, 1, 5)
    hub.wake_outbox([B])
    await eventually(lambda: len(peer.attempts) >= 4, step=0.1)
    assert await pending(db, B) == 5  # nothing answered: nothing deleted
    assert len({a.txn_id for a in peer.attempts}) == 1  # the same transaction, retried
    assert all(a.body == peer.attempts[0].body for a in peer.attempts)
    q = hub.queue_statistics(B)
    assert q is not None and q.backing_off and q.outbox_edus_in_flight == 5
    gaps = [b.at - a.at for a, b in zip(peer.attempts, peer.attempts[1:])]
    assert gaps[1] >= 2 * gaps[0] - 1e-6 or gaps[1] >= 2.0 - 1e-6  # the backoff grows
    # 5xx keeps them too
    peer.failing[B] = FederationError(503)
    n = len(peer.attempts)
    await eventually(lambda: len(peer.attempts) == n + 1, step=0.1)
    assert await pending(db, B) == 5
    # A held (in-flight) answer: still there until the 200 is recorded
    del peer.failing[B]
    peer.hold = trio.Event()
    await eventually(lambda: len(peer.attempts) == n + 2, step=0.1)
    assert await pending(db, B) == 5
    peer.hold.set()
    peer.hold = None
    await idle(hub)
    assert outbox_ns(peer, B) == [1, 2, 3, 4, 5]
    assert await pending(db, B) == 0


async def test_rows_survive_a_restart_and_are_sent_at_startup(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer)
        await nursery.start(hub.run)
        peer.hang.add(B)  # the peer gets the transaction, we never hear back
        await owe(db, B, 1, 3)
        hub.wake_outbox([B])
        await eventually(lambda: len(peer.attempts) == 1)
        first_txn = peer.attempts[0].txn_id
        nursery.cancel_scope.cancel()
    assert await pending(db, B) == 3
    # Written while the sender is down, and a wake nobody hears
    await owe(db, B, 4, 6)
    await owe(db, C, 1, 1)
    hub.wake_outbox([B, C])  # after stop: no error, the rows wait
    peer.hang.clear()
    peer.attempts.clear()
    async with trio.open_nursery() as nursery:
        hub = make_hub(db, peer)
        await nursery.start(hub.run)
        assert hub.statistics().queues == 2
        await idle(hub)
        nursery.cancel_scope.cancel()
    assert outbox_ns(peer, B) == [1, 2, 3, 4, 5, 6]
    assert outbox_ns(peer, C) == [1]
    assert all(int(a.txn_id) > int(first_txn) for a in peer.attempts if a.destination == B)  # never reused
    assert await pending(db) == 0


async def test_the_memory_overflow_never_drops_outbox_rows(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer, edu_queue_limit=5)
    await nursery.start(hub.run)
    peer.failing[B] = FederationUnreachable("down")
    await owe(db, B, 1, 30)
    hub.wake_outbox([B])
    for n in range(20):
        hub.send_edu(destination=B, edu_type="m.test", content={"m": n})
    await eventually(lambda: len(peer.attempts) >= 2, step=0.1)
    assert hub.statistics().edus_dropped > 0
    del peer.failing[B]
    hub.wake(B)
    await idle(hub)
    assert outbox_ns(peer, B) == list(range(1, 31))
    assert await pending(db, B) == 0


async def test_a_whole_txn_4xx_drops_the_rows_as_it_drops_the_batch(
    autojump_clock: Any, nursery: trio.Nursery, db: Database, peer: RecordingPeer
) -> None:
    hub = make_hub(db, peer)
    await nursery.start(hub.run)
    peer.fail_once[B] = FederationError(400, "M_BAD_JSON")
    await owe(db, B, 1, 2)
    hub.wake_outbox([B])
    await eventually(lambda: len(peer.attempts) == 1)
    await idle(hub)
    assert await pending(db, B) == 0  # would never succeed: not retried forever
    assert hub.queue_statistics(B).txns_dropped == 1  # type: ignore[union-attr]
    await owe(db, B, 3, 3)
    hub.wake_outbox([B])
    await idle(hub)
    assert outbox_ns(peer, B) == [3]


async def test_rows_written_before_run_are_sent_by_run(
    autojump_clock: Any, db: Database, peer: RecordingPeer
) -> None:
    await owe(db, B, 1, 2)
    hub = make_hub(db, peer)
    hub.wake_outbox([B])  # before run: kept
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await idle(hub)
        nursery.cancel_scope.cancel()
    assert outbox_ns(peer, B) == [1, 2]
    assert len(peer.to(B)) == 1
