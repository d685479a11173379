"""End-to-end encryption keys, client side: ``/keys/upload``, ``/keys/query``,
``/keys/claim``, ``/keys/device_signing/upload`` and ``/keys/signatures/upload``
(client-server "End-to-End Encryption": "Key management API", "Cross-signing";
keys.yaml, cross_signing.yaml).

Theory of operation
-------------------
Each endpoint checks the body with the pure ``roomactors.protocol.e2e_keys``
against what storage holds, then makes its change in ONE ``db.write``
(``storage.e2e_keys``), which also records the device-list change other users must
see (``storage.device_lists``); after the commit ``d.device_lists.after_local_change``
wakes their syncs and the outbound EDU outbox. A :class:`~roomactors.protocol.e2e_keys.E2eKeyError`
becomes a 400 with its errcode.

* ``/keys/upload``: device keys must be the requester's own, self-signed; the same
  keys again change nothing, different identity keys replace the device's keys
  (as Synapse and continuwuity do) and go out as a device-list change; a signed one-time
  or fallback key must verify against the device's Ed25519 key (from the upload,
  else storage); a one-time key ID stored with another key is 400, the same key is
  ignored; a fallback key replaces the algorithm's previous one and is unused again.
* ``/keys/query`` and ``/keys/claim``: our users are answered from storage, users
  of other servers through ``roomactors.remote_keys`` (the remote fan-out, with the
  remote device cache), both at once; a server that fails is in ``failures``.
  ``user_signing_keys`` only ever holds the requester's own key; signatures the
  requester made with their user-signing key are merged into the master keys they
  signed ("Key and signature security").
* ``/keys/device_signing/upload``: no UIA for the first master key, nor for keys
  identical to the stored ones (cross_signing.yaml, v1.11); otherwise the
  ``m.login.password`` stage of ``api.client.account``, as device deletion uses.
  Self-signing and user-signing keys must be signed by the master key (the one in
  the request, else the stored one: none is 400 ``M_MISSING_PARAM``); a public key
  equal to one of the user's device IDs is 403 ``M_FORBIDDEN``.
* ``/keys/signatures/upload``: per key ``failures`` (``M_INVALID_SIGNATURE`` ...),
  the rest stored; a remote user's master key is fetched from their server.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
from quart import Blueprint

from api.auth import requester
from api.body import json_body
from api.client.account import password_uia
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, forbidden, invalid_param
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol import e2e_keys as proto
from roomactors.protocol.ids import is_valid_user_id
from storage import accounts
from storage import e2e_keys as store

__all__ = ["blueprint", "split_by_server", "DEFAULT_TIMEOUT_MS", "MAX_TIMEOUT_MS", "after_local_change"]

blueprint = Blueprint("keys", __name__)

#: keys.yaml ``timeout``: "10 seconds is the recommended default".
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000
#: Bounds on one query/claim request (the spec sets none).
MAX_QUERY_USERS = 10_000
MAX_CLAIM_DEVICES = 10_000


def _route(rule: str, methods: list[str]):
    return client_route(blueprint, rule, methods)


def _key_error(e: proto.E2eKeyError) -> MatrixError:
    return MatrixError(e.errcode, 400, e.message)


def after_local_change(d: Deps, user_id: str) -> None:
    """After a committed key change: wake room-mates' syncs and the EDU outbox
    (``roomactors.device_lists``)."""
    device_lists = getattr(d, "device_lists", None)
    if device_lists is not None:
        device_lists.after_local_change(user_id)
    else:  # pragma: no cover - before the device-list service existed
        d.notifier.notify(user_id)


def split_by_server(d: Deps, user_ids: Any) -> tuple[list[str], dict[str, list[str]]]:
    """(our users, {server: their users}) of ``user_ids``, in the request's order."""
    local: list[str] = []
    remote: dict[str, list[str]] = {}
    for user_id in user_ids:
        server = user_id.partition(":")[2]
        if server == d.server_name:
            local.append(user_id)
        else:
            remote.setdefault(server, []).append(user_id)
    return local, remote


