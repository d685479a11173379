"""The pure sub-steps of state resolution v2/v2.1, on synthetic auth DAGs.

Each fast, memoised step is checked against a brute-force transcription of the
spec's definition (fragments/v2-state-res "Definitions", rooms/v12 "Conflicted
state subgraph") on random DAGs with hypothesis.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from roomactors.protocol import state_res as sr
from roomactors.protocol.room_versions import get_rules

RULES = get_rules("11")


def make_events(parents: Mapping[str, list[str]], ts: Mapping[str, int] | None = None) -> dict[str, dict]:
    """Bare state events: type ``t``, ``state_key`` = name, the given auth edges."""
    return {
        eid: {
            "type": "t",
            "state_key": eid,
            "sender": "@u:x",
            "origin_server_ts": (ts or {}).get(eid, 0),
            "auth_events": list(auth),
        }
        for eid, auth in parents.items()
    }


def ctx_for(events: dict[str, dict], rules=RULES, rejected=()) -> sr._Context:
    return sr._Context(rules, events, rejected)


def strict_ancestors(events: Mapping[str, dict], roots) -> set[str]:
    out: set[str] = set()
    stack = list(roots)
    while stack:
        for a in events[stack.pop()]["auth_events"]:
            if a not in out:
                out.add(a)
                stack.append(a)
    return out


def reach(events: Mapping[str, dict], a: str, b: str) -> bool:
    """b is reachable from a by following zero or more auth edges."""
    return a == b or b in strict_ancestors(events, [a])


# A random DAG: node i cites a subset of nodes < i. Then 2–3 state sets over a few
# keys, values drawn from the nodes.
@st.composite
def dags_with_state_sets(draw):
    n = draw(st.integers(min_value=1, max_value=24))
    parents = {}
    for i in range(n):
        parents[f"e{i}"] = sorted({f"e{j}" for j in draw(st.lists(st.integers(0, i - 1), max_size=3))} if i else set())
    names = list(parents)
    keys = [("k", str(i)) for i in range(draw(st.integers(1, 8)))]
    n_sets = draw(st.integers(2, 3))
    sets = []
    for _ in range(n_sets):
        s = {}
        for key in keys:
            if draw(st.booleans()) or draw(st.booleans()):
                s[key] = draw(st.sampled_from(names))
        sets.append(s)
    return make_events(parents), sets


# --------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------


def test_split_unconflicted_and_conflicted() -> None:
    a = {("m", "1"): "$x", ("m", "2"): "$y", ("m", "3"): "$z"}
    b = {("m", "1"): "$x", ("m", "2"): "$y2", ("m", "4"): "$w"}
    unconflicted, per_set = sr._split([a, b])
    assert unconflicted == {("m", "1"): "$x"}
    # A key missing from one set is conflicted (v2: "present in every Si").
    assert per_set == [{"$y", "$z"}, {"$y2", "$w"}]


def test_split_three_sets() -> None:
    a = {("k", ""): "$1", ("j", ""): "$2"}
    b = {("k", ""): "$1", ("j", ""): "$2"}
    c = {("k", ""): "$1", ("j", ""): "$3"}
    unconflicted, per_set = sr._split([a, b, c])
    assert unconflicted == {("k", ""): "$1"}
    assert per_set == [{"$2"}, {"$2"}, {"$3"}]


# --------------------------------------------------------------------------------------
# Auth chains
# --------------------------------------------------------------------------------------


def test_post_order_puts_auth_events_first_and_has_no_depth_limit() -> None:
    n = 5 * sys.getrecursionlimit()
    parents = {"e0": []} | {f"e{i}": [f"e{i - 1}"] for i in range(1, n)}
    order = sr._post_order(ctx_for(make_events(parents)), [f"e{n - 1}"])
    assert order == [f"e{i}" for i in range(n)]


def test_pair_refs_are_read() -> None:
    events = {
        "$a:x": {"auth_events": []},
        "$b:x": {"auth_events": [["$a:x", {"sha256": "h"}]]},
    }
    ctx = ctx_for(events, get_rules("1"))
    assert ctx.auth_ids("$b:x") == ("$a:x",)


@settings(max_examples=150, deadline=None)
@given(dags_with_state_sets())
def test_auth_difference_matches_definition(case) -> None:
    """∪Ci − ∩Ci over FULL auth chains, versus the split-based computation."""
    events, sets = case
    chains = [strict_ancestors(events, s.values()) for s in sets]
    expected = set().union(*chains) - set.intersection(*chains)

    ctx = ctx_for(events)
    unconflicted, per_set = sr._split(sets)
    conflicted = set().union(*per_set)
    post = sr._post_order(ctx, sorted(conflicted))
    mask = sr._ancestor_masks(ctx, post, per_set)
    assert sr._auth_difference(ctx, unconflicted, mask, len(sets)) == expected


@settings(max_examples=150, deadline=None)
@given(dags_with_state_sets())
def test_conflicted_subgraph_matches_definition(case) -> None:
    """Union of all auth paths between two conflicted events, endpoints included."""
    events, sets = case
    ctx = ctx_for(events)
    unconflicted, per_set = sr._split(sets)
    conflicted = set().union(*per_set)
    expected = set(conflicted)
    for c1 in conflicted:
        for c2 in conflicted:
            if c1 != c2:
                expected |= {n for n in events if reach(events, c1, n) and reach(events, n, c2)}
    post = sr._post_order(ctx, sorted(conflicted))
    mask = sr._ancestor_masks(ctx, post, per_set)
    assert sr._conflicted_subgraph(ctx, post, conflicted, mask) == expected


def test_auth_difference_ignores_chains_shared_via_unconflicted_state() -> None:
    """
        c1 ─► p ─► root        c1 is conflicted (set 1 only); p is in C1 only via c1,
        u  ─► p                but the unconflicted u cites p, so p is in every Ci.
    """
    events = make_events({"root": [], "p": ["root"], "c1": ["p"], "c2": ["root"], "u": ["p"]})
    s1 = {("k", ""): "c1", ("u", ""): "u"}
    s2 = {("k", ""): "c2", ("u", ""): "u"}
    ctx = ctx_for(events)
    unconflicted, per_set = sr._split([s1, s2])
    post = sr._post_order(ctx, ["c1", "c2"])
    mask = sr._ancestor_masks(ctx, post, per_set)
    assert sr._auth_difference(ctx, unconflicted, mask, 2) == set()
    # Without u, p belongs to the difference.
    s1.pop(("u", ""))
    s2.pop(("u", ""))
    unconflicted, per_set = sr._split([s1, s2])
    assert sr._auth_difference(ctx, unconflicted, mask, 2) == {"p"}


class _CountingEvents(dict):
    """An events mapping that records which IDs were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads: set[str] = set()

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)


