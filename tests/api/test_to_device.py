"""``PUT /sendToDevice/{eventType}/{txnId}`` and to-device delivery through ``/sync``
(client-server API "Send-to-Device messaging"), through quart's test client on the
real services (federation off: tests/federation covers remote users)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import trio
import trio.testing
from quart_trio import QuartTrio

from storage import to_device
from storage.schema import device_inbox
from tests.helpers.client import Api


def events_of(sync: dict[str, Any]) -> list[dict[str, Any]]:
    return sync.get("to_device", {}).get("events", [])


async def send(api: Api, txn: str, messages: Any, event_type: str = "m.test") -> Any:
    return await api.put(f"/sendToDevice/{event_type}/{txn}", {"messages": messages})


async def inbox_rows(app: QuartTrio, user_id: str, device_id: str | None = None) -> list[int]:
    d = app.extensions["roomactors"]

    def read(conn: sa.Connection) -> list[int]:
        q = sa.select(device_inbox.c.stream_id).where(device_inbox.c.user_id == user_id)
        if device_id is not None:
            q = q.where(device_inbox.c.device_id == device_id)
        return list(conn.execute(q.order_by(device_inbox.c.stream_id)).scalars())

    return await d.db.read(read)


async def test_to_a_specific_device_and_to_star(app: QuartTrio, alice: Api, bob: Api) -> None:
    bob2 = await bob.login()
    alice_start = await alice.sync()
    assert events_of(alice_start) == []
    assert (await send(alice, "t1", {bob.user_id: {bob.device_id: {"only": "first"}}})).status == 200
    assert (await send(alice, "t2", {bob.user_id: {"*": {"to": "all"}}}, "m.other")).status == 200
    first = await bob.sync()
    second = await bob2.sync()
    assert events_of(first) == [
        {"sender": alice.user_id, "type": "m.test", "content": {"only": "first"}},
        {"sender": alice.user_id, "type": "m.other", "content": {"to": "all"}},
    ]
    assert events_of(second) == [{"sender": alice.user_id, "type": "m.other", "content": {"to": "all"}}]
    # The sender's own devices got nothing
    assert events_of(await alice.sync(alice_start["next_batch"])) == []


async def test_txn_id_is_idempotent_per_device_and_endpoint(app: QuartTrio, alice: Api, bob: Api) -> None:
    alice2 = await alice.login()
    msg = {bob.user_id: {bob.device_id: {"n": 1}}}
    assert (await send(alice, "same", msg)).status == 200
    retry = await send(alice, "same", msg)
    assert (retry.status, retry.body) == (200, {})
    assert (await send(alice2, "same", msg)).status == 200  # another device: another request
    assert (await send(alice, "same", msg, "m.path.differs")).status == 200  # another path
    got = events_of(await bob.sync())
    assert [(e["type"], e["content"]) for e in got] == [("m.test", {"n": 1}), ("m.test", {"n": 1}), ("m.path.differs", {"n": 1})]


async def test_unknown_local_users_and_devices_are_ignored(app: QuartTrio, alice: Api, bob: Api) -> None:
    reply = await send(alice, "t", {"@nobody:localhost": {"X": {}}, bob.user_id: {"NOSUCHDEVICE": {}, bob.device_id: {"ok": 1}}})
    assert reply.status == 200
    assert [e["content"] for e in events_of(await bob.sync())] == [{"ok": 1}]


async def test_validation(app: QuartTrio, alice: Api, bob: Api) -> None:
    assert (await alice.put("/sendToDevice/m.test/t", {})).err() == (400, "M_MISSING_PARAM")
    assert (await alice.put("/sendToDevice/m.test/t", {"messages": []})).err() == (400, "M_BAD_JSON")
    assert (await send(alice, "t", {bob.user_id: ["x"]})).err() == (400, "M_BAD_JSON")
    assert (await send(alice, "t", {bob.user_id: {bob.device_id: "text"}})).err() == (400, "M_BAD_JSON")
    assert (await send(alice, "t", {"not-a-user": {"D": {}}})).err() == (400, "M_INVALID_PARAM")
    big = {"blob": "x" * 70_000}
    assert (await send(alice, "t", {bob.user_id: {bob.device_id: big}})).err() == (413, "M_TOO_LARGE")
    assert (await alice.put("/sendToDevice/m.test/t", data=b"{nope")).err() == (400, "M_NOT_JSON")
    assert (await alice.put("/sendToDevice/m.test/t", {"messages": {}}, token=None)).err() == (401, "M_MISSING_TOKEN")
    # Nothing above was recorded: the txnId still works
    assert (await send(alice, "t", {bob.user_id: {bob.device_id: {"ok": True}}})).status == 200
    assert [e["content"] for e in events_of(await bob.sync())] == [{"ok": True}]


async def test_order_across_syncs_with_100_per_sync_and_deletion_after_ack(app: QuartTrio, alice: Api, bob: Api) -> None:
    for n in range(250):
        assert (await send(alice, f"t{n}", {bob.user_id: {bob.device_id: {"n": n}}})).status == 200
    first = await bob.sync()
    assert [e["content"]["n"] for e in events_of(first)] == list(range(100))
    assert len(await inbox_rows(app, bob.user_id)) == 250  # delivered, not acknowledged
    # Re-syncing with the old token (here: none, then the same since) gets the same messages again
    assert [e["content"]["n"] for e in events_of(await bob.sync())] == list(range(100))
    second = await bob.sync(first["next_batch"])
    assert [e["content"]["n"] for e in events_of(second)] == list(range(100, 200))
    rows = await inbox_rows(app, bob.user_id)
    assert len(rows) == 150 and rows == sorted(rows)  # the first 100 are gone
    again = await bob.sync(first["next_batch"])
    assert [e["content"]["n"] for e in events_of(again)] == list(range(100, 200))
    third = await bob.sync(second["next_batch"])
    assert [e["content"]["n"] for e in events_of(third)] == list(range(200, 250))
    assert len(await inbox_rows(app, bob.user_id)) == 50
    fourth = await bob.sync(third["next_batch"], timeout="0")
    assert events_of(fourth) == []
    assert await inbox_rows(app, bob.user_id) == []
    # The position does not move while nothing is delivered
    assert fourth["next_batch"].rsplit("_", 1)[1] == third["next_batch"].rsplit("_", 1)[1]


async def test_ack_is_per_device(app: QuartTrio, alice: Api, bob: Api) -> None:
    bob2 = await bob.login()
    await send(alice, "t", {bob.user_id: {"*": {"x": 1}}})
    first = await bob.sync()
    await bob.sync(first["next_batch"])
    assert await inbox_rows(app, bob.user_id, bob.device_id) == []
    assert len(await inbox_rows(app, bob.user_id, bob2.device_id)) == 1
    assert [e["content"] for e in events_of(await bob2.sync())] == [{"x": 1}]  # still there for the other device


async def test_deleting_a_device_deletes_its_inbox(app: QuartTrio, alice: Api, bob: Api) -> None:
    bob2 = await bob.login()
    await send(alice, "t", {bob.user_id: {"*": {"x": 1}}})
    reply = await bob.request("DELETE", f"/devices/{bob2.device_id}", {})
    if reply.status == 401:  # UIA
        reply = await bob.request(
            "DELETE", f"/devices/{bob2.device_id}",
            {"auth": {"type": "m.login.password", "session": reply.body["session"],
                      "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": "correct horse battery staple"}},
        )
    assert reply.status == 200, reply.body
    assert await inbox_rows(app, bob.user_id, bob2.device_id) == []
    assert len(await inbox_rows(app, bob.user_id, bob.device_id)) == 1


async def test_remote_targets_without_federation_are_dropped(app: QuartTrio, alice: Api) -> None:
    assert (await send(alice, "t", {"@carol:elsewhere.example": {"*": {}}})).status == 200


async def test_a_long_poll_wakes_on_a_new_to_device_message(
    autojump_clock: trio.testing.MockClock, app: QuartTrio, alice: Api, bob: Api
) -> None:
    # Database threads take real time; jump virtual time only if truly stuck.
    autojump_clock.autojump_threshold = 5.0
    since = (await bob.sync())["next_batch"]
    notifier = app.extensions["roomactors"].notifier
    result: dict[str, Any] = {}

    async def poll() -> None:
        result["sync"] = await bob.sync(since, timeout="60000")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        while notifier.statistics().listeners == 0:
            await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        assert (await send(alice, "t", {bob.user_id: {bob.device_id: {"wake": True}}})).status == 200
    assert [e["content"] for e in events_of(result["sync"])] == [{"wake": True}]
    assert result["at"] - start < 1.0  # woken, not timed out


async def test_storage_sync_contract_position(app: QuartTrio, alice: Api, bob: Api) -> None:
    d = app.extensions["roomactors"]
    assert await d.db.read(lambda c: to_device.sync_to_device(c, bob.user_id, bob.device_id, after=7)) == ([], 7)
