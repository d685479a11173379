"""storage/outbound.py: destination rows (txn sequence, position, backoff) and the
catch-up reads, on a migrated in-memory connection."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage import outbound as O
from storage import rooms as R
from tests.storage.rooms import ROOM_VERSION, LinearRoom, run

OURS = "a.example"  # LinearRoom's default sender is @alice:a.example


def message_from(room: LinearRoom, sender: str, body: str = "hi") -> int:
    ev = room._event("msg", content={"msgtype": "m.text", "body": body}, state_base_ref=room.ref, sender=sender)
    return room.commit(ev, {})


def join(room: LinearRoom, user_id: str, membership: str = "join") -> None:
    room.set_state("m.room.member", user_id, {"membership": membership})


def ordering_of(conn: sa.Connection, event_id: str) -> int:
    sql = "SELECT stream_ordering FROM events WHERE event_id = ?"
    return run(conn, lambda c: c.exec_driver_sql(sql, (event_id,)).scalar_one())


# ----------------------------------------------------------------------- rows


def test_server_part_splits_at_the_first_colon() -> None:
    assert O.server_part("@u:example.org") == "example.org"
    assert O.server_part("@u:example.org:8448") == "example.org:8448"
    assert O.server_part("@u:[::1]:8448") == "[::1]:8448"
    assert O.server_part("@nocolon") is None
    assert O.server_part("@u:") is None


def test_reserve_creates_the_row_and_never_hands_out_a_number_twice(conn: sa.Connection) -> None:
    assert run(conn, O.get_destination, "b.example") is None
    seq, row = run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=1000, position_floor=41))
    assert seq == 1000
    assert row.next_txn_seq == 1001 and row.last_successful_stream_ordering == 41
    # The initial seq only applies to a new row; the floor only to a row without a position.
    seq2, row2 = run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=5, position_floor=7))
    assert seq2 == 1001 and row2.last_successful_stream_ordering == 41
    reserved = run(conn, lambda c: O.record_success(c, "b.example", stream_ordering=50))
    assert reserved == 1002
    seq3, _ = run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=0))
    assert seq3 == 1003
    assert run(conn, O.get_destination, "b.example").next_txn_seq == 1004


def test_a_row_without_position_takes_the_floor_later(conn: sa.Connection) -> None:
    run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=1))  # EDU-only txn: no floor
    assert run(conn, O.get_destination, "b.example").last_successful_stream_ordering is None
    _, row = run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=1, position_floor=9))
    assert row.last_successful_stream_ordering == 9


def test_success_never_lowers_the_position_and_clears_the_backoff(conn: sa.Connection) -> None:
    run(conn, lambda c: O.reserve_txn_seq(c, "b.example", initial_seq=1))
    run(conn, lambda c: O.record_failure(c, "b.example", retry_last_ts=123, retry_interval_ms=4000))
    row = run(conn, O.get_destination, "b.example")
    assert (row.retry_last_ts, row.retry_interval_ms) == (123, 4000)
    assert run(conn, lambda c: O.record_success(c, "b.example", stream_ordering=20, reserve_next=False)) is None
    run(conn, lambda c: O.record_success(c, "b.example", stream_ordering=10))
    run(conn, lambda c: O.record_success(c, "b.example", stream_ordering=None))  # EDU-only txn
    row = run(conn, O.get_destination, "b.example")
    assert row.last_successful_stream_ordering == 20
    assert (row.retry_last_ts, row.retry_interval_ms) == (None, None)


def test_success_needs_the_row(conn: sa.Connection) -> None:
    with pytest.raises(LookupError):
        run(conn, lambda c: O.record_success(c, "nowhere.example", stream_ordering=1))


# ------------------------------------------------------------------- catch-up


def test_joined_rooms_compare_the_whole_server_name(conn: sa.Connection) -> None:
    r1 = LinearRoom(conn, "!one:a.example")
    join(r1, "@bob:b.example")
    r2 = LinearRoom(conn, "!two:a.example")
    join(r2, "@bob:evil-b.example")  # suffix look-alike
    join(r2, "@bob:b.example:8448")  # same host, other port: another server
    join(r2, "@eve:x.b.example")
    r3 = LinearRoom(conn, "!three:a.example")
    join(r3, "@bob:b.example", "leave")  # left
    join(r3, "@carol:b.example", "invite")  # invited only
    r4 = LinearRoom(conn, "!four:a.example")
    r4.set_state("m.room.member", "@dan:b.example", {"membership": "join"})
    r4.set_state("m.room.member", "@dan:b.example", {"membership": "ban"})
    assert run(conn, O.get_joined_rooms, "b.example") == ["!one:a.example"]
    assert run(conn, O.get_joined_rooms, "b.example:8448") == ["!two:a.example"]
    assert run(conn, O.get_joined_rooms, "nobody.example") == []


def test_catch_up_sends_the_latest_local_event_per_room_in_stream_order(conn: sa.Connection) -> None:
    r1 = LinearRoom(conn, "!one:a.example")
    join(r1, "@bob:b.example")
    r2 = LinearRoom(conn, "!two:a.example")
    join(r2, "@bob:b.example")
    r3 = LinearRoom(conn, "!three:a.example")  # b.example is not in it
    position = r2.message("before").event_id
    after = ordering_of(conn, position)
    a1 = message_from(r1, "@alice:a.example", "r1 first")
    a2 = message_from(r2, "@alice:a.example", "r2 latest")
    a1_latest = message_from(r1, "@alice:a.example", "r1 latest")
    message_from(r1, "@bob:b.example", "theirs: never sent back")
    message_from(r1, "@mallory:evil-a.example", "not ours either")
    r3.message("elsewhere")
    got = run(conn, lambda c: O.get_catch_up_events(c, "b.example", server_name=OURS, after=after, limit=50))
    assert [(e.room_id, e.stream_ordering) for e in got] == [("!two:a.example", a2), ("!one:a.example", a1_latest)]
    assert got[1].json["content"]["body"] == "r1 latest"
    assert a1 < a2
    # limit takes the oldest; the rest follow once the position passes them.
    first = run(conn, lambda c: O.get_catch_up_events(c, "b.example", server_name=OURS, after=after, limit=1))
    assert [e.stream_ordering for e in first] == [a2]
    rest = run(conn, lambda c: O.get_catch_up_events(c, "b.example", server_name=OURS, after=a2, limit=1))
    assert [e.stream_ordering for e in rest] == [a1_latest]
    assert run(conn, lambda c: O.get_catch_up_events(c, "b.example", server_name=OURS, after=a1_latest, limit=9)) == []


def test_catch_up_skips_soft_failed_and_rejected_events(conn: sa.Connection) -> None:
    room = LinearRoom(conn, "!one:a.example")
    join(room, "@bob:b.example")
    good = message_from(room, "@alice:a.example")
    soft = room._event("soft", state_base_ref=room.ref, soft_failed=True)
    rejected = room._event("rejected", rejection_reason="auth")
    for ev in (soft, rejected):
        cp = R.Checkpoint(room_id=room.room_id, room_version=ROOM_VERSION, events=(ev,), forward_extremities=None)
        run(conn, R.checkpoint, cp)
    got = run(conn, lambda c: O.get_catch_up_events(c, "b.example", server_name=OURS, after=0, limit=50))
    assert [e.stream_ordering for e in got] == [good]


def test_destinations_behind(conn: sa.Connection) -> None:
    room = LinearRoom(conn, "!one:a.example")
    join(room, "@bob:b.example")
    join(room, "@carol:c.example")
    join(room, "@dan:d.example")
    latest = message_from(room, "@alice:a.example")
    message_from(room, "@bob:b.example")  # remote events never make anyone behind
    for dest, position in (("b.example", latest), ("c.example", latest - 1), ("e.example", 0)):
        run(conn, lambda c, d=dest, p=position: O.reserve_txn_seq(c, d, initial_seq=1, position_floor=p))
    run(conn, lambda c: O.reserve_txn_seq(c, "d.example", initial_seq=1))  # no position: nothing to catch up
    behind = run(conn, O.list_destinations_behind, OURS)
    assert [r.destination for r in behind] == ["c.example"]
    assert behind[0].last_successful_stream_ordering == latest - 1
