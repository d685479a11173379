"""Two in-process servers, room versions 12, 10 and 1: a remote join, then
messages both ways (server-server API "Joining Rooms", "Transactions"), through
the real composition on each side."""

from __future__ import annotations

import pytest

from roomactors.testing import open_test_network
from tests.helpers.federation import create_room, join, messages, send_text, state

pytestmark = pytest.mark.parametrize("room_version", ["12", "10", "1"])


async def test_join_and_talk_both_ways(room_version: str) -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await create_room(hs1, alice, preset="public_chat", room_version=room_version, name="fed")
        status, body = await join(hs2, bob, room_id, via="hs1")
        assert status == 200, body
        await net.settle()
        assert ("m.room.member", bob.user_id) in await state(hs1, alice, room_id)
        await send_text(hs1, alice, room_id, "hi bob")
        await net.settle()
        await send_text(hs2, bob, room_id, "hi alice")
        await net.settle()
        assert await messages(hs1, alice, room_id) == ["hi bob", "hi alice"]
        assert await messages(hs2, bob, room_id) == ["hi bob", "hi alice"]
        assert await state(hs1, alice, room_id) == await state(hs2, bob, room_id)
