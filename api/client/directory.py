"""Room aliases, the published room directory, and room upgrades.

Theory of operation
-------------------
Aliases and directory visibility are server-local rows (``storage.directory``),
written directly by these views; everything that is room state
(``m.room.canonical_alias``, ``m.room.tombstone``, power levels, the new room of an
upgrade) goes through the rooms' actors (``api.rooms_service``), so the
authorization rules stay the only permission check for room writes. The checks
below are the *extra* access control the spec leaves to servers, and each is
named after the fact it follows.

Aliases (client-server "Room aliases", ``directory.yaml``)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``/directory/room/{roomAlias}``; the alias grammar is the appendices' "Room
Aliases" (``#localpart:server_name``, localpart without ``:``/NUL, at most 255
bytes). A malformed alias is 400 ``M_INVALID_PARAM`` on every method.

* ``GET`` (no authentication, as the spec's operation has none): our aliases
  answer ``{"room_id", "servers": [our server]}`` or 404 ``M_NOT_FOUND``. Aliases of
  other servers MUST be resolved over federation, which is not built: they answer
  **502 ``M_UNKNOWN``**, the status Synapse gives when it cannot reach the alias's
  server, never a made-up 404.
* ``PUT {room_id}``: the alias must be ours (400 ``M_INVALID_PARAM``, Synapse
  "Room alias must be local"), non-empty and without whitespace (Synapse fact, as
  ``room_alias_name`` in ``/createRoom``); the room must be known here (404), and
  the user joined to it unless a server admin (Synapse's default
  ``require_membership_for_aliases``: no alias squatting on rooms one is not in).
  A taken alias is **409 ``M_UNKNOWN``**, exactly the spec's 409 response.
* ``DELETE``: allowed for the alias's creator, a server admin, or a joined user
  whose power level reaches the level needed to send ``m.room.canonical_alias``
  (the spec's "additional access control checks"; Synapse's
  ``_user_can_delete_alias``), otherwise 403. Unknown aliases (other servers'
  included: we hold no mapping for them) are 404. After deleting, the alias is
  removed from the room's ``m.room.canonical_alias`` (``alias`` and
  ``alt_aliases``) by an event from the deleting user — the spec note's
  recommended behaviour: best effort, and the DELETE succeeds even if that user may
  not send the event.
* ``GET /rooms/{roomId}/aliases``: joined members, anyone if the room's history
  visibility is ``world_readable``, and server admins (the spec's example of an
  additional check); everyone else, unknown rooms included, 403.

Published room directory (client-server "Published room directory")
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``/directory/list/room/{roomId}``: ``GET`` needs no authentication; unknown rooms
are 404 for both methods. ``PUT`` (``visibility`` defaults to ``public``) is
allowed for server admins and for joined users who could send
``m.room.canonical_alias`` — the spec lets servers add checks "for instance" for
the creator or an admin; "a moderator, measured by the canonical-alias level"
is Synapse's ``check_can_change_room_list``, which also covers v12 creators
(infinite power) and rooms whose creator left.

``/publicRooms`` (``GET`` unauthenticated, ``POST`` with a filter) lists the
published rooms, built from current state by ``storage.directory.get_published_rooms``:

* **Listed**: like Synapse (the spec's warning box allows such filters), only
  rooms with at least one joined member whose join rule is ``public``, ``knock``
  or ``knock_restricted``, or whose history is ``world_readable`` — an invite-only
  room in the list could be found but not entered.
* **Entry**: ``room_id``, ``num_joined_members``, ``world_readable``,
  ``guest_can_join`` always; ``name``, ``topic`` (``topic``, else the
  ``text/plain`` ``m.topic`` representation), ``canonical_alias``,
  ``avatar_url``, ``join_rule``, ``room_type`` when set (absent, not null).
* **Order**: most joined members first, then room ID — the v1.17 order (v1.19 made
  it server-defined and recommends keeping a stable largest-first order).
* **Filter** (``POST``): ``generic_search_term`` is a case-insensitive substring
  match on name, topic and canonical alias (Synapse's fields); ``room_types``
  keeps rooms whose create ``type`` is listed, ``null`` standing for "no type".
  ``include_all_networks`` changes nothing (this server has no application
  services); a ``third_party_instance_id`` names a network that has no rooms here,
  so its list is empty, and combined with ``include_all_networks`` it is 400 (the
  spec: "can only be used if include_all_networks is false").
* **Pages**: at most ``limit`` rooms, capped at 100 (Synapse's cap; also the
  default). Tokens are opaque to clients and are positions in the ordered list:
  ``n<i>`` is "from position *i* forwards" (``next_batch``), ``p<i>`` "the rooms
  before position *i*" (``prev_batch``), so paging back returns exactly the
  previous page. A malformed token is 400 ``M_INVALID_PARAM``. Offsets shift when
  rooms are published or change size between requests; the directory is an
  estimate by nature (``total_room_count_estimate``: the number of listed rooms
  before the search filter, what the spec calls "the total number of published
  rooms").
* ``server``: ours or absent lists ours. Another server's directory is fetched
  from its ``/_matrix/federation/v1/publicRooms`` (s2s "Public Room Directory"),
  as Synapse's ``get_remote_public_room_list`` does: a ``GET`` (and a ``POST``
  without a non-empty ``filter``) becomes a federation ``GET`` with ``limit`` (if
  non-zero), ``since``, ``include_all_networks`` and ``third_party_instance_id``;
  a ``POST`` with a filter becomes a federation ``POST`` with the same body
  fields. If the remote refuses the filtered ``POST`` with 404/405 or
  ``M_UNRECOGNIZED``/``M_NOT_FOUND`` (a server without filtered search), the
  unfiltered list is fetched and filtered here on ``generic_search_term`` only
  (Synapse's fallback, without pagination). ``GET`` stays unauthenticated when
  proxying, as list_public_rooms.yaml defines it (Synapse, whose ``GET`` needs a
  token by default anyway, also requires one to proxy; the federation client's IP
  range deny list and request timeout bound what an anonymous caller can make us
  send). The answer must be an
  object with a ``chunk`` array (entries that are not objects with a string
  ``room_id`` are dropped; ``next_batch``/``prev_batch``/
  ``total_room_count_estimate`` kept when well-typed); anything else, an
  unreachable server or any refusal is **502 ``M_UNKNOWN``** "Failed to fetch
  room list", except a 403, which is 403 ``M_FORBIDDEN`` (both Synapse's). A
  server without federation answers 502 too.

Room upgrades (client-server "Room upgrades", "Server behaviour")
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``POST /rooms/{roomId}/upgrade``: the old room's current state (from its actor)
goes through the pure ``roomactors.room.plans.plan_upgrade`` (step 1's permission
check, the new create content, the transferred state and bans, the restricted
old power levels); ``PlanError`` maps to its ``errcode``/``status`` (unknown
version 400 ``M_UNSUPPORTED_ROOM_VERSION``, not joined / too little power 403).
Then, in this order::

    new room: create + plan.events in ONE actor message   (steps 2, 3)
    old room: m.room.tombstone                            (step 5)  must succeed
    aliases -> new room; directory visibility moves       (step 4)  one transaction
    canonical alias: new room gets the moved local ones,
                     old room loses them                  (step 4)  best effort
    old room: restricted power levels, if planned         (step 6)  best effort

The tombstone comes before the alias move (Synapse's order too): it is the one
step that can still be refused (power changed since planning), and if it is, only
an unused new room is left behind — no alias has moved yet. The rest is "if
possible" in the spec and logged when refused. ``predecessor.event_id`` is the
old room's last known event (a forward extremity) for every target version: the
field "SHOULD still be populated where possible" (``m.room.create``, v1.16), and
it is possible. Directory visibility moves like Synapse's
``transfer_room_state_on_room_upgrade``: a published old room is unpublished and
its replacement published. The sequence runs shielded from cancellation (house
rule 7: a client that hangs up must not leave a half-upgraded room; every step
is bounded by the registry's request timeout). A second upgrade of the same room
while one runs is refused with 400 (Synapse's "An upgrade for this room is
currently in progress"); the set of rooms being upgraded lives on the app.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
import string
from typing import Any

import trio
from quart import Blueprint, current_app, request

from api.auth import requester
from api.body import get_bool, get_str, json_body, query_int
from api.client.rooms import user_power
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from api.responses import json_response
from api.rooms_service import create_room_events, get_state_view, send_event
from api.routes import client_route
from roomactors.protocol.auth import parse_power_level_value
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.protocol.ids import MAX_ID_BYTES, RoomId, UserId, is_valid_server_name
from roomactors.protocol.room_versions import get_rules
from roomactors.room.events import build_create_event
from roomactors.room.messages import EventSpec, StateView
from roomactors.room.plans import PlanError, UpgradePlan, plan_upgrade, tombstone_content
from storage import accounts, directory
from storage import rooms as room_store

__all__ = ["blueprint", "public_room_entry", "MAX_PUBLIC_ROOMS"]

blueprint = Blueprint("directory", __name__)
log = logging.getLogger(__name__)

#: Most rooms one /publicRooms page holds (Synapse's MAX_PUBLIC_ROOMS_IN_RESPONSE).
MAX_PUBLIC_ROOMS = 100
#: Join rules a listed room may have unless its history is world_readable (Synapse fact).
_LISTED_JOIN_RULES = ("public", "knock", "knock_restricted")
_TOKEN = re.compile(r"([np])([0-9]{1,9})\Z")
_CANONICAL_ALIAS = "m.room.canonical_alias"


# ------------------------------------------------------------------------ helpers


def _alias_server(alias: str, *, creating: bool = False) -> str:
    """The server name of a well-formed alias (appendices "Room Aliases"), or 400."""
    if not alias.startswith("#"):
        raise invalid_param(f"{alias!r} is not a room alias (it must start with '#')")
    localpart, sep, server = alias[1:].partition(":")
    if not sep or "\x00" in localpart or not is_valid_server_name(server):
        raise invalid_param(f"{alias!r} is not a valid room alias")
    try:
        size = len(alias.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid_param("the room alias contains invalid characters") from None
    if size > MAX_ID_BYTES:
        raise invalid_param(f"room aliases are at most {MAX_ID_BYTES} bytes")
    if creating and (not localpart or any(ch in string.whitespace for ch in localpart)):
        raise invalid_param("the room alias's local part must be non-empty and contain no whitespace")
    return server


def _check_room_id(room_id: str) -> None:
    try:
        ok = room_id.startswith("!") and len(room_id.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise invalid_param(f"{room_id!r} is not a room ID")


async def _require_known_room(d: Deps, room_id: str) -> None:
    _check_room_id(room_id)
    if not await d.db.read(room_store.room_exists, room_id):
        raise not_found(f"room {room_id} is not known to this server")


def _state_content(view: StateView, event_type: str, state_key: str = "") -> dict[str, Any] | None:
    event_id = view.current_state.get((event_type, state_key))
    if event_id is None:
        return None
    content = view.state_events[event_id].get("content")
    return content if isinstance(content, dict) else {}


def _state_level(view: StateView, event_type: str) -> int:
    """The level needed to send a state event of ``event_type`` (``events``, else
    ``state_default``, default 50: s2s "Definitions", *required power level*)."""
    rules = get_rules(view.room_version)
    content = _state_content(view, "m.room.power_levels") or {}
    for_type = content.get("events")
    if isinstance(for_type, dict) and event_type in for_type:
        level = parse_power_level_value(for_type[event_type], rules)
        if level is not None:
            return level
    if "state_default" in content:
        level = parse_power_level_value(content["state_default"], rules)
        if level is not None:
            return level
    return 50


def _is_room_moderator(view: StateView, user_id: str) -> bool:
    """Joined, and able to send ``m.room.canonical_alias`` (Synapse's
    ``check_can_change_room_list``)."""
    return user_id in view.joined_members and user_power(view, user_id) >= _state_level(view, _CANONICAL_ALIAS)


def _not_federated(what: str) -> MatrixError:
    return MatrixError("M_UNKNOWN", 502, f"{what} needs federation, which this server does not support yet")


# ------------------------------------------------------------------------ aliases


@client_route(blueprint, "/directory/room/<path:room_alias>", ["GET"])
async def get_alias(room_alias: str):
    d = deps()
    if _alias_server(room_alias) != d.server_name:
        raise _not_federated(f"resolving {room_alias}, an alias of another server,")
    room_id = await d.db.read(directory.get_alias, room_alias)
    if room_id is None:
        raise not_found(f"room alias {room_alias} not found")
    return json_response({"room_id": room_id, "servers": [d.server_name]})


@client_route(blueprint, "/directory/room/<path:room_alias>", ["PUT"])
async def put_alias(room_alias: str):
    d = deps()
    who = await requester()
    server = _alias_server(room_alias, creating=True)
    body = await json_body()
    room_id = get_str(body, "room_id")
    if server != d.server_name:
        raise invalid_param(f"only aliases on this server ({d.server_name}) can be created here")
    await _require_known_room(d, room_id)
    if not who.is_admin:
        view = await get_state_view(d, room_id)
        if who.user_id not in view.joined_members:
            raise forbidden("you must be joined to the room to create an alias for it")
    try:
        await d.db.write(directory.create_alias, room_alias, room_id, who.user_id)
    except directory.AliasExistsError:
        raise MatrixError("M_UNKNOWN", 409, f"room alias {room_alias} already exists") from None
    return json_response({})


@client_route(blueprint, "/directory/room/<path:room_alias>", ["DELETE"])
async def delete_alias(room_alias: str):
    d = deps()
    who = await requester()
    _alias_server(room_alias)
    row = await d.db.read(directory.get_alias_row, room_alias)
    if row is None:
        raise not_found(f"room alias {room_alias} not found")
    room_id, creator = row
    if not who.is_admin and creator != who.user_id:
        view = await get_state_view(d, room_id)
        if not _is_room_moderator(view, who.user_id):
            raise forbidden("only the alias's creator or a room moderator may delete this alias")
    if not await d.db.write(directory.delete_alias, room_alias):
        raise not_found(f"room alias {room_alias} not found")  # deleted concurrently
    with trio.CancelScope(shield=True):
        await _drop_from_canonical_alias(d, who.user_id, room_id, room_alias)
    return json_response({})


async def _drop_from_canonical_alias(d: Deps, user_id: str, room_id: str, alias: str) -> None:
    """Best effort: send the room's canonical alias without ``alias`` (spec note on
    ``DELETE /directory/room``; Synapse ``_update_canonical_alias``)."""
    try:
        view = await get_state_view(d, room_id)
        content = _state_content(view, _CANONICAL_ALIAS)
        if content is None:
            return
        updated = copy.deepcopy(content)
        if updated.get("alias") == alias:
            del updated["alias"]
        alt = updated.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            alt = [a for a in alt if a != alias]
            if alt:
                updated["alt_aliases"] = alt
            else:
                del updated["alt_aliases"]
        if updated != content:
            await send_event(d, room_id, user_id, _CANONICAL_ALIAS, updated, "")
    except MatrixError as e:
        log.info("alias %s deleted; %s's canonical alias left unchanged: %s", alias, room_id, e)


@client_route(blueprint, "/rooms/<room_id>/aliases", ["GET"])
async def room_aliases(room_id: str):
    d = deps()
    who = await requester()
    _check_room_id(room_id)
    if not who.is_admin:
        member_key = ("m.room.member", who.user_id)
        visibility_key = ("m.room.history_visibility", "")
        state = await d.db.read(directory.get_state_contents, room_id, [member_key, visibility_key])
        joined = state.get(member_key, {}).get("membership") == "join"
        world_readable = state.get(visibility_key, {}).get("history_visibility") == "world_readable"
        if not (joined or world_readable):
            raise forbidden("you are not a member of the room")
    return json_response({"aliases": await d.db.read(directory.get_room_aliases, room_id)})


# ----------------------------------------------------------- directory visibility


@client_route(blueprint, "/directory/list/room/<room_id>", ["GET"])
async def get_room_visibility(room_id: str):
    d = deps()
    await _require_known_room(d, room_id)
    return json_response({"visibility": await d.db.read(directory.get_visibility, room_id)})


@client_route(blueprint, "/directory/list/room/<room_id>", ["PUT"])
async def put_room_visibility(room_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    visibility = get_str(body, "visibility", "public")
    if visibility not in ("public", "private"):
        raise bad_json("'visibility' must be 'public' or 'private'")
    await _require_known_room(d, room_id)
    if not who.is_admin:
        view = await get_state_view(d, room_id)
        if not _is_room_moderator(view, who.user_id):
            raise forbidden("only room moderators (who may set the canonical alias) may change the room's directory visibility")
    await d.db.write(directory.set_visibility, room_id, visibility)
    return json_response({})


# -------------------------------------------------------------------- publicRooms


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _plain_topic(content: dict[str, Any] | None) -> str | None:
    """``topic``, else the ``text/plain`` representation in ``m.topic`` (the chunk's
    ``topic``: "Omitted if no text/plain mimetype exists")."""
    if content is None:
        return None
    if _text(content.get("topic")):
        return content["topic"]
    block = content.get("m.topic")
    texts = block.get("m.text") if isinstance(block, dict) else None
    for text in texts if isinstance(texts, list) else ():
        if isinstance(text, dict) and text.get("mimetype", "text/plain") == "text/plain" and _text(text.get("body")):
            return text["body"]
    return None


def public_room_entry(room: directory.PublishedRoom) -> dict[str, Any]:
    """The room's ``PublishedRoomsChunk`` (optional fields omitted when unset)."""
    state = room.state
    history = state.get("m.room.history_visibility", {}).get("history_visibility")
    entry: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": history == "world_readable",
        "guest_can_join": state.get("m.room.guest_access", {}).get("guest_access") == "can_join",
    }
    optional = {
        "name": _text(state.get("m.room.name", {}).get("name")),
        "topic": _plain_topic(state.get("m.room.topic")),
        "canonical_alias": _text(state.get(_CANONICAL_ALIAS, {}).get("alias")),
        "avatar_url": _text(state.get("m.room.avatar", {}).get("url")),
        "join_rule": _text(state.get("m.room.join_rules", {}).get("join_rule")),
        "room_type": _text(state.get("m.room.create", {}).get("type")),
    }
    entry.update((k, v) for k, v in optional.items() if v is not None)
    return entry