def test_unconflicted_state_untouched_without_candidates() -> None:
    """With no auth-difference candidates the unconflicted events are never read."""
    parents = {"root": [], "a": ["root"], "b": ["root"]} | {f"m{i}": ["root"] for i in range(1000)}
    events = _CountingEvents(make_events(parents))
    s1 = {("m", str(i)): f"m{i}" for i in range(1000)} | {("k", ""): "a"}
    s2 = {("m", str(i)): f"m{i}" for i in range(1000)} | {("k", ""): "b"}
    ctx = ctx_for(events)
    unconflicted, per_set = sr._split([s1, s2])
    post = sr._post_order(ctx, ["a", "b"])
    mask = sr._ancestor_masks(ctx, post, per_set)
    assert sr._auth_difference(ctx, unconflicted, mask, 2) == set()
    assert events.reads <= {"root", "a", "b"}


# --------------------------------------------------------------------------------------
# Reverse topological power ordering
# --------------------------------------------------------------------------------------


def test_power_order_respects_ancestry_through_connectors() -> None:
    """
        x2 (ts 1) ─► c ─► x1 (ts 9)      x1, x2 power events; c is not chosen

    By timestamp x2 sorts first, but x1 is in x2's auth chain (through c), so every
    topological order puts x1 first. Direct edges alone would miss it.
    """
    events = make_events({"x1": [], "c": ["x1"], "x2": ["c"]}, ts={"x1": 9, "c": 5, "x2": 1})
    for e in ("x1", "x2"):
        events[e].update(type="m.room.power_levels", state_key="")
    ctx = ctx_for(events)
    post = sr._post_order(ctx, ["x2"])
    chosen, connectors = sr._power_closure(ctx, post, {"x1", "x2"})
    assert chosen == {"x1", "x2"} and connectors == {"c"}
    assert sr._reverse_topological_power_order(ctx, chosen, connectors) == ["x1", "x2"]


