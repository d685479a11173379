"""Repository functions of ``storage/rooms.py`` on an in-memory database, without trio."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from storage import rooms as R
from storage.schema import event_auth_edges, event_edges, state_snapshots

from .rooms import CREATE, ROOM_VERSION, LinearRoom, _with, make_event, run

ROOM = "!room:a.example"


def create_checkpoint(room_id: str = ROOM, **changes) -> tuple[R.Checkpoint, R.NewEvent]:
    create = make_event(f"{room_id}/create", room_id, type="m.room.create", state_key="")
    create = _with(create, state_delta={CREATE: create.event_id})
    cp = R.Checkpoint(
        room_id=room_id,
        room_version=ROOM_VERSION,
        events=(create,),
        forward_extremities=frozenset({create.event_id}),
        current_state_delta={CREATE: create.event_id},
    )
    return _with(cp, **changes) if changes else cp, create


def test_checkpoint_then_load_room(conn: sa.Connection) -> None:
    room = LinearRoom(conn, ROOM)
    alice = room.set_state("m.room.member", "@alice:a.example", {"membership": "join"})
    room.message()
    topic = room.set_state("m.room.topic", "", {"topic": "storage"})
    last = room.message("last")

    record = run(conn, R.load_room, ROOM)
    assert record is not None
    assert record.room_id == ROOM and record.room_version == ROOM_VERSION
    assert record.current_state == {
        CREATE: room.create_id,
        ("m.room.member", "@alice:a.example"): alice.event_id,
        ("m.room.topic", ""): topic.event_id,
    }
    assert record.current_state_events[topic.event_id] == topic.json
    assert record.current_state_events[alice.event_id]["content"] == {"membership": "join"}
    assert set(record.current_state_events) == set(record.current_state.values())
    assert record.forward_extremities == frozenset({last.event_id})
    assert record.extremity_depths == {last.event_id: last.depth}
    # A message shares the snapshot of the state event before it.
    assert record.extremity_state_refs == {last.event_id: topic.event_id}
    assert record.max_stream_ordering == 5


def test_load_room_of_unknown_room_is_none(conn: sa.Connection) -> None:
    assert run(conn, R.load_room, "!nope:a.example") is None


def test_room_exists_and_list_room_ids(conn: sa.Connection) -> None:
    LinearRoom(conn, "!b:a.example")
    LinearRoom(conn, "!a:a.example")
    assert run(conn, R.room_exists, "!a:a.example")
    assert not run(conn, R.room_exists, "!c:a.example")
    assert run(conn, R.list_room_ids) == ["!a:a.example", "!b:a.example"]


def test_checkpoint_returns_increasing_stream_orderings_and_writes_edges(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    assert run(conn, R.checkpoint, cp) == {create.event_id: 1}
    first = make_event("m1", ROOM, depth=2, prev_events=(create.event_id,), auth_events=(create.event_id,))
    second = make_event(
        "m2",
        ROOM,
        depth=3,
        prev_events=(first.event_id, first.event_id),  # a repeated prev is stored once
        auth_events=(create.event_id, "$not-stored-yet"),
    )
    cp = R.Checkpoint(
        room_id=ROOM,
        room_version=ROOM_VERSION,
        events=(_with(first, state_base_ref=create.event_id), _with(second, state_base_ref=create.event_id)),
        forward_extremities=frozenset({second.event_id}),
    )
    assert run(conn, R.checkpoint, cp) == {first.event_id: 2, second.event_id: 3}
    edges = run(conn, lambda c: c.execute(sa.select(event_edges)).all())
    assert sorted(edges) == sorted([(first.event_id, create.event_id), (second.event_id, first.event_id)])
    of_second = sa.select(event_auth_edges).where(event_auth_edges.c.event_id == second.event_id)
    auth = run(conn, lambda c: c.execute(of_second).all())
    assert sorted(auth) == sorted([(second.event_id, create.event_id), (second.event_id, "$not-stored-yet")])


def test_messages_share_the_state_ref_and_write_no_snapshot(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    before = run(conn, lambda c: c.execute(sa.select(sa.func.count()).select_from(state_snapshots)).scalar())
    messages = [room.message(str(i)) for i in range(20)]
    after = run(conn, lambda c: c.execute(sa.select(sa.func.count()).select_from(state_snapshots)).scalar())
    assert after == before
    stored = run(conn, R.get_events, [m.event_id for m in messages])
    assert {e.state_after_ref for e in stored.values()} == {room.create_id}


def test_get_events(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    messages = [room.message(f"m{i}") for i in range(1200)]  # more than one IN (...) chunk
    wanted = [m.event_id for m in messages] + ["$missing"]
    found = run(conn, R.get_events, wanted)
    assert set(found) == {m.event_id for m in messages}
    one = found[messages[7].event_id]
    assert one.json == messages[7].json
    assert one.room_id == room.room_id and one.depth == messages[7].depth
    assert one.stream_ordering == 9 and one.outlier is False and one.soft_failed is False
    assert one.rejection_reason is None
    assert run(conn, R.get_events, []) == {}


def test_flags_are_stored(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    outlier = make_event("o", ROOM, type="m.room.member", state_key="@x:b.example", outlier=True)
    rejected = make_event("r", ROOM, prev_events=(create.event_id,), rejection_reason="auth 5.3")
    soft = make_event("s", ROOM, prev_events=(create.event_id,), soft_failed=True)
    cp = R.Checkpoint(
        room_id=ROOM,
        room_version=ROOM_VERSION,
        events=(outlier, rejected, soft),
        forward_extremities=None,
        current_state_delta={("m.room.member", "@x:b.example"): outlier.event_id},
    )
    run(conn, R.checkpoint, cp)
    found = run(conn, R.get_events, [outlier.event_id, rejected.event_id, soft.event_id])
    assert found[outlier.event_id].outlier and found[outlier.event_id].state_after_ref is None
    assert found[rejected.event_id].rejection_reason == "auth 5.3"
    assert found[soft.event_id].soft_failed
    record = run(conn, R.load_room, ROOM)
    assert record.forward_extremities == frozenset({create.event_id})  # None left them unchanged
    assert record.current_state[("m.room.member", "@x:b.example")] == outlier.event_id


def test_get_room_events_in_stream_order(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    messages = [room.message(str(i)) for i in range(10)]
    LinearRoom(conn, "!other:a.example").message()
    events = run(conn, R.get_room_events, room.room_id)
    assert [e.event_id for e in events] == [room.create_id] + [m.event_id for m in messages]
    page = run(conn, lambda c: R.get_room_events(c, room.room_id, after=events[3].stream_ordering, limit=2))
    assert [e.event_id for e in page] == [messages[3].event_id, messages[4].event_id]


def test_txn_ids(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    txn = R.TxnRecord(user_id="@alice:a.example", device_id="DEV", txn_id="t1")
    assert run(conn, R.get_txn_event, ROOM, txn) is None
    ev = make_event("m", ROOM, prev_events=(create.event_id,), state_base_ref=create.event_id)
    cp = R.Checkpoint(
        room_id=ROOM,
        room_version=ROOM_VERSION,
        events=(ev,),
        forward_extremities=frozenset({ev.event_id}),
        txn=txn,
    )
    run(conn, R.checkpoint, cp)
    assert run(conn, R.get_txn_event, ROOM, txn) == ev.event_id
    # Scoped to the room: the same txn ID in another room is another request.
    assert run(conn, R.get_txn_event, "!other:a.example", txn) is None
    assert run(conn, R.get_txn_event, ROOM, _with(txn, device_id="OTHER")) is None

    again = make_event("m-again", ROOM, prev_events=(ev.event_id,), state_base_ref=create.event_id)
    with pytest.raises(R.DuplicateTxnError):
        run(conn, R.checkpoint, _with(cp, events=(again,), forward_extremities=frozenset({again.event_id})))
    # The failed checkpoint's transaction rolled back: the event is not stored.
    assert run(conn, R.get_events, [again.event_id]) == {}
    assert run(conn, R.load_room, ROOM).forward_extremities == frozenset({ev.event_id})


def test_duplicate_events_are_refused(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    with pytest.raises(R.DuplicateEventError, match="already stored"):
        run(conn, R.checkpoint, cp)
    ev = make_event("m", ROOM, prev_events=(create.event_id,))
    twice = R.Checkpoint(room_id=ROOM, room_version=ROOM_VERSION, events=(ev, ev), forward_extremities=None)
    with pytest.raises(R.DuplicateEventError, match="twice"):
        run(conn, R.checkpoint, twice)
    assert run(conn, R.get_events, [ev.event_id]) == {}


def test_checkpoints_no_actor_may_send_are_refused(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    with pytest.raises(R.RoomVersionMismatchError):
        run(conn, R.checkpoint, R.Checkpoint(room_id=ROOM, room_version="10", events=(), forward_extremities=None))
    other_room = make_event("x", "!other:a.example")
    with pytest.raises(ValueError, match="checkpoint is for"):
        run(conn, R.checkpoint, _with(cp, events=(other_room,)))
    rejected = make_event("r", ROOM, prev_events=(create.event_id,), rejection_reason="auth")
    with pytest.raises(ValueError, match="never a forward extremity"):
        run(conn, R.checkpoint, _with(cp, events=(rejected,), forward_extremities=frozenset({rejected.event_id})))
    soft = make_event("s", ROOM, type="m.room.topic", state_key="", soft_failed=True)
    with pytest.raises(ValueError, match="never in the current state"):
        run(
            conn,
            R.checkpoint,
            _with(cp, events=(soft,), forward_extremities=None, current_state_delta={("m.room.topic", ""): soft.event_id}),
        )
    with pytest.raises(ValueError, match="txn"):
        run(conn, R.checkpoint, _with(cp, events=(), txn=R.TxnRecord(user_id="@a:a", device_id="D", txn_id="t")))
    # A forward extremity that is not stored fails its foreign key.
    with pytest.raises(sqlite3.IntegrityError):
        run(conn, R.checkpoint, _with(cp, events=(), forward_extremities=frozenset({"$nowhere"})))
    assert run(conn, R.load_room, ROOM).forward_extremities == frozenset({create.event_id})


def test_unknown_state_refs(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    ev = make_event("t", ROOM, type="m.room.topic", state_key="", state_base_ref="$nowhere")
    ev = _with(ev, state_delta={("m.room.topic", ""): ev.event_id})
    with pytest.raises(R.UnknownStateRefError):
        run(conn, R.checkpoint, _with(cp, events=(ev,), forward_extremities=None))
    # An event sharing an unknown ref fails the state_after_ref foreign key.
    shared = make_event("m", ROOM, state_base_ref="$nowhere")
    with pytest.raises(sqlite3.IntegrityError):
        run(conn, R.checkpoint, _with(cp, events=(shared,), forward_extremities=None))
    with pytest.raises(R.UnknownStateRefError):
        run(conn, R.get_state, "$nowhere")


def test_removals_from_state_and_current_state(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    topic = room.set_state("m.room.topic", "", {"topic": "t"})
    room.set_state("m.room.name", "", {"name": "n"})
    dropped = room.remove_state("m.room.topic", "")
    assert ("m.room.topic", "") not in run(conn, R.get_state, dropped.event_id)
    assert run(conn, R.get_state, topic.event_id)[("m.room.topic", "")] == topic.event_id
    record = run(conn, R.load_room, room.room_id)
    assert ("m.room.topic", "") not in record.current_state
    assert record.current_state == room.state


def test_multi_event_checkpoint_bases_on_its_own_events(conn: sa.Connection) -> None:
    """Room creation: create, member, power levels, join rules in one checkpoint."""
    create = make_event("c", ROOM, type="m.room.create", state_key="")
    create = _with(create, state_delta={CREATE: create.event_id})
    chain = [create]
    expected = {CREATE: create.event_id}
    for i, (type_, key) in enumerate(
        [("m.room.member", "@alice:a.example"), ("m.room.power_levels", ""), ("m.room.join_rules", "")]
    ):
        ev = make_event(f"s{i}", ROOM, type=type_, state_key=key, depth=i + 2, prev_events=(chain[-1].event_id,))
        ev = _with(ev, state_base_ref=chain[-1].event_id, state_delta={(type_, key): ev.event_id})
        chain.append(ev)
        expected[(type_, key)] = ev.event_id
    cp = R.Checkpoint(
        room_id=ROOM,
        room_version=ROOM_VERSION,
        events=tuple(chain),
        forward_extremities=frozenset({chain[-1].event_id}),
        current_state_delta=expected,
    )
    assert list(run(conn, R.checkpoint, cp).values()) == [1, 2, 3, 4]
    assert run(conn, R.get_state, chain[-1].event_id) == expected
    assert run(conn, R.load_room, ROOM).current_state == expected


def test_json_round_trips_losslessly(conn: sa.Connection) -> None:
    cp, create = create_checkpoint()
    run(conn, R.checkpoint, cp)
    content = {
        "big": 2**70,  # legal in room versions 1-5; orjson cannot encode it
        "neg": -(2**64) - 1,
        "float": 1.5,
        "unicode": "snowman ☃ and \U0001f600",
        "digits": "12345678901234567890123",  # a 20-digit run inside a string
        "i64": 2**63 - 1,
    }
    ev = make_event("json", ROOM, content=content, prev_events=(create.event_id,))
    plain = make_event("plain", ROOM, content={"n": 2**53}, prev_events=(create.event_id,))
    run(conn, R.checkpoint, _with(cp, events=(ev, plain), forward_extremities=None))
    found = run(conn, R.get_events, [ev.event_id, plain.event_id])
    assert found[ev.event_id].json == ev.json
    assert found[ev.event_id].json["content"]["big"] == 2**70
    assert type(found[ev.event_id].json["content"]["big"]) is int
    assert found[plain.event_id].json == plain.json


def test_checkpoint_outside_a_transaction_is_refused(conn: sa.Connection) -> None:
    cp, _ = create_checkpoint()
    with pytest.raises(RuntimeError, match="inside a transaction"):
        R.checkpoint(conn, cp)


def test_count_bytes(conn: sa.Connection) -> None:
    empty = run(conn, R.count_bytes)
    room = LinearRoom(conn)
    for i in range(200):
        room.message("x" * 500)
    assert run(conn, R.count_bytes) > empty + 200 * 500
    by_table = run(conn, R.count_bytes_by_table)
    assert by_table["events"] > 200 * 500
    assert "events_room_stream" in by_table


def test_load_room_with_10000_events_and_1000_members(conn: sa.Connection) -> None:
    """load_room reads current state and extremities, not the room's history."""
    import time

    room = LinearRoom(conn)
    for i in range(1000):
        room.set_state("m.room.member", f"@user{i}:b.example", {"membership": "join", "displayname": f"User {i}"})
    for i in range(9000):
        room.message(f"message {i}")
    started = time.perf_counter()
    record = run(conn, R.load_room, room.room_id)
    elapsed = time.perf_counter() - started
    assert record.max_stream_ordering == 10_001
    assert len(record.current_state) == 1001 and len(record.current_state_events) == 1001
    assert record.current_state == room.state
    assert elapsed < 1.0  # measured ~15 ms; a 60x margin for a shared machine
