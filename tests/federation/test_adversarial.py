"""A misbehaving peer (server-server API "Checks performed on receipt of a PDU",
"Transactions", "Authentication"): hs2 is joined to a room on hs1 and then sends
hs1 what an honest server never would. Each ``/send`` here comes from hs2's own
FederationClient (properly X-Matrix signed), so what is tested is the PDU-level
checks, unless the test is about the request itself."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from roomactors.federation_client import FederationError
from roomactors.testing import open_test_network
from storage import staging
from tests.helpers.federation import (
    create_room,
    forge_event,
    join,
    messages,
    rogue_key,
    room_record,
    send_pdus,
    send_state,
    state,
    stored,
    timeline_ids,
)


@dataclass
class Setup:
    net: Any
    hs1: Any
    hs2: Any
    alice: Any
    bob: Any
    room_id: str


@asynccontextmanager
async def _room(room_version: str) -> AsyncIterator[Setup]:
    """alice@hs1's public room, joined by bob@hs2."""
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await create_room(hs1, alice, preset="public_chat", room_version=room_version)
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        yield Setup(net, hs1, hs2, alice, bob, room_id)


async def _message(s: Setup, body: str = "forged", **kw: Any) -> tuple[str, dict[str, Any]]:
    kw.setdefault("sender", s.bob.user_id)
    return await forge_event(s.hs2, s.room_id, type="m.room.message", content={"msgtype": "m.text", "body": body}, **kw)


async def _nothing_staged(s: Setup) -> None:
    assert await s.hs1.deps.db.read(staging.next_staged, s.room_id, 100) == []


both_versions = pytest.mark.parametrize("room_version", ["12", "10"])


# ------------------------------------------------------------------ step 2: signatures


@both_versions
async def test_forged_signature_unknown_key_is_dropped(room_version: str) -> None:
    async with _room(room_version) as s:
        event_id, pdu = await _message(s, "signed by a key hs2 never published", signing_key=rogue_key())
        answer = await send_pdus(s.hs2, "hs1", [pdu])
        assert "error" in answer["pdus"][event_id], answer
        await s.net.settle()
        assert await stored(s.hs1, event_id) == {}
        assert "signed by a key hs2 never published" not in await messages(s.hs1, s.alice, s.room_id)
        await _nothing_staged(s)


@both_versions
async def test_pdu_tampered_after_signing_is_dropped(room_version: str) -> None:
    async with _room(room_version) as s:
        _, pdu = await _message(s, "tampered")
        tampered = copy.deepcopy(pdu)
        tampered["origin_server_ts"] += 1  # covered by the signature (and, v3+, the event ID)
        answer = await send_pdus(s.hs2, "hs1", [tampered])
        assert len(answer["pdus"]) == 1 and all("error" in r for r in answer["pdus"].values()), answer
        await s.net.settle()
        assert "tampered" not in await messages(s.hs1, s.alice, s.room_id)
        await _nothing_staged(s)


async def test_pdu_claiming_another_server_is_dropped() -> None:
    """hs2 signs an event whose sender is on hs1: hs1's signature is required and missing."""
    async with _room("12") as s:
        event_id, pdu = await _message(s, "as alice", sender=s.alice.user_id)
        answer = await send_pdus(s.hs2, "hs1", [pdu])
        assert "error" in answer["pdus"][event_id], answer
        await s.net.settle()
        assert await stored(s.hs1, event_id) == {}


# ------------------------------------------------------------------ step 3: hashes


@both_versions
async def test_bad_content_hash_is_stored_redacted(room_version: str) -> None:
    async with _room(room_version) as s:
        event_id, pdu = await _message(s, "original")
        tampered = copy.deepcopy(pdu)
        tampered["content"]["body"] = "changed in transit"  # not covered by the signature
        answer = await send_pdus(s.hs2, "hs1", [tampered])
        assert answer["pdus"] == {event_id: {}}, answer
        await s.net.settle()
        held = (await stored(s.hs1, event_id))[event_id]
        assert held.json["content"] == {}
        assert held.json["type"] == "m.room.message"
        assert held.rejection_reason is None
        bodies = await messages(s.hs1, s.alice, s.room_id)
        assert "changed in transit" not in bodies and "original" not in bodies


# ------------------------------------------------------------------ step 1: format


