"""The room-version rules table: every version is a delta of the previous one, and
each difference the spec lists (rooms/v1 … rooms/v12) appears at the right version."""

from __future__ import annotations

from dataclasses import fields

import pytest

from roomactors.protocol import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, UnsupportedRoomVersion, get_rules
from roomactors.protocol.room_versions import EventIdFormat, RoomIdFormat, RoomVersionRules, StateResAlgorithm

VERSIONS = [str(v) for v in range(1, 13)]

#: field -> the versions at which its value changes from the previous version's.
#: Fields not listed here (including any added later) are not constrained by this test.
CHANGES_AT: dict[str, set[str]] = {
    "state_res": {"2", "12"},  # v1 -> v2 -> v2.1
    "event_id_format": {"3", "4"},  # server-assigned -> base64 hash -> URL-safe hash
    "event_refs_are_pairs": {"3"},
    "pdu_has_event_id": {"3"},
    "require_event_id_domain_signature": {"3"},
    "redaction_auth_rule": {"3"},
    "enforce_key_validity": {"5"},
    "strict_canonical_json": {"6"},
    "special_case_aliases_auth": {"6"},
    "limit_notifications_power_levels": {"6"},
    "redaction_content_keys": {"6", "8", "9", "11"},
    "knock_allowed": {"7"},
    "restricted_join_allowed": {"8"},
    "knock_restricted_join_allowed": {"10"},
    "integer_power_levels": {"10"},
    "redaction_keys": {"11"},
    "redaction_keeps_third_party_invite_signed": {"11"},
    "redacts_in_content": {"11"},
    "create_event_has_creator": {"11"},
    "room_id_format": {"12"},
    "create_event_has_room_id": {"12"},
    "create_room_id_domain_check": {"12"},
    "explicit_creators": {"12"},
    "create_event_in_auth_events": {"12"},
}


def test_known_versions_are_exactly_1_to_12() -> None:
    assert list(KNOWN_ROOM_VERSIONS) == VERSIONS
    for version, rules in KNOWN_ROOM_VERSIONS.items():
        assert rules.version == version
        assert rules.stable


def test_default_is_12() -> None:
    assert DEFAULT_ROOM_VERSION == "12"
    assert get_rules(DEFAULT_ROOM_VERSION) is KNOWN_ROOM_VERSIONS["12"]


@pytest.mark.parametrize("field_name", sorted(CHANGES_AT))
def test_each_difference_appears_at_the_listed_versions(field_name: str) -> None:
    changed = {
        VERSIONS[i]
        for i in range(1, len(VERSIONS))
        if getattr(get_rules(VERSIONS[i]), field_name) != getattr(get_rules(VERSIONS[i - 1]), field_name)
    }
    assert changed == CHANGES_AT[field_name]


def test_every_listed_field_exists() -> None:
    names = {f.name for f in fields(RoomVersionRules)}
    assert set(CHANGES_AT) <= names


def test_rules_are_immutable() -> None:
    rules = get_rules("10")
    with pytest.raises(AttributeError):
        rules.knock_allowed = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.redaction_content_keys["m.room.message"] = frozenset()  # type: ignore[index]


@pytest.mark.parametrize(
    ("version", "fmt"),
    [
        ("1", EventIdFormat.SERVER_ASSIGNED),
        ("2", EventIdFormat.SERVER_ASSIGNED),
        ("3", EventIdFormat.REFERENCE_HASH_BASE64),
        ("4", EventIdFormat.REFERENCE_HASH_URLSAFE),
        ("12", EventIdFormat.REFERENCE_HASH_URLSAFE),
    ],
)
def test_event_id_formats(version: str, fmt: EventIdFormat) -> None:
    assert get_rules(version).event_id_format is fmt


@pytest.mark.parametrize(
    ("version", "algorithm"),
    [("1", StateResAlgorithm.V1), ("2", StateResAlgorithm.V2), ("11", StateResAlgorithm.V2)]
    + [("12", StateResAlgorithm.V2_1)],
)
def test_state_res(version: str, algorithm: StateResAlgorithm) -> None:
    assert get_rules(version).state_res is algorithm


def test_spot_checks_per_version() -> None:
    r = {v: get_rules(v) for v in VERSIONS}
    # v1/v2: pairs, event_id in PDU, event_id-domain signature, redaction auth rule.
    assert r["1"].event_refs_are_pairs and r["1"].pdu_has_event_id and r["2"].require_event_id_domain_signature
    assert r["2"].redaction_auth_rule and not r["3"].redaction_auth_rule
    # v5: signing-key validity periods.
    assert not r["4"].enforce_key_validity and r["5"].enforce_key_validity
    # v6: strict canonical JSON; aliases rule and aliases redaction special case gone.
    assert not r["5"].strict_canonical_json and r["6"].strict_canonical_json
    assert "m.room.aliases" in r["5"].redaction_content_keys and "m.room.aliases" not in r["6"].redaction_content_keys
    assert r["5"].special_case_aliases_auth and not r["6"].special_case_aliases_auth
    # v7 knock, v8 restricted, v10 knock_restricted + integer power levels.
    assert not r["6"].knock_allowed and r["7"].knock_allowed
    assert not r["7"].restricted_join_allowed and r["8"].restricted_join_allowed
    assert not r["9"].knock_restricted_join_allowed and r["10"].knock_restricted_join_allowed
    assert not r["9"].integer_power_levels and r["10"].integer_power_levels
    # v8: join_rules keeps ``allow``; v9: member keeps the authorising user (v8's omission).
    assert r["7"].redaction_content_keys["m.room.join_rules"] == {"join_rule"}
    assert r["8"].redaction_content_keys["m.room.join_rules"] == {"join_rule", "allow"}
    assert r["8"].redaction_content_keys["m.room.member"] == {"membership"}
    assert r["9"].redaction_content_keys["m.room.member"] == {"membership", "join_authorised_via_users_server"}
    assert r["9"].redaction_content_keys["m.room.join_rules"] == {"join_rule", "allow"}
    # v11: creator gone, redaction algorithm updated, redacts moved into content.
    assert r["10"].create_event_has_creator and not r["11"].create_event_has_creator
    assert r["11"].redaction_content_keys["m.room.create"] is None
    assert "invite" in r["11"].redaction_content_keys["m.room.power_levels"]
    assert r["11"].redaction_content_keys["m.room.redaction"] == {"redacts"}
    assert {"origin", "membership", "prev_state"} <= r["10"].redaction_keys
    assert not {"origin", "membership", "prev_state"} & r["11"].redaction_keys
    assert r["11"].redacts_in_content and not r["10"].redacts_in_content
    # v12: hashed room IDs, creators, create event not in auth_events.
    assert r["11"].room_id_format is RoomIdFormat.SERVER_ASSIGNED
    assert r["12"].room_id_format is RoomIdFormat.CREATE_EVENT_HASH
    assert r["11"].create_event_has_room_id and not r["12"].create_event_has_room_id
    assert r["12"].explicit_creators and not r["11"].explicit_creators
    assert r["11"].create_event_in_auth_events and not r["12"].create_event_in_auth_events


@pytest.mark.parametrize("bad", ["0", "13", "", "1.0", "v1", "org.matrix.msc0000", None, 1])
def test_unknown_versions_raise(bad: object) -> None:
    with pytest.raises(UnsupportedRoomVersion, match="unsupported room version") as info:
        get_rules(bad)  # type: ignore[arg-type]
    assert info.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"
