"""TypingService: timeouts (driven by ``autojump_clock``), serials, ``changed_since``,
notifications and statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from roomactors.typing import TypingService, TypingStatistics

ROOM = "!room:x"
OTHER = "!other:x"
ALICE = "@alice:x"
BOB = "@bob:x"


class Recorder:
    def __init__(self) -> None:
        self.notified: list[str] = []

    def __call__(self, room_id: str) -> None:
        self.notified.append(room_id)


@pytest.fixture
def notified() -> Recorder:
    return Recorder()


@pytest.fixture
async def typing(nursery: trio.Nursery, notified: Recorder) -> AsyncIterator[TypingService]:
    service = TypingService(notified, max_timeout_ms=120_000)
    await nursery.start(service.run)
    yield service


async def test_start_and_stop_bump_the_serial_and_notify(typing: TypingService, notified: Recorder) -> None:
    assert typing.serial == 0 and typing.typing_users(ROOM) == []
    typing.set_typing(ROOM, ALICE, True, 30_000)
    assert typing.typing_users(ROOM) == [ALICE]
    assert typing.serial == 1 and notified.notified == [ROOM]
    typing.set_typing(ROOM, BOB, True, 30_000)
    assert typing.typing_users(ROOM) == [ALICE, BOB]
    typing.set_typing(ROOM, ALICE, False)
    assert typing.typing_users(ROOM) == [BOB]
    assert typing.serial == 3 and notified.notified == [ROOM] * 3
    # Stopping when not typing is not a change.
    typing.set_typing(ROOM, ALICE, False)
    typing.set_typing(OTHER, ALICE, False)
    assert typing.serial == 3 and typing.statistics() == TypingStatistics(rooms=1, typing_users=1, serial=3)


async def test_typing_expires_after_its_timeout(
    autojump_clock: trio.testing.MockClock, typing: TypingService, notified: Recorder
) -> None:
    start = trio.current_time()
    typing.set_typing(ROOM, ALICE, True, 10_000)
    await trio.sleep(9.9)
    assert typing.typing_users(ROOM) == [ALICE]
    await trio.sleep(0.2)
    assert typing.typing_users(ROOM) == []
    assert typing.serial == 2 and notified.notified == [ROOM, ROOM]
    assert typing.statistics() == TypingStatistics(rooms=0, typing_users=0, serial=2)
    assert 10.0 <= trio.current_time() - start < 10.2


async def test_refreshing_postpones_expiry_without_a_change(
    autojump_clock: trio.testing.MockClock, typing: TypingService, notified: Recorder
) -> None:
    typing.set_typing(ROOM, ALICE, True, 10_000)
    await trio.sleep(8)
    typing.set_typing(ROOM, ALICE, True, 10_000)  # keeps typing: deadline now t=18
    assert typing.serial == 1
    await trio.sleep(9)
    assert typing.typing_users(ROOM) == [ALICE]
    await trio.sleep(1.5)
    assert typing.typing_users(ROOM) == [] and typing.serial == 2


async def test_a_sooner_deadline_wakes_the_expiry_task(
    autojump_clock: trio.testing.MockClock, typing: TypingService
) -> None:
    typing.set_typing(ROOM, ALICE, True, 100_000)
    await trio.sleep(0)  # the task now sleeps until t=100
    typing.set_typing(OTHER, BOB, True, 1_000)
    await trio.sleep(1.1)
    assert typing.typing_users(OTHER) == [] and typing.typing_users(ROOM) == [ALICE]
    await trio.sleep(100)
    assert typing.statistics().typing_users == 0


async def test_timeouts_are_clamped_and_defaulted(autojump_clock: trio.testing.MockClock, notified: Recorder) -> None:
    typing = TypingService(notified, max_timeout_ms=5_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(typing.run)
        typing.set_typing(ROOM, ALICE, True, 10**9)  # clamped to 5 s
        typing.set_typing(OTHER, BOB, True, None)  # default 30 s, clamped to 5 s
        await trio.sleep(5.1)
        assert typing.statistics().typing_users == 0
        nursery.cancel_scope.cancel()


async def test_expiry_of_one_user_keeps_the_others(
    autojump_clock: trio.testing.MockClock, typing: TypingService, notified: Recorder
) -> None:
    typing.set_typing(ROOM, ALICE, True, 1_000)
    typing.set_typing(ROOM, BOB, True, 5_000)
    await trio.sleep(1.5)
    assert typing.typing_users(ROOM) == [BOB]
    await trio.sleep(4)
    assert typing.typing_users(ROOM) == []
    assert notified.notified == [ROOM] * 4


async def test_changed_since(typing: TypingService) -> None:
    # A room that never had typing never changed.
    assert not typing.changed_since(ROOM, 0)
    typing.set_typing(ROOM, ALICE, True, 30_000)  # serial 1, ROOM's last change 1
    assert typing.changed_since(ROOM, 0)
    assert not typing.changed_since(ROOM, 1)
    assert not typing.changed_since(OTHER, 0)
    typing.set_typing(OTHER, BOB, True, 30_000)  # serial 2
    assert not typing.changed_since(ROOM, 1)  # another room's change is not ROOM's
    assert typing.changed_since(OTHER, 1)
    typing.set_typing(ROOM, ALICE, False)  # serial 3: the stop is a change too
    assert typing.changed_since(ROOM, 2) and typing.typing_users(ROOM) == []
    # A serial from before a restart (larger than ours): everything changed.
    assert typing.changed_since(ROOM, 99) and typing.changed_since(OTHER, 99)
