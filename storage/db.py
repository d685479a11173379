"""``Database``: the only async storage surface, ``write(fn, …)`` and ``read(fn, …)``.

Theory of operation
-------------------
aiosqlite and SQLAlchemy's async engine are asyncio-only, so the database is
SQLAlchemy Core on a *synchronous* engine over stdlib ``sqlite3``, driven from trio
through threads (README, "Why SQLAlchemy Core on sqlite3 in threads")::

    trio tasks                     writer thread (owns the writer connection)
    ──────────                     ─────────────────────────────────────────
    await db.write(fn, *args) ──►  jobs: queue.SimpleQueue
      (shielded wait on the        take every pending job (≤ MAX_BATCH)
       job's trio.Event)           BEGIN IMMEDIATE
                                     SAVEPOINT job; fn(conn, *args); RELEASE job   (each job)
                                     … a job that raises: ROLLBACK TO job; RELEASE job
                                   COMMIT                      ← one fsync for the batch
      ◄── token.run_sync_soon ──── set each job's Event (results only after COMMIT)

    await db.read(fn, *args)  ──►  trio.to_thread.run_sync, CapacityLimiter(readers):
                                   a pooled reader connection, BEGIN … fn(conn, *args) … COMMIT

**Group commit.** While the writer commits (the fsync dominates, ~0.5 ms here),
new jobs queue up; the next transaction takes all of them. So the checkpoints of
many room actors share one fsync, and a single busy actor still gets a commit per
write with no added latency: the writer never waits to fill a batch.

**Savepoints isolate jobs.** A job that raises rolls back only its own savepoint;
its exception is re-raised in its caller and the rest of the batch commits. If the
transaction itself fails (``BEGIN``/``COMMIT`` I/O errors, disk full), every job of
the batch that did not already fail gets a :class:`DatabaseWriteError` and nothing
of the batch is stored.

**Durability.** ``journal_mode=WAL`` with ``synchronous=FULL``: SQLite fsyncs the
WAL at every COMMIT, and a caller gets its result only after COMMIT returned. So a
write acknowledged to a caller (and then, by the room actor, to a client or a
federation peer) survives a process crash (SIGKILL) and a power loss. WAL also lets
readers run concurrently with the writer, each on a consistent snapshot.

**Cancellation.** ``write`` checks for cancellation *before* queueing; once a job
is queued its caller waits, shielded, until the job's outcome is known, then
returns it (a pending cancellation fires at the caller's next checkpoint). A job is
never abandoned half-way (house rule 7). ``read`` uses ``trio.to_thread.run_sync``
without abandoning, for the same reason.

**Transactions under pysqlite.** Each connection has ``isolation_level = None``
(the driver never begins or commits on its own) and the engine's ``begin`` event
emits ``BEGIN IMMEDIATE`` (writer; takes the write lock at once, so a busy database
fails at BEGIN, never half-way) or ``BEGIN`` (readers), as the SQLAlchemy pysqlite
docs recommend ("Serializable isolation / Savepoints / Transactional DDL").

**Lifecycle.** ``Database.open`` starts the writer thread, which connects, sets the
PRAGMAs and runs the migrations (``storage/migrations``), then reports back; a
migration error (e.g. :class:`~storage.migrations.SchemaTooNewError`) is raised from
``open``. On exit, new writes are refused, the jobs already queued are drained and
committed, the thread is joined and the engines are disposed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import outcome
import sqlalchemy as sa
import trio
from sqlalchemy import event

from .migrations import migrate

__all__ = [
    "Database",
    "DatabaseStatistics",
    "DatabaseWriteError",
    "MAX_BATCH",
    "BUSY_TIMEOUT_MS",
    "PAGE_SIZE",
    "create_engine",
]

T = TypeVar("T")

MAX_BATCH = 512
"""Most jobs in one transaction (bounds a transaction's size and a batch's latency)."""

BUSY_TIMEOUT_MS = 5000

PAGE_SIZE = 4096


class DatabaseWriteError(RuntimeError):
    """The transaction that held this write failed to commit; nothing of it was stored."""


def create_engine(path: str | Path, *, writer: bool, pool_size: int = 1) -> sa.Engine:
    """A synchronous SQLAlchemy engine on ``sqlite3`` with our transaction handling.

    ``writer=True``: one connection (``StaticPool``) with ``journal_mode=WAL``,
    ``synchronous=FULL``, ``page_size`` :data:`PAGE_SIZE` (new files) and ``BEGIN IMMEDIATE``; ``writer=False``: a pool of
    ``pool_size`` read-only (``query_only``) connections that ``BEGIN`` deferred.
    Both set ``foreign_keys=ON`` and ``busy_timeout``. ``path`` may be ``":memory:"``
    for tests of repository functions (one connection, no WAL).
    """
    url = sa.engine.URL.create("sqlite+pysqlite", database=str(path))
    connect_args = {"check_same_thread": False}
    if writer:
        engine = sa.create_engine(url, poolclass=sa.pool.StaticPool, connect_args=connect_args)
    else:
        engine = sa.create_engine(
            url, poolclass=sa.pool.QueuePool, pool_size=pool_size, max_overflow=0, connect_args=connect_args
        )
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT by pysqlite
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if writer:
                # Only takes effect while the file is still empty (before WAL mode and the
                # first table). Measured with bench/storage.py's workload: 8 KiB pages
                # store ~15% fewer bytes per event (fewer half-empty pages), but every
                # index leaf a commit dirties is written whole to the WAL, and 8 KiB
                # pages wrote 3-5x the bytes per event; 4 KiB wins.
                cursor.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode not in ("wal", "memory"):
                    raise RuntimeError(f"could not put {path} in WAL mode (journal_mode is {mode})")
                cursor.execute("PRAGMA synchronous = FULL")
            else:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    writes: int  # write jobs finished (committed or failed)
    commits: int  # transactions committed by the writer (migrations not counted)
    max_batch: int  # most jobs in one transaction so far
    queue_depth: int  # jobs queued, not yet taken by the writer
    failed_writes: int  # jobs whose caller got an exception
    last_batch: int  # jobs in the most recent transaction
    reads: int  # read calls started
    readers: int  # reader connections (and concurrent reads) at most
    in_flight: int = 0  # write and read calls awaiting their thread's result now


@dataclass(slots=True, eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome | None = None


_STOP = object()


class Database:
    """The writer thread, the reader pool, and the async ``write``/``read`` surface."""

    def __init__(self, path: Path, readers: int) -> None:
        self.path = path
        self._readers = readers
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._started = trio.Event()
        self._startup: outcome.Outcome | None = None
        self._writer_engine = create_engine(path, writer=True)
        self._reader_engine = create_engine(path, writer=False, pool_size=readers)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._writes = 0
        self._commits = 0
        self._max_batch = 0
        self._failed_writes = 0
        self._last_batch = 0
        self._reads = 0
        self._in_flight = 0  # touched only from the trio thread
        self.schema_version = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path, *, readers: int = 2) -> AsyncIterator[Database]:
        """``async with Database.open(path) as db:`` — migrated, ready, closed cleanly on exit."""
        path = Path(path)
        if str(path) == ":memory:":
            raise ValueError("Database needs a file: an in-memory database is private to one connection")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls(path, readers)
        with trio.CancelScope(shield=True):
            await db._start()
        try:
            yield db
        finally:
            with trio.CancelScope(shield=True):
                await db._close()

    async def _start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._writer_main, name=f"db-writer:{self.path.name}", daemon=True)
        self._thread.start()
        await self._started.wait()
        assert self._startup is not None
        if isinstance(self._startup, outcome.Error):
            await trio.to_thread.run_sync(self._thread.join)
            self._writer_engine.dispose()
            self._reader_engine.dispose()
        self.schema_version = self._startup.unwrap()

    async def _close(self) -> None:
        self._closed = True
        self._jobs.put(_STOP)  # after every job queued so far: those are drained first
        assert self._thread is not None
        await trio.to_thread.run_sync(self._thread.join)
        # Wait for reads still running in worker threads before closing their connections.
        borrowers = [object() for _ in range(self._readers)]
        for borrower in borrowers:
            await self._read_limiter.acquire_on_behalf_of(borrower)
        self._reader_engine.dispose()
        for borrower in borrowers:
            self._read_limiter.release_on_behalf_of(borrower)

    # --------------------------------------------------------------- the surface

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer thread in a group-committed transaction.

        Returns ``fn``'s result once the transaction has committed, or re-raises
        ``fn``'s exception (its savepoint rolled back). ``fn`` must not commit, and
        must return plain data (no live result objects).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("the database is closed")
        job = _Job(fn, args)
        self._jobs.put(job)
        self._in_flight += 1
        try:
            with trio.CancelScope(shield=True):
                await job.done.wait()
        finally:
            self._in_flight -= 1
        assert job.result is not None
        return job.result.unwrap()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a read transaction on a reader connection."""
        if self._closed:
            raise trio.ClosedResourceError("the database is closed")
        self._reads += 1
        self._in_flight += 1
        try:
            return await trio.to_thread.run_sync(self._read_in_thread, fn, args, limiter=self._read_limiter)
        finally:
            self._in_flight -= 1

    def statistics(self) -> DatabaseStatistics:
        return DatabaseStatistics(
            writes=self._writes,
            commits=self._commits,
            max_batch=self._max_batch,
            queue_depth=self._jobs.qsize(),
            failed_writes=self._failed_writes,
            last_batch=self._last_batch,
            reads=self._reads,
            readers=self._readers,
            in_flight=self._in_flight,
        )

    # ------------------------------------------------------------ worker threads

    def _read_in_thread(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._reader_engine.connect() as conn, conn.begin():
            return fn(conn, *args)

    def _report(self, callback: Callable[..., Any], *args: Any) -> None:
        assert self._token is not None
        self._token.run_sync_soon(callback, *args)

    def _writer_main(self) -> None:
        try:
            conn = self._writer_engine.connect()
        except BaseException as exc:
            self._startup = outcome.Error(exc)
            self._report(self._started.set)
            return
        try:
            with conn:
                self._startup = outcome.capture(migrate, conn)
                self._report(self._started.set)
                if isinstance(self._startup, outcome.Error):
                    return
                self._serve(conn)
        finally:
            self._writer_engine.dispose()

    def _serve(self, conn: sa.Connection) -> None:
        raw = conn.connection.driver_connection
        batch: list[_Job] = []
        try:
            while True:
                batch, stop = self._take_batch()
                if batch:
                    self._run_batch(conn, raw, batch)
                    batch = []
                if stop:
                    return
        except BaseException as exc:
            # A bug in this loop, not in a job: fail every caller still waiting.
            self._closed = True
            pending = batch + [job for job in self._drain() if job is not _STOP]
            for job in pending:
                if job.result is None or isinstance(job.result, outcome.Value):
                    job.result = outcome.Error(DatabaseWriteError(f"the database writer failed: {exc!r}"))
            self._report(self._deliver, pending)
            raise

    def _drain(self) -> list[Any]:
        items = []
        while True:
            try:
                items.append(self._jobs.get_nowait())
            except queue.Empty:
                return items

    def _take_batch(self) -> tuple[list[_Job], bool]:
        first = self._jobs.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run_batch(self, conn: sa.Connection, raw: Any, batch: list[_Job]) -> None:
        try:
            with conn.begin():  # BEGIN IMMEDIATE … COMMIT
                for job in batch:
                    raw.execute("SAVEPOINT job")
                    job.result = outcome.capture(job.fn, conn, *job.args)
                    if isinstance(job.result, outcome.Error):
                        raw.execute("ROLLBACK TO job")
                    raw.execute("RELEASE job")
        except BaseException as exc:
            # Nothing of this batch is stored. SQLAlchemy rolled back; make sure sqlite did.
            if raw.in_transaction:
                raw.rollback()
            for job in batch:
                if not isinstance(job.result, outcome.Error):
                    error = DatabaseWriteError("the transaction holding this write did not commit")
                    error.__cause__ = exc
                    job.result = outcome.Error(error)
        else:
            self._commits += 1
        self._writes += len(batch)
        self._failed_writes += sum(isinstance(job.result, outcome.Error) for job in batch)
        self._last_batch = len(batch)
        self._max_batch = max(self._max_batch, len(batch))
        self._report(self._deliver, batch)

    @staticmethod
    def _deliver(batch: list[_Job]) -> None:
        for job in batch:
            job.done.set()
