"""The pure sub-steps of state resolution v2/v2.1, on synthetic auth DAGs.

Each fast, memoised step is checked against a brute-force transcription of its
definition on random DAGs with hypothesis: fragments/v2-state-res "Definitions" and
rooms/v12 "Conflicted state subgraph", read as Synapse and ruma read them where the
text is imprecise (a state set's full auth chain includes its own events; step 1's
graph is walked through the full conflicted set only) — see ``state_res``'s module
docstring, "Readings".
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


def closure(events: Mapping[str, dict], roots) -> set[str]:
    """``roots`` and all their auth ancestors: a state set's full auth chain ``Ci``."""
    return set(roots) | strict_ancestors(events, roots)


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
    events = make_events(parents)
    n_sets = draw(st.integers(2, 3))
    sets = []
    if draw(st.booleans()):
        # Arbitrary keys: an event may sit under a key that is not its own, or several.
        keys = [("k", str(i)) for i in range(draw(st.integers(1, 8)))]
        for _ in range(n_sets):
            s = {}
            for key in keys:
                if draw(st.booleans()) or draw(st.booleans()):
                    s[key] = draw(st.sampled_from(names))
            sets.append(s)
    else:
        # Each event under its own key (``("t", name)``), as real state maps have them.
        for _ in range(n_sets):
            chosen = draw(st.sets(st.sampled_from(names)))
            sets.append({("t", e): e for e in chosen})
    return events, sets


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


@settings(max_examples=300, deadline=None)
@given(dags_with_state_sets())
def test_auth_difference_matches_definition(case) -> None:
    """``∪Ci − ∩Ci`` with ``Ci`` = the events of ``Si`` and all their auth ancestors
    (Synapse's ``get_auth_chain_difference``), versus the split-based computation,
    which leaves out the conflicted set (the full conflicted set takes it whole)."""
    events, sets = case
    chains = [closure(events, s.values()) for s in sets]
    expected = set().union(*chains) - set.intersection(*chains)

    ctx = ctx_for(events)
    unconflicted, per_set = sr._split(sets)
    conflicted = set().union(*per_set)
    post = sr._post_order(ctx, sorted(conflicted))
    mask = sr._chain_masks(ctx, post, per_set)
    assert sr._auth_difference(ctx, unconflicted, conflicted, mask, len(sets)) == expected - conflicted


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
    mask = sr._chain_masks(ctx, post, per_set)
    assert sr._conflicted_subgraph(ctx, post, conflicted, mask) == expected


def _difference(events, s1, s2) -> set[str]:
    ctx = ctx_for(events)
    unconflicted, per_set = sr._split([s1, s2])
    conflicted = set().union(*per_set)
    post = sr._post_order(ctx, sorted(conflicted))
    mask = sr._chain_masks(ctx, post, per_set)
    return sr._auth_difference(ctx, unconflicted, conflicted, mask, 2)


def test_auth_difference_ignores_chains_shared_via_unconflicted_state() -> None:
    """
        c1 ─► p ─► root        c1 is conflicted (set 1 only); p is in C'1 only via c1,
        u  ─► p                but the unconflicted u cites p, so p is in every Ci.
    """
    events = make_events({"root": [], "p": ["root"], "c1": ["p"], "c2": ["root"], "u": ["p"]})
    s1 = {("k", ""): "c1", ("t", "u"): "u"}
    s2 = {("k", ""): "c2", ("t", "u"): "u"}
    assert _difference(events, s1, s2) == set()
    # Without u, p belongs to the difference (c1 and c2 do too, but they are
    # conflicted: _auth_difference leaves them to the caller).
    s1.pop(("t", "u"))
    s2.pop(("t", "u"))
    assert _difference(events, s1, s2) == {"p"}


def test_auth_difference_state_sets_own_events_are_in_their_chains() -> None:
    """
        c1 ─► m ─► root        m is in both state sets (unconflicted) and only c1 cites
        c2 ───────► root       it. m is in C1 (via c1, and as S1's own event) and in C2
                               (S2's own event): not in the auth difference. Read
                               literally ("the auth chains for each event in Si"), m
                               would be in C1 only and in the difference.
    """
    events = make_events({"root": [], "m": ["root"], "c1": ["m"], "c2": ["root"]})
    s1 = {("k", ""): "c1", ("t", "m"): "m"}
    s2 = {("k", ""): "c2", ("t", "m"): "m"}
    assert _difference(events, s1, s2) == set()


def test_auth_difference_old_event_replaced_in_unconflicted_state() -> None:
    """
        c1 ─► m0 ─► root       m0 (e.g. a user's old membership) is cited by set 1's c1
        m1 ─► m0               only; its replacement m1 is unconflicted. m0 is not in U
        c2 ──────► root        itself but is in m1's auth chain, hence in every Ci:
                               only the walk from U can strike it out.
    """
    events = make_events({"root": [], "m0": ["root"], "m1": ["m0"], "c1": ["m0"], "c2": ["root"]})
    s1 = {("k", ""): "c1", ("t", "m"): "m1"}
    s2 = {("k", ""): "c2", ("t", "m"): "m1"}
    assert _difference(events, s1, s2) == set()
    s1.pop(("t", "m"))
    s2.pop(("t", "m"))
    assert _difference(events, s1, s2) == {"m0"}


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
    """With no auth-difference candidate the unconflicted events are never read."""
    parents = {"root": [], "a": ["root"], "b": ["root"]} | {f"m{i}": ["root"] for i in range(1000)}
    events = _CountingEvents(make_events(parents))
    s1 = {("t", f"m{i}"): f"m{i}" for i in range(1000)} | {("k", ""): "a"}
    s2 = {("t", f"m{i}"): f"m{i}" for i in range(1000)} | {("k", ""): "b"}
    assert _difference(events, s1, s2) == set()
    assert events.reads <= {"root", "a", "b"}


