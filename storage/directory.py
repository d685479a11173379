"""Room aliases and the public room directory (client-server "Room aliases",
"Listing rooms"). Synchronous repository functions for ``db.write``/``db.read``.

Aliases are not room DAG rows (an alias is server-local data that points at a
room), so the API writes them directly; ``m.room.canonical_alias`` events are
room state and go through the room's actor like every other event.
"""

from __future__ import annotations

import sqlalchemy as sa

from .schema import room_aliases, room_directory

__all__ = [
    "AliasExistsError",
    "create_alias",
    "delete_alias",
    "get_alias",
    "get_alias_row",
    "get_room_aliases",
    "set_visibility",
    "get_visibility",
    "get_public_room_ids",
]


class AliasExistsError(ValueError):
    """The alias already points at a room."""


def create_alias(conn: sa.Connection, alias: str, room_id: str, creator: str) -> None:
    if get_alias(conn, alias) is not None:
        raise AliasExistsError(alias)
    conn.execute(sa.insert(room_aliases).values(room_alias=alias, room_id=room_id, creator=creator))


def delete_alias(conn: sa.Connection, alias: str) -> bool:
    return conn.execute(sa.delete(room_aliases).where(room_aliases.c.room_alias == alias)).rowcount > 0


def get_alias(conn: sa.Connection, alias: str) -> str | None:
    return conn.execute(sa.select(room_aliases.c.room_id).where(room_aliases.c.room_alias == alias)).scalar()


def get_alias_row(conn: sa.Connection, alias: str) -> tuple[str, str] | None:
    """(room_id, creator) of the alias, or None."""
    row = conn.execute(
        sa.select(room_aliases.c.room_id, room_aliases.c.creator).where(room_aliases.c.room_alias == alias)
    ).first()
    return None if row is None else (row[0], row[1])


def get_room_aliases(conn: sa.Connection, room_id: str) -> list[str]:
    query = sa.select(room_aliases.c.room_alias).where(room_aliases.c.room_id == room_id)
    return sorted(conn.execute(query).scalars())


def set_visibility(conn: sa.Connection, room_id: str, visibility: str) -> None:
    conn.execute(sa.delete(room_directory).where(room_directory.c.room_id == room_id))
    conn.execute(sa.insert(room_directory).values(room_id=room_id, visibility=visibility))


def get_visibility(conn: sa.Connection, room_id: str) -> str:
    value = conn.execute(sa.select(room_directory.c.visibility).where(room_directory.c.room_id == room_id)).scalar()
    return value or "private"


def get_public_room_ids(conn: sa.Connection) -> list[str]:
    query = sa.select(room_directory.c.room_id).where(room_directory.c.visibility == "public")
    return sorted(conn.execute(query).scalars())
