"""roomactors.protocol.e2e_keys: device keys, one-time / fallback keys, cross-signing
keys and signature uploads, checked with real signatures (tests/helpers/e2e_keys)."""

from __future__ import annotations

import copy

import pytest

from roomactors.protocol import e2e_keys as e2e
from tests.helpers.e2e_keys import CrossSigning, Device, curve_key

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def _err(fn, *args, **kw) -> e2e.E2eKeyError:
    with pytest.raises(e2e.E2eKeyError) as info:
        fn(*args, **kw)
    return info.value


# ------------------------------------------------------------------ device keys


def test_device_keys_accepted_without_unsigned() -> None:
    dev = Device(ALICE, "DEV1")
    keys = dev.device_keys()
    keys["unsigned"] = {"device_display_name": "mine"}
    checked = e2e.check_device_keys(keys, ALICE, "DEV1")
    assert "unsigned" not in checked
    assert checked["keys"] == keys["keys"]
    assert e2e.device_ed25519_key(checked).version == "DEV1"


@pytest.mark.parametrize(
    "user_id, device_id",
    [(BOB, "DEV1"), (ALICE, "OTHER")],
    ids=["another user", "another device"],
)
def test_device_keys_of_someone_else_rejected(user_id: str, device_id: str) -> None:
    keys = Device(ALICE, "DEV1").device_keys()
    assert _err(e2e.check_device_keys, keys, user_id, device_id).errcode == "M_BAD_JSON"


def test_device_keys_bad_signature_rejected() -> None:
    dev = Device(ALICE, "DEV1")
    keys = dev.device_keys()
    keys["algorithms"].append("m.extra")  # changed after signing
    assert _err(e2e.check_device_keys, keys, ALICE, "DEV1").errcode == "M_INVALID_SIGNATURE"
    # Signed by another key claiming the same ID.
    forged = Device(ALICE, "DEV1").device_keys()
    forged["keys"]["ed25519:DEV1"] = dev.public
    assert _err(e2e.check_device_keys, forged, ALICE, "DEV1").errcode == "M_INVALID_SIGNATURE"
    unsigned = {k: v for k, v in dev.device_keys().items() if k != "signatures"}
    assert _err(e2e.check_device_keys, unsigned, ALICE, "DEV1").errcode == "M_BAD_JSON"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k.update(algorithms="m.olm.v1"),
        lambda k: k.update(algorithms=[1]),
        lambda k: k.update(keys={}),
        lambda k: k["keys"].update({"curve25519:OTHER": curve_key()}),
        lambda k: k["keys"].update({"curve25519DEV1": curve_key()}),
        lambda k: k["keys"].pop("ed25519:DEV1"),
        lambda k: k["keys"].update({"curve25519:DEV1": "not base64!"}),
        lambda k: k["keys"].update({"curve25519:DEV1": "AAAA"}),
        lambda k: k.update(signatures="x"),
    ],
    ids=["algorithms-not-list", "algorithm-not-str", "no-keys", "other-device-id", "no-colon",
         "no-ed25519", "bad-base64", "short-key", "signatures-not-object"],
)
def test_malformed_device_keys_rejected(mutate) -> None:
    keys = Device(ALICE, "DEV1").device_keys()
    mutate(keys)
    with pytest.raises(e2e.E2eKeyError):
        e2e.check_device_keys(keys, ALICE, "DEV1")


# ------------------------------------------------------------------ one-time / fallback keys


def test_one_time_keys_signed_and_unsigned() -> None:
    dev = Device(ALICE, "DEV1")
    vk = e2e.device_ed25519_key(dev.device_keys())
    signed = dev.otk()
    got = e2e.check_one_time_keys({"signed_curve25519:AAAAAQ": signed, "curve25519:AAAAAg": curve_key()}, ALICE, vk)
    assert set(got) == {("signed_curve25519", "AAAAAQ"), ("curve25519", "AAAAAg")}
    assert got[("signed_curve25519", "AAAAAQ")] == signed
    # An unknown algorithm's bare string is accepted too (OneTimeKeys: string or object).
    assert e2e.check_one_time_keys({"alg1:k1": "opaque"}, ALICE, None) == {("alg1", "k1"): "opaque"}


