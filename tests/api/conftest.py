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
from api.settings import Settings, parse_settings
from tests.helpers.http import LiveServer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return parse_settings(
        {
            "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
            "database": {"path": "data/roomactors.db"},
        },
        base_dir=tmp_path,
    )


@pytest.fixture
def app(settings: Settings) -> QuartTrio:
    return create_app(settings)


@pytest.fixture
async def live_server(nursery: trio.Nursery, settings: Settings):
    stop = trio.Event()
    binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
    host, _, port = binds[0].removeprefix("http://").rpartition(":")
    yield LiveServer(host=host, port=int(port))
    stop.set()

