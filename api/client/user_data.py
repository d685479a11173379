"""User data: profiles, account data, room tags, push rules, pushers and the user
directory (client-server "User Data", "Client Config", "Room Tagging", "Push
Notifications").

Theory of operation
-------------------
Every endpoint here reads or writes per-user rows (``storage.accounts`` profiles,
``storage.userdata`` account data and push rules, ``storage.pushers``), never room
rows, except that a profile change is propagated into rooms through their actors.
Only the owner may change (or, for private data, read) them: a ``userId`` in the
path that is not the requester's is 403 ``M_FORBIDDEN``.

**Profiles** ("Profiles", profile.yaml, v1.16+ generic ``/profile/{userId}/{keyName}``).
Lookups need no access token (profile.yaml declares no security for ``GET``) and
are allowed for every local user (the spec's minimum is users visible through
rooms; answering more is allowed). An unknown user or a user with no profile
fields is 404 ``M_NOT_FOUND``, as is an unset field. Another server's user is
asked for over federation (``GET /_matrix/federation/v1/query/profile`` with
``user_id`` and, for one field, ``field``; s2s "Querying for information"): its
403/404 refusals pass through (errcode and status, as Synapse's
``ProfileHandler``); every other refusal, a malformed answer or an unreachable
server is 404 ``M_NOT_FOUND`` (logged) — profile.yaml's ``GET`` responses are
200, 403 and 404 only, where Synapse answers 502 "Failed to fetch profile"
outside the spec. The remote's object is returned without its ``null`` members;
an empty one, or one without the asked field, is 404 like a local unset field.
Without federation, other servers' users are 404. Key names are checked against
profile.yaml's pattern (400 ``M_INVALID_PARAM``, before anything is asked
remotely) and its 255-byte limit (400 ``M_KEY_TOO_LARGE``). Only
``displayname`` and ``avatar_url`` can be changed — the ``m.profile_fields``
capability (``api.client.versions``) advertises exactly those, since the
``profiles`` table has no room for other fields — so ``PUT``/``DELETE`` of any other
valid key (``m.tz``, custom keys) is 403 ``M_FORBIDDEN``. Values: ``displayname`` a
string of at most :data:`MAX_DISPLAYNAME_LEN` characters after stripping
surrounding whitespace; ``avatar_url`` an ``mxc://server/media`` URI of at most
:data:`MAX_AVATAR_URL_LEN` characters (Synapse's limits). An empty string (or
``DELETE``) clears the field; ``null`` is refused (profile.yaml: "Servers MAY reject
``null`` values"; the field's type is string).

After a change, "Events on Change of Profile Information": a new ``m.room.member``
join event carrying the new ``displayname``/``avatar_url`` is sent to every room
the user is joined to, in room-ID order, through the room's actor. The content is
built afresh (``membership`` plus the profile), as Synapse's ``update_membership``
does, so a per-room name is overwritten. Each room is asked for its current state
first and skipped if the user is no longer joined (a profile change must never
re-join a room the user just left; the window between the two mailbox messages
remains, as in Synapse) or if the member event already carries these values (so
repeating a ``PUT`` only repairs rooms a previous attempt missed). A room that
refuses or fails does not fail the request (best effort, logged). The loop runs
shielded from cancellation (house rule 7): a client that hangs up does not leave
half its rooms updated; each ask is bounded by the registry's request timeout.
The presence half of that section (``displayname`` in ``m.presence``) is not done:
our presence rows carry no profile.

**Account data** (account-data.yaml, "Client Config"): ``GET``/``PUT`` global and
per-room data. ``m.fully_read`` and ``m.push_rules`` are server-managed: ``PUT`` is
405 ``M_BAD_JSON`` ("Server Behaviour"), but they read as normal. Global
``m.push_rules`` is always answered from the push-rule document (so it exists even
before the user changed a rule). A missing type is 404 ``M_NOT_FOUND``; an
ill-formed room ID 400 ``M_INVALID_PARAM``. v1.17 has no ``DELETE``. After a write,
``notifier.notify(user_id)`` wakes the user's long polls (their ``/sync`` delivers
account data from the misc stream).

**Tags** ("Room Tagging", tags.yaml) are the room's ``m.tag`` account data
``{"tags": {name: {...}}}``. ``PUT``/``DELETE`` of one tag is a read-modify-write
of that document inside ONE ``db.write`` job, so concurrent tag changes never lose
each other. Tag names are 1-255 bytes; ``order``, when present, must be a number in
``[0, 1]`` (tag.yaml). Deleting an absent tag is 200 and writes nothing.

**Push rules** (pushrules.yaml) are stored as the per-user document of
``roomactors.protocol.push_rules`` (server defaults are merged when read); its pure
mutations do all validation, and their ``PushRuleError`` becomes a ``MatrixError``
with the same errcode and status. A change is first tried on a read copy (so a bad
request never reaches the writer), then redone on the fresh document inside one
``db.write`` job that also stores the whole merged ruleset as global account data
``m.push_rules`` ("Push Rules: Events"; Synapse sends it in ``/sync``) — document
and event can never disagree — and then the user is notified. Only the ``global``
scope exists in v1.17 (it is part of the path), so any other scope is an unknown
endpoint: 404 ``M_UNRECOGNIZED``.

**Pushers** (pusher.yaml) are validated and stored (``storage.pushers``), keyed by
``(user, app_id, pushkey)``, with the setting device's ID. ``kind: null`` deletes;
``append: false`` removes other users' pushers with the same app ID and pushkey.
Only ``http`` pushers can be created: ``data.url`` must have the path
``/_matrix/push/v1/notify`` (http or https: the HTTPS requirement is on clients and,
like Synapse, we only check the path); ``email`` pushers need the address as a
bound 3PID, and this server binds none (400 ``M_THREEPID_NOT_FOUND``).
**Pushers are stored but nothing is delivered to push gateways yet.**

**User directory** (users.yaml): ``storage.user_directory.search_users`` searches
users sharing a room with the requester or joined to public / world-readable rooms
(see there for matching and ranking). ``limit`` defaults to 10 and is capped at
:data:`MAX_DIRECTORY_LIMIT`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import trio
from quart import Blueprint, request

from api.auth import requester
from api.body import get_bool, get_int, get_obj, get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, forbidden, not_found
from api.responses import json_response
from api.rooms_service import get_state_view, send_event
from api.routes import client_route
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.protocol import push_rules
from roomactors.protocol.ids import is_valid_room_id, is_valid_server_name
from roomactors.protocol.push_rules import PushRuleError
from roomactors.protocol.room_versions import get_rules
from roomactors.protocol.server_visibility import server_of_user
from storage import accounts, pushers, timeline, user_directory, userdata

__all__ = ["blueprint", "MAX_DISPLAYNAME_LEN", "MAX_AVATAR_URL_LEN", "MAX_DIRECTORY_LIMIT", "propagate_profile"]

log = logging.getLogger(__name__)

blueprint = Blueprint("user_data", __name__)

MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
MAX_DIRECTORY_LIMIT = 50

_CHANGEABLE_FIELDS = ("displayname", "avatar_url")
# profile.yaml keyName pattern; the key length limit is 255 bytes (M_KEY_TOO_LARGE).
_PROFILE_KEY = re.compile(r"(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)\Z")
_MAX_KEY_BYTES = 255
_MXC = re.compile(r"mxc://[^/\s]+/[^/\s]+\Z")

# account-data "Server Behaviour": types the server manages; PUT answers 405.
_SERVER_MANAGED = frozenset({"m.fully_read", "m.push_rules"})
_TAG = "m.tag"
_MAX_NAME_BYTES = 255

_PUSH_GATEWAY_PATH = "/_matrix/push/v1/notify"
_MAX_APP_ID_CHARS = 64
_MAX_PUSHKEY_BYTES = 512


def _require_self(who_id: str, user_id: str, what: str) -> None:
    if user_id != who_id:
        raise forbidden(f"you cannot {what} of another user")


def _room_id(room_id: str) -> str:
    """A room ID of any room version's form, else 400 ``M_INVALID_PARAM``."""
    if not (is_valid_room_id(room_id, get_rules("1")) or is_valid_room_id(room_id, get_rules("12"))):
        raise MatrixError("M_INVALID_PARAM", 400, f"{room_id!r} is not a valid room ID")
    return room_id


