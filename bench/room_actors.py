"""Benchmark: room actors end to end — local sends persisted per second, memory per
loaded and per hibernated room, and reload time of a big room.

Run from the repository root::

    .venv/bin/python bench/room_actors.py            # full run (a few minutes)
    .venv/bin/python bench/room_actors.py --quick    # smaller numbers, for a smoke test

Every send is the whole local path of a client send: ``registry.ask(SendEvent)`` →
the room's actor builds the event (prev/auth events, depth), signs it (ed25519),
hashes it, runs ``check_auth`` against the current state, checkpoints it with ONE
``db.write`` (WAL, ``synchronous=FULL``, group commit), applies it and answers.

1. **Throughput**: messages per second into one room (one sender: each send waits
   for its own commit), then into 100 rooms at once (group commit shares fsyncs),
   with the CPU time per event (``time.process_time``: every thread) and the trio
   thread's share (``time.thread_time``; the rest is mostly the database writer).
2. **Memory**: Python heap (``tracemalloc``) per *loaded* small room (create, join,
   power levels, join rules, one message) with N rooms loaded, and per
   *hibernated* room once every actor has stopped (the registry keeps no entry).
3. **Reload**: a room with 1,000 members and 10,000 events hibernates; the first
   request afterwards spawns its actor, which reads it with ``load_room``.

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trio  # noqa: E402

from roomactors.registry import RegistrySettings  # noqa: E402
from roomactors.room.messages import Stop  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.helpers.rooms import ALICE, Server  # noqa: E402

BODY = {"msgtype": "m.text", "body": "Room actor benchmark message; " * 20}


def settings() -> RegistrySettings:
    return RegistrySettings(mailbox_size=256, idle_timeout_s=3600.0, max_loaded_rooms=1_000_000, request_timeout_s=math.inf)


async def hibernate_all(server: Server) -> None:
    """Send every loaded room ``Stop`` (what the idle timeout does) and wait until
    all have gone."""
    for room_id in list(server.registry.statistics().rooms):
        (await server.registry.get(room_id)).send_nowait(Stop())
    while server.registry.statistics().loaded_rooms:
        await trio.sleep(0.01)


async def with_server(path: Path, body) -> None:  # type: ignore[no-untyped-def]
    async with Database.open(path) as db, trio.open_nursery() as nursery:
        server = Server(db, settings())
        await nursery.start(server.registry.run)
        await body(server)
        server.registry.close()


async def throughput(path: Path, rooms: int, per_room: int) -> None:
    async def body(server: Server) -> None:
        room_ids = [await server.public_room("12") for _ in range(rooms)]
        commits0 = server.db.statistics().commits

        async def chat(room_id: str) -> None:
            for _ in range(per_room):
                await server.send_ok(room_id, ALICE, "m.room.message", BODY)

        started = time.perf_counter()
        cpu_started, trio_cpu_started = time.process_time(), time.thread_time()
        async with trio.open_nursery() as nursery:
            for room_id in room_ids:
                nursery.start_soon(chat, room_id)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started  # every thread: trio, the database writer
        trio_cpu = time.thread_time() - trio_cpu_started  # this (the trio) thread alone
        total = rooms * per_room
        commits = server.db.statistics().commits - commits0
        print(
            f"  {rooms:>3} room(s) x {per_room:,} messages: {total / elapsed:,.0f} events/s "
            f"({elapsed * 1e3 / per_room:.2f} ms per send per room; {total / max(commits, 1):.1f} events per commit); "
            f"CPU {cpu * 1e3 / total:.3f} ms per event, of which the trio thread {trio_cpu * 1e3 / total:.3f} ms"
        )

    await with_server(path, body)


async def memory(path: Path, rooms: int) -> None:
    async def body(server: Server) -> None:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]

        async def small_rooms(count: int) -> None:
            for _ in range(count):
                room_id = await server.public_room("12")
                await server.send_ok(room_id, ALICE, "m.room.message", BODY)

        async with trio.open_nursery() as nursery:  # 100 creators at once: group commit
            for share in range(100):
                nursery.start_soon(small_rooms, rooms // 100 + (share < rooms % 100))
        gc.collect()
        loaded = tracemalloc.get_traced_memory()[0]
        print(
            f"  {rooms:,} small rooms loaded: {(loaded - base) / rooms / 1024:,.1f} KiB of Python heap per room "
            f"({server.registry.statistics().loaded_rooms:,} loaded)"
        )
        await hibernate_all(server)
        gc.collect()
        hibernated = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(
            f"  after idle stop: {server.registry.statistics().loaded_rooms} loaded; "
            f"{max(hibernated - base, 0) / rooms:,.0f} bytes of Python heap per hibernated room"
        )

    await with_server(path, body)


async def reload(path: Path, members: int, events: int) -> None:
    async def body(server: Server) -> None:
        room_id = await server.public_room("12")
        started = time.perf_counter()
        for i in range(members):
            await server.send_ok(room_id, f"@user{i}:local.example", "m.room.member", {"membership": "join"}, f"@user{i}:local.example")
        for i in range(events - members - 4):
            await server.send_ok(room_id, f"@user{i % members}:local.example", "m.room.message", BODY)
        print(f"  built a room of {events:,} events, {members:,} members in {time.perf_counter() - started:.1f} s")
        await hibernate_all(server)
        started = time.perf_counter()
        view = await server.state(room_id)
        first = time.perf_counter() - started
        started = time.perf_counter()
        await server.send_ok(room_id, ALICE, "m.room.message", BODY)
        send = time.perf_counter() - started
        print(
            f"  reload ({len(view.current_state):,} state entries): first request answered in {first * 1e3:.0f} ms; "
            f"then a send in {send * 1e3:.1f} ms"
        )

    await with_server(path, body)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_room, rooms_mem, members, events = (200, 500, 100, 1_000) if args.quick else (1_000, 10_000, 1_000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        print("Local sends persisted (one SendEvent each, signed, checked, checkpointed):")
        await throughput(Path(tmp) / "t1.db", 1, per_room)
        await throughput(Path(tmp) / "t100.db", 100, max(per_room // 10, 10))
        print("Memory:")
        await memory(Path(tmp) / "m.db", rooms_mem)
        print("Reload:")
        await reload(Path(tmp) / "r.db", members, events)


if __name__ == "__main__":
    trio.run(main)
