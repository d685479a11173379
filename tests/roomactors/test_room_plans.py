"""roomactors.room.plans: /createRoom and room-upgrade planning (pure, synchronous).

Every plan the planner returns has already passed its own dry run through the
authorization rules, so the "valid" cases below also show that the events would be
accepted in that order.
"""

from __future__ import annotations

from typing import Any

import pytest

from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_rules
from roomactors.room.plans import (
    DEFAULT_TOMBSTONE_BODY,
    PlanError,
    PlannedEvent,
    RoomPlan,
    plan_create_room,
    plan_upgrade,
    tombstone_content,
)

ALICE = "@alice:example.org"
BOB = "@bob:remote.example"
CAROL = "@carol:example.org"
SERVER = "example.org"


def plan(body: Any, **kw: Any) -> RoomPlan:
    kw.setdefault("creator", ALICE)
    kw.setdefault("server_name", SERVER)
    kw.setdefault("profile", {})
    return plan_create_room(body, **kw)


def keys(p: RoomPlan) -> list[tuple[str, str | None]]:
    return [(e.type, e.state_key) for e in p.events]


def event(p: RoomPlan, event_type: str, state_key: str = "") -> dict:
    (match,) = [e for e in p.events if (e.type, e.state_key) == (event_type, state_key)]
    return match.content


def plan_error(body: Any, **kw: Any) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan(body, **kw)
    assert info.value.status == 400
    return info.value