def _listed(entry: dict[str, Any]) -> bool:
    return entry["num_joined_members"] > 0 and (
        entry.get("join_rule") in _LISTED_JOIN_RULES or entry["world_readable"]
    )


def _matches(entry: dict[str, Any], term: str | None, room_types: set[str | None] | None) -> bool:
    if room_types is not None and entry.get("room_type") not in room_types:
        return False
    if term:
        needle = term.casefold()
        return any(needle in entry.get(k, "").casefold() for k in ("name", "topic", "canonical_alias"))
    return True


async def _remote_server(d: Deps) -> str | None:
    """The other server whose directory ``?server=`` asks for (None: ours), after
    the checks proxying needs: a valid name (400), federation (502)."""
    server = request.args.get("server")
    if server is None or server == d.server_name:
        return None
    if not is_valid_server_name(server):
        raise invalid_param(f"{server!r} is not a server name")
    if d.federation is None:
        raise _not_federated(f"listing the room directory of {server}")
    return server


_PUBLIC_ROOMS_PATH = "/_matrix/federation/v1/publicRooms"
_FETCH_FAILED = "Failed to fetch room list"


def _remote_listing(answer: Any) -> dict[str, Any]:
    """A remote ``/publicRooms`` answer, checked and cleaned (module docstring)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        raise MatrixError("M_UNKNOWN", 502, _FETCH_FAILED)
    chunk = [e for e in answer["chunk"] if isinstance(e, dict) and isinstance(e.get("room_id"), str)]
    out: dict[str, Any] = {"chunk": chunk}
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            out[key] = answer[key]
    estimate = answer.get("total_room_count_estimate")
    if isinstance(estimate, int) and not isinstance(estimate, bool) and estimate >= 0:
        out["total_room_count_estimate"] = estimate
    return out


def _fetch_failed(server: str, e: Exception) -> MatrixError:
    log.info("fetching the room directory of %s failed: %s", server, e)
    if isinstance(e, FederationError) and e.status == 403:
        return forbidden(f"You are not allowed to view the public rooms list of {server}")
    return MatrixError("M_UNKNOWN", 502, _FETCH_FAILED)


async def _remote_public_rooms(
    d: Deps,
    server: str,
    *,
    limit: int | None,
    since: str | None,
    include_all: bool,
    network: str | None,
    search_filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Another server's directory (module docstring, ``server``)."""
    if search_filter:
        body: dict[str, Any] = {"include_all_networks": include_all, "filter": search_filter}
        if network is not None:
            body["third_party_instance_id"] = network
        if limit:
            body["limit"] = limit
        if since:
            body["since"] = since
        try:
            return _remote_listing(await d.federation.post_json(server, _PUBLIC_ROOMS_PATH, body))
        except FederationError as e:
            if not (e.status in (404, 405) or e.errcode in ("M_UNRECOGNIZED", "M_NOT_FOUND")):
                raise _fetch_failed(server, e) from None
        except FederationUnreachable as e:
            raise _fetch_failed(server, e) from None
        limit = since = None  # no filtered search there: filter one unpaginated list here
    query: dict[str, str] = {"include_all_networks": "true" if include_all else "false"}
    if network is not None:
        query["third_party_instance_id"] = network
    if limit:
        query["limit"] = str(limit)
    if since:
        query["since"] = since
    try:
        listing = _remote_listing(await d.federation.get_json(server, _PUBLIC_ROOMS_PATH, query=query))
    except (FederationError, FederationUnreachable) as e:
        raise _fetch_failed(server, e) from None
    if search_filter:
        term = search_filter.get("generic_search_term")
        term = term if isinstance(term, str) and term else None
        listing = {"chunk": [e for e in listing["chunk"] if _matches_remote(e, term)]}
    return listing


