"""Inbound PDUs through the room actor (server-server API "Checks performed on receipt
of a PDU", steps 4–6): forks and their resolution, rejection, soft failure,
outliers, duplicates.

Remote events are built and signed by ``remote.example`` on the state *it* sees
(``RemoteBranch``), so a branch can be written against an older point of the DAG,
exactly like a delayed or malicious server would.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomactors.protocol.state_res import resolve_state
from roomactors.room.events import build_create_event, event_refs
from roomactors.room.messages import IngestPdu, PduOutcome
from tests.helpers.rooms import ALICE, BOB, CAROL, REMOTE, RemoteBranch, Server, pdu_id, signing_key

VERSIONS = ["10", "11", "12"]


async def room_with_carol(server: Server, version: str, carol_level: int = 50) -> tuple[str, RemoteBranch]:
    """A public room where Carol of remote.example has joined (over federation)."""
    room_id = await server.public_room(version, users={CAROL: carol_level})
    branch = RemoteBranch.at(await server.state(room_id), await server.all_events(room_id))
    join = branch.add(CAROL, "m.room.member", {"membership": "join"}, CAROL)
    outcome = await server.ingest(room_id, join)
    assert outcome == PduOutcome(event_id=pdu_id(join, version), status="accepted")
    return room_id, branch


# --------------------------------------------------------------------------------------
# Forks
# --------------------------------------------------------------------------------------
#
#              ... ─ J_carol (F) ─┬─ A1 PL (carol 75) ─ A2 topic "A"   local branch
#                                 │                                  ╲
#                                 └─ B1 topic "B" ─ B2 name "B"  ──── M (merge, local)
#                                    remote branch, built on F only


@pytest.mark.parametrize("version", ["1", "2", *VERSIONS])
async def test_fork_current_state_is_the_resolution_of_the_branches(
    server: Server, version: str, autojump_clock: Any
) -> None:
    room_id, branch = await room_with_carol(server, version)
    # The remote branch is written against F alone: Carol has not seen branch A.
    b1 = branch.add(CAROL, "m.room.topic", {"topic": "B"}, "")
    state_b1 = dict(branch.state)
    b2 = branch.add(CAROL, "m.room.name", {"name": "B"}, "")
    state_b2 = dict(branch.state)

    # Meanwhile, locally: a power-level change and a topic.
    pl = {"users": {CAROL: 75, BOB: 10} | ({} if version == "12" else {ALICE: 100})}
    a1 = await server.send_ok(room_id, ALICE, "m.room.power_levels", pl, "")
    a2 = await server.send_ok(room_id, ALICE, "m.room.topic", {"topic": "A"}, "")
    state_a = dict((await server.state(room_id)).current_state)
    assert state_a[("m.room.power_levels", "")] == a1

    outcome = await server.ingest(room_id, b1)
    assert outcome.status == "accepted"
    view = await server.state(room_id)
    assert view.forward_extremities == {a2, pdu_id(b1, version)}
    events = await server.all_events(room_id)
    assert dict(view.current_state) == resolve_state(version, [state_a, state_b1], events)
    # Not "last writer wins": B1 arrived last, but A2 keeps the topic (v2: it cites the
    # newer power levels, so it sorts later in mainline order; v1: it is deeper).
    assert view.current_state[("m.room.topic", "")] == a2

    assert (await server.ingest(room_id, b2)).status == "accepted"
    view = await server.state(room_id)
    assert view.forward_extremities == {a2, pdu_id(b2, version)}
    events = await server.all_events(room_id)
    resolved = resolve_state(version, [state_a, state_b2], events)
    assert dict(view.current_state) == resolved
    assert view.current_state[("m.room.name", "")] == pdu_id(b2, version)  # unconflicted
    assert set(view.state_events) == set(resolved.values())

    # Our next event merges the fork: it cites both extremities, and the state is kept.
    merge = await server.send_ok(room_id, ALICE, "m.room.message", {"body": "merged"})
    view = await server.state(room_id)
    assert view.forward_extremities == {merge}
    assert dict(view.current_state) == resolved
    (stored,) = (await server.stored(merge)).values()
    assert set(event_refs(stored.json, "prev_events")) == {a2, pdu_id(b2, version)}

    # Hibernate and reload: the same resolved room comes back from SQLite.
    await trio.sleep(server.settings.idle_timeout_s + 1)
    assert await server.state(room_id) == view


async def test_two_remote_branches_interleaved(server: Server, autojump_clock: Any) -> None:
    version = "12"
    room_id, base = await room_with_carol(server, version)
    left, right = base.fork(), base.fork()
    l1 = left.add(CAROL, "m.room.topic", {"topic": "left"}, "")
    r1 = right.add(CAROL, "m.room.topic", {"topic": "right"}, "")
    l2 = left.add(CAROL, "m.room.message", {"body": "l"})
    for pdu in (l1, r1, l2):
        assert (await server.ingest(room_id, pdu)).status == "accepted"
    view = await server.state(room_id)
    assert view.forward_extremities == {pdu_id(l2, version), pdu_id(r1, version)}
    events = await server.all_events(room_id)
    assert dict(view.current_state) == resolve_state(version, [left.state, right.state], events)


# --------------------------------------------------------------------------------------
# Rejection and soft failure
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_rejected_on_its_own_auth_events_step_4(server: Server, version: str, autojump_clock: Any) -> None:
    room_id, branch = await room_with_carol(server, version)
    # Carol (50) tries to make herself 100: her own auth events (the PL) forbid it.
    users = {CAROL: 100} | ({} if version == "12" else {ALICE: 100})
    event_id, grab = branch.build(CAROL, "m.room.power_levels", {"users": users}, "")
    outcome = await server.ingest(room_id, grab)
    assert outcome.status == "rejected" and outcome.event_id == event_id
    assert outcome.reason is not None and outcome.reason.startswith("step 4:")
    view = await server.state(room_id)
    assert event_id not in view.current_state.values() and event_id not in view.forward_extremities
    stored = (await server.stored(event_id))[event_id]
    assert stored.rejection_reason == outcome.reason and not stored.soft_failed

    # An event citing the rejected event among its auth events is rejected too (rule 2.3/3.3).
    branch.events[event_id] = grab
    _, follower = branch.build(
        CAROL,
        "m.room.topic",
        {"topic": "t"},
        "",
        auth_events=[event_id, branch.state[("m.room.member", CAROL)]]
        + ([] if version == "12" else [branch.state[("m.room.create", "")]]),
    )
    outcome = await server.ingest(room_id, follower)
    assert outcome.status == "rejected" and "was rejected" in (outcome.reason or "")


@pytest.mark.parametrize("version", VERSIONS)
async def test_rejected_on_the_state_before_step_5(server: Server, version: str, autojump_clock: Any) -> None:
    room_id, branch = await room_with_carol(server, version)
    # Alice demotes Carol to 0 (state_default is 50).
    users = {CAROL: 0} | ({} if version == "12" else {ALICE: 100})
    await server.send_ok(room_id, ALICE, "m.room.power_levels", {"users": users}, "")
    view = await server.state(room_id)
    # Carol's server cites the new DAG head but the *old* power levels as auth events:
    # step 4 passes, the state before the event says no.
    event_id, topic = branch.build(CAROL, "m.room.topic", {"topic": "sneaky"}, "", prev=sorted(view.forward_extremities))
    outcome = await server.ingest(room_id, topic)
    assert outcome.status == "rejected"
    assert outcome.reason is not None and outcome.reason.startswith("step 5:")
    after = await server.state(room_id)
    assert after.current_state == view.current_state
    assert after.forward_extremities == view.forward_extremities
    assert (await server.stored(event_id))[event_id].rejection_reason == outcome.reason

    # A later event may cite the rejected one as a prev event (spec "Rejection"); the
    # state before it is computed "except not updating with the rejected event".
    branch.events[event_id] = topic
    msg_id, message = branch.build(
        CAROL, "m.room.message", {"body": "still here"}, prev=[event_id],
    )
    assert (await server.ingest(room_id, message)).status == "accepted"
    after = await server.state(room_id)
    assert ("m.room.topic", "") not in after.current_state
    assert after.forward_extremities == {msg_id} | (view.forward_extremities - {event_id})


@pytest.mark.parametrize("version", VERSIONS)
async def test_soft_failed_events_are_stored_but_never_state_or_extremity(
    server: Server, version: str, autojump_clock: Any
) -> None:
    room_id, branch = await room_with_carol(server, version)
    await server.send_ok(room_id, ALICE, "m.room.member", {"membership": "ban"}, CAROL)
    view = await server.state(room_id)
    # Carol's server pretends not to have seen the ban: it builds on her join.
    evading = branch.add(CAROL, "m.room.topic", {"topic": "ban evasion"}, "")
    outcome = await server.ingest(room_id, evading)
    assert outcome.status == "soft_failed"
    assert outcome.reason is not None and outcome.reason.startswith("step 6:")
    more = branch.add(CAROL, "m.room.message", {"body": "still talking"})
    assert (await server.ingest(room_id, more)).status == "soft_failed"
    after = await server.state(room_id)
    assert after.current_state == view.current_state
    assert after.forward_extremities == view.forward_extremities
    stored = await server.stored(pdu_id(evading, version), pdu_id(more, version))
    assert all(s.soft_failed and s.rejection_reason is None and not s.outlier for s in stored.values())
    # Soft-failed events still get their state after (they may be cited later).
    assert all(s.state_after_ref is not None for s in stored.values())


# --------------------------------------------------------------------------------------
# Outliers, missing auth events, duplicates, invalid PDUs
# --------------------------------------------------------------------------------------


async def test_unknown_prev_events_make_an_outlier(server: Server, autojump_clock: Any) -> None:
    version = "11"
    room_id, branch = await room_with_carol(server, version)
    view = await server.state(room_id)
    missing = "$" + "A" * 43
    event_id, pdu = branch.build(CAROL, "m.room.message", {"body": "from the future"}, prev=[missing])
    outcome = await server.ingest(room_id, pdu)
    assert outcome.status == "outlier" and outcome.missing == (missing,)
    stored = (await server.stored(event_id))[event_id]
    assert stored.outlier and stored.state_after_ref is None and stored.rejection_reason is None
    after = await server.state(room_id)
    assert after.forward_extremities == view.forward_extremities
    assert (await server.ingest(room_id, pdu)).status == "duplicate"


async def test_unknown_auth_events_store_nothing(server: Server, autojump_clock: Any) -> None:
    version = "11"
    room_id, branch = await room_with_carol(server, version)
    unknown = "$" + "B" * 43
    auth = [branch.state[("m.room.create", "")], branch.state[("m.room.member", CAROL)], unknown]
    event_id, pdu = branch.build(CAROL, "m.room.message", {"body": "x"}, auth_events=auth)
    outcome = await server.ingest(room_id, pdu)
    assert outcome.status == "missing_auth_events" and outcome.missing == (unknown,)
    assert await server.stored(event_id) == {}


async def test_duplicates_and_invalid_pdus(server: Server, autojump_clock: Any) -> None:
    version = "12"
    room_id, branch = await room_with_carol(server, version)
    join_id = branch.state[("m.room.member", CAROL)]
    assert (await server.ingest(room_id, branch.events[join_id])).status == "duplicate"

    other_room, other = await room_with_carol(server, version)
    stranger = other.add(CAROL, "m.room.message", {"body": "wrong room"})
    outcome = await server.ingest(room_id, stranger)
    assert outcome.status == "invalid" and "belongs to room" in (outcome.reason or "")

    broken = dict(branch.add(CAROL, "m.room.message", {"body": "x"}))
    del broken["depth"]
    outcome = await server.ingest(room_id, broken)
    assert outcome.status == "invalid" and outcome.reason is not None and outcome.reason.startswith("step 1:")


async def test_a_second_create_event_is_invalid(server: Server, autojump_clock: Any) -> None:
    room_id = await server.create_room("11")
    create, _ = build_create_event(
        "11", creator=CAROL, server_name=REMOTE, signing_key=signing_key(REMOTE), clock=server.clock, room_id_for_v1_11=room_id
    )
    outcome = await server.ingest(room_id, create)
    assert outcome.status == "invalid"


async def test_ingesting_a_create_event_starts_the_room(server: Server, autojump_clock: Any) -> None:
    create, room_id = build_create_event(
        "12", creator=CAROL, server_name=REMOTE, signing_key=signing_key(REMOTE), clock=server.clock
    )
    outcome = await server.registry.ask(room_id, lambda reply: IngestPdu(pdu=create, reply=reply))
    assert outcome == PduOutcome(event_id=pdu_id(create, "12"), status="accepted")
    view = await server.state(room_id)
    assert dict(view.current_state) == {("m.room.create", ""): pdu_id(create, "12")}
