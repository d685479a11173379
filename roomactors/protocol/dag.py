"""The room DAG's bookkeeping: forward extremities, prev-event selection, depth and
the topological order of a batch of PDUs (server-server API "PDUs", "Depth",
"Soft failure"; room versions' ``prev_events`` limits).

Theory of operation
-------------------
A room's events form a DAG through ``prev_events``; the *forward extremities* are
its leaves, the events nothing references yet. A server's next event lists them as
its ``prev_events``, which is how forks merge::

         A            extremities after A:        {A}
        / \\           after B (prev A):           {B}
       B   C          after C (prev A, a fork):   {B, C}
        \\ /           after D (prev B, C):        {D}
         D

:func:`update_forward_extremities` is that step: the new event replaces the
extremities it cites (its other prevs were no extremity: an older event, or one
that is rejected or soft-failed and so never became one). An event that a known
event already cites (it arrived after its child) is no leaf and does not join.
Rejected, soft-failed and outlier events never reach this function: the caller
keeps the old set for them (spec "Rejection", "Soft failure").

:func:`select_prev_events` picks the ``prev_events`` of a new local event: the
extremities with the greatest depth first (ties by event ID, so the choice is
deterministic), at most :data:`MAX_PREV_EVENTS`. The PDU schemas allow 20; we
cite fewer so our events stay small and a room with many forks merges over a few
events instead of one huge one.

:func:`next_depth` is "one more than the maximum depth of the prev events" (the
create event, with no prevs, has depth 1), clamped to the largest depth the room
version's PDU format allows.

:func:`topo_sort` orders a batch of received PDUs (one federation transaction, or
the staged rows of one room) so every event comes after the events of the batch it
cites in ``prev_events``; among events that are free to go, the one received first
goes first (Kahn's algorithm over a heap of arrival indices). Events citing events
outside the batch are unconstrained by them. A cycle (impossible with hash event
IDs, possible with v1/v2's server-chosen IDs) cannot be ordered; its events follow
in arrival order and will find their prevs missing.

Invariants: pure and synchronous; inputs are never mutated; every function returns
a new value.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from .pdu import MAX_DEPTH

__all__ = [
    "MAX_PREV_EVENTS",
    "update_forward_extremities",
    "select_prev_events",
    "next_depth",
    "topo_sort",
]

#: How many forward extremities a locally created event cites at most. The PDU
#: schemas allow 20 ``prev_events``; Synapse cites 10 as well.
MAX_PREV_EVENTS = 10

#: v6+ (components/depth_v6): depth is a canonical-JSON integer, at most 2**53 - 1.
_CANONICAL_MAX_DEPTH = 2**53 - 1

T = TypeVar("T")


def update_forward_extremities(
    old: frozenset[str],
    event_id: str,
    prev_events: Iterable[str],
    *,
    referenced: bool = False,
) -> frozenset[str]:
    """The forward extremities after accepting ``event_id`` (citing ``prev_events``)
    into a DAG whose extremities were ``old``.

    ``referenced`` says a known event already cites ``event_id``: it is then no leaf,
    so it is not added (its prevs still stop being extremities).
    """
    new = old.difference(prev_events)
    if not referenced:
        new = new | {event_id}
    return frozenset(new)


def select_prev_events(
    extremities: Collection[str],
    depths: Mapping[str, int],
    *,
    limit: int = MAX_PREV_EVENTS,
) -> tuple[str, ...]:
    """The ``prev_events`` for a new local event: at most ``limit`` of ``extremities``,
    deepest first, ties broken by event ID. ``depths`` must cover every extremity."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ordered = sorted(extremities, key=lambda eid: (-depths[eid], eid))
    return tuple(ordered[:limit])


def next_depth(prev_depths: Iterable[int], *, strict_canonical_json: bool = True) -> int:
    """``depth`` of an event whose prev events have ``prev_depths``: their maximum plus
    one, or 1 for the create event. Clamped to the format's maximum (2**53 - 1 where
    ``strict_canonical_json``, v6+; 2**63 - 1 before)."""
    ceiling = _CANONICAL_MAX_DEPTH if strict_canonical_json else MAX_DEPTH
    return min(max(prev_depths, default=0) + 1, ceiling)


def topo_sort(
    items: Sequence[T],
    key: Callable[[T], tuple[str, Iterable[str]]],
) -> list[T]:
    """``items`` in an order where each comes after the items of the batch it cites.

    ``key(item)`` returns ``(event_id, prev_events)`` — for a parsed
    :class:`~roomactors.protocol.pdu.Pdu`, ``lambda p: (p.event_id, p.prev_events)``.
    Ties (and anything a cycle leaves over) go in arrival order. A repeated event ID
    keeps its first occurrence and drops the rest.
    """
    first: dict[str, int] = {}
    prevs: list[tuple[str, ...]] = []
    kept: list[int] = []
    for index, item in enumerate(items):
        event_id, prev_events = key(item)
        prev_tuple = tuple(prev_events)
        prevs.append(prev_tuple)
        if event_id in first:
            continue
        first[event_id] = index
        kept.append(index)

    waiting_on: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for index in kept:
        parents = {first[p] for p in prevs[index] if p in first and first[p] != index}
        waiting_on[index] = len(parents)
        for parent in parents:
            children.setdefault(parent, []).append(index)

    ready = [index for index in kept if waiting_on[index] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for child in children.get(index, ()):
            waiting_on[child] -= 1
            if waiting_on[child] == 0:
                heapq.heappush(ready, child)
    if len(order) < len(kept):
        placed = set(order)
        order.extend(index for index in kept if index not in placed)
    return [items[index] for index in order]
