"""``GET /_matrix/client/versions`` (client-server-api, "API Standards" / versions).

Lists the spec versions this server targets and no unstable features. It is the
only client-server endpoint implemented so far; every other path answers
``M_UNRECOGNIZED`` (see ``api.errors``).
"""

from __future__ import annotations

from quart import Blueprint, Response

from api.responses import json_response

__all__ = ["SUPPORTED_VERSIONS", "blueprint"]

SUPPORTED_VERSIONS: tuple[str, ...] = ("v1.17",)

blueprint = Blueprint("client_versions", __name__)


@blueprint.get("/_matrix/client/versions")
async def versions() -> Response:
    return json_response({"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}})
