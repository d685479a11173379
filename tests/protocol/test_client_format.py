"""Client event format (client-server "Room event format": ClientEvent /
ClientEventWithoutRoomID; "Redactions"; rooms/v11 "Moving the redacts property")."""

from __future__ import annotations

import copy

import pytest

from roomactors.protocol.client_format import PDU_ONLY_KEYS, client_event
from roomactors.protocol.room_versions import get_rules

NOW = 1_000_000
TS = 999_000
ROOM = "!room:example.org"

#: Every key the client format may have at the top level.
CLIENT_KEYS = {"content", "event_id", "origin_server_ts", "room_id", "sender", "state_key", "type", "unsigned", "redacts"}


def _pdu_v1(event_type: str, content: dict, *, state_key: str | None = None, **extra: object) -> dict:
    pdu = {
        "event_id": "$v1event:example.org",
        "room_id": ROOM,
        "sender": "@alice:example.org",
        "type": event_type,
        "content": content,
        "origin_server_ts": TS,
        "origin": "example.org",
        "depth": 7,
        "prev_events": [["$p:example.org", {"sha256": "x"}]],
        "auth_events": [["$a:example.org", {"sha256": "y"}]],
        "prev_state": [],
        "membership": "join",
        "hashes": {"sha256": "h"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "unsigned": {"age_ts": 5, "invite_room_state": [{"evil": True}]},
        "custom_top_level": "dropped",
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    pdu.update(extra)
    return pdu


def _pdu_v11(event_type: str, content: dict, *, state_key: str | None = None, **extra: object) -> dict:
    pdu = _pdu_v1(event_type, content, state_key=state_key, **extra)
    for key in ("event_id", "origin", "prev_state", "membership"):
        pdu.pop(key, None)
    pdu["prev_events"] = ["$p"]
    pdu["auth_events"] = ["$a"]
    return pdu


def _assert_no_leaks(event: dict) -> None:
    assert set(event) <= CLIENT_KEYS
    assert not (set(event) & PDU_ONLY_KEYS)
    assert "custom_top_level" not in event


@pytest.mark.parametrize("make,version", [(_pdu_v1, "1"), (_pdu_v11, "11")])
def test_message_event(make, version: str) -> None:
    pdu = make("m.room.message", {"body": "hi", "msgtype": "m.text"})
    snapshot = copy.deepcopy(pdu)
    out = client_event(pdu, "$e", now_ms=NOW, room_version_rules=get_rules(version))
    assert out == {
        "content": {"body": "hi", "msgtype": "m.text"},
        "event_id": "$e",
        "origin_server_ts": TS,
        "room_id": ROOM,
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "unsigned": {"age": NOW - TS},
    }
    assert pdu == snapshot
    assert out["content"] is not pdu["content"]
    _assert_no_leaks(out)


def test_without_room_id_and_state_key() -> None:
    pdu = _pdu_v11("m.room.topic", {"topic": "T"}, state_key="")
    out = client_event(pdu, "$e", now_ms=NOW, include_room_id=False)
    assert "room_id" not in out
    assert out["state_key"] == ""
    _assert_no_leaks(out)


def test_state_key_only_for_state_events() -> None:
    out = client_event(_pdu_v11("m.room.message", {}), "$e", now_ms=NOW)
    assert "state_key" not in out


def test_unsigned_fields() -> None:
    pdu = _pdu_v11("m.room.member", {"membership": "join", "displayname": "A"}, state_key="@alice:example.org")
    out = client_event(
        pdu,
        "$e",
        now_ms=NOW,
        transaction_id="txn1",
        prev_content={"membership": "invite"},
        membership="join",
        replaces_state="$old",
        extra_unsigned={"invite_room_state": []},
    )
    assert out["unsigned"] == {
        "age": NOW - TS,
        "transaction_id": "txn1",
        "prev_content": {"membership": "invite"},
        "membership": "join",
        "replaces_state": "$old",
        "invite_room_state": [],
    }
    _assert_no_leaks(out)


def test_prev_content_only_for_state_events() -> None:
    out = client_event(_pdu_v11("m.room.message", {}), "$e", now_ms=NOW, prev_content={"x": 1})
    assert "prev_content" not in out["unsigned"]


def test_pdu_unsigned_is_not_passed_through() -> None:
    out = client_event(_pdu_v11("m.room.message", {}), "$e", now_ms=NOW)
    assert out["unsigned"] == {"age": NOW - TS}


def test_age_can_be_negative_with_skew() -> None:
    out = client_event(_pdu_v11("m.room.message", {}), "$e", now_ms=TS - 10)
    assert out["unsigned"]["age"] == -10


def test_room_id_override_for_v12_create() -> None:
    pdu = _pdu_v11("m.room.create", {"room_version": "12"}, state_key="")
    del pdu["room_id"]
    with pytest.raises(ValueError):
        client_event(pdu, "$create", now_ms=NOW)
    out = client_event(pdu, "$create", now_ms=NOW, room_id="!hash")
    assert out["room_id"] == "!hash"
    assert "room_id" not in client_event(pdu, "$create", now_ms=NOW, include_room_id=False)


# --- m.room.redaction: redacts -------------------------------------------------------------


def test_redaction_event_v1_keeps_top_level_and_adds_content() -> None:
    pdu = _pdu_v1("m.room.redaction", {"reason": "spam"}, redacts="$target:example.org")
    out = client_event(pdu, "$r", now_ms=NOW, room_version_rules=get_rules("1"))
    assert out["redacts"] == "$target:example.org"
    # rooms/v11: "servers should add a redacts property to the content of
    # m.room.redaction events in *older* room versions"
    assert out["content"] == {"reason": "spam", "redacts": "$target:example.org"}
    assert "redacts" not in pdu["content"]
    _assert_no_leaks(out)


def test_redaction_event_v1_content_redacts_is_not_authoritative() -> None:
    pdu = _pdu_v1("m.room.redaction", {"redacts": "$liar"}, redacts="$real")
    out = client_event(pdu, "$r", now_ms=NOW, room_version_rules=get_rules("5"))
    assert out["redacts"] == out["content"]["redacts"] == "$real"


def test_redaction_event_v11_adds_top_level() -> None:
    pdu = _pdu_v11("m.room.redaction", {"redacts": "$target", "reason": "spam"})
    out = client_event(pdu, "$r", now_ms=NOW, room_version_rules=get_rules("11"))
    # "servers should add a redacts property to the top level ... when serving such
    # events over the Client-Server API" (backwards compatibility)
    assert out["redacts"] == "$target"
    assert out["content"] == {"redacts": "$target", "reason": "spam"}


def test_redaction_event_v11_top_level_is_not_authoritative() -> None:
    pdu = _pdu_v11("m.room.redaction", {"redacts": "$real"}, redacts="$liar")
    out = client_event(pdu, "$r", now_ms=NOW, room_version_rules=get_rules("11"))
    assert out["redacts"] == out["content"]["redacts"] == "$real"


def test_redaction_event_without_rules_uses_what_is_there() -> None:
    out = client_event(_pdu_v11("m.room.redaction", {"redacts": "$t"}), "$r", now_ms=NOW)
    assert out["redacts"] == "$t"
    out = client_event(_pdu_v1("m.room.redaction", {}, redacts="$t"), "$r", now_ms=NOW)
    assert out["redacts"] == "$t" and out["content"]["redacts"] == "$t"


def test_redacts_only_for_redaction_events() -> None:
    out = client_event(_pdu_v1("m.room.message", {"body": "x"}, redacts="$t"), "$e", now_ms=NOW)
    assert "redacts" not in out


# --- redacted events ---------------------------------------------------------------------------


REDACTION_CLIENT = {
    "type": "m.room.redaction",
    "sender": "@moderator:example.org",
    "content": {"reason": "spam", "redacts": "$e"},
    "redacts": "$e",
    "event_id": "$r",
    "origin_server_ts": TS + 1,
    "room_id": ROOM,
    "unsigned": {"age": 1257},
}


@pytest.mark.parametrize("make,version", [(_pdu_v1, "1"), (_pdu_v11, "11")])
def test_redacted_message(make, version: str) -> None:
    pdu = make("m.room.message", {"body": "offensive", "msgtype": "m.text"})
    snapshot = copy.deepcopy(pdu)
    out = client_event(pdu, "$e", now_ms=NOW, redacted_because=REDACTION_CLIENT, room_version_rules=get_rules(version))
    assert out["content"] == {}
    assert out["unsigned"]["redacted_because"] == REDACTION_CLIENT
    assert out["unsigned"]["redacted_because"] is not REDACTION_CLIENT
    assert out["unsigned"]["age"] == NOW - TS
    assert pdu == snapshot
    _assert_no_leaks(out)


def test_redacted_without_rules_is_an_error() -> None:
    with pytest.raises(ValueError):
        client_event(_pdu_v11("m.room.message", {"body": "x"}), "$e", now_ms=NOW, redacted_because=REDACTION_CLIENT)


@pytest.mark.parametrize(
    "version,expected_content",
    [
        ("1", {"membership": "join"}),
        ("9", {"membership": "join", "join_authorised_via_users_server": "@admin:example.org"}),
        ("11", {"membership": "join", "join_authorised_via_users_server": "@admin:example.org", "third_party_invite": {"signed": {"token": "t"}}}),
    ],
)
def test_redacted_member_keeps_protected_keys(version: str, expected_content: dict) -> None:
    content = {
        "membership": "join",
        "displayname": "Rude Name",
        "avatar_url": "mxc://x/y",
        "join_authorised_via_users_server": "@admin:example.org",
        "third_party_invite": {"display_name": "x", "signed": {"token": "t"}},
    }
    pdu = _pdu_v11("m.room.member", content, state_key="@alice:example.org")
    out = client_event(
        pdu,
        "$e",
        now_ms=NOW,
        redacted_because=REDACTION_CLIENT,
        prev_content={"membership": "invite"},
        room_version_rules=get_rules(version),
    )
    assert out["content"] == expected_content
    assert out["state_key"] == "@alice:example.org"
    assert out["unsigned"]["prev_content"] == {"membership": "invite"}


def test_redacted_redaction_event_v1_loses_redacts() -> None:
    pdu = _pdu_v1("m.room.redaction", {"reason": "x"}, redacts="$target")
    out = client_event(pdu, "$r", now_ms=NOW, redacted_because=REDACTION_CLIENT, room_version_rules=get_rules("1"))
    assert "redacts" not in out
    assert out["content"] == {}


def test_redacted_redaction_event_v11_keeps_redacts() -> None:
    pdu = _pdu_v11("m.room.redaction", {"redacts": "$target", "reason": "x"})
    out = client_event(pdu, "$r", now_ms=NOW, redacted_because=REDACTION_CLIENT, room_version_rules=get_rules("11"))
    assert out["content"] == {"redacts": "$target"}
    assert out["redacts"] == "$target"


def test_redacted_create_v11_keeps_content_v1_does_not() -> None:
    content = {"creator": "@alice:example.org", "room_version": "1", "m.federate": False}
    pdu = _pdu_v1("m.room.create", content, state_key="")
    out1 = client_event(pdu, "$c", now_ms=NOW, redacted_because=REDACTION_CLIENT, room_version_rules=get_rules("1"))
    assert out1["content"] == {"creator": "@alice:example.org"}
    out11 = client_event(pdu, "$c", now_ms=NOW, redacted_because=REDACTION_CLIENT, room_version_rules=get_rules("11"))
    assert out11["content"] == content


def test_redacted_because_shape_follows_include_room_id() -> None:
    pdu = _pdu_v11("m.room.message", {"body": "x"})
    rules = get_rules("11")
    without = client_event(pdu, "$e", now_ms=NOW, include_room_id=False, redacted_because=REDACTION_CLIENT, room_version_rules=rules)
    assert "room_id" not in without["unsigned"]["redacted_because"]
    bare = {k: v for k, v in REDACTION_CLIENT.items() if k != "room_id"}
    with_room = client_event(pdu, "$e", now_ms=NOW, redacted_because=bare, room_version_rules=rules)
    assert with_room["unsigned"]["redacted_because"]["room_id"] == ROOM


def test_redacted_because_pdu_keys_are_dropped() -> None:
    leaky = {**REDACTION_CLIENT, "auth_events": ["$a"], "hashes": {"sha256": "h"}, "signatures": {}, "depth": 3}
    out = client_event(_pdu_v11("m.room.message", {}), "$e", now_ms=NOW, redacted_because=leaky, room_version_rules=get_rules("11"))
    assert out["unsigned"]["redacted_because"] == REDACTION_CLIENT


def test_redaction_serialised_with_client_event_nests() -> None:
    rules = get_rules("11")
    redaction_pdu = _pdu_v11("m.room.redaction", {"redacts": "$e", "reason": "spam"}, sender="@moderator:example.org")
    because = client_event(redaction_pdu, "$r", now_ms=NOW, room_version_rules=rules)
    target = client_event(_pdu_v11("m.room.message", {"body": "x"}), "$e", now_ms=NOW, redacted_because=because, room_version_rules=rules)
    rb = target["unsigned"]["redacted_because"]
    assert rb["redacts"] == "$e" and rb["content"]["redacts"] == "$e" and rb["sender"] == "@moderator:example.org"
    _assert_no_leaks(rb)


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_no_pdu_field_leaks_any_version(version: str) -> None:
    rules = get_rules(version)
    for event_type, content, state_key in [
        ("m.room.message", {"body": "x"}, None),
        ("m.room.member", {"membership": "join"}, "@alice:example.org"),
        ("m.room.redaction", {"redacts": "$t"}, None),
    ]:
        pdu = _pdu_v1(event_type, content, state_key=state_key, redacts="$t")
        for because in (None, REDACTION_CLIENT):
            out = client_event(pdu, "$e", now_ms=NOW, redacted_because=because, room_version_rules=rules)
            _assert_no_leaks(out)
            assert set(out["unsigned"]) <= {"age", "redacted_because"}
