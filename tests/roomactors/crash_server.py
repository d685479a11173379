"""A room-actor server under write load, for the SIGKILL recovery test.

``python -m tests.roomactors.crash_server DB_PATH SEED`` opens a real ``Database``,
runs a ``RoomRegistry`` of real ``RoomActor`` objects (``SystemClock``, the fixed
``local.example`` key of ``tests.helpers.rooms``) and, if the database has no rooms
yet, creates ``ROOMS`` public rooms (v11 and v12 alternately). Then, until killed,
concurrent tasks per room write through ``registry.ask``:

* messages (Alice, and local users who may or may not be joined);
* state changes: topics, joins and leaves of local users, power-level changes;
* a "remote server" forking the DAG: it takes the room's state, waits while local
  events land, then ingests ``remote.example`` events citing the old extremities
  (``IngestPdu``), so the room forks and the next local event merges it;
* one room (the last) has only remote traffic: sibling branches with conflicting
  state (it often has two extremities when killed), events rejected by auth and
  events soft-failed against the current state.

Each event is reported as one line ``ACK <room_id> <event_id>``, flushed, only after
its reply (``SendResult``, or a ``PduOutcome`` saying it was stored) has arrived:
those events must survive the kill. Any other unexpected reply raises, so the
process dies and the test sees it (stderr).
"""

from __future__ import annotations

import random
import sys
from typing import Any

import trio

from roomactors.clock import SystemClock
from roomactors.protocol.ids import RoomId
from roomactors.protocol.room_versions import get_rules
from roomactors.registry import RegistrySettings, RoomRegistry
from roomactors.room.actor import RoomActor
from roomactors.room.events import build_create_event
from roomactors.room.messages import CreateRoom, Forbidden, GetState, IngestPdu, PduOutcome, SendEvent, SendResult, StateView
from storage import rooms as store
from storage.db import Database
from tests.helpers.rooms import ALICE, BOB, CAROL, LOCAL, RemoteBranch, signing_key

ROOMS = 6
VERSIONS = ("11", "12")
USERS = [BOB] + [f"@u{n}:{LOCAL}" for n in range(4)]
#: Rooms (by index) that also get a forking remote branch.
FORKED = 4
STORED_STATUSES = {"accepted", "rejected", "soft_failed", "outlier"}

SETTINGS = RegistrySettings(mailbox_size=64, idle_timeout_s=600.0, request_timeout_s=60.0)


def ack(room_id: str, event_id: str) -> None:
    print("ACK", room_id, event_id, flush=True)


