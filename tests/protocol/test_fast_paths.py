"""The fast paths for signing and parsing our own events equal the reference paths.

A local send signs and parses an event this server builds. The fast paths
(``signing._sign_plain_event``, ``redaction.redacted_view``,
``pdu.parse_own_pdu``, ``roomactors.room.events.build_pdu``) skip copies and
repeated encodings; each property here pins one of them to the algorithm as the
spec writes it, on arbitrary input — including input the fast path must hand to the
reference path (floats, big integers, tuples, lone surrogates, non-objects) and
client input the reference path rejects (too large, long ``type``/``state_key``,
bad ``sender``, v6+ floats, bad ``content.redacts``):

* ``sign_event`` == the reference algorithm, key order included, with the same
  errors; the result shares nothing mutable with the input;
* ``sign_event_and_hash``'s hash == ``reference_hash(signed)``, so the event ID
  derived from it == ``compute_event_id``;
* ``redacted_view`` == ``redact_with_rules``;
* ``build_pdu(...)`` == ``parse_pdu(build_event(...)[1])`` (the PDU, its JSON, or the
  ``InvalidEvent`` with its message and rule);
* ``build_create_event`` signs as the reference algorithm and derives the v12 room ID
  that ``compute_room_id`` gives.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signedjson.key import decode_signing_key_base64

from roomactors.clock import ManualClock
from roomactors.protocol import InvalidEvent, compute_event_id, compute_room_id, parse_pdu
from roomactors.protocol.b64 import encode_base64, encode_base64_urlsafe
from roomactors.protocol.canonical import is_plain_json
from roomactors.protocol.hashing import event_id_from_reference_hash, reference_hash
from roomactors.protocol.redaction import redact_with_rules, redacted_view
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS, EventIdFormat, RoomIdFormat, get_rules
from roomactors.protocol.signing import _sign_event_reference, sign_event, sign_event_and_hash
from roomactors.room import events as room_events

VERSIONS = list(KNOWN_ROOM_VERSIONS)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER = "example.org"
KEY = decode_signing_key_base64("ed25519", "1", encode_base64(hashlib.sha256(SERVER.encode()).digest()))


def fake_event_id(label: str, room_version: str) -> str:
    rules = get_rules(room_version)
    if rules.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        return f"${label}:example.org"
    digest = hashlib.sha256(label.encode()).digest()
    if rules.event_id_format is EventIdFormat.REFERENCE_HASH_BASE64:
        return "$" + encode_base64(digest)
    return "$" + encode_base64_urlsafe(digest)


def fake_room_id(room_version: str) -> str:
    if get_rules(room_version).room_id_format is RoomIdFormat.CREATE_EVENT_HASH:
        return "!" + encode_base64_urlsafe(hashlib.sha256(b"room").digest())
    return "!room:example.org"

# --- strategies -----------------------------------------------------------------------

text = st.text(max_size=10)
plain_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
# What the fast path must refuse: floats (integral ones too), integers beyond the
# canonical range, tuples, lone surrogates, non-string keys.
odd_scalars = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2**53, -(2**53), 2**64 + 1, 1.0, -0.0])
    | st.sampled_from(["\ud800", "a\udfffb"])
)
scalars = plain_scalars | odd_scalars


def _values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=3)
        | st.lists(children, max_size=2).map(tuple)
        | st.dictionaries(text, children, max_size=3),
        max_leaves=8,
    )


plain_values = _values(plain_scalars)
mostly_plain = st.one_of(plain_values, plain_values, plain_values, _values(scalars))

_TYPES = ["m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels", "m.room.aliases",
          "m.room.history_visibility", "m.room.redaction", "m.room.message"]
_CONTENT_KEYS = ["membership", "join_authorised_via_users_server", "third_party_invite", "creator", "join_rule",
                 "allow", "users", "events", "invite", "aliases", "history_visibility", "redacts", "body"]
_TOP_KEYS = sorted(
    set().union(*(r.redaction_keys for r in KNOWN_ROOM_VERSIONS.values()))
    | {"unsigned", "redacts", "age_ts", "extra", "hashes", "signatures"}
)


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Event-shaped dicts (any mix of essential and other keys, special types and
    content keys, existing hashes/signatures of any shape), sometimes not a dict."""
    if draw(st.integers(0, 30)) == 0:
        return draw(mostly_plain)
    event = draw(st.dictionaries(st.sampled_from(_TOP_KEYS), mostly_plain, max_size=7))
    event["type"] = draw(st.sampled_from(_TYPES) | text)
    content = draw(st.dictionaries(st.sampled_from(_CONTENT_KEYS) | text, mostly_plain, max_size=5) | mostly_plain)
    if isinstance(content, dict) and draw(st.booleans()):
        content["third_party_invite"] = {"signed": draw(mostly_plain), "display_name": draw(text)}
    if draw(st.integers(0, 4)) > 0:
        event["content"] = content
    if draw(st.booleans()):
        event["signatures"] = draw(
            st.dictionaries(st.sampled_from([SERVER, "other.example"]), st.dictionaries(text, text, max_size=2) | text,
                            max_size=2)
            | plain_scalars
        )
    return event