def _name(value: str, what: str) -> str:
    if not value or len(value.encode()) > _MAX_NAME_BYTES:
        raise MatrixError("M_INVALID_PARAM", 400, f"{what} must be 1-{_MAX_NAME_BYTES} bytes")
    return value


# --------------------------------------------------------------------------- profiles


def _profile_key(key: str) -> str:
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise MatrixError("M_KEY_TOO_LARGE", 400, f"profile keys are at most {_MAX_KEY_BYTES} bytes")
    if not _PROFILE_KEY.match(key):
        raise MatrixError("M_INVALID_PARAM", 400, f"invalid profile key {key!r}")
    return key


def _profile_value(key: str, value: Any) -> str | None:
    """The value to store for ``key`` (None clears), or 400."""
    if not isinstance(value, str):
        raise MatrixError("M_BAD_JSON", 400, f"{key!r} must be a string (use DELETE to remove it)")
    if key == "displayname":
        value = value.strip()
        if len(value) > MAX_DISPLAYNAME_LEN:
            raise MatrixError("M_INVALID_PARAM", 400, f"displayname is too long (max {MAX_DISPLAYNAME_LEN})")
        return value or None
    if value == "":
        return None
    if len(value) > MAX_AVATAR_URL_LEN:
        raise MatrixError("M_INVALID_PARAM", 400, f"avatar_url is too long (max {MAX_AVATAR_URL_LEN})")
    if not _MXC.match(value):
        raise MatrixError("M_INVALID_PARAM", 400, "avatar_url must be an mxc:// URI")
    return value


