"""The migration runner: numbered modules, a ``schema_version`` table, applied at open.

Theory of operation
-------------------
Each migration is a module ``NNNN_<name>.py`` in this package with a docstring and
``def upgrade(conn: sqlalchemy.Connection) -> None``; ``NNNN`` is its version. The
database records every version applied to it in ``schema_version`` (declared, like
every table, in ``storage/schema.py``); its version is the largest.

:func:`migrate` runs on the writer connection when ``Database.open`` starts, before
any job, each step in its own ``BEGIN IMMEDIATE`` transaction (SQLite DDL is
transactional), so a crash mid-migration leaves the previous version intact and
two processes opening one file serialise on the write lock:

* **fresh database** (no tables at all): the baseline ``0001_initial`` creates what
  ``storage/schema.py`` declares *today*, which already includes every later delta,
  so the database is stamped with :data:`LATEST_VERSION` directly (the "full
  schema + deltas" layout Synapse uses);
* **older database**: every migration above its version runs in order, each
  recorded as it commits;
* **current database**: nothing to do (re-opening is idempotent);
* **newer database** (written by a later release): refused with
  :class:`SchemaTooNewError`, before anything is touched. A file with tables but no
  ``schema_version`` is not ours and is refused with :class:`ForeignDatabaseError`.

Adding a migration: change ``storage/schema.py``, add ``NNNN_<what>.py`` whose
``upgrade`` turns version NNNN-1 into NNNN (``ALTER TABLE``, new indexes, backfills).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from ..schema import schema_version

__all__ = [
    "Migration",
    "MIGRATIONS",
    "LATEST_VERSION",
    "SchemaTooNewError",
    "ForeignDatabaseError",
    "current_version",
    "migrate",
]

_NAME = re.compile(r"^(\d{4})_\w+$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    upgrade: Callable[[sa.Connection], None]


def _discover() -> tuple[Migration, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        match = _NAME.match(info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(Migration(int(match.group(1)), info.name, module.upgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"storage migrations must be numbered 1, 2, … without gaps; found {versions}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _discover()
LATEST_VERSION: int = MIGRATIONS[-1].version


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer roomactors; this release cannot use it."""


class ForeignDatabaseError(RuntimeError):
    """The file holds tables but no ``schema_version``: it is not a roomactors database."""


def _table_names(conn: sa.Connection) -> set[str]:
    rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return {name for (name,) in rows}


def current_version(conn: sa.Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    tables = _table_names(conn)
    if schema_version.name not in tables:
        if tables:
            raise ForeignDatabaseError(
                f"the database has tables {sorted(tables)} but no {schema_version.name} table; "
                "it was not created by roomactors"
            )
        return 0
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def _stamp(conn: sa.Connection, version: int) -> None:
    conn.execute(sa.insert(schema_version).values(version=version, applied_ts=int(time.time() * 1000)))


def migrate(conn: sa.Connection) -> int:
    """Bring the database on ``conn`` (outside any transaction) to LATEST_VERSION; return it."""
    while True:
        with conn.begin():  # BEGIN IMMEDIATE: the version read and the step are one transaction
            version = current_version(conn)
            if version > LATEST_VERSION:
                raise SchemaTooNewError(
                    f"the database is at schema version {version}, but this roomactors knows versions up to "
                    f"{LATEST_VERSION}; it was written by a newer release. Run that release, or restore a backup."
                )
            if version == LATEST_VERSION:
                return version
            if version == 0:
                MIGRATIONS[0].upgrade(conn)
                _stamp(conn, LATEST_VERSION)
                continue
            step = MIGRATIONS[version]  # the migration numbered version + 1
            step.upgrade(conn)
            _stamp(conn, step.version)
