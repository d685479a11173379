"""Signing JSON and events (appendices "Signing JSON", "Checking for a Signature";
server-server API "Signing Events", "Validating hashes and signatures on received
events"; rooms/fragments/v5-signing-requirements).

Theory of operation
-------------------
A JSON signature covers the canonical JSON of the object without ``signatures``
and ``unsigned``. Keys are signedjson/PyNaCl keys carrying ``.alg`` and
``.version``, so a key ID is ``f"{alg}:{version}"``.

An event is signed over its *redacted* form after ``hashes.sha256`` is set, so a
signature survives redaction while the content hash detects it.
:func:`verify_event_signatures` decides which servers must have signed
(:func:`required_signers`) and checks them against the keys the caller already
fetched — this module does no I/O. Everything returns new objects: we never hand
caller-owned dicts to code that mutates (``signedjson.sign_json`` does).

Signing our own events fast
~~~~~~~~~~~~~~~~~~~~~~~~~~~
Every local send signs an event, so :func:`sign_event` has two paths with one
result. The *reference path* is the algorithm as the spec writes it: deep-copy,
content hash, redact (copying), sign the redaction (copying again). The *fast path*
takes any event that is plain JSON (:func:`~.canonical.is_plain_json`: no floats,
big integers, tuples or subclasses — every event a client or this server builds)::

    event ─► orjson round trip (exact deep copy, key order kept)
          ─► content hash: sha256(orjson sorted(event − unsigned/signatures/hashes))
          ─► redacted_view (no copies) − signatures/unsigned ─► orjson sorted ─► B
          ─► ed25519 sign B;  reference hash = sha256(B)

``B`` is both what the signature covers and what the reference hash hashes (the
redacted event without ``signatures``/``unsigned``: the signature is not part of
it), so :func:`sign_event_and_hash` returns the event ID's hash for free. Anything
the fast path is unsure of (not plain, or orjson refuses a string) goes down the
reference path, which raises the reference errors. ``tests/protocol/
test_fast_paths.py`` proves the paths equal byte for byte, key order included.
"""

from __future__ import annotations

import copy
import enum
import hashlib
from typing import Any, Mapping, NamedTuple

import orjson
from nacl.exceptions import BadSignatureError

from .b64 import decode_base64, encode_base64
from .canonical import canonical_json, is_plain_json
from .errors import InvalidEvent, SignatureError
from .hashing import check_content_hash, content_hash, reference_hash
from .ids import server_name_of
from .redaction import redact_with_rules, redacted_view
from .room_versions import RoomVersionRules, get_rules

__all__ = [
    "sign_json",
    "verify_json",
    "sign_event",
    "sign_event_and_hash",
    "SignedEvent",
    "required_signers",
    "verify_event_signatures",
    "Verified",
    "verify_event",
    "VerifyKeys",
]

#: server name -> key ID -> (verify key, valid_until_ts or None)
VerifyKeys = Mapping[str, Mapping[str, tuple[Any, int | None]]]

_SUPPORTED_ALGS = ("ed25519",)


def _signable_bytes(obj: dict) -> bytes:
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def _key_id(key: Any) -> str:
    return f"{key.alg}:{key.version}"


def sign_json(obj: dict, server_name: str, signing_key: Any) -> dict:
    """A new dict: ``obj`` plus ``signatures[server_name][alg:version]`` (appendices "Signing Details")."""
    if not isinstance(obj, dict):
        raise InvalidEvent("only JSON objects can be signed", rule="appendices: Signing JSON")
    signed = copy.deepcopy(obj)
    signature = signing_key.sign(_signable_bytes(signed)).signature
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        signatures = {}
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, dict):
        server_sigs = {}
    server_sigs[_key_id(signing_key)] = encode_base64(signature)
    signatures[server_name] = server_sigs
    signed["signatures"] = signatures
    return signed


