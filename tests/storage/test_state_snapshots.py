"""State snapshots: skip deltas, the MAX_CHAIN bound, full snapshots, forks and removals.

Every test keeps a model (ref -> expected state map) and compares ``get_state``
against it, then checks the stored invariants (docstring of ``storage/rooms.py``):
a snapshot's base has ``seq & (seq - 1)``, ``chain_length`` is the base's plus one and
never exceeds ``MAX_CHAIN``, full snapshots have ``seq`` 0 and no removal rows.
"""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import rooms as R
from storage.db import create_engine
from storage.migrations import migrate
from storage.schema import state_deltas, state_snapshots

from .rooms import CREATE, ROOM_VERSION, LinearRoom, _with, make_event, run

ROOM = "!room:a.example"


def snapshots(conn: sa.Connection) -> dict[str, sa.Row]:
    rows = run(conn, lambda c: c.execute(sa.select(state_snapshots)).all())
    return {row.event_id: row for row in rows}


def delta_row_count(conn: sa.Connection) -> int:
    return run(conn, lambda c: c.execute(sa.select(sa.func.count()).select_from(state_deltas)).scalar())


def check_invariants(conn: sa.Connection) -> dict[str, sa.Row]:
    rows = snapshots(conn)
    for row in rows.values():
        assert row.chain_length <= R.MAX_CHAIN
        if row.base_ref is None:
            assert row.seq == 0 and row.chain_length == 0
        else:
            base = rows[row.base_ref]
            assert base.seq == row.seq & (row.seq - 1)
            assert row.chain_length == base.chain_length + 1
    nulls_in_full = run(
        conn,
        lambda c: c.execute(
            sa.select(sa.func.count())
            .select_from(state_deltas.join(state_snapshots, state_snapshots.c.event_id == state_deltas.c.snapshot_ref))
            .where(state_snapshots.c.base_ref.is_(None), state_deltas.c.event_id.is_(None))
        ).scalar(),
    )
    assert nulls_in_full == 0
    return rows


