"""RoomRegistry: one supervised actor task per loaded room, spawned on demand.

Theory of operation
-------------------
The registry owns a nursery (``run``) that parents every room actor, and a table
``room_id -> _Room``: the room's bounded mailbox (a trio memory channel) plus its
counters. Nothing else starts room tasks (house rule 5)::

    RoomRegistry.run ─ nursery ─┬─ _supervise(!a) ── RoomActor(!a).run(inbox) ─┐ crash:
                                │                     ▲ restart after backoff ──┘ log, count
                                ├─ _supervise(!b) ── RoomActor(!b).run(inbox)
                                └─ …

* **Get-or-spawn.** :meth:`get` looks the room up and, if absent, creates the
  mailbox, records the entry and starts its supervisor (``start_soon``) — with no
  checkpoint between the lookup and the insert, so concurrent callers can never
  spawn two actors for one room. The handle is usable at once: messages wait in
  the mailbox while the actor loads the room from SQLite.
* **Mailbox.** ``trio.open_memory_channel(mailbox_size)``: always bounded.
  :meth:`RoomHandle.send_nowait` raises :class:`MailboxFull` (a
  ``trio.WouldBlock``) when it is full, which the API answers with 429. Depth,
  peak and counts are in :meth:`statistics`.
* **Supervision.** ``_supervise`` runs the actor and catches ``Exception`` (never
  ``BaseException``) — the one place where catching is the policy. A crash is
  logged with the room ID and counted; the actor restarts after
  ``restart_backoff_initial_s * 2**(n-1)`` (capped at ``restart_backoff_max_s``),
  ``n`` being the crashes within the last ``quarantine_window_s``. The new
  incarnation reloads the room from SQLite (the crashed one's memory is gone) and
  drains the same mailbox, so queued requests survive; only the request being
  handled fails, and its asker sees ``EndOfChannel`` (:class:`ActorCrashed`).
* **Quarantine.** ``quarantine_crashes`` crashes within ``quarantine_window_s``
  stop the room for good: queued requests fail, :meth:`get` raises
  :class:`RoomQuarantined` (API: 503 ``M_UNKNOWN``) until an operator calls
  :meth:`clear_quarantine`.
* **Idle stop (hibernation), race-free.** An actor whose mailbox stays empty for
  ``idle_timeout_s`` returns from ``run`` — but only after checking that its inbox
  is empty, with no checkpoint between that check and the return. The supervisor
  then drops the entry and closes the mailbox synchronously, so no message can be
  queued into a mailbox nobody will read: a stale :class:`RoomHandle` raises
  :class:`RoomStopped`, and :meth:`ask` retries once through :meth:`get`, which
  spawns a fresh actor. A hibernated room costs no memory here at all.
* **Memory budget.** When a spawn makes more than ``max_loaded_rooms`` rooms
  loaded, the least recently used *idle* rooms (loaded, empty mailbox, actor
  waiting in ``receive``) are sent :class:`~roomactors.room.messages.Stop`, which
  the actor obeys only if nothing else is queued. The budget is soft: with no idle
  room to stop, the spawn still goes ahead.
* **Shutdown.** :meth:`close` closes every mailbox; each actor finishes the
  messages already queued and returns, and ``run`` returns once all have.

Invariants: a room ID has at most one entry and at most one running actor; an
entry's mailbox is closed exactly when the entry leaves the table; every request
put into a mailbox is either answered or has its ``reply`` closed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from roomactors.clock import Clock
from roomactors.protocol.ids import RoomId
from roomactors.room.messages import Stop

__all__ = [
    "RegistrySettings",
    "RoomActorLike",
    "RoomRegistry",
    "RoomHandle",
    "RoomStatistics",
    "RegistryStatistics",
    "Quarantine",
    "MailboxFull",
    "RoomStopped",
    "RoomQuarantined",
    "ActorCrashed",
    "RegistryClosed",
]

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrySettings:
    """The ``[actors]`` section of ``settings.toml`` (``api/settings.py`` builds it;
    the defaults here are the documented ones)."""

    #: Bounded mailbox of each room actor; a full mailbox answers 429 M_LIMIT_EXCEEDED.
    mailbox_size: int = 64
    #: A room with no messages for this long stops; it reloads on the next message.
    idle_timeout_s: float = 300.0
    #: First restart delay after a crash; doubles per recent crash …
    restart_backoff_initial_s: float = 0.5
    #: … up to this.
    restart_backoff_max_s: float = 30.0
    #: This many crashes within ``quarantine_window_s`` quarantine the room (503).
    quarantine_crashes: int = 5
    quarantine_window_s: float = 300.0
    #: Soft cap on loaded rooms; beyond it the least recently used idle rooms stop.
    max_loaded_rooms: int = 10_000
    #: How long ``RoomRegistry.ask`` waits for a room's answer.
    request_timeout_s: float = 30.0


class RoomActorLike(Protocol):
    """What the registry runs: ``RoomActor`` or, in tests, anything shaped like it.

    ``run`` must call ``task_status.started()`` once loaded, must never close
    ``inbox`` (the registry owns it), and may return normally only when ``inbox``
    is empty, with no checkpoint between that check and the return.
    """

    async def run(self, inbox: trio.MemoryReceiveChannel[Any], *, task_status: Any = ...) -> None: ...


# --------------------------------------------------------------------------------------
# Errors (exceptional control flow for the caller, like trio.WouldBlock)
# --------------------------------------------------------------------------------------


class MailboxFull(trio.WouldBlock):
    """The room's bounded mailbox is full (API: 429 M_LIMIT_EXCEEDED)."""

    def __init__(self, room_id: RoomId) -> None:
        super().__init__(f"the mailbox of room {room_id} is full")
        self.room_id = room_id