def _matches_remote(entry: dict[str, Any], term: str | None) -> bool:
    """Synapse's ``_matches_room_entry``: the search term in name, topic or alias."""
    if term is None:
        return True
    needle = term.casefold()
    return any(isinstance(entry.get(k), str) and needle in entry[k].casefold() for k in ("name", "topic", "canonical_alias"))


async def _public_rooms(
    d: Deps, *, limit: int | None, since: str | None, term: str | None, room_types: set[str | None] | None
) -> dict[str, Any]:
    token = _TOKEN.match(since) if since else None
    if since and token is None:
        raise invalid_param("'since' is not a pagination token from this server")
    page_size = MAX_PUBLIC_ROOMS if limit is None else min(limit, MAX_PUBLIC_ROOMS)
    listed = [e for e in map(public_room_entry, await d.db.read(directory.get_published_rooms)) if _listed(e)]
    entries = [e for e in listed if _matches(e, term, room_types)]
    entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
    total = len(entries)
    if token is None:
        start = 0
        end = min(total, page_size)
    elif token.group(1) == "n":
        start = min(int(token.group(2)), total)
        end = min(total, start + page_size)
    else:
        end = min(int(token.group(2)), total)
        start = max(0, end - page_size)
    out: dict[str, Any] = {"chunk": entries[start:end], "total_room_count_estimate": len(listed)}
    if end < total:
        out["next_batch"] = f"n{end}"
    if start > 0:
        out["prev_batch"] = f"p{start}"
    return out


