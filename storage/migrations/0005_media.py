"""Migration 5: the media repository's tables (``media``, ``media_thumbnails``)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import schema

NEW_TABLES = (
    schema.media,
    schema.media_thumbnails,
)


def upgrade(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn, tables=list(NEW_TABLES), checkfirst=False)