class RoomStopped(Exception):
    """The handle's actor has stopped (idle or memory budget); ``get`` a new handle."""

    def __init__(self, room_id: RoomId) -> None:
        super().__init__(f"room {room_id} has stopped; get a fresh handle")
        self.room_id = room_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Quarantine:
    room_id: RoomId
    #: Wall-clock time the room was quarantined (``Clock.time_ms``).
    since_ms: int
    #: Crashes within the window that triggered it.
    crashes: int


class RoomQuarantined(Exception):
    """The room crashed too often and is stopped until an operator clears it (API: 503)."""

    errcode = "M_UNKNOWN"

    def __init__(self, quarantine: Quarantine) -> None:
        super().__init__(
            f"room {quarantine.room_id} is quarantined after {quarantine.crashes} crashes"
        )
        self.quarantine = quarantine
        self.room_id = quarantine.room_id


class ActorCrashed(Exception):
    """The actor crashed while handling this request (it is being restarted)."""

    def __init__(self, room_id: RoomId) -> None:
        super().__init__(f"the actor of room {room_id} crashed handling the request")
        self.room_id = room_id


class RegistryClosed(Exception):
    """The registry is not running (not started yet, or shutting down)."""


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomStatistics:
    #: Messages waiting in the mailbox now, and the most there ever were.
    mailbox_depth: int
    mailbox_peak: int
    #: Messages accepted into the mailbox, and refused because it was full.
    messages: int
    mailbox_full: int
    #: Type name of the last message accepted, if any.
    last_message: str | None
    #: Crashes of this room's actor since it was loaded (restarts included).
    crashes: int
    #: True while an actor is running and has loaded the room (False while it
    #: loads, or waits out a restart backoff).
    loaded: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryStatistics:
    loaded_rooms: int
    quarantined: frozenset[RoomId]
    #: Crashes of all actors since the registry started.
    crashes: int
    rooms: Mapping[RoomId, RoomStatistics]


# --------------------------------------------------------------------------------------
# Entries and handles
# --------------------------------------------------------------------------------------


class _Room:
    """One table entry: a room's mailbox and counters, spanning actor restarts."""

    __slots__ = (
        "room_id", "send", "receive", "handle", "messages", "mailbox_full", "peak",
        "last_message", "crashes", "loaded", "stopping", "dropped", "backoff",
    )

    def __init__(self, registry: RoomRegistry, room_id: RoomId, mailbox_size: int) -> None:
        self.room_id = room_id
        self.send, self.receive = trio.open_memory_channel[Any](mailbox_size)
        self.handle = RoomHandle(registry, self)
        self.messages = 0
        self.mailbox_full = 0
        self.peak = 0
        self.last_message: str | None = None
        self.crashes = 0
        self.loaded = False
        self.stopping = False
        self.dropped = False
        self.backoff: trio.CancelScope | None = None

    def is_idle(self) -> bool:
        stats = self.send.statistics()
        return self.loaded and stats.current_buffer_used == 0 and stats.tasks_waiting_receive > 0

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(
            mailbox_depth=self.send.statistics().current_buffer_used,
            mailbox_peak=self.peak,
            messages=self.messages,
            mailbox_full=self.mailbox_full,
            last_message=self.last_message,
            crashes=self.crashes,
            loaded=self.loaded and not self.dropped,
        )


