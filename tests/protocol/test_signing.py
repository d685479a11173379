"""Signing JSON and events (appendices "Signing Details", "Checking for a Signature",
"Cryptographic Test Vectors"; s2s "Validating hashes and signatures on received
events"; rooms/fragments/v5-signing-requirements)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key

from roomactors.protocol import (
    InvalidEvent,
    SignatureError,
    Verified,
    redact,
    sign_event,
    sign_json,
    verify_event,
    verify_event_signatures,
    verify_json,
)
from roomactors.protocol.signing import required_signers
from roomactors.protocol.room_versions import get_rules

_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
_JSON_SIGNING = json.loads((_VECTORS / "json_signing.json").read_text(encoding="utf-8"))
_EVENT_SIGNING = json.loads((_VECTORS / "event_signing.json").read_text(encoding="utf-8"))

TS = 1_700_000_000_000


# --- spec vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _JSON_SIGNING["cases"], ids=[c["name"] for c in _JSON_SIGNING["cases"]])
def test_sign_json_vectors(case: dict, spec_key: Any, spec_verify_key: Any) -> None:
    original = copy.deepcopy(case["input"])
    signed = sign_json(case["input"], _JSON_SIGNING["server_name"], spec_key)
    assert signed == case["signed"]
    assert case["input"] == original  # not mutated
    verify_json(signed, "domain", spec_verify_key)


@pytest.mark.parametrize("version", _EVENT_SIGNING["room_versions"])
@pytest.mark.parametrize("case", _EVENT_SIGNING["cases"], ids=[c["name"] for c in _EVENT_SIGNING["cases"]])
def test_sign_event_vectors(case: dict, version: str, spec_key: Any, spec_verify_key: Any) -> None:
    original = copy.deepcopy(case["input"])
    signed = sign_event(case["input"], _EVENT_SIGNING["server_name"], spec_key, version)
    assert signed == case["signed"]
    assert case["input"] == original
    verify_json(redact(signed, version), "domain", spec_verify_key)
    keys = {"domain": {"ed25519:1": (spec_verify_key, None)}}
    if get_rules(version).pdu_has_event_id and "event_id" not in signed:
        # The minimal vector has no event_id, which room versions 1/2 need to verify.
        with pytest.raises(InvalidEvent, match="event_id"):
            verify_event(signed, version, keys)
    else:
        assert verify_event(signed, version, keys) is Verified.ALL


def test_spec_key_id(spec_key: Any) -> None:
    assert f"{spec_key.alg}:{spec_key.version}" == _JSON_SIGNING["key_id"]


# --- sign_json / verify_json ------------------------------------------------------------


def test_sign_json_keeps_unsigned_and_other_signatures(spec_key: Any, spec_verify_key: Any) -> None:
    obj = {"a": 1, "unsigned": {"age": 3}, "signatures": {"other.org": {"ed25519:x": "sig"}}}
    signed = sign_json(obj, "domain", spec_key)
    assert signed["unsigned"] == {"age": 3}
    assert signed["signatures"]["other.org"] == {"ed25519:x": "sig"}
    # The signature covers neither unsigned nor signatures.
    bare = sign_json({"a": 1}, "domain", spec_key)
    assert signed["signatures"]["domain"] == bare["signatures"]["domain"]
    verify_json(signed, "domain", spec_verify_key)


def test_sign_json_rejects_non_object(spec_key: Any) -> None:
    with pytest.raises(InvalidEvent):
        sign_json([1, 2], "domain", spec_key)  # type: ignore[arg-type]


def test_verify_json_good_and_unsigned_changes_ignored(spec_key: Any, spec_verify_key: Any) -> None:
    signed = sign_json({"a": 1}, "domain", spec_key)
    verify_json(signed, "domain", spec_verify_key)
    verify_json({**signed, "unsigned": {"added": "later"}}, "domain", spec_verify_key)


def test_verify_json_tampered(spec_key: Any, spec_verify_key: Any) -> None:
    signed = sign_json({"a": 1}, "domain", spec_key)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_json({**signed, "a": 2}, "domain", spec_verify_key)


def test_verify_json_wrong_key(spec_key: Any, key_for: Callable[[str], Any]) -> None:
    signed = sign_json({"a": 1}, "domain", spec_key)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_json(signed, "domain", get_verify_key(key_for("impostor")))


def test_verify_json_missing(spec_key: Any, spec_verify_key: Any) -> None:
    with pytest.raises(SignatureError, match="no signatures from domain"):
        verify_json({"a": 1}, "domain", spec_verify_key)
    signed = sign_json({"a": 1}, "domain", spec_key)
    with pytest.raises(SignatureError, match="no signatures from elsewhere"):
        verify_json(signed, "elsewhere", spec_verify_key)
    other_version = decode_signing_key_base64("ed25519", "2", _JSON_SIGNING["signing_key_seed"])
    with pytest.raises(SignatureError, match="ed25519:2"):
        verify_json(signed, "domain", get_verify_key(other_version))


@pytest.mark.parametrize("sig", ["!!!", "AAAA", 5])
def test_verify_json_undecodable_or_short_signature(sig: object, spec_verify_key: Any) -> None:
    obj = {"a": 1, "signatures": {"domain": {"ed25519:1": sig}}}
    with pytest.raises(SignatureError):
        verify_json(obj, "domain", spec_verify_key)


# --- events ------------------------------------------------------------------------------


def _keys(key_for: Callable[[str], Any], *servers: str, valid_until_ts: int | None = None) -> dict:
    return {s: {"ed25519:1": (get_verify_key(key_for(s)), valid_until_ts)} for s in servers}


def _cosign(event: dict, server: str, key_for: Callable[[str], Any], version: str) -> dict:
    """Add ``server``'s signature over the redacted event (as a second signer would)."""
    redacted_signed = sign_json(redact(event, version), server, key_for(server))
    out = copy.deepcopy(event)
    out["signatures"] = redacted_signed["signatures"]
    return out


