"""The room-read repository functions of ``storage/timeline.py`` (``/state``,
``/members``, ``/event``, ``/context``, ``/messages``), on a :class:`LinearRoom`."""

from __future__ import annotations

import sqlalchemy as sa

from storage import rooms as R
from storage import timeline as T
from storage.schema import forgotten_rooms

from .rooms import ROOM_VERSION, LinearRoom, run

ALICE = "@alice:a.example"
BOB = "@bob:a.example"
MEMBER = "m.room.member"


def member(room: LinearRoom, user: str, membership: str, **extra: str) -> R.NewEvent:
    return room.set_state(MEMBER, user, {"membership": membership, **extra})


def ordering(conn: sa.Connection, event_id: str) -> int:
    ev = run(conn, T.get_event, event_id)
    assert ev is not None
    return ev.stream_ordering


def test_get_membership_and_last_join(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    member(room, ALICE, "join")
    assert run(conn, T.get_membership, room.room_id, BOB) is None
    assert run(conn, T.get_last_join_ordering, room.room_id, BOB) is None
    member(room, BOB, "invite")
    assert run(conn, T.get_last_join_ordering, room.room_id, BOB) is None
    first_join = member(room, BOB, "join")
    room.message()
    second_join = member(room, BOB, "join", displayname="Bob")
    leave = member(room, BOB, "leave")
    m = run(conn, T.get_membership, room.room_id, BOB)
    assert m is not None and m.membership == "leave" and m.event_id == leave.event_id
    assert m.stream_ordering == ordering(conn, leave.event_id)
    last = run(conn, T.get_last_join_ordering, room.room_id, BOB)
    assert last == ordering(conn, second_join.event_id) > ordering(conn, first_join.event_id)
    assert run(conn, T.get_room_version, room.room_id) == ROOM_VERSION
    assert run(conn, T.get_room_version, "!nope:a.example") is None


def test_is_forgotten(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    assert not run(conn, T.is_forgotten, BOB, room.room_id)
    run(conn, lambda c: c.execute(sa.insert(forgotten_rooms).values(user_id=BOB, room_id=room.room_id)))
    assert run(conn, T.is_forgotten, BOB, room.room_id)
    assert not run(conn, T.is_forgotten, ALICE, room.room_id)


def test_state_ids_at_positions(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    join = member(room, ALICE, "join")
    after_join = dict(room.state)
    msg = room.message()
    name = room.set_state("m.room.name", "", {"name": "x"})
    assert run(conn, T.get_state_ids_at, room.room_id, 0) == {}
    assert run(conn, T.get_state_ids_at, room.room_id, ordering(conn, join.event_id)) == after_join
    # A message shares the state before it; the position after it sees the same state.
    assert run(conn, T.get_state_ids_at, room.room_id, ordering(conn, msg.event_id)) == after_join
    assert run(conn, T.get_state_ids_at, room.room_id, ordering(conn, name.event_id)) == room.state
    assert run(conn, T.get_state_ids_at, room.room_id, 10**9) == room.state


def test_member_event_ids_at_reads_only_the_asked_members(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    a = member(room, ALICE, "join")
    b1 = member(room, BOB, "join")
    ref_b1 = room.ref
    for i in range(20):  # grow the skip-delta chain
        room.set_state("m.room.topic", "", {"topic": str(i)})
    b2 = member(room, BOB, "leave")
    assert room.ref is not None and ref_b1 is not None
    assert run(conn, T.get_member_event_ids_at, room.ref, [ALICE, BOB, "@carol:a.example"]) == {
        ALICE: a.event_id,
        BOB: b2.event_id,
    }
    assert run(conn, T.get_member_event_ids_at, ref_b1, [BOB]) == {BOB: b1.event_id}
    assert run(conn, T.get_member_event_ids_at, room.ref, []) == {}
    # Removed keys are absent.
    room.remove_state(MEMBER, ALICE)
    assert run(conn, T.get_member_event_ids_at, room.ref, [ALICE]) == {}


def test_filter_visible_with_join_answers_step_3_exactly(conn: sa.Connection) -> None:
    room = LinearRoom(conn)
    member(room, ALICE, "join")
    room.set_state("m.room.history_visibility", "", {"history_visibility": "shared"})
    before = room.message("before bob")
    member(room, BOB, "join")
    during = room.message("during")
    member(room, BOB, "leave")
    after = room.message("after")
    candidates = [run(conn, T.get_event, e.event_id) for e in (before, during, after)]
    last_join = run(conn, T.get_last_join_ordering, room.room_id, BOB)

    def ids(evs: list[R.StoredEvent]) -> list[str]:
        return [e.event_id for e in evs]

    # The approximation ("joined now") hides history from a departed user ...
    assert ids(run(conn, T.filter_visible_events, BOB, candidates, "leave")) == [during.event_id]
    # ... the literal reading shows what they could see while joined, nothing after.
    got = run(conn, T.filter_visible_events_with_join, BOB, candidates, "leave", last_join)
    assert ids(got) == [before.event_id, during.event_id]
    # Never joined: nothing under "shared".
    assert run(conn, T.filter_visible_events_with_join, "@carol:a.example", candidates, None, None) == []
