"""Federation queries and directory reads: ``/version``, ``/query/directory``,
``/query/profile``, ``/publicRooms``, ``/hierarchy``, ``/openid/userinfo``, and the
client endpoint that issues OpenID tokens (server-server API "Querying for
information", "Published Room Directory", "Spaces", "OpenID"; query.yaml,
public_rooms.yaml, space_hierarchy.yaml, openid.yaml, version.yaml; client-server
openid.yaml).

Theory of operation
-------------------
Authentication: every endpoint here is X-Matrix authenticated
(:func:`~api.federation.x_matrix.federation_route`) except the two the spec defines
without a security scheme: ``GET /version`` and ``GET /openid/userinfo`` (whose
caller is a third-party service holding an OpenID token, not a server).

* ``/query/directory`` — our aliases only (query.yaml: "Homeservers should only
  query room aliases that belong to the target server"); anything else is 404
  ``M_NOT_FOUND``. ``servers`` is this server first, then every other server with a
  joined member in the room, most members first (Synapse orders it the same way,
  itself first).
* ``/query/profile`` — a local user's ``displayname``/``avatar_url``; ``field``
  restricts the answer to that key (query.yaml "the response MUST only include the
  specified field"). A user of another server is 400 ``M_INVALID_PARAM`` (query.yaml
  "MUST be a user local to the receiving homeserver"; Synapse answers 400 too); an
  unknown user, or a ``field`` the user has not set, is 404 ``M_NOT_FOUND``.
* ``/publicRooms`` — the same list, order, filter and pagination tokens as the client
  endpoint (``api.client.directory``). Synapse serves it over federation only when
  ``allow_public_rooms_over_federation`` is on (default off); we serve it, so that
  another server's client can list this directory (``/publicRooms?server=``).
* ``/hierarchy/{roomId}`` — space_hierarchy.yaml, see :func:`compute_hierarchy`.
* OpenID (s2s "OpenID"; client-server ``POST /user/{userId}/openid/request_token``):
  tokens are random, valid :data:`OPENID_TOKEN_LIFETIME_S`, good only for
  ``/openid/userinfo``, and held in memory (a restart forgets them; the client simply
  asks again). There is no table for them and ``Deps`` is frozen, so the store is an
  entry in ``current_app.extensions`` created on first use (:func:`_openid_tokens`);
  each issue prunes expired tokens, and the store is bounded
  (:data:`MAX_OPENID_TOKENS`, oldest dropped first).
"""

from __future__ import annotations

import importlib.metadata
import secrets
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa
from quart import Blueprint, current_app, request

from api.auth import requester
from api.body import get_bool, get_str, json_body, query_bool, query_int
from api.client import directory as client_directory
from api.deps import deps
from api.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from api.federation.x_matrix import FEDERATION_PREFIX, federation_route
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol.server_visibility import server_of_user
from roomactors.protocol.visibility import strip_state_event
from storage import accounts, directory
from storage import federation_reads as fr
from storage import timeline
from storage.rooms import room_exists

__all__ = [
    "blueprint",
    "client_blueprint",
    "SERVER_NAME",
    "OPENID_TOKEN_LIFETIME_S",
    "MAX_OPENID_TOKENS",
    "compute_hierarchy",
]

#: The federation endpoints (api.federation.BLUEPRINTS).
blueprint = Blueprint("federation_queries", __name__)
#: The client endpoint that issues OpenID tokens (also in api.federation.BLUEPRINTS,
#: since it shares the token store with ``/openid/userinfo``).
client_blueprint = Blueprint("openid_client", __name__)

SERVER_NAME = "roomactors"
OPENID_TOKEN_LIFETIME_S = 3600
MAX_OPENID_TOKENS = 100_000

_PROFILE_FIELDS = ("displayname", "avatar_url")


def _package_version() -> str:
    try:
        return importlib.metadata.version("roomactors")
    except importlib.metadata.PackageNotFoundError:  # running from a tree without metadata
        return "unknown"


# ------------------------------------------------------------------------ /version


@blueprint.get(f"{FEDERATION_PREFIX}/v1/version")
async def get_version():
    """version.yaml: no security scheme, so no X-Matrix (Synapse answers anyone)."""
    return json_response({"server": {"name": SERVER_NAME, "version": _package_version()}})


# ------------------------------------------------------------------------ queries


def _directory_answer(conn: sa.Connection, alias: str, server_name: str) -> dict[str, Any] | None:
    room_id = directory.get_alias(conn, alias)
    if room_id is None:
        return None
    others = [s for s in fr.joined_servers(conn, room_id) if s != server_name]
    return {"room_id": room_id, "servers": [server_name, *others]}


@federation_route(blueprint, "/query/directory", ["GET"])
async def query_directory(origin: str):
    d = deps()
    alias = request.args.get("room_alias")
    if not alias:
        raise MatrixError("M_MISSING_PARAM", 400, "missing query parameter 'room_alias'")
    answer = None
    if alias.startswith("#") and alias.partition(":")[2] == d.server_name:
        answer = await d.db.read(_directory_answer, alias, d.server_name)
    if answer is None:
        raise not_found("Room alias not found.")
    return json_response(answer)


