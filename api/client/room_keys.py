"""Server-side key backups: ``/room_keys/version`` and ``/room_keys/keys``
(client-server "Server-side key backups", key_backup.yaml).

Theory of operation
-------------------
Each view authenticates the requester, validates the request completely (so a bad
request never reaches the writer), then runs ONE ``storage.room_keys`` function in
one ``db.write`` (or ``db.read``) job and answers with the spec's shapes. The
storage refusals map to the spec's errors: ``UnknownBackupVersion`` → 404
``M_NOT_FOUND``; ``WrongBackupVersion`` → 403 ``M_WRONG_ROOM_KEYS_VERSION`` with
``current_version``; ``AlgorithmMismatch`` → 400 ``M_INVALID_PARAM``. Backups are
per user: every path acts on the requester's own backups only.

**Versions.** ``POST /room_keys/version`` needs ``algorithm`` (a non-empty string;
any algorithm is stored, as Synapse does, so clients may use newer ones than
key_backup.yaml's enum) and ``auth_data`` (an object; for
``m.megolm_backup.v1.curve25519-aes-sha2`` its ``public_key`` must be a string,
definitions/key_backup_auth_data.yaml ``required``). ``GET /room_keys/version`` is
the current (largest non-deleted) version, 404 when there is none. ``PUT
/room_keys/version/{version}`` changes ``auth_data`` only: a body ``version`` other
than the path's, or another ``algorithm`` than the backup's, is 400
``M_INVALID_PARAM`` (key_backup.yaml, 400). ``DELETE`` deletes the version's keys
and marks it deleted; deleting it again is 200. A deleted version is 404 for
everything else. Version info is ``{algorithm, auth_data, count, etag, version}``.

**Keys.** ``PUT``/``GET``/``DELETE`` at the three levels, ``?version=`` required
(400 ``M_MISSING_PARAM``). ``PUT`` writes to the current version only (403 with
``current_version`` for an older existing version, 404 for a missing or deleted
one); ``GET`` and ``DELETE`` accept any non-deleted version (key_backup.yaml gives
them no 403; Synapse allows them). Writes answer ``{etag, count}``
(RoomKeysUpdateResponse). ``GET`` of a missing session is 404 ``M_NOT_FOUND``; of a
room without keys ``{"sessions": {}}``; of a backup without keys ``{"rooms": {}}``
(key_backup.yaml's 200 descriptions). When a session already has a key, the
spec's replacement rules decide (``storage.room_keys.should_replace``).

Validation (M_BAD_JSON, naming the field): a key (definitions/key_backup_data.yaml)
must have ``first_message_index`` and ``forwarded_count`` as integers in [0,
2**53-1] (the appendices' canonical-JSON integer range), ``is_verified`` a boolean
and ``session_data`` an object (opaque: algorithm-dependent); ``rooms`` maps room
IDs to ``{"sessions": {...}}`` (definitions/room_key_backup.yaml). Room IDs (path or
body) must be valid room IDs of some room version, and session IDs non-empty and at
most 255 bytes (400 ``M_INVALID_PARAM``). Megolm session IDs are standard base64
and may contain ``/``, so the session path segment is a ``path`` converter (a
client sends it percent-encoded). Body size is the app-wide request limit.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from api.auth import requester
from api.body import get_obj, get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, invalid_param, not_found
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol.ids import is_valid_room_id
from roomactors.protocol.room_versions import get_rules
from storage import room_keys as store
from storage.room_keys import AlgorithmMismatch, KeyBackupData, UnknownBackupVersion, WrongBackupVersion

__all__ = ["blueprint", "CURVE25519_AES_SHA2", "MAX_ID_BYTES"]

blueprint = Blueprint("room_keys", __name__)

#: "Backup algorithm: m.megolm_backup.v1.curve25519-aes-sha2".
CURVE25519_AES_SHA2 = "m.megolm_backup.v1.curve25519-aes-sha2"
#: Longest room ID, session ID or algorithm name accepted (bytes).
MAX_ID_BYTES = 255
#: Appendices, "Canonical JSON": integers in [-(2**53)+1, (2**53)-1].
_MAX_JSON_INT = 2**53 - 1


# ------------------------------------------------------------------- helpers


async def _call(d: Deps, fn: Any, *args: Any, write: bool) -> Any:
    """Run one storage function as one transaction; map its refusals to the spec's errors."""
    try:
        if write:
            return await d.db.write(fn, *args)
        return await d.db.read(fn, *args)
    except UnknownBackupVersion:
        raise not_found("Unknown backup version") from None
    except WrongBackupVersion as e:
        # key_backup.yaml, the PUTs' 403: "The current version will be included in
        # the current_version field."
        raise MatrixError(
            "M_WRONG_ROOM_KEYS_VERSION", 403, "Wrong backup version.", extra={"current_version": e.current_version}
        ) from None
    except AlgorithmMismatch:
        raise invalid_param("Algorithm does not match") from None


