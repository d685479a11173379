"""The m.room.member rule (v1–v5 rule 5, v6–v11 rule 4, v12 rule 5), keyed by rule number,
for every room version, including knocking, restricted joins and third-party invites."""

from __future__ import annotations

import copy

import pytest
from auth_builders import ALICE, BOB, CAROL, DAVE, Room, new_room
from auth_numbering import ALL_VERSIONS, rule
from nacl.signing import SigningKey

from roomactors.protocol.auth import check_auth
from roomactors.protocol.b64 import encode_base64, encode_base64_urlsafe
from roomactors.protocol.canonical import canonical_json
from roomactors.protocol.errors import AuthError
from roomactors.protocol.room_versions import get_rules

KNOCK_VERSIONS = [v for v in ALL_VERSIONS if get_rules(v).knock_allowed]
NO_KNOCK_VERSIONS = [v for v in ALL_VERSIONS if not get_rules(v).knock_allowed]
RESTRICTED_VERSIONS = [v for v in ALL_VERSIONS if get_rules(v).restricted_join_allowed]
KNOCK_RESTRICTED_VERSIONS = [v for v in ALL_VERSIONS if get_rules(v).knock_restricted_join_allowed]


def rejects(rule_number: str, fn, *args, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        fn(*args, **kwargs)
    assert info.value.rule == rule_number, f"{info.value} (wanted {rule_number})"
    return info.value


def test_flag_families_match_the_feature_matrix():
    # rooms/_index "feature matrix": knocking v7+, restricted v8+, knock_restricted v10+.
    assert KNOCK_VERSIONS == [str(i) for i in range(7, 13)]
    assert RESTRICTED_VERSIONS == [str(i) for i in range(8, 13)]
    assert KNOCK_RESTRICTED_VERSIONS == ["10", "11", "12"]


# Literal numbers for one rule in each family, straight from each version's text.
@pytest.mark.parametrize(
    "v,expected",
    [("1", "auth 5.2.3"), ("2", "auth 5.2.3"), ("5", "auth 5.2.3"), ("6", "auth 4.2.3"), ("7", "auth 4.2.3"),
     ("8", "auth 4.3.3"), ("9", "auth 4.3.3"), ("10", "auth 4.3.3"), ("11", "auth 4.3.3"), ("12", "auth 5.3.3")],
)
def test_banned_join_numbering_literal(v, expected):
    room = new_room(v)
    room.set_membership(BOB, "ban", sender=ALICE)
    rejects(expected, room.check, room.member(BOB, "join"))


# --- shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_member_shape(v):
    room = new_room(v)
    rejects(rule(v, "member", "shape"), room.check, room.make("m.room.member", BOB, {"membership": "join"}))
    rejects(rule(v, "member", "shape"), room.check, room.make("m.room.member", BOB, {}, BOB))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["foo", 1, None, ["join"]])
def test_member_unknown_membership(v, membership):
    room = new_room(v)
    rejects(rule(v, "member", "unknown"), room.check, room.make("m.room.member", BOB, {"membership": membership}, BOB))


# --- join ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_1_creator_first_join(v):
    room = Room(v)
    room.check(room.member(ALICE, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_1_needs_create_as_the_only_prev_event(v):
    room = Room(v)
    other = room.force("m.room.topic", ALICE, {"topic": "x"}, "")
    create_id = room.event_id(room.create)
    event = room.make("m.room.member", ALICE, {"membership": "join"}, ALICE, prev=[create_id, room.event_id(other)])
    # Falls through: no join rules event -> invite-only, and alice is not invited.
    rejects(rule(v, "member", "join", "reject"), room.check, event)
    event = room.make("m.room.member", ALICE, {"membership": "join"}, ALICE, prev=[room.event_id(other)])
    rejects(rule(v, "member", "join", "reject"), room.check, event)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_1_only_the_creator(v):
    room = Room(v)
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))


