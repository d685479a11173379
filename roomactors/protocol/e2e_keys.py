"""End-to-end encryption keys: validating what a client uploads (client-server API,
"End-to-End Encryption": "Key algorithms", "Device keys", "One-time and fallback
keys", "Uploading keys", "Cross-signing"; keys.yaml, cross_signing.yaml).

Theory of operation
-------------------
Everything here is pure: the API layer reads what storage holds (the device's
stored keys, the user's cross-signing keys), calls these checks, and writes what
they return. Each check raises :class:`E2eKeyError` whose ``errcode`` is the one
the endpoint answers with (400).

* :func:`check_device_keys` — a ``DeviceKeys`` object for ``/keys/upload``: it names
  the requester's user and device, lists ``algorithms``, its ``keys`` are
  ``<algorithm>:<device_id>``, and it carries the device's self-signature by its
  ``ed25519:<device_id>`` key ("Uploading keys": "must be signed by that key").
* :func:`check_one_time_keys` — one-time or fallback keys: ``<algorithm>:<key_id>``
  names; a ``KeyObject`` (``key`` + ``signatures``, used by ``signed_curve25519``)
  must be signed by the device's Ed25519 key; a bare string (``curve25519``, or an
  algorithm we do not know) is accepted as the OneTimeKeys schema allows.
  Fallback keys: at most one per algorithm (keys.yaml ``fallback_keys``).
* :func:`check_cross_signing_key` — a ``CrossSigningKey``: its ``user_id``, its
  ``usage``, exactly one ``ed25519:<public key>`` key; self-signing and
  user-signing keys must be signed by the master key (cross_signing.yaml).
* :func:`check_signature_upload` — ``/keys/signatures/upload``: each signed object
  must equal the stored key except for ``signatures``/``unsigned`` (cross_signing.yaml
  "must match the key previously uploaded"), and the new signature must verify
  against the signer's key: a device of the uploader signed by its self-signing
  key, the uploader's master key signed by one of its devices, another user's
  master key signed by the uploader's user-signing key ("Cross-signing"). Failures
  are per user and key ID, as the endpoint answers them.

Keys are signedjson/PyNaCl verify keys whose ``version`` is the part of the key ID
after ``ed25519:`` (a device ID, or the public key for cross-signing keys), so
:func:`roomactors.protocol.signing.verify_json` checks them with the user ID in
the place of the server name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signedjson.key import decode_verify_key_bytes

from .b64 import decode_base64
from .errors import ProtocolError, SignatureError
from .signing import verify_json

__all__ = [
    "SHARE_DEVICE_NAMES_OVER_FEDERATION",
    "E2eKeyError",
    "CROSS_SIGNING_USAGES",
    "SignatureItem",
    "ed25519_verify_key",
    "device_ed25519_key",
    "check_device_keys",
    "check_one_time_keys",
    "check_cross_signing_key",
    "cross_signing_public_key",
    "cross_signing_verify_key",
    "strip_for_comparison",
    "one_time_keys_match",
    "check_signature_upload",
]

#: Whether device display names go to other servers, in ``/user/keys/query``,
#: ``/user/devices`` and ``m.device_list_update`` (s2s "Device Management": the name
#: "will be absent if the device has no name"). Synapse's default
#: (``allow_device_name_lookup_over_federation``) is no: names often say who owns a
#: device and where.
SHARE_DEVICE_NAMES_OVER_FEDERATION = False

#: cross_signing_key.yaml ``usage`` values, as ``/keys/device_signing/upload`` names them.
CROSS_SIGNING_USAGES = {"master_key": "master", "self_signing_key": "self_signing", "user_signing_key": "user_signing"}

_KEY_ALGS = "client-server API: Key algorithms"
_DEVICE = "client-server API: Uploading keys"
_OTK = "client-server API: One-time and fallback keys"
_XSIGN = "client-server API: Cross-signing (cross_signing.yaml)"
_SIGUP = "client-server API: POST /keys/signatures/upload"

#: Algorithms whose keys are 32-byte public keys in unpadded base64 ("Key algorithms").
_32_BYTE_KEYS = frozenset({"ed25519", "curve25519", "signed_curve25519"})
#: Bounds that keep one upload reasonable (the spec sets none; Synapse's pydantic
#: model takes any size, its database columns are unbounded text).
MAX_KEY_ID_LEN = 255
MAX_KEYS_PER_UPLOAD = 1000


class E2eKeyError(ProtocolError):
    """Uploaded key material is malformed or badly signed; ``errcode`` is the answer."""

    def __init__(self, message: str, *, errcode: str = "M_BAD_JSON", rule: str | None = None) -> None:
        super().__init__(message, rule=rule)
        self.errcode = errcode


@dataclass(frozen=True, slots=True)
class SignatureItem:
    """One signature to store: ``signer_user_id``'s key ``signer_key_id`` signed the
    key ``target_key_id`` (a device ID, or a cross-signing public key) of ``target_user_id``."""

    signer_user_id: str
    signer_key_id: str
    target_user_id: str
    target_key_id: str
    signature: str


# ------------------------------------------------------------------ primitives


def ed25519_verify_key(key_id: str, public_key: Any) -> Any:
    """A verify key for ``ed25519:<version>`` from its unpadded-base64 public key."""
    alg, _, version = key_id.partition(":") if isinstance(key_id, str) else ("", "", "")
    if alg != "ed25519" or not version:
        raise E2eKeyError(f"{key_id!r} is not an ed25519 key ID", rule=_KEY_ALGS)
    raw = _decode_key(public_key, key_id)
    return decode_verify_key_bytes(key_id, raw)


def _decode_key(public_key: Any, what: str) -> bytes:
    try:
        raw = decode_base64(public_key)
    except ValueError:
        raise E2eKeyError(f"{what}: the key is not unpadded base64", rule=_KEY_ALGS) from None
    if len(raw) != 32:
        raise E2eKeyError(f"{what}: a key of this algorithm is 32 bytes, not {len(raw)}", rule=_KEY_ALGS)
    return raw


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _check_signatures_shape(obj: Mapping[str, Any], what: str, rule: str) -> None:
    sigs = obj.get("signatures")
    if sigs is None:
        return
    if not isinstance(sigs, dict) or not all(isinstance(u, str) and _is_str_map(s) for u, s in sigs.items()):
        raise E2eKeyError(f"{what}: 'signatures' must map user IDs to key IDs to signatures", rule=rule)


def _verify(obj: dict[str, Any], user_id: str, verify_key: Any, what: str, rule: str) -> None:
    try:
        verify_json(obj, user_id, verify_key)
    except SignatureError as e:
        raise E2eKeyError(f"{what}: {e.message}", errcode="M_INVALID_SIGNATURE", rule=rule) from None


def strip_for_comparison(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The signed part of a key object: everything but ``signatures`` and ``unsigned``
    (appendices "Signing JSON": what a signature covers)."""
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


