"""Local events through the room actor: create, send, auth, idempotency, hibernation.

Every test drives real RoomActors through their mailboxes (``registry.ask``) on a
real SQLite file; time is ``autojump_clock``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from signedjson.key import get_verify_key

from roomactors.protocol.auth import check_auth
from roomactors.protocol.dag import MAX_PREV_EVENTS
from roomactors.protocol.hashing import compute_event_id
from roomactors.protocol.pdu import parse_pdu
from roomactors.protocol.signing import verify_event_signatures
from roomactors.room.events import build_create_event, event_refs
from roomactors.room.messages import (
    BadEvent,
    CreateRoom,
    Forbidden,
    GetState,
    SendEvent,
    SendResult,
    UnknownRoom,
)
from storage.rooms import TxnRecord
from tests.helpers.rooms import ALICE, BOB, LOCAL, Server, signing_key

VERSIONS = ["10", "11", "12"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_create_room_and_send(server: Server, version: str, autojump_clock: Any) -> None:
    room_id = await server.public_room(version)
    view = await server.state(room_id)
    assert view.room_version == version
    keys = set(view.current_state)
    assert keys == {
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
    }
    assert view.joined_members == {ALICE}
    assert view.depth == 4 and len(view.forward_extremities) == 1
    if version == "12":
        # rooms/v12: the room ID is the create event's ID with "!" for "$".
        assert room_id == "!" + view.current_state[("m.room.create", "")][1:]

    message = await server.send_ok(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    view = await server.state(room_id)
    assert view.forward_extremities == {message} and view.depth == 5
    (stored,) = (await server.stored(message)).values()
    pdu = parse_pdu(stored.json, version)
    assert pdu.event_id == message == compute_event_id(stored.json, version)
    assert pdu.depth == 5 and pdu.sender == ALICE
    # prev_events: the previous extremity; auth_events: the selection over current state.
    jr = view.current_state[("m.room.join_rules", "")]
    assert pdu.prev_events == (jr,)
    expected_auth = {view.current_state[("m.room.power_levels", "")], view.current_state[("m.room.member", ALICE)]}
    if version != "12":
        expected_auth.add(view.current_state[("m.room.create", "")])
    assert set(pdu.auth_events) == expected_auth
    # Signed by us; a remote server would accept it.
    verify_event_signatures(stored.json, version, {LOCAL: {"ed25519:1": (get_verify_key(signing_key(LOCAL)), None)}})
    state = {k: view.state_events[v] for k, v in view.current_state.items()}
    check_auth(stored.json, state, version)


async def test_state_events_change_state_and_membership_index(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    topic = await server.send_ok(room_id, ALICE, "m.room.topic", {"topic": "one"}, "")
    bob_join = await server.send_ok(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    view = await server.state(room_id)
    assert view.current_state[("m.room.topic", "")] == topic
    assert view.state_events[topic]["content"] == {"topic": "one"}
    assert view.joined_members == {ALICE, BOB}
    await server.send_ok(room_id, BOB, "m.room.member", {"membership": "leave"}, BOB)
    view = await server.state(room_id)
    assert view.joined_members == {ALICE}
    assert bob_join not in view.state_events  # replaced by the leave


@pytest.mark.parametrize("version", ["1", "2", "3"])
async def test_older_room_versions(server: Server, version: str, autojump_clock: Any) -> None:
    # v1/v2: server-assigned event IDs and [id, {hash}] references; v3: base64 IDs.
    room_id = await server.public_room(version)
    message = await server.send_ok(room_id, ALICE, "m.room.message", {"body": "old"})
    (stored,) = (await server.stored(message)).values()
    pdu = parse_pdu(stored.json, version)
    assert pdu.event_id == message
    if version in ("1", "2"):
        assert message.endswith(":" + LOCAL)
        assert all(isinstance(ref, list) for ref in stored.json["prev_events"])


async def test_unauthorised_send_is_forbidden_and_writes_nothing(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    before = len(await server.room_events(room_id))
    writes = server.db.statistics().writes
    # Bob never joined.
    result = await server.send(room_id, BOB, "m.room.message", {"body": "let me in"})
    assert isinstance(result, Forbidden)
    assert result.errcode == "M_FORBIDDEN" and result.rule is not None and result.rule.startswith("auth ")
    # Alice may not set a power-level-100 state event type above her own... but Bob
    # may not even change the topic.
    result = await server.send(room_id, BOB, "m.room.topic", {"topic": "x"}, "")
    assert isinstance(result, Forbidden)
    assert len(await server.room_events(room_id)) == before
    assert server.db.statistics().writes == writes


async def test_bad_events_are_values(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    too_big = await server.send(room_id, ALICE, "m.room.message", {"body": "x" * 70_000})
    assert isinstance(too_big, BadEvent) and too_big.errcode == "M_TOO_LARGE"
    floaty = await server.send(room_id, ALICE, "m.room.message", {"body": "x", "n": 1.5})
    assert isinstance(floaty, BadEvent) and floaty.errcode == "M_BAD_JSON"
    remote_sender = await server.send(room_id, "@eve:elsewhere.example", "m.room.message", {"body": "x"})
    assert isinstance(remote_sender, Forbidden)


async def test_unknown_room(server: Server, autojump_clock: Any) -> None:
    room_id = "!nothing:local.example"
    assert isinstance(await server.registry.ask(room_id, lambda r: GetState(reply=r)), UnknownRoom)
    result = await server.send(room_id, ALICE, "m.room.message", {"body": "x"})
    assert result == UnknownRoom(room_id=room_id)


async def test_create_room_twice_is_refused(server: Server, autojump_clock: Any) -> None:
    room_id = await server.create_room("11")
    create, _ = build_create_event(
        "11", creator=ALICE, server_name=LOCAL, signing_key=server.key, clock=server.clock, room_id_for_v1_11=room_id
    )
    result = await server.registry.ask(room_id, lambda r: CreateRoom(create_event=create, reply=r))
    assert isinstance(result, BadEvent) and result.errcode == "M_ROOM_IN_USE"


async def test_create_event_for_another_room_is_refused(server: Server, autojump_clock: Any) -> None:
    create, room_id = build_create_event("12", creator=ALICE, server_name=LOCAL, signing_key=server.key, clock=server.clock)
    result = await server.registry.ask("!other:local.example", lambda r: CreateRoom(create_event=create, reply=r))
    assert isinstance(result, BadEvent)


async def test_txn_ids_make_sends_idempotent(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    txn = TxnRecord(user_id=ALICE, device_id="DEV", txn_id="t1")
    first = await server.send(room_id, ALICE, "m.room.message", {"body": "once"}, txn=txn)
    again = await server.send(room_id, ALICE, "m.room.message", {"body": "once"}, txn=txn)
    assert isinstance(first, SendResult) and again == first
    bodies = [e.json["content"].get("body") for e in await server.room_events(room_id)]
    assert bodies.count("once") == 1


async def test_issue_3_same_txn_id_in_two_rooms_is_two_requests(server: Server, autojump_clock: Any) -> None:
    # The spec scopes a transaction ID to the device and the request path (which names the room).
    txn = TxnRecord(user_id=ALICE, device_id="DEV", txn_id="shared")
    first_room, second_room = await server.public_room("11"), await server.public_room("12")
    first = await server.send(first_room, ALICE, "m.room.message", {"body": "one"}, txn=txn)
    second = await server.send(second_room, ALICE, "m.room.message", {"body": "two"}, txn=txn)
    assert isinstance(first, SendResult) and isinstance(second, SendResult)
    assert first.event_id != second.event_id
    assert await server.send(first_room, ALICE, "m.room.message", {"body": "one"}, txn=txn) == first
    assert server.registry.statistics().crashes == 0


async def test_cancelled_caller_never_cancels_the_send(server: Server, nursery: trio.Nursery, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    txn = TxnRecord(user_id=ALICE, device_id="DEV", txn_id="cancelled")
    sent_before = (await server.registry.get(room_id)).statistics().messages

    async def asker(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await server.send(room_id, ALICE, "m.room.message", {"body": "survives"}, txn=txn)
            raise AssertionError("the asker should have been cancelled first")

    scope = await nursery.start(asker)
    handle = await server.registry.get(room_id)
    while handle.statistics().messages == sent_before:  # the request is in the mailbox
        await trio.sleep(0)
    scope.cancel()  # the client went away (quart-trio cancels the view)
    await trio.testing.wait_all_tasks_blocked()
    # A retry with the same transaction ID finds the committed event.
    retry = await server.send(room_id, ALICE, "m.room.message", {"body": "survives"}, txn=txn)
    assert isinstance(retry, SendResult)
    events = [e for e in await server.room_events(room_id) if e.json["content"].get("body") == "survives"]
    assert [e.event_id for e in events] == [retry.event_id]
    assert server.registry.statistics().crashes == 0


async def test_asker_gone_before_the_actor_ran(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("11")
    txn = TxnRecord(user_id=ALICE, device_id="DEV", txn_id="gone")
    send, receive = trio.open_memory_channel[Any](1)
    handle = await server.registry.get(room_id)
    handle.send_nowait(SendEvent(sender=ALICE, type="m.room.message", content={"body": "b"}, txn=txn, reply=send))
    receive.close()  # nobody will read the answer
    retry = await server.send(room_id, ALICE, "m.room.message", {"body": "b"}, txn=txn)
    assert isinstance(retry, SendResult)
    assert server.registry.statistics().crashes == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_hibernate_and_reload_identically(server: Server, version: str, autojump_clock: Any) -> None:
    room_id = await server.public_room(version)
    await server.send_ok(room_id, ALICE, "m.room.topic", {"topic": "before sleep"}, "")
    await server.send_ok(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    await server.send_ok(room_id, BOB, "m.room.message", {"body": "hello"})
    before = await server.state(room_id)
    started = server.actors_started
    await trio.sleep(server.settings.idle_timeout_s + 1)
    assert server.registry.statistics().loaded_rooms == 0
    after = await server.state(room_id)
    assert server.actors_started == started + 1  # reloaded from SQLite
    assert after == before
    # And it carries on where it stopped.
    message = await server.send_ok(room_id, ALICE, "m.room.message", {"body": "awake"})
    (stored,) = (await server.stored(message)).values()
    assert event_refs(stored.json, "prev_events") == tuple(before.forward_extremities)
    assert stored.depth == before.depth + 1


async def test_many_rooms_interleave(server: Server, autojump_clock: Any) -> None:
    rooms = [await server.public_room(v) for v in VERSIONS * 2]

    async def chat(room_id: str) -> None:
        for i in range(5):
            await server.send_ok(room_id, ALICE, "m.room.message", {"body": str(i)})

    async with trio.open_nursery() as nursery:
        for room_id in rooms:
            nursery.start_soon(chat, room_id)
    for room_id in rooms:
        assert (await server.state(room_id)).depth == 9


async def test_concurrent_requests_spawn_one_actor(server: Server, autojump_clock: Any) -> None:
    room_id = await server.public_room("12")
    await trio.sleep(server.settings.idle_timeout_s + 1)  # hibernated
    started = server.actors_started
    views = []

    async def look() -> None:
        views.append(await server.state(room_id))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(look)
    assert server.actors_started == started + 1
    assert all(v == views[0] for v in views)


async def test_full_mailbox_raises_and_shows_in_statistics(server: Server, autojump_clock: Any) -> None:
    from roomactors.registry import MailboxFull

    room_id = await server.public_room("11")
    handle = await server.registry.get(room_id)
    replies = trio.open_memory_channel[Any](100)
    size = server.settings.mailbox_size
    # No checkpoint in this loop: the actor cannot drain while we fill. The first
    # message may go straight to the waiting actor, so size + 1 fit.
    sent = 0
    with pytest.raises(MailboxFull):
        for i in range(size + 2):
            handle.send_nowait(SendEvent(sender=ALICE, type="m.room.message", content={"body": str(i)}, reply=replies[0].clone()))
            sent += 1
    assert sent == size + 1
    stats = handle.statistics()
    assert stats.mailbox_depth == size and stats.mailbox_peak == size and stats.mailbox_full == 1
    for _ in range(sent):
        assert isinstance(await replies[1].receive(), SendResult)
    assert handle.statistics().mailbox_depth == 0
    assert (await server.state(room_id)).depth == 4 + sent


async def test_prev_events_are_capped(server: Server, autojump_clock: Any) -> None:
    from tests.helpers.rooms import CAROL, RemoteBranch

    room_id = await server.public_room("11")
    branch = RemoteBranch.at(await server.state(room_id), await server.all_events(room_id))
    join = branch.add(CAROL, "m.room.member", {"membership": "join"}, CAROL)
    assert (await server.ingest(room_id, join)).status == "accepted"
    # Carol's server sends 12 messages that all cite her join: 12 extremities.
    for i in range(12):
        _, pdu = branch.build(CAROL, "m.room.message", {"body": str(i)})
        assert (await server.ingest(room_id, pdu)).status == "accepted"
    assert len((await server.state(room_id)).forward_extremities) == 12
    message = await server.send_ok(room_id, ALICE, "m.room.message", {"body": "merge"})
    (stored,) = (await server.stored(message)).values()
    assert len(event_refs(stored.json, "prev_events")) == MAX_PREV_EVENTS
    assert len((await server.state(room_id)).forward_extremities) == 12 - MAX_PREV_EVENTS + 1
