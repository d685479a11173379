"""Shared-secret registration MAC: the exact bytes Synapse's admin register API expects."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from api.shared_secret import registration_mac, verify_registration_mac

# Known answers produced by Synapse 1.163.2's own client,
# synapse._scripts.register_new_matrix_user.request_registration (the script behind
# `register_new_matrix_user`), with its HTTP calls stubbed to capture the posted mac.
# Synapse's docs (admin_api/register_api.md) give the algorithm but only a
# placeholder mac, so these are the closest thing to a published vector.
SYNAPSE_VECTORS = [
    (("s3cret-shared", "thisisanonce", "pepper_roni", "pizza", True, None), "48dd7685949f498dd8885cba1f0c981b0d1a85ba"),
    (("s3cret-shared", "thisisanonce", "pepper_roni", "pizza", False, None), "25c7c9c06752badcda894c4292dfac0b49bcc373"),
    (("sëcret", "nönce", "ünicode", "pässwörd", False, "support"), "dadf8bd4bc9da91f30cbddfe7b3013173142855e"),
]


@pytest.mark.parametrize(("fields", "mac"), SYNAPSE_VECTORS)
def test_matches_synapse(fields: tuple, mac: str) -> None:
    secret, nonce, username, password, admin, user_type = fields
    assert registration_mac(secret, nonce, username, password, admin, user_type=user_type) == mac
    assert verify_registration_mac(secret, nonce, username, password, admin, mac, user_type=user_type)


def test_matches_a_hand_built_hmac() -> None:
    message = b"n\x00alice\x00pw\x00notadmin"
    expected = hmac.new(b"key", message, hashlib.sha1).hexdigest()
    assert registration_mac("key", "n", "alice", "pw", False) == expected
    assert len(expected) == 40


def test_every_field_is_covered() -> None:
    base = registration_mac("k", "n", "u", "p", False)
    assert len({
        base,
        registration_mac("K", "n", "u", "p", False),
        registration_mac("k", "N", "u", "p", False),
        registration_mac("k", "n", "U", "p", False),
        registration_mac("k", "n", "u", "P", False),
        registration_mac("k", "n", "u", "p", True),
        registration_mac("k", "n", "u", "p", False, user_type="bot"),
    }) == 7
    # The NUL separators keep field boundaries: moving a character across one changes the mac.
    assert registration_mac("k", "n", "ab", "c", False) != registration_mac("k", "n", "a", "bc", False)


@pytest.mark.parametrize("wrong", ["", "0" * 40, "25C7C9C06752BADCDA894C4292DFAC0B49BCC373", "ünïcode"])
def test_verify_rejects_wrong_macs(wrong: str) -> None:
    assert not verify_registration_mac("s3cret-shared", "thisisanonce", "pepper_roni", "pizza", False, wrong)
