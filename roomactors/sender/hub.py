"""SenderHub: the outbound federation sender, one DestinationQueue task per remote server.

Theory of operation
-------------------
Room actors commit, then hand the hub what remote servers must see (house rule 3,
"commit, then apply, then answer"): :meth:`SenderHub.send_pdu` for an event of ours,
:meth:`SenderHub.send_edu` for ephemeral data. Both are plain ``def``: they never
block and never raise, because they run inside an actor right after its commit. They
only append to the destination's in-memory queue and set its wake event; the
queue's own task does the I/O (docs/ARCHITECTURE.md: "room code sending HTTP
itself" is what to avoid)::

    SenderHub.run ─ nursery ─┬─ _supervise(b.example) ── DestinationQueue(b.example).run
                             ├─ _supervise(c.example:8448) ── DestinationQueue(…).run
                             └─ …   (started lazily, on the first PDU/EDU for a server)

* **Startup.** Before reporting ready, ``run`` reads the destinations that storage
  says are behind (a room they are joined to has an event of ours after their
  ``last_successful_stream_ordering``) and starts their queues in catch-up mode.
  A server never contacted before has no row, hence no catch-up.
* **Lazy queues.** The first ``send_pdu``/``send_edu`` for a server creates its queue
  and ``start_soon``s its supervisor in the hub's nursery: the entry points are sync,
  so they cannot ``await nursery.start`` (the registry's get-or-spawn does the same,
  for the same reason). The queue is usable at once; its task loads the
  destination's row (position, backoff) before sending anything. Calls made before
  ``run`` has started are kept and their queues started by ``run``; calls after the
  hub stopped are counted and dropped (storage still has the PDUs).
* **Supervision.** A queue's task that raises (a bug, a database error) is logged
  and counted; the queue falls back to catch-up mode (its memory may be
  inconsistent), backs off, and restarts. ``trio.Cancelled`` and other
  ``BaseException`` pass through. One bad destination never stops the others.
* **Never our own server.** ``server_name`` is filtered out of every destination list.
* **Durable EDUs.** :meth:`wake_outbox` (after a commit that wrote
  ``storage.outbox`` rows) tells those destinations' queues to read them; at
  startup ``run`` also starts a queue for every destination with outbox rows. The
  rows leave storage only when the peer has answered the transaction carrying them
  (queue.py, "Durable EDUs").
* :meth:`wake` (a peer contacted us) clears the backoff and retries at once.
* Shutdown is cancellation of ``run``: a request in flight is abandoned, and so is
  everything in memory; after a restart, catch-up rebuilds what the peer has not
  acknowledged, under new txn IDs (an ID is reserved durably before its first
  attempt, so none is ever reused). Database writes already queued finish
  (``Database.write`` shields them).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from roomactors.clock import Clock
from storage import outbound, outbox
from storage.db import Database

from .queue import DestinationQueue, DestinationStatistics, Edu, QueuedPdu, SenderConfig, TransactionClient

__all__ = ["SenderHub", "SenderStatistics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderStatistics:
    queues: int  # destination queues (tasks) known
    pending_pdus: int  # queued in memory across queues
    pending_edus: int
    in_flight: int  # queues holding an unanswered transaction
    backing_off: int  # queues waiting out a backoff
    catching_up: int  # queues sending from storage
    txns_sent: int
    txns_failed: int
    txns_dropped: int
    pdus_dropped: int  # dropped from memory by overflows (caught up from storage)
    edus_dropped: int
    dropped_after_stop: int  # entry-point calls after the hub stopped
    crashes: int
    outbox_queues: int = 0  # queues that may have storage.outbox rows to send
    outbox_edus_in_flight: int = 0
    outbox_edus_sent: int = 0  # outbox rows answered by peers (and deleted)


class SenderHub:
    def __init__(
        self,
        *,
        db: Database,
        client: TransactionClient,
        server_name: str,
        clock: Clock,
        backoff_initial_s: float,
        backoff_max_s: float,
        max_pdus_per_txn: int = 50,
        max_edus_per_txn: int = 100,
        queue_limit: int = 1000,
        edu_queue_limit: int = 1000,
        request_timeout_s: float | None = None,
    ) -> None:
        if not 1 <= max_pdus_per_txn <= 50 or not 1 <= max_edus_per_txn <= 100:
            raise ValueError("a transaction carries 1..50 PDUs and 1..100 EDUs at most (server-server API)")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self.server_name = server_name
        self._config = SenderConfig(
            db=db,
            client=client,
            server_name=server_name,
            clock=clock,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            max_pdus_per_txn=max_pdus_per_txn,
            max_edus_per_txn=max_edus_per_txn,
            queue_limit=queue_limit,
            edu_queue_limit=edu_queue_limit,
            request_timeout_s=request_timeout_s,
        )
        self._queues: dict[str, DestinationQueue] = {}
        self._nursery: trio.Nursery | None = None
        self._stopped = False
        self._dropped_after_stop = 0

    # ------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the catch-up of destinations that are behind, then serve until cancelled."""
        try:
            behind = await self._config.db.read(outbound.list_destinations_behind, self.server_name)
            owed = await self._config.db.read(outbox.list_destinations)
            async with trio.open_nursery() as nursery:
                for row in behind:
                    queue = self._queues.get(row.destination)
                    if queue is None:
                        queue = self._queues[row.destination] = DestinationQueue(
                            row.destination, self._config, row=row
                        )
                    queue.start_catch_up()
                for destination in owed:
                    if destination and destination != self.server_name:
                        self._queue(destination).wake_outbox()
                self._nursery = nursery
                for queue in self._queues.values():
                    self._start(queue)
                if behind:
                    log.info("outbound federation: catching up %d destinations", len(behind))
                if owed:
                    log.info("outbound federation: %d destinations have outbox EDUs", len(owed))
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._stopped = True
            self._nursery = None

    # ----------------------------------------------------- sync entry points

    def send_pdu(
        self, *, room_id: str, stream_ordering: int, pdu: dict[str, Any], destinations: Iterable[str]
    ) -> None:
        """Queue our just-committed PDU for each destination (never our own server)."""
        if self._stopped:
            self._dropped_after_stop += 1
            return
        item = QueuedPdu(room_id, stream_ordering, pdu)
        for destination in dict.fromkeys(destinations):
            if destination and destination != self.server_name:
                self._queue(destination).enqueue_pdu(item)

    def send_edu(
        self, *, destination: str, edu_type: str, content: dict[str, Any], key: Hashable | None = None
    ) -> None:
        """Queue an EDU. A ``key`` coalesces: a newer EDU of the same type and key replaces
        a pending one (``m.typing`` is keyed by room and user unless a key is given)."""
        if self._stopped:
            self._dropped_after_stop += 1
            return
        if not destination or destination == self.server_name:
            return
        if key is None and edu_type == "m.typing":
            key = (content.get("room_id"), content.get("user_id"))
        self._queue(destination).enqueue_edu(Edu(edu_type, content), key)

    def wake_outbox(self, destinations: Iterable[str]) -> None:
        """``storage.outbox`` rows were just committed for ``destinations``: their queues
        read them into the next transactions. Plain ``def``: never blocks, never raises
        (after a stop, the rows wait in storage for the next start)."""
        try:
            if self._stopped:
                return
            for destination in dict.fromkeys(destinations):
                if destination and destination != self.server_name:
                    self._queue(destination).wake_outbox()
        except Exception:  # pragma: no cover - defensive: the caller has committed already
            log.exception("wake_outbox failed; the rows are sent at the next start")

    async def outbox_backlog(self) -> int:
        """EDUs waiting in ``storage.outbox`` for every destination (one read)."""
        return await self._config.db.read(outbox.count_edus)

    def wake(self, destination: str) -> None:
        """``destination`` contacted us, so it is up: retry it now, forgetting the backoff."""
        queue = self._queues.get(destination)
        if queue is not None:
            queue.wake_now()

    def statistics(self) -> SenderStatistics:
        stats = [q.statistics() for q in self._queues.values()]
        return SenderStatistics(
            queues=len(stats),
            pending_pdus=sum(s.pending_pdus for s in stats),
            pending_edus=sum(s.pending_edus for s in stats),
            in_flight=sum(s.in_flight for s in stats),
            backing_off=sum(s.backing_off for s in stats),
            catching_up=sum(s.catching_up for s in stats),
            txns_sent=sum(s.txns_sent for s in stats),
            txns_failed=sum(s.txns_failed for s in stats),
            txns_dropped=sum(s.txns_dropped for s in stats),
            pdus_dropped=sum(s.pdus_dropped for s in stats),
            edus_dropped=sum(s.edus_dropped for s in stats),
            dropped_after_stop=self._dropped_after_stop,
            crashes=sum(s.crashes for s in stats),
            outbox_queues=sum(1 for s in stats if s.outbox_pending or s.outbox_edus_in_flight),
            outbox_edus_in_flight=sum(s.outbox_edus_in_flight for s in stats),
            outbox_edus_sent=sum(s.outbox_edus_sent for s in stats),
        )

    def queue_statistics(self, destination: str) -> DestinationStatistics | None:
        queue = self._queues.get(destination)
        return queue.statistics() if queue is not None else None

    # ------------------------------------------------------------ internals

    def _queue(self, destination: str) -> DestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = DestinationQueue(destination, self._config)
            if self._nursery is not None:
                self._start(queue)
        return queue

    def _start(self, queue: DestinationQueue) -> None:
        if not queue.started:
            assert self._nursery is not None
            queue.started = True
            self._nursery.start_soon(self._supervise, queue, name=f"sender:{queue.destination}")

    async def _supervise(self, queue: DestinationQueue) -> None:
        while True:
            try:
                await queue.run()
            except Exception:
                delay = queue.note_crash()
                log.exception(
                    "outbound queue to %s crashed (%d so far); restarting in %.1fs",
                    queue.destination,
                    queue.crashes,
                    delay,
                )
                await trio.sleep(delay)
            else:  # pragma: no cover - run() only ends by raising
                return
