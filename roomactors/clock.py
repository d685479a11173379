"""Wall-clock time, injected.

Theory of operation
-------------------
Matrix puts wall-clock milliseconds into events (``origin_server_ts``) and the
server stamps a few records with them. Code that needs that time receives a
:class:`Clock` explicitly (house rule: explicit, named constructor deps), so tests
can substitute :class:`ManualClock` and get reproducible events.

Durations (idle timeouts, restart backoff, crash windows) are *not* wall-clock
time: they use trio's clock (``trio.current_time()``, ``trio.sleep``), which
tests drive with ``autojump_clock``. Only "what time is it for a human" goes
through :class:`Clock`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    """A source of wall-clock time."""

    def time_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``)."""

    __slots__ = ()

    def time_ms(self) -> int:
        return int(time.time() * 1000)


class ManualClock:
    """A clock for tests: starts at ``start_ms`` and moves only when told.

    With ``step_ms`` every reading advances the clock by that much afterwards, so
    consecutive events get distinct, increasing ``origin_server_ts`` values.
    """

    __slots__ = ("_now", "_step")

    def __init__(self, start_ms: int = 1_700_000_000_000, *, step_ms: int = 0) -> None:
        if step_ms < 0:
            raise ValueError(f"step_ms must not be negative, got {step_ms}")
        self._now = start_ms
        self._step = step_ms

    def time_ms(self) -> int:
        now = self._now
        self._now += self._step
        return now

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a clock cannot go back ({ms} ms)")
        self._now += ms
