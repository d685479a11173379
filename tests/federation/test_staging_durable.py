"""A PDU accepted into ``inbound_staging`` (the 200 of ``/send``) survives a
restart before its room processed it: at startup every room with staged rows is
woken and its actor drains them (docs/ARCHITECTURE.md, data flow 5, step 4)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from api.app import create_app
from api.services import open_homeserver
from roomactors.protocol.ids import RoomId, UserId
from roomactors.room.events import build_pdu
from roomactors.room.messages import GetState, StateView
from storage import staging
from tests.helpers.client import Api, make_settings, register


async def test_staged_pdus_are_processed_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        async with app.test_app():
            alice = await register(app, "alice")
            room_id = await alice.create_room(preset="public_chat", room_version="10")
            view = await deps.registry.ask(RoomId(room_id), lambda reply: GetState(reply=reply))
            assert isinstance(view, StateView)
            state = view.current_state
            (prev,) = view.forward_extremities
            pdu = build_pdu(
                room_version="10", room_id=RoomId(room_id), sender=UserId(alice.user_id), type="m.room.message",
                content={"msgtype": "m.text", "body": "staged before the crash"},
                prev_events=[prev],
                auth_events=[state[("m.room.create", "")], state[("m.room.power_levels", "")],
                             state[("m.room.member", alice.user_id)]],
                depth=view.depth + 1, origin_server_ts=deps.clock.time_ms(), server_name=deps.server_name,
                signing_key=deps.signing_key,
            )
            # What /send does before answering 200 (steps 1-3 passed): stage and record.
            await deps.db.write(partial(
                staging.stage_transaction, origin="elsewhere.example", txn_id="t1",
                pdus=[staging.ToStage(room_id=room_id, event_id=pdu.event_id, json=pdu.json)],
                response={"pdus": {pdu.event_id: {}}}, now_ms=deps.clock.time_ms(),
            ))
            # ... and the process stops before the room's actor is woken.

    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        async with app.test_app():
            alice = Api(app, alice.token, alice.user_id, alice.device_id)
            rows = await deps.db.read(staging.next_staged, room_id, 10)
            # The startup wake drains the room; wait for the actor by asking it.
            view = await deps.registry.ask(RoomId(room_id), lambda reply: GetState(reply=reply))
            assert isinstance(view, StateView)
            assert view.forward_extremities == frozenset({pdu.event_id}) or rows == []
            body = await alice.ok("GET", f"/rooms/{room_id}/messages", query={"dir": "b", "limit": "5"})
            assert [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"] == [
                "staged before the crash"
            ]
            assert await deps.db.read(staging.next_staged, room_id, 10) == []
            # A retry of the same transaction is answered from the record, not staged again.
            assert await deps.db.read(staging.get_received_transaction, "elsewhere.example", "t1") == {
                "pdus": {pdu.event_id: {}}
            }