@client_route(blueprint, "/publicRooms", ["GET"])
async def get_public_rooms():
    d = deps()
    server = await _remote_server(d)
    limit = query_int("limit", None, minimum=0)
    if server is not None:
        return json_response(
            await _remote_public_rooms(
                d, server, limit=limit, since=request.args.get("since") or None, include_all=False, network=None
            )
        )
    return json_response(await _public_rooms(d, limit=limit, since=request.args.get("since"), term=None, room_types=None))


@client_route(blueprint, "/publicRooms", ["POST"])
async def query_public_rooms():
    d = deps()
    await requester()
    server = await _remote_server(d)
    body = await json_body(allow_empty=True)
    limit = body.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise bad_json("'limit' must be an integer")
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
    since = get_str(body, "since", None)
    search_filter = body.get("filter")
    if search_filter is None:
        search_filter = {}
    if not isinstance(search_filter, dict):
        raise bad_json("'filter' must be an object")
    term = get_str(search_filter, "generic_search_term", None)
    room_types: set[str | None] | None = None
    raw_types = search_filter.get("room_types")
    if raw_types is not None:
        if not isinstance(raw_types, list) or not all(t is None or isinstance(t, str) for t in raw_types):
            raise bad_json("'filter.room_types' must be an array of strings and nulls")
        room_types = set(raw_types)
    include_all = body.get("include_all_networks")
    include_all = False if include_all is None else get_bool(body, "include_all_networks", False)
    network = get_str(body, "third_party_instance_id", None)
    if network is not None and include_all:
        raise invalid_param("'third_party_instance_id' can only be used if 'include_all_networks' is false")
    if server is not None:
        return json_response(
            await _remote_public_rooms(
                d, server, limit=limit, since=since, include_all=include_all, network=network,
                search_filter=search_filter,
            )
        )
    if network is not None:
        # No application services here: no third-party network has published rooms.
        return json_response({"chunk": [], "total_room_count_estimate": 0})
    return json_response(await _public_rooms(d, limit=limit, since=since, term=term, room_types=room_types))


