"""TypingService: who is typing in which room, with timeouts; in memory only.

Theory of operation
-------------------
Typing notifications are ephemeral (client-server-api, "Typing Notifications"):
nothing is persisted. The service keeps ``room_id -> {user_id: expires_at}`` (trio
time) and a ``serial`` that grows with every change; each room remembers the
serial of its last change. ``/sync`` sends a room's ``m.typing`` event when that
serial is above the one in the client's ``since`` token, with the full current
list of typing users, as the spec's event carries the complete set.

``run`` is a task (started by the composition root with ``nursery.start``) that
sleeps until the earliest timeout and expires entries; ``set_typing`` wakes it
when a sooner deadline arrives. Every change calls ``notify(room_id)`` so long
polls wake. A serial from before a restart is larger than the new process's: sync
treats ``since > serial`` as "everything changed" (``changed_since``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["TypingService", "TypingStatistics"]


@dataclass(frozen=True, slots=True)
class TypingStatistics:
    rooms: int
    typing_users: int
    serial: int


class TypingService:
    def __init__(self, notify: Callable[[str], None], *, max_timeout_ms: int = 120_000) -> None:
        self._notify = notify
        self._max_timeout_ms = max_timeout_ms
        self._rooms: dict[str, dict[str, float]] = {}
        self._room_serial: dict[str, int] = {}
        self.serial = 0
        self._wake = trio.Event()

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None = None) -> None:
        users = self._rooms.setdefault(room_id, {})
        was_typing = user_id in users
        if typing:
            timeout = min(timeout_ms or 30_000, self._max_timeout_ms)
            users[user_id] = trio.current_time() + timeout / 1000
            self._wake.set()
            if was_typing:
                return  # a refresh of the deadline is not a change clients see
        else:
            if not was_typing:
                if not users:
                    del self._rooms[room_id]
                return
            del users[user_id]
            if not users:
                del self._rooms[room_id]
        self._changed(room_id)

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._rooms.get(room_id, ()))

    def changed_since(self, room_id: str, serial: int) -> bool:
        last = self._room_serial.get(room_id)
        return last is not None and (last > serial or serial > self.serial)

    def statistics(self) -> TypingStatistics:
        return TypingStatistics(
            rooms=len(self._rooms), typing_users=sum(len(u) for u in self._rooms.values()), serial=self.serial
        )

    def _changed(self, room_id: str) -> None:
        self.serial += 1
        self._room_serial[room_id] = self.serial
        self._notify(room_id)

    def _expire(self, now: float) -> float:
        """Drop expired entries; return the next deadline (inf if none)."""
        soonest = math.inf
        for room_id in list(self._rooms):
            users = self._rooms[room_id]
            expired = [u for u, at in users.items() if at <= now]
            for user_id in expired:
                del users[user_id]
            if not users:
                del self._rooms[room_id]
            if expired:
                self._changed(room_id)
            for at in users.values():
                soonest = min(soonest, at)
        return soonest

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            deadline = self._expire(trio.current_time())
            self._wake = trio.Event()
            with trio.move_on_at(deadline):
                await self._wake.wait()