def _query_version() -> str:
    """The required ``version`` query parameter (key_backup.yaml: ``required: true``)."""
    version = request.args.get("version")
    if version is None:
        raise MatrixError("M_MISSING_PARAM", 400, "missing query parameter 'version'")
    return version


async def _keys_request() -> tuple[Deps, str, str]:
    """Every ``/room_keys/keys`` endpoint: the deps, the authenticated user's ID
    (401 first) and the backup ``version`` it names (:func:`_query_version`)."""
    d = deps()
    who = await requester()
    return d, who.user_id, _query_version()


def _room_id(room_id: str) -> str:
    """A room ID of any room version's form (``x-pattern-format: mx-room-id``)."""
    if not (is_valid_room_id(room_id, get_rules("1")) or is_valid_room_id(room_id, get_rules("12"))):
        raise invalid_param(f"{room_id!r} is not a valid room ID")
    return room_id


def _session_id(session_id: str) -> str:
    if not session_id or len(session_id.encode()) > MAX_ID_BYTES:
        raise invalid_param(f"session IDs must be 1-{MAX_ID_BYTES} bytes")
    return session_id


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_JSON_INT:
        raise bad_json(f"{where} must be a non-negative integer")
    return value


def _key_data(value: Any, where: str) -> KeyBackupData:
    """definitions/key_backup_data.yaml: all four fields are required."""
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object (KeyBackupData)")
    for field in ("first_message_index", "forwarded_count", "is_verified", "session_data"):
        if field not in value:
            raise bad_json(f"{where} is missing {field!r}")
    if not isinstance(value["is_verified"], bool):
        raise bad_json(f"{where}.is_verified must be a boolean")
    if not isinstance(value["session_data"], dict):
        raise bad_json(f"{where}.session_data must be an object")
    return KeyBackupData(
        first_message_index=_count(value["first_message_index"], f"{where}.first_message_index"),
        forwarded_count=_count(value["forwarded_count"], f"{where}.forwarded_count"),
        is_verified=value["is_verified"],
        session_data=value["session_data"],
    )


def _sessions(value: Any, where: str) -> dict[str, KeyBackupData]:
    """definitions/room_key_backup.yaml: ``{"sessions": {session ID: KeyBackupData}}``."""
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object (RoomKeyBackup)")
    sessions = value.get("sessions")
    if not isinstance(sessions, dict):
        raise bad_json(f"{where}.sessions must be an object")
    return {
        _session_id(session_id): _key_data(key, f"{where}.sessions[{session_id!r}]")
        for session_id, key in sessions.items()
    }


