"""Notifier: wakes /sync long-polls when something they care about changes.

Theory of operation
-------------------
Every producer of client-visible change calls :meth:`Notifier.notify` with the
*keys* it touched — a room ID (new event, typing, receipt) and/or a user ID
(account data, an invite or other membership change, push rules) — after the
change is durable (house rule 3: commit, then apply, then notify). Each call
bumps :attr:`Notifier.position`, an in-memory sequence that is *not* a stream
token: it only orders wake-ups within this process.

A waiter follows the register-then-check-then-wait pattern, so a change that lands
while it is reading the database is never missed::

    with notifier.listen(keys) as listener:      # 1. register interest
        result = await compute_sync(since)        # 2. read committed data
        if empty(result):
            await listener.wait()                 # 3. sleep until a key is notified
            # (already returns at once if step 2 raced with a notify)

``listen`` costs one ``trio.Event`` and one set entry per key; ``notify`` is O(number
of listeners on the touched keys) and never blocks, so room actors may call it.
There is no polling loop anywhere: an idle long-poll holds one sleeping task.

Invariants: a listener is woken at most once (its event is set once); listeners
are removed when their ``with`` block exits, also on cancellation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

__all__ = ["Listener", "Notifier", "NotifierStatistics"]


class Listener:
    """One waiter's registration: woken by the first notify on any of its keys."""

    __slots__ = ("keys", "_event")

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys
        self._event = trio.Event()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def _wake(self) -> None:
        self._event.set()


@dataclass(frozen=True, slots=True)
class NotifierStatistics:
    position: int
    listeners: int
    keys: int


class Notifier:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Listener]] = {}
        self._listeners = 0
        self.position = 0

    @contextmanager
    def listen(self, keys: Iterable[str]) -> Iterator[Listener]:
        listener = Listener(frozenset(keys))
        for key in listener.keys:
            self._by_key.setdefault(key, set()).add(listener)
        self._listeners += 1
        try:
            yield listener
        finally:
            self._listeners -= 1
            for key in listener.keys:
                waiting = self._by_key.get(key)
                if waiting is not None:
                    waiting.discard(listener)
                    if not waiting:
                        del self._by_key[key]

    def notify(self, *keys: str) -> None:
        """Wake every listener registered on any of ``keys``. Never blocks."""
        self.position += 1
        for key in keys:
            waiting = self._by_key.get(key)
            if waiting:
                for listener in waiting:
                    listener._wake()

    def statistics(self) -> NotifierStatistics:
        return NotifierStatistics(position=self.position, listeners=self._listeners, keys=len(self._by_key))
