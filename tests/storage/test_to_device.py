"""storage/to_device.py: device inboxes (order, bounded batches, positions,
acknowledgement), /sendToDevice txnIds, exactly-once inbound EDUs, device deletion."""

from __future__ import annotations

import sqlalchemy as sa

from storage import accounts, outbox, to_device
from tests.storage.users import add_devices

ALICE = "@alice:hs"
BOB = "@bob:hs"


def _send(conn: sa.Connection, txn_id: str, local: dict, *, device: str = "A1", event_type: str = "m.test", remote=(), now: int = 1000):
    return to_device.send_local_messages(
        conn, sender=ALICE, sender_device=device, event_type=event_type, txn_id=txn_id,
        local=local, remote_edus=remote, now_ms=now,
    )


def test_send_expands_star_skips_unknown_targets_and_records_the_txn(conn: sa.Connection) -> None:
    with conn.begin():
        add_devices(conn, BOB, "B1", "B2")
        add_devices(conn, ALICE, "A1")
        d = _send(conn, "t1", {BOB: {"*": {"x": 1}}, "@nobody:hs": {"Z": {}}, ALICE: {"NOPE": {}, "A1": {"self": True}}})
    assert set(d.users) == {BOB, ALICE} and not d.duplicate
    with conn.begin():
        for dev in ("B1", "B2"):
            events, pos = to_device.sync_to_device(conn, BOB, dev, after=0)
            assert events == [{"sender": ALICE, "type": "m.test", "content": {"x": 1}}] and pos > 0
        assert to_device.sync_to_device(conn, ALICE, "A1", after=0)[0][0]["content"] == {"self": True}
        # retry: nothing more
        again = _send(conn, "t1", {BOB: {"B1": {"x": 2}}}, remote=[("r.example", {"message_id": "m"})])
        assert again.duplicate and again.users == () and again.destinations == ()
        assert to_device.count_inbox(conn, BOB) == 2 and outbox.count_edus(conn) == 0
        # same txnId, other device or other event type: distinct requests
        assert not _send(conn, "t1", {BOB: {"B1": {"x": 3}}}, device="A2").duplicate
        assert not _send(conn, "t1", {BOB: {"B1": {"x": 4}}}, event_type="m.other").duplicate
        assert to_device.count_inbox(conn, BOB, "B1") == 3


def test_remote_edus_go_to_the_outbox_in_the_same_transaction(conn: sa.Connection) -> None:
    with conn.begin():
        d = _send(conn, "t", {}, remote=[("r.example", {"message_id": "a"}), ("s.example", {"message_id": "b"})])
    assert d.destinations == ("r.example", "s.example") and d.users == ()
    with conn.begin():
        assert [e.content for e in outbox.get_edus(conn, "r.example", limit=5)] == [{"message_id": "a"}]
        assert outbox.get_edus(conn, "s.example", limit=5)[0].edu_type == "m.direct_to_device"


def test_delivery_is_ordered_bounded_and_never_skips(conn: sa.Connection) -> None:
    with conn.begin():
        add_devices(conn, BOB, "B1", "B2")
        for n in range(250):
            _send(conn, f"t{n}", {BOB: {"B1": {"n": n}}} if n % 5 else {BOB: {"*": {"n": n}}})
    seen, pos, batches = [], 0, []
    with conn.begin():
        while True:
            events, new = to_device.sync_to_device(conn, BOB, "B1", after=pos)
            if not events:
                assert new == pos
                break
            assert len(events) <= to_device.SYNC_LIMIT
            batches.append(len(events))
            seen += [e["content"]["n"] for e in events]
            pos = new
    assert seen == list(range(250)) and batches == [100, 100, 50]
    with conn.begin():
        assert [e["content"]["n"] for e in to_device.sync_to_device(conn, BOB, "B2", after=0)[0]] == list(range(0, 250, 5))