def _ordered(value: Any) -> str:
    """Value *and* key order, for comparing dicts whose values may not be plain JSON."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True, default=repr)


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kwargs)
    except InvalidEvent as e:
        return "invalid", (str(e), e.rule)


# --- signing ------------------------------------------------------------------------------


@SETTINGS
@given(event=events(), version=st.sampled_from(VERSIONS))
def test_sign_event_equals_the_reference_algorithm(event: Any, version: str) -> None:
    before = _ordered(event)
    fast = _outcome(sign_event, event, SERVER, KEY, version)
    reference = _outcome(_sign_event_reference, event, SERVER, KEY, get_rules(version))
    assert fast[0] == reference[0]
    if fast[0] == "ok":
        assert fast[1] == reference[1]
        assert _ordered(fast[1]) == _ordered(reference[1])  # key order too
    else:
        assert fast[1] == reference[1]  # same message and rule
    assert _ordered(event) == before  # the input is never mutated


@SETTINGS
@given(event=events(), version=st.sampled_from(VERSIONS))
def test_signing_computes_the_reference_hash(event: Any, version: str) -> None:
    rules = get_rules(version)
    try:
        signed = sign_event_and_hash(event, SERVER, KEY, rules)
    except InvalidEvent:
        return
    assert signed.reference_hash == reference_hash(signed.event, rules)
    if signed.plain:  # the fast path built it (False: the reference path did)
        assert is_plain_json(signed.event)
    if not rules.pdu_has_event_id:
        assert event_id_from_reference_hash(signed.reference_hash, rules) == compute_event_id(signed.event, version)


@SETTINGS
@given(event=events().filter(lambda e: isinstance(e, dict)), version=st.sampled_from(VERSIONS))
def test_signed_event_shares_nothing_with_its_input(event: dict, version: str) -> None:
    try:
        signed = sign_event(event, SERVER, KEY, version)
    except InvalidEvent:
        return
    snapshot = copy.deepcopy(signed)

    def scribble(value: Any) -> None:
        if isinstance(value, dict):
            for item in list(value.values()):
                scribble(item)
            value["scribbled"] = True
        elif isinstance(value, list):
            for item in value:
                scribble(item)
            value.append("scribbled")

    scribble(event)
    assert signed == snapshot


def test_fast_path_is_taken_for_plain_events_only() -> None:
    rules = get_rules("12")
    plain = {"type": "m.room.message", "content": {"body": "hi", "n": 1}, "sender": "@a:example.org"}
    assert sign_event_and_hash(plain, SERVER, KEY, rules).plain
    for odd in (1.5, 2**60, ("a",)):
        assert not sign_event_and_hash({**plain, "content": {"x": odd}}, SERVER, KEY, rules).plain
    with pytest.raises(InvalidEvent, match="not encodable"):
        sign_event({**plain, "content": {"x": "\ud800"}}, SERVER, KEY, "12")


# --- redaction ------------------------------------------------------------------------------


@SETTINGS
@given(event=events().filter(lambda e: isinstance(e, dict)), version=st.sampled_from(VERSIONS))
def test_redacted_view_equals_redact(event: dict, version: str) -> None:
    rules = get_rules(version)
    before = _ordered(event)
    assert redacted_view(event, rules) == redact_with_rules(event, rules)
    assert _ordered(event) == before


# --- building and parsing our own events ----------------------------------------------------

_LONG = "x" * 256


@st.composite
def client_sends(draw: st.DrawFn) -> dict[str, Any]:
    """What a client (or the actor) chooses for a local send, valid or not."""
    version = draw(st.sampled_from(VERSIONS))
    rules = get_rules(version)
    event_type = draw(st.sampled_from(_TYPES + ["m.custom", _LONG, "é" * 128]) | text)
    content: Any = draw(st.dictionaries(st.sampled_from(_CONTENT_KEYS) | text, mostly_plain, max_size=5))
    if event_type == "m.room.redaction" and draw(st.booleans()):
        content["redacts"] = draw(st.sampled_from([fake_event_id("target", version), "not-an-id", 5]))
    if draw(st.integers(0, 15)) == 0:
        content["body"] = "b" * 70_000  # too large
    return {
        "room_version": version,
        "room_id": fake_room_id(version),
        "sender": draw(st.sampled_from(["@alice:example.org", "@Historical!:example.org", "alice", "@" + _LONG * 2 + ":x"])),
        "type": event_type,
        "content": content,
        "state_key": draw(st.none() | text | st.sampled_from(["", "@alice:example.org", _LONG])),
        "prev_events": [fake_event_id(f"prev{i}", version) for i in range(draw(st.integers(1, 3)))],
        "auth_events": [fake_event_id(f"auth{i}", version) for i in range(draw(st.integers(0, 4)))],
        "depth": draw(st.integers(1, 2**53 - 1 if rules.strict_canonical_json else 2**63 - 1)),
        "origin_server_ts": draw(st.integers(0, 2**53 - 1)),
        "server_name": SERVER,
        "signing_key": KEY,
    }


def _referenced(fields: dict[str, Any]) -> dict[str, dict] | None:
    if not get_rules(fields["room_version"]).event_refs_are_pairs:
        return None
    return {eid: {"type": "m.room.message", "event_id": eid, "content": {}} for eid in
            [*fields["prev_events"], *fields["auth_events"]]}


@SETTINGS
@given(fields=client_sends())
def test_build_pdu_equals_build_event_then_parse_pdu(fields: dict[str, Any]) -> None:
    fields = {**fields, "referenced": _referenced(fields)}
    # v1/v2 event IDs are random: fix them so both paths build the same event.
    with mock.patch.object(room_events, "_server_assigned_event_id", lambda server: f"$fixed:{server}"):
        fast = _outcome(room_events.build_pdu, **fields)
        built = _outcome(room_events.build_event, **fields)
    reference = _outcome(parse_pdu, built[1][1], fields["room_version"]) if built[0] == "ok" else built
    assert fast[0] == reference[0], (fast, reference)
    if fast[0] == "ok":
        pdu, expected = fast[1], reference[1]
        assert pdu == expected
        assert pdu.json == expected.json and _ordered(pdu.json) == _ordered(expected.json)
        assert pdu.content == expected.content
        assert pdu.event_id == built[1][0] == compute_event_id(pdu.json, fields["room_version"])
    else:
        assert fast[1] == reference[1]


@SETTINGS
@given(version=st.sampled_from(VERSIONS), extra=st.dictionaries(text, plain_values, max_size=3))
def test_build_create_event_room_id_equals_compute_room_id(version: str, extra: dict[str, Any]) -> None:
    rules = get_rules(version)
    given_id = None if not rules.create_event_has_room_id else "!given:example.org"
    with mock.patch.object(room_events, "_server_assigned_event_id", lambda server: f"$fixed:{server}"):
        create, room_id = room_events.build_create_event(
            version, creator="@alice:example.org", server_name=SERVER, signing_key=KEY,
            clock=ManualClock(start_ms=1_700_000_000_000), content_extra=extra, room_id_for_v1_11=given_id,
        )
    assert room_id == (given_id if given_id is not None else compute_room_id(create, version))
    unsigned = {k: v for k, v in create.items() if k not in ("hashes", "signatures")}
    assert create == _sign_event_reference(unsigned, SERVER, KEY, rules)