async def _existing_profile(d: Deps, user_id: str) -> dict[str, str]:
    if not await d.db.read(accounts.user_exists, user_id):
        raise not_found(f"user {user_id} not found")
    return await d.db.read(accounts.get_profile, user_id)


_PROFILE_QUERY = "/_matrix/federation/v1/query/profile"
_PROFILE_FETCH_FAILED = "Failed to fetch profile"


def _remote_server(d: Deps, user_id: str) -> str | None:
    """The server of ``user_id`` if it is another server's user (None: ours, or not
    a user ID, which the local lookup answers with 404)."""
    server = server_of_user(user_id)
    return None if server is None or server == d.server_name else server


async def _remote_profile(d: Deps, server: str, user_id: str, field: str | None = None) -> dict[str, Any]:
    """Another server's user's profile over federation (module docstring)."""
    if d.federation is None or not is_valid_server_name(server):
        raise not_found(f"user {user_id} not found")
    query = {"user_id": user_id} if field is None else {"user_id": user_id, "field": field}
    try:
        answer = await d.federation.get_json(server, _PROFILE_QUERY, query=query)
    except FederationUnreachable as e:
        log.info("profile query for %s failed: %s", user_id, e)
        raise not_found(_PROFILE_FETCH_FAILED) from None
    except FederationError as e:
        if e.status == 404:
            raise MatrixError(e.errcode or "M_NOT_FOUND", 404, e.error or "Profile was not found") from None
        if e.status == 403:
            raise MatrixError(e.errcode or "M_FORBIDDEN", 403, e.error or "Profile lookup refused") from None
        log.info("profile query for %s refused: %s", user_id, e)
        raise not_found(_PROFILE_FETCH_FAILED) from None
    if not isinstance(answer, dict):
        log.info("profile query for %s: the answer is not an object", user_id)
        raise not_found(_PROFILE_FETCH_FAILED)
    return {k: v for k, v in answer.items() if isinstance(k, str) and v is not None}


@client_route(blueprint, "/profile/<user_id>", ["GET"])
async def get_profile(user_id: str):
    d = deps()
    server = _remote_server(d, user_id)
    if server is not None:
        profile = await _remote_profile(d, server, user_id)
    else:
        profile = await _existing_profile(d, user_id)
    if not profile:
        raise not_found("profile not found")
    return json_response(profile)