def _timeout_s(body: dict[str, Any]) -> float:
    timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise bad_json("'timeout' must be an integer (milliseconds)")
    return min(max(timeout, 0), MAX_TIMEOUT_MS) / 1000


def _unavailable(servers: Any, why: str) -> dict[str, Any]:
    return {s: {"status": 503, "message": why} for s in servers}


def _remote_keys_module(d: Deps) -> Any:
    """``roomactors.remote_keys`` (the remote fan-out), or None when federation is off
    or it is not there."""
    if d.federation is None:
        return None
    try:
        from roomactors import remote_keys
    except ImportError:  # pragma: no cover - before the remote fan-out existed
        return None
    return remote_keys


async def _ask_remote(d: Deps, fan_out: str, by_server: dict[str, Any], timeout_s: float,
                      failures: dict[str, Any]) -> dict[str, Any]:
    """``roomactors.remote_keys.<fan_out>`` (``query_remote_keys`` or
    ``claim_remote_keys``) for ``by_server``; its failures are added to ``failures``
    (every server "federation is not available" when there is no fan-out)."""
    module = _remote_keys_module(d)
    if module is None:
        failures.update(_unavailable(by_server, "federation is not available"))
        return {}
    got, failed = await getattr(module, fan_out)(d, by_server, timeout_s)
    failures.update(failed)
    return got


# ------------------------------------------------------------------ /keys/upload


@_route("/keys/upload", ["POST"])
async def upload_keys():
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    # keys.yaml: each part "May be absent"; a null device_keys is refused, null key
    # maps are taken as absent (as Synapse's request model does).
    if "device_keys" in body and not isinstance(body["device_keys"], dict):
        raise bad_json("'device_keys' must be an object")
    for field in ("one_time_keys", "fallback_keys"):
        if body.get(field) is not None and not isinstance(body[field], dict):
            raise bad_json(f"'{field}' must be an object")
    stored = await d.db.read(store.get_stored_device_keys, who.user_id, who.device_id)
    try:
        device_keys = None
        if body.get("device_keys"):
            device_keys = proto.check_device_keys(body["device_keys"], who.user_id, who.device_id)
        # Signed one-time / fallback keys are checked with the device's Ed25519 key:
        # the one uploaded now, else the stored one (which must still be the same at write).
        checked_with: str | None = None
        signer = device_keys if device_keys is not None else stored
        device_key = None
        if signer is not None:
            device_key = proto.device_ed25519_key(signer)
            if device_keys is None:
                checked_with = signer["keys"][f"ed25519:{who.device_id}"]
        one_time = proto.check_one_time_keys(body.get("one_time_keys") or {}, who.user_id, device_key)
        fallback = proto.check_one_time_keys(body.get("fallback_keys") or {}, who.user_id, device_key, fallback=True)
    except proto.E2eKeyError as e:
        raise _key_error(e) from None
    try:
        write = partial(store.upload_keys, device_keys=device_keys, checked_with=checked_with,
                        one_time_keys=one_time, fallback_keys=fallback, ts=d.clock.time_ms())
        counts = await d.db.write(write, who.user_id, who.device_id)
    except store.KeyUploadConflict as e:
        raise MatrixError("M_INVALID_PARAM", 400, str(e)) from None
    if device_keys is not None and device_keys != stored:
        after_local_change(d, who.user_id)
    return json_response({"one_time_key_counts": counts})


# ------------------------------------------------------------------ /keys/query


def _query_body(body: dict[str, Any]) -> dict[str, list[str]]:
    query = body.get("device_keys")
    if not isinstance(query, dict):
        raise bad_json("'device_keys' must map user IDs to lists of device IDs")
    if len(query) > MAX_QUERY_USERS:
        raise invalid_param(f"at most {MAX_QUERY_USERS} users per query")
    for user_id, device_ids in query.items():
        if not isinstance(device_ids, list) or not all(isinstance(x, str) for x in device_ids):
            raise bad_json("'device_keys' values must be lists of device IDs")
        if not is_valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a user ID")
    return query


