"""To-device messages over federation (server-server API "Send-to-device messaging"):
alice@hs1 → bob@hs2 through the ``m.direct_to_device`` EDU, carried by hs1's
durable outbox, delivered exactly once by hs2, on the in-process network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from roomactors.federation_client import FederationRequest, FederationResponse
from roomactors.testing import open_test_network
from storage import outbox, staging, to_device
from tests.helpers.federation import send_pdus

CS = "/_matrix/client/v3"


async def send_to_device(hs: Any, user: Any, txn: str, messages: dict[str, Any], event_type: str = "m.test") -> None:
    status, body = await hs.api("PUT", f"{CS}/sendToDevice/{event_type}/{txn}", token=user.access_token,
                                json={"messages": messages})
    assert status == 200, body


async def to_device_events(hs: Any, token: str, since: str | None = None) -> tuple[list[dict[str, Any]], str]:
    path = f"{CS}/sync?timeout=0" + (f"&since={since}" if since else "")
    status, body = await hs.api("GET", path, token=token)
    assert status == 200, body
    return body.get("to_device", {}).get("events", []), body["next_batch"]


async def login(hs: Any, user: Any) -> tuple[str, str]:
    status, body = await hs.api("POST", f"{CS}/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": user.password})
    assert status == 200, body
    return body["access_token"], body["device_id"]


def sends(net: Any) -> list[Any]:
    return [r for r in net.requests_between("hs1", "hs2") if r.path.startswith("/_matrix/federation/v1/send/")]


async def test_a_specific_device_and_star_are_delivered_once() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        bob2_token, _ = await login(hs2, bob)
        await send_to_device(hs1, alice, "t1", {bob.user_id: {bob.device_id: {"to": "one"}}})
        await send_to_device(hs1, alice, "t2", {bob.user_id: {"*": {"to": "all"}}, "@ghost:hs2": {"*": {}}},
                             "m.room_key_request")
        await send_to_device(hs1, alice, "t2", {bob.user_id: {"*": {"to": "all"}}}, "m.room_key_request")  # retry
        await net.settle()
        first, _ = await to_device_events(hs2, bob.access_token)
        second, _ = await to_device_events(hs2, bob2_token)
        assert first == [
            {"sender": alice.user_id, "type": "m.test", "content": {"to": "one"}},
            {"sender": alice.user_id, "type": "m.room_key_request", "content": {"to": "all"}},
        ]
        assert second == [{"sender": alice.user_id, "type": "m.room_key_request", "content": {"to": "all"}}]
        assert await hs1.deps.db.read(outbox.count_edus) == 0  # answered, so deleted
        assert all(r.status == 200 for r in sends(net))
        assert hs1.deps.sender.statistics().outbox_edus_sent == 2


async def test_a_retried_transaction_never_delivers_twice() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        lost: list[str] = []

        def lose_the_answer(origin: str, request: FederationRequest, response: FederationResponse | None) -> Any:
            # hs2 processed the transaction; hs1 never hears the 200.
            if request.target.startswith("/_matrix/federation/v1/send/") and not lost:
                lost.append(request.target)
                return FederationResponse(status=502, headers={}, body=b"")
            return None

        rule = net.intercept(lose_the_answer, from_="hs1", to="hs2")
        await send_to_device(hs1, alice, "t", {bob.user_id: {bob.device_id: {"n": 1}}})
        await net.settle()
        hs1.deps.sender.wake("hs2")  # retry now rather than after the backoff
        await net.settle()
        rule.cancel()
        targets = [r.target for r in sends(net)]
        assert len(targets) == 2 and targets[0] == targets[1] == lost[0]  # the same txn, retried
        events, _ = await to_device_events(hs2, bob.access_token)
        assert [e["content"] for e in events] == [{"n": 1}]
        assert await hs1.deps.db.read(outbox.count_edus) == 0


async def test_the_same_edu_in_another_transaction_is_not_delivered_again() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        seen: list[dict[str, Any]] = []

        def record(origin: str, request: FederationRequest, response: FederationResponse | None) -> None:
            if request.body:
                seen.extend(orjson.loads(request.body).get("edus", []))

        net.intercept(record, from_="hs1", to="hs2")
        await send_to_device(hs1, alice, "t", {bob.user_id: {bob.device_id: {"n": 1}}})
        await net.settle()
        (edu,) = [e for e in seen if e["edu_type"] == "m.direct_to_device"]
        assert edu["content"]["sender"] == alice.user_id and len(edu["content"]["message_id"]) <= 32
        # hs1's sender restarted after hs2 processed it: the row goes again, under a new txn ID
        await send_pdus(hs1, "hs2", [], edus=[edu])
        await send_pdus(hs1, "hs2", [], edus=[edu, edu])
        events, _ = await to_device_events(hs2, bob.access_token)
        assert [e["content"] for e in events] == [{"n": 1}]


async def test_a_crash_between_the_inbox_write_and_the_answer_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        real = staging.stage_transaction
        failures: list[str] = []

        def crash_once(*args: Any, **kwargs: Any) -> Any:
            if not failures:
                failures.append(kwargs.get("txn_id", "?"))
                raise RuntimeError("simulated crash before the answer is recorded")
            return real(*args, **kwargs)

        monkeypatch.setattr(staging, "stage_transaction", crash_once)
        await send_to_device(hs1, alice, "t", {bob.user_id: {bob.device_id: {"n": 1}}})
        await net.settle()
        assert failures and await hs1.deps.db.read(outbox.count_edus) == 1  # hs1 saw a 500: keeps it
        hs1.deps.sender.wake("hs2")
        await net.settle()
        assert await hs1.deps.db.read(outbox.count_edus) == 0
        events, _ = await to_device_events(hs2, bob.access_token)
        assert [e["content"] for e in events] == [{"n": 1}]


async def test_messages_sent_during_a_partition_arrive_after_heal_in_order() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        net.partition({"hs1"}, {"hs2"})
        for n in range(120):
            await send_to_device(hs1, alice, f"t{n}", {bob.user_id: {bob.device_id: {"n": n}}})
        await net.settle()
        assert await hs1.deps.db.read(outbox.count_edus, "hs2") == 120  # durable while the peer is away
        net.heal()
        await net.settle()
        got: list[int] = []
        since = None
        for _ in range(5):
            events, since = await to_device_events(hs2, bob.access_token, since)
            got += [e["content"]["n"] for e in events]
        assert got == list(range(120))
        assert await hs1.deps.db.read(outbox.count_edus) == 0
        assert await hs2.deps.db.read(to_device.count_inbox, bob.user_id) == 0  # all acknowledged
        assert all(r.status in (None, 200) for r in sends(net))  # lost while partitioned, else answered


async def test_a_foreign_sender_or_a_remote_target_is_refused() -> None:
    async with open_test_network(3) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        bob = await hs2.register("bob")
        spoofed = {"edu_type": "m.direct_to_device", "content": {
            "sender": "@mallory:hs3", "type": "m.test", "message_id": "m1",
            "messages": {bob.user_id: {"*": {"spoof": True}}}}}
        elsewhere = {"edu_type": "m.direct_to_device", "content": {
            "sender": "@alice:hs1", "type": "m.test", "message_id": "m2",
            "messages": {"@carol:hs3": {"*": {}}, bob.user_id: {bob.device_id: {"ok": True}}}}}
        malformed = {"edu_type": "m.direct_to_device", "content": {
            "sender": "@alice:hs1", "type": "m.test", "message_id": "x" * 33, "messages": {bob.user_id: {"*": {}}}}}
        await send_pdus(hs1, "hs2", [], edus=[spoofed, elsewhere, malformed])
        events, _ = await to_device_events(hs2, bob.access_token)
        assert [e["content"] for e in events] == [{"ok": True}]