# ------------------------------------------------------------------ device keys


def device_ed25519_key(device_keys: Mapping[str, Any]) -> Any:
    """The ``ed25519:<device_id>`` verify key of stored (already checked) device keys."""
    key_id = f"ed25519:{device_keys['device_id']}"
    return ed25519_verify_key(key_id, device_keys["keys"][key_id])


def check_device_keys(device_keys: Any, user_id: str, device_id: str) -> dict[str, Any]:
    """Check a ``DeviceKeys`` object uploaded by ``user_id``'s device ``device_id``;
    return it without ``unsigned`` (servers add that part, keys.yaml ``/keys/query``)."""
    if not isinstance(device_keys, dict):
        raise E2eKeyError("'device_keys' must be an object", rule=_DEVICE)
    # device_keys.yaml: user_id / device_id "Must match the user ID [device ID] used when logging in".
    if device_keys.get("user_id") != user_id:
        raise E2eKeyError("'device_keys.user_id' is not the user who is logged in", rule=_DEVICE)
    if device_keys.get("device_id") != device_id:
        raise E2eKeyError("'device_keys.device_id' is not the device that is logged in", rule=_DEVICE)
    algorithms = device_keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise E2eKeyError("'device_keys.algorithms' must be a list of strings", rule=_DEVICE)
    keys = device_keys.get("keys")
    if not _is_str_map(keys) or not keys:
        raise E2eKeyError("'device_keys.keys' must map key IDs to keys", rule=_DEVICE)
    for key_id, key in keys.items():
        # device_keys.yaml: "The names of the properties should be in the format <algorithm>:<device_id>".
        alg, sep, kid = key_id.partition(":")
        if not sep or not alg or kid != device_id:
            raise E2eKeyError(f"device key ID {key_id!r} is not '<algorithm>:{device_id}'", rule=_DEVICE)
        if alg in _32_BYTE_KEYS:
            _decode_key(key, key_id)
    signing_id = f"ed25519:{device_id}"
    if signing_id not in keys:
        # "Each device should have one Ed25519 signing key ... must include the public part".
        raise E2eKeyError(f"'device_keys.keys' has no {signing_id} key", rule=_DEVICE)
    if not isinstance(device_keys.get("signatures"), dict):
        raise E2eKeyError("'device_keys.signatures' is required", rule=_DEVICE)
    _check_signatures_shape(device_keys, "device_keys", _DEVICE)
    # "must be signed by that key, as described in Signing JSON".
    _verify(device_keys, user_id, ed25519_verify_key(signing_id, keys[signing_id]), "device_keys", _DEVICE)
    out = {k: v for k, v in device_keys.items() if k != "unsigned"}
    return copy.deepcopy(out)


