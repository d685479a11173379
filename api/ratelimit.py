"""Rate limiting: token buckets per (action, key), answering 429 ``M_LIMIT_EXCEEDED``.

Theory of operation
-------------------
Each limited action (``message`` per user, ``login`` per IP, ...) has a bucket per
key holding up to ``burst`` tokens, refilled at ``per_second``. A request takes one
token; an empty bucket refuses with ``retry_after_ms`` = the time until the next
token (client-server-api, "Rate limiting": 429 with ``M_LIMIT_EXCEEDED`` and
``retry_after_ms``, plus the ``Retry-After`` header of spec v1.10+).

Buckets live in memory (one process) and are pruned when full again, so idle keys
cost nothing. Time comes from ``trio.current_time`` — monotonic, and jumpable by
``autojump_clock`` in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio

from api.errors import MatrixError

__all__ = ["Limit", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Limit:
    per_second: float
    burst: int


class RateLimiter:
    def __init__(self, limits: dict[str, Limit], *, enabled: bool = True) -> None:
        self._limits = limits
        self._enabled = enabled
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)

    def check(self, action: str, key: str, *, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``action``'s bucket for ``key`` or raise 429."""
        if not self._enabled:
            return
        limit = self._limits.get(action)
        if limit is None:
            return
        now = trio.current_time()
        tokens, at = self._buckets.get((action, key), (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - at) * limit.per_second)
        if tokens < cost:
            wait_ms = max(1, math.ceil((cost - tokens) / limit.per_second * 1000))
            raise MatrixError(
                "M_LIMIT_EXCEEDED",
                429,
                f"too many requests ({action}); retry in {wait_ms} ms",
                extra={"retry_after_ms": wait_ms},
                headers={"Retry-After": str(math.ceil(wait_ms / 1000))},
            )
        tokens -= cost
        if len(self._buckets) > 100_000:
            self._prune(now)
        self._buckets[(action, key)] = (tokens, now)

    def _prune(self, now: float) -> None:
        for (action, key), (tokens, at) in list(self._buckets.items()):
            limit = self._limits[action]
            if tokens + (now - at) * limit.per_second >= limit.burst:
                del self._buckets[(action, key)]