async def test_oversized_pdu_is_dropped() -> None:
    async with _room("12") as s:
        event_id, pdu = await _message(s, "x" * 70_000)
        assert len(orjson.dumps(pdu, option=orjson.OPT_SORT_KEYS)) > 65536
        answer = await send_pdus(s.hs2, "hs1", [pdu])
        assert len(answer["pdus"]) == 1 and all("error" in r for r in answer["pdus"].values()), answer
        await s.net.settle()
        assert await stored(s.hs1, event_id) == {}
        await _nothing_staged(s)


# ------------------------------------------------------------------ steps 4-6: authorization


@both_versions
async def test_message_from_non_member_is_rejected(room_version: str) -> None:
    async with _room(room_version) as s:
        event_id, pdu = await _message(s, "I never joined", sender="@mallory:hs2")
        answer = await send_pdus(s.hs2, "hs1", [pdu])
        assert event_id in answer["pdus"], answer
        await s.net.settle()
        held = (await stored(s.hs1, event_id)).get(event_id)
        assert held is None or held.rejection_reason is not None
        assert "I never joined" not in await messages(s.hs1, s.alice, s.room_id)
        assert event_id not in await timeline_ids(s.hs1, s.alice, s.room_id)
        assert event_id not in (await room_record(s.hs1, s.room_id)).forward_extremities


@both_versions
async def test_power_levels_change_by_unprivileged_user_is_rejected(room_version: str) -> None:
    async with _room(room_version) as s:
        before = await state(s.hs1, s.alice, s.room_id)
        status, power = await s.hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{s.room_id}/state/m.room.power_levels/", token=s.alice.access_token
        )
        power["users"][s.bob.user_id] = 100
        event_id, pdu = await forge_event(
            s.hs2, s.room_id, sender=s.bob.user_id, type="m.room.power_levels", content=power, state_key=""
        )
        await send_pdus(s.hs2, "hs1", [pdu])
        await s.net.settle()
        held = (await stored(s.hs1, event_id)).get(event_id)
        assert held is None or held.rejection_reason is not None
        assert await state(s.hs1, s.alice, s.room_id) == before
        assert event_id not in await timeline_ids(s.hs1, s.alice, s.room_id)


@both_versions
async def test_state_reset_from_an_old_branch_does_not_revert_a_ban(room_version: str) -> None:
    """bob, a moderator, is banned; hs2 then sends a topic change by bob whose prev
    events are from before the ban (where bob could still set it)."""
    async with _room(room_version) as s:
        hs1, alice, bob, room_id = s.hs1, s.alice, s.bob, s.room_id
        dave = await s.hs2.register("dave")
        assert (await join(s.hs2, dave, room_id, via="hs1"))[0] == 200
        status, power = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", token=alice.access_token
        )
        power["users"][bob.user_id] = 50
        power.setdefault("events", {})["m.room.topic"] = 50
        assert (await send_state(hs1, alice, room_id, "m.room.power_levels", power))[0] == 200
        assert (await send_state(hs1, alice, room_id, "m.room.topic", {"topic": "alice's"}))[0] == 200
        await s.net.settle()
        old_record = await room_record(s.hs2, room_id)
        old_tips = sorted(old_record.forward_extremities)
        old_state = dict(old_record.current_state)
        status, body = await hs1.api(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/ban", token=alice.access_token, json={"user_id": bob.user_id}
        )
        assert status == 200, body
        await s.net.settle()
        after_ban = await state(hs1, alice, room_id)
        assert (await stored(hs1, after_ban[("m.room.member", bob.user_id)]))[
            after_ban[("m.room.member", bob.user_id)]
        ].json["content"]["membership"] == "ban"
        # hs2 forks from before the ban
        event_id, pdu = await forge_event(
            s.hs2, room_id, sender=bob.user_id, type="m.room.topic", content={"topic": "bob was here"},
            state_key="", prev_events=old_tips, auth_state=old_state,
        )
        msg_id, msg = await forge_event(
            s.hs2, room_id, sender=bob.user_id, type="m.room.message", content={"msgtype": "m.text", "body": "ha"},
            prev_events=[event_id], auth_state={**old_state, ("m.room.topic", ""): event_id},
            depth=max(e.depth for e in (await stored(s.hs2, *old_tips)).values()) + 2,
        )
        await send_pdus(s.hs2, "hs1", [pdu, msg])
        await s.net.settle()
        assert await state(hs1, alice, room_id) == after_ban
        held = await stored(hs1, event_id, msg_id)
        for eid in (event_id, msg_id):
            # passes steps 4 and 5 (bob was a moderator before the ban), fails 6
            assert held[eid].soft_failed and held[eid].rejection_reason is None, held[eid]
            assert eid not in (await room_record(hs1, room_id)).forward_extremities
        assert "ha" not in await messages(hs1, alice, room_id)
        # hs2 merges bob's branch back in with dave's message: state resolution
        # must keep the ban and alice's topic (bob's topic fails auth after the ban)
        tips = sorted((await room_record(hs1, room_id)).forward_extremities)
        merge_id, merge = await forge_event(
            s.hs2, room_id, sender=dave.user_id, type="m.room.message",
            content={"msgtype": "m.text", "body": "merge"}, prev_events=[*tips, msg_id],
            auth_state=after_ban, depth=max(e.depth for e in (await stored(hs1, *tips, msg_id)).values()) + 1,
        )
        answer = await send_pdus(s.hs2, "hs1", [merge])
        assert answer["pdus"] == {merge_id: {}}, answer
        await s.net.settle()
        held = (await stored(hs1, merge_id))[merge_id]
        assert not held.soft_failed and held.rejection_reason is None, held
        assert await state(hs1, alice, room_id) == after_ban
        assert "merge" in await messages(hs1, alice, room_id)
        # the room goes on from the ban, not from bob's branch
        await hs1.api(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/after",
            token=alice.access_token, json={"msgtype": "m.text", "body": "after"},
        )
        await s.net.settle()
        assert await state(hs1, alice, room_id) == after_ban
        status, topic = await hs1.api(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/", token=alice.access_token
        )
        assert topic["topic"] == "alice's"


