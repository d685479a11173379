"""The remote half of ``/keys/query`` and ``/keys/claim``: fan-out to other servers
(server-server "End-to-End Encryption": ``/user/keys/query``, ``/user/keys/claim``),
answered from the remote device-list cache where it is current.

Theory of operation
-------------------
``query_remote_keys(d, by_server, timeout_s)`` with ``by_server`` = {server: {user:
[device IDs] (empty: all)}}::

    one db.read: cache rows of the users + which share a room with us
    user shares a room and the cache is current (not stale) ─► answered from the cache
    the rest, per server, all servers at once under ONE deadline (timeout_s):
        POST /_matrix/federation/v1/user/keys/query {"device_keys": {user: devices}}
        (all devices for a user sharing a room: the answer can fill the cache)
        unreachable / error / late ─► failures[server] = {"status", "message"}
    answers checked: only the server's own, requested users; device keys that name
    their user and device; cross-signing keys of that user with the right usage
    one db.write: fill the cache of users sharing a room that still have no row
    (stream_id None: the next m.device_list_update cannot chain, so it resyncs)

The cache is the spec's ("When a server wishes to determine a remote user's device
list for the first time, it should populate a local cache from the result of a
/user/keys/query API"); afterwards ``m.device_list_update`` EDUs keep it current
(``api.federation.device_list_edu``) and it is dropped when we share no room with
the user any more (``roomactors.device_lists``). A user we share no room with is
never cached: we would not hear of their changes.

Results are the client API bodies' parts: query → ``{"device_keys": {user: {device:
keys}}, "master_keys": {user: key}, "self_signing_keys": {user: key}}``; claim →
``{"one_time_keys": {user: {device: {key_id: key}}}}``; failures by server name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import trio

from roomactors.device_lists import valid_cross_signing_key, valid_device_keys
from roomactors.federation_client import FederationError, FederationUnreachable
from storage import remote_devices
from storage.federation_reads import rooms_shared_with_server

__all__ = ["query_remote_keys", "claim_remote_keys", "cached_keys_answer"]

QUERY_PATH = "/_matrix/federation/v1/user/keys/query"
CLAIM_PATH = "/_matrix/federation/v1/user/keys/claim"


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def _failure(e: BaseException | None) -> dict[str, Any]:
    if isinstance(e, FederationError):
        return {"status": e.status, "message": str(e)}
    if isinstance(e, FederationUnreachable):
        return {"status": 503, "message": str(e) or "unreachable"}
    return {"status": 504, "message": "timed out"}


async def _post_to_server(d: Any, server: str, path: str, body: dict[str, Any], timeout_s: float,
                          failures: dict[str, Any]) -> dict[str, Any] | None:
    """``POST path`` to ``server`` under the deadline ``timeout_s``; the answer when it
    is a JSON object, else None with ``failures[server]`` set (unreachable, an error
    status, late, or not an object)."""
    error: BaseException | None = None
    answer = None
    with trio.move_on_after(timeout_s):
        try:
            answer = await d.federation.request(server, "POST", path, json_body=body, timeout_s=timeout_s)
        except (FederationUnreachable, FederationError) as e:
            error = e
    if not isinstance(answer, dict):
        failures[server] = _failure(error) if error or answer is None else {"status": 502, "message": "malformed answer"}
        return None
    return answer


def _cache_view(
    conn: sa.Connection, users: list[str], server_name: str
) -> tuple[set[str], dict[str, remote_devices.CachedUser]]:
    """(users sharing a room with us, the current caches of those users)."""
    shared = {u for u in users if rooms_shared_with_server(conn, u, server_name)}
    states = remote_devices.get_cache_states(conn, shared)
    fresh = [u for u, s in states.items() if not s.stale]
    return shared, remote_devices.get_cached_users(conn, fresh) if fresh else {}


def cached_keys_answer(cached: remote_devices.CachedUser, devices: list[str]) -> dict[str, dict[str, Any]]:
    """The ``device_keys`` entry of a cached user (``devices`` empty: all), with the
    device's display name in ``unsigned`` as /keys/query shows it."""
    out: dict[str, dict[str, Any]] = {}
    for device_id, (name, keys) in cached.devices.items():
        if keys is None or (devices and device_id not in devices):
            continue
        entry = dict(keys)
        if name is not None:
            entry["unsigned"] = {**(keys.get("unsigned") or {}), "device_display_name": name}
        out[device_id] = entry
    return out