PRESET_ORDER = [
    ("m.room.member", ALICE),
    ("m.room.power_levels", ""),
    ("m.room.join_rules", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
]


# --- presets -----------------------------------------------------------------------------


def test_private_chat_defaults_in_v12() -> None:
    p = plan({})
    assert p.room_version == "12" and p.preset == "private_chat" and p.visibility == "private"
    assert p.create_content == {"room_version": "12"}
    assert keys(p) == PRESET_ORDER
    assert event(p, "m.room.member", ALICE) == {"membership": "join"}
    assert event(p, "m.room.join_rules") == {"join_rule": "invite"}
    assert event(p, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert event(p, "m.room.guest_access") == {"guest_access": "can_join"}
    assert event(p, "m.room.power_levels") == {
        "users": {},  # v12: the creator has infinite power and is not listed
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150,  # v1.16: above state_default in v12+
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    assert p.invites == () and p.room_alias is None and p.alias_localpart is None and p.is_direct is False


def test_public_visibility_defaults_to_public_chat() -> None:
    p = plan({"visibility": "public"})
    assert p.preset == "public_chat" and p.visibility == "public"
    assert keys(p) == PRESET_ORDER
    assert event(p, "m.room.join_rules") == {"join_rule": "public"}
    assert event(p, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert event(p, "m.room.guest_access") == {"guest_access": "forbidden"}
    assert event(p, "m.room.power_levels")["invite"] == 50


def test_preset_wins_over_visibility() -> None:
    p = plan({"visibility": "public", "preset": "private_chat"})
    assert p.visibility == "public" and p.preset == "private_chat"
    assert event(p, "m.room.join_rules") == {"join_rule": "invite"}


def test_trusted_private_chat_v12_invitees_become_additional_creators() -> None:
    p = plan(
        {
            "preset": "trusted_private_chat",
            "invite": [BOB, CAROL, BOB],
            "creation_content": {"additional_creators": [CAROL, "@dave:example.org"]},
        }
    )
    assert p.invites == (BOB, CAROL)
    assert p.create_content["additional_creators"] == [CAROL, "@dave:example.org", BOB]
    assert event(p, "m.room.power_levels")["users"] == {}
    assert event(p, "m.room.guest_access") == {"guest_access": "can_join"}


def test_trusted_private_chat_v11_invitees_get_creator_level() -> None:
    p = plan({"preset": "trusted_private_chat", "invite": [BOB], "room_version": "11"})
    assert p.create_content == {"room_version": "11"}  # v11: no creator key, no additional_creators
    pl = event(p, "m.room.power_levels")
    assert pl["users"] == {ALICE: 100, BOB: 100}
    assert pl["events"]["m.room.tombstone"] == 100


def test_private_chat_v11_invitees_are_not_raised() -> None:
    p = plan({"invite": [BOB], "room_version": "11"})
    assert event(p, "m.room.power_levels")["users"] == {ALICE: 100}


@pytest.mark.parametrize("version", sorted(KNOWN_ROOM_VERSIONS, key=int))
def test_every_version_plans_and_passes_auth(version: str) -> None:
    rules = get_rules(version)
    p = plan({"room_version": version, "invite": [BOB], "name": "n", "room_alias_name": "a"})
    assert p.room_version == version
    assert ("creator" in p.create_content) == rules.create_event_has_creator
    if rules.create_event_has_creator:
        assert p.create_content["creator"] == ALICE
    users = event(p, "m.room.power_levels")["users"]
    assert users == ({} if rules.explicit_creators else {ALICE: 100})


def test_creation_content_creator_and_room_version_are_overwritten() -> None:
    body = {"room_version": "10", "creation_content": {"creator": BOB, "room_version": "1", "m.federate": False}}
    assert plan(body).create_content == {"creator": ALICE, "room_version": "10", "m.federate": False}
    body = {"creation_content": {"creator": BOB, "room_version": "1", "type": "m.space"}}
    assert plan(body).create_content == {"room_version": "12", "type": "m.space"}


def test_creation_content_is_copied() -> None:
    creation_content = {"nested": {"a": 1}}
    p = plan({"creation_content": creation_content})
    creation_content["nested"]["a"] = 2
    assert p.create_content["nested"] == {"a": 1}


def test_additional_creators_unvalidated_before_v12() -> None:
    # m.room.create schema: "In room versions 1 through 11, this field serves no purpose and is not validated."
    p = plan({"room_version": "11", "creation_content": {"additional_creators": "nonsense"}})
    assert p.create_content["additional_creators"] == "nonsense"


def test_profile_goes_into_the_join() -> None:
    p = plan({}, profile={"displayname": "Alice", "avatar_url": "mxc://example.org/a", "other": 1})
    assert event(p, "m.room.member", ALICE) == {
        "membership": "join",
        "displayname": "Alice",
        "avatar_url": "mxc://example.org/a",
    }
    assert event(plan({}, profile={"displayname": None}), "m.room.member", ALICE) == {"membership": "join"}


def test_defaults_from_server() -> None:
    assert plan({}, default_version="10").room_version == "10"
    error = plan_error({}, known_versions={"11"})  # the default (12) is not offered
    assert error.errcode == "M_UNSUPPORTED_ROOM_VERSION"
    assert plan({"room_version": "11"}, known_versions={"11"}).room_version == "11"


def test_null_fields_count_as_absent() -> None:
    p = plan({"visibility": None, "preset": None, "name": None, "topic": None, "room_version": None, "invite": None})
    assert p.preset == "private_chat" and p.room_version == "12"
    assert keys(p) == PRESET_ORDER


# --- power_level_content_override ----------------------------------------------------------


def test_override_merges_at_top_level() -> None:
    p = plan({"power_level_content_override": {"events": {"m.room.message": 10}, "users_default": 5, "x": "y"}})
    pl = event(p, "m.room.power_levels")
    assert pl["events"] == {"m.room.message": 10}  # replaced, not deep-merged
    assert pl["users_default"] == 5 and pl["x"] == "y" and pl["state_default"] == 50


def test_override_v11_users_replace_the_map() -> None:
    p = plan({"room_version": "11", "preset": "trusted_private_chat", "invite": [BOB],
              "power_level_content_override": {"users": {ALICE: 100, CAROL: 50}}})
    assert event(p, "m.room.power_levels")["users"] == {ALICE: 100, CAROL: 50}


def test_override_v11_dropping_the_creator_is_invalid_room_state() -> None:
    error = plan_error({"room_version": "11", "power_level_content_override": {"users": {BOB: 100}}})
    assert error.errcode == "M_INVALID_ROOM_STATE"


def test_override_that_starves_the_creator_of_the_name_level() -> None:
    # create_room.yaml: "the user's power_level is set below that necessary to set the room name"
    body = {"room_version": "10", "name": "x", "power_level_content_override": {"events": {"m.room.name": 101}}}
    assert plan_error(body).errcode == "M_INVALID_ROOM_STATE"
    # v12: the creator's infinite power sends anything
    body["room_version"] = "12"
    assert event(plan(body), "m.room.name") == {"name": "x"}


@pytest.mark.parametrize("listed", [ALICE, CAROL])
def test_v12_creators_in_override_users_are_invalid(listed: str) -> None:
    body = {"creation_content": {"additional_creators": [CAROL]}, "power_level_content_override": {"users": {listed: 100}}}
    error = plan_error(body)
    assert error.errcode == "M_INVALID_ROOM_STATE" and "10.4" in error.error


def test_v12_trusted_invitee_in_override_users_is_invalid() -> None:
    body = {"preset": "trusted_private_chat", "invite": [BOB], "power_level_content_override": {"users": {BOB: 50}}}
    assert plan_error(body).errcode == "M_INVALID_ROOM_STATE"


def test_override_with_a_malformed_level_is_invalid_room_state() -> None:
    assert plan_error({"power_level_content_override": {"ban": "50"}}).errcode == "M_INVALID_ROOM_STATE"
    # v1–v9 tolerate stringy levels
    assert event(plan({"room_version": "9", "power_level_content_override": {"ban": "50"}}), "m.room.power_levels")["ban"] == "50"


def test_override_raising_the_invite_level_blocks_invites() -> None:
    body = {"room_version": "11", "invite": [BOB], "power_level_content_override": {"invite": 101}}
    assert plan_error(body).errcode == "M_INVALID_ROOM_STATE"


# --- alias, name, topic, invites ---------------------------------------------------------------


def test_room_alias_name_adds_the_canonical_alias_after_power_levels() -> None:
    p = plan({"room_alias_name": "thepub"})
    assert p.alias_localpart == "thepub" and p.room_alias == "#thepub:example.org"
    assert keys(p)[:3] == [("m.room.member", ALICE), ("m.room.power_levels", ""), ("m.room.canonical_alias", "")]
    assert event(p, "m.room.canonical_alias") == {"alias": "#thepub:example.org"}


def test_name_and_topic_come_last() -> None:
    p = plan({"name": "The Pub", "topic": "Happy hour", "initial_state": [{"type": "m.room.avatar", "content": {}}]})
    assert keys(p)[-3:] == [("m.room.avatar", ""), ("m.room.name", ""), ("m.room.topic", "")]
    assert event(p, "m.room.name") == {"name": "The Pub"}
    assert event(p, "m.room.topic") == {
        "topic": "Happy hour",
        "m.topic": {"m.text": [{"mimetype": "text/plain", "body": "Happy hour"}]},
    }


def test_invites_and_is_direct() -> None:
    p = plan({"invite": [BOB, CAROL, BOB], "is_direct": True})
    assert p.invites == (BOB, CAROL) and p.is_direct is True
    assert p.invite_content() == {"membership": "invite", "is_direct": True}
    assert plan({"invite": [BOB]}).invite_content() == {"membership": "invite"}
    assert all(e.content.get("membership") != "invite" for e in p.events)


# --- initial_state ------------------------------------------------------------------------------


def test_initial_state_comes_after_the_preset_in_order() -> None:
    p = plan(
        {
            "initial_state": [
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "com.example.thing", "state_key": "k", "content": {"a": 1}},
            ]
        }
    )
    assert keys(p) == [*PRESET_ORDER, ("m.room.encryption", ""), ("com.example.thing", "k")]


def test_initial_state_replaces_preset_events_in_place() -> None:
    p = plan(
        {
            "preset": "public_chat",
            "initial_state": [
                {"type": "com.example.first", "content": {}},
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
            ],
        }
    )
    # The public join rule is never planned: the room is not public at any point.
    assert keys(p) == [
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.history_visibility", ""),
        ("com.example.first", ""),
        ("m.room.join_rules", ""),
        ("m.room.guest_access", ""),
    ]
    assert event(p, "m.room.join_rules") == {"join_rule": "invite"}
    assert event(p, "m.room.guest_access") == {"guest_access": "can_join"}


def test_initial_state_canonical_alias_replaces_the_generated_one() -> None:
    p = plan({"room_alias_name": "a", "initial_state": [{"type": "m.room.canonical_alias", "content": {}}]})
    assert event(p, "m.room.canonical_alias") == {}
    assert p.room_alias == "#a:example.org"  # the alias itself is still created by the caller


def test_initial_state_power_levels_replace_generated_and_override() -> None:
    pl = {"users": {ALICE: 100}, "state_default": 0}
    p = plan(
        {
            "room_version": "11",
            "preset": "trusted_private_chat",
            "invite": [BOB],
            "power_level_content_override": {"ban": 1},
            "initial_state": [{"type": "m.room.power_levels", "content": pl}],
        }
    )
    assert keys(p) == [
        ("m.room.member", ALICE),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.power_levels", ""),
    ]
    assert event(p, "m.room.power_levels") == pl


def test_repeated_initial_state_last_wins() -> None:
    p = plan(
        {
            "initial_state": [
                {"type": "com.example.x", "content": {"v": 1}},
                {"type": "com.example.y", "content": {}},
                {"type": "com.example.x", "content": {"v": 2}},
            ]
        }
    )
    assert keys(p)[-2:] == [("com.example.y", ""), ("com.example.x", "")]
    assert event(p, "com.example.x") == {"v": 2}


def test_name_and_topic_override_initial_state() -> None:
    p = plan(
        {
            "name": "wins",
            "topic": "also wins",
            "initial_state": [
                {"type": "m.room.name", "content": {"name": "loses"}},
                {"type": "m.room.topic", "content": {"topic": "loses"}},
                {"type": "m.room.name", "state_key": "other", "content": {"name": "kept"}},
            ],
        }
    )
    assert event(p, "m.room.name") == {"name": "wins"}
    assert event(p, "m.room.topic")["topic"] == "also wins"
    assert event(p, "m.room.name", "other") == {"name": "kept"}
    assert keys(p)[-3:] == [("m.room.name", "other"), ("m.room.name", ""), ("m.room.topic", "")]


def test_initial_state_content_is_copied() -> None:
    content = {"a": [1]}
    p = plan({"initial_state": [{"type": "com.example.x", "content": content}]})
    content["a"].append(2)
    assert event(p, "com.example.x") == {"a": [1]}


def test_initial_state_member_event_for_someone_else_is_invalid() -> None:
    body = {"initial_state": [{"type": "m.room.member", "state_key": BOB, "content": {"membership": "join"}}]}
    assert plan_error(body).errcode == "M_INVALID_ROOM_STATE"


def test_initial_state_ban_blocks_the_invite() -> None:
    body = {"invite": [BOB], "initial_state": [{"type": "m.room.member", "state_key": BOB, "content": {"membership": "ban"}}]}
    assert plan_error(body).errcode == "M_INVALID_ROOM_STATE"


# --- validation errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ([], "M_BAD_JSON"),
        ("{}", "M_BAD_JSON"),
        ({"visibility": "secret"}, "M_BAD_JSON"),
        ({"visibility": 1}, "M_BAD_JSON"),
        ({"visibility": ["public"]}, "M_BAD_JSON"),
        ({"preset": "party"}, "M_BAD_JSON"),
        ({"preset": 1}, "M_BAD_JSON"),
        ({"room_version": 12}, "M_BAD_JSON"),
        ({"room_version": "13"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": "org.example.custom"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"creation_content": []}, "M_BAD_JSON"),
        ({"creation_content": {"additional_creators": BOB}}, "M_BAD_JSON"),
        ({"creation_content": {"additional_creators": [1]}}, "M_BAD_JSON"),
        ({"creation_content": {"additional_creators": ["bob"]}}, "M_INVALID_PARAM"),
        ({"creation_content": {"additional_creators": ["@bob"]}}, "M_INVALID_PARAM"),
        ({"creation_content": {"x": 1.5}}, "M_BAD_JSON"),
        ({"initial_state": {}}, "M_BAD_JSON"),
        ({"initial_state": ["x"]}, "M_BAD_JSON"),
        ({"initial_state": [{"content": {}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": 1, "content": {}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "a", "state_key": 1, "content": {}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "a"}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "a", "content": []}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "a", "content": {"n": 0.5}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "a", "content": {"n": 2**53}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.create", "content": {}}]}, "M_INVALID_ROOM_STATE"),
        ({"invite": BOB}, "M_BAD_JSON"),
        ({"invite": [1]}, "M_BAD_JSON"),
        ({"invite": ["bob:example.org"]}, "M_INVALID_PARAM"),
        ({"invite": ["@bob:bad_server!"]}, "M_INVALID_PARAM"),
        ({"invite": [ALICE]}, "M_INVALID_PARAM"),
        ({"invite_3pid": {}}, "M_BAD_JSON"),
        ({"invite_3pid": ["x"]}, "M_BAD_JSON"),
        (
            {"invite_3pid": [{"medium": "email", "address": "a@b.c", "id_server": "i", "id_access_token": "t"}]},
            "M_INVALID_PARAM",
        ),
        ({"name": 1}, "M_BAD_JSON"),
        ({"topic": {"text": "x"}}, "M_BAD_JSON"),
        ({"room_alias_name": 1}, "M_BAD_JSON"),
        ({"room_alias_name": ""}, "M_INVALID_PARAM"),
        ({"room_alias_name": "#foo:example.org"}, "M_INVALID_PARAM"),
        ({"room_alias_name": "foo bar"}, "M_INVALID_PARAM"),
        ({"room_alias_name": "foo\tbar"}, "M_INVALID_PARAM"),
        ({"room_alias_name": "foo\x00"}, "M_INVALID_PARAM"),
        ({"room_alias_name": "\ud800"}, "M_INVALID_PARAM"),
        ({"room_alias_name": "a" * 250}, "M_INVALID_PARAM"),
        ({"power_level_content_override": []}, "M_BAD_JSON"),
        ({"power_level_content_override": {"ban": 1.5}}, "M_BAD_JSON"),
        ({"is_direct": "yes"}, "M_BAD_JSON"),
    ],
)
def test_validation_errors(body: Any, errcode: str) -> None:
    assert plan_error(body).errcode == errcode


def test_alias_localpart_may_hold_unicode_and_punctuation() -> None:
    assert plan({"room_alias_name": "café#1"}).room_alias == "#café#1:example.org"
    longest = "a" * (255 - len("#:example.org"))
    assert plan({"room_alias_name": longest}).alias_localpart == longest


def test_v5_allows_floats_in_content() -> None:
    p = plan({"room_version": "5", "initial_state": [{"type": "a", "content": {"n": 0.5}}]})
    assert event(p, "a") == {"n": 0.5}


def test_plan_error_fields() -> None:
    error = PlanError("M_BAD_JSON", "nope")
    assert (error.errcode, error.error, error.status) == ("M_BAD_JSON", "nope", 400)
    assert PlanError("M_FORBIDDEN", "no", status=403).status == 403


def test_plans_are_frozen() -> None:
    p = plan({})
    with pytest.raises(AttributeError):
        p.room_version = "1"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.events[0].type = "x"  # type: ignore[misc]
    assert isinstance(p.events, tuple) and isinstance(p.events[0], PlannedEvent)


# --- room upgrades ---------------------------------------------------------------------------------

OLD = "!old:example.org"
MALLORY = "@mallory:evil.example"


def state_event(event_type: str, content: dict, state_key: str = "", sender: str = ALICE) -> dict:
    return {"type": event_type, "state_key": state_key, "sender": sender, "room_id": OLD, "content": content}


def old_room(
    version: str = "11",
    *,
    power_levels: dict | None = None,
    create_extra: dict | None = None,
    extra: list[dict] | None = None,
) -> dict[tuple[str, str], dict]:
    create_content: dict[str, Any] = {"room_version": version, **(create_extra or {})}
    if get_rules(version).create_event_has_creator:
        create_content["creator"] = ALICE
    events = [
        state_event("m.room.create", create_content),
        state_event("m.room.member", {"membership": "join"}, ALICE),
        state_event("m.room.member", {"membership": "join"}, BOB, BOB),
        state_event("m.room.join_rules", {"join_rule": "public"}),
        state_event("m.room.history_visibility", {"history_visibility": "shared"}),
        state_event("m.room.guest_access", {"guest_access": "forbidden"}),
        state_event("m.room.name", {"name": "Old"}),
        state_event("m.room.topic", {"topic": "Topic"}),
        state_event("m.room.avatar", {"url": "mxc://example.org/av"}),
        state_event("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
        state_event("m.room.server_acl", {"allow": ["*"], "deny": ["evil.example"]}),
        state_event("m.room.canonical_alias", {"alias": "#old:example.org"}),
        state_event("m.room.pinned_events", {"pinned": []}),
        state_event("com.example.custom", {"x": 1}),
        state_event("m.room.member", {"membership": "ban", "reason": "spam", "displayname": "M"}, MALLORY),
        state_event("m.room.member", {"membership": "leave"}, CAROL, CAROL),
    ]
    if power_levels is None and not get_rules(version).explicit_creators:
        power_levels = {"users": {ALICE: 100, BOB: 50}, "users_default": 0, "events": {"m.room.tombstone": 100}}
    if power_levels is not None:
        events.append(state_event("m.room.power_levels", power_levels))
    events += extra or []
    return {(e["type"], e["state_key"]): e for e in events}


def upgrade_keys(p: Any) -> list[tuple[str, str | None]]:
    return [(e.type, e.state_key) for e in p.events]


COPIED = [
    ("m.room.join_rules", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
    ("m.room.name", ""),
    ("m.room.topic", ""),
    ("m.room.avatar", ""),
    ("m.room.encryption", ""),
    ("m.room.server_acl", ""),
]


def test_upgrade_v11_to_v12() -> None:
    state = old_room("11")
    p = plan_upgrade(state, user_id=ALICE, new_version="12", old_room_id=OLD, profile={"displayname": "Alice"})
    assert (p.old_version, p.new_version) == ("11", "12")
    assert p.create_content == {"room_version": "12", "predecessor": {"room_id": OLD}}
    assert upgrade_keys(p) == [
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.member", MALLORY),
        *COPIED,
    ]
    assert p.events[0].content == {"membership": "join", "displayname": "Alice"}
    # v12: the upgrading user is a creator and must not be listed.
    assert p.events[1].content == {"users": {BOB: 50}, "users_default": 0, "events": {"m.room.tombstone": 100}}
    assert p.events[2].content == {"membership": "ban", "reason": "spam"}
    for e in p.events[3:]:
        assert e.content == state[(e.type, e.state_key)]["content"]
    assert p.old_room_power_levels == {
        "users": {ALICE: 100, BOB: 50},
        "users_default": 0,
        "events": {"m.room.tombstone": 100},
        "invite": 50,
        "events_default": 50,
    }
    assert p.canonical_alias_content == {"alias": "#old:example.org"}


def test_upgrade_copies_are_independent_of_the_old_state() -> None:
    state = old_room("11")
    p = plan_upgrade(state, user_id=ALICE, new_version="11", old_room_id=OLD)
    state[("m.room.server_acl", "")]["content"]["deny"].append("x")
    assert [e for e in p.events if e.type == "m.room.server_acl"][0].content["deny"] == ["evil.example"]


def test_upgrade_to_old_version_keeps_creator_and_predecessor_event_id() -> None:
    p = plan_upgrade(old_room("9"), user_id=ALICE, new_version="10", old_room_id=OLD, predecessor_event_id="$tomb")
    assert p.create_content == {
        "room_version": "10",
        "predecessor": {"room_id": OLD, "event_id": "$tomb"},
        "creator": ALICE,
    }
    # Alice has 100 already: no raise, no restore.
    assert [e.type for e in p.events].count("m.room.power_levels") == 1


def test_upgrade_raises_a_moderator_temporarily() -> None:
    pl = {"users": {ALICE: 100, BOB: 50}, "events": {"m.room.tombstone": 50, "m.room.server_acl": 75}}
    p = plan_upgrade(old_room("11", power_levels=pl), user_id=BOB, new_version="11", old_room_id=OLD)
    kinds = upgrade_keys(p)
    assert kinds[0] == ("m.room.member", BOB)
    assert kinds[1] == ("m.room.power_levels", "") and kinds[-1] == ("m.room.power_levels", "")
    # needed: m.room.power_levels defaults to state_default (50), server_acl 75, and
    # above Mallory (users_default 0) — 75.
    assert p.events[1].content["users"] == {ALICE: 100, BOB: 75}
    assert p.events[-1].content == pl
    assert p.create_content == {"room_version": "11", "predecessor": {"room_id": OLD}}
    # Old room: Bob (50) may send power levels (state_default 50) and set levels up to 50.
    assert p.old_room_power_levels is not None
    assert p.old_room_power_levels["events_default"] == 50


def test_upgrade_raises_above_a_powerful_banned_user() -> None:
    pl = {"users": {ALICE: 100, MALLORY: 100}}
    p = plan_upgrade(old_room("11", power_levels=pl), user_id=ALICE, new_version="11", old_room_id=OLD)
    assert p.events[1].content["users"][ALICE] == 101
    assert p.events[-1].content == pl


def test_upgrade_normalises_stringy_levels_from_v1() -> None:
    pl = {"users": {ALICE: "100", BOB: 50.7, "not-a-user": 5}, "ban": "60", "kick": "junk",
          "events": {"m.room.name": "20"}, "other": ["kept"]}
    p = plan_upgrade(old_room("1", power_levels=pl), user_id=ALICE, new_version="11", old_room_id=OLD)
    assert p.events[1].content == {"users": {ALICE: 100, BOB: 50}, "ban": 60, "events": {"m.room.name": 20}, "other": ["kept"]}
    assert p.old_version == "1"


def test_upgrade_restricts_old_room_above_users_default() -> None:
    pl = {"users": {ALICE: 100}, "users_default": 60}
    p = plan_upgrade(old_room("11", power_levels=pl), user_id=ALICE, new_version="12", old_room_id=OLD)
    assert p.old_room_power_levels == {"users": {ALICE: 100}, "users_default": 60, "invite": 61, "events_default": 61}


def test_upgrade_old_room_already_restricted() -> None:
    pl = {"users": {ALICE: 100}, "invite": 50, "events_default": 70}
    p = plan_upgrade(old_room("11", power_levels=pl), user_id=ALICE, new_version="12", old_room_id=OLD)
    assert p.old_room_power_levels is None


def test_upgrade_old_room_restriction_skipped_when_not_permitted() -> None:
    # Bob may tombstone (40) but not send power levels (100): "if possible".
    pl = {"users": {ALICE: 100, BOB: 40}, "events": {"m.room.tombstone": 40, "m.room.power_levels": 100}}
    p = plan_upgrade(old_room("11", power_levels=pl), user_id=BOB, new_version="11", old_room_id=OLD)
    assert p.old_room_power_levels is None


def test_upgrade_additional_creators() -> None:
    state = old_room("11", power_levels={"users": {ALICE: 100, BOB: 50, CAROL: 10}})
    p = plan_upgrade(state, user_id=ALICE, new_version="12", old_room_id=OLD, additional_creators=[BOB, BOB])
    assert p.create_content["additional_creators"] == [BOB]
    assert p.events[1].content["users"] == {CAROL: 10}
    # Ignored where the new version has no additional creators.
    p = plan_upgrade(state, user_id=ALICE, new_version="11", old_room_id=OLD, additional_creators=[BOB])
    assert "additional_creators" not in p.create_content
    assert p.events[1].content["users"] == {ALICE: 100, BOB: 50, CAROL: 10}


def test_upgrade_does_not_carry_additional_creators_over() -> None:
    state = old_room("12", power_levels={"users": {BOB: 50}}, create_extra={"additional_creators": [CAROL]})
    p = plan_upgrade(state, user_id=ALICE, new_version="12", old_room_id=OLD)
    assert p.create_content == {"room_version": "12", "predecessor": {"room_id": OLD}}


def test_upgrade_from_v12_creator_to_v11_keeps_power() -> None:
    state = old_room("12", power_levels={"users": {BOB: 50}, "events": {"m.room.tombstone": 150}})
    p = plan_upgrade(state, user_id=ALICE, new_version="11", old_room_id=OLD)
    pls = [e for e in p.events if e.type == "m.room.power_levels"]
    assert len(pls) == 1
    assert pls[0].content["users"] == {BOB: 50, ALICE: 150}


def test_upgrade_copies_type_federate_and_space_children() -> None:
    children = [
        state_event("m.space.child", {"via": ["example.org"]}, "!b:example.org"),
        state_event("m.space.child", {}, "!removed:example.org"),
        state_event("m.space.child", {"via": ["example.org"]}, "!a:example.org"),
    ]
    state = old_room("11", create_extra={"type": "m.space", "m.federate": False}, extra=children)
    p = plan_upgrade(state, user_id=ALICE, new_version="12", old_room_id=OLD)
    assert p.create_content["type"] == "m.space" and p.create_content["m.federate"] is False
    assert upgrade_keys(p)[-2:] == [("m.space.child", "!a:example.org"), ("m.space.child", "!b:example.org")]


def test_upgrade_without_power_levels() -> None:
    state = old_room("12")  # no PL event: the v12 creator alone has power
    p = plan_upgrade(state, user_id=ALICE, new_version="11", old_room_id=OLD)
    assert "m.room.power_levels" not in [e.type for e in p.events]
    assert p.old_room_power_levels is None
    assert p.create_content["room_version"] == "11"


@pytest.mark.parametrize(
    ("user", "pl", "message"),
    [
        (CAROL, None, "not joined"),
        (BOB, None, "permission"),  # 50 < tombstone 100
        (MALLORY, None, "not joined"),
    ],
)
def test_upgrade_forbidden(user: str, pl: dict | None, message: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_upgrade(old_room("11", power_levels=pl), user_id=user, new_version="12", old_room_id=OLD)
    assert (info.value.errcode, info.value.status) == ("M_FORBIDDEN", 403)
    assert message in info.value.error


@pytest.mark.parametrize(
    ("kw", "errcode"),
    [
        ({"new_version": "99"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"new_version": 12}, "M_BAD_JSON"),
        ({"new_version": "12", "additional_creators": "x"}, "M_BAD_JSON"),
        ({"new_version": "12", "additional_creators": ["x"]}, "M_INVALID_PARAM"),
    ],
)
def test_upgrade_request_errors(kw: dict, errcode: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_upgrade(old_room("11"), user_id=ALICE, old_room_id=OLD, **kw)
    assert info.value.errcode == errcode and info.value.status == 400


def test_upgrade_known_versions() -> None:
    with pytest.raises(PlanError) as info:
        plan_upgrade(old_room("11"), user_id=ALICE, new_version="12", old_room_id=OLD, known_versions={"11"})
    assert info.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"


def test_tombstone_content() -> None:
    assert tombstone_content("!new:example.org") == {
        "body": DEFAULT_TOMBSTONE_BODY,
        "replacement_room": "!new:example.org",
    }
    assert tombstone_content("!n", body="moved")["body"] == "moved"