@client_route(blueprint, "/profile/<user_id>/<key_name>", ["GET"])
async def get_profile_field(user_id: str, key_name: str):
    key = _profile_key(key_name)
    d = deps()
    server = _remote_server(d, user_id)
    if server is not None:
        profile = await _remote_profile(d, server, user_id, key)
    else:
        profile = await _existing_profile(d, user_id)
    if key not in profile:
        raise not_found(f"{user_id} has no profile field {key}")
    return json_response({key: profile[key]})


async def _changeable_field(user_id: str, key_name: str) -> tuple[Deps, str, str]:
    d = deps()
    who = await requester()
    key = _profile_key(key_name)
    _require_self(who.user_id, user_id, "change the profile")
    if key not in _CHANGEABLE_FIELDS:
        raise forbidden(f"the profile field {key} cannot be changed on this server (see m.profile_fields)")
    return d, who.user_id, key


@client_route(blueprint, "/profile/<user_id>/<key_name>", ["PUT"])
async def put_profile_field(user_id: str, key_name: str):
    d, user_id, key = await _changeable_field(user_id, key_name)
    body = await json_body()
    if key not in body:
        raise MatrixError("M_MISSING_PARAM", 400, f"missing {key!r}")
    value = _profile_value(key, body[key])
    await _set_profile_field(d, user_id, key, value)
    return json_response({})


@client_route(blueprint, "/profile/<user_id>/<key_name>", ["DELETE"])
async def delete_profile_field(user_id: str, key_name: str):
    d, user_id, key = await _changeable_field(user_id, key_name)
    await _set_profile_field(d, user_id, key, None)
    return json_response({})


async def _set_profile_field(d: Deps, user_id: str, key: str, value: str | None) -> None:
    d.ratelimiter.check("message", user_id)  # each change may send one event per room
    await d.db.write(lambda conn: accounts.set_profile(conn, user_id, **{key: value}))
    profile = await d.db.read(accounts.get_profile, user_id)
    await propagate_profile(d, user_id, profile)


def _member_event(view: Any, user_id: str) -> dict[str, Any] | None:
    event_id = view.current_state.get(("m.room.member", user_id))
    return view.state_events.get(event_id) if event_id else None


async def propagate_profile(d: Deps, user_id: str, profile: dict[str, str]) -> int:
    """Send a join event with ``profile`` to every room ``user_id`` is joined to whose
    member event differs (best effort; see the module docstring). Returns how many
    rooms were updated."""
    memberships = await d.db.read(timeline.get_memberships, user_id)
    room_ids = sorted(r for r, m in memberships.items() if m.membership == "join")
    wanted = {"displayname": profile.get("displayname"), "avatar_url": profile.get("avatar_url")}
    updated = 0
    with trio.CancelScope(shield=True):
        for room_id in room_ids:
            try:
                view = await get_state_view(d, room_id)
                current = _member_event(view, user_id)
                content = current.get("content") if current else None
                if not isinstance(content, dict) or content.get("membership") != "join":
                    continue  # left meanwhile: never re-join
                if all(content.get(k) == v for k, v in wanted.items()):
                    continue
                await send_event(d, room_id, user_id, "m.room.member", {"membership": "join", **profile}, user_id)
                updated += 1
            except MatrixError as e:
                log.info("profile update of %s not sent to %s: %s", user_id, room_id, e)
    return updated


# ----------------------------------------------------------------------- account data


def _data_type(value: str) -> str:
    return _name(value, "the account data type")


async def _read_account_data(d: Deps, user_id: str, room_id: str, data_type: str) -> dict[str, Any]:
    if not room_id and data_type == "m.push_rules":
        return await _ruleset(d, user_id)
    content = await d.db.read(userdata.get_account_data, user_id, room_id, data_type)
    if content is None:
        raise not_found(f"no account data of type {data_type}")
    return content


async def _write_account_data(d: Deps, user_id: str, room_id: str, data_type: str) -> None:
    if data_type in _SERVER_MANAGED:
        raise MatrixError("M_BAD_JSON", 405, f"{data_type} is managed by the server and cannot be set by clients")
    content = await json_body()
    await d.db.write(userdata.set_account_data, user_id, room_id, data_type, content)
    d.notifier.notify(user_id)


