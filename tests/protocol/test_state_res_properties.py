"""Properties of ``resolve_state`` on random, valid, forked rooms (hypothesis).

A room is grown by random operations (joins, leaves, kicks/bans, power-level and
join-rule changes, topics) on random forks: each operation picks one or two
existing events as ``prev_events`` — so the state before it is itself a
resolution — and is kept only if the auth rules allow it there. Then the states
after a few random events are resolved.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomactors.protocol.errors import AuthError
from roomactors.protocol.state_res import resolve_state
from state_res_dag import ALICE, BOB, CHARLIE, EVE, JOIN_RULES, MEMBER, POWER, TOPIC, ZARA, initial_room

USERS = [ALICE, BOB, CHARLIE, ZARA, EVE]
VERSIONS = ["1", "2", "5", "10", "11", "12"]


@st.composite
def forked_rooms(draw):
    version = draw(st.sampled_from(VERSIONS))
    dag = initial_room(version)
    names = ["START"]
    for i in range(draw(st.integers(2, 24))):
        prev = sorted(set(draw(st.lists(st.sampled_from(names[-6:]), min_size=1, max_size=2))))
        sender = draw(st.sampled_from([ALICE, *USERS]))
        kind = draw(st.sampled_from(["topic", "power", "join", "leave", "ban", "kick", "join_rules"]))
        target = draw(st.sampled_from(USERS))
        if kind == "topic":
            args = (TOPIC, sender, {"topic": f"t{i}"}, "")
        elif kind == "power":
            levels = {u: draw(st.sampled_from([0, 50, 100])) for u in draw(st.sets(st.sampled_from(USERS[1:]), max_size=2))}
            args = (POWER, sender, dag.power(levels), "")
        elif kind in ("join", "leave"):
            args = (MEMBER, sender, {"membership": kind}, sender)
        elif kind == "ban":
            args = (MEMBER, sender, {"membership": "ban"}, target)
        elif kind == "kick":
            args = (MEMBER, sender, {"membership": "leave"}, target)
        else:
            args = (JOIN_RULES, sender, {"join_rule": draw(st.sampled_from(["public", "invite"]))}, "")
        name = f"E{i}"
        try:
            dag.add(name, *args, prev=prev)
        except AuthError:
            continue
        names.append(name)
    tips = draw(st.lists(st.sampled_from(names), min_size=1, max_size=min(3, len(names)), unique=True))
    return dag, [dag.state(t) for t in tips]


_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(forked_rooms())
def test_order_of_state_sets_does_not_matter(case) -> None:
    dag, sets = case
    expected = resolve_state(dag.version, sets, dag.events)
    for perm in itertools.permutations(sets):
        assert resolve_state(dag.version, list(perm), dag.events) == expected


@_settings
@given(forked_rooms())
def test_single_and_identical_sets_resolve_to_themselves(case) -> None:
    dag, sets = case
    for s in sets:
        assert resolve_state(dag.version, [s], dag.events) == s
        assert resolve_state(dag.version, [s, dict(s)], dag.events) == s
        assert resolve_state(dag.version, [s, s, s], dag.events) == s


@_settings
@given(forked_rooms())
def test_repeating_a_state_set_does_not_matter(case) -> None:
    dag, sets = case
    expected = resolve_state(dag.version, sets, dag.events)
    assert resolve_state(dag.version, sets + [sets[0]], dag.events) == expected


@_settings
@given(forked_rooms())
def test_result_keys_come_from_the_inputs_or_their_auth_chains(case) -> None:
    """Every resolved value is an event we were given, stored under its own key."""
    dag, sets = case
    for key, eid in resolve_state(dag.version, sets, dag.events).items():
        event = dag.events[eid]
        assert (event["type"], event["state_key"]) == key
