"""storage/outbox.py: the durable outbound EDU outbox (order, per destination,
deletion of exactly the rows named, destinations with rows)."""

from __future__ import annotations

import sqlalchemy as sa

from storage import outbox


def test_rows_are_kept_per_destination_in_commit_order(conn: sa.Connection) -> None:
    with conn.begin():
        outbox.add_edu(conn, "b.example", "m.direct_to_device", {"n": 1})
        outbox.add_edus(conn, [("c.example", "m.device_list_update", {"n": 2}), ("b.example", "m.direct_to_device", {"n": 3})])
        outbox.add_edus(conn, [])
    with conn.begin():
        got = outbox.get_edus(conn, "b.example", limit=10)
        assert [(e.edu_type, e.content) for e in got] == [("m.direct_to_device", {"n": 1}), ("m.direct_to_device", {"n": 3})]
        assert got[0].outbox_id < got[1].outbox_id
        assert [e.content for e in outbox.get_edus(conn, "c.example", limit=10)] == [{"n": 2}]
        assert outbox.list_destinations(conn) == ["b.example", "c.example"]
        assert (outbox.count_edus(conn), outbox.count_edus(conn, "b.example")) == (3, 2)


def test_limit_and_deletion_of_exactly_the_rows_sent(conn: sa.Connection) -> None:
    with conn.begin():
        outbox.add_edus(conn, [("b.example", "t", {"n": n}) for n in range(5)])
        outbox.add_edu(conn, "c.example", "t", {"n": 99})
    with conn.begin():
        first = outbox.get_edus(conn, "b.example", limit=2)
        assert [e.content["n"] for e in first] == [0, 1]
        # an ID of another destination is not deleted through this one
        other = outbox.get_edus(conn, "c.example", limit=1)[0].outbox_id
        assert outbox.delete_edus(conn, "b.example", [e.outbox_id for e in first] + [other]) == 2
        assert outbox.delete_edus(conn, "b.example", []) == 0
    with conn.begin():
        assert [e.content["n"] for e in outbox.get_edus(conn, "b.example", limit=10)] == [2, 3, 4]
        assert outbox.count_edus(conn, "c.example") == 1


def test_ids_are_never_reused_after_deletion(conn: sa.Connection) -> None:
    with conn.begin():
        outbox.add_edu(conn, "b.example", "t", {"big": 2**70})  # beyond 64 bits survives
    with conn.begin():
        (row,) = outbox.get_edus(conn, "b.example", limit=1)
        assert row.content == {"big": 2**70}
        outbox.delete_edus(conn, "b.example", [row.outbox_id])
        outbox.add_edu(conn, "b.example", "t", {})
    with conn.begin():
        (again,) = outbox.get_edus(conn, "b.example", limit=1)
        assert again.outbox_id > row.outbox_id
        assert outbox.list_destinations(conn) == ["b.example"]
