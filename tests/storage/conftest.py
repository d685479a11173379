"""Fixtures for storage tests: an in-memory migrated connection, a file-backed Database.

* ``conn``: a SQLAlchemy connection to a fresh migrated ``:memory:`` database with
  the writer's PRAGMAs and transaction handling (``storage.db.create_engine``);
  repository functions run on it inside ``with conn.begin():``, as ``db.write``
  would run them, without trio.
* ``db``: a real :class:`storage.db.Database` on a file under ``tmp_path``
  (pytest-trio fixture, function scoped and cheap).
* :class:`LinearRoom` (in ``tests.storage.rooms``) builds a room event by event and
  keeps the model state next to what storage returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.db import Database, create_engine
from storage.migrations import migrate


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    engine = create_engine(":memory:", writer=True)
    with engine.connect() as connection:
        migrate(connection)
        yield connection
    engine.dispose()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "roomactors.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    async with Database.open(db_path) as database:
        yield database
