"""Sender-joined, m.room.third_party_invite, required power level, "@" state keys,
m.room.power_levels (v1–v9 rule 10/9, v10–v11 rule 9, v12 rule 10) and the v1/v2
redaction rule, keyed by rule number; plus the power-level value grammar per version."""

from __future__ import annotations

import copy
import math

import pytest
from auth_builders import ALICE, BOB, CAROL, DAVE, Room, default_power_levels, new_room
from auth_numbering import ALL_VERSIONS, rule

from roomactors.protocol.auth import get_power_level, parse_power_level_value
from roomactors.protocol.errors import AuthError
from roomactors.protocol.room_versions import get_rules

STRINGY_VERSIONS = [str(i) for i in range(1, 10)]
FLOATY_VERSIONS = [str(i) for i in range(1, 6)]
INTEGER_VERSIONS = ["10", "11", "12"]


def rejects(rule_number: str, fn, *args, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        fn(*args, **kwargs)
    assert info.value.rule == rule_number, f"{info.value} (wanted {rule_number})"
    return info.value


def pl_room(v: str, **overrides) -> Room:
    """alice (creator, 100), carol (mod, 50), bob (0); PL events need 50."""
    room = new_room(v, users={CAROL: 50})
    pl = default_power_levels(room, {CAROL: 50}, events={"m.room.power_levels": 50, "m.room.tombstone": 100})
    pl.update(overrides)
    room.set_power_levels(pl)
    room.join(CAROL)
    room.join(BOB)
    return room


def current_pl(room: Room) -> dict:
    return copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])


def test_flag_families():
    assert [v for v in ALL_VERSIONS if not get_rules(v).integer_power_levels] == STRINGY_VERSIONS
    assert [v for v in ALL_VERSIONS if not get_rules(v).strict_canonical_json] == FLOATY_VERSIONS