def test_unconflicted_candidates_found_by_key_without_reading_the_state() -> None:
    """Set 1's conflicted event cites an unconflicted event (a member event, say) that
    set 2's does not: a candidate, struck out by looking up its own key in U — the
    other 1,000 unconflicted events are never read."""
    parents = {"root": [], "u": ["root"], "a": ["u"], "b": ["root"]} | {f"m{i}": ["root"] for i in range(1000)}
    events = _CountingEvents(make_events(parents))
    common = {("t", f"m{i}"): f"m{i}" for i in range(1000)} | {("t", "u"): "u"}
    assert _difference(events, common | {("k", ""): "a"}, common | {("k", ""): "b"}) == set()
    assert events.reads <= {"root", "u", "a", "b"}


# --------------------------------------------------------------------------------------
# Reverse topological power ordering
# --------------------------------------------------------------------------------------


def _make_power(events: dict[str, dict], *names: str) -> None:
    """Turn ``names`` into power events: kicks (leave, sender ≠ state_key)."""
    for e in names:
        events[e].update(type="m.room.member", content={"membership": "leave"})


def test_power_graph_walks_through_the_full_conflicted_set_only() -> None:
    """
        x2 (ts 1) ─► c ─► x1 (ts 9)      x1, x2 power events in F; c is not in F

    The spec's text sorts X by "the DAG formed by auth events", in which x1 is x2's
    ancestor (through c), so x1 would come first. Synapse and ruma walk auth_events
    through F only: c is neither added nor followed, x1 and x2 are unrelated in the
    graph, and the earlier timestamp goes first: x2, then x1.
    """
    events = make_events({"x1": [], "c": ["x1"], "x2": ["c"]}, ts={"x1": 9, "c": 5, "x2": 1})
    _make_power(events, "x1", "x2")
    ctx = ctx_for(events)
    graph = sr._power_graph(ctx, {"x1", "x2"})
    assert graph == {"x1": (), "x2": ()}
    assert sr._reverse_topological_power_order(ctx, graph) == ["x2", "x1"]
    # With c in F, c joins the graph (reached from x2), and the edges order x1 first.
    graph = sr._power_graph(ctx, {"x1", "x2", "c"})
    assert graph == {"x1": (), "c": ("x1",), "x2": ("c",)}
    assert sr._reverse_topological_power_order(ctx, graph) == ["x1", "c", "x2"]


def test_power_graph_adds_full_conflicted_ancestors_reached_through_f() -> None:
    """
        t ─► p ─┬─► j ─► root       p: a power event; F = {p, j, t, q}
                └─► k ─► q          j: in F, p's auth event -> in the graph
                                    k: not in F -> neither added nor followed, so q
                                       (in F, an ancestor of p only through k) is not
                                       in the graph; t: not below p, not a power event
    """
    events = make_events({"root": [], "j": ["root"], "q": ["root"], "k": ["q"], "p": ["j", "k"], "t": ["p"]})
    events["p"].update(type="m.room.join_rules", state_key="")
    ctx = ctx_for(events)
    graph = sr._power_graph(ctx, {"p", "j", "t", "q"})
    assert graph == {"p": ("j",), "j": ()}


@st.composite
def power_cases(draw):
    n = draw(st.integers(1, 16))
    parents = {f"e{i}": sorted({f"e{j}" for j in draw(st.lists(st.integers(0, i - 1), max_size=3))} if i else set()) for i in range(n)}
    ts = {e: draw(st.integers(0, 5)) for e in parents}
    events = make_events(parents, ts)
    full_conflicted = {e for e in parents if draw(st.booleans())}
    power = {e for e in full_conflicted if draw(st.booleans())}
    _make_power(events, *power)
    return events, full_conflicted, power


@settings(max_examples=200, deadline=None)
@given(power_cases())
def test_power_order_is_smallest_topological_order_of_the_graph(case) -> None:
    """The graph's nodes are the power events plus the F events reachable from them
    along auth edges between F events; each step emits the smallest event all of whose
    direct auth events in the graph are placed (all senders have power 0 here: ts,
    then ID)."""
    events, full_conflicted, power = case
    nodes = set(power)
    stack = list(power)
    while stack:
        for a in events[stack.pop()]["auth_events"]:
            if a in full_conflicted and a not in nodes:
                nodes.add(a)
                stack.append(a)
    ctx = ctx_for(events)
    graph = sr._power_graph(ctx, full_conflicted)
    assert graph.keys() == nodes
    for node, edges in graph.items():
        assert set(edges) == set(events[node]["auth_events"]) & full_conflicted
    order = sr._reverse_topological_power_order(ctx, graph)
    placed: set[str] = set()
    for e in order:
        ready = [x for x in nodes - placed if set(graph[x]) <= placed]
        assert e == min(ready, key=lambda x: (events[x]["origin_server_ts"], x))
        placed.add(e)
    assert placed == nodes


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