def test_sign_event_sets_hash_and_signs_redacted_form(make_pdu: Callable[..., dict], key_for: Callable) -> None:
    event = make_pdu("10", sign=False, content={"body": "secret"})
    signed = sign_event(event, "example.org", key_for("example.org"), "10")
    assert "sha256" in signed["hashes"]
    # The signature is over the redacted event: verifying the redacted form directly works.
    verify_json(redact(signed, "10"), "example.org", get_verify_key(key_for("example.org")))
    assert event.get("signatures") == {}  # input untouched


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_sender_server_signature_verifies(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, event_id="$e:example.org")
    verify_event_signatures(event, version, _keys(key_for, "example.org"))
    assert verify_event(event, version, _keys(key_for, "example.org")) is Verified.ALL


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_require_event_id_domain(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, event_id="$e:origin.org")
    assert required_signers(event, get_rules(version)) == {"example.org", "origin.org"}
    keys = _keys(key_for, "example.org", "origin.org")
    with pytest.raises(SignatureError, match="origin.org"):
        verify_event_signatures(event, version, keys)
    cosigned = _cosign(event, "origin.org", key_for, version)
    verify_event_signatures(cosigned, version, keys)


def test_v3_does_not_require_event_id_domain(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("3")
    event["event_id"] = "$stray:origin.org"  # ignored from v3 on
    assert required_signers(event, get_rules("3")) == {"example.org"}


def _restricted_join(make_pdu: Callable, version: str) -> dict:
    return make_pdu(
        version,
        type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join", "join_authorised_via_users_server": "@admin:resident.org"},
    )


@pytest.mark.parametrize("version", ["8", "9", "10", "11", "12"])
def test_restricted_join_requires_authorising_server(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = _restricted_join(make_pdu, version)
    assert required_signers(event, get_rules(version)) == {"example.org", "resident.org"}
    keys = _keys(key_for, "example.org", "resident.org")
    with pytest.raises(SignatureError, match="resident.org"):
        verify_event_signatures(event, version, keys)
    verify_event_signatures(_cosign(event, "resident.org", key_for, version), version, keys)


@pytest.mark.parametrize("version", ["6", "7"])
def test_authorising_server_not_required_before_v8(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = _restricted_join(make_pdu, version)
    assert required_signers(event, get_rules(version)) == {"example.org"}
    verify_event_signatures(event, version, _keys(key_for, "example.org"))


def test_authorising_server_signature_required_whatever_the_membership(make_pdu: Callable) -> None:
    # v8-v11 auth rule 4.2.1 applies to any member event carrying the key, not only joins.
    event = make_pdu(
        "9",
        type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "leave", "join_authorised_via_users_server": "@admin:resident.org"},
    )
    assert required_signers(event, get_rules("9")) == {"example.org", "resident.org"}
    assert required_signers(event, get_rules("7")) == {"example.org"}


def _third_party_invite(make_pdu: Callable, key_for: Callable, version: str) -> dict:
    # Sent on behalf of @inviter:example.org, but signed only by relay.org.
    event = make_pdu(
        version,
        sign=False,
        type="m.room.member",
        state_key="@invitee:other.org",
        content={
            "membership": "invite",
            "third_party_invite": {"display_name": "x", "signed": {"mxid": "@invitee:other.org", "token": "t"}},
        },
    )
    return sign_event(event, "relay.org", key_for("relay.org"), version)


@pytest.mark.parametrize("version", ["3", "10", "11", "12"])
def test_third_party_invite_exempt_from_sender_signature(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = _third_party_invite(make_pdu, key_for, version)
    assert required_signers(event, get_rules(version)) == set()
    verify_event_signatures(event, version, _keys(key_for, "relay.org"))
    # ...but something must verify: with no known key at all it fails.
    with pytest.raises(SignatureError, match="no verifiable signature"):
        verify_event_signatures(event, version, {})


def test_plain_invite_not_exempt(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10", sign=False, type="m.room.member", state_key="@bob:other.org", content={"membership": "invite"})
    event = sign_event(event, "relay.org", key_for("relay.org"), "10")
    with pytest.raises(SignatureError, match="example.org"):
        verify_event_signatures(event, "10", _keys(key_for, "relay.org", "example.org"))


def test_unknown_key_is_skipped_then_missing(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    # A key we know, but under another key ID: the event's ed25519:1 signature is unknown.
    other = decode_signing_key_base64("ed25519", "2", "A" * 43)
    keys = {"example.org": {"ed25519:2": (get_verify_key(other), None)}}
    with pytest.raises(SignatureError, match="missing a valid signature from example.org"):
        verify_event_signatures(event, "10", keys)
    with pytest.raises(SignatureError, match="missing"):
        verify_event_signatures(event, "10", {})


def test_unknown_algorithm_ignored(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    event["signatures"]["example.org"]["curve25519:9"] = "not checked"
    verify_event_signatures(event, "10", _keys(key_for, "example.org"))


def test_bad_signature_from_known_key_fails_even_with_a_good_one(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    second = decode_signing_key_base64("ed25519", "2", "B" * 43)
    keys = {
        "example.org": {
            "ed25519:1": (get_verify_key(key_for("example.org")), None),
            "ed25519:2": (get_verify_key(second), None),
        }
    }
    event["signatures"]["example.org"]["ed25519:2"] = event["signatures"]["example.org"]["ed25519:1"]
    with pytest.raises(SignatureError, match="bad signature"):
        verify_event_signatures(event, "10", keys)


@pytest.mark.parametrize("version", ["5", "6", "10", "12"])
def test_expired_key_skipped_from_v5(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, origin_server_ts=TS)
    with pytest.raises(SignatureError, match="missing"):
        verify_event_signatures(event, version, _keys(key_for, "example.org", valid_until_ts=TS - 1))
    # valid_until_ts must be *at least* origin_server_ts: equal is fine.
    verify_event_signatures(event, version, _keys(key_for, "example.org", valid_until_ts=TS))
    verify_event_signatures(event, version, _keys(key_for, "example.org", valid_until_ts=None))


@pytest.mark.parametrize("version", ["1", "3", "4"])
def test_key_validity_not_enforced_before_v5(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, origin_server_ts=TS, event_id="$e:example.org")
    verify_event_signatures(event, version, _keys(key_for, "example.org", valid_until_ts=TS - 1))


def test_mismatched_verify_key_id_is_an_error(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    wrong = decode_signing_key_base64("ed25519", "7", "C" * 43)
    with pytest.raises(SignatureError, match="has ID ed25519:7"):
        verify_event_signatures(event, "10", {"example.org": {"ed25519:1": (get_verify_key(wrong), None)}})


@pytest.mark.parametrize("version", ["1", "6", "9", "11", "12"])
def test_redacted_copy_still_verifies(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, event_id="$e:example.org", content={"body": "to be redacted", "extra": [1, 2]})
    keys = _keys(key_for, "example.org")
    redacted = redact(event, version)
    verify_event_signatures(redacted, version, keys)
    # The redacted copy's content hash no longer matches: use-the-redacted-copy outcome.
    assert verify_event(redacted, version, keys) is Verified.SIGNATURES


@pytest.mark.parametrize("version", ["1", "4", "10", "11", "12"])
def test_content_tampering_yields_signatures_only(version: str, make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu(version, event_id="$e:example.org")
    keys = _keys(key_for, "example.org")
    assert verify_event(event, version, keys) is Verified.ALL
    tampered = copy.deepcopy(event)
    tampered["content"]["body"] = "something the sender never said"
    assert verify_event(tampered, version, keys) is Verified.SIGNATURES


@pytest.mark.parametrize(
    ("field", "value"),
    [("depth", 99), ("origin_server_ts", 1), ("type", "m.room.other"), ("hashes", {"sha256": "A" * 43})],
)
def test_tampering_with_essential_fields_fails_signatures(
    field: str, value: object, make_pdu: Callable, key_for: Callable
) -> None:
    event = make_pdu("10")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_event({**event, field: value}, "10", _keys(key_for, "example.org"))


def test_event_without_signatures_object(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    del event["signatures"]
    with pytest.raises(SignatureError, match="no signatures"):
        verify_event_signatures(event, "10", _keys(key_for, "example.org"))


def test_event_without_valid_sender(make_pdu: Callable, key_for: Callable) -> None:
    event = make_pdu("10")
    del event["sender"]
    with pytest.raises(InvalidEvent, match="sender"):
        verify_event_signatures(event, "10", _keys(key_for, "example.org"))
