"""Fixtures for room actor tests: a real Database in tmp_path and a running registry
of real RoomActors (builders live in ``tests/helpers/rooms.py``).

* ``db``: :class:`storage.db.Database` on a SQLite file under ``tmp_path``.
* ``server``: a :class:`~tests.helpers.rooms.Server` (``local.example``) whose
  registry runs in the test's nursery.

About ``autojump_clock``: it advances virtual time whenever every task is blocked —
including while a task waits for a database thread. A finite ``ask`` timeout would
then expire spuriously, so the test settings use ``request_timeout_s = inf``; idle
rooms may hibernate "early" during such waits, which is harmless (they reload).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage.db import Database
from tests.helpers.rooms import Server


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "data" / "rooms.db") as database:
        yield database


@pytest.fixture
async def server(nursery: trio.Nursery, db: Database) -> Server:
    srv = Server(db)
    await nursery.start(srv.registry.run)
    return srv
