"""protocol.dag: forward extremities, prev-event selection, depth and batch order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomactors.protocol.dag import (
    MAX_PREV_EVENTS,
    next_depth,
    select_prev_events,
    topo_sort,
    update_forward_extremities,
)
from roomactors.protocol.pdu import MAX_DEPTH, parse_pdu


def pair(item: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
    return item


# --- forward extremities ------------------------------------------------------------
#
#        A            {A}
#       / \           {B}      B cites A
#      B   C          {B, C}   C cites A: a fork
#       \ /           {D}      D cites B and C: merged
#        D


def test_linear_event_replaces_its_prev() -> None:
    assert update_forward_extremities(frozenset({"A"}), "B", ["A"]) == {"B"}


def test_fork_then_merge() -> None:
    ext = update_forward_extremities(frozenset(), "A", [])
    ext = update_forward_extremities(ext, "B", ["A"])
    ext = update_forward_extremities(ext, "C", ["A"])
    assert ext == {"B", "C"}
    ext = update_forward_extremities(ext, "D", ["B", "C"])
    assert ext == {"D"}


def test_prevs_that_are_no_extremity_are_ignored() -> None:
    # C cites B (an extremity) and X (older, or rejected: never an extremity).
    assert update_forward_extremities(frozenset({"B", "E"}), "C", ["B", "X"]) == {"C", "E"}


def test_an_event_already_cited_by_a_known_event_is_no_leaf() -> None:
    assert update_forward_extremities(frozenset({"C"}), "B", ["A"], referenced=True) == {"C"}


def test_inputs_are_not_mutated() -> None:
    old = frozenset({"A"})
    prevs = ["A"]
    update_forward_extremities(old, "B", prevs)
    assert old == {"A"} and prevs == ["A"]


# --- prev-event selection -----------------------------------------------------------


def test_select_prev_events_deepest_first_then_by_id() -> None:
    depths = {"$a": 3, "$b": 7, "$c": 7, "$d": 1}
    assert select_prev_events(depths.keys(), depths) == ("$b", "$c", "$a", "$d")


def test_select_prev_events_is_capped() -> None:
    depths = {f"$e{i:02}": i for i in range(30)}
    chosen = select_prev_events(depths.keys(), depths)
    assert len(chosen) == MAX_PREV_EVENTS == 10
    assert chosen == tuple(f"$e{i:02}" for i in range(29, 19, -1))
    assert select_prev_events(depths.keys(), depths, limit=2) == ("$e29", "$e28")


def test_select_prev_events_rejects_a_silly_limit() -> None:
    with pytest.raises(ValueError):
        select_prev_events(["$a"], {"$a": 1}, limit=0)


# --- depth --------------------------------------------------------------------------


def test_next_depth() -> None:
    assert next_depth([]) == 1  # the create event
    assert next_depth([1]) == 2
    assert next_depth([4, 9, 2]) == 10


def test_next_depth_is_clamped_to_the_format_maximum() -> None:
    assert next_depth([2**53 - 1]) == 2**53 - 1
    assert next_depth([2**53 - 1], strict_canonical_json=False) == 2**53
    assert next_depth([MAX_DEPTH], strict_canonical_json=False) == MAX_DEPTH


# --- topological order --------------------------------------------------------------


def test_topo_sort_puts_prevs_first_and_keeps_arrival_order_otherwise() -> None:
    # Received as D, B, X, C, A for the DAG A <- B <- D, A <- C <- D; X is unrelated.
    batch = [("D", ("B", "C")), ("B", ("A",)), ("X", ("old",)), ("C", ("A",)), ("A", ("root",))]
    order = [eid for eid, _ in topo_sort(batch, pair)]
    assert order == ["X", "A", "B", "C", "D"]


def test_topo_sort_drops_repeated_ids_and_survives_cycles() -> None:
    batch = [("A", ("B",)), ("B", ("A",)), ("A", ()), ("C", ())]
    order = [eid for eid, _ in topo_sort(batch, pair)]
    assert order == ["C", "A", "B"]


def test_topo_sort_ignores_self_references() -> None:
    assert topo_sort([("A", ("A",))], pair) == [("A", ("A",))]


def test_topo_sort_on_parsed_pdus(make_pdu) -> None:
    version = "11"
    a = parse_pdu(make_pdu(version, prev=["root"]), version)
    b_json = make_pdu(version, prev=[], depth=6)
    b_json["prev_events"] = [a.event_id]
    b = parse_pdu(b_json, version)
    assert b.prev_events == (a.event_id,)
    assert topo_sort([b, a], lambda p: (p.event_id, p.prev_events)) == [a, b]


@given(st.integers(min_value=1, max_value=40), st.randoms(use_true_random=False))
def test_topo_sort_property_every_prev_in_batch_comes_first(n: int, rnd: random.Random) -> None:
    # A random DAG: each event cites up to 3 earlier ones; shuffled on arrival.
    events = [(f"E{i}", tuple(f"E{j}" for j in rnd.sample(range(i), min(i, rnd.randint(0, 3))))) for i in range(n)]
    arrival = events[:]
    rnd.shuffle(arrival)
    order = topo_sort(arrival, pair)
    position = {eid: i for i, (eid, _) in enumerate(order)}
    assert sorted(position) == sorted(eid for eid, _ in events)
    for eid, prevs in events:
        for p in prevs:
            assert position[p] < position[eid]