def test_one_time_key_rejections() -> None:
    dev = Device(ALICE, "DEV1")
    vk = e2e.device_ed25519_key(dev.device_keys())
    other = Device(ALICE, "DEV1")  # same ID, another key
    assert _err(e2e.check_one_time_keys, {"signed_curve25519:A": other.otk()}, ALICE, vk).errcode == "M_INVALID_SIGNATURE"
    assert _err(e2e.check_one_time_keys, {"signed_curve25519:A": dev.otk()}, ALICE, None).errcode == "M_INVALID_SIGNATURE"
    tampered = dev.otk()
    tampered["key"] = curve_key()
    assert _err(e2e.check_one_time_keys, {"signed_curve25519:A": tampered}, ALICE, vk).errcode == "M_INVALID_SIGNATURE"
    for bad in (
        {"signed_curve25519": dev.otk()},            # no key ID
        {"signed_curve25519:a:b": dev.otk()},        # two colons
        {"signed_curve25519:A": curve_key()},        # must be a signed object
        {"signed_curve25519:A": {"key": curve_key()}},  # no signatures
        {"signed_curve25519:A": 5},
        {"curve25519:A": "short"},
    ):
        with pytest.raises(e2e.E2eKeyError):
            e2e.check_one_time_keys(bad, ALICE, vk)


def test_fallback_keys_one_per_algorithm() -> None:
    dev = Device(ALICE, "DEV1")
    vk = e2e.device_ed25519_key(dev.device_keys())
    got = e2e.check_one_time_keys({"signed_curve25519:F1": dev.otk(fallback=True)}, ALICE, vk, fallback=True)
    assert got[("signed_curve25519", "F1")]["fallback"] is True
    two = {"signed_curve25519:F1": dev.otk(fallback=True), "signed_curve25519:F2": dev.otk(fallback=True)}
    assert "one fallback key" in _err(e2e.check_one_time_keys, two, ALICE, vk, fallback=True).message


def test_one_time_keys_match_ignores_signatures() -> None:
    dev = Device(ALICE, "DEV1")
    key = dev.otk()
    resigned = copy.deepcopy(key)
    resigned["signatures"][ALICE]["ed25519:DEV1"] = "different"
    assert e2e.one_time_keys_match(key, resigned)
    assert not e2e.one_time_keys_match(key, dev.otk())
    assert e2e.one_time_keys_match("abc", "abc") and not e2e.one_time_keys_match("abc", key)


# ------------------------------------------------------------------ cross-signing keys


def test_cross_signing_keys() -> None:
    xs = CrossSigning(ALICE)
    master = e2e.check_cross_signing_key(xs.master_key, ALICE, "master")
    mk = e2e.cross_signing_verify_key(master)
    assert mk.version == xs.master.version == e2e.cross_signing_public_key(master)
    e2e.check_cross_signing_key(xs.self_signing_key, ALICE, "self_signing", mk)
    e2e.check_cross_signing_key(xs.user_signing_key, ALICE, "user_signing", mk)
    # Not signed by this master key.
    other = e2e.cross_signing_verify_key(CrossSigning(ALICE).master_key)
    assert _err(e2e.check_cross_signing_key, xs.self_signing_key, ALICE, "self_signing", other).errcode == "M_INVALID_SIGNATURE"
    assert _err(e2e.check_cross_signing_key, xs.master_key, BOB, "master").errcode == "M_INVALID_PARAM"
    assert _err(e2e.check_cross_signing_key, xs.master_key, ALICE, "self_signing").errcode == "M_INVALID_PARAM"
    two = copy.deepcopy(xs.master_key)
    two["keys"]["ed25519:" + curve_key()] = curve_key()
    assert _err(e2e.check_cross_signing_key, two, ALICE, "master").errcode == "M_INVALID_PARAM"
    misnamed = copy.deepcopy(xs.master_key)
    misnamed["keys"] = {"ed25519:other": xs.master.version}
    assert _err(e2e.check_cross_signing_key, misnamed, ALICE, "master").errcode == "M_INVALID_PARAM"
    assert _err(e2e.check_cross_signing_key, {"user_id": ALICE, "usage": "master", "keys": {}}, ALICE, "master")


# ------------------------------------------------------------------ signature upload


def _state(dev: Device, xs: CrossSigning):
    own_devices = {dev.device_id: dev.device_keys()}
    own_keys = {"master": xs.master_key, "self_signing": xs.self_signing_key, "user_signing": xs.user_signing_key}
    return own_devices, own_keys


