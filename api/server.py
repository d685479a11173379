"""Composition root: ``serve(settings)`` owns the root nursery and the HTTP server.

Theory of operation
-------------------
``trio.run(serve, settings)`` (from ``api.cli``) is the whole process::

    serve(settings)
    └── open_homeserver(settings)         database, room registry, typing (api.services)
        └── nursery
            ├── _stop_on_signal / _stop_after   sets `stop` on SIGINT/SIGTERM (or a test's trigger)
            └── hypercorn.trio.serve(app, ...)  started last; readiness = our readiness

Startup: the database directory is created, the hypercorn guards are installed
(``api.hypercorn_guard``: HTTP/1.1 only, real ``Connection: close``), the app is
built, the shutdown watcher is started with ``nursery.start`` (so signal handlers
are in place before the first request), then hypercorn runs in the nursery body.
Hypercorn reports its bound addresses through ``task_status``, which is passed
straight through, so a caller doing ``await nursery.start(serve, settings)`` gets
them once the server accepts connections. Later services (database, key service,
sender, room registry) are started by ``api.services.open_homeserver`` before
hypercorn, in that order; on shutdown hypercorn drains first, then the registry
lets every actor finish its queued messages, then the database closes.

Shutdown: the first SIGINT/SIGTERM sets ``stop``; hypercorn stops accepting and
gives in-flight requests ``[http] graceful_timeout_s`` to finish, then returns and
the watcher is cancelled. The watcher's signal receiver is closed by then, so a
second Ctrl-C raises ``KeyboardInterrupt`` as usual. If hypercorn fails (say, its
port is taken) the error propagates and cancels the rest.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Awaitable, Callable

import hypercorn.trio
import trio
from hypercorn.config import Config

from api import hypercorn_guard
from api.app import create_app
from api.services import open_homeserver
from api.settings import HttpSettings, Settings
from roomactors.clock import Clock

__all__ = ["hypercorn_config", "serve"]

log = logging.getLogger(__name__)


def hypercorn_config(http: HttpSettings, *, read_timeout_s: int | None = None) -> Config:
    """The hypercorn ``Config`` for the client listener described by ``[http]``.

    ``read_timeout_s``: hypercorn's trio worker reads every connection under this
    timeout *while a request is in flight too* (it watches for disconnects), so a
    silent client is cut after it. ``serve`` sets it just above the longest /sync
    long poll (``[sync] max_timeout_ms`` + 30 s): long polls are never cut, and a
    connection that sent half a request and went quiet is closed within minutes
    rather than held forever. Idle keep-alive connections are closed after
    hypercorn's ``keep_alive_timeout`` (5 s) as before.
    """
    config = Config()
    config.read_timeout = read_timeout_s
    config.bind = list(http.client_bind)
    config.graceful_timeout = http.graceful_timeout_s
    config.alpn_protocols = hypercorn_guard.hypercorn_alpn()
    # A Logger (not "-") makes hypercorn log through the standard logging tree
    # instead of installing its own stderr handler; access logging stays off.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    clock: Clock | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the homeserver until SIGINT/SIGTERM, or until ``shutdown_trigger`` returns.

    ``task_status.started`` receives hypercorn's bound URLs (``["http://127.0.0.1:8008"]``).
    """
    settings.database.path.parent.mkdir(parents=True, exist_ok=True)
    hypercorn_guard.install()
    config = hypercorn_config(settings.http, read_timeout_s=math.ceil(settings.sync.max_timeout_ms / 1000) + 30)
    stop = trio.Event()

    async with open_homeserver(settings, clock=clock) as deps, trio.open_nursery() as nursery:
        app = create_app(deps)
        if shutdown_trigger is None:
            await nursery.start(_stop_on_signal, stop)
        else:
            await nursery.start(_stop_after, shutdown_trigger, stop)
        await hypercorn.trio.serve(
            app, config, shutdown_trigger=stop.wait, task_status=task_status, mode="asgi"
        )
        nursery.cancel_scope.cancel()


async def _stop_on_signal(stop: trio.Event, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def _stop_after(
    trigger: Callable[[], Awaitable[object]], stop: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    await trigger()
    stop.set()