# ------------------------------------------------------------------ the request itself


async def test_unsigned_request_is_refused_and_nothing_staged() -> None:
    async with _room("12") as s:
        event_id, pdu = await _message(s, "no signature on the request")
        body = {"origin": "hs2", "origin_server_ts": 1, "pdus": [pdu], "edus": []}
        response = await s.hs1.client.open(
            "/_matrix/federation/v1/send/unsigned-1", method="PUT",
            headers={"Content-Type": "application/json"}, data=orjson.dumps(body),
        )
        assert response.status_code == 401
        assert orjson.loads(await response.get_data())["errcode"] == "M_UNAUTHORIZED"
        await s.net.settle()
        await _nothing_staged(s)
        assert await stored(s.hs1, event_id) == {}
        assert await s.hs1.deps.db.read(staging.get_received_transaction, "hs2", "unsigned-1") is None


async def test_transaction_with_51_pdus_is_refused() -> None:
    async with _room("12") as s:
        pdus = [(await _message(s, f"m{i}"))[1] for i in range(51)]
        with pytest.raises(FederationError) as info:
            await send_pdus(s.hs2, "hs1", pdus, txn_id="too-many")
        assert info.value.status == 400 and info.value.errcode == "M_BAD_JSON"
        await s.net.settle()
        await _nothing_staged(s)
        assert not set(await messages(s.hs1, s.alice, s.room_id)) & {f"m{i}" for i in range(51)}
        # 50 is fine
        answer = await send_pdus(s.hs2, "hs1", pdus[:50], txn_id="fifty")
        assert len(answer["pdus"]) == 50


async def test_retried_transaction_gets_the_same_answer_and_nothing_twice() -> None:
    async with _room("12") as s:
        event_id, pdu = await _message(s, "once")
        bad_id, bad = await _message(s, "bad", signing_key=rogue_key())
        first = await send_pdus(s.hs2, "hs1", [pdu, bad], txn_id="retry-me")
        await s.net.settle()
        assert first["pdus"][event_id] == {} and "error" in first["pdus"][bad_id]
        second = await send_pdus(s.hs2, "hs1", [pdu, bad], txn_id="retry-me")
        # the same ID with other contents is still the same transaction
        other_id, other = await _message(s, "other")
        third = await send_pdus(s.hs2, "hs1", [other], txn_id="retry-me")
        await s.net.settle()
        assert second == first and third == first
        assert (await messages(s.hs1, s.alice, s.room_id)).count("once") == 1
        assert "other" not in await messages(s.hs1, s.alice, s.room_id)
        await _nothing_staged(s)
