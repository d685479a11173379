"""``GET /keys/changes``: the users whose device lists changed between two sync
tokens (client-server "Tracking the device list for a user"; keys.yaml).

Theory of operation
-------------------
``from`` and ``to`` are sync tokens (``api.client.sync.SyncToken``): their event
and ``misc`` positions bound the window, and the answer is exactly what
``device_lists`` of a ``/sync`` over that window would say
(``storage.device_lists.sync_device_lists``, one read): ``changed`` = users sharing
a room with the requester whose devices or cross-signing keys changed, or who
started sharing one; ``left`` = users who no longer share any room. A ``to`` before
``from`` is an empty window (nothing changed "between" them).
"""

from __future__ import annotations

from functools import partial

from quart import Blueprint, request

from api.auth import requester
from api.client.sync import SyncToken
from api.deps import deps
from api.errors import MatrixError
from api.responses import json_response
from api.routes import client_route
from storage import device_lists

__all__ = ["blueprint"]

blueprint = Blueprint("device_lists", __name__)


def _token(name: str) -> SyncToken:
    raw = request.args.get(name)
    if not raw:
        # keys.yaml: both ``from`` and ``to`` are required query parameters.
        raise MatrixError("M_MISSING_PARAM", 400, f"missing query parameter {name!r}")
    return SyncToken.parse(raw)


@client_route(blueprint, "/keys/changes", ["GET"])
async def keys_changes():
    d = deps()
    who = await requester()
    since, upto = _token("from"), _token("to")
    changed, left = await d.db.read(partial(
        device_lists.sync_device_lists, user_id=who.user_id, initial=False,
        since_events=since.events, upto_events=max(since.events, upto.events),
        since_misc=since.misc, upto_misc=max(since.misc, upto.misc),
    ))
    return json_response({"changed": changed, "left": left})
