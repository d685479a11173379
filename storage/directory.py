"""Room aliases and the public room directory (client-server "Room aliases",
"Listing rooms"). Synchronous repository functions for ``db.write``/``db.read``.

Aliases are not room DAG rows (an alias is server-local data that points at a
room), so the API writes them directly; ``m.room.canonical_alias`` events are
room state and go through the room's actor like every other event.

The published room directory (:func:`get_published_rooms`) is read from
``current_state`` in three queries per call, whatever the number of rooms: the
published room IDs, each room's joined-member count (counted in SQL with
``json_extract`` over the member events' JSON, so no member event is decoded in
Python), and the directory's state events (name, topic, avatar, aliases, join
rules, history visibility, guest access, create). Filtering, ordering and
pagination are the API's (``api/client/directory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .rooms import _load_json
from .schema import current_state, events, room_aliases, room_directory, rooms

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
    "move_aliases",
    "get_state_contents",
    "PublishedRoom",
    "DIRECTORY_STATE_TYPES",
    "get_published_rooms",
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


def move_aliases(conn: sa.Connection, old_room_id: str, new_room_id: str) -> list[str]:
    """Point every alias of ``old_room_id`` at ``new_room_id`` (room upgrades, step 4);
    the aliases moved, sorted. Creators are kept (Synapse's ``update_aliases_for_room``)."""
    moved = get_room_aliases(conn, old_room_id)
    if moved:
        conn.execute(
            sa.update(room_aliases).where(room_aliases.c.room_id == old_room_id).values(room_id=new_room_id)
        )
    return moved


def get_state_contents(
    conn: sa.Connection, room_id: str, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """``(type, state_key)`` -> content of those current-state events of the room
    (absent keys are missing; a content that is not an object reads as ``{}``)."""
    if not keys:
        return {}
    query = (
        sa.select(current_state.c.type, current_state.c.state_key, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.room_id == room_id,
            sa.or_(*(sa.and_(current_state.c.type == t, current_state.c.state_key == k) for t, k in keys)),
        )
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for t, k, text in conn.execute(query):
        content = _load_json(text).get("content")
        out[(t, k)] = content if isinstance(content, dict) else {}
    return out


#: The state (all with state_key "") a published room directory entry is built from.
DIRECTORY_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)


@dataclass(frozen=True, slots=True)
class PublishedRoom:
    """A room published in the directory, as stored right now."""

    room_id: str
    num_joined_members: int
    #: event type -> content, for the :data:`DIRECTORY_STATE_TYPES` the room has.
    state: dict[str, dict[str, Any]]


def get_published_rooms(conn: sa.Connection) -> list[PublishedRoom]:
    """Every room with directory visibility ``public`` that this server knows
    (has a ``rooms`` row), in room ID order."""
    published = (
        sa.select(room_directory.c.room_id)
        .join_from(room_directory, rooms, rooms.c.room_id == room_directory.c.room_id)
        .where(room_directory.c.visibility == "public")
    )
    room_ids = sorted(conn.execute(published).scalars())
    if not room_ids:
        return []
    published_ids = published.scalar_subquery()
    joined = sa.func.json_extract(events.c.json, "$.content.membership") == "join"
    counts_query = (
        sa.select(current_state.c.room_id, sa.func.count())
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.room_id.in_(published_ids), current_state.c.type == "m.room.member", joined)
        .group_by(current_state.c.room_id)
    )
    counts = {room_id: int(n) for room_id, n in conn.execute(counts_query)}
    state_query = (
        sa.select(current_state.c.room_id, current_state.c.type, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.room_id.in_(published_ids),
            current_state.c.type.in_(DIRECTORY_STATE_TYPES),
            current_state.c.state_key == "",
        )
    )
    state: dict[str, dict[str, dict[str, Any]]] = {room_id: {} for room_id in room_ids}
    for room_id, event_type, text in conn.execute(state_query):
        content = _load_json(text).get("content")
        if room_id in state:
            state[room_id][event_type] = content if isinstance(content, dict) else {}
    return [PublishedRoom(room_id, counts.get(room_id, 0), state[room_id]) for room_id in room_ids]