def test_acknowledgement_deletes_up_to_the_position_only(conn: sa.Connection) -> None:
    with conn.begin():
        add_devices(conn, BOB, "B1", "B2")
        for n in range(5):
            _send(conn, f"t{n}", {BOB: {"*": {"n": n}}})
    with conn.begin():
        events, pos = to_device.sync_to_device(conn, BOB, "B1", after=0, limit=3)
        assert [e["content"]["n"] for e in events] == [0, 1, 2]
        assert to_device.has_acknowledged(conn, BOB, "B1", upto=pos)
        assert to_device.delete_acknowledged(conn, BOB, "B1", upto=pos) == 3
        assert not to_device.has_acknowledged(conn, BOB, "B1", upto=pos)
        assert [e["content"]["n"] for e in to_device.sync_to_device(conn, BOB, "B1", after=0)[0]] == [3, 4]
        assert to_device.count_inbox(conn, BOB, "B2") == 5  # another device's inbox is untouched


def test_inbound_edus_are_delivered_exactly_once_per_origin_and_message_id(conn: sa.Connection) -> None:
    def edu(mid: str, n: int) -> to_device.RemoteMessage:
        return to_device.RemoteMessage(message_id=mid, sender="@carol:r.example", event_type="m.test",
                                       messages={BOB: {"*": {"n": n}}, "@ghost:hs": {"G": {}}})

    with conn.begin():
        add_devices(conn, BOB, "B1")
        d = to_device.receive_remote_batch(conn, origin="r.example", edus=[edu("m1", 1), edu("m1", 1), edu("m2", 2)], now_ms=10)
        assert d.users == (BOB,) and d.duplicate
    with conn.begin():
        d = to_device.receive_remote_batch(conn, origin="r.example", edus=[edu("m2", 2)], now_ms=20)
        assert d.users == () and d.duplicate
        # the same message ID from another origin is another message
        d = to_device.receive_remote_batch(conn, origin="s.example", edus=[edu("m1", 3)], now_ms=20)
        assert d.users == (BOB,)
        events, _ = to_device.sync_to_device(conn, BOB, "B1", after=0)
        assert [e["content"]["n"] for e in events] == [1, 2, 3]
        assert events[0]["sender"] == "@carol:r.example"
    # after the retention the record is pruned
    with conn.begin():
        to_device.receive_remote_batch(conn, origin="x.example", edus=[], now_ms=20 + to_device.RECEIVED_RETENTION_MS + 100)
        assert not to_device.receive_remote_batch(
            conn, origin="r.example", edus=[edu("m1", 1)], now_ms=30 + to_device.RECEIVED_RETENTION_MS
        ).duplicate


def test_deleting_devices_deletes_their_inboxes(conn: sa.Connection) -> None:
    with conn.begin():
        add_devices(conn, BOB, "B1", "B2", "B3")
        _send(conn, "t", {BOB: {"*": {}}})
        accounts.delete_devices(conn, BOB, ["B1"])
        assert to_device.count_inbox(conn, BOB) == 2
        accounts.delete_user_tokens(conn, BOB, except_device="B2")
        assert (to_device.count_inbox(conn, BOB, "B2"), to_device.count_inbox(conn, BOB)) == (1, 1)
        accounts.deactivate_user(conn, BOB)
        assert to_device.count_inbox(conn, BOB) == 0


def test_txn_ids_expire_after_the_retention(conn: sa.Connection) -> None:
    with conn.begin():
        add_devices(conn, BOB, "B1")
        assert not _send(conn, "old", {BOB: {"B1": {}}}, now=1000).duplicate
        assert _send(conn, "old", {BOB: {"B1": {}}}, now=2000).duplicate
        later = 1000 + to_device.TXN_RETENTION_MS + 1
        assert not _send(conn, "other", {BOB: {"B1": {}}}, now=later).duplicate  # prunes "old"
        assert not _send(conn, "old", {BOB: {"B1": {}}}, now=later).duplicate