def verify_json(obj: dict, server_name: str, verify_key: Any) -> None:
    """Check ``server_name``'s signature by ``verify_key`` on ``obj`` (appendices
    "Checking for a Signature"); raise :class:`SignatureError` if absent or bad."""
    key_id = _key_id(verify_key)
    sigs = obj.get("signatures") if isinstance(obj, dict) else None
    if not isinstance(sigs, dict) or not isinstance(sigs.get(server_name), dict):
        raise SignatureError(f"no signatures from {server_name}", rule="appendices: Checking for a Signature step 1")
    sig_b64 = sigs[server_name].get(key_id)
    if sig_b64 is None:
        raise SignatureError(f"no signature from {server_name} with key {key_id}", rule="appendices: Checking for a Signature step 3")
    try:
        sig = decode_base64(sig_b64)
    except ValueError:
        raise SignatureError(f"undecodable signature from {server_name} {key_id}", rule="appendices: Checking for a Signature step 4") from None
    try:
        message = _signable_bytes(obj)
    except InvalidEvent as e:
        raise SignatureError(f"object is not canonical JSON: {e}", rule="appendices: Checking for a Signature step 6") from None
    try:
        verify_key.verify(message, sig)
    except (BadSignatureError, ValueError, TypeError):
        # PyNaCl raises ValueError for a signature of the wrong length.
        raise SignatureError(f"bad signature from {server_name} {key_id}", rule="appendices: Checking for a Signature step 7") from None


def sign_event(event: dict, server_name: str, signing_key: Any, room_version: str) -> dict:
    """A new dict: ``event`` with ``hashes.sha256`` set and ``server_name``'s signature
    over its redacted form (s2s "Adding hashes and signatures to outgoing events")."""
    return sign_event_and_hash(event, server_name, signing_key, get_rules(room_version)).event


class SignedEvent(NamedTuple):
    """What :func:`sign_event_and_hash` returns."""

    #: the signed event, exactly what :func:`sign_event` returns
    event: dict
    #: its raw reference hash, equal to ``reference_hash(event, rules)``
    reference_hash: bytes
    #: True when the fast path built it, so ``is_plain_json(event)`` holds and its
    #: canonical JSON is ``orjson.dumps(event, option=OPT_SORT_KEYS)`` (if orjson
    #: accepts every string); False when the reference path did (nothing implied)
    plain: bool


_SORTED = orjson.OPT_SORT_KEYS
_NOT_SIGNED = ("signatures", "unsigned")
_NOT_CONTENT_HASHED = ("unsigned", "signatures", "hashes")


def sign_event_and_hash(event: dict, server_name: str, signing_key: Any, rules: RoomVersionRules) -> SignedEvent:
    """:func:`sign_event` under ``rules``, with the signed event's reference hash (the
    event ID of v3+) computed from the bytes that were signed. See "Signing our own
    events fast" in the module docstring."""
    fast = _sign_plain_event(event, server_name, signing_key, rules)
    if fast is not None:
        return fast
    signed = _sign_event_reference(event, server_name, signing_key, rules)
    return SignedEvent(signed, reference_hash(signed, rules), False)


def _sign_event_reference(event: dict, server_name: str, signing_key: Any, rules: RoomVersionRules) -> dict:
    """The algorithm as the spec states it (every step on a fresh copy)."""
    out = copy.deepcopy(event)
    out["hashes"] = {"sha256": content_hash(out)}
    signed_redacted = sign_json(redact_with_rules(out, rules), server_name, signing_key)
    out["signatures"] = signed_redacted["signatures"]
    return out


def _sign_plain_event(event: Any, server_name: str, signing_key: Any, rules: RoomVersionRules) -> SignedEvent | None:
    """The fast path, or ``None`` when the event is not plain JSON (the reference
    path then decides, and raises its errors)."""
    if type(event) is not dict or type(server_name) is not str or not is_plain_json(event):
        return None
    try:
        out = orjson.loads(orjson.dumps(event))  # exact deep copy of plain JSON
        hashed = orjson.dumps({k: v for k, v in out.items() if k not in _NOT_CONTENT_HASHED}, option=_SORTED)
        out["hashes"] = {"sha256": encode_base64(hashlib.sha256(hashed).digest())}
        view = redacted_view(out, rules)
        signable = orjson.dumps({k: v for k, v in view.items() if k not in _NOT_SIGNED}, option=_SORTED)
    except orjson.JSONEncodeError:
        return None  # e.g. a lone surrogate: the reference path raises InvalidEvent
    signature = encode_base64(signing_key.sign(signable).signature)
    # sign_json's merge: the redacted event keeps ``signatures`` (every version does),
    # so existing signatures survive and ours is added or replaced.
    existing = view.get("signatures")
    signatures = existing if isinstance(existing, dict) else {}
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, dict):
        server_sigs = {}
    server_sigs[_key_id(signing_key)] = signature
    signatures[server_name] = server_sigs
    out["signatures"] = signatures
    return SignedEvent(out, hashlib.sha256(signable).digest(), True)


