"""A writer process for the SIGKILL test: checkpoints rooms until killed.

``python -m tests.storage.crash_writer DB_PATH`` runs 20 room writers at once through
one ``Database`` (so group commit batches them) and prints ``ack <event_id>`` on
stdout, flushed, as soon as each ``db.write`` has returned: those are the
acknowledged events that must survive the kill.
"""

from __future__ import annotations

import sys

import trio

from storage import rooms as R
from storage.db import Database

from .rooms import CREATE, ROOM_VERSION, _with, make_event


async def grow(db: Database, room_id: str) -> None:
    create = make_event(f"{room_id}/create", room_id, type="m.room.create", state_key="")
    create = _with(create, state_delta={CREATE: create.event_id})
    cp = R.Checkpoint(
        room_id=room_id,
        room_version=ROOM_VERSION,
        events=(create,),
        forward_extremities=frozenset({create.event_id}),
        current_state_delta={CREATE: create.event_id},
    )
    await db.write(R.checkpoint, cp)
    print("ack", create.event_id, flush=True)
    prev = ref = create.event_id
    i = 0
    while True:
        i += 1
        if i % 5 == 0:
            key = ("m.room.member", f"@u{i}:b.example")
            ev = make_event(f"{room_id}/{i}", room_id, type=key[0], state_key=key[1], prev_events=(prev,), depth=i)
            ev = _with(ev, state_base_ref=ref, state_delta={key: ev.event_id})
            delta = {key: ev.event_id}
        else:
            ev = make_event(f"{room_id}/{i}", room_id, prev_events=(prev,), depth=i, state_base_ref=ref)
            delta = {}
        cp = R.Checkpoint(
            room_id=room_id,
            room_version=ROOM_VERSION,
            events=(ev,),
            forward_extremities=frozenset({ev.event_id}),
            current_state_delta=delta,
            txn=R.TxnRecord(user_id="@alice:a.example", device_id="D", txn_id=f"{room_id}/{i}"),
        )
        await db.write(R.checkpoint, cp)
        print("ack", ev.event_id, flush=True)
        prev = ev.event_id
        ref = ev.event_id if delta else ref


async def main(path: str) -> None:
    async with Database.open(path) as db:
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(grow, db, f"!crash{n}:a.example")


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
