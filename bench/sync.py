"""Benchmark: CPU cost of ``GET /sync`` — incremental syncs in a busy room, and
initial plus incremental syncs of a user in many rooms.

Run from the repository root::

    .venv/bin/python bench/sync.py            # full run (~1 minute)
    .venv/bin/python bench/sync.py --quick    # smaller numbers, for a smoke test

Each scenario runs the real homeserver (``api.services.open_homeserver``: database,
room actors) on a fresh directory, rate limits off, users registered without a
password (no argon2), and measures syncs two ways, each on its own fresh server:

* **http**: ``GET /sync`` through ``api.app.create_app`` and quart's test client —
  the whole request: auth, presence note, the memberships read, ``compute_sync``,
  JSON encoding (and the test client's own overhead);
* **direct**: ``compute_sync`` alone, in one ``db.read`` with a ``SyncRequest``,
  which is what the storage functions it calls decide.

Scenarios:

a. **Busy room** (like loadgen S2): one room with ``--members`` members; after each
   of ``--messages`` messages (senders take turns), every member does an
   incremental sync with the S2 filter (timeline limit 100, lazy-loaded members,
   no presence, no account data).
b. **Many rooms**: one user in ``--rooms`` rooms (created by the user, joined by a
   second user who sends); the user does ``--initial`` initial syncs, then
   ``--rounds`` incremental syncs, each after one new message in one room
   (rooms take turns). Same filter.

CPU time is ``time.process_time`` (every thread: the trio thread and the database
reader thread) around each sync alone; setup and sends are not counted. Figures
are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trio  # noqa: E402
from quart_trio import QuartTrio  # noqa: E402

from api.app import create_app  # noqa: E402
from api.client.account import register_user  # noqa: E402
from api.client.sync import SyncRequest, SyncToken, compute_sync  # noqa: E402
from api.deps import Deps  # noqa: E402
from api.services import open_homeserver  # noqa: E402
from roomactors.protocol.filters import parse_filter  # noqa: E402
from tests.helpers.client import Api, make_settings  # noqa: E402

FILTER = {
    "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True}},
    "presence": {"types": []},
    "account_data": {"types": []},
}
FILTER_PARAM = json.dumps(FILTER)
PARSED_FILTER = parse_filter(FILTER)


class Syncer:
    """One user's sync session, over HTTP or straight through ``compute_sync``."""

    def __init__(self, deps: Deps, api: Api, mode: str) -> None:
        self.deps, self.api, self.mode = deps, api, mode
        self.since: str | None = None

    async def sync(self) -> dict[str, Any]:
        if self.mode == "http":
            query = {"filter": FILTER_PARAM, "timeout": "0"}
            if self.since is not None:
                query["since"] = self.since
            body = await self.api.ok("GET", "/sync", query=query)
            self.since = body["next_batch"]
            return body
        d = self.deps
        since = SyncToken.parse(self.since) if self.since is not None else None
        req = SyncRequest(
            user_id=self.api.user_id, device_id=self.api.device_id, since=since, filter=PARSED_FILTER,
            full_state=False, now_ms=d.clock.time_ms(), default_limit=d.settings.sync.default_timeline_limit,
        )
        result = await d.db.read(compute_sync, req)
        # Typing serial 0: nobody types in these scenarios.
        self.since = str(SyncToken(result.events_pos, result.misc_pos, 0))
        return result.body


class Cpu:
    """CPU milliseconds of the measured calls (all threads)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def measure(self, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.process_time()
        result = await call()
        self.samples.append((time.process_time() - started) * 1e3)
        return result

    def __str__(self) -> str:
        s = self.samples
        if not s:
            return "no samples"
        q = statistics.quantiles(s, n=10) if len(s) > 1 else [s[0]] * 9
        return (
            f"{statistics.fmean(s):6.2f} ms mean, {statistics.median(s):6.2f} median, "
            f"p90 {q[8]:6.2f} (n={len(s)})"
        )


async def with_homeserver(tmp: Path, body: Callable[[Deps, QuartTrio], Awaitable[None]]) -> None:
    settings = make_settings(tmp)
    async with open_homeserver(settings) as deps:
        await body(deps, create_app(deps))


async def make_users(deps: Deps, app: QuartTrio, prefix: str, count: int) -> list[Api]:
    out = []
    async with app.test_request_context("/"):  # register_user reads the client's address
        for i in range(count):
            r = await register_user(deps, f"{prefix}{i}", None)
            out.append(Api(app, r["access_token"], r["user_id"], r["device_id"]))
    return out


async def busy_room(tmp: Path, mode: str, members: int, messages: int) -> None:
    async def body(deps: Deps, app: QuartTrio) -> None:
        users = await make_users(deps, app, "member", members)
        room = await users[0].create_room(preset="public_chat", name="busy")
        for u in users[1:]:
            await u.join(room)
        syncers = [Syncer(deps, u, mode) for u in users]
        initial = Cpu()
        for s in syncers:
            await initial.measure(s.sync)
        incremental = Cpu()
        delivered = 0
        for m in range(messages):
            await users[m % members].send(room, f"message {m} " + "x" * 100)
            for s in syncers:
                result = await incremental.measure(s.sync)
                delivered += len(result.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
                                 .get("events", []))
        assert delivered == members * messages, (delivered, members * messages)
        print(f"  [{mode:6}] initial sync      {initial}")
        print(f"  [{mode:6}] incremental sync  {incremental}")

    await with_homeserver(tmp, body)


async def many_rooms(tmp: Path, mode: str, rooms: int, initial_syncs: int, rounds: int) -> None:
    async def body(deps: Deps, app: QuartTrio) -> None:
        user, other = await make_users(deps, app, "many", 2)
        room_ids = []
        for i in range(rooms):
            room_id = await user.create_room(preset="public_chat", name=f"room {i}")
            await other.join(room_id)
            await other.send(room_id, f"hello {i}")
            room_ids.append(room_id)
        initial = Cpu()
        for _ in range(initial_syncs):
            syncer = Syncer(deps, user, mode)
            result = await initial.measure(syncer.sync)
            assert len(result["rooms"]["join"]) == rooms
        incremental = Cpu()
        for r in range(rounds):
            await other.send(room_ids[r % rooms], f"round {r}")
            result = await incremental.measure(syncer.sync)
            assert list(result["rooms"]["join"]) == [room_ids[r % rooms]], result.get("rooms")
        print(f"  [{mode:6}] initial sync      {initial}")
        print(f"  [{mode:6}] incremental sync  {incremental}")

    await with_homeserver(tmp, body)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--initial", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--modes", default="http,direct")
    args = parser.parse_args()
    if args.quick:
        args.members, args.messages, args.rooms, args.initial, args.rounds = 5, 10, 10, 3, 20
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"(a) one room, {args.members} members, an incremental sync by each after each of "
              f"{args.messages} messages (CPU per sync, all threads):")
        for mode in modes:
            await busy_room(Path(tmp) / f"a-{mode}", mode, args.members, args.messages)
        print(f"(b) one user in {args.rooms} rooms: {args.initial} initial syncs, then {args.rounds} "
              f"incremental syncs after one new message each:")
        for mode in modes:
            await many_rooms(Path(tmp) / f"b-{mode}", mode, args.rooms, args.initial, args.rounds)


if __name__ == "__main__":
    trio.run(main)