def test_power_closure_adds_auth_ancestors_in_full_conflicted_set_only() -> None:
    events = make_events({"root": [], "j": ["root"], "k": ["root"], "p": ["j", "k"], "t": ["p"]})
    events["p"].update(type="m.room.join_rules", state_key="")
    ctx = ctx_for(events)
    post = sr._post_order(ctx, ["t"])
    chosen, _ = sr._power_closure(ctx, post, {"p", "j", "t"})
    assert chosen == {"p", "j"}  # t is not a power event nor p's ancestor; k not in F


@st.composite
def power_cases(draw):
    n = draw(st.integers(1, 16))
    parents = {f"e{i}": sorted({f"e{j}" for j in draw(st.lists(st.integers(0, i - 1), max_size=3))} if i else set()) for i in range(n)}
    ts = {e: draw(st.integers(0, 5)) for e in parents}
    chosen = {e for e in parents if draw(st.booleans())}
    return make_events(parents, ts), chosen


@settings(max_examples=150, deadline=None)
@given(power_cases())
def test_power_order_is_smallest_topological_order(case) -> None:
    """At every step, the next event is the smallest one all of whose chosen auth-chain
    ancestors are already placed (all senders have power 0 here: ts, then ID)."""
    events, chosen = case
    ctx = ctx_for(events)
    post = sr._post_order(ctx, sorted(events))
    ancestors = {e: strict_ancestors(events, [e]) & chosen for e in chosen}
    reaches = {n for n in post if any(a in chosen for a in strict_ancestors(events, [n]))}
    anc_of_chosen = strict_ancestors(events, chosen)
    connectors = (reaches & anc_of_chosen) - chosen
    order = sr._reverse_topological_power_order(ctx, chosen, connectors)
    placed: set[str] = set()
    for e in order:
        ready = [x for x in chosen - placed if ancestors[x] <= placed]
        assert e == min(ready, key=lambda x: (events[x]["origin_server_ts"], x))
        placed.add(e)
    assert placed == chosen


# --------------------------------------------------------------------------------------
# Mainline ordering
# --------------------------------------------------------------------------------------


def test_mainline_positions() -> None:
    """
        P0 ◄─ P1 ◄─ P2            mainline of P2: [P2, P1, P0] (positions 0, 1, 2)
               ▲
               └── Q ◄─ e_q       Q is off the mainline; e_q's position is P1's (1)
        e_2 ─► P2                 e_2: position 0;  e_none cites no power levels: ∞
    """
    parents = {
        "P0": [], "P1": ["P0"], "P2": ["P1"], "Q": ["P1"],
        "e_q": ["Q"], "e_2": ["P2"], "e_0": ["P0"], "e_none": [],
    }
    ts = {"e_q": 5, "e_2": 1, "e_0": 9, "e_none": 3}
    events = make_events(parents, ts)
    for p in ("P0", "P1", "P2", "Q"):
        events[p].update(type="m.room.power_levels", state_key="")
    ctx = ctx_for(events)
    # Greater position first: e_none (∞), e_0 (2), e_q (1), e_2 (0).
    assert sr._mainline_order(ctx, ["e_2", "e_q", "e_0", "e_none"], "P2") == ["e_none", "e_0", "e_q", "e_2"]
    # No resolved power levels: every position is ∞, so timestamps decide.
    assert sr._mainline_order(ctx, ["e_2", "e_q", "e_0", "e_none"], None) == ["e_2", "e_none", "e_q", "e_0"]


