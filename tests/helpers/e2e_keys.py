"""Real key material for end-to-end encryption key tests: a device with an Ed25519
identity key that signs its device keys and one-time / fallback keys, and a user's
cross-signing keys (master, self-signing, user-signing) that sign each other,
devices, and other users' master keys — all with signedjson/PyNaCl, as a client would.
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any

from signedjson.key import decode_signing_key_base64, encode_signing_key_base64, generate_signing_key

from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.signing import sign_json

__all__ = ["Device", "CrossSigning", "curve_key", "signed_by"]

_counter = itertools.count(1)


def curve_key() -> str:
    """A random 32-byte public key in unpadded base64 (its shape is all the server checks)."""
    return encode_base64(os.urandom(32))


def signed_by(obj: dict[str, Any], user_id: str, key: Any) -> dict[str, Any]:
    """``obj`` with one more signature by ``user_id``'s ``key`` (kept: earlier ones)."""
    return sign_json(obj, user_id, key)


class Device:
    """One client device of ``user_id``: its signing key is ``ed25519:<device_id>``."""

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.key = generate_signing_key(device_id)
        self.public = encode_base64(self.key.verify_key.encode())
        self.curve = curve_key()

    def device_keys(self, **extra: Any) -> dict[str, Any]:
        obj = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": self.curve, f"ed25519:{self.device_id}": self.public},
            **extra,
        }
        return sign_json(obj, self.user_id, self.key)

    def otk(self, *, fallback: bool = False) -> dict[str, Any]:
        obj: dict[str, Any] = {"key": curve_key()}
        if fallback:
            obj["fallback"] = True
        return sign_json(obj, self.user_id, self.key)

    def otks(self, n: int, *, prefix: str = "AAAA") -> dict[str, Any]:
        return {f"signed_curve25519:{prefix}{next(_counter)}": self.otk() for _ in range(n)}


class CrossSigning:
    """A user's three cross-signing keys; ``*_key`` are the uploadable objects."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = _named_key()
        self.self_signing = _named_key()
        self.user_signing = _named_key()
        self.master_key = self._key(self.master, "master", signer=None)
        self.self_signing_key = self._key(self.self_signing, "self_signing", signer=self.master)
        self.user_signing_key = self._key(self.user_signing, "user_signing", signer=self.master)

    def _key(self, key: Any, usage: str, signer: Any) -> dict[str, Any]:
        obj = {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{key.version}": key.version}}
        return sign_json(obj, self.user_id, signer) if signer is not None else obj

    def upload_body(self) -> dict[str, Any]:
        return {"master_key": self.master_key, "self_signing_key": self.self_signing_key,
                "user_signing_key": self.user_signing_key}

    def sign_device(self, device_keys: dict[str, Any]) -> dict[str, Any]:
        return sign_json(copy.deepcopy(device_keys), self.user_id, self.self_signing)

    def sign_master_of(self, other_master_key: dict[str, Any]) -> dict[str, Any]:
        return sign_json(copy.deepcopy(other_master_key), self.user_id, self.user_signing)


def _named_key() -> Any:
    """An Ed25519 signing key whose version is its own public key (a cross-signing key ID)."""
    key = generate_signing_key("tmp")
    public = encode_base64(key.verify_key.encode())
    return decode_signing_key_base64("ed25519", public, encode_signing_key_base64(key))
