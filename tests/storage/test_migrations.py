"""The migration runner on in-memory databases (sync); Database-level cases live in test_database.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage.db import create_engine
from storage.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    ForeignDatabaseError,
    SchemaTooNewError,
    current_version,
    migrate,
)
from storage.schema import metadata, schema_version


@pytest.fixture
def bare() -> sa.Connection:
    engine = create_engine(":memory:", writer=True)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_migrations_are_numbered_from_one_and_start_with_the_baseline() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert MIGRATIONS[0].name == "0001_initial"


def test_fresh_database_gets_every_declared_table_and_index(bare: sa.Connection) -> None:
    assert migrate(bare) == LATEST_VERSION
    inspector = sa.inspect(bare)
    assert set(inspector.get_table_names()) == set(metadata.tables)
    for table in metadata.tables.values():
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys())
        assert {i["name"] for i in inspector.get_indexes(table.name)} == {i.name for i in table.indexes}


def test_migrating_twice_is_a_no_op(bare: sa.Connection) -> None:
    migrate(bare)
    migrate(bare)
    with bare.begin():
        assert bare.execute(sa.select(schema_version.c.version)).scalars().all() == [LATEST_VERSION]
        assert current_version(bare) == LATEST_VERSION


def test_a_newer_database_is_refused_before_anything_changes(bare: sa.Connection) -> None:
    migrate(bare)
    with bare.begin():
        bare.execute(sa.insert(schema_version).values(version=LATEST_VERSION + 7, applied_ts=0))
    with pytest.raises(SchemaTooNewError, match="newer release"):
        migrate(bare)


def test_a_database_that_is_not_ours_is_refused(bare: sa.Connection) -> None:
    with bare.begin():
        bare.exec_driver_sql("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    with pytest.raises(ForeignDatabaseError, match="accounts"):
        migrate(bare)


def test_a_failed_migration_leaves_the_database_as_it_was(
    bare: sa.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDL is transactional in SQLite: a baseline that fails half-way leaves no tables."""
    import storage.migrations as runner

    def half_then_fail(conn: sa.Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("disk on fire")

    broken = (runner.Migration(1, "0001_initial", half_then_fail), *MIGRATIONS[1:])
    monkeypatch.setattr(runner, "MIGRATIONS", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(bare)
    with bare.begin():
        assert current_version(bare) == 0
        assert sa.inspect(bare).get_table_names() == []
