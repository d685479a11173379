"""Federation reads: auth chains, backfill and missing-event walks, server
membership and per-server visibility inputs (server-server API "Retrieving events",
"Backfilling and retrieving missing events", "Retrieving event authorisation
information"). Synchronous repository functions for ``Database.read``.

Theory of operation
-------------------
The DAG walks follow the references in the stored PDUs' JSON (``prev_events``,
``auth_events``; plain IDs from v3, ``[id, hashes]`` pairs in v1/v2), fetching each
frontier with one ``get_events`` query on the ``events.event_id`` unique index. The
``event_edges``/``event_auth_edges`` tables carry the same edges but have no index on
``event_id`` yet (schema.py: "the first query that walks edges adds its index in a
migration"), so a recursive SQL walk over them would scan the tables at every step.

* :func:`get_auth_chain` — every event reachable through ``auth_events`` from the
  given events (not the events themselves), breadth-first, one query per level.
  Auth events we do not hold are skipped (the requester asks elsewhere).
* :func:`backfill` — the ``v`` events and the events before them, visited
  *highest depth first* over ``prev_events`` (a max-heap on depth, ties by
  stream ordering), until ``limit`` events are taken.
* :func:`missing_events` — the ``prev_events`` ancestors of ``latest_events``,
  never the latest events themselves, never an ``earliest_events`` event nor
  anything only reachable through one, never an event below ``min_depth``,
  breadth-first highest depth first, up to ``limit``, returned oldest first.

Only events that are part of the room's DAG are handed out by the walks: never
rejected events (we refused them; a peer would too) and never outliers (their place
in our DAG is unknown). Soft-failed events are valid DAG events (spec "Soft
failure": they are only hidden from clients and not used as prev events), so they are
served and walked through.

:func:`server_states_before` gives, per event, the two facts server visibility
reads (``roomactors.protocol.server_visibility``): the ``m.room.history_visibility``
event and the requesting server's users' ``m.room.member`` events in the state
*before* the event — its own snapshot for an event that changes neither (its state
after equals the state before for those keys), its first prev event's snapshot for
one that does (the approximation ``storage.timeline.filter_visible_events`` makes).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.pdu import event_refs
from roomactors.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_rules

from .rooms import StoredEvent, _chain_cte, _load_json, _sql, get_events
from .schema import current_state, events, rooms, state_deltas

__all__ = [
    "MAX_AUTH_CHAIN",
    "event_refs",
    "get_auth_chain",
    "backfill",
    "missing_events",
    "joined_servers",
    "server_in_room",
    "servers_sharing_rooms",
    "rooms_shared_with_server",
    "get_current_state_content",
    "server_states_before",
]

#: A bound on one auth-chain walk (events), so a hostile or corrupt DAG cannot make
#: one request unbounded. Real auth chains are hundreds to a few thousand events.
MAX_AUTH_CHAIN = 100_000

_MEMBER = "m.room.member"
_HISTORY_VISIBILITY = "m.room.history_visibility"


def _in_dag(ev: StoredEvent, room_id: str) -> bool:
    return ev.room_id == room_id and not ev.outlier and ev.rejection_reason is None


# ------------------------------------------------------------------- auth chains


def get_auth_chain(conn: sa.Connection, event_ids: Iterable[str]) -> list[StoredEvent]:
    """The auth chain of ``event_ids``: their ``auth_events``, recursively (the
    events themselves only where one is in another's chain), ordered by depth then
    stream ordering (parents before children, as a receiver processes them).

    In room versions whose events do not list the create event (v12: "the
    ``m.room.create`` event is no longer in ``auth_events``"; its ID is the room ID's
    hash), the create event is still an auth event of every other event — the
    authorization rules read it — so it is added to the chain (Synapse's auth chains
    include it too)."""
    start = list(dict.fromkeys(event_ids))
    found: dict[str, StoredEvent] = {}
    seen: set[str] = set()
    implied: dict[str, str | None] = {}  # room ID -> its create event ID when implied

    def auth_refs(ev: StoredEvent) -> tuple[str, ...]:
        refs = event_refs(ev.json, "auth_events")
        if ev.room_id not in implied:
            version = conn.execute(sa.select(rooms.c.room_version).where(rooms.c.room_id == ev.room_id)).scalar()
            rules = get_rules(version) if version in KNOWN_ROOM_VERSIONS else None
            implied[ev.room_id] = (
                "$" + ev.room_id[1:] if rules is not None and not rules.create_event_in_auth_events else None
            )
        create_id = implied[ev.room_id]
        if create_id is not None and ev.event_id != create_id:
            refs = (*refs, create_id)
        return refs

    frontier = []
    for ev in get_events(conn, start).values():
        frontier.extend(auth_refs(ev))
    while frontier and len(found) < MAX_AUTH_CHAIN:
        wanted = [e for e in dict.fromkeys(frontier) if e not in seen]
        seen.update(wanted)
        frontier = []
        for event_id, ev in get_events(conn, wanted).items():
            found[event_id] = ev
            frontier.extend(auth_refs(ev))
    return sorted(found.values(), key=lambda e: (e.depth, e.stream_ordering))


# ------------------------------------------------------------------- DAG walks


def _walk_back(
    conn: sa.Connection,
    room_id: str,
    starts: list[StoredEvent],
    *,
    limit: int,
    take_starts: bool,
    skip: frozenset[str] = frozenset(),
    min_depth: int | None = None,
) -> list[StoredEvent]:
    """Highest-depth-first walk over ``prev_events`` from ``starts`` (the shared core
    of :func:`backfill` and :func:`missing_events`, see the module docstring)."""
    taken: list[StoredEvent] = []
    seen: set[str] = set(skip)
    heap: list[tuple[int, int, str]] = []
    by_id: dict[str, StoredEvent] = {}

    def push(ev: StoredEvent) -> None:
        if ev.event_id in seen or not _in_dag(ev, room_id):
            return
        if min_depth is not None and ev.depth < min_depth:
            return
        seen.add(ev.event_id)
        by_id[ev.event_id] = ev
        heapq.heappush(heap, (-ev.depth, -ev.stream_ordering, ev.event_id))

    if take_starts:
        for ev in starts:
            push(ev)
    else:
        seen.update(ev.event_id for ev in starts)
        prevs = [p for ev in starts for p in event_refs(ev.json, "prev_events")]
        for ev in get_events(conn, [p for p in prevs if p not in seen]).values():
            push(ev)
    while heap and len(taken) < limit:
        # Take every queued event at the current greatest depth, then fetch all of
        # their prev events in one query.
        depth = heap[0][0]
        batch: list[StoredEvent] = []
        while heap and heap[0][0] == depth and len(taken) < limit:
            ev = by_id.pop(heapq.heappop(heap)[2])
            taken.append(ev)
            batch.append(ev)
        if len(taken) >= limit:
            break
        prevs = [p for ev in batch for p in event_refs(ev.json, "prev_events") if p not in seen]
        for ev in get_events(conn, prevs).values():
            push(ev)
    return taken


def backfill(conn: sa.Connection, room_id: str, from_ids: Iterable[str], limit: int) -> list[StoredEvent]:
    """``/backfill``: the ``from_ids`` events of the room and those before them,
    highest depth first, at most ``limit`` (backfill.yaml: "the PDUs given in ``v``
    and the PDUs that preceded them are retrieved, up to the total number given by
    the ``limit``"). Unknown or foreign ``from_ids`` are ignored."""
    if limit <= 0:
        return []
    starts = list(get_events(conn, from_ids).values())
    return _walk_back(conn, room_id, starts, limit=limit, take_starts=True)


def missing_events(
    conn: sa.Connection,
    room_id: str,
    earliest_events: Iterable[str],
    latest_events: Iterable[str],
    *,
    limit: int,
    min_depth: int,
) -> list[StoredEvent]:
    """``/get_missing_events``: "a breadth-first walk of the ``prev_events`` for the
    ``latest_events``, ignoring any events in ``earliest_events`` and stopping at the
    ``limit``", without events below ``min_depth``; oldest first."""
    if limit <= 0:
        return []
    starts = [ev for ev in get_events(conn, latest_events).values() if ev.room_id == room_id]
    taken = _walk_back(
        conn, room_id, starts, limit=limit, take_starts=False, skip=frozenset(earliest_events), min_depth=min_depth
    )
    return sorted(taken, key=lambda e: (e.depth, e.stream_ordering))


# ------------------------------------------------------------ servers and state


_JOINED_MEMBERS = _sql(
    sa.select(current_state.c.state_key)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == sa.literal_column("'m.room.member'"),
        sa.func.json_extract(events.c.json, sa.literal_column("'$.content.membership'"))
        == sa.literal_column("'join'"),
    )
)


def _server_of(user_id: str) -> str | None:
    _, sep, server = user_id.partition(":")
    return server if sep and server else None


def joined_servers(conn: sa.Connection, room_id: str) -> list[str]:
    """The servers with at least one joined member in the room's current state,
    most joined members first, then by name."""
    counts: dict[str, int] = {}
    raw = conn.connection.driver_connection
    for (user_id,) in raw.execute(_JOINED_MEMBERS, {"room_id": room_id}):
        server = _server_of(user_id)
        if server is not None:
            counts[server] = counts.get(server, 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s))