def _is_third_party_invite(event: dict) -> bool:
    content = event.get("content")
    return (
        event.get("type") == "m.room.member"
        and isinstance(content, dict)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signers(event: dict, rules: RoomVersionRules) -> set[str]:
    """The servers whose signatures ``event`` must carry (s2s "Validating hashes and
    signatures on received events"):

    * the ``sender``'s server — except for an invite made from a third-party invite,
      which "may be [sent by] a different server";
    * v1/v2: also the domain of ``event_id``;
    * v8+: for any ``m.room.member`` event whose content has
      ``join_authorised_via_users_server``, that user's server (auth rule 4.2.1 in
      v8–v11, 5.2.1 in v12: "validly signed by the homeserver of the user ID" — the
      rule applies whatever the membership, so this does too).
    """
    required: set[str] = set()
    sender = event.get("sender")
    if not isinstance(sender, str):
        raise InvalidEvent("event has no sender", rule="s2s: PDU format")
    if not _is_third_party_invite(event):
        required.add(server_name_of(sender))
    if rules.require_event_id_domain_signature:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEvent("room versions 1 and 2 need an event_id", rule="rooms v1: Event IDs")
        required.add(server_name_of(event_id))
    content = event.get("content")
    if (
        rules.restricted_join_allowed
        and event.get("type") == "m.room.member"
        and isinstance(content, dict)
        and "join_authorised_via_users_server" in content
    ):
        via = content["join_authorised_via_users_server"]
        if not isinstance(via, str):
            raise InvalidEvent("join_authorised_via_users_server is not a user ID", rule="auth 4.2")
        required.add(server_name_of(via))
    return required


def verify_event_signatures(event: dict, room_version: str, verify_keys: VerifyKeys) -> None:
    """Check every signature the spec requires on ``event``; raise :class:`SignatureError`.

    ``verify_keys`` maps server name -> key ID -> ``(verify_key, valid_until_ts or None)``.
    Signatures are checked over the redacted event, so a redacted copy verifies too.
    Keys with unknown algorithms are ignored (appendices step 2). From v5
    (fragments/v5-signing-requirements) a key whose ``valid_until_ts`` is before the
    event's ``origin_server_ts`` is treated as unknown. Every signature by a usable
    key of a required server must verify, and each required server needs at least one.
    A third-party-invite member event, exempt from the sender-server requirement,
    must still carry at least one verifying signature.
    """
    rules = get_rules(room_version)
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object", rule="s2s: PDU format")
    redacted = redact_with_rules(event, rules)
    signatures = redacted.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("event has no signatures", rule="s2s: Validating signatures")
    origin_server_ts = event.get("origin_server_ts")
    required = required_signers(event, rules)
    candidates = required or set(signatures)
    verified_servers: set[str] = set()
    for server in sorted(candidates):
        server_sigs = signatures.get(server)
        if not isinstance(server_sigs, dict):
            continue
        known = verify_keys.get(server, {})
        for key_id in server_sigs:
            if not isinstance(key_id, str) or key_id.split(":", 1)[0] not in _SUPPORTED_ALGS:
                continue  # appendices "Checking for a Signature" step 2
            entry = known.get(key_id)
            if entry is None:
                continue  # unknown key: skipped
            verify_key, valid_until_ts = entry
            if rules.enforce_key_validity and valid_until_ts is not None:
                if not isinstance(origin_server_ts, int) or valid_until_ts < origin_server_ts:
                    continue  # expired for this event: skipped (v5 signing requirements)
            if _key_id(verify_key) != key_id:
                raise SignatureError(f"verify key for {server} {key_id} has ID {_key_id(verify_key)}", rule="s2s: Validating signatures")
            verify_json(redacted, server, verify_key)
            verified_servers.add(server)
    missing = required - verified_servers
    if missing:
        raise SignatureError(
            f"missing a valid signature from {', '.join(sorted(missing))}", rule="s2s: Validating signatures"
        )
    if not verified_servers:
        raise SignatureError("no verifiable signature on event", rule="s2s: Validating signatures")


class Verified(enum.Enum):
    """Outcome of :func:`verify_event` (ruma's ``Verified``)."""

    #: Signatures and content hash are good: use the event as received.
    ALL = "all"
    #: Signatures are good but the content hash is not: use the redacted copy.
    SIGNATURES = "signatures"


def verify_event(event: dict, room_version: str, verify_keys: VerifyKeys) -> Verified:
    """Signatures, then content hash (s2s "Validating hashes and signatures on received events")."""
    verify_event_signatures(event, room_version, verify_keys)
    return Verified.ALL if check_content_hash(event) else Verified.SIGNATURES
