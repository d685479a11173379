"""Server key responses (s2s "Retrieving server keys", "Publishing Keys", "Querying
Keys Through Another Server"): build, check, notary co-signatures. Fixed seeds."""

from __future__ import annotations

import copy
import hashlib

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key

from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.server_keys import (
    MAX_KEY_VALIDITY_MS,
    KeyResponseError,
    OldVerifyKey,
    add_notary_signature,
    build_server_keys_response,
    check_notary_response,
    check_server_keys_response,
)
from roomactors.protocol.signing import sign_json, verify_json

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000


def key(server: str, version: str = "1"):
    seed = hashlib.sha256(f"{server}/{version}".encode()).digest()
    return decode_signing_key_base64("ed25519", version, encode_base64(seed))


def response(server: str = "remote.example", **kw):
    return build_server_keys_response(
        server_name=server, signing_key=kw.pop("signing_key", key(server)), valid_until_ts=kw.pop("valid_until_ts", NOW + DAY), **kw
    )


def test_built_response_has_spec_shape_and_verifies():
    old = OldVerifyKey("ed25519:0ld", get_verify_key(key("remote.example", "0ld")), NOW - DAY)
    r = response(old_verify_keys=[old])
    assert set(r) == {"server_name", "verify_keys", "old_verify_keys", "valid_until_ts", "signatures"}
    assert r["verify_keys"] == {"ed25519:1": {"key": encode_base64(get_verify_key(key("remote.example")).encode())}}
    assert r["old_verify_keys"]["ed25519:0ld"]["expired_ts"] == NOW - DAY
    verify_json(r, "remote.example", get_verify_key(key("remote.example")))
    checked = check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)
    assert checked.valid_until_ts == NOW + DAY
    assert checked.keys["ed25519:1"].valid_until_ts == NOW + DAY
    assert checked.keys["ed25519:1"].expired_ts is None
    assert checked.keys["ed25519:0ld"].expired_ts == NOW - DAY
    assert checked.keys["ed25519:0ld"].valid_until_ts == NOW - DAY


def test_signing_is_deterministic_with_a_fixed_seed():
    assert response() == response()


def test_validity_capped_at_seven_days():
    r = response(valid_until_ts=NOW + 30 * DAY)
    checked = check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)
    assert checked.valid_until_ts == NOW + 30 * DAY
    assert checked.keys["ed25519:1"].valid_until_ts == NOW + MAX_KEY_VALIDITY_MS


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda r: r.__setitem__("server_name", "evil.example"), id="server_name"),
        pytest.param(lambda r: r["signatures"]["remote.example"].__setitem__("ed25519:1", "A" * 86), id="signature"),
        pytest.param(lambda r: r.__setitem__("valid_until_ts", NOW + 2 * DAY), id="tampered-field"),
        pytest.param(lambda r: r.pop("valid_until_ts"), id="no-valid_until_ts"),
        pytest.param(lambda r: r.__setitem__("valid_until_ts", "soon"), id="valid_until_ts-string"),
        pytest.param(lambda r: r.pop("signatures"), id="unsigned"),
        pytest.param(lambda r: r.__setitem__("verify_keys", {}), id="no-verify-keys"),
        pytest.param(lambda r: r["verify_keys"]["ed25519:1"].__setitem__("key", "!!"), id="bad-base64"),
    ],
)
def test_tampered_responses_fail(mutate):
    r = copy.deepcopy(response())
    mutate(r)
    with pytest.raises(KeyResponseError):
        check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)


def test_every_verify_key_must_have_signed():
    r = response()
    second = key("remote.example", "2")
    r["verify_keys"]["ed25519:2"] = {"key": encode_base64(get_verify_key(second).encode())}
    r = sign_json(r, "remote.example", key("remote.example"))  # re-signed by key 1 only
    with pytest.raises(KeyResponseError, match="ed25519:2"):
        check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)
    both = sign_json(r, "remote.example", second)
    assert set(check_server_keys_response(both, expected_server="remote.example", now_ms=NOW).keys) == {
        "ed25519:1",
        "ed25519:2",
    }


def test_expired_response_fails_unless_allowed():
    r = response(valid_until_ts=NOW - 1)
    with pytest.raises(KeyResponseError, match="expired"):
        check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)
    assert check_server_keys_response(r, expected_server="remote.example", now_ms=NOW, allow_expired=True)


def test_unknown_algorithms_are_ignored():
    r = copy.deepcopy(response())
    del r["signatures"]
    r["verify_keys"]["curve25519:x"] = {"key": "whatever"}
    r = sign_json(r, "remote.example", key("remote.example"))
    checked = check_server_keys_response(r, expected_server="remote.example", now_ms=NOW)
    assert set(checked.keys) == {"ed25519:1"}


def notary_answer(*entries):
    return {"server_keys": [add_notary_signature(e, "notary.example", key("notary.example")) for e in entries]}


NOTARY_KEYS = {"ed25519:1": get_verify_key(key("notary.example"))}


def test_notary_cosignature_keeps_origin_signature():
    signed = add_notary_signature(response(), "notary.example", key("notary.example"))
    assert set(signed["signatures"]) == {"remote.example", "notary.example"}
    verify_json(signed, "remote.example", get_verify_key(key("remote.example")))
    verify_json(signed, "notary.example", NOTARY_KEYS["ed25519:1"])


def test_notary_response_checked_per_entry():
    good = response()
    wrong_server = response("other.example")
    bad_sig = copy.deepcopy(response("third.example"))
    bad_sig["signatures"]["third.example"]["ed25519:1"] = "A" * 86
    result = check_notary_response(
        notary_answer(good, wrong_server, bad_sig),
        notary="notary.example",
        notary_keys=NOTARY_KEYS,
        requested=["remote.example", "third.example"],
        now_ms=NOW,
    )
    assert [k.server_name for k in result.accepted] == ["remote.example"]
    assert [s for s, _ in result.rejected] == ["other.example", "third.example"]


def test_notary_signature_required_when_notary_keys_known():
    unsigned_by_notary = {"server_keys": [response()]}
    kw = dict(notary="notary.example", requested=["remote.example"], now_ms=NOW)
    result = check_notary_response(unsigned_by_notary, notary_keys=NOTARY_KEYS, **kw)
    assert not result.accepted and "notary" in result.rejected[0][1]
    # Unknown notary keys: the entry's own checks still apply, the notary's cannot.
    assert check_notary_response(unsigned_by_notary, notary_keys=None, **kw).accepted
    forged = notary_answer(response())
    forged["server_keys"][0]["signatures"]["notary.example"]["ed25519:1"] = "A" * 86
    assert not check_notary_response(forged, notary_keys=NOTARY_KEYS, **kw).accepted


def test_notary_may_return_expired_cached_entries():
    result = check_notary_response(
        notary_answer(response(valid_until_ts=NOW - DAY)),
        notary="notary.example",
        notary_keys=NOTARY_KEYS,
        requested=["remote.example"],
        now_ms=NOW,
    )
    assert result.accepted[0].valid_until_ts == NOW - DAY


@pytest.mark.parametrize("body", [None, [], {}, {"server_keys": {}}])
def test_malformed_notary_envelope_raises(body):
    with pytest.raises(KeyResponseError):
        check_notary_response(body, notary="n.example", notary_keys=None, requested=[], now_ms=NOW)
