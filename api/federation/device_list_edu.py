"""Inbound ``m.device_list_update`` and ``m.signing_key_update`` EDUs (server-server
"Device Management", "End-to-End Encryption"; m.device_list_update.yaml,
m.signing_key_update.yaml), called by ``api.federation.transactions._apply_edus``.

Theory of operation
-------------------
All updates of one transaction are applied in ONE write, in order::

    user not of the origin                              ─► ignored (forged)
    we share no room with the user                      ─► ignored (we would not track them)
    malformed (stream_id not an integer, prev_id not a
    list of integers, keys not naming user + device)    ─► ignored
    stream_id older than the cache's                    ─► ignored (a redelivery)
    cache held, not stale, every prev_id known          ─► applied incrementally
    otherwise (no cache, stale, a gap, no prev_id)      ─► cache marked stale, resync

"Known" prev IDs are the cache's ``stream_id``, the IDs applied earlier in the same
batch and the user's recently applied IDs kept by ``DeviceLists`` (a server that
sends one EDU per device of one change repeats the same ``prev_id``). The spec:
"If a server receives an EDU which refers to a prev_id it does not recognise, it
must resynchronise its list"; Synapse also resyncs on an empty ``prev_id``, which
we follow (the first EDU of a sequence tells us nothing about what we hold).

An applied update records a change in the change stream
(``device_lists.record_remote_change``, so local room-mates see the user in
``device_lists.changed``) and notifies the shared rooms; a resync does the same
when it completes (``roomactors.device_lists``). ``m.signing_key_update`` replaces
the cached master / self-signing keys when a current cache is held (else it marks
the user stale) and records a change the same way.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from roomactors.device_lists import valid_cross_signing_key, valid_device_keys
from storage import device_lists as dl_store
from storage import remote_devices
from storage.federation_reads import rooms_shared_with_server

__all__ = ["apply_device_list_updates", "apply_signing_key_updates", "MAX_UPDATES"]

#: Most device-list EDUs handled from one transaction (it carries at most 100 EDUs).
MAX_UPDATES = 100


def _from(origin: str, user_id: Any) -> bool:
    return isinstance(user_id, str) and user_id.startswith("@") and user_id.partition(":")[2] == origin


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_update(origin: str, content: Any) -> dict[str, Any] | None:
    if not isinstance(content, dict) or not _from(origin, content.get("user_id")):
        return None
    user_id, device_id = content["user_id"], content.get("device_id")
    stream_id, prev_id = content.get("stream_id"), content.get("prev_id", [])
    deleted = content.get("deleted", False)
    if not isinstance(device_id, str) or not _int(stream_id) or not isinstance(deleted, bool):
        return None
    if prev_id is None:
        prev_id = []
    if not isinstance(prev_id, list) or not all(_int(p) for p in prev_id):
        return None
    keys = content.get("keys")
    if keys is not None and not valid_device_keys(keys, user_id, device_id):
        return None
    name = content.get("device_display_name")
    return {
        "user_id": user_id, "device_id": device_id, "stream_id": stream_id, "prev_id": prev_id,
        "deleted": deleted, "keys": keys, "display_name": name if isinstance(name, str) else None,
    }


def _apply_updates(
    conn: sa.Connection, updates: list[dict[str, Any]], server_name: str, known: dict[str, set[int]], now_ms: int
) -> tuple[dict[str, list[int]], set[str], set[str]]:
    """(stream IDs applied per user, users to resync, rooms to notify)."""
    applied: dict[str, list[int]] = {}
    resync: set[str] = set()
    rooms: set[str] = set()
    shared: dict[str, list[str]] = {}
    for u in updates:
        user_id = u["user_id"]
        if user_id not in shared:
            shared[user_id] = rooms_shared_with_server(conn, user_id, server_name)
        if not shared[user_id]:
            continue  # we share no room: we do not track this user
        if user_id in resync:
            continue  # already going to resync: the snapshot covers this update
        state = remote_devices.get_cache_states(conn, [user_id]).get(user_id)
        if state is not None and state.stream_id is not None and u["stream_id"] < state.stream_id:
            continue  # older than what we hold: a redelivery
        have = known.get(user_id, set()) | set(applied.get(user_id, ()))
        if state is not None and state.stream_id is not None:
            have.add(state.stream_id)
        if state is not None and not state.stale and u["prev_id"] and all(p in have for p in u["prev_id"]):
            remote_devices.apply_device_update(
                conn, user_id, u["device_id"], display_name=u["display_name"], keys=u["keys"],
                deleted=u["deleted"], stream_id=u["stream_id"], now_ms=now_ms,
            )
            applied.setdefault(user_id, []).extend([*u["prev_id"], u["stream_id"]])
            rooms.update(shared[user_id])
        else:
            remote_devices.mark_stale(conn, user_id, now_ms=now_ms)
            resync.add(user_id)
    for user_id in applied:
        dl_store.record_remote_change(conn, user_id)
    return applied, resync, rooms


async def apply_device_list_updates(d: Any, origin: str, contents: list[Any]) -> None:
    """The ``m.device_list_update`` EDUs of one inbound transaction, in order."""
    updates = [p for p in (_parse_update(origin, c) for c in contents[:MAX_UPDATES]) if p is not None]
    if not updates:
        return
    lists = d.device_lists
    known = {u: lists.known_stream_ids(u) for u in {p["user_id"] for p in updates}}
    applied, resync, rooms = await d.db.write(_apply_updates, updates, d.server_name, known, d.clock.time_ms())
    for user_id, ids in applied.items():
        lists.note_stream_ids(user_id, ids)
    for user_id in resync:
        lists.request_resync(user_id)
    if rooms:
        d.notifier.notify(*rooms)


def _apply_signing(
    conn: sa.Connection, updates: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
    server_name: str, now_ms: int,
) -> tuple[set[str], set[str]]:
    """(users to resync, rooms to notify)."""
    resync: set[str] = set()
    rooms: set[str] = set()
    for user_id, master, self_signing in updates:
        shared = rooms_shared_with_server(conn, user_id, server_name)
        if not shared:
            continue
        state = remote_devices.get_cache_states(conn, [user_id]).get(user_id)
        if state is not None and not state.stale:
            remote_devices.set_signing_keys(conn, user_id, master_key=master, self_signing_key=self_signing,
                                            now_ms=now_ms)
            dl_store.record_remote_change(conn, user_id)
            rooms.update(shared)
        else:
            remote_devices.mark_stale(conn, user_id, now_ms=now_ms)
            resync.add(user_id)
    return resync, rooms


async def apply_signing_key_updates(d: Any, origin: str, contents: list[Any]) -> None:
    """The ``m.signing_key_update`` EDUs of one inbound transaction: {user_id,
    master_key?, self_signing_key?} of the origin's users."""
    updates: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
    for content in contents[:MAX_UPDATES]:
        if not isinstance(content, dict) or not _from(origin, content.get("user_id")):
            continue
        user_id = content["user_id"]
        master, self_signing = content.get("master_key"), content.get("self_signing_key")
        if master is not None and not valid_cross_signing_key(master, user_id, "master"):
            continue
        if self_signing is not None and not valid_cross_signing_key(self_signing, user_id, "self_signing"):
            continue
        if master is None and self_signing is None:
            continue
        updates.append((user_id, master, self_signing))
    if not updates:
        return
    resync, rooms = await d.db.write(_apply_signing, updates, d.server_name, d.clock.time_ms())
    for user_id in resync:
        d.device_lists.request_resync(user_id)
    if rooms:
        d.notifier.notify(*rooms)
