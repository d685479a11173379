"""Convergence after a partition (server-server API "Room State Resolution"): two
sides of a partition make conflicting power-level changes and bans; after healing
and one message from each side (which makes the other side fetch the missing
branch with ``/get_missing_events``), every server holds the same current state,
and it is the one ``resolve_state`` computes independently from the events."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomactors.protocol.state_res import resolve_state
from roomactors.federation_client import FederationResponse
from roomactors.testing import open_test_network
from storage import rooms as room_storage
from tests.helpers.federation import (
    alice_and_bob_in_a_room,
    create_room,
    join,
    messages,
    send_state,
    send_text,
    state,
)

pytestmark = pytest.mark.parametrize("room_version", ["12", "10"])

SIDE_1, SIDE_2 = {"hs1"}, {"hs2", "hs3"}


def _swallow_sends(origin: str, request: Any, response: Any) -> FederationResponse:
    """A peer that acknowledges transactions and loses them (others: 503)."""
    if request.target.startswith("/_matrix/federation/v1/send/"):
        return FederationResponse(status=200, headers={"content-type": "application/json"}, body=b'{"pdus": {}}')
    return FederationResponse(status=503, headers={}, body=b"")


def _cut(net: Any, mode: str) -> list[Any]:
    if mode == "partition":
        net.partition(SIDE_1, SIDE_2)
        return []
    return [
        net.intercept(_swallow_sends, from_=SIDE_1, to=SIDE_2, deliver=False),
        net.intercept(_swallow_sends, from_=SIDE_2, to=SIDE_1, deliver=False),
    ]


def _heal(net: Any, rules: list[Any]) -> None:
    net.heal()
    for rule in rules:
        rule.cancel()
    # The servers' outbound queues back off while a peer is unreachable; a healed
    # network tells them nothing, so retry now (what a contact from the peer does).
    for hs in net:
        for peer in net.servers:
            if peer != hs.server_name:
                hs.deps.sender.wake(peer)


async def _room_events(hs: Any, room_id: str) -> list[room_storage.StoredEvent]:
    return await hs.deps.db.read(room_storage.get_room_events, room_id)


async def _state_after(hs: Any, event_id: str) -> dict[tuple[str, str], str]:
    event = (await hs.deps.db.read(room_storage.get_events, [event_id]))[event_id]
    assert event.state_after_ref is not None, f"{event_id} has no state on {hs.server_name}"
    return dict(await hs.deps.db.read(room_storage.get_state, event.state_after_ref))


async def _power(hs: Any, user: Any, room_id: str) -> dict[str, Any]:
    status, body = await hs.api(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", token=user.access_token
    )
    assert status == 200, body
    return body


async def _ban(hs: Any, user: Any, room_id: str, target: str) -> str:
    status, body = await hs.api(
        "POST", f"/_matrix/client/v3/rooms/{room_id}/ban", token=user.access_token, json={"user_id": target}
    )
    assert status == 200, body
    return (await state(hs, user, room_id))[("m.room.member", target)]


@pytest.mark.parametrize("mode", ["partition", "lost_transactions"])
async def test_partition_conflicting_power_and_bans_converge(room_version: str, mode: str) -> None:
    async with open_test_network(3) as net:
        hs1, hs2, hs3 = net["hs1"], net["hs2"], net["hs3"]
        alice = await hs1.register("alice")  # the creator
        carol = await hs1.register("carol")  # admin (100) on hs1's side
        erin = await hs1.register("erin")
        bob = await hs2.register("bob")  # admin (90) on hs2's side
        dave = await hs2.register("dave")
        fay = await hs3.register("fay")  # an observer, on hs2's side of the partition
        room_id = await create_room(hs1, alice, preset="public_chat", room_version=room_version)
        for hs, user in ((hs1, carol), (hs1, erin), (hs2, bob), (hs2, dave), (hs3, fay)):
            status, body = await join(hs, user, room_id, via="hs1")
            assert status == 200, body
            await net.settle()
        power = await _power(hs1, alice, room_id)
        power["users"].update({carol.user_id: 100, bob.user_id: 90})
        power.setdefault("events", {})["m.room.power_levels"] = 90
        status, body = await send_state(hs1, alice, room_id, "m.room.power_levels", power)
        assert status == 200, body
        await net.settle()
        before = await state(hs1, alice, room_id)
        assert before == await state(hs2, bob, room_id) == await state(hs3, fay, room_id)

        rules = _cut(net, mode)
        # hs1's side: carol demotes bob and bans dave
        p1 = await _power(hs1, carol, room_id)
        p1["users"][bob.user_id] = 0
        p1["users"][erin.user_id] = 10
        status, body = await send_state(hs1, carol, room_id, "m.room.power_levels", p1)
        assert status == 200, body
        ban_dave = await _ban(hs1, carol, room_id, dave.user_id)
        # hs2's side: bob changes the power levels too, and bans erin
        p2 = await _power(hs2, bob, room_id)
        p2["users"][dave.user_id] = 50
        p2.setdefault("events", {})["m.room.topic"] = 0
        status, body = await send_state(hs2, bob, room_id, "m.room.power_levels", p2)
        assert status == 200, body
        ban_erin = await _ban(hs2, bob, room_id, erin.user_id)
        if mode == "lost_transactions":
            await net.settle()  # (a partition keeps the senders busy retrying: no settle)
        side1 = await _state_after(hs1, ban_dave)
        side2 = await _state_after(hs2, ban_erin)
        assert side1 != side2

        _heal(net, rules)
        await send_text(hs1, alice, room_id, "hello from hs1")
        await net.settle()
        await send_text(hs2, bob, room_id, "hello from hs2")
        await net.settle()

        if mode == "lost_transactions":
            # the branches' transactions were lost: /get_missing_events fetched them
            assert any(r.path.startswith("/_matrix/federation/v1/get_missing_events/") and r.status == 200
                       for r in net.requests)
        s1 = await state(hs1, alice, room_id)
        s2 = await state(hs2, bob, room_id)
        s3 = await state(hs3, fay, room_id)
        assert s1 == s2 == s3

        # Independently: resolve the two sides' states from the stored events.
        events: dict[str, dict[str, Any]] = {}
        rejected: set[str] = set()
        for hs in (hs1, hs2):
            for stored_event in await _room_events(hs, room_id):
                events.setdefault(stored_event.event_id, stored_event.json)
                if stored_event.rejection_reason is not None:
                    rejected.add(stored_event.event_id)
        expected = resolve_state(room_version, [side1, side2], events, rejected=rejected)
        assert s1 == expected

        # And what it means: carol (100) outranks bob (90), so her demotion of bob
        # is applied first and bob's changes, made with power he no longer has, fail.
        assert s1[("m.room.member", dave.user_id)] == ban_dave
        assert s1[("m.room.member", erin.user_id)] != ban_erin
        final_power = await _power(hs2, bob, room_id)
        assert final_power["users"].get(bob.user_id, 0) == 0
        assert dave.user_id not in final_power["users"]
        status, member = await hs2.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{erin.user_id}", token=bob.access_token
        )
        assert member["membership"] == "join", member


async def test_settle_returns_during_a_partition(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2, alice, bob, room_id = await alice_and_bob_in_a_room(net, room_version)
        net.partition({"hs1"}, {"hs2"})
        await send_text(hs1, alice, room_id, "queued for hs2")
        try:
            await net.settle(timeout_s=3)
        except trio.TooSlowError:
            pytest.fail(f"settle() timed out: {net.busy()}")
        # Healing wakes the queues: the held PDU arrives without waiting out a backoff.
        net.heal()
        await net.settle()
        assert "queued for hs2" in await messages(hs2, bob, room_id)