@client_route(blueprint, "/user/<user_id>/account_data/<data_type>", ["GET"])
async def get_global_account_data(user_id: str, data_type: str):
    d = deps()
    who = await requester()
    _require_self(who.user_id, user_id, "read the account data")
    return json_response(await _read_account_data(d, who.user_id, "", _data_type(data_type)))


@client_route(blueprint, "/user/<user_id>/account_data/<data_type>", ["PUT"])
async def put_global_account_data(user_id: str, data_type: str):
    d = deps()
    who = await requester()
    _require_self(who.user_id, user_id, "change the account data")
    await _write_account_data(d, who.user_id, "", _data_type(data_type))
    return json_response({})


@client_route(blueprint, "/user/<user_id>/rooms/<room_id>/account_data/<data_type>", ["GET"])
async def get_room_account_data(user_id: str, room_id: str, data_type: str):
    d = deps()
    who = await requester()
    _require_self(who.user_id, user_id, "read the account data")
    return json_response(await _read_account_data(d, who.user_id, _room_id(room_id), _data_type(data_type)))


@client_route(blueprint, "/user/<user_id>/rooms/<room_id>/account_data/<data_type>", ["PUT"])
async def put_room_account_data(user_id: str, room_id: str, data_type: str):
    d = deps()
    who = await requester()
    _require_self(who.user_id, user_id, "change the account data")
    await _write_account_data(d, who.user_id, _room_id(room_id), _data_type(data_type))
    return json_response({})


# ------------------------------------------------------------------------------- tags


def _tags_of(content: dict[str, Any] | None) -> dict[str, Any]:
    tags = content.get("tags") if content else None
    return dict(tags) if isinstance(tags, dict) else {}


def _put_tag(conn: sa.Connection, user_id: str, room_id: str, tag: str, value: dict[str, Any]) -> None:
    tags = _tags_of(userdata.get_account_data(conn, user_id, room_id, _TAG))
    tags[tag] = value
    userdata.set_account_data(conn, user_id, room_id, _TAG, {"tags": tags})


def _delete_tag(conn: sa.Connection, user_id: str, room_id: str, tag: str) -> bool:
    tags = _tags_of(userdata.get_account_data(conn, user_id, room_id, _TAG))
    if tags.pop(tag, None) is None:
        return False
    userdata.set_account_data(conn, user_id, room_id, _TAG, {"tags": tags})
    return True


async def _tag_request(user_id: str, room_id: str, what: str) -> tuple[Deps, str, str]:
    d = deps()
    who = await requester()
    _require_self(who.user_id, user_id, what)
    return d, who.user_id, _room_id(room_id)


@client_route(blueprint, "/user/<user_id>/rooms/<room_id>/tags", ["GET"])
async def get_tags(user_id: str, room_id: str):
    d, user_id, room_id = await _tag_request(user_id, room_id, "read the room tags")
    return json_response({"tags": _tags_of(await d.db.read(userdata.get_account_data, user_id, room_id, _TAG))})


@client_route(blueprint, "/user/<user_id>/rooms/<room_id>/tags/<tag>", ["PUT"])
async def put_tag(user_id: str, room_id: str, tag: str):
    d, user_id, room_id = await _tag_request(user_id, room_id, "change the room tags")
    tag = _name(tag, "a tag name")
    body = await json_body()
    if "order" in body:
        order = body["order"]
        if isinstance(order, bool) or not isinstance(order, (int, float)):
            raise MatrixError("M_BAD_JSON", 400, "'order' must be a number")
        if not 0 <= order <= 1:
            raise MatrixError("M_INVALID_PARAM", 400, "'order' must be between 0 and 1")
    await d.db.write(_put_tag, user_id, room_id, tag, body)
    d.notifier.notify(user_id)
    return json_response({})


@client_route(blueprint, "/user/<user_id>/rooms/<room_id>/tags/<tag>", ["DELETE"])
async def delete_tag(user_id: str, room_id: str, tag: str):
    d, user_id, room_id = await _tag_request(user_id, room_id, "change the room tags")
    if await d.db.write(_delete_tag, user_id, room_id, tag):
        d.notifier.notify(user_id)
    return json_response({})


