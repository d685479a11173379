"""``/_matrix/key/v2/*``: our keys and the notary (s2s "Retrieving server keys").

Theory of operation
-------------------
These endpoints are public: no X-Matrix authentication (a server must be able to
learn our keys before it can check our signatures).

* ``GET /_matrix/key/v2/server`` ("Publishing Keys"): our self-signed key response
  from :meth:`KeyService.own_server_keys`. The deprecated ``/server/{keyId}`` form
  (removed from the spec, still requested by old servers) gets the same answer.
* ``POST /_matrix/key/v2/query`` and ``GET /_matrix/key/v2/query/{serverName}``
  ("Querying Keys Through Another Server"): the notary. Each criterion's
  ``minimum_valid_until_ts`` defaults to now ("If not supplied, the notary server
  MUST use the current time"); no key IDs means every key. Answers come from
  :meth:`KeyService.query_server_keys`, each response co-signed by us; a server we
  cannot reach and know nothing of is left out.

With federation disabled (``deps.keys is None``) every route answers 404
``M_UNRECOGNIZED``, as an unknown endpoint would.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from api.body import get_obj, json_body, query_int
from api.deps import Deps, deps
from api.errors import MatrixError, bad_json
from api.responses import json_response
from roomactors.protocol.ids import is_valid_server_name

__all__ = ["bp"]

bp = Blueprint("federation_keys", __name__)

KEY_PREFIX = "/_matrix/key/v2"


def _keys(d: Deps) -> Any:
    if d.keys is None:
        raise MatrixError("M_UNRECOGNIZED", 404, "Unrecognized request")
    return d.keys


@bp.route(f"{KEY_PREFIX}/server", methods=["GET"])
@bp.route(f"{KEY_PREFIX}/server/<path:key_id>", methods=["GET"])
async def get_server_keys(key_id: str | None = None) -> Response:
    return json_response(_keys(deps()).own_server_keys())


@bp.route(f"{KEY_PREFIX}/query", methods=["POST"])
async def query_keys() -> Response:
    d = deps()
    keys = _keys(d)
    body = await json_body()
    server_keys = get_obj(body, "server_keys")
    now = d.clock.time_ms()
    criteria: dict[str, dict[str, int]] = {}
    for server, key_criteria in server_keys.items():
        if not isinstance(key_criteria, dict):
            raise bad_json(f"server_keys[{server!r}] must be an object of key IDs")
        wanted: dict[str, int] = {}
        for key_id, criterion in key_criteria.items():
            if not isinstance(criterion, dict):
                raise bad_json(f"server_keys[{server!r}][{key_id!r}] must be an object")
            minimum = criterion.get("minimum_valid_until_ts", now)
            if minimum is None:
                minimum = now
            if isinstance(minimum, bool) or not isinstance(minimum, int):
                raise bad_json(f"server_keys[{server!r}][{key_id!r}].minimum_valid_until_ts must be an integer")
            wanted[key_id] = minimum
        if is_valid_server_name(server):
            criteria[server] = wanted
        # An invalid server name cannot have keys: it is simply not in the answer.
    return json_response({"server_keys": await keys.query_server_keys(criteria)})


@bp.route(f"{KEY_PREFIX}/query/<server_name>", methods=["GET"])
@bp.route(f"{KEY_PREFIX}/query/<server_name>/<path:key_id>", methods=["GET"])
async def query_server(server_name: str, key_id: str | None = None) -> Response:
    d = deps()
    keys = _keys(d)
    minimum = query_int("minimum_valid_until_ts", None)
    if minimum is None:
        minimum = d.clock.time_ms()
    if not is_valid_server_name(server_name):
        return json_response({"server_keys": []})
    # No key IDs: every key of the server (keys_query.yaml); the deprecated
    # /query/{serverName}/{keyId} form asks for one.
    criteria = {server_name: {key_id: minimum} if key_id else {}}
    responses = await keys.query_server_keys(criteria, minimum_valid_until_ts=minimum)
    return json_response({"server_keys": responses})