class RoomHandle:
    """The way to talk to one room's actor. Stale once the actor stops."""

    __slots__ = ("_registry", "_room")

    def __init__(self, registry: RoomRegistry, room: _Room) -> None:
        self._registry = registry
        self._room = room

    @property
    def room_id(self) -> RoomId:
        return self._room.room_id

    def send_nowait(self, msg: Any) -> None:
        """Queue ``msg``; raises :class:`MailboxFull`, :class:`RoomStopped` or
        :class:`RoomQuarantined`, never blocks."""
        room = self._room
        if room.dropped:
            self._registry._raise_unavailable(room.room_id)
        try:
            room.send.send_nowait(msg)
        except trio.WouldBlock:
            room.mailbox_full += 1
            raise MailboxFull(room.room_id) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._registry._raise_unavailable(room.room_id)
        room.messages += 1
        room.last_message = type(msg).__name__
        room.peak = max(room.peak, room.send.statistics().current_buffer_used)
        if not isinstance(msg, Stop):
            room.stopping = False
        self._registry._touch(room)

    def statistics(self) -> RoomStatistics:
        return self._room.statistics()


class _Started:
    """The ``task_status`` handed to each actor incarnation: marks the room loaded."""

    __slots__ = ("_room",)

    def __init__(self, room: _Room) -> None:
        self._room = room

    def started(self, value: object = None) -> None:
        self._room.loaded = True


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------


