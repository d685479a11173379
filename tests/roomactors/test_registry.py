"""RoomRegistry with a trivial actor: spawning, idle stop, supervision, quarantine,
backpressure, cancellation, the memory budget and shutdown.

``EchoActor`` follows the RoomActor contract (``run(inbox, *, task_status)``,
``started()`` once loaded, returns only with an empty inbox) and nothing else, so
these tests pin the registry's behaviour without SQLite. Time is trio's
``autojump_clock``: idle timeouts and backoffs pass instantly, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from roomactors.clock import ManualClock
from roomactors.registry import (
    ActorCrashed,
    MailboxFull,
    RegistryClosed,
    RegistrySettings,
    RoomQuarantined,
    RoomRegistry,
    RoomStopped,
)
from roomactors.room.messages import Stop

ROOM = "!room:example.org"


@dataclass(frozen=True, slots=True, kw_only=True)
class Echo:
    value: Any
    reply: trio.MemorySendChannel[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Boom:
    reply: trio.MemorySendChannel[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """Hold the actor until ``release`` is set, then record ``value`` and answer."""

    release: trio.Event
    value: Any
    reply: trio.MemorySendChannel[Any]


@dataclass
class World:
    """What the actors did, across incarnations."""

    spawned: list[str] = field(default_factory=list)
    done: list[Any] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


class EchoActor:
    def __init__(self, room_id: str, world: World, idle_timeout_s: float) -> None:
        self.room_id = room_id
        self.world = world
        self.idle = idle_timeout_s

    async def run(self, inbox: trio.MemoryReceiveChannel[Any], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.world.spawned.append(self.room_id)
        await trio.sleep(0)  # "loading"
        task_status.started()
        while True:
            msg = None
            with trio.move_on_after(self.idle):
                try:
                    msg = await inbox.receive()
                except trio.EndOfChannel:
                    self.world.stopped.append(self.room_id)
                    return
            if msg is None or isinstance(msg, Stop):
                if inbox.statistics().current_buffer_used == 0:
                    self.world.stopped.append(self.room_id)
                    return
                continue
            try:
                if isinstance(msg, Boom):
                    raise RuntimeError("boom")
                if isinstance(msg, Block):
                    await msg.release.wait()
                self.world.done.append(msg.value)
                try:
                    msg.reply.send_nowait(msg.value)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
                    pass
            finally:
                msg.reply.close()


SETTINGS = RegistrySettings(
    mailbox_size=4,
    idle_timeout_s=60.0,
    restart_backoff_initial_s=1.0,
    restart_backoff_max_s=8.0,
    quarantine_crashes=3,
    quarantine_window_s=1000.0,
    max_loaded_rooms=100,
    request_timeout_s=10_000.0,
)


@pytest.fixture
def world() -> World:
    return World()


async def start_registry(nursery: trio.Nursery, world: World, settings: RegistrySettings = SETTINGS) -> RoomRegistry:
    registry = RoomRegistry(
        actor_factory=lambda room_id: EchoActor(room_id, world, settings.idle_timeout_s),
        settings=settings,
        clock=ManualClock(),
    )
    return await nursery.start(registry.run)


def echo(value: Any):
    return lambda reply: Echo(value=value, reply=reply)


async def test_ask_answers(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    assert await registry.ask(ROOM, echo("hi")) == "hi"
    stats = registry.statistics()
    assert stats.loaded_rooms == 1 and stats.rooms[ROOM].messages == 1
    assert stats.rooms[ROOM].last_message == "Echo" and stats.rooms[ROOM].loaded


async def test_concurrent_get_spawns_one_actor(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    handles = []

    async def get() -> None:
        handles.append(await registry.get(ROOM))

    async with trio.open_nursery() as inner:
        for _ in range(20):
            inner.start_soon(get)
    await trio.testing.wait_all_tasks_blocked()
    assert world.spawned == [ROOM]
    assert all(h is handles[0] for h in handles)
    assert registry.statistics().loaded_rooms == 1


async def test_idle_room_stops_and_reloads(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    handle = await registry.get(ROOM)
    assert await registry.ask(ROOM, echo(1)) == 1
    await trio.sleep(SETTINGS.idle_timeout_s + 1)
    assert world.stopped == [ROOM]
    assert registry.statistics().loaded_rooms == 0
    # The stale handle refuses; ask goes through get and spawns a fresh actor.
    with pytest.raises(RoomStopped):
        handle.send_nowait(Echo(value=2, reply=trio.open_memory_channel[Any](1)[0]))
    assert await registry.ask(ROOM, echo(2)) == 2
    assert world.spawned == [ROOM, ROOM]


async def test_stop_is_ignored_while_messages_are_queued(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    handle = await registry.get(ROOM)
    release = trio.Event()
    send, receive = trio.open_memory_channel[Any](4)
    handle.send_nowait(Block(release=release, value="a", reply=send.clone()))
    await trio.testing.wait_all_tasks_blocked()
    handle.send_nowait(Stop())
    handle.send_nowait(Echo(value="b", reply=send.clone()))
    release.set()
    assert [await receive.receive(), await receive.receive()] == ["a", "b"]
    assert world.stopped == [] and registry.statistics().loaded_rooms == 1


async def test_crash_restarts_with_backoff_and_keeps_queued_messages(
    nursery: trio.Nursery, world: World, autojump_clock: Any
) -> None:
    registry = await start_registry(nursery, world)
    handle = await registry.get(ROOM)
    crashed, crashed_rx = trio.open_memory_channel[Any](1)
    answer, answer_rx = trio.open_memory_channel[Any](1)
    handle.send_nowait(Boom(reply=crashed))
    handle.send_nowait(Echo(value="after", reply=answer))
    t0 = trio.current_time()
    # The crashed request's reply is closed: its asker is not left waiting.
    with pytest.raises(trio.EndOfChannel):
        await crashed_rx.receive()
    # The queued request survives and is answered by the next incarnation, after the backoff.
    assert await answer_rx.receive() == "after"
    assert trio.current_time() - t0 >= SETTINGS.restart_backoff_initial_s
    assert world.spawned == [ROOM, ROOM]
    stats = registry.statistics()
    assert stats.crashes == 1 and stats.rooms[ROOM].crashes == 1


async def test_ask_reports_a_crash(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    with pytest.raises(ActorCrashed):
        await registry.ask(ROOM, lambda reply: Boom(reply=reply))


async def test_backoff_doubles_then_quarantine_then_clear(
    nursery: trio.Nursery, world: World, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = await start_registry(nursery, world)
    times = []
    for _ in range(SETTINGS.quarantine_crashes - 1):
        with pytest.raises(ActorCrashed):
            await registry.ask(ROOM, lambda reply: Boom(reply=reply))
        times.append(trio.current_time())
        assert await registry.ask(ROOM, echo("alive")) == "alive"
        times.append(trio.current_time())
    # Restart delays: 1 s after the first crash, 2 s after the second.
    assert times[1] - times[0] >= 1.0 and times[3] - times[2] >= 2.0
    # A message queued behind the fatal crash fails with RoomQuarantined.
    handle = await registry.get(ROOM)
    queued, queued_rx = trio.open_memory_channel[Any](1)
    boom, _ = trio.open_memory_channel[Any](1)
    handle.send_nowait(Boom(reply=boom))
    handle.send_nowait(Echo(value="late", reply=queued))
    with pytest.raises(trio.EndOfChannel):
        await queued_rx.receive()
    assert registry.is_quarantined(ROOM)
    with pytest.raises(RoomQuarantined) as info:
        await registry.get(ROOM)
    assert info.value.quarantine.crashes == SETTINGS.quarantine_crashes
    assert info.value.errcode == "M_UNKNOWN"
    with pytest.raises(RoomQuarantined):
        await registry.ask(ROOM, echo("x"))
    with pytest.raises(RoomQuarantined):
        handle.send_nowait(Echo(value="x", reply=queued))
    stats = registry.statistics()
    assert stats.quarantined == {ROOM} and stats.loaded_rooms == 0 and stats.crashes == 3
    assert any(ROOM in r.getMessage() and "quarantined" in r.getMessage() for r in caplog.records)
    # An operator clears it: the room loads again.
    assert registry.clear_quarantine(ROOM)
    assert not registry.clear_quarantine(ROOM)
    assert await registry.ask(ROOM, echo("back")) == "back"


async def test_crashes_outside_the_window_do_not_quarantine(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    settings = RegistrySettings(
        mailbox_size=4,
        idle_timeout_s=10_000.0,
        restart_backoff_initial_s=1.0,
        restart_backoff_max_s=8.0,
        quarantine_crashes=2,
        quarantine_window_s=50.0,
        max_loaded_rooms=100,
        request_timeout_s=100_000.0,
    )
    registry = await start_registry(nursery, world, settings)
    for _ in range(4):
        with pytest.raises(ActorCrashed):
            await registry.ask(ROOM, lambda reply: Boom(reply=reply))
        await trio.sleep(100)
    assert not registry.is_quarantined(ROOM)
    assert await registry.ask(ROOM, echo("ok")) == "ok"


async def test_full_mailbox_is_a_visible_error(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    handle = await registry.get(ROOM)
    release = trio.Event()
    send, receive = trio.open_memory_channel[Any](10)
    handle.send_nowait(Block(release=release, value=0, reply=send.clone()))
    await trio.testing.wait_all_tasks_blocked()  # the actor holds the Block
    for i in range(1, SETTINGS.mailbox_size + 1):
        handle.send_nowait(Echo(value=i, reply=send.clone()))
    with pytest.raises(MailboxFull) as info:
        handle.send_nowait(Echo(value="x", reply=send.clone()))
    assert isinstance(info.value, trio.WouldBlock) and info.value.room_id == ROOM
    with pytest.raises(MailboxFull):
        await registry.ask(ROOM, echo("y"))
    stats = handle.statistics()
    assert stats.mailbox_depth == stats.mailbox_peak == SETTINGS.mailbox_size
    assert stats.mailbox_full == 2
    release.set()
    assert [await receive.receive() for _ in range(SETTINGS.mailbox_size + 1)] == list(range(SETTINGS.mailbox_size + 1))
    assert handle.statistics().mailbox_depth == 0 and handle.statistics().mailbox_peak == SETTINGS.mailbox_size


async def test_cancelled_asker_does_not_cancel_the_work(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    release = trio.Event()
    with trio.move_on_after(5) as scope:
        await registry.ask(ROOM, lambda reply: Block(release=release, value="work", reply=reply))
    assert scope.cancelled_caught and world.done == []
    release.set()
    assert await registry.ask(ROOM, echo("next")) == "next"
    assert world.done == ["work", "next"]
    assert registry.statistics().crashes == 0


async def test_ask_times_out(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    registry = await start_registry(nursery, world)
    release = trio.Event()
    with pytest.raises(trio.TooSlowError):
        await registry.ask(ROOM, lambda reply: Block(release=release, value=1, reply=reply), timeout=3)
    release.set()


async def test_memory_budget_stops_the_least_recently_used_idle_room(
    nursery: trio.Nursery, world: World, autojump_clock: Any
) -> None:
    settings = RegistrySettings(
        mailbox_size=4,
        idle_timeout_s=10_000.0,
        max_loaded_rooms=2,
        request_timeout_s=100_000.0,
    )
    registry = await start_registry(nursery, world, settings)
    for room in ("!a:x", "!b:x"):
        assert await registry.ask(room, echo(room)) == room
    assert await registry.ask("!a:x", echo("touch")) == "touch"  # !b:x is now least recently used
    assert await registry.ask("!c:x", echo("!c:x")) == "!c:x"
    await trio.testing.wait_all_tasks_blocked()
    assert world.stopped == ["!b:x"]
    assert set(registry.statistics().rooms) == {"!a:x", "!c:x"}


async def test_memory_budget_never_stops_a_busy_room(nursery: trio.Nursery, world: World, autojump_clock: Any) -> None:
    settings = RegistrySettings(mailbox_size=4, idle_timeout_s=10_000.0, max_loaded_rooms=1, request_timeout_s=1e5)
    registry = await start_registry(nursery, world, settings)
    release = trio.Event()
    handle = await registry.get("!busy:x")
    done, done_rx = trio.open_memory_channel[Any](1)
    handle.send_nowait(Block(release=release, value="busy", reply=done))
    await trio.testing.wait_all_tasks_blocked()
    assert await registry.ask("!other:x", echo(1)) == 1
    assert world.stopped == [] and registry.statistics().loaded_rooms == 2  # the budget is soft
    release.set()
    assert await done_rx.receive() == "busy"


async def test_close_drains_mailboxes_then_run_returns(world: World, autojump_clock: Any) -> None:
    registry = RoomRegistry(
        actor_factory=lambda room_id: EchoActor(room_id, world, SETTINGS.idle_timeout_s),
        settings=SETTINGS,
        clock=ManualClock(),
    )
    results: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        handle = await registry.get(ROOM)
        send, receive = trio.open_memory_channel[Any](4)
        handle.send_nowait(Echo(value=1, reply=send.clone()))
        handle.send_nowait(Echo(value=2, reply=send.clone()))
        registry.close()
        results = [await receive.receive(), await receive.receive()]
    assert results == [1, 2]
    assert world.stopped == [ROOM]
    with pytest.raises(RegistryClosed):
        await registry.get(ROOM)


async def test_close_cuts_a_restart_backoff_short(world: World, autojump_clock: Any) -> None:
    settings = RegistrySettings(restart_backoff_initial_s=1000.0, restart_backoff_max_s=1000.0, request_timeout_s=1e6)
    registry = RoomRegistry(
        actor_factory=lambda room_id: EchoActor(room_id, world, settings.idle_timeout_s),
        settings=settings,
        clock=ManualClock(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        with pytest.raises(ActorCrashed):
            await registry.ask(ROOM, lambda reply: Boom(reply=reply))
        t0 = trio.current_time()
        registry.close()
    assert trio.current_time() - t0 < 1000.0


async def test_a_failing_actor_factory_is_supervised_too(world: World, nursery: trio.Nursery, autojump_clock: Any) -> None:
    calls = []

    def factory(room_id: str) -> EchoActor:
        calls.append(room_id)
        if len(calls) == 1:
            raise RuntimeError("could not build the actor")
        return EchoActor(room_id, world, SETTINGS.idle_timeout_s)

    registry = RoomRegistry(actor_factory=factory, settings=SETTINGS, clock=ManualClock())
    await nursery.start(registry.run)
    assert await registry.ask(ROOM, echo("second time lucky")) == "second time lucky"
    assert registry.statistics().crashes == 1 and calls == [ROOM, ROOM]