# ------------------------------------------------------------------ one-time and fallback keys


def check_one_time_keys(
    keys: Any, user_id: str, device_key: Any | None, *, fallback: bool = False
) -> dict[tuple[str, str], Any]:
    """Check ``one_time_keys`` (or ``fallback_keys`` with ``fallback=True``); return
    ``{(algorithm, key_id): key}``. ``device_key`` is the device's Ed25519 verify key
    (from this upload or storage), needed for any signed key object."""
    what = "fallback_keys" if fallback else "one_time_keys"
    if not isinstance(keys, dict):
        raise E2eKeyError(f"'{what}' must be an object", rule=_OTK)
    if len(keys) > MAX_KEYS_PER_UPLOAD:
        raise E2eKeyError(f"at most {MAX_KEYS_PER_UPLOAD} keys per upload", rule=_OTK)
    out: dict[tuple[str, str], Any] = {}
    algorithms: set[str] = set()
    for name, value in keys.items():
        # keys.yaml: "The names of the properties should be in the format <algorithm>:<key_id>".
        parts = name.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1] or len(name) > MAX_KEY_ID_LEN:
            raise E2eKeyError(f"{what} key ID {name!r} is not '<algorithm>:<key_id>'", rule=_OTK)
        alg, kid = parts
        if fallback:
            # keys.yaml fallback_keys: "There can only be at most one key per algorithm uploaded".
            if alg in algorithms:
                raise E2eKeyError(f"more than one fallback key for {alg}", rule=_OTK)
            algorithms.add(alg)
        if isinstance(value, str):
            # OneTimeKeys: a key is a string or a KeyObject ("Key algorithms": curve25519 is a bare key).
            if alg == "signed_curve25519":
                raise E2eKeyError(f"{name}: a signed_curve25519 key is a signed object", rule=_KEY_ALGS)
            if alg in _32_BYTE_KEYS:
                _decode_key(value, name)
            elif not value:
                raise E2eKeyError(f"{name}: empty key", rule=_OTK)
        elif isinstance(value, dict):
            # KeyObject: key and signatures are required; signed by the device's Ed25519 key.
            if not isinstance(value.get("key"), str):
                raise E2eKeyError(f"{name}: 'key' must be a string", rule=_KEY_ALGS)
            if alg in _32_BYTE_KEYS:
                _decode_key(value["key"], name)
            if "fallback" in value and not isinstance(value["fallback"], bool):
                raise E2eKeyError(f"{name}: 'fallback' must be a boolean", rule=_KEY_ALGS)
            if not isinstance(value.get("signatures"), dict):
                raise E2eKeyError(f"{name}: 'signatures' is required", rule=_KEY_ALGS)
            _check_signatures_shape(value, name, _KEY_ALGS)
            if device_key is None:
                raise E2eKeyError(
                    f"{name}: no device keys to check its signature with; upload device_keys first",
                    errcode="M_INVALID_SIGNATURE", rule=_OTK,
                )
            # "devices use signed_curve25519 one-time keys, signed by the device's Ed25519 key".
            _verify(value, user_id, device_key, name, _OTK)
            value = copy.deepcopy(value)
        else:
            raise E2eKeyError(f"{name}: a key is a string or a key object", rule=_OTK)
        out[(alg, kid)] = value
    return out


