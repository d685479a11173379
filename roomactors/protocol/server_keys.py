"""Server signing keys: publishing ours, checking others' (s2s "Retrieving server keys").

Theory of operation
-------------------
Every homeserver publishes a self-signed JSON object at ``/_matrix/key/v2/server``
(s2s "Publishing Keys")::

    {"server_name": "example.org",
     "verify_keys":     {"ed25519:abc": {"key": "<unpadded b64>"}},
     "old_verify_keys": {"ed25519:0ld": {"key": "<unpadded b64>", "expired_ts": 1532645052628}},
     "valid_until_ts": 1652262000000,
     "signatures": {"example.org": {"ed25519:abc": "<sig>"}}}

``verify_keys`` may sign requests and events; ``old_verify_keys`` only ever signed
events (they stay published so that old events still verify).

* :func:`build_server_keys_response` makes ours and signs it with the current key
  (through :func:`~.signing.sign_json`, which copies: signedjson mutates).
* :func:`check_server_keys_response` checks a response fetched directly from
  ``expected_server``: right ``server_name``, a ``valid_until_ts``, every ed25519 key
  of ``verify_keys`` has signed the object, and parses the keys into a
  :class:`ServerKeys`. Keys of other algorithms are ignored (appendices "Checking
  for a Signature" step 2).
* :func:`check_notary_response` checks a ``/_matrix/key/v2/query`` answer from a
  notary (s2s "Querying Keys Through Another Server"): each entry of
  ``server_keys`` must pass the same checks, and when we know the notary's keys it
  must also carry a verifying signature of the notary. A bad entry is dropped and
  reported; it does not spoil the good ones.
* :func:`add_notary_signature` is the notary side: a stored response with our
  signature added next to the origin's.

The key validity a caller may rely on (:attr:`ServerKey.valid_until_ts`) is the
lesser of the published ``valid_until_ts`` and seven days after the check ("Servers
MUST use the lesser of this field and 7 days into the future", keys_server.yaml);
for an old key it is its ``expired_ts``. Everything here is pure: the time comes in
as ``now_ms``, the notary's keys as a mapping the caller already fetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signedjson.key import decode_verify_key_bytes, get_verify_key

from .b64 import decode_base64, encode_base64
from .errors import ProtocolError, SignatureError
from .ids import is_valid_server_name
from .signing import sign_json, verify_json

__all__ = [
    "MAX_KEY_VALIDITY_MS",
    "KeyResponseError",
    "OldVerifyKey",
    "ServerKey",
    "ServerKeys",
    "NotaryResult",
    "key_id_of",
    "build_server_keys_response",
    "check_server_keys_response",
    "check_notary_response",
    "add_notary_signature",
]

#: keys_server.yaml ``valid_until_ts``: "the lesser of this field and 7 days into the future".
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000

_RULE_RETRIEVE = "s2s: Retrieving server keys"
_RULE_NOTARY = "s2s: Querying Keys Through Another Server"
_ED25519 = "ed25519"


class KeyResponseError(ProtocolError):
    """A key response (or one notary entry) fails the spec's checks: do not use it."""

    errcode = "M_UNAUTHORIZED"