def test_join_1_v12_additional_creator_is_not_the_first_joiner():
    room = Room("12", create_content={"additional_creators": [BOB]})
    rejects(rule("12", "member", "join", "reject"), room.check, room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_1_is_about_state_key_not_sender(v):
    # Spec-literal: rule join.1 looks only at prev_events and state_key.
    room = Room(v)
    room.check(room.member(BOB, "join", ALICE))


@pytest.mark.parametrize("v", [str(i) for i in range(1, 11)])
def test_join_1_creator_is_content_creator_before_v11(v):
    room = Room(v, creator=ALICE, create_content={"creator": CAROL})
    room.check(room.member(CAROL, "join"))
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(ALICE, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_2_sender_must_be_state_key(v):
    room = new_room(v)
    rejects(rule(v, "member", "join", "sender"), room.check, room.member(ALICE, "join", BOB))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_3_banned(v):
    room = new_room(v)
    room.set_membership(BOB, "ban", sender=ALICE)
    rejects(rule(v, "member", "join", "banned"), room.check, room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_4_invite_rule(v):
    room = new_room(v, join_rule="invite")
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))
    room.set_membership(BOB, "invite", sender=ALICE)
    room.check(room.member(BOB, "join"))
    room.set_membership(BOB, "join")
    room.check(room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_4_knock_rule_admits_invited_only_from_v7(v):
    room = new_room(v, join_rule="knock")
    room.set_membership(BOB, "invite", sender=ALICE)
    if v in KNOCK_VERSIONS:
        room.check(room.member(BOB, "join"))
    else:
        rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(CAROL, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_public(v):
    room = new_room(v, join_rule="public")
    room.check(room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("join_rule", ["private", "Public", None, 5])
def test_join_unknown_join_rule_rejected(v, join_rule):
    # A join_rule that is present but no join rule (null and non-strings included) is
    # taken as is, as Synapse does: it matches no rule, so even an invited user (whom
    # "invite" would admit) cannot join.
    room = new_room(v)
    room.set_join_rule(join_rule)
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))
    room.set_membership(BOB, "invite", sender=ALICE)
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_rules_event_without_join_rule_is_invite_only(v):
    # No join_rule property: read as "invite", like a missing join-rules event (the spec
    # gives no default; Synapse reads content.get("join_rule", "invite")).
    room = new_room(v)
    room.force("m.room.join_rules", ALICE, {"allow": []}, "")
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))
    if v in KNOCK_VERSIONS:
        rejects(rule(v, "member", "knock", 1), room.check, room.member(BOB, "knock"))
    room.set_membership(BOB, "invite", sender=ALICE)
    room.check(room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_join_without_join_rules_event_is_invite_only(v):
    room = Room(v)
    room.join(ALICE)
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))
    room.set_membership(BOB, "invite", sender=ALICE)
    room.check(room.member(BOB, "join"))


# --- restricted joins ---------------------------------------------------------------------------


def restricted_room(v: str, join_rule: str = "restricted", invite_level: int = 0) -> Room:
    room = new_room(v, join_rule=join_rule, users={CAROL: 50})
    room.set_join_rule(join_rule, allow=[{"type": "m.room_membership", "room_id": "!space:a.example"}])
    room.set_membership(CAROL, "join")
    if invite_level:
        pl = copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])
        pl["invite"] = invite_level
        room.set_power_levels(pl)
    return room


def authorised_join(room: Room, user: str, via: object, sign: bool = True) -> dict:
    event = room.member(user, "join", join_authorised_via_users_server=via)
    if sign and isinstance(via, str) and ":" in via:
        event["signatures"][via.split(":", 1)[1]] = {"ed25519:1": "sig"}
    return event


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
def test_restricted_1_member_already_invited_or_joined(v):
    room = restricted_room(v)
    room.set_membership(BOB, "invite", sender=ALICE)
    room.check(room.member(BOB, "join"))


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
def test_restricted_3_authorised_via_joined_user_with_invite_power(v):
    room = restricted_room(v)
    room.check(authorised_join(room, BOB, CAROL))
    room.check(authorised_join(room, BOB, ALICE))


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
def test_restricted_2_authoriser_without_invite_power_rejected(v):
    room = restricted_room(v, invite_level=60)  # carol has 50
    rejects(rule(v, "member", "join", "restricted", 2), room.check, authorised_join(room, BOB, CAROL))
    room.check(authorised_join(room, BOB, ALICE))


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
def test_restricted_2_authoriser_not_joined_rejected(v):
    room = restricted_room(v)
    room.set_membership(CAROL, "leave")
    rejects(rule(v, "member", "join", "restricted", 2), room.check, authorised_join(room, BOB, CAROL))
    rejects(rule(v, "member", "join", "restricted", 2), room.check, authorised_join(room, BOB, DAVE))


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
def test_restricted_2_no_authoriser_rejected(v):
    room = restricted_room(v)
    rejects(rule(v, "member", "join", "restricted", 2), room.check, room.member(BOB, "join"))


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
@pytest.mark.parametrize("membership", ["join", "leave", "invite"])
def test_jauvs_must_be_signed_by_its_server(v, membership):
    room = restricted_room(v)
    event = room.member(BOB, membership, join_authorised_via_users_server=CAROL)
    rejects(rule(v, "member", "jauvs", 1), room.check, event)