def _profile(conn: sa.Connection, user_id: str) -> dict[str, str] | None:
    if not accounts.user_exists(conn, user_id):
        return None
    return accounts.get_profile(conn, user_id)


@federation_route(blueprint, "/query/profile", ["GET"])
async def query_profile(origin: str):
    d = deps()
    user_id = request.args.get("user_id")
    if not user_id:
        raise MatrixError("M_MISSING_PARAM", 400, "missing query parameter 'user_id'")
    if server_of_user(user_id) != d.server_name:
        raise invalid_param(f"{user_id} is not a user of this server")
    field = request.args.get("field")
    profile = await d.db.read(_profile, user_id)
    if profile is None:
        raise not_found("User does not exist.")
    if field is not None:
        if field not in profile:
            raise not_found(f"{user_id} has no profile field {field!r}")
        return json_response({field: profile[field]})
    return json_response({k: profile[k] for k in _PROFILE_FIELDS if k in profile})


# ------------------------------------------------------------------------ /publicRooms


async def _public_rooms(
    *,
    limit: int | None,
    since: str | None,
    include_all: bool,
    network: str | None,
    term: str | None = None,
    room_types: set[str | None] | None = None,
):
    if network is not None:
        if include_all:
            raise invalid_param("'third_party_instance_id' can only be used if 'include_all_networks' is false")
        # No application services here: no third-party network has published rooms.
        return json_response({"chunk": [], "total_room_count_estimate": 0})
    body = await client_directory._public_rooms(deps(), limit=limit, since=since, term=term, room_types=room_types)
    return json_response(body)


@federation_route(blueprint, "/publicRooms", ["GET"])
async def get_public_rooms(origin: str):
    """public_rooms.yaml ``GET``: ``limit`` (0 or absent: our page cap), ``since``,
    ``include_all_networks``, ``third_party_instance_id``."""
    limit = query_int("limit", None, minimum=0) or None
    return await _public_rooms(
        limit=limit,
        since=request.args.get("since") or None,
        include_all=query_bool("include_all_networks", False),
        network=request.args.get("third_party_instance_id") or None,
    )


@federation_route(blueprint, "/publicRooms", ["POST"])
async def query_public_rooms(origin: str):
    """public_rooms.yaml ``POST``: the same with a ``filter``."""
    body = await json_body(allow_empty=True)
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise bad_json("'limit' must be an integer")
    if limit is not None and limit < 0:
        raise invalid_param("'limit' must not be negative")
    search_filter = body.get("filter")
    if search_filter is None:
        search_filter = {}
    if not isinstance(search_filter, dict):
        raise bad_json("'filter' must be an object")
    room_types: set[str | None] | None = None
    raw_types = search_filter.get("room_types")
    if raw_types is not None:
        if not isinstance(raw_types, list) or not all(t is None or isinstance(t, str) for t in raw_types):
            raise bad_json("'filter.room_types' must be an array of strings and nulls")
        room_types = set(raw_types)
    return await _public_rooms(
        limit=limit or None,
        since=get_str(body, "since", None),
        include_all=get_bool(body, "include_all_networks", False),
        network=get_str(body, "third_party_instance_id", None),
        term=get_str(search_filter, "generic_search_term", None),
        room_types=room_types,
    )


# ------------------------------------------------------------------------ /hierarchy


def _content(event: dict[str, Any] | None) -> dict[str, Any]:
    content = event.get("content") if isinstance(event, dict) else None
    return content if isinstance(content, dict) else {}


def _valid_child(event: dict[str, Any]) -> bool:
    """client-server ``m.space.child``: "Children where via is not present or invalid
    (not an array, or an empty array) are ignored"."""
    via = _content(event).get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def _allowed_room_ids(join_rules: dict[str, Any]) -> list[str]:
    allow = join_rules.get("allow")
    out: list[str] = []
    for entry in allow if isinstance(allow, list) else ():
        if isinstance(entry, dict) and entry.get("type") == "m.room_membership":
            room_id = entry.get("room_id")
            if isinstance(room_id, str):
                out.append(room_id)
    return out


def _accessible(conn: sa.Connection, room_id: str, state: dict[tuple[str, str], dict[str, Any]], origin: str) -> bool:
    """Could ``origin`` "feasibly peek/join" the room (space_hierarchy.yaml)? As
    Synapse decides it for remote servers: a ``public``/``knock``/``knock_restricted``
    join rule, ``world_readable`` history, a joined member of ``origin`` in the room,
    or a ``restricted``/``knock_restricted`` rule naming a room ``origin`` is in."""
    join_rules = _content(state.get(("m.room.join_rules", "")))
    rule = join_rules.get("join_rule")
    if rule in ("public", "knock", "knock_restricted"):
        return True
    if _content(state.get(("m.room.history_visibility", ""))).get("history_visibility") == "world_readable":
        return True
    if fr.server_in_room(conn, room_id, origin):
        return True
    if rule in ("restricted", "knock_restricted"):
        return any(fr.server_in_room(conn, allowed, origin) for allowed in _allowed_room_ids(join_rules))
    return False


