"""Content hashes, reference hashes, event IDs and v12 room IDs (s2s "Calculating the
content hash for an event", "Calculating the reference hash for an event"; rooms/v3,
v4 "Event IDs"; rooms/v12 "Event format")."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

import canonicaljson
import pytest

from roomactors.protocol import (
    InvalidEvent,
    UnsupportedRoomVersion,
    compute_event_id,
    compute_room_id,
    content_hash,
    get_rules,
    reference_hash,
)
from roomactors.protocol.hashing import check_content_hash
from roomactors.protocol.ids import is_valid_event_id, is_valid_room_id

_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
_EVENT_SIGNING = json.loads((_VECTORS / "event_signing.json").read_text(encoding="utf-8"))


def _b64(data: bytes, *, urlsafe: bool = False) -> str:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return enc(data).decode().rstrip("=")


@pytest.mark.parametrize("case", _EVENT_SIGNING["cases"], ids=[c["name"] for c in _EVENT_SIGNING["cases"]])
def test_content_hash_vectors(case: dict) -> None:
    assert content_hash(case["input"]) == case["signed"]["hashes"]["sha256"]
    # The signed output carries that hash and signatures; neither changes the hash.
    assert content_hash(case["signed"]) == case["signed"]["hashes"]["sha256"]
    assert check_content_hash(case["signed"])


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    base = {"type": "X", "content": {"a": 1}}
    noisy = {**base, "unsigned": {"age": 5}, "signatures": {"s": {}}, "hashes": {"sha256": "x", "other": "y"}}
    assert content_hash(base) == content_hash(noisy)


def test_content_hash_covers_everything_else() -> None:
    base = {"type": "X", "content": {"body": "a"}, "origin": "x"}
    assert content_hash(base) != content_hash({**base, "content": {"body": "b"}})
    assert content_hash(base) != content_hash({**base, "origin": "y"})
    assert content_hash(base) != content_hash({**base, "new_key": None})


def test_content_hash_is_independent_sha256() -> None:
    event = {"type": "m.room.message", "content": {"body": "日本語"}, "hashes": {"sha256": "zzz"}}
    expected = _b64(hashlib.sha256(canonicaljson.encode_canonical_json({k: v for k, v in event.items() if k != "hashes"})).digest())
    assert content_hash(event) == expected


def test_check_content_hash_false_cases() -> None:
    event = {"type": "X", "content": {}}
    assert not check_content_hash(event)  # no hashes
    assert not check_content_hash({**event, "hashes": {"sha256": 5}})
    assert not check_content_hash({**event, "hashes": {"sha256": "!!!not base64"}})
    assert not check_content_hash({**event, "hashes": {"sha256": content_hash({**event, "content": {"x": 1}})}})
    assert check_content_hash({**event, "hashes": {"sha256": content_hash(event)}})


def test_content_hash_rejects_non_object() -> None:
    with pytest.raises(InvalidEvent):
        content_hash(["not", "an", "event"])  # type: ignore[arg-type]


# --- reference hash and event IDs ----------------------------------------------------


def _message(ts: int) -> dict:
    return {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "origin_server_ts": ts,
        "depth": 7,
        "prev_events": [],
        "auth_events": [],
        "content": {"body": "redacted away before hashing"},
        "hashes": {"sha256": "abc"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "unsigned": {"age": 1},
    }


def test_reference_hash_matches_independent_computation() -> None:
    event = _message(1)
    # The redacted form, written out by hand (v4 redaction: content of a message emptied).
    essential = {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "origin_server_ts": 1,
        "depth": 7,
        "prev_events": [],
        "auth_events": [],
        "content": {},
        "hashes": {"sha256": "abc"},
    }
    digest = hashlib.sha256(canonicaljson.encode_canonical_json(essential)).digest()
    assert reference_hash(event, get_rules("4")) == digest
    assert compute_event_id(event, "4") == "$" + _b64(digest, urlsafe=True)
    assert compute_event_id(event, "3") == "$" + _b64(digest)


def test_reference_hash_ignores_signatures_unsigned_and_redactable_content() -> None:
    rules = get_rules("10")
    event = _message(1)
    other = copy.deepcopy(event)
    other["signatures"] = {"elsewhere.org": {"ed25519:9": "different"}}
    other["unsigned"] = {"age": 999}
    other["content"] = {"body": "something else entirely"}
    assert reference_hash(event, rules) == reference_hash(other, rules)
    assert reference_hash(event, rules) != reference_hash({**event, "depth": 8}, rules)
    assert reference_hash(event, rules) != reference_hash({**event, "hashes": {"sha256": "abd"}}, rules)


def _event_with_plus_or_slash() -> tuple[dict, str]:
    """A v3 event whose standard-base64 event ID contains '+' or '/' (found by
    varying origin_server_ts; deterministic)."""
    for ts in range(1000):
        event = _message(ts)
        event_id = compute_event_id(event, "3")
        if "+" in event_id or "/" in event_id:
            return event, event_id
    raise AssertionError("no candidate found")  # pragma: no cover


def test_v3_standard_base64_vs_v4_url_safe() -> None:
    event, v3_id = _event_with_plus_or_slash()
    v4_id = compute_event_id(event, "4")
    assert v3_id != v4_id
    assert v4_id == v3_id.replace("+", "-").replace("/", "_")
    assert "+" not in v4_id and "/" not in v4_id
    assert len(v3_id) == len(v4_id) == 44  # "$" + 43 unpadded base64 characters
    assert is_valid_event_id(v3_id, get_rules("3"))
    assert not is_valid_event_id(v3_id, get_rules("4"))
    assert is_valid_event_id(v4_id, get_rules("4"))
    assert not is_valid_event_id(v4_id, get_rules("3"))


@pytest.mark.parametrize("version", ["4", "5", "6", "7", "8", "9", "10", "11", "12"])
def test_url_safe_event_ids_from_v4(version: str) -> None:
    event, v3_id = _event_with_plus_or_slash()
    # v11 redaction drops nothing relevant here, so every v4+ ID equals the v4 one.
    assert compute_event_id(event, version) == v3_id.replace("+", "-").replace("/", "_")


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_event_id_is_the_pdu_field(version: str) -> None:
    event = {**_message(1), "event_id": "$abc:example.org"}
    assert compute_event_id(event, version) == "$abc:example.org"
    with pytest.raises(InvalidEvent, match="event_id"):
        compute_event_id(_message(1), version)


def test_event_id_depends_on_room_version_redaction_rules() -> None:
    # v11 no longer keeps top-level "origin", so it drops out of the reference hash.
    event = {**_message(1), "origin": "example.org"}
    assert compute_event_id(event, "10") != compute_event_id(_message(1), "10")
    assert compute_event_id(event, "11") == compute_event_id(_message(1), "11")


def test_compute_event_id_unknown_version() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        compute_event_id(_message(1), "13")


# --- v12 room IDs ----------------------------------------------------------------------


def _create_v12() -> dict:
    return {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:example.org",
        "origin_server_ts": 1,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "content": {"room_version": "12"},
        "hashes": {"sha256": "abc"},
        "signatures": {},
    }


def test_compute_room_id_v12() -> None:
    create = _create_v12()
    room_id = compute_room_id(create, "12")
    assert room_id == "!" + compute_event_id(create, "12")[1:]
    digest = reference_hash(create, get_rules("12"))
    assert room_id == "!" + _b64(digest, urlsafe=True)
    assert is_valid_room_id(room_id, get_rules("12"))
    assert not is_valid_room_id(room_id, get_rules("11"))


def test_compute_room_id_v12_covers_whole_create_content() -> None:
    # v11+ redaction keeps all of the create event's content, so it is in the hash.
    create = _create_v12()
    other = {**create, "content": {"room_version": "12", "additional_creators": ["@bob:example.org"]}}
    assert compute_room_id(create, "12") != compute_room_id(other, "12")


@pytest.mark.parametrize("version", ["1", "3", "10", "11"])
def test_compute_room_id_refused_before_v12(version: str) -> None:
    with pytest.raises(InvalidEvent, match="server-assigned"):
        compute_room_id(_create_v12(), version)
