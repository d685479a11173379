"""Fixtures for the HTTP edge: settings rooted in tmp_path, the app, a real server.

``settings`` binds an ephemeral loopback port and keeps data under ``tmp_path``.
``live_server`` runs the real composition root (``api.server.serve``, hypercorn on
a socket) in the test's nursery, which pytest-trio cancels when the test ends.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from quart_trio import QuartTrio

from api.app import create_app
from api.server import serve
from api.services import open_homeserver
from api.settings import Settings, parse_settings
from tests.helpers.http import LiveServer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
            "database": {"path": "data/roomactors.db"},
            "registration": {"enabled": True, "shared_secret": "test-shared-secret"},
            # Single-server HTTP tests: federation off (tests/federation runs networks).
            "federation": {"enabled": False, "trusted_key_servers": []},
        },
        base_dir=tmp_path,
    )


@pytest.fixture
async def homeserver(settings: Settings):
    """The real services (database, room actors, typing) on tmp_path, as ``Deps``."""
    async with open_homeserver(settings) as deps:
        yield deps


@pytest.fixture
async def app(homeserver) -> QuartTrio:
    return create_app(homeserver)


@pytest.fixture
async def live_server(nursery: trio.Nursery, settings: Settings):
    stop = trio.Event()
    binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
    host, _, port = binds[0].removeprefix("http://").rpartition(":")
    yield LiveServer(host=host, port=int(port))
    stop.set()



@pytest.fixture
async def alice(app: QuartTrio):
    """A registered session (``tests.helpers.client.Api``) for @alice."""
    from tests.helpers.client import register

    return await register(app, "alice")


@pytest.fixture
async def bob(app: QuartTrio):
    from tests.helpers.client import register

    return await register(app, "bob")