def test_signature_upload_self_signing_a_device() -> None:
    dev, xs = Device(ALICE, "DEV1"), CrossSigning(ALICE)
    own_devices, own_keys = _state(dev, xs)
    signed = xs.sign_device(own_devices["DEV1"])
    items, failures = e2e.check_signature_upload(
        ALICE, {ALICE: {"DEV1": signed}}, own_devices=own_devices, own_keys=own_keys, master_keys={}
    )
    assert failures == {}
    (item,) = items
    assert (item.signer_user_id, item.signer_key_id, item.target_user_id, item.target_key_id) == (
        ALICE, f"ed25519:{xs.self_signing.version}", ALICE, "DEV1")
    assert item.signature == signed["signatures"][ALICE][item.signer_key_id]


def test_signature_upload_device_signing_master_key() -> None:
    dev, xs = Device(ALICE, "DEV1"), CrossSigning(ALICE)
    own_devices, own_keys = _state(dev, xs)
    from roomactors.protocol.signing import sign_json

    signed = sign_json(xs.master_key, ALICE, dev.key)
    items, failures = e2e.check_signature_upload(
        ALICE, {ALICE: {xs.master.version: signed}}, own_devices=own_devices, own_keys=own_keys, master_keys={}
    )
    assert failures == {}
    assert [(i.signer_key_id, i.target_key_id) for i in items] == [("ed25519:DEV1", xs.master.version)]
    # Signed by a device the user does not have.
    stranger = Device(ALICE, "DEV9")
    bad = sign_json(xs.master_key, ALICE, stranger.key)
    items, failures = e2e.check_signature_upload(
        ALICE, {ALICE: {xs.master.version: bad}}, own_devices=own_devices, own_keys=own_keys, master_keys={}
    )
    assert items == [] and failures[ALICE][xs.master.version]["errcode"] == "M_INVALID_SIGNATURE"


def test_signature_upload_user_signing_another_master() -> None:
    dev, xs = Device(ALICE, "DEV1"), CrossSigning(ALICE)
    own_devices, own_keys = _state(dev, xs)
    bob = CrossSigning(BOB)
    signed = xs.sign_master_of(bob.master_key)
    items, failures = e2e.check_signature_upload(
        ALICE, {BOB: {bob.master.version: signed}}, own_devices=own_devices, own_keys=own_keys,
        master_keys={BOB: bob.master_key},
    )
    assert failures == {}
    assert [(i.signer_key_id, i.target_user_id, i.target_key_id) for i in items] == [
        (f"ed25519:{xs.user_signing.version}", BOB, bob.master.version)]


def test_signature_upload_failures_per_key() -> None:
    dev, xs = Device(ALICE, "DEV1"), CrossSigning(ALICE)
    own_devices, own_keys = _state(dev, xs)
    bob = CrossSigning(BOB)
    good = xs.sign_device(own_devices["DEV1"])
    bad_sig = copy.deepcopy(good)
    sig_id = f"ed25519:{xs.self_signing.version}"
    bad_sig["signatures"][ALICE][sig_id] = good["signatures"][ALICE]["ed25519:DEV1"]  # a signature, but not by the SSK
    changed = xs.sign_device({**own_devices["DEV1"], "algorithms": ["other"]})
    body = {
        ALICE: {"DEV1": bad_sig, "NOPE": xs.sign_device(Device(ALICE, "NOPE").device_keys())},
        BOB: {"wrongkey": xs.sign_master_of(bob.master_key)},
    }
    items, failures = e2e.check_signature_upload(
        ALICE, body, own_devices=own_devices, own_keys=own_keys, master_keys={BOB: bob.master_key}
    )
    assert items == []
    assert failures[ALICE]["DEV1"]["errcode"] == "M_INVALID_SIGNATURE"
    assert failures[ALICE]["NOPE"]["errcode"] == "M_NOT_FOUND"
    assert failures[BOB]["wrongkey"]["errcode"] == "M_NOT_FOUND"
    items, failures = e2e.check_signature_upload(
        ALICE, {ALICE: {"DEV1": changed}}, own_devices=own_devices, own_keys=own_keys, master_keys={}
    )
    assert items == [] and failures[ALICE]["DEV1"]["errcode"] == "M_INVALID_PARAM"
    # No self-signing key yet: every own device fails.
    items, failures = e2e.check_signature_upload(
        ALICE, {ALICE: {"DEV1": good}}, own_devices=own_devices, own_keys={}, master_keys={}
    )
    assert failures[ALICE]["DEV1"]["errcode"] == "M_NOT_FOUND"
    with pytest.raises(e2e.E2eKeyError):
        e2e.check_signature_upload(ALICE, {ALICE: {"DEV1": "x"}}, own_devices=own_devices, own_keys=own_keys,
                                   master_keys={})
