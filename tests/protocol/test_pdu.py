"""PDU parsing and format validation (s2s "Checks performed on receipt of a PDU" step 1;
pdu_v1/v3/v4/v6/v11/v12 schemas; c2s "Size limits")."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, Callable

import pytest

from roomactors.protocol import (
    InvalidEvent,
    Pdu,
    UnsupportedRoomVersion,
    compute_event_id,
    compute_room_id,
    parse_pdu,
)
from roomactors.protocol.b64 import encode_base64_urlsafe
from roomactors.protocol.canonical import canonical_json
from roomactors.protocol.pdu import MAX_PDU_BYTES, parse_pdu_with_rules
from roomactors.protocol.room_versions import get_rules

HASH_URLSAFE = encode_base64_urlsafe(hashlib.sha256(b"x").digest())
HASH_STD_PLUS_SLASH = "a+b/" + "A" * 39


def _ev(label: str) -> str:
    return "$" + encode_base64_urlsafe(hashlib.sha256(label.encode()).digest())


# --- valid PDUs ---------------------------------------------------------------------------


def test_v1_message(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("1", event_id="$abc123:example.org", prev=["p1", "p2"], auth=["a1"])
    before = copy.deepcopy(event)
    pdu = parse_pdu(event, "1")
    assert event == before
    assert pdu.event_id == "$abc123:example.org"
    assert pdu.room_id == "!room:example.org"
    assert pdu.type == "m.room.message"
    assert pdu.state_key is None and not pdu.is_state
    assert pdu.sender == "@alice:example.org"
    assert pdu.depth == 5
    assert pdu.origin_server_ts == 1_700_000_000_000
    # Pairs normalised to plain IDs, order kept.
    assert pdu.prev_events == ("$p1:example.org", "$p2:example.org")
    assert pdu.auth_events == ("$a1:example.org",)
    assert pdu.redacts is None
    assert pdu.content is event["content"]
    assert pdu.json is event
    assert pdu.room_version == "1" and pdu.rules is get_rules("1")


def test_v1_redaction_top_level_redacts(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("1", type="m.room.redaction", content={}, redacts="$target:example.org")
    assert parse_pdu(event, "1").redacts == "$target:example.org"


def test_v2_state_event(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("2", type="m.room.topic", state_key="", content={"topic": "t"})
    pdu = parse_pdu(event, "2")
    assert pdu.state_key == "" and pdu.is_state


def test_v3_event_id_is_derived(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("3", prev=["p"], auth=["a"])
    pdu = parse_pdu(event, "3")
    assert pdu.event_id == compute_event_id(event, "3")
    assert pdu.prev_events == tuple(event["prev_events"])
    assert all(isinstance(e, str) for e in pdu.auth_events)


def test_v3_accepts_standard_base64_refs(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("3", sign=False)
    event["prev_events"] = ["$" + HASH_STD_PLUS_SLASH]
    assert parse_pdu(event, "3").prev_events == ("$" + HASH_STD_PLUS_SLASH,)


def test_v3_stray_event_id_is_ignored(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("3", sign=False)
    event["event_id"] = "$claimed:example.org"
    pdu = parse_pdu(event, "3")
    assert pdu.event_id == compute_event_id(event, "3") != "$claimed:example.org"


def test_v4_message(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("4")
    pdu = parse_pdu(event, "4")
    assert pdu.event_id == compute_event_id(event, "4")
    assert "+" not in pdu.event_id and "/" not in pdu.event_id


def test_v11_redaction_redacts_in_content(make_pdu: Callable[..., dict]) -> None:
    target = _ev("target")
    event = make_pdu("11", type="m.room.redaction", content={"redacts": target})
    assert parse_pdu(event, "11").redacts == target
    # Top-level redacts no longer means anything in v11.
    event = make_pdu("11", type="m.room.redaction", content={}, redacts=target)
    assert parse_pdu(event, "11").redacts is None


def test_redacts_only_for_redaction_events(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("10", redacts=_ev("t"))
    assert parse_pdu(event, "10").redacts is None
    event = make_pdu("11", content={"redacts": _ev("t")})
    assert parse_pdu(event, "11").redacts is None


def test_v12_create_without_room_id(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu(
        "12", type="m.room.create", state_key="", content={"room_version": "12"}, room_id=None, prev=[], auth=[], depth=1
    )
    assert "room_id" not in event
    pdu = parse_pdu(event, "12")
    assert pdu.room_id == compute_room_id(event, "12") == "!" + pdu.event_id[1:]
    assert pdu.prev_events == () and pdu.auth_events == ()


def test_v12_message_with_hash_room_id(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("12", room_id="!" + HASH_URLSAFE)
    pdu = parse_pdu(event, "12")
    assert pdu.room_id == "!" + HASH_URLSAFE


def test_v12_create_with_room_id_left_to_auth(make_pdu: Callable[..., dict]) -> None:
    # Structurally fine (the schema requires room_id on non-create events only);
    # auth rule 1.2 of v12 rejects it, which is a different outcome from "invalid".
    event = make_pdu("12", type="m.room.create", state_key="", content={}, room_id="!" + HASH_URLSAFE, prev=[], auth=[])
    assert parse_pdu(event, "12").room_id == "!" + HASH_URLSAFE


def test_historical_sender_accepted(make_pdu: Callable[..., dict]) -> None:
    for sender in ("@Alice Smith!:example.org", "@:example.org", "@日本:example.org"):
        assert parse_pdu(make_pdu("10", sender=sender), "10").sender == sender


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_every_version_round_trip(version: str, make_pdu: Callable[..., dict]) -> None:
    pdu = parse_pdu(make_pdu(version), version)
    assert parse_pdu_with_rules(pdu.json, get_rules(version)) == pdu


def test_pdu_is_frozen_hashable_and_compact_repr(make_pdu: Callable[..., dict]) -> None:
    pdu = parse_pdu(make_pdu("10"), "10")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pdu.depth = 6  # type: ignore[misc]
    assert not hasattr(pdu, "__dict__")  # slotted
    assert {pdu, parse_pdu(make_pdu("10"), "10")} == {pdu}
    assert "content" not in repr(pdu) and pdu.event_id in repr(pdu)


def test_depth_and_ts_boundaries(make_pdu: Callable[..., dict]) -> None:
    assert parse_pdu(make_pdu("10", depth=0), "10").depth == 0
    assert parse_pdu(make_pdu("10", depth=2**53 - 1), "10").depth == 2**53 - 1
    assert parse_pdu(make_pdu("5", depth=2**63 - 1, event_id="$e:x.org"), "5").depth == 2**63 - 1
    assert parse_pdu(make_pdu("5", origin_server_ts=2**62), "5").origin_server_ts == 2**62


def test_v5_tolerates_floats_and_big_ints_in_content(make_pdu: Callable[..., dict]) -> None:
    parse_pdu(make_pdu("5", content={"f": 1.5, "big": 2**60}), "5")


def test_size_limit_exact_boundary(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("10", sign=False, content={"body": ""})
    base = len(canonical_json(event))
    event["content"]["body"] = "x" * (MAX_PDU_BYTES - base)
    assert len(canonical_json(event)) == MAX_PDU_BYTES
    parse_pdu(event, "10")
    event["content"]["body"] += "x"
    with pytest.raises(InvalidEvent, match="65537 bytes as canonical JSON; the limit is 65536") as info:
        parse_pdu(event, "10")
    assert info.value.rule == "c2s: Size limits"


def test_size_limit_counts_signatures_and_unsigned(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("10", sign=False, content={})
    event["unsigned"] = {"pad": "x" * MAX_PDU_BYTES}
    with pytest.raises(InvalidEvent, match="canonical JSON"):
        parse_pdu(event, "10")


def test_255_byte_limits_count_utf8_bytes(make_pdu: Callable[..., dict]) -> None:
    # 128 two-byte characters: 128 characters but 256 bytes.
    with pytest.raises(InvalidEvent, match="type is 256 bytes; the limit is 255"):
        parse_pdu(make_pdu("10", sign=False, type="é" * 128), "10")
    parse_pdu(make_pdu("10", sign=False, type="é" * 127 + "a"), "10")
    with pytest.raises(InvalidEvent, match="state_key is 256 bytes"):
        parse_pdu(make_pdu("10", sign=False, state_key="é" * 128), "10")
    parse_pdu(make_pdu("10", sign=False, state_key="x" * 255), "10")


# --- invalid PDUs -------------------------------------------------------------------------

_DROP: Any = object()


def _mutate(event: dict, path: str, value: Any) -> dict:
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return out


# (case id, room version, field path, new value, expected message regex, rule substring)
INVALID: list[tuple[str, str, str, Any, str, str]] = [
    # required keys
    ("v1 needs event_id", "1", "event_id", _DROP, "missing required key: event_id", "step 1"),
    ("needs type", "10", "type", _DROP, "missing required key: type", "step 1"),
    ("needs sender", "10", "sender", _DROP, "missing required key: sender", "step 1"),
    ("needs content", "10", "content", _DROP, "missing required key: content", "step 1"),
    ("needs depth", "10", "depth", _DROP, "missing required key: depth", "step 1"),
    ("needs origin_server_ts", "10", "origin_server_ts", _DROP, "missing required key: origin_server_ts", "step 1"),
    ("needs hashes", "10", "hashes", _DROP, "missing required key: hashes", "step 1"),
    ("needs signatures", "10", "signatures", _DROP, "missing required key: signatures", "step 1"),
    ("needs prev_events", "3", "prev_events", _DROP, "missing required key: prev_events", "step 1"),
    ("needs auth_events", "3", "auth_events", _DROP, "missing required key: auth_events", "step 1"),
    ("v11 needs room_id", "11", "room_id", _DROP, "missing required key: room_id", "step 1"),
    ("v12 message needs room_id", "12", "room_id", _DROP, "missing required key: room_id", "step 1"),
    # type / state_key
    ("type not a string", "10", "type", 5, "type must be a string, not an integer", "step 1"),
    ("state_key null", "10", "state_key", None, "state_key must be a string, not null", "step 1"),
    ("state_key number", "10", "state_key", 0, "state_key must be a string", "step 1"),
    # sender
    ("sender not a string", "10", "sender", ["@a:b"], "sender must be a string, not an array", "step 1"),
    ("sender without sigil", "10", "sender", "alice:example.org", "not a valid user ID", "User Identifiers"),
    ("sender without domain", "10", "sender", "@alice", "not a valid user ID", "User Identifiers"),
    ("sender bad server", "10", "sender", "@alice:exa_mple.org", "not a valid user ID", "User Identifiers"),
    ("sender with NUL", "10", "sender", "@al\x00ice:example.org", "not a valid user ID", "User Identifiers"),
    ("sender 256 bytes", "10", "sender", "@" + "a" * 243 + ":example.org", "sender is 256 bytes", "Size limits"),
    # room_id
    ("room_id not a string", "10", "room_id", 1, "room_id must be a string", "step 1"),
    ("v11 hash room_id", "11", "room_id", "!" + HASH_URLSAFE, "not a valid room ID for room version 11", "Room IDs"),
    ("v12 server room_id", "12", "room_id", "!room:example.org", "not a valid room ID for room version 12", "Room IDs"),
    ("room_id 256 bytes", "10", "room_id", "!" + "a" * 243 + ":example.org", "room_id is 256 bytes", "Size limits"),
    # origin_server_ts
    ("ts string", "10", "origin_server_ts", "1700000000000", "origin_server_ts must be an integer, not a string", "step 1"),
    ("ts float", "5", "origin_server_ts", 1.5, "origin_server_ts must be an integer, not a float", "step 1"),
    ("ts bool", "10", "origin_server_ts", True, "origin_server_ts must be an integer, not a boolean", "step 1"),
    ("ts beyond int64", "5", "origin_server_ts", 2**63, "does not fit in an int64", "step 1"),
    ("v6 ts beyond canonical", "6", "origin_server_ts", 2**53, "outside the canonical JSON range", "v6"),
    # depth
    ("depth negative", "10", "depth", -1, "depth -1 is negative", "step 1"),
    ("depth string", "10", "depth", "5", "depth must be an integer, not a string", "step 1"),
    ("depth float", "5", "depth", 5.0, "depth must be an integer, not a float", "step 1"),
    ("depth null", "10", "depth", None, "depth must be an integer, not null", "step 1"),
    ("v5 depth beyond int64", "5", "depth", 2**63, "exceeds the room version 5 maximum", "step 1"),
    ("v6 depth beyond 2**53-1", "6", "depth", 2**53, "exceeds the room version 6 maximum 9007199254740991", "step 1"),
    # content
    ("content array", "10", "content", [], "content must be a JSON object, not an array", "step 1"),
    ("content string", "10", "content", "hi", "content must be a JSON object", "step 1"),
    # hashes / signatures / unsigned
    ("hashes string", "10", "hashes", "abc", "hashes must be a JSON object", "step 1"),
    ("hashes without sha256", "10", "hashes", {"sha512": "x"}, "hashes has no sha256", "step 1"),
    ("sha256 not a string", "10", "hashes.sha256", 5, "hashes.sha256 must be a string", "step 1"),
    ("signatures array", "10", "signatures", [], "signatures must be a JSON object", "step 1"),
    ("signatures entry not object", "10", "signatures", {"example.org": "sig"}, r"signatures\['example.org'\] must be a JSON object", "step 1"),
    ("signature not string", "10", "signatures", {"example.org": {"ed25519:1": 5}}, r"signatures\['example.org'\]\['ed25519:1'\] must be a string", "step 1"),
    ("unsigned array", "10", "unsigned", [], "unsigned must be a JSON object", "step 1"),
    # prev_events / auth_events
    ("prev_events object", "10", "prev_events", {}, "prev_events must be an array, not an object", "prev_events"),
    ("auth_events string", "10", "auth_events", _ev("a"), "auth_events must be an array", "auth_events"),
    ("21 prev_events", "10", "prev_events", [_ev(str(i)) for i in range(21)], "prev_events has 21 entries; the limit is 20", "prev_events"),
    ("11 auth_events", "10", "auth_events", [_ev(str(i)) for i in range(11)], "auth_events has 11 entries; the limit is 10", "auth_events"),
    ("v10 ref not a string", "10", "prev_events", [5], r"prev_events\[0\] must be an event ID string", "prev_events"),
    ("v10 ref with +/", "10", "prev_events", ["$" + HASH_STD_PLUS_SLASH], "not a valid event ID for room version 10", "Event IDs"),
    ("v10 ref server-format", "10", "auth_events", ["$abc:example.org"], r"auth_events\[0\] '\$abc:example.org' is not a valid event ID", "Event IDs"),
    ("v3 ref url-safe", "3", "prev_events", ["$-" + "A" * 42], "not a valid event ID for room version 3", "Event IDs"),
    ("v3 pair ref", "3", "prev_events", [["$" + "A" * 43, {}]], "must be an event ID string, not an array", "prev_events"),
    ("v1 bare ref", "1", "prev_events", ["$p:example.org"], r"prev_events\[0\] must be an \[event_id, hashes\] pair", "prev_events"),
    ("v1 short pair", "1", "prev_events", [["$p:example.org"]], "must be an \\[event_id, hashes\\] pair", "prev_events"),
    ("v1 pair hashes not object", "1", "auth_events", [["$p:example.org", "h"]], r"auth_events\[0\]\[1\] must be an object of hashes", "auth_events"),
    ("v1 pair bad id", "1", "auth_events", [["$" + "A" * 43, {}]], r"auth_events\[0\]\[0\] .* is not a valid event ID for room version 1", "Event IDs"),
    # event_id (v1/v2)
    ("v1 event_id not a string", "1", "event_id", 7, "event_id must be a string", "step 1"),
    ("v1 event_id hash format", "2", "event_id", "$" + "A" * 43, "event_id .* is not a valid event ID for room version 2", "Event IDs"),
    ("v1 event_id 256 bytes", "1", "event_id", "$" + "a" * 243 + ":example.org", "event_id is 256 bytes", "Size limits"),
    # redacts
    ("v10 redacts not a string", "10", "redacts", 5, "redacts must be an event ID string, not an integer", "redacts"),
    ("v10 redacts bad grammar", "10", "redacts", "not an id", "redacts 'not an id' is not a valid event ID", "Event IDs"),
    # numbers (v6+ strict canonical JSON; NaN never)
    ("v6 float in content", "6", "content", {"f": 0.5}, "float 0.5 is not allowed", "v6"),
    ("v12 float in unsigned", "12", "unsigned", {"age": 1.0}, "float 1.0 is not allowed", "v6"),
    ("v10 big int in content", "10", "content", {"n": 2**53}, "outside the canonical JSON range", "v6"),
    ("v5 NaN", "5", "content", {"n": float("nan")}, "not", "Canonical JSON"),
    ("v10 non-string key", "10", "content", {1: "a"}, "key", "Canonical JSON"),
]


@pytest.mark.parametrize(("version", "path", "value", "message", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(
    version: str, path: str, value: Any, message: str, rule: str, make_pdu: Callable[..., dict]
) -> None:
    event = make_pdu(version, sign=False, state_key="" if path.startswith("state_key") else None)
    bad = _mutate(event, path, value)
    with pytest.raises(InvalidEvent, match=message) as info:
        parse_pdu(bad, version)
    assert info.value.rule is not None and rule in info.value.rule, info.value.rule
    assert info.value.errcode == "M_BAD_JSON"


def test_v11_redaction_content_redacts_invalid(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("11", sign=False, type="m.room.redaction", content={"redacts": 5})
    with pytest.raises(InvalidEvent, match="content.redacts must be an event ID string, not an integer"):
        parse_pdu(event, "11")
    event = make_pdu("11", sign=False, type="m.room.redaction", content={"redacts": "$bad:example.org"})
    with pytest.raises(InvalidEvent, match="content.redacts .* is not a valid event ID for room version 11"):
        parse_pdu(event, "11")


def test_missing_keys_listed_together(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("1", sign=False)
    for key in ("depth", "hashes", "event_id"):
        del event[key]
    with pytest.raises(InvalidEvent, match="missing required keys: depth, hashes, event_id"):
        parse_pdu(event, "1")


@pytest.mark.parametrize("not_an_object", [None, [], "event", 5])
def test_not_an_object(not_an_object: object) -> None:
    with pytest.raises(InvalidEvent, match="a PDU must be a JSON object"):
        parse_pdu(not_an_object, "10")  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["0", "13", "", None])
def test_unknown_room_version(version: object, make_pdu: Callable[..., dict]) -> None:
    with pytest.raises(UnsupportedRoomVersion):
        parse_pdu(make_pdu("10"), version)  # type: ignore[arg-type]


def test_invalid_v12_create_room_id_format(make_pdu: Callable[..., dict]) -> None:
    event = make_pdu("12", sign=False, type="m.room.create", state_key="", content={}, room_id="!r:example.org")
    with pytest.raises(InvalidEvent, match="not a valid room ID for room version 12"):
        parse_pdu(event, "12")


def test_pdu_type_exported() -> None:
    import roomactors.protocol as protocol

    assert protocol.Pdu is Pdu and protocol.parse_pdu is parse_pdu
    assert {"Pdu", "parse_pdu"} <= set(protocol.__all__)