def test_linear_room_states_chain_lengths_and_growth(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    n = 1000
    for i in range(n):
        if i % 10 == 9:
            room.set_state("m.room.topic", "", {"topic": str(i)})
        else:
            room.set_state("m.room.member", f"@u{i}:b.example", {"membership": "join"})
        if i % 3 == 0:
            room.message()
    refs = list(room.model)
    for ref in refs[:40] + refs[40::37] + refs[-40:]:  # every seq shape near both ends, a sample between
        assert run(conn, R.get_state, ref) == room.model[ref]
    rows = check_invariants(conn)
    # Chains are popcount(seq) long: at most log2(n) + 1 hops.
    assert max(row.chain_length for row in rows.values()) <= math.floor(math.log2(n)) + 1
    # Storage grows like n·log2(n)/2 rows, not like |state| per state event.
    assert delta_row_count(conn) <= n * (math.log2(n) / 2 + 2)


def test_full_snapshots_bound_the_chain(conn: sa.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "MAX_CHAIN", 3)
    room = LinearRoom(conn)
    for i in range(300):
        room.set_state("m.room.member", f"@u{i % 50}:b.example", {"membership": "join", "n": i})
        if i % 7 == 0:
            room.remove_state("m.room.member", f"@u{(i * 3) % 50}:b.example")
    rows = check_invariants(conn)
    assert max(row.chain_length for row in rows.values()) == 3
    full = [row for row in rows.values() if row.base_ref is None]
    assert len(full) > 5  # the create event's snapshot and the ones written to cut chains
    for ref, expected in room.model.items():
        assert run(conn, R.get_state, ref) == expected
    # A full snapshot holds every key of its state and nothing else.
    for row in full:
        count = run(
            conn,
            lambda c: c.execute(
                sa.select(sa.func.count()).select_from(state_deltas).where(state_deltas.c.snapshot_ref == row.event_id)
            ).scalar(),
        )
        assert count == len(room.model[row.event_id])


def test_forks_and_merges(conn: sa.Connection) -> None:
    """Two branches from one state, then a merge written as a delta against one branch."""
    room = LinearRoom(conn)
    for i in range(5):
        room.set_state("m.room.member", f"@u{i}:b.example")
    fork_ref, fork_state = room.ref, dict(room.state)
    tips = {}
    for branch in ("a", "b"):
        ref, state, prev = fork_ref, dict(fork_state), room.extremity
        for i in range(12):
            key = ("m.room.member", f"@{branch}{i}:b.example")
            ev = make_event(f"{branch}{i}", ROOM, type=key[0], state_key=key[1], prev_events=(prev,), depth=10 + i)
            ev = _with(ev, state_base_ref=ref, state_delta={key: ev.event_id})
            cp = R.Checkpoint(room_id=ROOM, room_version=ROOM_VERSION, events=(ev,), forward_extremities=None)
            run(conn, R.checkpoint, cp)
            state[key] = ev.event_id
            ref = prev = ev.event_id
            assert run(conn, R.get_state, ref) == state
        tips[branch] = (ref, state)
    (ref_a, state_a), (ref_b, state_b) = tips["a"], tips["b"]
    resolved = {**state_a, **state_b}
    merge = make_event("merge", ROOM, prev_events=(ref_a, ref_b), depth=30)
    delta = {k: v for k, v in resolved.items() if state_a.get(k) != v}
    merge = _with(merge, state_base_ref=ref_a, state_delta=delta)
    cp = R.Checkpoint(
        room_id=ROOM,
        room_version=ROOM_VERSION,
        events=(merge,),
        forward_extremities=frozenset({merge.event_id}),
        current_state_delta=resolved,
    )
    run(conn, R.checkpoint, cp)
    assert run(conn, R.get_state, merge.event_id) == resolved
    assert run(conn, R.get_state, ref_a) == state_a
    assert run(conn, R.get_state, ref_b) == state_b
    assert run(conn, R.load_room, ROOM).current_state == resolved
    check_invariants(conn)


KEYS = [("m.room.member", f"@u{i}:b.example") for i in range(6)] + [("m.room.topic", ""), ("m.room.name", "")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_chain=st.sampled_from([1, 2, 3, 32]),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10_000),  # which existing ref to base on
            st.dictionaries(st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 3)), min_size=0, max_size=4),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_any_snapshot_dag_reads_back_exactly(max_chain: int, steps: list) -> None:
    """Random bases (forks anywhere), random deltas with removals; every ref reads back."""
    engine = create_engine(":memory:", writer=True)
    original = R.MAX_CHAIN
    R.MAX_CHAIN = max_chain
    try:
        with engine.connect() as conn:
            migrate(conn)
            create = make_event("create", ROOM, type="m.room.create", state_key="")
            create = _with(create, state_delta={CREATE: create.event_id})
            run(
                conn,
                R.checkpoint,
                R.Checkpoint(room_id=ROOM, room_version=ROOM_VERSION, events=(create,), forward_extremities=None),
            )
            model = {create.event_id: {CREATE: create.event_id}}
            refs = [create.event_id]
            for i, (pick, changes) in enumerate(steps):
                base = refs[pick % len(refs)]
                ev = make_event(f"e{i}", ROOM, depth=i + 2)
                delta = {k: (None if v is None else f"$v{v}") for k, v in changes.items()}
                ev = _with(ev, state_base_ref=base, state_delta=delta)
                cp = R.Checkpoint(room_id=ROOM, room_version=ROOM_VERSION, events=(ev,), forward_extremities=None)
                run(conn, R.checkpoint, cp)
                if delta:
                    state = dict(model[base])
                    for k, v in delta.items():
                        if v is None:
                            state.pop(k, None)
                        else:
                            state[k] = v
                    model[ev.event_id] = state
                    refs.append(ev.event_id)
                stored = run(conn, R.get_events, [ev.event_id])[ev.event_id]
                assert stored.state_after_ref == (ev.event_id if delta else base)
            for ref, expected in model.items():
                assert run(conn, R.get_state, ref) == expected
            check_invariants(conn)
    finally:
        R.MAX_CHAIN = original
        engine.dispose()