# --------------------------------------------------------------------------------------
# Auth state for the iterative auth checks
# --------------------------------------------------------------------------------------


def _auth_state_events(version: str):
    room = "!room:x" if version != "12" else "!CREATE"
    create = {"type": "m.room.create", "state_key": "", "sender": "@a:x", "content": {}, "auth_events": []}
    if version != "12":
        create["room_id"] = room
    create_ref = ["$CREATE"] if version != "12" else []
    events = {
        "$CREATE": create,
        "$PL": {"type": "m.room.power_levels", "state_key": "", "sender": "@a:x", "room_id": room,
                "content": {}, "auth_events": create_ref},
        "$MA": {"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "room_id": room,
                "content": {"membership": "join"}, "auth_events": create_ref},
        "$MA2": {"type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "room_id": room,
                 "content": {"membership": "join"}, "auth_events": create_ref},
        "$T": {"type": "m.room.topic", "state_key": "", "sender": "@a:x", "room_id": room,
               "content": {}, "auth_events": [*create_ref, "$PL", "$MA"]},
    }
    return events


def test_auth_state_prefers_state_then_own_non_rejected_auth_events() -> None:
    events = _auth_state_events("11")
    ctx = ctx_for(events, get_rules("11"))
    # Missing from the state: falls back to the event's own auth events.
    state, create_id = sr._auth_state(ctx, "$T", events["$T"], {}, {}, fall_back_to_auth_events=True)
    assert state == {
        ("m.room.create", ""): events["$CREATE"],
        ("m.room.power_levels", ""): events["$PL"],
        ("m.room.member", "@a:x"): events["$MA"],
    }
    assert create_id == "$CREATE"
    # Present in the (partial) state: the state's entry wins.
    state, _ = sr._auth_state(ctx, "$T", events["$T"], {("m.room.member", "@a:x"): "$MA2"}, {}, fall_back_to_auth_events=True)
    assert state[("m.room.member", "@a:x")] is events["$MA2"]
    # A rejected auth event is never used.
    ctx = ctx_for(events, get_rules("11"), rejected={"$MA"})
    state, _ = sr._auth_state(ctx, "$T", events["$T"], {}, {}, fall_back_to_auth_events=True)
    assert ("m.room.member", "@a:x") not in state
    # v1 checks against R only: no fallback.
    state, _ = sr._auth_state(ctx, "$T", events["$T"], {}, {}, fall_back_to_auth_events=False)
    assert state == {}


def test_auth_state_v12_implies_create_from_room_id() -> None:
    events = _auth_state_events("12")
    ctx = ctx_for(events, get_rules("12"))
    state, create_id = sr._auth_state(ctx, "$T", events["$T"], {}, {}, fall_back_to_auth_events=True)
    assert create_id == "$CREATE"
    assert state[("m.room.create", "")] is events["$CREATE"]


def test_sender_power_v12_creators_infinite() -> None:
    events = _auth_state_events("12")
    events["$CREATE"]["content"] = {"additional_creators": ["@b:x"]}
    events["$PL"]["content"] = {"users": {"@c:x": 100}}
    for sender, expected in (("@a:x", float("inf")), ("@b:x", float("inf")), ("@c:x", 100), ("@d:x", 0)):
        events["$T"]["sender"] = sender
        ctx = ctx_for(events, get_rules("12"))
        assert sr._sender_power(ctx, "$T") == expected


def test_sender_power_without_power_levels_creator_is_100() -> None:
    events = _auth_state_events("11")
    events["$T"]["auth_events"] = ["$CREATE", "$MA"]
    ctx = ctx_for(events, get_rules("11"))
    assert sr._sender_power(ctx, "$T") == 100
    events["$T"]["sender"] = "@b:x"
    ctx = ctx_for(events, get_rules("11"))
    assert sr._sender_power(ctx, "$T") == 0