@pytest.mark.parametrize("v", RESTRICTED_VERSIONS)
@pytest.mark.parametrize("via", [None, 5, "carol", "@carol", ["@carol:c.example"]])
def test_jauvs_not_a_user_id_rejected(v, via):
    room = restricted_room(v)
    rejects(rule(v, "member", "jauvs", 1), room.check, authorised_join(room, BOB, via))


@pytest.mark.parametrize("v", [v for v in ALL_VERSIONS if v not in RESTRICTED_VERSIONS])
def test_restricted_unknown_before_v8(v):
    room = restricted_room(v)
    event = authorised_join(room, BOB, CAROL, sign=False)  # the key means nothing here
    rejects(rule(v, "member", "join", "reject"), room.check, event)
    room.set_membership(BOB, "invite", sender=ALICE)
    rejects(rule(v, "member", "join", "reject"), room.check, room.member(BOB, "join"))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_knock_restricted_join_only_from_v10(v):
    room = restricted_room(v, join_rule="knock_restricted")
    event = authorised_join(room, BOB, CAROL)
    if v in KNOCK_RESTRICTED_VERSIONS:
        room.check(event)
    else:
        rejects(rule(v, "member", "join", "reject"), room.check, event)


# --- invite ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_invite_allowed(v):
    room = new_room(v)
    room.join(BOB)
    room.check(room.member(BOB, "invite", CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_invite_2_sender_not_joined(v):
    room = new_room(v)
    rejects(rule(v, "member", "invite", 2), room.check, room.member(BOB, "invite", CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("target_membership", ["join", "ban"])
def test_invite_3_target_joined_or_banned(v, target_membership):
    room = new_room(v)
    room.set_membership(CAROL, target_membership, sender=ALICE)
    rejects(rule(v, "member", "invite", 3), room.check, room.member(ALICE, "invite", CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_invite_5_below_invite_level(v):
    room = new_room(v)
    room.join(BOB)
    pl = copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])
    pl["invite"] = 10
    room.set_power_levels(pl)
    rejects(rule(v, "member", "invite", 5), room.check, room.member(BOB, "invite", CAROL))
    room.check(room.member(ALICE, "invite", CAROL))


# --- third-party invites (real ed25519 keys) --------------------------------------------------------

IS_KEY = SigningKey(b"\x07" * 32)
OTHER_KEY = SigningKey(b"\x08" * 32)


def _signed(mxid: str, token: str, key: SigningKey = IS_KEY, server: str = "id.example", key_id: str = "ed25519:0") -> dict:
    signed = {"mxid": mxid, "token": token, "sender": ALICE}
    signature = key.sign(canonical_json(signed)).signature
    signed["signatures"] = {server: {key_id: encode_base64(signature)}}
    return signed


def tpi_room(v: str, **invite_content) -> Room:
    room = new_room(v)
    content = {"display_name": "b...", "key_validity_url": "https://id.example/isvalid"}
    content.update(invite_content)
    room.send("m.room.third_party_invite", ALICE, content, "tok")
    return room


def tpi_member(room: Room, signed: object, sender: str = ALICE, target: str = BOB) -> dict:
    return room.make(
        "m.room.member", sender, {"membership": "invite", "third_party_invite": {"display_name": "b", "signed": signed}}, target
    )


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("where", ["public_key", "public_keys", "urlsafe"])
def test_tpi_7_valid_signature_allows(v, where):
    pub = IS_KEY.verify_key.encode()
    if where == "public_key":
        room = tpi_room(v, public_key=encode_base64(pub))
    elif where == "public_keys":
        room = tpi_room(v, public_key=encode_base64(OTHER_KEY.verify_key.encode()),
                        public_keys=[{"public_key": "junk!"}, {"public_key": encode_base64(pub)}])
    else:
        room = tpi_room(v, public_keys=[{"public_key": encode_base64_urlsafe(pub)}])
    room.check(tpi_member(room, _signed(BOB, "tok")))
    # Any server name / ed25519 key ID may carry the signature.
    room.check(tpi_member(room, _signed(BOB, "tok", server="other.example", key_id="ed25519:abc")))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_skips_the_sender_joined_check(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    room.set_membership(ALICE, "leave")
    room.check(tpi_member(room, _signed(BOB, "tok")))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_1_target_banned(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    room.set_membership(BOB, "ban", sender=ALICE)
    rejects(rule(v, "member", "invite", 1, 1), room.check, tpi_member(room, _signed(BOB, "tok")))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_2_no_signed(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    event = room.make("m.room.member", ALICE, {"membership": "invite", "third_party_invite": {"display_name": "b"}}, BOB)
    rejects(rule(v, "member", "invite", 1, 2), room.check, event)
    event = room.make("m.room.member", ALICE, {"membership": "invite", "third_party_invite": "junk"}, BOB)
    rejects(rule(v, "member", "invite", 1, 2), room.check, event)


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("signed", [{"mxid": BOB}, {"token": "tok"}, "junk", None])
def test_tpi_3_signed_needs_mxid_and_token(v, signed):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    rejects(rule(v, "member", "invite", 1, 3), room.check, tpi_member(room, signed))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_4_mxid_must_match_state_key(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    rejects(rule(v, "member", "invite", 1, 4), room.check, tpi_member(room, _signed(CAROL, "tok")))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("token", ["nope", 5])
def test_tpi_5_no_matching_invite_event(v, token):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    rejects(rule(v, "member", "invite", 1, 5), room.check, tpi_member(room, _signed(BOB, token)))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_6_sender_must_match_invite_event_sender(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    room.join(CAROL)
    rejects(rule(v, "member", "invite", 1, 6), room.check, tpi_member(room, _signed(BOB, "tok"), sender=CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_tpi_8_bad_signatures(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    # signed by a key the invite does not list
    rejects(rule(v, "member", "invite", 1, 8), room.check, tpi_member(room, _signed(BOB, "tok", key=OTHER_KEY)))
    # tampered after signing
    signed = _signed(BOB, "tok")
    signed["extra"] = 1
    rejects(rule(v, "member", "invite", 1, 8), room.check, tpi_member(room, signed))
    # a non-ed25519 algorithm is not considered
    rejects(rule(v, "member", "invite", 1, 8), room.check, tpi_member(room, _signed(BOB, "tok", key_id="curve:0")))
    # malformed signature containers
    for sigs in (None, "x", {"id.example": "x"}, {"id.example": {"ed25519:0": "!!!"}}, {"id.example": {"ed25519:0": 5}}):
        signed = _signed(BOB, "tok")
        signed["signatures"] = sigs
        rejects(rule(v, "member", "invite", 1, 8), room.check, tpi_member(room, signed))


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("keys", [{}, {"public_key": 5}, {"public_key": "AAAA"}, {"public_keys": "x"}, {"public_keys": [5]}])
def test_tpi_8_unusable_public_keys(v, keys):
    room = tpi_room(v, **keys)
    rejects(rule(v, "member", "invite", 1, 8), room.check, tpi_member(room, _signed(BOB, "tok")))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_unsigned_is_not_covered_by_tpi_signature(v):
    room = tpi_room(v, public_key=encode_base64(IS_KEY.verify_key.encode()))
    signed = _signed(BOB, "tok")
    signed["unsigned"] = {"anything": True}
    room.check(tpi_member(room, signed))


# --- leave ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("current", ["join", "invite", "knock", "leave", "ban", None])
def test_leave_1_own_leave(v, current):
    room = new_room(v)
    if current is not None:
        room.set_membership(BOB, current, sender=ALICE if current in ("invite", "ban") else BOB)
    allowed = {"join", "invite"} | ({"knock"} if v in KNOCK_VERSIONS else set())
    event = room.member(BOB, "leave")
    if current in allowed:
        room.check(event)
    else:
        rejects(rule(v, "member", "leave", 1), room.check, event)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_leave_2_kicker_not_joined(v):
    room = new_room(v)
    room.join(BOB)
    room.set_membership(ALICE, "leave")
    rejects(rule(v, "member", "leave", 2), room.check, room.member(ALICE, "leave", BOB))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_leave_3_unban_needs_ban_level(v):
    room = new_room(v, users={CAROL: 50})
    room.join(CAROL)
    pl = copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])
    pl["ban"] = 60
    room.set_power_levels(pl)
    room.set_membership(BOB, "ban", sender=ALICE)
    rejects(rule(v, "member", "leave", 3), room.check, room.member(CAROL, "leave", BOB))
    room.check(room.member(ALICE, "leave", BOB))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_leave_4_kick(v):
    room = new_room(v, users={CAROL: 50})
    room.join(CAROL)
    room.join(BOB)
    room.check(room.member(CAROL, "leave", BOB))
    room.check(room.member(ALICE, "leave", CAROL))


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_leave_5_kick_needs_kick_level_and_to_outrank(v):
    room = new_room(v, users={CAROL: 50, DAVE: 50})
    for user in (BOB, CAROL, DAVE):
        room.join(user)
    rejects(rule(v, "member", "leave", 5), room.check, room.member(BOB, "leave", CAROL))  # below kick level
    rejects(rule(v, "member", "leave", 5), room.check, room.member(CAROL, "leave", DAVE))  # equal levels
    rejects(rule(v, "member", "leave", 5), room.check, room.member(CAROL, "leave", ALICE))  # outranked


# --- ban -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_ban(v):
    room = new_room(v, users={CAROL: 50})
    room.join(CAROL)
    room.check(room.member(CAROL, "ban", BOB))  # not even in the room
    room.check(room.member(ALICE, "ban", CAROL))
    rejects(rule(v, "member", "ban", 3), room.check, room.member(CAROL, "ban", ALICE))
    room.join(BOB)
    rejects(rule(v, "member", "ban", 3), room.check, room.member(BOB, "ban", CAROL))
    room.set_membership(CAROL, "leave")
    rejects(rule(v, "member", "ban", 1), room.check, room.member(CAROL, "ban", BOB))


# --- knock ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", NO_KNOCK_VERSIONS)
def test_knock_rejected_before_v7(v):
    room = new_room(v, join_rule="knock")
    rejects(rule(v, "member", "unknown"), room.check, room.member(BOB, "knock"))


@pytest.mark.parametrize("v", KNOCK_VERSIONS)
def test_knock_allowed_from_v7(v):
    room = new_room(v, join_rule="knock")
    room.check(room.member(BOB, "knock"))
    room.set_membership(BOB, "leave")
    room.check(room.member(BOB, "knock"))


@pytest.mark.parametrize("v", KNOCK_VERSIONS)
@pytest.mark.parametrize("join_rule", ["public", "invite", "restricted"])
def test_knock_1_join_rule_must_be_knock(v, join_rule):
    room = new_room(v, join_rule=join_rule)
    rejects(rule(v, "member", "knock", 1), room.check, room.member(BOB, "knock"))


@pytest.mark.parametrize("v", KNOCK_VERSIONS)
def test_knock_restricted_allows_knocks_only_from_v10(v):
    room = new_room(v, join_rule="knock_restricted")
    if v in KNOCK_RESTRICTED_VERSIONS:
        room.check(room.member(BOB, "knock"))
    else:
        rejects(rule(v, "member", "knock", 1), room.check, room.member(BOB, "knock"))


@pytest.mark.parametrize("v", KNOCK_VERSIONS)
def test_knock_2_sender_must_be_state_key(v):
    room = new_room(v, join_rule="knock")
    rejects(rule(v, "member", "knock", 2), room.check, room.member(ALICE, "knock", BOB))


@pytest.mark.parametrize("v", KNOCK_VERSIONS)
@pytest.mark.parametrize("current", ["ban", "invite", "join"])
def test_knock_4_banned_invited_or_joined(v, current):
    room = new_room(v, join_rule="knock")
    room.set_membership(BOB, current, sender=ALICE if current != "join" else BOB)
    rejects(rule(v, "member", "knock", 4), room.check, room.member(BOB, "knock"))
