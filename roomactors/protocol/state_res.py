"""State resolution for room versions 1 (v1), 2–11 (v2) and 12 (v2.1).

Theory of operation
-------------------
A room's state at an event with several ``prev_events`` is the *resolution* of
the states after each of them. :func:`resolve_state` is that function: it takes
the room version, the state maps to merge (``(type, state_key) -> event_id``) and
a lookup of events (``event_id -> PDU dict``) holding at least every event in the
maps and their auth chains, and returns the resolved map. It is pure and
synchronous: the room actor owns the events in memory and, for a big resolution,
runs this in a worker thread.

Which algorithm runs is ``get_rules(room_version).state_res``:

* ``V1`` (rooms/v1 "State resolution"): keys with differing event IDs conflict;
  ``m.room.power_levels``, then ``m.room.join_rules``, then each ``m.room.member``
  key are replayed in (ascending ``depth``, descending ``sha1(event_id)``) order,
  stopping at the first event the auth rules refuse; every other conflicted key
  takes the highest-``depth`` / lowest-``sha1`` event that passes auth.
* ``V2`` (fragments/v2-state-res) and ``V2_1`` (rooms/v12 "State resolution"),
  the five numbered steps of the spec's *Algorithm*, on the definitions above it,
  read as the deployed implementations read them (see *Readings* below):

  ::

       state sets S1..Sn
             │  split                      unconflicted map U  (same id in every Si)
             ▼                             conflicted set   C  (everything else)
       full conflicted set F = C ∪ auth difference [∪ conflicted subgraph (v2.1)]
             │
             ├─ step 1: G = power events of F + the F events reached from them
             │          through F; reverse topological power ordering (Kahn + heap)
             ├─ step 2: iterative auth checks from U (v2) / from {} (v2.1)
             ├─ step 3: F − G in mainline order of the resolved power_levels
             ├─ step 4: iterative auth checks, continuing
             └─ step 5: overwrite with U

Readings
--------
Where the spec's text is imprecise and Synapse and ruma (the deployed servers)
agree, we follow them: servers that resolve the same state sets differently split
the room, and those two are the room's other members. ``tests/interop/`` checks
each reading against Synapse.

* **Full auth chain of a state set** (fragments/v2-state-res "Auth difference":
  "the full auth chain for each state Si, that is the union of the auth chains for
  each event in Si"). Read with "Auth chain" (E's auth events, theirs, and so on),
  that would leave Si's own events out. Synapse (``get_auth_chain_difference``, its
  chain cover index) and ruma (the auth chain sets its ``resolve`` is given, built
  by its store's ``auth_event_ids``, which starts from the events themselves) count
  them in: ``Ci`` is the events of ``Si`` *and* all their auth ancestors. The two
  part when an event of every ``Si`` is cited by one set's conflicted events only
  (a member event cited by one fork's power-levels change): literally it joins the
  auth difference, and as a low-power ancestor of a power event it holds that
  event back in step 1; here it is in every ``Ci`` and stays out.
* **Power events** (fragments/v2-state-res "Power events"): ``(type, state_key)``
  is ``(m.room.power_levels, "")``, ``(m.room.join_rules, "")`` or
  ``(m.room.create, "")``, or a leave/ban ``m.room.member`` whose sender is not its
  state_key. The spec's sentence names the two types without the create event or
  the empty state_key; see :func:`~roomactors.protocol.auth.is_power_event`.
* **Reverse topological power ordering** (step 1: "Select the set X of all power
  events that appear in the full conflicted set. For each such power event P,
  enlarge X by adding the events in the auth chain of P which also belong to the
  full conflicted set", sorted by the "topological ordering based on the DAG formed
  by auth events"). Synapse (``_add_event_and_auth_chain_to_graph``) and ruma
  (``add_event_and_auth_chain_to_graph``) build the graph ``G`` by walking
  ``auth_events`` from the power events *through events of F only*: an auth event
  outside F is neither added nor followed, so an F event reachable from a power
  event only through events outside F is not in ``G``, and two events of ``G``
  related only through such events are unordered. ``G``'s edges are the direct
  ``auth_events`` edges among its nodes; Kahn's algorithm picks the smallest ready
  node by (higher sender power from the event's own auth events, lower
  ``origin_server_ts``, lower ``event_id``). Step 3's "remaining events" are
  ``F − G``.

::

        PL_new (power, in F)     J_bob is in every state set's chain, so not in F.
          │                      G = {PL_new, PL_old} with no edge: PL_new may sort
        J_bob (not in F)         before PL_old if its sender is more powerful. In
          │                      v2.1, when both are conflicted, the conflicted
        PL_old (power, in F)     subgraph puts J_bob in F and the path reappears.

Cost
----
Work on the conflicted side is bounded by ``C ∪ A``: the conflicted events ``C``
and the union ``A`` of their auth chains — not by the size of the room:

* One iterative DFS over ``C ∪ A`` gives a post-order (auth events before the
  events citing them; no recursion limit). One pass over it in each direction
  computes, for every node, which state sets' ``C'i`` (conflicted events and their
  ancestors) it is in (a bit mask), and whether it reaches a conflicted event
  (v2.1 subgraph). Each node is expanded once; no auth chain is walked per event.
* Step 1's graph is walked from the power events through F only, once per edge.
* The partial state of the iterative auth checks is an overlay on the
  unconflicted map (v2) or on nothing (v2.1). The unconflicted map is built once,
  by copying the first state set and dropping the conflicted keys, and becomes
  the result.

Two steps may look at the whole state, and run as C-level set and iterator
operations rather than Python loops:

* the split, as symmetric differences of dict item views;
* the *auth difference* ``∪Ci − ∩Ci``. Every ``Si`` is ``U`` plus its conflicted
  events ``Ki``, so ``Ci = C(U) ∪ C'i`` with ``C(U)`` (the unconflicted events and
  their ancestors) in every ``Ci``: the difference is ``(∪C'i − ∩C'i) − C(U)``.
  The candidates ``∪C'i − ∩C'i`` come from the masks; those in ``C`` are dropped
  (F takes ``C`` whole), and those that are unconflicted events are found by
  looking up their own key in ``U`` — no pass over ``U``, which settles the common
  case (a conflicted event citing its sender's unconflicted membership). Only if a
  candidate is left (an event some ``Ki`` reaches that is not itself in ``U``, e.g.
  a power-levels event one fork replaced) must ``C(U)`` be searched for it: ``U``'s
  events are struck out wholesale (catching one stored under a key not its own),
  then a walk goes down from ``U``, level by level with set operations, reading
  each unconflicted event's ``auth_events`` at most once, never descending below a
  node in every ``C'i`` (its whole chain is too), and stopping when no candidate is
  left. Skipping it would let an event that an unconflicted event depends on into
  F, which no reading allows.

Room-version details
--------------------
* v1/v2 PDUs carry ``auth_events`` as ``[event_id, {hashes}]`` pairs; both forms
  are read.
* v12: the ``m.room.create`` event is never in ``auth_events``; it is implied by
  ``room_id`` (``"$" + room_id[1:]``). It is added to the auth state of every
  iterative auth check and used to find the room creators (sender plus
  ``additional_creators``), whose power level is infinite for the power ordering.
* Before v11 the creator (power 100 when no power levels exist) is
  ``content.creator`` of the create event, from v11 its ``sender``.

Rejected events
---------------
``rejected`` names events rejected against their own auth chain (fragment
"Rejected events"). They are never admitted by the iterative auth checks, never
used as auth events for another event, and never chosen by v1. Events rejected
only against the state before them need no mention: they are handled as usual.

Invariants: inputs are never mutated; the result is a new dict; the output does
not depend on the order of ``state_sets`` (ties break on ``event_id``).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Collection, Iterable, Mapping
from itertools import chain
from operator import itemgetter, methodcaller
from typing import Any

from .auth import StateKey, auth_types_for_event, check_auth, get_power_level, is_power_event
from .errors import AuthError
from .room_versions import RoomVersionRules, StateResAlgorithm, get_rules

__all__ = [
    "StateKey",
    "StateMap",
    "MissingEventError",
    "resolve_state",
]

StateMap = dict[StateKey, str]

_CREATE = "m.room.create"
_POWER_LEVELS = "m.room.power_levels"
_JOIN_RULES = "m.room.join_rules"
_MEMBER = "m.room.member"
_CREATE_KEY: StateKey = (_CREATE, "")
_PL_KEY: StateKey = (_POWER_LEVELS, "")
_JR_KEY: StateKey = (_JOIN_RULES, "")

class MissingEventError(LookupError):
    """``events`` lacks an event that resolution needs: a caller bug, not a verdict."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"state resolution needs event {event_id!r}, which is not in `events`")
        self.event_id = event_id