# ------------------------------------------------------------------- room upgrade


def _upgrades_in_progress() -> set[str]:
    return current_app.extensions.setdefault("directory.upgrades_in_progress", set())


@client_route(blueprint, "/rooms/<room_id>/upgrade", ["POST"])
async def upgrade_room(room_id: str):
    d = deps()
    who = await requester()
    d.ratelimiter.check("room_create", who.user_id)
    body = await json_body()
    new_version = get_str(body, "new_version")
    _check_room_id(room_id)
    view = await get_state_view(d, room_id)
    old_state = {key: view.state_events[event_id] for key, event_id in view.current_state.items()}
    profile = await d.db.read(accounts.get_profile, who.user_id)
    try:
        plan = plan_upgrade(
            old_state,
            user_id=who.user_id,
            new_version=new_version,
            old_room_id=room_id,
            additional_creators=body.get("additional_creators"),
            predecessor_event_id=min(view.forward_extremities) if view.forward_extremities else None,
            profile=profile,
        )
    except PlanError as e:
        raise MatrixError(e.errcode, e.status, e.error) from None
    in_progress = _upgrades_in_progress()
    if room_id in in_progress:
        raise MatrixError("M_UNKNOWN", 400, "an upgrade of this room is already in progress")
    in_progress.add(room_id)
    try:
        with trio.CancelScope(shield=True):
            new_room_id = await _upgrade(d, who.user_id, room_id, plan)
    finally:
        in_progress.discard(room_id)
    return json_response({"replacement_room": new_room_id})


