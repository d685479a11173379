"""The user directory search (client-server "User Directory",
``POST /user_directory/search``). A synchronous repository function for ``db.read``.

Theory of operation
-------------------
There is no directory table: one query computes the answer from current room
state, so it can never be stale. users.yaml says the server "MUST at a minimum
consider users who are visible to the requester based on their membership in rooms
known to the homeserver", namely users joined to

1. a room the requester is joined to ("share a room"),
2. a room whose ``m.room.join_rules`` is ``public``, or
3. a room whose ``m.room.history_visibility`` is ``world_readable``;

and this server considers exactly those (Synapse's default, without
``search_all_users``). The query builds the set of such rooms from
``current_state`` (one CTE), takes their joined members, and attaches a display
name and avatar: the ``profiles`` row for users that have one (our users), else the
values of their member events (remote users; if rooms disagree, the greatest).

Matching is case-insensitive on the user ID's localpart and on the display name,
as a substring (a leading ``@`` of the term is ignored; a term with ``:`` is also
matched against the whole user ID). It uses SQLite's ``LIKE`` and ``lower()``, which
fold ASCII letters only: ``Ä`` does not find ``ä`` (users.yaml only says
"preferably" a collation; documented limitation). Results are ranked: exact
matches first, then prefix matches, then users with a display name, then by user
ID; ``limit + 1`` rows are read so the caller can report ``limited``.

Cost: each search scans the member rows of ``current_state`` (like
``timeline.get_memberships``) and decodes the member events of the visible rooms;
fine at this server's scale, and the first thing to index if it is not.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .schema import current_state, events, profiles

__all__ = ["search_users"]

_MEMBER = "m.room.member"


def _content(field: str) -> sa.ColumnElement[Any]:
    return sa.func.json_extract(events.c.json, f"$.content.{field}")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _visible_rooms(requester: str) -> sa.CTE:
    cs = current_state
    joined_by_requester = (
        sa.select(cs.c.room_id)
        .join_from(cs, events, events.c.event_id == cs.c.event_id)
        .where(cs.c.type == _MEMBER, cs.c.state_key == requester, _content("membership") == "join")
    )
    open_rooms = (
        sa.select(cs.c.room_id)
        .join_from(cs, events, events.c.event_id == cs.c.event_id)
        .where(
            cs.c.state_key == "",
            sa.or_(
                sa.and_(cs.c.type == "m.room.join_rules", _content("join_rule") == "public"),
                sa.and_(cs.c.type == "m.room.history_visibility", _content("history_visibility") == "world_readable"),
            ),
        )
    )
    return sa.union(joined_by_requester, open_rooms).cte("visible_rooms")


def search_users(conn: sa.Connection, requester: str, term: str, limit: int) -> tuple[list[dict[str, str]], bool]:
    """Up to ``limit`` users visible to ``requester`` matching ``term``, as users.yaml
    ``User`` objects, and whether more matched (``limited``)."""
    cs = current_state
    visible = _visible_rooms(requester)
    members = (
        sa.select(
            cs.c.state_key.label("user_id"),
            sa.func.max(_content("displayname")).label("member_name"),
            sa.func.max(_content("avatar_url")).label("member_avatar"),
        )
        .join_from(cs, events, events.c.event_id == cs.c.event_id)
        .where(
            cs.c.type == _MEMBER,
            cs.c.room_id.in_(sa.select(visible.c.room_id)),
            _content("membership") == "join",
        )
        .group_by(cs.c.state_key)
        .subquery("members")
    )
    has_profile = profiles.c.user_id.is_not(None)
    candidates = (
        sa.select(
            members.c.user_id,
            sa.func.substr(members.c.user_id, 2, sa.func.instr(members.c.user_id, ":") - 2).label("localpart"),
            sa.case((has_profile, profiles.c.displayname), else_=members.c.member_name).label("display_name"),
            sa.case((has_profile, profiles.c.avatar_url), else_=members.c.member_avatar).label("avatar_url"),
        )
        .select_from(members.outerjoin(profiles, profiles.c.user_id == members.c.user_id))
        .subquery("candidates")
    )
    c = candidates.c
    needle = term.strip().removeprefix("@")
    escaped = _escape_like(needle)
    anywhere, prefix = f"%{escaped}%", f"{escaped}%"
    matches = [c.localpart.like(anywhere, escape="\\"), c.display_name.like(anywhere, escape="\\")]
    if ":" in needle:
        matches.append(c.user_id.like(f"@{anywhere}", escape="\\"))
    lowered = needle.lower()
    exact = sa.or_(sa.func.lower(c.localpart) == lowered, sa.func.lower(c.display_name) == lowered)
    starts = sa.or_(c.localpart.like(prefix, escape="\\"), c.display_name.like(prefix, escape="\\"))
    query = (
        sa.select(c.user_id, c.display_name, c.avatar_url)
        .where(sa.or_(*matches))
        .order_by(
            sa.case((exact, 0), else_=1),
            sa.case((starts, 0), else_=1),
            sa.case((c.display_name.is_(None), 1), else_=0),
            c.user_id,
        )
        .limit(limit + 1)
    )
    rows = conn.execute(query).all()
    results = []
    for user_id, display_name, avatar_url in rows[:limit]:
        entry = {"user_id": user_id}
        if isinstance(display_name, str):
            entry["display_name"] = display_name
        if isinstance(avatar_url, str):
            entry["avatar_url"] = avatar_url
        results.append(entry)
    return results, len(rows) > limit
