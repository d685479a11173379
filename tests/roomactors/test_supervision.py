"""Real RoomActors under supervision: a crash restarts the room from SQLite after a
backoff, repeated crashes quarantine it (the API's 503), and an operator clears it.

Two ways to crash an actor, both bugs from its point of view: a message it does not
know (``Poison``), and a database row that breaks ``load_room``'s promises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from roomactors.registry import ActorCrashed, RoomQuarantined
from roomactors.room.messages import GetState, SendResult, StateView
from storage.schema import current_state
from tests.helpers.rooms import ALICE, Server


@dataclass(frozen=True, slots=True, kw_only=True)
class Poison:
    """Not a room message: the actor's ``match`` raises TypeError (a bug -> crash)."""

    reply: trio.MemorySendChannel[Any]


def remove_create_row(conn: sa.Connection, room_id: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(current_state).where(current_state.c.room_id == room_id, current_state.c.type == "m.room.create")
    ).one()
    conn.execute(sa.delete(current_state).where(current_state.c.room_id == room_id, current_state.c.type == "m.room.create"))
    return dict(row._mapping)


def restore_row(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(sa.insert(current_state).values(**row))


async def test_crash_restarts_from_sqlite_with_state_intact(
    server: Server, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    room_id = await server.public_room("12")
    await server.send_ok(room_id, ALICE, "m.room.topic", {"topic": "kept"}, "")
    before = await server.state(room_id)
    started = server.actors_started
    t0 = trio.current_time()
    with pytest.raises(ActorCrashed):
        await server.registry.ask(room_id, lambda reply: Poison(reply=reply))
    assert any(room_id in r.getMessage() and "crashed" in r.getMessage() for r in caplog.records)
    # The next incarnation starts after the backoff and reloads the room from SQLite.
    assert await server.state(room_id) == before
    assert trio.current_time() - t0 >= server.settings.restart_backoff_initial_s
    assert server.actors_started == started + 1
    stats = server.registry.statistics()
    assert stats.crashes == 1 and stats.rooms[room_id].crashes == 1 and stats.rooms[room_id].loaded
    result = await server.send(room_id, ALICE, "m.room.message", {"body": "after the crash"})
    assert isinstance(result, SendResult)


async def test_repeated_crashes_quarantine_until_cleared(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    k = server.settings.quarantine_crashes
    for _ in range(k - 1):
        with pytest.raises(ActorCrashed):
            await server.registry.ask(room_id, lambda reply: Poison(reply=reply))
    with pytest.raises(RoomQuarantined):  # the K-th crash
        await server.registry.ask(room_id, lambda reply: Poison(reply=reply))
    # The API turns this into 503 M_UNKNOWN.
    with pytest.raises(RoomQuarantined) as info:
        await server.state(room_id)
    assert info.value.errcode == "M_UNKNOWN" and info.value.quarantine.crashes == k
    assert server.registry.statistics().quarantined == {room_id}
    # Other rooms are unaffected.
    other = await server.public_room("11")
    assert isinstance(await server.state(other), StateView)

    assert server.registry.clear_quarantine(room_id)
    view = await server.state(room_id)
    assert view.current_state[("m.room.join_rules", "")] in view.state_events


async def test_a_room_that_cannot_load_is_quarantined_after_backoffs(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("10")
    before = await server.state(room_id)
    await trio.sleep(server.settings.idle_timeout_s + 1)  # hibernate
    assert server.registry.statistics().loaded_rooms == 0
    row = await server.db.write(remove_create_row, room_id)

    t0 = trio.current_time()
    # The request waits in the mailbox while the actor fails to load, is restarted
    # after 1 s, then 2 s, and fails for good once the room is quarantined.
    with pytest.raises(RoomQuarantined):
        await server.registry.ask(room_id, lambda reply: GetState(reply=reply))
    s = server.settings
    assert trio.current_time() - t0 >= s.restart_backoff_initial_s * (1 + 2)
    assert server.registry.statistics().crashes == s.quarantine_crashes

    # An operator repairs the row and clears the quarantine.
    await server.db.write(restore_row, row)
    server.registry.clear_quarantine(room_id)
    assert await server.state(room_id) == before