class RoomRegistry:
    def __init__(
        self,
        *,
        actor_factory: Callable[[RoomId], RoomActorLike],
        settings: RegistrySettings,
        clock: Clock,
    ) -> None:
        self._actor_factory = actor_factory
        self._settings = settings
        self._clock = clock
        #: Loaded rooms, least recently used first.
        self._rooms: OrderedDict[RoomId, _Room] = OrderedDict()
        self._quarantined: dict[RoomId, Quarantine] = {}
        #: trio times of recent crashes, per room (pruned to the quarantine window).
        self._crash_times: dict[RoomId, deque[float]] = {}
        self._crashes_total = 0
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()

    @property
    def settings(self) -> RegistrySettings:
        return self._settings

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[RoomRegistry] = trio.TASK_STATUS_IGNORED) -> None:
        """Parent every room actor; returns after :meth:`close` once all have stopped."""
        if self._nursery is not None or self._closing.is_set():
            raise RuntimeError("a RoomRegistry runs once")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await self._closing.wait()
            for room in list(self._rooms.values()):
                room.send.close()
                if room.backoff is not None:
                    room.backoff.cancel()
        self._nursery = None

    def close(self) -> None:
        """Begin shutdown: no new rooms; each actor drains its mailbox and stops."""
        self._closing.set()

    # --- getting rooms ---------------------------------------------------------------

    async def get(self, room_id: RoomId) -> RoomHandle:
        """The handle of ``room_id``'s actor, spawning it if the room is not loaded.

        Raises :class:`RoomQuarantined` or :class:`RegistryClosed`.
        """
        await trio.lowlevel.checkpoint()
        # From here to the return: no checkpoint, so no second spawn can interleave.
        if self._nursery is None or self._closing.is_set():
            raise RegistryClosed("the room registry is not running")
        quarantine = self._quarantined.get(room_id)
        if quarantine is not None:
            raise RoomQuarantined(quarantine)
        room = self._rooms.get(room_id)
        if room is None:
            room = _Room(self, room_id, self._settings.mailbox_size)
            self._rooms[room_id] = room
            self._nursery.start_soon(self._supervise, room, name=f"room {room_id}")
            self._enforce_budget(spared=room)
        else:
            self._rooms.move_to_end(room_id)
        return room.handle

    async def ask(
        self,
        room_id: RoomId,
        make_msg: Callable[[trio.MemorySendChannel[R]], Any],
        *,
        timeout: float | None = None,
    ) -> R:
        """Send ``make_msg(reply_channel)`` to the room and wait for its answer.

        Retries once through :meth:`get` if the room stopped in between. Raises
        :class:`MailboxFull`, :class:`RoomQuarantined`, :class:`ActorCrashed`,
        :class:`RegistryClosed`, or ``trio.TooSlowError`` after ``timeout``
        (default ``request_timeout_s``). Being cancelled never cancels the actor's
        work: the request still completes, and its answer is dropped.
        """
        limit = self._settings.request_timeout_s if timeout is None else timeout
        send, receive = trio.open_memory_channel[R](1)
        with receive, trio.fail_after(limit):
            for attempt in (1, 2):
                handle = await self.get(room_id)
                try:
                    handle.send_nowait(make_msg(send))
                except RoomStopped:
                    if attempt == 2:
                        raise
                    continue
                break
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                self._raise_unavailable(room_id, crashed=True)

    def is_quarantined(self, room_id: RoomId) -> bool:
        return room_id in self._quarantined

    def clear_quarantine(self, room_id: RoomId) -> bool:
        """Let the room load again; returns whether it was quarantined."""
        self._crash_times.pop(room_id, None)
        return self._quarantined.pop(room_id, None) is not None

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            loaded_rooms=len(self._rooms),
            quarantined=frozenset(self._quarantined),
            crashes=self._crashes_total,
            rooms={room_id: room.statistics() for room_id, room in self._rooms.items()},
        )

    # --- supervision -----------------------------------------------------------------

    async def _supervise(self, room: _Room) -> None:
        try:
            while True:
                try:
                    actor = self._actor_factory(room.room_id)
                    await actor.run(room.receive, task_status=_Started(room))
                except Exception:
                    room.loaded = False
                    delay = self._record_crash(room)
                    if delay is None:
                        return
                    with trio.CancelScope() as room.backoff:
                        if self._closing.is_set():
                            room.backoff.cancel()
                        await trio.sleep(delay)
                    room.backoff = None
                    if self._closing.is_set():
                        return
                    continue
                return  # idle, Stop, or mailbox closed: a normal stop
        finally:
            self._drop(room)

    def _record_crash(self, room: _Room) -> float | None:
        """Log and count a crash; the restart delay, or None if now quarantined."""
        s = self._settings
        now = trio.current_time()
        times = self._crash_times.setdefault(room.room_id, deque())
        times.append(now)
        while times and times[0] < now - s.quarantine_window_s:
            times.popleft()
        room.crashes += 1
        self._crashes_total += 1
        recent = len(times)
        if recent >= s.quarantine_crashes:
            log.exception(
                "room %s: actor crashed (%d crashes within %ss); quarantined until cleared",
                room.room_id, recent, s.quarantine_window_s,
            )
            self._quarantined[room.room_id] = Quarantine(
                room_id=room.room_id, since_ms=self._clock.time_ms(), crashes=recent
            )
            return None
        delay = min(s.restart_backoff_initial_s * 2 ** (recent - 1), s.restart_backoff_max_s)
        log.exception(
            "room %s: actor crashed (%d within %ss); restarting in %.3gs",
            room.room_id, recent, s.quarantine_window_s, delay,
        )
        return delay

    def _drop(self, room: _Room) -> None:
        """Remove the entry and close its mailbox; fail whatever is still queued.
        Synchronous, so nothing can slip into the mailbox in between."""
        room.dropped = True
        room.loaded = False
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
        room.send.close()
        while True:
            try:
                msg = room.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            reply = getattr(msg, "reply", None)
            if reply is not None:
                reply.close()
        room.receive.close()

    def _raise_unavailable(self, room_id: RoomId, *, crashed: bool = False) -> Any:
        quarantine = self._quarantined.get(room_id)
        if quarantine is not None:
            raise RoomQuarantined(quarantine)
        if self._closing.is_set():
            raise RegistryClosed("the room registry is shutting down")
        if crashed:
            raise ActorCrashed(room_id)
        raise RoomStopped(room_id)

    # --- memory budget ---------------------------------------------------------------

    def _touch(self, room: _Room) -> None:
        if self._rooms.get(room.room_id) is room:
            self._rooms.move_to_end(room.room_id)

    def _enforce_budget(self, *, spared: _Room) -> None:
        stopping = sum(1 for room in self._rooms.values() if room.stopping)
        excess = len(self._rooms) - stopping - self._settings.max_loaded_rooms
        if excess <= 0:
            return
        for room in list(self._rooms.values()):  # least recently used first
            if excess <= 0:
                break
            if room is spared or room.stopping or not room.is_idle():
                continue
            room.send.send_nowait(Stop())
            room.stopping = True
            excess -= 1
