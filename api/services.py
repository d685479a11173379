"""open_homeserver: the services of one homeserver, started in order, as ``Deps``.

Theory of operation
-------------------
``async with open_homeserver(settings) as deps:`` is everything of a homeserver
except its HTTP listener (``api.server.serve`` adds hypercorn; tests and
``roomactors.testing`` use the same function, so they run the real thing)::

    open_homeserver
    ├── Database.open             writer thread + readers (migrated)
    └── nursery
        ├── SenderHub.run         one DestinationQueue task per remote server ([federation] enabled)
        ├── RoomRegistry.run      one task per loaded room actor
        ├── TypingService.run     typing timeouts
        ├── MediaRepository.run   remote media fetches and thumbnails others wait on (roomactors/media)
        └── DeviceLists.run       device-list notifications, remote resyncs, cache invalidation

Startup order follows docs/ARCHITECTURE.md: database, then the registry, then the
ephemeral services; each is started with ``nursery.start`` so it is ready before
the next. Shutdown runs in reverse: the registry is closed first (each actor
finishes the messages already queued and checkpoints them), then the remaining
service tasks are cancelled, then the database drains its write queue and closes.
Room actors report each commit to the notifier (``on_commit``), which wakes the
/sync long-polls for that room and, for membership events, for that user.

With ``[federation] enabled`` the outbound ``FederationClient`` signs every request
and sends it through an ``HttpsTransport`` (spec server discovery, the IP
deny-list, TLS); ``open_homeserver(..., federation_transport=...)`` swaps the
transport (the in-process test network). The HTTPS transport is closed at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from api.auth import TokenCache
from api.client.uia import UiaSessions
from api.deps import Deps
from api.ratelimit import Limit, RateLimiter
from api.settings import Settings
from api.signing_key import load_old_verify_keys, load_or_create_signing_key
from roomactors.clock import Clock, SystemClock
from roomactors.device_lists import DeviceLists
from roomactors.federation_client import FederationClient, FederationTransport, HttpsTransport
from roomactors.inbound import RemoteEvents
from roomactors.media import MediaRepository
from roomactors.keys import KeyService
from roomactors.sender import SenderHub
from roomactors.notifier import Notifier
from roomactors.protocol.ids import RoomId
from roomactors.registry import RegistrySettings, RoomRegistry
from roomactors.room.actor import RoomActor
from roomactors.typing import TypingService
from storage import staging
from storage.db import Database

__all__ = ["open_homeserver"]


@asynccontextmanager
async def open_homeserver(
    settings: Settings,
    *,
    clock: Clock | None = None,
    signing_key: Any = None,
    federation_transport: FederationTransport | None = None,
) -> AsyncIterator[Deps]:
    """``federation_transport`` replaces the HTTPS transport of the outbound
    federation client (the in-process test network routes requests itself); the
    caller then owns it. Ignored when ``[federation] enabled = false``."""
    clock = clock or SystemClock()
    if signing_key is None:
        signing_key = load_or_create_signing_key(settings.server.signing_key_path)
    server_name = settings.server.server_name
    notifier = Notifier()
    registry_settings: RegistrySettings = settings.actors

    def on_commit(room_id: RoomId, stream_ordering: int, event: dict[str, Any]) -> None:
        if event.get("type") == "m.room.member" and isinstance(event.get("state_key"), str):
            notifier.notify(room_id, event["state_key"])
            membership = (event.get("content") or {}).get("membership")
            if isinstance(membership, str):
                # Device lists: drop remote caches when we share no room any more.
                device_lists.after_membership_change(room_id, event["state_key"], membership)
        else:
            notifier.notify(room_id)

    async with Database.open(settings.database.path) as db:
        fed = settings.federation
        federation = own_transport = keys = sender = remote = None
        if fed.enabled:
            if federation_transport is None:
                federation_transport = own_transport = HttpsTransport(
                    verify_certificates=fed.verify_certificates,
                    ip_range_denylist=fed.ip_range_denylist,
                    ip_range_allowlist=fed.ip_range_allowlist,
                )
            federation = FederationClient(
                federation_transport,
                server_name=server_name,
                signing_key=signing_key,
                request_timeout_s=fed.request_timeout_s,
            )
            keys = KeyService(
                db=db,
                server_name=server_name,
                signing_key=signing_key,
                old_verify_keys=load_old_verify_keys(settings.server.signing_key_path),
                client=federation,
                clock=clock,
                validity_s=fed.key_validity_s,
                trusted_key_servers=fed.trusted_key_servers,
            )
            sender = SenderHub(
                db=db,
                client=federation,
                server_name=server_name,
                clock=clock,
                backoff_initial_s=fed.backoff_initial_s,
                backoff_max_s=fed.backoff_max_s,
            )
            remote = RemoteEvents(federation, keys, timeout_s=fed.request_timeout_s)
        staging_flags: set[Any] = set()
        device_lists = DeviceLists(
            db=db, notifier=notifier, server_name=server_name, clock=clock, federation=federation, sender=sender,
            request_timeout_s=fed.request_timeout_s,
        )

        def on_outbound(room_id: RoomId, stream_ordering: int, pdu: dict[str, Any], destinations: frozenset[str]) -> None:
            if sender is not None:
                sender.send_pdu(room_id=room_id, stream_ordering=stream_ordering, pdu=pdu, destinations=destinations)

        def make_actor(room_id: RoomId) -> RoomActor:
            return RoomActor(
                room_id,
                db=db,
                server_name=server_name,
                signing_key=signing_key,
                clock=clock,
                settings=registry_settings,
                on_commit=on_commit,
                on_outbound=on_outbound,
                remote=remote,
                staging_flags=staging_flags,
            )

        registry = RoomRegistry(actor_factory=make_actor, settings=registry_settings, clock=clock)
        typing = TypingService(notifier.notify)
        rl = settings.ratelimit
        limiter = RateLimiter(
            {name: Limit(b.per_second, b.burst) for name, b in rl.buckets().items()}, enabled=rl.enabled
        )
        async with trio.open_nursery() as nursery:
            registry_done = trio.Event()

            async def run_registry(*, task_status: trio.TaskStatus[None]) -> None:
                try:
                    await registry.run(task_status=task_status)
                finally:
                    registry_done.set()

            if sender is not None:
                await nursery.start(sender.run)
            await nursery.start(run_registry)
            await nursery.start(typing.run)
            # The media repository: uploads, downloads, thumbnails, remote media (roomactors/media).
            media = MediaRepository(
                db=db, server_name=server_name, settings=settings.media, clock=clock,
                federation=federation, max_request_size=settings.http.max_request_size,
            )
            await nursery.start(media.run)
            await nursery.start(device_lists.run)
            deps = Deps(
                settings=settings,
                server_name=server_name,
                signing_key=signing_key,
                db=db,
                registry=registry,
                notifier=notifier,
                typing=typing,
                clock=clock,
                tokens=TokenCache(),
                ratelimiter=limiter,
                uia=UiaSessions(),
                keys=keys,
                federation=federation,
                sender=sender,
                media=media,
                staging_flags=staging_flags,
                device_lists=device_lists,
            )
            # PDUs staged before a restart: wake their rooms (each actor drains).
            if remote is not None:
                for room_id in await db.read(staging.rooms_with_staged):
                    staging_flags.add(RoomId(room_id))
                    await registry.get(RoomId(room_id))
            try:
                yield deps
            finally:
                registry.close()
                with trio.CancelScope(shield=True):
                    await registry_done.wait()
                    if own_transport is not None:
                        await own_transport.aclose()
                nursery.cancel_scope.cancel()
