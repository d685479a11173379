"""DestinationQueue: everything we owe one remote server, sent one transaction at a time.

Theory of operation
-------------------
One queue per destination, run by the :class:`~roomactors.sender.hub.SenderHub`.
It holds, in memory only, the PDUs room actors handed over after their commits
(a bounded FIFO) and pending EDUs (bounded, oldest dropped first, coalesced by key),
and it runs one loop::

            ┌───────────── wait: something to send, and the backoff has passed ◄──────┐
            ▼                                                                        │
     build a transaction ── catching up? ─ yes ─► read storage: latest local event   │
     (≤ max PDUs, ≤ max EDUs)   │ no               per shared room, after position   │
            │                   └─► pop PDUs from the FIFO                           │
            ▼                                                                        │
     PUT /send/{txnId} ─ 2xx ─────────► record success (position, next seq) ─────────┤
            │          ─ 4xx (not 429) ► log, drop the batch, record success ────────┤
            └──────────── unreachable, timeout, 5xx, 429 ► back off, keep the txn ───┘

Invariants:

* **One transaction in flight.** A built transaction is held (``_in_flight``) until
  the peer answers it; every retry sends the same txn ID with the same body
  (``origin_server_ts`` is fixed when it is built). Nothing else is sent meanwhile.
* **Txn IDs are never reused**: the sequence number is reserved durably before the
  first attempt (``storage.outbound.reserve_txn_seq``, or reserved ahead of time by
  the write that records the previous success).
* **Order.** PDUs leave in the order they were handed over; EDUs in the order they
  were queued (a coalesced EDU moves to the back, as the newest).
* **Backoff** doubles from ``backoff_initial_s`` to ``backoff_max_s`` after each failed
  attempt, is persisted (``retry_last_ts``, ``retry_interval_ms``, restored when the
  queue starts) and is cleared by a success or by :meth:`DestinationQueue.wake_now`
  (the peer contacted us). Sleeps are ``trio.move_on_at`` on a wake event, so tests
  run under ``autojump_clock``.
* **Bounded memory, catch-up mode.** A FIFO that would exceed ``queue_limit`` is
  emptied and the queue enters catch-up mode, as it does at startup when storage
  says the destination is behind. In catch-up mode new PDUs are not queued (they
  are in storage already); when the queue may send, it reads, per room the
  destination is joined to, our latest event after the position, 50 at a time
  oldest first, and leaves catch-up mode once a read finds nothing and no PDU was
  skipped while it read (else it reads again: a commit may have raced the read).
  The peer fetches the gaps with ``/get_missing_events``.
* **Position.** ``last_successful_stream_ordering`` only grows. While the row has
  none, the queue remembers a *floor* (the first PDU's stream ordering minus one)
  and the reservation write stores it, so a destination never reached is still
  caught up after an overflow or a restart.

* **Durable EDUs (the outbox).** EDUs that must not be lost (``m.direct_to_device``,
  device-list updates) are rows of ``storage.outbox``, written in the transaction of
  the change they report. :meth:`DestinationQueue.wake_outbox` (the hub's
  ``wake_outbox``, after that commit) marks the outbox *pending*; while it is, each
  new transaction reads the destination's oldest rows first (in order), leaving room
  for up to half the EDU budget of in-memory EDUs, and fills the rest with in-memory
  EDUs (≤ ``max_edus_per_txn`` in all). The rows are deleted in the write that records
  the peer's answer (2xx, or a 4xx for the whole transaction, which would never
  succeed), never before; a failed attempt keeps the held transaction and retries
  it with the backoff, like PDUs. The in-memory overflow never touches them, and a
  read that finds fewer rows than it asked for (with no wake meanwhile) clears
  *pending*, so an idle queue does not poll storage. A crash marks it pending again.

Known limit: actors report commits in commit order per room, but two rooms' reports
can reach the hub out of stream order; an event whose ordering is below a position
already recorded, and that is then dropped by an overflow, is not caught up until
its room has a newer event of ours (which the peer then backfills through).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Any, Protocol

import trio

from roomactors.clock import Clock
from roomactors.federation_client import FederationError, FederationUnreachable
from storage import outbound, outbox
from storage.db import Database

__all__ = [
    "TransactionClient",
    "SenderConfig",
    "QueuedPdu",
    "Edu",
    "Transaction",
    "DestinationQueue",
    "DestinationStatistics",
    "SEND_PATH",
]

log = logging.getLogger(__name__)

SEND_PATH = "/_matrix/federation/v1/send/"


class TransactionClient(Protocol):
    """What the sender needs of ``roomactors.federation_client.FederationClient``.

    ``put_json`` returns the decoded 2xx response body, raises ``FederationError``
    (the peer answered non-2xx: ``.status``, ``.errcode``) or ``FederationUnreachable``
    (DNS, connect, TLS, timeout)."""

    async def put_json(self, destination: str, path: str, body: Any) -> Any: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderConfig:
    db: Database
    client: TransactionClient
    server_name: str
    clock: Clock
    backoff_initial_s: float
    backoff_max_s: float
    max_pdus_per_txn: int = 50
    max_edus_per_txn: int = 100
    queue_limit: int = 1000
    edu_queue_limit: int = 1000
    request_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class QueuedPdu:
    room_id: str
    stream_ordering: int
    pdu: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Edu:
    edu_type: str
    content: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    txn_id: str
    body: dict[str, Any]  # origin, origin_server_ts, pdus, edus: exactly what every attempt sends
    max_stream_ordering: int | None  # None: EDUs only
    pdu_count: int
    edu_count: int
    catch_up: bool
    outbox_ids: tuple[int, ...] = ()  # storage.outbox rows carried: deleted when answered
    attempts: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationStatistics:
    destination: str
    pending_pdus: int  # queued in memory, not yet in a transaction
    pending_edus: int
    in_flight: bool  # a transaction is built and not yet answered
    in_flight_attempts: int
    catching_up: bool
    backing_off: bool
    retry_interval_s: float | None  # the current backoff interval (None: not failing)
    retry_in_s: float | None  # seconds until the next attempt is allowed (None: now)
    position: int | None  # last_successful_stream_ordering as this queue knows it
    txns_sent: int  # answered 2xx
    txns_failed: int  # attempts that failed (each is retried)
    txns_dropped: int  # answered 4xx for the whole transaction: dropped
    pdus_sent: int
    edus_sent: int
    pdu_errors: int  # per-PDU errors in 2xx answers (logged, not retried)
    pdus_dropped: int  # dropped by an overflow (catch-up covers them)
    pdus_skipped: int  # not queued because the queue was catching up
    edus_dropped: int  # oldest EDUs dropped beyond edu_queue_limit
    edus_coalesced: int
    crashes: int
    outbox_pending: bool = False  # storage.outbox may hold rows for this destination
    outbox_edus_in_flight: int = 0  # outbox rows in the unanswered transaction
    outbox_edus_sent: int = 0  # outbox rows answered (and deleted)


class DestinationQueue:
    """The queue of one destination. Entry points other than :meth:`run` are sync and
    never block; only the hub calls them."""

    def __init__(
        self, destination: str, config: SenderConfig, *, row: outbound.DestinationRow | None = None
    ) -> None:
        self.destination = destination
        self._cfg = config
        self._pdus: deque[QueuedPdu] = deque()
        self._edus: OrderedDict[Hashable, Edu] = OrderedDict()
        self._edu_keys = count()
        self._catching_up = False
        self._skipped = 0  # PDUs skipped in catch-up mode since the current catch-up read began
        self._position: int | None = None
        self._floor: int | None = None
        self._loaded = False
        self._interval_s: float | None = None
        self._retry_at: float | None = None
        self._in_flight: Transaction | None = None
        self._next_seq: int | None = None
        self._wake = trio.Event()
        self._outbox_pending = False
        self._outbox_wakes = 0  # bumped by wake_outbox: a read that raced one stays pending
        self._outbox_edus_sent = 0
        self.started = False  # set by the hub when it has started this queue's task
        self._txns_sent = self._txns_failed = self._txns_dropped = 0
        self._pdus_sent = self._edus_sent = self._pdu_errors = 0
        self._pdus_dropped = self._pdus_skipped = self._edus_dropped = self._edus_coalesced = 0
        self.crashes = 0
        if row is not None:
            self._apply_row(row)

    # ------------------------------------------------------------ sync entry points

    def enqueue_pdu(self, item: QueuedPdu) -> None:
        if self._position is None and (self._floor is None or item.stream_ordering - 1 < self._floor):
            self._floor = item.stream_ordering - 1
        if self._catching_up:
            self._skipped += 1
            self._pdus_skipped += 1
        elif len(self._pdus) >= self._cfg.queue_limit:
            self._pdus_dropped += len(self._pdus) + 1
            log.warning(
                "outbound queue to %s over %d PDUs: dropped them, catching up from storage",
                self.destination,
                self._cfg.queue_limit,
            )
            self._pdus.clear()
            self.start_catch_up()
            self._skipped += 1
        else:
            self._pdus.append(item)
        self._wake.set()

    def enqueue_edu(self, edu: Edu, key: Hashable | None = None) -> None:
        slot: Hashable = ("key", edu.edu_type, key) if key is not None else ("seq", next(self._edu_keys))
        if self._edus.pop(slot, None) is not None:
            self._edus_coalesced += 1
        self._edus[slot] = edu
        while len(self._edus) > self._cfg.edu_queue_limit:
            self._edus.popitem(last=False)
            self._edus_dropped += 1
        self._wake.set()

    def wake_outbox(self) -> None:
        """``storage.outbox`` has (new) rows for this destination: send them."""
        self._outbox_pending = True
        self._outbox_wakes += 1
        self._wake.set()

    def start_catch_up(self) -> None:
        """Send from storage instead of memory until caught up (startup, overflow, crash)."""
        self._pdus_dropped += len(self._pdus)
        self._pdus.clear()
        self._catching_up = True
        self._wake.set()

    def wake_now(self) -> None:
        """The peer is up (it contacted us): forget the backoff and try now."""
        self._interval_s = None
        self._retry_at = None
        self._wake.set()

    def statistics(self) -> DestinationStatistics:
        return DestinationStatistics(
            destination=self.destination,
            pending_pdus=len(self._pdus),
            pending_edus=len(self._edus),
            in_flight=self._in_flight is not None,
            in_flight_attempts=self._in_flight.attempts if self._in_flight is not None else 0,
            catching_up=self._catching_up,
            backing_off=self.backing_off,
            retry_interval_s=self._interval_s,
            retry_in_s=(self._retry_at - trio.current_time()) if self.backing_off else None,  # type: ignore[operator]
            position=self._position,
            txns_sent=self._txns_sent,
            txns_failed=self._txns_failed,
            txns_dropped=self._txns_dropped,
            pdus_sent=self._pdus_sent,
            edus_sent=self._edus_sent,
            pdu_errors=self._pdu_errors,
            pdus_dropped=self._pdus_dropped,
            pdus_skipped=self._pdus_skipped,
            edus_dropped=self._edus_dropped,
            edus_coalesced=self._edus_coalesced,
            crashes=self.crashes,
            outbox_pending=self._outbox_pending,
            outbox_edus_in_flight=len(self._in_flight.outbox_ids) if self._in_flight is not None else 0,
            outbox_edus_sent=self._outbox_edus_sent,
        )

    @property
    def backing_off(self) -> bool:
        return self._retry_at is not None and trio.current_time() < self._retry_at

    def note_crash(self) -> float:
        """The hub caught an exception from :meth:`run`: count it, fall back to storage
        (memory may be inconsistent) and back off. Returns the delay before restarting."""
        self.crashes += 1
        self._outbox_pending = True
        if self._position is not None or self._floor is not None:
            self.start_catch_up()
        return self._back_off()

    # -------------------------------------------------------------------- the task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._loaded:
            row = await self._cfg.db.read(outbound.get_destination, self.destination)
            if row is not None:
                self._apply_row(row)
            self._loaded = True
        task_status.started()
        while True:
            await self._wait_until_ready()
            txn = self._in_flight
            if txn is None:
                txn = await self._build()
                if txn is None:
                    continue
                self._in_flight = txn
            await self._attempt(txn)

    # ------------------------------------------------------------------ internals

    def _apply_row(self, row: outbound.DestinationRow) -> None:
        self._loaded = True
        if row.last_successful_stream_ordering is not None:
            self._position = max(self._position or 0, row.last_successful_stream_ordering)
        if row.retry_interval_ms and row.retry_last_ts is not None and self._interval_s is None:
            self._interval_s = row.retry_interval_ms / 1000
            remaining_ms = row.retry_last_ts + row.retry_interval_ms - self._cfg.clock.time_ms()
            if remaining_ms > 0:
                self._retry_at = trio.current_time() + remaining_ms / 1000

    def _has_work(self) -> bool:
        return (
            self._in_flight is not None
            or self._catching_up
            or self._outbox_pending
            or bool(self._pdus)
            or bool(self._edus)
        )

    async def _sleep_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._wake.wait()
        self._wake = trio.Event()

    async def _wait_until_ready(self) -> None:
        while True:
            if self._retry_at is not None and trio.current_time() < self._retry_at:
                await self._sleep_until(self._retry_at)
            elif self._has_work():
                return
            else:
                await self._sleep_until(math.inf)

    async def _build(self) -> Transaction | None:
        cfg = self._cfg
        if self._next_seq is None:
            seq, row = await cfg.db.write(_reserve, self.destination, cfg.clock.time_ms(), self._floor)
            self._next_seq = seq
            if row.last_successful_stream_ordering is not None:
                self._position = max(self._position or 0, row.last_successful_stream_ordering)
        pdus: list[tuple[int, Mapping[str, Any]]] = []
        catch_up = self._catching_up
        if catch_up:
            after = self._position if self._position is not None else self._floor
            if after is None:  # never reached, nothing queued: nothing to catch up on
                self._catching_up = False
                return None
            self._skipped = 0
            found = await cfg.db.read(
                _catch_up_events, self.destination, cfg.server_name, after, cfg.max_pdus_per_txn
            )
            if not self._catching_up:  # a crash handler or a wake changed the mode meanwhile
                return None
            if found:
                pdus = [(e.stream_ordering, e.json) for e in found]
            elif self._skipped:
                return None  # a PDU was committed while we read: read again
            else:
                self._catching_up = False
                log.info("outbound queue to %s caught up at %s", self.destination, after)
        else:
            while self._pdus and len(pdus) < cfg.max_pdus_per_txn:
                item = self._pdus.popleft()
                pdus.append((item.stream_ordering, item.pdu))
        edus: list[Edu] = []
        outbox_ids: list[int] = []
        if self._outbox_pending:
            limit = cfg.max_edus_per_txn - min(len(self._edus), cfg.max_edus_per_txn // 2)
            wakes = self._outbox_wakes
            rows = await cfg.db.read(_outbox_edus, self.destination, limit)
            if len(rows) < limit and wakes == self._outbox_wakes:
                self._outbox_pending = False  # read them all, and nothing was added since
            for row in rows:
                outbox_ids.append(row.outbox_id)
                edus.append(Edu(row.edu_type, row.content))
        while self._edus and len(edus) < cfg.max_edus_per_txn:
            edus.append(self._edus.popitem(last=False)[1])
        if not pdus and not edus:
            return None
        seq, self._next_seq = self._next_seq, None
        body = {
            "origin": cfg.server_name,
            "origin_server_ts": cfg.clock.time_ms(),
            "pdus": [pdu for _, pdu in pdus],
            "edus": [{"edu_type": e.edu_type, "content": e.content} for e in edus],
        }
        return Transaction(
            txn_id=str(seq),
            body=body,
            max_stream_ordering=max((so for so, _ in pdus), default=None),
            pdu_count=len(pdus),
            edu_count=len(edus),
            catch_up=catch_up,
            outbox_ids=tuple(outbox_ids),
        )

    async def _attempt(self, txn: Transaction) -> None:
        cfg = self._cfg
        txn = self._in_flight = _with_attempt(txn)
        failure: str | None = None
        dropped: str | None = None
        response: Any = None
        timeout = cfg.request_timeout_s if cfg.request_timeout_s is not None else math.inf
        try:
            with trio.move_on_after(timeout) as scope:
                response = await cfg.client.put_json(self.destination, SEND_PATH + txn.txn_id, txn.body)
            if scope.cancelled_caught:
                failure = f"timed out after {timeout}s"
        except FederationUnreachable as exc:
            failure = f"unreachable: {exc}"
        except FederationError as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int) and 200 <= status < 300:
                pass  # answered 2xx, but not with JSON: processed; nothing to learn per PDU
            elif isinstance(status, int) and 400 <= status < 500 and status != 429:
                dropped = f"{status} {getattr(exc, 'errcode', None)}"
            else:
                failure = f"{status} {getattr(exc, 'errcode', None)}"
        if failure is not None:
            self._txns_failed += 1
            interval = self._back_off()
            log.info(
                "txn %s to %s failed (%s, attempt %d); retrying in %.1fs",
                txn.txn_id,
                self.destination,
                failure,
                txn.attempts,
                interval,
            )
            await cfg.db.write(_record_failure, self.destination, cfg.clock.time_ms(), int(interval * 1000))
            return
        if dropped is not None:
            self._txns_dropped += 1
            log.warning(
                "txn %s to %s refused (%s): dropped %d PDUs and %d EDUs",
                txn.txn_id,
                self.destination,
                dropped,
                txn.pdu_count,
                txn.edu_count,
            )
        else:
            self._txns_sent += 1
            self._pdus_sent += txn.pdu_count
            self._edus_sent += txn.edu_count
            self._outbox_edus_sent += len(txn.outbox_ids)
            self._log_pdu_errors(txn, response)
        self._next_seq = await cfg.db.write(
            _record_success, self.destination, txn.max_stream_ordering, txn.outbox_ids
        )
        if txn.max_stream_ordering is not None:
            self._position = max(self._position or 0, txn.max_stream_ordering)
        self._in_flight = None
        self._interval_s = None
        self._retry_at = None

    def _back_off(self) -> float:
        cfg = self._cfg
        if self._interval_s is None:
            interval = cfg.backoff_initial_s
        else:
            interval = min(self._interval_s * 2, cfg.backoff_max_s)
        interval = min(interval, cfg.backoff_max_s)
        self._interval_s = interval
        self._retry_at = trio.current_time() + interval
        return interval

    def _log_pdu_errors(self, txn: Transaction, response: Any) -> None:
        results = response.get("pdus") if isinstance(response, dict) else None
        if not isinstance(results, dict):
            return
        for event_id, result in results.items():
            if isinstance(result, dict) and "error" in result:
                self._pdu_errors += 1
                log.info(
                    "%s rejected %s in txn %s: %s", self.destination, event_id, txn.txn_id, result.get("error")
                )


# Repository calls with keyword-only parameters, shaped for db.read/db.write(fn, *args).


def _reserve(conn: Any, destination: str, initial_seq: int, floor: int | None) -> tuple[int, outbound.DestinationRow]:
    return outbound.reserve_txn_seq(conn, destination, initial_seq=initial_seq, position_floor=floor)


def _record_success(conn: Any, destination: str, stream_ordering: int | None, outbox_ids: tuple[int, ...] = ()) -> int | None:
    outbox.delete_edus(conn, destination, outbox_ids)  # answered: exactly the rows this txn carried
    return outbound.record_success(conn, destination, stream_ordering=stream_ordering, reserve_next=True)


def _outbox_edus(conn: Any, destination: str, limit: int) -> list[outbox.OutboxEdu]:
    return outbox.get_edus(conn, destination, limit=limit)


def _record_failure(conn: Any, destination: str, now_ms: int, interval_ms: int) -> None:
    outbound.record_failure(conn, destination, retry_last_ts=now_ms, retry_interval_ms=interval_ms)


def _catch_up_events(
    conn: Any, destination: str, server_name: str, after: int, limit: int
) -> list[outbound.CatchUpEvent]:
    return outbound.get_catch_up_events(conn, destination, server_name=server_name, after=after, limit=limit)


def _with_attempt(txn: Transaction) -> Transaction:
    return replace(txn, attempts=txn.attempts + 1)