# --- sender joined; m.room.third_party_invite; required PL; "@" state keys --------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_sender_must_be_joined(v):
    room = new_room(v)
    rejects(rule(v, "sender_joined"), room.check, room.make("m.room.message", BOB, {"body": "hi"}))
    room.set_membership(BOB, "invite", sender=ALICE)
    rejects(rule(v, "sender_joined"), room.check, room.make("m.room.message", BOB, {"body": "hi"}))
    room.set_membership(BOB, "join")
    room.check(room.make("m.room.message", BOB, {"body": "hi"}))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_third_party_invite_event_needs_invite_level(v):
    room = pl_room(v, invite=50)
    event = room.make("m.room.third_party_invite", BOB, {"display_name": "x"}, "tok")
    rejects(rule(v, "tpi", 1), room.check, event)
    room.check(room.make("m.room.third_party_invite", CAROL, {"display_name": "x"}, "tok"))
    # The invite level decides even where events[] would demand more.
    room2 = pl_room(v, events={"m.room.third_party_invite": 100})
    room2.check(room2.make("m.room.third_party_invite", BOB, {"display_name": "x"}, "tok"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_required_power_level(v):
    room = pl_room(v)
    rejects(rule(v, "required"), room.check, room.make("m.room.topic", BOB, {"topic": "x"}, ""))  # state_default 50
    room.check(room.make("m.room.topic", CAROL, {"topic": "x"}, ""))
    room.check(room.make("m.room.message", BOB, {"body": "x"}))  # events_default 0
    rejects(rule(v, "required"), room.check, room.make("m.room.tombstone", CAROL, {}, ""))  # events[] 100
    room.check(room.make("m.room.tombstone", ALICE, {}, ""))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_required_power_level_without_power_levels_event(v):
    room = Room(v)
    room.join(ALICE)
    room.set_join_rule("public")
    room.join(BOB)
    # No PL event: creator 100, others 0; state_default 50, events_default 0.
    rejects(rule(v, "required"), room.check, room.make("m.room.topic", BOB, {"topic": "x"}, ""))
    room.check(room.make("m.room.message", BOB, {"body": "x"}))
    room.check(room.make("m.room.topic", ALICE, {"topic": "x"}, ""))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_state_key_starting_with_at(v):
    room = pl_room(v, state_default=0)
    rejects(rule(v, "state_key"), room.check, room.make("m.custom", ALICE, {}, BOB))
    room.check(room.make("m.custom", BOB, {}, BOB))
    room.check(room.make("m.custom", ALICE, {}, "not-a-user"))


# --- m.room.power_levels -----------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_no_previous_allows(v):
    room = Room(v)
    room.join(ALICE)
    room.check(room.power_levels(default_power_levels(room, {BOB: 100}, ban=9000)))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("users", [[], "x", {"bob": 10}, {"@bob": 10}, {"@bob:b.example": "ten"}, {"@bob:b.example": None},
                                   {"@bob:b.example": True}, {"@bob:b.example": [1]}, {"@bob:b.example": "1.5"}])
def test_pl_users_must_be_user_ids_to_integers(v, users):
    room = pl_room(v)
    pl = current_pl(room)
    pl["users"] = users
    rejects(rule(v, "pl", "users"), room.check, room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_users_absent_is_allowed(v):
    room = pl_room(v)
    pl = current_pl(room)
    del pl["users"]
    # Read as {}: removing alice's own entry is allowed, and carol's (50 < 100) too.
    room.check(room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("value", ["50", " +050 ", "-1", "\t7\n"])
def test_pl_stringy_users_accepted_v1_to_v9_rejected_v10_plus(v, value):
    room = pl_room(v)
    pl = current_pl(room)
    pl["users"][BOB] = value
    event = room.power_levels(pl, sender=ALICE)
    if v in STRINGY_VERSIONS:
        room.check(event)
    else:
        rejects(rule(v, "pl", "users"), room.check, event)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_floaty_users_accepted_v1_to_v5(v):
    room = pl_room(v)
    pl = current_pl(room)
    pl["users"][BOB] = 50.57
    event = room.power_levels(pl, sender=ALICE)
    if v in FLOATY_VERSIONS:
        room.check(event)
        room.add(event)
        assert get_power_level(BOB, event, room.create, get_rules(v)) == 50
        # bob is now equal to carol: carol cannot kick him
        rejects(rule(v, "member", "leave", 5), room.check, room.member(CAROL, "leave", BOB))
    else:
        rejects(rule(v, "pl", "users"), room.check, event)


@pytest.mark.parametrize("v", INTEGER_VERSIONS)
@pytest.mark.parametrize("name", ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"])
@pytest.mark.parametrize("value", ["50", 50.0, None, True, [50]])
def test_pl_v10_1_named_levels_must_be_integers(v, name, value):
    room = pl_room(v)
    pl = current_pl(room)
    pl[name] = value
    rejects(rule(v, "pl", "integers"), room.check, room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", INTEGER_VERSIONS)
@pytest.mark.parametrize("name", ["events", "notifications"])
@pytest.mark.parametrize("value", [[], "x", {"m.room.name": "50"}, {"room": 1.5}, {"x": False}])
def test_pl_v10_2_maps_must_be_objects_of_integers(v, name, value):
    room = pl_room(v)
    pl = current_pl(room)
    pl[name] = value
    rejects(rule(v, "pl", "maps"), room.check, room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", STRINGY_VERSIONS)
def test_pl_stringy_named_levels_v1_to_v9(v):
    room = pl_room(v)
    pl = current_pl(room)
    pl.update(ban="50", kick=" 50", events={"m.room.power_levels": "50", "m.room.tombstone": "100"})
    room.check(room.power_levels(pl, sender=CAROL))  # unchanged values, just spelled as strings
    pl["ban"] = "51"
    rejects(rule(v, "pl", "props", 2), room.check, room.power_levels(pl, sender=CAROL))
    pl["ban"] = "fifty"
    rejects(rule(v, "pl", "props", 2), room.check, room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_props_changes(v):
    room = pl_room(v, kick=60)
    pl = current_pl(room)
    pl["ban"] = 40  # 50 -> 40 by carol (50): allowed
    room.check(room.power_levels(pl, sender=CAROL))
    pl["ban"] = 51
    rejects(rule(v, "pl", "props", 2), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["kick"] = 40  # current 60 > 50
    rejects(rule(v, "pl", "props", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    del pl["kick"]  # removal is an alteration too
    rejects(rule(v, "pl", "props", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["invite"] = 60  # added... well, changed from 0
    rejects(rule(v, "pl", "props", 2), room.check, room.power_levels(pl, sender=CAROL))
    room.check(room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_events_changes(v):
    room = pl_room(v)
    pl = current_pl(room)
    pl["events"]["m.room.name"] = 10
    room.check(room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["events"]["m.room.tombstone"] = 50  # current 100 > 50
    rejects(rule(v, "pl", "events_old", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    del pl["events"]["m.room.tombstone"]
    rejects(rule(v, "pl", "events_old", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["events"]["m.custom"] = 75
    rejects(rule(v, "pl", "events_new", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl["events"]["m.custom"] = 50
    room.check(room.power_levels(pl, sender=CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_notifications_checked_from_v6(v):
    room = pl_room(v, notifications={"room": 100})
    pl = current_pl(room)
    pl["notifications"] = {"room": 0}
    event = room.power_levels(pl, sender=CAROL)
    if get_rules(v).limit_notifications_power_levels:
        rejects(rule(v, "pl", "events_old", 1), room.check, event)
    else:
        room.check(event)
    pl["notifications"] = {"room": 100, "x": 75}
    event = room.power_levels(pl, sender=CAROL)
    if get_rules(v).limit_notifications_power_levels:
        rejects(rule(v, "pl", "events_new", 1), room.check, event)
    else:
        room.check(event)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_users_changes(v):
    room = pl_room(v, users={**({} if v == "12" else {ALICE: 100}), CAROL: 50, DAVE: 50})
    pl = current_pl(room)
    pl["users"][BOB] = 50  # add at own level: allowed
    room.check(room.power_levels(pl, sender=CAROL))
    pl["users"][BOB] = 51
    rejects(rule(v, "pl", "users_new", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["users"][DAVE] = 0  # demote a peer (50 >= 50)
    rejects(rule(v, "pl", "users_old", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    del pl["users"][DAVE]
    rejects(rule(v, "pl", "users_old", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["users"][CAROL] = 10  # demote self: allowed
    room.check(room.power_levels(pl, sender=CAROL))
    pl["users"][CAROL] = 60  # promote self: no
    rejects(rule(v, "pl", "users_new", 1), room.check, room.power_levels(pl, sender=CAROL))
    pl = current_pl(room)
    pl["users"][DAVE] = 0
    room.check(room.power_levels(pl, sender=ALICE))


@pytest.mark.parametrize("v", STRINGY_VERSIONS)
def test_pl_users_same_value_in_another_spelling_is_no_change(v):
    room = pl_room(v, users={**({ALICE: 100}), CAROL: 50, DAVE: 50})
    pl = current_pl(room)
    pl["users"][DAVE] = "50"
    room.check(room.power_levels(pl, sender=CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_pl_unparseable_old_values_do_not_crash(v):
    room = pl_room(v)
    pl = current_pl(room)
    pl.update(ban="x", events="x", users={**pl["users"], DAVE: "y"}, notifications=[1])
    room.set_power_levels(pl)  # forced into state
    new = default_power_levels(room, {CAROL: 50}, events={"m.room.power_levels": 0})
    # Unparseable current values are read as absent/defaults: alice (100) may replace them.
    room.check(room.power_levels(new, sender=ALICE))
    # ...and nobody gains power from them: bob (0) still cannot send power levels.
    rejects(rule(v, "required"), room.check, room.power_levels(new, sender=BOB))


# --- v1/v2 rule 11: m.room.redaction ------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_redaction_rule(v):
    room = pl_room(v)
    room.join("@bob2:b.example")
    target = room.force("m.room.message", "@bob2:b.example", {"body": "x"})
    foreign = room.force("m.room.message", CAROL, {"body": "x"})
    def redaction(sender, target_event):
        target_id = room.event_id(target_event)
        event = room.make("m.room.redaction", sender, {})
        if get_rules(v).redacts_in_content:
            event["content"]["redacts"] = target_id
        else:
            event["redacts"] = target_id
        return event

    room.check(redaction(BOB, target))  # v1/v2: same domain (b.example); v3+: no rule
    room.check(redaction(CAROL, target))  # redact level
    if get_rules(v).redaction_auth_rule:
        rejects("auth 11.3", room.check, redaction(BOB, foreign))
        bad = redaction(BOB, foreign)
        bad["redacts"] = 5
        rejects("auth 11.3", room.check, bad)
    else:
        room.check(redaction(BOB, foreign))


# --- value grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,stringy,floaty,integer",
    [
        (50, 50, 50, 50),
        (-3, -3, -3, -3),
        ("100", 100, 100, None),
        ("000100", 100, 100, None),
        ("+100", 100, 100, None),
        ("-100", -100, -100, None),
        (" 00100 ", 100, 100, None),
        ("1.5", None, None, None),
        ("1e3", None, None, None),
        ("", None, None, None),
        ("+-1", None, None, None),
        ("1_000", None, None, None),
        ("\u0661", None, None, None),  # ARABIC-INDIC DIGIT ONE
        ("9" * 5000, None, None, None),
        (50.57, None, 50, None),
        (-50.57, None, -50, None),
        (5.114698e4, None, 51146, None),
        (float("inf"), None, None, None),
        (float("nan"), None, None, None),
        (True, None, None, None),
        (None, None, None, None),
        ([1], None, None, None),
        ({"a": 1}, None, None, None),
    ],
)
def test_parse_power_level_value(value, stringy, floaty, integer):
    assert parse_power_level_value(value, get_rules("9")) == stringy
    assert parse_power_level_value(value, get_rules("5")) == floaty
    assert parse_power_level_value(value, get_rules("10")) == integer


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_get_power_level_defaults(v):
    rules = get_rules(v)
    room = Room(v)
    creator_level = math.inf if rules.explicit_creators else 100
    assert get_power_level(ALICE, None, room.create, rules) == creator_level
    assert get_power_level(BOB, None, room.create, rules) == 0
    pl = {"type": "m.room.power_levels", "state_key": "", "content": {"users": {BOB: 7}, "users_default": 3}}
    assert get_power_level(BOB, pl, room.create, rules) == 7
    assert get_power_level(CAROL, pl, room.create, rules) == 3
    assert get_power_level(ALICE, pl, room.create, rules) == (math.inf if rules.explicit_creators else 3)
    assert get_power_level(CAROL, {"content": "junk"}, room.create, rules) == 0
    assert get_power_level(5, pl, room.create, rules) == 3  # type: ignore[arg-type]
