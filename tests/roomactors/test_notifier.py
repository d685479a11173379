"""Notifier: register-then-check-then-wait never misses a wake-up; listeners are
cleaned up on exit and on cancellation; unrelated keys do not wake."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from roomactors.notifier import Notifier, NotifierStatistics


def idle(notifier: Notifier) -> bool:
    stats = notifier.statistics()
    return stats.listeners == 0 and stats.keys == 0


async def test_notify_between_register_and_wait_is_not_missed() -> None:
    """The race /sync relies on: a change that lands after the listener registered
    but before it sleeps (e.g. while it reads the database) wakes it at once."""
    notifier = Notifier()
    with notifier.listen({"!room:x", "@u:x"}) as listener:
        assert not listener.woken
        notifier.notify("!room:x")  # "while compute_sync runs"
        assert listener.woken
        with trio.fail_after(1):
            await listener.wait()  # returns immediately, no wake-up lost
    assert idle(notifier)


async def test_notify_before_register_is_not_seen() -> None:
    """A listener only hears about changes after it registered; earlier ones are
    what the caller's database read covers."""
    notifier = Notifier()
    notifier.notify("!room:x")
    with notifier.listen({"!room:x"}) as listener:
        assert not listener.woken


async def test_wait_sleeps_until_a_key_is_notified(autojump_clock: trio.testing.MockClock) -> None:
    notifier = Notifier()
    woke_at: list[float] = []

    async def waiter(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with notifier.listen({"@alice:x", "!a:x"}) as listener:
            task_status.started()
            await listener.wait()
            woke_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(waiter)
        await trio.sleep(5)
        notifier.notify("!other:x", "@bob:x")  # unrelated keys
        await trio.sleep(5)
        assert woke_at == []
        notifier.notify("!a:x")
    assert woke_at == [10.0]
    assert idle(notifier)


async def test_one_notify_wakes_every_listener_on_any_of_its_keys() -> None:
    notifier = Notifier()
    with notifier.listen({"!a:x"}) as a, notifier.listen({"!a:x", "!b:x"}) as ab, \
            notifier.listen({"!b:x"}) as b, notifier.listen({"!c:x"}) as c:
        assert notifier.statistics() == NotifierStatistics(position=0, listeners=4, keys=3)
        notifier.notify("!a:x", "!b:x")
        assert (a.woken, ab.woken, b.woken, c.woken) == (True, True, True, False)
        # Woken stays woken; notifying again is harmless.
        notifier.notify("!a:x")
        assert notifier.statistics().position == 2
    assert idle(notifier)


async def test_listeners_are_removed_when_the_waiter_is_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    notifier = Notifier()
    with trio.move_on_after(30) as scope:
        with notifier.listen({"!a:x", "@u:x"}) as listener:
            assert notifier.statistics().listeners == 1
            await listener.wait()
    assert scope.cancelled_caught
    assert idle(notifier)
    notifier.notify("!a:x")  # nothing registered: a no-op besides the position
    assert notifier.statistics().position == 1


async def test_cleanup_on_exception_keeps_other_listeners() -> None:
    notifier = Notifier()
    with notifier.listen({"!a:x"}) as survivor:
        with pytest.raises(RuntimeError):
            with notifier.listen({"!a:x", "!b:x"}):
                raise RuntimeError("boom")
        assert notifier.statistics() == NotifierStatistics(position=0, listeners=1, keys=1)
        notifier.notify("!a:x")
        assert survivor.woken
    assert idle(notifier)


async def test_many_waiters_many_notifies(autojump_clock: trio.testing.MockClock) -> None:
    """Every waiter on a room wakes exactly once per wait, and none is left behind."""
    notifier = Notifier()
    wakes = [0] * 50

    async def waiter(i: int) -> None:
        for _ in range(3):
            with notifier.listen({f"!r{i % 5}:x"}) as listener:
                await listener.wait()
            wakes[i] += 1

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(waiter, i)
        for _ in range(3):
            await trio.sleep(1)
            notifier.notify(*(f"!r{j}:x" for j in range(5)))
    assert wakes == [3] * 50
    assert idle(notifier)


def test_listen_with_no_keys_never_wakes() -> None:
    notifier = Notifier()
    with notifier.listen(()) as listener:
        notifier.notify("!a:x")
        assert not listener.woken
        assert notifier.statistics() == NotifierStatistics(position=1, listeners=1, keys=0)
    assert idle(notifier)