def _fill_caches(conn: sa.Connection, fills: list[tuple[str, dict[str, Any]]], server_name: str, now_ms: int) -> None:
    for user_id, answer in fills:
        if remote_devices.get_cache_states(conn, [user_id]):
            continue  # a resync or update got there first: it is newer
        if not rooms_shared_with_server(conn, user_id, server_name):
            continue
        remote_devices.replace_user_cache(
            conn, user_id,
            devices=[(d, (k.get("unsigned") or {}).get("device_display_name") if isinstance(k.get("unsigned"), dict)
                      else None, {kk: vv for kk, vv in k.items() if kk != "unsigned"})
                     for d, k in answer["devices"].items()],
            master_key=answer.get("master"), self_signing_key=answer.get("self_signing"),
            stream_id=None, now_ms=now_ms,
        )


async def query_remote_keys(
    d: Any, by_server: dict[str, dict[str, list[str]]], timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``/keys/query`` for remote users (module docstring)."""
    results: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
    failures: dict[str, Any] = {}
    users = [u for wanted in by_server.values() for u in wanted]
    if not users:
        return results, failures
    shared, cached = await d.db.read(_cache_view, users, d.server_name)
    remote: dict[str, dict[str, list[str]]] = {}
    for server, wanted in by_server.items():
        for user_id, devices in wanted.items():
            if user_id in cached:
                c = cached[user_id]
                results["device_keys"][user_id] = cached_keys_answer(c, devices)
                if c.master_key:
                    results["master_keys"][user_id] = c.master_key
                if c.self_signing_key:
                    results["self_signing_keys"][user_id] = c.self_signing_key
            else:
                # A user sharing a room: ask for every device, so the answer fills the cache.
                remote.setdefault(server, {})[user_id] = [] if user_id in shared else list(devices)
    if not remote:
        return results, failures
    if d.federation is None:
        for server in remote:
            failures[server] = {"status": 503, "message": "federation is disabled"}
        return results, failures
    fills: list[tuple[str, dict[str, Any]]] = []

    async def ask(server: str, wanted: dict[str, list[str]]) -> None:
        body = await _post_to_server(d, server, QUERY_PATH, {"device_keys": wanted}, timeout_s, failures)
        if body is None:
            return
        device_keys = body.get("device_keys") if isinstance(body.get("device_keys"), dict) else {}
        masters = body.get("master_keys") if isinstance(body.get("master_keys"), dict) else {}
        self_signings = body.get("self_signing_keys") if isinstance(body.get("self_signing_keys"), dict) else {}
        for user_id, devices in wanted.items():
            if _server_of(user_id) != server:
                continue  # s2s: a server answers for its own users only
            got = device_keys.get(user_id)
            got = got if isinstance(got, dict) else {}
            all_devices = {dev: keys for dev, keys in got.items() if valid_device_keys(keys, user_id, dev)}
            asked = by_server[server][user_id]
            results["device_keys"][user_id] = {
                dev: keys for dev, keys in all_devices.items() if not asked or dev in asked
            }
            answer: dict[str, Any] = {"devices": all_devices}
            if valid_cross_signing_key(masters.get(user_id), user_id, "master"):
                results["master_keys"][user_id] = answer["master"] = masters[user_id]
            if valid_cross_signing_key(self_signings.get(user_id), user_id, "self_signing"):
                results["self_signing_keys"][user_id] = answer["self_signing"] = self_signings[user_id]
            if user_id in shared and user_id in device_keys:
                fills.append((user_id, answer))

    async with trio.open_nursery() as nursery:
        for server, wanted in remote.items():
            nursery.start_soon(ask, server, wanted)
    if fills:
        await d.db.write(_fill_caches, fills, d.server_name, d.clock.time_ms())
    return results, failures


async def claim_remote_keys(
    d: Any, by_server: dict[str, dict[str, dict[str, str]]], timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``/keys/claim`` for remote users: ``by_server`` = {server: {user: {device:
    algorithm}}}; one ``POST /user/keys/claim`` per server, all at once under one
    deadline. Only the requested users and devices of each server are kept."""
    one_time_keys: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    if d.federation is None:
        return {"one_time_keys": {}}, {s: {"status": 503, "message": "federation is disabled"} for s in by_server}

    async def ask(server: str, wanted: dict[str, dict[str, str]]) -> None:
        body = await _post_to_server(d, server, CLAIM_PATH, {"one_time_keys": wanted}, timeout_s, failures)
        if body is None:
            return
        got = body.get("one_time_keys") if isinstance(body.get("one_time_keys"), dict) else {}
        for user_id, devices in wanted.items():
            by_device = got.get(user_id)
            if _server_of(user_id) != server or not isinstance(by_device, dict):
                continue
            kept = {dev: keys for dev, keys in by_device.items() if dev in devices and isinstance(keys, dict)}
            if kept:
                one_time_keys[user_id] = kept

    async with trio.open_nursery() as nursery:
        for server, wanted in by_server.items():
            if wanted:
                nursery.start_soon(ask, server, wanted)
    return {"one_time_keys": one_time_keys}, failures
