"""Property tests for the kernel's invariants (hypothesis; modest example counts).

* canonical JSON: decodes back to the same value, is a fixed point of
  decode-then-encode, and agrees with the ``canonicaljson`` reference library;
* redaction: idempotent in every room version, never mutates its input;
* signing: sign-then-verify succeeds; changing any field that survives redaction
  (or the content hash) makes verification fail; changing only redactable content
  keeps the signatures but fails the content hash.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import canonicaljson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from signedjson.key import get_verify_key

from roomactors.protocol import (
    KNOWN_ROOM_VERSIONS,
    SignatureError,
    Verified,
    canonical_json,
    get_rules,
    redact,
    sign_event,
    verify_event,
    verify_event_signatures,
)

VERSIONS = list(KNOWN_ROOM_VERSIONS)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -----------------------------------------------------------------------------

canonical_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
# st.text() never generates surrogates, so every string is valid UTF-8 when encoded.
json_text = st.text(max_size=12)
json_scalars = st.none() | st.booleans() | canonical_ints | json_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(json_text, json_values, max_size=6)

_SPECIAL_TYPES = [
    "m.room.member",
    "m.room.create",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.aliases",
    "m.room.history_visibility",
    "m.room.redaction",
    "m.room.message",
]
_SPECIAL_CONTENT_KEYS = [
    "membership", "join_authorised_via_users_server", "third_party_invite", "creator", "join_rule", "allow",
    "ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default",
    "aliases", "history_visibility", "redacts", "body",
]
_TOP_KEYS = sorted(
    set().union(*(r.redaction_keys for r in KNOWN_ROOM_VERSIONS.values())) | {"unsigned", "redacts", "age_ts", "extra"}
)


@st.composite
def arbitrary_events(draw: st.DrawFn) -> dict:
    """Event-shaped dicts: any mix of top-level keys (essential or not), a type that
    is often special, and content mixing special and arbitrary keys. The third-party
    invite sometimes carries a ``signed`` key (v11 keeps just that)."""
    event = draw(st.dictionaries(st.sampled_from(_TOP_KEYS), json_scalars | st.lists(json_scalars, max_size=3), max_size=8))
    event["type"] = draw(st.sampled_from(_SPECIAL_TYPES) | json_text)
    content = draw(
        st.dictionaries(st.sampled_from(_SPECIAL_CONTENT_KEYS) | json_text, json_values, max_size=6)
        | json_values
    )
    if isinstance(content, dict) and draw(st.booleans()):
        content["third_party_invite"] = {"signed": draw(json_values), "display_name": draw(json_text)}
    if draw(st.booleans()):
        event["content"] = content
    return event


# --- canonical JSON ------------------------------------------------------------------------


@SETTINGS
@given(json_values)
def test_canonical_json_round_trips(value: Any) -> None:
    encoded = canonical_json(value)
    assert json.loads(encoded.decode("utf-8")) == value
    # Stable: encode(decode(x)) == x for canonical x.
    assert canonical_json(json.loads(encoded)) == encoded


@SETTINGS
@given(json_values)
def test_canonical_json_agrees_with_reference(value: Any) -> None:
    assert canonical_json(value) == canonicaljson.encode_canonical_json(value)


@SETTINGS
@given(json_objects)
def test_canonical_json_keys_sorted_and_compact(value: dict) -> None:
    encoded = canonical_json(value)
    decoded_pairs = json.loads(encoded, object_pairs_hook=lambda pairs: pairs)
    top_keys = [k for k, _ in decoded_pairs]
    assert top_keys == sorted(value)
    assert encoded == json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


# --- redaction ---------------------------------------------------------------------------------


@SETTINGS
@given(arbitrary_events(), st.sampled_from(VERSIONS))
def test_redact_is_idempotent_and_pure(event: dict, version: str) -> None:
    before = copy.deepcopy(event)
    once = redact(event, version)
    assert event == before
    assert redact(once, version) == once
    rules = get_rules(version)
    assert set(once) <= rules.redaction_keys | {"content"}
    assert isinstance(once["content"], dict)


# --- signing --------------------------------------------------------------------------------

_ORIGIN = "example.org"


def _pdu_for(make_pdu: Callable[..., dict], version: str, content: dict, depth: int, ts: int) -> dict:
    return make_pdu(version, sign=False, content=content, depth=depth, origin_server_ts=ts, event_id="$e:example.org")


@SETTINGS
@given(
    version=st.sampled_from(VERSIONS),
    content=json_objects,
    depth=st.integers(min_value=0, max_value=2**53 - 1),
    ts=st.integers(min_value=0, max_value=2**53 - 1),
)
def test_sign_then_verify(
    version: str, content: dict, depth: int, ts: int, make_pdu: Callable[..., dict], key_for: Callable[[str], Any]
) -> None:
    key = key_for(_ORIGIN)
    signed = sign_event(_pdu_for(make_pdu, version, content, depth, ts), _ORIGIN, key, version)
    keys = {_ORIGIN: {"ed25519:1": (get_verify_key(key), None)}}
    assert verify_event(signed, version, keys) is Verified.ALL
    # A redacted copy still carries valid signatures.
    verify_event_signatures(redact(signed, version), version, keys)


_ESSENTIAL_MUTATIONS = ["depth", "origin_server_ts", "type", "room_id", "prev_events", "auth_events", "hash"]


@SETTINGS
@given(
    version=st.sampled_from(VERSIONS),
    content=json_objects,
    which=st.sampled_from(_ESSENTIAL_MUTATIONS),
    new_int=canonical_ints,
    new_text=json_text,
)
def test_changing_a_signed_field_fails_verification(
    version: str,
    content: dict,
    which: str,
    new_int: int,
    new_text: str,
    make_pdu: Callable[..., dict],
    key_for: Callable[[str], Any],
) -> None:
    key = key_for(_ORIGIN)
    signed = sign_event(_pdu_for(make_pdu, version, content, 5, 1000), _ORIGIN, key, version)
    keys = {_ORIGIN: {"ed25519:1": (get_verify_key(key), None)}}
    tampered = copy.deepcopy(signed)
    if which == "depth":
        tampered["depth"] = new_int
    elif which == "origin_server_ts":
        tampered["origin_server_ts"] = new_int
        # v5+ key validity uses origin_server_ts; no expiry given, so only the signature matters.
    elif which == "type":
        tampered["type"] = "m.x." + new_text
    elif which == "room_id":
        tampered["room_id"] = signed["room_id"] + new_text + "x"
    elif which in ("prev_events", "auth_events"):
        tampered[which] = tampered[which] + copy.deepcopy(tampered[which][:1] or ["$x:example.org"])
    else:
        digest = signed["hashes"]["sha256"]
        tampered["hashes"] = {"sha256": ("B" if digest[0] != "B" else "C") + digest[1:]}
    assume(tampered != signed)
    with pytest.raises(SignatureError):
        verify_event(tampered, version, keys)


@SETTINGS
@given(version=st.sampled_from(VERSIONS), content=json_objects, extra=json_values)
def test_changing_redactable_content_fails_only_the_hash(
    version: str, content: dict, extra: Any, make_pdu: Callable[..., dict], key_for: Callable[[str], Any]
) -> None:
    key = key_for(_ORIGIN)
    signed = sign_event(_pdu_for(make_pdu, version, content, 5, 1000), _ORIGIN, key, version)
    keys = {_ORIGIN: {"ed25519:1": (get_verify_key(key), None)}}
    tampered = copy.deepcopy(signed)
    tampered["content"]["\x00added by someone else"] = extra  # a key no redaction rule keeps
    assert verify_event(tampered, version, keys) is Verified.SIGNATURES