async def _upgrade(d: Deps, user_id: str, old_room_id: str, plan: UpgradePlan) -> str:
    """Carry out the plan (module docstring, "Room upgrades"); the new room's ID."""
    rules = get_rules(plan.new_version)
    server_assigned = RoomId(f"!{secrets.token_urlsafe(18)}:{d.server_name}") if rules.create_event_has_room_id else None
    create_event, new_room_id = build_create_event(
        plan.new_version,
        creator=UserId(user_id),
        server_name=d.server_name,
        signing_key=d.signing_key,
        clock=d.clock,
        content_extra={k: v for k, v in plan.create_content.items() if k not in ("room_version", "creator")},
        room_id_for_v1_11=server_assigned,
    )
    specs = tuple(
        EventSpec(sender=UserId(user_id), type=e.type, content=e.content, state_key=e.state_key) for e in plan.events
    )
    await create_room_events(d, new_room_id, create_event, specs)
    await send_event(d, old_room_id, user_id, "m.room.tombstone", tombstone_content(new_room_id), "")

    def move(conn: Any) -> list[str]:
        moved = directory.move_aliases(conn, old_room_id, new_room_id)
        if directory.get_visibility(conn, old_room_id) == "public":
            directory.set_visibility(conn, old_room_id, "private")
            directory.set_visibility(conn, new_room_id, "public")
        return moved

    moved = await d.db.write(move)
    if plan.canonical_alias_content is not None:
        old_content, new_content = _split_canonical_alias(plan.canonical_alias_content, d.server_name, set(moved))
        if new_content:
            await _best_effort(d, new_room_id, user_id, _CANONICAL_ALIAS, new_content, "moving the canonical alias")
        if old_content != plan.canonical_alias_content:
            await _best_effort(d, old_room_id, user_id, _CANONICAL_ALIAS, old_content, "moving the canonical alias")
    if plan.old_room_power_levels is not None:
        await _best_effort(
            d, old_room_id, user_id, "m.room.power_levels", plan.old_room_power_levels, "restricting the old room"
        )
    return new_room_id


