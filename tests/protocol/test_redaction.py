"""The redaction algorithm, one table per algorithm change (rooms/fragments/v1-, v6-,
v9-, v11-redactions, and the v8 algorithm written out in rooms/v8 "Redactions")."""

from __future__ import annotations

import copy

import pytest

from roomactors.protocol import InvalidEvent, UnsupportedRoomVersion, redact

V1_TO_V5 = ["1", "2", "3", "4", "5"]
V6_TO_V7 = ["6", "7"]
V8 = ["8"]
V9_TO_V10 = ["9", "10"]
V11_UP = ["11", "12"]
ALL = V1_TO_V5 + V6_TO_V7 + V8 + V9_TO_V10 + V11_UP
GROUPS = ("v1", "v6", "v8", "v9", "v11")

#: Top-level keys, present on every event below, with whether each survives.
_TOP_KEPT_ALWAYS = {
    "event_id": "$e:x",
    "type": None,  # filled per case
    "room_id": "!r:x",
    "sender": "@s:x",
    "state_key": "",
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:1": "s"}},
    "depth": 3,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "origin_server_ts": 1,
}
_TOP_KEPT_BEFORE_V11 = {"origin": "x", "membership": "join", "prev_state": []}
_TOP_NEVER_KEPT = {"unsigned": {"age": 1}, "redacts": "$t", "age_ts": 5, "custom": True, "outlier": False}


def _event(event_type: str, content: dict) -> dict:
    event = {**copy.deepcopy(_TOP_KEPT_ALWAYS), **copy.deepcopy(_TOP_KEPT_BEFORE_V11), **copy.deepcopy(_TOP_NEVER_KEPT)}
    event["type"] = event_type
    event["content"] = copy.deepcopy(content)
    return event


@pytest.mark.parametrize("version", ALL)
def test_top_level_keys(version: str) -> None:
    out = redact(_event("m.room.message", {"body": "x"}), version)
    expected = {**_TOP_KEPT_ALWAYS, "type": "m.room.message", "content": {}}
    if version not in V11_UP:
        expected.update(_TOP_KEPT_BEFORE_V11)
    assert out == expected


# (event type, content, {version group: expected content})
_MEMBER = {
    "membership": "join",
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@admin:x",
    "third_party_invite": {"display_name": "a", "signed": {"mxid": "@s:x", "token": "t", "signatures": {}}},
}
_CREATE = {"creator": "@s:x", "room_version": "5", "m.federate": False, "predecessor": {"room_id": "!old:x"}}
_JOIN_RULES = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!o:x"}], "other": 1}
_PL = {
    "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "invite": 0, "kick": 50,
    "redact": 50, "state_default": 50, "users": {"@s:x": 100}, "users_default": 0,
    "notifications": {"room": 50}, "historical": 100,
}
_PL_KEPT_V1 = {k: v for k, v in _PL.items() if k not in ("invite", "notifications", "historical")}
_ALIASES = {"aliases": ["#a:x"], "other": 1}
_HISTORY = {"history_visibility": "shared", "other": 1}
_REDACTION = {"redacts": "$t", "reason": "spam"}
_MESSAGE = {"body": "hi", "msgtype": "m.text"}
_TOPIC = {"topic": "t"}