def _summary(
    conn: sa.Connection, room_id: str, state: dict[tuple[str, str], dict[str, Any]], suggested_only: bool
) -> dict[str, Any]:
    """A ``SpaceHierarchyParentRoom``/``SpaceHierarchyChildRoomsChunk``: the public
    rooms chunk fields plus ``room_type``, ``allowed_room_ids``, ``encryption``,
    ``room_version`` and ``children_state``."""
    by_type = {t: _content(ev) for (t, k), ev in state.items() if k == ""}
    published = directory.PublishedRoom(room_id, timeline.count_joined_members(conn, room_id), by_type)
    entry = client_directory.public_room_entry(published)
    join_rules = by_type.get("m.room.join_rules", {})
    if join_rules.get("join_rule") in ("restricted", "knock_restricted"):
        entry["allowed_room_ids"] = _allowed_room_ids(join_rules)
    algorithm = by_type.get("m.room.encryption", {}).get("algorithm")
    if isinstance(algorithm, str):
        entry["encryption"] = algorithm
    version = timeline.get_room_version(conn, room_id)
    if version is not None:
        entry["room_version"] = version
    children_state = []
    for (event_type, _key), event in sorted(state.items()):
        if event_type != "m.space.child" or not _valid_child(event):
            continue
        if suggested_only and _content(event).get("suggested") is not True:
            continue
        stripped = strip_state_event(event)
        if stripped is not None:
            # "represented as Stripped State Events with an added origin_server_ts key"
            stripped["origin_server_ts"] = event.get("origin_server_ts", 0)
            children_state.append(stripped)
    entry["children_state"] = children_state
    return entry


def compute_hierarchy(conn: sa.Connection, room_id: str, origin: str, suggested_only: bool) -> dict[str, Any] | None:
    """space_hierarchy.yaml: the room's summary and its children's, "all the
    space-room's children the requesting server could feasibly peek/join"; children
    it cannot are listed in ``inaccessible_children``, and children this server does
    not know are left out ("Rooms which the responding server cannot provide details
    on will be outright excluded"). ``None``: 404 ("The room is not known to the
    server or the requesting server is unable to peek/join it")."""
    if not room_exists(conn, room_id):
        return None
    state = fr.get_summary_state(conn, room_id)
    if not _accessible(conn, room_id, state, origin):
        return None
    room = _summary(conn, room_id, state, suggested_only)
    children: list[dict[str, Any]] = []
    inaccessible: list[str] = []
    for child in room["children_state"]:
        child_id = child["state_key"]
        if child_id == room_id or not room_exists(conn, child_id):
            continue
        child_state = fr.get_summary_state(conn, child_id)
        if _accessible(conn, child_id, child_state, origin):
            children.append(_summary(conn, child_id, child_state, False))
        else:
            inaccessible.append(child_id)
    return {"room": room, "children": children, "inaccessible_children": inaccessible}


@federation_route(blueprint, "/hierarchy/<room_id>", ["GET"])
async def get_hierarchy(origin: str, room_id: str):
    d = deps()
    suggested_only = query_bool("suggested_only", False)
    answer = await d.db.read(compute_hierarchy, room_id, origin, suggested_only)
    if answer is None:
        raise not_found("Room does not exist.")
    return json_response(answer)


# ------------------------------------------------------------------------ OpenID


def _openid_tokens() -> OrderedDict[str, tuple[str, int]]:
    """token -> (user ID, expiry in wall-clock ms), oldest first (module docstring)."""
    return current_app.extensions.setdefault("roomactors.openid_tokens", OrderedDict())


@client_route(client_blueprint, "/user/<user_id>/openid/request_token", ["POST"])
async def request_openid_token(user_id: str):
    """client-server openid.yaml: an OpenID token for the requester."""
    d = deps()
    who = await requester()
    if who.user_id != user_id:
        raise forbidden("cannot request an OpenID token for another user")
    await json_body(allow_empty=True)  # "An empty object. Reserved for future expansion."
    now = d.clock.time_ms()
    tokens = _openid_tokens()
    while tokens:
        oldest = next(iter(tokens))
        if tokens[oldest][1] > now and len(tokens) < MAX_OPENID_TOKENS:
            break
        del tokens[oldest]
    token = secrets.token_urlsafe(32)
    tokens[token] = (user_id, now + OPENID_TOKEN_LIFETIME_S * 1000)
    return json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": d.server_name,
            "expires_in": OPENID_TOKEN_LIFETIME_S,
        }
    )


@blueprint.get(f"{FEDERATION_PREFIX}/v1/openid/userinfo")
async def openid_userinfo():
    """s2s openid.yaml: no X-Matrix; the token is the credential."""
    d = deps()
    token = request.args.get("access_token") or ""
    found = _openid_tokens().get(token)
    if found is None or found[1] <= d.clock.time_ms():
        raise MatrixError("M_UNKNOWN_TOKEN", 401, "Access token unknown or expired")
    return json_response({"sub": found[0]})