_SERVER_JOINED = _sql(
    sa.select(current_state.c.state_key)
    .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
    .where(
        current_state.c.room_id == sa.bindparam("room_id"),
        current_state.c.type == sa.literal_column("'m.room.member'"),
        sa.func.substr(
            current_state.c.state_key,
            sa.func.instr(current_state.c.state_key, sa.literal_column("':'")) + sa.literal_column("1"),
        )
        == sa.bindparam("server"),
        sa.func.json_extract(events.c.json, sa.literal_column("'$.content.membership'"))
        == sa.literal_column("'join'"),
    )
)


def server_in_room(conn: sa.Connection, room_id: str, server_name: str) -> bool:
    """Whether ``server_name`` has a joined member in the room's current state (one
    query; sqlite3 steps it only to the first matching row)."""
    raw = conn.connection.driver_connection
    return raw.execute(_SERVER_JOINED, {"room_id": room_id, "server": server_name}).fetchone() is not None


def _user_joined_rooms_with_others() -> tuple[sa.Select, sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """(the rooms where ``:user_id`` is joined, joined with their joined members'
    rows; the room ID; the other member's server). One index lookup for the user's
    membership rows (``current_state_member``), then the rooms' member rows by key."""
    me, me_ev = current_state.alias("me"), events.alias("me_ev")
    other, other_ev = current_state.alias("other"), events.alias("other_ev")
    member = sa.literal_column("'m.room.member'")
    joined = sa.literal_column("'join'")
    membership = sa.literal_column("'$.content.membership'")
    server = sa.func.substr(other.c.state_key, sa.func.instr(other.c.state_key, sa.literal_column("':'")) + sa.literal_column("1"))
    query = (
        sa.select(me.c.room_id)
        .join_from(me, me_ev, me_ev.c.event_id == me.c.event_id)
        .join(other, sa.and_(other.c.room_id == me.c.room_id, other.c.type == member))
        .join(other_ev, other_ev.c.event_id == other.c.event_id)
        .where(
            me.c.type == member,
            me.c.state_key == sa.bindparam("user_id"),
            sa.func.json_extract(me_ev.c.json, membership) == joined,
            sa.func.json_extract(other_ev.c.json, membership) == joined,
        )
    )
    return query, me.c.room_id, server


def _sharing_queries() -> tuple[str, str]:
    query, room_id, server = _user_joined_rooms_with_others()
    servers = query.with_only_columns(server).distinct()
    rooms_ = query.where(server == sa.bindparam("server")).with_only_columns(room_id).distinct()
    return _sql(servers), _sql(rooms_)


_SHARING_SERVERS, _ROOMS_SHARED_WITH_SERVER = _sharing_queries()


def servers_sharing_rooms(conn: sa.Connection, user_id: str) -> list[str]:
    """Every server (this one included) with a joined member in some room where
    ``user_id`` is joined, sorted: where the user's presence goes (s2s "Presence")."""
    raw = conn.connection.driver_connection
    return sorted({s for (s,) in raw.execute(_SHARING_SERVERS, {"user_id": user_id}) if s})


def rooms_shared_with_server(conn: sa.Connection, user_id: str, server_name: str) -> list[str]:
    """The rooms where ``user_id`` is joined and ``server_name`` has a joined member
    (for a remote user's presence: empty means no local user can see it)."""
    raw = conn.connection.driver_connection
    rows = raw.execute(_ROOMS_SHARED_WITH_SERVER, {"user_id": user_id, "server": server_name})
    return sorted(r for (r,) in rows)


def get_current_state_content(conn: sa.Connection, room_id: str, type_: str, state_key: str = "") -> dict[str, Any] | None:
    """The content of one current-state event (``None``: no such state)."""
    text = conn.execute(
        sa.select(events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(current_state.c.room_id == room_id, current_state.c.type == type_, current_state.c.state_key == state_key)
    ).scalar()
    if text is None:
        return None
    content = _load_json(text).get("content")
    return content if isinstance(content, dict) else {}


def _server_subset_query() -> str:
    chain = _chain_cte(stop_at_skip_base=False)
    d = state_deltas
    domain = sa.func.substr(d.c.state_key, sa.func.instr(d.c.state_key, sa.literal_column("':'")) + sa.literal_column("1"))
    query = (
        sa.select(d.c.type, d.c.state_key, d.c.event_id, sa.func.min(chain.c.hop).label("hop"))
        .join_from(chain, d, d.c.snapshot_ref == chain.c.ref)
        .where(
            sa.or_(
                sa.and_(
                    d.c.type == sa.literal_column(f"'{_HISTORY_VISIBILITY}'"),
                    d.c.state_key == sa.literal_column("''"),
                ),
                sa.and_(d.c.type == sa.literal_column(f"'{_MEMBER}'"), domain == sa.bindparam("server")),
            )
        )
        .group_by(d.c.type, d.c.state_key)
    )
    return _sql(query)


_SERVER_SUBSET_QUERY = _server_subset_query()


def _server_subset(conn: sa.Connection, ref: str, server_name: str) -> dict[tuple[str, str], str]:
    raw = conn.connection.driver_connection
    rows = raw.execute(_SERVER_SUBSET_QUERY, {"ref": ref, "server": server_name}).fetchall()
    return {(t, k): e for t, k, e, _hop in rows if e is not None}


def server_states_before(
    conn: sa.Connection, evs: list[StoredEvent], server_name: str
) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """event ID -> the history visibility and ``server_name``'s member events (JSON)
    in the state before it (module docstring). An event with no known state (an
    outlier or a rejected event) maps to ``{}``."""
    refs: dict[str, str | None] = {}
    need_prev: dict[str, str | None] = {}
    for ev in evs:
        event_type, state_key = ev.json.get("type"), ev.json.get("state_key")
        changes_subset = (event_type == _HISTORY_VISIBILITY and state_key == "") or (
            event_type == _MEMBER and isinstance(state_key, str) and _server_of(state_key) == server_name
        )
        if changes_subset:
            prevs = event_refs(ev.json, "prev_events")
            need_prev[ev.event_id] = prevs[0] if prevs else None
        else:
            refs[ev.event_id] = ev.state_after_ref
    if need_prev:
        prev_events = get_events(conn, [p for p in need_prev.values() if p is not None])
        for event_id, prev_id in need_prev.items():
            prev = prev_events.get(prev_id) if prev_id is not None else None
            refs[event_id] = prev.state_after_ref if prev is not None else None
    subsets: dict[str, dict[tuple[str, str], str]] = {}
    for ref in set(refs.values()):
        if ref is not None:
            subsets[ref] = _server_subset(conn, ref, server_name)
    jsons = {
        e.event_id: e.json for e in get_events(conn, {i for s in subsets.values() for i in s.values()}).values()
    }
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for ev in evs:
        ref = refs.get(ev.event_id)
        subset = subsets.get(ref, {}) if ref is not None else {}
        out[ev.event_id] = {k: jsons[i] for k, i in subset.items() if i in jsons}
    return out


# ------------------------------------------------------------------ room summaries

from storage.directory import DIRECTORY_STATE_TYPES  # noqa: E402

__all__ += ["SUMMARY_STATE_TYPES", "get_summary_state"]

#: The current-state types a room summary (``/hierarchy``) is built from; every
#: state key of ``m.space.child`` is read, the others with state key ``""``.
SUMMARY_STATE_TYPES = (*DIRECTORY_STATE_TYPES, "m.room.encryption", "m.space.child")


def get_summary_state(conn: sa.Connection, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(type, state_key)`` -> event JSON for the room's current state events of
    :data:`SUMMARY_STATE_TYPES` (``m.space.child``: all keys; the rest: key ``""``)."""
    query = (
        sa.select(current_state.c.type, current_state.c.state_key, events.c.json)
        .join_from(current_state, events, events.c.event_id == current_state.c.event_id)
        .where(
            current_state.c.room_id == room_id,
            current_state.c.type.in_(SUMMARY_STATE_TYPES),
            sa.or_(current_state.c.state_key == "", current_state.c.type == "m.space.child"),
        )
    )
    return {(t, k): _load_json(text) for t, k, text in conn.execute(query)}
