"""Statements compiled once, executed on the raw sqlite3 connection.

Building and compiling a SQLAlchemy Core statement costs far more CPU than SQLite
takes to run a small indexed query, so functions on hot paths (every ``/sync``, every
send) keep their statement as a module constant made by :func:`compiled` at import,
and run it with :func:`raw`'s ``execute(sql, params)`` inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

__all__ = ["compiled", "raw"]

_DIALECT = sqlite.dialect(paramstyle="named")


def compiled(stmt: sa.Executable, *params: str) -> str:
    """``stmt`` as sqlite3 SQL with ``:name`` parameters; it must bind exactly
    ``params`` (a Python literal would become a parameter nobody supplies)."""
    result = stmt.compile(dialect=_DIALECT)
    if set(result.params) != set(params):
        raise AssertionError(f"statement binds {sorted(result.params)}, expected {sorted(params)}: {result.string}")
    return result.string


def raw(conn: sa.Connection) -> sqlite3.Connection:
    """The sqlite3 connection under ``conn`` (its transaction is the caller's)."""
    return conn.connection.driver_connection  # type: ignore[return-value]
