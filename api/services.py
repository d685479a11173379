"""open_homeserver: the services of one homeserver, started in order, as ``Deps``.

Theory of operation
-------------------
``async with open_homeserver(settings) as deps:`` is everything of a homeserver
except its HTTP listener (``api.server.serve`` adds hypercorn; tests and
``roomactors.testing`` use the same function, so they run the real thing)::

    open_homeserver
    ├── Database.open             writer thread + readers (migrated)
    └── nursery
        ├── RoomRegistry.run      one task per loaded room actor
        └── TypingService.run     typing timeouts

Startup order follows docs/ARCHITECTURE.md: database, then the registry, then the
ephemeral services; each is started with ``nursery.start`` so it is ready before
the next. Shutdown runs in reverse: the registry is closed first (each actor
finishes the messages already queued and checkpoints them), then the remaining
service tasks are cancelled, then the database drains its write queue and closes.
Room actors report each commit to the notifier (``on_commit``), which wakes the
/sync long-polls for that room and, for membership events, for that user.
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
from api.signing_key import load_or_create_signing_key
from roomactors.clock import Clock, SystemClock
from roomactors.notifier import Notifier
from roomactors.protocol.ids import RoomId
from roomactors.registry import RegistrySettings, RoomRegistry
from roomactors.room.actor import RoomActor
from roomactors.typing import TypingService
from storage.db import Database

__all__ = ["open_homeserver"]


@asynccontextmanager
async def open_homeserver(
    settings: Settings, *, clock: Clock | None = None, signing_key: Any = None
) -> AsyncIterator[Deps]:
    clock = clock or SystemClock()
    if signing_key is None:
        signing_key = load_or_create_signing_key(settings.server.signing_key_path)
    server_name = settings.server.server_name
    notifier = Notifier()
    registry_settings: RegistrySettings = settings.actors

    def on_commit(room_id: RoomId, stream_ordering: int, event: dict[str, Any]) -> None:
        if event.get("type") == "m.room.member" and isinstance(event.get("state_key"), str):
            notifier.notify(room_id, event["state_key"])
        else:
            notifier.notify(room_id)

    async with Database.open(settings.database.path) as db:

        def make_actor(room_id: RoomId) -> RoomActor:
            return RoomActor(
                room_id,
                db=db,
                server_name=server_name,
                signing_key=signing_key,
                clock=clock,
                settings=registry_settings,
                on_commit=on_commit,
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

            await nursery.start(run_registry)
            await nursery.start(typing.run)
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
            )
            try:
                yield deps
            finally:
                registry.close()
                with trio.CancelScope(shield=True):
                    await registry_done.wait()
                nursery.cancel_scope.cancel()
