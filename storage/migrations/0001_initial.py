"""Migration 1 (baseline): create every table and index that ``storage/schema.py`` declares.

Runs only on an empty database, which the runner then stamps with the latest version
(see ``storage/migrations/__init__.py``). ``schema_version`` is created here too.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..schema import metadata


def upgrade(conn: sa.Connection) -> None:
    metadata.create_all(conn, checkfirst=False)