def _version_body(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``algorithm`` and ``auth_data`` of a POST or PUT version body."""
    algorithm = get_str(body, "algorithm")
    if not algorithm or len(algorithm.encode()) > MAX_ID_BYTES:
        raise bad_json(f"'algorithm' must be 1-{MAX_ID_BYTES} bytes")
    auth_data = get_obj(body, "auth_data")
    if algorithm == CURVE25519_AES_SHA2 and not isinstance(auth_data.get("public_key"), str):
        # definitions/key_backup_auth_data.yaml: public_key is required, a string.
        raise bad_json("auth_data.public_key must be a string for " + CURVE25519_AES_SHA2)
    return algorithm, auth_data


def _update_response(result: tuple[str, int]) -> Any:
    etag, count = result
    return json_response({"etag": etag, "count": count})  # RoomKeysUpdateResponse


# ------------------------------------------------------------------ versions


@client_route(blueprint, "/room_keys/version", ["POST"])
async def create_version():
    d = deps()
    who = await requester()
    algorithm, auth_data = _version_body(await json_body())
    version = await _call(d, store.create_version, who.user_id, algorithm, auth_data, write=True)
    return json_response({"version": version})


@client_route(blueprint, "/room_keys/version", ["GET"])
async def get_current_version():
    d = deps()
    who = await requester()
    try:
        info = await d.db.read(store.get_version, who.user_id, None)
    except UnknownBackupVersion:
        raise not_found("No current backup version") from None
    return json_response(info.to_json())


@client_route(blueprint, "/room_keys/version/<version>", ["GET"])
async def get_version(version: str):
    d = deps()
    who = await requester()
    info = await _call(d, store.get_version, who.user_id, version, write=False)
    return json_response(info.to_json())


@client_route(blueprint, "/room_keys/version/<version>", ["PUT"])
async def update_version(version: str):
    d = deps()
    who = await requester()
    body = await json_body()
    algorithm, auth_data = _version_body(body)
    body_version = get_str(body, "version", None)
    if body_version is not None and body_version != version:
        # key_backup.yaml: "If present, must be the same as the version in the path".
        raise invalid_param("Version in body does not match")
    await _call(d, store.update_version, who.user_id, version, algorithm, auth_data, write=True)
    return json_response({})


@client_route(blueprint, "/room_keys/version/<version>", ["DELETE"])
async def delete_version(version: str):
    d = deps()
    who = await requester()
    await _call(d, store.delete_version, who.user_id, version, write=True)
    return json_response({})


# ---------------------------------------------------------------------- keys


@client_route(blueprint, "/room_keys/keys", ["PUT"])
async def put_all_keys():
    d, user_id, version = await _keys_request()
    rooms = get_obj(await json_body(), "rooms")
    parsed = {_room_id(room_id): _sessions(room, f"rooms[{room_id!r}]") for room_id, room in rooms.items()}
    return _update_response(await _call(d, store.put_keys, user_id, version, parsed, write=True))


@client_route(blueprint, "/room_keys/keys/<room_id>", ["PUT"])
async def put_room_keys(room_id: str):
    d, user_id, version = await _keys_request()
    room_id = _room_id(room_id)
    parsed = {room_id: _sessions(await json_body(), "body")}
    return _update_response(await _call(d, store.put_keys, user_id, version, parsed, write=True))


@client_route(blueprint, "/room_keys/keys/<room_id>/<path:session_id>", ["PUT"])
async def put_session_key(room_id: str, session_id: str):
    d, user_id, version = await _keys_request()
    parsed = {_room_id(room_id): {_session_id(session_id): _key_data(await json_body(), "body")}}
    return _update_response(await _call(d, store.put_keys, user_id, version, parsed, write=True))


def _rooms_json(found: dict[str, dict[str, KeyBackupData]]) -> dict[str, Any]:
    return {
        room_id: {"sessions": {session_id: key.to_json() for session_id, key in sessions.items()}}
        for room_id, sessions in found.items()
    }


@client_route(blueprint, "/room_keys/keys", ["GET"])
async def get_all_keys():
    d, user_id, version = await _keys_request()
    found = await _call(d, store.get_keys, user_id, version, write=False)
    return json_response({"rooms": _rooms_json(found)})


@client_route(blueprint, "/room_keys/keys/<room_id>", ["GET"])
async def get_room_keys(room_id: str):
    d, user_id, version = await _keys_request()
    room_id = _room_id(room_id)
    found = await _call(d, store.get_keys, user_id, version, room_id, write=False)
    # key_backup.yaml: "If no keys are found, then an object with an empty
    # sessions property will be returned ({"sessions": {}})."
    return json_response(_rooms_json(found).get(room_id, {"sessions": {}}))


@client_route(blueprint, "/room_keys/keys/<room_id>/<path:session_id>", ["GET"])
async def get_session_key(room_id: str, session_id: str):
    d, user_id, version = await _keys_request()
    room_id, session_id = _room_id(room_id), _session_id(session_id)
    found = await _call(d, store.get_keys, user_id, version, room_id, session_id, write=False)
    key = found.get(room_id, {}).get(session_id)
    if key is None:
        raise not_found("Key not found.")  # key_backup.yaml, GET by session ID: 404
    return json_response(key.to_json())


@client_route(blueprint, "/room_keys/keys", ["DELETE"])
async def delete_all_keys():
    d, user_id, version = await _keys_request()
    return _update_response(await _call(d, store.delete_keys, user_id, version, write=True))


@client_route(blueprint, "/room_keys/keys/<room_id>", ["DELETE"])
async def delete_room_keys(room_id: str):
    d, user_id, version = await _keys_request()
    room_id = _room_id(room_id)
    return _update_response(await _call(d, store.delete_keys, user_id, version, room_id, write=True))


@client_route(blueprint, "/room_keys/keys/<room_id>/<path:session_id>", ["DELETE"])
async def delete_session_key(room_id: str, session_id: str):
    d, user_id, version = await _keys_request()
    room_id, session_id = _room_id(room_id), _session_id(session_id)
    result = await _call(d, store.delete_keys, user_id, version, room_id, session_id, write=True)
    return _update_response(result)
