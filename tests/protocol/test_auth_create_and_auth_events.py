"""Auth rules 1 (create), v12 rule 2 (room ID), the auth-events rule (v1–v11 2, v12 3),
m.federate, v1–v5 m.room.aliases, and the auth events selection."""

from __future__ import annotations

import copy

import pytest
from auth_builders import ALICE, BOB, CAROL, Room, new_room
from auth_numbering import ALL_VERSIONS, rule

from roomactors.protocol import auth as auth_module
from roomactors.protocol.auth import (
    auth_types_for_event,
    check_auth,
    check_auth_events_list,
    is_power_event,
)
from roomactors.protocol.errors import AuthError
from roomactors.protocol.hashing import compute_event_id
from roomactors.protocol.room_versions import get_rules

V1_TO_11 = [v for v in ALL_VERSIONS if v != "12"]
V1_TO_10 = [str(i) for i in range(1, 11)]


def rejects(rule_number: str, fn, *args, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        fn(*args, **kwargs)
    assert info.value.rule == rule_number, f"{info.value} (wanted {rule_number})"
    return info.value


# --- Rule 1: m.room.create ---------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_1_valid_create_allowed(v):
    room = Room(v)
    check_auth(room.create, {}, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_1_1_create_with_prev_events_rejected(v):
    room = Room(v)
    create = copy.deepcopy(room.create)
    create["prev_events"] = [room.ref("$other:a.example" if room.rules.pdu_has_event_id else "$" + "A" * 43)]
    rejects("auth 1.1", check_auth, create, {}, v)


@pytest.mark.parametrize("v", V1_TO_11)
def test_1_2_create_room_id_domain_must_match_sender(v):
    room = Room(v, room_domain="elsewhere.example")
    rejects("auth 1.2", check_auth, room.create, {}, v)


@pytest.mark.parametrize("v", V1_TO_11)
def test_1_2_create_without_room_id_rejected_v1_to_v11(v):
    create = copy.deepcopy(Room(v).create)
    del create["room_id"]
    rejects("auth 1.2", check_auth, create, {}, v)


def test_1_2_v12_create_with_room_id_rejected():
    create = copy.deepcopy(Room("12").create)
    create["room_id"] = "!room:a.example"
    rejects("auth 1.2", check_auth, create, {}, "12")


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("room_version", ["99", 9, None, "1.0"])
def test_1_3_unrecognised_room_version_rejected(v, room_version):
    room = Room(v, create_content={"room_version": room_version})
    rejects("auth 1.3", check_auth, room.create, {}, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_1_3_absent_room_version_allowed(v):
    create = copy.deepcopy(Room(v).create)
    del create["content"]["room_version"]
    check_auth(create, {}, v)


@pytest.mark.parametrize("v", V1_TO_10)
def test_1_4_create_without_creator_rejected_v1_to_v10(v):
    create = copy.deepcopy(Room(v).create)
    del create["content"]["creator"]
    rejects("auth 1.4", check_auth, create, {}, v)


@pytest.mark.parametrize("v", ["11", "12"])
def test_1_create_without_creator_allowed_v11_plus(v):
    create = Room(v).create
    assert "creator" not in create["content"]
    check_auth(create, {}, v)


@pytest.mark.parametrize(
    "additional",
    [["@bob:b.example", "@carol:c.example"], [], ["@old style:b.example"]],
)
def test_v12_1_4_valid_additional_creators_allowed(additional):
    room = Room("12", create_content={"additional_creators": additional})
    check_auth(room.create, {}, "12")


@pytest.mark.parametrize(
    "additional",
    ["@bob:b.example", None, {"@bob:b.example": 1}, ["bob"], ["@bob"], [1], ["@bob:b.example", None], [["@b:b.example"]],
     ["@bob:not a server"]],
)
def test_v12_1_4_invalid_additional_creators_rejected(additional):
    room = Room("12", create_content={"additional_creators": additional})
    rejects("auth 1.4", check_auth, room.create, {}, "12")


@pytest.mark.parametrize("v", V1_TO_11)
def test_additional_creators_ignored_before_v12(v):
    room = Room(v, create_content={"additional_creators": "junk"})
    check_auth(room.create, {}, v)


# --- v12 rule 2: room_id is the create event's ID -------------------------------------------


def test_v12_2_room_id_must_be_the_create_event_id():
    room = new_room("12")
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    check_auth(event, room.state, "12")
    other = Room("12", creator=BOB)
    event["room_id"] = other.room_id
    rejects("auth 2", check_auth, event, room.state, "12")


def test_v12_2_missing_create_in_state_rejected():
    room = new_room("12")
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    state = {k: v for k, v in room.state.items() if k != ("m.room.create", "")}
    rejects("auth 2", check_auth, event, state, "12")


def test_v12_2_create_event_id_keyword():
    room = new_room("12")
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    create_id = compute_event_id(room.create, "12")
    check_auth(event, room.state, "12", create_event_id=create_id)
    rejects("auth 2", check_auth, event, room.state, "12", create_event_id="$" + "B" * 43)


def test_v12_create_event_id_is_memoised(monkeypatch):
    room = new_room("12")
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    calls = []
    real = auth_module.compute_event_id_with_rules

    def counting(ev, rules):
        calls.append(ev)
        return real(ev, rules)

    monkeypatch.setattr(auth_module, "compute_event_id_with_rules", counting)
    auth_module._create_id_cache.clear()
    for _ in range(50):
        check_auth(event, room.state, "12")
    assert len(calls) == 1
    # A different (equal-content) create object is hashed afresh, never confused.
    state = dict(room.state)
    state[("m.room.create", "")] = copy.deepcopy(room.create)
    check_auth(event, state, "12")
    assert len(calls) == 2


# --- Rule 2 (v12: 3): auth events --------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("key", ["pl", "member"])
def test_auth_event_from_a_different_room_rejected(v, key):
    room = new_room(v)
    room.join(BOB)
    event = room.make("m.room.message", BOB, {"body": "hi"})
    state = dict(room.state)
    skey = ("m.room.power_levels", "") if key == "pl" else ("m.room.member", BOB)
    foreign = copy.deepcopy(state[skey])
    foreign["room_id"] = "!other:a.example" if v != "12" else "!" + "C" * 43
    state[skey] = foreign
    rejects(rule(v, "auth_events", "room_id"), check_auth, event, state, v)


@pytest.mark.parametrize("v", V1_TO_11)
def test_create_from_a_different_room_rejected(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    state = dict(room.state)
    state[("m.room.create", "")] = dict(state[("m.room.create", "")], room_id="!other:a.example")
    rejects(rule(v, "auth_events", "room_id"), check_auth, event, state, v)


@pytest.mark.parametrize("v", V1_TO_11)
def test_2_4_no_create_in_state_rejected(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    state = {k: e for k, e in room.state.items() if k != ("m.room.create", "")}
    rejects("auth 2.4", check_auth, event, state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_state_entry_under_wrong_key_rejected(v):
    room = new_room(v)
    room.join(BOB)
    event = room.make("m.room.message", BOB, {"body": "hi"})
    state = dict(room.state)
    state[("m.room.member", BOB)] = state[("m.room.member", ALICE)]
    rejects(rule(v, "auth_events", "selection"), check_auth, event, state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_unselected_foreign_state_is_not_consulted(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    state = dict(room.state)
    state[("m.room.topic", "")] = {"type": "m.room.topic", "state_key": "", "room_id": "!x:y", "content": {}}
    check_auth(event, state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_auth_events_good(v):
    room = new_room(v)
    room.join(BOB)
    event = room.make("m.room.message", BOB, {"body": "hi"})
    listed = room.listed_auth_events(event)
    assert len(listed) == (3 if v != "12" else 2)
    check_auth_events_list(event, listed, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_duplicates_rejected(v):
    room = new_room(v)
    room.join(BOB)
    event = room.make("m.room.message", BOB, {"body": "hi"})
    listed = room.listed_auth_events(event)
    pl = room.state[("m.room.power_levels", "")]
    rejects(rule(v, "auth_events", "duplicates"), check_auth_events_list, event, listed + [copy.deepcopy(pl)], v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_unselected_entry_rejected(v):
    room = new_room(v)
    room.join(BOB)
    event = room.make("m.room.message", BOB, {"body": "hi"})
    listed = room.listed_auth_events(event) + [room.state[("m.room.join_rules", "")]]
    rejects(rule(v, "auth_events", "selection"), check_auth_events_list, event, listed, v)


def test_v12_listed_create_rejected():
    room = new_room("12")
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    listed = room.listed_auth_events(event) + [room.create]
    err = rejects("auth 3.2", check_auth_events_list, event, listed, "12")
    assert "create" in str(err)


@pytest.mark.parametrize("v", V1_TO_11)
def test_2_4_listed_without_create_rejected(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    listed = [e for e in room.listed_auth_events(event) if e["type"] != "m.room.create"]
    rejects("auth 2.4", check_auth_events_list, event, listed, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_room_id_mismatch_rejected(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    listed = room.listed_auth_events(event)
    listed = [dict(e, room_id="!elsewhere:b.example") if e["type"] == "m.room.power_levels" else e for e in listed]
    rejects(rule(v, "auth_events", "room_id"), check_auth_events_list, event, listed, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("bad", [None, 1, "x", {"type": "m.room.power_levels"}, {"state_key": ""}])
def test_listed_malformed_entries_rejected(v, bad):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    with pytest.raises(AuthError):
        check_auth_events_list(event, room.listed_auth_events(event) + [bad], v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_not_a_list_rejected(v):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "hi"})
    with pytest.raises(AuthError):
        check_auth_events_list(event, None, v)  # type: ignore[arg-type]


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_listed_create_event_itself_is_decided_by_rule_1(v):
    room = Room(v)
    check_auth_events_list(room.create, [], v)


# --- Rule 3 (v12: 4): m.federate ------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_federate_false_rejects_other_servers(v):
    room = Room(v, create_content={"m.federate": False})
    room.join(ALICE)
    room.force("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    rejects(rule(v, "federate"), room.check, room.member(BOB, "join"))
    room.check(room.member("@alice2:a.example", "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("federate", [True, "false", 0, None])
def test_federate_only_false_counts(v, federate):
    room = Room(v, create_content={"m.federate": federate})
    room.join(ALICE)
    room.force("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    room.check(room.member(BOB, "join"))


# --- v1–v5 rule 4: m.room.aliases -------------------------------------------------------------


@pytest.mark.parametrize("v", ["1", "2", "3", "4", "5"])
def test_4_aliases_special_case(v):
    room = new_room(v)
    # Allowed for a non-member whose domain is the state_key: rule 4 decides first.
    room.check(room.make("m.room.aliases", BOB, {"aliases": ["#x:b.example"]}, "b.example"))
    rejects("auth 4.2", room.check, room.make("m.room.aliases", BOB, {"aliases": []}, "a.example"))
    rejects("auth 4.1", room.check, room.make("m.room.aliases", BOB, {"aliases": []}))


@pytest.mark.parametrize("v", [str(i) for i in range(6, 13)])
def test_aliases_are_ordinary_state_from_v6(v):
    room = new_room(v)
    rejects(rule(v, "sender_joined"), room.check, room.make("m.room.aliases", BOB, {"aliases": []}, "b.example"))
    room.join(BOB)
    rejects(rule(v, "required"), room.check, room.make("m.room.aliases", BOB, {"aliases": []}, "b.example"))
    room.check(room.make("m.room.aliases", ALICE, {"aliases": []}, "a.example"))


# --- Auth events selection (s2s) ------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_selection_create_is_empty(v):
    assert auth_types_for_event(Room(v).create, v) == set()


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_selection_message(v):
    room = new_room(v)
    got = auth_types_for_event(room.make("m.room.message", BOB, {}), v)
    expected = {("m.room.power_levels", ""), ("m.room.member", BOB)}
    if v != "12":
        expected.add(("m.room.create", ""))
    assert got == expected


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["join", "invite", "knock", "leave", "ban"])
def test_selection_member(v, membership):
    room = new_room(v)
    got = auth_types_for_event(room.member(ALICE, membership, BOB), v)
    expected = {("m.room.power_levels", ""), ("m.room.member", ALICE), ("m.room.member", BOB)}
    if v != "12":
        expected.add(("m.room.create", ""))
    if membership in ("join", "invite", "knock"):
        expected.add(("m.room.join_rules", ""))
    assert got == expected


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_selection_third_party_invite(v):
    room = new_room(v)
    event = room.member(ALICE, "invite", BOB, third_party_invite={"signed": {"mxid": BOB, "token": "tok"}})
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(event, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_selection_join_authorised_via_users_server(v):
    room = new_room(v)
    event = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    has = ("m.room.member", CAROL) in auth_types_for_event(event, v)
    assert has == get_rules(v).restricted_join_allowed


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize(
    "content",
    [
        None, [], "x", {}, {"membership": 5}, {"membership": "invite", "third_party_invite": "x"},
        {"membership": "invite", "third_party_invite": {"signed": []}},
        {"membership": "invite", "third_party_invite": {"signed": {"token": 5}}},
        {"membership": "join", "join_authorised_via_users_server": 7},
    ],
)
def test_selection_malformed_does_not_crash(v, content):
    event = {"type": "m.room.member", "sender": BOB, "state_key": BOB, "content": content}
    got = auth_types_for_event(event, v)
    assert ("m.room.power_levels", "") in got
    weird = {"type": "m.room.member", "sender": 5, "state_key": None, "content": content}
    auth_types_for_event(weird, v)
    assert auth_types_for_event("not an event", v) == set()  # type: ignore[arg-type]


# --- Power events (rooms/fragments/v2-state-res, read as Synapse and ruma do) -------------------
#
# The create event counts, and power levels / join rules / create count only with
# state_key "" (Synapse ``_is_power_event``, ruma ``is_power_event``; see
# ``is_power_event``'s docstring). The spec's sentence has neither condition.


@pytest.mark.parametrize(
    "event,expected",
    [
        ({"type": "m.room.power_levels", "state_key": "", "sender": ALICE, "content": {}}, True),
        ({"type": "m.room.join_rules", "state_key": "", "sender": ALICE, "content": {}}, True),
        ({"type": "m.room.create", "state_key": "", "sender": ALICE, "content": {}}, True),
        ({"type": "m.room.member", "state_key": BOB, "sender": ALICE, "content": {"membership": "leave"}}, True),
        ({"type": "m.room.member", "state_key": BOB, "sender": ALICE, "content": {"membership": "ban"}}, True),
        ({"type": "m.room.member", "state_key": BOB, "sender": BOB, "content": {"membership": "leave"}}, False),
        ({"type": "m.room.member", "state_key": BOB, "sender": BOB, "content": {"membership": "ban"}}, False),
        ({"type": "m.room.member", "state_key": BOB, "sender": ALICE, "content": {"membership": "invite"}}, False),
        ({"type": "m.room.member", "state_key": BOB, "sender": ALICE, "content": {"membership": "join"}}, False),
        # A non-empty state_key: not the room's power levels / join rules / create.
        ({"type": "m.room.power_levels", "state_key": "x", "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.join_rules", "state_key": "x", "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.create", "state_key": "x", "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.power_levels", "state_key": None, "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.power_levels", "sender": ALICE, "content": {}}, False),  # not a state event
        ({"type": "m.room.create", "sender": ALICE, "content": {}}, False),  # not a state event
        ({"type": "m.room.topic", "state_key": "", "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.message", "sender": ALICE, "content": {}}, False),
        ({"type": "m.room.member", "state_key": BOB, "sender": ALICE, "content": "junk"}, False),
        ({"type": ["m.room.power_levels"], "state_key": "", "sender": ALICE, "content": {}}, False),  # unhashable
        ("junk", False),
    ],
)
def test_is_power_event(event, expected):
    assert is_power_event(event) is expected