def resolve_state(
    room_version: str,
    state_sets: list[dict[tuple[str, str], str]],
    events: Mapping[str, dict],
    *,
    rejected: Collection[str] = (),
) -> dict[tuple[str, str], str]:
    """The resolution of ``state_sets`` under ``room_version``'s algorithm.

    ``events`` maps event ID to PDU and must hold every event of the state sets and
    of their auth chains. ``rejected`` lists event IDs rejected on their auth chain.
    Raises :class:`UnsupportedRoomVersion` for unknown versions and
    :class:`MissingEventError` when a needed event is absent.
    """
    rules = get_rules(room_version)
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    ctx = _Context(rules, events, rejected)
    if rules.state_res is StateResAlgorithm.V1:
        return _resolve_v1(ctx, state_sets)
    return _resolve_v2(ctx, state_sets, empty_start=rules.state_res is StateResAlgorithm.V2_1)


# --------------------------------------------------------------------------------------
# Event access
# --------------------------------------------------------------------------------------


class _Context:
    """Per-call event access with memoised ``auth_events`` lists."""

    __slots__ = ("rules", "events", "rejected", "_auth", "_pl_of")

    def __init__(self, rules: RoomVersionRules, events: Mapping[str, dict], rejected: Collection[str]) -> None:
        self.rules = rules
        self.events = events
        self.rejected = rejected if isinstance(rejected, (set, frozenset)) else frozenset(rejected)
        self._auth: dict[str, tuple[str, ...]] = {}
        self._pl_of: dict[str, str | None] = {}

    def event(self, event_id: str) -> dict:
        try:
            return self.events[event_id]
        except KeyError:
            raise MissingEventError(event_id) from None

    def auth_ids(self, event_id: str) -> tuple[str, ...]:
        """The IDs in ``auth_events`` (plain IDs, or the first element of v1/v2 pairs)."""
        ids = self._auth.get(event_id)
        if ids is None:
            ids = _ref_ids(self.event(event_id).get("auth_events"))
            self._auth[event_id] = ids
        return ids

    def auth_ids_of_many(self, event_ids: Iterable[str]) -> set[str]:
        """The union of the ``auth_events`` of ``event_ids``, read without per-event
        Python code where the refs are plain IDs (v3+)."""
        if not self.rules.event_refs_are_pairs:
            try:
                events = map(self.events.__getitem__, event_ids)
                return set(chain.from_iterable(map(_GET_AUTH_EVENTS, events)))
            except (KeyError, TypeError):
                pass  # a missing event or a malformed ref: take the careful path
        out: set[str] = set()
        for eid in event_ids:
            out.update(_ref_ids(self.event(eid).get("auth_events")))
        return out

    def auth_event_for(self, event_id: str, key: StateKey) -> str | None:
        """The event's own auth event for ``key``, if it cites one."""
        for aid in self.auth_ids(event_id):
            aev = self.event(aid)
            if (aev.get("type"), aev.get("state_key")) == key:
                return aid
        return None

    def power_levels_auth(self, event_id: str) -> str | None:
        """The ``m.room.power_levels`` event in ``event_id``'s ``auth_events`` (memoised)."""
        try:
            return self._pl_of[event_id]
        except KeyError:
            found = self.auth_event_for(event_id, _PL_KEY)
            self._pl_of[event_id] = found
            return found

    def implied_create_id(self, event_id: str, event: dict) -> str:
        """v12: the create event's ID, ``$`` + the room ID's opaque part."""
        if event.get("type") == _CREATE and event.get("state_key") == "" and "room_id" not in event:
            return event_id
        room_id = event.get("room_id")
        return "$" + room_id[1:] if isinstance(room_id, str) and room_id else ""

    def create_event_for(self, event_id: str) -> dict | None:
        """The create event that governs ``event_id``: implied (v12) or cited."""
        event = self.event(event_id)
        if not self.rules.create_event_in_auth_events:
            return self.event(self.implied_create_id(event_id, event))
        cid = self.auth_event_for(event_id, _CREATE_KEY)
        return None if cid is None else self.event(cid)


