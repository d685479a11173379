"""Served federation key endpoints: ``POST /user/keys/query``, ``POST /user/keys/claim``
(server-server "End-to-End Encryption", user_keys.yaml) and ``GET /user/devices/{userId}``
(server-server "Device Management", user_devices.yaml).

Theory of operation
-------------------
Every endpoint is X-Matrix authenticated (``federation_route``) and answers for
our own users only: user_keys.yaml "Requested users must be local to the receiving
homeserver" and user_devices.yaml "Must be a user local to the receiving
homeserver"; a request naming another server's user is 400 ``M_INVALID_PARAM`` (as
Synapse answers). Answers come from ``storage.e2e_keys`` as a remote server may see
them: master and self-signing keys (never the user-signing key, which is private
to its owner), and only the signatures the key owners made themselves ("Key and
signature security"). ``/user/devices`` carries the ``stream_id`` of the user's
device-list stream (``storage.device_lists.current_device_list_stream_id``), which
``m.device_list_update`` EDUs continue from.

Device display names: Synapse sends none over federation unless
``allow_device_name_lookup_over_federation`` is set (names often say who owns the
device and where). :data:`SHARE_DEVICE_NAMES` keeps that default here too: the
``unsigned.device_display_name`` / ``device_display_name`` fields are left out.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from quart import Blueprint

from api.body import json_body
from api.client.keys import claim_request
from api.deps import deps
from api.errors import bad_json, invalid_param
from api.federation.x_matrix import federation_route
from api.responses import json_response
from roomactors.protocol.ids import is_valid_user_id
from storage import device_lists
from roomactors.protocol.e2e_keys import SHARE_DEVICE_NAMES_OVER_FEDERATION
from storage import e2e_keys as store

__all__ = ["blueprint", "SHARE_DEVICE_NAMES"]

blueprint = Blueprint("federation_user_keys", __name__)

SHARE_DEVICE_NAMES = SHARE_DEVICE_NAMES_OVER_FEDERATION
MAX_USERS = 1000


def _ours(user_id: Any, server_name: str) -> str:
    if not is_valid_user_id(user_id):
        raise invalid_param(f"{user_id!r} is not a user ID")
    if user_id.partition(":")[2] != server_name:
        raise invalid_param(f"{user_id} is not a user of this server")
    return user_id


@federation_route(blueprint, "/user/keys/query", ["POST"])
async def user_keys_query(origin: str):
    """user_keys.yaml ``POST /user/keys/query``."""
    d = deps()
    body = await json_body()
    query = body.get("device_keys")
    if not isinstance(query, dict) or len(query) > MAX_USERS:
        raise bad_json("'device_keys' must map user IDs to lists of device IDs")
    for user_id, device_ids in query.items():
        _ours(user_id, d.server_name)
        if not isinstance(device_ids, list) or not all(isinstance(x, str) for x in device_ids):
            raise bad_json("'device_keys' values must be lists of device IDs")
    answer = await d.db.read(partial(store.query_local_keys, include_display_names=SHARE_DEVICE_NAMES), None, query)
    answer.pop("user_signing_keys", None)
    return json_response(answer)


@federation_route(blueprint, "/user/keys/claim", ["POST"])
async def user_keys_claim(origin: str):
    """user_keys.yaml ``POST /user/keys/claim``: the same rules as the client's claim."""
    d = deps()
    body = await json_body()
    wanted, count = claim_request(body)
    for user_id in wanted:
        _ours(user_id, d.server_name)
    if count > MAX_USERS:
        raise bad_json(f"at most {MAX_USERS} devices per claim")
    claimed = await d.db.write(store.claim_local_keys, wanted) if wanted else {}
    return json_response({"one_time_keys": claimed})


def _user_devices(conn: Any, user_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "user_id": user_id,
        "stream_id": device_lists.current_device_list_stream_id(conn, user_id),
        "devices": store.get_user_devices(conn, user_id, include_display_names=SHARE_DEVICE_NAMES),
    }
    keys = store.get_cross_signing_keys(conn, user_id)
    if "master" in keys:
        answer["master_key"] = keys["master"]
    if "self_signing" in keys:
        answer["self_signing_key"] = keys["self_signing"]
    return answer


@federation_route(blueprint, "/user/devices/<user_id>", ["GET"])
async def user_devices(origin: str, user_id: str):
    """user_devices.yaml ``GET /user/devices/{userId}``; an unknown local user has no
    devices (as Synapse answers)."""
    d = deps()
    _ours(user_id, d.server_name)
    return json_response(await d.db.read(_user_devices, user_id))
