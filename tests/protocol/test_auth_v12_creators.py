"""Room version 12: creators (create sender + additional_creators) with infinite power,
rule 10.4 (creators must not be listed in power levels), and the contrast with v11."""

from __future__ import annotations

import copy
import math

import pytest
from auth_builders import ALICE, BOB, CAROL, DAVE, Room, default_power_levels
from auth_numbering import rule

from roomactors.protocol.auth import check_auth, check_auth_events_list, creators, get_power_level
from roomactors.protocol.errors import AuthError
from roomactors.protocol.room_versions import get_rules

V12 = get_rules("12")


def rejects(rule_number: str, fn, *args, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        fn(*args, **kwargs)
    assert info.value.rule == rule_number, f"{info.value} (wanted {rule_number})"
    return info.value


def v12_room(pl_users: dict | None = None) -> Room:
    """alice creates with bob as additional creator; carol is at 100, dave at 0."""
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.join(ALICE)
    room.send("m.room.power_levels", ALICE, default_power_levels(room, pl_users if pl_users is not None else {CAROL: 100}), "")
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    for user in (BOB, CAROL, DAVE):
        room.join(user)
    return room


def pl(room: Room) -> dict:
    return copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])


def test_creators_helper():
    room = v12_room()
    assert creators(room.create, V12) == {ALICE, BOB}
    assert creators(room.create, get_rules("11")) == {ALICE}
    v10 = Room("10", create_content={"creator": CAROL})
    assert creators(v10.create, get_rules("10")) == {CAROL}
    assert creators(None, V12) == frozenset()


def test_creators_have_infinite_power():
    room = v12_room()
    power_levels = room.state[("m.room.power_levels", "")]
    assert get_power_level(ALICE, power_levels, room.create, V12) == math.inf
    assert get_power_level(BOB, power_levels, room.create, V12) == math.inf
    assert get_power_level(CAROL, power_levels, room.create, V12) == 100
    assert get_power_level(BOB, None, room.create, V12) == math.inf
    assert get_power_level(DAVE, None, room.create, V12) == 0


@pytest.mark.parametrize("creator", [ALICE, BOB])
def test_10_4_creators_cannot_be_listed_in_users(creator):
    room = v12_room()
    content = pl(room)
    content["users"][creator] = 100
    rejects("auth 10.4", room.check, room.power_levels(content, sender=ALICE))
    content["users"][creator] = 2**53 - 1
    rejects("auth 10.4", room.check, room.power_levels(content, sender=CAROL))


def test_10_4_applies_to_the_first_power_levels_too():
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.join(ALICE)
    rejects("auth 10.4", room.check, room.power_levels({"users": {BOB: 50}}))
    room.check(room.power_levels({"users": {CAROL: 50}}))


def test_additional_creator_power_without_any_power_levels_event():
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.join(ALICE)
    room.set_join_rule("public")
    room.join(BOB)
    room.join(CAROL)
    room.check(room.make("m.room.topic", BOB, {"topic": "x"}, ""))
    rejects(rule("12", "required"), room.check, room.make("m.room.topic", CAROL, {"topic": "x"}, ""))


def test_creators_can_set_any_level():
    room = v12_room()
    content = pl(room)
    content["users"][DAVE] = 2**53 - 1
    content["ban"] = 2**53 - 1
    room.check(room.power_levels(content, sender=BOB))
    # A non-creator at 100 cannot raise anything above 100.
    rejects("auth 10.6.2", room.check, room.power_levels(content, sender=CAROL))
    del content["ban"]
    rejects("auth 10.10.1", room.check, room.power_levels(content, sender=CAROL))


def test_creators_can_demote_the_top_non_creator():
    room = v12_room()
    content = pl(room)
    content["users"][CAROL] = 0
    room.check(room.power_levels(content, sender=BOB))
    room.add(room.power_levels({**pl(room), "users": {CAROL: 100, DAVE: 100}}, sender=ALICE))
    content = pl(room)
    content["users"][DAVE] = 0
    rejects("auth 10.9.1", room.check, room.power_levels(content, sender=CAROL))


@pytest.mark.parametrize("creator", [ALICE, BOB])
def test_creators_cannot_be_kicked_or_banned(creator):
    room = v12_room()
    rejects("auth 5.6.3", room.check, room.member(CAROL, "ban", creator))
    rejects("auth 5.5.5", room.check, room.member(CAROL, "leave", creator))
    other = BOB if creator == ALICE else ALICE
    # nor by another creator: infinity does not outrank infinity
    rejects("auth 5.6.3", room.check, room.member(other, "ban", creator))
    room.check(room.member(creator, "ban", CAROL))


def test_creator_power_survives_a_pl_event_listing_them():
    # If a PL event listing a creator got into state anyway, the creator stays infinite.
    room = v12_room()
    room.set_power_levels({**pl(room), "users": {ALICE: 0, CAROL: 100}})
    room.check(room.member(ALICE, "ban", CAROL))


def test_v11_contrast_creator_is_demotable():
    room = Room("11")
    room.join(ALICE)
    room.send("m.room.power_levels", ALICE, default_power_levels(room, {CAROL: 100}), "")
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    room.join(CAROL)
    content = pl(room)
    content["users"][ALICE] = 0
    room.check(room.power_levels(content, sender=ALICE))  # own entry: allowed in v11
    room.add(room.power_levels(content, sender=ALICE))
    room.check(room.member(CAROL, "ban", ALICE))


def test_v12_auth_events_never_list_the_create():
    room = v12_room()
    event = room.make("m.room.message", DAVE, {"body": "x"})
    listed = room.listed_auth_events(event)
    assert all(e["type"] != "m.room.create" for e in listed)
    check_auth_events_list(event, listed, "12")
    # ... but check_auth needs it in the state dict.
    check_auth(event, room.state, "12")
    state = {k: e for k, e in room.state.items() if k != ("m.room.create", "")}
    rejects("auth 2", check_auth, event, state, "12")


def test_v12_create_from_another_room_rejected_by_rule_2():
    room = v12_room()
    event = room.make("m.room.message", DAVE, {"body": "x"})
    state = dict(room.state)
    state[("m.room.create", "")] = Room("12", creator=ALICE, create_content={"additional_creators": [CAROL]}).create
    rejects("auth 2", check_auth, event, state, "12")


def test_v12_malformed_create_in_state_rejected_not_crashing():
    room = v12_room()
    event = room.make("m.room.message", DAVE, {"body": "x"})
    state = dict(room.state)
    state[("m.room.create", "")] = {"type": "m.room.create", "state_key": "", "content": {"x": float("nan")}}
    rejects("auth 2", check_auth, event, state, "12")