class Load:
    def __init__(self, db: Database, seed: int) -> None:
        self.db = db
        self.clock = SystemClock()
        self.key = signing_key(LOCAL)
        self.rng = random.Random(seed)
        self.registry = RoomRegistry(actor_factory=self._actor, settings=SETTINGS, clock=self.clock)

    def _actor(self, room_id: RoomId) -> RoomActor:
        return RoomActor(room_id, db=self.db, server_name=LOCAL, signing_key=self.key, clock=self.clock, settings=SETTINGS)

    async def send(self, room_id: str, sender: str, type: str, content: dict[str, Any], state_key: str | None = None) -> None:
        result = await self.registry.ask(
            RoomId(room_id),
            lambda reply: SendEvent(sender=sender, type=type, content=content, state_key=state_key, reply=reply),
        )
        if isinstance(result, SendResult):
            ack(room_id, result.event_id)
        elif not (isinstance(result, Forbidden) and sender != ALICE):
            # Alice (creator, power 100) is never refused; others may be (not joined).
            raise AssertionError(f"{room_id}: {sender} {type} -> {result!r}")

    async def ingest(self, room_id: str, pdu: dict[str, Any]) -> None:
        outcome = await self.registry.ask(RoomId(room_id), lambda reply: IngestPdu(pdu=pdu, reply=reply))
        assert isinstance(outcome, PduOutcome), outcome
        if outcome.status not in STORED_STATUSES or outcome.event_id is None:
            raise AssertionError(f"{room_id}: ingest -> {outcome!r}")
        ack(room_id, outcome.event_id)

    async def state(self, room_id: str) -> StateView:
        view = await self.registry.ask(RoomId(room_id), lambda reply: GetState(reply=reply))
        assert isinstance(view, StateView), view
        return view

    # --- set-up ------------------------------------------------------------------------

    async def create_room(self, n: int) -> str:
        version = VERSIONS[n % len(VERSIONS)]
        wanted = None if not get_rules(version).create_event_has_room_id else RoomId(f"!crash{n}:{LOCAL}")
        create, room_id = build_create_event(
            version, creator=ALICE, server_name=LOCAL, signing_key=self.key, clock=self.clock, room_id_for_v1_11=wanted
        )
        result = await self.registry.ask(room_id, lambda reply: CreateRoom(create_event=create, reply=reply))
        assert isinstance(result, SendResult), result
        ack(room_id, result.event_id)
        await self.send(room_id, ALICE, "m.room.member", {"membership": "join"}, ALICE)
        await self.send(room_id, ALICE, "m.room.power_levels", {"users": self._levels(version, 0)}, "")
        await self.send(room_id, ALICE, "m.room.join_rules", {"join_rule": "public"}, "")
        return room_id

    @staticmethod
    def _levels(version: str, bob: int) -> dict[str, int]:
        levels = {} if get_rules(version).explicit_creators else {ALICE: 100}
        levels[BOB] = bob
        return levels

    # --- the load ----------------------------------------------------------------------

    async def messages(self, room_id: str, rng: random.Random) -> None:
        for i in range(10**9):
            sender = ALICE if rng.random() < 0.6 else rng.choice(USERS)
            await self.send(room_id, sender, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"})

    async def state_changes(self, room_id: str, version: str, rng: random.Random) -> None:
        for i in range(10**9):
            roll = rng.random()
            if roll < 0.25:
                await self.send(room_id, ALICE, "m.room.topic", {"topic": f"topic {i}"}, "")
            elif roll < 0.55:
                user = rng.choice(USERS)
                await self.send(room_id, user, "m.room.member", {"membership": "join"}, user)
            elif roll < 0.8:
                user = rng.choice(USERS)
                await self.send(room_id, user, "m.room.member", {"membership": "leave"}, user)
            else:
                content = {"users": self._levels(version, rng.choice([0, 10, 50])), "events_default": 0}
                if rng.random() < 0.5:
                    content["events"] = {"m.room.topic": rng.choice([50, 100])}
                await self.send(room_id, ALICE, "m.room.power_levels", content, "")

    async def remote_forks(self, room_id: str, rng: random.Random) -> None:
        """``remote.example`` builds on a state it saw a moment ago: each round
        forks the DAG (its events cite extremities that local events have since
        superseded)."""
        for i in range(10**9):
            view = await self.state(room_id)
            branch = RemoteBranch.at(view, {})
            await trio.sleep(rng.uniform(0.002, 0.02))  # let local events land meanwhile
            if CAROL not in view.joined_members:
                await self.ingest(room_id, branch.add(CAROL, "m.room.member", {"membership": "join"}, CAROL))
            for j in range(rng.randint(1, 3)):
                if rng.random() < 0.3:
                    pdu = branch.add(CAROL, "m.room.member", {"membership": "join", "displayname": f"Carol {i}.{j}"}, CAROL)
                else:
                    pdu = branch.add(CAROL, "m.room.message", {"msgtype": "m.text", "body": f"remote {i}.{j}"})
                await self.ingest(room_id, pdu)


    async def remote_only(self, room_id: str, rng: random.Random) -> None:
        rounds = 0
        for i in range(10**9):
            view = await self.state(room_id)
            branch = RemoteBranch.at(view, {})
            if CAROL not in view.joined_members:
                await self.ingest(room_id, branch.add(CAROL, "m.room.member", {"membership": "join"}, CAROL))
                continue
            one, two = branch.fork(), branch.fork()
            rounds += 1
            match rounds % 3:
                case 0:  # two siblings setting the same state key: the room forks, resolution picks
                    await self.ingest(room_id, one.add(CAROL, "m.room.member", {"membership": "join", "displayname": f"A{i}"}, CAROL))
                    await self.ingest(room_id, two.add(CAROL, "m.room.member", {"membership": "join", "displayname": f"B{i}"}, CAROL))
                case 1:  # Carol (power 0) may not set the topic: rejected
                    await self.ingest(room_id, one.add(CAROL, "m.room.topic", {"topic": f"remote {i}"}, ""))
                case _:  # Carol leaves, then speaks on a branch where she is still joined: soft-failed
                    await self.ingest(room_id, one.add(CAROL, "m.room.member", {"membership": "leave"}, CAROL))
                    await self.ingest(room_id, two.add(CAROL, "m.room.message", {"msgtype": "m.text", "body": f"late {i}"}))
            await trio.sleep(rng.uniform(0.002, 0.02))


async def main(path: str, seed: int) -> None:
    async with Database.open(path) as db:
        load = Load(db, seed)
        async with trio.open_nursery() as nursery:
            await nursery.start(load.registry.run)
            room_ids = await db.read(store.list_room_ids)
            if not room_ids:
                room_ids = [await load.create_room(n) for n in range(ROOMS)]
            records = [await db.read(store.load_room, r) for r in room_ids]
            print("READY", len(room_ids), flush=True)
            for n, record in enumerate(records):
                assert record is not None
                room_id, version = record.room_id, record.room_version
                if n == len(records) - 1:
                    nursery.start_soon(load.remote_only, room_id, random.Random(f"{seed}/{room_id}/o"))
                    continue
                for k in range(2):
                    nursery.start_soon(load.messages, room_id, random.Random(f"{seed}/{room_id}/m{k}"))
                nursery.start_soon(load.state_changes, room_id, version, random.Random(f"{seed}/{room_id}/s"))
                if n < FORKED:
                    nursery.start_soon(load.remote_forks, room_id, random.Random(f"{seed}/{room_id}/r"))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