def _split_canonical_alias(
    content: dict[str, Any], server_name: str, moved: set[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old room's content, new room's content): our aliases leave the old room's
    ``alias``/``alt_aliases``; those that moved with the room join the new room's
    (Synapse ``_move_aliases_to_new_room``). Other servers' aliases stay put."""

    def ours(alias: object) -> bool:
        return isinstance(alias, str) and alias.startswith("#") and alias.partition(":")[2] == server_name

    old = copy.deepcopy(content)
    new: dict[str, Any] = {}
    if ours(content.get("alias")):
        del old["alias"]
        if content["alias"] in moved:
            new["alias"] = content["alias"]
    alt = content.get("alt_aliases")
    if isinstance(alt, list) and any(ours(a) for a in alt):
        remaining = [a for a in alt if not ours(a)]
        if remaining:
            old["alt_aliases"] = remaining
        else:
            del old["alt_aliases"]
        carried = [a for a in alt if ours(a) and a in moved]
        if carried:
            new["alt_aliases"] = carried
    return old, new


async def _best_effort(d: Deps, room_id: str, user_id: str, event_type: str, content: dict[str, Any], why: str) -> None:
    """The spec's "if possible" steps: a refusal is logged, not raised."""
    try:
        await send_event(d, room_id, user_id, event_type, content, "")
    except MatrixError as e:
        log.info("room upgrade: %s failed in %s: %s", why, room_id, e)
