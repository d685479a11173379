"""DeviceLists: the device-list service: notifications after local changes, the
resync worker for remote users' device lists, and cache invalidation (server-server
"Device Management"; client-server "Tracking the device list for a user").

Theory of operation
-------------------
Storage records every change in the change stream (``storage.device_lists``) and
keeps the remote cache (``storage.remote_devices``); this service does what must
happen *after* a commit, off the caller's path. Its entry points are plain ``def``,
never block and never raise (they run right after a writer's commit, also inside
room actors); each only records work in memory and wakes :meth:`DeviceLists.run`'s
loop::

    after_local_change(user)      ─► notify(user) now; worker: notify the user's joined
                                     rooms (their room-mates' /sync listens there) and
                                     wake_outbox(remote servers sharing a room)
    request_resync(user)          ─► worker: GET /user/devices/{user} (deduplicated,
                                     backoff on failure), replace the cache in ONE
                                     transaction, record a change, notify room-mates
    after_membership_change(...)  ─► worker: a leave/ban/kick committed: delete the
                                     cache of remote users we share no room with any
                                     more (the remote user left, or our last local
                                     member of a room left); a local user's join to a
                                     room with servers that did not share a room
                                     with them announces their devices (the spec's
                                     "when that user joins a room which contains
                                     servers which are not already receiving
                                     updates")

**Where invalidation hooks in.** Memberships are committed by room actors, which
report every commit to ``api.services``' ``on_commit``; that hook hands member
events to :meth:`after_membership_change`. It is the one place every membership
change passes (local joins, leaves, kicks, bans and those received over
federation), so the cache can never outlive the last shared room.

**Resync.** Stale users (``remote_device_users.stale``) are resynced: at startup
(those left stale by a restart), and whenever an inbound ``m.device_list_update``
shows a gap (``api.federation.device_list_edu``). One resync per user at a time,
at most :data:`MAX_CONCURRENT_RESYNCS` at once; a user asked again while one is in
flight is resynced once more after it. A failure (unreachable, error, malformed
answer) retries after a backoff doubling from ``backoff_initial_s`` to
``backoff_max_s``; meanwhile ``/keys/query`` asks the user's server directly.

**Recently seen stream IDs.** :meth:`known_stream_ids` keeps, per remote user, the
last few stream IDs applied (Synapse keeps the same in memory): a server that
sends several EDUs for one change (one per device, the same ``prev_id``) does not
trigger spurious resyncs.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
import trio

from roomactors.clock import Clock
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.notifier import Notifier
from storage import device_lists as dl_store
from storage import remote_devices, timeline
from storage.accounts import get_devices, user_exists
from storage.db import Database
from storage.federation_reads import joined_servers, rooms_shared_with_server

__all__ = [
    "DeviceLists",
    "MAX_CONCURRENT_RESYNCS",
    "parse_user_devices",
    "valid_device_keys",
    "valid_cross_signing_key",
]

log = logging.getLogger(__name__)

MAX_CONCURRENT_RESYNCS = 8
#: Remote users whose recently applied stream IDs are remembered, and IDs per user.
_SEEN_USERS = 10_000
_SEEN_PER_USER = 32


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


# ------------------------------------------------------------------ validation (pure)


def valid_device_keys(keys: Any, user_id: str, device_id: str) -> bool:
    """Device keys (``DeviceKeys``) that name this user and device."""
    return (
        isinstance(keys, dict)
        and keys.get("user_id") == user_id
        and keys.get("device_id") == device_id
        and isinstance(keys.get("keys"), dict)
        and isinstance(keys.get("algorithms", []), list)
    )


def valid_cross_signing_key(key: Any, user_id: str, usage: str) -> bool:
    """A ``CrossSigningKey`` of this user with this usage."""
    return (
        isinstance(key, dict)
        and key.get("user_id") == user_id
        and isinstance(key.get("usage"), list)
        and usage in key["usage"]
        and isinstance(key.get("keys"), dict)
    )


def parse_user_devices(user_id: str, body: Any) -> dict[str, Any] | None:
    """A checked ``GET /user/devices/{userId}`` answer (user_devices.yaml):
    {stream_id, devices: [(device_id, display name, keys|None)], master_key,
    self_signing_key}; ``None`` if it is not one for ``user_id``. Device keys that
    do not name the user and device are dropped (the device is kept)."""
    if not isinstance(body, dict) or body.get("user_id") != user_id:
        return None
    stream_id = body.get("stream_id")
    devices = body.get("devices")
    if isinstance(stream_id, bool) or not isinstance(stream_id, int) or not isinstance(devices, list):
        return None
    out: list[tuple[str, str | None, dict[str, Any] | None]] = []
    seen: set[str] = set()
    for device in devices:
        if not isinstance(device, dict) or not isinstance(device.get("device_id"), str):
            continue
        device_id = device["device_id"]
        if device_id in seen:
            continue
        seen.add(device_id)
        name = device.get("device_display_name")
        keys = device.get("keys")
        out.append((device_id, name if isinstance(name, str) else None,
                    keys if valid_device_keys(keys, user_id, device_id) else None))
    master = body.get("master_key")
    self_signing = body.get("self_signing_key")
    return {
        "stream_id": stream_id,
        "devices": out,
        "master_key": master if valid_cross_signing_key(master, user_id, "master") else None,
        "self_signing_key": self_signing if valid_cross_signing_key(self_signing, user_id, "self_signing") else None,
    }


# ------------------------------------------------------------------ transactions


def _local_change_targets(conn: sa.Connection, user_ids: list[str]) -> tuple[set[str], set[str]]:
    """(joined rooms of the users, remote servers sharing a room with them)."""
    rooms: set[str] = set()
    servers: set[str] = set()
    for user_id in user_ids:
        rooms.update(r for r, m in timeline.get_memberships(conn, user_id).items() if m.membership == "join")
        servers.update(dl_store.remote_destinations(conn, user_id))
    return rooms, servers


def _store_resync(
    conn: sa.Connection, user_id: str, parsed: dict[str, Any], server_name: str, now_ms: int
) -> list[str] | None:
    """Replace the user's cache with a resync's answer and record a change; returns
    the rooms to notify, or None if we share no room any more (cache deleted)."""
    rooms = rooms_shared_with_server(conn, user_id, server_name)
    if not rooms:
        remote_devices.delete_user_cache(conn, user_id)
        return None
    remote_devices.replace_user_cache(
        conn, user_id, devices=parsed["devices"], master_key=parsed["master_key"],
        self_signing_key=parsed["self_signing_key"], stream_id=parsed["stream_id"], now_ms=now_ms,
    )
    dl_store.record_remote_change(conn, user_id)
    return rooms


def _needs_resync(conn: sa.Connection, user_id: str, server_name: str) -> bool:
    state = remote_devices.get_cache_states(conn, [user_id]).get(user_id)
    if state is None or not state.stale:
        return False
    if rooms_shared_with_server(conn, user_id, server_name):
        return True
    remote_devices.delete_user_cache(conn, user_id)
    return False


def _invalidate(
    conn: sa.Connection, changes: list[tuple[str, str, str]], server_name: str
) -> tuple[set[str], set[str]]:
    """Membership changes (room, user, membership) committed: delete the caches of
    remote users we share no room with any more; returns (deleted users, local
    users who joined a room holding a server that shared no room with them before
    and whose devices were announced)."""
    candidates: set[str] = set()
    announced: set[str] = set()
    for room_id, user_id, membership in changes:
        local = _server_of(user_id) == server_name
        if membership == "join":
            if local and user_exists(conn, user_id):
                if _announce_to_new_servers(conn, room_id, user_id):
                    announced.add(user_id)
            continue
        if not local:
            candidates.add(user_id)
        else:
            # Our member left: every remote member of the room may have lost their
            # last room shared with us.
            members = timeline.get_member_list(conn, room_id)
            candidates.update(u for u, m in members.items() if m == "join" and _server_of(u) != server_name)
    deleted: set[str] = set()
    held = remote_devices.get_cached_user_ids(conn, candidates) if candidates else set()
    for user_id in held:
        if not rooms_shared_with_server(conn, user_id, server_name):
            remote_devices.delete_user_cache(conn, user_id)
            deleted.add(user_id)
    return deleted, announced


def _sweep_unshared(conn: sa.Connection, server_name: str) -> set[str]:
    """At start-up: delete the caches of remote users we share no room with. A
    membership change is handed to the worker in memory (``after_membership_change``)
    after its commit, so a crash in between would leave a cache that misses updates
    once a room is shared again; this sweep closes that gap."""
    deleted: set[str] = set()
    for user_id in remote_devices.get_all_cached_user_ids(conn):
        if not rooms_shared_with_server(conn, user_id, server_name):
            remote_devices.delete_user_cache(conn, user_id)
            deleted.add(user_id)
    return deleted


def _announce_to_new_servers(conn: sa.Connection, room_id: str, user_id: str) -> bool:
    """A local user joined ``room_id``: if a server there shared no other room with
    them, record a change of each of their devices (an ``m.device_list_update`` to
    every server sharing a room: redundant for the others, harmless)."""
    own = _server_of(user_id)
    here = {s for s in joined_servers(conn, room_id) if s != own}
    if not here:
        return False
    elsewhere: set[str] = set()
    for other in (r for r, m in timeline.get_memberships(conn, user_id).items() if m.membership == "join"):
        if other != room_id:
            elsewhere.update(joined_servers(conn, other))
    if not (here - elsewhere):
        return False
    for device in get_devices(conn, user_id):
        dl_store.record_device_change(conn, user_id, device.device_id)
    return True


# ------------------------------------------------------------------ the service


class DeviceLists:
    def __init__(
        self,
        *,
        db: Database,
        notifier: Notifier,
        server_name: str,
        clock: Clock,
        federation: Any = None,
        sender: Any = None,
        request_timeout_s: float = 30.0,
        backoff_initial_s: float = 10.0,
        backoff_max_s: float = 3600.0,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._server_name = server_name
        self._clock = clock
        self._federation = federation
        self._sender = sender
        self._timeout_s = request_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._wake = trio.Event()
        self._local: dict[str, None] = {}
        self._memberships: list[tuple[str, str, str]] = []
        self._wanted: set[str] = set()
        self._in_flight: set[str] = set()
        self._retry: dict[str, tuple[float, float]] = {}  # user -> (due trio time, interval)
        self._seen: dict[str, list[int]] = {}
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT_RESYNCS)
        #: Counters (tests, diagnostics).
        self.resyncs_done = 0
        self.resyncs_failed = 0

    # ---------------------------------------------------------------- entry points

    def after_local_change(self, user_id: str) -> None:
        """A local user's device list or cross-signing keys changed (committed):
        wake their /sync now; the worker notifies their rooms and wakes the outbox."""
        self._notifier.notify(user_id)
        self._local[user_id] = None
        self._wake.set()

    def request_resync(self, user_id: str) -> None:
        """Resync this remote user's device list (its cache row is marked stale)."""
        self._wanted.add(user_id)
        self._wake.set()

    def after_membership_change(self, room_id: str, user_id: str, membership: str) -> None:
        """A member event was committed (``api.services`` on_commit)."""
        local = _server_of(user_id) == self._server_name
        if not (membership in ("leave", "ban") or (membership == "join" and local)):
            return  # an invite, a knock or a remote join changes no room sharing we track
        self._memberships.append((room_id, user_id, membership))
        self._wake.set()

    def retry_now(self, server_name: str | None = None) -> None:
        """Forget the backoff of the users waiting for a resync (of one server, or
        all) and retry them at once (e.g. the server is known to be back)."""
        for user_id in list(self._retry):
            if server_name is None or _server_of(user_id) == server_name:
                self._retry.pop(user_id)
        self._wake.set()

    def known_stream_ids(self, user_id: str) -> set[int]:
        """Stream IDs of the remote user recently applied (module docstring)."""
        return set(self._seen.get(user_id, ()))

    def note_stream_ids(self, user_id: str, ids: Iterable[int]) -> None:
        seen = self._seen.pop(user_id, [])
        seen.extend(i for i in ids if i not in seen)
        self._seen[user_id] = seen[-_SEEN_PER_USER:]
        while len(self._seen) > _SEEN_USERS:
            self._seen.pop(next(iter(self._seen)))

    def forget_stream_ids(self, user_id: str) -> None:
        self._seen.pop(user_id, None)

    # ---------------------------------------------------------------- worker

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        swept = await self._db.write(_sweep_unshared, self._server_name)
        if swept:
            log.info("dropped %d remote device-list caches of users we share no room with", len(swept))
        for user_id in await self._db.read(remote_devices.get_stale_users):
            self._wanted.add(user_id)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                try:
                    await self._step(nursery)
                except Exception:  # a database error: log, keep the service alive
                    log.exception("device-list worker step failed")
                    await trio.sleep(1)
                    continue
                now = trio.current_time()
                waiting = [self._retry.get(u, (now, 0))[0] for u in self._wanted if u not in self._in_flight]
                deadline = min(waiting) if waiting else math.inf
                if self._local or self._memberships or deadline <= now:
                    continue
                with trio.move_on_at(deadline):
                    await self._wake.wait()

    async def _step(self, nursery: trio.Nursery) -> None:
        if self._local:
            users = list(self._local)
            self._local.clear()
            rooms, servers = await self._db.read(_local_change_targets, users)
            self._notifier.notify(*users, *rooms)
            self._wake_outbox(servers)
        if self._memberships:
            changes = self._memberships
            self._memberships = []
            deleted, announced = await self._db.write(_invalidate, changes, self._server_name)
            for user_id in deleted:
                self.forget_stream_ids(user_id)
                self._retry.pop(user_id, None)
            if announced:
                self._local.update(dict.fromkeys(announced))
                self._wake.set()
        now = trio.current_time()
        for user_id in [u for u in self._wanted if u not in self._in_flight]:
            if self._retry.get(user_id, (now, 0))[0] <= now:
                self._wanted.discard(user_id)
                self._in_flight.add(user_id)
                nursery.start_soon(self._resync_task, user_id)

    def _wake_outbox(self, servers: Iterable[str]) -> None:
        servers = list(servers)
        if servers and self._sender is not None:
            self._sender.wake_outbox(servers)

    async def _resync_task(self, user_id: str) -> None:
        ok = False
        try:
            async with self._limiter:
                ok = await self.resync_user(user_id)
        except Exception:
            log.exception("device-list resync of %s failed", user_id)
        finally:
            self._in_flight.discard(user_id)
            if ok:
                self._retry.pop(user_id, None)
            else:
                self.resyncs_failed += 1
                _, interval = self._retry.get(user_id, (0.0, 0.0))
                interval = min(max(interval * 2, self._backoff_initial_s), self._backoff_max_s)
                self._retry[user_id] = (trio.current_time() + interval, interval)
                self._wanted.add(user_id)
            self._wake.set()

    async def resync_user(self, user_id: str) -> bool:
        """Replace the cache of a stale remote user from ``GET /user/devices/{userId}``.
        True when done (or nothing to do: not stale, or no shared room), False to retry."""
        if not await self._db.write(_needs_resync, user_id, self._server_name):
            return True
        if self._federation is None:
            return False
        path = "/_matrix/federation/v1/user/devices/" + urllib.parse.quote(user_id, safe="")
        try:
            body = await self._federation.request(_server_of(user_id), "GET", path, timeout_s=self._timeout_s)
        except (FederationUnreachable, FederationError) as e:
            log.info("device-list resync of %s: %s", user_id, e)
            return False
        parsed = parse_user_devices(user_id, body)
        if parsed is None:
            log.info("device-list resync of %s: malformed answer", user_id)
            return False
        rooms = await self._db.write(_store_resync, user_id, parsed, self._server_name, self._clock.time_ms())
        self.forget_stream_ids(user_id)
        if rooms is not None:
            self.note_stream_ids(user_id, [parsed["stream_id"]])
            self._notifier.notify(*rooms)
        self.resyncs_done += 1
        return True