def _merge_remote(answer: dict[str, Any], remote: dict[str, Any], my_signatures: dict[tuple[str, str], dict[str, str]],
                  requester_id: str) -> None:
    for field in ("device_keys", "master_keys", "self_signing_keys"):
        part = remote.get(field)
        if isinstance(part, dict):
            answer[field].update(part)
    # Signatures the requester made of remote users' master keys (with their
    # user-signing key) are held here, not by the remote server: merge them in.
    for (target, key_id), sigs in my_signatures.items():
        master = answer["master_keys"].get(target)
        if isinstance(master, dict) and isinstance(master.get("keys"), dict) and f"ed25519:{key_id}" in master["keys"]:
            master.setdefault("signatures", {}).setdefault(requester_id, {}).update(sigs)


@_route("/keys/query", ["POST"])
async def query_keys():
    d = deps()
    who = await requester()
    body = await json_body()
    query = _query_body(body)
    timeout_s = _timeout_s(body)
    local, remote = split_by_server(d, query)
    by_server = {server: {u: query[u] for u in users} for server, users in remote.items()}
    answer: dict[str, Any] = {}
    remote_answer: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    my_signatures: dict[tuple[str, str], dict[str, str]] = {}

    def read_local(conn: Any) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, str]]]:
        body = store.query_local_keys(conn, who.user_id, {u: query[u] for u in local})
        return body, store.signatures_by(conn, who.user_id, [u for users in remote.values() for u in users])

    async def run_local() -> None:
        nonlocal answer, my_signatures
        answer, my_signatures = await d.db.read(read_local)

    async def run_remote() -> None:
        nonlocal remote_answer
        remote_answer = await _ask_remote(d, "query_remote_keys", by_server, timeout_s, failures)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_local)
        if by_server:
            nursery.start_soon(run_remote)
    _merge_remote(answer, remote_answer, my_signatures, who.user_id)
    answer["failures"] = failures
    return json_response(answer)


# ------------------------------------------------------------------ /keys/claim


def claim_request(body: dict[str, Any]) -> tuple[dict[str, dict[str, str]], int]:
    """The ``one_time_keys`` of a claim body (client ``POST /keys/claim`` and
    federation ``POST /user/keys/claim``: user ID → device ID → algorithm), checked
    for that shape (else 400 ``M_BAD_JSON``), and how many devices it names. The
    caller checks the user IDs and its own limit."""
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise bad_json("'one_time_keys' must map user IDs to device IDs to algorithms")
    count = 0
    for by_device in wanted.values():
        if not isinstance(by_device, dict) or not all(isinstance(a, str) for a in by_device.values()):
            raise bad_json("'one_time_keys' must map user IDs to device IDs to algorithms")
        count += len(by_device)
    return wanted, count


@_route("/keys/claim", ["POST"])
async def claim_keys():
    d = deps()
    await requester()
    body = await json_body()
    wanted, count = claim_request(body)
    for user_id in wanted:
        if not is_valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a user ID")
    if count > MAX_CLAIM_DEVICES:
        raise invalid_param(f"at most {MAX_CLAIM_DEVICES} devices per claim")
    timeout_s = _timeout_s(body)
    local, remote = split_by_server(d, wanted)
    by_server = {server: {u: wanted[u] for u in users} for server, users in remote.items()}
    claimed: dict[str, Any] = {}
    remote_claimed: dict[str, Any] = {}
    failures: dict[str, Any] = {}

    async def run_local() -> None:
        nonlocal claimed
        if local:
            claimed = await d.db.write(store.claim_local_keys, {u: wanted[u] for u in local})

    async def run_remote() -> None:
        nonlocal remote_claimed
        got = await _ask_remote(d, "claim_remote_keys", by_server, timeout_s, failures)
        remote_claimed = got.get("one_time_keys", got) if isinstance(got, dict) else {}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_local)
        if by_server:
            nursery.start_soon(run_remote)
    one_time_keys = dict(claimed)
    if isinstance(remote_claimed, dict):
        one_time_keys.update(remote_claimed)
    return json_response({"one_time_keys": one_time_keys, "failures": failures})


# ------------------------------------------------------------------ cross-signing


