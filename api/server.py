"""Composition root: ``serve(settings)`` owns the root nursery and the HTTP server.

Theory of operation
-------------------
``trio.run(serve, settings)`` (from ``api.cli``) is the whole process::

    serve(settings)
    └── open_homeserver(settings)         database, room registry, typing (api.services)
        └── nursery
            ├── _stop_on_signal / _stop_after   sets `stop` on SIGINT/SIGTERM (or a test's trigger)
            ├── _serve_federation               [federation] enabled: the same app on `bind` (TLS)
            │                                   and `plain_bind` (HTTP), HTTP/1.1 only
            └── hypercorn.trio.serve(app, ...)  started last; readiness = our readiness

The federation listener is a second hypercorn server with its own ``Config``
(``federation_hypercorn_config``: certfile/keyfile, ALPN ``http/1.1``); if neither
certificate file exists, ``api.tls.ensure_tls_files`` writes a self-signed pair
first and a warning is logged. It starts after the client listener, and ``task_status`` reports the client
URLs followed by the federation ones once both accept connections. Only the
client listener runs the app's ASGI lifespan.

Startup: the database directory is created, the hypercorn guards are installed
(``api.hypercorn_guard``: HTTP/1.1 only, real ``Connection: close``), the app is
built, the shutdown watcher is started with ``nursery.start`` (so signal handlers
are in place before the first request), then hypercorn runs in the nursery body.
Hypercorn reports its bound addresses, which ``serve`` hands on through
``task_status`` (client listener first), so a caller doing ``await
nursery.start(serve, settings)`` gets them once the server accepts connections. Later services (database, key service,
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
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

from api import hypercorn_guard
from api.app import create_app
from api.services import open_homeserver
from api.settings import FederationSettings, HttpSettings, Settings
from api.tls import ensure_tls_files
from roomactors.clock import Clock

__all__ = ["federation_hypercorn_config", "hypercorn_config", "serve"]

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


def federation_hypercorn_config(
    federation: FederationSettings, http: HttpSettings, *, read_timeout_s: int | None = None
) -> Config | None:
    """The hypercorn ``Config`` for the federation listener, or ``None`` if it has no binds.

    TLS on ``[federation] bind`` (hypercorn's ``bind`` once ``certfile`` is set) and
    plain HTTP on ``plain_bind`` (hypercorn's ``insecure_bind``), for a TLS-terminating
    proxy in front. ALPN offers only ``http/1.1`` (``api.hypercorn_guard``). Without
    TLS binds no certificate is needed and ``plain_bind`` is hypercorn's ``bind``.
    """
    if not federation.bind and not federation.plain_bind:
        return None
    config = Config()
    config.read_timeout = read_timeout_s
    config.graceful_timeout = http.graceful_timeout_s
    config.alpn_protocols = hypercorn_guard.hypercorn_alpn()
    config.errorlog = logging.getLogger("hypercorn.error")
    if federation.bind:
        config.bind = list(federation.bind)
        config.insecure_bind = list(federation.plain_bind)
        config.certfile = str(federation.tls_certificate_path)
        config.keyfile = str(federation.tls_private_key_path)
    else:
        config.bind = list(federation.plain_bind)
    return config


async def serve(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    clock: Clock | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the homeserver until SIGINT/SIGTERM, or until ``shutdown_trigger`` returns.

    ``task_status.started`` receives hypercorn's bound URLs, the client listener's
    first (``["http://127.0.0.1:8008", "https://127.0.0.1:8448"]``); with
    ``[federation] enabled`` the federation listener's follow (``https://`` for TLS
    binds, ``http://`` for ``plain_bind``).
    """
    settings.database.path.parent.mkdir(parents=True, exist_ok=True)
    hypercorn_guard.install()
    read_timeout_s = math.ceil(settings.sync.max_timeout_ms / 1000) + 30
    config = hypercorn_config(settings.http, read_timeout_s=read_timeout_s)
    federation_config = None
    if settings.federation.enabled:
        federation_config = federation_hypercorn_config(
            settings.federation, settings.http, read_timeout_s=read_timeout_s
        )
        fed = settings.federation
        if federation_config is not None and fed.bind:
            if ensure_tls_files(fed.tls_certificate_path, fed.tls_private_key_path, settings.server.server_name):
                log.warning(
                    "no federation TLS certificate: wrote a self-signed one to %s (remote servers "
                    "verifying certificates will refuse it; install a CA-signed certificate there)",
                    fed.tls_certificate_path,
                )
    stop = trio.Event()

    async with open_homeserver(settings, clock=clock) as deps, trio.open_nursery() as nursery:
        app = create_app(deps)
        if shutdown_trigger is None:
            await nursery.start(_stop_on_signal, stop)
        else:
            await nursery.start(_stop_after, shutdown_trigger, stop)
        client_done, federation_done = trio.Event(), trio.Event()
        binds = await nursery.start(_serve_listener, app, config, stop, client_done)
        if federation_config is not None:
            federation_app = _without_lifespan(app)
            binds += await nursery.start(_serve_listener, federation_app, federation_config, stop, federation_done)
        else:
            federation_done.set()
        task_status.started(binds)
        await client_done.wait()
        stop.set()  # the client listener stopped: the federation one follows
        await federation_done.wait()
        nursery.cancel_scope.cancel()


async def _serve_listener(
    app: Any, config: Config, stop: trio.Event, done: trio.Event, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    """One hypercorn server for ``app``; it reports its bound URLs and drains on ``stop``."""
    try:
        await hypercorn.trio.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status, mode="asgi")
    finally:
        done.set()


def _without_lifespan(app: Any) -> Any:
    """``app`` for a second listener: the client listener alone runs the app's
    lifespan (startup/shutdown), so this one acknowledges lifespan events itself."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


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