CASES: list[tuple[str, dict, dict[str, dict]]] = [
    (
        "m.room.member",
        _MEMBER,
        {
            "v1": {"membership": "join"},
            "v6": {"membership": "join"},
            "v8": {"membership": "join"},  # the v8 omission that v9 fixed
            "v9": {"membership": "join", "join_authorised_via_users_server": "@admin:x"},
            "v11": {
                "membership": "join",
                "join_authorised_via_users_server": "@admin:x",
                "third_party_invite": {"signed": {"mxid": "@s:x", "token": "t", "signatures": {}}},
            },
        },
    ),
    (
        "m.room.create",
        _CREATE,
        {**{g: {"creator": "@s:x"} for g in GROUPS}, "v11": _CREATE},
    ),
    (
        "m.room.join_rules",
        _JOIN_RULES,
        {
            "v1": {"join_rule": "restricted"},
            "v6": {"join_rule": "restricted"},
            "v8": {"join_rule": "restricted", "allow": _JOIN_RULES["allow"]},  # rooms/v8 "Redactions"
            "v9": {"join_rule": "restricted", "allow": _JOIN_RULES["allow"]},
            "v11": {"join_rule": "restricted", "allow": _JOIN_RULES["allow"]},
        },
    ),
    (
        "m.room.power_levels",
        _PL,
        {**{g: _PL_KEPT_V1 for g in GROUPS}, "v11": {**_PL_KEPT_V1, "invite": 0}},
    ),
    ("m.room.aliases", _ALIASES, {**{g: {} for g in GROUPS}, "v1": {"aliases": ["#a:x"]}}),
    (
        "m.room.history_visibility",
        _HISTORY,
        {g: {"history_visibility": "shared"} for g in GROUPS},
    ),
    ("m.room.redaction", _REDACTION, {**{g: {} for g in GROUPS}, "v11": {"redacts": "$t"}}),
    ("m.room.message", _MESSAGE, {g: {} for g in GROUPS}),
    ("m.room.topic", _TOPIC, {g: {} for g in GROUPS}),
]


def _group(version: str) -> str:
    if version in V1_TO_V5:
        return "v1"
    if version in V6_TO_V7:
        return "v6"
    if version in V8:
        return "v8"
    if version in V9_TO_V10:
        return "v9"
    return "v11"


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("event_type", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_content_keys(version: str, event_type: str, content: dict, expected: dict[str, dict]) -> None:
    assert redact(_event(event_type, content), version)["content"] == expected[_group(version)]


def test_v11_third_party_invite_keeps_only_signed() -> None:
    ev = _event("m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "x"}})
    assert redact(ev, "11")["content"] == {"membership": "invite"}
    ev = _event("m.room.member", {"membership": "invite", "third_party_invite": "not an object"})
    assert redact(ev, "11")["content"] == {"membership": "invite"}
    ev = _event("m.room.member", {"membership": "invite", "third_party_invite": {"signed": "opaque"}})
    assert redact(ev, "11")["content"] == {"membership": "invite", "third_party_invite": {"signed": "opaque"}}
    assert redact(ev, "10")["content"] == {"membership": "invite"}


def test_third_party_invite_signed_not_kept_for_other_types() -> None:
    ev = _event("m.room.message", {"third_party_invite": {"signed": {}}})
    assert redact(ev, "11")["content"] == {}


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("content", [None, "string", [1, 2], 5])
def test_non_object_content_becomes_empty(version: str, content: object) -> None:
    ev = _event("m.room.member", {})
    ev["content"] = content
    assert redact(ev, version)["content"] == {}


@pytest.mark.parametrize("version", ALL)
def test_missing_content_becomes_empty(version: str) -> None:
    ev = _event("m.room.member", {})
    del ev["content"]
    assert redact(ev, version)["content"] == {}


@pytest.mark.parametrize("version", ALL)
def test_non_string_type_strips_all_content(version: str) -> None:
    ev = _event("m.room.member", {"membership": "join"})
    ev["type"] = ["m.room.member"]
    assert redact(ev, version)["content"] == {}


@pytest.mark.parametrize("version", ALL)
def test_input_not_mutated_and_output_shares_nothing(version: str) -> None:
    event = _event("m.room.power_levels", _PL)
    event["content"]["users"] = {"@s:x": 100}
    event["unsigned"] = {"age": 1}
    before = copy.deepcopy(event)
    out = redact(event, version)
    assert event == before
    out["content"]["users"]["@evil:x"] = 100
    out["signatures"]["x"]["ed25519:2"] = "forged"
    out["prev_events"].append("$new")
    assert event == before


@pytest.mark.parametrize("version", ALL)
def test_idempotent_on_examples(version: str) -> None:
    for event_type, content, _ in CASES:
        once = redact(_event(event_type, content), version)
        assert redact(once, version) == once


def test_rejects_non_object() -> None:
    with pytest.raises(InvalidEvent):
        redact(["not", "an", "event"], "10")  # type: ignore[arg-type]


def test_unknown_version() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        redact({}, "0")