def one_time_keys_match(old: Any, new: Any) -> bool:
    """Whether a re-uploaded one-time key is the one stored: equal, except that a key
    object's signatures may differ between upload attempts (as Synapse compares)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: v for k, v in old.items() if k != "signatures"} == {k: v for k, v in new.items() if k != "signatures"}
    return old == new


# ------------------------------------------------------------------ cross-signing keys


def cross_signing_public_key(key: Mapping[str, Any]) -> str:
    """The public key (unpadded base64) of a checked cross-signing key."""
    return next(iter(key["keys"].values()))


def cross_signing_verify_key(key: Mapping[str, Any]) -> Any:
    """The verify key of a checked cross-signing key (its version is the public key)."""
    key_id, public = next(iter(key["keys"].items()))
    return ed25519_verify_key(key_id, public)


def check_cross_signing_key(key: Any, user_id: str, usage: str, signing_key: Any | None = None) -> dict[str, Any]:
    """Check a ``CrossSigningKey`` of ``usage`` (master, self_signing, user_signing)
    for ``user_id``; with ``signing_key`` (the master key), also its signature."""
    what = f"{usage} key"
    if not isinstance(key, dict):
        raise E2eKeyError(f"the {what} must be an object", errcode="M_INVALID_PARAM", rule=_XSIGN)
    if key.get("user_id") != user_id:
        raise E2eKeyError(f"the {what} belongs to another user", errcode="M_INVALID_PARAM", rule=_XSIGN)
    usages = key.get("usage")
    if not isinstance(usages, list) or not all(isinstance(u, str) for u in usages) or usage not in usages:
        raise E2eKeyError(f"the {what} must list {usage!r} in 'usage'", errcode="M_INVALID_PARAM", rule=_XSIGN)
    keys = key.get("keys")
    # cross_signing_key.yaml keys: "must have exactly one property, whose name is in the
    # form <algorithm>:<unpadded_base64_public_key>".
    if not _is_str_map(keys) or len(keys) != 1:
        raise E2eKeyError(f"the {what} must have exactly one key", errcode="M_INVALID_PARAM", rule=_XSIGN)
    key_id, public = next(iter(keys.items()))
    if key_id != f"ed25519:{public}":
        raise E2eKeyError(f"the {what}'s ID must be 'ed25519:<public key>'", errcode="M_INVALID_PARAM", rule=_XSIGN)
    try:
        ed25519_verify_key(key_id, public)  # a 32-byte Ed25519 public key
    except E2eKeyError as e:
        raise E2eKeyError(e.message, errcode="M_INVALID_PARAM", rule=_XSIGN) from None
    _check_signatures_shape(key, what, _XSIGN)
    if signing_key is not None:
        # signatures: "Optional for the master signing key. Other keys must be signed by
        # the user's master signing key."
        _verify(key, user_id, signing_key, f"the {what}", _XSIGN)
    return copy.deepcopy({k: v for k, v in key.items() if k != "unsigned"})


# ------------------------------------------------------------------ /keys/signatures/upload


def _failure(errcode: str, error: str) -> dict[str, str]:
    return {"errcode": errcode, "error": error}


def _merged_signature_ids(stored: Mapping[str, Any], user_id: str) -> set[str]:
    sigs = stored.get("signatures")
    if isinstance(sigs, dict) and isinstance(sigs.get(user_id), dict):
        return set(sigs[user_id])
    return set()


def check_signature_upload(
    uploader: str,
    body: Any,
    *,
    own_devices: Mapping[str, Mapping[str, Any]],
    own_keys: Mapping[str, Mapping[str, Any]],
    master_keys: Mapping[str, Mapping[str, Any] | None],
) -> tuple[list[SignatureItem], dict[str, dict[str, dict[str, str]]]]:
    """Check a ``/keys/signatures/upload`` body from ``uploader``.

    ``own_devices``: the uploader's stored device keys by device ID (signatures
    merged); ``own_keys``: its cross-signing keys by usage (``master``,
    ``self_signing``, ``user_signing``); ``master_keys``: the master key of every
    other user named in the body (None if unknown). Returns the signatures to store
    and the ``failures`` map. Raises :class:`E2eKeyError` for a body of the wrong shape.
    """
    if not isinstance(body, dict):
        raise E2eKeyError("the body must map user IDs to key IDs to signed objects", rule=_SIGUP)
    for user_id, objects in body.items():
        if not isinstance(objects, dict) or not all(isinstance(o, dict) for o in objects.values()):
            raise E2eKeyError(f"{user_id}: must map key IDs to signed objects", errcode="M_INVALID_PARAM", rule=_SIGUP)
    items: list[SignatureItem] = []
    failures: dict[str, dict[str, dict[str, str]]] = {}

    def fail(user_id: str, key_id: str, errcode: str, error: str) -> None:
        failures.setdefault(user_id, {})[key_id] = _failure(errcode, error)

    def check_cross_signed(user_id: str, key_id: str, signed: dict[str, Any], new_sigs: dict[str, str],
                           signer: Mapping[str, Any] | None, signer_name: str,
                           target: Mapping[str, Any] | None, target_what: str, unknown: str, mismatch: str) -> None:
        """``signed`` is the stored ``target`` (None: ``unknown``) signed by the
        uploader's cross-signing key ``signer`` (its self-signing or user-signing
        key): the signature is kept, or the failure recorded."""
        if signer is None:
            fail(user_id, key_id, "M_NOT_FOUND", f"no {signer_name} key has been uploaded")
            return
        if target is None:
            fail(user_id, key_id, "M_NOT_FOUND", unknown)
            return
        signer_key_id = f"ed25519:{cross_signing_public_key(signer)}"
        if signer_key_id not in new_sigs:
            fail(user_id, key_id, "M_INVALID_SIGNATURE", f"not signed by the {signer_name} key")
            return
        if strip_for_comparison(signed) != strip_for_comparison(target):
            fail(user_id, key_id, "M_INVALID_PARAM", mismatch)
            return
        try:
            _verify(signed, uploader, cross_signing_verify_key(signer), target_what, _SIGUP)
        except E2eKeyError as e:
            fail(user_id, key_id, "M_INVALID_SIGNATURE", e.message)
            return
        items.append(SignatureItem(uploader, signer_key_id, user_id, key_id, new_sigs[signer_key_id]))

    master = own_keys.get("master")
    self_signing = own_keys.get("self_signing")
    user_signing = own_keys.get("user_signing")
    master_public = cross_signing_public_key(master) if master else None

    for user_id, objects in body.items():
        for key_id, signed in objects.items():
            sigs = signed.get("signatures")
            if not isinstance(sigs, dict) or not _is_str_map(sigs.get(uploader)):
                fail(user_id, key_id, "M_INVALID_SIGNATURE", f"no signatures by {uploader}")
                continue
            new_sigs: dict[str, str] = sigs[uploader]
            if user_id == uploader and master_public is not None and key_id == master_public:
                # The uploader's master key, signed by the uploader's own devices.
                assert master is not None
                if strip_for_comparison(signed) != strip_for_comparison(master):
                    fail(user_id, key_id, "M_INVALID_PARAM", "the signed key is not the stored master key")
                    continue
                known = _merged_signature_ids(master, uploader)
                found: list[SignatureItem] = []
                error: str | None = None
                for signer_key_id, sig in new_sigs.items():
                    if signer_key_id in known:
                        continue  # already stored: nothing new
                    device_id = signer_key_id.partition(":")[2]
                    device = own_devices.get(device_id)
                    if not signer_key_id.startswith("ed25519:") or device is None or signer_key_id not in device.get("keys", {}):
                        error = f"{signer_key_id} is not a device of {uploader}"
                        break
                    try:
                        _verify(signed, uploader, ed25519_verify_key(signer_key_id, device["keys"][signer_key_id]),
                                "master key", _SIGUP)
                    except E2eKeyError as e:
                        error = e.message
                        break
                    found.append(SignatureItem(uploader, signer_key_id, uploader, key_id, sig))
                if error is not None:
                    fail(user_id, key_id, "M_INVALID_SIGNATURE", error)
                else:
                    items.extend(found)
            elif user_id == uploader:
                # One of the uploader's devices, signed by its self-signing key.
                check_cross_signed(user_id, key_id, signed, new_sigs, self_signing, "self-signing",
                                   own_devices.get(key_id), "device keys", "unknown device",
                                   "the signed keys are not the device's stored keys")
            else:
                # Another user's master key, signed by the uploader's user-signing key.
                target = master_keys.get(user_id)
                if target is not None and cross_signing_public_key(target) != key_id:
                    target = None
                check_cross_signed(user_id, key_id, signed, new_sigs, user_signing, "user-signing",
                                   target, "master key", f"{key_id} is not the master key of {user_id}",
                                   "the signed key is not the user's master key")
    return items, failures