@dataclass(frozen=True, slots=True)
class OldVerifyKey:
    """A key we used to sign with (published under ``old_verify_keys``)."""

    key_id: str
    #: a signedjson/PyNaCl verify key carrying ``.alg`` and ``.version``
    verify_key: Any
    expired_ts: int


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One checked verify key of a remote server."""

    key_id: str
    verify_key: Any
    #: the time until which the key may be relied on (see the module docstring)
    valid_until_ts: int
    #: set for an ``old_verify_keys`` entry: when the server stopped using it
    expired_ts: int | None = None

    @property
    def key_b64(self) -> str:
        return encode_base64(self.verify_key.encode())


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """A checked ``/_matrix/key/v2/server`` response."""

    server_name: str
    #: the response's own ``valid_until_ts``, as published
    valid_until_ts: int
    #: key ID -> key, ``verify_keys`` and ``old_verify_keys`` together (a key ID in
    #: both is taken from ``verify_keys``)
    keys: Mapping[str, ServerKey]
    #: the response as received (signatures included), for storage and the notary
    response: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class NotaryResult:
    """What :func:`check_notary_response` accepted and what it dropped."""

    accepted: tuple[ServerKeys, ...]
    #: (server_name as given or None, reason) per dropped entry
    rejected: tuple[tuple[str | None, str], ...]


def key_id_of(key: Any) -> str:
    """``alg:version`` of a signedjson signing or verify key."""
    return f"{key.alg}:{key.version}"


def build_server_keys_response(
    *,
    server_name: str,
    signing_key: Any,
    valid_until_ts: int,
    old_verify_keys: Iterable[OldVerifyKey] = (),
) -> dict[str, Any]:
    """Our ``/_matrix/key/v2/server`` body, signed by ``signing_key`` (s2s "Publishing Keys")."""
    current_id = key_id_of(signing_key)
    verify_key = get_verify_key(signing_key)
    old = {
        k.key_id: {"key": encode_base64(k.verify_key.encode()), "expired_ts": k.expired_ts}
        for k in old_verify_keys
        if k.key_id != current_id
    }
    body = {
        "server_name": server_name,
        "verify_keys": {current_id: {"key": encode_base64(verify_key.encode())}},
        "old_verify_keys": old,
        "valid_until_ts": valid_until_ts,
    }
    return sign_json(body, server_name, signing_key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_key(key_id: str, entry: Any, server: str) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise KeyResponseError(f"{server}: key {key_id} has no 'key' string", rule=_RULE_RETRIEVE)
    try:
        raw = decode_base64(entry["key"])
        return decode_verify_key_bytes(key_id, raw)
    except ValueError:  # bad base64, or not 32 bytes (nacl's error subclasses ValueError)
        raise KeyResponseError(f"{server}: key {key_id} is not an ed25519 public key", rule=_RULE_RETRIEVE) from None


def _ed25519_entries(obj: Any, what: str, server: str) -> Iterable[tuple[str, Any]]:
    if not isinstance(obj, dict):
        raise KeyResponseError(f"{server}: {what} is not an object", rule=_RULE_RETRIEVE)
    for key_id, entry in obj.items():
        alg, sep, version = key_id.partition(":")
        if alg != _ED25519:
            continue  # unknown algorithms are ignored (appendices "Checking for a Signature" step 2)
        if not sep or not version:
            raise KeyResponseError(f"{server}: malformed key ID {key_id!r} in {what}", rule=_RULE_RETRIEVE)
        yield key_id, entry


def check_server_keys_response(
    response: Any, *, expected_server: str, now_ms: int, allow_expired: bool = False
) -> ServerKeys:
    """Check a ``/_matrix/key/v2/server`` response of ``expected_server`` (s2s
    "Retrieving server keys", keys.yaml); raise :class:`KeyResponseError`.

    ``allow_expired`` accepts a response whose ``valid_until_ts`` has passed (a
    notary's cached copy of an offline server, still good for old events); a
    server's own answer must be current.
    """
    if not isinstance(response, dict):
        raise KeyResponseError(f"{expected_server}: key response is not a JSON object", rule=_RULE_RETRIEVE)
    # keys.yaml: server_name is "the homeserver's server name" -- the one we asked.
    if response.get("server_name") != expected_server:
        raise KeyResponseError(
            f"key response for {expected_server} names server {response.get('server_name')!r}", rule=_RULE_RETRIEVE
        )
    # keys.yaml: valid_until_ts is required (an integer, ms).
    valid_until_ts = response.get("valid_until_ts")
    if not _is_int(valid_until_ts):
        raise KeyResponseError(f"{expected_server}: valid_until_ts missing or not an integer", rule=_RULE_RETRIEVE)
    if valid_until_ts < now_ms and not allow_expired:
        raise KeyResponseError(f"{expected_server}: key response expired at {valid_until_ts}", rule=_RULE_RETRIEVE)
    usable_until = min(valid_until_ts, now_ms + MAX_KEY_VALIDITY_MS)

    keys: dict[str, ServerKey] = {}
    old = response.get("old_verify_keys", {})
    for key_id, entry in _ed25519_entries(old, "old_verify_keys", expected_server):
        verify_key = _parse_key(key_id, entry, expected_server)
        expired_ts = entry.get("expired_ts")
        if not _is_int(expired_ts):
            raise KeyResponseError(f"{expected_server}: old key {key_id} has no integer expired_ts", rule=_RULE_RETRIEVE)
        keys[key_id] = ServerKey(key_id, verify_key, min(expired_ts, usable_until), expired_ts)

    current = response.get("verify_keys")
    current_ids: list[str] = []
    for key_id, entry in _ed25519_entries(current, "verify_keys", expected_server):
        keys[key_id] = ServerKey(key_id, _parse_key(key_id, entry, expected_server), usable_until)
        current_ids.append(key_id)
    if not current_ids:
        raise KeyResponseError(f"{expected_server}: no ed25519 key in verify_keys", rule=_RULE_RETRIEVE)
    # keys.yaml signatures: "Digital signatures for this object signed using the
    # verify_keys" -- every current key must have signed the response.
    for key_id in current_ids:
        try:
            verify_json(response, expected_server, keys[key_id].verify_key)
        except SignatureError as e:
            raise KeyResponseError(f"{expected_server}: response not self-signed by {key_id}: {e.message}", rule=_RULE_RETRIEVE) from None
    return ServerKeys(expected_server, valid_until_ts, keys, response)


def check_notary_response(
    response: Any,
    *,
    notary: str,
    notary_keys: Mapping[str, Any] | None,
    requested: Iterable[str],
    now_ms: int,
) -> NotaryResult:
    """Check a notary's ``/_matrix/key/v2/query`` answer (s2s "Querying Keys Through
    Another Server", keys_query_response.yaml).

    Each entry of ``server_keys`` must be a response for one of the ``requested``
    servers passing :func:`check_server_keys_response` (cached, possibly expired
    copies are allowed: "Notary servers can return keys for servers that are
    offline ... by using cached responses"). With ``notary_keys`` (key ID -> verify
    key) each entry must also carry a verifying signature of ``notary`` by one of
    them ("The receiving (notary) server must sign the keys returned"). Raises
    :class:`KeyResponseError` only when the envelope itself is malformed.
    """
    if not isinstance(response, dict) or not isinstance(response.get("server_keys"), list):
        raise KeyResponseError(f"notary {notary}: response has no server_keys array", rule=_RULE_NOTARY)
    wanted = set(requested)
    accepted: list[ServerKeys] = []
    rejected: list[tuple[str | None, str]] = []
    for entry in response["server_keys"]:
        server = entry.get("server_name") if isinstance(entry, dict) else None
        server = server if isinstance(server, str) else None
        if server is None or server not in wanted or not is_valid_server_name(server):
            rejected.append((server, "entry is for a server we did not ask about"))
            continue
        try:
            keys = check_server_keys_response(entry, expected_server=server, now_ms=now_ms, allow_expired=True)
            if notary_keys is not None and server != notary:
                _check_notary_signature(entry, notary, notary_keys)
        except KeyResponseError as e:
            rejected.append((server, str(e)))
            continue
        accepted.append(keys)
    return NotaryResult(tuple(accepted), tuple(rejected))


def _check_notary_signature(entry: dict, notary: str, notary_keys: Mapping[str, Any]) -> None:
    sigs = entry.get("signatures", {}).get(notary)
    usable = [key_id for key_id in (sigs if isinstance(sigs, dict) else {}) if key_id in notary_keys]
    if not usable:
        raise KeyResponseError(f"entry not signed by notary {notary} with a known key", rule=_RULE_NOTARY)
    for key_id in usable:
        try:
            verify_json(entry, notary, notary_keys[key_id])
        except SignatureError as e:
            raise KeyResponseError(f"bad notary signature by {notary}: {e.message}", rule=_RULE_NOTARY) from None


def add_notary_signature(response: Mapping[str, Any], notary: str, signing_key: Any) -> dict[str, Any]:
    """A copy of a stored key response with ``notary``'s signature added next to the
    origin's (s2s "Querying Keys Through Another Server": the notary "will
    additionally sign the response from the queried server")."""
    return sign_json(dict(response), notary, signing_key)