# ------------------------------------------------------------------------- push rules


def _rule_error(e: PushRuleError) -> MatrixError:
    return MatrixError(e.errcode, e.status, e.error)


async def _ruleset(d: Deps, user_id: str) -> dict[str, Any]:
    doc = await d.db.read(userdata.get_push_rules_doc, user_id) or push_rules.empty_user_doc()
    return push_rules.ruleset(user_id, doc)


async def _get_rule(kind: str, rule_id: str) -> dict[str, Any]:
    d = deps()
    who = await requester()
    try:
        return push_rules.get_rule(await _ruleset(d, who.user_id), kind, rule_id)
    except PushRuleError as e:
        raise _rule_error(e) from None


async def _change_rules(d: Deps, user_id: str, mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Apply ``mutate`` (a pure push_rules mutation) to the user's document and store
    it with the merged ``m.push_rules`` account data, in one transaction."""
    doc = await d.db.read(userdata.get_push_rules_doc, user_id) or push_rules.empty_user_doc()
    try:
        mutate(doc)  # validate on a read copy: a bad request never reaches the writer

        def write(conn: sa.Connection) -> None:
            fresh = userdata.get_push_rules_doc(conn, user_id) or push_rules.empty_user_doc()
            new_doc = mutate(fresh)
            userdata.set_push_rules_doc(conn, user_id, new_doc)
            userdata.set_account_data(conn, user_id, "", "m.push_rules", push_rules.ruleset(user_id, new_doc))

        await d.db.write(write)
    except PushRuleError as e:
        raise _rule_error(e) from None
    d.notifier.notify(user_id)


@client_route(blueprint, "/pushrules/", ["GET"])
@client_route(blueprint, "/pushrules", ["GET"])
async def get_push_rules():
    d = deps()
    who = await requester()
    return json_response(await _ruleset(d, who.user_id))


@client_route(blueprint, "/pushrules/global/", ["GET"])
@client_route(blueprint, "/pushrules/global", ["GET"])
async def get_global_push_rules():
    d = deps()
    who = await requester()
    return json_response((await _ruleset(d, who.user_id))["global"])


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>", ["GET"])
async def get_push_rule(kind: str, rule_id: str):
    return json_response(await _get_rule(kind, rule_id))


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>", ["PUT"])
async def put_push_rule(kind: str, rule_id: str):
    d = deps()
    who = await requester()
    body = await json_body()
    before, after = request.args.get("before"), request.args.get("after")
    await _change_rules(
        d, who.user_id,
        lambda doc: push_rules.put_rule(doc, who.user_id, kind, rule_id, body, before=before, after=after),
    )
    return json_response({})


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>", ["DELETE"])
async def delete_push_rule(kind: str, rule_id: str):
    d = deps()
    who = await requester()
    await _change_rules(d, who.user_id, lambda doc: push_rules.delete_rule(doc, who.user_id, kind, rule_id))
    return json_response({})


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>/enabled", ["GET"])
async def get_push_rule_enabled(kind: str, rule_id: str):
    return json_response({"enabled": (await _get_rule(kind, rule_id))["enabled"]})


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>/enabled", ["PUT"])
async def put_push_rule_enabled(kind: str, rule_id: str):
    d = deps()
    who = await requester()
    body = await json_body()
    if "enabled" not in body:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'enabled'")
    enabled = body["enabled"]
    await _change_rules(d, who.user_id, lambda doc: push_rules.set_enabled(doc, who.user_id, kind, rule_id, enabled))
    return json_response({})


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>/actions", ["GET"])
async def get_push_rule_actions(kind: str, rule_id: str):
    return json_response({"actions": (await _get_rule(kind, rule_id))["actions"]})


@client_route(blueprint, "/pushrules/global/<kind>/<rule_id>/actions", ["PUT"])
async def put_push_rule_actions(kind: str, rule_id: str):
    d = deps()
    who = await requester()
    body = await json_body()
    if "actions" not in body:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'actions'")
    actions = body["actions"]
    await _change_rules(d, who.user_id, lambda doc: push_rules.set_actions(doc, who.user_id, kind, rule_id, actions))
    return json_response({})


# ---------------------------------------------------------------------------- pushers


def _served_pusher(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if k != "device_id"}


@client_route(blueprint, "/pushers", ["GET"])
async def get_pushers():
    d = deps()
    who = await requester()
    stored = await d.db.read(pushers.get_pushers, who.user_id)
    return json_response({"pushers": [_served_pusher(p) for p in stored]})


def _check_http_data(data: dict[str, Any]) -> None:
    url = data.get("url")
    if url is None:
        raise MatrixError("M_MISSING_PARAM", 400, "http pushers need 'data.url'")
    if not isinstance(url, str):
        raise MatrixError("M_BAD_JSON", 400, "'data.url' must be a string")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", 400, "'data.url' is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.path != _PUSH_GATEWAY_PATH:
        raise MatrixError("M_INVALID_PARAM", 400, f"'data.url' must be an http(s) URL with path {_PUSH_GATEWAY_PATH}")
    if "format" in data and data["format"] != "event_id_only":
        raise MatrixError("M_INVALID_PARAM", 400, "'data.format' must be 'event_id_only' if present")


@client_route(blueprint, "/pushers/set", ["POST"])
async def set_pusher():
    d = deps()
    who = await requester()
    body = await json_body()
    if "kind" not in body:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'kind'")
    app_id = get_str(body, "app_id")
    pushkey = get_str(body, "pushkey")
    if not app_id or len(app_id) > _MAX_APP_ID_CHARS:
        raise MatrixError("M_INVALID_PARAM", 400, f"'app_id' must be 1-{_MAX_APP_ID_CHARS} characters")
    if not pushkey or len(pushkey.encode()) > _MAX_PUSHKEY_BYTES:
        raise MatrixError("M_INVALID_PARAM", 400, f"'pushkey' must be 1-{_MAX_PUSHKEY_BYTES} bytes")
    kind = body["kind"]
    if kind is None:
        await d.db.write(pushers.delete_pusher, who.user_id, app_id, pushkey)
        return json_response({})
    if not isinstance(kind, str):
        raise MatrixError("M_BAD_JSON", 400, "'kind' must be a string or null")
    missing = [f for f in ("app_display_name", "device_display_name", "lang", "data") if body.get(f) is None]
    if missing:
        raise MatrixError("M_MISSING_PARAM", 400, "Missing parameters: " + ", ".join(missing))
    pusher: dict[str, Any] = {
        "pushkey": pushkey,
        "kind": kind,
        "app_id": app_id,
        "app_display_name": get_str(body, "app_display_name"),
        "device_display_name": get_str(body, "device_display_name"),
        "lang": get_str(body, "lang"),
        "data": get_obj(body, "data"),
    }
    profile_tag = get_str(body, "profile_tag", None)
    if profile_tag is not None:
        pusher["profile_tag"] = profile_tag
    append = get_bool(body, "append", False)
    if kind == "http":
        _check_http_data(pusher["data"])
    elif kind == "email":
        raise MatrixError("M_THREEPID_NOT_FOUND", 400, "email pushers need the address bound to your account; "
                          "this server binds no email addresses")
    else:
        raise MatrixError("M_INVALID_PARAM", 400, f"unknown pusher kind {kind!r}")
    pusher["device_id"] = who.device_id
    await d.db.write(lambda conn: pushers.set_pusher(conn, who.user_id, app_id, pushkey, pusher, append=append))
    return json_response({})


# --------------------------------------------------------------------- user directory


@client_route(blueprint, "/user_directory/search", ["POST"])
async def search_user_directory():
    d = deps()
    who = await requester()
    body = await json_body()
    term = get_str(body, "search_term")
    limit = get_int(body, "limit", 10)
    if limit < 0:
        raise MatrixError("M_INVALID_PARAM", 400, "'limit' must not be negative")
    limit = min(limit, MAX_DIRECTORY_LIMIT)
    results, limited = await d.db.read(user_directory.search_users, who.user_id, term, limit)
    return json_response({"results": results, "limited": limited})