_GET_AUTH_EVENTS = methodcaller("get", "auth_events", ())


def _ref_ids(refs: Any) -> tuple[str, ...]:
    if not refs:
        return ()
    out = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, (list, tuple)) and ref and isinstance(ref[0], str):
            out.append(ref[0])
    return tuple(out)


def _key_of(event: dict) -> StateKey:
    return (event["type"], event["state_key"])


def _ts(event: dict) -> int:
    ts = event.get("origin_server_ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0


# --------------------------------------------------------------------------------------
# Power levels (for the reverse topological power ordering)
# --------------------------------------------------------------------------------------


def _sender_power(ctx: _Context, event_id: str) -> int | float:
    """The sender's power level "looking at" the event's own ``auth_events``: the cited
    power-levels event (else the creator default), with the create event cited (v1–v11)
    or implied by ``room_id`` (v12, where creators are infinitely powerful)."""
    event = ctx.event(event_id)
    pl_id = ctx.power_levels_auth(event_id)
    power_levels = None if pl_id is None else ctx.event(pl_id)
    return get_power_level(event.get("sender"), power_levels, ctx.create_event_for(event_id), ctx.rules)


# --------------------------------------------------------------------------------------
# Auth checks against a (partial) state
# --------------------------------------------------------------------------------------


def _auth_state(
    ctx: _Context,
    event_id: str,
    event: dict,
    base: Mapping[StateKey, str],
    overlay: Mapping[StateKey, str],
    *,
    fall_back_to_auth_events: bool,
) -> tuple[dict[StateKey, dict], str | None]:
    """The state to check ``event`` against, and the create event's ID if known.

    For each key the auth events selection names: the (partial) state's entry if it
    has a non-rejected one, else — v2 "Iterative auth checks" — the event's own
    non-rejected auth event for that key. v12 adds the create event implied by
    ``room_id``, which events never list.
    """
    rejected = ctx.rejected
    out: dict[StateKey, dict] = {}
    ids: dict[StateKey, str] = {}
    own: dict[StateKey, str] | None = None
    for key in auth_types_for_event(event, ctx.rules.version):
        sid = overlay.get(key)
        if sid is None:
            sid = base.get(key)
        if sid is not None and sid in rejected:
            sid = None
        if sid is None and fall_back_to_auth_events:
            if own is None:
                own = {}
                for aid in ctx.auth_ids(event_id):
                    aev = ctx.event(aid)
                    if aid not in rejected and "state_key" in aev:
                        own[(aev.get("type"), aev.get("state_key"))] = aid
            sid = own.get(key)
        if sid is not None:
            out[key] = ctx.event(sid)
            ids[key] = sid
    if not ctx.rules.create_event_in_auth_events and _CREATE_KEY not in out:
        cid = ctx.implied_create_id(event_id, event)
        if cid not in rejected:
            out[_CREATE_KEY] = ctx.event(cid)
            ids[_CREATE_KEY] = cid
    return out, ids.get(_CREATE_KEY)


def _allowed(ctx: _Context, event: dict, auth_state: tuple[dict[StateKey, dict], str | None]) -> bool:
    state, create_event_id = auth_state
    try:
        check_auth(event, state, ctx.rules.version, create_event_id=create_event_id)
    except AuthError:
        return False
    return True


def _iterative_auth_checks(
    ctx: _Context, ordered: Iterable[str], base: Mapping[StateKey, str], overlay: dict[StateKey, str]
) -> None:
    """fragments/v2-state-res "Iterative auth checks": apply each allowed event to
    ``overlay`` (the partial state is ``overlay`` over ``base``)."""
    for eid in ordered:
        if eid in ctx.rejected:
            continue
        event = ctx.event(eid)
        if "state_key" not in event:
            continue
        auth_state = _auth_state(ctx, eid, event, base, overlay, fall_back_to_auth_events=True)
        if _allowed(ctx, event, auth_state):
            overlay[_key_of(event)] = eid


# --------------------------------------------------------------------------------------
# State resolution v2 / v2.1
# --------------------------------------------------------------------------------------


def _split(state_sets: list[dict[StateKey, str]]) -> tuple[dict[StateKey, str], list[set[str]]]:
    """Unconflicted state map (a fresh dict), and each state set's conflicted event IDs.

    A key is unconflicted iff it is in every set with the same event ID, i.e. iff it
    is in no symmetric difference ``S0.items() ^ Si.items()``. Those differences are
    C-level dict-view operations, so only the conflicted keys see Python code.
    """
    first = state_sets[0]
    conflicted_keys: set[StateKey] = set()
    for other in state_sets[1:]:
        conflicted_keys.update(map(itemgetter(0), first.items() ^ other.items()))
    unconflicted = dict(first)
    for key in conflicted_keys:
        unconflicted.pop(key, None)
    per_set = [{s[k] for k in conflicted_keys if k in s} for s in state_sets]
    return unconflicted, per_set


def _post_order(ctx: _Context, roots: Iterable[str]) -> list[str]:
    """``roots`` and their auth chains, each auth event before any event citing it.

    Iterative DFS (no recursion limit); each node is expanded once.
    """
    order: list[str] = []
    seen: set[str] = set()
    auth_ids = ctx.auth_ids
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(auth_ids(root)))]
        while stack:
            node, it = stack[-1]
            for aid in it:
                if aid not in seen:
                    seen.add(aid)
                    stack.append((aid, iter(auth_ids(aid))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _chain_masks(ctx: _Context, post: list[str], per_set: list[set[str]]) -> dict[str, int]:
    """For each node of ``post``: bit i set iff it is one of state set i's conflicted
    events or in the auth chain of one (``C'i``: those events and their ancestors)."""
    mask: dict[str, int] = {}
    for i, ids in enumerate(per_set):
        bit = 1 << i
        for eid in ids:
            mask[eid] = mask.get(eid, 0) | bit
    auth_ids = ctx.auth_ids
    for node in reversed(post):  # every event before its auth events
        m = mask.get(node)
        if m:
            for aid in auth_ids(node):
                mask[aid] = mask.get(aid, 0) | m
    return mask


def _in_state_map(state: Mapping[StateKey, str], event_id: str, event: dict) -> bool:
    """Is ``event_id`` the value of ``state`` under the event's own key?"""
    event_type, state_key = event.get("type"), event.get("state_key")
    return isinstance(event_type, str) and isinstance(state_key, str) and state.get((event_type, state_key)) == event_id


def _auth_difference(
    ctx: _Context, unconflicted: Mapping[StateKey, str], conflicted: set[str], mask: Mapping[str, int], n_sets: int
) -> set[str]:
    """fragments/v2-state-res "Auth difference" ``∪Ci − ∩Ci``, less the conflicted set.

    ``Ci`` is the full auth chain of ``Si``: its events and all their auth ancestors
    (see the module docstring). With ``Si = U ∪ Ki`` (``Ki``: its conflicted events),
    ``Ci = C(U) ∪ C'i``, and ``C(U)`` is in every ``Ci``, so the difference is
    ``(∪C'i − ∩C'i) − C(U)``. The candidates come from the masks, less the conflicted
    set (the caller adds it whole). Candidates that are unconflicted events are found
    by their own key, without reading ``U``. Only if some candidate is left is ``U``
    read: its events are struck out wholesale (which also catches one stored under a
    key that is not its own), then every candidate an unconflicted event reaches, by
    a walk level by level with set operations that never descends below a node in
    every ``C'i`` (its whole auth chain is too) and stops once no candidate is left.
    """
    full = (1 << n_sets) - 1
    in_every_chain = {eid for eid, m in mask.items() if m == full}
    remaining = mask.keys() - in_every_chain - conflicted
    if not remaining:
        return remaining
    event = ctx.event
    remaining = {eid for eid in remaining if not _in_state_map(unconflicted, eid, event(eid))}
    if not remaining:
        return remaining
    # An unconflicted event stored under a key other than its own is still in U.
    remaining.difference_update(unconflicted.values())
    seen: set[str] = set()
    frontier: Iterable[str] = unconflicted.values()
    while remaining:
        refs = ctx.auth_ids_of_many(frontier)
        refs -= seen
        if not refs:
            break
        seen |= refs
        remaining -= refs
        frontier = refs - in_every_chain
    return remaining


def _conflicted_subgraph(ctx: _Context, post: list[str], conflicted: set[str], mask: Mapping[str, int]) -> set[str]:
    """rooms/v12 "Conflicted state subgraph": events on an auth path between two
    conflicted events. A node is on one iff it is a conflicted event or in the auth
    chain of one (``mask``) and some conflicted event is in its own auth chain."""
    reaches: set[str] = set()
    auth_ids = ctx.auth_ids
    for node in post:  # auth events first
        for aid in auth_ids(node):
            if aid in conflicted or aid in reaches:
                reaches.add(node)
                break
    return {n for n in reaches if n in mask} | conflicted


def _power_graph(ctx: _Context, full_conflicted: set[str]) -> dict[str, tuple[str, ...]]:
    """Step 1's graph, as Synapse and ruma build it: the power events of the full
    conflicted set, plus the full-conflicted-set events reached from them by walking
    ``auth_events`` through full-conflicted-set events only; each node maps to its
    (distinct) auth events in the graph."""
    graph: dict[str, tuple[str, ...]] = {}
    stack = [eid for eid in full_conflicted if is_power_event(ctx.event(eid))]
    while stack:
        eid = stack.pop()
        if eid in graph:
            continue
        edges = tuple({aid for aid in ctx.auth_ids(eid) if aid in full_conflicted})
        graph[eid] = edges
        stack.extend(aid for aid in edges if aid not in graph)
    return graph


def _reverse_topological_power_order(ctx: _Context, graph: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Kahn's algorithm over ``graph`` (auth events first), taking at each step the
    smallest ready event by (higher sender power, lower ts, lower ID)."""
    pending: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for node, edges in graph.items():
        pending[node] = len(edges)
        for aid in edges:
            children.setdefault(aid, []).append(node)

    def key(eid: str) -> tuple:
        return (-_sender_power(ctx, eid), _ts(ctx.event(eid)), eid)

    heap = [(key(n), n) for n, d in pending.items() if d == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, node = heapq.heappop(heap)
        out.append(node)
        for child in children.get(node, ()):
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(heap, (key(child), child))
    if len(out) != len(graph):
        raise ValueError("auth_events contain a cycle; state resolution needs a DAG")
    return out


def _mainline_order(ctx: _Context, event_ids: Iterable[str], power_levels_id: str | None) -> list[str]:
    """fragments/v2-state-res "Mainline ordering" based on ``power_levels_id``."""
    mainline: dict[str, int] = {}
    p = power_levels_id
    while p is not None and p not in mainline:
        mainline[p] = len(mainline)
        p = ctx.power_levels_auth(p)
    memo: dict[str, float] = {}  # position of a power-levels event off the mainline

    def position(eid: str) -> float:
        path: dict[str, None] = {}  # ordered, and a guard against (impossible) cycles
        p = ctx.power_levels_auth(eid)
        pos: float = math.inf
        while p is not None and p not in path:
            if p in mainline:
                pos = mainline[p]
                break
            if p in memo:
                pos = memo[p]
                break
            path[p] = None
            p = ctx.power_levels_auth(p)
        for q in path:
            memo[q] = pos
        return pos

    return sorted(event_ids, key=lambda e: (-position(e), _ts(ctx.event(e)), e))


def _resolve_v2(ctx: _Context, state_sets: list[dict[StateKey, str]], *, empty_start: bool) -> StateMap:
    unconflicted, per_set = _split(state_sets)
    conflicted: set[str] = set().union(*per_set)
    if not conflicted:
        return unconflicted

    post = _post_order(ctx, sorted(conflicted))
    mask = _chain_masks(ctx, post, per_set)
    full_conflicted = conflicted | _auth_difference(ctx, unconflicted, conflicted, mask, len(state_sets))
    if empty_start:
        full_conflicted |= _conflicted_subgraph(ctx, post, conflicted, mask)

    # Step 1: the power events and the full-conflicted-set events below them.
    graph = _power_graph(ctx, full_conflicted)
    power_order = _reverse_topological_power_order(ctx, graph)

    # Step 2: iterative auth checks from the unconflicted map (v2) or empty (v2.1).
    base: Mapping[StateKey, str] = {} if empty_start else unconflicted
    overlay: dict[StateKey, str] = {}
    _iterative_auth_checks(ctx, power_order, base, overlay)

    # Steps 3–4: the rest, in mainline order of the partially resolved power levels.
    power_levels = overlay.get(_PL_KEY, base.get(_PL_KEY))
    rest = _mainline_order(ctx, full_conflicted.difference(graph), power_levels)
    _iterative_auth_checks(ctx, rest, base, overlay)

    # Step 5: the unconflicted state map wins (``unconflicted`` is our own copy).
    resolved = unconflicted
    for key, eid in overlay.items():
        if key not in resolved:
            resolved[key] = eid
    return resolved


# --------------------------------------------------------------------------------------
# State resolution v1
# --------------------------------------------------------------------------------------


def _sha1_hex(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _resolve_v1(ctx: _Context, state_sets: list[dict[StateKey, str]]) -> StateMap:
    """rooms/v1 "State resolution".

    A conflict is a key for which the states hold *different event IDs*; a key
    missing from some states is not a conflict (there is no event ID to differ).
    The member pass resolves each conflicted member key on its own, in
    ``state_key`` order. When no event of an "other" key passes auth, the key is
    left out of the result: the spec picks only an event that passes.
    """
    values: dict[StateKey, set[str]] = {}
    for s in state_sets:
        for key, eid in s.items():
            values.setdefault(key, set()).add(eid)
    resolved: StateMap = {}
    conflicts: dict[StateKey, list[str]] = {}
    for key, ids in values.items():
        if len(ids) == 1:
            resolved[key] = next(iter(ids))
        else:
            conflicts[key] = [eid for eid in ids if eid not in ctx.rejected]

    def allowed(eid: str) -> bool:
        event = ctx.event(eid)
        auth_state = _auth_state(ctx, eid, event, resolved, {}, fall_back_to_auth_events=False)
        return _allowed(ctx, event, auth_state)

    def depth(eid: str) -> int:
        d = ctx.event(eid).get("depth")
        return d if isinstance(d, int) and not isinstance(d, bool) else 0

    def replay(key: StateKey) -> None:
        ids = sorted(conflicts.pop(key), key=_sha1_hex, reverse=True)
        ids.sort(key=depth)  # stable: ascending depth, then descending sha1
        if not ids:
            return
        resolved[key] = ids[0]
        for eid in ids[1:]:
            if not allowed(eid):
                break
            resolved[key] = eid

    for key in (_PL_KEY, _JR_KEY):
        if key in conflicts:
            replay(key)
    for key in sorted(k for k in conflicts if k[0] == _MEMBER):
        replay(key)
    for key in sorted(conflicts):
        ids = sorted(conflicts.pop(key), key=_sha1_hex)
        ids.sort(key=depth, reverse=True)  # stable: descending depth, then ascending sha1
        for eid in ids:
            if allowed(eid):
                resolved[key] = eid
                break
    return resolved
