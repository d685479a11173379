"""Shared fixtures for the pure protocol kernel tests.

Everything here is synchronous and session-scoped (immutable keys, pure builders),
so hypothesis tests may use it without function-scoped-fixture surprises.

* Spec appendix vectors live in ``tests/vectors/*.json``, each naming its source
  section; test modules load them at import time (they parametrize over them).
* ``spec_key`` is the appendix "Cryptographic Test Vectors" signing key (server
  ``domain``, key ``ed25519:1``); ``key_for(server)`` returns a fixed, deterministic
  key per other server name so signatures are reproducible.
* ``make_pdu(room_version, **fields)`` builds a well-formed, signed PDU in the
  shape that room version wants (pairs vs IDs, event_id or not, hash room IDs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key

from roomactors.protocol.b64 import encode_base64, encode_base64_urlsafe
from roomactors.protocol.room_versions import EventIdFormat, RoomIdFormat, get_rules
from roomactors.protocol.signing import sign_event

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"

def load_vectors(name: str) -> dict[str, Any]:
    return json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))


def fake_event_id(label: str, room_version: str) -> str:
    """A syntactically valid event ID for ``room_version``, derived from ``label``."""
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


def key_for_server(server: str) -> Any:
    """A deterministic ed25519 signing key (version ``1``) for ``server``."""
    seed = hashlib.sha256(server.encode()).digest()
    return decode_signing_key_base64("ed25519", "1", encode_base64(seed))


_UNSET: Any = object()


def build_pdu(
    room_version: str,
    *,
    type: str = "m.room.message",
    sender: str = "@alice:example.org",
    content: dict | None = None,
    state_key: str | None = _UNSET,
    room_id: str | None = _UNSET,
    depth: int = 5,
    origin_server_ts: int = 1_700_000_000_000,
    prev: Sequence[str] = ("prev",),
    auth: Sequence[str] = ("create", "member"),
    event_id: str = "$event1:example.org",
    sign: bool = True,
    **extra: Any,
) -> dict:
    """A well-formed PDU for ``room_version``, signed by the sender's server unless
    ``sign=False`` (then with placeholder ``hashes``/``signatures``).

    ``prev``/``auth`` are labels turned into event IDs of the version's format (pairs
    in v1/v2); ``room_id=None`` omits the key (the v12 create event);
    ``state_key=None`` (the default) makes a non-state event; ``extra`` adds keys.
    """
    rules = get_rules(room_version)

    def refs(labels: Sequence[str]) -> list:
        ids = [fake_event_id(label, room_version) for label in labels]
        if rules.event_refs_are_pairs:
            return [[i, {"sha256": encode_base64(hashlib.sha256(i.encode()).digest())}] for i in ids]
        return ids

    event: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": {"body": "hello"} if content is None else content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": refs(list(prev)),
        "auth_events": refs(list(auth)),
    }
    if room_id is _UNSET:
        room_id = fake_room_id(room_version)
    if room_id is not None:
        event["room_id"] = room_id
    if state_key is not _UNSET and state_key is not None:
        event["state_key"] = state_key
    if rules.pdu_has_event_id:
        event["event_id"] = event_id
    event.update(extra)
    if sign:
        server = sender.partition(":")[2]
        return sign_event(event, server, key_for_server(server), room_version)
    event.setdefault("hashes", {"sha256": "A" * 43})
    event.setdefault("signatures", {})
    return event


@pytest.fixture(scope="session")
def spec_key() -> Any:
    v = load_vectors("json_signing.json")
    algorithm, version = v["key_id"].split(":")
    return decode_signing_key_base64(algorithm, version, v["signing_key_seed"])


@pytest.fixture(scope="session")
def spec_verify_key(spec_key: Any) -> Any:
    return get_verify_key(spec_key)


@pytest.fixture(scope="session")
def key_for() -> Callable[[str], Any]:
    return key_for_server


@pytest.fixture(scope="session")
def make_pdu() -> Callable[..., dict]:
    return build_pdu
