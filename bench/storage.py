"""Benchmark: storage throughput with group commit, bytes per event, room load time.

Run from the repository root::

    .venv/bin/python bench/storage.py            # full run (~1 minute)
    .venv/bin/python bench/storage.py --quick    # smaller rooms, for a smoke test

Every write is what a room actor sends: one ``storage.rooms.checkpoint`` of one
event (event row, prev/auth edges, state snapshot for state events, forward
extremities replaced, current-state upsert, txn ID for messages) through
``Database.write``, on a file database with ``journal_mode=WAL`` and
``synchronous=FULL`` (an fsync per commit). Event JSON is realistic: v11-shaped
PDUs with hashes, a signature, three auth events and a ~340-character message body
(~1 KB of JSON); member events carry a displayname and avatar URL (~0.75 KB).

1. **Throughput**: checkpoints (= events) per second with 1 writer task, then with
   100 writer tasks (one room each) at once; group commit folds the concurrent
   writes into shared transactions, shown as mean/max batch and latency.
2. **Bytes per event**: a fresh database grows a room by 1,000 member joins (state
   events) and then 10,000 messages; the growth of ``page_count * page_size`` per
   event, with the per-table split from SQLite's ``dbstat``. A second room grows to
   10,000 members, to show state storage per state event does not grow with the
   room (skip-delta snapshots, ``storage/rooms.py``).
3. **Room load**: ``load_room`` on the 10,000-event, 1,000-member room.

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa  # noqa: E402
import trio  # noqa: E402

from roomactors.protocol.b64 import encode_base64, encode_base64_urlsafe  # noqa: E402
from storage import rooms as R  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.schema import state_deltas  # noqa: E402

SERVER = "matrix.example.org"
BODY = (
    "Storage benchmark message. The quick brown fox jumps over the lazy dog while the room actor "
    "checkpoints its event, edges, state delta, forward extremities and transaction ID in one SQLite "
    "transaction, and group commit lets a hundred actors share one fsync. "
) * 3


def _id(prefix: str, seed: str) -> str:
    return prefix + encode_base64_urlsafe(hashlib.sha256(seed.encode()).digest())


class BenchRoom:
    """Builds the checkpoints a room actor would write, one event each."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.n = 0
        self.extremity: str | None = None
        self.ref: str | None = None
        self.create_id = _id("$", f"{room_id}/create")
        self.power_id = _id("$", f"{room_id}/power")  # stands in for the auth events' IDs

    def _pdu(self, event_id: str, type_: str, state_key: str | None, sender: str, content: dict) -> dict:
        pdu = {
            "auth_events": [self.create_id, self.power_id, _id("$", f"{sender}/member")],
            "content": content,
            "depth": self.n,
            "hashes": {"sha256": encode_base64(hashlib.sha256(event_id.encode()).digest())},
            "origin_server_ts": 1_750_000_000_000 + self.n,
            "prev_events": [self.extremity] if self.extremity else [],
            "room_id": self.room_id,
            "sender": sender,
            "signatures": {SERVER: {"ed25519:a_AbCd": encode_base64(hashlib.sha512(event_id.encode()).digest())}},
            "type": type_,
            "unsigned": {"age_ts": 1_750_000_000_000 + self.n},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        return pdu

    def next(self, kind: str, who: int = 0) -> R.Checkpoint:
        self.n += 1
        if self.n == 1:
            kind = "create"
        event_id = self.create_id if kind == "create" else _id("$", f"{self.room_id}/{self.n}")
        sender = f"@user{who}:{SERVER}"
        txn = None
        if kind == "create":
            type_, state_key, content = "m.room.create", "", {"room_version": "11", "creator": sender}
        elif kind == "join":
            type_, state_key = "m.room.member", sender
            content = {
                "membership": "join",
                "displayname": f"Benchmark User {who}",
                "avatar_url": f"mxc://{SERVER}/{_id('', sender)}",
            }
        else:
            type_, state_key = "m.room.message", None
            content = {"msgtype": "m.text", "body": BODY[: 330 + self.n % 20]}
            txn = R.TxnRecord(user_id=sender, device_id="BENCHDEVICE", txn_id=f"{self.room_id}/m{self.n}")
        pdu = self._pdu(event_id, type_, state_key, sender, content)
        delta = {(type_, state_key): event_id} if state_key is not None else {}
        ev = R.NewEvent(
            event_id=event_id,
            room_id=self.room_id,
            json=pdu,
            depth=self.n,
            type=type_,
            state_key=state_key,
            sender=sender,
            origin_server_ts=pdu["origin_server_ts"],
            prev_events=tuple(pdu["prev_events"]),
            auth_events=tuple(pdu["auth_events"]),
            state_base_ref=self.ref,
            state_delta=delta,
        )
        self.extremity = event_id
        if delta:
            self.ref = event_id
        return R.Checkpoint(
            room_id=self.room_id,
            room_version="11",
            events=(ev,),
            forward_extremities=frozenset({event_id}),
            current_state_delta=delta,
            txn=txn,
        )


async def _size(db: Database) -> tuple[int, dict[str, int]]:
    return await db.read(R.count_bytes), await db.read(R.count_bytes_by_table)


async def throughput(path: Path, writers: int, per_writer: int) -> None:
    async with Database.open(path) as db:
        rooms = [BenchRoom(f"!bench{i}:{SERVER}") for i in range(writers)]
        for room in rooms:  # create the rooms first (not timed)
            await db.write(R.checkpoint, room.next("create"))
        plans = [[room.next("message") for _ in range(per_writer)] for room in rooms]
        before = db.statistics()
        latencies: list[float] = []

        async def writer(plan: list[R.Checkpoint]) -> None:
            for cp in plan:
                started = time.perf_counter()
                await db.write(R.checkpoint, cp)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for plan in plans:
                nursery.start_soon(writer, plan)
        elapsed = time.perf_counter() - started
        after = db.statistics()
    total = writers * per_writer
    commits = after.commits - before.commits
    latencies.sort()
    print(
        f"  {writers:>3} writer(s) x {per_writer:>5} single-event checkpoints: "
        f"{total / elapsed:>7.0f} events/s  ({total} in {elapsed:.2f} s; {commits} commits, "
        f"mean batch {total / commits:.1f}, max batch {after.max_batch}; latency p50 "
        f"{latencies[len(latencies) // 2] * 1e3:.2f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms)"
    )


def _print_growth(label: str, count: int, before: tuple[int, dict], after: tuple[int, dict], json_bytes: int) -> None:
    total = after[0] - before[0]
    print(f"  {label}: {total / count:,.0f} bytes/event ({count:,} events; JSON alone {json_bytes / count:,.0f} bytes)")
    split = {name: after[1].get(name, 0) - before[1].get(name, 0) for name in after[1]}
    parts = [f"{name} {size / count:,.0f}" for name, size in sorted(split.items(), key=lambda kv: -kv[1]) if size > 0]
    print("      per table/index: " + ", ".join(parts))


async def bytes_per_event(path: Path, members: int, messages: int) -> None:
    async with Database.open(path) as db:
        room = BenchRoom(f"!size:{SERVER}")
        await db.write(R.checkpoint, room.next("create"))
        start = await _size(db)
        json_bytes = 0
        for who in range(members):
            cp = room.next("join", who)
            json_bytes += len(R._dump_json(cp.events[0].json))
            await db.write(R.checkpoint, cp)
        joined = await _size(db)
        _print_growth(f"state events (joins up to {members:,} members)", members, start, joined, json_bytes)
        json_bytes = 0
        for i in range(messages):
            cp = room.next("message", i % members)
            json_bytes += len(R._dump_json(cp.events[0].json))
            await db.write(R.checkpoint, cp)
        done = await _size(db)
        _print_growth(f"message events ({messages:,} after the joins)", messages, joined, done, json_bytes)

        # Room load: what a room actor reads when it wakes up.
        times = []
        for _ in range(7):
            started = time.perf_counter()
            record = await db.read(R.load_room, room.room_id)
            times.append(time.perf_counter() - started)
        print(
            f"  load_room ({record.max_stream_ordering:,} events, {len(record.current_state):,} state entries): "
            f"median {statistics.median(times) * 1e3:.1f} ms, best {min(times) * 1e3:.1f} ms (db.read, incl. thread hop)"
        )
        started = time.perf_counter()
        state = await db.read(R.get_state, room.ref)
        print(f"  get_state of the latest snapshot ({len(state):,} entries): {(time.perf_counter() - started) * 1e3:.1f} ms")


async def state_growth(path: Path, members: int) -> None:
    async with Database.open(path) as db:
        room = BenchRoom(f"!big:{SERVER}")
        await db.write(R.checkpoint, room.next("create"))
        checkpoints = [1_000, 5_000, members] if members >= 5_000 else [members]
        last_rows = last_count = 0
        for who in range(members):
            await db.write(R.checkpoint, room.next("join", who))
            if who + 1 in checkpoints:
                rows = await db.read(lambda c: c.execute(sa.select(sa.func.count()).select_from(state_deltas)).scalar())
                span = who + 1 - last_count
                print(
                    f"  joins {last_count + 1:>6,}-{who + 1:>6,}: {(rows - last_rows) / span:.1f} state rows per join "
                    f"(a full snapshot per join would be {(who + 1 + last_count) / 2:,.0f}; every {R.MAX_CHAIN} joins, "
                    f"{(who + 1 + last_count) / 2 / R.MAX_CHAIN:,.0f})"
                )
                last_rows, last_count = rows, who + 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory(prefix="roomactors-bench-") as tmp:
        tmp_path = Path(tmp)
        print(f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sa.__version__}; WAL, synchronous=FULL, in {tmp}")
        print("Throughput (each write = one checkpoint of one ~1 KB message event):")
        await throughput(tmp_path / "one.db", 1, 3000 // scale)
        await throughput(tmp_path / "hundred.db", 100, 200 // scale)
        print("Bytes per event and load time:")
        await bytes_per_event(tmp_path / "size.db", 1000 // scale, 10_000 // scale)
        print("State storage per state event as a room grows (skip-delta snapshots):")
        await state_growth(tmp_path / "growth.db", 10_000 // scale)


if __name__ == "__main__":
    trio.run(main)
