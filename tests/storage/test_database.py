"""``Database``: group commit, savepoint isolation, cancellation, readers, lifecycle, PRAGMAs.

Determinism: a job that blocks the writer thread on a ``threading.Event`` holds the
writer still while the test queues more jobs; ``wait_all_tasks_blocked`` tells when
every caller is parked on its job. No sleeps.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio
import trio.testing

from storage import rooms as R
from storage.db import Database, DatabaseWriteError
from storage.migrations import LATEST_VERSION, SchemaTooNewError

from .rooms import CREATE, ROOM_VERSION, _with, make_event

NOTES = sa.table("notes", sa.column("id"), sa.column("body"))


def create_notes(conn: sa.Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)")


def add_note(conn: sa.Connection, body: str) -> int:
    return conn.execute(sa.insert(NOTES).values(body=body).returning(NOTES.c.id)).scalar_one()


def add_note_then_fail(conn: sa.Connection, body: str) -> None:
    add_note(conn, body)
    raise ValueError(f"job {body} failed after writing")


def notes(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(NOTES.c.body).order_by(NOTES.c.body)).scalars())


def blocking(gate: threading.Event, entered: threading.Event | None = None):
    def job(conn: sa.Connection) -> str:
        if entered is not None:
            entered.set()
        if not gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return "unblocked"

    return job


async def hold_writer(db: Database, nursery: trio.Nursery, gate: threading.Event) -> None:
    """Start a job that parks the writer thread until ``gate`` is set."""
    entered = threading.Event()
    nursery.start_soon(db.write, blocking(gate, entered))
    await trio.to_thread.run_sync(entered.wait)


async def test_write_returns_the_result_and_reads_see_it(db: Database) -> None:
    await db.write(create_notes)
    assert await db.write(add_note, "a") == 1
    assert await db.read(notes) == ["a"]
    stats = db.statistics()
    assert (stats.writes, stats.commits, stats.failed_writes, stats.queue_depth) == (2, 2, 0, 0)
    assert stats.reads == 1 and stats.readers == 2


async def test_group_commit_batches_concurrent_writes_into_one_transaction(db: Database) -> None:
    await db.write(create_notes)
    gate = threading.Event()
    results = {}

    async def writer(i: int) -> None:
        results[i] = await db.write(add_note, f"n{i:03}")

    async with trio.open_nursery() as nursery:
        await hold_writer(db, nursery, gate)
        for i in range(50):
            nursery.start_soon(writer, i)
        await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().queue_depth == 50
        gate.set()
    stats = db.statistics()
    assert stats.commits == 3  # create_notes, the blocker alone, then all 50 together
    assert stats.max_batch == 50 and stats.last_batch == 50
    assert sorted(results.values()) == list(range(1, 51))
    assert len(await db.read(notes)) == 50


async def test_a_failing_job_does_not_poison_its_batch(db: Database) -> None:
    await db.write(create_notes)
    gate = threading.Event()
    outcomes = {}

    async def run(name: str, fn, body: str) -> None:
        try:
            outcomes[name] = await db.write(fn, body)
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        await hold_writer(db, nursery, gate)
        nursery.start_soon(run, "a", add_note, "a")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "bad", add_note_then_fail, "bad")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "dup", add_note, "a")  # UNIQUE violation inside the batch
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "c", add_note, "c")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert isinstance(outcomes["bad"], ValueError) and "failed after writing" in str(outcomes["bad"])
    assert isinstance(outcomes["dup"], sa.exc.IntegrityError)
    assert isinstance(outcomes["a"], int) and isinstance(outcomes["c"], int)
    assert await db.read(notes) == ["a", "c"]
    stats = db.statistics()
    assert stats.last_batch == 4 and stats.failed_writes == 2 and stats.commits == 3


async def test_a_batch_whose_transaction_fails_stores_nothing(db: Database) -> None:
    await db.write(create_notes)
    gate = threading.Event()
    outcomes = {}

    def rogue(conn: sa.Connection) -> None:
        # A job that ends the transaction itself (a bug): its batch cannot commit.
        conn.connection.driver_connection.execute("ROLLBACK")

    async def run(name: str, fn, *args) -> None:
        try:
            outcomes[name] = await db.write(fn, *args)
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        await hold_writer(db, nursery, gate)
        nursery.start_soon(run, "ok", add_note, "ok")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "rogue", rogue)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert isinstance(outcomes["ok"], DatabaseWriteError)
    assert isinstance(outcomes["rogue"], DatabaseWriteError)
    assert await db.read(notes) == []
    # The writer carries on with the next batch.
    await db.write(add_note, "after")
    assert await db.read(notes) == ["after"]


async def test_a_cancelled_caller_still_gets_its_job_committed(db: Database) -> None:
    await db.write(create_notes)
    gate = threading.Event()
    entered = threading.Event()
    returned = []

    def slow_insert(conn: sa.Connection) -> int:
        entered.set()
        gate.wait(timeout=30)
        return add_note(conn, "slow")

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            returned.append(await db.write(slow_insert))
            await trio.lowlevel.checkpoint()  # the pending cancellation fires here
            returned.append("not reached")

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.to_thread.run_sync(entered.wait)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # still waiting (shielded) for the job's outcome
        gate.set()
    assert scope.cancelled_caught
    assert returned == [1]
    assert await db.read(notes) == ["slow"]


async def test_a_caller_cancelled_before_writing_queues_nothing(db: Database) -> None:
    await db.write(create_notes)
    with trio.CancelScope() as scope:
        scope.cancel()
        await db.write(add_note, "never")
    assert scope.cancelled_caught
    assert await db.read(notes) == []
    assert db.statistics().writes == 1


async def test_readers_see_committed_data_only(db: Database) -> None:
    await db.write(create_notes)
    await db.write(add_note, "committed")
    gate = threading.Event()
    entered = threading.Event()

    def insert_then_wait(conn: sa.Connection) -> None:
        add_note(conn, "uncommitted")
        entered.set()
        gate.wait(timeout=30)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.write, insert_then_wait)
        await trio.to_thread.run_sync(entered.wait)
        assert await db.read(notes) == ["committed"]  # WAL: the reader's snapshot
        gate.set()
    assert await db.read(notes) == ["committed", "uncommitted"]


async def test_reads_are_limited_to_the_reader_count(db_path: Path) -> None:
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def read_and_wait(conn: sa.Connection) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        arrived.release()
        release.wait(timeout=30)
        with lock:
            running -= 1
        return conn.exec_driver_sql("SELECT 1").scalar()

    async with Database.open(db_path, readers=3) as db:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(db.read, read_and_wait)
            for _ in range(3):
                await trio.to_thread.run_sync(arrived.acquire)
            await trio.testing.wait_all_tasks_blocked()
            assert running == 3  # the other five wait for the CapacityLimiter
            release.set()
    assert peak == 3


async def test_reader_connections_are_read_only(db: Database) -> None:
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        await db.read(create_notes)


async def test_pragmas(db: Database) -> None:
    def writer_pragmas(conn: sa.Connection) -> tuple:
        return tuple(
            conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "page_size")
        )

    assert await db.write(writer_pragmas) == ("wal", 2, 1, 5000, 4096)  # synchronous 2 = FULL


async def test_close_drains_queued_jobs(db_path: Path) -> None:
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        async with Database.open(db_path) as db:
            await db.write(create_notes)
            await hold_writer(db, nursery, gate)
            for i in range(5):
                nursery.start_soon(db.write, add_note, f"q{i}")
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        # The context has closed: every queued job committed before the thread stopped.
        with pytest.raises(trio.ClosedResourceError):
            await db.write(add_note, "late")
    async with Database.open(db_path) as db:
        assert await db.read(notes) == [f"q{i}" for i in range(5)]


async def test_reopening_is_idempotent_and_keeps_data(db_path: Path) -> None:
    async with Database.open(db_path) as db:
        assert db.schema_version == LATEST_VERSION
        await db.write(create_notes)
        await db.write(add_note, "kept")
    for _ in range(2):
        async with Database.open(db_path) as db:
            assert db.schema_version == LATEST_VERSION
            assert await db.read(notes) == ["kept"]
            versions = await db.read(lambda c: c.exec_driver_sql("SELECT version FROM schema_version").all())
            assert versions == [(LATEST_VERSION,)]


async def test_a_database_from_a_newer_release_is_refused(db_path: Path) -> None:
    async with Database.open(db_path):
        pass
    raw = sqlite3.connect(db_path)
    raw.execute("INSERT INTO schema_version (version, applied_ts) VALUES (?, 0)", (LATEST_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNewError, match=f"schema version {LATEST_VERSION + 1}"):
        async with Database.open(db_path):
            pytest.fail("opened a database from a newer release")


async def test_open_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file"):
        async with Database.open(":memory:"):
            pass
    with pytest.raises(ValueError, match="readers"):
        async with Database.open(tmp_path / "x.db", readers=0):
            pass


async def test_room_checkpoints_through_the_database_pass_integrity_check(db: Database) -> None:
    """Many rooms checkpointing concurrently; then PRAGMA integrity_check and foreign_key_check."""
    room_ids = [f"!r{i}:a.example" for i in range(20)]

    async def grow(room_id: str) -> None:
        create = make_event(f"{room_id}/create", room_id, type="m.room.create", state_key="")
        create = _with(create, state_delta={CREATE: create.event_id})
        await db.write(
            R.checkpoint,
            R.Checkpoint(
                room_id=room_id,
                room_version=ROOM_VERSION,
                events=(create,),
                forward_extremities=frozenset({create.event_id}),
                current_state_delta={CREATE: create.event_id},
            ),
        )
        prev, ref = create.event_id, create.event_id
        for i in range(30):
            if i % 4 == 0:
                key = ("m.room.member", f"@u{i}:b.example")
                ev = make_event(f"{room_id}/{i}", room_id, type=key[0], state_key=key[1], prev_events=(prev,))
                ev = _with(ev, state_base_ref=ref, state_delta={key: ev.event_id})
                current = {key: ev.event_id}
            else:
                ev = make_event(f"{room_id}/{i}", room_id, prev_events=(prev,), state_base_ref=ref)
                current = {}
            txn = R.TxnRecord(user_id="@alice:a.example", device_id="D", txn_id=f"{room_id}/{i}")
            cp = R.Checkpoint(
                room_id=room_id,
                room_version=ROOM_VERSION,
                events=(ev,),
                forward_extremities=frozenset({ev.event_id}),
                current_state_delta=current,
                txn=txn,
            )
            await db.write(R.checkpoint, cp)
            prev = ev.event_id
            ref = ev.event_id if current else ref

    async with trio.open_nursery() as nursery:
        for room_id in room_ids:
            nursery.start_soon(grow, room_id)
    stats = db.statistics()
    assert stats.writes == 20 * 31 and stats.failed_writes == 0
    assert stats.commits < stats.writes  # concurrent actors shared transactions
    assert await db.read(R.list_room_ids) == sorted(room_ids)
    record = await db.read(R.load_room, room_ids[3])
    assert record.max_stream_ordering > 0 and len(record.current_state) == 1 + 8

    def checks(conn: sa.Connection) -> tuple:
        return (
            conn.exec_driver_sql("PRAGMA integrity_check").scalar(),
            conn.exec_driver_sql("PRAGMA foreign_key_check").all(),
        )

    assert await db.read(checks) == ("ok", [])