@_route("/keys/device_signing/upload", ["POST"])
async def upload_cross_signing_keys():
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    uploaded = {usage: body[field] for field, usage in proto.CROSS_SIGNING_USAGES.items() if field in body}
    stored = await d.db.read(store.get_stored_cross_signing_keys, who.user_id)
    # cross_signing.yaml (v1.11): a request whose keys all equal the stored ones is a
    # no-op needing no UIA (idempotent over a lost response).
    if all(stored.get(usage) == key for usage, key in uploaded.items()):
        return json_response({})
    try:
        if "master" in uploaded:
            master = proto.check_cross_signing_key(uploaded["master"], who.user_id, "master")
        elif "master" in stored:
            master = stored["master"]
        else:
            raise MatrixError("M_MISSING_PARAM", 400, "no master signing key is available")
        master_key = proto.cross_signing_verify_key(master)
        checked = {"master": master} if "master" in uploaded else {}
        for usage in ("self_signing", "user_signing"):
            if usage in uploaded:
                # "Must be signed by the accompanying master signing key, or by the
                # user's most recently uploaded master signing key".
                checked[usage] = proto.check_cross_signing_key(uploaded[usage], who.user_id, usage, master_key)
    except proto.E2eKeyError as e:
        raise _key_error(e) from None
    # 403: "The public key of one of the keys is the same as one of the user's device IDs".
    device_ids = {dev.device_id for dev in await d.db.read(accounts.get_devices, who.user_id)}
    for key in checked.values():
        if proto.cross_signing_public_key(key) in device_ids:
            raise forbidden("the key's public key is in use as a device ID")
    # "User-Interactive Authentication MUST be performed ... except [when] there is no
    # existing master signing key uploaded to the homeserver" (or the keys are the same).
    if "master" in stored:
        await password_uia(d, who, body, "device_signing_upload")
    if await d.db.write(store.upload_cross_signing_keys, who.user_id, checked, d.clock.time_ms()):
        after_local_change(d, who.user_id)
    return json_response({})


async def _remote_master_keys(d: Deps, user_ids: list[str]) -> dict[str, Any]:
    """Master keys of users on other servers (through their servers), by user."""
    _, remote = split_by_server(d, user_ids)
    module = _remote_keys_module(d)
    if not remote or module is None:
        return {}
    got, _ = await module.query_remote_keys(d, {s: {u: [] for u in users} for s, users in remote.items()},
                                            DEFAULT_TIMEOUT_MS / 1000)
    masters = got.get("master_keys") if isinstance(got, dict) else None
    return {u: k for u, k in (masters or {}).items() if isinstance(k, dict)}


@_route("/keys/signatures/upload", ["POST"])
async def upload_signatures():
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    others = [u for u in body if u != who.user_id]
    for user_id in others:
        if not is_valid_user_id(user_id):
            raise invalid_param(f"{user_id!r} is not a user ID")

    def read(conn: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        own = store.query_local_keys(conn, who.user_id, {who.user_id: []})["device_keys"].get(who.user_id, {})
        keys = store.get_cross_signing_keys(conn, who.user_id, include_user_signing=True)
        masters = {}
        for user_id in others:
            if user_id.partition(":")[2] == d.server_name:
                masters[user_id] = store.get_cross_signing_keys(conn, user_id).get("master")
        return own, keys, masters

    own_devices, own_keys, masters = await d.db.read(read)
    masters.update(await _remote_master_keys(d, [u for u in others if u not in masters]))
    try:
        items, failures = proto.check_signature_upload(
            who.user_id, body, own_devices=own_devices, own_keys=own_keys, master_keys=masters
        )
    except proto.E2eKeyError as e:
        raise _key_error(e) from None
    if items:
        others_signed = await d.db.write(store.store_signatures, items)
        if any(i.target_user_id == who.user_id for i in items):
            after_local_change(d, who.user_id)
        if others_signed:
            # Only the signer sees a user-signing signature: wake their own long
            # polls (their other devices see the targets in device_lists.changed).
            d.notifier.notify(*others_signed)
    return json_response({"failures": failures})
